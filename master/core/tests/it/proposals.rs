//! A commit finds what its proposal waits for by the proposal's id, never by comparing ops.

use crate::sim;
use master_core::testing::framework_info;
use master_core::{Master, MasterConfig, Output, ProposalId, RegistryOp};
use proto::{ClientFrame, FrameworkCall, FrameworkEvent, PeerIdentity, Role, ServerFrame};
use std::time::Instant;

/// Subscribes framework `name` on `session`; returns the proposal it makes.
fn subscribe(m: &mut Master, now: Instant, session: u64, name: &str) -> (ProposalId, RegistryOp) {
    let peer = PeerIdentity {
        role: Role::Framework,
        name: name.to_owned(),
    };
    m.handle_connected(now, session, peer);
    let info = framework_info(name, &[]);
    m.handle_message(
        now,
        session,
        ClientFrame::Framework(FrameworkCall::Subscribe { info }),
    );
    let outputs: Vec<Output> = std::iter::from_fn(|| m.poll_output()).collect();
    match &outputs[..] {
        [Output::Propose { id, op }] => (*id, op.clone()),
        other => panic!("expected one proposal, got {other:?}"),
    }
}

/// The sessions that were told they are subscribed.
fn subscribed(m: &mut Master) -> Vec<u64> {
    std::iter::from_fn(|| m.poll_output())
        .filter_map(|o| match o {
            Output::Send {
                to,
                frame: ServerFrame::Framework(FrameworkEvent::Subscribed { .. }),
            } => Some(to),
            _ => None,
        })
        .collect()
}

/// An op equal to a proposal in flight but committed without its id (as another leader's
/// would be) runs no continuation; the proposal's own commit does.
#[test]
fn an_equal_op_without_the_id_is_not_the_proposal() {
    let mut sim = sim();
    sim.auto_commit = false;
    let fw = sim.add_framework("f", &[], None);
    assert_eq!(sim.held.len(), 1, "the subscription awaits its commit");
    let op = sim.held[0].clone();
    let now = sim.now;
    sim.master.handle_committed(now, op);
    sim.pump();
    assert!(
        sim.framework(fw).framework_id.is_none(),
        "subscribed by an op it did not propose"
    );
    sim.commit_held(1);
    assert_eq!(sim.framework_id(fw).as_str(), "m-F1");
}

/// Proposals commit in the order made: when a later one commits, the earlier ones still in
/// flight were lost and are forgotten; ids the core never issued find nothing.
#[test]
fn a_commit_runs_its_own_continuation_and_forgets_lost_earlier_ones() {
    let start = sim().now;
    let mut m = Master::new(MasterConfig::default(), start);
    let (id_a, _op_a) = subscribe(&mut m, start, 1, "a");
    let (id_b, op_b) = subscribe(&mut m, start, 2, "b");
    assert_ne!(id_a, id_b);
    assert_eq!(m.stats().in_flight_proposals, 2);

    m.handle_proposal_committed(start, ProposalId(id_b.0 + 1000), op_b.clone());
    assert_eq!(subscribed(&mut m), Vec::<u64>::new(), "an unknown id");
    assert_eq!(m.stats().in_flight_proposals, 2);

    m.handle_proposal_committed(start, id_b, op_b);
    assert_eq!(subscribed(&mut m), vec![2], "b's continuation, not a's");
    assert_eq!(m.stats().in_flight_proposals, 0, "a's proposal was lost");
}

/// Two cores (two leaderships, with their own id prefixes) never issue the same ids.
#[test]
fn cores_with_different_prefixes_issue_different_ids() {
    let start = sim().now;
    let mut ids = Vec::new();
    for prefix in ["m", "m1a2b", "m9f3c"] {
        let config = MasterConfig {
            id_prefix: prefix.to_owned(),
            ..MasterConfig::default()
        };
        let mut m = Master::new(config, start);
        ids.push(subscribe(&mut m, start, 1, "a").0);
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "{ids:?}");
}

/// Admission control: while `ALLOCATION_HOLD_WEIGHT` proposals are in flight (registrations,
/// of weight 1 each) no allocation
/// pass runs (no new offers, so no new launches); the held pass runs once half have committed,
/// and offers no more than the room left below the hold.
#[test]
fn allocation_waits_while_the_registry_is_behind() {
    use master_core::limits::ALLOCATION_HOLD_WEIGHT as HOLD;
    let mut sim = sim();
    let fw = sim.add_framework("f", &[], None);
    // Short steps: the registrations held here must not also hold allocation by their age
    // (`ALLOCATION_HOLD_LAG`, the next test).
    let batch = sim.master.config().allocation_batch;
    let step = batch * 2;
    sim.auto_commit = false;
    let agents = HOLD + 100;
    for i in 0..agents {
        sim.add_agent(&format!("a{i}"), "cpus:1;mem:1024", true);
    }
    assert_eq!(
        sim.held.len(),
        agents,
        "every registration awaits its commit"
    );

    // The first agent commits, which asks for a pass; HOLD + 99 are still in flight.
    sim.commit_held(1);
    sim.advance(step);
    assert_eq!(sim.master.stats().allocations_held, 1);
    assert_eq!(sim.framework(fw).offers_received, 0, "offered while held");

    // Committing down to just over half of HOLD keeps it held.
    let to_half = sim.held.len() - HOLD / 2 - 1;
    sim.commit_held(to_half);
    sim.advance(step);
    assert_eq!(
        sim.framework(fw).offers_received,
        0,
        "offered before half drained"
    );
    assert_eq!(sim.master.stats().allocation_passes, 0);

    // One more commit: the held pass runs and offers the room left below the hold (its
    // offers, unanswered, count toward it); the rest once they stop counting.
    sim.commit_held(1);
    sim.advance(batch);
    let registered = agents - sim.held.len();
    assert_eq!(registered, agents - HOLD / 2);
    assert_eq!(sim.framework(fw).offers_received as usize, HOLD / 2);
    // The rest commit (the ones still in flight would soon hold allocation by their age).
    sim.commit_held(sim.held.len());
    sim.advance(master_core::limits::ANSWER_GRACE * 2);
    assert_eq!(
        sim.framework(fw).offers_received as usize,
        agents,
        "one offer per agent"
    );
    assert!(sim.master.stats().allocations_held >= 2);
}

/// Admission control by age: while the oldest proposal in flight has waited
/// `ALLOCATION_HOLD_LAG` for its commit, no pass runs, however little is in flight; the held
/// pass runs when the registry has caught up.
#[test]
fn allocation_waits_while_the_oldest_proposal_is_late() {
    use master_core::limits::ALLOCATION_HOLD_LAG as LAG;
    let mut sim = sim();
    let fw = sim.add_framework("f", &[], None);
    sim.auto_commit = false;
    sim.add_agent("a1", "cpus:1;mem:1024", true);
    sim.add_agent("a2", "cpus:1;mem:1024", true);
    sim.advance(LAG + LAG / 2);
    // a1 commits and asks for a pass; a2's registration has waited past the lag.
    sim.commit_held(1);
    let batch = sim.master.config().allocation_batch;
    sim.advance(batch);
    assert_eq!(sim.framework(fw).offers_received, 0, "offered while late");
    assert_eq!(sim.master.stats().allocations_held, 1);
    sim.commit_held(1);
    sim.advance(batch);
    assert_eq!(
        sim.framework(fw).offers_received,
        2,
        "both agents once caught up"
    );
}

/// Admission control for launches: accepts whose tasks would take the registry changes in
/// flight past `MAX_LAUNCH_WEIGHT_IN_FLIGHT` (weighed by tasks) are refused with
/// `MasterOverloaded`; once the registry catches up the framework launches again.
#[test]
fn launches_past_the_in_flight_bound_are_refused_until_the_registry_catches_up() {
    use master_core::limits::MAX_LAUNCH_WEIGHT_IN_FLIGHT as MAX;
    use master_core::testing::Workload;
    use proto::TaskState;
    use std::time::Duration;
    let mut sim = sim();
    let per_offer = 1_000;
    let agents = MAX / per_offer + 8;
    let mut workload = Workload::new("cpus:0.001;mem:1", (agents * per_offer) as u64);
    workload.per_offer = per_offer;
    for i in 0..agents {
        sim.add_agent(&format!("a{i}"), "cpus:64;mem:1048576", true);
    }
    sim.auto_commit = false;
    let fw = sim.add_framework("f", &[], Some(workload));
    sim.commit_held(1);
    sim.advance(Duration::from_secs(1));
    let refused = |sim: &master_core::testing::Sim| {
        sim.framework(fw)
            .tasks
            .values()
            .filter(|s| matches!(s, TaskState::Lost | TaskState::Dropped))
            .count()
    };
    let held_tasks: usize = sim
        .held
        .iter()
        .map(|op| match op {
            master_core::RegistryOp::TasksAdded { tasks, .. } => tasks.len(),
            _ => 0,
        })
        .sum();
    assert!(held_tasks <= MAX, "{held_tasks} tasks in flight");
    assert_eq!(
        held_tasks + refused(&sim),
        agents * per_offer,
        "each task launched or refused"
    );
    assert!(refused(&sim) >= per_offer, "nothing refused");

    // The registry catches up: what the refused launches would have used is offered again.
    let offers_before = sim.framework(fw).offers_received;
    sim.auto_commit = true;
    let n = sim.held.len();
    sim.commit_held(n);
    sim.advance(Duration::from_secs(5));
    assert_eq!(
        sim.launches.len(),
        held_tasks,
        "the admitted launches committed"
    );
    assert!(
        sim.framework(fw).offers_received > offers_before,
        "no offer after the registry caught up"
    );
}
