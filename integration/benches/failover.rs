//! Master failover, end to end: three real `corral master` processes and two agents on
//! loopback; the leader is killed with SIGKILL and the time to the first successful new launch
//! (`corral run -- true` retried until it exits 0) is measured, `FAILOVER_RUNS` times (default
//! 10), each on a fresh cluster. Prints every run and min / median / max.
//!
//! Where the time goes (default timers): the followers' election — the leader lease (600 ms)
//! plus an election timeout in 300-600 ms without a heartbeat (`master_raft::RaftConfig::new`),
//! then a pre-vote and a vote round — makes a new leader about 0.9-1.3 s after the kill.
//! Meanwhile every client watches every master (`session::watch_leader`): the followers push
//! the new leader to agents and frameworks as soon as it serves, so they move without waiting
//! for any timeout (the 30 s idle timeout, `transport::CLIENT_IDLE_TIMEOUT`, only matters when
//! no other master is left to tell), re-register or re-subscribe through `open_session` in
//! milliseconds, and the new leader offers a re-registered agent at its next allocation pass
//! (a 10 ms batch), not after `agent_reregister_timeout`. BENCHMARKS.md has the measured times;
//! `corral bench failover --agents N` times the same with thousands of simulated agents.
//!
//! Uses the release binary: `cargo build --release -p corral && cargo bench -p integration
//! --bench failover` (or `scripts/bench.sh`). `integration/tests/it/ha.rs` checks the behaviour.

mod common;

use integration::{stderr, Cluster};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(60);

/// One failover on a fresh cluster: seconds from the kill to the first successful launch.
fn failover_once() -> f64 {
    let mut c = Cluster::start_replicated(3);
    c.start_agent("a1", &["--resources", "cpus:2;mem:1GiB"]);
    c.start_agent("a2", &["--resources", "cpus:2;mem:1GiB"]);
    // The cluster launches before the kill (agents registered, offers flowing).
    let out = c.client("fw", &["run", "--", "true"], T);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let leader = c.wait_for_leader(T);
    let killed_at = Instant::now();
    c.master_daemon(leader).kill();
    loop {
        let out = c.client("fw2", &["run", "--placement-timeout", "5", "--", "true"], T);
        if out.status.code() == Some(0) {
            return killed_at.elapsed().as_secs_f64();
        }
        assert!(
            killed_at.elapsed() < T,
            "no launch within {T:?} of the kill:\n{}",
            stderr(&out)
        );
    }
}

fn main() {
    common::use_release_corral("failover");
    let runs: usize = std::env::var("FAILOVER_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let mut secs = Vec::new();
    for i in 0..runs.max(1) {
        let s = failover_once();
        eprintln!("  failover run {}: {s:.2} s", i + 1);
        secs.push(s);
    }
    secs.sort_by(f64::total_cmp);
    let n = secs.len();
    let median = if n % 2 == 1 {
        secs[n / 2]
    } else {
        (secs[n / 2 - 1] + secs[n / 2]) / 2.0
    };
    println!();
    println!("| what | runs | min | median | max | target |");
    println!("|---|---:|---:|---:|---:|---|");
    println!(
        "| leader `kill -9` to the first new launch | {n} | {:.2} s | {median:.2} s | {:.2} s | < 2 s median (issue 11; Mesos paper: 4-8 s) |",
        secs[0],
        secs[n - 1]
    );
    println!(
        "(3 masters and 2 agents on loopback, default raft timers; each run: {})",
        secs.iter()
            .map(|s| format!("{s:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
}
