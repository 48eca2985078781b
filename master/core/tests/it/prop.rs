//! Seeded random event sequences (proptest, which prints the failing case, shrunk, and keeps
//! its seed in `proptest-regressions/`): safety after every event, then a liveness phase.
//! Events include leader changes: raft stops committing for a while (`Hold`), some proposals
//! commit (`Commit`), and the leader is deposed (`LeaderChange`) with some of the pending
//! proposals committed unseen and the rest lost; the core is rebuilt from the replicated
//! registry and the sessions reconnect (some only later; frameworks reconcile their open tasks,
//! as real ones do). Frameworks may also hold back acknowledgements, fail over or be torn down.
//! Safety: no agent is over-committed (offered + used <= total); no task ever shows a framework
//! two different terminal states, or a non-terminal one after a terminal one; no task is sent
//! to agents twice. Liveness: once every agent and framework is back and the cluster has
//! quiesced (timers run, `agent_reregister_timeout` passed), every committed launch reached its
//! agent or its framework got a terminal status for it, and agents and registry agree on what
//! runs where; once every task is finished, no task is left live, each ended in exactly one
//! terminal state and every agent's updates are acknowledged.

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
    /// The operator tears a framework down.
    Teardown(usize),
    /// A framework stops acknowledging updates (false), or acknowledges what it holds and
    /// resumes (true).
    Acks(usize, bool),
    /// Raft stops committing: proposals wait.
    Hold,
    /// The next n waiting proposals commit (0: commit resumes for good).
    Commit(usize),
    /// The leader is deposed: n of the waiting proposals commit unseen, the rest are lost;
    /// clients reconnect after `ms` (frameworks first when the flag is set).
    /// Bit i of `stay_away` keeps agent i (bits 0-2) or framework i - 3 (bits 3-5) away
    /// until a `Reconnect` or `FrameworkFailover` event brings it back.
    LeaderChange {
        committed_unseen: usize,
        frameworks_first: bool,
        ms: u64,
        stay_away: u8,
    },
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
        1 => (0usize..3, any::<bool>()).prop_map(|(f, on)| Event::Acks(f, on)),
        1 => Just(Event::Hold),
        // Rare: a torn-down framework is gone for the rest of the run.
        1 => (0usize..12).prop_map(Event::Teardown),
        1 => (0usize..4).prop_map(Event::Commit),
        1 => (
            0usize..6,
            any::<bool>(),
            0u64..3_000,
            prop_oneof![3 => Just(0u8), 1 => 0u8..64],
        )
            .prop_map(|(n, f, ms, away)| Event::LeaderChange {
                committed_unseen: n,
                frameworks_first: f,
                ms,
                stay_away: away,
            }),
    ]
}

fn check_safety(sim: &Sim) -> Result<(), TestCaseError> {
    sim.check_no_overcommit().map_err(TestCaseError::fail)?;
    sim.check_no_double_run().map_err(TestCaseError::fail)?;
    for f in sim.frameworks.values() {
        for (task, states) in &f.terminal {
            prop_assert!(
                states.len() <= 1,
                "task {task} of {} ended as {states:?}",
                f.name
            );
        }
        prop_assert!(
            f.after_terminal.is_empty(),
            "{} got updates after a terminal one: {:?}",
            f.name,
            f.after_terminal
        );
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
    sim.resend_unacked = Some(Duration::from_secs(10));
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
            let s = sim.add_framework_with(&format!("f{i}"), info, Some(w));
            if let Some(f) = sim.frameworks.get_mut(&s) {
                f.reconcile_on_resubscribe = true;
            }
            s
        })
        .collect();
    let mut op = sim.connect(Role::Operator, "admin");
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
                } else if sim.leader_changes > 0 {
                    // Back after staying away from a new leader.
                    fws[f] = sim.resubscribe(fws[f]);
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
            Event::Acks(f, on) => {
                if let Some(x) = sim.frameworks.get_mut(&fws[f]) {
                    x.auto_ack = on;
                }
                if on {
                    sim.acknowledge_all(fws[f]);
                }
            }
            Event::Teardown(f) => {
                if let Some(s) = fws.get(f).copied() {
                    let framework_id = sim.framework_id(s);
                    sim.send(
                        op,
                        ClientFrame::Operator(OperatorCall::TeardownFramework { framework_id }),
                    );
                }
            }
            Event::Hold => sim.auto_commit = false,
            Event::Commit(0) => {
                sim.auto_commit = true;
                sim.pump();
            }
            Event::Commit(n) => sim.commit_held(n),
            Event::LeaderChange {
                committed_unseen,
                frameworks_first,
                ms,
                stay_away,
            } => {
                let mut open = sim.depose_leader(committed_unseen);
                let away: Vec<u64> = agents
                    .iter()
                    .chain(fws.iter())
                    .enumerate()
                    .filter(|(i, _)| stay_away & (1 << i) != 0)
                    .map(|(_, s)| *s)
                    .collect();
                open.retain(|s| !away.contains(s));
                sim.auto_commit = true;
                sim.advance(Duration::from_millis(ms));
                let moved = sim.reconnect_after_failover(&open, frameworks_first);
                for s in agents.iter_mut().chain(fws.iter_mut()).chain([&mut op]) {
                    *s = moved.get(s).copied().unwrap_or(*s);
                }
            }
        }
        check_safety(&sim)?;
    }
    // Liveness: everyone back, the cluster quiesces, every committed launch is accounted for.
    sim.auto_commit = true;
    sim.pump();
    for a in agents.iter_mut() {
        *a = sim.reconnect_agent(*a);
    }
    for f in fws.iter_mut() {
        if !sim.open.contains(f) {
            *f = sim.resubscribe(*f);
        }
    }
    for f in &fws {
        if let Some(x) = sim.frameworks.get_mut(f) {
            x.auto_ack = true;
        }
        sim.acknowledge_all(*f);
    }
    sim.quiesce();
    check_safety(&sim)?;
    sim.check_launches_resolved().map_err(TestCaseError::fail)?;
    sim.check_agents_agree().map_err(TestCaseError::fail)?;
    // Every task finishes.
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
    sim.check_launches_resolved().map_err(TestCaseError::fail)?;
    prop_assert_eq!(sim.master.registry().live_tasks(), 0, "every task ended");
    sim.advance(Duration::from_secs(20));
    for a in sim.agents.values() {
        prop_assert!(
            a.unacked.is_empty() && a.queued.is_empty(),
            "agent {} still waits for acknowledgements: {:?}, queued {:?}",
            a.name,
            a.unacked,
            a.queued
        );
    }
    for f in sim.frameworks.values() {
        for (task, state) in &f.tasks {
            if state.is_terminal() {
                prop_assert_eq!(f.terminal[task].len(), 1);
            }
        }
    }
    // The operator event stream derived from the committed log follows the registry.
    crate::events::check_replay(&sim.committed).map_err(TestCaseError::fail)?;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
    #[test]
    fn random_event_sequences_keep_the_invariants(events in prop::collection::vec(event(), 1..60)) {
        run(events)?;
    }
}
