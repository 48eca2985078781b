//! `corral run`: a one-task framework. It subscribes, takes the first offer that fits, launches
//! the command, prints each state change to stderr, prints the task's output when it ends and
//! exits with the task's own exit status.
//!
//! Exit status: the task's exit code; 128+N when signal N killed it (a memory-limit kill is
//! SIGKILL: 137); 125 when Corral could not run it (no agent fits, launch failure, task lost)
//! or could not show the output of a task that ended (every read of it failed, retried at the
//! leader of the moment until `framework::ReadRetry`'s deadline): never 0 without the output.

use super::client_options;
use crate::cli::{RunArgs, TaskArgs};
use crate::local::LocalCluster;
use anyhow::{bail, Context, Result};
use framework::{ClientOptions, Scheduler, SchedulerEvent};
use proto::{
    CommandInfo, ContainerSettings, Filters, FrameworkCall, FrameworkEvent, LogStream, NetworkMode,
    OfferOperation, ReconcileTask, Resources, StatusReason, TaskId, TaskInfo, TaskState,
    TaskStatus,
};
use std::io::Write;
use std::time::Duration;

/// Exit status when Corral itself could not run the task.
pub const EXIT_NOT_RUN: u8 = 125;

pub async fn run(args: RunArgs) -> Result<u8> {
    if args.local {
        // Not under /tmp or /var/tmp: each task gets a private one mounted over it, which
        // would hide a sandbox below it.
        let dir = tempfile::Builder::new()
            .prefix("corral-local-")
            .tempdir_in(local_state_dir())
            .context("cannot create a temporary directory for the local cluster")?;
        let listen = "127.0.0.1:0".parse().expect("valid literal address");
        let cluster = LocalCluster::start(dir.path(), listen, None, true).await?;
        let identity = cluster.certs.identity(&cluster.certs.framework)?;
        let opts = ClientOptions::new(vec![cluster.master_addr.to_string()], identity);
        let result = run_task(opts, &args.task).await;
        cluster.stop().await;
        result
    } else {
        let opts = client_options(&args.connect)?;
        run_task(opts, &args.task).await
    }
}

/// Where `run --local` keeps its throw-away cluster. As root (tasks in containers, with a
/// private /tmp and /var/tmp): `/var/lib/corral-local` (0755, so the task user reaches its
/// sandbox).
/// Otherwise tasks are plain processes: /var/tmp when writable, else the temp dir.
fn local_state_dir() -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    if nix::unistd::geteuid().is_root() {
        let dir = std::path::PathBuf::from("/var/lib/corral-local");
        if std::fs::create_dir_all(&dir).is_ok()
            && std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).is_ok()
        {
            return dir;
        }
    }
    let var_tmp = std::path::Path::new("/var/tmp");
    if var_tmp.is_dir() && nix::unistd::access(var_tmp, nix::unistd::AccessFlags::W_OK).is_ok() {
        var_tmp.to_path_buf()
    } else {
        std::env::temp_dir()
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

fn sanitize(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(48)
        .collect();
    if s.is_empty() {
        "task".to_owned()
    } else {
        s
    }
}

fn describe(status: &TaskStatus) -> String {
    let mut line = format!("{}", status.state);
    if let Some(code) = status.exit_code {
        line.push_str(&format!(" (exit code {code})"));
    } else if let Some(sig) = status.signal {
        line.push_str(&format!(" (signal {sig})"));
    }
    if let Some(reason) = status.reason {
        line.push_str(&format!(" reason={reason:?}"));
    }
    if let Some(msg) = &status.message {
        line.push_str(&format!(": {msg}"));
    }
    if let Some(l) = &status.limitation {
        line.push_str(&format!(
            " [limit {:?} {}",
            l.resource,
            proto::format_size(l.limit)
        ));
        if let Some(p) = l.peak {
            line.push_str(&format!(", peak {}", proto::format_size(p)));
        }
        for (k, v) in &l.events {
            line.push_str(&format!(", {k}={v}"));
        }
        line.push(']');
    }
    line
}

/// How often `corral run` launches again a task the cluster reports was never started.
const MAX_RELAUNCHES: u32 = 3;

pub async fn run_task(opts: ClientOptions, task: &TaskArgs) -> Result<u8> {
    let want = task_resources(task)?;
    let placement_timeout =
        crate::config::seconds("placement-timeout", task.placement_timeout.max(0.1))?;
    let name = task.name.clone().unwrap_or_else(|| "corral-run".to_owned());
    let mut info = framework::framework_info(&name);
    info.failover_timeout_ms = 60_000;
    let mut sched = match Scheduler::subscribe(opts.clone(), info).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("corral: cannot subscribe to the master, so nothing was run: {e}");
            return Ok(EXIT_NOT_RUN);
        }
    };
    let uuid = uuid::Uuid::new_v4().simple().to_string();
    let mut task_id = TaskId::new(format!("{}-{}", sanitize(&name), &uuid[..8]));
    let container = ContainerSettings {
        network: if task.isolated_network {
            NetworkMode::Isolated
        } else {
            NetworkMode::Host
        },
        pids_limit: task.pids,
        cpu_hard_limit: None,
        oom_policy: Some(
            task.oom_policy
                .parse::<proto::OomPolicy>()
                .map_err(anyhow::Error::msg)?,
        ),
    };
    let placement_deadline = || {
        tokio::time::Instant::now()
            .checked_add(placement_timeout)
            .unwrap_or_else(|| {
                tokio::time::Instant::now() + Duration::from_secs(100 * 365 * 86_400)
            })
    };
    let mut deadline = placement_deadline();
    let mut relaunches = 0;
    let mut launched = false;
    let mut largest: Option<Resources> = None;
    let mut last_state: Option<TaskState> = None;
    let mut kill_sent = false;
    loop {
        let event = tokio::select! {
            e = sched.next_event() => e,
            // Ctrl-C or SIGTERM: kill the task (every process of it) and report how it ended.
            _ = super::shutdown_signal(), if !kill_sent => {
                kill_sent = true;
                if launched {
                    eprintln!("corral: interrupted; killing task {task_id}");
                    sched.call(FrameworkCall::Kill { task_id: task_id.clone(), agent_id: None, grace_ms: Some(2000) }).await?;
                    continue;
                }
                let _ = sched.teardown().await;
                return Ok(130);
            }
            _ = tokio::time::sleep_until(deadline), if !launched => {
                let seen = largest.map(|r| r.to_string()).unwrap_or_else(|| "none".to_owned());
                eprintln!(
                    "corral: cannot place task {task_id}: it asks for {want} but no agent offered that much within {placement_timeout:?} (largest offer seen: {seen})"
                );
                let _ = sched.teardown().await;
                return Ok(EXIT_NOT_RUN);
            }
        };
        let Some(event) = event else {
            bail!("the session with the master ended before the task did");
        };
        match event {
            SchedulerEvent::Framework(FrameworkEvent::Offers { offers }) => {
                for offer in offers {
                    let fits = !launched && offer.resources.contains(&want);
                    if !fits {
                        let r = &offer.resources;
                        largest = Some(match largest {
                            Some(l) => Resources::new(
                                l.cpus_milli.max(r.cpus_milli),
                                l.mem_bytes.max(r.mem_bytes),
                            ),
                            None => Resources::new(r.cpus_milli, r.mem_bytes),
                        });
                        let refuse = if launched { 3600.0 } else { 1.0 };
                        sched
                            .call(FrameworkCall::Decline {
                                offer_ids: vec![offer.id],
                                filters: Some(Filters {
                                    refuse_seconds: Some(refuse),
                                }),
                            })
                            .await?;
                        continue;
                    }
                    let task_info = TaskInfo {
                        task_id: task_id.clone(),
                        name: name.clone(),
                        agent_id: offer.agent_id.clone(),
                        resources: want.clone(),
                        command: command(&task.command),
                        container: container.clone(),
                        kill_grace_ms: None,
                        labels: Default::default(),
                    };
                    sched
                        .call(FrameworkCall::Accept {
                            offer_ids: vec![offer.id],
                            operations: vec![OfferOperation::Launch {
                                tasks: vec![task_info],
                            }],
                            filters: Some(Filters {
                                refuse_seconds: Some(3600.0),
                            }),
                        })
                        .await?;
                    sched
                        .call(FrameworkCall::Suppress { roles: vec![] })
                        .await?;
                    launched = true;
                    eprintln!(
                        "corral: task {task_id} launched on {} ({}) with {want}",
                        offer.hostname, offer.agent_id
                    );
                }
            }
            SchedulerEvent::Framework(FrameworkEvent::Update { status }) => {
                if status.task_id != task_id {
                    continue;
                }
                // The output of a task that ended is read before its last update is
                // acknowledged: until then the agent keeps the task (checkpointed), so the
                // sandbox stays readable even if the agent restarts in between.
                let shows_output = last_state != Some(status.state)
                    && matches!(
                        status.state,
                        TaskState::Finished | TaskState::Failed | TaskState::Killed
                    );
                if !shows_output {
                    acknowledge(&sched, &status).await?;
                }
                if last_state == Some(status.state) {
                    continue;
                }
                let started = last_state.is_some_and(|s| s != TaskState::Staging);
                last_state = Some(status.state);
                eprintln!("corral: {}", describe(&status));
                // The cluster says the task never reached its agent (say a leader changed between
                // committing the launch and sending it, and the agent re-registered without
                // it), or the leader, asked after a failover, has no record of it (the launch
                // was never committed, so never sent: TASK_UNKNOWN): nothing ran, so launching
                // it again, under a new id, is safe (Mesos's TASK_DROPPED contract).
                if !started
                    && matches!(
                        status.state,
                        TaskState::Dropped | TaskState::Gone | TaskState::Unknown
                    )
                    && relaunches < MAX_RELAUNCHES
                {
                    relaunches += 1;
                    let uuid = uuid::Uuid::new_v4().simple().to_string();
                    let next = TaskId::new(format!("{}-{}", sanitize(&name), &uuid[..8]));
                    eprintln!("corral: task {task_id} never started; launching it again as {next}");
                    task_id = next;
                    launched = false;
                    last_state = None;
                    deadline = placement_deadline();
                    sched.call(FrameworkCall::Revive { roles: vec![] }).await?;
                    continue;
                }
                if status.state.is_terminal() {
                    let mut code = exit_code(&status);
                    if shows_output {
                        if let Err(e) = print_output(&opts, &task_id).await {
                            eprintln!(
                                "corral: task {task_id} ended ({}) but its output could not be shown: {e}",
                                status.state
                            );
                            code = EXIT_NOT_RUN;
                        }
                        acknowledge(&sched, &status).await?;
                    }
                    if status.reason == Some(StatusReason::MemoryLimit) {
                        eprintln!("corral: task {task_id} was killed at its memory limit");
                    }
                    let _ = sched.teardown().await;
                    return Ok(code);
                }
            }
            SchedulerEvent::Framework(FrameworkEvent::Error { message }) => {
                eprintln!("corral: the master reported: {message}");
            }
            SchedulerEvent::Framework(_) => {}
            SchedulerEvent::Disconnected { reason } => {
                eprintln!("corral: lost the master ({reason}); re-subscribing");
            }
            SchedulerEvent::Resubscribed { master } => {
                eprintln!("corral: re-subscribed through {master}");
                if launched {
                    sched
                        .call(FrameworkCall::Reconcile {
                            tasks: vec![ReconcileTask {
                                task_id: task_id.clone(),
                                agent_id: None,
                            }],
                        })
                        .await?;
                } else {
                    sched.call(FrameworkCall::Revive { roles: vec![] }).await?;
                }
            }
            SchedulerEvent::Terminated { reason } => {
                bail!("the master ended the session: {reason}");
            }
        }
    }
}

fn exit_code(status: &TaskStatus) -> u8 {
    match status.state {
        TaskState::Finished => 0,
        TaskState::Failed | TaskState::Killed => {
            if let Some(code) = status.exit_code {
                (code & 0xff) as u8
            } else if let Some(sig) = status.signal {
                128u8.saturating_add(sig.clamp(0, 127) as u8)
            } else if status.reason == Some(StatusReason::MemoryLimit) {
                137
            } else if status.state == TaskState::Killed {
                143
            } else {
                EXIT_NOT_RUN
            }
        }
        _ => EXIT_NOT_RUN,
    }
}

/// Acknowledges an update that asks for it.
async fn acknowledge(sched: &Scheduler, status: &TaskStatus) -> Result<()> {
    if let (Some(uuid), Some(agent_id)) = (status.uuid.clone(), status.agent_id.clone()) {
        sched
            .call(FrameworkCall::Acknowledge {
                agent_id,
                task_id: status.task_id.clone(),
                uuid,
            })
            .await?;
    }
    Ok(())
}

/// Prints the task's stdout to stdout and its stderr to stderr, all of each, reading it from
/// the leader of the moment (`framework::read_output` retries a failed read there, within
/// its default deadline). A pipe that closed ends the printing, not the read's success.
async fn print_output(
    opts: &ClientOptions,
    task_id: &TaskId,
) -> Result<(), framework::OutputError> {
    for stream in [LogStream::Stdout, LogStream::Stderr] {
        let retry = framework::ReadRetry::default();
        framework::read_output(opts, task_id, stream, retry, |data| match stream {
            LogStream::Stdout => std::io::stdout().write_all(data).is_ok(),
            LogStream::Stderr => std::io::stderr().write_all(data).is_ok(),
        })
        .await?;
    }
    let _ = std::io::stdout().flush();
    Ok(())
}
