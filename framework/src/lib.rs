//! The client library that frameworks (schedulers) and operator tools use to talk to Corral
//! masters, as an async (tokio) API: the framework session ([`Scheduler`]: subscribe, calls,
//! events, re-subscribing with the same framework id after a lost master), one-shot operator
//! calls ([`operator_call`]), reading task output ([`read_output`]) and following the
//! operator event stream across master failovers ([`EventStream`]). Finding the leading
//! master (dialling every address, following `NotLeader` redirects) is the `session` crate's,
//! re-exported here ([`open_session`], [`ClientOptions`]). Everything runs over the
//! mutually-authenticated QUIC transport; the caller supplies its certificate identity (role
//! `framework` for a scheduler, `operator` for operator calls). It also holds the small
//! blocking library custom executors use to talk to their agent ([`executor`]), and
//! [`oneshot`], a scheduler that runs one task to its end (what `corral run` is).
//!
//! # A scheduler in one page
//!
//! Corral follows Mesos's two-level scheduling: the master offers each agent's free resources
//! to one framework at a time (the framework with the lowest dominant share first), and the
//! framework decides what to run where. A scheduler's life:
//!
//! 1. [`Scheduler::subscribe`] with a [`FrameworkInfo`](proto::FrameworkInfo) (see
//!    [`framework_info`]); keep [`Scheduler::framework_id`] to come back after a restart.
//! 2. Take events with [`Scheduler::next_event`]. For each `Offers`, [`Scheduler::launch`]
//!    tasks (built with [`task`]) on the offers that fit and [`Scheduler::decline`] the rest
//!    with a filter ([`refuse_for`]), so they go to other frameworks.
//! 3. When nothing is pending, [`Scheduler::suppress`]; when work appears,
//!    [`Scheduler::revive`]. An idle framework that keeps declining still holds offers for a
//!    moment each time, and its share counts them (DRF-friendly frameworks suppress).
//! 4. Each `Update` is a task's status: act on it, then [`Scheduler::acknowledge`] it (the
//!    agent resends it until then). Terminal states: `Finished`, `Failed` (with the exit code
//!    or signal), `Killed`, `Error` (refused at launch), `Lost`, `Dropped`, `Gone`.
//! 5. After [`SchedulerEvent::Resubscribed`] (a master failover), [`Scheduler::reconcile_all`]:
//!    the master answers with the state of every task it knows.
//! 6. [`Scheduler::kill`] a task; [`Scheduler::teardown`] ends the framework and its tasks.
//!
//! ```no_run
//! use framework::{ClientOptions, Scheduler, SchedulerEvent};
//! use proto::{CommandInfo, FrameworkEvent, Resources, TaskState};
//! use std::time::Duration;
//!
//! /// Runs `echo N` for N in 0..10, one cpu each, and returns when all ten have finished.
//! async fn ten_echos(opts: ClientOptions) -> Result<(), Box<dyn std::error::Error>> {
//!     let mut sched = Scheduler::subscribe(opts, framework::framework_info("echo")).await?;
//!     let per_task: Resources = "cpus:1;mem:32MiB".parse()?;
//!     let mut pending: Vec<u32> = (0..10).collect();
//!     let mut finished = 0;
//!     while let Some(event) = sched.next_event().await {
//!         match event {
//!             SchedulerEvent::Framework(FrameworkEvent::Offers { offers }) => {
//!                 for offer in offers {
//!                     let mut free = offer.resources.clone();
//!                     let mut tasks = Vec::new();
//!                     while let (Some(n), Some(left)) = (pending.last(), free.checked_sub(&per_task)) {
//!                         let cmd = CommandInfo::shell(format!("echo {n}"));
//!                         tasks.push(framework::task(&format!("echo-{n}"), &offer, per_task.clone(), cmd));
//!                         pending.pop();
//!                         free = left;
//!                     }
//!                     if tasks.is_empty() {
//!                         let keep_away = framework::refuse_for(Duration::from_secs(30));
//!                         sched.decline(vec![offer.id], Some(keep_away)).await?;
//!                     } else {
//!                         sched.launch(&offer, tasks).await?;
//!                     }
//!                 }
//!                 if pending.is_empty() {
//!                     sched.suppress(vec![]).await?;
//!                 }
//!             }
//!             SchedulerEvent::Framework(FrameworkEvent::Update { status }) => {
//!                 sched.acknowledge(&status).await?;
//!                 match status.state {
//!                     TaskState::Finished if status.uuid.is_some() => finished += 1,
//!                     s if s.is_terminal() => return Err(format!("{}: {s:?}", status.task_id).into()),
//!                     _ => {}
//!                 }
//!                 if finished == 10 {
//!                     return Ok(sched.teardown().await?);
//!                 }
//!             }
//!             SchedulerEvent::Resubscribed { .. } => sched.reconcile_all().await?,
//!             SchedulerEvent::Terminated { reason } => return Err(reason.into()),
//!             _ => {}
//!         }
//!     }
//!     Err("the session ended".into())
//! }
//! ```
//!
//! Two complete frameworks built this way are in the workspace's `examples/` crate: a batch
//! framework (N tasks, failures retried, suppress/revive) and a service framework (K
//! instances kept running). Frameworks written for Mesos's v1 HTTP API run unchanged through
//! `corral mesos-gateway` instead.
//!
//! # Operator calls
//!
//! [`operator_call`] sends one [`OperatorCall`](proto::OperatorCall) with an operator
//! certificate to the leading master and returns its reply:
//!
//! ```no_run
//! # async fn demo(operator: framework::ClientOptions) -> Result<(), framework::ClientError> {
//! use proto::{OperatorCall, OperatorReply};
//! if let OperatorReply::State(state) = framework::operator_call(&operator, OperatorCall::GetState).await? {
//!     for f in &state.frameworks {
//!         println!("{} {} share {:.2} suppressed {}", f.id, f.name, f.dominant_share, f.suppressed);
//!     }
//! }
//! let agent = proto::AgentId::new("a-1");
//! framework::operator_call(&operator, OperatorCall::DrainAgent { agent_id: agent }).await?;
//! # Ok(()) }
//! ```

mod events;
pub mod executor;
pub mod oneshot;
mod operator;
mod scheduler;

pub use events::{EventStream, EventStreamError, StreamItem};
pub use executor::{Executor, ExecutorError, ExecutorEvent};
pub use operator::{operator_call, read_log, read_output, stream_name, OutputError, ReadRetry};
pub use scheduler::{framework_info, refuse_for, task, Scheduler, SchedulerEvent};
pub use session::{
    open_session, reopen, Backoff, ClientError, ClientOptions, Session, CONNECT_ATTEMPT_TIMEOUT,
    FIRST_REPLY_TIMEOUT,
};
