//! Framework failover, agent partitions and reconciliation, authorization, operator calls.

use crate::sim;
use master_core::testing::{framework_info, Sim, Workload};
use master_core::{RegistryOp, TaskKey};
use proto::{
    AgentId, ClientFrame, ErrorCode, FrameworkCall, FrameworkCapability, MasterToAgent,
    OperatorCall, OperatorReply, ReconcileTask, Role, ServerFrame, StatusReason, TaskId, TaskState,
};
use std::time::Duration;

fn one_task_cluster(partition_aware: bool) -> (Sim, u64, u64) {
    let mut sim = sim();
    let agent = sim.add_agent("h", "cpus:4;mem:4GiB", true);
    let mut info = framework_info("f", &[]);
    info.failover_timeout_ms = 10_000;
    if partition_aware {
        info.capabilities.push(FrameworkCapability::PartitionAware);
    }
    let fw = sim.add_framework_with("f", info, Some(Workload::new("cpus:1;mem:1GiB", 1)));
    sim.advance(Duration::from_secs(1));
    assert_eq!(sim.framework(fw).running(), 1);
    (sim, agent, fw)
}

fn read_stdout_of_f_t1() -> ClientFrame {
    ClientFrame::Operator(OperatorCall::ReadLog {
        task_id: "f-t1".into(),
        stream: proto::LogStream::Stdout,
        offset: 0,
        max_len: 100,
    })
}

fn errors(frames: &[ServerFrame]) -> Vec<(ErrorCode, String, bool)> {
    frames
        .iter()
        .filter_map(|f| match f {
            ServerFrame::Error(e) => Some((e.code, e.message.clone(), e.fatal)),
            _ => None,
        })
        .collect()
}

#[test]
fn failover_within_timeout_keeps_tasks_and_past_it_tears_down() {
    let (mut sim, agent, fw) = one_task_cluster(false);
    let info = framework_info("f", &[]);
    sim.disconnect(fw);
    sim.advance(Duration::from_secs(5));
    let mut info2 = info.clone();
    info2.failover_timeout_ms = 10_000;
    let fw = sim.reconnect_framework(fw, info2);
    sim.advance(Duration::from_secs(20));
    assert_eq!(
        sim.master.registry().live_tasks(),
        1,
        "task kept across a failover in time"
    );
    // Now go away for longer than the failover timeout.
    sim.disconnect(fw);
    sim.advance(Duration::from_millis(9_900));
    assert_eq!(sim.master.registry().live_tasks(), 1);
    sim.advance(Duration::from_millis(200));
    assert!(sim
        .committed
        .iter()
        .any(|op| matches!(op, RegistryOp::FrameworkRemoved { .. })));
    assert_eq!(sim.master.registry().live_tasks(), 0);
    let shut = sim.agents[&agent]
        .received
        .iter()
        .any(|m| matches!(m, MasterToAgent::ShutdownFramework { .. }));
    assert!(shut, "the agent was told to shut the framework down");
    // Re-subscribing with the removed id is refused.
    let s = sim.connect(Role::Framework, "f");
    let mut again = info;
    again.id = Some("m-F1".into());
    sim.send(
        s,
        ClientFrame::Framework(FrameworkCall::Subscribe { info: again }),
    );
    let e = errors(&sim.take(s));
    assert_eq!(e[0].0, ErrorCode::NotFound);
    assert!(sim.closed.contains_key(&s));
}

fn reconcile(sim: &mut Sim, fw: u64, tasks: Vec<ReconcileTask>) -> Vec<proto::TaskStatus> {
    let before = sim.framework(fw).updates.len();
    sim.send(
        fw,
        ClientFrame::Framework(FrameworkCall::Reconcile { tasks }),
    );
    sim.framework(fw).updates[before..].to_vec()
}

fn rt(id: &str, agent: Option<&AgentId>) -> ReconcileTask {
    ReconcileTask {
        task_id: TaskId::new(id),
        agent_id: agent.cloned(),
    }
}

#[test]
fn reconciliation_answers_known_unknown_and_lost_tasks() {
    for pa in [true, false] {
        let (mut sim, agent, fw) = one_task_cluster(pa);
        let agent_id = sim.agent_id(agent);
        // Known task: its latest state, from the master, no uuid.
        let r = reconcile(&mut sim, fw, vec![rt("f-t1", None)]);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].state, TaskState::Running);
        assert_eq!(r[0].reason, Some(StatusReason::Reconciliation));
        assert!(r[0].uuid.is_none());
        // Implicit: all tasks.
        assert_eq!(reconcile(&mut sim, fw, vec![]).len(), 1);
        // Unknown task on a registered agent: GONE (LOST without partition awareness).
        let r = reconcile(&mut sim, fw, vec![rt("nope", Some(&agent_id))]);
        assert_eq!(
            r[0].state,
            if pa { TaskState::Gone } else { TaskState::Lost }
        );
        // Unknown agent: UNKNOWN.
        let r = reconcile(&mut sim, fw, vec![rt("nope", Some(&AgentId::new("zz")))]);
        assert_eq!(
            r[0].state,
            if pa {
                TaskState::Unknown
            } else {
                TaskState::Lost
            }
        );

        // The agent goes silent: after 15 s it is unreachable and the task UNREACHABLE / LOST.
        sim.agents.get_mut(&agent).unwrap().heartbeats = false;
        sim.advance(Duration::from_secs(16));
        let key = TaskId::new("f-t1");
        let lost_state = if pa {
            TaskState::Unreachable
        } else {
            TaskState::Lost
        };
        assert_eq!(sim.framework(fw).tasks[&key], lost_state);
        let r = reconcile(&mut sim, fw, vec![rt("f-t1", Some(&agent_id))]);
        assert_eq!(r[0].state, lost_state, "a lost task reconciles as lost");
        let r = reconcile(&mut sim, fw, vec![rt("other", Some(&agent_id))]);
        assert_eq!(
            r[0].state,
            if pa {
                TaskState::Unreachable
            } else {
                TaskState::Lost
            }
        );
        let snap = sim.master.snapshot();
        assert_eq!(snap.agents[0].status, proto::AgentStatus::Unreachable);

        // The agent comes back with its task still running.
        let agent = sim.reconnect_agent(agent);
        sim.advance(Duration::from_millis(20));
        let k = TaskKey {
            framework_id: sim.framework_id(fw),
            task_id: key.clone(),
        };
        if pa {
            assert_eq!(
                sim.framework(fw).tasks[&key],
                TaskState::Running,
                "reconciled back"
            );
            assert_eq!(sim.master.registry().live_tasks(), 1);
        } else {
            // The framework was told LOST: the task is killed, not resurrected.
            let killed = sim.agents[&agent].received.iter().any(
                |m| matches!(m, MasterToAgent::KillTask { task_id, .. } if *task_id == k.task_id),
            );
            assert!(killed);
            assert_eq!(
                sim.framework(fw).terminal[&key].len(),
                1,
                "one terminal state only"
            );
        }
        sim.check_no_overcommit().unwrap();
    }
}

#[test]
fn calls_outside_the_role_are_refused_and_the_stream_closed() {
    let mut sim = sim();
    let agent = sim.add_agent("h", "cpus:1;mem:1GiB", true);
    let fw = sim.add_framework("f", &[], None);
    // An agent may not subscribe as a framework.
    sim.send(
        agent,
        ClientFrame::Framework(FrameworkCall::Subscribe {
            info: framework_info("evil", &[]),
        }),
    );
    let e = errors(&sim.take(agent));
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].0, ErrorCode::Forbidden);
    assert!(
        e[0].1.contains("agent") && e[0].1.contains("framework Subscribe"),
        "{}",
        e[0].1
    );
    assert!(e[0].2, "fatal");
    assert!(sim.closed.contains_key(&agent));
    // A framework may not drain agents.
    sim.send(
        fw,
        ClientFrame::Operator(OperatorCall::DrainAgent {
            agent_id: AgentId::new("m-A1"),
        }),
    );
    assert_eq!(errors(&sim.take(fw))[0].0, ErrorCode::Forbidden);
    assert!(sim.closed.contains_key(&fw));
    // An operator may not register as an agent.
    let op = sim.connect(Role::Operator, "admin");
    sim.send(
        op,
        ClientFrame::Agent(proto::AgentToMaster::Register {
            agent_id: None,
            info: master_core::testing::agent_info("x", Default::default()),
            tasks: vec![],
        }),
    );
    assert_eq!(errors(&sim.take(op))[0].0, ErrorCode::Forbidden);
}

#[test]
fn a_framework_id_is_bound_to_its_principal() {
    let (mut sim, _agent, fw) = one_task_cluster(false);
    let id = sim.framework_id(fw);
    let thief = sim.connect(Role::Framework, "mallory");
    let mut info = framework_info("f", &[]);
    info.id = Some(id.clone());
    sim.send(
        thief,
        ClientFrame::Framework(FrameworkCall::Subscribe { info }),
    );
    let e = errors(&sim.take(thief));
    assert_eq!(e[0].0, ErrorCode::Forbidden);
    assert!(e[0].1.contains("mallory"));
    // Mallory may not kill f's task through the operator call either.
    let s = sim.connect(Role::Framework, "mallory");
    sim.send(
        s,
        ClientFrame::Operator(OperatorCall::KillTask {
            task_id: "f-t1".into(),
        }),
    );
    assert_eq!(errors(&sim.take(s))[0].0, ErrorCode::NotFound);
    // The owner may.
    let s = sim.connect(Role::Framework, "f");
    sim.send(
        s,
        ClientFrame::Operator(OperatorCall::KillTask {
            task_id: "f-t1".into(),
        }),
    );
    assert!(matches!(
        sim.take(s)[..],
        [ServerFrame::Operator(OperatorReply::Done)]
    ));
    assert_eq!(sim.master.registry().live_tasks(), 0);
    assert_eq!(
        sim.framework(fw).tasks[&TaskId::new("f-t1")],
        TaskState::Killed
    );
}

#[test]
fn operator_drain_stops_offers_and_teardown_kills() {
    let (mut sim, agent, fw) = one_task_cluster(false);
    let agent_id = sim.agent_id(agent);
    let op = sim.connect(Role::Operator, "admin");
    sim.send(
        op,
        ClientFrame::Operator(OperatorCall::DrainAgent {
            agent_id: agent_id.clone(),
        }),
    );
    assert!(matches!(
        sim.take(op)[..],
        [ServerFrame::Operator(OperatorReply::Done)]
    ));
    let snap = sim.master.snapshot();
    assert_eq!(snap.agents[0].status, proto::AgentStatus::Draining);
    assert_eq!(
        snap.agents[0].offered,
        proto::Resources::default(),
        "offers rescinded"
    );
    let second = sim.add_framework("g", &[], None);
    sim.advance(Duration::from_secs(10));
    assert_eq!(
        sim.framework(second).offers_received,
        0,
        "a draining agent is not offered"
    );
    assert_eq!(
        sim.master.registry().live_tasks(),
        1,
        "tasks run to completion"
    );
    sim.send(
        op,
        ClientFrame::Operator(OperatorCall::ReactivateAgent {
            agent_id: agent_id.clone(),
        }),
    );
    sim.advance(Duration::from_millis(20));
    assert!(sim.framework(second).offers_received > 0);
    // Unknown ids: NotFound, not fatal.
    sim.take(op);
    sim.send(
        op,
        ClientFrame::Operator(OperatorCall::DeactivateAgent {
            agent_id: AgentId::new("x"),
        }),
    );
    let e = errors(&sim.take(op));
    assert_eq!((e[0].0, e[0].2), (ErrorCode::NotFound, false));
    // Teardown.
    let fw_id = sim.framework_id(fw);
    sim.send(
        op,
        ClientFrame::Operator(OperatorCall::TeardownFramework {
            framework_id: fw_id,
        }),
    );
    assert!(matches!(
        sim.take(op)[..],
        [ServerFrame::Operator(OperatorReply::Done)]
    ));
    assert_eq!(sim.master.registry().live_tasks(), 0);
    assert!(
        sim.closed.contains_key(&fw),
        "the framework's session is closed"
    );
}

#[test]
fn read_log_is_routed_to_the_agent_and_back() {
    let (mut sim, agent, _fw) = one_task_cluster(false);
    let op = sim.connect(Role::Operator, "admin");
    sim.send(op, read_stdout_of_f_t1());
    let req = sim.agents[&agent]
        .received
        .iter()
        .find_map(|m| match m {
            MasterToAgent::ReadLog { request_id, .. } => Some(*request_id),
            _ => None,
        })
        .expect("ReadLog sent to the agent");
    let data = proto::LogData {
        offset: 0,
        data: b"hello".to_vec(),
        eof: false,
    };
    sim.send(
        agent,
        ClientFrame::Agent(proto::AgentToMaster::LogChunk {
            request_id: req,
            result: Ok(data.clone()),
        }),
    );
    assert_eq!(
        sim.take(op),
        vec![ServerFrame::Operator(OperatorReply::Log(data))]
    );
}

#[test]
fn resent_updates_reach_each_framework_session_once() {
    let (mut sim, agent, fw) = one_task_cluster(false);
    // The framework does not ack; the agent resends the same update.
    sim.frameworks.get_mut(&fw).unwrap().auto_ack = false;
    let k = TaskKey {
        framework_id: sim.framework_id(fw),
        task_id: "f-t1".into(),
    };
    sim.agent_update(agent, &k, TaskState::Finished);
    sim.pump();
    let status = sim.agents[&agent].unacked[&k].clone();
    let n = sim.framework(fw).updates.len();
    sim.send(
        agent,
        ClientFrame::Agent(proto::AgentToMaster::StatusUpdate {
            framework_id: k.framework_id.clone(),
            status: status.clone(),
        }),
    );
    assert_eq!(
        sim.framework(fw).updates.len(),
        n,
        "same session: not forwarded twice"
    );
    // After a failover of the framework the resend is delivered to the new session.
    let mut info = framework_info("f", &[]);
    info.failover_timeout_ms = 10_000;
    let fw = sim.reconnect_framework(fw, info);
    sim.send(
        agent,
        ClientFrame::Agent(proto::AgentToMaster::StatusUpdate {
            framework_id: k.framework_id.clone(),
            status,
        }),
    );
    assert_eq!(sim.framework(fw).updates.len(), n + 1);
    // A different terminal state afterwards is never forwarded, and the master acks it.
    let mut other = proto::TaskStatus::new(
        k.task_id.clone(),
        TaskState::Failed,
        proto::StatusSource::Executor,
    );
    other.uuid = Some(proto::StatusUuid::new("late"));
    other.seq = 99;
    sim.send(
        agent,
        ClientFrame::Agent(proto::AgentToMaster::StatusUpdate {
            framework_id: k.framework_id.clone(),
            status: other,
        }),
    );
    assert_eq!(sim.framework(fw).terminal[&k.task_id].len(), 1);
    let acked_late = sim.agents[&agent].received.iter().any(
        |m| matches!(m, MasterToAgent::AcknowledgeUpdate { uuid, .. } if uuid.as_str() == "late"),
    );
    assert!(acked_late);
}

#[test]
fn a_new_leader_waits_for_agents_to_reregister_then_marks_the_missing_unreachable() {
    let mut sim = sim();
    let back = sim.add_agent("back", "cpus:2;mem:1GiB", true);
    let gone = sim.add_agent("gone", "cpus:2;mem:1GiB", true);
    sim.pump();
    let (back_id, gone_id) = (sim.agent_id(back), sim.agent_id(gone));
    // Failover: a new leader rebuilds its core from the replicated registry alone.
    let config = master_core::MasterConfig {
        id_prefix: "new".into(),
        ..Default::default()
    };
    let timeout = config.agent_reregister_timeout;
    let registry = sim.master.registry().clone();
    sim.master = master_core::Master::with_registry(config, sim.now, registry);
    let status = |sim: &Sim, id: &AgentId| {
        sim.master
            .snapshot()
            .agents
            .iter()
            .find(|a| a.id == *id)
            .map(|a| a.status)
    };
    // Both are still known, not yet written off.
    assert_eq!(status(&sim, &gone_id), Some(proto::AgentStatus::Active));
    sim.reconnect_agent(back);
    sim.advance(timeout / 2);
    assert_eq!(
        status(&sim, &gone_id),
        Some(proto::AgentStatus::Active),
        "still within the bound"
    );
    sim.advance(timeout);
    assert_eq!(status(&sim, &back_id), Some(proto::AgentStatus::Active));
    assert_eq!(
        status(&sim, &gone_id),
        Some(proto::AgentStatus::Unreachable),
        "an agent that never re-registered is unreachable after agent_reregister_timeout"
    );
}

#[test]
fn an_agent_id_is_bound_to_its_principal_and_a_removed_one_is_refused() {
    let mut sim = sim();
    let a = sim.add_agent("h1", "cpus:1;mem:1GiB", true);
    let id = sim.agent_id(a);
    let register = |agent_id: &AgentId| {
        ClientFrame::Agent(proto::AgentToMaster::Register {
            agent_id: Some(agent_id.clone()),
            info: master_core::testing::agent_info("x", Default::default()),
            tasks: vec![],
        })
    };
    // Another certificate may not take the id.
    let thief = sim.connect(Role::Agent, "h2");
    sim.send(thief, register(&id));
    let e = errors(&sim.take(thief));
    assert_eq!(e[0].0, ErrorCode::Forbidden);
    assert_eq!(
        e[0].1,
        format!("agent {id} belongs to 'h1', not to agent 'h2'")
    );
    assert!(sim.closed.contains_key(&thief));
    // Once removed, the id is refused even to its owner.
    let now = sim.now;
    sim.master.handle_committed(
        now,
        master_core::RegistryOp::AgentRemoved {
            agent_id: id.clone(),
        },
    );
    sim.pump();
    let again = sim.connect(Role::Agent, "h1");
    sim.send(again, register(&id));
    let e = errors(&sim.take(again));
    assert_eq!(e[0].0, ErrorCode::NotFound);
    assert_eq!(
        e[0].1,
        format!("agent {id} was removed from the cluster; start it afresh")
    );
}

/// A torn-down framework stays in the snapshot as completed, with its tasks (the one that failed
/// at its memory limit keeps its forensics; the one the teardown killed says so), and a master
/// restored from the registry shows the same.
#[test]
fn a_removed_framework_and_its_tasks_stay_in_the_snapshot() {
    // Principal `f` may use role `web` (the default rule allows only `*` and `f`).
    let mut config = master_core::MasterConfig::default();
    let rule = proto::AccessRule {
        roles: ["web".to_owned()].into(),
        users: Default::default(),
    };
    config.policy_seed.insert("f".into(), rule);
    let mut sim = crate::sim_with(config);
    let agent = sim.add_agent("h", "cpus:4;mem:4GiB", true);
    let fw = sim.add_framework("f", &["web"], Some(Workload::new("cpus:1;mem:1GiB", 2)));
    sim.advance(Duration::from_secs(1));
    assert_eq!(sim.framework(fw).running(), 2);
    let fw_id = sim.framework_id(fw);
    let agent_id = sim.agent_id(agent);
    let mut status = proto::TaskStatus::new(
        "f-t1".into(),
        TaskState::Failed,
        proto::StatusSource::Executor,
    );
    status.agent_id = Some(agent_id.clone());
    status.reason = Some(StatusReason::MemoryLimit);
    status.exit_code = Some(137);
    status.uuid = Some(proto::StatusUuid("oom-1".into()));
    status.seq = 100;
    status.limitation = Some(proto::Limitation {
        resource: proto::LimitedResource::Memory,
        limit: 32 << 20,
        peak: Some(33 << 20),
        events: [("oom_kill".to_owned(), 1)].into_iter().collect(),
    });
    sim.send(
        agent,
        ClientFrame::Agent(proto::AgentToMaster::StatusUpdate {
            framework_id: fw_id.clone(),
            status,
        }),
    );
    sim.advance(Duration::from_millis(20));
    assert_eq!(
        sim.framework(fw).tasks[&TaskId::new("f-t1")],
        TaskState::Failed
    );
    let op = sim.connect(Role::Operator, "admin");
    sim.send(
        op,
        ClientFrame::Operator(OperatorCall::TeardownFramework {
            framework_id: fw_id.clone(),
        }),
    );
    sim.advance(Duration::from_millis(20));
    let snap = sim.master.snapshot();
    assert!(snap.frameworks.is_empty(), "no longer a live framework");
    assert_eq!(snap.completed_frameworks.len(), 1);
    let c = &snap.completed_frameworks[0];
    assert_eq!(
        (c.id.clone(), c.name.as_str(), c.roles.clone()),
        (fw_id.clone(), "f", vec!["web".to_owned()])
    );
    let tasks: Vec<_> = snap
        .tasks
        .iter()
        .map(|t| (t.id.as_str(), t.framework_id.clone(), t.state, t.reason))
        .collect();
    assert_eq!(
        tasks,
        vec![
            (
                "f-t1",
                fw_id.clone(),
                TaskState::Failed,
                Some(StatusReason::MemoryLimit)
            ),
            (
                "f-t2",
                fw_id.clone(),
                TaskState::Killed,
                Some(StatusReason::FrameworkRemoved)
            ),
        ]
    );
    let lim = snap.tasks[0].limitation.as_ref().expect("limitation");
    assert_eq!((lim.limit, lim.peak), (32 << 20, Some(33 << 20)));
    assert_eq!(snap.tasks[0].exit_code, Some(137));
    assert!(snap.tasks.iter().all(|t| t.usage.is_none()));

    // A master restored from a snapshot of the registry shows the same.
    let bytes = rmp_serde::to_vec_named(sim.master.registry()).expect("encode");
    let registry: master_core::Registry = rmp_serde::from_slice(&bytes).expect("decode");
    let restored = master_core::Master::with_registry(Default::default(), sim.now, registry);
    let again = restored.snapshot();
    assert_eq!(again.completed_frameworks, snap.completed_frameworks);
    assert_eq!(again.tasks, snap.tasks);

    // Its tasks' logs can still be read (the agent keeps the sandboxes), by the operator and
    // by the framework's principal, not by another framework.
    for peer in [op, sim.connect(Role::Framework, "f")] {
        let before = sim.agents[&agent].received.len();
        sim.send(peer, read_stdout_of_f_t1());
        sim.advance(Duration::from_millis(1));
        let sent = sim.agents[&agent].received[before..].iter().any(
            |m| matches!(m, MasterToAgent::ReadLog { task_id, .. } if task_id.as_str() == "f-t1"),
        );
        assert!(sent, "ReadLog routed to the agent");
    }
    let other = sim.connect(Role::Framework, "g");
    sim.send(other, read_stdout_of_f_t1());
    let e = errors(&sim.take(other));
    assert_eq!(e[0].0, ErrorCode::NotFound, "{e:?}");

    // The id stays refused.
    let mut info = framework_info("f", &[]);
    info.id = Some(fw_id.clone());
    let s = sim.connect(Role::Framework, "f");
    sim.send(s, ClientFrame::Framework(FrameworkCall::Subscribe { info }));
    sim.advance(Duration::from_millis(20));
    assert!(sim.master.registry().frameworks().is_empty());
    assert!(sim.closed.contains_key(&s) || !errors(&sim.take(s)).is_empty());
}
