//! Agent liveness at scale: the heartbeat interval stretched as the cluster grows (Nomad's
//! rule), a connected agent judged by missed heartbeats, and one whose connection ended by the
//! unreachable timeout.

use crate::sim_with;
use master_core::testing::Sim;
use master_core::MasterConfig;
use proto::{AgentStatus, MasterToAgent};
use std::time::Duration;

/// The interval the agent on `session` was last told at registration.
fn told_interval(sim: &Sim, session: u64) -> Option<Duration> {
    sim.agents[&session]
        .received
        .iter()
        .rev()
        .find_map(|m| match m {
            MasterToAgent::Registered {
                heartbeat_interval_ms,
                ..
            } => Some(Duration::from_millis(*heartbeat_interval_ms)),
            _ => None,
        })
}

fn status(sim: &Sim, name: &str) -> Option<AgentStatus> {
    let snap = sim.master.snapshot();
    snap.agents
        .iter()
        .find(|a| a.hostname == name)
        .map(|a| a.status)
}

/// Five agents on a master that allows half a heartbeat per second: the fifth is told 10 s.
fn stretched_cluster() -> (Sim, Vec<u64>) {
    let mut sim = sim_with(MasterConfig {
        agent_heartbeat_interval: Duration::from_secs(2),
        agent_unreachable_timeout: Duration::from_secs(15),
        max_agent_heartbeats_per_second: 0.5,
        ..MasterConfig::default()
    });
    let sessions = (1..=5)
        .map(|i| sim.add_agent(&format!("n{i}"), "cpus:1;mem:1GiB", true))
        .collect();
    (sim, sessions)
}

#[test]
fn the_heartbeat_interval_stretches_as_the_cluster_grows() {
    let (mut sim, sessions) = stretched_cluster();
    let told: Vec<_> = sessions.iter().map(|s| told_interval(&sim, *s)).collect();
    let secs = |s| Some(Duration::from_secs(s));
    // One agent: 1 / 0.5 = 2 s, the configured floor; then 4, 6, 8, 10 s.
    assert_eq!(told, [secs(2), secs(4), secs(6), secs(8), secs(10)]);
    // An agent that re-registers (after a failover, a partition) is told the whole cluster's.
    let again = sim.reconnect_agent(sessions[0]);
    assert_eq!(told_interval(&sim, again), secs(10));
}

#[test]
fn agents_that_registered_early_are_told_the_grown_clusters_interval_at_their_next_heartbeat() {
    let (mut sim, sessions) = stretched_cluster();
    sim.advance(Duration::from_secs(3));
    let told: Vec<_> = sessions.iter().map(|s| told_interval(&sim, *s)).collect();
    let secs = |s| Some(Duration::from_secs(s));
    // n1 (2 s) and n2 (4 s) are told the cluster's 10 s; n3 and n4 are within half of it.
    assert_eq!(told, [secs(10), secs(10), secs(6), secs(8), secs(10)]);
}

#[test]
fn a_connected_agent_is_unreachable_after_three_missed_heartbeats_not_before() {
    let (mut sim, sessions) = stretched_cluster();
    // n5 heartbeats every 10 s: its limit is 30 s of silence, not the 15 s timeout.
    sim.agents.get_mut(&sessions[4]).unwrap().heartbeats = false;
    sim.advance(Duration::from_secs(25));
    assert_eq!(status(&sim, "n5"), Some(AgentStatus::Active));
    sim.advance(Duration::from_secs(6));
    assert_eq!(status(&sim, "n5"), Some(AgentStatus::Unreachable));
    assert_eq!(status(&sim, "n4"), Some(AgentStatus::Active));
}

#[test]
fn an_agent_whose_connection_ended_is_unreachable_after_the_timeout_whatever_its_interval() {
    let (mut sim, sessions) = stretched_cluster();
    sim.advance(Duration::from_secs(9));
    sim.disconnect(sessions[4]);
    sim.advance(Duration::from_secs(14));
    assert_eq!(status(&sim, "n5"), Some(AgentStatus::Active));
    sim.advance(Duration::from_secs(2));
    assert_eq!(status(&sim, "n5"), Some(AgentStatus::Unreachable));
}
