//! The agent under a real systemd (PID 1, Debian 12's systemd 252) on a pure cgroup v2 kernel,
//! in qemu (`vmtest::systemd`), installed the way a sysadmin does with `systemd/install.sh`.
//! Two tasks with limits run for minutes while the job in the guest (`systemd_vm_job.sh`) does
//! `daemon-reload`, `systemctl restart corral-agent`, and `systemctl stop` + `start`; then it
//! ends the tasks. The guest prints `@@SYSVM key value@@` markers and this side asserts each
//! promise, listing every broken one with the guest's log tail.
//!
//! Skips (saying why) where qemu, the kernel or the image is missing, except under
//! `CORRAL_REQUIRE_VM=1` (CI), where that fails. `scripts/test.sh` builds the image as root.

use std::collections::BTreeMap;
use std::path::Path;

use vmtest::systemd::{fields, run_systemd_job, systemd_config_or_skip, SystemdJob};

const JOB: &str = include_str!("systemd_vm_job.sh");
/// Every step that a sysadmin waits for must return within this long.
const STEP_LIMIT_MS: u64 = 10_000;
/// The agent must re-register within this long after `systemctl` returned.
const REREGISTER_LIMIT_MS: u64 = 10_000;

#[test]
fn agent_restart_and_stop_start_under_real_systemd_keep_tasks_and_limits() {
    const NAME: &str = "agent_restart_and_stop_start_under_real_systemd_keep_tasks_and_limits";
    let Some(cfg) = systemd_config_or_skip(NAME) else {
        return;
    };
    let systemd_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd");
    let mut job = SystemdJob::new(JOB).file(integration::corral_bin(), "corral", 0o755);
    for (file, mode) in [
        ("install.sh", 0o755),
        ("corral-master.service", 0o644),
        ("corral-agent.service", 0o644),
        ("master.toml", 0o644),
        ("agent.toml", 0o644),
    ] {
        job = job.file(systemd_dir.join(file), format!("systemd/{file}"), mode);
    }
    let out = run_systemd_job(&cfg, &job).unwrap_or_else(|e| panic!("{NAME}: vm run failed: {e}"));
    println!(
        "--- {NAME} in the systemd vm ({:.1} s) ---\n{}\n--- end of guest output ---",
        out.elapsed.as_secs_f64(),
        out.console
    );
    let markers: BTreeMap<String, String> = out.markers().into_iter().collect();
    let get = |k: &str| markers.get(k).cloned().unwrap_or_default();
    let tail = out.tail(60);
    if let Some(fatal) = markers.get("fatal") {
        panic!("{NAME}: the guest job stopped: {fatal}\n--- guest log tail ---\n{tail}");
    }
    assert_eq!(out.exit_code, 0, "{NAME}: job.sh failed\n{tail}");

    let mut broken: Vec<String> = Vec::new();
    let mut expect = |ok: bool, what: String| {
        if !ok {
            broken.push(what);
        }
    };

    // The guest is systemd on a pure cgroup v2 hierarchy.
    expect(
        get("pid1") == "systemd",
        format!("PID 1 is {:?}", get("pid1")),
    );
    let controllers = get("controllers");
    for c in ["cpu", "memory", "pids"] {
        expect(
            controllers.split_whitespace().any(|w| w == c),
            format!("{c} missing from cgroup.controllers: {controllers:?}"),
        );
    }
    expect(
        get("v1_mounts") == "0",
        format!("cgroup v1 mounted: {}", get("v1_mounts")),
    );

    // Each systemctl step returned within the limit.
    for step in ["daemon_reload", "restart", "stop", "start"] {
        let f = fields(&get(&format!("step_{step}")));
        let ms: u64 = f.get("ms").and_then(|m| m.parse().ok()).unwrap_or(u64::MAX);
        expect(
            f.get("rc").map(String::as_str) == Some("0") && ms < STEP_LIMIT_MS,
            format!(
                "systemctl {step}: rc={} after {ms} ms (must succeed within {STEP_LIMIT_MS} ms)",
                f.get("rc").map_or("?", String::as_str)
            ),
        );
    }

    // The agent came back and re-registered, with both tasks still RUNNING in the master.
    for phase in ["restart", "stopstart"] {
        let f = fields(&get(&format!("reregistered_{phase}")));
        let ms: u64 = f.get("ms").and_then(|m| m.parse().ok()).unwrap_or(u64::MAX);
        expect(
            f.get("rc").map(String::as_str) == Some("0") && ms <= REREGISTER_LIMIT_MS,
            format!(
                "after {phase}: the new agent process did not register within {REREGISTER_LIMIT_MS} ms: {}",
                get(&format!("reregistered_{phase}"))
            ),
        );
        let state = get(&format!("state_{phase}"));
        expect(
            state == "rc=0 agents=Active tasks=sysvm-a:Running,sysvm-b:Running",
            format!("after {phase}: corral state shows {state:?}"),
        );
        let unit = get(&format!("unit_{phase}"));
        expect(
            unit.starts_with("active "),
            format!("after {phase}: corral-agent is {unit:?}"),
        );
    }

    // Both tasks ran throughout, in their cgroups, with the limits they started with.
    for task in ["a", "b"] {
        let start = get(&format!("limits_start_{task}"));
        expect(
            start == "memory.max=67108864 cpu.max=20000_100000 pids.max=64",
            format!(
                "task {task} started with limits {start:?} (asked for 64MiB, 0.2 cpus, 64 pids)"
            ),
        );
        for phase in ["reload", "restart", "stopped", "stopstart"] {
            let now = get(&format!("limits_{phase}_{task}"));
            expect(
                now == start,
                format!("task {task} after {phase}: limits {now:?}, were {start:?}"),
            );
        }
        for phase in ["start", "reload", "restart", "stopped", "stopstart"] {
            let alive = get(&format!("alive_{phase}_{task}"));
            expect(
                alive.starts_with("yes "),
                format!("task {task} after {phase}: processes alive in their cgroup: {alive:?}"),
            );
        }
    }

    // The journal has the agent's lines, and systemd never failed to start it.
    let journal = fields(&get("journal"));
    let count = |k: &str| -> u64 { journal.get(k).and_then(|v| v.parse().ok()).unwrap_or(0) };
    expect(
        count("registered") >= 3,
        format!(
            "journalctl -u corral-agent: {} registrations, want one per start (3)",
            count("registered")
        ),
    );
    // With the installed config (cgroup_driver = "auto") every start chose the delegated scope.
    expect(
        count("scope_layout") >= 3,
        format!(
            "journalctl -u corral-agent: the agent chose the systemd scope layout {} times, want one per start (3)",
            count("scope_layout")
        ),
    );
    expect(
        count("cgroup_219") == 0,
        format!(
            "journalctl -u corral-agent: systemd failed to put the agent in its cgroup {} times (status=219/CGROUP)",
            count("cgroup_219")
        ),
    );

    // Each task finished exactly once: `corral run` exited 0 after one TASK_FINISHED, with the
    // task's output, and the master lists each once, finished.
    for task in ["a", "b"] {
        let run = get(&format!("run_{task}"));
        expect(
            run == "rc=0 finished_lines=1 done_line=1",
            format!("corral run of task {task}: {run:?} (want rc=0 finished_lines=1 done_line=1)"),
        );
    }
    let last = get("final");
    expect(
        last == "rc=0 agents=Active tasks=sysvm-a:Finished,sysvm-b:Finished",
        format!("at the end corral state shows {last:?}"),
    );

    assert!(
        broken.is_empty(),
        "{NAME}: {} promise(s) broken:\n  - {}\n--- guest log tail ---\n{tail}",
        broken.len(),
        broken.join("\n  - ")
    );
}
