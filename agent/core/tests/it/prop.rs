//! Random event orders, crashes included: no update is ever sent before its checkpoint (the
//! harness asserts it on every send), no task changes state after a terminal one, and once
//! everything quiets down every task reached exactly one terminal state and nothing is left.

use agent_core::testing::{executor, task, FakeContainer, Harness};
use agent_core::{ContainerRef, Exit};
use proptest::prelude::*;
use proto::{ExecutorId, ExecutorToAgent, ExecutorUpdate, FrameworkId, TaskId, TaskState};
use std::time::Duration;

#[derive(Clone, Debug)]
enum Event {
    Run(u8),
    RunInExecutor(u8),
    CompleteLaunches,
    Exit(u8, i32),
    Kill(u8),
    ExecutorSubscribes,
    ExecutorReports(u8, u8),
    AckAll,
    Disconnect,
    Advance(u16),
    Crash(u8),
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        (0u8..4).prop_map(Event::Run),
        (0u8..3).prop_map(Event::RunInExecutor),
        Just(Event::CompleteLaunches),
        (0u8..4, 0i32..3).prop_map(|(t, c)| Event::Exit(t, c)),
        (0u8..6).prop_map(Event::Kill),
        Just(Event::ExecutorSubscribes),
        (0u8..3, 0u8..3).prop_map(|(t, s)| Event::ExecutorReports(t, s)),
        Just(Event::AckAll),
        Just(Event::Disconnect),
        (1u16..120).prop_map(Event::Advance),
        (1u8..6).prop_map(Event::Crash),
    ]
}

fn key() -> (FrameworkId, ExecutorId) {
    (FrameworkId::new("f"), ExecutorId::new("ex"))
}

fn name(i: u8) -> String {
    format!("t{i}")
}

fn ename(i: u8) -> String {
    format!("e{i}")
}

fn apply(h: &mut Harness, e: Event) {
    // The master never launches a task id twice.
    let id = match &e {
        Event::Run(i) => Some(name(*i)),
        Event::RunInExecutor(i) => Some(ename(*i)),
        _ => None,
    };
    if let Some(id) = id {
        let known = h.received.contains_key(&TaskId::new(&id))
            || h.log.iter().any(|a| matches!(a, agent_core::Action::CheckpointTask(r) if r.info.task_id.as_str() == id));
        if known {
            return;
        }
    }
    match e {
        Event::Run(i) => h.run("f", vec![task(&name(i), "cpus:0.5;mem:32MiB")]),
        Event::RunInExecutor(i) => h.run_in(
            "f",
            executor("ex", "cpus:0.1;mem:16MiB"),
            vec![task(&ename(i), "cpus:0.5;mem:32MiB")],
        ),
        Event::CompleteLaunches => {
            h.complete_launches();
            h.complete_executor_launches();
            h.drain();
        }
        Event::Exit(i, code) => {
            let r = ContainerRef::Task(TaskId::new(name(i)));
            if matches!(h.containers.get(&r), Some(FakeContainer::Running { .. })) {
                h.exit(&name(i), Exit::code(code));
            }
        }
        Event::Kill(i) if i < 4 => h.kill("f", &name(i)),
        Event::Kill(i) => h.kill("f", &ename(i - 4)),
        Event::ExecutorSubscribes => h.from_executor(
            &key(),
            ExecutorToAgent::Subscribe {
                framework_id: key().0,
                executor_id: key().1,
                tasks: Vec::new(),
                unacknowledged: Vec::new(),
            },
        ),
        Event::ExecutorReports(i, s) => {
            let state = [TaskState::Running, TaskState::Finished, TaskState::Killed][s as usize];
            let u = ExecutorUpdate {
                task_id: TaskId::new(ename(i)),
                state,
                reason: None,
                message: None,
                exit_code: None,
                signal: None,
            };
            h.from_executor(&key(), ExecutorToAgent::Update(u));
        }
        Event::AckAll => h.ack_all(),
        Event::Disconnect => h.disconnect(),
        Event::Advance(s) => h.advance(Duration::from_secs(u64::from(s))),
        Event::Crash(k) => h.crash_after = Some(usize::from(k)),
    }
    if h.crashed {
        h.restart();
    }
}

/// Ends whatever still runs and acknowledges everything.
fn quiesce(h: &mut Harness) {
    h.crash_after = None;
    h.auto_launch = true;
    h.complete_launches();
    h.complete_executor_launches();
    h.drain();
    let running: Vec<ContainerRef> = h
        .containers
        .iter()
        .filter(|(_, c)| matches!(c, FakeContainer::Running { .. }))
        .map(|(r, _)| r.clone())
        .collect();
    for r in running {
        match r {
            ContainerRef::Task(id) => h.exit(id.as_str(), Exit::code(0)),
            ContainerRef::Executor(k) => h.executor_exit(&k, Exit::code(0)),
        }
    }
    h.advance(Duration::from_secs(3600));
    h.ack_until_quiet();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn every_task_ends_exactly_once_and_nothing_is_left(events in proptest::collection::vec(event(), 1..40)) {
        let mut h = Harness::new("cpus:4;mem:1GiB");
        h.auto_launch = false;
        for e in events {
            apply(&mut h, e);
        }
        quiesce(&mut h);
        for (task, statuses) in &h.received {
            let terminal = statuses.iter().filter(|s| s.state.is_terminal()).count();
            prop_assert_eq!(terminal, 1, "{} went through {:?}", task, statuses.iter().map(|s| s.state).collect::<Vec<_>>());
            let seqs: Vec<u64> = statuses.iter().map(|s| s.seq).collect();
            let mut sorted = seqs.clone();
            sorted.sort_unstable();
            prop_assert_eq!(&seqs, &sorted, "{} updates out of order", task);
        }
        prop_assert_eq!(h.core.unacknowledged(), 0);
        prop_assert!(h.store.tasks.is_empty(), "records left: {:?}", h.store.tasks.keys().collect::<Vec<_>>());
        prop_assert_eq!(h.core.tasks().count(), 0);
    }
}
