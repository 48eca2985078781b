//! The QUIC types other crates hold: [`Endpoint`], [`Incoming`] and [`Connection`], wrapping
//! quinn's so that quinn and rustls stay inside this crate. They carry only what Corral uses
//! (connect, accept, framed streams, close with a code, liveness questions); errors are
//! [`TransportError`]s naming the peer.

use crate::error::{connection_error, TransportError};
use proto::PeerIdentity;
use std::net::SocketAddr;
use std::sync::Arc;

/// A QUIC endpoint (a UDP socket): a master's server endpoint, or a client endpoint (see
/// [`crate::server_endpoint`], [`crate::client_endpoint`], [`crate::peer_client_endpoint`]).
/// Cloning gives another handle to the same endpoint.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub(crate) inner: quinn::Endpoint,
}

impl Endpoint {
    pub(crate) fn new(inner: quinn::Endpoint) -> Endpoint {
        Endpoint { inner }
    }

    /// The local address of the socket (with the port the system chose for port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// The next incoming connection, not yet handshaken; `None` once the endpoint is closed.
    pub async fn accept(&self) -> Option<Incoming> {
        self.inner.accept().await.map(|inner| Incoming { inner })
    }

    /// Closes every connection of the endpoint at once with application error `code` and
    /// `reason`, and accepts no more.
    pub fn close(&self, code: u32, reason: &[u8]) {
        self.inner.close(code.into(), reason);
    }

    /// Waits until every connection of the endpoint is closed and its close was sent (bound it
    /// with a timeout: a peer that is gone is waited for until its idle timeout).
    pub async fn wait_idle(&self) {
        self.inner.wait_idle().await;
    }

    #[cfg(feature = "quinn-internals")]
    /// The quinn endpoint (only with the `quinn-internals` feature, for this crate's tests).
    pub fn quinn(&self) -> &quinn::Endpoint {
        &self.inner
    }

    #[cfg(feature = "quinn-internals")]
    /// Wraps a quinn endpoint (only with the `quinn-internals` feature, for this crate's tests).
    pub fn from_quinn(inner: quinn::Endpoint) -> Endpoint {
        Endpoint { inner }
    }
}

/// A connection attempt a server endpoint received, before its handshake.
#[derive(Debug)]
pub struct Incoming {
    inner: quinn::Incoming,
}

impl Incoming {
    /// The address the attempt came from (not yet validated).
    pub fn remote_address(&self) -> SocketAddr {
        self.inner.remote_address()
    }

    /// Refuses the attempt without a handshake (the server is at its connection limit).
    pub fn refuse(self) {
        self.inner.refuse();
    }

    /// Completes the handshake: the client's certificate chains to our CA (the server
    /// configuration's verifier checked it). A client whose certificate is missing, expired or
    /// from another CA fails here with an error naming its address. See [`crate::accept`] for
    /// the handshake and the client's identity in one call.
    pub async fn handshake(self) -> Result<Connection, TransportError> {
        let peer = format!("the client at {}", self.inner.remote_address());
        let conn = self.inner.await.map_err(|e| connection_error(&peer, e))?;
        Ok(Connection::new(conn, None))
    }
}

/// An established QUIC connection with a verified peer. Cloning gives another handle to the
/// same connection. A connection made by [`crate::connect`] keeps its endpoint open for as long
/// as a handle to it lives.
#[derive(Clone)]
pub struct Connection {
    inner: quinn::Connection,
    /// How error messages name the other side ("the master 'm1' at 10.0.0.1:5050"), worked out
    /// once from the verified certificate.
    peer: Arc<str>,
    /// The endpoint a client connection was made from, kept alive with it.
    _endpoint: Option<quinn::Endpoint>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("peer", &self.peer)
            .field("id", &self.inner.stable_id())
            .finish()
    }
}

impl Connection {
    /// Lets the peer open up to `n` bidirectional streams at once from now on (a server
    /// endpoint grants [`crate::INITIAL_BI_STREAMS`] at the handshake). A peer waiting for a
    /// stream gets it as soon as the new limit arrives.
    pub fn allow_bi_streams(&self, n: u32) {
        self.inner.set_max_concurrent_bi_streams(n.into());
    }

    pub(crate) fn new(inner: quinn::Connection, endpoint: Option<quinn::Endpoint>) -> Connection {
        let peer = Arc::from(crate::endpoint::describe_peer(&inner));
        Connection {
            inner,
            peer,
            _endpoint: endpoint,
        }
    }

    pub(crate) fn quinn_conn(&self) -> &quinn::Connection {
        &self.inner
    }

    /// How error messages name the peer: "the agent 'a1' at 10.0.0.7:40112".
    pub(crate) fn peer_name(&self) -> Arc<str> {
        self.peer.clone()
    }

    /// The peer's address (as last seen: QUIC follows a peer that migrates).
    pub fn remote_address(&self) -> SocketAddr {
        self.inner.remote_address()
    }

    /// The verified identity of the peer: the role and name of its certificate's
    /// `corral://ROLE/NAME` SAN.
    pub fn peer_identity(&self) -> Result<PeerIdentity, TransportError> {
        crate::endpoint::peer_identity(self)
    }

    /// Closes the connection at once with application error `code` and `reason` (the peer sees
    /// [`TransportError::ConnectionLost`] "closed by the peer (code C: REASON)"). Data not yet
    /// acknowledged is lost: see [`crate::FramedSend::finish_and_wait`].
    pub fn close(&self, code: u32, reason: &[u8]) {
        self.inner.close(code.into(), reason);
    }

    /// Whether the connection has ended (closed by either side, lost, or timed out).
    pub fn is_closed(&self) -> bool {
        self.inner.close_reason().is_some()
    }

    /// Whether the connection ended by an application close, ours or the peer's, rather than a
    /// failure (lost, timed out, a protocol or TLS error). False while it is open.
    pub fn closed_cleanly(&self) -> bool {
        matches!(
            self.inner.close_reason(),
            Some(quinn::ConnectionError::ApplicationClosed(_))
                | Some(quinn::ConnectionError::LocallyClosed)
        )
    }

    /// Waits until the connection ends and says why.
    pub async fn closed(&self) -> TransportError {
        connection_error(&self.peer, self.inner.closed().await)
    }

    /// Whether `other` is a handle to this same connection.
    pub fn same_as(&self, other: &Connection) -> bool {
        self.inner.stable_id() == other.inner.stable_id()
    }

    /// UDP datagrams received on this connection so far: if it did not grow during a call, the
    /// peer sent nothing at all (not even an acknowledgement).
    pub fn datagrams_received(&self) -> u64 {
        self.inner.stats().udp_rx.datagrams
    }

    /// UDP datagrams sent on this connection so far (with [`Connection::datagrams_received`],
    /// what a load generator counts to report a master's packets per second).
    pub fn datagrams_sent(&self) -> u64 {
        self.inner.stats().udp_tx.datagrams
    }

    #[cfg(feature = "quinn-internals")]
    /// The quinn connection (only with the `quinn-internals` feature, for this crate's tests).
    pub fn quinn(&self) -> &quinn::Connection {
        &self.inner
    }
}
