//! Client connections and their streams: the handshake and the peer's identity, then what
//! each stream's first frame asks for: a session with the core (agents, frameworks, one-shot
//! operator calls), a leader watch, a certificate call, a state read, a change of masters or
//! the event stream. Raft connections from other masters are handed to `master_raft`.

use crate::join::{is_anonymous, serve_anonymous};
use crate::leadership::serve_leader_watch;
use crate::server::{Edge, Event, MAX_CONNECTIONS, OPERATOR_CALL_TIMEOUT, SESSION_OUTBOX};
use master_core::SessionId;
use master_raft::{network::serve_raft_connection, MasterNode, MembershipError};
use proto::{
    CertificateCall, ClientFrame, ErrorCode, ErrorReply, EventCursor, FrameworkCall, OperatorCall,
    OperatorReply, PeerIdentity, Role, ServerFrame,
};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::mpsc;
use transport::{FramedRecv, FramedSend, RecvBudget, TransportError};

pub(crate) async fn accept_loop(endpoint: transport::Endpoint, edge: Arc<Edge>) {
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

async fn handle_connection(incoming: transport::Incoming, edge: Arc<Edge>) {
    let remote = incoming.remote_address();
    // Boxed: the handshake's state is large and needed only until it completes.
    let conn = match Box::pin(incoming.handshake()).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(%remote, error = %e, "refused connection: TLS handshake failed");
            return;
        }
    };
    let peer = match conn.peer_identity() {
        Ok(p) => p,
        // Only a master accepting joins completes a handshake without a client certificate.
        Err(e) if is_anonymous(&e) && edge.joins.enabled() => {
            tracing::debug!(%remote, "connection without a certificate: joins only");
            Box::pin(serve_anonymous(conn, &edge.joins, || edge.leader_view())).await;
            return;
        }
        Err(e) => {
            tracing::warn!(%remote, error = %e, "refused connection: no usable identity");
            conn.close(1, b"certificate carries no corral identity");
            return;
        }
    };
    tracing::debug!(%remote, %peer, "connection accepted");
    // Agents, thousands of them, keep the few streams granted at the handshake; other peers
    // (frameworks sharing a gateway's connection, operators, masters) get room for more.
    if peer.role != Role::Agent {
        conn.allow_bi_streams(transport::MAX_CONCURRENT_BI_STREAMS);
    }
    let _open = edge.metrics.connection(peer.role);
    // Other masters speak raft on their connections; everyone else speaks the client protocol.
    if peer.role == Role::Master {
        if let Err(e) = Box::pin(serve_raft_connection(edge.registry.raft_server(), conn)).await {
            tracing::debug!(%remote, %peer, error = %e, "raft connection ended");
        }
        return;
    }
    let budget = RecvBudget::new(edge.max_frame_len);
    loop {
        match transport::accept_framed::<ServerFrame, ClientFrame>(&conn, edge.max_frame_len).await
        {
            Ok((tx, rx)) => {
                let edge = edge.clone();
                let peer = peer.clone();
                let budget = budget.clone();
                tokio::spawn(
                    async move { handle_stream(tx, rx, peer, remote, edge, budget).await },
                );
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

/// One stream of a client connection: its first frame says what it is for. Every stream of
/// every connection is a task, so the rare kinds (leader watches, certificate calls, state
/// reads, master membership, event streams) run boxed: a task's future is as large as its
/// largest branch, and sessions (one per agent) would otherwise each carry the largest.
async fn handle_stream(
    mut tx: FramedSend<ServerFrame>,
    rx: FramedRecv<ClientFrame>,
    peer: PeerIdentity,
    remote: SocketAddr,
    edge: Arc<Edge>,
    connection_budget: RecvBudget,
) {
    let mut rx = rx
        .with_budget(connection_budget)
        .with_budget(edge.frame_budget.clone());
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
    match first {
        ClientFrame::WatchLeader => {
            Box::pin(serve_leader_watch(tx, rx, edge.leadership.news.subscribe())).await
        }
        ClientFrame::Certificates(call) => {
            Box::pin(answer_certificate_call(tx, call, &peer, &edge)).await
        }
        ClientFrame::Operator(OperatorCall::GetState) => {
            Box::pin(answer_state_read(tx, &peer, &edge)).await
        }
        ClientFrame::Operator(
            call @ (OperatorCall::AddMaster { .. } | OperatorCall::RemoveMaster { .. }),
        ) => Box::pin(answer_membership_call(tx, call, &peer, &edge)).await,
        ClientFrame::Operator(OperatorCall::SubscribeEvents { after }) => {
            Box::pin(serve_events(tx, rx, after, &peer, &edge)).await
        }
        first => serve_session(tx, rx, first, peer, remote, edge).await,
    }
}

/// Joins, renewals and revocations: the daemon holds the CA key (`join.rs`).
async fn answer_certificate_call(
    mut tx: FramedSend<ServerFrame>,
    call: CertificateCall,
    peer: &PeerIdentity,
    edge: &Edge,
) {
    let view = edge.leader_view();
    let _ = tx
        .send(&edge.joins.answer(Some(peer), call, view).await)
        .await;
    let _ = tx.finish().await;
}

/// Reads are served from the published snapshot: they never wait for the core.
async fn answer_state_read(mut tx: FramedSend<ServerFrame>, peer: &PeerIdentity, edge: &Edge) {
    if peer.role != Role::Operator {
        send_error(
            &mut tx,
            ErrorCode::Forbidden,
            format!("{peer} may not read the cluster state: it needs an operator certificate"),
        )
        .await;
    } else if !edge.leadership.is_leader.load(Ordering::Acquire) {
        let _ = tx
            .send(&ServerFrame::NotLeader {
                leader: edge.leadership.leader(),
            })
            .await;
    } else {
        // Confirmed leader now, and the snapshot republished after the read index.
        let reply = match Box::pin(edge.reads.confirm()).await {
            Ok(()) => {
                let state = edge.snapshot.borrow().clone();
                ServerFrame::Operator(OperatorReply::State(Box::new((*state).clone())))
            }
            Err(frame) => frame,
        };
        let _ = tx.send(&reply).await;
    }
    let _ = tx.finish().await;
}

/// Master membership is the replicated log's business, answered here on the leader.
async fn answer_membership_call(
    mut tx: FramedSend<ServerFrame>,
    call: OperatorCall,
    peer: &PeerIdentity,
    edge: &Edge,
) {
    let reply = if peer.role != Role::Operator {
        ServerFrame::Error(ErrorReply {
            code: ErrorCode::Forbidden,
            message: format!("{peer} may not change the masters: it needs an operator certificate"),
            fatal: true,
        })
    } else if !edge.leadership.is_leader.load(Ordering::Acquire) {
        ServerFrame::NotLeader {
            leader: edge.leadership.leader(),
        }
    } else {
        let result = match call {
            OperatorCall::AddMaster { id, name, address } => {
                tracing::info!(id, %name, %address, "adding a master");
                edge.registry
                    .add_master(id, MasterNode::new(address, name))
                    .await
            }
            OperatorCall::RemoveMaster { id } => {
                tracing::info!(id, "removing a master");
                edge.registry.remove_master(id).await
            }
            _ => return,
        };
        match result {
            Ok(()) => ServerFrame::Operator(OperatorReply::Done),
            // Leadership moved while the change waited: send the client on to the new
            // leader, which `open_session` follows, rather than failing the call.
            Err(MembershipError::NotLeader { leader }) => ServerFrame::NotLeader {
                leader: leader
                    .map(|(_, node)| node.addr)
                    .or_else(|| edge.leadership.leader()),
            },
            Err(e) => ServerFrame::Error(ErrorReply {
                code: ErrorCode::BadRequest,
                message: e.to_string(),
                fatal: true,
            }),
        }
    };
    let _ = tx.send(&reply).await;
    let _ = tx.finish().await;
}

/// The event stream, on the master that leads now (confirmed, every op committed before the
/// request applied, so its journal holds every event a client saw).
async fn serve_events(
    tx: FramedSend<ServerFrame>,
    rx: FramedRecv<ClientFrame>,
    after: Option<EventCursor>,
    peer: &PeerIdentity,
    edge: &Edge,
) {
    let refusal = if peer.role != Role::Operator {
        Some(crate::event_stream::forbidden(peer))
    } else if !edge.leadership.is_leader.load(Ordering::Acquire) {
        let leader = edge.leadership.leader();
        Some(ServerFrame::NotLeader { leader })
    } else {
        Box::pin(edge.reads.confirm()).await.err()
    };
    let leadership = edge.leadership.clone();
    let leader = move || leadership.leader();
    crate::event_stream::serve(&edge.event_source, tx, rx, after, refusal, leader).await;
}

/// A session: an agent's, a framework's, or one operator call answered by the core. Frames go
/// to the core loop as events; the core's answers come back through the session's outbox.
async fn serve_session(
    mut tx: FramedSend<ServerFrame>,
    mut rx: FramedRecv<ClientFrame>,
    first: ClientFrame,
    peer: PeerIdentity,
    remote: SocketAddr,
    edge: Arc<Edge>,
) {
    let one_shot = matches!(first, ClientFrame::Operator(_));
    let (session, mut out_rx) = match Box::pin(open_session(first, &peer, &edge)).await {
        Ok(Some(opened)) => opened,
        Ok(None) => return,
        Err(refusal) => {
            let _ = tx.send(&refusal).await;
            let _ = tx.finish().await;
            return;
        }
    };
    if one_shot {
        Box::pin(answer_one_shot(tx, out_rx, session, &edge)).await;
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
                    edge.metrics.frame_out();
                }
                // The core closed this session.
                None => break,
            },
            inbound = rx.recv() => match inbound {
                Ok(Some(frame)) => {
                    edge.metrics.frame_in();
                    // Reconciliation (and a kill of a task the registry does not know, which
                    // is answered as reconciliation) tells the framework what the cluster
                    // knows: only a master that leads now may answer it. The session waits
                    // meanwhile, so its frames stay in order.
                    if reads_registry(&frame) {
                        if let Err(reply) = Box::pin(edge.reads.confirm()).await {
                            let _ = tx.send(&reply).await;
                            break;
                        }
                    }
                    if !to_core(&edge, Event::Frame { session, frame }).await {
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
    to_core(&edge, Event::Disconnected { session }).await;
}

/// Hands `event` to the core loop; false when the loop is gone. The event goes into the box
/// at once, so a session's future does not carry room for one (with its frame) the whole time
/// it waits.
fn to_core(edge: &Edge, event: Event) -> Pin<Box<dyn Future<Output = bool> + Send + '_>> {
    Box::pin(async move { edge.events.send(event).await.is_ok() })
}

/// Opens a session with the core for a stream whose first frame is `first`: an operator call
/// (other than those answered at the edge) first waits for this master to confirm it leads,
/// since every one is answered from the registry (a log's agent, "no such task", "unknown
/// agent"). An error is the answer that refuses the call; `None` when the core loop is gone.
async fn open_session(
    first: ClientFrame,
    peer: &PeerIdentity,
    edge: &Edge,
) -> Result<Option<(SessionId, mpsc::Receiver<Box<ServerFrame>>)>, ServerFrame> {
    let one_shot = matches!(first, ClientFrame::Operator(_));
    if one_shot && edge.leadership.is_leader.load(Ordering::Acquire) {
        edge.reads.confirm().await?;
    }
    let session = edge.next_session.fetch_add(1, Ordering::Relaxed);
    let (out_tx, out_rx) = mpsc::channel(SESSION_OUTBOX);
    let connected = Event::Connected {
        session,
        peer: peer.clone(),
        outbox: out_tx,
    };
    let frame = Event::Frame {
        session,
        frame: first,
    };
    if !to_core(edge, connected).await || !to_core(edge, frame).await {
        return Ok(None);
    }
    Ok(Some((session, out_rx)))
}

/// A one-shot operator call: the core's answer, or an error if it does not come in time;
/// then the session ends.
async fn answer_one_shot(
    mut tx: FramedSend<ServerFrame>,
    mut out_rx: mpsc::Receiver<Box<ServerFrame>>,
    session: SessionId,
    edge: &Edge,
) {
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
    to_core(edge, Event::Disconnected { session }).await;
}

/// Whether a framework call is answered from the registry rather than only changing it.
fn reads_registry(frame: &ClientFrame) -> bool {
    matches!(
        frame,
        ClientFrame::Framework(FrameworkCall::Reconcile { .. } | FrameworkCall::Kill { .. })
    )
}
