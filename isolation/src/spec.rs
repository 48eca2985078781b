//! What a container is asked to be ([`ContainerSpec`]) and what the init is told
//! ([`InitSpec`], a JSON file in the container's run directory).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The network namespace of a task.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum NetworkNs {
    /// Share the host's network (ports are allocated by the agent).
    #[default]
    Host,
    /// A new network namespace with only `lo` (brought up by the init).
    Isolated,
}

/// Which namespaces a task gets. `Default` gives pid, mount, uts and ipc, host network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespaces {
    pub pid: bool,
    pub mount: bool,
    pub uts: bool,
    pub ipc: bool,
    pub network: NetworkNs,
}

impl Default for Namespaces {
    fn default() -> Self {
        Namespaces {
            pid: true,
            mount: true,
            uts: true,
            ipc: true,
            network: NetworkNs::Host,
        }
    }
}

/// The task's view of the host's filesystem, set up in its mount namespace (every path
/// absolute; non-empty lists need a mount namespace).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsView {
    /// Directories hidden from the task: an empty tmpfs, read-only and root-owned, is mounted
    /// over each that exists (e.g. the agent's work directory). The sandbox (`cwd`) and every
    /// `visible` path below a hidden one are then bind-mounted back at their own paths, so the
    /// task still finds them where they were.
    pub hidden: Vec<PathBuf>,
    /// Paths below a hidden directory the task still sees besides its sandbox (a directory or
    /// a file, e.g. a socket's directory), bound back at their own paths.
    pub visible: Vec<PathBuf>,
    /// Made read-only for the task, with every mount below them; skipped where they do not
    /// exist.
    pub read_only: Vec<PathBuf>,
    /// A private tmpfs on `/dev/shm` (mode 1777, nosuid, nodev) instead of the host's, so
    /// POSIX shared memory and named semaphores are the task's own. Its pages are charged to
    /// the container's memory cgroup (they count against `memory_bytes`) and are freed when the
    /// task's last process exits. `/dev/shm` must exist.
    #[serde(default)]
    pub private_shm: bool,
    /// Shared host directories (e.g. `/var/tmp`) replaced, like `/tmp`, by a directory of the
    /// sandbox bound on them: `<sandbox>/<name>`, where `name` is the path without its leading
    /// `/` and with every other `/` turned into `-` (`/var/tmp` → `<sandbox>/var-tmp`), created
    /// by `launch` (mode 1777, the task's user's). Each must exist; skipped (with a warning)
    /// when the sandbox is below it, which the mount would hide.
    #[serde(default)]
    pub private_dirs: Vec<PathBuf>,
}

impl FsView {
    /// The sandbox directory bound on the private directory `target` (see `private_dirs`).
    pub fn private_dir_source(sandbox: &std::path::Path, target: &std::path::Path) -> PathBuf {
        let mut name = std::ffi::OsString::new();
        for c in target.components() {
            if let std::path::Component::Normal(part) = c {
                if !name.is_empty() {
                    name.push("-");
                }
                name.push(part);
            }
        }
        sandbox.join(name)
    }
}

impl Default for FsView {
    /// Nothing hidden; `/sys/fs/cgroup` read-only.
    fn default() -> Self {
        FsView {
            hidden: Vec::new(),
            visible: Vec::new(),
            read_only: vec![PathBuf::from("/sys/fs/cgroup")],
            private_shm: false,
            private_dirs: Vec::new(),
        }
    }
}

/// One container to launch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// Program and arguments. A program without a `/` is searched in the task's `PATH` (from
    /// `env`, else `/usr/local/bin:/usr/bin:/bin`) as the task's user.
    pub argv: Vec<String>,
    /// The complete environment: nothing is inherited from the agent.
    pub env: Vec<(String, String)>,
    /// The sandbox; must exist (and be inside the isolator's `sandbox_root` when set). It is
    /// chowned to the task's user, and `<cwd>/tmp` is bind-mounted on /tmp as the task's private
    /// /tmp (mount namespace only; skipped when the sandbox itself is below /tmp, which the
    /// mount would hide).
    pub cwd: PathBuf,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
    /// `None`: the isolator's default user.
    pub user: Option<String>,
    /// CPU share in CPUs; `cpu.weight = 100 × cpus` (v1: `cpu.shares = 1024 × cpus`).
    pub cpus: Option<f64>,
    /// Also cap at `cpus` with a CFS quota (`cpu.max`, v1 `cpu.cfs_quota_us`).
    pub cpu_hard_limit: bool,
    /// Hard memory limit (`memory.max`; swap 0; OOM kills as `oom_policy` says).
    pub memory_bytes: Option<u64>,
    /// What an OOM kill ends: the whole container (default) or only the process the kernel
    /// chose (see [`proto::OomPolicy`]).
    #[serde(default)]
    pub oom_policy: proto::OomPolicy,
    /// `pids.max`; `None`: the isolator's default. Counts the init too.
    pub pids_limit: Option<u64>,
    pub namespaces: Namespaces,
    /// Needs a UTS namespace.
    pub hostname: Option<String>,
    /// What the task sees of the host's filesystem beyond /proc and /tmp: hidden, visible and
    /// read-only paths, a private /dev/shm and private directories.
    #[serde(default)]
    pub view: FsView,
}

impl ContainerSpec {
    /// A spec with default namespaces, no limits beyond the default pids limit, an empty
    /// environment and stdout/stderr files in the sandbox.
    pub fn new(argv: Vec<String>, cwd: impl Into<PathBuf>) -> ContainerSpec {
        let cwd = cwd.into();
        ContainerSpec {
            argv,
            env: Vec::new(),
            stdout: cwd.join("stdout"),
            stderr: cwd.join("stderr"),
            cwd,
            user: None,
            cpus: None,
            cpu_hard_limit: false,
            memory_bytes: None,
            oom_policy: proto::OomPolicy::KillTask,
            pids_limit: None,
            namespaces: Namespaces::default(),
            hostname: None,
            view: FsView::default(),
        }
    }
}

/// The init's instructions, written by `launch` to `<run dir>/spec.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InitSpec {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    /// Drop the capability bounding and ambient sets before switching user (non-root tasks).
    pub drop_caps: bool,
    pub hostname: Option<String>,
    pub mount_ns: bool,
    pub pid_ns: bool,
    pub net_isolated: bool,
    /// Bind-mounted on /tmp (mount namespace only).
    pub private_tmp: Option<PathBuf>,
    /// `(source, target)`: each source directory bind-mounted on its target (mount namespace
    /// only), after /tmp.
    #[serde(default)]
    pub private_dirs: Vec<(PathBuf, PathBuf)>,
    /// With the sandbox first among the visible paths when anything is hidden.
    #[serde(default)]
    pub view: FsView,
    /// Where the init writes the task's [`ExitStatus`] (atomically, by rename).
    pub status_path: PathBuf,
}

/// The task's exit as written by the init to the status file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}
