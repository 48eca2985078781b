//! Runs a command, or the calling test itself, inside a small qemu VM whose kernel mounts a pure
//! cgroup v2 hierarchy. This crate owns the test VM: finding qemu, the kernel and a static
//! busybox, building the initramfs (busybox, an `/init` script, the guest files plus the shared
//! libraries `ldd` lists for them), booting qemu under TCG with a timeout, and reading back the
//! guest command's output and exit code. Development and CI hosts run cgroups in hybrid mode, so
//! only such a VM can prove cgroup v2 enforcement for real; `scripts/vm-kernel.sh` installs what
//! it needs on a Debian machine.
//!
//! The guest: a busybox userland in an initramfs (no disk), `/sys/fs/cgroup` a cgroup2 mount with
//! `+cpu +memory +pids` in the root's `cgroup.subtree_control`, loopback up, `/tmp` and `/run` on
//! tmpfs, `/etc/passwd` and `/etc/group` with root and nobody (65534), and
//! `PATH=/usr/local/bin:/usr/bin:/bin:/sbin`. The command runs as root in the root cgroup with
//! stdin from `/dev/null`; its stdout and stderr go to the second serial port, kept apart from
//! the kernel's messages on the first. When it exits, every process left is killed and `/init`
//! prints an end marker with the exit code, then powers the VM off.
//!
//! A second guest, Debian with a real systemd as PID 1 booted from a cached disk image, runs
//! shell jobs for the systemd integration test: see [`systemd`].
//!
//! Typical use from a test that must run in the guest:
//!
//! ```no_run
//! #[test]
//! fn memory_max_is_enforced() {
//!     if !vmtest::in_guest() {
//!         // Host side: boot the VM and run exactly this test there (or skip with a reason).
//!         vmtest::run_test_in_vm_or_skip("memory_max_is_enforced", Vec::new());
//!         return;
//!     }
//!     // Guest side: /sys/fs/cgroup is cgroup v2 here.
//! }
//! ```

mod cpio;
mod guest;
mod qemu;
pub mod systemd;

use std::fs::File;
use std::io::{self, BufWriter, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use guest::{END_MARKER, SETUP_FAILED_MARKER};

/// Where `scripts/vm-kernel.sh` puts the kernel by default.
pub const DEFAULT_KERNEL: &str = "/var/cache/corral-vm/vmlinuz";
/// Overrides the kernel path.
pub const KERNEL_ENV: &str = "CORRAL_VM_KERNEL";
/// Overrides the busybox path (it must be statically linked).
pub const BUSYBOX_ENV: &str = "CORRAL_VM_BUSYBOX";
/// Set to `1` in the guest's environment by [`run_current_test_in_vm`].
pub const IN_VM_ENV: &str = "CORRAL_IN_VM";
/// When `1` (CI sets it), a test that cannot boot the VM fails instead of skipping.
pub const REQUIRE_VM_ENV: &str = "CORRAL_REQUIRE_VM";
/// Overrides the default VM timeout, in seconds.
pub const TIMEOUT_ENV: &str = "CORRAL_VM_TIMEOUT_SECS";
/// Extra kernel command line arguments, for debugging (see [`VmOutput::kernel_log`]).
pub const APPEND_ENV: &str = "CORRAL_VM_APPEND";
/// The qemu binary looked up on `PATH`.
pub const QEMU: &str = "qemu-system-x86_64";

/// How to boot the VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmConfig {
    /// The kernel image (bzImage), e.g. from [`find_kernel`].
    pub kernel: PathBuf,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// Guest CPUs.
    pub cpus: u32,
    /// The whole boot-run-poweroff cycle is killed after this long.
    pub timeout: Duration,
}

impl Default for VmConfig {
    /// The kernel from [`find_kernel`] (or [`DEFAULT_KERNEL`]), 512 MiB, 2 CPUs, and a timeout of
    /// 90 s or `$CORRAL_VM_TIMEOUT_SECS`.
    fn default() -> Self {
        let timeout = qemu::timeout_from_env(TIMEOUT_ENV, Duration::from_secs(90));
        Self {
            kernel: find_kernel().unwrap_or_else(|| PathBuf::from(DEFAULT_KERNEL)),
            memory_mib: 512,
            cpus: 2,
            timeout,
        }
    }
}

/// A host file to copy into the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestFile {
    /// Path on the host (symlinks are followed).
    pub host: PathBuf,
    /// Absolute path in the guest; missing parent directories are created.
    pub guest: PathBuf,
    /// Permission bits, e.g. `0o755`.
    pub mode: u32,
}

impl GuestFile {
    pub fn new(host: impl Into<PathBuf>, guest: impl Into<PathBuf>, mode: u32) -> Self {
        Self {
            host: host.into(),
            guest: guest.into(),
            mode,
        }
    }

    /// An executable (mode 0755).
    pub fn executable(host: impl Into<PathBuf>, guest: impl Into<PathBuf>) -> Self {
        Self::new(host, guest, 0o755)
    }
}

/// What to run in the guest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VmRun {
    /// Files to copy in; for dynamically linked ELF files the libraries `ldd` lists come too.
    pub files: Vec<GuestFile>,
    /// The program and its arguments (looked up on the guest's `PATH`).
    pub command: Vec<String>,
    /// Extra environment for the command.
    pub env: Vec<(String, String)>,
}

impl VmRun {
    pub fn new<I, S>(command: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            command: command.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }

    /// Runs `script` with busybox `sh -c`.
    pub fn shell(script: &str) -> Self {
        Self::new(["/bin/sh", "-c", script])
    }

    pub fn file(mut self, file: GuestFile) -> Self {
        self.files.push(file);
        self
    }

    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }
}

/// What came back from the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmOutput {
    /// The guest command's exit code (128+N when it died of signal N).
    pub exit_code: i32,
    /// The guest command's stdout and stderr, interleaved as written ("\r\n" turned into "\n").
    pub console: String,
    /// The kernel's console (first serial port): boot warnings, OOM reports, panics.
    pub kernel_log: String,
    /// Wall time of the whole cycle: building the initramfs, boot, run, power-off.
    pub elapsed: Duration,
}

/// Why a VM run failed.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("{QEMU} not found on PATH (install the Debian package qemu-system-x86, e.g. with scripts/vm-kernel.sh)")]
    QemuNotFound,
    #[error("vm kernel {0} not found (run scripts/vm-kernel.sh or set {KERNEL_ENV})")]
    KernelNotFound(PathBuf),
    #[error("systemd vm image {0} not found (run scripts/systemd-vm-image.sh or set CORRAL_SYSTEMD_VM_IMAGE)")]
    SystemdImageNotFound(PathBuf),
    #[error("no busybox found in /bin, /usr/bin or ${BUSYBOX_ENV} (install busybox-static)")]
    BusyboxNotFound,
    #[error(
        "busybox {0} is dynamically linked; the guest needs a static one (install busybox-static)"
    )]
    BusyboxNotStatic(PathBuf),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("ldd {path} failed: {detail}")]
    Ldd { path: PathBuf, detail: String },
    #[error("guest path {0} must be absolute, without `..`, and UTF-8")]
    InvalidGuestPath(PathBuf),
    #[error("invalid environment variable name {0:?} for the guest")]
    InvalidEnvName(String),
    #[error("the guest command is empty")]
    EmptyCommand,
    #[error("cannot start {QEMU}: {0}")]
    Spawn(#[source] io::Error),
    #[error("vm did not finish within {timeout:?} (qemu killed); guest output:\n{console}\nkernel log tail:\n{kernel_log_tail}")]
    Timeout {
        timeout: Duration,
        console: String,
        kernel_log_tail: String,
    },
    #[error("guest setup failed at `{step}`; kernel log tail:\n{kernel_log_tail}")]
    GuestSetup {
        step: String,
        kernel_log_tail: String,
    },
    #[error("vm exited ({status}) without the end marker; qemu stderr: {qemu_stderr}\nguest output:\n{console}\nkernel log tail:\n{kernel_log_tail}")]
    NoExitMarker {
        status: String,
        qemu_stderr: String,
        console: String,
        kernel_log_tail: String,
    },
    #[error("the test filter {filter:?} matched no test in {exe}; guest output:\n{console}")]
    NoTestMatched {
        filter: String,
        exe: PathBuf,
        console: String,
    },
}

/// The kernel to boot: `$CORRAL_VM_KERNEL` if set (even if missing, so a wrong setting is not
/// silently ignored), else [`DEFAULT_KERNEL`] if it exists.
pub fn find_kernel() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(KERNEL_ENV).filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    let p = PathBuf::from(DEFAULT_KERNEL);
    p.is_file().then_some(p)
}

/// Whether `qemu-system-x86_64` is on `PATH`.
pub fn qemu_available() -> bool {
    find_on_path(QEMU).is_some()
}

/// Why the VM cannot run here (missing qemu, kernel or static busybox), for a clear skip
/// message; `None` if it can.
pub fn unavailable_reason() -> Option<String> {
    let mut missing = qemu::missing_qemu_and_kernel();
    if let Err(e) = find_busybox() {
        missing.push(e.to_string());
    }
    (!missing.is_empty()).then(|| missing.join("; "))
}

/// True in the guest side of [`run_current_test_in_vm`] (`CORRAL_IN_VM=1`).
pub fn in_guest() -> bool {
    std::env::var(IN_VM_ENV).is_ok_and(|v| v == "1")
}

/// True when a VM test must not skip (`CORRAL_REQUIRE_VM=1`, set by CI).
pub fn vm_required() -> bool {
    std::env::var(REQUIRE_VM_ENV).is_ok_and(|v| v == "1")
}

/// Finds a statically linked busybox: `$CORRAL_VM_BUSYBOX`, `/bin/busybox`, `/usr/bin/busybox`.
pub fn find_busybox() -> Result<PathBuf, VmError> {
    let candidates: Vec<PathBuf> = match std::env::var_os(BUSYBOX_ENV).filter(|p| !p.is_empty()) {
        Some(p) => vec![PathBuf::from(p)],
        None => vec!["/bin/busybox".into(), "/usr/bin/busybox".into()],
    };
    let found = candidates
        .into_iter()
        .find(|p| p.is_file())
        .ok_or(VmError::BusyboxNotFound)?;
    match elf_kind(&found) {
        Ok(ElfKind::Static) => Ok(found),
        Ok(_) => Err(VmError::BusyboxNotStatic(found)),
        Err(source) => Err(VmError::Io {
            what: "read busybox",
            path: found,
            source,
        }),
    }
}

/// Only one VM at a time per process: tests run on parallel threads, and two TCG guests on a
/// small machine would each run at half speed and hit their timeouts.
static VM_LOCK: Mutex<()> = Mutex::new(());

/// Boots the VM, runs `run.command` in it and returns its exit code and output.
///
/// The initramfs and the serial logs live in a temporary directory removed afterwards. qemu is
/// killed and reaped when `cfg.timeout` passes.
pub fn run_in_vm(cfg: &VmConfig, run: &VmRun) -> Result<VmOutput, VmError> {
    let _one_vm = VM_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let started = Instant::now();
    if run.command.is_empty() {
        return Err(VmError::EmptyCommand);
    }
    let busybox = find_busybox()?;
    let dir = qemu::temp_dir("corral-vm-")?;
    let initrd = dir.path().join("initrd.cpio");
    let archive = guest::build_archive(&busybox, run)?;
    {
        let f = File::create(&initrd).map_err(|source| VmError::Io {
            what: "create initramfs",
            path: initrd.clone(),
            source,
        })?;
        let mut w = BufWriter::with_capacity(1 << 20, f);
        archive
            .write_to(&mut w)
            .map_err(|(path, source)| VmError::Io {
                what: "write initramfs from",
                path: if path.as_os_str().is_empty() {
                    initrd.clone()
                } else {
                    path
                },
                source,
            })?;
    }
    let booted = qemu::boot(
        dir.path(),
        &qemu::Boot {
            kernel: &cfg.kernel,
            cpus: cfg.cpus,
            memory_mib: cfg.memory_mib,
            append: kernel_cmdline(),
            extra: vec!["-initrd".into(), initrd.into_os_string()],
            timeout: cfg.timeout,
        },
    )?;
    let kernel_log = booted.kernel_log;
    let parsed = guest::parse_output(&booted.output);
    if let Some(step) = parsed.setup_failed {
        return Err(VmError::GuestSetup {
            step,
            kernel_log_tail: tail(&kernel_log, 40),
        });
    }
    match parsed.exit_code {
        Some(exit_code) => Ok(VmOutput {
            exit_code,
            console: parsed.console,
            kernel_log,
            elapsed: started.elapsed(),
        }),
        None => Err(VmError::NoExitMarker {
            status: booted.status.to_string(),
            qemu_stderr: booted.qemu_stderr,
            console: parsed.console,
            kernel_log_tail: tail(&kernel_log, 40),
        }),
    }
}

/// Runs the current test executable in the VM as
/// `EXE FILTER --exact --nocapture --test-threads=1` with `CORRAL_IN_VM=1` (see [`in_guest`]),
/// plus `extra_files`. Errors with [`VmError::NoTestMatched`] when the filter selected no test,
/// so a renamed test cannot pass vacuously. A failing guest test shows as a non-zero
/// `exit_code`.
pub fn run_current_test_in_vm(
    cfg: &VmConfig,
    test_name_filter: &str,
    extra_files: Vec<GuestFile>,
) -> Result<VmOutput, VmError> {
    let exe = std::env::current_exe().map_err(|source| VmError::Io {
        what: "find the current executable",
        path: PathBuf::from("/proc/self/exe"),
        source,
    })?;
    let name = exe
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("test-exe")
        .to_owned();
    let guest_exe = format!("/vmtest/bin/{name}");
    let mut run = VmRun::new([
        guest_exe.as_str(),
        test_name_filter,
        "--exact",
        "--nocapture",
        "--test-threads=1",
    ])
    .file(GuestFile::executable(&exe, &guest_exe))
    .env(IN_VM_ENV, "1")
    .env("RUST_BACKTRACE", "1");
    if let Ok(level) = std::env::var("RUST_LOG") {
        run = run.env("RUST_LOG", level);
    }
    run.files.extend(extra_files);
    let out = run_in_vm(cfg, &run)?;
    if out.exit_code == 0 && !out.console.contains("running 1 test") {
        return Err(VmError::NoTestMatched {
            filter: test_name_filter.to_owned(),
            exe,
            console: out.console,
        });
    }
    Ok(out)
}

/// For `#[test]` functions: the default [`VmConfig`] if the VM can run here. Otherwise prints
/// `skipping <test>: <reason>` and returns `None`, or panics when `CORRAL_REQUIRE_VM=1`.
pub fn config_or_skip(test_name: &str) -> Option<VmConfig> {
    qemu::may_run_or_skip(test_name, "cgroup v2 VM", unavailable_reason()).then(VmConfig::default)
}

/// The host side of a test that must run in the guest, for use in `#[test]` functions.
///
/// Skips as [`config_or_skip`] does (returning `None`). Otherwise runs the test in the VM with
/// the default [`VmConfig`], prints the guest output, and panics (failing the test) if the VM
/// run failed or the guest test did; it returns the output on success.
pub fn run_test_in_vm_or_skip(test_name: &str, extra_files: Vec<GuestFile>) -> Option<VmOutput> {
    let cfg = config_or_skip(test_name)?;
    let out = match run_current_test_in_vm(&cfg, test_name, extra_files) {
        Ok(out) => out,
        Err(e) => panic!("{test_name}: vm run failed: {e}"),
    };
    println!(
        "--- {test_name} in the vm ({:.1} s) ---\n{}\n--- end of guest output ---",
        out.elapsed.as_secs_f64(),
        out.console
    );
    assert_eq!(
        out.exit_code,
        0,
        "{test_name} failed in the vm (exit code {}); kernel log tail:\n{}",
        out.exit_code,
        tail(&out.kernel_log, 40)
    );
    Some(out)
}

/// `console=ttyS0 quiet panic=-1`, plus `$CORRAL_VM_APPEND` (a debugging knob, e.g.
/// `loglevel=7` to see the whole boot in [`VmOutput::kernel_log`]).
fn kernel_cmdline() -> String {
    let mut line = String::from("console=ttyS0 quiet panic=-1");
    if let Some(extra) = std::env::var(APPEND_ENV)
        .ok()
        .filter(|s| !s.trim().is_empty())
    {
        line.push(' ');
        line.push_str(extra.trim());
    }
    line
}

enum WaitError {
    TimedOut,
    Io(io::Error),
}

/// Waits for qemu, killing and reaping it when `timeout` passes (no zombie either way).
fn wait_with_timeout(mut child: Child, timeout: Duration) -> Result<ExitStatus, WaitError> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) => {}
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(WaitError::Io(e));
            }
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(WaitError::TimedOut);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn read_lossy(path: &Path) -> String {
    let mut buf = Vec::new();
    match File::open(path).and_then(|mut f| f.read_to_end(&mut buf)) {
        Ok(_) => String::from_utf8_lossy(&buf).into_owned(),
        Err(_) => String::new(),
    }
}

/// Serial output has "\r\n" line ends (the tty's ONLCR).
fn clean(s: &str) -> String {
    s.replace("\r\n", "\n")
}

fn tail(s: &str, lines: usize) -> String {
    let all: Vec<&str> = s.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ElfKind {
    NotElf,
    Static,
    Dynamic,
}

/// Reads the ELF header and program headers: dynamic means it has a PT_INTERP entry.
pub(crate) fn elf_kind(path: &Path) -> io::Result<ElfKind> {
    let mut f = File::open(path)?;
    let mut head = [0u8; 64];
    let n = read_up_to(&mut f, &mut head)?;
    if n < 64 || head[..4] != *b"\x7fELF" {
        return Ok(ElfKind::NotElf);
    }
    // Only 64-bit little-endian is handled; anything else is treated as opaque data.
    if head[4] != 2 || head[5] != 1 {
        return Ok(ElfKind::NotElf);
    }
    let u16_at = |o: usize| u16::from_le_bytes([head[o], head[o + 1]]);
    let mut phoff_b = [0u8; 8];
    phoff_b.copy_from_slice(&head[0x20..0x28]);
    let phoff = u64::from_le_bytes(phoff_b);
    let phentsize = u64::from(u16_at(0x36));
    let phnum = u64::from(u16_at(0x38));
    if phentsize < 4 || phnum == 0 {
        return Ok(ElfKind::Static);
    }
    use std::io::{Seek, SeekFrom};
    let mut ph = vec![0u8; usize::try_from(phentsize * phnum).unwrap_or(0)];
    f.seek(SeekFrom::Start(phoff))?;
    let n = read_up_to(&mut f, &mut ph)?;
    const PT_INTERP: u32 = 3;
    let step = usize::try_from(phentsize).unwrap_or(usize::MAX);
    for entry in ph[..n].chunks(step) {
        if entry.len() >= 4
            && u32::from_le_bytes([entry[0], entry[1], entry[2], entry[3]]) == PT_INTERP
        {
            return Ok(ElfKind::Dynamic);
        }
    }
    Ok(ElfKind::Static)
}

fn read_up_to(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests;
