//! Unit tests: the tidy rules and the registry's pure apply.

use crate::config::limits;
use crate::registry::{Registry, RegistryOp, TaskKey};
use crate::testing::{agent_info, framework_info, task};
use proto::{AgentId, FrameworkId, StatusReason, StatusSource, TaskState, TaskStatus};

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
    let mut dirs = vec![dir];
    let mut files = 0;
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            files += 1;
            let text = std::fs::read_to_string(&path).expect("read source file");
            for b in &banned {
                if text.contains(b.as_str()) {
                    found.push(format!("{} uses {b}", path.display()));
                }
            }
        }
    }
    assert!(files > 10, "read only {files} source files");
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
    assert_eq!(r.agents()[&a].used.cpus_milli, 1000);
    assert_eq!(r.live_tasks(), 1);
    let done = TaskStatus::new("t1".into(), TaskState::Finished, StatusSource::Executor);
    r.apply(&RegistryOp::TaskStateChanged {
        framework_id: f.clone(),
        status: done,
    });
    assert_eq!(r.agents()[&a].used.cpus_milli, 0);
    assert_eq!(r.live_tasks(), 0);
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
    assert_eq!(r.agents()[&a].used.cpus_milli, 0);
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
    assert_eq!(r1.live_tasks(), 0);
    assert!(r1.agents().values().all(|a| a.used.is_empty()));
}

/// Adds framework `id` with tasks `t1`, `t2` on agent `a1`, finishes `t1` (FAILED at the memory
/// limit) and removes the framework, which kills `t2`.
fn add_run_and_remove(r: &mut Registry, id: &str, at_ms: u64) {
    let a = AgentId::new("a1");
    let f = FrameworkId::new(id);
    r.apply(&RegistryOp::FrameworkAdded {
        framework_id: f.clone(),
        info: framework_info(id, &["web"]),
        principal: Some(id.into()),
    });
    r.apply(&RegistryOp::TasksAdded {
        framework_id: f.clone(),
        agent_id: a.clone(),
        role: "web".into(),
        executor: None,
        tasks: vec![
            task("t1", &a, "cpus:0.5;mem:32MiB"),
            task("t2", &a, "cpus:0.5;mem:32MiB"),
        ],
        at_ms,
    });
    let mut failed = TaskStatus::new("t1".into(), TaskState::Failed, StatusSource::Executor);
    failed.reason = Some(StatusReason::MemoryLimit);
    failed.limitation = Some(proto::Limitation {
        resource: proto::LimitedResource::Memory,
        limit: 32 << 20,
        peak: Some(32 << 20),
        events: [("oom_kill".to_owned(), 1)].into_iter().collect(),
    });
    r.apply(&RegistryOp::TaskStateChanged {
        framework_id: f.clone(),
        status: failed,
    });
    r.apply(&RegistryOp::FrameworkRemoved {
        framework_id: f,
        at_ms: at_ms + 1,
    });
}

#[test]
fn a_removed_framework_is_kept_with_its_tasks_the_killed_ones_last() {
    let (mut r, _, _) = registry_with_task();
    add_run_and_remove(&mut r, "f2", 10);
    assert!(!r.frameworks().contains_key(&FrameworkId::new("f2")));
    assert_eq!(r.completed_frameworks().len(), 1);
    let c = &r.completed_frameworks()[0];
    assert_eq!(c.framework_id, FrameworkId::new("f2"));
    assert_eq!(c.principal.as_deref(), Some("f2"));
    assert_eq!(c.removed_at_ms, 11);
    assert_eq!(c.roles(), vec!["web".to_owned()]);
    let tasks: Vec<_> = c
        .tasks
        .iter()
        .map(|t| (t.info.task_id.as_str().to_owned(), t.state, t.status.reason))
        .collect();
    assert_eq!(
        tasks,
        vec![
            (
                "t1".to_owned(),
                TaskState::Failed,
                Some(StatusReason::MemoryLimit)
            ),
            (
                "t2".to_owned(),
                TaskState::Killed,
                Some(StatusReason::FrameworkRemoved)
            ),
        ]
    );
    let lim = c.tasks[0]
        .status
        .limitation
        .as_ref()
        .expect("limitation kept");
    assert_eq!((lim.limit, lim.events["oom_kill"]), (32 << 20, 1));
    assert_eq!(c.tasks[1].status.timestamp_ms, 11);
    // Its resources are freed and its id stays refused.
    assert_eq!(r.live_tasks(), 1);
    assert_eq!(r.agents()[&AgentId::new("a1")].used.cpus_milli, 1000);
    r.apply(&RegistryOp::FrameworkAdded {
        framework_id: FrameworkId::new("f2"),
        info: framework_info("again", &[]),
        principal: Some("f2".into()),
    });
    assert!(!r.frameworks().contains_key(&FrameworkId::new("f2")));
    // Removing it again, or a status for it, changes nothing.
    let before = r.clone();
    r.apply(&RegistryOp::FrameworkRemoved {
        framework_id: FrameworkId::new("f2"),
        at_ms: 99,
    });
    r.apply(&RegistryOp::TaskStateChanged {
        framework_id: FrameworkId::new("f2"),
        status: TaskStatus::new("t2".into(), TaskState::Finished, StatusSource::Executor),
    });
    assert_eq!(r, before);
}

#[test]
fn completed_frameworks_are_bounded_oldest_dropped_first() {
    let (mut r, _, _) = registry_with_task();
    let n = limits::MAX_COMPLETED_FRAMEWORKS + 7;
    for i in 0..n {
        add_run_and_remove(&mut r, &format!("g{i}"), i as u64 * 10);
    }
    assert_eq!(
        r.completed_frameworks().len(),
        limits::MAX_COMPLETED_FRAMEWORKS
    );
    let ids: Vec<String> = r
        .completed_frameworks()
        .iter()
        .map(|c| c.framework_id.as_str().to_owned())
        .collect();
    let want: Vec<String> = (7..n).map(|i| format!("g{i}")).collect();
    assert_eq!(ids, want, "oldest first, the first 7 dropped");
    assert!(r.completed_frameworks().iter().all(|c| c.tasks.len() == 2));
    // A dropped one is still refused: the removed-id list is longer.
    assert!(r.framework_removed(&FrameworkId::new("g0")));
    const { assert!(limits::MAX_REMOVED_FRAMEWORKS >= limits::MAX_COMPLETED_FRAMEWORKS) };
}

#[test]
fn a_completed_frameworks_tasks_stay_bounded() {
    let (mut r, f, a) = registry_with_task();
    let n = limits::MAX_COMPLETED_TASKS_PER_FRAMEWORK + 3;
    let tasks: Vec<_> = (0..n)
        .map(|i| task(&format!("x{i}"), &a, "cpus:0.001;mem:1MiB"))
        .collect();
    r.apply(&RegistryOp::TasksAdded {
        framework_id: f.clone(),
        agent_id: a,
        role: "*".into(),
        executor: None,
        tasks,
        at_ms: 0,
    });
    for i in 0..3 {
        r.apply(&RegistryOp::TaskStateChanged {
            framework_id: f.clone(),
            status: TaskStatus::new(
                format!("x{i}").as_str().into(),
                TaskState::Finished,
                StatusSource::Executor,
            ),
        });
    }
    r.apply(&RegistryOp::FrameworkRemoved {
        framework_id: f,
        at_ms: 1,
    });
    let c = &r.completed_frameworks()[0];
    assert_eq!(c.tasks.len(), limits::MAX_COMPLETED_TASKS_PER_FRAMEWORK);
    assert!(
        c.tasks.iter().all(|t| t.state == TaskState::Killed),
        "the newest (the killed) are kept"
    );
    assert_eq!(r.live_tasks(), 0);
}

#[test]
fn completed_frameworks_survive_a_snapshot_and_an_old_snapshot_loads() {
    let (mut r, _, _) = registry_with_task();
    add_run_and_remove(&mut r, "f2", 10);
    let bytes = rmp_serde::to_vec_named(&r).expect("encode registry");
    let back: Registry = rmp_serde::from_slice(&bytes).expect("decode registry");
    assert_eq!(back, r);
    // The registry as it was before completed frameworks existed.
    #[derive(serde::Serialize)]
    struct OldRegistry<'a> {
        agents: &'a std::collections::BTreeMap<AgentId, crate::registry::AgentEntry>,
        frameworks: &'a std::collections::BTreeMap<FrameworkId, crate::registry::FrameworkEntry>,
        removed_frameworks: &'a std::collections::VecDeque<FrameworkId>,
        removed_agents: &'a std::collections::VecDeque<AgentId>,
        live_tasks: usize,
    }
    let old = OldRegistry {
        agents: r.agents(),
        frameworks: r.frameworks(),
        removed_frameworks: r.removed_frameworks(),
        removed_agents: r.removed_agents(),
        live_tasks: r.live_tasks(),
    };
    let bytes = rmp_serde::to_vec_named(&old).expect("encode old registry");
    let back: Registry = rmp_serde::from_slice(&bytes).expect("an old snapshot loads");
    assert!(back.completed_frameworks().is_empty());
    assert!(back.quotas().is_empty());
    assert_eq!(back.frameworks(), r.frameworks());
    assert!(back.framework_removed(&FrameworkId::new("f2")));
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
        t.set_no_later(TimerKey::Offer(1), 4); // set earlier already: ignored
        assert_eq!(t.next(), Some(3), "the top is always live");
        assert!(drain(&mut t, 2).is_empty());
        t.set_no_later(TimerKey::Offer(2), 9);
        t.set_no_later(TimerKey::Offer(2), 6); // earlier: moves it
        assert_eq!(
            drain(&mut t, 6),
            vec![TimerKey::Offer(1), TimerKey::Offer(2)]
        );
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

#[test]
fn the_policy_survives_a_snapshot_and_a_snapshot_without_it_loads_unconfigured() {
    let (mut r, _, _) = registry_with_task();
    let rule = proto::AccessRule {
        roles: ["prod".to_owned()].into(),
        users: ["root".to_owned()].into(),
    };
    r.apply(&RegistryOp::PolicySet {
        principal: "batch".into(),
        rule: Some(rule.clone()),
    });
    // A seed after an operator's change is a no-op.
    r.apply(&RegistryOp::PolicySeeded {
        rules: Default::default(),
    });
    assert!(r.policy_configured());
    assert_eq!(r.policy().get("batch"), Some(&rule));
    let back: Registry =
        rmp_serde::from_slice(&rmp_serde::to_vec_named(&r).expect("encode")).expect("decode");
    assert_eq!(back, r);
    // The registry as it was before it had a policy: no `policy`, no `policy_configured`.
    #[derive(serde::Serialize)]
    struct OldRegistry<'a> {
        agents: &'a std::collections::BTreeMap<AgentId, crate::registry::AgentEntry>,
        frameworks: &'a std::collections::BTreeMap<FrameworkId, crate::registry::FrameworkEntry>,
        removed_frameworks: &'a std::collections::VecDeque<FrameworkId>,
        removed_agents: &'a std::collections::VecDeque<AgentId>,
        live_tasks: usize,
        completed_frameworks: &'a std::collections::VecDeque<crate::CompletedFramework>,
    }
    let old = OldRegistry {
        agents: r.agents(),
        frameworks: r.frameworks(),
        removed_frameworks: r.removed_frameworks(),
        removed_agents: r.removed_agents(),
        live_tasks: r.live_tasks(),
        completed_frameworks: r.completed_frameworks(),
    };
    let bytes = rmp_serde::to_vec_named(&old).expect("encode old registry");
    let back: Registry = rmp_serde::from_slice(&bytes).expect("an old snapshot loads");
    assert!(!back.policy_configured() && back.policy().is_empty());
    assert_eq!(back.frameworks(), r.frameworks());
}
