//! The minimal path: register, subscribe, offer, launch, status, acknowledge, kill.

use crate::sim;
use master_core::testing::task;
use master_core::RegistryOp;
use proto::{
    ClientFrame, FrameworkCall, FrameworkEvent, MasterToAgent, OfferOperation, ServerFrame,
    TaskState,
};
use std::time::Duration;

#[test]
fn launch_run_ack_and_kill() {
    let mut sim = sim();
    let agent = sim.add_agent("host1", "cpus:4;mem:4GiB", false);
    let agent_id = sim.agent_id(agent);
    assert_eq!(agent_id.as_str(), "m-A1");
    let fw = sim.add_framework("web", &[], None);
    let fw_id = sim.framework_id(fw);
    assert_eq!(fw_id.as_str(), "m-F1");

    // Allocation is batched: nothing until the batch window passes.
    assert!(sim.framework(fw).offers.is_empty());
    sim.advance(Duration::from_millis(10));
    let offers: Vec<_> = sim.framework(fw).offers.values().cloned().collect();
    assert_eq!(offers.len(), 1, "one coalesced offer for the agent");
    assert_eq!(offers[0].resources, "cpus:4;mem:4GiB".parse().unwrap());

    sim.send(
        fw,
        ClientFrame::Framework(FrameworkCall::Accept {
            offer_ids: vec![offers[0].id.clone()],
            operations: vec![OfferOperation::Launch {
                tasks: vec![task("t1", &agent_id, "cpus:1;mem:1GiB")],
            }],
            filters: None,
        }),
    );
    // TasksAdded was committed before RunTasks was sent.
    let added = sim
        .committed
        .iter()
        .position(|op| matches!(op, RegistryOp::TasksAdded { .. }))
        .expect("TasksAdded committed");
    assert!(added > 0);
    let run = sim.agents.get(&agent).unwrap().received.iter().any(
        |m| matches!(m, MasterToAgent::RunTasks { tasks, .. } if tasks[0].task_id.as_str() == "t1"),
    );
    assert!(run, "agent got RunTasks");

    // The agent reports RUNNING; the framework gets it and acks; the ack reaches the agent.
    let key = master_core::TaskKey {
        framework_id: fw_id.clone(),
        task_id: "t1".into(),
    };
    sim.agent_update(agent, &key, TaskState::Running);
    sim.pump();
    assert_eq!(
        sim.framework(fw).tasks.get(&key.task_id),
        Some(&TaskState::Running)
    );
    assert!(
        sim.agents[&agent].unacked.is_empty(),
        "ack routed to the agent"
    );

    // Kill: the agent gets KillTask, reports KILLED, the framework sees it.
    sim.send(
        fw,
        ClientFrame::Framework(FrameworkCall::Kill {
            task_id: "t1".into(),
            agent_id: None,
            grace_ms: None,
        }),
    );
    let got_kill = sim.agents[&agent]
        .received
        .iter()
        .any(|m| matches!(m, MasterToAgent::KillTask { task_id, .. } if task_id.as_str() == "t1"));
    assert!(got_kill);
    sim.agent_update(agent, &key, TaskState::Killed);
    sim.pump();
    assert_eq!(
        sim.framework(fw).tasks.get(&key.task_id),
        Some(&TaskState::Killed)
    );
    let state = sim.master.snapshot();
    assert_eq!(state.agents[0].used, proto::Resources::default());
}

#[test]
fn frameworks_get_heartbeats() {
    let mut sim = sim();
    let fw = sim.add_framework("web", &[], None);
    sim.take(fw);
    sim.advance(Duration::from_secs(31));
    let beats = sim
        .take(fw)
        .into_iter()
        .filter(|f| matches!(f, ServerFrame::Framework(FrameworkEvent::Heartbeat)))
        .count();
    assert_eq!(beats, 2);
}

#[test]
fn a_launch_is_timed_from_its_commit_to_task_running() {
    let mut sim = sim();
    let agent = sim.add_agent("host1", "cpus:4;mem:4GiB", false);
    let agent_id = sim.agent_id(agent);
    let fw = sim.add_framework("web", &[], None);
    let fw_id = sim.framework_id(fw);
    sim.advance(Duration::from_millis(10));
    let offers: Vec<_> = sim.framework(fw).offers.values().cloned().collect();
    sim.send(
        fw,
        ClientFrame::Framework(FrameworkCall::Accept {
            offer_ids: vec![offers[0].id.clone()],
            operations: vec![OfferOperation::Launch {
                tasks: vec![
                    task("t1", &agent_id, "cpus:1;mem:1GiB"),
                    task("t2", &agent_id, "cpus:1;mem:1GiB"),
                ],
            }],
            filters: None,
        }),
    );
    let key = |id: &str| master_core::TaskKey {
        framework_id: fw_id.clone(),
        task_id: id.into(),
    };
    sim.advance(Duration::from_millis(250));
    sim.agent_update(agent, &key("t1"), TaskState::Starting);
    sim.agent_update(agent, &key("t2"), TaskState::Failed);
    sim.pump();
    assert!(
        sim.master.take_launch_latencies().is_empty(),
        "not running yet"
    );
    sim.advance(Duration::from_millis(250));
    sim.agent_update(agent, &key("t1"), TaskState::Running);
    sim.pump();
    let timed = sim.master.take_launch_latencies();
    assert_eq!(timed.len(), 1, "t1 only: t2 never ran");
    assert!(
        (Duration::from_millis(500)..Duration::from_millis(600)).contains(&timed[0]),
        "{timed:?}"
    );
    sim.agent_update(agent, &key("t1"), TaskState::Running);
    sim.pump();
    assert!(sim.master.take_launch_latencies().is_empty(), "timed once");
}
