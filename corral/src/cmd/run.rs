//! `corral run`: one task through `framework::oneshot` (which subscribes, places, launches,
//! follows failovers, relaunches a task that never started and reads the output). This file
//! builds the task from the arguments and prints what happens.
//!
//! Exit status: the task's exit code; 128+N when signal N killed it (a memory-limit kill is
//! SIGKILL: 137); 125 when Corral could not run it (no agent fits, launch failure, task lost)
//! or could not show the output of a task that ended (every read of it failed, retried at the
//! leader of the moment until `framework::ReadRetry`'s deadline): never 0 without the output.

use super::client_options;
use crate::cli::{RunArgs, TaskArgs};
use anyhow::{bail, Context, Result};
use framework::oneshot::{self, OneShotError, OneShotSink, OneShotSpec, Outcome, Progress};
use framework::ClientOptions;
use proto::{
    CommandInfo, ContainerSettings, LogStream, NetworkMode, Resources, StatusReason, TaskId,
    TaskInfo,
};
use std::io::Write;

pub async fn run(args: RunArgs) -> Result<u8> {
    if !args.local {
        return run_task(client_options(&args.connect)?, &args.task).await;
    }
    let (cluster, _dir, opts) = crate::local::start_throwaway().await?;
    let result = run_task(opts, &args.task).await;
    cluster.stop().await;
    result
}

pub async fn run_task(opts: ClientOptions, task: &TaskArgs) -> Result<u8> {
    let placement_timeout =
        crate::config::seconds("placement-timeout", task.placement_timeout.max(0.1))?;
    let name = task.name.clone().unwrap_or_else(|| "corral-run".to_owned());
    let uuid = uuid::Uuid::new_v4().simple().to_string();
    let spec = OneShotSpec {
        task: TaskInfo {
            task_id: TaskId::new(format!("{}-{}", sanitize(&name), &uuid[..8])),
            name: name.clone(),
            agent_id: proto::AgentId::new(""),
            resources: task_resources(task)?,
            command: CommandInfo {
                user: task.user.clone(),
                ..command(&task.command)
            },
            container: ContainerSettings {
                network: if task.isolated_network {
                    NetworkMode::Isolated
                } else {
                    NetworkMode::Host
                },
                pids_limit: task.pids,
                cpu_hard_limit: None,
                oom_policy: Some(task.oom_policy.parse().map_err(anyhow::Error::msg)?),
            },
            kill_grace_ms: None,
            labels: Default::default(),
        },
        placement_timeout,
        max_relaunches: oneshot::MAX_RELAUNCHES,
    };
    let mut info = framework::framework_info(&name);
    info.roles = vec![task.role.clone()];
    info.failover_timeout_ms = 60_000;
    let interrupt = super::shutdown_signal();
    let outcome = match oneshot::run(opts, info, spec, interrupt, &mut Printer).await {
        Ok(outcome) => outcome,
        Err(e @ OneShotError::Subscribe(_)) => {
            eprintln!("corral: {e}");
            return Ok(oneshot::EXIT_NOT_RUN);
        }
        Err(e) => bail!(e),
    };
    match &outcome {
        Outcome::Ended { status, output } => {
            if let Some(Err(e)) = output {
                eprintln!(
                    "corral: task {} ended ({}) but its output could not be shown: {e}",
                    status.task_id, status.state
                );
            }
            if status.reason == Some(StatusReason::MemoryLimit) {
                eprintln!(
                    "corral: task {} was killed at its memory limit",
                    status.task_id
                );
            }
        }
        Outcome::NotPlaced {
            task_id,
            wants,
            waited,
            largest,
        } => {
            let seen = largest
                .as_ref()
                .map_or("none".to_owned(), Resources::to_string);
            eprintln!(
                "corral: cannot place task {task_id}: it asks for {wants} but no agent offered that much within {waited:?} (largest offer seen: {seen})"
            );
        }
        Outcome::NeverStarted {
            task_id, launches, ..
        } => eprintln!("corral: task {task_id} never started; gave up after {launches} launches"),
        Outcome::Interrupted => {}
    }
    Ok(outcome.exit_code())
}

/// Progress to stderr, the task's stdout to stdout and its stderr to stderr.
struct Printer;

impl OneShotSink for Printer {
    fn progress(&mut self, progress: &Progress) {
        match progress {
            Progress::Launched {
                task_id,
                agent_id,
                hostname,
                resources,
            } => eprintln!(
                "corral: task {task_id} launched on {hostname} ({agent_id}) with {resources}"
            ),
            Progress::StateChanged(status) => eprintln!("corral: {}", oneshot::status_line(status)),
            Progress::Relaunching { task_id, next } => {
                eprintln!("corral: task {task_id} never started; launching it again as {next}")
            }
            Progress::Killing { task_id } => {
                eprintln!("corral: interrupted; killing task {task_id}")
            }
            Progress::MasterError { message } => {
                eprintln!("corral: the master reported: {message}")
            }
            Progress::Disconnected { reason } => {
                eprintln!("corral: lost the master ({reason}); re-subscribing")
            }
            Progress::Resubscribed { master } => {
                eprintln!("corral: re-subscribed through {master}")
            }
        }
    }

    /// A pipe that closed ends the printing, not the read's success.
    fn output(&mut self, stream: LogStream, data: &[u8]) -> bool {
        match stream {
            LogStream::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(data).and_then(|()| out.flush()).is_ok()
            }
            LogStream::Stderr => std::io::stderr().write_all(data).is_ok(),
        }
    }
}

fn task_resources(task: &TaskArgs) -> Result<Resources> {
    let cpus_milli =
        proto::parse_cpus(&task.cpus).with_context(|| format!("invalid --cpus '{}'", task.cpus))?;
    let mem_bytes =
        proto::parse_size(&task.mem).with_context(|| format!("invalid --mem '{}'", task.mem))?;
    if cpus_milli == 0 {
        bail!(
            "invalid --cpus '{}': a task needs more than 0 cpus",
            task.cpus
        );
    }
    if mem_bytes < 4 << 20 {
        bail!("invalid --mem '{}': a task needs at least 4MiB", task.mem);
    }
    if task.pids == Some(0) {
        bail!("invalid --pids 0: a task needs at least one process");
    }
    Ok(Resources::new(cpus_milli, mem_bytes))
}

/// One argument is a shell command (`corral run -- 'exit 3'`); several are an argv.
fn command(args: &[String]) -> CommandInfo {
    if args.len() == 1 {
        CommandInfo::shell(args[0].clone())
    } else {
        CommandInfo::argv(args.to_vec())
    }
}

/// The task name as a task id prefix: `[A-Za-z0-9_-]`, at most 48 characters.
fn sanitize(name: &str) -> String {
    let ok = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    let s: String = name
        .chars()
        .map(|c| if ok(c) { c } else { '-' })
        .take(48)
        .collect();
    Some(s)
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "task".to_owned())
}
