//! `corral bench`: the load generator (`loadgen` crate). Argument handling and printing only.

use crate::cli::{BenchAgentsArgs, BenchCommand, BenchFailoverArgs, BenchIdleArgs};
use anyhow::{bail, Context, Result};
use std::time::Duration;

pub async fn run(cmd: BenchCommand) -> Result<u8> {
    match cmd {
        BenchCommand::Idle(a) => idle(a).await,
        BenchCommand::Agents(a) => agents(a).await,
        BenchCommand::Failover(a) => failover(a).await,
    }
}

async fn failover(a: BenchFailoverArgs) -> Result<u8> {
    if a.agents == 0 {
        bail!("--agents: give at least one agent");
    }
    let cfg = loadgen::failover::FailoverConfig {
        corral_bin: std::env::current_exe().context("cannot find the corral binary")?,
        agents: a.agents,
        dir: a.fleet.dir,
        ramp_per_agent: Duration::from_millis(a.fleet.ramp_ms_per_agent),
        max_connecting: a.fleet.max_connecting.max(1),
        settle: Duration::from_secs(a.settle_secs),
    };
    let report = loadgen::failover::run(cfg).await?;
    println!("{report}");
    Ok(0)
}

fn secs(what: &str, s: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(s).with_context(|| format!("--{what} {s}: not a duration"))
}

async fn idle(a: BenchIdleArgs) -> Result<u8> {
    if a.agents.is_empty() || a.agents.windows(2).any(|w| w[0] >= w[1]) {
        bail!("--agents: give ascending fleet sizes, e.g. 100,1000,10000");
    }
    let cfg = loadgen::idle::IdleConfig {
        corral_bin: std::env::current_exe().context("cannot find the corral binary")?,
        steps: a.agents,
        window: Duration::from_secs(a.window_secs.max(1)),
        settle: Duration::from_secs(a.settle_secs),
        dir: a.fleet.dir,
        ramp_per_agent: Duration::from_millis(a.fleet.ramp_ms_per_agent),
        max_connecting: a.fleet.max_connecting.max(1),
    };
    let report = loadgen::idle::run(cfg).await?;
    println!("{report}");
    Ok(0)
}

async fn agents(a: BenchAgentsArgs) -> Result<u8> {
    if a.master.is_empty() {
        bail!("missing --master HOST:PORT (or CORRAL_MASTER)");
    }
    let resources = a
        .resources
        .parse()
        .map_err(|e| anyhow::anyhow!("--resources '{}': {e}", a.resources))?;
    let ids = tokio::task::block_in_place(|| {
        loadgen::issue_agent_identities(&a.ca_dir, &a.prefix, 0, a.agents, 2)
    })?;
    let cfg = loadgen::FleetConfig {
        resources,
        task_duration: secs("task-secs", a.task_secs)?,
        ramp: secs("ramp-secs", a.ramp_secs)?,
        max_connecting: a.max_connecting.max(1),
        ..loadgen::FleetConfig::new(a.master)
    };
    let mut fleet = loadgen::Fleet::new(cfg);
    fleet.add(ids);
    let every = Duration::from_secs(a.report_secs.max(1));
    let shutdown = super::shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tokio::time::sleep(every) => println!("{}", fleet.stats()),
        }
    }
    let last = fleet.stats();
    fleet.stop().await;
    println!("{last}");
    Ok(0)
}
