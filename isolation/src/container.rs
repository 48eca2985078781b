//! A handle to one running (or finished) container: wait, kill, observe, check limits, destroy.
//!
//! **OOM policy** (`ContainerSpec::oom_policy`, kept in the checkpointed `Limits`, so drift
//! checks and `update_limits` keep it; records without it read as `KillTask`). `KillTask`: v2
//! writes `memory.oom.group = 1`; v1 has no such file, so [`Container::wait`] registers an eventfd
//! on `memory.oom_control` and kills the whole container (freeze, kill, thaw) when the kernel
//! reports an OOM, or at once if `oom_kill` already rose before the wait began (a restarted
//! agent). On v1 that follows the kernel's kill by the agent's reaction time: a process may run
//! briefly after its sibling was killed. `KillProcess`: v2 writes `memory.oom.group = 0`, v1
//! registers nothing; only the kernel's victim dies, and [`ExitInfo`] says what happened
//! (`oom_kills`, `limitation`, and `oom_killed` only when the main process died of it). How the
//! agent turns that into a status (FINISHED when the main process exited 0 under
//! `KillProcess`, with the evidence in `limitation`) is the agent's exit mapping.
//!
//! **Changing limits** (`update_limits`): cgroup writes are ordered so the kernel accepts every
//! step (v1 memsw never below the limit); memory is never cut below the working set (usage
//! minus inactive file cache), since v2 would OOM-kill and v1 refuse: `LimitBelowUsage`,
//! nothing written.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use serde::{Deserialize, Serialize};

use crate::cgroup::{read_file, write_file, CgroupManager, CgroupVersion, Limits};
use crate::error::{IsolationError, Result};
use crate::spec::ExitStatus;
use proto::OomPolicy;

/// How long `kill` and `destroy` wait for a SIGKILLed cgroup to empty.
pub const KILL_TIMEOUT: Duration = Duration::from_secs(10);

/// What the agent checkpoints to re-attach after a restart ([`crate::Isolator::recover`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub version: CgroupVersion,
    /// `{"unified": dir}` on v2; controller → dir on v1.
    pub cgroups: BTreeMap<String, PathBuf>,
    /// Host pid of the init.
    pub pid: i32,
    /// The init's start time (`/proc/<pid>/stat` field 22, clock ticks since boot), to detect pid
    /// reuse.
    pub pid_start_time: u64,
    /// Holds `spec.json` and, once the task exited, `status`.
    pub run_dir: PathBuf,
    pub limits: Limits,
    /// `oom_kill` at launch (an OOM kill is an increase over it).
    pub oom_kill_baseline: u64,
}

/// How a container ended.
#[derive(Clone, Debug, PartialEq)]
pub struct ExitInfo {
    /// The task's exit code, if it exited.
    pub code: Option<i32>,
    /// The signal that killed the task (or the init, e.g. SIGKILL from `kill` or the OOM killer).
    pub signal: Option<i32>,
    /// The OOM killer ended the task. `KillTask`: it killed any process of the container (the
    /// rest died with it). `KillProcess`: it killed a process and the task's main process died
    /// of SIGKILL (the init reported it so, or died itself).
    pub oom_killed: bool,
    /// Processes of the container the kernel's OOM killer killed since launch (0 when the
    /// kernel keeps no count). Under `KillProcess` it can be non-zero for a task that ended
    /// well: workers were killed and the main process went on.
    pub oom_kills: u64,
    /// The policy the container ran under.
    pub oom_policy: OomPolicy,
    /// Set when the OOM killer ran in the container (`oom_killed`, or `oom_kills > 0` under
    /// `KillProcess`): the memory limit, peak and the kernel's counters.
    pub limitation: Option<proto::Limitation>,
}

impl ExitInfo {
    pub fn success(&self) -> bool {
        self.code == Some(0) && !self.oom_killed
    }
}

/// A limit file that no longer held the value the isolator wrote (it has been restored).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitDrift {
    pub file: PathBuf,
    pub expected: String,
    pub found: String,
}

/// A launched or recovered container. Dropping the handle leaves the container running (the agent
/// may be restarting); `destroy` ends it.
#[derive(Debug)]
pub struct Container {
    pub(crate) id: String,
    pub(crate) cgroup: Box<dyn CgroupManager>,
    pub(crate) pid: i32,
    pub(crate) start_time: u64,
    /// `None` when the init was already gone at recovery.
    pub(crate) pidfd: Option<OwnedFd>,
    pub(crate) run_dir: PathBuf,
    /// The limits in force. Held while limits are checked or changed, so a drift check never
    /// sees (and "restores") a half-done update.
    pub(crate) limits: Mutex<Limits>,
    pub(crate) oom_baseline: u64,
    /// `wait` killed the container on an OOM event (v1 under `KillTask`).
    pub(crate) oom_group_killed: std::sync::atomic::AtomicBool,
    pub(crate) exit: Mutex<Option<ExitInfo>>,
}

pub(crate) fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open(2) with integer arguments; a non-negative result is a new fd we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: see above.
    Some(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// `/proc/<pid>/stat` start time.
pub(crate) fn start_time(pid: i32) -> Option<u64> {
    procfs::process::Process::new(pid)
        .ok()?
        .stat()
        .ok()
        .map(|s| s.starttime)
}

/// How often [`Container::wait_while`] asks whether to go on waiting.
pub const WAIT_RECHECK: Duration = Duration::from_millis(200);

/// Blocks until `pidfd` or `event` is readable (or `timeout_ms` passed, -1: never); returns
/// whether `event` is.
fn pidfd_or_event(pidfd: &OwnedFd, event: &OwnedFd, timeout_ms: i32) -> Result<bool> {
    let mut p = [
        libc::pollfd {
            fd: pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: event.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    loop {
        // SAFETY: poll on an array of two valid pollfds, its length passed with it.
        let n = unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, timeout_ms) };
        if n >= 0 {
            return Ok(p[1].revents != 0);
        }
        let e = Errno::last();
        if e != Errno::EINTR {
            return Err(IsolationError::sys("poll(pidfd, oom eventfd)", e));
        }
    }
}

fn pidfd_readable(fd: &OwnedFd, timeout_ms: i32) -> Result<bool> {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: poll on one valid pollfd.
        let n = unsafe { libc::poll(&mut p, 1, timeout_ms) };
        if n >= 0 {
            return Ok(n > 0);
        }
        let e = Errno::last();
        if e != Errno::EINTR {
            return Err(IsolationError::sys("poll(pidfd)", e));
        }
    }
}

impl Container {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Host pid of the init (PID 1 inside the container's pid namespace).
    pub fn pid(&self) -> i32 {
        self.pid
    }

    pub fn version(&self) -> CgroupVersion {
        self.cgroup.version()
    }

    /// The container's cgroup directories.
    pub fn cgroup_paths(&self) -> BTreeMap<String, PathBuf> {
        self.cgroup.paths()
    }

    pub fn record(&self) -> ContainerRecord {
        ContainerRecord {
            id: self.id.clone(),
            version: self.cgroup.version(),
            cgroups: self.cgroup.paths(),
            pid: self.pid,
            pid_start_time: self.start_time,
            run_dir: self.run_dir.clone(),
            limits: self.limits(),
            oom_kill_baseline: self.oom_baseline,
        }
    }

    /// Blocks until the container's init has exited and returns how the task ended. Works for a
    /// recovered container that is not a child of this process (pidfd + status file).
    ///
    /// Under `OomPolicy::KillTask` on cgroup v1, which has no `memory.oom.group`, it also makes
    /// the container one OOM unit: when the kernel reports an OOM in the container's memory
    /// cgroup (or had killed a process before the wait began) it kills every process of it.
    pub fn wait(&self) -> Result<ExitInfo> {
        loop {
            // `keep_waiting` always says yes: only an exit (or an error) ends the wait.
            if let Some(e) = self.wait_inner(&|| true, -1)? {
                return Ok(e);
            }
        }
    }

    /// Like [`Container::wait`], but gives up (`Ok(None)`) as soon as `keep_waiting` returns
    /// false; it is asked at least every [`WAIT_RECHECK`]. A daemon that stops uses it so that no
    /// thread of it stays blocked on a task that outlives it (the task keeps running; a later
    /// [`Isolator::recover`](crate::Isolator::recover) re-attaches).
    pub fn wait_while(&self, keep_waiting: &dyn Fn() -> bool) -> Result<Option<ExitInfo>> {
        self.wait_inner(keep_waiting, WAIT_RECHECK.as_millis() as i32)
    }

    fn wait_inner(
        &self,
        keep_waiting: &dyn Fn() -> bool,
        timeout_ms: i32,
    ) -> Result<Option<ExitInfo>> {
        let oom_event = self.oom_watch();
        loop {
            if let Some(e) = self.try_wait()? {
                return Ok(Some(e));
            }
            if !keep_waiting() {
                return Ok(None);
            }
            match (&self.pidfd, &oom_event) {
                (Some(fd), Some(event)) => {
                    if pidfd_or_event(fd, event, timeout_ms)? {
                        let mut buf = [0u8; 8];
                        // Drains the counter (non-blocking; the event may fire again).
                        let _ = nix::unistd::read(event, &mut buf);
                        self.kill_oom_unit();
                    }
                }
                (Some(fd), None) => {
                    pidfd_readable(fd, timeout_ms)?;
                }
                // No pidfd (a kernel without pidfd_open): poll the status file.
                (None, _) => std::thread::sleep(WAIT_RECHECK),
            }
        }
    }

    /// The v1 OOM eventfd when this container must be killed whole on an OOM, after killing it
    /// already if an OOM kill happened before the event was registered.
    fn oom_watch(&self) -> Option<OwnedFd> {
        if self.limits().oom_policy != OomPolicy::KillTask || self.pidfd.is_none() {
            return None;
        }
        let event = match self.cgroup.oom_eventfd() {
            Ok(e) => e?,
            Err(e) => {
                tracing::warn!(container = %self.id, error = %e,
                    "cannot watch for OOM events: an OOM kill ends only the process the kernel chose");
                return None;
            }
        };
        if self.oom_kills_since_launch() > 0 {
            self.kill_oom_unit();
        }
        Some(event)
    }

    fn oom_kills_since_launch(&self) -> u64 {
        self.cgroup
            .memory_report()
            .ok()
            .and_then(|r| r.oom_kill)
            .map_or(0, |k| k.saturating_sub(self.oom_baseline))
    }

    /// SIGKILLs every process of the container after an OOM (the caller's wait reaps the init).
    fn kill_oom_unit(&self) {
        use std::sync::atomic::Ordering;
        if !self.oom_group_killed.swap(true, Ordering::SeqCst) {
            tracing::info!(container = %self.id,
                "OOM in the container: killing all of it (OOM policy kill-task)");
        }
        if let Err(e) = self.cgroup.kill_all() {
            tracing::warn!(container = %self.id, error = %e, "cannot kill the container after an OOM");
        }
    }

    /// The exit, if the init has exited; reaps it when it is our child.
    pub fn try_wait(&self) -> Result<Option<ExitInfo>> {
        let mut cached = self.exit.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = &*cached {
            return Ok(Some(e.clone()));
        }
        let mut waited = None;
        if let Some(fd) = &self.pidfd {
            if !pidfd_readable(fd, 0)? {
                return Ok(None);
            }
            match waitid(
                Id::PIDFd(fd.as_fd()),
                WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG,
            ) {
                Ok(WaitStatus::Exited(_, c)) => {
                    waited = Some(ExitStatus {
                        code: Some(c),
                        signal: None,
                    })
                }
                Ok(WaitStatus::Signaled(_, s, _)) => {
                    waited = Some(ExitStatus {
                        code: None,
                        signal: Some(s as i32),
                    })
                }
                Ok(WaitStatus::StillAlive) => return Ok(None),
                // Not our child (the agent restarted): the status file tells.
                Ok(_) | Err(_) => {}
            }
        }
        let from_file = std::fs::read(self.status_path())
            .ok()
            .and_then(|b| serde_json::from_slice::<ExitStatus>(&b).ok());
        // No status file: the init died before it could write one, which for a PID 1 means
        // SIGKILL (kill or the OOM killer).
        let status = from_file.or(waited).unwrap_or(ExitStatus {
            code: None,
            signal: Some(Signal::SIGKILL as i32),
        });
        let info = self.exit_info(status);
        *cached = Some(info.clone());
        Ok(Some(info))
    }

    fn status_path(&self) -> PathBuf {
        self.run_dir.join("status")
    }

    fn exit_info(&self, status: ExitStatus) -> ExitInfo {
        let policy = self.limits().oom_policy;
        let report = self.cgroup.memory_report().ok();
        let sigkilled = status.signal == Some(Signal::SIGKILL as i32);
        let oom_kills = report
            .as_ref()
            .and_then(|r| r.oom_kill)
            .map_or(0, |k| k.saturating_sub(self.oom_baseline));
        let oom_ran = match &report {
            Some(r) => match r.oom_kill {
                Some(_) => oom_kills > 0,
                // Kernels without an oom_kill counter: the limit was hit and the task was killed.
                None => r.events.get("failcnt").copied().unwrap_or(0) > 0 && sigkilled,
            },
            None => false,
        } || self
            .oom_group_killed
            .load(std::sync::atomic::Ordering::SeqCst);
        let oom_killed = match policy {
            OomPolicy::KillTask => oom_ran,
            // Only the main process's own death ends the task: it died of SIGKILL (the init
            // reported it, or the init itself died) while the OOM killer was at work.
            OomPolicy::KillProcess => oom_ran && sigkilled,
        };
        let limitation = match (oom_ran, report) {
            (true, Some(r)) => Some(proto::Limitation {
                resource: proto::LimitedResource::Memory,
                limit: r.limit.or(self.limits().memory_bytes).unwrap_or(0),
                peak: r.peak,
                events: r.events,
            }),
            _ => None,
        };
        ExitInfo {
            code: status.code,
            signal: status.signal,
            oom_killed,
            oom_kills,
            oom_policy: policy,
            limitation,
        }
    }

    /// Every process in the container's cgroup(s).
    pub fn procs(&self) -> Result<Vec<i32>> {
        self.cgroup.procs()
    }

    /// Ends every process of the container, double-forked daemons included: SIGTERM to all
    /// (the init forwards it to the task's process group), then after `grace` SIGKILL to all
    /// (`cgroup.kill` on v2; freeze, kill, thaw on v1). Returns once the cgroup is empty.
    pub fn kill(&self, grace: Duration) -> Result<()> {
        if self.empty()? {
            return Ok(());
        }
        if !grace.is_zero() {
            self.cgroup.signal_all(Signal::SIGTERM)?;
            if self.wait_empty(grace)? {
                return Ok(());
            }
        }
        self.cgroup.kill_all()?;
        if self.wait_empty(KILL_TIMEOUT)? {
            Ok(())
        } else {
            Err(IsolationError::Timeout {
                what: format!("container {} to exit after SIGKILL", self.id),
                seconds: KILL_TIMEOUT.as_secs_f64(),
            })
        }
    }

    fn empty(&self) -> Result<bool> {
        Ok(self.cgroup.procs()?.is_empty())
    }

    fn wait_empty(&self, timeout: Duration) -> Result<bool> {
        let start = Instant::now();
        let mut pause = Duration::from_millis(1);
        loop {
            if self.empty()? {
                // A process leaves the cgroup late in exit(); wait until the init has fully
                // exited, then reap it if it is our child so it does not linger as a zombie.
                if let Some(fd) = &self.pidfd {
                    let left = timeout
                        .saturating_sub(start.elapsed())
                        .max(Duration::from_millis(100));
                    pidfd_readable(fd, left.as_millis().min(i32::MAX as u128) as i32)?;
                }
                let _ = self.try_wait();
                return Ok(true);
            }
            if start.elapsed() >= timeout {
                return Ok(false);
            }
            std::thread::sleep(pause.min(timeout.saturating_sub(start.elapsed())));
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    /// cpu user/system/throttled, memory current/peak, pids current, from the cgroup's counters.
    pub fn usage(&self) -> Result<proto::ResourceUsage> {
        self.cgroup.usage()
    }

    /// The limits in force (as launched, or as last changed by [`Container::update_limits`]).
    pub fn limits(&self) -> Limits {
        self.limits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Changes the limits of the running container (a custom executor's container grows and
    /// shrinks with its tasks) and returns the limits now in force. `new` is validated like a
    /// spec's limits (memory rounded up to whole pages). A limit can change in amount but not be
    /// added or removed. Memory is never cut below what the container uses now that reclaim
    /// cannot free (v2 would OOM-kill, v1 refuse): that is [`IsolationError::LimitBelowUsage`]
    /// and nothing is written. If a write fails the old values are written back (best effort)
    /// and the error names the file. [`Container::record`] and [`Container::check_limits`] use
    /// the new limits from then on.
    pub fn update_limits(&self, new: &Limits) -> Result<Limits> {
        let new = crate::isolator::validate_limits(new)?;
        let mut cur = self.limits.lock().unwrap_or_else(|p| p.into_inner());
        if *cur == new {
            return Ok(new);
        }
        let change = |reason: &str| IsolationError::LimitChange {
            id: self.id.clone(),
            reason: reason.to_owned(),
        };
        if cur.memory_bytes.is_some() != new.memory_bytes.is_some() {
            return Err(change(
                "a memory limit can change but not be added or removed",
            ));
        }
        if cur.cpus.is_some() != new.cpus.is_some() || cur.cpu_hard_limit != new.cpu_hard_limit {
            return Err(change("a cpu limit can change but not be added or removed"));
        }
        if let (Some(old), Some(limit)) = (cur.memory_bytes, new.memory_bytes) {
            if limit < old {
                let usage = self.cgroup.memory_working_set()?;
                if usage > limit {
                    return Err(IsolationError::LimitBelowUsage {
                        id: self.id.clone(),
                        limit,
                        usage,
                    });
                }
            }
        }
        if let Err(e) = self.cgroup.update(&cur, &new) {
            if let Err(back) = self.cgroup.update(&new, &cur) {
                tracing::warn!(container = %self.id, error = %back,
                    "cannot restore limits after a failed change; the next drift check retries");
            }
            return Err(e);
        }
        *cur = new.clone();
        Ok(new)
    }

    /// Reads every limit file back, restores the ones that changed and returns what drifted.
    pub fn check_limits(&self) -> Result<Vec<LimitDrift>> {
        let limits = self.limits.lock().unwrap_or_else(|p| p.into_inner());
        let mut drift = Vec::new();
        for (file, expected) in self.cgroup.limit_files(&limits) {
            let found = read_file(&file)?.trim().to_string();
            if found != expected {
                write_file(&file, &expected)?;
                drift.push(LimitDrift {
                    file,
                    expected,
                    found,
                });
            }
        }
        Ok(drift)
    }

    /// Kills whatever is left, reaps the init, removes the cgroup(s) (retrying EBUSY) and the run
    /// directory. Nothing of the container remains.
    pub fn destroy(self) -> Result<()> {
        if !self.empty()? {
            self.kill(Duration::ZERO)?;
        }
        let _ = self.try_wait();
        self.cgroup.remove()?;
        remove_run_dir(&self.run_dir)
    }
}

pub(crate) fn remove_run_dir(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(IsolationError::io("remove run dir", dir, e)),
    }
}
