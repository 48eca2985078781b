//! A master and an agent inside this process, on loopback, with their own CA: what
//! `corral run --local` and `corral dev` run.

use anyhow::{Context, Result};
use proto::Role;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use transport::{Identity, TlsFiles};

pub fn hostname() -> String {
    hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// The corral binary itself: containers exec it as their init.
pub fn self_exe() -> Result<PathBuf> {
    std::env::current_exe().context("cannot find the corral binary (/proc/self/exe)")
}

pub struct LocalCerts {
    pub ca: PathBuf,
    pub master: certs::CertPaths,
    pub agent: certs::CertPaths,
    pub framework: certs::CertPaths,
    pub operator: certs::CertPaths,
}

impl LocalCerts {
    pub fn files(&self, p: &certs::CertPaths) -> TlsFiles {
        TlsFiles {
            ca: self.ca.clone(),
            cert: p.cert.clone(),
            key: p.key.clone(),
        }
    }

    pub fn identity(&self, p: &certs::CertPaths) -> Result<Arc<Identity>> {
        Ok(Arc::new(Identity::load(&self.files(p))?))
    }
}

/// Creates the CA and one certificate per role in `dir`, reusing those that exist.
pub fn ensure_certs(dir: &Path) -> Result<LocalCerts> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let ca = dir.join("ca.pem");
    if !ca.exists() {
        certs::init_ca(dir, false)?;
    }
    let issue = |role: Role, name: &str| -> Result<certs::CertPaths> {
        let paths = certs::CertPaths {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}-key.pem")),
        };
        if paths.cert.exists() && paths.key.exists() {
            return Ok(paths);
        }
        let req = certs::IssueRequest {
            role,
            name: name.to_owned(),
            sans: vec![],
            days: 365,
        };
        Ok(certs::issue(dir, &req, true)?)
    };
    Ok(LocalCerts {
        ca,
        master: issue(Role::Master, "local-master")?,
        agent: issue(Role::Agent, "local-agent")?,
        framework: issue(Role::Framework, "local-framework")?,
        operator: issue(Role::Operator, "local-operator")?,
    })
}

pub struct LocalCluster {
    pub master_addr: SocketAddr,
    pub certs: LocalCerts,
    pub agent_work_dir: PathBuf,
    stop_master: oneshot::Sender<()>,
    stop_agent: oneshot::Sender<()>,
    master_task: JoinHandle<()>,
    agent_task: JoinHandle<()>,
}

impl LocalCluster {
    /// Starts a master on `listen` and one agent, with state under `dir`.
    pub async fn start(
        dir: &Path,
        listen: SocketAddr,
        resources: Option<String>,
        quiet_agent_id: bool,
    ) -> Result<LocalCluster> {
        let _ = quiet_agent_id;
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        // Tasks run as an unprivileged user who must reach their sandboxes under `dir`.
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
        let certs = ensure_certs(&dir.join("certs"))?;
        let server = master::MasterServer::bind(master::Config {
            listen,
            data_dir: dir.join("master"),
            identity: certs.identity(&certs.master)?,
            core: master_core::MasterConfig {
                id_prefix: crate::cmd::daemons::id_prefix(),
                wall_clock_at_start_ms: crate::cmd::daemons::wall_ms(),
                ..Default::default()
            },
            max_frame_len: proto::MAX_FRAME_LEN,
            raft: master::RaftSetup::default(),
            metrics_listen: None,
            join: None,
        })?;
        let master_addr = server.local_addr();
        let (stop_master, master_rx) = oneshot::channel::<()>();
        let master_task = tokio::spawn(async move {
            if let Err(e) = server
                .run(async {
                    let _ = master_rx.await;
                })
                .await
            {
                tracing::error!(error = %e, "local master failed");
            }
        });
        let agent_work_dir = dir.join("agent");
        std::fs::create_dir_all(&agent_work_dir)
            .with_context(|| format!("cannot create {}", agent_work_dir.display()))?;
        let _ = std::fs::set_permissions(&agent_work_dir, std::fs::Permissions::from_mode(0o755));
        let is_root = nix::unistd::geteuid().is_root();
        let config = agent::Config {
            masters: vec![master_addr.to_string()],
            work_dir: agent_work_dir.clone(),
            identity: certs.identity(&certs.agent)?,
            resources,
            reserved: None,
            attributes: Default::default(),
            isolation: agent::IsolationMode::Auto,
            cgroup_parent: Some(format!("corral-local-{}", std::process::id())),
            cgroup_driver: agent::CgroupDriver::Cgroupfs,
            default_user: is_root.then(|| "nobody".to_owned()),
            allowed_users: vec![],
            allow_root: false,
            default_pids_limit: 4096,
            hostname: hostname(),
            init_program: self_exe()?,
            init_args: vec!["__init".to_owned()],
            retry: agent::RetryPolicy {
                initial: Duration::from_secs(2),
                max: Duration::from_secs(30),
            },
            kill_grace: Duration::from_secs(3),
            cleanup_on_exit: true,
            gc: Default::default(),
            metrics_listen: None,
        };
        let (stop_agent, agent_rx) = oneshot::channel::<()>();
        let agent_task = tokio::spawn(async move {
            if let Err(e) = agent::run(config, async {
                let _ = agent_rx.await;
            })
            .await
            {
                tracing::error!(error = %e, "local agent failed");
            }
        });
        Ok(LocalCluster {
            master_addr,
            certs,
            agent_work_dir,
            stop_master,
            stop_agent,
            master_task,
            agent_task,
        })
    }

    pub async fn stop(self) {
        let _ = self.stop_agent.send(());
        let _ = tokio::time::timeout(Duration::from_secs(3), self.agent_task).await;
        let _ = self.stop_master.send(());
        let _ = tokio::time::timeout(Duration::from_secs(3), self.master_task).await;
    }
}

/// A throw-away cluster for `corral run --local`, in a temporary directory (removed when the
/// returned `TempDir` drops), with the options a framework connects to it with.
pub async fn start_throwaway() -> Result<(LocalCluster, tempfile::TempDir, framework::ClientOptions)>
{
    // Not under /tmp or /var/tmp: each task gets a private one mounted over it, which would
    // hide a sandbox below it.
    let dir = tempfile::Builder::new()
        .prefix("corral-local-")
        .tempdir_in(throwaway_state_dir())
        .context("cannot create a temporary directory for the local cluster")?;
    let listen = "127.0.0.1:0".parse().expect("valid literal address");
    let cluster = LocalCluster::start(dir.path(), listen, None, true).await?;
    let identity = cluster.certs.identity(&cluster.certs.framework)?;
    let opts = framework::ClientOptions::new(vec![cluster.master_addr.to_string()], identity);
    Ok((cluster, dir, opts))
}

/// Where `run --local` keeps its throw-away cluster. As root (tasks in containers, with a
/// private /tmp and /var/tmp): `/var/lib/corral-local` (0755, so the task user reaches its
/// sandbox). Otherwise tasks are plain processes: /var/tmp when writable, else the temp dir.
fn throwaway_state_dir() -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        let dir = PathBuf::from("/var/lib/corral-local");
        if std::fs::create_dir_all(&dir).is_ok()
            && std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).is_ok()
        {
            return dir;
        }
    }
    let var_tmp = Path::new("/var/tmp");
    if var_tmp.is_dir() && nix::unistd::access(var_tmp, nix::unistd::AccessFlags::W_OK).is_ok() {
        var_tmp.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}
