//! Where the agent keeps its task cgroups (its cgroup driver, as the kubelet calls it).
//!
//! Under systemd on pure cgroup v2 the tasks must not live below the agent's own unit cgroup:
//! systemd < 254 (no `DelegateSubgroup=`) puts a restarted unit's new main process into the
//! unit's cgroup, and once that cgroup has controllers in `cgroup.subtree_control` and holds task
//! cgroups the kernel refuses the attach (EBUSY, `status=219/CGROUP`): the agent could not start
//! again while any task ran. So, like runc/crun/podman and the kubelet with the systemd driver
//! (systemd's `CGROUP_DELEGATION.md`, "one delegated scope for all containers"), the agent keeps
//! its tasks in a delegated transient scope next to its unit,
//! `<slice>/<unit stem>-tasks.scope`, made once with `systemd-run --scope -p Delegate=yes`
//! around a holder process (`sleep infinity`) that keeps the scope alive while no task runs.
//! The agent itself stays in its unit's cgroup, a leaf systemd can restart it into freely; a
//! restarted agent finds the scope by name and reuses it. systemd never writes inside a
//! delegated scope, so `daemon-reload` cannot change task limits.
//!
//! The decision is pure ([`choose`], [`scope_for`], [`scope_command`]) and unit-tested; the I/O
//! ([`resolve`], [`ensure_scope`]) is thin. The isolation crate only offers "a layout under this
//! cgroup" (`IsolatorConfig::cgroup_base`).

use crate::error::CgroupDriverError;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `--cgroup-driver`: who owns the cgroup the task cgroups live under.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CgroupDriver {
    /// A delegated systemd scope where that is what the host needs (systemd is PID 1, pure
    /// cgroup v2, the agent runs as a `.service`), else the agent's own cgroup.
    #[default]
    Auto,
    /// Always the systemd scope; the agent refuses to start where that is impossible.
    Systemd,
    /// Always below the agent's own cgroup (no systemd, `corral run --local`, tests).
    Cgroupfs,
}

/// A delegated transient scope for the tasks, next to the agent's unit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScopePlan {
    /// The scope unit, e.g. `corral-agent-tasks.scope`.
    pub unit: String,
    /// The slice it goes in, the agent unit's: e.g. `system.slice`.
    pub slice: String,
    /// Its cgroup as `/proc/self/cgroup` writes it: `/system.slice/corral-agent-tasks.scope`.
    pub cgroup: String,
}

/// What [`choose`] decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Task cgroups below the agent's own cgroup; why.
    Own(&'static str),
    /// Task cgroups in a delegated systemd scope.
    Scope(ScopePlan),
}

/// What the host looks like, as far as the choice goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Host {
    /// The isolator will use cgroup v2 on a pure unified hierarchy.
    pub pure_v2: bool,
    /// systemd is the init (`/run/systemd/system` exists).
    pub systemd: bool,
    /// The agent's unified cgroup, the `0::` line of `/proc/self/cgroup`.
    pub own: Option<String>,
}

/// Derives the scope for an agent whose cgroup is `own`, a systemd service of the system
/// manager: `/system.slice/corral-agent.service` → `corral-agent-tasks.scope` in `system.slice`.
/// `None` for anything else (a session scope, a user manager's service, a container's cgroup).
pub fn scope_for(own: &str) -> Option<ScopePlan> {
    let (parent, last) = own.rsplit_once('/')?;
    let stem = last.strip_suffix(".service").filter(|s| !s.is_empty())?;
    let slice = parent
        .rsplit('/')
        .next()
        .filter(|s| s.ends_with(".slice"))?;
    if parent.split('/').any(|c| c.starts_with("user@")) {
        return None;
    }
    // An instance (`corral-agent@a.service`): '@' marks a template in unit names.
    let unit = format!("{}-tasks.scope", stem.replace('@', "-"));
    Some(ScopePlan {
        cgroup: format!("{parent}/{unit}"),
        slice: slice.to_owned(),
        unit,
    })
}

/// Chooses the layout; `Err` says why `--cgroup-driver systemd` cannot be honoured here.
pub fn choose(driver: CgroupDriver, host: &Host) -> Result<Layout, CgroupDriverError> {
    let own_or_err = |why: &'static str| match driver {
        CgroupDriver::Systemd => Err(CgroupDriverError::SystemdUnavailable(why)),
        _ => Ok(Layout::Own(why)),
    };
    if driver == CgroupDriver::Cgroupfs {
        return Ok(Layout::Own("--cgroup-driver cgroupfs"));
    }
    if !host.pure_v2 {
        return own_or_err("not a pure cgroup v2 host");
    }
    if !host.systemd {
        return own_or_err("systemd is not the init (no /run/systemd/system)");
    }
    let Some(own) = host.own.as_deref() else {
        return own_or_err("the agent's cgroup is unknown");
    };
    // `DelegateSubgroup=supervisor` (systemd >= 254) already restarts the agent into a subgroup.
    if let Some(unit) = own.strip_suffix("/supervisor") {
        if unit.ends_with(".service") && driver == CgroupDriver::Auto {
            return Ok(Layout::Own(
                "the unit has DelegateSubgroup= (systemd >= 254)",
            ));
        }
        if let Some(plan) = scope_for(unit) {
            return Ok(Layout::Scope(plan));
        }
    }
    match scope_for(own) {
        Some(plan) => Ok(Layout::Scope(plan)),
        None => own_or_err("the agent does not run as a systemd system service"),
    }
}

/// The command that makes the scope, its first process a holder that keeps it alive.
pub fn scope_command(plan: &ScopePlan) -> Vec<String> {
    [
        "systemd-run",
        "--scope",
        &format!("--unit={}", plan.unit),
        &format!("--slice={}", plan.slice),
        "-p",
        "Delegate=yes",
        // Like the agent's unit: limits are per task.
        "-p",
        "TasksMax=infinity",
        "--quiet",
        "--collect",
        "--no-ask-password",
        "--",
        "sleep",
        "infinity",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// How long systemd gets to start the scope.
const SCOPE_TIMEOUT: Duration = Duration::from_secs(10);

/// Makes the scope unless its cgroup exists (a restarted agent reuses it): runs
/// [`scope_command`] and waits until the scope's cgroup holds the holder. Returns the holder's
/// pid, `None` when the scope was reused.
pub fn ensure_scope(
    plan: &ScopePlan,
    cgroup_root: &Path,
) -> Result<Option<u32>, CgroupDriverError> {
    let dir = cgroup_root.join(plan.cgroup.trim_start_matches('/'));
    if dir.is_dir() {
        return Ok(None);
    }
    let argv = scope_command(plan);
    let shown = argv.join(" ");
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| CgroupDriverError::Run {
            command: shown.clone(),
            source,
        })?;
    let pid = child.id();
    let deadline = Instant::now() + SCOPE_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut err);
            }
            return Err(CgroupDriverError::Exited {
                command: shown,
                status,
                stderr: err.trim().to_owned(),
            });
        }
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        if procs.lines().any(|l| l.trim() == pid.to_string()) {
            // The holder outlives the agent; it is never waited for.
            return Ok(Some(pid));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(CgroupDriverError::Timeout {
                command: shown,
                cgroup: dir,
                timeout: SCOPE_TIMEOUT,
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Decides where the task cgroups go and makes the scope if that is the choice: the cgroup the
/// isolator should build its layout under (`None`: its own), and a line saying why for the log.
/// `v2`: the isolator may use cgroup v2 (not forced to v1).
pub fn resolve(
    driver: CgroupDriver,
    cgroup_root: &Path,
    v2: bool,
) -> Result<(Option<String>, String), CgroupDriverError> {
    let unified =
        isolation::cgroup::detect(cgroup_root).ok() == Some(isolation::CgroupSetup::Unified);
    let host = Host {
        pure_v2: v2 && unified,
        systemd: Path::new("/run/systemd/system").is_dir(),
        own: isolation::cgroup::OwnCgroups::read_self()
            .ok()
            .and_then(|o| o.unified),
    };
    if driver == CgroupDriver::Auto && !nix::unistd::geteuid().is_root() {
        // Only root manages cgroups (the isolator will say so); no polkit round trip.
        return Ok((None, "not root".to_owned()));
    }
    match choose(driver, &host)? {
        Layout::Own(why) => Ok((None, why.to_owned())),
        Layout::Scope(plan) => match ensure_scope(&plan, cgroup_root) {
            Ok(holder) => {
                let how = match holder {
                    Some(pid) => format!("made with holder pid {pid}"),
                    None => "reused".to_owned(),
                };
                Ok((
                    Some(plan.cgroup.clone()),
                    format!("systemd scope {} {how}", plan.unit),
                ))
            }
            Err(e) if driver == CgroupDriver::Systemd => Err(e),
            Err(e) => {
                tracing::warn!(error = %e, scope = %plan.unit,
                    "cannot make a delegated systemd scope for the tasks; keeping them below the \
                     agent's own cgroup: under systemd < 254 the agent then cannot restart while \
                     any task runs (EBUSY, status=219/CGROUP)");
                Ok((None, "the systemd scope could not be made".to_owned()))
            }
        },
    }
}

/// Logs the layout the isolator built: `cgroup layout` with `layout=systemd-scope` (tasks in
/// the delegated scope `base`) or `layout=own-cgroup`, why, and the task cgroups' parent(s).
pub fn log_layout(
    base: Option<&str>,
    why: &str,
    parents: &std::collections::BTreeMap<String, PathBuf>,
) {
    let mut dirs: Vec<String> = parents.values().map(|p| p.display().to_string()).collect();
    dirs.dedup();
    let layout = if base.is_some() {
        "systemd-scope"
    } else {
        "own-cgroup"
    };
    tracing::info!(layout, why, task_cgroups = %dirs.join(" "), "cgroup layout");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(own: &str) -> Host {
        Host {
            pure_v2: true,
            systemd: true,
            own: Some(own.to_owned()),
        }
    }

    #[test]
    fn the_scope_sits_next_to_the_service_in_its_slice() {
        let p = scope_for("/system.slice/corral-agent.service").unwrap();
        assert_eq!(p.unit, "corral-agent-tasks.scope");
        assert_eq!(p.slice, "system.slice");
        assert_eq!(p.cgroup, "/system.slice/corral-agent-tasks.scope");
        let nested = scope_for("/system.slice/system-corral.slice/corral-agent@b.service").unwrap();
        assert_eq!(nested.unit, "corral-agent-b-tasks.scope");
        assert_eq!(nested.slice, "system-corral.slice");
        assert_eq!(
            nested.cgroup,
            "/system.slice/system-corral.slice/corral-agent-b-tasks.scope"
        );
    }

    #[test]
    fn no_scope_outside_a_system_service() {
        for own in [
            "/",
            "/user.slice/user-0.slice/session-3.scope",
            "/user.slice/user-1000.slice/user@1000.service/app.slice/corral-agent.service",
            "/docker/abc/corral-agent.service",
            "/system.slice/.service",
            "/process_api/83d6",
        ] {
            assert_eq!(scope_for(own), None, "{own}");
        }
    }

    #[test]
    fn auto_uses_the_scope_only_for_a_service_under_systemd_on_pure_v2() {
        let svc = "/system.slice/corral-agent.service";
        let Layout::Scope(p) = choose(CgroupDriver::Auto, &host(svc)).unwrap() else {
            panic!("expected a scope");
        };
        assert_eq!(p.cgroup, "/system.slice/corral-agent-tasks.scope");
        let own = |h: &Host| matches!(choose(CgroupDriver::Auto, h), Ok(Layout::Own(_)));
        assert!(own(&Host {
            pure_v2: false,
            ..host(svc)
        }));
        assert!(own(&Host {
            systemd: false,
            ..host(svc)
        }));
        assert!(own(&Host {
            own: None,
            ..host(svc)
        }));
        assert!(own(&host("/user.slice/user-0.slice/session-3.scope")));
        // DelegateSubgroup=supervisor (systemd >= 254) already makes restarts safe.
        assert!(own(&host("/system.slice/corral-agent.service/supervisor")));
        assert!(matches!(
            choose(CgroupDriver::Cgroupfs, &host(svc)),
            Ok(Layout::Own(_))
        ));
    }

    #[test]
    fn the_systemd_driver_refuses_hosts_without_a_scope_and_says_why() {
        let err = choose(
            CgroupDriver::Systemd,
            &Host {
                systemd: false,
                ..host("/system.slice/corral-agent.service")
            },
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("systemd is not the init"), "{err}");
        let err = choose(CgroupDriver::Systemd, &host("/process_api/1"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not run as a systemd system service"), "{err}");
        let Ok(Layout::Scope(p)) = choose(
            CgroupDriver::Systemd,
            &host("/system.slice/corral-agent.service/supervisor"),
        ) else {
            panic!("expected a scope");
        };
        assert_eq!(p.unit, "corral-agent-tasks.scope");
    }

    #[test]
    fn the_scope_command_delegates_and_holds_the_scope() {
        let p = scope_for("/system.slice/corral-agent.service").unwrap();
        assert_eq!(
            scope_command(&p).join(" "),
            "systemd-run --scope --unit=corral-agent-tasks.scope --slice=system.slice \
             -p Delegate=yes -p TasksMax=infinity --quiet --collect --no-ask-password \
             -- sleep infinity"
        );
    }

    #[test]
    fn an_existing_scope_is_reused_and_a_failing_systemd_run_is_reported() {
        let root = tempfile::tempdir().unwrap();
        let p = ScopePlan {
            unit: "x-tasks.scope".into(),
            slice: "system.slice".into(),
            cgroup: "/system.slice/x-tasks.scope".into(),
        };
        std::fs::create_dir_all(root.path().join("system.slice/x-tasks.scope")).unwrap();
        assert!(matches!(ensure_scope(&p, root.path()), Ok(None)));
        // No such scope and (here) no systemd to make it: the error names the command.
        let missing = ScopePlan {
            unit: "corral-it-none-tasks.scope".into(),
            cgroup: "/system.slice/corral-it-none-tasks.scope".into(),
            ..p
        };
        if Path::new("/run/systemd/system").is_dir() {
            return; // a real systemd would make it
        }
        let err = ensure_scope(&missing, root.path()).unwrap_err().to_string();
        assert!(err.contains("systemd-run --scope"), "{err}");
    }
}
