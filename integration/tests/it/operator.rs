//! Operator commands through real processes: drain, deactivate, reactivate, teardown, kill, logs.

use integration::{stderr, stdout, wait_child, Cluster};
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

fn task_state(s: &serde_json::Value, prefix: &str) -> Option<String> {
    s["tasks"].as_array()?.iter().find_map(|t| {
        t["id"]
            .as_str()?
            .starts_with(prefix)
            .then(|| t["state"].as_str().unwrap_or("").to_owned())
    })
}

#[test]
fn drain_and_reactivate_an_agent() {
    let mut c = Cluster::start_master(&[]);
    c.start_agent("a1", &["--resources", "cpus:2;mem:1GiB"]);
    let s = c.wait_state("the agent", |s| {
        s["agents"].as_array().is_some_and(|a| a.len() == 1)
    });
    let agent_id = s["agents"][0]["id"].as_str().expect("agent id").to_owned();
    let out = c.client("op", &["drain", &agent_id], T);
    assert!(out.status.success(), "{}", stderr(&out));
    c.wait_state("Draining", |s| s["agents"][0]["status"] == "Draining");
    // No offers come from a draining agent.
    let out = c.client("fw", &["run", "--placement-timeout", "3", "--", "true"], T);
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    let out = c.client("op", &["reactivate", &agent_id], T);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = c.client("fw", &["run", "--", "true"], T);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = c.client("op", &["deactivate", &agent_id], T);
    assert!(out.status.success(), "{}", stderr(&out));
    c.wait_state("Deactivated", |s| s["agents"][0]["status"] == "Deactivated");
    // Unknown ids are a clear error.
    let out = c.client("op", &["drain", "no-such-agent"], T);
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("no-such-agent"), "{}", stderr(&out));
}

#[test]
fn kill_a_task_and_read_its_logs() {
    let mut c = Cluster::start_master(&[]);
    c.start_agent("a1", &["--resources", "cpus:2;mem:1GiB"]);
    let run = c.spawn_client(
        "fw",
        &[
            "run",
            "--name",
            "victim",
            "--",
            "echo before-kill; sleep 60",
        ],
    );
    let s = c.wait_state("a running task", |s| {
        task_state(s, "victim").as_deref() == Some("Running")
    });
    let id = s["tasks"][0]["id"].as_str().expect("task id").to_owned();
    let out = c.client("op", &["logs", &id], T);
    assert!(
        stdout(&out).contains("before-kill"),
        "logs: {} {}",
        stdout(&out),
        stderr(&out)
    );
    let out = c.client("op", &["kill", &id], T);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = wait_child(run, T);
    assert!(stderr(&out).contains("TASK_KILLED"), "{}", stderr(&out));
    assert_ne!(out.status.code(), Some(0));
    // Another framework may not kill or read what is not its own.
    let out = c.client("fw2", &["logs", &id], T);
    assert_ne!(out.status.code(), Some(0), "{}", stdout(&out));
}

#[test]
fn teardown_a_framework_kills_its_tasks() {
    let mut c = Cluster::start_master(&[]);
    c.start_agent("a1", &["--resources", "cpus:2;mem:1GiB"]);
    let run = c.spawn_client("fw", &["run", "--name", "doomed", "--", "sleep 60"]);
    let s = c.wait_state("a running task", |s| {
        task_state(s, "doomed").as_deref() == Some("Running")
    });
    let fid = s["tasks"][0]["framework_id"]
        .as_str()
        .expect("framework id")
        .to_owned();
    let out = c.client("op", &["teardown", &fid], T);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = wait_child(run, T);
    assert_ne!(out.status.code(), Some(0), "{}", stderr(&out));
    let s = c.wait_state("the framework gone", |s| {
        s["frameworks"].as_array().is_some_and(|f| f.is_empty())
    });
    // It is kept as completed, with the task the teardown killed.
    assert_eq!(s["completed_frameworks"][0]["id"], fid.as_str(), "{s:#}");
    let t = &s["tasks"][0];
    assert_eq!(
        (&t["framework_id"], &t["state"], &t["reason"]),
        (
            &serde_json::json!(fid),
            &serde_json::json!("Killed"),
            &serde_json::json!("FrameworkRemoved")
        ),
        "{s:#}"
    );
}

/// Reads confirm leadership and first hand the core every commit queued for it; those commits
/// must keep their proposal ids, or the core loses the continuation of a subscription committed
/// in that moment and the framework never hears `Subscribed` (seen once in CI: `corral run` gave
/// up after 15 s). Here frameworks subscribe while an operator reads the state without pause.
#[test]
fn frameworks_subscribe_while_operators_read_the_state() {
    let mut c = Cluster::start_master(&[]);
    c.start_agent("a1", &["--resources", "cpus:4;mem:2GiB"]);
    /// Stops the readers however the frameworks' part ends (a failed assertion included: it
    /// is dropped while unwinding, before the scope joins the readers).
    struct StopOnDrop<'a>(&'a std::sync::atomic::AtomicBool);
    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let c = &c;
        let stop = &stop;
        let _stop = StopOnDrop(stop);
        for _ in 0..3 {
            scope.spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let out = c.client("op", &["state", "--json"], T);
                    assert!(out.status.success(), "state: {}", stderr(&out));
                }
            });
        }
        for wave in 0..4 {
            let runs: Vec<_> = (0..5)
                .map(|i| {
                    let name = format!("reader-race-{wave}-{i}");
                    c.spawn_client("fw", &["run", "--name", &name, "--", "true"])
                })
                .collect();
            for run in runs {
                let out = wait_child(run, T);
                assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
            }
        }
    });
}
