//! Real `corral master` processes for the scenarios: one, or a replicated cluster of three, on
//! loopback, with a CA and the operator's and the probe framework's certificates in
//! `DIR/certs`; the operator's view of them (who leads, how many agents are active).

use crate::LoadgenError;
use proto::{AgentStatus, ClusterState, OperatorCall, OperatorReply, Role};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use transport::{Identity, TlsFiles};

/// Name prefix of the simulated agents' certificates (and hostnames).
pub const AGENT_PREFIX: &str = "sim-";
/// The probe framework's certificate name.
pub const PROBE: &str = "probe";

/// A `corral master` child process, killed on drop.
pub struct MasterProcess {
    pub child: Child,
    /// `host:port`, as clients dial it.
    pub addr: String,
    pub log: PathBuf,
}

impl MasterProcess {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process at once (SIGKILL: no goodbye to anyone) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for MasterProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LoadgenError {
    let what = what.into();
    move |source| LoadgenError::Io { what, source }
}

fn certs_err(dir: &Path) -> impl FnOnce(certs::CertsError) -> LoadgenError + '_ {
    move |source| LoadgenError::Certs {
        dir: dir.to_owned(),
        source,
    }
}

fn free_udp_port() -> Result<u16, LoadgenError> {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .map_err(io("choosing a free UDP port on 127.0.0.1"))
}

/// A CA and the certificates of `n` masters (`m1`..), the operator `op` and the probe
/// framework in `dir/certs`; starts the masters on free loopback ports, each knowing the others.
pub fn start_masters(bin: &Path, dir: &Path, n: usize) -> Result<Vec<MasterProcess>, LoadgenError> {
    let certs_dir = dir.join("certs");
    certs::init_ca(&certs_dir, true).map_err(certs_err(&certs_dir))?;
    let names: Vec<String> = (1..=n).map(|i| format!("m{i}")).collect();
    let mut who: Vec<(Role, &str)> = names.iter().map(|m| (Role::Master, m.as_str())).collect();
    who.extend([(Role::Operator, "op"), (Role::Framework, PROBE)]);
    for (role, name) in who {
        let req = certs::IssueRequest {
            role,
            name: name.into(),
            sans: Vec::new(),
            days: crate::AGENT_CERT_DAYS,
        };
        certs::issue(&certs_dir, &req, true).map_err(certs_err(&certs_dir))?;
    }
    let addrs = (0..n)
        .map(|_| free_udp_port().map(|p| format!("127.0.0.1:{p}")))
        .collect::<Result<Vec<_>, _>>()?;
    let mut masters = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let log = dir.join(format!("{name}.log"));
        let log_file =
            std::fs::File::create(&log).map_err(io(format!("creating {}", log.display())))?;
        let node = certs::node_paths(&certs_dir, name);
        let mut cmd = Command::new(bin);
        cmd.arg("master")
            .args(["--listen", &addrs[i]])
            .arg("--data-dir")
            .arg(dir.join(name))
            .arg("--ca")
            .arg(certs::ca_paths(&certs_dir).cert)
            .arg("--cert")
            .arg(node.cert)
            .arg("--key")
            .arg(node.key);
        if n > 1 {
            cmd.args(["--id", &(i + 1).to_string()]);
            for (j, a) in addrs.iter().enumerate().filter(|(j, _)| *j != i) {
                cmd.args(["--peer", &format!("{}=m{}@{a}", j + 1, j + 1)]);
            }
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(io(format!("starting {} master", bin.display())))?;
        masters.push(MasterProcess {
            child,
            addr: addrs[i].clone(),
            log,
        });
    }
    Ok(masters)
}

/// Client options for the certificate `name` in `dir/certs`, dialling `masters`.
pub fn client_options(
    dir: &Path,
    name: &str,
    masters: Vec<String>,
) -> Result<session::ClientOptions, LoadgenError> {
    let certs_dir = dir.join("certs");
    let node = certs::node_paths(&certs_dir, name);
    let files = TlsFiles {
        ca: certs::ca_paths(&certs_dir).cert,
        cert: node.cert,
        key: node.key,
    };
    let id = Identity::load(&files).map_err(|source| LoadgenError::Identity {
        name: name.into(),
        dir: certs_dir.clone(),
        source,
    })?;
    let mut opts = session::ClientOptions::new(masters, Arc::new(id));
    opts.connect_timeout = Duration::from_secs(5);
    Ok(opts)
}

/// The cluster state as of a linearizable read at the leader.
pub async fn cluster_state(opts: &session::ClientOptions) -> Result<ClusterState, LoadgenError> {
    match framework::operator_call(opts, OperatorCall::GetState).await {
        Ok(OperatorReply::State(s)) => Ok(*s),
        Ok(other) => Err(LoadgenError::Master(format!(
            "unexpected answer to GetState: {other:?}"
        ))),
        Err(e) => Err(LoadgenError::Master(e.to_string())),
    }
}

/// Simulated agents the master lists as active.
pub async fn active_agents(opts: &session::ClientOptions) -> Result<usize, LoadgenError> {
    let s = cluster_state(opts).await?;
    Ok(s.agents
        .iter()
        .filter(|a| a.status == AgentStatus::Active && a.hostname.starts_with(AGENT_PREFIX))
        .count())
}

/// Polls until the masters answer an operator call with a leader, or fails naming their logs;
/// returns the leader's address.
pub async fn wait_serving(
    masters: &mut [MasterProcess],
    opts: &session::ClientOptions,
) -> Result<String, LoadgenError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        for m in masters.iter_mut() {
            if let Ok(Some(status)) = m.child.try_wait() {
                return Err(LoadgenError::Master(format!(
                    "exited ({status}) before serving; see {}",
                    m.log.display()
                )));
            }
        }
        let answer = cluster_state(opts).await;
        match answer {
            Ok(s) if s.masters.leader.is_some() || masters.len() == 1 => {
                return Ok(s.masters.leader.unwrap_or_else(|| masters[0].addr.clone()))
            }
            Ok(_) | Err(_) if tokio::time::Instant::now() >= deadline => {
                let logs: Vec<String> = masters
                    .iter()
                    .map(|m| m.log.display().to_string())
                    .collect();
                return Err(LoadgenError::Master(format!(
                    "no leader serving within 60 s; see {}",
                    logs.join(", ")
                )));
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// A scenario's working directory: `dir` if given (kept), else a temporary one (removed when
/// the returned guard drops).
pub fn work_dir(dir: Option<&Path>) -> Result<(PathBuf, Option<tempfile::TempDir>), LoadgenError> {
    match dir {
        Some(d) => {
            std::fs::create_dir_all(d).map_err(io(format!("creating {}", d.display())))?;
            Ok((d.to_owned(), None))
        }
        None => {
            let temp = tempfile::Builder::new()
                .prefix("corral-bench-")
                .tempdir()
                .map_err(io("creating a temporary directory"))?;
            Ok((temp.path().to_owned(), Some(temp)))
        }
    }
}
