//! The service framework: K instances of a long-running command, kept alive.
//!
//! Instance `i` runs the command with `SERVICE_INSTANCE=i` and `SERVICE_TASK_ID` in its
//! environment, as task id `NAME-i-g`, `g` counting the instance's launches from 0. When the
//! instance's current task ends in any way — it exited, was killed by someone else, failed at
//! launch, or its agent was lost (`TASK_UNREACHABLE`, `TASK_LOST`, `TASK_GONE`) — the instance
//! is pending again and is relaunched on the next offer it fits in, as `NAME-i-(g+1)`. A task
//! that is no instance's current one but reports `TASK_RUNNING` (a copy on an agent that came
//! back from a partition) is killed, so there are never more than K.
//!
//! Offers: pending instances are spread over the offers of one round (one instance per offer
//! in turn while they fit), so instances land on different agents when they can; offers that
//! take none are declined with the `--refuse-seconds` filter. With all instances launched the
//! framework suppresses offers; when an instance is lost it revives. After a master failover
//! it reconciles every task.

use crate::{batch::describe, dispatch, fit, say, ConnectArgs, Handler, TaskArgs};
use framework::Scheduler;
use proto::{CommandInfo, Offer, TaskId, TaskState, TaskStatus};
use std::future::Future;

#[derive(clap::Parser, Debug)]
#[command(
    name = "service-framework",
    about = "Keeps K instances of a command running on a Corral cluster"
)]
pub struct ServiceArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[command(flatten)]
    pub task: TaskArgs,
    /// How many instances to keep running.
    #[arg(long)]
    pub instances: usize,
    /// The framework's name (and the prefix of its task ids).
    #[arg(long, default_value = "service")]
    pub name: String,
}

/// One instance: its launches so far and its current task.
#[derive(Debug, Clone)]
struct Instance {
    generation: u32,
    task: Option<TaskId>,
    running: bool,
}

struct Service {
    args: ServiceArgs,
    per_task: proto::Resources,
    refuse: proto::Filters,
    instances: Vec<Instance>,
    suppressed: bool,
    last_running: usize,
}

/// Keeps the instances running until `stop` resolves, then tears the framework down.
pub async fn run(args: ServiceArgs, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
    anyhow::ensure!(args.instances > 0, "--instances must be at least 1");
    let opts = args.connect.client_options()?;
    let per_task = args.task.resources()?;
    let refuse = args.task.refuse()?;
    let mut sched = Scheduler::subscribe(opts, framework::framework_info(&args.name)).await?;
    say(format_args!(
        "subscribed as {} ({} instances of {per_task})",
        sched.framework_id(),
        args.instances
    ));
    let mut service = Service {
        instances: vec![
            Instance {
                generation: 0,
                task: None,
                running: false,
            };
            args.instances
        ],
        args,
        per_task,
        refuse,
        suppressed: false,
        last_running: 0,
    };
    tokio::pin!(stop);
    loop {
        let event = tokio::select! {
            e = sched.next_event() => e,
            _ = &mut stop => break,
        };
        dispatch(&sched, event, &mut service).await?;
        service.report_running();
    }
    say("stopping: tearing the framework down");
    sched.teardown().await?;
    Ok(())
}

impl Service {
    fn pending(&self) -> Vec<usize> {
        (0..self.instances.len())
            .filter(|&i| self.instances[i].task.is_none())
            .collect()
    }

    /// The next task of instance `i`, on `offer`; the instance now waits for it.
    fn task(&mut self, i: usize, offer: &Offer) -> proto::TaskInfo {
        let inst = &mut self.instances[i];
        let task_id = format!("{}-{i}-{}", self.args.name, inst.generation);
        inst.generation += 1;
        inst.task = Some(TaskId::new(&task_id));
        inst.running = false;
        let mut cmd = CommandInfo::shell(&self.args.task.command);
        cmd.environment
            .insert("SERVICE_INSTANCE".into(), i.to_string());
        cmd.environment
            .insert("SERVICE_TASK_ID".into(), task_id.clone());
        say(format_args!(
            "instance {i}: launching {task_id} on {}",
            offer.hostname
        ));
        framework::task(&task_id, offer, self.per_task.clone(), cmd)
    }

    /// Prints `running: k/K` when k changed.
    fn report_running(&mut self) {
        let k = self.instances.iter().filter(|i| i.running).count();
        if k != self.last_running {
            self.last_running = k;
            say(format_args!("running: {k}/{}", self.instances.len()));
        }
    }
}

impl Handler for Service {
    /// Spreads pending instances over the offers, one per offer in turn.
    async fn offers(&mut self, sched: &Scheduler, offers: Vec<Offer>) -> anyhow::Result<()> {
        let mut pending = self.pending().into_iter();
        let mut room: Vec<usize> = offers
            .iter()
            .map(|o| fit(&o.resources, &self.per_task, self.instances.len()))
            .collect();
        let mut placed: Vec<Vec<usize>> = vec![Vec::new(); offers.len()];
        'spread: loop {
            let mut any = false;
            for (k, r) in room.iter_mut().enumerate() {
                if *r == 0 {
                    continue;
                }
                let Some(i) = pending.next() else {
                    break 'spread;
                };
                placed[k].push(i);
                *r -= 1;
                any = true;
            }
            if !any {
                break;
            }
        }
        for (offer, instances) in offers.into_iter().zip(placed) {
            if instances.is_empty() {
                sched
                    .decline(vec![offer.id], Some(self.refuse.clone()))
                    .await?;
                continue;
            }
            let tasks = instances.iter().map(|&i| self.task(i, &offer)).collect();
            sched.launch(&offer, tasks).await?;
        }
        if self.pending().is_empty() && !self.suppressed {
            say("all instances launched: suppressing offers");
            sched.suppress(vec![]).await?;
            self.suppressed = true;
        }
        Ok(())
    }

    async fn update(&mut self, sched: &Scheduler, status: &TaskStatus) -> anyhow::Result<()> {
        let current = self
            .instances
            .iter()
            .position(|inst| inst.task.as_ref() == Some(&status.task_id));
        let Some(i) = current else {
            if status.state == TaskState::Running {
                say(format_args!("{} is stale: killing it", status.task_id));
                sched.kill(&status.task_id, None).await?;
            }
            return Ok(());
        };
        let lost = status.state.is_terminal()
            || matches!(status.state, TaskState::Unreachable | TaskState::Unknown);
        if status.state == TaskState::Running && !self.instances[i].running {
            self.instances[i].running = true;
            let agent = status.agent_id.as_ref().map(|a| a.as_str()).unwrap_or("?");
            say(format_args!(
                "instance {i}: {} running on agent {agent}",
                status.task_id
            ));
        } else if lost {
            say(format_args!(
                "instance {i}: {} {}: relaunching",
                status.task_id,
                describe(status)
            ));
            self.instances[i].task = None;
            self.instances[i].running = false;
            if self.suppressed {
                say("an instance is pending: reviving offers");
                sched.revive(vec![]).await?;
                self.suppressed = false;
            }
        }
        Ok(())
    }

    async fn resubscribed(&mut self, sched: &Scheduler) -> anyhow::Result<()> {
        self.suppressed = false;
        sched.reconcile_all().await?;
        Ok(())
    }
}
