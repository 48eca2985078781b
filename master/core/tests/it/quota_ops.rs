//! The operator side of quotas and reservations in the core: what is refused (and why), what
//! survives a leader change, and that a registry written before them still loads.

use crate::sim;
use master_core::testing::{Sim, Workload};
use master_core::{Registry, RegistryOp};
use proto::{
    ClientFrame, FrameworkEvent, OperatorCall, OperatorReply, Quota, ResourceLimit, Resources,
    Role, ServerFrame,
};
use std::time::Duration;

fn call(sim: &mut Sim, role: Role, c: OperatorCall) -> Result<(), String> {
    let s = sim.connect(role, "ops");
    sim.send(s, ClientFrame::Operator(c));
    let frames = sim.take(s);
    sim.disconnect(s);
    match frames.as_slice() {
        [ServerFrame::Operator(OperatorReply::Done)] => Ok(()),
        [ServerFrame::Error(e)] => Err(e.message.clone()),
        other => Err(format!("unexpected answer {other:?}")),
    }
}

fn quota(guarantee: &str, limit: &str) -> Option<Quota> {
    Some(Quota {
        guarantee: guarantee.parse().expect("guarantee"),
        limit: limit.parse().expect("limit"),
    })
}

#[test]
fn bad_quotas_and_reservations_are_refused_with_the_reason() {
    let mut sim = sim();
    let a = sim.add_agent("h1", "cpus(batch):2;cpus:2;mem:4GiB", true);
    sim.pump();
    let agent_id = sim.agent_id(a);
    let set = |role: &str, q| OperatorCall::SetQuota {
        role: role.into(),
        quota: q,
    };
    let e = call(
        &mut sim,
        Role::Operator,
        set("web", quota("cpus:4", "cpus:2")),
    )
    .unwrap_err();
    assert!(e.contains("exceeds the limit"), "{e}");
    let e = call(&mut sim, Role::Operator, set("", quota("", ""))).unwrap_err();
    assert!(e.contains("invalid role"), "{e}");
    let e = call(&mut sim, Role::Operator, set("web", None)).unwrap_err();
    assert!(e.contains("has no quota"), "{e}");
    // Frameworks may not set quotas: the session is closed naming the call.
    let fw = sim.connect(Role::Framework, "web");
    sim.send(fw, ClientFrame::Operator(set("web", quota("", "cpus:1"))));
    let reason = sim.closed.get(&fw).expect("refused and closed");
    assert!(reason.contains("operator SetQuota"), "{reason}");
    assert!(sim.master.registry().quotas().is_empty());

    let reserve = |role: &str, res: &str| OperatorCall::Reserve {
        agent_id: agent_id.clone(),
        role: role.into(),
        resources: res.parse().expect("resources"),
    };
    // 2 of the 4 cpus are reserved statically: 3 more cannot be.
    let e = call(&mut sim, Role::Operator, reserve("web", "cpus:3")).unwrap_err();
    assert!(e.contains("unreserved") && e.contains("cpus:2"), "{e}");
    let e = call(&mut sim, Role::Operator, reserve("*", "cpus:1")).unwrap_err();
    assert!(e.contains("'*'"), "{e}");
    let e = call(&mut sim, Role::Operator, reserve("web", "ports:[1-2]")).unwrap_err();
    assert!(e.contains("only cpus, mem and disk"), "{e}");
    call(&mut sim, Role::Operator, reserve("web", "cpus:2")).expect("reserve");
    let e = call(&mut sim, Role::Operator, reserve("web", "cpus:0.5")).unwrap_err();
    assert!(e.contains("unreserved"), "{e}");
    // The static part cannot be unreserved by an operator, nor more than is held.
    let e = call(
        &mut sim,
        Role::Operator,
        OperatorCall::Unreserve {
            agent_id: agent_id.clone(),
            role: "batch".into(),
            resources: Resources::new(1000, 0),
        },
    )
    .unwrap_err();
    assert!(e.contains("static"), "{e}");
    let unreserve = OperatorCall::Unreserve {
        agent_id: agent_id.clone(),
        role: "web".into(),
        resources: Resources::new(2000, 0),
    };
    call(&mut sim, Role::Operator, unreserve).expect("unreserve");
    assert!(sim
        .master
        .registry()
        .dynamic_reservations(&agent_id)
        .is_none());
}

#[test]
fn quotas_and_reservations_survive_a_leader_change() {
    let mut sim = sim();
    let a = sim.add_agent("h1", "cpus:4;mem:4GiB", true);
    sim.pump();
    let agent_id = sim.agent_id(a);
    call(
        &mut sim,
        Role::Operator,
        OperatorCall::SetQuota {
            role: "web".into(),
            quota: quota("cpus:1", "cpus:3"),
        },
    )
    .expect("quota");
    call(
        &mut sim,
        Role::Operator,
        OperatorCall::Reserve {
            agent_id: agent_id.clone(),
            role: "batch".into(),
            resources: "cpus:1;mem:1GiB".parse().expect("resources"),
        },
    )
    .expect("reserve");
    sim.leader_change(0, false);
    let state = sim.master.snapshot();
    let web = state.roles.iter().find(|r| r.name == "web").expect("web");
    assert_eq!(web.quota, quota("cpus:1", "cpus:3"));
    let agent = &state.agents[0];
    assert_eq!(agent.reserved["batch"], Resources::new(1000, 1 << 30));
    assert_eq!(
        agent.reserved_dynamic["batch"],
        Resources::new(1000, 1 << 30)
    );
    // Under the new leader the reservation is offered to batch alone, marked reserved.
    let w = sim.add_framework(
        "web",
        &["web"],
        Some(Workload::new("cpus:1;mem:64MiB", 100)),
    );
    // batch declines everything (its task fits nowhere); its inbox keeps what it was offered.
    let b = sim.add_framework(
        "batch",
        &["batch"],
        Some(Workload::new("cpus:100;mem:1GiB", 1)),
    );
    sim.advance(Duration::from_secs(5));
    let offers: Vec<_> = sim
        .take(b)
        .into_iter()
        .filter_map(|f| match f {
            ServerFrame::Framework(FrameworkEvent::Offers { offers }) => Some(offers),
            _ => None,
        })
        .flatten()
        .collect();
    assert!(
        offers
            .iter()
            .any(|o| o.reserved && o.resources.cpus_milli == 1000 && o.role == "batch"),
        "{offers:?}"
    );
    // web holds at most its limit of the 3 unreserved cpus, and never the reserved one.
    assert_eq!(sim.framework(w).running(), 3);
    let state = sim.master.snapshot();
    let web = state.roles.iter().find(|r| r.name == "web").expect("web");
    assert_eq!(web.used.cpus_milli, 3000);
}

#[test]
fn quotas_and_reservations_round_trip_through_a_snapshot() {
    let mut sim = sim();
    let a = sim.add_agent("h1", "cpus:4;mem:4GiB", true);
    sim.pump();
    let agent_id = sim.agent_id(a);
    let mut r = sim.master.registry().clone();
    r.apply(&RegistryOp::QuotaSet {
        role: "web".into(),
        quota: Some(Quota {
            guarantee: Resources::default(),
            limit: ResourceLimit {
                cpus_milli: Some(1000),
                ..ResourceLimit::default()
            },
        }),
    });
    r.apply(&RegistryOp::Reserved {
        agent_id: agent_id.clone(),
        role: "batch".into(),
        resources: Resources::new(1000, 0),
    });
    let bytes = rmp_serde::to_vec_named(&r).expect("encode");
    let back: Registry = rmp_serde::from_slice(&bytes).expect("decode");
    assert_eq!(back, r);
    assert_eq!(back.quotas().len(), 1);
    assert_eq!(
        back.dynamic_reservations(&agent_id)
            .map(|m| m["batch"].clone()),
        Some(Resources::new(1000, 0))
    );
    // A removed agent takes its reservations with it.
    r.apply(&RegistryOp::AgentRemoved {
        agent_id: agent_id.clone(),
    });
    assert!(r.dynamic_reservations(&agent_id).is_none());
}
