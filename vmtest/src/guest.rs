//! The guest side: what goes into the initramfs, the `/init` script, and reading its output.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cpio::{normalize, Archive};
use crate::{elf_kind, ElfKind, VmError, VmRun};

/// Printed by `/init` on the command's output port after it exits: `@@VMTEST-EXIT <code>@@`.
pub const END_MARKER: &str = "@@VMTEST-EXIT ";
/// Printed by `/init` when a setup step fails: `@@VMTEST-SETUP-FAILED <step>@@`.
pub const SETUP_FAILED_MARKER: &str = "@@VMTEST-SETUP-FAILED ";
const MARKER_END: &str = "@@";

/// The guest's `/init`. The kernel's console is ttyS0; the command's output goes to ttyS1.
pub(crate) const INIT: &str = r#"#!/bin/sh
export PATH=/usr/local/bin:/usr/bin:/bin:/sbin
export HOME=/root
out=/dev/ttyS1
fail() {
    echo "vmtest-init: $1 failed" >/dev/console
    echo "@@VMTEST-SETUP-FAILED $1@@" >"$out"
    poweroff -f
}
mount -t proc proc /proc || fail "mount proc"
mount -t sysfs sysfs /sys || fail "mount sysfs"
mount -t devtmpfs devtmpfs /dev || fail "mount devtmpfs"
mkdir -p /dev/pts /dev/shm
mount -t tmpfs -o mode=1777 tmpfs /tmp || fail "mount tmpfs /tmp"
mount -t tmpfs -o mode=0755 tmpfs /run || fail "mount tmpfs /run"
mount -t tmpfs -o mode=1777 tmpfs /dev/shm || fail "mount tmpfs /dev/shm"
mount -t cgroup2 cgroup2 /sys/fs/cgroup || fail "mount -t cgroup2 none /sys/fs/cgroup"
echo "+cpu +memory +pids" >/sys/fs/cgroup/cgroup.subtree_control \
    || fail "enable +cpu +memory +pids in /sys/fs/cgroup/cgroup.subtree_control"
ip link set lo up || fail "ip link set lo up"
hostname vmtest
cd /
/bin/sh /vmtest/run.sh </dev/null >"$out" 2>&1
code=$?
# Nothing else may hold the port open: its last close waits until the output is sent.
kill -9 -1 2>/dev/null
echo "@@VMTEST-EXIT $code@@" >"$out"
sync
poweroff -f
"#;

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
                      nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
const GROUP: &str = "root:x:0:\nnogroup:x:65534:\nnobody:x:65534:\n";
const HOSTS: &str = "127.0.0.1\tlocalhost\n127.0.1.1\tvmtest\n::1\tlocalhost\n";
const NSSWITCH: &str = "passwd: files\ngroup: files\nshadow: files\nhosts: files\n";

/// Builds the initramfs layout for `run` with `busybox` as the userland.
pub(crate) fn build_archive(busybox: &Path, run: &VmRun) -> Result<Archive, VmError> {
    let mut a = Archive::new();
    for d in [
        "/proc",
        "/sys",
        "/dev",
        "/run",
        "/root",
        "/sbin",
        "/usr/bin",
        "/usr/sbin",
        "/usr/local/bin",
        "/var",
        "/vmtest",
    ] {
        a.dir(d, 0o755);
    }
    a.dir("/tmp", 0o1777);
    a.char_dev("/dev/console", 5, 1, 0o600);
    a.char_dev("/dev/null", 1, 3, 0o666);
    a.char_dev("/dev/ttyS1", 4, 65, 0o600);
    a.host_file("/bin/busybox", busybox, 0o755);
    for applet in busybox_applets(busybox)? {
        let key = format!("/bin/{applet}");
        if applet != "busybox" && !a.contains(&key) {
            a.symlink(&key, "busybox");
        }
    }
    a.bytes("/init", INIT, 0o755);
    a.bytes("/etc/passwd", PASSWD, 0o644);
    a.bytes("/etc/group", GROUP, 0o644);
    a.bytes("/etc/hosts", HOSTS, 0o644);
    a.bytes("/etc/hostname", "vmtest\n", 0o644);
    a.bytes("/etc/nsswitch.conf", NSSWITCH, 0o644);

    for f in &run.files {
        let key = normalize(&f.guest).ok_or_else(|| VmError::InvalidGuestPath(f.guest.clone()))?;
        let kind = elf_kind(&f.host).map_err(|source| VmError::Io {
            what: "read guest file",
            path: f.host.clone(),
            source,
        })?;
        if kind == ElfKind::Dynamic {
            for lib in shared_libraries(&f.host)? {
                if let Some(lib_key) = normalize(&lib) {
                    if !a.contains(&lib_key) {
                        a.host_file(&lib_key, &lib, 0o755);
                    }
                }
            }
        }
        a.host_file(&key, &f.host, f.mode & 0o7777);
    }
    a.bytes("/vmtest/run.sh", run_script(run)?, 0o755);
    Ok(a)
}

/// `exec`s the command with the extra environment, every word single-quoted.
pub(crate) fn run_script(run: &VmRun) -> Result<String, VmError> {
    if run.command.is_empty() {
        return Err(VmError::EmptyCommand);
    }
    let mut s = String::new();
    for (k, v) in &run.env {
        let valid = !k.is_empty()
            && !k.starts_with(|c: char| c.is_ascii_digit())
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(VmError::InvalidEnvName(k.clone()));
        }
        s.push_str(&format!("export {k}={}\n", quote(v)));
    }
    let words: Vec<String> = run.command.iter().map(|w| quote(w)).collect();
    s.push_str(&format!("exec {}\n", words.join(" ")));
    Ok(s)
}

/// Single-quotes `s` for a POSIX shell.
pub(crate) fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn busybox_applets(busybox: &Path) -> Result<Vec<String>, VmError> {
    let out = Command::new(busybox)
        .arg("--list")
        .output()
        .map_err(|source| VmError::Io {
            what: "run --list on busybox",
            path: busybox.to_owned(),
            source,
        })?;
    let list = String::from_utf8_lossy(&out.stdout);
    let applets: Vec<String> = list
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.contains('/'))
        .map(str::to_owned)
        .collect();
    if !out.status.success() || applets.is_empty() {
        return Err(VmError::Io {
            what: "list applets of busybox",
            path: busybox.to_owned(),
            source: std::io::Error::other(format!("`busybox --list` exited {}", out.status)),
        });
    }
    Ok(applets)
}

/// The libraries (and the loader) `ldd` lists for `elf`.
fn shared_libraries(elf: &Path) -> Result<Vec<PathBuf>, VmError> {
    let out = Command::new("ldd")
        .arg(elf)
        .output()
        .map_err(|e| VmError::Ldd {
            path: elf.to_owned(),
            detail: e.to_string(),
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(VmError::Ldd {
            path: elf.to_owned(),
            detail: format!(
                "exit {}: {}{}",
                out.status,
                text.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    parse_ldd(&text).map_err(|line| VmError::Ldd {
        path: elf.to_owned(),
        detail: format!("library not found: {line}"),
    })
}

/// Parses `ldd` output: `name => /path (0x..)`, `/lib64/ld-linux-x86-64.so.2 (0x..)`,
/// `linux-vdso.so.1 (0x..)`. Errors with the line of a library that was not found.
pub(crate) fn parse_ldd(text: &str) -> Result<Vec<PathBuf>, String> {
    let mut libs = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let target = match line.split_once("=>") {
            Some((_, rhs)) => rhs.trim(),
            None => line,
        };
        if target.starts_with("not found") {
            return Err(line.to_owned());
        }
        let path = target.split_whitespace().next().unwrap_or("");
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        }
    }
    Ok(libs)
}

/// The command's output split from the markers `/init` prints.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Parsed {
    pub console: String,
    pub exit_code: Option<i32>,
    pub setup_failed: Option<String>,
}

pub(crate) fn parse_output(raw: &str) -> Parsed {
    let mut p = Parsed::default();
    let mut console = raw;
    if let Some(at) = raw.rfind(END_MARKER) {
        let rest = &raw[at + END_MARKER.len()..];
        if let Some(code) = rest
            .split_once(MARKER_END)
            .and_then(|(c, _)| c.trim().parse().ok())
        {
            p.exit_code = Some(code);
            console = &raw[..at];
        }
    }
    if let Some(at) = raw.rfind(SETUP_FAILED_MARKER) {
        let rest = &raw[at + SETUP_FAILED_MARKER.len()..];
        let step = rest.split_once(MARKER_END).map_or(rest, |(s, _)| s);
        p.setup_failed = Some(step.trim().to_owned());
        console = &raw[..at];
    }
    p.console = console.to_owned();
    p
}
