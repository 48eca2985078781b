//! The in-container init: PID 1 of the task's pid namespace, exec'd by `launch` as
//! `init_program init_args... <spec.json>`. It is single-threaded, so it may fork and allocate
//! freely.
//!
//! Sequence: close stray fds, read the spec, open the status file's directory, `setsid`, make
//! every mount rprivate, mount a private /proc (pid + mount namespace), bind `<sandbox>/tmp` on
//! /tmp and each private directory's source on it (`<sandbox>/var-tmp` on /var/tmp), mount a
//! tmpfs on /dev/shm (private shm), hide the spec's hidden directories and bind its visible paths back, make its read-only
//! paths read-only (`view.rs`), set the hostname, bring `lo` up
//! (isolated network), then fork the task. The task child drops the capability bounding set
//! (non-root), switches user (setgroups/setgid/setuid), sets no_new_privs, enters the sandbox and
//! execs, reporting a failure over a CLOEXEC pipe. The init then reports `ok <pid>` (or the
//! failure) on fd 3 to the agent, forwards SIGTERM/SIGINT/SIGHUP/SIGQUIT/SIGUSR1/SIGUSR2 to the
//! task's process group, reaps every zombie, and when the task exits writes its status atomically
//! to the status file through the directory fd (so a restarted agent can still learn it) and exits with it (128 + signal
//! for a signal).

use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::mount::{mount, MsFlags};
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

use crate::spec::{ExitStatus, InitSpec};

/// Signals the init forwards to the task.
const FORWARDED: [Signal; 6] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// Failure stages the task child reports to the init (first byte of the exec pipe message).
const STAGE_USER: u8 = 1;
const STAGE_CHDIR: u8 = 2;
const STAGE_EXEC: u8 = 3;
const STAGE_CAPS: u8 = 4;

/// Entry point of the init: `args` are the arguments after the init's own subcommand; the last
/// one is the spec path. Returns the process exit code. Call it before any thread or async
/// runtime is started (e.g. first thing in `main` for `corral __init SPEC`).
pub fn init_main(args: &[String]) -> i32 {
    let Some(spec_path) = args.last() else {
        eprintln!("corral-init: usage: <init> SPEC_PATH");
        return 125;
    };
    match run(Path::new(spec_path)) {
        Ok(code) => code,
        Err(msg) => {
            report(&format!("err {msg}\n"));
            eprintln!("corral-init: {msg}");
            125
        }
    }
}

/// Writes to the agent's ready pipe (fd 3); a missing fd 3 is fine (manual runs).
fn report(msg: &str) {
    // SAFETY: writing a valid buffer to fd 3; errors (EBADF, EPIPE) are ignored on purpose.
    unsafe {
        libc::write(3, msg.as_ptr().cast(), msg.len());
    }
}

fn close_ready() {
    // SAFETY: closing fd 3, which only this code uses.
    unsafe {
        libc::close(3);
    }
}

extern "C" fn noop_handler(_: libc::c_int) {}

fn run(spec_path: &Path) -> Result<i32, String> {
    // Nothing of the agent's but fds 0-3 may reach the task.
    // SAFETY: close_range on fds we do not use; failure (ENOSYS) only leaves fds open.
    unsafe {
        libc::syscall(libc::SYS_close_range, 4u32, u32::MAX, 0u32);
    }
    let text = std::fs::read_to_string(spec_path)
        .map_err(|e| format!("read spec {}: {e}", spec_path.display()))?;
    let spec: InitSpec = serde_json::from_str(&text)
        .map_err(|e| format!("parse spec {}: {e}", spec_path.display()))?;

    // The status file's directory, held open: the task's view may hide it (the agent's work
    // directory), and the init writes the status from inside that view.
    let status_dir = open_status_dir(&spec.status_path)?;

    // Own session: the agent's terminal and process group signals do not reach the container.
    let _ = nix::unistd::setsid();

    if spec.mount_ns {
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .map_err(|e| format!("make / rprivate: {e}"))?;
        if spec.pid_ns {
            mount(
                Some("proc"),
                "/proc",
                Some("proc"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                None::<&str>,
            )
            .map_err(|e| format!("mount /proc: {e}"))?;
        }
        if let Some(tmp) = &spec.private_tmp {
            if Path::new("/tmp").is_dir() {
                mount(
                    Some(tmp.as_path()),
                    "/tmp",
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
                .map_err(|e| format!("bind {} on /tmp: {e}", tmp.display()))?;
            }
        }
        for (source, target) in &spec.private_dirs {
            mount(
                Some(source.as_path()),
                target.as_path(),
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| format!("bind {} on {}: {e}", source.display(), target.display()))?;
        }
        if spec.view.private_shm {
            // Its pages are charged to the memory cgroup of the process that writes them: the
            // task's. The mount ends with the namespace, when the task's last process exits.
            mount(
                Some("shm"),
                "/dev/shm",
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                Some("mode=1777"),
            )
            .map_err(|e| format!("mount a tmpfs on /dev/shm: {e}"))?;
        }
        crate::view::apply(&spec.view)?;
    }
    if let Some(h) = &spec.hostname {
        nix::unistd::sethostname(h).map_err(|e| format!("sethostname {h:?}: {e}"))?;
    }
    if spec.net_isolated {
        loopback_up().map_err(|e| format!("bring up lo: {e}"))?;
    }
    if !spec.pid_ns {
        // Orphans of the task are reaped here instead of by the host's init.
        // SAFETY: prctl with integer arguments.
        unsafe {
            libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        }
    }

    // Signals: handled (so the kernel delivers them to a namespace's PID 1) and blocked (so we
    // take them synchronously with sigwait).
    let mut waitset = SigSet::empty();
    waitset.add(Signal::SIGCHLD);
    let handler = SigAction::new(
        SigHandler::Handler(noop_handler),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for s in FORWARDED {
        waitset.add(s);
        // SAFETY: installing an async-signal-safe no-op handler.
        unsafe { sigaction(s, &handler) }.map_err(|e| format!("sigaction {s}: {e}"))?;
    }
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&waitset), None)
        .map_err(|e| format!("sigprocmask: {e}"))?;

    let argv: Vec<CString> = spec
        .argv
        .iter()
        .map(|a| CString::new(a.as_str()))
        .collect::<Result<_, _>>()
        .map_err(|_| "argv contains a NUL byte".to_string())?;
    let envp: Vec<CString> = spec
        .env
        .iter()
        .map(|(k, v)| CString::new(format!("{k}={v}")))
        .collect::<Result<_, _>>()
        .map_err(|_| "env contains a NUL byte".to_string())?;
    if argv.is_empty() {
        return Err("empty argv".into());
    }
    let (exec_r, exec_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe2: {e}"))?;

    // SAFETY: the init is single-threaded, so the child may do anything before exec.
    let task = match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            drop(exec_r);
            task_child(&spec, &argv, &envp, exec_w)
        }
        ForkResult::Parent { child } => child,
    };
    drop(exec_w);
    let mut msg = Vec::new();
    let _ = std::fs::File::from(exec_r).read_to_end(&mut msg);
    if msg.len() >= 5 {
        let errno = i32::from_le_bytes([msg[1], msg[2], msg[3], msg[4]]);
        let stage = match msg[0] {
            STAGE_USER => "user",
            STAGE_CHDIR => "chdir",
            STAGE_CAPS => "caps",
            _ => "exec",
        };
        report(&format!("exec {stage} {errno}\n"));
        close_ready();
        let _ = waitpid(task, None);
        return Ok(127);
    }
    report(&format!("ok {}\n", task.as_raw()));
    close_ready();

    let status = supervise(task, &waitset);
    write_status(&status_dir, &spec.status_path, &status);
    Ok(match status {
        ExitStatus { code: Some(c), .. } => c,
        ExitStatus {
            signal: Some(s), ..
        } => 128 + s,
        _ => 255,
    })
}

/// Waits for signals: reaps every child on SIGCHLD until the task itself exits; forwards the
/// others to the task's process group.
fn supervise(task: Pid, waitset: &SigSet) -> ExitStatus {
    loop {
        let sig = match waitset.wait() {
            Ok(s) => s,
            Err(_) => continue,
        };
        if sig != Signal::SIGCHLD {
            if nix::sys::signal::killpg(task, sig).is_err() {
                let _ = nix::sys::signal::kill(task, sig);
            }
            continue;
        }
        let mut done = None;
        loop {
            match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == task => {
                    done = Some(ExitStatus {
                        code: Some(code),
                        signal: None,
                    })
                }
                Ok(WaitStatus::Signaled(pid, s, _)) if pid == task => {
                    done = Some(ExitStatus {
                        code: None,
                        signal: Some(s as i32),
                    })
                }
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(_) => break,
            }
        }
        if let Some(st) = done {
            return st;
        }
    }
}

fn open_status_dir(status_path: &Path) -> Result<OwnedFd, String> {
    let dir = status_path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    nix::fcntl::open(
        dir,
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| format!("open status directory {}: {e}", dir.display()))
}

/// Writes the status next to the status file's final name and renames it into place, both
/// relative to the directory opened at start.
fn write_status(dir: &OwnedFd, path: &Path, status: &ExitStatus) {
    let Some(name) = path.file_name() else {
        return;
    };
    let tmp = Path::new(name).with_extension("tmp");
    let Ok(json) = serde_json::to_vec(status) else {
        return;
    };
    use nix::fcntl::OFlag;
    let Ok(fd) = nix::fcntl::openat(
        dir,
        &tmp,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_TRUNC | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    ) else {
        return;
    };
    let mut f = std::fs::File::from(fd);
    if std::io::Write::write_all(&mut f, &json).is_ok() {
        let _ = nix::fcntl::renameat(dir, &tmp, dir, Path::new(name));
    }
}

/// The forked task: drop privileges, enter the sandbox, exec. Never returns.
fn task_child(spec: &InitSpec, argv: &[CString], envp: &[CString], exec_w: OwnedFd) -> ! {
    let fail = |stage: u8, errno: Errno| -> ! {
        let mut buf = [0u8; 5];
        buf[0] = stage;
        buf[1..].copy_from_slice(&(errno as i32).to_le_bytes());
        // SAFETY: writing a valid 5-byte buffer to our pipe, then exiting without unwinding.
        unsafe {
            libc::write(exec_w.as_raw_fd(), buf.as_ptr().cast(), buf.len());
            libc::_exit(127)
        }
    };
    close_ready();
    // Default dispositions and an empty mask for the task (Rust ignores SIGPIPE in the init).
    for s in FORWARDED
        .iter()
        .chain([Signal::SIGPIPE, Signal::SIGCHLD].iter())
    {
        // SAFETY: resetting to SIG_DFL.
        let _ = unsafe {
            sigaction(
                *s,
                &SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty()),
            )
        };
    }
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
    let _ = nix::unistd::setsid();

    let am_root = nix::unistd::geteuid().is_root();
    if spec.drop_caps && am_root {
        // SAFETY: prctl with integer arguments.
        unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL,
                0,
                0,
                0,
            );
        }
        for cap in 0..=63 {
            // SAFETY: as above; EINVAL past the last capability ends the loop.
            if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) } != 0 {
                if Errno::last() == Errno::EINVAL {
                    break;
                }
                fail(STAGE_CAPS, Errno::last());
            }
        }
    }
    if am_root {
        let groups: Vec<nix::unistd::Gid> = spec
            .groups
            .iter()
            .map(|g| nix::unistd::Gid::from_raw(*g))
            .collect();
        if let Err(e) = nix::unistd::setgroups(&groups) {
            fail(STAGE_USER, e);
        }
        if let Err(e) = nix::unistd::setgid(nix::unistd::Gid::from_raw(spec.gid)) {
            fail(STAGE_USER, e);
        }
        if let Err(e) = nix::unistd::setuid(nix::unistd::Uid::from_raw(spec.uid)) {
            fail(STAGE_USER, e);
        }
    }
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        fail(STAGE_CAPS, Errno::last());
    }
    if let Err(e) = nix::unistd::chdir(&spec.cwd) {
        fail(STAGE_CHDIR, e);
    }
    let err = exec_search(argv, envp, spec);
    fail(STAGE_EXEC, err)
}

/// execve with a `PATH` search (the task's PATH, else a safe default) like execvp, but with the
/// task's environment. Returns the most telling error.
fn exec_search(argv: &[CString], envp: &[CString], spec: &InitSpec) -> Errno {
    let prog = argv[0].as_bytes();
    if prog.contains(&b'/') {
        return nix::unistd::execve(&argv[0], argv, envp)
            .err()
            .unwrap_or(Errno::ENOEXEC);
    }
    let path = task_path(&spec.env);
    let mut seen_eacces = false;
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let Ok(full) = CString::new(format!("{dir}/{}", String::from_utf8_lossy(prog))) else {
            continue;
        };
        match nix::unistd::execve(&full, argv, envp) {
            Err(Errno::EACCES) => seen_eacces = true,
            Err(
                Errno::ENOENT | Errno::ENOTDIR | Errno::ESTALE | Errno::ENODEV | Errno::ETIMEDOUT,
            ) => {}
            Err(e) => return e,
            Ok(_) => return Errno::ENOEXEC,
        }
    }
    if seen_eacces {
        Errno::EACCES
    } else {
        Errno::ENOENT
    }
}

/// The task's PATH, or the default used when the environment has none.
pub(crate) fn task_path(env: &[(String, String)]) -> String {
    env.iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| DEFAULT_PATH.to_string())
}

/// PATH searched when the task's environment has none.
pub const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Sets IFF_UP on `lo` in the (new) network namespace.
fn loopback_up() -> Result<(), Errno> {
    // SAFETY: plain socket(2); the result is checked and owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: `fd` is a fresh socket we own.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain data; zeroed is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (i, b) in b"lo".iter().enumerate() {
        ifr.ifr_name[i] = *b as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read/write `ifr`, a valid ifreq with a NUL-terminated name;
    // the union field ifru_flags is the one these requests use.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) < 0 {
            return Err(Errno::last());
        }
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) < 0 {
            return Err(Errno::last());
        }
    }
    Ok(())
}
