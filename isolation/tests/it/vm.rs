//! Every scenario again, inside a qemu VM whose kernel runs a pure cgroup v2 hierarchy: this
//! host is hybrid (v1 controllers), so only the VM proves the v2 backend for real. Started from
//! the normal `cargo test`; it skips with a reason where qemu or the kernel is missing, and fails
//! instead when CORRAL_REQUIRE_VM=1 (CI).

use std::time::Duration;
use vmtest::{GuestFile, VmRun};

#[test]
fn every_scenario_passes_on_a_pure_cgroup_v2_kernel() {
    if vmtest::in_guest() {
        // The guest runs the scenarios themselves, not this launcher.
        return;
    }
    let Some(mut cfg) = vmtest::config_or_skip("every_scenario_passes_on_a_pure_cgroup_v2_kernel")
    else {
        return;
    };
    cfg.memory_mib = 1024;
    cfg.timeout = Duration::from_secs(400);
    let exe = std::env::current_exe().expect("current test binary");
    let init = env!("CARGO_BIN_EXE_isolation-test-init");
    let run = VmRun::new(vec![
        "/usr/local/bin/isolation-it".to_owned(),
        "scenarios::".to_owned(),
        "--test-threads=1".to_owned(),
        "--nocapture".to_owned(),
    ])
    .env("CORRAL_IN_VM", "1")
    .env("ISOLATION_TEST_INIT", "/usr/local/bin/isolation-test-init")
    .env("RUST_BACKTRACE", "1")
    .file(GuestFile::executable(exe, "/usr/local/bin/isolation-it"))
    .file(GuestFile::executable(
        init,
        "/usr/local/bin/isolation-test-init",
    ));
    let out = vmtest::run_in_vm(&cfg, &run).unwrap_or_else(|e| panic!("the VM run failed: {e}"));
    println!("---- guest ----\n{}", out.console);
    assert_eq!(
        out.exit_code, 0,
        "scenarios failed on cgroup v2:\n{}",
        out.console
    );
    assert!(out.console.contains("test result: ok"), "{}", out.console);
    assert!(
        !out.console.contains("skipping"),
        "a scenario skipped in the VM:\n{}",
        out.console
    );
    let passed = out
        .console
        .lines()
        .find_map(|l| l.strip_prefix("test result: ok. "))
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse::<u32>().ok())
        .unwrap_or(0);
    assert!(
        passed >= 15,
        "only {passed} scenarios ran in the VM:\n{}",
        out.console
    );
}
