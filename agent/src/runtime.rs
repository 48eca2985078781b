//! How the agent runs a task's process: through the isolation crate (cgroups + namespaces), or,
//! where the agent may not manage cgroups (not root, no controllers), as a plain process group
//! without enforced limits, which the agent logs loudly at start.

use crate::error::RuntimeError;
use isolation::{Container, ContainerSpec, ExitInfo, Isolator};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub enum Runtime {
    Isolated(Box<Isolator>),
    /// No limits are enforced.
    Plain,
}

/// A running task's process, however it was launched.
// Held in an `Arc` and never moved by value in bulk: the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Handle {
    Isolated(Container),
    Plain(PlainProcess),
}

pub struct PlainProcess {
    pid: i32,
    child: Mutex<Option<std::process::Child>>,
}

impl Runtime {
    pub fn describe(&self) -> String {
        match self {
            Runtime::Isolated(i) => format!("cgroup {:?} with namespaces", i.version()),
            Runtime::Plain => "plain processes (no limits enforced)".to_owned(),
        }
    }

    /// Re-attaches to a container launched before the agent restarted.
    pub fn recover(
        &self,
        record: &isolation::ContainerRecord,
    ) -> Result<Arc<Handle>, RuntimeError> {
        match self {
            Runtime::Isolated(iso) => Ok(Arc::new(Handle::Isolated(iso.recover(record)?))),
            Runtime::Plain => Err(RuntimeError::NotIsolated),
        }
    }

    /// Finds container `id` when no record of it was saved (see `Isolator::recover_by_id`).
    pub fn recover_by_id(&self, id: &str) -> Result<Option<Arc<Handle>>, RuntimeError> {
        match self {
            Runtime::Isolated(iso) => Ok(iso
                .recover_by_id(id)?
                .map(|c| Arc::new(Handle::Isolated(c)))),
            Runtime::Plain => Ok(None),
        }
    }

    pub fn launch(&self, id: &str, spec: &ContainerSpec) -> Result<Arc<Handle>, RuntimeError> {
        match self {
            Runtime::Isolated(iso) => Ok(Arc::new(Handle::Isolated(iso.launch(id, spec)?))),
            Runtime::Plain => launch_plain(spec).map(|p| Arc::new(Handle::Plain(p))),
        }
    }
}

fn open_output(path: &PathBuf) -> Result<std::fs::File, RuntimeError> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| RuntimeError::Output {
            path: path.clone(),
            source,
        })
}

fn launch_plain(spec: &ContainerSpec) -> Result<PlainProcess, RuntimeError> {
    let Some((program, args)) = spec.argv.split_first() else {
        return Err(RuntimeError::EmptyCommand);
    };
    let child = std::process::Command::new(program)
        .args(args)
        .env_clear()
        .envs(spec.env.iter().cloned())
        .current_dir(&spec.cwd)
        .stdin(Stdio::null())
        .stdout(open_output(&spec.stdout)?)
        .stderr(open_output(&spec.stderr)?)
        .process_group(0)
        .spawn()
        .map_err(|source| RuntimeError::Spawn {
            program: program.clone(),
            source,
        })?;
    Ok(PlainProcess {
        pid: child.id() as i32,
        child: Mutex::new(Some(child)),
    })
}

impl Handle {
    pub fn pid(&self) -> i32 {
        match self {
            Handle::Isolated(c) => c.pid(),
            Handle::Plain(p) => p.pid,
        }
    }

    /// Blocks until the task ends, or returns `Ok(None)` soon after `keep_waiting` says no (at
    /// most [`isolation::WAIT_RECHECK`] later): the agent is stopping and its tasks outlive it,
    /// so no thread may stay blocked on one (the runtime's shutdown would wait for it).
    pub fn wait_while(
        &self,
        keep_waiting: &dyn Fn() -> bool,
    ) -> Result<Option<ExitInfo>, RuntimeError> {
        match self {
            Handle::Isolated(c) => Ok(c.wait_while(keep_waiting)?),
            Handle::Plain(p) => {
                let mut guard = p.child.lock().map_err(|_| RuntimeError::Poisoned)?;
                let Some(child) = guard.as_mut() else {
                    return Err(RuntimeError::AlreadyWaited);
                };
                let status = loop {
                    let waited = child
                        .try_wait()
                        .map_err(|source| RuntimeError::Wait { pid: p.pid, source })?;
                    if let Some(s) = waited {
                        break s;
                    }
                    if !keep_waiting() {
                        return Ok(None);
                    }
                    std::thread::sleep(isolation::WAIT_RECHECK);
                };
                guard.take();
                use std::os::unix::process::ExitStatusExt;
                Ok(Some(ExitInfo {
                    code: status.code(),
                    signal: status.signal(),
                    oom_killed: false,
                    oom_kills: 0,
                    oom_policy: Default::default(),
                    limitation: None,
                }))
            }
        }
    }

    /// The task's end, or `None` once `events` is closed: the agent's event loop stopped and
    /// dropped its receiver, so the watching thread returns and the stopping agent's runtime
    /// does not wait for a task that outlives it.
    pub fn watch<T>(
        &self,
        events: &tokio::sync::mpsc::Sender<T>,
    ) -> Option<Result<ExitInfo, RuntimeError>> {
        self.wait_while(&|| !events.is_closed()).transpose()
    }

    /// SIGTERM, then SIGKILL after `grace`, to every process of the task. Blocks.
    pub fn kill(&self, grace: Duration) -> Result<(), RuntimeError> {
        match self {
            Handle::Isolated(c) => Ok(c.kill(grace)?),
            Handle::Plain(p) => {
                use nix::sys::signal::{killpg, Signal};
                use nix::unistd::Pid;
                let pg = Pid::from_raw(p.pid);
                let _ = killpg(pg, Signal::SIGTERM);
                let deadline = std::time::Instant::now() + grace;
                while std::time::Instant::now() < deadline {
                    if killpg(pg, None).is_err() {
                        return Ok(());
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                let _ = killpg(pg, Signal::SIGKILL);
                Ok(())
            }
        }
    }

    /// Every process of the container (host pids); plain processes: just the first one.
    pub fn procs(&self) -> Result<Vec<i32>, RuntimeError> {
        match self {
            Handle::Isolated(c) => Ok(c.procs()?),
            Handle::Plain(p) => Ok(vec![p.pid]),
        }
    }

    /// Reads the limits back and restores any that changed.
    pub fn check_limits(&self) -> Result<Vec<isolation::LimitDrift>, RuntimeError> {
        match self {
            Handle::Isolated(c) => Ok(c.check_limits()?),
            Handle::Plain(_) => Ok(Vec::new()),
        }
    }

    /// What the agent checkpoints to re-attach after a restart.
    pub fn record(&self) -> Option<isolation::ContainerRecord> {
        match self {
            Handle::Isolated(c) => Some(c.record()),
            Handle::Plain(_) => None,
        }
    }

    pub fn usage(&self) -> Option<proto::ResourceUsage> {
        match self {
            Handle::Isolated(c) => c.usage().ok(),
            Handle::Plain(_) => None,
        }
    }
}
