//! Scenario B2 "launches": how many launches per second the master sustains. Three replicated
//! `corral master` processes, N simulated agents (1,000 by default) with large resources
//! (64 CPUs, 256 GiB each, so many tiny tasks fit), and K frameworks (10 by default, each its
//! own certificate) that put as many tasks as fit (up to `per_offer`) on every offer they get;
//! tasks run `task_secs` (1 s by default). After a warm-up the tasks reaching `RUNNING` at the
//! frameworks are counted over a window, with the leader's CPU and RSS. Anchors: Nomad C1M,
//! 3,750 containers/s with 5 servers; issue 11's target, 10,000/s.
//!
//! Knobs ([`LaunchesConfig`]): masters, agents, frameworks, tasks per offer, task run time,
//! warm-up, window; the fleet's ramp and admission.

use crate::churn::small_task;
use crate::cluster::{Cluster, ClusterSpec};
use crate::launch_book::Demand;
use crate::launcher::{Launcher, LauncherConfig, Pace};
use crate::{LoadgenError, ProcSample};
use std::fmt;
use std::time::Duration;

/// Nomad C1M (5 servers) and issue 11's target, launches per second.
pub const NOMAD_C1M: f64 = 3750.0;
pub const TARGET: f64 = 10_000.0;

#[derive(Clone, Debug)]
pub struct LaunchesConfig {
    pub cluster: ClusterSpec,
    pub frameworks: usize,
    /// Tasks put on one offer, at most.
    pub per_offer: usize,
    pub task: Duration,
    pub warmup: Duration,
    pub window: Duration,
}

#[derive(Clone, Debug)]
pub struct LaunchesReport {
    pub masters: usize,
    pub agents: usize,
    pub frameworks: usize,
    pub per_offer: usize,
    pub task: Duration,
    pub window: Duration,
    pub register_secs: f64,
    pub launches_per_s: f64,
    /// Tasks sent in accepts per second over the window (RUNNING or not yet).
    pub sent_per_s: f64,
    pub leader_pid: u32,
    pub cpu: f64,
    pub rss_kib: u64,
    pub failed: u64,
    /// Tasks the simulated agents were told to run over the window, per second.
    pub agent_launches_per_s: f64,
    /// Failed tasks by state and reason.
    pub failures: String,
    /// Framework sessions lost (a leader change, mostly) over the run, all frameworks.
    pub disconnects: u64,
}

fn totals(frameworks: &[Launcher]) -> (u64, u64) {
    frameworks.iter().fold((0, 0), |(ran, sent), l| {
        let c = l.counts();
        (ran + c.running, sent + c.sent)
    })
}

/// Runs the scenario. Needs a multi-thread tokio runtime.
pub async fn run(cfg: LaunchesConfig) -> Result<LaunchesReport, LoadgenError> {
    let cluster = Cluster::start(&cfg.cluster).await?;
    let pid = cluster.leader_pid()?;
    let mut frameworks = Vec::with_capacity(cfg.frameworks);
    for i in 0..cfg.frameworks {
        let name = format!("fw-{i}");
        let opts = tokio::task::block_in_place(|| cluster.framework_options(&name))?;
        let launcher_cfg = LauncherConfig {
            name,
            shape: small_task(cfg.task),
            demand: Demand::PerOffer(cfg.per_offer.max(1)),
            pace: Pace::Offers,
            decline_for: Duration::from_secs(1),
        };
        frameworks.push(Launcher::subscribe(opts, launcher_cfg).await?);
    }
    for f in &frameworks {
        f.go();
    }
    // The warm-up and the window are measured periods, not waits for an event.
    tokio::time::sleep(cfg.warmup).await;
    tracing::info!(leader_pid = pid, window = ?cfg.window, "measuring launches");
    let (ran0, sent0) = totals(&frameworks);
    let agents0 = cluster.fleet.stats().launched;
    let before = ProcSample::read(pid)?;
    tokio::time::sleep(cfg.window).await;
    let after = ProcSample::read(pid)?;
    let (ran1, sent1) = totals(&frameworks);
    let agents1 = cluster.fleet.stats().launched;
    let wall = after.at.duration_since(before.at).as_secs_f64().max(1e-9);
    let (mut failed, mut disconnects) = (0, 0);
    let mut kinds = std::collections::BTreeMap::new();
    for f in frameworks {
        let c = f.counts();
        failed += c.failed;
        disconnects += c.disconnects;
        match f.stop().await {
            Ok(book) => crate::launch_book::add_failures(&mut kinds, &book.failures),
            Err(e) => tracing::warn!(error = %e, "a framework did not stop cleanly"),
        }
    }
    Ok(LaunchesReport {
        masters: cluster.masters.len(),
        agents: cluster.fleet.len(),
        frameworks: cfg.frameworks,
        per_offer: cfg.per_offer,
        task: cfg.task,
        window: cfg.window,
        register_secs: cluster.register_secs,
        launches_per_s: (ran1 - ran0) as f64 / wall,
        sent_per_s: (sent1 - sent0) as f64 / wall,
        leader_pid: pid,
        cpu: before.cpu_share_until(&after).0,
        rss_kib: after.rss_kib,
        failed,
        agent_launches_per_s: (agents1 - agents0) as f64 / wall,
        failures: crate::launch_book::failure_kinds(&kinds),
        disconnects,
    })
}

impl fmt::Display for LaunchesReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "B2: sustained launches, {} masters (leader pid {}), {} simulated agents (registered in {:.1} s), {} frameworks putting up to {} tasks ({:?} each) on every offer; {:?} window",
            self.masters, self.leader_pid, self.agents, self.register_secs, self.frameworks, self.per_offer, self.task, self.window
        )?;
        writeln!(f)?;
        writeln!(f, "| masters | agents | frameworks | launches RUNNING/s | tasks accepted/s | RunTasks at agents/s | leader CPU (% core) | leader RSS MiB | failed tasks | Nomad C1M | issue 11 target |")?;
        writeln!(f, "|---|---|---|---|---|---|---|---|---|---|---|")?;
        writeln!(
            f,
            "| {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.1} | {:.1} | {} | {NOMAD_C1M:.0}/s (5 servers) | {TARGET:.0}/s |",
            self.masters,
            self.agents,
            self.frameworks,
            self.launches_per_s,
            self.sent_per_s,
            self.agent_launches_per_s,
            self.cpu * 100.0,
            self.rss_kib as f64 / 1024.0,
            self.failed
        )?;
        writeln!(f, "\nFailed tasks: {}", self.failures)?;
        writeln!(
            f,
            "Framework sessions lost (leader changes): {}",
            self.disconnects
        )
    }
}
