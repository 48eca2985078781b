//! Leader changes at the worst moments, deterministically: the `Sim` deposes the leader (its
//! uncommitted proposals are lost, or committed without its knowledge), rebuilds the core from
//! the replicated registry (`Master::with_registry`) and reconnects every session.

use crate::sim;
use master_core::testing::{framework_info, task, Sim, Workload};
use master_core::{RegistryOp, TaskKey};
use proto::{
    AgentId, ClientFrame, FrameworkCall, FrameworkCapability, MasterToAgent, OfferId,
    OfferOperation, Resources, StatusReason, StatusUuid, TaskId, TaskState,
};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// A framework that reconciles its open tasks when it re-subscribes (as `corral run` does).
fn framework(sim: &mut Sim, name: &str, partition_aware: bool, w: Option<Workload>) -> u64 {
    let mut info = framework_info(name, &[]);
    info.failover_timeout_ms = 60_000;
    if partition_aware {
        info.capabilities.push(FrameworkCapability::PartitionAware);
    }
    let s = sim.add_framework_with(name, info, w);
    sim.frameworks
        .get_mut(&s)
        .expect("framework just added")
        .reconcile_on_resubscribe = true;
    s
}

fn key(sim: &Sim, fw: u64, task: &str) -> TaskKey {
    TaskKey {
        framework_id: sim.framework_id(fw),
        task_id: TaskId::new(task),
    }
}

fn check_all(sim: &Sim) {
    sim.check_no_overcommit().expect("no over-commit");
    sim.check_no_double_run().expect("no task sent twice");
    sim.check_launches_resolved()
        .expect("every launch resolved");
    for f in sim.frameworks.values() {
        assert!(
            f.terminal.values().all(|s| s.len() == 1),
            "{:?}",
            f.terminal
        );
        assert!(f.after_terminal.is_empty(), "{:?}", f.after_terminal);
    }
}

/// Updates the framework received for a task, with their uuids.
fn updates(sim: &Sim, fw: u64, task: &str) -> Vec<(TaskState, Option<StatusUuid>)> {
    sim.framework(fw)
        .updates
        .iter()
        .filter(|s| s.task_id.as_str() == task)
        .map(|s| (s.state, s.uuid.clone()))
        .collect()
}

fn acks_received(sim: &Sim, agent: u64, uuid: &StatusUuid) -> usize {
    sim.agents[&agent]
        .received
        .iter()
        .filter(|m| matches!(m, MasterToAgent::AcknowledgeUpdate { uuid: u, .. } if u == uuid))
        .count()
}

fn used(sim: &Sim, agent: &AgentId) -> Resources {
    sim.master
        .snapshot()
        .agents
        .iter()
        .find(|a| a.id == *agent)
        .map(|a| a.used.clone())
        .unwrap_or_default()
}

/// One agent and a framework whose launch of `f-t1` is proposed and not committed yet.
fn launch_awaiting_commit(partition_aware: bool) -> (Sim, u64, u64, TaskKey) {
    let mut sim = sim();
    let agent = sim.add_agent("h", "cpus:4;mem:4GiB", true);
    let w = Workload::new("cpus:1;mem:1GiB", 1);
    let fw = framework(&mut sim, "f", partition_aware, Some(w));
    sim.auto_commit = false;
    sim.advance(Duration::from_millis(20));
    let k = key(&sim, fw, "f-t1");
    let held: Vec<&RegistryOp> = sim.held.iter().collect();
    assert!(
        matches!(held[..], [RegistryOp::TasksAdded { ref tasks, .. }] if tasks[0].task_id == k.task_id),
        "the launch awaits its commit: {held:?}"
    );
    (sim, agent, fw, k)
}

/// The leader commits `TasksAdded` but is deposed before it learns so: no `RunTasks` goes out.
/// The new leader has the task in its registry on an agent that re-registers without it, so
/// the task is gone (TASK_GONE, or TASK_LOST without the partition-aware capability) — exactly
/// once, whichever reconnects first (the framework learns it by reconciling when the agent was
/// first) — and its resources are free again.
#[test]
fn a_failover_between_the_commit_of_a_launch_and_its_run_tasks_ends_the_task_once() {
    for (partition_aware, frameworks_first) in
        [(false, false), (false, true), (true, false), (true, true)]
    {
        let case = format!("partition_aware={partition_aware} frameworks_first={frameworks_first}");
        let (mut sim, agent, fw, k) = launch_awaiting_commit(partition_aware);
        let agent_id = sim.agent_id(agent);

        let moved = sim.leader_change(1, frameworks_first);
        let (agent, fw) = (moved[&agent], moved[&fw]);
        sim.advance(Duration::from_millis(100));

        assert_eq!(sim.launches.get(&k), Some(&agent_id), "{case}: committed");
        assert!(!sim.runs.contains_key(&k), "{case}: no RunTasks ever");
        assert!(sim.agents[&agent].tasks.is_empty(), "{case}");
        let gone = if partition_aware {
            TaskState::Gone
        } else {
            TaskState::Lost
        };
        assert_eq!(
            sim.framework(fw).terminal.get(&k.task_id),
            Some(&BTreeSet::from([gone])),
            "{case}: {:?}",
            sim.framework(fw).updates
        );
        let reasons: Vec<Option<StatusReason>> = sim
            .framework(fw)
            .updates
            .iter()
            .filter(|s| s.task_id == k.task_id && s.state.is_terminal())
            .map(|s| s.reason)
            .collect();
        // Subscribed first, the framework hears the new leader's verdict; otherwise that went
        // out while it was away (the master's own updates are not resent, as in Mesos) and its
        // reconciliation tells it.
        let how = if frameworks_first {
            StatusReason::AgentRestarted
        } else {
            StatusReason::Reconciliation
        };
        assert_eq!(reasons, vec![Some(how)], "{case}: told once");
        assert_eq!(sim.master.registry().live_tasks(), 0, "{case}");
        assert_eq!(used(&sim, &agent_id), Resources::default(), "{case}");
        check_all(&sim);
    }
}

/// A launch lost with the deposed leader (never committed) does not exist for the new one:
/// nothing runs, and the framework's reconciliation says so (TASK_LOST, or TASK_UNKNOWN for a
/// partition-aware framework, which may then launch it again).
#[test]
fn a_launch_lost_with_the_deposed_leader_runs_nowhere_and_reconciliation_says_so() {
    for partition_aware in [false, true] {
        let (mut sim, agent, fw, k) = launch_awaiting_commit(partition_aware);

        let moved = sim.leader_change(0, false);
        let (agent, fw) = (moved[&agent], moved[&fw]);
        sim.advance(Duration::from_secs(1));

        assert_eq!(sim.dropped_launches(), 1);
        assert!(sim.launches.is_empty() && sim.runs.is_empty());
        assert!(sim.agents[&agent].tasks.is_empty());
        let want = if partition_aware {
            TaskState::Unknown
        } else {
            TaskState::Lost
        };
        assert_eq!(
            updates(&sim, fw, "f-t1"),
            vec![(want, None)],
            "partition_aware={partition_aware}"
        );
        assert!(sim.master.registry().task(&k).is_none());
        check_all(&sim);
    }
}

/// Outstanding offers die with the leader that made them: the new leader offers afresh (new
/// ids), each free resource once, counting what runs; an accept of an old offer launches
/// nothing; the fresh offers are usable and nothing is allocated twice.
#[test]
fn a_failover_with_outstanding_offers_offers_afresh_and_allocates_nothing_twice() {
    let mut sim = sim();
    let h1 = sim.add_agent("h1", "cpus:4;mem:4GiB", true);
    let h2 = sim.add_agent("h2", "cpus:4;mem:4GiB", true);
    let f = framework(&mut sim, "f", false, None);
    let g = framework(&mut sim, "g", false, None);
    sim.advance(Duration::from_millis(10));
    // f runs a task of 2 cpus from one of its offers, then the remainders are offered again.
    let (offer_id, offer) = sim
        .framework(f)
        .offers
        .iter()
        .next()
        .map(|(id, o)| (id.clone(), o.clone()))
        .expect("f has an offer");
    let busy = offer.agent_id.clone();
    sim.frameworks
        .get_mut(&f)
        .expect("f")
        .offers
        .remove(&offer_id);
    let accept = |offer_ids: Vec<OfferId>, t: proto::TaskInfo| {
        ClientFrame::Framework(FrameworkCall::Accept {
            offer_ids,
            operations: vec![OfferOperation::Launch { tasks: vec![t] }],
            filters: None,
        })
    };
    sim.send(
        f,
        accept(vec![offer_id], task("big", &busy, "cpus:2;mem:1GiB")),
    );
    sim.advance(Duration::from_millis(10));
    assert_eq!(sim.runs.get(&key(&sim, f, "big")), Some(&1), "it runs");
    let mut old: BTreeMap<OfferId, proto::Offer> = BTreeMap::new();
    let mut old_holder: BTreeMap<OfferId, u64> = BTreeMap::new();
    for s in [f, g] {
        for (id, o) in &sim.framework(s).offers {
            old.insert(id.clone(), o.clone());
            old_holder.insert(id.clone(), s);
        }
    }
    assert!(!old.is_empty(), "offers are outstanding at the failover");

    let moved = sim.leader_change(0, false);
    let (f, g) = (moved[&f], moved[&g]);
    assert!(moved.contains_key(&h1) && moved.contains_key(&h2));
    sim.advance(Duration::from_millis(10));

    // Fresh offers: new ids; per agent, what is free, offered once.
    let fresh: Vec<proto::Offer> = [f, g]
        .iter()
        .flat_map(|s| sim.framework(*s).offers.values().cloned())
        .collect();
    assert!(fresh.iter().all(|o| !old.contains_key(&o.id)), "new ids");
    let snapshot = sim.master.snapshot();
    for a in &snapshot.agents {
        let mut offered = Resources::default();
        for o in fresh.iter().filter(|o| o.agent_id == a.id) {
            offered.add_assign(&o.resources);
        }
        let want_cpus = if a.id == busy { 2_000 } else { 4_000 };
        assert_eq!(
            (offered.cpus_milli, a.used.cpus_milli + offered.cpus_milli),
            (want_cpus, 4_000),
            "agent {}: free cpus offered once, next to what runs",
            a.hostname
        );
    }
    // An old offer is unknown to the new leader: its task is refused, nothing is launched.
    let (stale_id, stale) = old.iter().next().expect("an old offer");
    let holder = moved[&old_holder[stale_id]];
    sim.send(
        holder,
        accept(
            vec![stale_id.clone()],
            task("stale", &stale.agent_id, "cpus:1;mem:1GiB"),
        ),
    );
    let refused: Vec<(TaskState, Option<StatusReason>)> = sim
        .framework(holder)
        .updates
        .iter()
        .filter(|s| s.task_id.as_str() == "stale")
        .map(|s| (s.state, s.reason))
        .collect();
    assert_eq!(
        refused,
        vec![(TaskState::Lost, Some(StatusReason::InvalidOffers))]
    );
    assert!(sim.runs.keys().all(|k| k.task_id.as_str() != "stale"));
    // Every fresh offer is usable in full.
    for s in [f, g] {
        let offers: Vec<proto::Offer> = sim.framework(s).offers.values().cloned().collect();
        sim.frameworks
            .get_mut(&s)
            .expect("framework")
            .offers
            .clear();
        for (i, o) in offers.into_iter().enumerate() {
            let id = format!("fill-{s}-{i}");
            let mut t = task(&id, &o.agent_id, "cpus:1;mem:1GiB");
            t.resources = o.resources.clone();
            sim.send(s, accept(vec![o.id.clone()], t));
            let k = key(&sim, s, &id);
            assert_eq!(sim.runs.get(&k), Some(&1), "{id} runs");
        }
    }
    // Each agent now runs exactly its total, counted by the agents themselves.
    for a in sim.agents.values() {
        let mut running = Resources::default();
        for (t, st) in a.tasks.values() {
            if !st.is_terminal() {
                running.add_assign(&t.resources.clone().normalized());
            }
        }
        assert_eq!(running.cpus_milli, 4_000, "agent {}", a.name);
        assert_eq!(running.mem_bytes, 4 << 30, "agent {}", a.name);
    }
    check_all(&sim);
}

/// An update that awaits its framework's acknowledgement across a failover is delivered again
/// (or for the first time, when the deposed leader never learnt of its commit, or lost it) and
/// acknowledged to the agent exactly once; the task's next update, which waited behind it,
/// then flows; a later failover delivers neither again.
#[test]
fn a_failover_while_an_update_awaits_its_acknowledgement_redelivers_it_and_acks_once() {
    // Committed and seen by the old leader / committed unseen / lost.
    for (committed_unseen, seen) in [(0, true), (1, false), (0, false)] {
        let case = format!("committed_unseen={committed_unseen} seen={seen}");
        let mut sim = sim();
        sim.resend_unacked = Some(Duration::from_secs(10));
        let agent = sim.add_agent("h", "cpus:4;mem:4GiB", false);
        let fw = framework(
            &mut sim,
            "f",
            false,
            Some(Workload::new("cpus:1;mem:1GiB", 1)),
        );
        sim.frameworks.get_mut(&fw).expect("f").auto_ack = false;
        sim.advance(Duration::from_millis(20));
        let k = key(&sim, fw, "f-t1");
        assert_eq!(sim.runs.get(&k), Some(&1), "{case}: the agent has the task");
        sim.auto_commit = seen;
        sim.agent_update(agent, &k, TaskState::Running);
        sim.pump();
        let running = sim.agents[&agent].unacked[&k].uuid.clone().expect("uuid");
        // FINISHED waits behind RUNNING's acknowledgement.
        sim.agent_update(agent, &k, TaskState::Finished);
        sim.pump();
        assert_eq!(sim.agents[&agent].queued[&k].len(), 1, "{case}");
        let finished = sim.agents[&agent].queued[&k][0].uuid.clone().expect("uuid");
        let before = usize::from(seen);
        let deliveries = |sim: &Sim, fw: u64, uuid: &StatusUuid| {
            updates(sim, fw, "f-t1")
                .iter()
                .filter(|(_, u)| u.as_ref() == Some(uuid))
                .count()
        };
        assert_eq!(deliveries(&sim, fw, &running), before, "{case}");

        let moved = sim.leader_change(committed_unseen, false);
        let (agent, fw) = (moved[&agent], moved[&fw]);
        // The agent re-registered before the framework re-subscribed: its next resend reaches
        // the framework.
        sim.advance(Duration::from_secs(12));
        assert_eq!(
            deliveries(&sim, fw, &running),
            before + 1,
            "{case}: RUNNING (re)delivered once after the failover"
        );
        assert_eq!(acks_received(&sim, agent, &running), 0, "{case}");
        assert_eq!(deliveries(&sim, fw, &finished), 0, "{case}: FINISHED waits");
        sim.frameworks.get_mut(&fw).expect("f").auto_ack = true;
        sim.acknowledge_all(fw);
        assert_eq!(
            acks_received(&sim, agent, &running),
            1,
            "{case}: acked once"
        );
        assert_eq!(deliveries(&sim, fw, &finished), 1, "{case}: then FINISHED");
        assert_eq!(acks_received(&sim, agent, &finished), 1, "{case}");
        assert!(sim.agents[&agent].unacked.is_empty(), "{case}");
        assert_eq!(sim.master.registry().live_tasks(), 0, "{case}");
        assert_eq!(
            sim.framework(fw).terminal.get(&k.task_id),
            Some(&BTreeSet::from([TaskState::Finished])),
            "{case}"
        );
        // Time passes, and another leader change: nothing is delivered or acked again.
        sim.advance(Duration::from_secs(60));
        let moved = sim.leader_change(0, true);
        let (agent, fw) = (moved[&agent], moved[&fw]);
        sim.advance(Duration::from_secs(60));
        for uuid in [&running, &finished] {
            assert_eq!(acks_received(&sim, agent, uuid), 1, "{case}");
        }
        assert_eq!(deliveries(&sim, fw, &running), before + 1, "{case}");
        assert_eq!(deliveries(&sim, fw, &finished), 1, "{case}");
        check_all(&sim);
    }
}

/// An agent cut off across a failover does not re-register: the new leader gives it
/// `agent_reregister_timeout`, then its task is TASK_UNREACHABLE (partition-aware) or
/// TASK_LOST. When it comes back, the partition-aware framework's task is running again; the
/// other's is killed on the agent, and its framework keeps its one terminal state.
#[test]
fn an_agent_away_across_a_failover_is_unreachable_after_the_reregister_timeout_then_rejoins() {
    for partition_aware in [false, true] {
        let case = format!("partition_aware={partition_aware}");
        let mut sim = sim();
        let agent = sim.add_agent("h", "cpus:4;mem:4GiB", true);
        let w = Workload::new("cpus:1;mem:1GiB", 1);
        let fw = framework(&mut sim, "f", partition_aware, Some(w));
        sim.advance(Duration::from_millis(20));
        let k = key(&sim, fw, "f-t1");
        assert_eq!(
            sim.framework(fw).tasks.get(&k.task_id),
            Some(&TaskState::Running)
        );
        sim.agents.get_mut(&agent).expect("agent").heartbeats = false;

        let moved = sim.leader_change(0, false);
        assert!(!moved.contains_key(&agent), "{case}: the agent stays away");
        let fw = moved[&fw];
        let timeout = sim.master.config().agent_reregister_timeout;
        sim.advance(timeout - Duration::from_secs(1));
        assert_eq!(
            sim.framework(fw).tasks.get(&k.task_id),
            Some(&TaskState::Running),
            "{case}: still within the bound"
        );
        sim.advance(Duration::from_secs(2));
        let away = if partition_aware {
            TaskState::Unreachable
        } else {
            TaskState::Lost
        };
        assert_eq!(
            sim.framework(fw).tasks.get(&k.task_id),
            Some(&away),
            "{case}"
        );

        let agent = sim.reconnect_agent(agent);
        sim.quiesce();
        let (framework_sees, agent_runs) = if partition_aware {
            (TaskState::Running, TaskState::Running)
        } else {
            (TaskState::Lost, TaskState::Killed)
        };
        assert_eq!(
            sim.framework(fw).tasks.get(&k.task_id),
            Some(&framework_sees),
            "{case}"
        );
        assert_eq!(sim.agents[&agent].tasks[&k].1, agent_runs, "{case}");
        sim.check_agents_agree().expect("agents and registry agree");
        check_all(&sim);
    }
}

fn admissions(sim: &Sim) -> usize {
    sim.committed
        .iter()
        .filter(|op| matches!(op, RegistryOp::AgentAdmitted { .. }))
        .count()
}

/// After a failover every agent re-registers with the new leader; an agent the registry holds
/// reachable, unchanged, costs no registry write (10,000 agents would be 10,000 raft writes in
/// the second that matters). One whose description changed is written, and the cluster works
/// on with both.
#[test]
fn agents_reregistering_unchanged_after_a_failover_cost_no_registry_write() {
    let mut sim = sim();
    let a = sim.add_agent("a", "cpus:4;mem:4GiB", true);
    let b = sim.add_agent("b", "cpus:4;mem:4GiB", true);
    sim.advance(Duration::from_millis(20));
    assert_eq!(admissions(&sim), 2);

    let moved = sim.leader_change(0, false);
    sim.quiesce();
    assert_eq!(
        admissions(&sim),
        2,
        "unchanged agents re-registered without a write"
    );
    let (a, b) = (moved[&a], moved[&b]);
    for s in [a, b] {
        assert!(sim.open.contains(&s), "agent session {s} is open");
        assert!(sim.agents[&s].agent_id.is_some());
    }

    // The new leader offers both agents: a three-cpu task fits once on each.
    let w = Workload::new("cpus:3;mem:1GiB", 2);
    let fw = framework(&mut sim, "f", false, Some(w));
    sim.advance(Duration::from_millis(50));
    let on: BTreeSet<AgentId> = sim.launches.values().cloned().collect();
    assert_eq!(on.len(), 2, "a task on each agent: {on:?}");
    assert_eq!(sim.framework(fw).running(), 2);

    // An agent that comes back with more resources is news.
    sim.agents.get_mut(&a).expect("agent a").resources =
        "cpus:8;mem:4GiB".parse::<Resources>().expect("resources");
    sim.reconnect_agent(a);
    sim.quiesce();
    assert_eq!(admissions(&sim), 3, "the changed agent was written");
    sim.check_agents_agree().expect("agents and registry agree");
    check_all(&sim);
}

/// A re-registration while a change to the agent's admission is in flight (it was found
/// silent and its unreachable mark is not committed yet) is written after that change, so the
/// agent ends reachable.
#[test]
fn an_agent_reregistering_while_its_unreachable_mark_is_in_flight_is_written_after_it() {
    let mut sim = sim();
    let a = sim.add_agent("a", "cpus:4;mem:4GiB", true);
    sim.advance(Duration::from_millis(20));
    let id = sim.agent_id(a);
    sim.agents.get_mut(&a).expect("agent").heartbeats = false;
    sim.auto_commit = false;
    let limit = sim.master.config().agent_unreachable_timeout;
    sim.advance(limit * 4);
    let marked = |op: &RegistryOp| matches!(op, RegistryOp::AgentUnreachable { agent_id, .. } if *agent_id == id);
    assert!(
        sim.held.iter().any(marked),
        "the unreachable mark waits: {:?}",
        sim.held
    );

    let a = sim.reconnect_agent(a);
    let admitted = |op: &RegistryOp| matches!(op, RegistryOp::AgentAdmitted { agent_id, .. } if *agent_id == id);
    assert!(
        sim.held.iter().any(admitted),
        "the re-registration is proposed behind the mark: {:?}",
        sim.held
    );
    let n = sim.held.len();
    sim.commit_held(n);
    sim.auto_commit = true;
    sim.quiesce();
    assert!(sim.replicated.agents()[&id].reachable, "reachable again");
    assert!(sim.open.contains(&a));
}
