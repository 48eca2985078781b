//! The authorization policy: which roles a framework principal may subscribe with and which
//! users its tasks may run as; changed by operator calls, seeded from config, replicated.

use crate::{sim, sim_with};
use master_core::testing::{task, Sim};
use master_core::SessionId;
use master_core::{MasterConfig, RegistryOp};
use proto::{
    AccessRule, ClientFrame, FrameworkCall, OfferOperation, OperatorCall, OperatorReply, Role,
    ServerFrame, StatusReason, TaskInfo, TaskState,
};
use std::time::Duration;

fn rule(roles: &[&str], users: &[&str]) -> AccessRule {
    AccessRule {
        roles: roles.iter().map(|s| (*s).to_owned()).collect(),
        users: users.iter().map(|s| (*s).to_owned()).collect(),
    }
}

fn set_policy(sim: &mut Sim, principal: &str, r: Option<AccessRule>) {
    let op = sim.connect(Role::Operator, "ops");
    let call = OperatorCall::SetPolicy {
        principal: principal.to_owned(),
        rule: r,
    };
    sim.send(op, ClientFrame::Operator(call));
    assert_eq!(
        sim.take(op),
        vec![ServerFrame::Operator(OperatorReply::Done)],
        "SetPolicy is answered Done once committed"
    );
}

fn subscribed(sim: &Sim, s: SessionId) -> bool {
    sim.framework(s).framework_id.is_some() && !sim.closed.contains_key(&s)
}

#[test]
fn a_principal_may_use_only_star_and_its_own_role_by_default() {
    let mut sim = sim();
    let prod = sim.add_framework("batch", &["prod"], None);
    let reason = sim.closed.get(&prod).expect("refused and closed").clone();
    assert!(
        reason.contains("principal 'batch'")
            && reason.contains("role 'prod'")
            && reason.contains("default rule"),
        "{reason}"
    );
    assert!(!sim
        .committed
        .iter()
        .any(|op| matches!(op, RegistryOp::FrameworkAdded { .. })));
    // One refused role refuses the subscription, even beside allowed ones.
    let mixed = sim.add_framework("batch", &["*", "prod"], None);
    assert!(sim.closed.contains_key(&mixed));
    for roles in [&[][..], &["*"][..], &["batch"][..], &["*", "batch"][..]] {
        let s = sim.add_framework("batch", roles, None);
        assert!(subscribed(&sim, s), "roles {roles:?} must be allowed");
    }
}

#[test]
fn an_operator_rule_lets_a_principal_use_a_role_and_survives_a_leader_change() {
    let mut sim = sim();
    set_policy(&mut sim, "batch", Some(rule(&["prod"], &[])));
    let s = sim.add_framework("batch", &["prod"], None);
    assert!(subscribed(&sim, s));
    // The rule replaces the default for that principal: `*` is no longer its to use.
    let star = sim.add_framework("batch", &["*"], None);
    let reason = sim.closed.get(&star).expect("refused");
    assert!(reason.contains("policy rule for 'batch'"), "{reason}");
    // Others keep the default rule.
    let web = sim.add_framework("web", &["prod"], None);
    assert!(sim.closed.contains_key(&web));

    sim.leader_change(0, false);
    assert!(sim.master.registry().policy().contains_key("batch"));
    let again = sim.add_framework("batch", &["prod"], None);
    assert!(subscribed(&sim, again), "the new leader keeps the rule");
    let op = sim.connect(Role::Operator, "ops");
    sim.send(op, ClientFrame::Operator(OperatorCall::GetPolicy));
    let frames = sim.take(op);
    let [ServerFrame::Operator(OperatorReply::Policy(view))] = frames.as_slice() else {
        panic!("expected a policy, got {frames:?}");
    };
    assert!(view.configured);
    assert_eq!(view.rules.get("batch"), Some(&rule(&["prod"], &[])));

    // Unset: back to the default rule.
    set_policy(&mut sim, "batch", None);
    let refused = sim.add_framework("batch", &["prod"], None);
    assert!(sim.closed.contains_key(&refused));
}

/// Subscribes `name`, waits for an offer and accepts it with `t` (on the offer's agent).
fn launch(sim: &mut Sim, fw: SessionId, mut t: TaskInfo, executor_user: Option<&str>) {
    sim.advance(Duration::from_millis(20));
    let offer = sim
        .framework(fw)
        .offers
        .values()
        .next()
        .cloned()
        .expect("an offer");
    t.agent_id = offer.agent_id.clone();
    let operations = match executor_user {
        None => vec![OfferOperation::Launch { tasks: vec![t] }],
        Some(u) => {
            let mut command = proto::CommandInfo::shell("exec-run");
            command.user = Some(u.to_owned());
            let executor = proto::ExecutorInfo {
                executor_id: proto::ExecutorId::new("e1"),
                command,
                resources: "cpus:0.1;mem:32MiB".parse().unwrap(),
                container: Default::default(),
            };
            vec![OfferOperation::LaunchGroup {
                executor,
                tasks: vec![t],
            }]
        }
    };
    sim.send(
        fw,
        ClientFrame::Framework(FrameworkCall::Accept {
            offer_ids: vec![offer.id.clone()],
            operations,
            filters: Some(proto::Filters {
                refuse_seconds: Some(0.0),
            }),
        }),
    );
    if let Some(f) = sim.frameworks.get_mut(&fw) {
        f.offers.remove(&offer.id);
    }
    sim.pump();
}

fn task_as(id: &str, user: Option<&str>) -> TaskInfo {
    let mut t = task(id, &proto::AgentId::new(""), "cpus:1;mem:64MiB");
    t.command.user = user.map(str::to_owned);
    t
}

fn last_status(sim: &Sim, fw: SessionId, id: &str) -> proto::TaskStatus {
    sim.framework(fw)
        .updates
        .iter()
        .rev()
        .find(|u| u.task_id.as_str() == id)
        .cloned()
        .unwrap_or_else(|| panic!("no update for {id}"))
}

#[test]
fn a_launch_as_a_user_not_allowed_is_a_task_error_and_nothing_runs() {
    let mut sim = sim();
    sim.add_agent("host1", "cpus:4;mem:4GiB", true);
    let fw = sim.add_framework("batch", &[], None);
    for (id, user) in [("as-root", "root"), ("as-daemon", "daemon")] {
        launch(&mut sim, fw, task_as(id, Some(user)), None);
        let s = last_status(&sim, fw, id);
        assert_eq!(s.state, TaskState::Error, "{s:?}");
        assert_eq!(s.reason, Some(StatusReason::TaskUnauthorized));
        let msg = s.message.unwrap_or_default();
        assert!(
            msg.contains(&format!("user '{user}'"))
                && msg.contains("principal 'batch'")
                && msg.contains("default rule"),
            "{msg}"
        );
    }
    assert!(
        sim.launches.is_empty() && sim.runs.is_empty(),
        "nothing ran"
    );
    // The agent's default user (no user named) is every principal's.
    launch(&mut sim, fw, task_as("as-default", None), None);
    assert_eq!(sim.runs.len(), 1);
    assert_eq!(
        last_status(&sim, fw, "as-default").state,
        TaskState::Running
    );
}

#[test]
fn users_a_rule_lists_may_run_tasks_and_executors_others_not() {
    let mut sim = sim();
    set_policy(&mut sim, "batch", Some(rule(&["*"], &["daemon"])));
    sim.add_agent("host1", "cpus:4;mem:4GiB", true);
    let fw = sim.add_framework("batch", &[], None);
    launch(&mut sim, fw, task_as("as-daemon", Some("daemon")), None);
    assert_eq!(sim.runs.len(), 1, "a listed user runs");
    launch(&mut sim, fw, task_as("as-root", Some("root")), None);
    let s = last_status(&sim, fw, "as-root");
    assert_eq!(s.reason, Some(StatusReason::TaskUnauthorized));
    assert!(s.message.unwrap_or_default().contains("'daemon'"));
    // A launch group whose executor would run as root: every task refused, nothing runs.
    launch(&mut sim, fw, task_as("grouped", None), Some("root"));
    let s = last_status(&sim, fw, "grouped");
    assert_eq!(s.state, TaskState::Error);
    assert_eq!(s.reason, Some(StatusReason::TaskUnauthorized));
    assert_eq!(sim.runs.len(), 1);
}

#[test]
fn a_seed_from_config_is_in_force_at_once_and_replicated_once() {
    let mut config = MasterConfig::default();
    config
        .policy_seed
        .insert("batch".into(), rule(&["prod"], &["root"]));
    let mut sim = sim_with(config);
    let s = sim.add_framework("batch", &["prod"], None);
    assert!(subscribed(&sim, s));
    assert!(sim.master.registry().policy_configured());
    assert_eq!(
        sim.committed
            .iter()
            .filter(|op| matches!(op, RegistryOp::PolicySeeded { .. }))
            .count(),
        1
    );
    // An operator's change stands after a failover: the new leader's seed does not undo it.
    set_policy(&mut sim, "batch", None);
    sim.leader_change(0, false);
    let refused = sim.add_framework("batch", &["prod"], None);
    assert!(
        sim.closed.contains_key(&refused),
        "the operator's unset stands"
    );
}

#[test]
fn a_bad_rule_is_refused() {
    let mut sim = sim();
    let op = sim.connect(Role::Operator, "ops");
    let call = OperatorCall::SetPolicy {
        principal: "batch".into(),
        rule: Some(rule(&[""], &[])),
    };
    sim.send(op, ClientFrame::Operator(call));
    let frames = sim.take(op);
    assert!(
        matches!(frames.as_slice(), [ServerFrame::Error(e)] if e.message.contains("invalid role")),
        "{frames:?}"
    );
    // Frameworks may not change the policy.
    let fw = sim.connect(Role::Framework, "batch");
    sim.send(fw, ClientFrame::Operator(OperatorCall::GetPolicy));
    let reason = sim
        .closed
        .get(&fw)
        .expect("a framework's GetPolicy is refused");
    assert!(reason.contains("operator GetPolicy"), "{reason}");
    assert!(!sim.master.registry().policy_configured());
}

#[test]
fn a_framework_over_its_call_rate_is_told_and_others_are_served() {
    let mut sim = sim_with(MasterConfig {
        framework_rate_limit: Some(master_core::RateLimit {
            per_second: 10.0,
            burst: 3,
        }),
        ..MasterConfig::default()
    });
    let fw = sim.add_framework("fw", &[], None);
    assert!(
        subscribed(&sim, fw),
        "the subscribe took one token of three"
    );
    let revive = || ClientFrame::Framework(FrameworkCall::Revive { roles: vec![] });
    for _ in 0..5 {
        sim.send(fw, revive());
    }
    let limited = |sim: &Sim, s| {
        sim.framework(s)
            .errors
            .iter()
            .filter(|e| e.contains("rate limited") && e.contains("principal 'fw'"))
            .count()
    };
    assert_eq!(limited(&sim, fw), 3, "{:?}", sim.framework(fw).errors);
    assert!(
        !sim.closed.contains_key(&fw),
        "a limited call does not end the session"
    );
    // Another principal has its own bucket and is served meanwhile.
    let other = sim.add_framework("other", &[], None);
    assert!(subscribed(&sim, other));
    sim.send(other, revive());
    assert!(sim.framework(other).errors.is_empty());
    // A Subscribe over the limit is refused, saying why.
    let again = sim.add_framework("fw", &[], None);
    let reason = sim.closed.get(&again).expect("refused");
    assert!(reason.contains("rate limited"), "{reason}");
    // The bucket refills at the rate.
    sim.advance(Duration::from_millis(200));
    for _ in 0..2 {
        sim.send(fw, revive());
    }
    assert_eq!(limited(&sim, fw), 3, "two tokens back after 0.2 s at 10/s");
    sim.send(fw, revive());
    assert_eq!(limited(&sim, fw), 4);
}

#[test]
fn a_token_bucket_allows_a_burst_then_the_rate_per_principal() {
    let limit = master_core::RateLimit {
        per_second: 10.0,
        burst: 5,
    };
    let mut r = master_core::ratelimit::RateLimiter::default();
    let t0 = sim().now;
    let admitted = (0..20).filter(|_| r.admit(limit, "a", t0)).count();
    assert_eq!(admitted, 5, "the burst, then nothing at the same instant");
    assert!(
        r.admit(limit, "b", t0),
        "another principal has its own bucket"
    );
    let t1 = t0 + Duration::from_millis(300);
    let admitted = (0..20).filter(|_| r.admit(limit, "a", t1)).count();
    assert_eq!(admitted, 3, "0.3 s at 10/s refills 3 tokens");
    let t2 = t1 + Duration::from_secs(60);
    let admitted = (0..20).filter(|_| r.admit(limit, "a", t2)).count();
    assert_eq!(admitted, 5, "an idle principal gets no more than the burst");
}

#[test]
fn bad_rate_limits_are_refused() {
    for (per_second, burst) in [(0.0, 1), (-1.0, 1), (f64::NAN, 1), (1.0, 0)] {
        assert!(master_core::RateLimit { per_second, burst }
            .check()
            .is_err());
    }
    assert!(master_core::RateLimit {
        per_second: 0.5,
        burst: 1
    }
    .check()
    .is_ok());
}
