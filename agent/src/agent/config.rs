//! Starting up: the runtime (isolation backend and cgroup layout) chosen from the `Config`,
//! the agent id persisted in the work directory, the node's pressure reader.

use super::*;

/// Reads the node's pressure (PSI) for each usage report. The kernel's support is probed once at
/// start (and logged); a read that fails later is logged once until reads work again.
pub(super) struct PressureReader {
    available: bool,
    failing: bool,
}

impl PressureReader {
    pub(super) fn probe() -> PressureReader {
        let dir = std::path::Path::new(isolation::PROC_PRESSURE);
        let available = match isolation::read_node_pressure(dir) {
            Ok(Some(_)) => true,
            Ok(None) => {
                tracing::info!(
                    "the kernel reports no pressure stall information ({} missing or PSI off, \
                     e.g. psi=0): offers carry no node pressure",
                    dir.display()
                );
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read node pressure; will retry with each usage report");
                true
            }
        };
        PressureReader {
            available,
            failing: false,
        }
    }

    pub(super) fn read(&mut self) -> Option<proto::NodePressure> {
        if !self.available {
            return None;
        }
        match isolation::read_node_pressure(std::path::Path::new(isolation::PROC_PRESSURE)) {
            Ok(p) => {
                self.failing = false;
                p
            }
            Err(e) => {
                if !self.failing {
                    tracing::warn!(error = %e, "cannot read node pressure; usage reports go without it");
                }
                self.failing = true;
                None
            }
        }
    }
}

pub(super) fn make_runtime(config: &Config) -> Result<Runtime, AgentError> {
    let backend = match config.isolation {
        IsolationMode::None => return Ok(Runtime::Plain),
        IsolationMode::Auto => isolation::Backend::Auto,
        IsolationMode::Cgroup2 => isolation::Backend::Cgroup2,
        IsolationMode::Cgroup1 => isolation::Backend::Cgroup1,
    };
    let cgroup_root = PathBuf::from("/sys/fs/cgroup");
    let v2 = backend != isolation::Backend::Cgroup1;
    let (cgroup_base, why) = crate::cgroup_driver::resolve(config.cgroup_driver, &cgroup_root, v2)
        .map_err(AgentError::CgroupDriver)?;
    let iso_config = isolation::IsolatorConfig {
        backend,
        cgroup_root,
        cgroup_parent: config.cgroup_parent.clone(),
        cgroup_base: cgroup_base.clone(),
        run_root: config.work_dir.join("containers"),
        sandbox_root: Some(config.work_dir.join("sandboxes")),
        init_program: config.init_program.clone(),
        init_args: config.init_args.clone(),
        default_user: config.default_user.clone(),
        allowed_users: config.allowed_users.clone(),
        allow_root: config.allow_root,
        default_pids_limit: config.default_pids_limit,
    };
    match isolation::Isolator::new(iso_config) {
        Ok(iso) => {
            crate::cgroup_driver::log_layout(cgroup_base.as_deref(), &why, &iso.task_parents());
            // Tasks run as the default user: refuse to start if it cannot reach its sandboxes.
            if let Some(user) = &config.default_user {
                let sandboxes = config.work_dir.join("sandboxes");
                if let Err(e) = workdir::check_reachable(&sandboxes, user) {
                    let _ = iso.remove_task_parents();
                    return Err(AgentError::Unreachable(e));
                }
            }
            Ok(Runtime::Isolated(Box::new(iso)))
        }
        Err(e) if config.isolation == IsolationMode::Auto => {
            tracing::warn!(error = %e, "cgroups cannot be managed here (run as root for isolation); \
                running tasks as plain processes WITHOUT resource limits");
            Ok(Runtime::Plain)
        }
        Err(e) => Err(AgentError::Isolation(e)),
    }
}

pub(super) fn load_agent_id(work_dir: &Path) -> Option<AgentId> {
    let raw = std::fs::read_to_string(work_dir.join("agent_id")).ok()?;
    let id = raw.trim();
    (!id.is_empty()).then(|| AgentId::new(id))
}

pub(super) fn save_agent_id(work_dir: &Path, id: &AgentId) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = work_dir.join("agent_id.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(id.as_str().as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, work_dir.join("agent_id"))
}
