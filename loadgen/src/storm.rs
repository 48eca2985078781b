//! Scenario "storm": every simulated agent registers at once. Three replicated `corral master`
//! processes; N agents (10,000 by default) start with no ramp, admitted `max_connecting` at a
//! time by the load generator (a larger admission is a bigger storm). Times how long until
//! every agent is registered and counts the failed attempts; then kills the leader (SIGKILL)
//! and times the second storm, every agent re-registering with the new leader. A simulated
//! agent never gives up (it retries with the real agent's backoff, 0.2 s to 15 s); an agent
//! still unregistered at the deadline is reported as such.
//!
//! Knobs ([`StormConfig`]): agents, admission (`max_connecting`), deadline.

use crate::cluster::{Cluster, ClusterSpec};
use crate::{LoadgenError, ProcSample};
use std::fmt;
use std::time::Duration;
use tokio::time::Instant;

#[derive(Clone, Debug)]
pub struct StormConfig {
    /// Its `ramp_per_agent` should be zero.
    pub cluster: ClusterSpec,
    /// Each storm's deadline.
    pub deadline: Duration,
}

/// One storm.
#[derive(Clone, Debug, Default)]
pub struct StormRow {
    pub what: String,
    /// Until every agent was registered (with one master); `None`: not by the deadline.
    pub took: Option<Duration>,
    /// The most agents registered (with one master) at the end.
    pub registered: usize,
    pub failures: u64,
    /// The CPU of the master the agents registered with, over the storm, and its RSS after.
    pub cpu: f64,
    pub rss_kib: u64,
}

#[derive(Clone, Debug)]
pub struct StormReport {
    pub agents: usize,
    pub max_connecting: usize,
    pub issue_secs: f64,
    pub rows: Vec<StormRow>,
}

/// Polls (every 10 ms) until one master holds every agent, or the deadline; returns when it
/// did, and the largest count seen at the end.
async fn until_all_on_one(
    cluster: &Cluster,
    skip: Option<usize>,
    since: Instant,
    deadline: Duration,
) -> Result<(Option<Duration>, usize, usize), LoadgenError> {
    let n = cluster.fleet.len();
    loop {
        let counts = cluster.registered_per_master()?;
        let (best_ix, best) = counts
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != skip)
            .map(|(i, &c)| (i, c))
            .max_by_key(|&(_, c)| c)
            .unwrap_or((0, 0));
        if best == n {
            return Ok((Some(since.elapsed()), best, best_ix));
        }
        if since.elapsed() >= deadline {
            return Ok((None, best, best_ix));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Runs the scenario. Needs a multi-thread tokio runtime.
pub async fn run(cfg: StormConfig) -> Result<StormReport, LoadgenError> {
    let mut cluster = Cluster::launch(&cfg.cluster).await?;
    let pids: Vec<u32> = cluster.masters.iter().map(|m| m.pid()).collect();
    let before: Vec<ProcSample> = pids
        .iter()
        .map(|&p| ProcSample::read(p))
        .collect::<Result<_, _>>()?;
    let (took, registered, leader) =
        until_all_on_one(&cluster, None, cluster.added, cfg.deadline).await?;
    let first = StormRow {
        what: "first registration".into(),
        took,
        registered,
        failures: cluster.fleet.stats().failures,
        ..Default::default()
    };
    let first = with_cpu(first, &before[leader], pids[leader])?;
    let mut rows = vec![first];
    if took.is_some() && cluster.masters.len() > 1 {
        let failures_before = cluster.fleet.stats().failures;
        let before: Vec<ProcSample> = pids
            .iter()
            .map(|&p| ProcSample::read(p))
            .collect::<Result<_, _>>()?;
        tracing::info!(leader = %cluster.addrs[leader], "killing the leader");
        let killed = Instant::now();
        cluster.masters[leader].kill();
        let (took, registered, new_leader) =
            until_all_on_one(&cluster, Some(leader), killed, cfg.deadline).await?;
        let row = StormRow {
            what: format!("after kill -9 of the leader {}", cluster.addrs[leader]),
            took,
            registered,
            failures: cluster.fleet.stats().failures - failures_before,
            ..Default::default()
        };
        rows.push(with_cpu(row, &before[new_leader], pids[new_leader])?);
    }
    Ok(StormReport {
        agents: cluster.fleet.len(),
        max_connecting: cfg.cluster.max_connecting,
        issue_secs: cluster.issue_secs,
        rows,
    })
}

fn with_cpu(mut row: StormRow, before: &ProcSample, pid: u32) -> Result<StormRow, LoadgenError> {
    let after = ProcSample::read(pid)?;
    row.cpu = before.cpu_share_until(&after).0;
    row.rss_kib = after.rss_kib;
    Ok(row)
}

impl fmt::Display for StormReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Registration storm: {} simulated agents start at once (no ramp), at most {} handshakes in flight from the load generator; 3 masters (agent certificates issued in {:.1} s beforehand)",
            self.agents, self.max_connecting, self.issue_secs
        )?;
        writeln!(f)?;
        writeln!(f, "| storm | agents | all registered in | registered at the end | failed attempts / lost sessions | still unregistered (none gives up) | master CPU (% core) over the storm | master RSS MiB after |")?;
        writeln!(f, "|---|---|---|---|---|---|---|---|")?;
        for r in &self.rows {
            let took = r.took.map_or("NOT within the deadline".to_owned(), |d| {
                format!("{:.2} s", d.as_secs_f64())
            });
            writeln!(
                f,
                "| {} | {} | {} | {} | {} | {} | {:.1} | {:.1} |",
                r.what,
                self.agents,
                took,
                r.registered,
                r.failures,
                self.agents - r.registered,
                r.cpu * 100.0,
                r.rss_kib as f64 / 1024.0
            )?;
        }
        Ok(())
    }
}
