//! What both guests share: a temporary directory, one qemu run under TCG with the kernel's
//! console on the first serial port and the guest's output on the second, the timeout, and the
//! skip-or-fail decision of a test that cannot boot.

use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::{
    clean, find_kernel, find_on_path, read_lossy, tail, vm_required, wait_with_timeout, VmError,
    WaitError, DEFAULT_KERNEL, KERNEL_ENV, QEMU, REQUIRE_VM_ENV,
};

/// One boot: the kernel, its command line, and the disks or initramfs in `extra` arguments.
pub(crate) struct Boot<'a> {
    pub kernel: &'a Path,
    pub cpus: u32,
    pub memory_mib: u32,
    pub append: String,
    pub extra: Vec<OsString>,
    pub timeout: Duration,
}

/// What a boot that ended in time left.
pub(crate) struct Booted {
    pub status: ExitStatus,
    /// The first serial port ("\r\n" made "\n").
    pub kernel_log: String,
    /// The second serial port ("\r\n" made "\n").
    pub output: String,
    pub qemu_stderr: String,
}

pub(crate) fn temp_dir(prefix: &str) -> Result<tempfile::TempDir, VmError> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(|source| VmError::Io {
            what: "create temp dir in",
            path: std::env::temp_dir(),
            source,
        })
}

/// `-drive file=PATH,OPTIONS` and the like: `prefix` + path + `suffix`.
pub(crate) fn path_arg(prefix: &str, path: &Path, suffix: &str) -> OsString {
    let mut s = OsString::from(prefix);
    s.push(path);
    s.push(suffix);
    s
}

/// Runs qemu until it exits or `boot.timeout` passes (then it is killed and reaped, and the
/// error holds both logs). The logs live in `dir`.
pub(crate) fn boot(dir: &Path, boot: &Boot<'_>) -> Result<Booted, VmError> {
    let qemu = find_on_path(QEMU).ok_or(VmError::QemuNotFound)?;
    if !boot.kernel.is_file() {
        return Err(VmError::KernelNotFound(boot.kernel.to_owned()));
    }
    let kernel_log_path = dir.join("kernel.log");
    let output_path = dir.join("output.log");
    let stderr_path = dir.join("qemu.stderr");
    let stderr_file = File::create(&stderr_path).map_err(|source| VmError::Io {
        what: "create",
        path: stderr_path.clone(),
        source,
    })?;
    let mut cmd = Command::new(&qemu);
    cmd.args(["-accel", "tcg", "-nodefaults", "-no-user-config"])
        .args(["-no-reboot", "-display", "none", "-monitor", "none"])
        .arg("-smp")
        .arg(boot.cpus.max(1).to_string())
        .arg("-m")
        .arg(boot.memory_mib.max(64).to_string())
        .arg("-kernel")
        .arg(boot.kernel)
        .arg("-append")
        .arg(&boot.append)
        .args(&boot.extra)
        .arg("-serial")
        .arg(path_arg("file:", &kernel_log_path, ""))
        .arg("-serial")
        .arg(path_arg("file:", &output_path, ""))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr_file);
    let child = cmd.spawn().map_err(VmError::Spawn)?;
    let status = wait_with_timeout(child, boot.timeout);
    let kernel_log = clean(&read_lossy(&kernel_log_path));
    let output = clean(&read_lossy(&output_path));
    match status {
        Ok(status) => Ok(Booted {
            status,
            kernel_log,
            output,
            qemu_stderr: read_lossy(&stderr_path).trim().to_owned(),
        }),
        Err(WaitError::TimedOut) => Err(VmError::Timeout {
            timeout: boot.timeout,
            console: output,
            kernel_log_tail: tail(&kernel_log, 40),
        }),
        Err(WaitError::Io(source)) => Err(VmError::Io {
            what: "wait for",
            path: qemu,
            source,
        }),
    }
}

/// `$VAR` in whole seconds, else `default`.
pub(crate) fn timeout_from_env(var: &str, default: Duration) -> Duration {
    std::env::var(var)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map_or(default, Duration::from_secs)
}

/// What is missing of qemu and the kernel, as messages.
pub(crate) fn missing_qemu_and_kernel() -> Vec<String> {
    let mut missing = Vec::new();
    if find_on_path(QEMU).is_none() {
        missing.push(VmError::QemuNotFound.to_string());
    }
    if find_kernel().is_none() {
        let path = std::env::var_os(KERNEL_ENV)
            .filter(|p| !p.is_empty())
            .map_or_else(|| PathBuf::from(DEFAULT_KERNEL), PathBuf::from);
        missing.push(VmError::KernelNotFound(path).to_string());
    }
    missing
}

/// True if the test may go on. Otherwise prints `skipping <test>: <reason>` and returns false,
/// or panics when `CORRAL_REQUIRE_VM=1`.
pub(crate) fn may_run_or_skip(test_name: &str, vm: &str, reason: Option<String>) -> bool {
    let Some(reason) = reason else {
        return true;
    };
    assert!(
        !vm_required(),
        "{test_name}: the {vm} is required ({REQUIRE_VM_ENV}=1) but cannot run: {reason}"
    );
    eprintln!("skipping {test_name}: {reason}");
    false
}
