//! The session with the master: registration, backoff, heartbeats; and the periodic work
//! (limit drift checks, sandbox collection).

use agent_core::testing::{task, Harness};
use agent_core::{Action, ContainerRef};
use proto::{AgentToMaster, TaskId};
use std::time::Duration;

fn connects(h: &Harness) -> usize {
    h.actions(|a| matches!(a, Action::Connect { .. })).len()
}

fn heartbeats_sent(h: &Harness) -> usize {
    h.sent
        .iter()
        .filter(|m| matches!(m, AgentToMaster::Heartbeat))
        .count()
}

#[test]
fn the_first_registration_saves_the_agent_id() {
    let h = Harness::new("cpus:1;mem:1GiB");
    assert!(h.core.is_connected());
    assert_eq!(h.store.agent_id.as_ref().map(|a| a.as_str()), Some("a1"));
    assert_eq!(h.actions(|a| matches!(a, Action::SaveAgentId(_))).len(), 1);
}

#[test]
fn a_failed_registration_is_retried_with_growing_jittered_backoff() {
    let mut h = Harness::new("cpus:1;mem:1GiB");
    h.auto_register = false;
    h.disconnect();
    let mut gaps = Vec::new();
    for _ in 0..8 {
        let attempt = h.pending_connect.take().expect("a connection attempt");
        h.core.handle_connect_failed(h.now, attempt);
        let at = h.core.poll_timeout().expect("a retry scheduled");
        gaps.push(at.duration_since(h.now.at));
        h.advance(at.duration_since(h.now.at));
    }
    assert!(
        gaps[0] >= Duration::from_millis(150) && gaps[0] <= Duration::from_millis(250),
        "{gaps:?}"
    );
    assert!(gaps[3] > gaps[0] * 4, "{gaps:?}");
    assert!(
        gaps.iter().all(|g| *g <= Duration::from_millis(18_750)),
        "{gaps:?}"
    );
}

#[test]
fn a_lost_master_is_re_registered_at_once() {
    let mut h = Harness::new("cpus:1;mem:1GiB");
    let before = connects(&h);
    h.disconnect();
    assert_eq!(connects(&h), before + 1);
    assert!(h.core.is_connected());
}

#[test]
fn answers_to_an_old_attempt_are_ignored() {
    let mut h = Harness::new("cpus:1;mem:1GiB");
    h.auto_register = false;
    let old = h.core.attempt();
    h.disconnect();
    h.core
        .handle_registered(h.now, old, proto::AgentId::new("x"), Duration::from_secs(1));
    assert!(!h.core.is_connected());
    h.core.handle_disconnected(h.now, old);
    h.drain();
    assert_eq!(connects(&h), 2, "an old session's end started a connection");
}

#[test]
fn heartbeats_and_usage_reports_go_out_at_the_masters_interval() {
    let mut h = Harness::new("cpus:1;mem:1GiB");
    h.advance(Duration::from_secs(4));
    assert_eq!(heartbeats_sent(&h), 0);
    h.advance(Duration::from_secs(1));
    assert_eq!(heartbeats_sent(&h), 1);
    h.advance(Duration::from_secs(20));
    assert_eq!(heartbeats_sent(&h), 5);
    assert_eq!(
        h.actions(|a| matches!(a, Action::ReportUsage { always: true }))
            .len(),
        5
    );
}

#[test]
fn with_a_stretched_heartbeat_usage_is_still_checked_every_few_seconds_and_sent_when_news() {
    let mut h = Harness::new("cpus:1;mem:1GiB");
    h.auto_register = false;
    h.disconnect();
    let attempt = h.pending_connect.take().expect("a connection attempt");
    // A large cluster: the master stretched the heartbeat to a minute.
    h.core.handle_registered(
        h.now,
        attempt,
        proto::AgentId::new("a1"),
        Duration::from_secs(60),
    );
    h.drain();
    h.log.clear();
    let checks = |h: &Harness| {
        h.actions(|a| matches!(a, Action::ReportUsage { always: false }))
            .len()
    };
    let at_heartbeats = |h: &Harness| {
        h.actions(|a| matches!(a, Action::ReportUsage { always: true }))
            .len()
    };
    h.advance(agent_core::USAGE_CHECK_INTERVAL);
    assert_eq!((checks(&h), at_heartbeats(&h)), (1, 0));
    h.advance(Duration::from_secs(55));
    // Checks at 5, 10, ... 55 s; the heartbeat at 60 s reports unconditionally.
    assert_eq!((checks(&h), at_heartbeats(&h)), (11, 1));
    h.advance(agent_core::USAGE_CHECK_INTERVAL);
    assert_eq!((checks(&h), at_heartbeats(&h)), (12, 1));
}

#[test]
fn a_new_interval_from_the_master_mid_session_spaces_the_heartbeats() {
    let mut h = Harness::new("cpus:1;mem:1GiB");
    h.master(proto::MasterToAgent::Registered {
        agent_id: proto::AgentId::new("a1"),
        heartbeat_interval_ms: 60_000,
    });
    h.advance(Duration::from_secs(59));
    assert_eq!(heartbeats_sent(&h), 0);
    h.advance(Duration::from_secs(1));
    assert_eq!(heartbeats_sent(&h), 1);
    assert!(h.core.is_connected());
}

#[test]
fn limits_are_checked_at_start_and_every_thirty_seconds_and_drift_is_counted() {
    let mut h = Harness::new("cpus:4;mem:1GiB");
    h.run("f", vec![task("t1", "cpus:1")]);
    h.drift = 2;
    h.advance(Duration::from_secs(30));
    let checks: Vec<_> = h
        .log
        .iter()
        .filter_map(|a| match a {
            Action::CheckLimits { containers } => Some(containers.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(checks, [vec![ContainerRef::Task(TaskId::new("t1"))]]);
    assert_eq!(h.core.drifts_restored(), 2);
    h.advance(Duration::from_secs(30));
    assert_eq!(
        h.actions(|a| matches!(a, Action::CheckLimits { .. })).len(),
        2
    );
}

#[test]
fn old_sandboxes_are_collected_every_minute() {
    let mut h = Harness::new("cpus:1;mem:1GiB");
    h.advance(Duration::from_secs(59));
    assert_eq!(h.actions(|a| matches!(a, Action::CollectGarbage)).len(), 0);
    h.advance(Duration::from_secs(61));
    assert_eq!(h.actions(|a| matches!(a, Action::CollectGarbage)).len(), 2);
}

#[test]
fn the_core_asks_for_no_timer_it_does_not_need_to_fire() {
    let mut h = Harness::new("cpus:1;mem:1GiB");
    let t = h.core.poll_timeout().expect("a timer");
    assert!(t > h.now.at, "a timer already due after draining");
    h.advance(Duration::from_secs(3600));
    let t = h.core.poll_timeout().expect("a timer");
    assert!(t > h.now.at);
}
