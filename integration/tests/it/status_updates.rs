//! Reliable status updates end to end: a framework that loses its connection during a run gets,
//! after re-subscribing, every update it had not acknowledged, in order, and none it had.

use framework::{ClientOptions, Scheduler, SchedulerEvent};
use integration::Cluster;
use proto::{
    CommandInfo, FrameworkCall, FrameworkEvent, OfferOperation, TaskId, TaskInfo, TaskState,
    TaskStatus,
};
use std::time::Duration;

fn options(c: &Cluster, name: &str) -> ClientOptions {
    c.client_options(name)
}

async fn next_update(s: &mut Scheduler, within: Duration) -> Option<TaskStatus> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let ev = tokio::time::timeout_at(deadline, s.next_event())
            .await
            .ok()??;
        match ev {
            SchedulerEvent::Framework(FrameworkEvent::Update { status }) => return Some(status),
            SchedulerEvent::Framework(FrameworkEvent::Offers { offers }) => {
                let ids = offers.into_iter().map(|o| o.id).collect();
                s.call(FrameworkCall::Decline {
                    offer_ids: ids,
                    filters: None,
                })
                .await
                .ok()?;
            }
            _ => {}
        }
    }
}

async fn ack(s: &Scheduler, st: &TaskStatus) {
    s.call(FrameworkCall::Acknowledge {
        agent_id: st.agent_id.clone().expect("agent id on agent updates"),
        task_id: st.task_id.clone(),
        uuid: st.uuid.clone().expect("uuid on agent updates"),
    })
    .await
    .expect("ack");
}

#[test]
fn unacknowledged_updates_are_redelivered_in_order_after_resubscribing() {
    transport::install_crypto_provider();
    let mut c = Cluster::start_master(&[]);
    c.start_agent(
        "a1",
        &[
            "--resources",
            "cpus:2;mem:1GiB",
            "--status-update-retry-secs",
            "1",
        ],
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        let mut info = framework::framework_info("redelivery");
        info.failover_timeout_ms = 60_000;
        let mut s = Scheduler::subscribe(options(&c, "fw"), info.clone())
            .await
            .expect("subscribe");
        let framework_id = s.framework_id().clone();
        // Launch one task from the first offer.
        let offer = loop {
            match s.next_event().await.expect("event") {
                SchedulerEvent::Framework(FrameworkEvent::Offers { mut offers }) => {
                    break offers.remove(0)
                }
                _ => continue,
            }
        };
        let task_id = TaskId::new("redeliver-1");
        let task = TaskInfo {
            task_id: task_id.clone(),
            name: "redeliver".into(),
            agent_id: offer.agent_id.clone(),
            resources: "cpus:0.1;mem:32MiB".parse().expect("resources"),
            command: CommandInfo::shell("sleep 2"),
            container: Default::default(),
            kill_grace_ms: None,
            labels: Default::default(),
        };
        s.call(FrameworkCall::Accept {
            offer_ids: vec![offer.id],
            operations: vec![OfferOperation::Launch { tasks: vec![task] }],
            filters: None,
        })
        .await
        .expect("accept");
        // The first update arrives; we do not acknowledge it and drop the connection.
        let first = next_update(&mut s, Duration::from_secs(20))
            .await
            .expect("first update");
        assert_eq!(first.state, TaskState::Starting);
        assert_eq!(first.seq, 1);
        drop(s);
        tokio::time::sleep(Duration::from_secs(3)).await;

        // Re-subscribe as the same framework (failover).
        info.id = Some(framework_id.clone());
        let mut s = Scheduler::subscribe(options(&c, "fw"), info)
            .await
            .expect("re-subscribe");
        assert_eq!(s.framework_id(), &framework_id);
        let mut seen: Vec<(TaskState, u64)> = Vec::new();
        while seen.last().map(|(st, _)| !st.is_terminal()).unwrap_or(true) {
            let st = next_update(&mut s, Duration::from_secs(30))
                .await
                .expect("update after re-subscribe");
            assert_eq!(st.task_id, task_id);
            seen.push((st.state, st.seq));
            ack(&s, &st).await;
        }
        assert_eq!(
            seen,
            vec![
                (TaskState::Starting, 1),
                (TaskState::Running, 2),
                (TaskState::Finished, 3)
            ],
            "every unacknowledged update, in order, each once after it was acknowledged"
        );
        // Nothing more comes after the acknowledgements, even across several retry intervals.
        let extra = next_update(&mut s, Duration::from_secs(4)).await;
        assert!(
            extra.is_none(),
            "an acknowledged update came again: {extra:?}"
        );
    });
}
