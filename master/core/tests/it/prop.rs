//! Seeded random event sequences (proptest): safety after every event, then a liveness phase.
//! Safety: no agent is over-committed (offered + used <= total); no task ever shows a framework
//! two different terminal states. Liveness: once every agent is back and every task is
//! finished, no task is left live and each ended in exactly one terminal state.

use crate::sim;
use master_core::testing::{framework_info, Sim, Workload};
use master_core::TaskKey;
use proptest::prelude::*;
use proto::{ClientFrame, FrameworkCall, OperatorCall, Role, TaskState};
use std::time::Duration;

#[derive(Clone, Debug)]
enum Event {
    Advance(u64),
    Partition(usize),
    Reconnect(usize),
    Finish(usize, usize, bool),
    FrameworkFailover(usize),
    Kill(usize, usize),
    Revive(usize),
    Drain(usize, bool),
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        4 => (0u64..20_000).prop_map(Event::Advance),
        1 => (0usize..3).prop_map(Event::Partition),
        1 => (0usize..3).prop_map(Event::Reconnect),
        3 => (0usize..3, 0usize..8, any::<bool>()).prop_map(|(a, t, ok)| Event::Finish(a, t, ok)),
        1 => (0usize..3).prop_map(Event::FrameworkFailover),
        1 => (0usize..3, 0usize..8).prop_map(|(f, t)| Event::Kill(f, t)),
        1 => (0usize..3).prop_map(Event::Revive),
        1 => (0usize..3, any::<bool>()).prop_map(|(a, d)| Event::Drain(a, d)),
    ]
}

fn check_safety(sim: &Sim) -> Result<(), TestCaseError> {
    sim.check_no_overcommit().map_err(TestCaseError::fail)?;
    for f in sim.frameworks.values() {
        for (task, states) in &f.terminal {
            prop_assert!(
                states.len() <= 1,
                "task {task} of {} ended as {states:?}",
                f.name
            );
        }
    }
    Ok(())
}

fn live_task(sim: &Sim, agent: u64, n: usize) -> Option<TaskKey> {
    let a = sim.agents.get(&agent)?;
    let live: Vec<&TaskKey> = a
        .tasks
        .iter()
        .filter(|(_, (_, s))| !s.is_terminal())
        .map(|(k, _)| k)
        .collect();
    if live.is_empty() {
        None
    } else {
        Some(live[n % live.len()].clone())
    }
}

fn run(events: Vec<Event>) -> Result<(), TestCaseError> {
    let mut sim = sim();
    let mut agents: Vec<u64> = (0..3)
        .map(|i| sim.add_agent(&format!("h{i}"), "cpus:4;mem:4GiB", true))
        .collect();
    let sizes = ["cpus:1;mem:1GiB", "cpus:0.5;mem:2GiB", "cpus:2;mem:512MiB"];
    let mut fws: Vec<u64> = (0..3)
        .map(|i| {
            let mut info = framework_info(&format!("f{i}"), &[]);
            info.failover_timeout_ms = 30_000;
            if i == 0 {
                info.capabilities
                    .push(proto::FrameworkCapability::PartitionAware);
            }
            let mut w = Workload::new(sizes[i], 1_000);
            w.per_offer = 2;
            sim.add_framework_with(&format!("f{i}"), info, Some(w))
        })
        .collect();
    let op = sim.connect(Role::Operator, "admin");
    check_safety(&sim)?;
    for e in events {
        match e {
            Event::Advance(ms) => sim.advance(Duration::from_millis(ms)),
            Event::Partition(a) => {
                if let Some(x) = sim.agents.get_mut(&agents[a]) {
                    x.heartbeats = false;
                }
            }
            Event::Reconnect(a) => agents[a] = sim.reconnect_agent(agents[a]),
            Event::Finish(a, t, ok) => {
                if let Some(k) = live_task(&sim, agents[a], t) {
                    let st = if ok {
                        TaskState::Finished
                    } else {
                        TaskState::Failed
                    };
                    sim.agent_update(agents[a], &k, st);
                    sim.pump();
                }
            }
            Event::FrameworkFailover(f) => {
                let mut info = framework_info(&format!("f{f}"), &[]);
                info.failover_timeout_ms = 30_000;
                if f == 0 {
                    info.capabilities
                        .push(proto::FrameworkCapability::PartitionAware);
                }
                if sim.open.contains(&fws[f]) {
                    fws[f] = sim.reconnect_framework(fws[f], info);
                }
            }
            Event::Kill(f, t) => {
                let tasks: Vec<_> = sim.framework(fws[f]).tasks.keys().cloned().collect();
                if !tasks.is_empty() && sim.open.contains(&fws[f]) {
                    let task_id = tasks[t % tasks.len()].clone();
                    sim.send(
                        fws[f],
                        ClientFrame::Framework(FrameworkCall::Kill {
                            task_id,
                            agent_id: None,
                            grace_ms: None,
                        }),
                    );
                }
            }
            Event::Revive(f) => {
                if sim.open.contains(&fws[f]) {
                    sim.send(
                        fws[f],
                        ClientFrame::Framework(FrameworkCall::Revive { roles: vec![] }),
                    );
                }
            }
            Event::Drain(a, drain) => {
                let agent_id = sim.agent_id(agents[a]);
                let call = if drain {
                    OperatorCall::DrainAgent { agent_id }
                } else {
                    OperatorCall::ReactivateAgent { agent_id }
                };
                sim.send(op, ClientFrame::Operator(call));
            }
        }
        check_safety(&sim)?;
    }
    // Liveness: everyone back, every task finishes.
    for a in agents.iter_mut() {
        *a = sim.reconnect_agent(*a);
    }
    sim.advance(Duration::from_secs(1));
    for f in fws.iter() {
        if sim.open.contains(f) {
            sim.send(
                *f,
                ClientFrame::Framework(FrameworkCall::Suppress { roles: vec![] }),
            );
        }
    }
    for round in 0..3 {
        for a in &agents {
            while let Some(k) = live_task(&sim, *a, 0) {
                sim.agent_update(*a, &k, TaskState::Finished);
                sim.pump();
            }
        }
        sim.advance(Duration::from_secs(1 + round));
        check_safety(&sim)?;
    }
    prop_assert_eq!(sim.master.registry().live_tasks, 0, "every task ended");
    for f in sim.frameworks.values() {
        for (task, state) in &f.tasks {
            if state.is_terminal() {
                prop_assert_eq!(f.terminal[task].len(), 1);
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn random_event_sequences_keep_the_invariants(events in prop::collection::vec(event(), 1..60)) {
        run(events)?;
    }
}
