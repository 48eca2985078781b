//! Scenario "idle": one real `corral master` process and a fleet of simulated agents that grows
//! in steps (say 100, 1,000, 10,000); at each step, once every agent is registered and a settle
//! time has passed, the master's CPU, RSS and packets are measured over a window. Issue 11's
//! target: under 5 us of master CPU per agent per second and under 20 KiB of RSS per agent.

use crate::masters::{
    active_agents, client_options, start_masters, wait_serving, work_dir, AGENT_PREFIX,
};
use crate::{issue_agent_identities, Fleet, FleetConfig, LoadgenError, ProcSample, CLOCK_TICK};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// The anchor of issue 11, per agent: CPU microseconds per second and KiB of RSS.
pub const TARGET_US_PER_AGENT_S: f64 = 5.0;
pub const TARGET_KIB_PER_AGENT: f64 = 20.0;
/// What issue 11 measured with real `corral agent` processes (100 and 300 agents).
pub const BEFORE_US_PER_AGENT_S: f64 = 250.0;
pub const BEFORE_KIB_PER_AGENT: f64 = 74.0;

#[derive(Clone, Debug)]
pub struct IdleConfig {
    /// The `corral` binary that runs the master.
    pub corral_bin: PathBuf,
    /// Fleet sizes to measure at, ascending (the fleet grows from one to the next).
    pub steps: Vec<usize>,
    /// Measurement window at each step.
    pub window: Duration,
    /// Wait after every agent registered, before measuring.
    pub settle: Duration,
    /// Where the certificates, the master's data and its log go; a temporary directory
    /// (removed at the end) when `None`.
    pub dir: Option<PathBuf>,
    /// Registration ramp per added agent (jitter window = this × agents added).
    pub ramp_per_agent: Duration,
    /// Registrations in flight at once.
    pub max_connecting: usize,
}

/// One measured step.
#[derive(Clone, Debug)]
pub struct IdleRow {
    pub agents: usize,
    /// Master CPU as a share of one core: by schedstat, and by `/proc/PID/stat` ticks.
    pub cpu: f64,
    pub cpu_ticks: f64,
    pub rss_kib: u64,
    /// Datagrams per second into and out of the master (counted at the agents' connections).
    pub pkts_in: f64,
    pub pkts_out: f64,
    /// The load generator's own CPU as a share of one core, and its RSS.
    pub generator_cpu: f64,
    pub generator_rss_kib: u64,
    /// How long issuing the step's agent certificates took.
    pub issue_secs: f64,
    /// How long the step's agents took to register.
    pub register_secs: f64,
    /// How long the master took to answer `GetState` (a linearizable read listing every agent).
    pub state_ms: f64,
    /// Registration failures and lost sessions during the step.
    pub failures: u64,
}

#[derive(Clone, Debug)]
pub struct IdleReport {
    pub master_pid: u32,
    pub window: Duration,
    /// The master with no agent.
    pub baseline: IdleRow,
    pub rows: Vec<IdleRow>,
    /// The master's log, when the directory is kept.
    pub log: Option<PathBuf>,
}

/// Measures the master (and ourselves) over `window`.
pub(crate) async fn measure(
    pid: u32,
    fleet: &Fleet,
    window: Duration,
) -> Result<(IdleRow, ProcSample), LoadgenError> {
    let me = std::process::id();
    let (m0, g0, f0) = (ProcSample::read(pid)?, ProcSample::read(me)?, fleet.stats());
    // The measurement window itself: nothing is waited for here.
    tokio::time::sleep(window).await;
    let (m1, g1, f1) = (ProcSample::read(pid)?, ProcSample::read(me)?, fleet.stats());
    let wall = m1.at.duration_since(m0.at).as_secs_f64().max(1e-9);
    let (cpu, cpu_ticks) = m0.cpu_share_until(&m1);
    let row = IdleRow {
        agents: f1.registered,
        cpu,
        cpu_ticks,
        rss_kib: m1.rss_kib,
        pkts_in: f1.datagrams_out.saturating_sub(f0.datagrams_out) as f64 / wall,
        pkts_out: f1.datagrams_in.saturating_sub(f0.datagrams_in) as f64 / wall,
        generator_cpu: g0.cpu_share_until(&g1).0,
        generator_rss_kib: g1.rss_kib,
        issue_secs: 0.0,
        state_ms: 0.0,
        register_secs: 0.0,
        failures: f1.failures - f0.failures,
    };
    Ok((row, m1))
}

/// Runs the scenario and returns its table. Needs a multi-thread tokio runtime (certificates
/// are issued on the calling worker with `block_in_place`).
pub async fn run(cfg: IdleConfig) -> Result<IdleReport, LoadgenError> {
    let (dir, _temp) = work_dir(cfg.dir.as_deref())?;
    let mut masters = start_masters(&cfg.corral_bin, &dir, 1)?;
    let op = client_options(&dir, "op", vec![masters[0].addr.clone()])?;
    wait_serving(&mut masters, &op).await?;
    let master = &masters[0];
    let pid = master.pid();
    let mut fleet_cfg = FleetConfig::new(vec![master.addr.clone()]);
    fleet_cfg.max_connecting = cfg.max_connecting;
    let mut fleet = Fleet::new(fleet_cfg.clone());
    tokio::time::sleep(cfg.settle).await;
    let (baseline, _) = measure(pid, &fleet, cfg.window).await?;
    let mut rows = Vec::new();
    let certs_dir = dir.join("certs");
    for &n in &cfg.steps {
        let have = fleet.len();
        if n <= have {
            continue;
        }
        let started = tokio::time::Instant::now();
        let ids = tokio::task::block_in_place(|| {
            issue_agent_identities(&certs_dir, AGENT_PREFIX, have, n - have, 2)
        })?;
        let issue_secs = started.elapsed().as_secs_f64();
        let started = tokio::time::Instant::now();
        // Each step's agents ramp in over a window proportional to their number.
        fleet_cfg.ramp = cfg.ramp_per_agent * (n - have) as u32;
        fleet.set_ramp(fleet_cfg.ramp);
        fleet.add(ids);
        let timeout =
            Duration::from_secs(60) + fleet_cfg.ramp + Duration::from_millis(20) * n as u32;
        fleet.wait_registered(n, timeout).await?;
        let register_secs = started.elapsed().as_secs_f64();
        let asked = tokio::time::Instant::now();
        let listed = active_agents(&op).await?;
        let state_ms = asked.elapsed().as_secs_f64() * 1e3;
        if listed != n {
            return Err(LoadgenError::Master(format!(
                "lists {listed} active simulated agents, {n} registered"
            )));
        }
        tokio::time::sleep(cfg.settle).await;
        // Logged so that a profiler can be attached to the master for the window.
        tracing::info!(agents = n, master_pid = pid, window = ?cfg.window, "measuring");
        let (mut row, _) = measure(pid, &fleet, cfg.window).await?;
        row.register_secs = register_secs;
        row.issue_secs = issue_secs;
        row.state_ms = state_ms;
        tracing::info!(
            agents = n,
            cpu = row.cpu,
            rss_kib = row.rss_kib,
            "idle step measured"
        );
        rows.push(row);
    }
    fleet.stop().await;
    let log = cfg.dir.as_ref().map(|_| master.log.clone());
    drop(masters);
    Ok(IdleReport {
        master_pid: pid,
        window: cfg.window,
        baseline,
        rows,
        log,
    })
}

impl fmt::Display for IdleReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.baseline;
        writeln!(
            f,
            "The master idle with N simulated agents (corral master pid {}, {:?} window per step)",
            self.master_pid, self.window
        )?;
        writeln!(
            f,
            "CPU: /proc/PID/task/*/schedstat (1 ns resolution); in brackets /proc/PID/stat utime+stime ({} ms ticks)",
            CLOCK_TICK.as_millis()
        )?;
        writeln!(
            f,
            "Packets: UDP datagrams counted at the simulated agents' QUIC connections."
        )?;
        writeln!(f)?;
        writeln!(f, "| agents | certificates issued in | registered in | master CPU (% core) | us CPU/agent/s | over 0 agents | RSS MiB | KiB/agent over 0 agents | pkts/s in / out | pkts/agent/s | generator CPU, RSS | GetState | failures |")?;
        writeln!(f, "|---|---|---|---|---|---|---|---|---|---|---|---|---|")?;
        writeln!(
            f,
            "| 0 | - | - | {:.2} ({:.2}) | - | - | {:.1} | - | - | - | {:.1} %, {:.0} MiB | - | 0 |",
            b.cpu * 100.0,
            b.cpu_ticks * 100.0,
            b.rss_kib as f64 / 1024.0,
            b.generator_cpu * 100.0,
            b.generator_rss_kib as f64 / 1024.0
        )?;
        for r in &self.rows {
            let n = r.agents.max(1) as f64;
            writeln!(
                f,
                "| {} | {:.1} s | {:.1} s | {:.2} ({:.2}) | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} / {:.0} | {:.2} | {:.1} %, {:.0} MiB | {:.0} ms | {} |",
                r.agents,
                r.issue_secs,
                r.register_secs,
                r.cpu * 100.0,
                r.cpu_ticks * 100.0,
                r.cpu * 1e6 / n,
                (r.cpu - b.cpu) * 1e6 / n,
                r.rss_kib as f64 / 1024.0,
                r.rss_kib.saturating_sub(b.rss_kib) as f64 / n,
                r.pkts_in,
                r.pkts_out,
                (r.pkts_in + r.pkts_out) / n,
                r.generator_cpu * 100.0,
                r.generator_rss_kib as f64 / 1024.0,
                r.state_ms,
                r.failures
            )?;
        }
        writeln!(
            f,
            "| target (issue 11) | | | < 5 % at 10,000 | < {TARGET_US_PER_AGENT_S} | | | < {TARGET_KIB_PER_AGENT} | | | | |"
        )?;
        writeln!(
            f,
            "| before (issue 11, real agents) | | | 5.8 % at 100, 10.7 % at 300 | ~{BEFORE_US_PER_AGENT_S} | | | ~{BEFORE_KIB_PER_AGENT} | | | | |"
        )?;
        if let Some(log) = &self.log {
            writeln!(f, "\nmaster log: {}", log.display())?;
        }
        Ok(())
    }
}
