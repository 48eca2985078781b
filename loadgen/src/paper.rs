//! Scenario B1 "paper": the Mesos paper's scalability test (NSDI 2011, §6.5) at several fleet
//! sizes. Per size: one real `corral master` and N simulated agents offering 4 CPUs and 8 GiB;
//! the master idle with them is measured first; then a probe framework launches single tiny
//! tasks one at a time, each timed from the moment it wanted it (it declines offers while it
//! wants nothing and revives when it does) to `RUNNING`: the baseline. Then F frameworks
//! (200 by default, each its own certificate and session) launch one task on every offer they
//! get, each task half an agent (2 CPUs, 4 GiB: two per agent, as in the paper) running
//! `task_secs` ± a third (the paper: Normal(30 s, 10 s)); once the cluster is full (or the
//! warm-up ran out) and its tasks have started ending (a twentieth of the slots, or the longest
//! task time) the probe launches again for a window while the master's CPU and RSS and
//! the frameworks' launch rate are measured. The paper's anchor: under 1 s of extra launch
//! latency at 50,000 agents.
//!
//! Knobs ([`PaperConfig`]): sizes, frameworks, task run time, warm-up cap, window, baseline
//! probe launches, idle window; the fleet's ramp and admission.

use crate::cluster::{Cluster, ClusterSpec};
use crate::launch_book::{Demand, Stages, TaskShape};
use crate::launcher::{Launcher, LauncherConfig, Pace};
use crate::masters::{client_options, PROBE};
use crate::stats::{ms, Summary};
use crate::{LoadgenError, ProcSample};
use proto::Resources;
use std::fmt;
use std::time::Duration;
use tokio::time::Instant;

/// The paper's figure: task launch overhead stays under 1 s up to 50,000 agents.
pub const PAPER_EXTRA: Duration = Duration::from_secs(1);
/// What a paper framework's task asks for: half an agent.
const HALF_AGENT_CPUS_MILLI: u64 = 2000;
const HALF_AGENT_MEM: u64 = 4 << 30;
/// How long the probe's last launches may take to reach `RUNNING` after the window.
const PROBE_DRAIN: Duration = Duration::from_secs(60);
/// Between two probe launches.
const PROBE_GAP: Duration = Duration::from_millis(250);

#[derive(Clone, Debug)]
pub struct PaperConfig {
    /// The cluster of every size (its `agents` is replaced by each size).
    pub cluster: ClusterSpec,
    pub sizes: Vec<usize>,
    pub frameworks: usize,
    /// Mean task run time (uniform within ± a third).
    pub task: Duration,
    /// At most this long for the frameworks to fill the cluster.
    pub warmup: Duration,
    /// Probe launches and measurements under load, for this long.
    pub window: Duration,
    /// Probe launches without load.
    pub baseline_launches: usize,
    /// The master idle with the fleet is measured over this.
    pub idle_window: Duration,
}

#[derive(Clone, Debug)]
pub struct PaperRow {
    pub agents: usize,
    pub frameworks: usize,
    pub register_secs: f64,
    pub idle_cpu: f64,
    pub idle_rss_kib: u64,
    pub baseline: Summary,
    pub loaded: Summary,
    /// The probe's launches by stage ([`Stages`]), p50 without load and loaded: to the
    /// accept, accept → `STARTING`, `STARTING` → `RUNNING`.
    pub stage_p50s: [(Duration, Duration); 3],
    /// Tasks live (RUNNING, not ended) when the window began, of 2 per agent.
    pub live_at_window: u64,
    pub launches_per_s: f64,
    pub cpu: f64,
    pub rss_kib: u64,
    /// Tasks that ended other than `FINISHED`, over the whole size.
    pub failed: u64,
    /// Registration failures and lost sessions during the size.
    pub fleet_failures: u64,
    /// Failed tasks by state and reason.
    pub failures: String,
    /// Probe launches sent and not `RUNNING` [`PROBE_DRAIN`] after the window (not in the
    /// percentiles).
    pub stuck: Vec<proto::TaskId>,
}

#[derive(Clone, Debug)]
pub struct PaperReport {
    pub task: Duration,
    pub window: Duration,
    pub rows: Vec<PaperRow>,
    /// The size that failed, and why (the run stops there).
    pub failed: Option<(usize, String)>,
}

/// Runs the scenario, one size after the other. Needs a multi-thread tokio runtime.
pub async fn run(cfg: PaperConfig) -> Result<PaperReport, LoadgenError> {
    let mut rows = Vec::new();
    let mut failed = None;
    for &agents in &cfg.sizes {
        let mut spec = cfg.cluster.clone();
        spec.agents = agents;
        spec.resources = Resources::new(2 * HALF_AGENT_CPUS_MILLI, 2 * HALF_AGENT_MEM);
        if let Some(d) = &cfg.cluster.dir {
            spec.dir = Some(d.join(agents.to_string()));
        }
        let row = match size(&cfg, &spec).await {
            Ok(row) => row,
            // The sizes measured so far are worth printing.
            Err(e) => {
                failed = Some((agents, e.to_string()));
                break;
            }
        };
        tracing::info!(agents, extra_ms = ?row.loaded.p50.saturating_sub(row.baseline.p50), "paper size done");
        rows.push(row);
    }
    Ok(PaperReport {
        task: cfg.task,
        window: cfg.window,
        rows,
        failed,
    })
}

/// The frameworks' tasks.
fn half_agent_task(mean: Duration) -> TaskShape {
    let ms = u64::try_from(mean.as_millis()).unwrap_or(u64::MAX);
    TaskShape {
        resources: Resources::new(HALF_AGENT_CPUS_MILLI, HALF_AGENT_MEM),
        run_ms: Some((ms - ms / 3, ms + ms / 3)),
    }
}

/// Subscribes `n` frameworks, each with its own certificate, launching on every offer.
async fn start_frameworks(
    cluster: &Cluster,
    n: usize,
    task: Duration,
) -> Result<Vec<Launcher>, LoadgenError> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("fw-{i}");
        let opts = tokio::task::block_in_place(|| cluster.framework_options(&name))?;
        let cfg = LauncherConfig {
            name,
            shape: half_agent_task(task),
            demand: Demand::PerOffer(1),
            pace: Pace::Offers,
            decline_for: Duration::from_secs(5),
        };
        out.push(Launcher::subscribe(opts, cfg).await?);
    }
    Ok(out)
}

/// Tasks that ended, over all `frameworks`.
fn finished(frameworks: &[Launcher]) -> u64 {
    frameworks
        .iter()
        .map(|l| {
            let c = l.counts();
            c.finished + c.failed
        })
        .sum()
}

/// Tasks RUNNING and not ended, over all `frameworks`; and how many reached RUNNING.
fn live_and_ran(frameworks: &[Launcher]) -> (u64, u64) {
    frameworks.iter().fold((0, 0), |(live, ran), l| {
        let c = l.counts();
        (
            live + c.running.saturating_sub(c.finished + c.failed),
            ran + c.running,
        )
    })
}

async fn size(cfg: &PaperConfig, spec: &ClusterSpec) -> Result<PaperRow, LoadgenError> {
    let cluster = Cluster::start(spec).await?;
    let pid = cluster.leader_pid()?;
    let failures_before = cluster.fleet.stats().failures;
    let (idle, _) = crate::idle::measure(pid, &cluster.fleet, cfg.idle_window).await?;
    let probe_cfg = LauncherConfig {
        name: "probe".into(),
        shape: crate::churn::small_task(Duration::from_secs(1)),
        demand: Demand::Submitted { hold_offers: false },
        pace: Pace::OneAtATime { gap: PROBE_GAP },
        decline_for: Duration::from_secs(3600),
    };
    let probe_opts = client_options(&cluster.dir, PROBE, cluster.addrs.clone())?;
    let probe = Launcher::subscribe(probe_opts, probe_cfg).await?;
    probe.go();
    let k = cfg.baseline_launches.max(1) as u64;
    probe
        .wait_for(
            Duration::from_secs(120),
            "baseline probe launches done",
            |c| c.running >= k,
        )
        .await?;
    probe.pause();
    probe.drain(Duration::from_secs(30)).await?;
    let baseline_n = probe.counts().running as usize;

    let frameworks = start_frameworks(&cluster, cfg.frameworks, cfg.task).await?;
    for f in &frameworks {
        f.go();
    }
    let full = 2 * spec.agents as u64 * 95 / 100;
    let warm_deadline = Instant::now() + cfg.warmup;
    while live_and_ran(&frameworks).0 < full && Instant::now() < warm_deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Steady state, as in the paper: tasks ending (and freeing resources) all the time. A
    // cluster filled in a burst runs its first tasks for at least two thirds of the mean
    // before any ends; a window opened then measures that wait, not the master (every probe
    // launch waits for the first task to end: 19.2 s at 1,000 agents, run after run).
    let turned_over = full / 20;
    let steady_deadline = Instant::now() + cfg.task * 4 / 3;
    while finished(&frameworks) < turned_over && Instant::now() < steady_deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (live_at_window, ran_before) = live_and_ran(&frameworks);
    tracing::info!(
        agents = spec.agents,
        live_at_window,
        master_pid = pid,
        "paper window"
    );
    let before = ProcSample::read(pid)?;
    probe.go();
    // The measurement window: the probe launches one task after another meanwhile.
    tokio::time::sleep(cfg.window).await;
    probe.pause();
    let after = ProcSample::read(pid)?;
    let ran_after = live_and_ran(&frameworks).1;
    // A probe launch still under way a minute after the window is reported, not waited for:
    // the row says how many and which, and its latency is not in the percentiles.
    let drained = probe.drain(PROBE_DRAIN).await;
    let book = probe.stop().await?;
    let stuck = book.under_way();
    if let Err(e) = drained {
        tracing::warn!(error = %e, tasks = ?stuck, "probe launches still under way after the window");
    }
    let mut failed = book.counts.failed;
    let mut kinds = book.failures.clone();
    for f in frameworks {
        failed += f.counts().failed;
        match f.stop().await {
            Ok(fw) => crate::launch_book::add_failures(&mut kinds, &fw.failures),
            Err(e) => tracing::warn!(error = %e, "a framework did not stop cleanly"),
        }
    }
    let (base, loaded) = book.latencies.split_at(baseline_n);
    let (base_stages, loaded_stages) = book.stages.split_at(baseline_n);
    let p50s = |s: &Stages| [&s.to_accept, &s.to_starting, &s.to_running].map(|l| l.summary().p50);
    let (b, l) = (p50s(&base_stages), p50s(&loaded_stages));
    let wall = after.at.duration_since(before.at).as_secs_f64().max(1e-9);
    Ok(PaperRow {
        agents: spec.agents,
        frameworks: cfg.frameworks,
        register_secs: cluster.register_secs,
        idle_cpu: idle.cpu,
        idle_rss_kib: idle.rss_kib,
        baseline: base.summary(),
        loaded: loaded.summary(),
        stage_p50s: [(b[0], l[0]), (b[1], l[1]), (b[2], l[2])],
        live_at_window,
        launches_per_s: (ran_after - ran_before) as f64 / wall,
        cpu: before.cpu_share_until(&after).0,
        rss_kib: after.rss_kib,
        failed,
        fleet_failures: cluster.fleet.stats().failures - failures_before,
        failures: crate::launch_book::failure_kinds(&kinds),
        stuck,
    })
}

impl fmt::Display for PaperReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "B1: the Mesos paper's scalability test: frameworks launching one task (2 CPUs, 4 GiB, {:?} ± 1/3) on every offer, two per agent; a probe framework launching one tiny task at a time ({:?} window under load)", self.task, self.window)?;
        writeln!(f, "Probe latency: from the moment it wanted a task (it then revives its declined offers) to RUNNING. Extra = p50 under load − p50 without load (same fleet).")?;
        writeln!(f)?;
        writeln!(f, "| agents | frameworks | registered in | probe p50 no load | probe p50 / p99 loaded | extra (p50) | tasks live / 2×agents | launches/s | master CPU % core (idle) | us CPU/agent/s (idle) | RSS MiB (idle) | KiB/agent | failed tasks | agent session failures | anchor: Mesos paper |")?;
        writeln!(
            f,
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
        )?;
        for r in &self.rows {
            let n = r.agents.max(1) as f64;
            let extra_ms = (r.loaded.p50.as_secs_f64() - r.baseline.p50.as_secs_f64()) * 1e3;
            writeln!(
                f,
                "| {} | {} | {:.1} s | {} | {} / {} | {:+.1} ms | {} / {} | {:.0} | {:.1} ({:.1}) | {:.1} ({:.1}) | {:.1} ({:.1}) | {:.1} | {} | {} | < 1 s extra at 50,000{} |",
                r.agents,
                r.frameworks,
                r.register_secs,
                ms(r.baseline.p50),
                ms(r.loaded.p50),
                ms(r.loaded.p99),
                extra_ms,
                r.live_at_window,
                2 * r.agents,
                r.launches_per_s,
                r.cpu * 100.0,
                r.idle_cpu * 100.0,
                r.cpu * 1e6 / n,
                r.idle_cpu * 1e6 / n,
                r.rss_kib as f64 / 1024.0,
                r.idle_rss_kib as f64 / 1024.0,
                r.rss_kib as f64 / n,
                r.failed,
                r.fleet_failures,
                if extra_ms < PAPER_EXTRA.as_secs_f64() * 1e3 { "" } else { " (NOT met here)" }
            )?;
        }
        for r in &self.rows {
            let [a, s, run] = r.stage_p50s.map(|(b, l)| format!("{} / {}", ms(b), ms(l)));
            writeln!(
                f,
                "\n{} agents, probe launch stages, p50 without load / loaded: wanted → accept sent {a}; accept → STARTING {s}; STARTING → RUNNING {run}",
                r.agents
            )?;
            writeln!(f, "{} agents, failed tasks: {}", r.agents, r.failures)?;
            if !r.stuck.is_empty() {
                let ids: Vec<&str> = r.stuck.iter().map(|t| t.as_str()).collect();
                writeln!(
                    f,
                    "{} agents: probe launches not RUNNING {:?} after the window (not in the percentiles): {}",
                    r.agents,
                    PROBE_DRAIN,
                    ids.join(", ")
                )?;
            }
        }
        if let Some((agents, why)) = &self.failed {
            writeln!(f, "\n{agents} agents: FAILED: {why}")?;
        }
        writeln!(
            f,
            "\nProbe launches: {}",
            self.rows
                .iter()
                .map(|r| format!(
                    "{} agents: {} without load, {} loaded",
                    r.agents, r.baseline.count, r.loaded.count
                ))
                .collect::<Vec<_>>()
                .join("; ")
        )
    }
}
