//! Boots the real VM (qemu under TCG, Debian cloud kernel, busybox initramfs) and checks what
//! the crate promises: a pure cgroup v2 hierarchy with cpu, memory and pids that enforces
//! limits, exit codes, output, environment and files passed through, the current test binary
//! running as the guest, and the timeout. Each test skips with a reason when qemu or the
//! kernel is missing, unless CORRAL_REQUIRE_VM=1 (CI).

use std::time::Duration;

use vmtest::{config_or_skip, run_in_vm, GuestFile, VmError, VmRun};

const CGROUP_CHECK: &str = r#"
set -e
grep ' /sys/fs/cgroup ' /proc/mounts | sed 's/^/mount: /'
echo "controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"
echo "subtree_control: $(cat /sys/fs/cgroup/cgroup.subtree_control)"
mkdir /sys/fs/cgroup/t
echo 20M > /sys/fs/cgroup/t/memory.max
echo "memory.max: $(cat /sys/fs/cgroup/t/memory.max)"
# dd allocates (and fills) one 100M block: 5x the limit.
if sh -c 'echo $$ > /sys/fs/cgroup/t/cgroup.procs; exec dd if=/dev/zero of=/dev/null bs=100M count=1' 2>/dev/null; then
    echo "allocator: survived"
else
    echo "allocator: killed"
fi
sed 's/^/memory.events: /' /sys/fs/cgroup/t/memory.events
"#;

#[test]
fn guest_has_pure_cgroup_v2_that_enforces_memory_max() {
    let Some(cfg) = config_or_skip("guest_has_pure_cgroup_v2_that_enforces_memory_max") else {
        return;
    };
    let out = run_in_vm(&cfg, &VmRun::shell(CGROUP_CHECK)).expect("vm run");
    println!("{:.1} s\n{}", out.elapsed.as_secs_f64(), out.console);
    assert_eq!(out.exit_code, 0, "{}", out.console);
    let lines: Vec<&str> = out.console.lines().collect();
    let field = |name: &str| {
        lines
            .iter()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name:?} line in:\n{}", out.console))
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    let mount = field("mount: ");
    assert_eq!(mount[..3], ["cgroup2", "/sys/fs/cgroup", "cgroup2"]);
    let controllers = field("controllers: ");
    let subtree = field("subtree_control: ");
    for c in ["cpu", "memory", "pids"] {
        assert!(controllers.contains(&c), "{c} not in {controllers:?}");
        assert!(subtree.contains(&c), "{c} not enabled: {subtree:?}");
    }
    assert_eq!(field("memory.max: "), ["20971520"]);
    assert_eq!(field("allocator: "), ["killed"]);
    assert!(
        lines.contains(&"memory.events: oom_kill 1"),
        "no oom kill:\n{}",
        out.console
    );
}

#[test]
fn guest_command_exit_code_output_env_and_files_come_through() {
    let Some(cfg) = config_or_skip("guest_command_exit_code_output_env_and_files_come_through")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.txt");
    std::fs::write(&data, "payload from the host\n").unwrap();
    let run = VmRun::shell(
        "cat /srv/in/data.txt; stat -c '%a' /srv/in/data.txt; echo \"greeting=$GREETING\"; \
         id -u nobody; echo to-stderr >&2; exit 7",
    )
    .file(GuestFile::new(&data, "/srv/in/data.txt", 0o640))
    .env("GREETING", "it's here");
    let out = run_in_vm(&cfg, &run).expect("vm run");
    println!("{:.1} s\n{}", out.elapsed.as_secs_f64(), out.console);
    assert_eq!(out.exit_code, 7, "{}", out.console);
    assert_eq!(
        out.console,
        "payload from the host\n640\ngreeting=it's here\n65534\nto-stderr\n"
    );
}

#[test]
fn current_test_binary_runs_in_the_guest_and_pids_max_holds() {
    const NAME: &str = "current_test_binary_runs_in_the_guest_and_pids_max_holds";
    if !vmtest::in_guest() {
        let Some(out) = vmtest::run_test_in_vm_or_skip(NAME, Vec::new()) else {
            return;
        };
        assert!(
            out.console.contains("guest: fork refused"),
            "{}",
            out.console
        );
        return;
    }
    // Guest side: this glibc test binary (with the libraries ldd found) runs under the v2 kernel.
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    assert!(
        mounts
            .lines()
            .any(|l| l.starts_with("cgroup2 /sys/fs/cgroup cgroup2 ")),
        "{mounts}"
    );
    let cg = std::path::Path::new("/sys/fs/cgroup/pidtest");
    std::fs::create_dir(cg).unwrap();
    std::fs::write(cg.join("pids.max"), "3").unwrap();
    // The shell and two sleeps fill pids.max=3; busybox sh exits 2 when the next fork fails.
    let status = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(
            "echo $$ > /sys/fs/cgroup/pidtest/cgroup.procs || exit 100; \
             for i in 1 2 3 4 5; do sleep 30 & done; exit 0",
        )
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(2), "the fourth process was not refused");
    std::fs::write(cg.join("cgroup.kill"), "1").unwrap();
    let events = std::fs::read_to_string(cg.join("pids.events")).unwrap();
    let refused: u64 = events
        .lines()
        .find_map(|l| l.strip_prefix("max "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no max line in pids.events: {events}"));
    assert!(refused >= 1, "pids.max=3 refused no fork: {events}");
    println!("guest: fork refused {refused} times under pids.max=3");
}

#[test]
fn filter_matching_no_test_is_an_error() {
    let Some(cfg) = config_or_skip("filter_matching_no_test_is_an_error") else {
        return;
    };
    let err = vmtest::run_current_test_in_vm(&cfg, "no_such_test", Vec::new()).unwrap_err();
    assert!(
        matches!(err, VmError::NoTestMatched { ref filter, .. } if filter == "no_such_test"),
        "{err}"
    );
}

#[test]
fn hung_guest_is_killed_at_the_timeout() {
    let Some(mut cfg) = config_or_skip("hung_guest_is_killed_at_the_timeout") else {
        return;
    };
    cfg.timeout = Duration::from_secs(6);
    let err = run_in_vm(&cfg, &VmRun::shell("sleep 1000")).unwrap_err();
    assert!(
        matches!(err, VmError::Timeout { timeout, .. } if timeout == cfg.timeout),
        "{err}"
    );
}
