//! The isolator: detects the cgroup setup, owns the agent's cgroup layout, launches and recovers
//! containers.

use std::collections::BTreeMap;
use std::ffi::{c_char, CString};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use serde::{Deserialize, Serialize};

use crate::cgroup::v1::{V1Layout, V1Manager};
use crate::cgroup::v2::{V2Layout, V2Manager};
use crate::cgroup::{detect, CgroupManager, CgroupSetup, CgroupVersion, Limits, OwnCgroups};
use crate::container::{pidfd_open, remove_run_dir, start_time, Container, ContainerRecord};
use crate::error::{IsolationError, Result};
use crate::launch::{fd_at_least_4, spawn, CloneRequest};
use crate::node::{self, NodeResources, Reservation};
use crate::spec::{ContainerSpec, FsView, InitSpec, NetworkNs};

/// Which cgroup backend to use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Backend {
    /// v2 on a unified host, v1 on hybrid and legacy hosts.
    #[default]
    Auto,
    Cgroup2,
    Cgroup1,
}

/// The smallest memory limit accepted: the init and a minimal task need about this much.
pub const MIN_MEMORY_BYTES: u64 = 4 << 20;
/// The init plus the task.
pub const MIN_PIDS: u64 = 2;
/// How long `launch` waits for the init to report the task started.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
const PAGE: u64 = 4096;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IsolatorConfig {
    pub backend: Backend,
    /// Mount point of the cgroup filesystem(s); `/sys/fs/cgroup` normally.
    pub cgroup_root: PathBuf,
    /// Relative name under the agent's own cgroup for the task cgroups (default `corral`).
    pub cgroup_parent: Option<String>,
    /// cgroup v2 only: build the layout under this cgroup (a path as in `/proc/self/cgroup`,
    /// e.g. a delegated systemd scope `/system.slice/corral-agent-tasks.scope`) instead of the
    /// process's own; its processes (the scope's holder) move into `<it>/supervisor` and the
    /// process itself stays in its own cgroup (`V2Layout::prepare_delegated`). Who creates
    /// that cgroup, and when to ask for it, is the caller's policy.
    #[serde(default)]
    pub cgroup_base: Option<String>,
    /// Per-container run directories (`<run_root>/<id>/{spec.json,status}`).
    pub run_root: PathBuf,
    /// The in-namespace init (the corral binary).
    pub init_program: PathBuf,
    /// Arguments before the spec path, e.g. `["__init"]`.
    pub init_args: Vec<String>,
    /// Tasks without a user run as this user (e.g. `nobody`).
    pub default_user: Option<String>,
    /// Users a framework may ask for besides the default.
    pub allowed_users: Vec<String>,
    /// Whether uid 0 tasks are allowed at all.
    pub allow_root: bool,
    /// When set, every working directory must be strictly inside it (the sandbox is chowned to
    /// the task's user, so this keeps a bad spec from handing out a system directory).
    pub sandbox_root: Option<PathBuf>,
    pub default_pids_limit: u64,
}

impl IsolatorConfig {
    pub fn new(init_program: impl Into<PathBuf>, init_args: Vec<String>) -> IsolatorConfig {
        IsolatorConfig {
            backend: Backend::Auto,
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            cgroup_parent: None,
            cgroup_base: None,
            run_root: PathBuf::from("/run/corral/containers"),
            init_program: init_program.into(),
            init_args,
            default_user: Some("nobody".into()),
            allowed_users: Vec::new(),
            allow_root: false,
            sandbox_root: None,
            default_pids_limit: 4096,
        }
    }
}

#[derive(Debug)]
enum Layout {
    V1(V1Layout),
    V2(V2Layout),
}

/// Launches and recovers containers. `Send + Sync`: share it behind an `Arc`; `launch` blocks
/// the calling thread until the task runs (call it from `spawn_blocking`).
#[derive(Debug)]
pub struct Isolator {
    config: IsolatorConfig,
    layout: Layout,
    /// Own cgroups after setup (for node resources).
    own: OwnCgroups,
}

pub(crate) struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

impl Isolator {
    /// Detects the cgroup setup under `config.cgroup_root` (unless forced), prepares the agent's
    /// layout nested under the process's own cgroup in each hierarchy (v2: moves the process into
    /// `<own>/supervisor` when needed) and creates the run root.
    pub fn new(config: IsolatorConfig) -> Result<Isolator> {
        let parent = config
            .cgroup_parent
            .clone()
            .unwrap_or_else(|| "corral".into());
        let parent_ok = !parent.is_empty()
            && !parent.starts_with('/')
            && parent
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != "..");
        if !parent_ok {
            return Err(IsolationError::InvalidSpec(format!(
                "cgroup_parent {parent:?} must be a relative path without '..'"
            )));
        }
        let root = &config.cgroup_root;
        let setup = detect(root)?;
        let own = OwnCgroups::read_self()?;
        let unavailable = |reason: &str| IsolationError::BackendUnavailable {
            requested: config.backend,
            root: root.clone(),
            reason: reason.to_string(),
        };
        let use_v2 = match (config.backend, setup) {
            (Backend::Auto | Backend::Cgroup2, CgroupSetup::Unified) => Some(root.clone()),
            (Backend::Cgroup2, CgroupSetup::Hybrid) => Some(root.join("unified")),
            (Backend::Cgroup2, CgroupSetup::Legacy) => return Err(unavailable("no cgroup2 mount")),
            (Backend::Cgroup1, CgroupSetup::Unified) => {
                return Err(unavailable("the host is cgroup2-only"))
            }
            (Backend::Auto | Backend::Cgroup1, CgroupSetup::Hybrid | CgroupSetup::Legacy) => None,
        };
        let (layout, own) = match (use_v2, &config.cgroup_base) {
            (Some(v2root), Some(base)) => {
                let l = V2Layout::prepare_delegated(&v2root, base, &parent)?;
                // Node resources are bounded by the base's limits (and its ancestors'), where
                // the tasks run, not by the process's own cgroup.
                let own = OwnCgroups {
                    unified: Some(base.clone()),
                    ..own
                };
                (Layout::V2(l), own)
            }
            (None, Some(base)) => {
                return Err(unavailable(&format!(
                    "the delegated cgroup {base} needs cgroup v2, and the isolator uses v1 here"
                )))
            }
            (Some(v2root), None) => {
                let own_path =
                    own.unified
                        .clone()
                        .ok_or_else(|| IsolationError::OwnCgroupUnknown {
                            controller: "0::".into(),
                        })?;
                let pid = std::process::id() as i32;
                let l = V2Layout::prepare(&v2root, &own_path, &parent, pid)?;
                let own = OwnCgroups::read_self()?;
                (Layout::V2(l), own)
            }
            (None, None) => (Layout::V1(V1Layout::prepare(root, &own, &parent)?), own),
        };
        std::fs::create_dir_all(&config.run_root)
            .map_err(|e| IsolationError::io("create run root", &config.run_root, e))?;
        // Init specs hold each task's environment: root's alone.
        std::fs::set_permissions(&config.run_root, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| IsolationError::io("chmod run root", &config.run_root, e))?;
        Ok(Isolator {
            config,
            layout,
            own,
        })
    }

    pub fn version(&self) -> CgroupVersion {
        match self.layout {
            Layout::V1(_) => CgroupVersion::V1,
            Layout::V2(_) => CgroupVersion::V2,
        }
    }

    pub fn config(&self) -> &IsolatorConfig {
        &self.config
    }

    /// The parent cgroup directories of the task cgroups (controller → dir; `unified` on v2).
    pub fn task_parents(&self) -> BTreeMap<String, PathBuf> {
        match &self.layout {
            Layout::V1(l) => l.tasks.clone(),
            Layout::V2(l) => BTreeMap::from([("unified".to_string(), l.tasks.clone())]),
        }
    }

    /// Removes the (empty) task parent cgroups, e.g. when the agent shuts down for good or a test
    /// ends. Fails with EBUSY while containers exist.
    pub fn remove_task_parents(&self) -> Result<()> {
        let mut dirs: Vec<PathBuf> = self.task_parents().into_values().collect();
        dirs.sort();
        dirs.dedup();
        for d in dirs {
            crate::cgroup::rmdir_retry(&d, Duration::from_millis(200))?;
        }
        Ok(())
    }

    /// The ids of every container this isolator's layout holds: the cgroups under the task
    /// parents and the run dirs under the run root, whether or not anyone has a handle to them
    /// (an agent that crashed between creating a container and checkpointing it leaves one
    /// that only this listing finds).
    pub fn container_ids(&self) -> Result<Vec<String>> {
        let mut ids = std::collections::BTreeSet::new();
        let mut dirs: Vec<PathBuf> = self.task_parents().into_values().collect();
        dirs.push(self.config.run_root.clone());
        for dir in dirs {
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(IsolationError::io("list", &dir, e)),
            };
            for entry in entries.flatten() {
                let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
                if let (true, Some(name)) = (is_dir, entry.file_name().to_str()) {
                    if validate_id(name).is_ok() {
                        ids.insert(name.to_owned());
                    }
                }
            }
        }
        Ok(ids.into_iter().collect())
    }

    /// Ends the container `id` without a handle (or a record): SIGKILLs every process in its
    /// cgroups, waits until they are empty, removes them and its run dir. A missing cgroup or
    /// run dir is fine, so this also cleans up after a launch that was cut short.
    pub fn destroy_by_id(&self, id: &str) -> Result<()> {
        validate_id(id)?;
        let cgroup = self.manager(id);
        let start = Instant::now();
        loop {
            let procs = match cgroup.procs() {
                Ok(p) => p,
                // The cgroup is gone (or was never made): nothing runs.
                Err(_) if cgroup.paths().values().all(|p| !p.exists()) => Vec::new(),
                Err(e) => return Err(e),
            };
            if procs.is_empty() {
                break;
            }
            if start.elapsed() > crate::container::KILL_TIMEOUT {
                return Err(IsolationError::Timeout {
                    what: format!("container {id} to exit after SIGKILL"),
                    seconds: crate::container::KILL_TIMEOUT.as_secs_f64(),
                });
            }
            cgroup.kill_all()?;
            std::thread::sleep(Duration::from_millis(5));
        }
        cgroup.remove()?;
        remove_run_dir(&self.config.run_root.join(id))
    }

    fn manager(&self, id: &str) -> Box<dyn CgroupManager> {
        match &self.layout {
            Layout::V1(l) => Box::new(l.manager(id)),
            Layout::V2(l) => Box::new(l.manager(id)),
        }
    }

    /// Validates the spec, creates the cgroup with its limits, and starts the init in the new
    /// namespaces; returns once the task has been exec'd. On any error nothing is left behind
    /// (no cgroup, no process, no run dir).
    pub fn launch(&self, id: &str, spec: &ContainerSpec) -> Result<Container> {
        validate_id(id)?;
        let limits = validate_spec(spec, self.config.default_pids_limit)?;
        let user = self.resolve_user(spec.user.as_deref())?;
        if !spec.cwd.is_absolute() || !spec.cwd.is_dir() {
            return Err(IsolationError::MissingWorkdir(spec.cwd.clone()));
        }
        if let Some(root) = &self.config.sandbox_root {
            // The sandbox is chowned to the task's user: never a directory outside the agent's.
            if spec.cwd == *root
                || !spec.cwd.starts_with(root)
                || spec
                    .cwd
                    .components()
                    .any(|c| c == std::path::Component::ParentDir)
            {
                return Err(IsolationError::InvalidSpec(format!(
                    "working directory {} is not inside the sandbox root {}",
                    spec.cwd.display(),
                    root.display()
                )));
            }
        }
        let cgroup = self.manager(id);
        // mkdir is the atomic claim on the id: a second launch of the same id fails here.
        cgroup.create(id)?;
        let run_dir = self.config.run_root.join(id);
        let mut guard = Cleanup {
            cgroup: &*cgroup,
            run_dir: &run_dir,
            pid: None,
            armed: true,
        };
        cgroup.apply(&limits)?;
        // A new cgroup starts with oom_kill = 0; recorded so a re-attach compares the same way.
        let baseline = 0;
        prepare_run_dir(&run_dir, &limits)?;
        let (pid, pidfd) = self.start(id, spec, &user, &*cgroup, &run_dir, &mut guard)?;
        let start = start_time(pid).unwrap_or(0);
        guard.armed = false;
        drop(guard);
        Ok(Container {
            id: id.to_string(),
            cgroup,
            pid,
            start_time: start,
            pidfd: Some(pidfd),
            run_dir,
            limits: Mutex::new(limits),
            oom_baseline: baseline,
            oom_group_killed: Default::default(),
            exit: Mutex::new(None),
        })
    }

    fn start(
        &self,
        id: &str,
        spec: &ContainerSpec,
        user: &ResolvedUser,
        cgroup: &dyn CgroupManager,
        run_dir: &Path,
        guard: &mut Cleanup<'_>,
    ) -> Result<(i32, OwnedFd)> {
        // The sandbox belongs to the task's user; <sandbox>/tmp is its private /tmp.
        chown(&spec.cwd, user)?;
        let mount_ns = spec.namespaces.mount;
        // A sandbox below /tmp would be hidden by its own bind mount: no private /tmp then.
        let private_tmp = if mount_ns && !spec.cwd.starts_with("/tmp") {
            let tmp = spec.cwd.join("tmp");
            private_dir(&tmp, user)?;
            Some(tmp)
        } else {
            None
        };
        let mut private_dirs = Vec::new();
        for target in &spec.view.private_dirs {
            if spec.cwd.starts_with(target) {
                tracing::warn!(sandbox = %spec.cwd.display(), dir = %target.display(),
                    "the sandbox is below a private directory, which the task shares with the host");
                continue;
            }
            if !target.is_dir() {
                return Err(IsolationError::InvalidSpec(format!(
                    "private directory {} is not a directory",
                    target.display()
                )));
            }
            let source = FsView::private_dir_source(&spec.cwd, target);
            private_dir(&source, user)?;
            private_dirs.push((source, target.clone()));
        }
        let shm = Path::new("/dev/shm");
        // A sandbox below /dev/shm would be hidden by the tmpfs.
        let private_shm = spec.view.private_shm && !spec.cwd.starts_with(shm);
        if spec.view.private_shm && !private_shm {
            tracing::warn!(sandbox = %spec.cwd.display(),
                "the sandbox is below /dev/shm, which the task shares with the host");
        }
        if private_shm && !shm.is_dir() {
            return Err(IsolationError::InvalidSpec(
                "a private /dev/shm needs a directory /dev/shm".into(),
            ));
        }
        let stdout = open_log(&spec.stdout, user)?;
        let stderr = if spec.stderr == spec.stdout {
            stdout
                .try_clone()
                .map_err(|e| IsolationError::io("dup", &spec.stderr, e))?
        } else {
            open_log(&spec.stderr, user)?
        };
        let devnull = std::fs::File::open("/dev/null")
            .map_err(|e| IsolationError::io("open", "/dev/null", e))?;

        let init_spec = InitSpec {
            argv: spec.argv.clone(),
            env: spec.env.clone(),
            cwd: spec.cwd.clone(),
            uid: user.uid,
            gid: user.gid,
            groups: user.groups.clone(),
            drop_caps: user.uid != 0,
            hostname: spec.hostname.clone(),
            mount_ns,
            pid_ns: spec.namespaces.pid,
            net_isolated: spec.namespaces.network == NetworkNs::Isolated,
            private_tmp,
            private_dirs,
            view: FsView {
                hidden: spec.view.hidden.clone(),
                // The sandbox first: the task's working directory is always where it was.
                visible: std::iter::once(spec.cwd.clone())
                    .chain(spec.view.visible.iter().cloned())
                    .filter(|_| !spec.view.hidden.is_empty())
                    .collect(),
                read_only: spec.view.read_only.clone(),
                private_shm,
                private_dirs: Vec::new(),
            },
            status_path: run_dir.join("status"),
        };
        let spec_path = run_dir.join("spec.json");
        let json = serde_json::to_vec(&init_spec)
            .map_err(|e| IsolationError::InvalidSpec(format!("serialize init spec: {e}")))?;
        std::fs::write(&spec_path, json).map_err(|e| IsolationError::io("write", &spec_path, e))?;

        let program = cstring(
            self.config.init_program.as_os_str().as_encoded_bytes(),
            "init",
        )?;
        let mut args = vec![program.clone()];
        for a in &self.config.init_args {
            args.push(cstring(a.as_bytes(), "init_args")?);
        }
        args.push(cstring(
            spec_path.as_os_str().as_encoded_bytes(),
            "spec path",
        )?);
        let env = [cstring(
            b"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "env",
        )?];
        let argv: Vec<*const c_char> = args
            .iter()
            .map(|a| a.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect();
        let envp: Vec<*const c_char> = env
            .iter()
            .map(|a| a.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect();

        let (ready_r, ready_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| IsolationError::sys("pipe2", e))?;
        let stdin = fd_at_least_4(devnull.into())?;
        let stdout = fd_at_least_4(stdout.into())?;
        let stderr = fd_at_least_4(stderr.into())?;
        let ready_w = fd_at_least_4(ready_w)?;
        let join = cgroup.join_files()?;
        let join_fds: Vec<i32> = join.iter().map(|f| f.as_raw_fd()).collect();
        let cgroup_dir = cgroup.clone_into_fd();

        let mut ns_flags = 0u64;
        let ns = &spec.namespaces;
        for (on, flag) in [
            (ns.pid, libc::CLONE_NEWPID),
            (ns.mount, libc::CLONE_NEWNS),
            (ns.uts, libc::CLONE_NEWUTS),
            (ns.ipc, libc::CLONE_NEWIPC),
            (ns.network == NetworkNs::Isolated, libc::CLONE_NEWNET),
        ] {
            if on {
                ns_flags |= flag as u64;
            }
        }
        let req = CloneRequest {
            program: &program,
            argv: &argv,
            envp: &envp,
            stdin: stdin.as_raw_fd(),
            stdout: stdout.as_raw_fd(),
            stderr: stderr.as_raw_fd(),
            ready: ready_w.as_raw_fd(),
            join: &join_fds,
            cgroup_dir: cgroup_dir.as_ref().map(|f| f.as_raw_fd()),
            ns_flags,
        };
        let pid = spawn(&req)?;
        guard.pid = Some(pid);
        drop((ready_w, stdin, stdout, stderr, join, cgroup_dir));
        let pidfd =
            pidfd_open(pid).ok_or_else(|| IsolationError::sys("pidfd_open", Errno::last()))?;

        let msg = read_ready(ready_r, START_TIMEOUT)?;
        let program_path = self.config.init_program.clone();
        let init_failed = |reason: String| IsolationError::InitFailed {
            program: program_path.clone(),
            reason,
        };
        let mut words = msg.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("ok"), _, _) => Ok((pid, pidfd)),
            (Some("exec"), Some(stage), Some(errno)) => {
                let errno = Errno::from_raw(errno.parse().unwrap_or(0));
                let command = spec.argv[0].clone();
                Err(match (stage, errno) {
                    ("exec", Errno::ENOENT) => IsolationError::CommandNotFound {
                        command,
                        path: crate::init::task_path(&spec.env),
                    },
                    ("exec", e) => IsolationError::ExecFailed {
                        command,
                        reason: e.desc().into(),
                    },
                    ("chdir", e) => IsolationError::ExecFailed {
                        command,
                        reason: format!("cannot enter {}: {}", spec.cwd.display(), e.desc()),
                    },
                    (stage, e) => IsolationError::ExecFailed {
                        command,
                        reason: format!("{stage} setup for uid {}: {}", user.uid, e.desc()),
                    },
                })
            }
            (Some("child"), Some(stage), Some(errno)) => {
                let errno = Errno::from_raw(errno.parse().unwrap_or(0));
                Err(init_failed(format!("{stage}: {}", errno.desc())))
            }
            (Some("err"), _, _) => Err(init_failed(msg.trim_start_matches("err ").trim().into())),
            _ => Err(init_failed(format!(
                "the init exited before starting the task (container {id})"
            ))),
        }
    }

    fn resolve_user(&self, requested: Option<&str>) -> Result<ResolvedUser> {
        let name = requested
            .or(self.config.default_user.as_deref())
            .ok_or(IsolationError::NoUser)?;
        let user = nix::unistd::User::from_name(name)
            .map_err(|e| IsolationError::sys("getpwnam", e))?
            .ok_or_else(|| IsolationError::UnknownUser(name.to_string()))?;
        if user.uid.is_root() {
            if !self.config.allow_root {
                return Err(IsolationError::RootNotAllowed(name.to_string()));
            }
        } else if Some(name) != self.config.default_user.as_deref()
            && !self.config.allowed_users.iter().any(|u| u == name)
        {
            return Err(IsolationError::UserNotAllowed(name.to_string()));
        }
        let cname = CString::new(name).map_err(|_| IsolationError::UnknownUser(name.into()))?;
        let groups = nix::unistd::getgrouplist(&cname, user.gid)
            .map(|g| g.into_iter().map(|g| g.as_raw()).collect())
            .unwrap_or_else(|_| vec![user.gid.as_raw()]);
        Ok(ResolvedUser {
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
            groups,
        })
    }

    /// Re-attaches to a container from its record (after an agent restart): observe, usage, kill,
    /// destroy. A container whose init is gone (or whose pid was reused) comes back already
    /// exited; its status comes from the status file.
    pub fn recover(&self, saved: &ContainerRecord) -> Result<Container> {
        validate_id(&saved.id)?;
        let bad = |reason: String| IsolationError::BadRecord {
            id: saved.id.clone(),
            reason,
        };
        if saved.version != self.version() {
            return Err(bad(format!(
                "cgroup {:?} but the isolator runs {:?}",
                saved.version,
                self.version()
            )));
        }
        let parents = self.task_parents();
        for (ctrl, dir) in &saved.cgroups {
            let ok = parents.get(ctrl).is_some_and(|p| dir == &p.join(&saved.id));
            if !ok {
                return Err(bad(format!(
                    "cgroup {ctrl}={} is not under this agent",
                    dir.display()
                )));
            }
        }
        if saved.run_dir != self.config.run_root.join(&saved.id) {
            return Err(bad(format!(
                "run dir {} is not under the run root",
                saved.run_dir.display()
            )));
        }
        let cgroup: Box<dyn CgroupManager> = match self.version() {
            CgroupVersion::V2 => {
                let p = saved
                    .cgroups
                    .get("unified")
                    .ok_or_else(|| bad("no unified cgroup".into()))?;
                Box::new(V2Manager::new(p.clone()))
            }
            CgroupVersion::V1 => Box::new(V1Manager::new(saved.cgroups.clone())),
        };
        // Open first, then compare the start time: a match proves the fd is the same process.
        let pidfd = pidfd_open(saved.pid)
            .filter(|_| saved.pid > 0 && start_time(saved.pid) == Some(saved.pid_start_time));
        Ok(Container {
            id: saved.id.clone(),
            cgroup,
            pid: saved.pid,
            start_time: saved.pid_start_time,
            pidfd,
            run_dir: saved.run_dir.clone(),
            limits: Mutex::new(saved.limits.clone()),
            oom_baseline: saved.oom_kill_baseline,
            oom_group_killed: Default::default(),
            exit: Mutex::new(None),
        })
    }

    /// Re-attaches to container `id` when no record of it was saved: its launcher (an agent)
    /// died between starting it and checkpointing [`Container::record`]. The record is rebuilt
    /// from what `launch` leaves before the clone: the cgroups, `<run dir>/limits.json`, and the
    /// init, which is the process of the cgroup whose parent is outside it (none: the container
    /// already ended, and its status file, if any, says how). `Ok(None)`: there is no such
    /// container, or its launch stopped before anything could run in it.
    pub fn recover_by_id(&self, id: &str) -> Result<Option<Container>> {
        validate_id(id)?;
        let cgroup = self.manager(id);
        let cgroups = cgroup.paths();
        let run_dir = self.config.run_root.join(id);
        let limits_path = run_dir.join(LIMITS_FILE);
        let limits: Limits = match std::fs::read(&limits_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| IsolationError::BadRecord {
                id: id.to_owned(),
                reason: format!("{}: {e}", limits_path.display()),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(IsolationError::io("read", &limits_path, e)),
        };
        if cgroups.values().all(|p| !p.exists()) {
            return Ok(None);
        }
        let pid = init_of(&cgroup.procs()?).unwrap_or(0);
        let record = ContainerRecord {
            id: id.to_owned(),
            version: self.version(),
            cgroups,
            pid,
            pid_start_time: start_time(pid).unwrap_or(0),
            run_dir,
            limits,
            // A new cgroup starts with oom_kill = 0, as `launch` records.
            oom_kill_baseline: 0,
        };
        self.recover(&record).map(Some)
    }

    /// What the agent may offer: min(host CPUs and memory from procfs, affinity, cpuset, the
    /// agent's own cgroup limits including its ancestors) minus the reservation.
    pub fn node_resources(&self, reserved: &Reservation) -> Result<NodeResources> {
        let total = match &self.layout {
            Layout::V2(l) => node::measure_v2(&l.root, &self.own)?,
            Layout::V1(l) => node::measure_v1(&l.root, &self.own)?,
        };
        Ok(NodeResources {
            cpus_milli: total.cpus_milli.saturating_sub(reserved.cpus_milli),
            mem_bytes: total.mem_bytes.saturating_sub(reserved.mem_bytes),
        })
    }
}

/// Checks a spec and turns its limits into [`Limits`] (memory rounded up to whole pages).
pub fn validate_spec(spec: &ContainerSpec, default_pids_limit: u64) -> Result<Limits> {
    if spec.argv.is_empty() || spec.argv[0].is_empty() {
        return Err(IsolationError::InvalidSpec("argv is empty".into()));
    }
    if spec.argv.iter().any(|a| a.contains('\0')) {
        return Err(IsolationError::InvalidSpec(
            "argv contains a NUL byte".into(),
        ));
    }
    for (k, v) in &spec.env {
        if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
            return Err(IsolationError::InvalidSpec(format!(
                "bad environment variable {k:?}"
            )));
        }
    }
    let limits = validate_limits(&Limits {
        cpus: spec.cpus,
        cpu_hard_limit: spec.cpu_hard_limit,
        memory_bytes: spec.memory_bytes,
        pids_max: spec.pids_limit.unwrap_or(default_pids_limit),
        oom_policy: spec.oom_policy,
    })?;
    if let Some(h) = &spec.hostname {
        if !spec.namespaces.uts {
            return Err(IsolationError::InvalidSpec(
                "hostname needs a uts namespace".into(),
            ));
        }
        if h.is_empty() || h.len() > 64 || h.contains('\0') {
            return Err(IsolationError::InvalidSpec(format!("bad hostname {h:?}")));
        }
    }
    for (what, paths) in [
        ("hidden", &spec.view.hidden),
        ("visible", &spec.view.visible),
        ("read_only", &spec.view.read_only),
        ("private", &spec.view.private_dirs),
    ] {
        for p in paths {
            let bad = !p.is_absolute()
                || p.components().any(|c| c == std::path::Component::ParentDir)
                || p.as_os_str().as_encoded_bytes().contains(&0);
            if bad {
                return Err(IsolationError::InvalidSpec(format!(
                    "{what} path {:?} must be absolute, without '..' or NUL",
                    p.display()
                )));
            }
        }
        if !paths.is_empty() && !spec.namespaces.mount {
            return Err(IsolationError::InvalidSpec(format!(
                "{what} paths need a mount namespace"
            )));
        }
    }
    if spec.view.private_shm && !spec.namespaces.mount {
        return Err(IsolationError::InvalidSpec(
            "a private /dev/shm needs a mount namespace".into(),
        ));
    }
    let mut names = std::collections::BTreeSet::new();
    for p in &spec.view.private_dirs {
        // `/tmp` is private already; each name is one directory of the sandbox.
        let name = FsView::private_dir_source(Path::new(""), p);
        if name.as_os_str().is_empty() || name == Path::new("tmp") || !names.insert(name) {
            return Err(IsolationError::InvalidSpec(format!(
                "private directory {} is /, /tmp or listed twice",
                p.display()
            )));
        }
    }
    if spec.namespaces.pid && !spec.namespaces.mount {
        // Without a mount namespace /proc would still show the host's processes.
        tracing::debug!("pid namespace without mount namespace: /proc is the host's");
    }
    Ok(limits)
}

/// Checks limits (at launch and when they change) and rounds memory up to whole pages.
pub fn validate_limits(l: &Limits) -> Result<Limits> {
    if let Some(c) = l.cpus {
        if !c.is_finite() || c <= 0.0 || c > 4096.0 {
            return Err(IsolationError::InvalidLimit {
                name: "cpus",
                reason: format!("{c} is not in (0, 4096]"),
            });
        }
    }
    if l.cpu_hard_limit && l.cpus.is_none() {
        return Err(IsolationError::InvalidLimit {
            name: "cpus",
            reason: "cpu_hard_limit needs cpus".into(),
        });
    }
    let memory_bytes = match l.memory_bytes {
        Some(0) => {
            return Err(IsolationError::InvalidLimit {
                name: "memory",
                reason: "0 bytes".into(),
            })
        }
        Some(m) if m < MIN_MEMORY_BYTES => {
            return Err(IsolationError::MemoryTooSmall {
                requested: m,
                minimum: MIN_MEMORY_BYTES,
            })
        }
        Some(m) => Some(m.div_ceil(PAGE).saturating_mul(PAGE)),
        None => None,
    };
    let pids_max = l.pids_max;
    if pids_max < MIN_PIDS {
        return Err(IsolationError::InvalidLimit {
            name: "pids",
            reason: format!("{pids_max} is below {MIN_PIDS} (the init and the task)"),
        });
    }
    Ok(Limits {
        cpus: l.cpus,
        cpu_hard_limit: l.cpu_hard_limit,
        memory_bytes,
        pids_max,
        oom_policy: l.oom_policy,
    })
}

/// Undoes a failed launch: kills and reaps the init, removes the cgroup and the run dir.
struct Cleanup<'a> {
    cgroup: &'a dyn CgroupManager,
    run_dir: &'a Path,
    pid: Option<i32>,
    armed: bool,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let _ = self.cgroup.kill_all();
        if let Some(pid) = self.pid {
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
        }
        let start = Instant::now();
        while self.cgroup.procs().map(|p| !p.is_empty()).unwrap_or(false)
            && start.elapsed() < Duration::from_secs(5)
        {
            let _ = self.cgroup.kill_all();
            std::thread::sleep(Duration::from_millis(5));
        }
        if let Err(e) = self.cgroup.remove() {
            tracing::warn!("cleanup after failed launch: {e}");
        }
        let _ = remove_run_dir(self.run_dir);
    }
}

fn read_ready(fd: OwnedFd, timeout: Duration) -> Result<String> {
    let start = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        let left = timeout.saturating_sub(start.elapsed());
        if left.is_zero() {
            return Err(IsolationError::Timeout {
                what: "the container init to start the task".into(),
                seconds: timeout.as_secs_f64(),
            });
        }
        let mut p = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll on one valid pollfd.
        let n = unsafe { libc::poll(&mut p, 1, left.as_millis().min(i32::MAX as u128) as i32) };
        if n < 0 {
            if Errno::last() == Errno::EINTR {
                continue;
            }
            return Err(IsolationError::sys("poll", Errno::last()));
        }
        if n == 0 {
            continue;
        }
        match nix::unistd::read(&fd, &mut buf) {
            Ok(0) => return Ok(String::from_utf8_lossy(&out).into_owned()),
            Ok(k) => {
                out.extend_from_slice(&buf[..k]);
                if out.len() > 4096 || out.ends_with(b"\n") && out.starts_with(b"ok ") {
                    return Ok(String::from_utf8_lossy(&out).into_owned());
                }
            }
            Err(Errno::EINTR) => {}
            Err(e) => return Err(IsolationError::sys("read(ready pipe)", e)),
        }
    }
}

fn cstring(bytes: &[u8], what: &str) -> Result<CString> {
    CString::new(bytes)
        .map_err(|_| IsolationError::InvalidSpec(format!("{what} contains a NUL byte")))
}

/// Creates (or keeps) the sandbox directory `dir` that is bound on a shared directory (/tmp,
/// /var/tmp): mode 1777, the task user's. Through an O_NOFOLLOW fd: a task may have left a
/// symlink of that name in its sandbox.
fn private_dir(dir: &Path, user: &ResolvedUser) -> Result<()> {
    match std::fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(IsolationError::io("create private directory", dir, e)),
    }
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(dir)
        .map_err(|e| IsolationError::io("open private directory (not a directory?)", dir, e))?;
    f.set_permissions(std::fs::Permissions::from_mode(0o1777))
        .map_err(|e| IsolationError::io("chmod", dir, e))?;
    std::os::unix::fs::fchown(&f, Some(user.uid), Some(user.gid))
        .map_err(|e| IsolationError::io("chown", dir, e))
}

fn chown(path: &Path, user: &ResolvedUser) -> Result<()> {
    std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid))
        .map_err(|e| IsolationError::io("chown", path, e))
}

fn open_log(path: &Path, user: &ResolvedUser) -> Result<std::fs::File> {
    let f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| IsolationError::io("open", path, e))?;
    std::os::unix::fs::fchown(&f, Some(user.uid), Some(user.gid))
        .map_err(|e| IsolationError::io("chown", path, e))?;
    Ok(f)
}

/// Container ids become directory names: 1-128 of `[A-Za-z0-9._-]`, not starting with a dot.
pub fn validate_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(IsolationError::InvalidId(id.to_string()))
    }
}

#[cfg(test)]
mod tests;

/// `<run dir>/limits.json`: the limits a container was launched with, written before the clone.
const LIMITS_FILE: &str = "limits.json";

/// Makes a container's run dir anew (0700) with `limits.json` in it: written before the clone,
/// it is what `recover_by_id` needs to rebuild the record of a container whose launcher died
/// before it could save one.
fn prepare_run_dir(run_dir: &Path, limits: &Limits) -> Result<()> {
    remove_run_dir(run_dir)?;
    std::fs::create_dir(run_dir).map_err(|e| IsolationError::io("create run dir", run_dir, e))?;
    let _ = std::fs::set_permissions(run_dir, std::fs::Permissions::from_mode(0o700));
    let path = run_dir.join(LIMITS_FILE);
    let json = serde_json::to_vec(limits)
        .map_err(|e| IsolationError::InvalidSpec(format!("serialize limits: {e}")))?;
    std::fs::write(&path, json).map_err(|e| IsolationError::io("write", &path, e))
}

/// The init among a container's processes: the one whose parent is not in the container (the
/// earliest started, should there be several). `None` when no process is left.
fn init_of(procs: &[i32]) -> Option<i32> {
    let members: std::collections::BTreeSet<i32> = procs.iter().copied().collect();
    let parent_outside = |pid: i32| {
        procfs::process::Process::new(pid)
            .and_then(|p| p.stat())
            .is_ok_and(|stat| !members.contains(&stat.ppid))
    };
    procs
        .iter()
        .copied()
        .filter(|&pid| parent_outside(pid))
        .min_by_key(|&pid| start_time(pid).unwrap_or(u64::MAX))
}
