//! A harness for multi-process tests: it finds the built `corral` binary, makes a cluster CA and
//! certificates with `corral certs`, and starts real `corral master` and `corral agent` processes
//! on loopback, each logging to a file that is printed when a test fails. Processes are killed
//! when their handle drops, so a failing test leaves nothing running.

pub mod mesos_clients;

use std::io::Read;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The `corral` binary: `$CORRAL_BIN`, else `target/{debug,release}/corral` of this workspace.
pub fn corral_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("CORRAL_BIN") {
        return PathBuf::from(p);
    }
    workspace_bin("corral")
}

/// A binary of this workspace (`corral`, the example frameworks `batch-framework` and
/// `service-framework`): the newest of `target/{debug,release}/NAME`.
pub fn workspace_bin(name: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let candidates = [
        target.join("debug").join(name),
        target.join("release").join(name),
    ];
    let found = candidates
        .iter()
        .filter(|p| p.exists())
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok());
    match found {
        Some(p) => p.clone(),
        None => panic!(
            "the {name} binary was not found at {}: build the workspace's binaries first with \
             `cargo build --workspace --bins`",
            candidates[0].display()
        ),
    }
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Where tests keep clusters and programs tasks run: reachable by the unprivileged task user,
/// and never below /tmp, /var/tmp or /dev/shm, which a task sees a private one of (as root:
/// `/var/lib/corral-it`, 0755; otherwise tasks are plain processes and /var/tmp will do).
pub fn scratch_dir() -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    if !is_root() {
        return std::path::PathBuf::from("/var/tmp");
    }
    let dir = std::path::PathBuf::from("/var/lib/corral-it");
    std::fs::create_dir_all(&dir).expect("create /var/lib/corral-it");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

/// A fresh directory that every task user may write (1777) and every task sees, removed on
/// drop: for files tasks leave for a test to count. Under `/run/corral-it` as root (tasks get a
/// private /tmp, /var/tmp and /dev/shm, so those would not do); else under [`scratch_dir`].
pub fn shared_dir(prefix: &str) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let parent = if is_root() {
        let p = PathBuf::from("/run/corral-it");
        std::fs::create_dir_all(&p).expect("create /run/corral-it");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        p
    } else {
        scratch_dir()
    };
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(&parent)
        .expect("a shared directory for tasks");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).expect("chmod");
    dir
}

/// A free UDP port on loopback (QUIC listens on UDP).
pub fn free_port() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind an ephemeral UDP port");
    s.local_addr().expect("local addr").port()
}

/// Runs `corral ARGS` to completion with a timeout.
pub fn corral(args: &[&str], env: &[(&str, &str)], timeout: Duration) -> Output {
    let mut cmd = Command::new(corral_bin());
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("spawn corral");
    wait_child(child, timeout)
}

/// Certificates for a test cluster, made with `corral certs`.
pub struct Certs {
    pub dir: PathBuf,
}

impl Certs {
    pub fn new(dir: &Path) -> Certs {
        let d = dir.to_str().expect("utf-8 path");
        let out = corral(&["certs", "init", "--dir", d], &[], Duration::from_secs(20));
        assert!(
            out.status.success(),
            "certs init: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Certs {
            dir: dir.to_owned(),
        }
    }

    pub fn issue(&self, role: &str, name: &str) {
        self.issue_with_sans(role, name, &[]);
    }

    /// Like [`Certs::issue`], naming extra DNS names or IP addresses (`--san`), e.g. for a
    /// TLS server that clients reach by address.
    pub fn issue_with_sans(&self, role: &str, name: &str, sans: &[&str]) {
        let d = self.dir.to_str().expect("utf-8 path");
        let mut args = vec!["certs", "issue", "--dir", d, "--role", role, "--name", name];
        for san in sans {
            args.extend(["--san", san]);
        }
        let out = corral(&args, &[], Duration::from_secs(20));
        assert!(
            out.status.success(),
            "certs issue: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    pub fn cert(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.pem"))
    }
    pub fn key(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}-key.pem"))
    }

    /// `--ca --cert --key` flags for the certificate `name`.
    pub fn flags(&self, name: &str) -> Vec<String> {
        vec![
            "--ca".into(),
            self.ca().display().to_string(),
            "--cert".into(),
            self.cert(name).display().to_string(),
            "--key".into(),
            self.key(name).display().to_string(),
        ]
    }
}

/// A `corral` daemon process, killed on drop. Its stderr goes to a log file.
pub struct Daemon {
    pub name: String,
    child: Option<Child>,
    pub log: PathBuf,
}

impl Daemon {
    pub fn spawn(name: &str, args: &[String], log_dir: &Path) -> Daemon {
        Self::spawn_in(None, name, args, log_dir)
    }

    /// Like [`Daemon::spawn`], inside network namespace `netns` when given (`ip netns exec`
    /// execs corral itself, so the pid is corral's).
    pub fn spawn_in(netns: Option<&str>, name: &str, args: &[String], log_dir: &Path) -> Daemon {
        let cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(corral_bin());
                c
            }
            None => Command::new(corral_bin()),
        };
        Self::spawn_command(cmd, name, args, log_dir)
    }

    /// Another program of the workspace (see [`workspace_bin`]), e.g. an example framework,
    /// with its stdout and stderr in `log_dir/NAME.log`.
    pub fn spawn_program(program: &str, name: &str, args: &[String], log_dir: &Path) -> Daemon {
        Self::spawn_command(Command::new(workspace_bin(program)), name, args, log_dir)
    }

    fn spawn_command(mut cmd: Command, name: &str, args: &[String], log_dir: &Path) -> Daemon {
        let log = log_dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("create daemon log");
        let child = cmd
            .args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("clone log fd"))
            .stderr(file)
            .env("RUST_LOG", "info,quinn=warn")
            .spawn()
            .expect("spawn corral daemon");
        Daemon {
            name: name.to_owned(),
            child: Some(child),
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn log_text(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Waits until the log contains `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log_text().contains(needle) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "{} did not log '{needle}' within {timeout:?}; its log:\n{}",
            self.name,
            self.log_text()
        );
    }

    /// Waits up to `timeout` for the process to exit by itself and returns its status;
    /// panics with its log if it is still running then.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self
                .child
                .as_mut()
                .map(|c| c.try_wait().expect("wait for the process"));
            match status {
                Some(Some(status)) => {
                    self.child = None;
                    return status;
                }
                None => panic!("{} was already reaped", self.name),
                Some(None) if Instant::now() > deadline => panic!(
                    "{} did not exit within {timeout:?}; its log:\n{}",
                    self.name,
                    self.log_text()
                ),
                Some(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- log of {} ----\n{}", self.name, self.log_text());
        }
        // SIGTERM first: test agents run with --cleanup-on-exit and remove their containers.
        self.stop();
    }
}

/// One master and any number of agents, all real processes.
pub struct Cluster {
    // Fields drop in order: daemons first (agents before the master), the directory with their
    // logs and state last.
    pub agents: Vec<Daemon>,
    retired: Vec<Daemon>,
    pub master: Daemon,
    /// Masters 2..n of a replicated cluster (`start_replicated`).
    pub other_masters: Vec<Daemon>,
    pub certs: Certs,
    pub master_addr: SocketAddr,
    /// Every master's address, in id order.
    pub master_addrs: Vec<SocketAddr>,
    agent_args: Vec<Vec<String>>,
    master_args: Vec<Vec<String>>,
    master_netns: Vec<Option<String>>,
    pub dir: tempfile::TempDir,
}

/// A cluster's directory (under `scratch_dir`: tasks get a private /tmp and /var/tmp, and run
/// as a user who must reach their sandboxes) and its CA.
fn cluster_dir() -> (tempfile::TempDir, Certs) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("corral-it-")
        .tempdir_in(scratch_dir())
        .expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let certs = Certs::new(&dir.path().join("certs"));
    (dir, certs)
}

impl Cluster {
    /// Starts a master with certificates for: master `m1`, frameworks `fw`, `fw2`, operator `op`,
    /// and an agent certificate per agent started later.
    pub fn start_master(extra_master_args: &[&str]) -> Cluster {
        Self::start_master_signing(extra_master_args, false)
    }

    /// [`Cluster::start_master`] with `--ca-key`: the master signs certificates for nodes
    /// joining with a token and renews them.
    pub fn start_master_with_ca_key(extra_master_args: &[&str]) -> Cluster {
        Self::start_master_signing(extra_master_args, true)
    }

    fn start_master_signing(extra_master_args: &[&str], ca_key: bool) -> Cluster {
        let (dir, certs) = cluster_dir();
        for (role, name) in [
            ("master", "m1"),
            ("framework", "fw"),
            ("framework", "fw2"),
            ("operator", "op"),
        ] {
            certs.issue(role, name);
        }
        let port = free_port();
        let master_addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let mut args: Vec<String> = vec![
            "master".into(),
            "--listen".into(),
            master_addr.to_string(),
            "--data-dir".into(),
            dir.path().join("master").display().to_string(),
        ];
        args.extend(certs.flags("m1"));
        if ca_key {
            args.push("--ca-key".into());
            args.push(certs.dir.join("ca-key.pem").display().to_string());
        }
        args.extend(extra_master_args.iter().map(|s| s.to_string()));
        let master = Daemon::spawn("master", &args, dir.path());
        master.wait_for_log("master serving", Duration::from_secs(20));
        let master_args = vec![args];
        Cluster {
            master_netns: vec![None],
            dir,
            certs,
            master_addr,
            master,
            other_masters: Vec::new(),
            master_addrs: vec![master_addr],
            agents: Vec::new(),
            agent_args: Vec::new(),
            master_args,
            retired: Vec::new(),
        }
    }

    /// Starts `n` replicated masters (ids 1..=n, certificate names m1..mn) and waits until one
    /// leads.
    pub fn start_replicated(n: usize) -> Cluster {
        Self::start_replicated_on(n, None)
    }

    /// Like [`Cluster::start_replicated`], with master `i` in `lab`'s host `i` (its own network
    /// namespace) when a lab is given.
    pub fn start_replicated_on(n: usize, lab: Option<&NetLab>) -> Cluster {
        Self::start_replicated_with(n, lab, &|_| Vec::new())
    }

    /// Like [`Cluster::start_replicated_on`], with `extra(i)` appended to master `i`'s flags.
    pub fn start_replicated_with(
        n: usize,
        lab: Option<&NetLab>,
        extra: &dyn Fn(usize) -> Vec<String>,
    ) -> Cluster {
        Self::start_replicated_signing(n, lab, extra, false)
    }

    /// [`Cluster::start_replicated`] with `--ca-key` on every master: they sign certificates
    /// for nodes joining with a token and renew them.
    pub fn start_replicated_with_ca_key(n: usize) -> Cluster {
        Self::start_replicated_signing(n, None, &|_| Vec::new(), true)
    }

    fn start_replicated_signing(
        n: usize,
        lab: Option<&NetLab>,
        extra: &dyn Fn(usize) -> Vec<String>,
        ca_key: bool,
    ) -> Cluster {
        let (dir, certs) = cluster_dir();
        for (role, name) in [
            ("framework", "fw"),
            ("framework", "fw2"),
            ("operator", "op"),
        ] {
            certs.issue(role, name);
        }
        let addrs: Vec<SocketAddr> = (0..n)
            .map(|i| match lab {
                Some(l) => SocketAddr::new(l.hosts[i].ip.into(), 5050),
                None => format!("127.0.0.1:{}", free_port()).parse().expect("addr"),
            })
            .collect();
        let netns: Vec<Option<String>> = (0..n)
            .map(|i| lab.map(|l| l.hosts[i].netns.clone()))
            .collect();
        let mut daemons = Vec::new();
        let mut args_all = Vec::new();
        for i in 0..n {
            let name = format!("m{}", i + 1);
            certs.issue("master", &name);
            let mut args: Vec<String> = vec![
                "master".into(),
                "--id".into(),
                (i + 1).to_string(),
                "--listen".into(),
                addrs[i].to_string(),
                "--data-dir".into(),
                dir.path().join(&name).display().to_string(),
            ];
            for (j, a) in addrs.iter().enumerate() {
                if j != i {
                    args.push("--peer".into());
                    args.push(format!("{}=m{}@{a}", j + 1, j + 1));
                }
            }
            args.extend(certs.flags(&name));
            if ca_key {
                args.push("--ca-key".into());
                args.push(certs.dir.join("ca-key.pem").display().to_string());
            }
            args.extend(extra(i));
            daemons.push(Daemon::spawn_in(
                netns[i].as_deref(),
                &name,
                &args,
                dir.path(),
            ));
            args_all.push(args);
        }
        for d in &daemons {
            d.wait_for_log("master serving", Duration::from_secs(20));
        }
        let master = daemons.remove(0);
        let c = Cluster {
            agents: Vec::new(),
            retired: Vec::new(),
            master,
            other_masters: daemons,
            certs,
            master_addr: addrs[0],
            master_addrs: addrs,
            agent_args: Vec::new(),
            master_args: args_all,
            master_netns: netns,
            dir,
        };
        c.wait_for_leader(Duration::from_secs(20));
        c
    }

    /// `--master` value naming every master.
    pub fn masters_flag(&self) -> String {
        self.master_addrs
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The daemon of master `i` (0-based id order).
    pub fn master_daemon(&mut self, i: usize) -> &mut Daemon {
        if i == 0 {
            &mut self.master
        } else {
            &mut self.other_masters[i - 1]
        }
    }

    /// Starts master `i` again with its flags (after a kill).
    pub fn restart_master(&mut self, i: usize) {
        let args = self.master_args[i].clone();
        let name = format!("m{}-restart", i + 1);
        let netns = self.master_netns.get(i).cloned().flatten();
        let d = Daemon::spawn_in(netns.as_deref(), &name, &args, self.dir.path());
        d.wait_for_log("master serving", Duration::from_secs(20));
        let old = std::mem::replace(self.master_daemon(i), d);
        self.retired.push(old);
    }

    /// How many times each agent has registered so far (from its log), for
    /// [`Cluster::wait_agents_registered_again`].
    pub fn agent_registrations(&self) -> Vec<usize> {
        self.agents
            .iter()
            .map(|a| a.log_text().matches("registered with master").count())
            .collect()
    }

    /// Waits until every agent registered again since `before` (after its master was killed
    /// and restarted: an agent learns of it from the restarted master's stateless reset at its
    /// next keep-alive, within 10 s).
    pub fn wait_agents_registered_again(&self, before: &[usize], timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self
            .agent_registrations()
            .iter()
            .zip(before)
            .any(|(now, b)| now <= b)
        {
            assert!(
                Instant::now() < deadline,
                "not every agent registered again within {timeout:?}: {:?} after {before:?}",
                self.agent_registrations()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The leader's index (0-based) from `corral state`, waiting for one up to `timeout`.
    pub fn wait_for_leader(&self, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.client("op", &["state", "--json"], Duration::from_secs(30));
            if out.status.success() {
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                if let Some(i) = self
                    .master_addrs
                    .iter()
                    .position(|a| text.contains(&format!("\"leader\": \"{a}\"")))
                {
                    return i;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no leader within {timeout:?}: {}",
                stderr(&out)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts an agent named `name` with the given extra flags and waits until it registered.
    pub fn start_agent(&mut self, name: &str, extra: &[&str]) -> usize {
        self.certs.issue("agent", name);
        let work = self.dir.path().join(format!("agent-{name}"));
        let mut args: Vec<String> = vec![
            "agent".into(),
            "--master".into(),
            self.masters_flag(),
            "--work-dir".into(),
            work.display().to_string(),
            "--hostname".into(),
            name.into(),
            // Agents of concurrent tests must not share a cgroup subtree.
            "--cleanup-on-exit".into(),
            "--cgroup-parent".into(),
            format!(
                "{}-{name}",
                self.dir
                    .path()
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or("corral-it")
            ),
        ];
        args.extend(self.certs.flags(name));
        args.extend(extra.iter().map(|s| s.to_string()));
        let agent = Daemon::spawn(&format!("agent-{name}"), &args, self.dir.path());
        agent.wait_for_log("registered with master", Duration::from_secs(20));
        self.agents.push(agent);
        self.agent_args.push(args);
        self.agents.len() - 1
    }

    /// Starts agent `i` again with its flags with `(flag, value)` replaced or added, e.g. a
    /// changed `--resources`, and waits until it registered.
    pub fn restart_agent_with(&mut self, i: usize, changes: &[(&str, &str)]) {
        for (flag, value) in changes {
            let args = &mut self.agent_args[i];
            match args.iter().position(|a| a == flag) {
                Some(p) => args[p + 1] = value.to_string(),
                None => {
                    args.push(flag.to_string());
                    args.push(value.to_string());
                }
            }
        }
        self.restart_agent(i);
    }

    /// Makes agent `i` leave its tasks running when it stops (drops `--cleanup-on-exit` from its
    /// flags), as a production agent does; takes effect at its next (re)start.
    pub fn keep_tasks_on_stop(&mut self, i: usize) {
        self.agent_args[i].retain(|a| a != "--cleanup-on-exit");
    }

    /// Starts agent `i` again with the same flags (after `kill` or `stop`), logging to a new file,
    /// and waits until it registered.
    pub fn restart_agent(&mut self, i: usize) {
        self.agents[i].kill();
        let generation = self.agents.len() + i;
        let name = format!("{}-restart{generation}", self.agents[i].name);
        let agent = Daemon::spawn(&name, &self.agent_args[i], self.dir.path());
        agent.wait_for_log("registered with master", Duration::from_secs(20));
        // Keep the old log for failure output.
        let old = std::mem::replace(&mut self.agents[i], agent);
        self.retired.push(old);
    }

    /// Runs a `corral` client command against this cluster as `cert_name`.
    /// The full argument list of a client command against this cluster as `cert_name`.
    pub fn client_args(&self, cert_name: &str, args: &[&str]) -> Vec<String> {
        let mut full: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let mut flags = vec!["--master".to_string(), self.masters_flag()];
        flags.extend(self.certs.flags(cert_name));
        // Flags go after the (sub)subcommand name: `run ...`, `masters add ...`, `policy set ...`,
        // `quota set ...`.
        let at = if full
            .first()
            .is_some_and(|c| c == "masters" || c == "policy" || c == "quota")
        {
            2
        } else {
            1
        };
        full.splice(at..at, flags);
        full
    }

    /// Starts a client command in the background (e.g. a long `corral run`).
    pub fn spawn_client(&self, cert_name: &str, args: &[&str]) -> Child {
        Command::new(corral_bin())
            .args(self.client_args(cert_name, args))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env_remove("RUST_LOG")
            .spawn()
            .expect("spawn corral client")
    }

    /// Client options for the framework library, as the certificate `cert_name`, naming every
    /// master.
    pub fn client_options(&self, cert_name: &str) -> framework::ClientOptions {
        let id = transport::Identity::load(&transport::TlsFiles {
            ca: self.certs.ca(),
            cert: self.certs.cert(cert_name),
            key: self.certs.key(cert_name),
        })
        .expect("load the certificate identity");
        let masters = self.master_addrs.iter().map(|a| a.to_string()).collect();
        framework::ClientOptions::new(masters, std::sync::Arc::new(id))
    }

    pub fn client(&self, cert_name: &str, args: &[&str], timeout: Duration) -> Output {
        let full = self.client_args(cert_name, args);
        let refs: Vec<&str> = full.iter().map(String::as_str).collect();
        corral(&refs, &[], timeout)
    }

    /// `corral state --json` as the operator `op`.
    pub fn state_json(&self) -> serde_json::Value {
        let out = self.client("op", &["state", "--json"], Duration::from_secs(60));
        assert!(out.status.success(), "state: {}", stderr(&out));
        serde_json::from_slice(&out.stdout).expect("state is JSON")
    }

    /// Polls the leader's state until `pred` holds; fails after 20 s naming `what`.
    pub fn wait_state(
        &self,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        match self.poll_state(Duration::from_secs(20), &pred) {
            Ok(s) => s,
            Err(s) => panic!("state never showed {what}:\n{s:#}"),
        }
    }

    /// Polls the leader's state until `pred` holds (`Ok`, that state) or `within` passed
    /// (`Err`, the last state read).
    pub fn poll_state(
        &self,
        within: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> Result<serde_json::Value, serde_json::Value> {
        let deadline = Instant::now() + within;
        loop {
            let s = self.state_json();
            if pred(&s) {
                return Ok(s);
            }
            if Instant::now() >= deadline {
                return Err(s);
            }
            std::thread::sleep(Duration::from_millis(150));
        }
    }
}

/// Test hosts: network namespaces joined to a bridge in the root namespace by veth pairs, on
/// a private /24 used only by this lab. Everything is removed on drop.
pub struct NetLab {
    pub bridge: String,
    pub subnet: u8,
    pub hosts: Vec<NetHost>,
}

pub struct NetHost {
    pub netns: String,
    /// The veth end in the root namespace (take it down to cut the host off).
    pub link: String,
    pub ip: std::net::Ipv4Addr,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl NetLab {
    /// Whether this machine can make network namespaces (root and iproute2).
    pub fn available() -> Result<(), String> {
        if !is_root() {
            return Err("network namespaces need root".into());
        }
        match Command::new("ip").arg("-V").output() {
            Ok(o) if o.status.success() => Ok(()),
            _ => Err("iproute2's `ip` is not installed".into()),
        }
    }

    /// `n` hosts on 10.213.S.0/24 (S from the process id, so concurrent test processes differ,
    /// and a count of labs in this process, so concurrent tests in one process differ too).
    pub fn new(n: usize) -> NetLab {
        static LABS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let nth = LABS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let subnet = ((std::process::id() + nth * 41) % 200 + 20) as u8;
        let tag = format!("crl{subnet}");
        let bridge = format!("{tag}br");
        let _ = Command::new("ip").args(["link", "del", &bridge]).output();
        ip(&["link", "add", "name", &bridge, "type", "bridge"]);
        ip(&["link", "set", &bridge, "up"]);
        ip(&[
            "addr",
            "add",
            &format!("10.213.{subnet}.1/24"),
            "dev",
            &bridge,
        ]);
        let mut lab = NetLab {
            bridge,
            subnet,
            hosts: Vec::new(),
        };
        for i in 0..n {
            let netns = format!("{tag}h{i}");
            let link = format!("{tag}h{i}a");
            let peer = format!("{tag}h{i}b");
            let addr = std::net::Ipv4Addr::new(10, 213, subnet, 10 + i as u8);
            let _ = Command::new("ip").args(["netns", "del", &netns]).output();
            ip(&["netns", "add", &netns]);
            ip(&["link", "add", &link, "type", "veth", "peer", "name", &peer]);
            ip(&["link", "set", &link, "master", &lab.bridge]);
            ip(&["link", "set", &link, "up"]);
            ip(&["link", "set", &peer, "netns", &netns]);
            ip(&[
                "netns",
                "exec",
                &netns,
                "ip",
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                &peer,
            ]);
            ip(&["netns", "exec", &netns, "ip", "link", "set", &peer, "up"]);
            ip(&["netns", "exec", &netns, "ip", "link", "set", "lo", "up"]);
            lab.hosts.push(NetHost {
                netns,
                link,
                ip: addr,
            });
        }
        lab
    }

    /// Cuts host `i` off (its link down) or heals it.
    pub fn set_link(&self, i: usize, up: bool) {
        ip(&[
            "link",
            "set",
            &self.hosts[i].link,
            if up { "up" } else { "down" },
        ]);
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        for h in &self.hosts {
            let _ = Command::new("ip").args(["netns", "del", &h.netns]).output();
            let _ = Command::new("ip").args(["link", "del", &h.link]).output();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
    }
}

/// Runs `f` on a new thread that has entered network namespace `netns` (made by [`NetLab`]):
/// sockets it opens, QUIC endpoints included, live in that namespace. Give `f` a
/// current-thread tokio runtime of its own, so no task runs on a thread outside it.
pub fn in_netns<T: Send + 'static>(
    netns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = PathBuf::from("/run/netns").join(netns);
    std::thread::spawn(move || {
        let ns =
            std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
            .unwrap_or_else(|e| panic!("setns {}: {e}", path.display()));
        f()
    })
}

/// Waits for a background client with a timeout and returns its output.
pub fn wait_child(mut child: Child, timeout: Duration) -> Output {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait().expect("wait child") {
            Some(_) => return child.wait_with_output().expect("collect output"),
            None if Instant::now() > deadline => {
                let _ = child.kill();
                let out = child.wait_with_output().expect("collect output");
                panic!(
                    "client did not finish within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Text of an output's stderr.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Text of an output's stdout.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A small tmpfs mounted at a directory (root only), unmounted on drop: a disk that fills up.
pub struct Tmpfs {
    pub path: PathBuf,
}

impl Tmpfs {
    pub fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).expect("mkdir for the tmpfs");
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mount a tmpfs at {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs {
            path: path.to_owned(),
        }
    }

    /// Writes a file until the filesystem is full; returns its path.
    pub fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.path.join("filler");
        let mut f = std::fs::File::create(&path).expect("create the filler");
        let block = vec![0u8; 4096];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a daemon still holding a file there must not make the unmount fail.
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}
