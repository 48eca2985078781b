//! Prometheus metrics (`--metrics-listen`) of a real master and agent: both pass
//! `promtool check metrics`, and their series move when a task runs, is killed, and is
//! OOM-killed at its memory limit.

use integration::{free_port, is_root, stderr, wait_child, Cluster};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(60);

/// `GET /metrics` as curl sends it (no OpenMetrics in `Accept`): the body of a 200.
fn scrape(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n")
        .expect("request");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("response");
    let (head, body) = out.split_once("\r\n\r\n").expect("a header");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    body.to_owned()
}

/// The value of the sample named exactly `series` (with its labels as encoded).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

fn value_or_zero(text: &str, series: &str) -> f64 {
    value(text, series).unwrap_or(0.0)
}

/// Scrapes until `ok` holds for the series' value (absent: 0), or fails with the last scrape.
fn wait_value(addr: SocketAddr, series: &str, what: &str, ok: impl Fn(f64) -> bool) -> String {
    let deadline = Instant::now() + T;
    loop {
        let text = scrape(addr);
        if ok(value_or_zero(&text, series)) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{series} never {what}; last scrape of {addr}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn require_vm() -> bool {
    std::env::var("CORRAL_REQUIRE_VM").is_ok_and(|v| v == "1")
}

/// `promtool check metrics` (Debian's prometheus package) accepts `text`. Without promtool
/// the check is skipped with a message, except under CORRAL_REQUIRE_VM=1 (CI), where that fails.
fn promtool_accepts(text: &str, whose: &str) {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !require_vm() => {
            eprintln!("skipping promtool check of the {whose}'s metrics: promtool is not installed (scripts/test.sh installs it)");
            return;
        }
        Err(e) => panic!("cannot run promtool (install Debian's prometheus package): {e}"),
    };
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = wait_child(child, T);
    assert!(
        out.status.success(),
        "promtool check metrics refused the {whose}'s metrics:\n{}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
}

fn memory_cgroups() -> bool {
    std::path::Path::new("/sys/fs/cgroup/memory").is_dir()
        || std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers")
            .is_ok_and(|c| c.split_whitespace().any(|x| x == "memory"))
}

/// The task id in the first `corral_agent_task_memory_limit_bytes` series of a task named
/// `name` (ids start with the name).
fn task_with_limit(text: &str, name: &str) -> Option<(String, f64)> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix("corral_agent_task_memory_limit_bytes{")?;
        let task = rest.split("task=\"").nth(1)?.split('"').next()?;
        let v = l.rsplit(' ').next()?.parse().ok()?;
        task.starts_with(name).then(|| (task.to_owned(), v))
    })
}

#[test]
fn master_and_agent_metrics_pass_promtool_and_move_with_tasks_kills_and_ooms() {
    let master_metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let agent_metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let mut c = Cluster::start_master(&["--metrics-listen", &master_metrics.to_string()]);
    c.start_agent(
        "a1",
        &[
            "--resources",
            "cpus:2;mem:1GiB",
            "--metrics-listen",
            &agent_metrics.to_string(),
        ],
    );
    let m0 = wait_value(
        master_metrics,
        r#"corral_master_agents{state="active"}"#,
        "counted the agent",
        |v| v == 1.0,
    );
    promtool_accepts(&m0, "master");
    assert_eq!(
        value(&m0, "corral_master_raft_is_leader"),
        Some(1.0),
        "{m0}"
    );
    assert!(value_or_zero(&m0, "corral_master_raft_term") >= 1.0, "{m0}");
    assert!(
        value_or_zero(&m0, r#"corral_master_connections{role="agent"}"#) >= 1.0,
        "{m0}"
    );
    let a0 = scrape(agent_metrics);
    promtool_accepts(&a0, "agent");

    // A task runs and finishes.
    let out = c.client("fw", &["run", "--name", "ok", "--", "true"], T);
    assert!(out.status.success(), "{}", stderr(&out));
    let m1 = wait_value(
        master_metrics,
        r#"corral_master_tasks{state="TASK_FINISHED"}"#,
        "counted the finished task",
        |v| v >= 1.0,
    );
    assert!(
        value_or_zero(&m1, r#"corral_master_offers_total{outcome="made"}"#) >= 1.0,
        "{m1}"
    );
    assert!(
        value_or_zero(&m1, "corral_master_allocation_pass_duration_seconds_count") >= 1.0,
        "{m1}"
    );
    let m1 = wait_value(
        master_metrics,
        "corral_master_launch_duration_seconds_count",
        "timed the launch (commit to TASK_RUNNING)",
        |v| v >= 1.0,
    );
    let frames_in = r#"corral_master_frames_total{direction="in"}"#;
    assert!(
        value_or_zero(&m1, frames_in) > value_or_zero(&m0, frames_in),
        "{m1}"
    );
    let a1 = wait_value(
        agent_metrics,
        "corral_agent_container_launch_duration_seconds_count",
        "counted the launch",
        |v| v >= 1.0,
    );
    let checkpoints = "corral_agent_checkpoint_write_duration_seconds_count";
    assert!(
        value_or_zero(&a1, checkpoints) > value_or_zero(&a0, checkpoints),
        "{a1}"
    );

    // A running task shows its usage and limits (at the next usage report), and killing it
    // is timed.
    let run = c.spawn_client(
        "fw",
        &[
            "run",
            "--name",
            "sleeper",
            "--mem",
            "48MiB",
            "--",
            "sleep 120",
        ],
    );
    let deadline = Instant::now() + T;
    let (task, limit, a2) = loop {
        let text = scrape(agent_metrics);
        if let Some((task, limit)) = task_with_limit(&text, "sleeper") {
            break (task, limit, text);
        }
        assert!(
            Instant::now() < deadline,
            "no usage series for the sleeper:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(limit, (48u64 << 20) as f64, "{a2}");
    assert_eq!(
        value(&a2, r#"corral_agent_tasks{state="TASK_RUNNING"}"#),
        Some(1.0),
        "{a2}"
    );
    let pids: f64 = a2
        .lines()
        .find(|l| {
            l.starts_with("corral_agent_task_pids{") && l.contains(&format!("task=\"{task}\""))
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0);
    assert!(pids >= 1.0, "the sleeper's pids: {a2}");
    // With PSI, the node's pressure is reported with the usage (a ratio); without it, not.
    let cpu_some = r#"corral_agent_node_pressure_ratio{resource="cpu",kind="some"}"#;
    if std::fs::read_to_string("/proc/pressure/cpu").is_ok() {
        let p = value(&a2, cpu_some).unwrap_or_else(|| panic!("no cpu pressure:\n{a2}"));
        assert!((0.0..=1.0).contains(&p), "{a2}");
    } else {
        assert_eq!(value(&a2, cpu_some), None, "{a2}");
    }
    let out = c.client("op", &["kill", &task], T);
    assert!(out.status.success(), "{}", stderr(&out));
    let _ = wait_child(run, T);
    let a3 = wait_value(
        agent_metrics,
        "corral_agent_container_kill_duration_seconds_count",
        "counted the kill",
        |v| v >= 1.0,
    );
    assert!(
        task_with_limit(&a3, "sleeper").is_none(),
        "an ended task keeps no usage series:\n{a3}"
    );

    // A task that exceeds its memory limit is OOM-killed: the agent counts it, the master
    // shows it failed.
    if !is_root() || !memory_cgroups() {
        assert!(
            !require_vm(),
            "CORRAL_REQUIRE_VM=1: the OOM part needs root and the memory cgroup controller"
        );
        eprintln!("skipping the OOM part of the metrics test: memory limits need root and the memory cgroup controller");
        return;
    }
    let ooms = value_or_zero(&a3, "corral_agent_oom_kills_total");
    let failed = value_or_zero(&m1, r#"corral_master_tasks{state="TASK_FAILED"}"#);
    let out = c.client(
        "fw",
        &[
            "run",
            "--name",
            "hog",
            "--mem",
            "32MiB",
            "--",
            "dd if=/dev/zero of=/dev/null bs=256M count=1",
        ],
        T,
    );
    assert_eq!(out.status.code(), Some(137), "{}", stderr(&out));
    let a4 = wait_value(
        agent_metrics,
        "corral_agent_oom_kills_total",
        "counted the OOM kill",
        |v| v == ooms + 1.0,
    );
    let m4 = wait_value(
        master_metrics,
        r#"corral_master_tasks{state="TASK_FAILED"}"#,
        "counted the OOM-killed task",
        |v| v == failed + 1.0,
    );
    promtool_accepts(&a4, "agent");
    promtool_accepts(&m4, "master");
}

#[test]
fn only_the_leading_master_reports_the_cluster_and_it_reports_follower_lag() {
    let ports: Vec<SocketAddr> = (0..3)
        .map(|_| format!("127.0.0.1:{}", free_port()).parse().expect("addr"))
        .collect();
    let c = Cluster::start_replicated_with(3, None, &|i| {
        vec!["--metrics-listen".into(), ports[i].to_string()]
    });
    let leader = c.wait_for_leader(T);
    let deadline = Instant::now() + T;
    loop {
        let scrapes: Vec<String> = ports.iter().map(|p| scrape(*p)).collect();
        let settled = scrapes.iter().enumerate().all(|(i, text)| {
            let leads = value(text, "corral_master_raft_is_leader") == Some(1.0);
            let lags = text.matches("corral_master_raft_follower_lag{").count();
            // Every master has applied the leader's first entry.
            let applied = value_or_zero(text, "corral_master_raft_applied_index") >= 1.0;
            leads == (i == leader) && (i != leader || lags == 2) && applied
        });
        if settled {
            for (i, text) in scrapes.iter().enumerate() {
                promtool_accepts(text, &format!("master {}", i + 1));
                assert!(
                    value_or_zero(text, "corral_master_raft_term") >= 1.0,
                    "{text}"
                );
                let agents = value(text, r#"corral_master_agents{state="active"}"#);
                if i == leader {
                    assert_eq!(agents, Some(0.0), "the leader reports the cluster: {text}");
                    assert!(
                        value_or_zero(text, r#"corral_master_connections{role="master"}"#) >= 1.0,
                        "raft links are counted: {text}"
                    );
                } else {
                    assert_eq!(agents, None, "a follower leaves the cluster out: {text}");
                }
            }
            return;
        }
        assert!(
            Instant::now() < deadline,
            "master {} leads, but the metrics never said so (with lag for both followers, and \
             every master past index 0):\n{}",
            leader + 1,
            scrapes.join("\n----\n")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
