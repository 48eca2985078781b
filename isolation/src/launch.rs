//! Starting the init: `clone3` (or `clone`) straight into the container's namespaces, joining the
//! cgroup before exec, from any thread of a multi-threaded program.
//!
//! Why a raw clone and not `std::process::Command`: the child must be created *in* the new pid
//! namespace (so the exec'd init is PID 1) and, on v2, directly in its cgroup
//! (`CLONE_INTO_CGROUP`); `Command` can do neither, and `unshare` in `pre_exec` cannot make the
//! caller PID 1. Between clone and exec the child runs in a copy of a multi-threaded process, so it
//! only makes async-signal-safe system calls on memory prepared by the parent: write, dup2, fcntl,
//! execve, _exit. No allocation, no locks.

use std::ffi::{c_char, CStr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::error::{IsolationError, Result};

/// Everything the cloned child needs, prepared by the parent.
pub(crate) struct CloneRequest<'a> {
    pub program: &'a CStr,
    /// NULL-terminated.
    pub argv: &'a [*const c_char],
    /// NULL-terminated.
    pub envp: &'a [*const c_char],
    /// All >= 4 (see [`fd_at_least_4`]).
    pub stdin: RawFd,
    pub stdout: RawFd,
    pub stderr: RawFd,
    /// Becomes fd 3 in the init: it reports "ok <pid>" or an error, then closes it.
    pub ready: RawFd,
    /// `cgroup.procs` files the child writes "0" to, unless it was cloned into its cgroup.
    pub join: &'a [RawFd],
    /// v2 cgroup directory for `CLONE_INTO_CGROUP`.
    pub cgroup_dir: Option<RawFd>,
    /// CLONE_NEW* flags.
    pub ns_flags: u64,
}

#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Moves `fd` to a number >= 4 so the child's dup2 onto 0..=3 can never clobber a source.
pub(crate) fn fd_at_least_4(fd: OwnedFd) -> Result<OwnedFd> {
    if fd.as_raw_fd() >= 4 {
        return Ok(fd);
    }
    // SAFETY: F_DUPFD_CLOEXEC on a valid open fd; the result is a new fd we own.
    let n = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 4) };
    if n < 0 {
        return Err(IsolationError::sys(
            "fcntl(F_DUPFD_CLOEXEC)",
            nix::errno::Errno::last(),
        ));
    }
    // SAFETY: `n` is a fresh fd returned by fcntl and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

/// Clones the init process and returns its host pid. The calling thread's signals are blocked
/// around the clone (as posix_spawn does) so no handler of the agent runs in the child; the child
/// execs with all signals blocked and the init sets its own mask.
pub(crate) fn spawn(req: &CloneRequest<'_>) -> Result<i32> {
    // SAFETY: sigset_t is plain data; sigfillset initialises it.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers to sigset_t values on our stack.
    unsafe {
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
    }
    let result = clone_child(req);
    // SAFETY: restores the mask saved above, in the parent only (the child never returns).
    unsafe {
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
    }
    result
}

fn clone_child(req: &CloneRequest<'_>) -> Result<i32> {
    // First try straight into the cgroup (v2), then joining by writing "0" in the child.
    let attempts: &[bool] = if req.cgroup_dir.is_some() {
        &[true, false]
    } else {
        &[false]
    };
    let mut last = nix::errno::Errno::ENOSYS;
    for &into in attempts {
        let mut args = CloneArgs {
            flags: req.ns_flags | if into { CLONE_INTO_CGROUP } else { 0 },
            exit_signal: libc::SIGCHLD as u64,
            cgroup: if into {
                req.cgroup_dir.unwrap_or(-1) as u64
            } else {
                0
            },
            ..CloneArgs::default()
        };
        // SAFETY: clone3 with stack = 0 behaves like fork: the child continues on a copy of this
        // stack. The child branch below only calls async-signal-safe functions on memory
        // prepared before the call and never returns.
        let pid = unsafe {
            libc::syscall(
                libc::SYS_clone3,
                &mut args as *mut CloneArgs,
                std::mem::size_of::<CloneArgs>(),
            )
        };
        if pid == 0 {
            // SAFETY: we are the child of the clone3 above.
            unsafe { child(req, into) }
        }
        if pid > 0 {
            return Ok(pid as i32);
        }
        last = nix::errno::Errno::last();
        if last == nix::errno::Errno::ENOSYS {
            return clone_legacy(req);
        }
        // CLONE_INTO_CGROUP refused (kernel < 5.7): the next attempt joins by writing "0".
    }
    Err(IsolationError::sys("clone3", last))
}

/// Kernels before 5.3: plain clone(2) with a fork-like shared-nothing child.
fn clone_legacy(req: &CloneRequest<'_>) -> Result<i32> {
    let flags = req.ns_flags | libc::SIGCHLD as u64;
    // SAFETY: clone with a NULL stack is fork-like; see `clone_child`.
    let pid = unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) };
    if pid == 0 {
        // SAFETY: we are the child.
        unsafe { child(req, false) }
    }
    if pid < 0 {
        return Err(IsolationError::sys("clone", nix::errno::Errno::last()));
    }
    Ok(pid as i32)
}

/// The cloned child: join the cgroup, set up stdio and fd 3, exec the init.
///
/// # Safety
/// Must only be called in the child right after clone; it never returns.
unsafe fn child(req: &CloneRequest<'_>, joined: bool) -> ! {
    if !joined {
        for &fd in req.join {
            if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                fail(req.ready, b"cgroup");
            }
        }
    }
    for (src, dst) in [
        (req.stdin, 0),
        (req.stdout, 1),
        (req.stderr, 2),
        (req.ready, 3),
    ] {
        if libc::dup2(src, dst) < 0 {
            fail(req.ready, b"dup2");
        }
    }
    libc::execve(req.program.as_ptr(), req.argv.as_ptr(), req.envp.as_ptr());
    fail(3, b"exec-init")
}

/// Writes `child <stage> <errno>\n` to `fd` and exits 126. Async-signal-safe.
unsafe fn fail(fd: RawFd, stage: &[u8]) -> ! {
    let errno = *libc::__errno_location();
    let mut buf = [0u8; 64];
    let mut n = 0;
    for part in [b"child ".as_slice(), stage, b" "] {
        for &b in part {
            if n < buf.len() {
                buf[n] = b;
                n += 1;
            }
        }
    }
    let mut digits = [0u8; 12];
    let mut d = 0;
    let mut v = errno.unsigned_abs();
    loop {
        digits[d] = b'0' + (v % 10) as u8;
        d += 1;
        v /= 10;
        if v == 0 || d == digits.len() {
            break;
        }
    }
    while d > 0 && n < buf.len() - 1 {
        d -= 1;
        buf[n] = digits[d];
        n += 1;
    }
    buf[n] = b'\n';
    n += 1;
    libc::write(fd, buf.as_ptr().cast(), n);
    libc::_exit(126)
}
