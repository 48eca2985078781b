//! The operator event stream's events (`master_core::events`): a client that starts from a
//! registry's `state_events` and applies each committed op's `op_events` holds what the
//! registry after those ops describes, for scripted ops of every kind and (from `prop.rs`)
//! for every op of the random runs.

use master_core::events::{op_events, state_events};
use master_core::testing::{agent_info, framework_info, task};
use master_core::{AgentMark, Registry, RegistryOp};
use proto::{
    AgentId, ClusterEvent, EventAgent, EventFramework, FrameworkId, StatusReason, StatusSource,
    TaskId, TaskState, TaskStatus, TaskSummary,
};
use std::collections::BTreeMap;

/// What a client of the event stream holds: the live objects (terminal tasks are dropped, as
/// the registry bounds how many it keeps).
#[derive(Debug, Default, PartialEq)]
pub struct Model {
    agents: BTreeMap<AgentId, EventAgent>,
    frameworks: BTreeMap<FrameworkId, EventFramework>,
    tasks: BTreeMap<(FrameworkId, TaskId), TaskSummary>,
}

impl Model {
    fn from_events(events: &[ClusterEvent]) -> Result<Model, String> {
        let mut m = Model::default();
        for e in events {
            m.apply(e)?;
        }
        Ok(m)
    }

    fn apply(&mut self, e: &ClusterEvent) -> Result<(), String> {
        match e {
            ClusterEvent::AgentAdded(a) => {
                if self.agents.insert(a.id.clone(), a.clone()).is_some() {
                    return Err(format!("agent {} added twice", a.id));
                }
            }
            ClusterEvent::AgentUpdated(a) => {
                if self.agents.insert(a.id.clone(), a.clone()).is_none() {
                    return Err(format!("unknown agent {} updated", a.id));
                }
            }
            ClusterEvent::AgentRemoved { agent_id } => {
                self.agents.remove(agent_id);
            }
            ClusterEvent::FrameworkAdded(f) | ClusterEvent::FrameworkUpdated(f) => {
                self.frameworks.insert(f.id.clone(), f.clone());
            }
            ClusterEvent::FrameworkRemoved { framework_id } => {
                self.frameworks.remove(framework_id);
                if self.tasks.keys().any(|(f, _)| f == framework_id) {
                    return Err(format!("framework {framework_id} removed with live tasks"));
                }
            }
            ClusterEvent::TaskAdded(t) | ClusterEvent::TaskUpdated(t) => {
                let key = (t.framework_id.clone(), t.id.clone());
                if matches!(e, ClusterEvent::TaskUpdated(_)) && !self.tasks.contains_key(&key) {
                    return Err(format!("update of a task not live: {}", t.id));
                }
                if t.state.is_terminal() {
                    self.tasks.remove(&key);
                } else {
                    self.tasks.insert(key, t.clone());
                }
            }
        }
        Ok(())
    }
}

/// Replays `ops` from an empty registry, checking after each op that the events keep a client
/// in step with the registry. Returns how many events the ops gave.
pub fn check_replay(ops: &[RegistryOp]) -> Result<usize, String> {
    let mut registry = Registry::default();
    let mut model = Model::default();
    let mut count = 0;
    for (i, op) in ops.iter().enumerate() {
        let events = op_events(&registry, op);
        count += events.len();
        for e in &events {
            model
                .apply(e)
                .map_err(|err| format!("op {i} {op:?}: {err}"))?;
        }
        registry.apply(op);
        let expected = Model::from_events(&state_events(&registry))?;
        if model != expected {
            return Err(format!(
                "after op {i} {op:?} the events give\n{model:#?}\nbut the registry holds\n{expected:#?}"
            ));
        }
    }
    Ok(count)
}

fn status(task: &str, state: TaskState) -> TaskStatus {
    TaskStatus::new(TaskId::new(task), state, StatusSource::Executor)
}

#[test]
fn every_kind_of_change_keeps_a_client_in_step_with_the_registry() {
    let a1 = AgentId::new("a1");
    let a2 = AgentId::new("a2");
    let f1 = FrameworkId::new("f1");
    let f2 = FrameworkId::new("f2");
    let admit = |id: &AgentId, host: &str| RegistryOp::AgentAdmitted {
        agent_id: id.clone(),
        info: agent_info(host, "cpus:4;mem:4GiB".parse().expect("resources")),
        principal: host.into(),
    };
    let add_fw = |id: &FrameworkId, name: &str| RegistryOp::FrameworkAdded {
        framework_id: id.clone(),
        info: framework_info(name, &["web"]),
        principal: Some(name.into()),
    };
    let launch = |f: &FrameworkId, a: &AgentId, ids: &[&str]| RegistryOp::TasksAdded {
        framework_id: f.clone(),
        agent_id: a.clone(),
        role: "web".into(),
        executor: None,
        tasks: ids.iter().map(|t| task(t, a, "cpus:1;mem:64MiB")).collect(),
        at_ms: 1,
    };
    let change = |f: &FrameworkId, t: &str, s: TaskState| RegistryOp::TaskStateChanged {
        framework_id: f.clone(),
        status: status(t, s),
    };
    let mut oom = status("t2", TaskState::Failed);
    oom.reason = Some(StatusReason::MemoryLimit);
    oom.exit_code = Some(137);
    let ops = vec![
        admit(&a1, "h1"),
        admit(&a2, "h2"),
        add_fw(&f1, "one"),
        add_fw(&f2, "two"),
        // A duplicate id within one launch and an unknown agent add nothing twice.
        launch(&f1, &a1, &["t1", "t2", "t1"]),
        launch(&f1, &AgentId::new("nowhere"), &["t9"]),
        launch(&f2, &a2, &["u1", "u2"]),
        change(&f1, "t1", TaskState::Starting),
        change(&f1, "t1", TaskState::Running),
        RegistryOp::TaskStateChanged {
            framework_id: f1.clone(),
            status: oom,
        },
        change(&f1, "t1", TaskState::Finished),
        // After its end a task changes no more.
        change(&f1, "t1", TaskState::Failed),
        change(&FrameworkId::new("unknown"), "t1", TaskState::Running),
        RegistryOp::AgentUnreachable {
            agent_id: a2.clone(),
            at_ms: 5,
        },
        RegistryOp::AgentUnreachable {
            agent_id: a2.clone(),
            at_ms: 6,
        },
        RegistryOp::AgentMarked {
            agent_id: a2.clone(),
            mark: AgentMark::Draining,
        },
        admit(&a2, "h2-renamed"),
        add_fw(&f1, "one-again"),
        launch(&f1, &a2, &["t3"]),
        // The agent's tasks end with it; then the framework's with it.
        RegistryOp::AgentRemoved {
            agent_id: a2.clone(),
        },
        launch(&f1, &a1, &["t4"]),
        RegistryOp::FrameworkRemoved {
            framework_id: f1.clone(),
            at_ms: 9,
        },
        // A removed framework does not come back.
        add_fw(&f1, "one-more"),
        RegistryOp::FrameworkRemoved {
            framework_id: FrameworkId::new("unknown"),
            at_ms: 9,
        },
    ];
    let count = check_replay(&ops).expect("events in step with the registry");
    // Each event above, counted by hand: 2 agents, 2 frameworks, 2 + 0 + 2 tasks added, 3
    // updates of t1/t2 plus t1's end, 1 unreachable, 1 mark, 1 re-admission, 1 framework
    // update, t3 added, u1, u2, t3 gone with a2, a2 removed, t4 added, t4 killed, f1 removed.
    assert_eq!(count, 2 + 2 + 4 + 4 + 1 + 1 + 1 + 1 + 1 + 4 + 1 + 2);
    let mut r = Registry::default();
    for op in &ops[..10] {
        r.apply(op);
    }
    let events = op_events(&r, &ops[10]);
    let [ClusterEvent::TaskUpdated(t)] = events.as_slice() else {
        panic!("one update: {events:?}");
    };
    assert_eq!((t.state, t.id.as_str()), (TaskState::Finished, "t1"));
    // The OOM kill's forensics travel with the event.
    let mut r = Registry::default();
    for op in &ops[..9] {
        r.apply(op);
    }
    let events = op_events(&r, &ops[9]);
    let [ClusterEvent::TaskUpdated(t)] = events.as_slice() else {
        panic!("one update: {events:?}");
    };
    assert_eq!(
        (t.reason, t.exit_code),
        (Some(StatusReason::MemoryLimit), Some(137))
    );
}
