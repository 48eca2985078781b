//! The load generator (`loadgen`) against a real `corral master` process: its simulated agents
//! register like real ones (each with its own certificate and QUIC connection), and a launch
//! through the framework library reaches FINISHED on one of them.

use framework::{Scheduler, SchedulerEvent};
use integration::Cluster;
use loadgen::{Fleet, FleetConfig};
use proto::{
    CommandInfo, FrameworkCall, FrameworkEvent, OfferOperation, TaskId, TaskInfo, TaskState,
};
use std::time::Duration;
use tokio::time::Instant;

const AGENTS: usize = 50;

#[test]
fn simulated_agents_register_and_a_launch_on_one_reaches_finished() {
    transport::install_crypto_provider();
    let c = Cluster::start_master(&[]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    let ids = loadgen::issue_agent_identities(&c.certs.dir, "sim-", 0, AGENTS, 2)
        .expect("issue the simulated agents' certificates");
    assert_eq!(ids.len(), AGENTS);
    let masters = c.master_addrs.iter().map(|a| a.to_string()).collect();
    let mut cfg = FleetConfig::new(masters);
    cfg.resources = "cpus:2;mem:2GiB".parse().expect("resources");
    cfg.task_duration = Duration::from_millis(300);
    cfg.ramp = Duration::from_secs(1);
    cfg.max_connecting = 16;
    let fleet = rt.block_on(async {
        let mut fleet = Fleet::new(cfg);
        fleet.add(ids);
        fleet
            .wait_registered(AGENTS, Duration::from_secs(60))
            .await
            .expect("every simulated agent registers");
        fleet
    });

    // The master lists every one of them, active, under its certificate's name.
    let state = c.wait_state("50 active simulated agents", |s| {
        s["agents"].as_array().is_some_and(|a| {
            a.len() == AGENTS
                && a.iter().all(|x| {
                    x["status"] == "Active"
                        && x["hostname"]
                            .as_str()
                            .is_some_and(|h| h.starts_with("sim-"))
                })
        })
    });
    let mut names: Vec<&str> = state["agents"]
        .as_array()
        .expect("agents")
        .iter()
        .filter_map(|a| a["hostname"].as_str())
        .collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), AGENTS, "one agent per certificate: {names:?}");

    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut s = Scheduler::subscribe(
            c.client_options("fw"),
            framework::framework_info("loadgen-probe"),
        )
        .await
        .expect("subscribe");
        let mut launched = false;
        let mut states = Vec::new();
        loop {
            let ev = tokio::time::timeout_at(deadline, s.next_event())
                .await
                .unwrap_or_else(|_| panic!("no FINISHED before the deadline; states {states:?}"))
                .expect("the scheduler's event stream ended");
            match ev {
                SchedulerEvent::Framework(FrameworkEvent::Offers { offers }) => {
                    let mut offers = offers.into_iter();
                    if !launched {
                        let o = offers.next().expect("an offer");
                        let task = TaskInfo {
                            task_id: TaskId::new("probe"),
                            name: "probe".into(),
                            agent_id: o.agent_id.clone(),
                            resources: "cpus:1;mem:256MiB".parse().expect("resources"),
                            command: CommandInfo::shell("true"),
                            container: Default::default(),
                            kill_grace_ms: None,
                            labels: Default::default(),
                        };
                        s.call(FrameworkCall::Accept {
                            offer_ids: vec![o.id],
                            operations: vec![OfferOperation::Launch { tasks: vec![task] }],
                            filters: None,
                        })
                        .await
                        .expect("accept");
                        launched = true;
                    }
                    let rest: Vec<_> = offers.map(|o| o.id).collect();
                    if !rest.is_empty() {
                        s.call(FrameworkCall::Decline {
                            offer_ids: rest,
                            filters: None,
                        })
                        .await
                        .expect("decline");
                    }
                }
                SchedulerEvent::Framework(FrameworkEvent::Update { status }) => {
                    if let (Some(a), Some(u)) = (status.agent_id.clone(), status.uuid.clone()) {
                        s.call(FrameworkCall::Acknowledge {
                            agent_id: a,
                            task_id: status.task_id.clone(),
                            uuid: u,
                        })
                        .await
                        .expect("acknowledge");
                    }
                    assert_eq!(status.task_id.as_str(), "probe");
                    states.push(status.state);
                    if status.state.is_terminal() {
                        break;
                    }
                }
                _ => {}
            }
        }
        assert_eq!(
            states,
            vec![TaskState::Starting, TaskState::Running, TaskState::Finished],
            "the simulated agent reports like a real one"
        );
        let stats = fleet.stats();
        assert_eq!((stats.launched, stats.finished), (1, 1), "{stats:?}");
        assert_eq!(stats.registered, AGENTS, "{stats:?}");
        assert!(
            stats.datagrams_in > 0 && stats.datagrams_out > 0,
            "{stats:?}"
        );
        fleet.stop().await;
    });
}
