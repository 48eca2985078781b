//! Quotas and reservations through real processes: `corral quota set`, `corral reserve`, an
//! agent's `--resources 'cpus(ROLE):N'`, hungry frameworks of the framework library, and what
//! `corral state` shows. The frameworks `fw` and `fw2` use the roles named after them (the
//! policy's default rule).

use framework::{ClientOptions, Scheduler, SchedulerEvent};
use integration::{stderr, Cluster};
use proto::{
    CommandInfo, Filters, FrameworkCall, FrameworkEvent, FrameworkInfo, Offer, OfferOperation,
    OperatorCall, OperatorReply, Resources, TaskId, TaskInfo, TaskState,
};
use std::time::Duration;
use tokio::time::Instant;

const TASK: &str = "cpus:1;mem:64MiB";

fn info(name: &str, role: &str) -> FrameworkInfo {
    FrameworkInfo {
        roles: vec![role.to_owned()],
        ..framework::framework_info(name)
    }
}

fn runtime() -> tokio::runtime::Runtime {
    transport::install_crypto_provider();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("rt")
}

fn corral_ok(c: &Cluster, args: &[&str]) -> String {
    let out = c.client("op", args, Duration::from_secs(60));
    assert!(out.status.success(), "corral {args:?}: {}", stderr(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Offers of the next event (acknowledging updates on the way), `None` at the deadline.
async fn next_offers(s: &mut Scheduler, deadline: Instant) -> Option<Vec<Offer>> {
    loop {
        match tokio::time::timeout_at(deadline, s.next_event())
            .await
            .ok()??
        {
            SchedulerEvent::Framework(FrameworkEvent::Offers { offers }) => return Some(offers),
            SchedulerEvent::Framework(FrameworkEvent::Update { status }) => {
                if let (Some(a), Some(u)) = (status.agent_id.clone(), status.uuid.clone()) {
                    let ack = FrameworkCall::Acknowledge {
                        agent_id: a,
                        task_id: status.task_id.clone(),
                        uuid: u,
                    };
                    s.call(ack).await.ok()?;
                }
            }
            _ => {}
        }
    }
}

/// A hungry framework's answer to an offer: as many `TASK`s as fit (sleeping), the rest
/// refused for a second. Returns how many it launched.
async fn launch_all(s: &Scheduler, o: &Offer, prefix: &str, next_id: &mut u32) -> u32 {
    let task: Resources = TASK.parse().expect("task");
    let mut left = o.resources.clone();
    let mut tasks = Vec::new();
    while let Some(rest) = left.checked_sub(&task) {
        left = rest;
        *next_id += 1;
        tasks.push(TaskInfo {
            task_id: TaskId::new(format!("{prefix}-{next_id}")),
            name: prefix.to_owned(),
            agent_id: o.agent_id.clone(),
            resources: task.clone(),
            command: CommandInfo::shell("sleep 600"),
            container: Default::default(),
            kill_grace_ms: Some(200),
            labels: Default::default(),
        });
    }
    let n = tasks.len() as u32;
    let call = FrameworkCall::Accept {
        offer_ids: vec![o.id.clone()],
        operations: if tasks.is_empty() {
            Vec::new()
        } else {
            vec![OfferOperation::Launch { tasks }]
        },
        filters: Some(Filters {
            refuse_seconds: Some(1.0),
        }),
    };
    s.call(call).await.expect("accept");
    n
}

/// Role `role`'s (used + offered) cpus in thousandths, and its limit, from `GetState`.
async fn role_cpus(op: &ClientOptions, role: &str) -> (u64, Option<u64>) {
    let OperatorReply::State(s) = framework::operator_call(op, OperatorCall::GetState)
        .await
        .expect("state")
    else {
        panic!("GetState answered something else");
    };
    s.roles
        .iter()
        .find(|r| r.name == role)
        .map(|r| {
            (
                r.used.cpus_milli + r.offered.cpus_milli,
                r.quota.as_ref().and_then(|q| q.limit.cpus_milli),
            )
        })
        .unwrap_or_default()
}

/// Acknowledges the frameworks' updates until no task is still being launched (an agent sends
/// a task's next update once the last is acknowledged): the teardown then kills every
/// container, none is left starting when the agent stops.
async fn settle(op: &ClientOptions, mut scheds: [&mut Scheduler; 2]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let OperatorReply::State(s) = framework::operator_call(op, OperatorCall::GetState)
            .await
            .expect("state")
        else {
            panic!("GetState answered something else");
        };
        let launching =
            |t: &&proto::TaskSummary| matches!(t.state, TaskState::Staging | TaskState::Starting);
        let Some(t) = s.tasks.iter().find(launching) else {
            return;
        };
        assert!(Instant::now() < deadline, "task {} never ran", t.id);
        for s in scheds.iter_mut() {
            let _ = next_offers(s, Instant::now() + Duration::from_millis(100)).await;
        }
    }
}

#[test]
fn two_hungry_roles_stay_within_their_limits_and_together_fill_the_agent() {
    let rt = runtime();
    let mut c = Cluster::start_master(&[]);
    corral_ok(&c, &["quota", "set", "fw", "--limit", "cpus:2"]);
    corral_ok(&c, &["quota", "set", "fw2", "--limit", "cpus:6"]);
    let shown = corral_ok(&c, &["quota", "show"]);
    assert!(
        shown
            .lines()
            .any(|l| l.starts_with("fw ") && l.contains("cpus:2")),
        "{shown}"
    );
    c.start_agent("a1", &["--resources", "cpus:8;mem:8GiB"]);
    let op = c.client_options("op");
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut f1 = Scheduler::subscribe(c.client_options("fw"), info("small", "fw"))
            .await
            .expect("fw");
        let mut f2 = Scheduler::subscribe(c.client_options("fw2"), info("large", "fw2"))
            .await
            .expect("fw2");
        let (mut n1, mut n2, mut ids) = (0u32, 0u32, 0u32);
        let mut samples = 0u32;
        let mut full_since: Option<Instant> = None;
        let mut sample_at = Instant::now();
        // Both frameworks take everything they are offered; state is sampled every 200 ms and
        // once they hold the whole agent, for 2 s more.
        while full_since.is_none_or(|t| t.elapsed() < Duration::from_secs(2)) {
            assert!(
                Instant::now() < deadline,
                "the roles never filled the agent: {n1} + {n2}"
            );
            let tick = sample_at.max(Instant::now() + Duration::from_millis(10));
            tokio::select! {
                o = next_offers(&mut f1, tick) => for o in o.unwrap_or_default() {
                    assert!(o.resources.cpus_milli <= 2000, "fw offered over its limit: {o:?}");
                    n1 += launch_all(&f1, &o, "small", &mut ids).await;
                },
                o = next_offers(&mut f2, tick) => for o in o.unwrap_or_default() {
                    assert!(o.resources.cpus_milli <= 6000, "fw2 offered over its limit: {o:?}");
                    n2 += launch_all(&f2, &o, "large", &mut ids).await;
                },
            }
            if Instant::now() >= sample_at {
                sample_at = Instant::now() + Duration::from_millis(200);
                samples += 1;
                for role in ["fw", "fw2"] {
                    let (held, limit) = role_cpus(&op, role).await;
                    let limit = limit.expect("a limit");
                    assert!(
                        held <= limit,
                        "role {role} holds {held} milli-cpus, limit {limit}"
                    );
                }
            }
            if full_since.is_none() && n1 + n2 == 8 {
                full_since = Some(Instant::now());
            }
        }
        assert_eq!(
            (n1, n2),
            (2, 6),
            "each role up to its limit, the agent full"
        );
        assert!(samples >= 5, "state sampled {samples} times");
        assert_eq!(role_cpus(&op, "fw").await.0, 2000, "fw runs 2 cpus");
        assert_eq!(role_cpus(&op, "fw2").await.0, 6000, "fw2 runs 6 cpus");
        settle(&op, [&mut f1, &mut f2]).await;
        let _ = f1.teardown().await;
        let _ = f2.teardown().await;
    });
    let text = corral_ok(&c, &["state"]);
    assert!(
        text.contains("limit=cpus:2"),
        "corral state shows quotas:\n{text}"
    );
    // `remove` (cli.md) is `unset`; a role without a quota is refused by name.
    corral_ok(&c, &["quota", "remove", "fw"]);
    let shown = corral_ok(&c, &["quota", "show"]);
    assert!(
        !shown
            .lines()
            .any(|l| l.starts_with("fw ") && l.contains("cpus:2")),
        "fw's quota is gone: {shown}"
    );
    let out = c.client("op", &["quota", "unset", "fw"], Duration::from_secs(60));
    assert!(!out.status.success(), "unsetting a missing quota succeeded");
    assert!(
        stderr(&out).contains("role 'fw' has no quota"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_guaranteed_role_gets_the_freed_cpus_first() {
    let rt = runtime();
    // Role fw2 weighs 10: by weighted DRF alone it would win every freed cpu after fw's first.
    let mut c = Cluster::start_master(&["--role-weight", "fw2=10"]);
    c.start_agent("a1", &["--resources", "cpus:8;mem:8GiB"]);
    let order = rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut filler = Scheduler::subscribe(c.client_options("fw2"), info("filler", "fw2"))
            .await
            .expect("fw2");
        let (mut filled, mut ids) = (0u32, 0u32);
        while filled < 8 {
            let offers = next_offers(&mut filler, deadline).await.expect("filler offers");
            for o in offers {
                filled += launch_all(&filler, &o, "filler", &mut ids).await;
            }
        }
        let out = c.client(
            "op",
            &["quota", "set", "fw", "--guarantee", "cpus:3"],
            Duration::from_secs(60),
        );
        assert!(out.status.success(), "quota set: {}", stderr(&out));
        let mut gold = Scheduler::subscribe(c.client_options("fw"), info("gold", "fw"))
            .await
            .expect("fw");
        // The filler's tasks end one at a time; each freed cpu goes to whoever is offered it.
        let mut order = Vec::new();
        let mut gold_ids = 0u32;
        for k in 1..=4u32 {
            let kill = FrameworkCall::Kill {
                task_id: TaskId::new(format!("filler-{k}")),
                agent_id: None,
                grace_ms: None,
            };
            filler.call(kill).await.expect("kill");
            let mut taken = false;
            while !taken {
                tokio::select! {
                    o = next_offers(&mut gold, deadline) => for o in o.expect("offers before the deadline") {
                        if launch_all(&gold, &o, "gold", &mut gold_ids).await > 0 {
                            order.push("fw");
                            taken = true;
                        }
                    },
                    o = next_offers(&mut filler, deadline) => for o in o.expect("offers before the deadline") {
                        if launch_all(&filler, &o, "filler-again", &mut ids).await > 0 {
                            order.push("fw2");
                            taken = true;
                        }
                    },
                }
            }
        }
        settle(&c.client_options("op"), [&mut gold, &mut filler]).await;
        let _ = gold.teardown().await;
        let _ = filler.teardown().await;
        order
    });
    assert_eq!(
        order,
        ["fw", "fw", "fw", "fw2"],
        "the guaranteed role gets freed cpus until it holds 3, then weighted DRF decides"
    );
}

/// Offers to `s` over `window` (kept, not declined).
async fn offers_for(s: &mut Scheduler, window: Duration) -> Vec<Offer> {
    let until = Instant::now() + window;
    let mut all = Vec::new();
    while let Some(o) = next_offers(s, until).await {
        all.extend(o);
    }
    all
}

fn cpus(offers: &[Offer], reserved: bool) -> u64 {
    offers
        .iter()
        .filter(|o| o.reserved == reserved)
        .map(|o| o.resources.cpus_milli)
        .sum()
}

/// fw2 (no reservation) is offered only the unreserved cpus; fw gets its reserved ones, marked.
async fn check_reserved_offers(c: &Cluster) {
    let window = Duration::from_secs(3);
    let mut other = Scheduler::subscribe(c.client_options("fw2"), info("other", "fw2"))
        .await
        .expect("fw2");
    let got = offers_for(&mut other, window).await;
    assert_eq!(cpus(&got, true), 0, "fw2 got reserved resources: {got:?}");
    assert_eq!(
        cpus(&got, false),
        3000,
        "fw2 gets the 3 unreserved cpus: {got:?}"
    );
    let mut owner = Scheduler::subscribe(c.client_options("fw"), info("owner", "fw"))
        .await
        .expect("fw");
    let got = offers_for(&mut owner, window).await;
    assert_eq!(
        cpus(&got, true),
        3000,
        "fw gets its 3 reserved cpus: {got:?}"
    );
    assert!(got.iter().all(|o| o.role == "fw"), "{got:?}");
    let _ = owner.teardown().await;
    let _ = other.teardown().await;
}

#[test]
fn reservations_go_only_to_their_role_and_survive_agent_and_master_restarts() {
    let rt = runtime();
    let mut c = Cluster::start_master(&[]);
    c.start_agent(
        "a1",
        &["--resources", "cpus(fw):2;mem(fw):1GiB;cpus:2;mem:1GiB"],
    );
    c.start_agent("a2", &["--resources", "cpus:2;mem:2GiB"]);
    let s = c.wait_state("two agents", |s| {
        s["agents"].as_array().is_some_and(|a| a.len() == 2)
    });
    let a2 = s["agents"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["hostname"] == "a2"))
        .and_then(|a| a["id"].as_str())
        .expect("a2's id")
        .to_owned();
    // More than a2 has unreserved is refused, naming what it has.
    let out = c.client(
        "op",
        &["reserve", &a2, "fw", "cpus:3"],
        Duration::from_secs(60),
    );
    assert!(!out.status.success(), "reserving 3 of 2 cpus succeeded");
    assert!(stderr(&out).contains("unreserved"), "{}", stderr(&out));
    corral_ok(&c, &["reserve", &a2, "fw", "cpus:1;mem:512MiB"]);
    let text = corral_ok(&c, &["state"]);
    assert!(text.contains("reserved cpus(fw):2;mem(fw):1GiB"), "{text}");
    assert!(
        text.contains("(dynamic cpus(fw):1;mem(fw):512MiB)"),
        "{text}"
    );
    rt.block_on(check_reserved_offers(&c));

    // Both agents and the master restart: the static reservation comes back with a1's flags,
    // the dynamic one from the replicated registry.
    c.restart_agent(0);
    c.restart_agent(1);
    let registered = c.agent_registrations();
    c.master_daemon(0).kill();
    c.restart_master(0);
    c.wait_agents_registered_again(&registered, Duration::from_secs(30));
    c.wait_state("both agents back and reserved", |s| {
        s["agents"].as_array().is_some_and(|a| {
            a.len() == 2
                && a.iter().all(|a| {
                    a["status"] == "Active" && a["reserved"]["fw"]["cpus_milli"].as_u64().is_some()
                })
        })
    });
    rt.block_on(check_reserved_offers(&c));
    // Unreserving returns a2's cpu to everyone.
    corral_ok(&c, &["unreserve", &a2, "fw", "cpus:1;mem:512MiB"]);
    c.wait_state("a2 unreserved", |s| {
        s["agents"].as_array().is_some_and(|a| {
            a.iter().any(|a| {
                a["hostname"] == "a2" && a["reserved"].as_object().is_some_and(|r| r.is_empty())
            })
        })
    });
}
