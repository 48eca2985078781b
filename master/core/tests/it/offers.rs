//! Offers: filters, rescinds, invalid accepts.

use crate::{sim, sim_with};
use master_core::testing::task;
use master_core::MasterConfig;
use proto::{
    ClientFrame, Filters, FrameworkCall, OfferOperation, Resources, StatusReason, TaskState,
};
use std::time::Duration;

/// Agents `a{i}` of 1 CPU and 1 GiB for each `i` of `range`, registered.
fn add_small_agents(sim: &mut master_core::testing::Sim, range: std::ops::Range<usize>) {
    for i in range {
        sim.add_agent(&format!("a{i}"), "cpus:1;mem:1024", true);
    }
}

fn decline(sim: &mut master_core::testing::Sim, fw: u64, refuse: f64) {
    let ids: Vec<_> = sim.framework(fw).offers.keys().cloned().collect();
    assert!(!ids.is_empty(), "framework has offers to decline");
    sim.frameworks.get_mut(&fw).unwrap().offers.clear();
    sim.send(
        fw,
        ClientFrame::Framework(FrameworkCall::Decline {
            offer_ids: ids,
            filters: Some(Filters {
                refuse_seconds: Some(refuse),
            }),
        }),
    );
}

#[test]
fn decline_filter_holds_for_that_framework_only() {
    let mut sim = sim();
    sim.add_agent("h", "cpus:2;mem:2GiB", true);
    let f1 = sim.add_framework("f1", &[], None);
    let f2 = sim.add_framework("f2", &[], None);
    sim.advance(Duration::from_millis(10));
    assert_eq!(
        sim.framework(f1).offers.len(),
        1,
        "f1 (lower share, first id) gets it"
    );
    assert_eq!(sim.framework(f2).offers.len(), 0);
    decline(&mut sim, f1, 10.0);
    sim.advance(Duration::from_millis(10));
    assert_eq!(
        sim.framework(f2).offers.len(),
        1,
        "declined resources go to f2"
    );
    decline(&mut sim, f2, 100.0);
    sim.advance(Duration::from_millis(9_900));
    assert_eq!(
        sim.framework(f1).offers.len(),
        0,
        "not re-offered to f1 within 10 s"
    );
    sim.advance(Duration::from_millis(200));
    assert_eq!(
        sim.framework(f1).offers.len(),
        1,
        "re-offered to f1 after 10 s"
    );
    assert_eq!(sim.framework(f2).offers.len(), 0);
    // Revive clears f2's filter: its share is lower than... equal; the agent is offered to f1,
    // so decline briefly and check f2 gets it back long before 100 s.
    sim.send(
        f2,
        ClientFrame::Framework(FrameworkCall::Revive { roles: vec![] }),
    );
    decline(&mut sim, f1, 1000.0);
    sim.advance(Duration::from_millis(10));
    assert_eq!(
        sim.framework(f2).offers.len(),
        1,
        "revive cleared f2's filter"
    );
}

#[test]
fn unanswered_offer_is_rescinded_after_offer_timeout_and_reoffered() {
    let config = MasterConfig {
        offer_timeout: Some(Duration::from_secs(30)),
        ..MasterConfig::default()
    };
    let mut sim = sim_with(config);
    sim.add_agent("h", "cpus:2;mem:2GiB", true);
    let hoarder = sim.add_framework("hoarder", &[], None);
    sim.advance(Duration::from_millis(10));
    assert_eq!(sim.framework(hoarder).offers.len(), 1);
    let other = sim.add_framework("other", &[], None);
    sim.advance(Duration::from_secs(29));
    assert_eq!(sim.framework(hoarder).rescinds, 0);
    assert_eq!(
        sim.framework(other).offers.len(),
        0,
        "resources are held by the offer"
    );
    sim.advance(Duration::from_millis(1_010));
    assert_eq!(sim.framework(hoarder).rescinds, 1, "rescinded at 30 s");
    assert_eq!(sim.framework(hoarder).offers.len(), 0);
    assert_eq!(
        sim.framework(other).offers.len(),
        1,
        "re-offered to the other framework"
    );
    sim.check_no_overcommit().unwrap();
}

#[test]
fn offer_timeout_reoffers_to_the_same_framework_when_alone() {
    let mut sim = sim();
    sim.add_agent("h", "cpus:2;mem:2GiB", true);
    let fw = sim.add_framework("alone", &[], None);
    sim.advance(Duration::from_secs(31));
    assert_eq!(sim.framework(fw).rescinds, 1);
    sim.advance(Duration::from_secs(6));
    assert_eq!(
        sim.framework(fw).offers.len(),
        1,
        "re-offered after the refusal window"
    );
    assert_eq!(sim.framework(fw).offers_received, 2);
}

fn setup_two_agents() -> (
    master_core::testing::Sim,
    u64,
    proto::AgentId,
    proto::AgentId,
) {
    let mut sim = sim();
    let a1 = sim.add_agent("h1", "cpus:2;mem:2GiB", true);
    let a2 = sim.add_agent("h2", "cpus:2;mem:2GiB", true);
    let (a1, a2) = (sim.agent_id(a1), sim.agent_id(a2));
    let fw = sim.add_framework("f", &[], None);
    sim.advance(Duration::from_millis(10));
    assert_eq!(sim.framework(fw).offers.len(), 2);
    (sim, fw, a1, a2)
}

fn last_status(sim: &master_core::testing::Sim, fw: u64) -> proto::TaskStatus {
    sim.framework(fw)
        .updates
        .last()
        .cloned()
        .expect("an update")
}

fn accept(
    sim: &mut master_core::testing::Sim,
    fw: u64,
    offers: Vec<proto::OfferId>,
    tasks: Vec<proto::TaskInfo>,
) {
    sim.send(
        fw,
        ClientFrame::Framework(FrameworkCall::Accept {
            offer_ids: offers,
            operations: vec![OfferOperation::Launch { tasks }],
            filters: Some(Filters {
                refuse_seconds: Some(0.0),
            }),
        }),
    );
}

#[test]
fn invalid_accepts_get_an_error_status_and_leak_nothing() {
    let (mut sim, fw, a1, _a2) = setup_two_agents();
    let offers: Vec<_> = sim.framework(fw).offers.values().cloned().collect();
    // Offers of two agents.
    accept(
        &mut sim,
        fw,
        offers.iter().map(|o| o.id.clone()).collect(),
        vec![task("x", &a1, "cpus:1;mem:1GiB")],
    );
    let s = last_status(&sim, fw);
    assert_eq!(
        (s.state, s.reason),
        (TaskState::Lost, Some(StatusReason::InvalidOffers))
    );
    assert!(s.message.unwrap().contains("more than one agent"));
    // Unknown (already used) offer.
    accept(
        &mut sim,
        fw,
        vec![offers[0].id.clone()],
        vec![task("y", &a1, "cpus:1;mem:1GiB")],
    );
    let s = last_status(&sim, fw);
    assert_eq!(
        (s.state, s.reason),
        (TaskState::Lost, Some(StatusReason::InvalidOffers))
    );
    // Both offers came back and are re-offered.
    sim.frameworks.get_mut(&fw).unwrap().offers.clear();
    sim.advance(Duration::from_millis(10));
    let offers: Vec<_> = sim.framework(fw).offers.values().cloned().collect();
    assert_eq!(offers.len(), 2, "invalid accepts leaked no resources");
    let o1 = offers.iter().find(|o| o.agent_id == a1).unwrap().clone();
    // More than offered, a duplicate id and an empty command; one good task.
    let mut empty = task("e", &a1, "cpus:0.1;mem:10MiB");
    empty.command.value.clear();
    accept(
        &mut sim,
        fw,
        vec![o1.id.clone()],
        vec![
            task("big", &a1, "cpus:3;mem:1GiB"),
            task("ok", &a1, "cpus:1;mem:1GiB"),
            task("ok", &a1, "cpus:0.5;mem:1MiB"),
            empty,
        ],
    );
    let f = sim.framework(fw);
    let by_id = |id: &str| {
        f.updates
            .iter()
            .rev()
            .find(|u| u.task_id.as_str() == id)
            .cloned()
            .unwrap()
    };
    assert_eq!(by_id("big").state, TaskState::Error);
    assert_eq!(by_id("big").reason, Some(StatusReason::TaskInvalid));
    assert_eq!(by_id("e").state, TaskState::Error);
    assert_eq!(by_id("ok").state, TaskState::Running, "the valid task runs");
    assert!(
        f.updates
            .iter()
            .any(|u| u.task_id.as_str() == "ok" && u.state == TaskState::Error),
        "duplicate id refused"
    );
    let state = sim.master.snapshot();
    let agent = state.agents.iter().find(|a| a.id == a1).unwrap();
    assert_eq!(agent.used, Resources::new(1000, 1 << 30));
    sim.check_no_overcommit().unwrap();
}

#[test]
fn mesos_paper_example_leftover_goes_to_a_second_framework() {
    let mut sim = sim();
    let agent = sim.add_agent("h", "cpus:4;mem:4GiB", true);
    let a = sim.agent_id(agent);
    let f1 = sim.add_framework("f1", &[], None);
    sim.advance(Duration::from_millis(10));
    let offer = sim.framework(f1).offers.values().next().unwrap().clone();
    sim.frameworks.get_mut(&f1).unwrap().offers.clear();
    accept(
        &mut sim,
        f1,
        vec![offer.id],
        vec![
            task("t1", &a, "cpus:2;mem:1GiB"),
            task("t2", &a, "cpus:1;mem:2GiB"),
        ],
    );
    let f2 = sim.add_framework("f2", &[], None);
    sim.advance(Duration::from_millis(10));
    let o2: Vec<_> = sim.framework(f2).offers.values().cloned().collect();
    assert_eq!(o2.len(), 1);
    assert_eq!(
        o2[0].resources,
        Resources::new(1000, 1 << 30),
        "the remaining <1 cpu, 1 GiB>"
    );
}

#[test]
fn offer_ids_only_in_the_exact_generated_form_name_an_offer() {
    let (mut sim, fw, a1, _a2) = setup_two_agents();
    let offer = sim
        .framework(fw)
        .offers
        .values()
        .find(|o| o.agent_id == a1)
        .cloned()
        .unwrap();
    let (prefix, n) = offer.id.as_str().rsplit_once("-O").unwrap();
    // Same number, other spellings: unknown offers.
    for bad in [
        format!("{prefix}-O0{n}"),
        format!("{prefix}-O+{n}"),
        format!("x{prefix}-O{n}"),
        format!("{prefix}-A{n}"),
        format!("{prefix}-O"),
    ] {
        accept(
            &mut sim,
            fw,
            vec![proto::OfferId::new(bad.clone())],
            vec![task("t", &a1, "cpus:1;mem:1GiB")],
        );
        let s = last_status(&sim, fw);
        assert_eq!(
            (s.state, s.reason),
            (TaskState::Lost, Some(StatusReason::InvalidOffers)),
            "{bad}"
        );
        assert!(s.message.unwrap().contains("unknown"), "{bad}");
    }
    // The real id still works.
    accept(
        &mut sim,
        fw,
        vec![offer.id],
        vec![task("t", &a1, "cpus:1;mem:1GiB")],
    );
    assert_eq!(last_status(&sim, fw).state, TaskState::Running);
}

#[test]
fn a_removed_agents_filters_do_not_follow_its_index_to_a_new_agent() {
    let mut sim = sim();
    let old = sim.add_agent("old", "cpus:2;mem:2GiB", true);
    let old_id = sim.agent_id(old);
    let fw = sim.add_framework("f", &[], None);
    sim.advance(Duration::from_millis(10));
    decline(&mut sim, fw, 1000.0);
    let now = sim.now;
    sim.master.handle_committed(
        now,
        master_core::RegistryOp::AgentRemoved { agent_id: old_id },
    );
    sim.pump();
    // The new agent takes the removed one's slot in the master's tables.
    let new = sim.add_agent("new", "cpus:2;mem:2GiB", true);
    sim.advance(Duration::from_millis(10));
    let offers: Vec<_> = sim.framework(fw).offers.values().cloned().collect();
    assert_eq!(
        offers.len(),
        1,
        "the new agent is offered despite the old filter"
    );
    assert_eq!(offers[0].agent_id, sim.agent_id(new));
}

#[test]
fn filters_of_every_framework_stop_offers_until_more_is_free_than_was_refused() {
    let mut sim = sim();
    let h = sim.add_agent("h", "cpus:4;mem:4GiB", true);
    let a = sim.agent_id(h);
    let f1 = sim.add_framework("f1", &[], None);
    let f2 = sim.add_framework("f2", &[], None);
    sim.advance(Duration::from_millis(10));
    // f1 runs a task on half the agent and filters the rest for long.
    let offer = sim.framework(f1).offers.values().next().unwrap().clone();
    sim.frameworks.get_mut(&f1).unwrap().offers.clear();
    sim.send(
        f1,
        ClientFrame::Framework(FrameworkCall::Accept {
            offer_ids: vec![offer.id],
            operations: vec![OfferOperation::Launch {
                tasks: vec![task("t1", &a, "cpus:2;mem:2GiB")],
            }],
            filters: Some(Filters {
                refuse_seconds: Some(1000.0),
            }),
        }),
    );
    sim.advance(Duration::from_millis(10));
    // f2 declines the other half for long: now every framework filters the agent.
    decline(&mut sim, f2, 1000.0);
    sim.advance(Duration::from_secs(1));
    assert!(sim.framework(f1).offers.is_empty() && sim.framework(f2).offers.is_empty());
    // The task ends: more is free than either filter refused, so the agent is offered again.
    let key = master_core::TaskKey {
        framework_id: sim.framework_id(f1),
        task_id: "t1".into(),
    };
    sim.agent_update(h, &key, TaskState::Finished);
    sim.pump();
    sim.advance(Duration::from_millis(10));
    let offered: Vec<Resources> = [f1, f2]
        .iter()
        .flat_map(|f| {
            sim.framework(*f)
                .offers
                .values()
                .map(|o| o.resources.clone())
        })
        .collect();
    assert_eq!(offered, vec![Resources::new(4000, 4 << 30)]);
}

#[test]
fn reported_pressure_rides_on_the_next_offer_and_in_the_snapshot() {
    use proto::{AgentToMaster, NodePressure};
    let mut sim = sim();
    let hot = sim.add_agent("hot", "cpus:2;mem:2GiB", true);
    sim.add_agent("cool", "cpus:2;mem:2GiB", true);
    let fw = sim.add_framework("f", &[], None);
    sim.advance(Duration::from_millis(10));
    let hot_id = sim.agent_id(hot);
    let offers: Vec<_> = sim.framework(fw).offers.values().cloned().collect();
    assert_eq!(offers.len(), 2);
    assert!(
        offers.iter().all(|o| o.pressure.is_none()),
        "nothing reported yet"
    );

    let pressure = NodePressure {
        cpu_some_avg10: 250,
        memory_some_avg10: 41,
        memory_full_avg10: 10,
        io_some_avg10: 1200,
        io_full_avg10: u32::MAX, // a peer's nonsense is clamped to 100 %
    };
    let usage = |pressure| {
        ClientFrame::Agent(AgentToMaster::Usage {
            tasks: vec![],
            pressure,
        })
    };
    sim.send(hot, usage(Some(pressure)));
    let want = NodePressure {
        io_full_avg10: NodePressure::MAX,
        ..pressure
    };
    let state = sim.master.snapshot();
    let by_id = |s: &proto::ClusterState, id: &proto::AgentId| {
        s.agents
            .iter()
            .find(|a| &a.id == id)
            .map(|a| a.pressure)
            .expect("agent in the snapshot")
    };
    assert_eq!(by_id(&state, &hot_id), Some(want));
    assert_eq!(
        state.agents.iter().filter(|a| a.pressure.is_none()).count(),
        1,
        "the other agent reported nothing"
    );

    decline(&mut sim, fw, 0.0);
    sim.advance(Duration::from_millis(1_000));
    let offers: Vec<_> = sim.framework(fw).offers.values().cloned().collect();
    assert_eq!(offers.len(), 2, "both agents re-offered");
    for o in &offers {
        let expected = (o.agent_id == hot_id).then_some(want);
        assert_eq!(o.pressure, expected, "{}", o.agent_id);
    }

    // A report without pressure (PSI became unreadable) clears it.
    sim.send(hot, usage(None));
    assert_eq!(by_id(&sim.master.snapshot(), &hot_id), None);
}

#[test]
fn the_stats_count_offers_made_declined_and_rescinded() {
    let config = MasterConfig {
        offer_timeout: Some(Duration::from_secs(30)),
        ..MasterConfig::default()
    };
    let mut sim = sim_with(config);
    sim.add_agent("h", "cpus:2;mem:2GiB", true);
    let fw = sim.add_framework("f", &[], None);
    sim.advance(Duration::from_millis(10));
    let s = sim.master.stats();
    assert_eq!(
        (s.offers_made, s.offers_declined, s.offers_rescinded),
        (1, 0, 0)
    );
    decline(&mut sim, fw, 0.0);
    sim.advance(Duration::from_millis(10));
    let s = sim.master.stats();
    assert_eq!(
        (s.offers_made, s.offers_declined, s.offers_rescinded),
        (2, 1, 0)
    );
    assert_eq!(s.outstanding_offers, 1, "the resources were offered again");
    sim.advance(Duration::from_secs(31));
    assert_eq!(sim.framework(fw).rescinds, 1);
    let s = sim.master.stats();
    assert_eq!((s.offers_declined, s.offers_rescinded), (1, 1), "{s:?}");
}

/// A pass offers at most `MAX_AGENTS_PER_PASS` agents; the next one offers the rest, so a
/// burst of offers (and of the accepts that follow) stays bounded at any cluster size. The
/// offers a pass made count toward admission control until they are answered, for at most
/// `ANSWER_GRACE`: a framework that holds its offers delays the next window by that much.
#[test]
fn a_pass_offers_a_window_of_agents_and_the_next_pass_the_rest() {
    use master_core::limits::{ALLOCATION_HOLD_WEIGHT, ANSWER_GRACE, MAX_AGENTS_PER_PASS as MAX};
    const {
        assert!(
            MAX >= ALLOCATION_HOLD_WEIGHT,
            "one window's offers hold the next pass"
        )
    };
    let mut sim = crate::sim();
    let agents = MAX + 500;
    add_small_agents(&mut sim, 0..agents);
    let fw = sim.add_framework("f", &[], None);
    let batch = sim.master.config().allocation_batch;
    sim.advance(batch);
    assert_eq!(
        sim.framework(fw).offers_received as usize,
        MAX,
        "the first pass"
    );
    sim.advance(batch);
    assert_eq!(
        sim.framework(fw).offers_received as usize,
        MAX,
        "the next pass waits while the first pass's offers are unanswered"
    );
    assert_eq!(sim.master.stats().allocations_held, 1);
    sim.advance(ANSWER_GRACE);
    assert_eq!(
        sim.framework(fw).offers_received as usize,
        agents,
        "the next pass offers the agents the first left out once its offers stop counting"
    );
    assert_eq!(sim.master.stats().allocation_passes, 2);
}

/// Offers answered while a pass is held for them let it run one allocation batch later,
/// not when they would have stopped counting (`ANSWER_GRACE`): news moves a later pass in.
#[test]
fn answers_during_a_hold_let_the_held_pass_run_at_once() {
    use master_core::limits::{ANSWER_GRACE, MAX_AGENTS_PER_PASS as MAX};
    let mut sim = crate::sim();
    let agents = MAX + 100;
    add_small_agents(&mut sim, 0..agents);
    let fw = sim.add_framework("f", &[], None);
    let batch = sim.master.config().allocation_batch;
    sim.advance(batch * 2);
    assert_eq!(sim.framework(fw).offers_received as usize, MAX);
    assert_eq!(
        sim.master.stats().allocations_held,
        1,
        "the next window waits"
    );
    let ids: Vec<_> = sim.framework(fw).offers.keys().cloned().collect();
    sim.frameworks.get_mut(&fw).unwrap().offers.clear();
    for chunk in ids.chunks(1_000) {
        let call = FrameworkCall::Decline {
            offer_ids: chunk.to_vec(),
            filters: Some(Filters {
                refuse_seconds: Some(3600.0),
            }),
        };
        sim.send(fw, ClientFrame::Framework(call));
    }
    sim.advance(batch * 2);
    assert!(batch * 4 < ANSWER_GRACE);
    assert_eq!(
        sim.framework(fw).offers_received as usize,
        agents,
        "the rest, once the first window was answered"
    );
}

/// A pass offers no more agents than the room left below the hold, so the registry is never
/// more than `ALLOCATION_HOLD_WEIGHT` behind because of offers.
#[test]
fn a_pass_offers_only_the_room_left_below_the_hold() {
    use master_core::limits::{ALLOCATION_HOLD_WEIGHT as HOLD, ANSWER_GRACE};
    let mut sim = crate::sim();
    let first = HOLD / 2 + 100;
    add_small_agents(&mut sim, 0..first);
    let fw = sim.add_framework("f", &[], None);
    let batch = sim.master.config().allocation_batch;
    sim.advance(batch);
    assert_eq!(sim.framework(fw).offers_received as usize, first);
    add_small_agents(&mut sim, first..2 * first);
    sim.advance(batch);
    assert_eq!(
        sim.framework(fw).offers_received as usize,
        HOLD,
        "the second pass filled the room below the hold, no more"
    );
    sim.advance(ANSWER_GRACE);
    assert_eq!(sim.framework(fw).offers_received as usize, 2 * first);
}

/// Offers answered free the hold at once: a framework that declines a window's offers gets
/// the next window one allocation batch later, not after `ANSWER_GRACE`.
#[test]
fn answered_offers_let_the_next_window_go_at_once() {
    use master_core::limits::{ANSWER_GRACE, MAX_AGENTS_PER_PASS as MAX};
    let mut sim = crate::sim();
    let agents = MAX + 500;
    add_small_agents(&mut sim, 0..agents);
    let mut workload = master_core::testing::Workload::new("cpus:2;mem:1", 1);
    workload.decline_refuse = 3600.0;
    let fw = sim.add_framework("f", &[], Some(workload));
    let batch = sim.master.config().allocation_batch;
    sim.advance(batch * 3);
    assert!(batch * 3 < ANSWER_GRACE);
    assert_eq!(sim.framework(fw).offers_received as usize, agents);
}

/// Windowed passes stop after one sweep over every agent: agents that every framework has
/// filtered are not looked at again until something changes.
#[test]
fn windowed_passes_stop_after_one_sweep_when_nothing_changes() {
    use master_core::limits::MAX_AGENTS_PER_PASS as MAX;
    use std::time::Duration;
    let mut sim = crate::sim();
    let agents = 2 * MAX + 100;
    add_small_agents(&mut sim, 0..agents);
    // A framework that declines everything for an hour.
    let mut workload = master_core::testing::Workload::new("cpus:2;mem:1", 1);
    workload.decline_refuse = 3600.0;
    let fw = sim.add_framework("f", &[], Some(workload));
    sim.advance(Duration::from_secs(10));
    assert_eq!(sim.framework(fw).offers_received as usize, agents);
    // Each window's declines are news (a pass of their own); then all is filtered.
    let passes = sim.master.stats().allocation_passes;
    assert!(passes < 10, "{passes} passes");
    sim.advance(Duration::from_secs(10));
    assert_eq!(
        sim.master.stats().allocation_passes,
        passes,
        "passes went on with no news"
    );
}
