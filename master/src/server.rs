use master_core::{Master, Output, SessionId};
use proto::{
    ClientFrame, ClusterState, ErrorCode, ErrorReply, OperatorCall, OperatorReply, PeerIdentity,
    Role, ServerFrame,
};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use transport::{FramedSend, Identity, TransportError};

/// Events from stream tasks to the core loop.
const EVENT_QUEUE: usize = 8192;
/// Frames waiting to be written to one client. A client that lets this fill up is too slow to
/// follow the cluster and is disconnected (it re-subscribes and reconciles).
const SESSION_OUTBOX: usize = 4096;
/// How often, at most, the operator snapshot is rebuilt while the cluster changes.
const SNAPSHOT_INTERVAL: Duration = Duration::from_millis(100);
/// How long a one-shot operator call may wait for its answer.
const OPERATOR_CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Concurrent client connections accepted; more are refused until some close.
const MAX_CONNECTIONS: usize = 65_536;

/// Everything the master daemon needs to run.
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub identity: Arc<Identity>,
    pub core: master_core::MasterConfig,
    pub max_frame_len: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    #[error("cannot use data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: TransportError,
    },
    #[error("the certificate {0} is not a master certificate; issue one with `corral certs issue --role master`")]
    NotAMasterCertificate(String),
}

enum Event {
    Connected {
        session: SessionId,
        peer: PeerIdentity,
        outbox: mpsc::Sender<ServerFrame>,
    },
    Frame {
        session: SessionId,
        frame: ClientFrame,
    },
    Disconnected {
        session: SessionId,
    },
}

/// Shared by all connection and stream tasks.
struct Edge {
    events: mpsc::Sender<Event>,
    snapshot: watch::Receiver<Arc<ClusterState>>,
    next_session: AtomicU64,
    max_frame_len: usize,
}

/// A bound, not yet running, master.
pub struct MasterServer {
    endpoint: quinn::Endpoint,
    config: Config,
}

impl MasterServer {
    /// Checks the configuration and binds the QUIC endpoint.
    pub fn bind(config: Config) -> Result<MasterServer, MasterError> {
        if config.identity.peer().role != Role::Master {
            return Err(MasterError::NotAMasterCertificate(
                config.identity.peer().to_string(),
            ));
        }
        std::fs::create_dir_all(&config.data_dir).map_err(|source| MasterError::DataDir {
            path: config.data_dir.clone(),
            source,
        })?;
        let endpoint =
            transport::server_endpoint(config.listen, &config.identity).map_err(|source| {
                MasterError::Listen {
                    addr: config.listen,
                    source,
                }
            })?;
        Ok(MasterServer { endpoint, config })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.endpoint.local_addr().unwrap_or(self.config.listen)
    }

    /// Serves until `shutdown` completes.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), MasterError> {
        let MasterServer { endpoint, config } = self;
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        let (snapshot_tx, snapshot_rx) = watch::channel(Arc::new(ClusterState::default()));
        let edge = Arc::new(Edge {
            events: events_tx,
            snapshot: snapshot_rx,
            next_session: AtomicU64::new(1),
            max_frame_len: config.max_frame_len,
        });
        tracing::info!(listen = %endpoint.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            name = %config.identity.peer().name, "master serving");
        let core = tokio::spawn(core_loop(config.core, events_rx, snapshot_tx));
        let accept = accept_loop(endpoint.clone(), edge);
        tokio::select! {
            _ = accept => {}
            _ = shutdown => {}
        }
        tracing::info!("master shutting down");
        endpoint.close(0u32.into(), b"master shutting down");
        core.abort();
        let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
        Ok(())
    }
}

async fn accept_loop(endpoint: quinn::Endpoint, edge: Arc<Edge>) {
    let open = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    while let Some(incoming) = endpoint.accept().await {
        let Ok(permit) = open.clone().try_acquire_owned() else {
            tracing::warn!(remote = %incoming.remote_address(), "refusing connection: too many connections");
            incoming.refuse();
            continue;
        };
        let edge = edge.clone();
        tokio::spawn(async move {
            handle_connection(incoming, edge).await;
            drop(permit);
        });
    }
}

async fn handle_connection(incoming: quinn::Incoming, edge: Arc<Edge>) {
    let remote = incoming.remote_address();
    let conn = match incoming.await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(%remote, error = %e, "refused connection: TLS handshake failed");
            return;
        }
    };
    let peer = match transport::peer_identity(&conn) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(%remote, error = %e, "refused connection: no usable identity");
            conn.close(1u32.into(), b"certificate carries no corral identity");
            return;
        }
    };
    tracing::debug!(%remote, %peer, "connection accepted");
    loop {
        match conn.accept_bi().await {
            Ok((send, recv)) => {
                let edge = edge.clone();
                let peer = peer.clone();
                tokio::spawn(async move { handle_stream(send, recv, peer, remote, edge).await });
            }
            Err(e) => {
                tracing::debug!(%remote, %peer, error = %e, "connection closed");
                return;
            }
        }
    }
}

/// Whether a receive error was the peer's fault (a frame we refuse) rather than a lost link.
fn is_bad_input(e: &TransportError) -> bool {
    matches!(
        e,
        TransportError::Decode { .. } | TransportError::Truncated { .. }
    )
}

async fn send_error(tx: &mut FramedSend<ServerFrame>, code: ErrorCode, message: String) {
    let frame = ServerFrame::Error(ErrorReply {
        code,
        message,
        fatal: true,
    });
    let _ = tx.send(&frame).await;
}

async fn handle_stream(
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    peer: PeerIdentity,
    remote: SocketAddr,
    edge: Arc<Edge>,
) {
    let (mut tx, mut rx) =
        transport::framed::<ServerFrame, ClientFrame>(send, recv, edge.max_frame_len);
    let first = match rx.recv().await {
        Ok(Some(f)) => f,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(%remote, %peer, error = %e, "closing stream: bad first frame");
            send_error(&mut tx, ErrorCode::MalformedFrame, e.to_string()).await;
            let _ = tx.finish().await;
            return;
        }
    };
    // Reads are served from the published snapshot: they never wait for the core.
    if let ClientFrame::Operator(OperatorCall::GetState) = first {
        if peer.role == Role::Operator {
            let state = edge.snapshot.borrow().clone();
            let _ = tx
                .send(&ServerFrame::Operator(OperatorReply::State(Box::new(
                    (*state).clone(),
                ))))
                .await;
        } else {
            send_error(
                &mut tx,
                ErrorCode::Forbidden,
                format!("{peer} may not read the cluster state: it needs an operator certificate"),
            )
            .await;
        }
        let _ = tx.finish().await;
        return;
    }
    let one_shot = matches!(first, ClientFrame::Operator(_));
    let session = edge.next_session.fetch_add(1, Ordering::Relaxed);
    let (out_tx, mut out_rx) = mpsc::channel(SESSION_OUTBOX);
    let connected = Event::Connected {
        session,
        peer: peer.clone(),
        outbox: out_tx,
    };
    if edge.events.send(connected).await.is_err()
        || edge
            .events
            .send(Event::Frame {
                session,
                frame: first,
            })
            .await
            .is_err()
    {
        return;
    }
    if one_shot {
        if let Ok(Some(reply)) = tokio::time::timeout(OPERATOR_CALL_TIMEOUT, out_rx.recv()).await {
            let _ = tx.send(&reply).await;
        } else {
            send_error(
                &mut tx,
                ErrorCode::Unavailable,
                "the master did not answer in time".into(),
            )
            .await;
        }
        let _ = tx.finish().await;
        let _ = edge.events.send(Event::Disconnected { session }).await;
        return;
    }
    loop {
        tokio::select! {
            out = out_rx.recv() => match out {
                Some(frame) => {
                    if let Err(e) = tx.send(&frame).await {
                        tracing::debug!(%remote, %peer, error = %e, "session write failed");
                        break;
                    }
                }
                // The core closed this session.
                None => break,
            },
            inbound = rx.recv() => match inbound {
                Ok(Some(frame)) => {
                    if edge.events.send(Event::Frame { session, frame }).await.is_err() {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) if is_bad_input(&e) => {
                    tracing::warn!(%remote, %peer, error = %e, "closing session: bad frame");
                    send_error(&mut tx, ErrorCode::MalformedFrame, e.to_string()).await;
                    break;
                }
                Err(e) => {
                    tracing::info!(%remote, %peer, reason = %e, "session ended");
                    break;
                }
            },
        }
    }
    let _ = tx.finish().await;
    let _ = edge.events.send(Event::Disconnected { session }).await;
}

/// The one task that owns the core. Everything the core does happens here, in event order.
async fn core_loop(
    config: master_core::MasterConfig,
    mut events: mpsc::Receiver<Event>,
    snapshot: watch::Sender<Arc<ClusterState>>,
) {
    let mut master = Master::new(config, Instant::now());
    let mut outboxes: HashMap<SessionId, mpsc::Sender<ServerFrame>> = HashMap::new();
    let mut publish = tokio::time::interval(SNAPSHOT_INTERVAL);
    publish.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let deadline = master
            .poll_timeout()
            .map(tokio::time::Instant::from_std)
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            event = events.recv() => {
                let Some(event) = event else { return };
                let now = Instant::now();
                match event {
                    Event::Connected { session, peer, outbox } => {
                        outboxes.insert(session, outbox);
                        master.handle_connected(now, session, peer);
                    }
                    Event::Frame { session, frame } => master.handle_message(now, session, frame),
                    Event::Disconnected { session } => {
                        if outboxes.remove(&session).is_some() {
                            master.handle_disconnected(now, session);
                        }
                    }
                }
            }
            _ = tokio::time::sleep_until(deadline) => master.handle_timeout(Instant::now()),
            _ = publish.tick() => {
                if master.snapshot_dirty() {
                    master.clear_snapshot_dirty();
                    let _ = snapshot.send(Arc::new(master.snapshot()));
                }
            }
        }
        drain_outputs(&mut master, &mut outboxes);
    }
}

fn drain_outputs(
    master: &mut Master,
    outboxes: &mut HashMap<SessionId, mpsc::Sender<ServerFrame>>,
) {
    let mut slow = Vec::new();
    while let Some(output) = master.poll_output() {
        match output {
            Output::Send { to, frame } => {
                if let Some(outbox) = outboxes.get(&to) {
                    if let Err(mpsc::error::TrySendError::Full(_)) = outbox.try_send(frame) {
                        tracing::warn!(session = to, "closing a session that does not keep up");
                        slow.push(to);
                    }
                }
            }
            Output::Close { session, reason } => {
                tracing::info!(session, %reason, "closing session");
                // Dropping the outbox lets the stream task flush what is queued, then finish.
                if outboxes.remove(&session).is_some() {
                    master.handle_disconnected(Instant::now(), session);
                }
            }
            // A single master is a one-voter cluster: an op is committed as soon as proposed.
            // The replicated log replaces this with openraft (see ARCHITECTURE.md).
            Output::Propose(op) => master.handle_committed(Instant::now(), op),
        }
    }
    for session in slow {
        if outboxes.remove(&session).is_some() {
            master.handle_disconnected(Instant::now(), session);
        }
    }
}
