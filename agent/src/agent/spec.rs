//! Container specs of command tasks: what a task's container sees (hidden work directory,
//! private /tmp, /var/tmp and /dev/shm, its sandbox) and the warning about shared directories.

use super::*;
use crate::error::SpecError;

impl Agent {
    pub(super) fn container_spec(
        &self,
        framework: &FrameworkSummary,
        info: &TaskInfo,
        sandbox: &Path,
    ) -> Result<ContainerSpec, SpecError> {
        let user = info
            .command
            .user
            .clone()
            .or_else(|| self.config.default_user.clone());
        let owner = match (&user, nix::unistd::geteuid().is_root()) {
            (Some(name), true) => nix::unistd::User::from_name(name)
                .ok()
                .flatten()
                .map(|u| (u.uid.as_raw(), u.gid.as_raw())),
            _ => None,
        };
        workdir::create_sandbox(sandbox, owner)?;
        if let (Some(name), Some(_)) = (&user, owner) {
            if let Err(e) = workdir::check_reachable(sandbox, name) {
                tracing::warn!(task = %info.task_id, "{e}");
            }
        }
        let argv = if info.command.shell {
            vec![
                "/bin/sh".to_owned(),
                "-c".to_owned(),
                info.command.value.clone(),
            ]
        } else if info.command.arguments.is_empty() {
            vec![info.command.value.clone()]
        } else {
            info.command.arguments.clone()
        };
        if argv.first().is_none_or(|a| a.is_empty()) {
            return Err(SpecError::EmptyCommand("task"));
        }
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        env.insert("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into());
        env.insert("HOME".into(), sandbox.display().to_string());
        env.insert("CORRAL_SANDBOX".into(), sandbox.display().to_string());
        env.insert("CORRAL_TASK_ID".into(), info.task_id.to_string());
        env.insert("CORRAL_FRAMEWORK_ID".into(), framework.id.to_string());
        if let Some(a) = self.core.agent_id() {
            env.insert("CORRAL_AGENT_ID".into(), a.to_string());
        }
        env.insert("MESOS_SANDBOX".into(), sandbox.display().to_string());
        env.insert("MESOS_TASK_ID".into(), info.task_id.to_string());
        for (k, v) in &info.command.environment {
            env.insert(k.clone(), v.clone());
        }
        Ok(container_spec(
            argv,
            env,
            sandbox,
            user,
            &info.resources,
            &info.container,
            &self.config,
        ))
    }
}

/// Every task gets a private tmpfs here (`FsView::private_shm`).
pub(super) const SHM: &str = "/dev/shm";

/// Shared directories every task gets a private one of, from its sandbox
/// (`FsView::private_dirs`: `<sandbox>/var-tmp`), like `/tmp`.
pub(super) const PRIVATE_DIRS: [&str; 1] = ["/var/tmp"];

/// Warns about a work directory whose tasks would share what should be private: a sandbox
/// below /tmp, /var/tmp or /dev/shm is hidden by that private mount, which is then skipped.
pub(super) fn warn_about_shared_dirs(work_dir: &Path) {
    for d in ["/tmp", SHM].iter().chain(PRIVATE_DIRS.iter()) {
        if work_dir.starts_with(d) {
            tracing::warn!(work_dir = %work_dir.display(), dir = d,
                "the work directory is below {d}: tasks share {d} with the host; use another work directory");
        }
    }
    for d in [SHM].iter().chain(PRIVATE_DIRS.iter()) {
        if !Path::new(d).is_dir() {
            tracing::warn!(dir = d, "{d} is missing: tasks get no private {d}");
        }
    }
}

/// The container for a command: its argv and complete environment, the sandbox with its
/// stdout and stderr files, the user, and limits from the resources (cpu weight and cap,
/// memory, pids) in pid/mount/uts/ipc namespaces (and a network one when asked for). In its
/// mount namespace the agent's work directory is hidden (other tenants' sandboxes, the
/// checkpoints under `meta/`, the init specs) except the sandbox itself, at its own path,
/// `/sys/fs/cgroup` is read-only, and `/dev/shm` (a tmpfs) and `/var/tmp`
/// (`<sandbox>/var-tmp`) are the task's own, like `/tmp`.
pub(super) fn container_spec(
    argv: Vec<String>,
    env: BTreeMap<String, String>,
    sandbox: &Path,
    user: Option<String>,
    r: &Resources,
    container: &proto::ContainerSettings,
    config: &Config,
) -> ContainerSpec {
    ContainerSpec {
        argv,
        env: env.into_iter().collect(),
        cwd: sandbox.to_path_buf(),
        stdout: sandbox.join("stdout"),
        stderr: sandbox.join("stderr"),
        user,
        cpus: (r.cpus_milli > 0).then(|| r.cpus()),
        cpu_hard_limit: container.cpu_hard_limit.unwrap_or(true),
        memory_bytes: (r.mem_bytes > 0).then_some(r.mem_bytes),
        oom_policy: container.oom_policy.unwrap_or_default(),
        pids_limit: container.pids_limit,
        namespaces: isolation::Namespaces {
            pid: true,
            mount: true,
            uts: true,
            ipc: true,
            network: match container.network {
                proto::NetworkMode::Host => isolation::NetworkNs::Host,
                proto::NetworkMode::Isolated => isolation::NetworkNs::Isolated,
            },
        },
        hostname: Some(config.hostname.clone()),
        view: isolation::FsView {
            hidden: vec![config.work_dir.clone()],
            visible: Vec::new(),
            read_only: vec![PathBuf::from("/sys/fs/cgroup")],
            private_shm: Path::new(SHM).is_dir(),
            private_dirs: PRIVATE_DIRS
                .iter()
                .map(PathBuf::from)
                .filter(|d| d.is_dir())
                .collect(),
        },
    }
}
