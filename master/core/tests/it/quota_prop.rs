//! The DRF/quota property test: random quotas (a guarantee and a limit per role), static and
//! dynamic reservations, and random events (time, tasks ending, agents partitioned and back,
//! frameworks failing over, reservations made and returned) on hungry frameworks of three
//! roles. After every event: no role's allocation plus outstanding offers exceeds its limit, no
//! agent is over-committed, and every reserved offer went to the reserving role. After the
//! cluster settles: every role short of its guarantee (by at least one task) finds no agent
//! with room for its task (guarantees are met whenever free resources allow).

use crate::sim;
use master_core::testing::{framework_info, Sim, Workload};
use proptest::prelude::*;
use proto::{
    ClientFrame, OperatorCall, OperatorReply, Quota, ResourceLimit, Resources, Role, ServerFrame,
    TaskState,
};
use std::time::Duration;

const ROLES: [&str; 3] = ["a", "b", "c"];
/// Every task: one cpu and 512 MiB, so a role's holdings move in whole tasks.
const TASK: &str = "cpus:1;mem:512MiB";

#[derive(Clone, Debug)]
enum Event {
    Advance(u64),
    /// The n-th live task of an agent ends.
    Finish(usize, usize),
    Partition(usize),
    Reconnect(usize),
    FrameworkFailover(usize),
    /// The operator reserves (true) or returns (false) cpus (with memory for as many tasks)
    /// of an agent for a role.
    Reservation(usize, usize, u64, bool),
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        4 => (0u64..8_000).prop_map(Event::Advance),
        4 => (0usize..3, 0usize..8).prop_map(|(a, t)| Event::Finish(a, t)),
        1 => (0usize..3).prop_map(Event::Partition),
        1 => (0usize..3).prop_map(Event::Reconnect),
        1 => (0usize..3).prop_map(Event::FrameworkFailover),
        1 => (0usize..3, 0usize..3, 1u64..3, any::<bool>())
            .prop_map(|(a, r, c, on)| Event::Reservation(a, r, c, on)),
    ]
}

/// Per role: guarantee cpus (0 = none) and limit cpus (`None` = unlimited), limit >= guarantee.
fn quotas() -> impl Strategy<Value = Vec<(u64, Option<u64>)>> {
    prop::collection::vec(
        (0u64..5, prop::option::of(0u64..8)).prop_map(|(g, extra)| (g, extra.map(|e| g + e))),
        3,
    )
}

/// Agent cpus (2..8) and whether agent 0 reserves 2 cpus for role b statically.
fn agents() -> impl Strategy<Value = (Vec<u64>, bool)> {
    (prop::collection::vec(2u64..9, 3), any::<bool>())
}

fn operator(sim: &mut Sim, call: OperatorCall) -> bool {
    let op = sim.connect(Role::Operator, "ops");
    sim.send(op, ClientFrame::Operator(call));
    let done = sim.take(op) == vec![ServerFrame::Operator(OperatorReply::Done)];
    sim.disconnect(op);
    done
}

fn check_safety(sim: &Sim) -> Result<(), TestCaseError> {
    sim.check_no_overcommit().map_err(TestCaseError::fail)?;
    let state = sim.master.snapshot();
    for r in &state.roles {
        if let Some(q) = &r.quota {
            prop_assert!(
                q.limit.allows(&r.used.add(&r.offered)),
                "role {} holds {} + offered {} over its limit {}",
                r.name,
                r.used,
                r.offered,
                q.limit
            );
        }
    }
    for f in sim.frameworks.values() {
        for o in f.offers.values().filter(|o| o.reserved) {
            let agent = state.agents.iter().find(|a| a.id == o.agent_id);
            prop_assert!(
                agent.is_some_and(|a| a.reserved.contains_key(&o.role)),
                "offer {} of agent {} is marked reserved for {}, which reserves nothing there",
                o.id,
                o.agent_id,
                o.role
            );
            let roles = f.info.as_ref().map(|i| i.roles.clone()).unwrap_or_default();
            prop_assert!(
                roles.contains(&o.role),
                "{} (roles {roles:?}) got resources reserved for {}",
                f.name,
                o.role
            );
        }
    }
    Ok(())
}

/// After the cluster settled: a role short of its guarantee by a task finds no room for one.
fn check_guarantees(sim: &Sim) -> Result<(), TestCaseError> {
    let task: Resources = TASK.parse().expect("task resources");
    let state = sim.master.snapshot();
    for r in &state.roles {
        let Some(q) = &r.quota else { continue };
        let held = r.used.add(&r.offered);
        let short = held.cpus_milli + task.cpus_milli <= q.guarantee.cpus_milli;
        let may_grow = q.limit.allows(&held.add(&task));
        if !(short && may_grow) {
            continue;
        }
        for a in &state.agents {
            if a.status != proto::AgentStatus::Active {
                continue;
            }
            let mut free = a.total.saturating_sub(&a.used).saturating_sub(&a.offered);
            for (role, reserved) in &a.reserved {
                if role != &r.name {
                    // Other roles' reservations are not free for this role (an upper bound
                    // of what they leave: the reservation itself).
                    free = free.saturating_sub(reserved);
                }
            }
            prop_assert!(
                !free.contains(&Resources::new(task.cpus_milli, task.mem_bytes)),
                "role {} holds {held} under its guarantee {} while agent {} has {free} free",
                r.name,
                q.guarantee,
                a.id
            );
        }
    }
    Ok(())
}

fn run(
    quotas: Vec<(u64, Option<u64>)>,
    (cpus, static_reservation): (Vec<u64>, bool),
    events: Vec<Event>,
) -> Result<(), TestCaseError> {
    let mut sim = sim();
    for (role, (g, l)) in ROLES.iter().zip(&quotas) {
        let quota = Quota {
            guarantee: Resources::new(g * 1000, 0),
            limit: ResourceLimit {
                cpus_milli: l.map(|l| l * 1000),
                ..ResourceLimit::default()
            },
        };
        let call = OperatorCall::SetQuota {
            role: (*role).to_owned(),
            quota: Some(quota),
        };
        prop_assert!(operator(&mut sim, call), "quota set");
    }
    let mut agents: Vec<u64> = cpus
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let res = if i == 0 && static_reservation {
                format!("cpus(b):2;mem(b):1GiB;cpus:{c};mem:16GiB")
            } else {
                format!("cpus:{c};mem:16GiB")
            };
            sim.add_agent(&format!("h{i}"), &res, true)
        })
        .collect();
    let mut fws: Vec<u64> = ROLES
        .iter()
        .map(|role| {
            let mut w = Workload::new(TASK, 1_000);
            w.per_offer = 2;
            sim.add_framework_with(role, framework_info(role, &[role]), Some(w))
        })
        .collect();
    check_safety(&sim)?;
    for e in events {
        match e {
            Event::Advance(ms) => sim.advance(Duration::from_millis(ms)),
            Event::Finish(a, n) => {
                let live: Vec<_> = sim.agents[&agents[a]]
                    .tasks
                    .iter()
                    .filter(|(_, (_, s))| !s.is_terminal())
                    .map(|(k, _)| k.clone())
                    .collect();
                if !live.is_empty() {
                    sim.agent_update(agents[a], &live[n % live.len()], TaskState::Finished);
                    sim.pump();
                }
            }
            Event::Partition(a) => {
                if let Some(x) = sim.agents.get_mut(&agents[a]) {
                    x.heartbeats = false;
                }
            }
            Event::Reconnect(a) => agents[a] = sim.reconnect_agent(agents[a]),
            Event::FrameworkFailover(f) => {
                let info = framework_info(ROLES[f], &[ROLES[f]]);
                fws[f] = sim.reconnect_framework(fws[f], info);
            }
            Event::Reservation(a, r, c, on) => {
                let agent_id = sim.agent_id(agents[a]);
                let role = ROLES[r].to_owned();
                // Cpus with memory for as many tasks: an offer of reserved cpus alone would
                // fit no task (an offer is reserved or not, never both).
                let resources = Resources::new(c * 1000, c * (512 << 20));
                let call = if on {
                    OperatorCall::Reserve {
                        agent_id,
                        role,
                        resources,
                    }
                } else {
                    OperatorCall::Unreserve {
                        agent_id,
                        role,
                        resources,
                    }
                };
                // Refused when the agent has not that much unreserved (or reserved).
                operator(&mut sim, call);
            }
        }
        check_safety(&sim)?;
    }
    // Settle: every agent back, filters expired, several allocation passes.
    for a in agents.iter_mut() {
        *a = sim.reconnect_agent(*a);
    }
    for _ in 0..4 {
        sim.advance(Duration::from_secs(6));
        check_safety(&sim)?;
    }
    check_guarantees(&sim)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
    #[test]
    fn quotas_and_reservations_hold_over_random_events(
        quotas in quotas(),
        agents in agents(),
        events in prop::collection::vec(event(), 1..40),
    ) {
        run(quotas, agents, events)?;
    }
}
