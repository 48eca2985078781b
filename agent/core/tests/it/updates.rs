//! Reliable status updates: checkpointed before sent, one in flight per task, resent with
//! backoff until acknowledged and never after.

use crate::{sends_since, uuid};
use agent_core::testing::{task, Harness};
use agent_core::{Action, Exit};
use proto::{AgentToMaster, FrameworkId, MasterToAgent, StatusUuid, TaskId, TaskState};
use std::time::Duration;

#[test]
fn an_update_is_resent_with_backoff_until_acknowledged_and_never_after() {
    let mut h = Harness::new("cpus:4;mem:1GiB");
    h.run("f", vec![task("t1", "cpus:1")]);
    let starting = uuid(&h, "t1", 0);
    assert_eq!(h.sends_of(&starting), 1);
    h.advance(Duration::from_secs(9));
    assert_eq!(
        h.sends_of(&starting),
        1,
        "resent before the first retry is due"
    );
    h.advance(Duration::from_secs(1));
    assert_eq!(h.sends_of(&starting), 2, "10 s: first resend");
    h.advance(Duration::from_secs(19));
    assert_eq!(h.sends_of(&starting), 2);
    h.advance(Duration::from_secs(1));
    assert_eq!(h.sends_of(&starting), 3, "then 20 s later");
    h.master(MasterToAgent::AcknowledgeUpdate {
        framework_id: FrameworkId::new("f"),
        task_id: TaskId::new("t1"),
        uuid: starting.clone(),
    });
    h.advance(Duration::from_secs(3600));
    assert_eq!(h.sends_of(&starting), 3, "resent after its acknowledgement");
}

#[test]
fn the_backoff_is_capped() {
    let mut h = Harness::new("cpus:4;mem:1GiB");
    h.run("f", vec![task("t1", "cpus:1")]);
    let starting = uuid(&h, "t1", 0);
    h.advance(Duration::from_secs(3600));
    // Sent at 0, then 10, 30, 70, 150, 310, 630 s (the gap doubling from 10 s), then every
    // 600 s (the cap): 1,230, 1,830, 2,430, 3,030 s.
    assert_eq!(h.sends_of(&starting), 11);
}

#[test]
fn updates_of_a_task_go_one_at_a_time_in_sequence() {
    let mut h = Harness::new("cpus:4;mem:1GiB");
    h.run("f", vec![task("t1", "cpus:1")]);
    h.exit("t1", Exit::code(0));
    // Starting is in flight: Running and Finished wait for its acknowledgement.
    assert_eq!(h.states("t1"), [TaskState::Starting]);
    h.ack_all();
    assert_eq!(h.states("t1"), [TaskState::Starting, TaskState::Running]);
    h.ack_until_quiet();
    let seqs: Vec<u64> = h.received[&TaskId::new("t1")]
        .iter()
        .map(|s| s.seq)
        .collect();
    assert_eq!(seqs, [1, 2, 3]);
    assert_eq!(h.states("t1").last(), Some(&TaskState::Finished));
}

#[test]
fn an_acknowledgement_of_another_uuid_does_not_advance_the_stream() {
    let mut h = Harness::new("cpus:4;mem:1GiB");
    h.run("f", vec![task("t1", "cpus:1")]);
    h.master(MasterToAgent::AcknowledgeUpdate {
        framework_id: FrameworkId::new("f"),
        task_id: TaskId::new("t1"),
        uuid: StatusUuid::new("not-ours"),
    });
    assert_eq!(h.states("t1"), [TaskState::Starting]);
    assert_eq!(h.core.unacknowledged(), 2);
}

#[test]
fn updates_wait_while_disconnected_and_go_out_on_registration() {
    let mut h = Harness::new("cpus:4;mem:1GiB");
    h.auto_register = false;
    h.disconnect();
    let from = h.log.len();
    h.run("f", vec![task("t1", "cpus:1")]);
    h.advance(Duration::from_secs(60));
    assert!(sends_since(&h, from).is_empty(), "sent while disconnected");
    assert!(h.store.tasks[&TaskId::new("t1")].pending_updates.len() == 2);
    h.register();
    h.drain();
    assert_eq!(sends_since(&h, from), [TaskState::Starting]);
}

#[test]
fn a_reconnection_resends_the_head_at_once() {
    let mut h = Harness::new("cpus:4;mem:1GiB");
    h.run("f", vec![task("t1", "cpus:1")]);
    let starting = uuid(&h, "t1", 0);
    h.disconnect();
    assert_eq!(h.sends_of(&starting), 2, "not resent on the new session");
}

#[test]
fn a_checkpoint_precedes_every_send_of_an_update() {
    let mut h = Harness::new("cpus:4;mem:1GiB");
    h.run("f", vec![task("t1", "cpus:1")]);
    h.exit("t1", Exit::code(1));
    h.ack_until_quiet();
    // The harness asserts this on every send; check the order in the log as well.
    for (i, a) in h.log.iter().enumerate() {
        if let Action::Send(AgentToMaster::StatusUpdate { status, .. }) = a {
            let checkpointed = h.log[..i].iter().any(|b| {
                matches!(b, Action::CheckpointTask(r)
                if r.pending_updates.iter().any(|p| p.uuid == status.uuid))
            });
            assert!(
                checkpointed,
                "{:?} sent before its checkpoint",
                status.state
            );
        }
    }
}

#[test]
fn uuids_are_unique_across_runs_of_the_agent() {
    let mut h = Harness::new("cpus:4;mem:1GiB");
    h.run("f", vec![task("t1", "cpus:1")]);
    h.ack_until_quiet();
    h.restart();
    h.exit("t1", Exit::code(0));
    h.ack_until_quiet();
    let uuids: std::collections::BTreeSet<_> = h.received[&TaskId::new("t1")]
        .iter()
        .map(|s| s.uuid.clone())
        .collect();
    assert_eq!(uuids.len(), 3);
}

#[test]
fn resends_are_counted_and_first_sends_are_not() {
    let mut h = Harness::new("cpus:4;mem:1GiB");
    h.run("f", vec![task("t1", "cpus:1")]);
    let starting = uuid(&h, "t1", 0);
    assert_eq!((h.sends_of(&starting), h.core.status_resends()), (1, 0));
    h.advance(Duration::from_secs(10));
    h.advance(Duration::from_secs(20));
    assert_eq!((h.sends_of(&starting), h.core.status_resends()), (3, 2));
    h.ack_until_quiet();
    assert_eq!(
        h.core.status_resends(),
        2,
        "acknowledged at once: no more resends"
    );
    assert_eq!(h.core.unacknowledged(), 0);
}
