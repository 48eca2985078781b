//! Unit tests: the tidy rules and the registry's pure apply.

use crate::registry::{Registry, RegistryOp, TaskKey};
use crate::testing::{agent_info, framework_info, task};
use proto::{AgentId, FrameworkId, StatusSource, TaskState, TaskStatus};

/// The core reads no clock and no randomness (style.md habit 2).
#[test]
fn tidy_no_clock_rng_or_uuid_in_src() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let banned = [
        ["Instant", "::now"].concat(),
        ["SystemTime", "::now"].concat(),
        ["thread", "_rng"].concat(),
        ["new", "_v4"].concat(),
    ];
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("read src dir") {
        let path = entry.expect("dir entry").path();
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        for b in &banned {
            if text.contains(b.as_str()) {
                found.push(format!("{} uses {b}", path.display()));
            }
        }
    }
    assert!(found.is_empty(), "banned calls in master-core: {found:?}");
}

#[test]
fn tidy_no_io_dependencies() {
    let manifest = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
        .expect("read Cargo.toml");
    let deps = manifest
        .split("[dependencies]")
        .nth(1)
        .and_then(|s| s.split("\n[").next())
        .unwrap_or_default();
    for banned in [
        "tokio", "quinn", "rustls", "openraft", "nix", "procfs", "uuid", "rand",
    ] {
        assert!(
            !deps.lines().any(|l| l.trim_start().starts_with(banned)),
            "master-core must not depend on {banned}"
        );
    }
}

fn registry_with_task() -> (Registry, FrameworkId, AgentId) {
    let mut r = Registry::default();
    let a = AgentId::new("a1");
    let f = FrameworkId::new("f1");
    r.apply(&RegistryOp::AgentAdmitted {
        agent_id: a.clone(),
        info: agent_info("h1", "cpus:4;mem:4GiB".parse().expect("resources")),
        principal: "h1".into(),
    });
    r.apply(&RegistryOp::FrameworkAdded {
        framework_id: f.clone(),
        info: framework_info("fw", &[]),
        principal: Some("fw".into()),
    });
    r.apply(&RegistryOp::TasksAdded {
        framework_id: f.clone(),
        agent_id: a.clone(),
        role: "*".into(),
        executor: None,
        tasks: vec![task("t1", &a, "cpus:1;mem:1GiB")],
        at_ms: 0,
    });
    (r, f, a)
}

#[test]
fn apply_tracks_used_and_frees_on_terminal_once() {
    let (mut r, f, a) = registry_with_task();
    assert_eq!(r.agents[&a].used.cpus_milli, 1000);
    assert_eq!(r.live_tasks, 1);
    let done = TaskStatus::new("t1".into(), TaskState::Finished, StatusSource::Executor);
    r.apply(&RegistryOp::TaskStateChanged {
        framework_id: f.clone(),
        status: done,
    });
    assert_eq!(r.agents[&a].used.cpus_milli, 0);
    assert_eq!(r.live_tasks, 0);
    // A second terminal state is ignored: the task stays FINISHED.
    let again = TaskStatus::new("t1".into(), TaskState::Failed, StatusSource::Executor);
    r.apply(&RegistryOp::TaskStateChanged {
        framework_id: f.clone(),
        status: again,
    });
    let key = TaskKey {
        framework_id: f,
        task_id: "t1".into(),
    };
    assert_eq!(
        r.task_or_completed(&key).map(|t| t.state),
        Some(TaskState::Finished)
    );
    assert_eq!(r.agents[&a].used.cpus_milli, 0);
}

#[test]
fn apply_is_deterministic_and_ignores_unknown_ids() {
    let (mut r1, f, _) = registry_with_task();
    let (mut r2, _, _) = registry_with_task();
    let bogus = RegistryOp::TaskStateChanged {
        framework_id: FrameworkId::new("nope"),
        status: TaskStatus::new("x".into(), TaskState::Killed, StatusSource::Master),
    };
    r1.apply(&bogus);
    let removed = RegistryOp::FrameworkRemoved {
        framework_id: f,
        at_ms: 5,
    };
    r1.apply(&removed);
    r2.apply(&removed);
    assert_eq!(r1, r2);
    assert_eq!(r1.live_tasks, 0);
    assert!(r1.agents.values().all(|a| a.used.is_empty()));
}

#[test]
fn registry_ops_round_trip_through_the_wire_codec() {
    let (_, f, a) = registry_with_task();
    let op = RegistryOp::TasksAdded {
        framework_id: f,
        agent_id: a.clone(),
        role: "web".into(),
        executor: None,
        tasks: vec![task("t9", &a, "cpus:0.5;mem:64MiB;ports:[31000-31001]")],
        at_ms: 42,
    };
    let bytes = rmp_serde::to_vec_named(&op).expect("encode op");
    let back: RegistryOp = rmp_serde::from_slice(&bytes).expect("decode op");
    assert_eq!(back, op);
    let (r, _, _) = registry_with_task();
    let bytes = rmp_serde::to_vec_named(&r).expect("encode registry");
    let back: Registry = rmp_serde::from_slice(&bytes).expect("decode registry");
    assert_eq!(back, r);
}
