//! A second kind of guest: Debian 12 (bookworm) with a real **systemd 252 as PID 1** on a pure
//! cgroup v2 kernel, for what the busybox guest cannot show: systemd owning a unit's cgroup,
//! `systemctl restart/stop/start`, `daemon-reload`, the journal.
//!
//! The image (ext4, built once and cached by `scripts/systemd-vm-image.sh`, recipe in
//! `shared/notes/systemd-vm.md`) boots from an emulated NVMe namespace with no initramfs, the
//! same Debian cloud kernel as the busybox guest with its modules inside. Its default target
//! runs `corral-vmjob.service` after `multi-user.target`: that unpacks a tar from the second NVMe
//! namespace into `/vmjob`, runs `/vmjob/job.sh` as root with stdout and stderr on the second
//! serial port, prints `@@SYSVM-EXIT <code>@@` and powers off. The root disk is attached with
//! `snapshot=on`, so every run starts from the pristine image and leaves it untouched.
//!
//! A job reports what it saw as marker lines, `@@SYSVM <key> <value>@@` ([`JOB_MARKER`]; in
//! bash: `mark() { echo "@@SYSVM $*@@"; }`), which [`SystemdOutput::markers`] returns in order
//! for the host to assert on.
//! The guest's glibc is bookworm's, so a binary built on a bookworm host runs as is.
//!
//! Cost on a 2-core host without KVM: building the image about 3 min once (mmdebstrap), then
//! each run boots in about 25 s; `integration/tests/it/systemd_vm.rs` takes 80-95 s in all.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::qemu::{self, path_arg};
use crate::{find_kernel, tail, VmError, DEFAULT_KERNEL, VM_LOCK};

/// Where `scripts/systemd-vm-image.sh` links the current image.
pub const DEFAULT_SYSTEMD_IMAGE: &str = "/var/cache/corral-vm/systemd.img";
/// Overrides the image path.
pub const SYSTEMD_IMAGE_ENV: &str = "CORRAL_SYSTEMD_VM_IMAGE";
/// Overrides the default timeout of a whole systemd VM run, in seconds.
pub const SYSTEMD_TIMEOUT_ENV: &str = "CORRAL_SYSTEMD_VM_TIMEOUT_SECS";
/// A job's marker line: `@@SYSVM <key> <value>@@`.
pub const JOB_MARKER: &str = "@@SYSVM ";
/// Printed after the job: `@@SYSVM-EXIT <code>@@`.
pub const SYSTEMD_END_MARKER: &str = "@@SYSVM-EXIT ";
/// Printed when the job could not be unpacked: `@@SYSVM-SETUP-FAILED <step>@@`.
pub const SYSTEMD_SETUP_FAILED_MARKER: &str = "@@SYSVM-SETUP-FAILED ";

/// How to boot the systemd guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemdVmConfig {
    pub kernel: PathBuf,
    /// The root filesystem image (raw ext4).
    pub image: PathBuf,
    pub memory_mib: u32,
    pub cpus: u32,
    /// Boot, job and power-off together are killed after this long.
    pub timeout: Duration,
}

impl Default for SystemdVmConfig {
    /// The kernel and image found (or their defaults), 2 GiB, 2 CPUs, and a timeout of 600 s or
    /// `$CORRAL_SYSTEMD_VM_TIMEOUT_SECS`.
    fn default() -> Self {
        let timeout = qemu::timeout_from_env(SYSTEMD_TIMEOUT_ENV, Duration::from_secs(600));
        Self {
            kernel: find_kernel().unwrap_or_else(|| PathBuf::from(DEFAULT_KERNEL)),
            image: find_systemd_image().unwrap_or_else(|| PathBuf::from(DEFAULT_SYSTEMD_IMAGE)),
            memory_mib: 2048,
            cpus: 2,
            timeout,
        }
    }
}

/// What to run: `job.sh` (bash, as root) and files beside it, all unpacked into `/vmjob`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SystemdJob {
    pub script: String,
    /// (host path, path relative to `/vmjob`, mode).
    pub files: Vec<(PathBuf, PathBuf, u32)>,
}

impl SystemdJob {
    pub fn new(script: impl Into<String>) -> Self {
        Self {
            script: script.into(),
            files: Vec::new(),
        }
    }

    /// Adds `host` as `/vmjob/<name>` with `mode`.
    pub fn file(mut self, host: impl Into<PathBuf>, name: impl Into<PathBuf>, mode: u32) -> Self {
        self.files.push((host.into(), name.into(), mode));
        self
    }
}

/// What came back from the systemd guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemdOutput {
    /// `job.sh`'s exit code.
    pub exit_code: i32,
    /// `job.sh`'s stdout and stderr, markers included.
    pub console: String,
    /// The first serial port: the kernel's and systemd's console.
    pub kernel_log: String,
    pub elapsed: Duration,
}

impl SystemdOutput {
    /// Every `@@SYSVM key value@@` marker, in order.
    pub fn markers(&self) -> Vec<(String, String)> {
        parse_markers(&self.console)
    }

    /// The last value of marker `key`.
    pub fn marker(&self, key: &str) -> Option<String> {
        self.markers()
            .into_iter()
            .rev()
            .find_map(|(k, v)| (k == key).then_some(v))
    }

    /// The last `lines` lines of the job's output, for assertion messages.
    pub fn tail(&self, lines: usize) -> String {
        tail(&self.console, lines)
    }
}

/// `@@SYSVM key value@@` lines (anywhere in a line) as (key, value), in order.
pub fn parse_markers(console: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in console.lines() {
        let Some(at) = line.find(JOB_MARKER) else {
            continue;
        };
        let rest = &line[at + JOB_MARKER.len()..];
        let Some((body, _)) = rest.rsplit_once("@@") else {
            continue;
        };
        let (key, value) = body.trim().split_once(' ').unwrap_or((body.trim(), ""));
        if !key.is_empty() {
            out.push((key.to_owned(), value.trim().to_owned()));
        }
    }
    out
}

/// `key=value` words of a marker's value (e.g. `rc=0 ms=812`).
pub fn fields(value: &str) -> BTreeMap<String, String> {
    value
        .split_whitespace()
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// The image to boot: `$CORRAL_SYSTEMD_VM_IMAGE` if set (only if it exists), else
/// [`DEFAULT_SYSTEMD_IMAGE`] if it exists.
pub fn find_systemd_image() -> Option<PathBuf> {
    let p = std::env::var_os(SYSTEMD_IMAGE_ENV)
        .filter(|p| !p.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_SYSTEMD_IMAGE), PathBuf::from);
    p.is_file().then_some(p)
}

/// Why the systemd guest cannot run here (qemu, kernel or image missing); `None` if it can.
pub fn systemd_unavailable_reason() -> Option<String> {
    let mut missing = qemu::missing_qemu_and_kernel();
    if find_systemd_image().is_none() {
        let path = std::env::var_os(SYSTEMD_IMAGE_ENV)
            .filter(|p| !p.is_empty())
            .map_or_else(|| PathBuf::from(DEFAULT_SYSTEMD_IMAGE), PathBuf::from);
        missing.push(VmError::SystemdImageNotFound(path).to_string());
    }
    (!missing.is_empty()).then(|| missing.join("; "))
}

/// For `#[test]` functions: the default [`SystemdVmConfig`] if the guest can run here.
/// Otherwise prints `skipping <test>: <reason>` and returns `None`, or panics when
/// `CORRAL_REQUIRE_VM=1`.
pub fn systemd_config_or_skip(test_name: &str) -> Option<SystemdVmConfig> {
    qemu::may_run_or_skip(test_name, "systemd VM", systemd_unavailable_reason())
        .then(SystemdVmConfig::default)
}

/// Boots the systemd guest, runs `job` and returns its exit code and output. qemu is killed and
/// reaped when `cfg.timeout` passes. One VM at a time per process (shared with `run_in_vm`).
pub fn run_systemd_job(cfg: &SystemdVmConfig, job: &SystemdJob) -> Result<SystemdOutput, VmError> {
    let _one_vm = VM_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let started = Instant::now();
    if !cfg.image.is_file() {
        return Err(VmError::SystemdImageNotFound(cfg.image.clone()));
    }
    let dir = qemu::temp_dir("corral-sysvm-")?;
    let tar = build_job_tar(dir.path(), job)?;
    let booted = qemu::boot(
        dir.path(),
        &qemu::Boot {
            kernel: &cfg.kernel,
            cpus: cfg.cpus,
            memory_mib: cfg.memory_mib,
            append: "root=/dev/nvme0n1 rw console=ttyS0 systemd.unified_cgroup_hierarchy=1 \
                     cgroup_no_v1=all panic=-1"
                .to_owned(),
            extra: vec![
                "-drive".into(),
                path_arg(
                    "file=",
                    &cfg.image,
                    ",if=none,id=root,format=raw,snapshot=on",
                ),
                "-drive".into(),
                path_arg("file=", &tar, ",if=none,id=job,format=raw,readonly=on"),
                "-device".into(),
                "nvme,id=nvme0,serial=corral".into(),
                "-device".into(),
                "nvme-ns,drive=root,bus=nvme0,nsid=1".into(),
                "-device".into(),
                "nvme-ns,drive=job,bus=nvme0,nsid=2".into(),
            ],
            timeout: cfg.timeout,
        },
    )?;
    let (raw, kernel_log) = (booted.output, booted.kernel_log);
    if let Some(step) = marker_value(&raw, SYSTEMD_SETUP_FAILED_MARKER) {
        return Err(VmError::GuestSetup {
            step,
            kernel_log_tail: tail(&kernel_log, 40),
        });
    }
    let exit_code = marker_value(&raw, SYSTEMD_END_MARKER).and_then(|c| c.parse().ok());
    let console = raw
        .rfind(SYSTEMD_END_MARKER)
        .map_or(raw.as_str(), |at| &raw[..at])
        .to_owned();
    match exit_code {
        Some(exit_code) => Ok(SystemdOutput {
            exit_code,
            console,
            kernel_log,
            elapsed: started.elapsed(),
        }),
        None => Err(VmError::NoExitMarker {
            status: booted.status.to_string(),
            qemu_stderr: booted.qemu_stderr,
            console,
            kernel_log_tail: tail(&kernel_log, 40),
        }),
    }
}

/// The text after the last `marker` up to its closing `@@`.
fn marker_value(raw: &str, marker: &str) -> Option<String> {
    let at = raw.rfind(marker)?;
    let rest = &raw[at + marker.len()..];
    rest.split_once("@@").map(|(v, _)| v.trim().to_owned())
}

/// Stages `job` in `dir/stage` and packs it with tar into `dir/job.tar` (a whole number of
/// 512-byte sectors, as the NVMe namespace needs).
fn build_job_tar(dir: &Path, job: &SystemdJob) -> Result<PathBuf, VmError> {
    let stage = dir.join("stage");
    let io = |what: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| VmError::Io { what, path, source }
    };
    std::fs::create_dir_all(&stage).map_err(io("create", &stage))?;
    let script = stage.join("job.sh");
    std::fs::write(&script, &job.script).map_err(io("write", &script))?;
    for (host, name, mode) in &job.files {
        let relative = name.components().all(|c| matches!(c, Component::Normal(_)))
            && name.components().next().is_some();
        if !relative {
            return Err(VmError::InvalidGuestPath(name.clone()));
        }
        let to = stage.join(name);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(io("create", parent))?;
        }
        std::fs::copy(host, &to).map_err(io("copy into the job", host))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(*mode & 0o7777))
            .map_err(io("chmod", &to))?;
    }
    let tar = dir.join("job.tar");
    let out = Command::new("tar")
        .arg("-c")
        .arg("-f")
        .arg(&tar)
        .arg("-C")
        .arg(&stage)
        .args(["--owner=0", "--group=0", "."])
        .output()
        .map_err(io("run tar for", &tar))?;
    if !out.status.success() {
        return Err(VmError::Io {
            what: "pack the job with tar into",
            path: tar,
            source: std::io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
        });
    }
    Ok(tar)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_parsed_in_order_with_their_values() {
        let console =
            "job: hello\n@@SYSVM pid1 systemd@@\n  noise @@SYSVM step_x rc=0 ms=12@@ tail\n\
                       @@SYSVM empty@@\n@@SYSVM broken no end\n@@SYSVM pid1 init@@\n";
        let m = parse_markers(console);
        assert_eq!(
            m,
            [
                ("pid1".to_owned(), "systemd".to_owned()),
                ("step_x".to_owned(), "rc=0 ms=12".to_owned()),
                ("empty".to_owned(), String::new()),
                ("pid1".to_owned(), "init".to_owned()),
            ]
        );
        let f = fields(&m[1].1);
        assert_eq!(f.get("rc").map(String::as_str), Some("0"));
        assert_eq!(f.get("ms").map(String::as_str), Some("12"));
        let out = SystemdOutput {
            exit_code: 0,
            console: console.to_owned(),
            kernel_log: String::new(),
            elapsed: Duration::ZERO,
        };
        assert_eq!(out.marker("pid1").as_deref(), Some("init"));
        assert_eq!(out.marker("missing"), None);
        assert_eq!(
            marker_value("x @@SYSVM-EXIT 3@@\n", SYSTEMD_END_MARKER).as_deref(),
            Some("3")
        );
    }

    #[test]
    fn job_tar_holds_the_script_and_files_and_refuses_paths_outside_vmjob() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("data");
        std::fs::write(&host, "payload").unwrap();
        let job = SystemdJob::new("echo hi\n").file(&host, "sub/data", 0o640);
        let tar = build_job_tar(dir.path(), &job).unwrap();
        assert_eq!(std::fs::metadata(&tar).unwrap().len() % 512, 0);
        let list = Command::new("tar").arg("-tvf").arg(&tar).output().unwrap();
        let list = String::from_utf8_lossy(&list.stdout);
        assert!(list.contains("./job.sh"), "{list}");
        assert!(
            list.lines()
                .any(|l| l.starts_with("-rw-r-----") && l.ends_with("./sub/data")),
            "{list}"
        );
        for bad in ["/etc/passwd", "../x", ""] {
            let job = SystemdJob::new("").file(&host, bad, 0o644);
            let err = build_job_tar(dir.path(), &job).unwrap_err();
            assert!(matches!(err, VmError::InvalidGuestPath(_)), "{bad}: {err}");
        }
    }
}
