//! The framework session: subscribe, make calls, receive events, fail over, update the
//! framework's info. The calls a scheduler makes (accept, decline, kill, ...) are in
//! `calls.rs`, each with its example.

use proto::{ClientFrame, FrameworkCall, FrameworkEvent, FrameworkId, FrameworkInfo, ServerFrame};
use session::{open_session, reopen, watch_leader, ClientError, ClientOptions, Session};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

mod calls;

pub use calls::{refuse_for, task};

/// Calls waiting to be written to the master.
const CALL_QUEUE: usize = 256;
/// Events waiting for the application to take them.
const EVENT_QUEUE: usize = 1024;

/// What the application sees, from [`Scheduler::next_event`].
///
/// Most events are the master's [`FrameworkEvent`]s: `Offers` (accept or decline each),
/// `Rescind` (an offer is void), `Update` (a task's status: acknowledge it with
/// [`Scheduler::acknowledge`]), `Message` (from an executor), `AgentLost`, `Error` (a call
/// was refused; the session goes on) and `Heartbeat`. The other variants are the library's own
/// news about the session.
#[derive(Debug, Clone, PartialEq)]
pub enum SchedulerEvent {
    /// An event from the master.
    Framework(FrameworkEvent),
    /// The connection to the master was lost; the library is re-subscribing. Outstanding offers
    /// are void.
    Disconnected { reason: String },
    /// Re-subscribed (same framework id) after a lost connection. Reconcile now.
    Resubscribed { master: String },
    /// The session ended for good (the master refused us, or failover did not succeed in time).
    Terminated { reason: String },
}

/// A `FrameworkInfo` with Corral's defaults: role `*`, a one-week failover timeout,
/// partition-aware (tasks on an agent cut off are reported `TASK_UNREACHABLE`, then `TASK_GONE`
/// or `TASK_RUNNING` again, instead of `TASK_LOST`). Change the fields before subscribing:
///
/// ```
/// let mut info = framework::framework_info("etl");
/// info.roles = vec!["batch".to_owned()];
/// info.failover_timeout_ms = 60_000; // the master keeps our tasks 1 min after we vanish
/// assert_eq!(info.id, None);
/// ```
pub fn framework_info(name: &str) -> FrameworkInfo {
    FrameworkInfo {
        id: None,
        name: name.to_owned(),
        roles: vec!["*".to_owned()],
        failover_timeout_ms: 7 * 24 * 3600 * 1000,
        capabilities: vec![proto::FrameworkCapability::PartitionAware],
        version: proto::ProtocolVersion::CURRENT,
    }
}

/// A subscribed framework: an async handle on one framework session with the leading master.
///
/// [`Scheduler::subscribe`] returns once the master has registered the framework; a task
/// spawned on the current tokio runtime then owns the QUIC stream. Calls
/// ([`Scheduler::call`] and the typed helpers: [`launch`](Scheduler::launch),
/// [`decline`](Scheduler::decline), [`acknowledge`](Scheduler::acknowledge),
/// [`reconcile`](Scheduler::reconcile), [`kill`](Scheduler::kill),
/// [`suppress`](Scheduler::suppress), [`revive`](Scheduler::revive), ...) are queued (at most
/// 256) and written in order; events wait (at most 1024) until [`Scheduler::next_event`]
/// takes them, so a scheduler that stops reading slows the master's stream down rather than
/// losing events.
///
/// When the leading master is lost the library re-subscribes with the same framework id by
/// itself (within the framework's failover timeout), telling the application with
/// [`SchedulerEvent::Disconnected`] and [`SchedulerEvent::Resubscribed`]: outstanding offers
/// are void, and the application should reconcile its tasks.
///
/// Dropping the `Scheduler` closes the session: the master keeps the framework and its tasks
/// for its failover timeout, and a new `subscribe` with `info.id` set takes them back. Call
/// [`Scheduler::teardown`] to end the framework (its tasks are killed).
pub struct Scheduler {
    framework_id: FrameworkId,
    master: String,
    requests: mpsc::Sender<Request>,
    events: mpsc::Receiver<SchedulerEvent>,
}

/// What the application asks the session driver for.
enum Request {
    Call(FrameworkCall),
    /// Re-subscribe with this info; the answer says whether the master took it.
    Update(FrameworkInfo, oneshot::Sender<Result<(), ClientError>>),
}

impl Scheduler {
    /// Subscribes (or re-subscribes, when `info.id` is set) and starts the session driver.
    ///
    /// Every master in `opts.masters` is dialled at once and the leader answers; the call
    /// returns when the framework is registered (its `FrameworkAdded` committed on a majority of
    /// masters), or with the master's refusal (a role the certificate's principal may not use,
    /// another principal's framework id) or [`ClientError::NoLeader`] after
    /// `opts.connect_timeout`. Must run inside a tokio runtime.
    ///
    /// ```no_run
    /// use framework::{ClientOptions, Scheduler, SchedulerEvent};
    /// use proto::FrameworkEvent;
    /// use std::sync::Arc;
    ///
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// // The framework's certificate (role `framework`), issued with `corral certs issue`.
    /// let identity = transport::Identity::load(&transport::TlsFiles {
    ///     ca: "certs/ca.pem".into(),
    ///     cert: "certs/etl.pem".into(),
    ///     key: "certs/etl-key.pem".into(),
    /// })?;
    /// let opts = ClientOptions::new(
    ///     vec!["10.0.0.1:5050".into(), "10.0.0.2:5050".into(), "10.0.0.3:5050".into()],
    ///     Arc::new(identity),
    /// );
    /// let mut sched = Scheduler::subscribe(opts, framework::framework_info("etl")).await?;
    /// println!("subscribed as {} via {}", sched.framework_id(), sched.master());
    /// while let Some(event) = sched.next_event().await {
    ///     match event {
    ///         SchedulerEvent::Framework(FrameworkEvent::Offers { offers }) => { /* launch */ }
    ///         SchedulerEvent::Framework(FrameworkEvent::Update { status }) => {
    ///             sched.acknowledge(&status).await?;
    ///         }
    ///         SchedulerEvent::Resubscribed { .. } => sched.reconcile_all().await?,
    ///         SchedulerEvent::Terminated { reason } => return Err(reason.into()),
    ///         _ => {}
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn subscribe(
        opts: ClientOptions,
        info: FrameworkInfo,
    ) -> Result<Scheduler, ClientError> {
        let (session, framework_id) = subscribed(open_session(&opts, &subscribe(&info)).await)?;
        let master = session.master.clone();
        let (requests_tx, requests_rx) = mpsc::channel(CALL_QUEUE);
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        let mut info = info;
        info.id = Some(framework_id.clone());
        tokio::spawn(drive(opts, info, session, requests_rx, events_tx));
        Ok(Scheduler {
            framework_id,
            master,
            requests: requests_tx,
            events: events_rx,
        })
    }

    /// The id the master gave the framework (or took back, on a re-subscription). Keep it to
    /// subscribe again after a restart of the scheduler (`info.id`).
    pub fn framework_id(&self) -> &FrameworkId {
        &self.framework_id
    }

    /// The master this session first subscribed through.
    pub fn master(&self) -> &str {
        &self.master
    }

    /// Queues any call to the master (the typed helpers below wrap this). Fails only when the
    /// session has terminated. A call the master refuses comes back as a
    /// `FrameworkEvent::Error` event saying why; the session goes on.
    pub async fn call(&self, call: FrameworkCall) -> Result<(), ClientError> {
        self.requests
            .send(Request::Call(call))
            .await
            .map_err(|_| ClientError::Closed)
    }

    /// The next event, or `None` once the session has terminated and all events were taken.
    pub async fn next_event(&mut self) -> Option<SchedulerEvent> {
        self.events.recv().await
    }

    /// Changes the framework's info — its roles, failover timeout, name or capabilities — by
    /// subscribing again with the same framework id on a new stream, which the master takes
    /// over from the old one (Mesos's `UPDATE_FRAMEWORK`). Returns once the master has
    /// committed the new info; on a refusal (a role the principal may not use) the old session
    /// and info stay. `info.id` is set to this framework's id.
    ///
    /// As after any subscription, outstanding offers are rescinded, filters are cleared and
    /// offers are no longer suppressed: suppress again if nothing is pending.
    ///
    /// ```no_run
    /// # async fn demo(sched: &framework::Scheduler) -> Result<(), framework::ClientError> {
    /// let mut info = framework::framework_info("etl");
    /// info.roles = vec!["batch".into(), "backfill".into()];
    /// info.failover_timeout_ms = 10 * 60_000;
    /// sched.update_framework(info).await?;
    /// # Ok(()) }
    /// ```
    pub async fn update_framework(&self, mut info: FrameworkInfo) -> Result<(), ClientError> {
        info.id = Some(self.framework_id.clone());
        let (tx, rx) = oneshot::channel();
        self.requests
            .send(Request::Update(info, tx))
            .await
            .map_err(|_| ClientError::Closed)?;
        rx.await.map_err(|_| ClientError::Closed)?
    }

    /// Ends the framework: the master kills its tasks and forgets it.
    ///
    /// ```no_run
    /// # async fn demo(sched: framework::Scheduler) -> Result<(), framework::ClientError> {
    /// sched.teardown().await?;
    /// # Ok(()) }
    /// ```
    pub async fn teardown(self) -> Result<(), ClientError> {
        self.call(FrameworkCall::Teardown).await?;
        // Give the driver a moment to write the call before the session is dropped.
        let mut events = self.events;
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while events.recv().await.is_some() {}
        })
        .await;
        Ok(())
    }
}

fn subscribe(info: &FrameworkInfo) -> ClientFrame {
    ClientFrame::Framework(FrameworkCall::Subscribe { info: info.clone() })
}

/// The framework id of a session whose first request was [`subscribe`], from its answer.
fn subscribed(
    opened: Result<(Session, ServerFrame), ClientError>,
) -> Result<(Session, FrameworkId), ClientError> {
    let (session, reply) = opened?;
    match reply {
        ServerFrame::Framework(FrameworkEvent::Subscribed { framework_id, .. }) => {
            tracing::info!(%framework_id, master = %session.master, "framework subscribed");
            Ok((session, framework_id))
        }
        ServerFrame::Framework(FrameworkEvent::Error { message }) => Err(ClientError::Refused {
            master: session.master,
            code: proto::ErrorCode::BadRequest,
            message,
        }),
        other => Err(ClientError::Unexpected(format!("{other:?}"))),
    }
}

enum Step {
    Call(Option<Request>),
    Frame(Result<Option<ServerFrame>, transport::TransportError>),
    LeaderMoved(session::LeaderMoved),
}

/// Owns the stream: writes calls, reads events, re-subscribes after a lost connection.
async fn drive(
    opts: ClientOptions,
    info: FrameworkInfo,
    mut session: Session,
    mut calls: mpsc::Receiver<Request>,
    events: mpsc::Sender<SchedulerEvent>,
) {
    let mut info = info;
    // The other masters tell us when a new leader is elected: a dead leader sends nothing.
    let mut leader_watch = watch_leader(&opts, &session.master);
    loop {
        let failover = Duration::from_millis(info.failover_timeout_ms).max(Duration::from_secs(1));
        // The master a leader watch named, asked first when re-subscribing.
        let mut preferred = None;
        let step = tokio::select! {
            call = calls.recv() => Step::Call(call),
            frame = session.recv.recv() => Step::Frame(frame),
            moved = leader_watch.moved() => Step::LeaderMoved(moved),
        };
        let lost = match step {
            Step::Call(None) => {
                // The application dropped the Scheduler: end the stream politely (not the
                // connection: other sessions of the same client share it).
                session.finish().await;
                return;
            }
            Step::Call(Some(Request::Update(new, reply))) => {
                let answer = match subscribed(open_session(&opts, &subscribe(&new)).await) {
                    Ok((s, _)) => {
                        // The master has moved the framework to the new stream and closed the
                        // old one; status updates in flight on it are sent again by agents.
                        // The connection stays: sessions share it (`session::MasterLinks`).
                        drop(std::mem::replace(&mut session, s));
                        leader_watch = watch_leader(&opts, &session.master);
                        tracing::info!(roles = ?new.roles, "framework info updated");
                        info = new;
                        Ok(())
                    }
                    Err(e) => Err(e),
                };
                let _ = reply.send(answer);
                None
            }
            Step::Call(Some(Request::Call(call))) => {
                let teardown = matches!(call, FrameworkCall::Teardown);
                match session.send.send(&ClientFrame::Framework(call)).await {
                    Ok(()) if teardown => {
                        let _ = session.send.finish().await;
                        // Wait for the master to close the stream, so the call is not lost.
                        let _ = tokio::time::timeout(Duration::from_secs(2), async {
                            while let Ok(Some(_)) = session.recv.recv().await {}
                        })
                        .await;
                        return;
                    }
                    Ok(()) => None,
                    Err(e) => Some(e.to_string()),
                }
            }
            Step::Frame(Ok(Some(ServerFrame::Framework(ev)))) => {
                if events.send(SchedulerEvent::Framework(ev)).await.is_err() {
                    return;
                }
                None
            }
            Step::Frame(Ok(Some(ServerFrame::Error(e)))) => {
                if e.fatal {
                    let _ = events
                        .send(SchedulerEvent::Terminated { reason: e.message })
                        .await;
                    return;
                }
                let ev = FrameworkEvent::Error { message: e.message };
                if events.send(SchedulerEvent::Framework(ev)).await.is_err() {
                    return;
                }
                None
            }
            Step::Frame(Ok(Some(ServerFrame::NotLeader { .. }))) => {
                Some("the master lost its leadership".to_owned())
            }
            Step::Frame(Ok(Some(other))) => {
                tracing::warn!(frame = ?other, "ignoring a frame not meant for a framework");
                None
            }
            Step::Frame(Ok(None)) => Some("the master closed the session".to_owned()),
            Step::LeaderMoved(moved) => {
                preferred = Some(moved.leader.clone());
                Some(moved.to_string())
            }
            Step::Frame(Err(e)) => Some(e.to_string()),
        };
        if let Some(reason) = lost {
            tracing::warn!(%reason, "lost the master; re-subscribing");
            if events
                .send(SchedulerEvent::Disconnected {
                    reason: reason.clone(),
                })
                .await
                .is_err()
            {
                return;
            }
            let mut again = opts.clone();
            again.preferred = preferred.take();
            match subscribed(reopen(&again, &session.master, failover, &subscribe(&info)).await) {
                Ok((s, _)) => {
                    let master = s.master.clone();
                    session = s;
                    leader_watch = watch_leader(&opts, &master);
                    if events
                        .send(SchedulerEvent::Resubscribed { master })
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Err(e) => {
                    let _ = events
                        .send(SchedulerEvent::Terminated {
                            reason: format!("{reason}; re-subscribing failed: {e}"),
                        })
                        .await;
                    return;
                }
            }
        }
    }
}
