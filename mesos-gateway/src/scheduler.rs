//! `POST /api/v1/scheduler`: subscriptions and calls.
//!
//! A framework's first SUBSCRIBE opens one Corral framework session ([`framework::Scheduler`])
//! with the gateway's framework identity; every SUBSCRIBE is answered with a chunked RecordIO
//! stream carrying a fresh `Mesos-Stream-Id`. One task per framework (`Pump`) owns the session:
//! it writes calls to the master, translates events into records for the attached stream, and
//! sends a HEARTBEAT every interval.
//!
//! Streams and sessions:
//! - The client closes its stream (or stops reading): the session is closed, and the master
//!   keeps the framework for its failover timeout, as Mesos does for a disconnected scheduler.
//! - The Corral session loses its master (a leader failover): the stream ends at once — a new
//!   stream, not a silent gap — and the session is *parked*: the framework library
//!   re-subscribes to the new leader by itself, events meanwhile wait in a bounded backlog, and
//!   the client's re-SUBSCRIBE (with its framework id) attaches a new stream to the same
//!   session and gets the backlog. Re-subscribing through a new Corral session instead would
//!   race the library's own re-subscription. A session parked for [`PARK_TIMEOUT`] is closed.
//! - The same framework subscribes again while its stream is open: the old stream gets ERROR
//!   "Framework failed over" and ends; the new one takes the session.
//! - The master ends the framework (TEARDOWN, refused): ERROR, the stream ends, session closed.
//!
//! Calls are checked as Mesos checks them (`master/http.cpp`): the framework must be known to
//! this gateway (else 400 "Framework cannot be found"), have an open stream (else 403), and
//! the `Mesos-Stream-Id` header must be present and be that stream's (else 400).
//!
//! UPDATE_FRAMEWORK is answered synchronously, as Mesos does (200 once the new info is in
//! force): the pump re-subscribes its Corral session with the new `FrameworkInfo`
//! ([`framework::Scheduler::update_framework`]) and suppresses `suppressed_roles`; the Mesos
//! stream stays open. A refusal by the master is 403 (a role the principal may not use) or
//! 400, with the master's reason.

use crate::calls::{self, CallError, Translated};
use crate::events::{self, Audience};
use crate::wire;
use bytes::Bytes;
use framework::{ClientError, Scheduler, SchedulerEvent};
use proto::{FrameworkCall, FrameworkId};
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// Frameworks one gateway serves at once.
pub const MAX_FRAMEWORKS: usize = 1024;
/// How long a session whose stream ended at a master failover waits for its client to
/// re-subscribe.
pub const PARK_TIMEOUT: Duration = Duration::from_secs(120);
/// Events kept for a parked session; older ones are dropped beyond this (agents resend
/// unacknowledged updates; offers are rescinded in time).
const BACKLOG: usize = 1024;
/// Calls queued for one framework's session before the gateway answers 503.
const CALL_QUEUE: usize = 256;
/// Records queued for one client before the gateway waits for it.
const RECORD_QUEUE: usize = 1024;
/// A client that takes no record for this long is dropped (its stream ends).
const SLOW_CLIENT: Duration = Duration::from_secs(60);

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

/// What the HTTP side asks of a framework's pump.
enum PumpRequest {
    Call(FrameworkCall),
    Update {
        info: proto::FrameworkInfo,
        suppressed_roles: Vec<String>,
        audience: Audience,
        reply: oneshot::Sender<Result<(), Refusal>>,
    },
}

/// How long an UPDATE_FRAMEWORK may take (a re-subscription through a failover fits).
const UPDATE_TIMEOUT: Duration = Duration::from_secs(30);

/// A stream handed to a framework's pump.
struct Attach {
    stream_id: String,
    records: mpsc::Sender<Bytes>,
}

/// One framework known to the gateway.
struct Entry {
    /// Which pump this is (a framework's entry is replaced when its session is).
    session: u64,
    /// The open stream's id; `None` while the session is parked.
    stream_id: Option<String>,
    calls: mpsc::Sender<PumpRequest>,
    attach: mpsc::Sender<Attach>,
}

/// What every subscription shares.
pub struct Schedulers {
    pub opts: framework::ClientOptions,
    pub heartbeat: Duration,
    pub master_info: Value,
    frameworks: Mutex<HashMap<FrameworkId, Entry>>,
    next_session: AtomicU64,
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
        master_info: Value,
    ) -> Arc<Schedulers> {
        Arc::new(Schedulers {
            opts,
            heartbeat,
            master_info,
            frameworks: Mutex::new(HashMap::new()),
            next_session: AtomicU64::new(1),
        })
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<FrameworkId, Entry>> {
        // Each access is a single insert, remove, lookup or field write, so a panic while the
        // lock was held cannot have left the map inconsistent: a poisoned lock is still usable.
        self.frameworks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new stream: its id, and the channel with SUBSCRIBED already queued.
    fn new_stream(&self, framework_id: &FrameworkId) -> (Attach, Stream) {
        let stream_id = uuid::Uuid::new_v4().hyphenated().to_string();
        let (tx, rx) = mpsc::channel(RECORD_QUEUE);
        let first = events::subscribed(
            framework_id,
            self.heartbeat.as_secs_f64(),
            &self.master_info,
        );
        // The channel is new and empty: the first record always fits.
        let _ = tx.try_send(events::record(&first));
        (
            Attach {
                stream_id: stream_id.clone(),
                records: tx,
            },
            Stream {
                stream_id,
                records: rx,
            },
        )
    }

    /// SUBSCRIBE: attaches a stream to the framework's session, opening one if needed.
    pub async fn subscribe(self: &Arc<Self>, call: &wire::Call) -> Result<Stream, Refusal> {
        let sub = call
            .subscribe
            .as_ref()
            .ok_or_else(|| Refusal::new(400, "SUBSCRIBE: expecting 'subscribe' to be present"))?;
        let info_json = sub.framework_info.as_ref().ok_or_else(|| {
            Refusal::new(400, "SUBSCRIBE: 'subscribe.framework_info' is required")
        })?;
        let info = calls::framework_info("SUBSCRIBE", info_json)?;
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
            if let Some(stream) = self.reattach(id) {
                return Ok(stream);
            }
        }
        if self.table().len() >= MAX_FRAMEWORKS {
            return Err(Refusal::new(
                503,
                format!("this gateway already serves {MAX_FRAMEWORKS} frameworks"),
            ));
        }
        let audience = audience(info_json);
        let name = info.name.clone();
        let sched = Scheduler::subscribe(self.opts.clone(), info)
            .await
            .map_err(subscribe_refusal)?;
        let framework_id = sched.framework_id().clone();
        if !sub.suppressed_roles.is_empty() {
            let roles = sub.suppressed_roles.clone();
            let _ = sched.call(FrameworkCall::Suppress { roles }).await;
        }
        let (first, stream) = self.new_stream(&framework_id);
        let (calls_tx, calls_rx) = mpsc::channel(CALL_QUEUE);
        let (attach_tx, attach_rx) = mpsc::channel(4);
        let session = self.next_session.fetch_add(1, Ordering::Relaxed);
        // A session this replaces (a concurrent subscription of the same id) ends when its
        // channels close.
        let _replaced = self.table().insert(
            framework_id.clone(),
            Entry {
                session,
                stream_id: Some(stream.stream_id.clone()),
                calls: calls_tx,
                attach: attach_tx,
            },
        );
        tracing::info!(%framework_id, %name, stream_id = %stream.stream_id,
            "Mesos framework subscribed");
        let pump = Pump {
            schedulers: self.clone(),
            framework_id,
            session,
            audience,
            stream: Some(first),
            parked_since: None,
            backlog: VecDeque::new(),
        };
        tokio::spawn(pump.run(sched, calls_rx, attach_rx));
        Ok(stream)
    }

    /// A new stream on the live session of `id`, if there is one.
    fn reattach(&self, id: &FrameworkId) -> Option<Stream> {
        let mut table = self.table();
        let entry = table.get_mut(id)?;
        let (attach, stream) = self.new_stream(id);
        match entry.attach.try_send(attach) {
            Ok(()) => {
                tracing::info!(framework_id = %id, stream_id = %stream.stream_id,
                    "Mesos framework re-subscribed to its session");
                entry.stream_id = Some(stream.stream_id.clone());
                Some(stream)
            }
            // The session is ending (or being re-attached many times at once): start anew.
            Err(_) => {
                table.remove(id);
                None
            }
        }
    }

    /// Any call but SUBSCRIBE and UPDATE_FRAMEWORK: checks the framework and the stream id,
    /// then queues the call.
    pub fn call(
        &self,
        kind: &str,
        call: &wire::Call,
        stream_id: Option<&str>,
    ) -> Result<(), Refusal> {
        let translated = calls::translate(kind, call)?;
        let (framework_id, sender) = self.session_of(kind, call, stream_id)?;
        let Translated::Call(c) = translated else {
            return Ok(());
        };
        sender.try_send(PumpRequest::Call(c)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => Refusal::new(
                503,
                format!("{kind}: too many calls of framework '{framework_id}' are queued; retry"),
            ),
            mpsc::error::TrySendError::Closed(_) => ended(&framework_id),
        })
    }

    /// UPDATE_FRAMEWORK: the checks of any call, then the new info in force before answering.
    pub async fn update_framework(
        &self,
        call: &wire::Call,
        stream_id: Option<&str>,
    ) -> Result<(), Refusal> {
        const KIND: &str = "UPDATE_FRAMEWORK";
        let update = call.update_framework.as_ref().ok_or_else(|| {
            Refusal::new(
                400,
                "UPDATE_FRAMEWORK: expecting 'update_framework' to be present",
            )
        })?;
        let info_json = update.framework_info.as_ref().ok_or_else(|| {
            Refusal::new(
                400,
                "UPDATE_FRAMEWORK: 'update_framework.framework_info' is required",
            )
        })?;
        let info = calls::framework_info(KIND, info_json)?;
        let (framework_id, sender) = self.session_of(KIND, call, stream_id)?;
        if info.id.as_ref() != Some(&framework_id) {
            return Err(Refusal::new(
                400,
                "UPDATE_FRAMEWORK: 'framework_info.id' must be set and equal 'framework_id'",
            ));
        }
        let (reply, answer) = oneshot::channel();
        let request = PumpRequest::Update {
            info,
            suppressed_roles: update.suppressed_roles.clone(),
            audience: audience(info_json),
            reply,
        };
        sender
            .send_timeout(request, UPDATE_TIMEOUT)
            .await
            .map_err(|_| ended(&framework_id))?;
        match tokio::time::timeout(UPDATE_TIMEOUT, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(ended(&framework_id)),
            Err(_) => Err(Refusal::new(
                503,
                format!("UPDATE_FRAMEWORK: no answer from the Corral master within {UPDATE_TIMEOUT:?}; retry"),
            )),
        }
    }

    /// The session a call of `kind` is for, once the framework, its stream and the
    /// `Mesos-Stream-Id` header check out.
    fn session_of(
        &self,
        kind: &str,
        call: &wire::Call,
        stream_id: Option<&str>,
    ) -> Result<(FrameworkId, mpsc::Sender<PumpRequest>), Refusal> {
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
        let table = self.table();
        let entry = table.get(&framework_id).ok_or_else(|| {
            Refusal::new(
                400,
                format!(
                    "Framework '{framework_id}' cannot be found (it is not subscribed \
                     through this gateway)"
                ),
            )
        })?;
        let Some(current) = &entry.stream_id else {
            return Err(Refusal::new(
                403,
                format!(
                    "Framework '{framework_id}' is not subscribed: its stream ended at a \
                     master failover; subscribe again"
                ),
            ));
        };
        match stream_id {
            None => Err(Refusal::new(
                400,
                "All non-subscribe calls should include the 'Mesos-Stream-Id' header",
            )),
            Some(s) if s != current => Err(Refusal::new(
                400,
                format!(
                    "The stream ID '{s}' included in this request didn't match the \
                     stream ID currently associated with framework ID '{framework_id}'"
                ),
            )),
            Some(_) => Ok((framework_id.clone(), entry.calls.clone())),
        }
    }

    fn set_stream(&self, id: &FrameworkId, session: u64, stream_id: Option<String>) {
        if let Some(e) = self.table().get_mut(id).filter(|e| e.session == session) {
            e.stream_id = stream_id;
        }
    }

    fn remove(&self, id: &FrameworkId, session: u64) {
        let mut table = self.table();
        if table.get(id).is_some_and(|e| e.session == session) {
            table.remove(id);
        }
    }
}

/// The refusal of a call to a framework whose session has ended.
fn ended(framework_id: &FrameworkId) -> Refusal {
    Refusal::new(
        403,
        format!("Framework '{framework_id}' is not subscribed (its session has ended)"),
    )
}

/// Which optional event fields a framework reads, from the capabilities it declared.
fn audience(info: &wire::FrameworkInfo) -> Audience {
    Audience {
        multi_role: calls::has_capability(info, "MULTI_ROLE"),
        reservation_refinement: calls::has_capability(info, "RESERVATION_REFINEMENT"),
    }
}

/// How a refused UPDATE_FRAMEWORK is answered: the master's refusal is the client's error
/// (403 for a role it may not use, else 400); not reaching a master is 503.
fn update_refusal(e: ClientError) -> Refusal {
    match e {
        ClientError::Refused { code, message, .. } => Refusal::new(
            if code == proto::ErrorCode::Forbidden {
                403
            } else {
                400
            },
            format!("UPDATE_FRAMEWORK refused by the Corral master: {message}"),
        ),
        other => Refusal::new(
            503,
            format!("UPDATE_FRAMEWORK: no leading Corral master reachable: {other}"),
        ),
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

/// What ended a pump's wait.
enum Step {
    Attach(Option<Attach>),
    Call(Option<PumpRequest>),
    Event(Option<SchedulerEvent>),
    Tick,
    ClientGone,
}

/// One framework's task: owns its Corral session.
struct Pump {
    schedulers: Arc<Schedulers>,
    framework_id: FrameworkId,
    session: u64,
    audience: Audience,
    /// The attached stream; `None` while parked.
    stream: Option<Attach>,
    parked_since: Option<Instant>,
    backlog: VecDeque<Value>,
}

impl Pump {
    async fn run(
        mut self,
        sched: Scheduler,
        mut calls: mpsc::Receiver<PumpRequest>,
        mut attach: mpsc::Receiver<Attach>,
    ) {
        let beat = self.schedulers.heartbeat;
        let mut ticks = tokio::time::interval_at(Instant::now() + beat, beat);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sched = sched;
        let why = loop {
            let step = tokio::select! {
                a = attach.recv() => Step::Attach(a),
                c = calls.recv() => Step::Call(c),
                e = sched.next_event() => Step::Event(e),
                _ = ticks.tick() => Step::Tick,
                _ = client_gone(&self.stream) => Step::ClientGone,
            };
            match step {
                Step::Attach(Some(a)) => {
                    if !self.attach(a).await {
                        break "the new client stopped reading".to_owned();
                    }
                }
                Step::Attach(None) | Step::Call(None) => {
                    break "the gateway forgot the framework".to_owned()
                }
                Step::Call(Some(PumpRequest::Call(c))) => {
                    if sched.call(c).await.is_err() {
                        break "the Corral session ended".to_owned();
                    }
                }
                Step::Call(Some(PumpRequest::Update {
                    info,
                    suppressed_roles,
                    audience,
                    reply,
                })) => {
                    let result = update(&sched, info, suppressed_roles).await;
                    if result.is_ok() {
                        self.audience = audience;
                    }
                    let _ = reply.send(result);
                }
                Step::Event(Some(SchedulerEvent::Framework(e))) => {
                    if let Some(v) = events::translate(&self.audience, &e) {
                        if !self.deliver(v).await {
                            break "the client stopped reading".to_owned();
                        }
                    }
                }
                Step::Event(Some(SchedulerEvent::Disconnected { reason })) => self.park(&reason),
                Step::Event(Some(SchedulerEvent::Resubscribed { master })) => {
                    tracing::info!(framework_id = %self.framework_id, %master,
                        "the framework's Corral session re-subscribed");
                }
                Step::Event(Some(SchedulerEvent::Terminated { reason })) => {
                    self.send_last(events::error(&reason)).await;
                    break format!("the master ended the framework: {reason}");
                }
                Step::Event(None) => {
                    self.send_last(events::error("Framework has been removed"))
                        .await;
                    break "the Corral session ended".to_owned();
                }
                Step::Tick => match self.parked_since {
                    Some(since) if since.elapsed() >= PARK_TIMEOUT => {
                        break format!("no re-subscription within {PARK_TIMEOUT:?}");
                    }
                    Some(_) => {}
                    None => {
                        if !self.send(events::heartbeat()).await {
                            break "the client stopped reading".to_owned();
                        }
                    }
                },
                Step::ClientGone => break "the client closed the stream".to_owned(),
            }
        };
        tracing::info!(framework_id = %self.framework_id, %why, "Mesos framework session closed");
        self.schedulers.remove(&self.framework_id, self.session);
        drop(sched);
    }

    /// A new stream: the old one (if any) is told and ended; the backlog goes first.
    async fn attach(&mut self, a: Attach) -> bool {
        if self.stream.is_some() {
            self.send_last(events::error("Framework failed over")).await;
        }
        self.stream = Some(a);
        self.parked_since = None;
        while let Some(v) = self.backlog.pop_front() {
            if !self.send(v).await {
                return false;
            }
        }
        true
    }

    /// The master was lost: end the stream now; the session re-subscribes by itself.
    fn park(&mut self, reason: &str) {
        let stream_id = self
            .stream
            .as_ref()
            .map(|s| s.stream_id.as_str())
            .unwrap_or("");
        tracing::info!(framework_id = %self.framework_id, %reason, %stream_id,
            "lost the Corral master: ending the Mesos stream until the client re-subscribes");
        self.stream = None;
        self.parked_since = Some(Instant::now());
        self.schedulers
            .set_stream(&self.framework_id, self.session, None);
    }

    /// To the stream, or to the backlog while parked.
    async fn deliver(&mut self, v: Value) -> bool {
        if self.stream.is_some() {
            return self.send(v).await;
        }
        if self.backlog.len() >= BACKLOG {
            self.backlog.pop_front();
        }
        self.backlog.push_back(v);
        true
    }

    /// Queues a record for the client; false if it is gone or too slow.
    async fn send(&self, event: Value) -> bool {
        let Some(s) = &self.stream else {
            return true;
        };
        matches!(
            tokio::time::timeout(SLOW_CLIENT, s.records.send(events::record(&event))).await,
            Ok(Ok(()))
        )
    }

    /// Sends a last record and ends the stream.
    async fn send_last(&mut self, event: Value) {
        self.send(event).await;
        self.stream = None;
    }
}

/// UPDATE_FRAMEWORK on the session: the new info, then the roles to suppress (a subscription
/// un-suppresses every role).
async fn update(
    sched: &Scheduler,
    info: proto::FrameworkInfo,
    suppressed_roles: Vec<String>,
) -> Result<(), Refusal> {
    let roles = info.roles.clone();
    sched.update_framework(info).await.map_err(update_refusal)?;
    tracing::info!(framework_id = %sched.framework_id(), ?roles, "Mesos framework updated");
    if !suppressed_roles.is_empty() {
        sched
            .suppress(suppressed_roles)
            .await
            .map_err(|_| ended(sched.framework_id()))?;
    }
    Ok(())
}

/// Resolves when the attached client has gone (never while parked).
async fn client_gone(stream: &Option<Attach>) {
    match stream {
        Some(s) => s.records.closed().await,
        None => std::future::pending().await,
    }
}
