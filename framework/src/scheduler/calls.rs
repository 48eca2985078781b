//! The calls a scheduler makes, as typed helpers over [`Scheduler::call`]: accepting and
//! declining offers, launching, acknowledging, reconciling, killing, suppressing and reviving
//! offers, messages to executors. Each queues one `FrameworkCall`; a call the master refuses
//! comes back as a `FrameworkEvent::Error` event, and the outcome of a launch or a kill comes
//! back as status updates.

use super::Scheduler;
use proto::{
    AgentId, CommandInfo, ExecutorId, ExecutorInfo, Filters, FrameworkCall, Offer, OfferId,
    OfferOperation, ReconcileTask, Resources, TaskId, TaskInfo, TaskStatus,
};
use session::ClientError;
use std::time::Duration;

/// Filters for a decline (or an accept): do not offer the declined resources of that agent to
/// this framework again for `refuse`. Mesos's default, without filters, is 5 s; a framework
/// with nothing to run should refuse for longer (and [`suppress`](Scheduler::suppress)), so
/// the allocator offers the resources to others.
///
/// ```
/// let f = framework::refuse_for(std::time::Duration::from_secs(30));
/// assert_eq!(f.refuse_seconds, Some(30.0));
/// ```
pub fn refuse_for(refuse: Duration) -> Filters {
    Filters {
        refuse_seconds: Some(refuse.as_secs_f64()),
    }
}

/// A task to launch on `offer`'s agent with `resources` out of the offer, running `command`
/// (see [`CommandInfo::shell`] and [`CommandInfo::argv`]); other settings at their defaults
/// (the agent's container settings and kill grace period). The task id must be unique within
/// the framework.
///
/// ```
/// # fn demo(offer: &proto::Offer) -> Result<(), Box<dyn std::error::Error>> {
/// use proto::{CommandInfo, Resources};
/// let mut cmd = CommandInfo::shell("echo hello from $HOSTNAME");
/// cmd.environment.insert("GREETING".into(), "hello".into());
/// let task = framework::task("hello-1", offer, "cpus:0.5;mem:64MiB".parse()?, cmd);
/// assert_eq!(task.agent_id, offer.agent_id);
/// # Ok(()) }
/// ```
pub fn task(task_id: &str, offer: &Offer, resources: Resources, command: CommandInfo) -> TaskInfo {
    TaskInfo {
        task_id: TaskId::new(task_id),
        name: task_id.to_owned(),
        agent_id: offer.agent_id.clone(),
        resources,
        command,
        container: Default::default(),
        kill_grace_ms: None,
        labels: Default::default(),
    }
}

impl Scheduler {
    /// Accepts offers (all of one agent) with operations on their combined resources; what
    /// the operations leave unused is declined with `filters`.
    ///
    /// ```no_run
    /// # async fn demo(sched: &framework::Scheduler, a: proto::Offer, b: proto::Offer,
    /// #               tasks: Vec<proto::TaskInfo>) -> Result<(), framework::ClientError> {
    /// use proto::OfferOperation;
    /// // Two offers of the same agent, pooled for one launch.
    /// sched
    ///     .accept(vec![a.id, b.id], vec![OfferOperation::Launch { tasks }], None)
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn accept(
        &self,
        offer_ids: Vec<OfferId>,
        operations: Vec<OfferOperation>,
        filters: Option<Filters>,
    ) -> Result<(), ClientError> {
        self.call(FrameworkCall::Accept {
            offer_ids,
            operations,
            filters,
        })
        .await
    }

    /// Launches `tasks` on `offer`'s agent (an accept of that one offer). Each task then
    /// reports `TASK_STAGING`, `TASK_STARTING`, `TASK_RUNNING` and a terminal state as
    /// [`SchedulerEvent::Framework`](crate::SchedulerEvent::Framework) updates; a task that
    /// does not fit in the offer gets `TASK_ERROR` saying what it lacked.
    ///
    /// ```no_run
    /// # async fn demo(sched: &framework::Scheduler, offer: &proto::Offer)
    /// #     -> Result<(), Box<dyn std::error::Error>> {
    /// use proto::CommandInfo;
    /// let want: proto::Resources = "cpus:1;mem:256MiB".parse()?;
    /// if offer.resources.contains(&want) {
    ///     let t = framework::task("job-7", offer, want, CommandInfo::shell("./run-job 7"));
    ///     sched.launch(offer, vec![t]).await?;
    /// } else {
    ///     sched.decline(vec![offer.id.clone()], None).await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn launch(&self, offer: &Offer, tasks: Vec<TaskInfo>) -> Result<(), ClientError> {
        let operations = vec![OfferOperation::Launch { tasks }];
        self.accept(vec![offer.id.clone()], operations, None).await
    }

    /// Launches `tasks` together under one custom `executor` (a program written with
    /// [`crate::executor`]) in one container on `offer`'s agent: all of them or none.
    pub async fn launch_group(
        &self,
        offer: &Offer,
        executor: ExecutorInfo,
        tasks: Vec<TaskInfo>,
    ) -> Result<(), ClientError> {
        let operations = vec![OfferOperation::LaunchGroup { executor, tasks }];
        self.accept(vec![offer.id.clone()], operations, None).await
    }

    /// Declines offers. With `filters` (see [`refuse_for`]) the master does not offer those
    /// agents' resources to this framework again for that long, unless it revives.
    ///
    /// ```no_run
    /// # async fn demo(sched: &framework::Scheduler, offers: Vec<proto::Offer>)
    /// #     -> Result<(), framework::ClientError> {
    /// use std::time::Duration;
    /// let ids = offers.into_iter().map(|o| o.id).collect();
    /// sched.decline(ids, Some(framework::refuse_for(Duration::from_secs(60)))).await?;
    /// # Ok(()) }
    /// ```
    pub async fn decline(
        &self,
        offer_ids: Vec<OfferId>,
        filters: Option<Filters>,
    ) -> Result<(), ClientError> {
        self.call(FrameworkCall::Decline { offer_ids, filters })
            .await
    }

    /// Stops offers to this framework in `roles` (all its roles when empty) until it revives:
    /// what a framework with nothing to run does, so that its offers go to others and its
    /// share does not count idle offers.
    ///
    /// ```no_run
    /// # async fn demo(sched: &framework::Scheduler, pending: usize)
    /// #     -> Result<(), framework::ClientError> {
    /// if pending == 0 {
    ///     sched.suppress(vec![]).await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn suppress(&self, roles: Vec<String>) -> Result<(), ClientError> {
        self.call(FrameworkCall::Suppress { roles }).await
    }

    /// Resumes offers in `roles` (all when empty) and clears every decline filter: what a
    /// framework does when work appears after it suppressed or declined with a long filter.
    ///
    /// ```no_run
    /// # async fn demo(sched: &framework::Scheduler) -> Result<(), framework::ClientError> {
    /// sched.revive(vec![]).await?;
    /// # Ok(()) }
    /// ```
    pub async fn revive(&self, roles: Vec<String>) -> Result<(), ClientError> {
        self.call(FrameworkCall::Revive { roles }).await
    }

    /// Acknowledges a status update, if it asks for it (it came from an agent: it has a uuid
    /// and an agent id); returns whether it did. The agent resends an update until it is
    /// acknowledged and sends the task's next update only then, so acknowledge every update
    /// once it is handled (written down, say). Reconciliation answers have no uuid.
    ///
    /// ```no_run
    /// # async fn demo(sched: &framework::Scheduler, status: proto::TaskStatus)
    /// #     -> Result<(), framework::ClientError> {
    /// if status.state.is_terminal() {
    ///     println!("{} ended: {:?} (exit code {:?})", status.task_id, status.state, status.exit_code);
    /// }
    /// sched.acknowledge(&status).await?;
    /// # Ok(()) }
    /// ```
    pub async fn acknowledge(&self, status: &TaskStatus) -> Result<bool, ClientError> {
        let (Some(uuid), Some(agent_id)) = (&status.uuid, &status.agent_id) else {
            return Ok(false);
        };
        self.call(FrameworkCall::Acknowledge {
            agent_id: agent_id.clone(),
            task_id: status.task_id.clone(),
            uuid: uuid.clone(),
        })
        .await?;
        Ok(true)
    }

    /// Explicit reconciliation: the master answers with the latest known state of each task
    /// (`TASK_UNKNOWN` for one it does not know), as updates without a uuid.
    ///
    /// ```no_run
    /// # async fn demo(sched: &framework::Scheduler) -> Result<(), framework::ClientError> {
    /// use proto::{ReconcileTask, TaskId};
    /// let mine = ["web-1", "web-2"].map(|t| ReconcileTask { task_id: TaskId::new(t), agent_id: None });
    /// sched.reconcile(mine.to_vec()).await?;
    /// # Ok(()) }
    /// ```
    pub async fn reconcile(&self, tasks: Vec<ReconcileTask>) -> Result<(), ClientError> {
        self.call(FrameworkCall::Reconcile { tasks }).await
    }

    /// Implicit reconciliation: the master answers with the state of every task of this
    /// framework it knows. Do it after [`SchedulerEvent::Resubscribed`](crate::SchedulerEvent)
    /// and when starting again with a saved framework id.
    pub async fn reconcile_all(&self) -> Result<(), ClientError> {
        self.reconcile(Vec::new()).await
    }

    /// Kills a task: SIGTERM, then SIGKILL after `grace` (the task's own `kill_grace_ms`, else
    /// the agent's default, when `None`). The task reports `TASK_KILLING`, then `TASK_KILLED`.
    ///
    /// ```no_run
    /// # async fn demo(sched: &framework::Scheduler) -> Result<(), framework::ClientError> {
    /// use std::time::Duration;
    /// sched.kill(&proto::TaskId::new("job-7"), Some(Duration::from_secs(10))).await?;
    /// # Ok(()) }
    /// ```
    pub async fn kill(&self, task_id: &TaskId, grace: Option<Duration>) -> Result<(), ClientError> {
        self.call(FrameworkCall::Kill {
            task_id: task_id.clone(),
            agent_id: None,
            grace_ms: grace.map(|g| u64::try_from(g.as_millis()).unwrap_or(u64::MAX)),
        })
        .await
    }

    /// Sends `data` to one of this framework's custom executors on `agent_id`.
    pub async fn message(
        &self,
        agent_id: &AgentId,
        executor_id: &ExecutorId,
        data: Vec<u8>,
    ) -> Result<(), ClientError> {
        self.call(FrameworkCall::Message {
            agent_id: agent_id.clone(),
            executor_id: executor_id.clone(),
            data,
        })
        .await
    }
}
