//! Launch benchmark (harness = false): prints a table of launches/s and p50/p99 latencies from
//! spawn to running (the init reported the task exec'd), to exit (wait returned) and to deleted
//! (cgroup and run dir removed), all for `/bin/true` with cpu, memory and pids limits:
//!
//! - the test init (`isolation-test-init __init`) with the default view (a cgroup plus
//!   pid/mount/uts/ipc namespaces, `/sys/fs/cgroup` read-only), and with a network namespace;
//! - the agent's real container through `corral __init` (the release binary, as the agent execs
//!   it): a fresh sandbox per launch (0750, owned by `nobody`, in a 0711 work directory), the
//!   work directory hidden under a read-only tmpfs with the sandbox bound back, a private
//!   `/dev/shm` tmpfs and `/var/tmp`, read-only `/sys/fs/cgroup`, the agent's environment and
//!   hostname, the user switch to `nobody` — the spec `agent/src/agent/spec.rs`
//!   (`container_spec`) builds, repeated here in `AgentSetup::spec` because the agent crate
//!   does not export it; the sandbox is made inside the timed span, as the agent makes it per
//!   task;
//! - crun and runc (if installed) in a minimal bundle, `run` (create+start+wait+delete) per
//!   launch, and each row's ratio to crun.
//!
//! Our rows are interleaved (one launch of each in turn), so a shared machine's changing load
//! weighs on them alike; the crun and runc rows run after them, one after the other.
//!
//! Then each init's resident memory while a task runs, and a leak check over many launches of
//! the agent's container (the test init's without a release `corral`).
//!
//! `cargo bench -p isolation --bench launch` as root; `scripts/bench.sh` builds `corral` first.
//! `CORRAL_BIN` names the `corral` binary (default `target/release/corral`); `LAUNCH_BENCH_N`
//! sets the launches per row (default 300; crun/runc at most 100); `LAUNCH_BENCH_LEAK_N`
//! (default 1000) the leak check launches.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use isolation::{ContainerSpec, Isolator, IsolatorConfig, NetworkNs};

struct Stats {
    name: String,
    n: usize,
    wall: Duration,
    running: Vec<Duration>,
    exited: Vec<Duration>,
    deleted: Vec<Duration>,
}

fn pct(v: &[Duration], p: usize) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    let mut s = v.to_vec();
    s.sort();
    s[((s.len() * p) / 100).min(s.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        println!("SKIP launch bench: needs root");
        return;
    }
    if let Err(e) = isolation::cgroup::detect(Path::new("/sys/fs/cgroup")) {
        println!("SKIP launch bench: {e}");
        return;
    }
    let n: usize = env_num("LAUNCH_BENCH_N", 300);
    let leak_n: usize = env_num("LAUNCH_BENCH_LEAK_N", 1000);
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&base).expect("target tmp");
    let dir = tempfile::tempdir_in(&base).expect("tempdir");
    chmod755(dir.path());
    let init = std::env::var_os("ISOLATION_TEST_INIT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_isolation-test-init")));
    let mut cfg = IsolatorConfig::new(&init, vec!["__init".into()]);
    cfg.cgroup_parent = Some(format!("corral-bench-{}", std::process::id()));
    cfg.run_root = dir.path().join("run");
    let iso = Isolator::new(cfg).expect("isolator");
    let sandbox = dir.path().join("sandbox");
    std::fs::create_dir_all(&sandbox).unwrap();
    let mut spec = ContainerSpec::new(vec!["/bin/true".into()], &sandbox);
    spec.env = vec![("PATH".into(), isolation::DEFAULT_PATH.into())];
    spec.pids_limit = Some(64);
    spec.memory_bytes = Some(64 << 20);
    spec.cpus = Some(1.0);

    println!(
        "isolation launch benchmark: cgroup {:?}, {n} launches per row, kernel {}",
        iso.version(),
        kernel()
    );
    let mut net = spec.clone();
    net.namespaces.network = NetworkNs::Isolated;
    // The agent's container through the real `corral __init`.
    let agent = corral_bin().map(|bin| AgentSetup::new(&bin, dir.path()));
    let mut variants: Vec<Variant> = vec![
        Variant {
            iso: &iso,
            name: "test init: default view",
            spec: Box::new(|_| spec.clone()),
        },
        Variant {
            iso: &iso,
            name: "test init: ... + net ns",
            spec: Box::new(|_| net.clone()),
        },
    ];
    match &agent {
        Ok(a) => {
            println!(
                "(agent rows: {} __init, work dir {} hidden, tasks as nobody)",
                a.bin.display(),
                a.work.display()
            );
            variants.push(Variant {
                iso: &a.iso,
                name: "corral __init: agent spec",
                spec: Box::new(|i| a.spec(&format!("b-{i}"), false)),
            });
            variants.push(Variant {
                iso: &a.iso,
                name: "corral __init: agent spec + net",
                spec: Box::new(|i| a.spec(&format!("n-{i}"), true)),
            });
        }
        Err(e) => println!("(agent rows: {e})"),
    }
    let mut rows = ours(&variants, n);

    // crun 1.8 refuses hybrid hosts ("cgroups in hybrid mode not supported"): run the OCI
    // runtimes in a private mount namespace without the unified mount, so they see legacy v1.
    // Nothing changes for the host (the bench process is single-threaded here).
    if Path::new("/sys/fs/cgroup/unified").exists() {
        use nix::mount::{mount, umount2, MntFlags, MsFlags};
        let ok = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).is_ok()
            && mount(
                None::<&str>,
                "/",
                None::<&str>,
                MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                None::<&str>,
            )
            .is_ok()
            && umount2("/sys/fs/cgroup/unified", MntFlags::MNT_DETACH).is_ok();
        println!(
            "(crun/runc run in a private mount namespace without /sys/fs/cgroup/unified: {})",
            if ok { "ok" } else { "failed" }
        );
    }
    let bundle = dir.path().join("bundle");
    let own_mem = own_memory_cgroup();
    for rt in ["crun", "runc"] {
        let Some(rt_path) = which(rt) else {
            println!("({rt}: not installed; apt-get install {rt})");
            continue;
        };
        for with_net in [false, true] {
            match make_bundle(&bundle, with_net, &own_mem, rt) {
                Ok(()) => {}
                Err(e) => {
                    println!("({rt}: bundle: {e})");
                    continue;
                }
            }
            let label = format!(
                "{rt}: run /bin/true{}",
                if with_net { " + net ns" } else { "" }
            );
            match oci(&rt_path, &bundle, &label, n.min(100)) {
                Ok(s) => rows.push(s),
                Err(e) => println!("({label}: {e})"),
            }
        }
        cleanup_oci_cgroups(&own_mem, rt);
    }

    println!();
    println!(
        "{:<34} {:>6} {:>9} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>9}",
        "variant",
        "n",
        "launch/s",
        "p50 run",
        "p99 run",
        "p50 exit",
        "p99 exit",
        "p50 del",
        "p99 del",
        "crun/x"
    );
    let crun_p50 = |net: bool| {
        rows.iter()
            .find(|r| r.name.starts_with("crun") && r.name.contains("net") == net)
            .map(|r| pct(&r.deleted, 50))
    };
    for r in &rows {
        let ratio = crun_p50(r.name.contains("net"))
            .map(|c| {
                format!(
                    "{:.1}x",
                    c.as_secs_f64() / pct(&r.deleted, 50).as_secs_f64()
                )
            })
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<34} {:>6} {:>9.1} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>9}",
            r.name,
            r.n,
            r.n as f64 / r.wall.as_secs_f64(),
            ms(pct(&r.running, 50)),
            ms(pct(&r.running, 99)),
            ms(pct(&r.exited, 50)),
            ms(pct(&r.exited, 99)),
            ms(pct(&r.deleted, 50)),
            ms(pct(&r.deleted, 99)),
            ratio
        );
    }
    println!("(times in ms from the start of launch; crun/runc rows: `run` = create+start+wait+delete, so run/exit/del are the same; crun/x = crun p50 total / this row's p50 total)");

    // Resident memory of the per-task init while a task runs.
    println!();
    let mut sleeper = spec.clone();
    sleeper.argv = vec![
        init.to_string_lossy().into_owned(),
        "sleep".into(),
        "5".into(),
    ];
    init_memory(&iso, "test init", &sleeper);
    if let Ok(a) = &agent {
        let mut s = a.spec("rss", false);
        s.argv = vec!["/bin/sleep".into(), "5".into()];
        init_memory(&a.iso, "corral __init (agent spec)", &s);
    }
    println!("(Nomad's per-task executor: 14-20 MB)");

    // Leak check over many launches of the agent's container (the real path).
    let fds0 = count("/proc/self/fd");
    let mounts0 = mounts_here();
    let t = Instant::now();
    let (leak_iso, what) = match &agent {
        Ok(a) => (&a.iso, "corral __init, agent spec"),
        Err(_) => (&iso, "test init"),
    };
    for i in 0..leak_n {
        let id = format!("leak-{i}");
        let s = match &agent {
            Ok(a) => a.spec(&id, false),
            Err(_) => spec.clone(),
        };
        let c = leak_iso.launch(&id, &s).expect("launch");
        c.wait().expect("wait");
        c.destroy().expect("destroy");
        if let Ok(a) = &agent {
            a.remove_sandbox(&id);
        }
    }
    let left: usize = leak_iso.task_parents().values().map(|p| subdirs(p)).sum();
    let zombies = zombie_children();
    let run_dirs = match &agent {
        Ok(a) => count(&a.work.join("containers").to_string_lossy()),
        Err(_) => count(&dir.path().join("run").to_string_lossy()),
    };
    println!(
        "\nleak check ({what}): {leak_n} launches in {:.1} s; cgroups left {left}, run dirs left {run_dirs}, fds {fds0} -> {}, zombie children {zombies}, mounts {mounts0} -> {}",
        t.elapsed().as_secs_f64(),
        count("/proc/self/fd"),
        mounts_here(),
    );
    if let Ok(a) = &agent {
        a.iso.remove_task_parents().expect("remove task parents");
    }
    iso.remove_task_parents().expect("remove task parents");
}

/// One of our rows: an isolator and the spec of its `i`-th launch.
struct Variant<'a> {
    iso: &'a Isolator,
    name: &'static str,
    spec: Box<dyn Fn(usize) -> ContainerSpec + 'a>,
}

/// `n` timed launches of each variant after 10 untimed ones, interleaved (launch `i` of every
/// variant, then launch `i + 1`), so that a machine whose load changes during the run (other
/// builds) weighs on every row alike. `spec(i)` is made inside the timed span. A row's
/// launches per second are `n` over the sum of its launches' times to deleted.
fn ours(variants: &[Variant], n: usize) -> Vec<Stats> {
    for (k, v) in variants.iter().enumerate() {
        for i in 0..10 {
            let s = (v.spec)(n + i);
            let c = v.iso.launch(&format!("warm-{k}-{i}"), &s).expect("launch");
            c.wait().unwrap();
            c.destroy().unwrap();
        }
    }
    let mut rows: Vec<Stats> = variants
        .iter()
        .map(|v| Stats {
            name: v.name.into(),
            n,
            wall: Duration::ZERO,
            running: vec![],
            exited: vec![],
            deleted: vec![],
        })
        .collect();
    for i in 0..n {
        for (k, (v, s)) in variants.iter().zip(rows.iter_mut()).enumerate() {
            let t = Instant::now();
            let sp = (v.spec)(i);
            let c = v.iso.launch(&format!("b-{k}-{i}"), &sp).expect("launch");
            s.running.push(t.elapsed());
            let e = c.wait().expect("wait");
            assert!(e.success(), "{}: {e:?}", v.name);
            s.exited.push(t.elapsed());
            c.destroy().expect("destroy");
            let d = t.elapsed();
            s.deleted.push(d);
            s.wall += d;
        }
    }
    rows
}

/// The agent's side of the bench: an isolator configured as `agent/src/agent/config.rs`'s
/// `make_runtime` configures it (run dir and sandboxes in the work dir, default user `nobody`,
/// the `corral` binary as init) and a work directory laid out as the agent's.
struct AgentSetup {
    bin: PathBuf,
    work: PathBuf,
    iso: Isolator,
    nobody: (u32, u32),
}

impl AgentSetup {
    fn new(bin: &Path, base: &Path) -> AgentSetup {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        let work = base.join("agent-work");
        for d in ["", "sandboxes", "sandboxes/fw"] {
            let p = work.join(d);
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o711)
                .create(&p)
                .expect("work dir");
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o711)).unwrap();
        }
        let nobody = nix::unistd::User::from_name("nobody")
            .ok()
            .flatten()
            .map(|u| (u.uid.as_raw(), u.gid.as_raw()))
            .expect("user nobody");
        let mut cfg = IsolatorConfig::new(bin, vec!["__init".into()]);
        cfg.cgroup_parent = Some(format!("corral-bench-agent-{}", std::process::id()));
        cfg.run_root = work.join("containers");
        cfg.sandbox_root = Some(work.join("sandboxes"));
        cfg.default_user = Some("nobody".into());
        cfg.default_pids_limit = 4096;
        let iso = Isolator::new(cfg).expect("isolator for the agent rows");
        AgentSetup {
            bin: bin.to_path_buf(),
            work,
            iso,
            nobody,
        }
    }

    /// Makes the task's sandbox as `agent::workdir::create_sandbox` does and returns the spec
    /// `agent/src/agent/spec.rs` builds for `/bin/true` (0.5 cpu hard limit, 64 MiB, 64 pids).
    fn spec(&self, task: &str, net: bool) -> ContainerSpec {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        let sandbox = self.work.join("sandboxes/fw").join(task);
        std::fs::DirBuilder::new()
            .mode(0o750)
            .create(&sandbox)
            .expect("sandbox");
        std::os::unix::fs::lchown(&sandbox, Some(self.nobody.0), Some(self.nobody.1))
            .expect("chown sandbox");
        std::fs::set_permissions(&sandbox, std::fs::Permissions::from_mode(0o750)).unwrap();
        let s = sandbox.display().to_string();
        let env = [
            ("PATH", "/usr/local/bin:/usr/bin:/bin"),
            ("HOME", &s),
            ("CORRAL_SANDBOX", &s),
            ("CORRAL_TASK_ID", task),
            ("CORRAL_FRAMEWORK_ID", "fw"),
            ("CORRAL_AGENT_ID", "bench-agent"),
            ("MESOS_SANDBOX", &s),
            ("MESOS_TASK_ID", task),
        ];
        let mut spec = ContainerSpec::new(vec!["/bin/true".into()], &sandbox);
        spec.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        spec.user = Some("nobody".into());
        spec.cpus = Some(0.5);
        spec.cpu_hard_limit = true;
        spec.memory_bytes = Some(64 << 20);
        spec.pids_limit = Some(64);
        spec.hostname = Some("bench-node".into());
        if net {
            spec.namespaces.network = NetworkNs::Isolated;
        }
        spec.view = isolation::FsView {
            hidden: vec![self.work.clone()],
            visible: Vec::new(),
            read_only: vec![PathBuf::from("/sys/fs/cgroup")],
            private_shm: Path::new("/dev/shm").is_dir(),
            private_dirs: ["/var/tmp"]
                .iter()
                .map(PathBuf::from)
                .filter(|d| d.is_dir())
                .collect(),
        };
        spec
    }

    fn remove_sandbox(&self, task: &str) {
        let _ = std::fs::remove_dir_all(self.work.join("sandboxes/fw").join(task));
    }
}

/// `$CORRAL_BIN`, else the workspace's `target/release/corral`.
fn corral_bin() -> Result<PathBuf, String> {
    let bin = std::env::var_os("CORRAL_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
                .join("release/corral")
        });
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!(
            "no corral binary at {}: cargo build --release -p corral (or set CORRAL_BIN)",
            bin.display()
        ))
    }
}

/// Prints the resident memory of the init of a container running `spec` (a sleeper).
fn init_memory(iso: &Isolator, what: &str, spec: &ContainerSpec) {
    let c = iso.launch("bench-rss", spec).expect("launch sleeper");
    // The init has set up the container and forked the task once the task is running.
    let deadline = Instant::now() + Duration::from_secs(5);
    while children_of(c.pid()) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let (rss, pss) = mem_of(c.pid());
    println!("{what} (PID 1 per task) resident memory: VmRSS {rss} kB, Pss {pss} kB");
    c.kill(Duration::ZERO).unwrap();
    c.destroy().unwrap();
}

fn children_of(pid: i32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .map(|s| s.split_whitespace().count())
        .unwrap_or(0)
}

/// Mount points in this process's mount namespace (a leak would grow it).
fn mounts_here() -> usize {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

fn oci(rt: &Path, bundle: &Path, name: &str, n: usize) -> Result<Stats, String> {
    let mut s = Stats {
        name: name.into(),
        n,
        wall: Duration::ZERO,
        running: vec![],
        exited: vec![],
        deleted: vec![],
    };
    // pivot_root fails on an initramfs root (the VM): then run with --no-pivot.
    let no_pivot = std::cell::Cell::new(false);
    let run = |id: &str| -> Result<(), String> {
        let mut args = vec!["run"];
        if no_pivot.get() {
            args.push("--no-pivot");
        }
        args.push("--bundle");
        let out = Command::new(rt)
            .args(&args)
            .arg(bundle)
            .arg(id)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            let _ = Command::new(rt).args(["delete", "-f", id]).output();
            return Err(format!(
                "{} {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(())
    };
    if let Err(e) = run("corral-bench-probe") {
        if !e.contains("pivot_root") {
            return Err(e);
        }
        no_pivot.set(true);
        println!("({name}: pivot_root refused on this root fs, using --no-pivot)");
    }
    for i in 0..3 {
        run(&format!("corral-bench-warm-{i}"))?;
    }
    let wall = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        run(&format!("corral-bench-{i}"))?;
        let d = t.elapsed();
        s.running.push(d);
        s.exited.push(d);
        s.deleted.push(d);
    }
    s.wall = wall.elapsed();
    Ok(s)
}

/// A bundle whose rootfs holds /bin/true and the libraries it needs; namespaces as ours.
fn make_bundle(bundle: &Path, net: bool, own_mem: &str, rt: &str) -> Result<(), String> {
    let _ = std::fs::remove_dir_all(bundle);
    let rootfs = bundle.join("rootfs");
    for d in [
        "bin",
        "lib/x86_64-linux-gnu",
        "lib64",
        "proc",
        "dev",
        "sys",
        "tmp",
    ] {
        std::fs::create_dir_all(rootfs.join(d)).map_err(|e| e.to_string())?;
    }
    std::fs::copy("/bin/true", rootfs.join("bin/true")).map_err(|e| e.to_string())?;
    // Copy the libraries ldd lists (a static /bin/true, e.g. busybox in the VM, needs none).
    let ldd = Command::new("ldd").arg("/bin/true").output();
    let ldd_out = ldd
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    for line in ldd_out.lines() {
        let path = line.split_whitespace().find(|w| w.starts_with('/'));
        if let Some(p) = path {
            let dst = rootfs.join(p.trim_start_matches('/'));
            std::fs::create_dir_all(dst.parent().unwrap()).map_err(|e| e.to_string())?;
            std::fs::copy(p, &dst).map_err(|e| format!("copy {p}: {e}"))?;
        }
    }
    let out = Command::new("crun")
        .arg("spec")
        .current_dir(bundle)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err("crun spec failed".into());
    }
    let path = bundle.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    cfg["process"]["args"] = serde_json::json!(["/bin/true"]);
    cfg["process"]["terminal"] = serde_json::json!(false);
    let mut ns = vec!["pid", "ipc", "uts", "mount"];
    if net {
        ns.push("network");
    }
    cfg["linux"]["namespaces"] = serde_json::json!(ns
        .iter()
        .map(|t| serde_json::json!({"type": t}))
        .collect::<Vec<_>>());
    // Nested under our own cgroup, like ours; same limits.
    cfg["linux"]["cgroupsPath"] = serde_json::json!(format!(
        "{}/corral-bench-{rt}",
        own_mem.trim_end_matches('/')
    ));
    cfg["linux"]["resources"]["memory"] = serde_json::json!({"limit": 64u64 << 20});
    cfg["linux"]["resources"]["pids"] = serde_json::json!({"limit": 64});
    std::fs::write(&path, serde_json::to_vec_pretty(&cfg).unwrap()).map_err(|e| e.to_string())?;
    Ok(())
}

fn cleanup_oci_cgroups(own_mem: &str, rt: &str) {
    for h in [
        "cpu",
        "cpuacct",
        "memory",
        "pids",
        "freezer",
        "cpuset",
        "devices",
        "blkio",
        "net_cls",
        "perf_event",
        "hugetlb",
        "systemd",
        "net_prio",
        "rdma",
        "misc",
        "unified",
    ] {
        let p = Path::new("/sys/fs/cgroup")
            .join(h)
            .join(own_mem.trim_start_matches('/'))
            .join(format!("corral-bench-{rt}"));
        let _ = std::fs::remove_dir(&p);
    }
}

fn own_memory_cgroup() -> String {
    std::fs::read_to_string("/proc/self/cgroup")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            let mut it = l.splitn(3, ':');
            let (_, c, p) = (it.next()?, it.next()?, it.next()?);
            (c.split(',').any(|c| c == "memory") || c.is_empty()).then(|| p.to_string())
        })
        .unwrap_or_else(|| "/".into())
}

fn mem_of(pid: i32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = field_kb(&status, "VmRSS:");
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    (rss, field_kb(&rollup, "Pss:"))
}

fn field_kb(text: &str, key: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn count(dir: &str) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

fn subdirs(p: &Path) -> usize {
    std::fs::read_dir(p)
        .map(|d| d.flatten().filter(|e| e.path().is_dir()).count())
        .unwrap_or(0)
}

fn zombie_children() -> usize {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
                .filter(|s| {
                    let rest = s.rsplit(')').next().unwrap_or("");
                    let f: Vec<&str> = rest.split_whitespace().collect();
                    f.first() == Some(&"Z") && f.get(1) == Some(&me.as_str())
                })
                .count()
        })
        .unwrap_or(0)
}

fn which(prog: &str) -> Option<PathBuf> {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(|d| Path::new(d).join(prog))
        .find(|p| p.exists())
        .or_else(|| {
            ["/usr/sbin", "/usr/bin", "/sbin"]
                .iter()
                .map(|d| Path::new(d).join(prog))
                .find(|p| p.exists())
        })
}

fn chmod755(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755));
}

fn env_num(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string()
}
