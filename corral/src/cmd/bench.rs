//! `corral bench`: the load generator (`loadgen` crate). Argument handling and printing only.

use crate::cli::{
    BenchAgentsArgs, BenchChurnArgs, BenchCommand, BenchFailoverArgs, BenchFleetArgs,
    BenchIdleArgs, BenchLaunchesArgs, BenchPaperArgs, BenchStormArgs,
};
use anyhow::{bail, Context, Result};
use std::time::Duration;

pub async fn run(cmd: BenchCommand) -> Result<u8> {
    match cmd {
        BenchCommand::Idle(a) => idle(a).await,
        BenchCommand::Agents(a) => agents(a).await,
        BenchCommand::Failover(a) => failover(a).await,
        BenchCommand::Churn(a) => churn(a).await,
        BenchCommand::Paper(a) => paper(a).await,
        BenchCommand::Launches(a) => launches(a).await,
        BenchCommand::Storm(a) => storm(a).await,
    }
}

/// The masters and fleet of a scenario: `masters` masters, `agents` agents offering
/// `resources`, started as the fleet arguments say.
fn cluster(
    fleet: BenchFleetArgs,
    masters: usize,
    agents: usize,
    resources: proto::Resources,
) -> Result<loadgen::cluster::ClusterSpec> {
    if agents == 0 {
        bail!("--agents: give at least one agent");
    }
    Ok(loadgen::cluster::ClusterSpec {
        corral_bin: std::env::current_exe().context("cannot find the corral binary")?,
        dir: fleet.dir,
        masters,
        agents,
        resources,
        task_duration: Duration::from_secs(1),
        ramp_per_agent: Duration::from_millis(fleet.ramp_ms_per_agent),
        max_connecting: fleet.max_connecting.max(1),
    })
}

/// What a paper agent offers (the frameworks' tasks take half each), and a churn agent.
fn small_agent() -> proto::Resources {
    proto::Resources::new(4000, 8 << 30)
}

async fn paper(a: BenchPaperArgs) -> Result<u8> {
    if a.agents.is_empty() || a.agents.contains(&0) {
        bail!("--agents: give fleet sizes, e.g. 1000,10000,50000");
    }
    if a.task_secs < 0.003 {
        bail!("--task-secs: give at least a few milliseconds");
    }
    let cfg = loadgen::paper::PaperConfig {
        cluster: cluster(a.fleet, 1, a.agents[0], small_agent())?,
        sizes: a.agents,
        frameworks: a.frameworks,
        task: secs("task-secs", a.task_secs)?,
        warmup: secs("warmup-secs", a.warmup_secs)?,
        window: secs("window-secs", a.window_secs)?,
        baseline_launches: a.baseline_launches.max(1),
        idle_window: secs("idle-secs", a.idle_secs)?,
    };
    let report = loadgen::paper::run(cfg).await?;
    println!("{report}");
    Ok(u8::from(report.failed.is_some()))
}

async fn launches(a: BenchLaunchesArgs) -> Result<u8> {
    let big = proto::Resources::new(64_000, 256 << 30);
    let cfg = loadgen::launches::LaunchesConfig {
        cluster: cluster(a.fleet, 3, a.agents, big)?,
        frameworks: a.frameworks.max(1),
        per_offer: a.per_offer.max(1),
        task: secs("task-secs", a.task_secs)?,
        warmup: secs("warmup-secs", a.warmup_secs)?,
        window: secs("window-secs", a.window_secs)?,
    };
    let report = loadgen::launches::run(cfg).await?;
    println!("{report}");
    Ok(0)
}

async fn storm(a: BenchStormArgs) -> Result<u8> {
    let mut spec = cluster(a.fleet, 3, a.agents, small_agent())?;
    spec.ramp_per_agent = Duration::ZERO;
    let cfg = loadgen::storm::StormConfig {
        cluster: spec,
        deadline: Duration::from_secs(a.deadline_secs.max(1)),
    };
    let report = loadgen::storm::run(cfg).await?;
    println!("{report}");
    Ok(0)
}

async fn churn(a: BenchChurnArgs) -> Result<u8> {
    if a.rate.is_nan() || a.rate <= 0.0 {
        bail!("--rate: give a positive rate");
    }
    let cfg = loadgen::churn::ChurnConfig {
        cluster: cluster(a.fleet, 1, a.agents, small_agent())?,
        rate: a.rate,
        duration: secs("duration-secs", a.duration_secs)?,
        task: secs("task-secs", a.task_secs)?,
    };
    let report = loadgen::churn::run(cfg).await?;
    println!("{report}");
    Ok(0)
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
