//! Replicated masters (openraft over mutually-authenticated QUIC), real processes on loopback.

use integration::{stderr, wait_child, Cluster};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(60);

fn task_running(c: &Cluster, prefix: &str) -> bool {
    let out = c.client("op", &["state", "--json"], T);
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else {
        return false;
    };
    v["tasks"].as_array().is_some_and(|ts| {
        ts.iter().any(|t| {
            t["id"].as_str().is_some_and(|id| id.starts_with(prefix)) && t["state"] == "Running"
        })
    })
}

#[test]
fn killing_the_leader_elects_another_and_the_cluster_keeps_running_tasks() {
    let mut c = Cluster::start_replicated(3);
    c.start_agent("a1", &["--resources", "cpus:2;mem:1GiB"]);
    c.start_agent("a2", &["--resources", "cpus:2;mem:1GiB"]);
    // A task that spans the failover.
    let long = c.spawn_client(
        "fw",
        &["run", "--name", "survivor", "--", "sleep 12; echo survived"],
    );
    let deadline = Instant::now() + T;
    while !task_running(&c, "survivor") {
        assert!(Instant::now() < deadline, "the task never ran");
        std::thread::sleep(Duration::from_millis(100));
    }
    let leader = c.wait_for_leader(T);
    let killed_at = Instant::now();
    c.master_daemon(leader).kill();
    // New launches succeed once a new leader serves and an agent has re-registered.
    let first_launch = loop {
        let out = c.client("fw2", &["run", "--placement-timeout", "5", "--", "true"], T);
        if out.status.code() == Some(0) {
            break killed_at.elapsed();
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(60),
            "no launch after the failover:\n{}",
            stderr(&out)
        );
    };
    let new_leader = c.wait_for_leader(T);
    assert_ne!(new_leader, leader, "a new leader was elected");
    println!(
        "failover: leader killed -> first successful new launch in {:.2} s (Mesos paper: 4-8 s)",
        first_launch.as_secs_f64()
    );
    // The task that was running is still known and running, and ends normally, once.
    assert!(
        task_running(&c, "survivor"),
        "the running task is known to the new leader"
    );
    let out = wait_child(long, T);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(err.matches("TASK_FINISHED").count(), 1, "{err}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("survived"));
}

#[test]
fn all_masters_restarted_at_once_come_back_from_disk() {
    let mut c = Cluster::start_replicated(3);
    c.start_agent("a1", &["--resources", "cpus:2;mem:1GiB"]);
    let long = c.spawn_client("fw", &["run", "--name", "persist", "--", "sleep 8"]);
    let deadline = Instant::now() + T;
    while !task_running(&c, "persist") {
        assert!(Instant::now() < deadline, "the task never ran");
        std::thread::sleep(Duration::from_millis(100));
    }
    for i in 0..3 {
        c.master_daemon(i).kill();
    }
    for i in 0..3 {
        c.restart_master(i);
    }
    c.wait_for_leader(T);
    // The registry came back from disk: the agent, the framework and the task are known.
    let deadline = Instant::now() + T;
    while !task_running(&c, "persist") {
        assert!(Instant::now() < deadline, "the task was not recovered");
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = wait_child(long, T);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}
