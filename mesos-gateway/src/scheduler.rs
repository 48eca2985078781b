//! `POST /api/v1/scheduler`: subscriptions and calls.
//!
//! Each SUBSCRIBE opens one Corral framework session ([`framework::Scheduler`]) with the
//! gateway's framework identity and answers with a chunked RecordIO stream carrying a fresh
//! `Mesos-Stream-Id`. One task per subscription (`pump`) owns the session: it writes calls to
//! the master, translates events into records, and sends a HEARTBEAT every interval. The
//! stream ends — and the client re-subscribes, as Mesos clients do after a master failover —
//! when the Corral session loses its master, when the framework is torn down or refused, or
//! when the same framework subscribes again (the old stream gets ERROR "Framework failed over").
//! Closing the stream leaves the framework to the master's failover timeout.
//!
//! Calls are checked as Mesos checks them (`master/http.cpp`): the framework must be
//! subscribed through this gateway (else 400 "Framework cannot be found"), and the
//! `Mesos-Stream-Id` header must be present and be that framework's stream (else 400).

use crate::calls::{self, CallError, Translated};
use crate::events::{self, Audience};
use crate::wire;
use bytes::Bytes;
use framework::{ClientError, Scheduler, SchedulerEvent};
use proto::{FrameworkCall, FrameworkId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Frameworks one gateway serves at once.
pub const MAX_FRAMEWORKS: usize = 1024;
/// Calls queued for one framework's session before the gateway answers 503.
const CALL_QUEUE: usize = 256;
/// Records queued for one client before the gateway waits for it.
const RECORD_QUEUE: usize = 1024;
/// A client that takes no record for this long is dropped (its stream ends).
const SLOW_CLIENT: Duration = Duration::from_secs(60);
/// How long a re-subscription waits for the old stream's session to close.
const FAILOVER_WAIT: Duration = Duration::from_secs(5);

/// An HTTP-level refusal: the status code and the body saying why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub message: String,
}

impl Refusal {
    pub fn new(status: u16, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            message: message.into(),
        }
    }
}

impl From<CallError> for Refusal {
    fn from(e: CallError) -> Refusal {
        Refusal::new(400, e.0)
    }
}

/// One subscribed framework.
struct Entry {
    stream_id: String,
    calls: mpsc::Sender<FrameworkCall>,
    /// Resolves (with an error) once the pump has dropped its Corral session.
    done: oneshot::Receiver<()>,
}

/// What every subscription shares.
pub struct Schedulers {
    pub opts: framework::ClientOptions,
    pub heartbeat: Duration,
    pub master_info: serde_json::Value,
    frameworks: Mutex<HashMap<FrameworkId, Entry>>,
}

/// An accepted subscription: the stream id and the records to send.
pub struct Stream {
    pub stream_id: String,
    pub records: mpsc::Receiver<Bytes>,
}

impl Schedulers {
    pub fn new(
        opts: framework::ClientOptions,
        heartbeat: Duration,
        master_info: serde_json::Value,
    ) -> Arc<Schedulers> {
        Arc::new(Schedulers {
            opts,
            heartbeat,
            master_info,
            frameworks: Mutex::new(HashMap::new()),
        })
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<FrameworkId, Entry>> {
        // A panic while holding this lock cannot leave the map inconsistent (each access is a
        // single insert, remove or lookup), so a poisoned lock is still usable.
        self.frameworks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// SUBSCRIBE: opens the Corral session and starts the stream.
    pub async fn subscribe(self: &Arc<Self>, call: &wire::Call) -> Result<Stream, Refusal> {
        let sub = call
            .subscribe
            .as_ref()
            .ok_or_else(|| Refusal::new(400, "SUBSCRIBE: expecting 'subscribe' to be present"))?;
        let info_json = sub.framework_info.as_ref().ok_or_else(|| {
            Refusal::new(400, "SUBSCRIBE: 'subscribe.framework_info' is required")
        })?;
        let info = calls::framework_info(info_json)?;
        if let Some(id) = &info.id {
            match &call.framework_id {
                None => {
                    return Err(Refusal::new(
                        400,
                        "SUBSCRIBE: 'framework_id' is not set but 'subscribe.framework_info.id' is",
                    ))
                }
                Some(f) if f.value != id.as_str() => {
                    return Err(Refusal::new(
                        400,
                        "SUBSCRIBE: 'framework_id' differs from 'subscribe.framework_info.id'",
                    ))
                }
                Some(_) => {}
            }
            self.close_stream(id).await;
        }
        if self.table().len() >= MAX_FRAMEWORKS {
            return Err(Refusal::new(
                503,
                format!("this gateway already serves {MAX_FRAMEWORKS} frameworks"),
            ));
        }
        let audience = Audience {
            multi_role: calls::has_capability(info_json, "MULTI_ROLE"),
            reservation_refinement: calls::has_capability(info_json, "RESERVATION_REFINEMENT"),
        };
        let name = info.name.clone();
        let sched = Scheduler::subscribe(self.opts.clone(), info)
            .await
            .map_err(subscribe_refusal)?;
        let framework_id = sched.framework_id().clone();
        if !sub.suppressed_roles.is_empty() {
            let roles = sub.suppressed_roles.clone();
            let _ = sched.call(FrameworkCall::Suppress { roles }).await;
        }
        let stream_id = uuid::Uuid::new_v4().hyphenated().to_string();
        let (calls_tx, calls_rx) = mpsc::channel(CALL_QUEUE);
        let (records_tx, records_rx) = mpsc::channel(RECORD_QUEUE);
        let (done_tx, done_rx) = oneshot::channel();
        let first = events::subscribed(
            &framework_id,
            self.heartbeat.as_secs_f64(),
            &self.master_info,
        );
        // The channel is new and empty: the first record always fits.
        let _ = records_tx.try_send(events::record(&first));
        let old = self.table().insert(
            framework_id.clone(),
            Entry {
                stream_id: stream_id.clone(),
                calls: calls_tx,
                done: done_rx,
            },
        );
        drop(old);
        tracing::info!(%framework_id, %name, %stream_id, "Mesos framework subscribed");
        let pump = Pump {
            schedulers: self.clone(),
            framework_id,
            stream_id: stream_id.clone(),
            audience,
            records: records_tx,
        };
        tokio::spawn(pump.run(sched, calls_rx, done_tx));
        Ok(Stream {
            stream_id,
            records: records_rx,
        })
    }

    /// Ends the stream of `id`, if one is open, and waits (briefly) until its session closed.
    async fn close_stream(&self, id: &FrameworkId) {
        let old = self.table().remove(id);
        if let Some(old) = old {
            tracing::info!(framework_id = %id, "framework re-subscribed: closing its old stream");
            drop(old.calls);
            let _ = tokio::time::timeout(FAILOVER_WAIT, old.done).await;
        }
    }

    /// Any call but SUBSCRIBE: checks the framework and the stream id, then queues the call.
    pub fn call(
        &self,
        kind: &str,
        call: &wire::Call,
        stream_id: Option<&str>,
    ) -> Result<(), Refusal> {
        let framework_id = call
            .framework_id
            .as_ref()
            .map(|f| FrameworkId::new(&f.value))
            .ok_or_else(|| {
                Refusal::new(
                    400,
                    format!("{kind}: expecting 'framework_id' to be present"),
                )
            })?;
        let translated = calls::translate(kind, call)?;
        let sender = {
            let table = self.table();
            let entry = table.get(&framework_id).ok_or_else(|| {
                Refusal::new(
                    400,
                    format!("Framework '{framework_id}' cannot be found (it is not subscribed through this gateway)"),
                )
            })?;
            match stream_id {
                None => {
                    return Err(Refusal::new(
                        400,
                        "All non-subscribe calls should include the 'Mesos-Stream-Id' header",
                    ))
                }
                Some(s) if s != entry.stream_id => {
                    return Err(Refusal::new(
                        400,
                        format!(
                            "The stream ID '{s}' included in this request didn't match the \
                             stream ID currently associated with framework ID '{framework_id}'"
                        ),
                    ))
                }
                Some(_) => entry.calls.clone(),
            }
        };
        let Translated::Call(c) = translated else {
            return Ok(());
        };
        sender.try_send(c).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => Refusal::new(
                503,
                format!("{kind}: too many calls of framework '{framework_id}' are queued; retry"),
            ),
            mpsc::error::TrySendError::Closed(_) => Refusal::new(
                403,
                format!("Framework '{framework_id}' is not subscribed (its stream has ended)"),
            ),
        })
    }

    fn remove_if_current(&self, id: &FrameworkId, stream_id: &str) {
        let mut table = self.table();
        if table.get(id).is_some_and(|e| e.stream_id == stream_id) {
            table.remove(id);
        }
    }
}

/// How a failed Corral subscription is answered: a refusal by the master is the client's
/// error (400, its message); not reaching a master is 503, which Mesos clients retry.
fn subscribe_refusal(e: ClientError) -> Refusal {
    match e {
        ClientError::Refused { message, .. } => Refusal::new(
            400,
            format!("SUBSCRIBE refused by the Corral master: {message}"),
        ),
        other => Refusal::new(503, format!("No leading Corral master reachable: {other}")),
    }
}

/// One subscription's task.
struct Pump {
    schedulers: Arc<Schedulers>,
    framework_id: FrameworkId,
    stream_id: String,
    audience: Audience,
    records: mpsc::Sender<Bytes>,
}

impl Pump {
    async fn run(
        self,
        mut sched: Scheduler,
        mut calls: mpsc::Receiver<FrameworkCall>,
        done: oneshot::Sender<()>,
    ) {
        let beat = self.schedulers.heartbeat;
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + beat, beat);
        let why = loop {
            let record = tokio::select! {
                call = calls.recv() => match call {
                    Some(c) => {
                        if sched.call(c).await.is_err() {
                            break "the Corral session ended".to_owned();
                        }
                        continue;
                    }
                    None => {
                        self.send(events::error("Framework failed over")).await;
                        break "a new subscription replaced it".to_owned();
                    }
                },
                ev = sched.next_event() => match ev {
                    Some(SchedulerEvent::Framework(e)) => match events::translate(&self.audience, &e) {
                        Some(v) => v,
                        None => continue,
                    },
                    Some(SchedulerEvent::Disconnected { reason }) => {
                        // A new stream, not a silent gap: the client re-subscribes and
                        // reconciles, as after a Mesos master failover.
                        break format!("lost the Corral master ({reason})");
                    }
                    Some(SchedulerEvent::Resubscribed { .. }) => continue,
                    Some(SchedulerEvent::Terminated { reason }) => {
                        self.send(events::error(&reason)).await;
                        break format!("the master ended the framework: {reason}");
                    }
                    None => {
                        self.send(events::error("Framework has been removed")).await;
                        break "the Corral session ended".to_owned();
                    }
                },
                _ = ticks.tick() => events::heartbeat(),
                _ = self.records.closed() => break "the client closed the stream".to_owned(),
            };
            if !self.send(record).await {
                break "the client stopped reading".to_owned();
            }
        };
        tracing::info!(framework_id = %self.framework_id, stream_id = %self.stream_id, %why,
            "Mesos scheduler stream ended");
        self.schedulers
            .remove_if_current(&self.framework_id, &self.stream_id);
        drop(sched);
        drop(done);
    }

    /// Queues a record for the client; false if it is gone or too slow.
    async fn send(&self, event: serde_json::Value) -> bool {
        matches!(
            tokio::time::timeout(SLOW_CLIENT, self.records.send(events::record(&event))).await,
            Ok(Ok(()))
        )
    }
}
