//! The operator event stream, `corral events --json`, against three real masters: it sees a
//! task go STAGING → RUNNING → FINISHED while the leader it was following is killed in between,
//! and resumes at the new leader with no event lost or repeated (checked against a second
//! stream that replays the same span from the new leader's own journal).

use integration::{shared_dir, stderr, wait_child, Cluster};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::process::Child;
use std::sync::mpsc;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(60);

/// A running `corral events --json`, its stdout lines parsed as they come.
struct Follower {
    child: Child,
    lines: mpsc::Receiver<Value>,
    seen: Vec<Value>,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Follower {
    fn start(c: &Cluster, extra: &[&str]) -> Follower {
        let mut args = vec!["events", "--json"];
        args.extend_from_slice(extra);
        let mut child = c.spawn_client("op", &args);
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| {
                    panic!("`corral events --json` printed non-JSON {line:?}: {e}")
                });
                if tx.send(v).is_err() {
                    return;
                }
            }
        });
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let mut err = child.stderr.take().expect("stderr");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    return;
                }
                if let Ok(mut s) = sink.lock() {
                    s.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }
        });
        Follower {
            child,
            lines,
            seen: Vec::new(),
            stderr,
        }
    }

    /// Reads lines until one satisfies `pred`; fails after `T` naming `what`.
    fn wait_for(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + T;
        if let Some(v) = self.seen.iter().find(|v| pred(v)) {
            return v.clone();
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(v) => {
                    self.seen.push(v.clone());
                    if pred(&v) {
                        return v;
                    }
                }
                Err(_) => panic!(
                    "`corral events` never printed {what}; it printed:\n{}\nstderr:\n{}",
                    self.seen
                        .iter()
                        .map(Value::to_string)
                        .collect::<Vec<_>>()
                        .join("\n"),
                    self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
                ),
            }
        }
    }

    /// The events seen (not SUBSCRIBED or RESUMED), in order.
    fn events(&self) -> Vec<Value> {
        self.seen
            .iter()
            .filter(|v| v.get("cursor").is_some() && v["type"] != "SUBSCRIBED")
            .cloned()
            .collect()
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cursor(v: &Value) -> (u64, u32) {
    let s = v["cursor"].as_str().expect("a cursor");
    let (i, q) = s.split_once('.').unwrap_or((s, "4294967295"));
    (
        i.parse().expect("cursor index"),
        q.parse().expect("cursor seq"),
    )
}

fn is_task_event(v: &Value, name: &str, state: &str) -> bool {
    v["type"].as_str().is_some_and(|t| t.starts_with("TASK_"))
        && v["task"]["name"] == name
        && v["task"]["state"] == state
}

#[test]
fn events_follow_a_task_across_a_leader_kill_without_gap_or_duplicate() {
    let mut c = Cluster::start_replicated(3);
    c.start_agent("a1", &["--resources", "cpus:2;mem:1GiB"]);
    let first_leader = c.wait_for_leader(T);
    let mut follower = Follower::start(&c, &[]);
    let subscribed = follower.wait_for("SUBSCRIBED", |v| v["type"] == "SUBSCRIBED");
    assert!(
        subscribed["state"]
            .as_array()
            .is_some_and(|s| s.iter().any(|e| e["type"] == "AGENT_ADDED")),
        "the starting state lists the agent: {subscribed}"
    );
    // A task that runs until the test lets it finish, after the failover.
    let gate = shared_dir("corral-events-");
    let go = gate.path().join("go");
    let script = format!(
        "while [ ! -e {} ]; do sleep 0.1; done; echo done",
        go.display()
    );
    let run = c.spawn_client("fw", &["run", "--name", "evt", "--", "sh", "-c", &script]);
    follower.wait_for("the task added in STAGING", |v| {
        v["type"] == "TASK_ADDED" && is_task_event(v, "evt", "Staging")
    });
    follower.wait_for("the task RUNNING", |v| is_task_event(v, "evt", "Running"));

    c.master_daemon(first_leader).kill();
    let killed = c.master_addrs[first_leader].to_string();
    let resumed = follower.wait_for("RESUMED at another master", |v| v["type"] == "RESUMED");
    assert_ne!(resumed["master"], killed.as_str(), "{resumed}");
    std::fs::write(&go, b"").expect("open the gate");
    follower.wait_for("the task FINISHED", |v| is_task_event(v, "evt", "Finished"));
    let out = wait_child(run, T);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    // The task's states, each once, in order.
    let events = follower.events();
    let states: Vec<&str> = events
        .iter()
        .filter(|v| v["task"]["name"] == "evt")
        .filter_map(|v| v["task"]["state"].as_str())
        .filter(|s| *s != "Starting")
        .collect();
    assert_eq!(states, ["Staging", "Running", "Finished"], "{events:#?}");
    // Cursors strictly increase: nothing repeated, nothing out of order.
    for w in events.windows(2) {
        assert!(cursor(&w[0]) < cursor(&w[1]), "{} then {}", w[0], w[1]);
    }
    // No gap: a stream that starts where this one started, served wholly by the new leader
    // from its own journal, gives exactly the same events up to the last one seen here.
    let last = events.last().expect("events").clone();
    let start = subscribed["cursor"].as_str().expect("cursor").to_owned();
    let mut replay = Follower::start(&c, &["--after", &start]);
    replay.wait_for("the last event of the first stream", |v| {
        v.get("cursor") == last.get("cursor")
    });
    assert_eq!(
        replay.events(),
        events,
        "the first stream lost or repeated events across the failover"
    );
    println!(
        "corral events: {} events across the failover, resumed at {} after {}",
        events.len(),
        resumed["master"],
        resumed["after"]
    );
}

#[test]
fn events_refuse_a_cursor_from_another_cluster_and_a_non_operator() {
    let c = Cluster::start_master(&[]);
    let out = c.client("op", &["events", "--after", "999999.0"], T);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("ahead of this cluster's log"),
        "{}",
        stderr(&out)
    );
    let out = c.client("fw", &["events"], T);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("needs an operator certificate"),
        "{}",
        stderr(&out)
    );
    let out = c.client("op", &["events", "--after", "not-a-cursor"], T);
    assert!(
        stderr(&out).contains("invalid event cursor"),
        "{}",
        stderr(&out)
    );
}
