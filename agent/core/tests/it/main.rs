//! The agent core driven by its harness (`agent_core::testing`): virtual clock, fake runtime,
//! in-memory checkpoints, crash injection.

mod executors;
mod kills;
mod lifecycle;
mod prop;
mod recovery;
mod session;
mod updates;

use agent_core::testing::Harness;
use agent_core::Action;
use proto::{AgentToMaster, StatusUuid, TaskState};

/// The uuid of the `n`-th (from 0) update of `id` the master received.
pub fn uuid(h: &Harness, id: &str, n: usize) -> StatusUuid {
    h.received[&proto::TaskId::new(id)][n]
        .uuid
        .clone()
        .expect("uuid")
}

/// A harness with task `t1` running under framework `f`.
pub fn running(resources: &str) -> Harness {
    let mut h = Harness::new(resources);
    h.run(
        "f",
        vec![agent_core::testing::task("t1", "cpus:1;mem:64MiB")],
    );
    h.ack_until_quiet();
    assert_eq!(h.states("t1"), [TaskState::Starting, TaskState::Running]);
    h
}

/// Status updates sent since action index `from` of the log.
pub fn sends_since(h: &Harness, from: usize) -> Vec<TaskState> {
    h.log[from..]
        .iter()
        .filter_map(|a| match a {
            Action::Send(AgentToMaster::StatusUpdate { status, .. }) => Some(status.state),
            _ => None,
        })
        .collect()
}
