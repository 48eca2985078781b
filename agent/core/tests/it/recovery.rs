//! Recovery: a crash (the agent killed) right after each checkpoint step, and the restarted
//! core's view of what survived.

use agent_core::testing::{executor, task, FakeContainer, Harness};
use agent_core::{Action, ContainerRef, Exit};
use proto::{
    AgentToMaster, ExecutorId, ExecutorToAgent, ExecutorUpdate, FrameworkId, StatusReason, TaskId,
    TaskState,
};

/// Runs the task's life, crashing after the `k`-th checkpoint write; returns whether the crash
/// happened. After the restart every container still running exits with code 0 and every
/// update is acknowledged.
fn command_task_life(h: &mut Harness, k: usize) -> bool {
    h.crash_after = Some(k);
    h.run("f", vec![task("t1", "cpus:1")]);
    for step in 0..3 {
        if h.crashed {
            break;
        }
        match step {
            0 => h.ack_all(),
            1 => h.ack_all(),
            _ => h.exit("t1", Exit::code(0)),
        }
    }
    if !h.crashed {
        h.ack_until_quiet();
    }
    let crashed = h.crashed;
    if crashed {
        h.restart();
    }
    let t1 = ContainerRef::Task(TaskId::new("t1"));
    if matches!(h.containers.get(&t1), Some(FakeContainer::Running { .. })) {
        h.exit("t1", Exit::code(0));
    }
    h.ack_until_quiet();
    crashed
}

#[test]
fn a_crash_after_each_checkpoint_step_of_a_command_task_loses_nothing() {
    let mut crashes = 0;
    for k in 1..=10 {
        let mut h = Harness::new("cpus:4;mem:1GiB");
        if !command_task_life(&mut h, k) {
            break;
        }
        crashes += 1;
        let states = h.states("t1");
        let terminal: Vec<_> = states.iter().filter(|s| s.is_terminal()).collect();
        // A crash before the launch: the task never ran and says so; after it, it ran to
        // its end (re-attached, or found by its container id).
        let launched = h.log.iter().any(|a| matches!(a, Action::Launch { .. }));
        let end = if launched {
            TaskState::Finished
        } else {
            TaskState::Failed
        };
        assert_eq!(terminal, [&end], "crash after checkpoint {k}: {states:?}");
        assert!(
            h.store.tasks.is_empty(),
            "crash after checkpoint {k}: a record is left"
        );
        assert!(h.core.task(&TaskId::new("t1")).is_none());
        assert!(
            h.containers.is_empty(),
            "crash after checkpoint {k}: a container is left"
        );
    }
    assert!(crashes >= 4, "only {crashes} checkpoint steps");
}

#[test]
fn a_crash_before_the_launch_fails_the_task_as_not_started() {
    let mut h = Harness::new("cpus:4;mem:1GiB");
    h.crash_after = Some(1);
    h.run("f", vec![task("t1", "cpus:1")]);
    assert!(h.crashed);
    assert!(h.containers.is_empty(), "the launch ran past the crash");
    h.restart();
    h.ack_until_quiet();
    let last = h.last("t1").expect("status");
    assert_eq!(
        (last.state, last.reason),
        (TaskState::Failed, Some(StatusReason::AgentRestarted))
    );
    assert!(last
        .message
        .as_deref()
        .unwrap_or("")
        .contains("not started"));
}

#[test]
fn a_crash_between_launch_and_its_record_finds_the_container_by_id() {
    let mut h = Harness::new("cpus:4;mem:1GiB");
    h.auto_launch = false;
    h.run("f", vec![task("t1", "cpus:1")]);
    // The container was cloned; the agent dies before it learns so.
    h.restart();
    let view = h.core.task(&TaskId::new("t1")).expect("recovered");
    assert!(view.running);
    assert!(
        h.store.tasks[&TaskId::new("t1")].running,
        "the record was not checkpointed"
    );
    h.exit("t1", Exit::code(0));
    h.ack_until_quiet();
    assert_eq!(h.states("t1").last(), Some(&TaskState::Finished));
}

#[test]
fn a_task_that_ended_while_the_agent_was_down_reports_how_it_ended() {
    let mut h = crate::running("cpus:4;mem:1GiB");
    let r = ContainerRef::Task(TaskId::new("t1"));
    h.containers.insert(r, FakeContainer::Exited(Exit::code(4)));
    h.restart();
    h.ack_until_quiet();
    let last = h.last("t1").expect("status");
    assert_eq!((last.state, last.exit_code), (TaskState::Failed, Some(4)));
}

#[test]
fn unacknowledged_updates_of_an_ended_task_are_resent_after_a_restart() {
    let mut h = crate::running("cpus:4;mem:1GiB");
    h.exit("t1", Exit::code(0));
    let finished = crate::uuid(&h, "t1", 2);
    h.restart();
    assert_eq!(h.sends_of(&finished), 2);
    h.ack_until_quiet();
    assert!(h.store.tasks.is_empty());
}

#[test]
fn a_kill_checkpointed_before_a_crash_still_counts() {
    let mut h = crate::running("cpus:4;mem:1GiB");
    h.crash_after = Some(1);
    h.kill("f", "t1");
    assert!(h.crashed);
    h.restart();
    h.exit("t1", Exit::signal(15));
    h.ack_until_quiet();
    assert_eq!(h.states("t1").last(), Some(&TaskState::Killed));
}

#[test]
fn re_registration_lists_the_recovered_tasks_with_the_saved_agent_id() {
    let mut h = crate::running("cpus:4;mem:1GiB");
    h.restart();
    let register = h.log.iter().rev().find_map(|a| match a {
        Action::Connect {
            register: AgentToMaster::Register {
                agent_id, tasks, ..
            },
            ..
        } => Some((agent_id.clone(), tasks.clone())),
        _ => None,
    });
    let (agent_id, tasks) = register.expect("a registration after the restart");
    assert_eq!(agent_id.map(|a| a.to_string()), Some("a1".to_owned()));
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].state, TaskState::Running);
}

fn key() -> (FrameworkId, ExecutorId) {
    (FrameworkId::new("f"), ExecutorId::new("ex"))
}

#[test]
fn an_executors_tasks_follow_the_executor_across_a_restart() {
    let mut h = Harness::new("cpus:4;mem:1GiB");
    h.run_in(
        "f",
        executor("ex", "cpus:0.1;mem:32MiB"),
        vec![task("t1", "cpus:1;mem:64MiB")],
    );
    h.restart();
    assert!(h.core.executors().any(|k| k == &key()));
    let view = h.core.task(&TaskId::new("t1")).expect("recovered");
    assert_eq!(view.state, TaskState::Starting);
    // The executor reconnects and reports the task.
    let subscribe = ExecutorToAgent::Subscribe {
        framework_id: key().0,
        executor_id: key().1,
        tasks: vec![TaskId::new("t1")],
        unacknowledged: vec![ExecutorUpdate {
            task_id: TaskId::new("t1"),
            state: TaskState::Running,
            reason: None,
            message: None,
            exit_code: None,
            signal: None,
        }],
    };
    h.from_executor(&key(), subscribe);
    h.ack_until_quiet();
    assert_eq!(h.states("t1"), [TaskState::Starting, TaskState::Running]);
}

#[test]
fn an_executor_that_did_not_survive_fails_its_tasks() {
    let mut h = Harness::new("cpus:4;mem:1GiB");
    h.run_in(
        "f",
        executor("ex", "cpus:0.1;mem:32MiB"),
        vec![task("t1", "cpus:1;mem:64MiB")],
    );
    h.containers.remove(&ContainerRef::Executor(key()));
    h.restart();
    h.ack_until_quiet();
    let last = h.last("t1").expect("status");
    assert_eq!(
        (last.state, last.reason),
        (TaskState::Failed, Some(StatusReason::AgentRestarted))
    );
    assert_eq!(last.executor_id.as_ref().map(|e| e.as_str()), Some("ex"));
}

#[test]
fn a_crash_after_each_checkpoint_step_of_an_executor_task_ends_it_once() {
    for k in 1..=8 {
        let mut h = Harness::new("cpus:4;mem:1GiB");
        h.crash_after = Some(k);
        h.run_in(
            "f",
            executor("ex", "cpus:0.1;mem:32MiB"),
            vec![task("t1", "cpus:1;mem:64MiB")],
        );
        let sub = ExecutorToAgent::Subscribe {
            framework_id: key().0,
            executor_id: key().1,
            tasks: Vec::new(),
            unacknowledged: Vec::new(),
        };
        if !h.crashed {
            h.from_executor(&key(), sub.clone());
        }
        if !h.crashed {
            h.ack_until_quiet();
        }
        let crashed = h.crashed;
        if crashed {
            h.restart();
        }
        h.crash_after = None;
        // Whatever survived, the executor's container ends now.
        if matches!(
            h.containers.get(&ContainerRef::Executor(key())),
            Some(FakeContainer::Running { .. })
        ) {
            h.executor_exit(&key(), Exit::code(0));
        }
        h.ack_until_quiet();
        // A crash right after the executor's intent, before the task's first checkpoint,
        // loses the launch (the master finds the task missing from the re-registration);
        // otherwise the task ends exactly once.
        let states = h.states("t1");
        let terminal = states.iter().filter(|s| s.is_terminal()).count();
        assert_eq!(
            terminal,
            usize::from(!states.is_empty()),
            "crash after checkpoint {k}: {states:?}"
        );
        assert!(k > 1 || states.is_empty());
        assert!(h.store.tasks.is_empty(), "crash after checkpoint {k}");
        if !crashed {
            break;
        }
    }
}

#[test]
fn an_acknowledged_update_is_not_resent_after_a_restart() {
    let mut h = crate::running("cpus:4;mem:1GiB");
    let running = crate::uuid(&h, "t1", 1);
    assert_eq!(h.sends_of(&running), 1);
    h.restart();
    h.advance(std::time::Duration::from_secs(3600));
    assert_eq!(
        h.sends_of(&running),
        1,
        "resent after its acknowledgement was checkpointed"
    );
}

#[test]
fn an_executor_shutting_down_when_the_agent_died_is_shut_down_again() {
    let mut h = Harness::new("cpus:4;mem:1GiB");
    h.run_in(
        "f",
        executor("ex", "cpus:0.1;mem:32MiB"),
        vec![task("t1", "cpus:1;mem:64MiB")],
    );
    h.master(proto::MasterToAgent::ShutdownFramework {
        framework_id: key().0,
    });
    assert!(h.store.executors[&key()].shutting_down);
    h.restart();
    let kills_before = h
        .actions(|a| matches!(a, Action::KillExecutor { .. }))
        .len();
    // Not subscribed after the restart: the container is killed after the plain grace.
    h.advance(std::time::Duration::from_secs(3));
    assert_eq!(
        h.actions(|a| matches!(a, Action::KillExecutor { .. }))
            .len(),
        kills_before + 1
    );
    h.executor_exit(&key(), Exit::signal(9));
    h.ack_until_quiet();
    let last = h.last("t1").expect("status");
    assert_eq!(
        (last.state, last.reason),
        (TaskState::Killed, Some(StatusReason::KilledByFramework))
    );
}

#[test]
fn a_restart_brings_an_executors_container_back_to_its_tasks_size() {
    let mut h = Harness::new("cpus:4;mem:1GiB");
    h.run_in(
        "f",
        executor("ex", "cpus:0.1;mem:32MiB"),
        vec![task("t1", "cpus:1;mem:64MiB")],
    );
    // Something (a daemon-reload, an agent that died mid-resize) left the container smaller.
    let r = ContainerRef::Executor(key());
    if let Some(FakeContainer::Running { limits: Some(l) }) = h.containers.get_mut(&r) {
        l.resources.mem_bytes = 32 << 20;
    }
    h.restart();
    assert_eq!(
        h.core
            .executor_limits(&key())
            .map(|l| l.resources.mem_bytes),
        Some(96 << 20)
    );
    let resized = h.log.iter().rev().find_map(|a| match a {
        Action::ResizeExecutor { limits, .. } => Some(limits.resources.mem_bytes),
        _ => None,
    });
    assert_eq!(resized, Some(96 << 20));
}
