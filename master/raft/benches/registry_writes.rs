//! Registry writes per second on three masters in one process: real QUIC on 127.0.0.1 with
//! mutual TLS, every append fsynced on each master, the leader's committed stream drained as
//! the daemon would. Prints a table beside two published reference points.
//!
//! Run: `cargo bench -p master-raft --bench registry_writes` (BENCH_SECS sets the seconds per
//! row, default 5).

#[allow(dead_code)]
#[path = "../tests/it/support.rs"]
mod support;

use master_raft::ReplicatedRegistry;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{fw_op, Cluster};

struct Row {
    clients: usize,
    writes: u64,
    elapsed: Duration,
    p50: Duration,
    p99: Duration,
}

async fn run(reg: &ReplicatedRegistry, clients: usize, secs: u64) -> Row {
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicU64::new(1_000_000 * clients as u64));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let reg = reg.clone();
        let stop = stop.clone();
        let next = next.clone();
        tasks.spawn(async move {
            let mut lat = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let t = Instant::now();
                if let Err(e) = reg.propose(fw_op(i)).await {
                    eprintln!("proposal failed: {e}");
                    break;
                }
                lat.push(t.elapsed());
            }
            lat
        });
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut lat = Vec::new();
    while let Some(r) = tasks.join_next().await {
        lat.extend(r.expect("client task"));
    }
    let elapsed = started.elapsed();
    lat.sort();
    let pct = |p: usize| lat.get(lat.len() * p / 100).copied().unwrap_or_default();
    Row {
        clients,
        writes: lat.len() as u64,
        elapsed,
        p50: pct(50),
        p99: pct(99),
    }
}

fn main() {
    let secs: u64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let c = Cluster::start(3, |_| {}).await;
        let leader_id = c.wait_leader(None).await;
        let leader = c.master(leader_id);
        // The daemon on the leader receives every committed op.
        let mut sub = leader.reg.subscribe_as_leader().await.expect("subscribe");
        let drained = Arc::new(AtomicU64::new(0));
        let d = drained.clone();
        tokio::spawn(async move {
            while sub.events.recv().await.is_some() {
                d.fetch_add(1, Ordering::Relaxed);
            }
        });
        // Warm up connections and the page cache.
        run(&leader.reg, 16, 1).await;

        let rows = vec![
            run(&leader.reg, 1, secs).await,
            run(&leader.reg, 256, secs).await,
        ];
        println!();
        println!("registry writes, 3 masters in one process, QUIC + mTLS on loopback, fsync on every master");
        println!("{:<58} {:>10} {:>10} {:>10}", "setup", "writes/s", "p50", "p99");
        for r in &rows {
            let label = format!("corral master-raft, {} concurrent proposals", r.clients);
            println!(
                "{:<58} {:>10.0} {:>10.2?} {:>10.2?}",
                label,
                r.writes as f64 / r.elapsed.as_secs_f64(),
                r.p50,
                r.p99
            );
        }
        println!(
            "{:<58} {:>10} {:>10} {:>10}",
            "openraft published (1 client, in memory, one process)", "33000", "-", "-"
        );
        println!(
            "{:<58} {:>10} {:>10} {:>10}",
            "etcd published (1 client)", "583", "-", "-"
        );
        println!(
            "machine: {} cpus; committed ops drained by the leader's subscriber: {}",
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            drained.load(Ordering::Relaxed)
        );
        for m in c.masters {
            m.stop().await;
        }
    });
}
