//! Scenario B7 "churn": one real `corral master`, a fleet of simulated agents (1,000 by
//! default) and one framework (the `framework` library) that wants launches at a steady rate
//! (20/s by default, the Kubernetes "steady state" churn) for a while (3 min by default).
//! Tasks are short (2 s by default: the simulated agent reports `FINISHED` then). Each launch
//! is timed from the moment the framework wanted it (so waiting for an offer counts) until the
//! agent's `RUNNING` reached it. Prints p50/p99/max, launches done and failed, and the
//! master's CPU and RSS over the run. Anchor: the Kubernetes pod startup SLO, p99 ≤ 5 s.
//!
//! Knobs ([`ChurnConfig`]): agents, rate, duration, task run time, and the fleet's ramp and
//! admission.

use crate::cluster::{Cluster, ClusterSpec};
use crate::launch_book::{Demand, LaunchCounts, TaskShape};
use crate::launcher::{Launcher, LauncherConfig, Pace};
use crate::stats::{ms, Summary};
use crate::{LoadgenError, ProcSample};
use proto::Resources;
use std::fmt;
use std::time::Duration;

/// The Kubernetes pod startup SLO (p99, creation to running, images pre-pulled).
pub const K8S_P99: Duration = Duration::from_secs(5);

#[derive(Clone, Debug)]
pub struct ChurnConfig {
    pub cluster: ClusterSpec,
    /// Launches wanted per second.
    pub rate: f64,
    /// How long launches are wanted.
    pub duration: Duration,
    /// How long each task runs.
    pub task: Duration,
}

#[derive(Clone, Debug)]
pub struct ChurnReport {
    pub agents: usize,
    pub rate: f64,
    pub duration: Duration,
    pub task: Duration,
    pub register_secs: f64,
    pub counts: LaunchCounts,
    pub latency: Summary,
    /// Master CPU (share of one core) over the run, its RSS at the end (KiB).
    pub master_cpu: f64,
    pub master_rss_kib: u64,
    /// Registration failures and lost sessions during the run.
    pub fleet_failures: u64,
    /// Failed tasks by state and reason.
    pub failures: String,
}

/// What the churn framework's tasks ask for: small enough for hundreds per agent.
pub(crate) fn small_task(run: Duration) -> TaskShape {
    let ms = u64::try_from(run.as_millis()).unwrap_or(u64::MAX);
    TaskShape {
        resources: Resources::new(10, 32 << 20),
        run_ms: Some((ms, ms)),
    }
}

/// Runs the scenario. Needs a multi-thread tokio runtime.
pub async fn run(cfg: ChurnConfig) -> Result<ChurnReport, LoadgenError> {
    let cluster = Cluster::start(&cfg.cluster).await?;
    let pid = cluster.leader_pid()?;
    let launcher_cfg = LauncherConfig {
        name: "churn".into(),
        shape: small_task(cfg.task),
        demand: Demand::Submitted { hold_offers: true },
        pace: Pace::Rate(cfg.rate),
        decline_for: Duration::from_secs(5),
    };
    let launcher = Launcher::subscribe(cluster.framework_options("churn")?, launcher_cfg).await?;
    let failures_before = cluster.fleet.stats().failures;
    let before = ProcSample::read(pid)?;
    launcher.go();
    tracing::info!(master_pid = pid, rate = cfg.rate, duration = ?cfg.duration, "churning");
    // The run itself: launches are wanted for this long.
    tokio::time::sleep(cfg.duration).await;
    launcher.pause();
    let after = ProcSample::read(pid)?;
    launcher.drain(Duration::from_secs(60)).await?;
    let book = launcher.stop().await?;
    Ok(ChurnReport {
        agents: cluster.fleet.len(),
        rate: cfg.rate,
        duration: cfg.duration,
        task: cfg.task,
        register_secs: cluster.register_secs,
        counts: book.counts,
        latency: book.latencies.summary(),
        failures: crate::launch_book::failure_kinds(&book.failures),
        master_cpu: before.cpu_share_until(&after).0,
        master_rss_kib: after.rss_kib,
        fleet_failures: cluster.fleet.stats().failures - failures_before,
    })
}

impl fmt::Display for ChurnReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "B7: churn, {} launches/s for {:?} on {} simulated agents (registered in {:.1} s), {:?} tasks, one master",
            self.rate, self.duration, self.agents, self.register_secs, self.task
        )?;
        writeln!(f, "Latency: from the moment the framework wanted the task (offer wait included) to RUNNING at the framework.")?;
        writeln!(f)?;
        writeln!(f, "| agents | wanted/s | launches RUNNING | failed | p50 | p99 | max | master CPU (% core) | master RSS MiB | agent session failures | anchor: Kubernetes pod startup |")?;
        writeln!(f, "|---|---|---|---|---|---|---|---|---|---|---|")?;
        writeln!(
            f,
            "| {} | {} | {} of {} | {} | {} | {} | {} | {:.1} | {:.1} | {} | p99 ≤ {} s{} |",
            self.agents,
            self.rate,
            self.counts.running,
            self.counts.submitted,
            self.counts.failed + self.counts.dropped,
            ms(self.latency.p50),
            ms(self.latency.p99),
            ms(self.latency.max),
            self.master_cpu * 100.0,
            self.master_rss_kib as f64 / 1024.0,
            self.fleet_failures,
            K8S_P99.as_secs(),
            if self.latency.p99 <= K8S_P99 {
                ": met"
            } else {
                ": NOT met"
            }
        )?;
        writeln!(f, "\nFailed tasks: {}", self.failures)
    }
}
