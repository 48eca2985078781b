//! The framework session: subscribe, make calls, receive events, fail over.

use proto::{ClientFrame, FrameworkCall, FrameworkEvent, FrameworkId, FrameworkInfo, ServerFrame};
use session::{open_session, reopen, watch_leader, ClientError, ClientOptions, Session};
use std::time::Duration;
use tokio::sync::mpsc;

/// Calls waiting to be written to the master.
const CALL_QUEUE: usize = 256;
/// Events waiting for the application to take them.
const EVENT_QUEUE: usize = 1024;

/// What the application sees.
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

/// A `FrameworkInfo` with Corral's defaults: role `*`, a one-week failover timeout, partition-aware.
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

/// A subscribed framework. Dropping it closes the session (the master keeps the framework for
/// its failover timeout); call [`Scheduler::teardown`] to end the framework.
pub struct Scheduler {
    framework_id: FrameworkId,
    master: String,
    calls: mpsc::Sender<FrameworkCall>,
    events: mpsc::Receiver<SchedulerEvent>,
}

impl Scheduler {
    /// Subscribes (or re-subscribes, when `info.id` is set) and starts the session driver.
    pub async fn subscribe(
        opts: ClientOptions,
        info: FrameworkInfo,
    ) -> Result<Scheduler, ClientError> {
        let (session, framework_id) = subscribed(open_session(&opts, &subscribe(&info)).await)?;
        let master = session.master.clone();
        let (calls_tx, calls_rx) = mpsc::channel(CALL_QUEUE);
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        let mut info = info;
        info.id = Some(framework_id.clone());
        tokio::spawn(drive(opts, info, session, calls_rx, events_tx));
        Ok(Scheduler {
            framework_id,
            master,
            calls: calls_tx,
            events: events_rx,
        })
    }

    pub fn framework_id(&self) -> &FrameworkId {
        &self.framework_id
    }

    /// The master this session first subscribed through.
    pub fn master(&self) -> &str {
        &self.master
    }

    /// Queues a call to the master. Fails only when the session has terminated.
    pub async fn call(&self, call: FrameworkCall) -> Result<(), ClientError> {
        self.calls.send(call).await.map_err(|_| ClientError::Closed)
    }

    /// The next event, or `None` once the session has terminated and all events were taken.
    pub async fn next_event(&mut self) -> Option<SchedulerEvent> {
        self.events.recv().await
    }

    /// Ends the framework: the master kills its tasks and forgets it.
    pub async fn teardown(self) -> Result<(), ClientError> {
        self.calls
            .send(FrameworkCall::Teardown)
            .await
            .map_err(|_| ClientError::Closed)?;
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
    Call(Option<FrameworkCall>),
    Frame(Result<Option<ServerFrame>, transport::TransportError>),
    LeaderMoved(session::LeaderMoved),
}

/// Owns the stream: writes calls, reads events, re-subscribes after a lost connection.
async fn drive(
    opts: ClientOptions,
    info: FrameworkInfo,
    mut session: Session,
    mut calls: mpsc::Receiver<FrameworkCall>,
    events: mpsc::Sender<SchedulerEvent>,
) {
    let failover = Duration::from_millis(info.failover_timeout_ms).max(Duration::from_secs(1));
    // The other masters tell us when a new leader is elected: a dead leader sends nothing.
    let mut leader_watch = watch_leader(&opts, &session.master);
    loop {
        let step = tokio::select! {
            call = calls.recv() => Step::Call(call),
            frame = session.recv.recv() => Step::Frame(frame),
            moved = leader_watch.moved() => Step::LeaderMoved(moved),
        };
        let lost = match step {
            Step::Call(None) => {
                // The application dropped the Scheduler: close the stream politely.
                let _ = session.send.finish().await;
                session.connection.close(0, b"framework closed");
                return;
            }
            Step::Call(Some(call)) => {
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
            Step::LeaderMoved(moved) => Some(moved.to_string()),
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
            match subscribed(reopen(&opts, &session.master, failover, &subscribe(&info)).await) {
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
