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

mod timers {
    use crate::timers::{TimerKey, Timers};

    fn drain(t: &mut Timers<u64>, now: u64) -> Vec<TimerKey> {
        std::iter::from_fn(|| t.pop_due(now)).collect()
    }

    #[test]
    fn fire_in_deadline_then_key_order_once_each() {
        let mut t = Timers::<u64>::default();
        t.set(TimerKey::Allocate, 0);
        t.set(TimerKey::Offer(9), 0);
        t.set(TimerKey::Offer(10), 0);
        t.set(TimerKey::FilterExpiry(1, 2), 5);
        t.set(TimerKey::Heartbeat, 1);
        assert_eq!(t.next(), Some(0));
        assert_eq!(
            drain(&mut t, 0),
            vec![TimerKey::Offer(9), TimerKey::Offer(10), TimerKey::Allocate]
        );
        assert_eq!(t.next(), Some(1));
        assert_eq!(
            drain(&mut t, 100),
            vec![TimerKey::Heartbeat, TimerKey::FilterExpiry(1, 2)]
        );
        assert_eq!(t.next(), None);
    }

    #[test]
    fn replaced_and_cancelled_deadlines_do_not_fire() {
        let mut t = Timers::<u64>::default();
        t.set(TimerKey::Offer(1), 1);
        t.set(TimerKey::Offer(1), 3); // replaces
        t.set(TimerKey::Offer(2), 2);
        t.cancel(&TimerKey::Offer(2));
        t.set_if_unset(TimerKey::Offer(1), 0); // already set: ignored
        assert_eq!(t.next(), Some(3), "the top is always live");
        assert!(drain(&mut t, 2).is_empty());
        // Back to an earlier deadline after a later one: fires once, at the earlier one.
        t.set(TimerKey::Offer(1), 1);
        assert_eq!(drain(&mut t, 5), vec![TimerKey::Offer(1)]);
        assert_eq!(t.next(), None);
    }

    #[test]
    fn many_cancellations_stay_correct_through_compaction() {
        let mut t = Timers::<u64>::default();
        for i in 0..10_000u64 {
            t.set(TimerKey::Offer(i), i);
            if i % 10 != 0 {
                t.cancel(&TimerKey::Offer(i));
            }
        }
        let want: Vec<TimerKey> = (0..10_000u64)
            .filter(|i| i % 10 == 0)
            .map(TimerKey::Offer)
            .collect();
        assert_eq!(drain(&mut t, 50_000), want);
    }
}

#[test]
fn table_reuses_indexes_and_iterates_in_id_order() {
    let mut t: crate::table::Table<String, u32> = crate::table::Table::default();
    let b = t.insert("b".into(), 2);
    let a = t.insert("a".into(), 1);
    assert_eq!((b, a), (0, 1));
    assert_eq!(t.remove(&"b".to_owned()), Some((0, 2)));
    assert!(t.at(0).is_none() && t.key(0).is_none());
    let c = t.insert("c".into(), 3);
    assert_eq!(c, 0, "a freed index is reused");
    let order: Vec<(u32, &str, u32)> = t.iter().map(|(i, k, v)| (i, k.as_str(), *v)).collect();
    assert_eq!(order, vec![(1, "a", 1), (0, "c", 3)]);
    assert_eq!(t.get(&"c".to_owned()), Some(&3));
    assert_eq!(t.len(), 2);
}
