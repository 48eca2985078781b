//! Test environment: skip checks, an isolator with its own cgroup parent, sandboxes.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use isolation::{ContainerSpec, Isolator, IsolatorConfig};

pub struct Env {
    pub iso: Isolator,
    pub dir: tempfile::TempDir,
    pub init: PathBuf,
}

/// The helper binary: `ISOLATION_TEST_INIT` (in a VM) or the one cargo built. Tasks run it
/// too, and a task's /tmp (and /var/tmp) may be private: a build under /tmp is copied out of it
/// once.
pub fn init_program() -> PathBuf {
    static PROGRAM: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PROGRAM
        .get_or_init(|| {
            let built = std::env::var_os("ISOLATION_TEST_INIT")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_isolation-test-init")));
            if !built.starts_with("/tmp") {
                return built;
            }
            let dir = PathBuf::from(format!(
                "/var/lib/corral-isolation-it/bin-{}",
                std::process::id()
            ));
            std::fs::create_dir_all(&dir).expect("mkdir for the test init");
            for d in [dir.parent().expect("parent"), dir.as_path()] {
                std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
            }
            let copy = dir.join("isolation-test-init");
            std::fs::copy(&built, &copy).expect("copy the test init");
            std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).expect("chmod");
            copy
        })
        .clone()
}

/// Why these tests cannot run here, if they cannot.
pub fn skip_reason() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root (cgroups and namespaces)".into());
    }
    if let Err(e) = isolation::cgroup::detect(Path::new("/sys/fs/cgroup")) {
        return Some(format!("no cgroups: {e}"));
    }
    if nix::unistd::User::from_name("nobody")
        .ok()
        .flatten()
        .is_none()
    {
        return Some("no user 'nobody' in /etc/passwd".into());
    }
    None
}

/// Says why a test does not run. Where the tests must run (CI sets `CORRAL_REQUIRE_VM=1`; the
/// VM guest sets `CORRAL_IN_VM=1`) a skip is a failure, not a message.
pub fn skip(test: &str, why: &str) {
    let required = ["CORRAL_REQUIRE_VM", "CORRAL_IN_VM"]
        .iter()
        .any(|v| std::env::var(v).is_ok_and(|x| x == "1"));
    assert!(!required, "{test} cannot run here: {why}");
    eprintln!("skipping {test}: {why}");
}

impl Env {
    pub fn new(name: &str) -> Option<Env> {
        Env::with(name, |_| {})
    }

    pub fn with(name: &str, tweak: impl FnOnce(&mut IsolatorConfig)) -> Option<Env> {
        if let Some(why) = skip_reason() {
            skip(name, &why);
            return None;
        }
        // Not below /tmp (or /var/tmp): the task's private /tmp is mounted over it (and the
        // checkout itself may live under /tmp).
        let target_tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let base = if target_tmp.starts_with("/tmp") {
            PathBuf::from("/var/lib/corral-isolation-it")
        } else {
            target_tmp
        };
        std::fs::create_dir_all(&base).expect("target tmp dir");
        let dir = tempfile::tempdir_in(&base).expect("tempdir");
        // Sandboxes live below: the task user must be able to traverse it.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let init = init_program();
        let mut cfg = IsolatorConfig::new(&init, vec!["__init".into()]);
        cfg.cgroup_parent = Some(format!("corral-it-{}-{name}", std::process::id()));
        cfg.run_root = dir.path().join("run");
        cfg.default_pids_limit = 256;
        cfg.sandbox_root = Some(dir.path().join("sandboxes"));
        tweak(&mut cfg);
        let iso = Isolator::new(cfg).expect("isolator");
        Some(Env { iso, dir, init })
    }

    /// A fresh sandbox directory.
    pub fn sandbox(&self, tag: &str) -> PathBuf {
        let p = self.dir.path().join("sandboxes").join(tag);
        std::fs::create_dir_all(&p).unwrap();
        std::fs::set_permissions(
            self.dir.path().join("sandboxes"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        p
    }

    /// A spec running the helper with `args` in a new sandbox named `tag`.
    pub fn spec(&self, tag: &str, args: &[&str]) -> ContainerSpec {
        let mut argv = vec![self.init.to_string_lossy().into_owned()];
        argv.extend(args.iter().map(|a| a.to_string()));
        let mut s = ContainerSpec::new(argv, self.sandbox(tag));
        s.env = vec![("PATH".into(), isolation::DEFAULT_PATH.into())];
        s
    }

    pub fn stdout(spec: &ContainerSpec) -> String {
        std::fs::read_to_string(&spec.stdout).unwrap_or_default()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.iso
                .remove_task_parents()
                .expect("task parent cgroups empty at the end");
        } else {
            let _ = self.iso.remove_task_parents();
        }
    }
}

/// Whether a host pid exists.
pub fn alive(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}
