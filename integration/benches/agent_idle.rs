//! The agent's idle footprint: resident memory and CPU of a real `corral agent` process that is
//! registered with a master and heartbeating, with no task and with 20 running tasks. Prints a
//! table beside the targets (RSS < 20 MiB, CPU < 1 %). Uses the release binary:
//! `cargo build --release -p corral && cargo bench -p integration --bench agent_idle`.

use integration::{Cluster, Daemon};
use std::time::{Duration, Instant};

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// utime + stime in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    get(11) + get(12)
}

fn measure(d: &Daemon, secs: u64) -> (u64, f64) {
    let pid = d.pid();
    let ticks_per_s = 100.0;
    let t0 = cpu_ticks(pid);
    let start = Instant::now();
    let mut peak = 0;
    while start.elapsed() < Duration::from_secs(secs) {
        peak = peak.max(rss_kib(pid));
        std::thread::sleep(Duration::from_millis(250));
    }
    let cpu = (cpu_ticks(pid) - t0) as f64 / ticks_per_s / start.elapsed().as_secs_f64() * 100.0;
    (peak, cpu)
}

fn main() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let release = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("release/corral");
    if std::env::var_os("CORRAL_BIN").is_none() {
        if !release.exists() {
            eprintln!(
                "agent_idle: build the release binary first: cargo build --release -p corral"
            );
            return;
        }
        std::env::set_var("CORRAL_BIN", &release);
    }
    let secs = std::env::var("AGENT_IDLE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let mut c = Cluster::start_master(&[]);
    let a = c.start_agent("idle", &["--resources", "cpus:4;mem:4GiB"]);
    std::thread::sleep(Duration::from_secs(2));
    let (rss0, cpu0) = measure(&c.agents[a], secs);
    let mut runs = Vec::new();
    for i in 0..20 {
        runs.push(c.spawn_client(
            "fw",
            &[
                "run",
                "--name",
                &format!("idle{i}"),
                "--cpus",
                "0.1",
                "--mem",
                "16MiB",
                "--",
                "sleep 600",
            ],
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while c.agents[a].log_text().matches("state=TASK_RUNNING").count() < 20
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(200));
    }
    let running = c.agents[a].log_text().matches("state=TASK_RUNNING").count();
    std::thread::sleep(Duration::from_secs(2));
    let (rss20, cpu20) = measure(&c.agents[a], secs);
    let (mrss, mcpu) = measure(&c.master, 2);
    println!();
    println!("| process | tasks | peak RSS | CPU | target |");
    println!("|---|---|---|---|---|");
    println!(
        "| corral agent | 0 | {:.1} MiB | {cpu0:.2} % | < 20 MiB, < 1 % |",
        rss0 as f64 / 1024.0
    );
    println!(
        "| corral agent | {running} | {:.1} MiB | {cpu20:.2} % | - |",
        rss20 as f64 / 1024.0
    );
    println!(
        "| corral master | - | {:.1} MiB | {mcpu:.2} % | - |",
        mrss as f64 / 1024.0
    );
    println!();
    println!("(sampled every 250 ms for {secs} s; heartbeat every 2 s; Nomad's per-task helpers alone are 14-20 MB each)");
    for mut r in runs {
        let _ = r.kill();
        let _ = r.wait();
    }
}
