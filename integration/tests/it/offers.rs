//! Resource offers through real processes: the Mesos paper's own example, and two frameworks
//! sharing one agent in DRF proportions.

use framework::{ClientOptions, Scheduler, SchedulerEvent};
use integration::Cluster;
use proto::{
    CommandInfo, Filters, FrameworkCall, FrameworkEvent, Offer, OfferOperation, Resources, TaskId,
    TaskInfo, TaskState, TaskStatus,
};
use std::time::Duration;
use tokio::time::Instant;

fn options(c: &Cluster, name: &str) -> ClientOptions {
    c.client_options(name)
}

fn res(s: &str) -> Resources {
    s.parse().expect("resources")
}

fn task(id: &str, offer: &Offer, resources: &str, cmd: &str) -> TaskInfo {
    TaskInfo {
        task_id: TaskId::new(id),
        name: id.into(),
        agent_id: offer.agent_id.clone(),
        resources: res(resources),
        command: CommandInfo::shell(cmd),
        container: Default::default(),
        kill_grace_ms: Some(500),
        labels: Default::default(),
    }
}

enum Got {
    Offers(Vec<Offer>),
    Update(TaskStatus),
}

/// The next offers or task update (acknowledging updates), or None at the deadline.
async fn next(s: &mut Scheduler, deadline: Instant) -> Option<Got> {
    loop {
        let ev = tokio::time::timeout_at(deadline, s.next_event())
            .await
            .ok()??;
        match ev {
            SchedulerEvent::Framework(FrameworkEvent::Offers { offers }) => {
                return Some(Got::Offers(offers))
            }
            SchedulerEvent::Framework(FrameworkEvent::Update { status }) => {
                if let (Some(a), Some(u)) = (status.agent_id.clone(), status.uuid.clone()) {
                    s.call(FrameworkCall::Acknowledge {
                        agent_id: a,
                        task_id: status.task_id.clone(),
                        uuid: u,
                    })
                    .await
                    .ok()?;
                }
                return Some(Got::Update(status));
            }
            _ => {}
        }
    }
}

async fn first_offer(s: &mut Scheduler, deadline: Instant) -> Offer {
    loop {
        match next(s, deadline)
            .await
            .expect("an offer before the deadline")
        {
            Got::Offers(mut o) => return o.remove(0),
            Got::Update(_) => {}
        }
    }
}

fn decline(offer: Offer, refuse: f64) -> FrameworkCall {
    FrameworkCall::Decline {
        offer_ids: vec![offer.id],
        filters: Some(Filters {
            refuse_seconds: Some(refuse),
        }),
    }
}

/// Waits until `task` reaches `state` (declining offers meanwhile). Updates of other tasks
/// that arrive while waiting are kept in `seen`, so waiting for one task never loses another's.
async fn wait_state(
    s: &mut Scheduler,
    seen: &mut std::collections::HashMap<String, Vec<TaskState>>,
    task: &str,
    state: TaskState,
    deadline: Instant,
) {
    loop {
        if let Some(states) = seen.get(task) {
            if states.contains(&state) {
                return;
            }
            if let Some(end) = states.iter().find(|st| st.is_terminal()) {
                panic!("{task} ended in {end:?} while waiting for {state:?}");
            }
        }
        match next(s, deadline).await {
            Some(Got::Update(st)) => seen
                .entry(st.task_id.as_str().to_owned())
                .or_default()
                .push(st.state),
            Some(Got::Offers(offers)) => {
                for o in offers {
                    s.call(decline(o, 60.0)).await.expect("decline");
                }
            }
            None => panic!("{task} did not reach {state:?} in time; seen: {seen:?}"),
        }
    }
}

#[test]
fn the_mesos_paper_example_runs_through_real_processes() {
    transport::install_crypto_provider();
    let mut c = Cluster::start_master(&[]);
    c.start_agent("a1", &["--resources", "cpus:4;mem:4GiB"]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut f1 = Scheduler::subscribe(options(&c, "fw"), framework::framework_info("paper-1")).await.expect("f1");
        let offer = first_offer(&mut f1, deadline).await;
        assert_eq!(offer.resources.cpus_milli, 4000);
        assert_eq!(offer.resources.mem_bytes, 4 << 30);
        // The second framework subscribes while the first holds the whole agent.
        let mut f2 = Scheduler::subscribe(options(&c, "fw2"), framework::framework_info("paper-2")).await.expect("f2");
        f1.call(FrameworkCall::Accept {
            offer_ids: vec![offer.id.clone()],
            operations: vec![OfferOperation::Launch {
                tasks: vec![
                    task("t-2cpu", &offer, "cpus:2;mem:1GiB", "sleep 4"),
                    task("t-1cpu", &offer, "cpus:1;mem:2GiB", "sleep 30"),
                ],
            }],
            // Framework 1 does not want the rest: it goes to framework 2.
            filters: Some(Filters { refuse_seconds: Some(60.0) }),
        })
        .await
        .expect("accept");
        // The remaining <1 cpu, 1 GiB> is offered to framework 2, which runs a task on it.
        let rest = first_offer(&mut f2, deadline).await;
        assert_eq!((rest.resources.cpus_milli, rest.resources.mem_bytes), (1000, 1 << 30), "{rest:?}");
        f2.call(FrameworkCall::Accept {
            offer_ids: vec![rest.id.clone()],
            operations: vec![OfferOperation::Launch { tasks: vec![task("t-f2", &rest, "cpus:1;mem:1GiB", "sleep 30")] }],
            filters: None,
        })
        .await
        .expect("accept f2");
        let mut seen1 = std::collections::HashMap::new();
        let mut seen2 = std::collections::HashMap::new();
        wait_state(&mut f1, &mut seen1, "t-2cpu", TaskState::Running, deadline).await;
        wait_state(&mut f1, &mut seen1, "t-1cpu", TaskState::Running, deadline).await;
        wait_state(&mut f2, &mut seen2, "t-f2", TaskState::Running, deadline).await;
        // All three run at the same time: none has ended yet (t-2cpu sleeps 4 s).
        // A further task of framework 2 needs 2 cpus: it does not fit until t-2cpu ends.
        let mut launched_at = None;
        let mut finished_at = seen1
            .get("t-2cpu")
            .is_some_and(|v| v.contains(&TaskState::Finished))
            .then(Instant::now);
        f2.call(FrameworkCall::Revive { roles: vec![] }).await.expect("revive");
        while launched_at.is_none() {
            tokio::select! {
                got = next(&mut f2, deadline) => match got.expect("framework 2 gets an offer that fits") {
                    Got::Offers(offers) => for o in offers {
                        if o.resources.contains(&res("cpus:2;mem:1GiB")) {
                            assert!(finished_at.is_some(), "2 cpus were offered while t-2cpu still ran: {o:?}");
                            f2.call(FrameworkCall::Accept {
                                offer_ids: vec![o.id.clone()],
                                operations: vec![OfferOperation::Launch { tasks: vec![task("t-waits", &o, "cpus:2;mem:1GiB", "true")] }],
                                filters: None,
                            }).await.expect("accept");
                            launched_at = Some(Instant::now());
                        } else {
                            f2.call(decline(o, 0.2)).await.expect("decline");
                        }
                    },
                    Got::Update(_) => {}
                },
                got = next(&mut f1, deadline), if finished_at.is_none() => {
                    if let Some(Got::Update(st)) = got {
                        if st.task_id.as_str() == "t-2cpu" && st.state == TaskState::Finished {
                            finished_at = Some(Instant::now());
                        }
                    }
                }
            }
        }
        wait_state(&mut f2, &mut seen2, "t-waits", TaskState::Finished, deadline).await;
        let _ = f1.teardown().await;
        let _ = f2.teardown().await;
    });
}

#[test]
fn two_frameworks_share_one_agent_in_drf_proportions() {
    transport::install_crypto_provider();
    let mut c = Cluster::start_master(&[]);
    // The DRF paper's example cluster: 9 CPUs, 18 GB; A's tasks <1 CPU, 4 GB>, B's <3 CPUs, 1 GB>.
    c.start_agent("a1", &["--resources", "cpus:9;mem:18GiB"]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("rt");
    let (a, b) = rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut fa = Scheduler::subscribe(options(&c, "fw"), framework::framework_info("drf-a"))
            .await
            .expect("a");
        let mut fb = Scheduler::subscribe(options(&c, "fw2"), framework::framework_info("drf-b"))
            .await
            .expect("b");
        let (mut na, mut nb) = (0u32, 0u32);
        let quiet_for = Duration::from_secs(3);
        let mut last_launch = Instant::now();
        // Each framework launches one task per offer while its task fits, and declines the rest
        // without a filter so the allocator can re-offer it by DRF.
        loop {
            let wait_until = (last_launch + quiet_for).min(deadline);
            let (who, got) = tokio::select! {
                g = next(&mut fa, wait_until) => ('a', g),
                g = next(&mut fb, wait_until) => ('b', g),
            };
            let Some(got) = got else { break };
            let Got::Offers(offers) = got else { continue };
            for o in offers {
                let (need, n, s) = if who == 'a' {
                    ("cpus:1;mem:4GiB", &mut na, &fa)
                } else {
                    ("cpus:3;mem:1GiB", &mut nb, &fb)
                };
                if o.resources.contains(&res(need)) {
                    *n += 1;
                    let id = format!("{who}-{n}");
                    s.call(FrameworkCall::Accept {
                        offer_ids: vec![o.id.clone()],
                        operations: vec![OfferOperation::Launch {
                            tasks: vec![task(&id, &o, need, "sleep 20")],
                        }],
                        filters: Some(Filters {
                            refuse_seconds: Some(0.0),
                        }),
                    })
                    .await
                    .expect("accept");
                    last_launch = Instant::now();
                } else {
                    s.call(decline(o, 60.0)).await.expect("decline");
                }
            }
        }
        let _ = fa.teardown().await;
        let _ = fb.teardown().await;
        (na, nb)
    });
    assert_eq!((a, b), (3, 2), "DRF gives A 3 tasks and B 2");
}
