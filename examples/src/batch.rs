//! The batch framework: N tasks, each run to its end, failures retried.
//!
//! Task `i` runs the command with `BATCH_TASK_INDEX=i` and `BATCH_ATTEMPT=a` (from 1) in its
//! environment, as task id `NAME-i-a`. Its life: pending → launched (on an offer it fits in)
//! → finished, or failed and pending again while attempts remain, else failed for good. Only
//! the update of a task's current attempt counts, so a duplicate or late update (a resent
//! one, a reconciliation answer) never counts a task twice.
//!
//! Offers: each offer takes as many pending tasks as fit; an offer that takes none is
//! declined with the `--refuse-seconds` filter. With nothing pending the framework suppresses
//! offers (so its dominant share holds no idle offers and other frameworks get them); when a
//! failed task is queued again it revives. After a master failover it reconciles the tasks it
//! launched. When every task has ended it tears the framework down and reports.

use crate::{dispatch, fit, say, ConnectArgs, Handler, TaskArgs};
use framework::Scheduler;
use proto::{CommandInfo, Offer, ReconcileTask, TaskId, TaskState, TaskStatus};
use std::collections::VecDeque;

#[derive(clap::Parser, Debug)]
#[command(
    name = "batch-framework",
    about = "Runs N tasks to their end on a Corral cluster"
)]
pub struct BatchArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[command(flatten)]
    pub task: TaskArgs,
    /// How many tasks to run.
    #[arg(long)]
    pub tasks: usize,
    /// Runs of one task before it counts as failed (a failed run is retried).
    #[arg(long, default_value_t = 1)]
    pub attempts: u32,
    /// The framework's name (and the prefix of its task ids).
    #[arg(long, default_value = "batch")]
    pub name: String,
}

/// Where one task is.
#[derive(Debug, Clone, PartialEq)]
enum Slot {
    Pending { attempt: u32 },
    Launched { attempt: u32, task_id: TaskId },
    Finished,
    Failed { why: String },
}

/// What the run came to.
#[derive(Debug, PartialEq)]
pub struct Report {
    pub finished: usize,
    /// `(task index, why)` of each task that failed all its attempts.
    pub failed: Vec<(usize, String)>,
}

struct Batch {
    args: BatchArgs,
    per_task: proto::Resources,
    refuse: proto::Filters,
    slots: Vec<Slot>,
    pending: VecDeque<usize>,
    suppressed: bool,
}

/// Runs the batch to its end.
pub async fn run(args: BatchArgs) -> anyhow::Result<Report> {
    anyhow::ensure!(args.tasks > 0, "--tasks must be at least 1");
    anyhow::ensure!(args.attempts > 0, "--attempts must be at least 1");
    let opts = args.connect.client_options()?;
    let per_task = args.task.resources()?;
    let refuse = args.task.refuse()?;
    let info = framework::framework_info(&args.name);
    let mut sched = Scheduler::subscribe(opts, info).await?;
    say(format_args!(
        "subscribed as {} ({} tasks of {per_task})",
        sched.framework_id(),
        args.tasks
    ));
    let mut batch = Batch {
        slots: vec![Slot::Pending { attempt: 1 }; args.tasks],
        pending: (0..args.tasks).collect(),
        args,
        per_task,
        refuse,
        suppressed: false,
    };
    while !batch.done() {
        let event = sched.next_event().await;
        dispatch(&sched, event, &mut batch).await?;
    }
    sched.teardown().await?;
    Ok(batch.report())
}

impl Batch {
    fn done(&self) -> bool {
        self.slots
            .iter()
            .all(|s| matches!(s, Slot::Finished | Slot::Failed { .. }))
    }

    fn launched(&self) -> Vec<ReconcileTask> {
        self.slots
            .iter()
            .filter_map(|s| match s {
                Slot::Launched { task_id, .. } => Some(ReconcileTask {
                    task_id: task_id.clone(),
                    agent_id: None,
                }),
                _ => None,
            })
            .collect()
    }

    fn report(&self) -> Report {
        let mut report = Report {
            finished: 0,
            failed: Vec::new(),
        };
        for (i, s) in self.slots.iter().enumerate() {
            match s {
                Slot::Finished => report.finished += 1,
                Slot::Failed { why } => report.failed.push((i, why.clone())),
                _ => {}
            }
        }
        report
    }
}

impl Handler for Batch {
    /// Packs pending tasks into the offers; declines what takes none; suppresses when done.
    async fn offers(&mut self, sched: &Scheduler, offers: Vec<Offer>) -> anyhow::Result<()> {
        for offer in offers {
            let n = fit(&offer.resources, &self.per_task, self.pending.len());
            if n == 0 {
                say(format_args!(
                    "declined offer {} of {} for {} s",
                    offer.id, offer.hostname, self.args.task.refuse_seconds
                ));
                sched
                    .decline(vec![offer.id], Some(self.refuse.clone()))
                    .await?;
                continue;
            }
            let mut tasks = Vec::with_capacity(n);
            for i in self.pending.drain(..n) {
                let attempt = match self.slots[i] {
                    Slot::Pending { attempt } => attempt,
                    _ => continue,
                };
                let task_id = format!("{}-{i}-{attempt}", self.args.name);
                let mut cmd = CommandInfo::shell(&self.args.task.command);
                cmd.environment
                    .insert("BATCH_TASK_INDEX".into(), i.to_string());
                cmd.environment
                    .insert("BATCH_ATTEMPT".into(), attempt.to_string());
                tasks.push(framework::task(
                    &task_id,
                    &offer,
                    self.per_task.clone(),
                    cmd,
                ));
                say(format_args!("launching {task_id} on {}", offer.hostname));
                self.slots[i] = Slot::Launched {
                    attempt,
                    task_id: TaskId::new(task_id),
                };
            }
            sched.launch(&offer, tasks).await?;
        }
        if self.pending.is_empty() && !self.suppressed {
            say("nothing pending: suppressing offers");
            sched.suppress(vec![]).await?;
            self.suppressed = true;
        }
        Ok(())
    }

    /// A task's status: only its current attempt's terminal state counts.
    async fn update(&mut self, sched: &Scheduler, status: &TaskStatus) -> anyhow::Result<()> {
        let Some(i) = self.slots.iter().position(
            |s| matches!(s, Slot::Launched { task_id, .. } if *task_id == status.task_id),
        ) else {
            return Ok(());
        };
        let Slot::Launched { attempt, .. } = self.slots[i] else {
            return Ok(());
        };
        if status.state == TaskState::Finished {
            say(format_args!("{} finished", status.task_id));
            self.slots[i] = Slot::Finished;
            return Ok(());
        }
        // Unreachable may come back; Unknown answers a reconciliation for a task the master
        // lost (it was never committed): it has to run again.
        if !status.state.is_terminal() && status.state != TaskState::Unknown {
            return Ok(());
        }
        let why = describe(status);
        if attempt < self.args.attempts {
            say(format_args!("{} {why}: retrying", status.task_id));
            self.slots[i] = Slot::Pending {
                attempt: attempt + 1,
            };
            self.pending.push_back(i);
            if self.suppressed {
                say("work appeared: reviving offers");
                sched.revive(vec![]).await?;
                self.suppressed = false;
            }
        } else {
            say(format_args!(
                "{} {why}: giving up after {attempt} attempt(s)",
                status.task_id
            ));
            self.slots[i] = Slot::Failed { why };
        }
        Ok(())
    }

    async fn resubscribed(&mut self, sched: &Scheduler) -> anyhow::Result<()> {
        // A subscription clears suppression: the next offers decide again.
        self.suppressed = false;
        sched.reconcile(self.launched()).await?;
        Ok(())
    }
}

/// `failed (exit code 3)`, `killed`, `lost: agent gone`...
pub fn describe(status: &TaskStatus) -> String {
    let mut s = format!("{:?}", status.state).to_lowercase();
    if let Some(code) = status.exit_code {
        s.push_str(&format!(" (exit code {code})"));
    }
    if let Some(sig) = status.signal {
        s.push_str(&format!(" (signal {sig})"));
    }
    if let Some(m) = status.message.as_deref().filter(|m| !m.is_empty()) {
        s.push_str(&format!(": {m}"));
    }
    s
}
