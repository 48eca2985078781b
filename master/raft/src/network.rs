//! Raft RPCs between masters over mutually-authenticated QUIC.
//!
//! **Client** ([`Network`], [`PeerClient`]): one QUIC connection per peer master, shared by
//! every openraft client of that peer (replication, votes, heartbeats), made on first use and
//! remade after a failure. Connecting checks that the peer's certificate chains to our CA *and*
//! names the master we meant to reach (`transport::connect(.., Role::Master, Some(name))`), so a
//! stale address now held by another master, or an agent, is refused. Each RPC is one
//! bidirectional stream: one [`RaftRequest`] frame out, one [`RaftResponse`] frame back (proto's
//! codec). A peer we cannot connect to is [`RPCError::Unreachable`] (openraft then backs off
//! instead of retrying at once); an RPC that outlives its deadline is [`RPCError::Timeout`], and
//! the connection is dropped so the next RPC reconnects if the peer sent nothing during it.
//!
//! **Server** ([`RaftServer`], [`serve_raft_connection`], [`serve_raft_stream`]): the daemon hands us every
//! bidirectional stream of a connection whose peer certificate has role `master`; we refuse
//! any other role (a second check: the daemon routes by role too). Requests on a stream are
//! answered in order until the peer finishes it.

use crate::election::{self, Contact, PreVoteRequest, PreVoteResponse, Timing};
use crate::{MasterNode, NodeId, Raft, SnapshotMeta, TypeConfig, Vote};
use openraft::error::{
    Fatal, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, ReplicationClosed,
    StreamingError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::OptionalSend;
use proto::{PeerIdentity, Role};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::future::Future;
use std::io::Cursor;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use transport::{FramedRecv, FramedSend, TransportError};

/// Largest raft frame: the protocol's maximum (a snapshot must fit in one).
pub const MAX_RAFT_FRAME: usize = proto::MAX_FRAME_LEN;

/// A request from one master's raft to another's. One per stream from our client; a server
/// answers any number in order.
#[derive(Debug, Serialize, Deserialize)]
pub enum RaftRequest {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    /// The whole snapshot in one frame (the registry is at most tens of megabytes).
    FullSnapshot {
        vote: Vote,
        meta: SnapshotMeta,
        data: Vec<u8>,
    },
    /// "Would you vote for me?" before an election ([`crate::election`]).
    PreVote(PreVoteRequest),
}

/// The answer to a [`RaftRequest`]: the receiving raft's own result, or a refusal.
#[derive(Debug, Serialize, Deserialize)]
pub enum RaftResponse {
    AppendEntries(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    FullSnapshot(Result<SnapshotResponse<NodeId>, Fatal<NodeId>>),
    PreVote(PreVoteResponse),
    /// The request was not handed to raft (the peer is not a master).
    Refused(String),
}

/// Why serving raft to a peer stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{peer} may not send raft messages: only masters take part in raft")]
    NotAMaster { peer: PeerIdentity },
    #[error(transparent)]
    Transport(#[from] TransportError),
}

/// Why an RPC failed before the peer's raft answered.
#[derive(Debug, thiserror::Error)]
enum CallError {
    /// No connection could be made (down, refused, wrong certificate): back off.
    #[error("{0}")]
    Unreachable(String),
    /// The connection failed mid-call, or the answer made no sense: retry.
    #[error("{0}")]
    Network(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The request does not fit in one frame: openraft should send fewer entries.
    #[error("{0}")]
    TooLarge(String),
}

/// The openraft network factory: connections to the other masters.
#[derive(Clone, Debug)]
pub struct Network {
    me: NodeId,
    endpoint: transport::Endpoint,
    peers: Arc<Mutex<HashMap<NodeId, Arc<Peer>>>>,
}

#[derive(Debug)]
struct Peer {
    node: MasterNode,
    /// The current connection, if any.
    conn: tokio::sync::Mutex<Option<transport::Connection>>,
    /// Handshakes under way and when the last one began.
    handshakes: Mutex<Handshakes>,
    /// Woken when a handshake ends.
    connected: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct Handshakes {
    in_flight: usize,
    last_start: Option<Instant>,
}

/// How long one handshake to a peer master may take. It runs in its own task, apart from any
/// RPC deadline: a heartbeat's deadline (150 ms) is shorter than a handshake on a loaded host,
/// and cutting every handshake at an RPC deadline would never connect at all.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A handshake unanswered for this long does not keep the next one from starting. To a peer
/// that is down (killed, or cut off) the client's Initial packets are lost, and QUIC resends
/// them on an exponential backoff (about 1 s, then 2 s, ...), so a peer that comes back would
/// be reached only at the next resend, seconds later, if one handshake at a time were allowed:
/// meanwhile the restarted peer hears no leader and stands for election. A new handshake sends
/// a fresh Initial at once; the older ones go on until they finish or time out (a slow but live
/// peer is not cut off), within [`MAX_HANDSHAKES`].
const REDIAL_AFTER: Duration = Duration::from_millis(300);
/// Handshakes to one peer under way at once (see [`REDIAL_AFTER`]).
const MAX_HANDSHAKES: usize = 4;

impl Network {
    /// A network for raft node `me` that connects out through `endpoint` (the master's QUIC
    /// endpoint, whose default client configuration presents our certificate).
    pub fn new(me: NodeId, endpoint: transport::Endpoint) -> Network {
        Network {
            me,
            endpoint,
            peers: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// A client for `target` at `node`, sharing the connection with other clients of it.
    pub fn client(&self, target: NodeId, node: &MasterNode) -> PeerClient {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        let peer = match peers.get(&target) {
            Some(p) if p.node == *node => p.clone(),
            _ => {
                // New peer, or its address or name changed: start afresh.
                let p = Arc::new(Peer {
                    node: node.clone(),
                    conn: tokio::sync::Mutex::new(None),
                    handshakes: Mutex::new(Handshakes::default()),
                    connected: tokio::sync::Notify::new(),
                });
                peers.insert(target, p.clone());
                p
            }
        };
        PeerClient {
            me: self.me,
            target,
            peer,
            endpoint: self.endpoint.clone(),
        }
    }

    /// Closes every connection to peers (on shutdown, so they notice at once), and the endpoint.
    pub fn close_all(&self) {
        let peers: Vec<Arc<Peer>> = {
            let peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
            peers.values().cloned().collect()
        };
        for p in peers {
            if let Ok(guard) = p.conn.try_lock() {
                if let Some(c) = guard.as_ref() {
                    c.close(0, b"master shutting down");
                }
            }
        }
        self.endpoint.close(0, b"master shutting down");
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &MasterNode) -> PeerClient {
        self.client(target, node)
    }
}

impl Peer {
    /// Whether to start a handshake now: none is under way, or the last began
    /// [`REDIAL_AFTER`] ago and fewer than [`MAX_HANDSHAKES`] are. Counts it as started.
    fn start_handshake(&self) -> bool {
        let mut h = self.handshakes.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let due = match h.last_start {
            _ if h.in_flight == 0 => true,
            Some(t) => h.in_flight < MAX_HANDSHAKES && now >= t + REDIAL_AFTER,
            None => true,
        };
        if due {
            h.in_flight += 1;
            h.last_start = Some(now);
        }
        due
    }
}

/// One handshake to `peer`; the connection it makes becomes the peer's unless another
/// handshake made one first (then this one is closed: one connection per peer).
async fn handshake(peer: Arc<Peer>, endpoint: transport::Endpoint, target: NodeId) {
    let node = &peer.node;
    let connect = async {
        let addr = transport::resolve(&node.addr).await?;
        transport::connect(&endpoint, addr, Role::Master, Some(&node.name)).await
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(Ok(c)) => {
            let mut guard = peer.conn.lock().await;
            match guard.as_ref() {
                Some(open) if !open.is_closed() => {
                    c.close(0, b"already connected");
                }
                _ => *guard = Some(c),
            }
        }
        Ok(Err(e)) => {
            tracing::debug!(target, %node, error = %e, "cannot reach a peer master")
        }
        Err(_) => {
            tracing::debug!(target, %node, "handshake with a peer master timed out")
        }
    }
    {
        let mut h = peer.handshakes.lock().unwrap_or_else(|e| e.into_inner());
        h.in_flight = h.in_flight.saturating_sub(1);
    }
    peer.connected.notify_waiters();
}

/// RPCs to one peer master.
#[derive(Debug)]
pub struct PeerClient {
    me: NodeId,
    target: NodeId,
    peer: Arc<Peer>,
    endpoint: transport::Endpoint,
}

impl PeerClient {
    /// The connection to the peer, made if needed, by `deadline`. The handshake runs in its own
    /// task with [`CONNECT_TIMEOUT`]; a call whose deadline passes first fails as unreachable
    /// while the handshake goes on for the next call.
    async fn connection(&self, deadline: Instant) -> Result<transport::Connection, CallError> {
        loop {
            let notified = self.peer.connected.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut guard = self.peer.conn.lock().await;
                if let Some(c) = guard.as_ref() {
                    if !c.is_closed() {
                        return Ok(c.clone());
                    }
                    *guard = None;
                }
            }
            if self.peer.start_handshake() {
                tokio::spawn(handshake(
                    self.peer.clone(),
                    self.endpoint.clone(),
                    self.target,
                ));
            }
            tokio::select! {
                _ = &mut notified => {
                    let guard = self.peer.conn.lock().await;
                    if let Some(c) = guard.as_ref().filter(|c| !c.is_closed()) {
                        return Ok(c.clone());
                    }
                    drop(guard);
                    if Instant::now() >= deadline {
                        break;
                    }
                    // The handshake failed: try again (the next loop starts a new one) unless
                    // the deadline is near.
                    tokio::time::sleep_until(deadline.min(Instant::now() + Duration::from_millis(50))).await;
                    if Instant::now() >= deadline {
                        break;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        Err(CallError::Unreachable(format!(
            "no connection to raft node {} ({}) within the rpc deadline",
            self.target, self.peer.node
        )))
    }

    /// Forgets `conn` if it is still the peer's connection, so the next call reconnects.
    async fn forget(&self, conn: &transport::Connection) {
        let mut guard = self.peer.conn.lock().await;
        if guard.as_ref().is_some_and(|c| c.same_as(conn)) {
            *guard = None;
        }
    }

    /// Sends one request on a fresh stream and reads the answer, within `ttl`.
    async fn call(&self, req: &RaftRequest, ttl: Duration) -> Result<RaftResponse, CallError> {
        let deadline = Instant::now() + ttl;
        let conn = self.connection(deadline).await?;
        let heard_before = conn.datagrams_received();
        let exchange = async {
            let (mut tx, mut rx) =
                transport::open_framed::<RaftRequest, RaftResponse>(&conn, MAX_RAFT_FRAME).await?;
            tx.send(req).await?;
            let resp = rx.recv().await?;
            let _ = tx.finish().await;
            Ok::<_, TransportError>(resp)
        };
        match tokio::time::timeout_at(deadline, exchange).await {
            Ok(Ok(Some(RaftResponse::Refused(reason)))) => Err(CallError::Unreachable(format!(
                "{} refused our raft request: {reason}",
                self.peer.node
            ))),
            Ok(Ok(Some(resp))) => Ok(resp),
            Ok(Ok(None)) => {
                self.forget(&conn).await;
                Err(CallError::Network(format!(
                    "{} closed the raft stream without answering",
                    self.peer.node
                )))
            }
            Ok(Err(e @ TransportError::Encode { .. })) => Err(CallError::TooLarge(e.to_string())),
            Ok(Err(e)) => {
                self.forget(&conn).await;
                if e.is_certificate_refused() {
                    Err(CallError::Unreachable(e.to_string()))
                } else {
                    Err(CallError::Network(e.to_string()))
                }
            }
            Err(_) => {
                // A peer that sent nothing at all (not even an ACK of our request) during the
                // call may be gone (a restarted master ignores the old connection): reconnect.
                // One that did is alive but slow (a busy host, a long fsync): keep the
                // connection, as a new handshake would only add to its load.
                if conn.datagrams_received() == heard_before {
                    self.forget(&conn).await;
                }
                Err(CallError::Timeout(ttl))
            }
        }
    }

    fn rpc_error<E: std::error::Error>(
        &self,
        e: CallError,
        action: RPCTypes,
    ) -> RPCError<NodeId, MasterNode, E> {
        match e {
            CallError::Unreachable(m) => RPCError::Unreachable(Unreachable::new(&msg_err(m))),
            CallError::Network(m) | CallError::TooLarge(m) => {
                RPCError::Network(NetworkError::new(&msg_err(m)))
            }
            CallError::Timeout(timeout) => RPCError::Timeout(Timeout {
                action,
                id: self.me,
                target: self.target,
                timeout,
            }),
        }
    }

    /// Asks the peer for a pre-vote within `ttl`: whether it would vote for us.
    pub(crate) async fn pre_vote(
        &self,
        req: &PreVoteRequest,
        ttl: Duration,
    ) -> Result<bool, String> {
        match self.call(&RaftRequest::PreVote(req.clone()), ttl).await {
            Ok(RaftResponse::PreVote(r)) => Ok(r.granted),
            Ok(other) => Err(self.unexpected("pre-vote", &other).to_string()),
            Err(e) => Err(format!("pre-vote to {}: {e}", self.peer.node)),
        }
    }

    fn unexpected(&self, what: &str, resp: &RaftResponse) -> CallError {
        CallError::Network(format!(
            "{} answered a {what} request with {}",
            self.peer.node,
            match resp {
                RaftResponse::AppendEntries(_) => "an append-entries response",
                RaftResponse::Vote(_) => "a vote response",
                RaftResponse::FullSnapshot(_) => "a snapshot response",
                RaftResponse::PreVote(_) => "a pre-vote response",
                RaftResponse::Refused(_) => "a refusal",
            }
        ))
    }
}

/// An error carrying only a message (openraft's error types wrap any `std::error::Error`).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct MsgError(String);

fn msg_err(m: String) -> MsgError {
    MsgError(m)
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, MasterNode, RaftError<NodeId>>>
    {
        let entries = rpc.entries.len() as u64;
        let req = RaftRequest::AppendEntries(rpc);
        let resp = match self.call(&req, option.soft_ttl()).await {
            Ok(r) => r,
            // Half as many entries next time (one entry too large is reported unreachable by
            // openraft itself).
            Err(CallError::TooLarge(_)) => {
                return Err(RPCError::PayloadTooLarge(
                    PayloadTooLarge::new_entries_hint((entries / 2).max(1)),
                ))
            }
            Err(e) => return Err(self.rpc_error(e, RPCTypes::AppendEntries)),
        };
        match resp {
            RaftResponse::AppendEntries(Ok(r)) => Ok(r),
            RaftResponse::AppendEntries(Err(e)) => Err(RPCError::RemoteError(
                RemoteError::new_with_node(self.target, self.peer.node.clone(), e),
            )),
            other => Err(self.rpc_error(
                self.unexpected("append-entries", &other),
                RPCTypes::AppendEntries,
            )),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, MasterNode, RaftError<NodeId>>> {
        let req = RaftRequest::Vote(rpc);
        let resp = self
            .call(&req, option.soft_ttl())
            .await
            .map_err(|e| self.rpc_error(e, RPCTypes::Vote))?;
        match resp {
            RaftResponse::Vote(Ok(r)) => Ok(r),
            RaftResponse::Vote(Err(e)) => Err(RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.peer.node.clone(),
                e,
            ))),
            other => Err(self.rpc_error(self.unexpected("vote", &other), RPCTypes::Vote)),
        }
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: crate::Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, StreamingError<TypeConfig, Fatal<NodeId>>> {
        let req = RaftRequest::FullSnapshot {
            vote,
            meta: snapshot.meta,
            data: snapshot.snapshot.into_inner(),
        };
        let resp = tokio::select! {
            closed = cancel => return Err(StreamingError::Closed(closed)),
            r = self.call(&req, option.soft_ttl()) => r,
        };
        let to_streaming = |e: CallError| -> StreamingError<TypeConfig, Fatal<NodeId>> {
            match self.rpc_error::<Fatal<NodeId>>(e, RPCTypes::InstallSnapshot) {
                RPCError::Timeout(t) => StreamingError::Timeout(t),
                RPCError::Unreachable(u) => StreamingError::Unreachable(u),
                RPCError::Network(n) => StreamingError::Network(n),
                RPCError::PayloadTooLarge(p) => {
                    StreamingError::Network(NetworkError::new(&msg_err(p.to_string())))
                }
                RPCError::RemoteError(r) => StreamingError::RemoteError(r),
            }
        };
        match resp.map_err(to_streaming)? {
            RaftResponse::FullSnapshot(Ok(r)) => Ok(r),
            RaftResponse::FullSnapshot(Err(e)) => Err(StreamingError::RemoteError(
                RemoteError::new_with_node(self.target, self.peer.node.clone(), e),
            )),
            other => Err(to_streaming(self.unexpected("snapshot", &other))),
        }
    }
}

/// What serves inbound raft RPCs: the local raft, and what it heard for the election driver
/// ([`crate::election`]): when a leader's append-entries or snapshot was accepted (one answered
/// "higher vote" comes from a stale leader and does not count) and when a vote was granted.
#[derive(Clone)]
pub struct RaftServer {
    raft: Raft,
    contact: Arc<Contact>,
    timing: Timing,
}

impl RaftServer {
    /// Serves `raft`, answering pre-votes with the default election timing.
    pub fn new(raft: Raft) -> RaftServer {
        RaftServer {
            raft,
            contact: Arc::new(Contact::default()),
            timing: Timing {
                election_min: crate::DEFAULT_ELECTION_TIMEOUT.0,
                election_max: crate::DEFAULT_ELECTION_TIMEOUT.1,
            },
        }
    }

    pub(crate) fn with_contact(raft: Raft, contact: Arc<Contact>, timing: Timing) -> RaftServer {
        RaftServer {
            raft,
            contact,
            timing,
        }
    }

    /// The raft this serves.
    pub fn raft(&self) -> &Raft {
        &self.raft
    }
}

/// Serves raft on an accepted connection: checks the peer is a master, then answers every
/// bidirectional stream it opens (each in its own task; QUIC bounds how many are open at once)
/// until the connection closes.
pub async fn serve_raft_connection(
    server: RaftServer,
    conn: transport::Connection,
) -> Result<(), ServeError> {
    let peer = conn.peer_identity()?;
    if peer.role != Role::Master {
        conn.close(1, b"raft is for masters only");
        return Err(ServeError::NotAMaster { peer });
    }
    loop {
        let (tx, rx) = match transport::accept_framed(&conn, MAX_RAFT_FRAME).await {
            Ok(s) => s,
            Err(_) if conn.closed_cleanly() => return Ok(()),
            Err(e) => return Err(ServeError::Transport(e)),
        };
        let server = server.clone();
        let peer = peer.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_raft_stream(&server, &peer, tx, rx).await {
                tracing::debug!(%peer, error = %e, "raft stream ended with an error");
            }
        });
    }
}

/// Serves raft requests on one stream from `peer` (whose identity the caller took from the
/// connection's verified certificate). Refuses any peer that is not a master.
pub async fn serve_raft_stream(
    server: &RaftServer,
    peer: &PeerIdentity,
    mut tx: FramedSend<RaftResponse>,
    mut rx: FramedRecv<RaftRequest>,
) -> Result<(), ServeError> {
    if peer.role != Role::Master {
        let err = ServeError::NotAMaster { peer: peer.clone() };
        let _ = tx.send(&RaftResponse::Refused(err.to_string())).await;
        let _ = tx.finish().await;
        return Err(err);
    }
    while let Some(req) = rx.recv().await? {
        let resp = match req {
            RaftRequest::PreVote(r) => RaftResponse::PreVote(PreVoteResponse {
                granted: election::answer(&server.raft, &server.contact, &server.timing, &r),
            }),
            req => handle_request(&server.raft, req).await,
        };
        let now = Instant::now();
        match &resp {
            RaftResponse::AppendEntries(Ok(r))
                if !matches!(r, AppendEntriesResponse::HigherVote(_)) =>
            {
                server.contact.leader_heard(now)
            }
            RaftResponse::FullSnapshot(Ok(_)) => server.contact.leader_heard(now),
            RaftResponse::Vote(Ok(r)) if r.vote_granted => server.contact.vote_granted(now),
            _ => {}
        }
        tx.send(&resp).await?;
    }
    tx.finish().await?;
    Ok(())
}

/// Hands one request to the local raft.
pub async fn handle_request(raft: &Raft, req: RaftRequest) -> RaftResponse {
    match req {
        RaftRequest::AppendEntries(r) => RaftResponse::AppendEntries(raft.append_entries(r).await),
        RaftRequest::Vote(r) => RaftResponse::Vote(raft.vote(r).await),
        RaftRequest::FullSnapshot { vote, meta, data } => {
            let snapshot = crate::Snapshot {
                meta,
                snapshot: Box::new(Cursor::new(data)),
            };
            RaftResponse::FullSnapshot(raft.install_full_snapshot(vote, snapshot).await)
        }
        // Answered by `serve_raft_stream`, which knows what this master heard; a bare raft
        // has heard nothing to go by, so it refuses.
        RaftRequest::PreVote(_) => RaftResponse::PreVote(PreVoteResponse { granted: false }),
    }
}
