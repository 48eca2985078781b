//! QUIC endpoints, connecting, accepting and the identity of a connection's peer.

use crate::conn::{Connection, Endpoint, Incoming};
use crate::error::{connect_error, TransportError};
use crate::tls::{check_expected, expectation_server_name, Identity};
use proto::{PeerIdentity, Role};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::pki_types::CertificateDer;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// Between masters (raft links), each side sends a QUIC PING after this much silence, so an idle
/// but healthy connection never reaches [`MAX_IDLE_TIMEOUT`] and NATs/conntrack keep the UDP
/// mapping.
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(1);
/// A raft link that hears nothing (not even keep-alives) for this long is closed: four lost
/// PINGs in a row. Raft does not need the link to notice a dead peer quickly (an RPC deadline
/// and the election timer do), so a brief stall on a busy master must not cost the link. It
/// also bounds a handshake to an unreachable address.
pub const MAX_IDLE_TIMEOUT: Duration = Duration::from_secs(4);
/// Agents, frameworks and operators (the client endpoints) send a PING after this much
/// silence; the master answers each with an ACK and sends no PING of its own (see
/// [`server_transport_config`]). Mesos's agent pings are 15 s apart (75 s to give up), a Nomad
/// client's yamux keep-alive 30 s; a client with traffic of its own (an agent of a small
/// cluster heartbeats every 2 s) never sends one. See [`CLIENT_IDLE_TIMEOUT`] for what it
/// costs.
pub const CLIENT_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// A client connection to a master that hears nothing for this long is closed, on both sides
/// (QUIC uses the smaller of both sides' idle timeouts, and the master offers
/// [`SERVER_IDLE_TIMEOUT`]). This is not how clients notice a failover: every client also
/// watches the other masters, which tell it the moment a new leader is elected (the
/// `session` crate's `LeaderWatch`), and a leader that loses its majority tells its clients
/// when it steps down, so a dead leader costs its clients the election, not an idle timeout.
/// It is how a master notices an agent that died without a word in a large cluster (whose
/// stretched heartbeats are minutes apart; the agent's silence limit starts then), and how a
/// client notices a master it can no longer reach while that master keeps its leadership (a
/// one-sided partition): 90 s, about Mesos's agent ping timeout (15 s × 5 = 75 s) and well
/// under Nomad's heartbeat TTL at 10,000 clients (200 s).
///
/// The cost per idle client at a master: one PING every 30 s and one ACK back, which the
/// master sends at once (the client asks for that with the ACK-frequency extension, see
/// [`client_transport_config`]), so 0.07 small datagrams a second per connection and one
/// wake-up each. The earlier designs cost 4 to 5 (500 ms / 1.5 s, and the master's own PING
/// every second) and 0.2 (10 s / 30 s). Three unanswered PINGs in a row, with QUIC's own
/// probes between, are needed to drop a healthy connection.
pub const CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// The idle timeout a master's server endpoint offers: the largest it accepts. Raft links are
/// dialled with [`MAX_IDLE_TIMEOUT`] and clients with [`CLIENT_IDLE_TIMEOUT`]; the smaller of
/// the two sides applies.
pub const SERVER_IDLE_TIMEOUT: Duration = CLIENT_IDLE_TIMEOUT;
/// Concurrent bidirectional streams a peer may open on one connection. Corral runs one stream
/// per request or subscription, so a well-behaved peer needs a handful; 64 leaves room for
/// bursts (parallel operator calls, a Mesos gateway's frameworks sharing one connection) while
/// bounding the per-connection state a misbehaving peer can make us keep. A peer at the limit
/// waits for a stream to end; nothing fails. It is also memory on every connection: quinn keeps
/// a slot per allowed stream from the handshake on (about 50 bytes each), so a server grants
/// [`INITIAL_BI_STREAMS`] at the handshake and a master raises the limit to this for every
/// peer but agents once it knows who the peer is ([`Connection::allow_bi_streams`]).
pub const MAX_CONCURRENT_BI_STREAMS: u32 = 64;
/// What a server endpoint grants every client at the handshake: enough for an agent (its
/// session, a leader watch, a certificate renewal, a few operator-style calls), the peer of
/// which a large cluster has thousands.
pub const INITIAL_BI_STREAMS: u32 = 8;
/// Corral uses only bidirectional streams; a few unidirectional ones are allowed so a future
/// minor version can add them without a handshake change, but not more.
pub const MAX_CONCURRENT_UNI_STREAMS: u32 = 4;
/// How much a single stream may have in flight unacknowledged-by-the-application. A large
/// message (a full cluster state) then streams at full speed without letting one stream hold
/// megabytes per connection.
pub const STREAM_RECEIVE_WINDOW: u32 = 1 << 20;
/// Bytes in flight across all streams of one connection.
pub const CONNECTION_RECEIVE_WINDOW: u32 = 8 << 20;

// Keep-alives must fire several times within the idle timeout, or a healthy idle connection
// would be dropped; stream limits must be non-zero and bounded.
const _: () = assert!(KEEP_ALIVE_INTERVAL.as_millis() * 3 < MAX_IDLE_TIMEOUT.as_millis());
const _: () =
    assert!(CLIENT_KEEP_ALIVE_INTERVAL.as_millis() * 3 <= CLIENT_IDLE_TIMEOUT.as_millis());
const _: () = assert!(MAX_IDLE_TIMEOUT.as_millis() <= SERVER_IDLE_TIMEOUT.as_millis());
const _: () = assert!(CLIENT_IDLE_TIMEOUT.as_millis() <= SERVER_IDLE_TIMEOUT.as_millis());
const _: () = assert!(MAX_CONCURRENT_BI_STREAMS > 0 && MAX_CONCURRENT_BI_STREAMS <= 1024);
const _: () = assert!(INITIAL_BI_STREAMS > 0 && INITIAL_BI_STREAMS <= MAX_CONCURRENT_BI_STREAMS);
const _: () = assert!(STREAM_RECEIVE_WINDOW <= CONNECTION_RECEIVE_WINDOW);
const _: () = assert!(SERVER_IDLE_TIMEOUT.as_millis() < u32::MAX as u128);

/// Installs ring as the process-wide rustls crypto provider. Idempotent: a second call, or a
/// provider already installed by someone else, is fine. This crate's own configurations name
/// ring explicitly and do not depend on it; call it in `main` for any other rustls use.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The QUIC transport parameters of a master connecting to the other masters (raft links; see
/// the constants for the reasons).
pub fn transport_config() -> quinn::TransportConfig {
    with_liveness(Some(KEEP_ALIVE_INTERVAL), MAX_IDLE_TIMEOUT)
}

/// The QUIC transport parameters of a master's server endpoint: [`INITIAL_BI_STREAMS`] until
/// the master raises it for the peer, and no keep-alive of its own (the
/// side that dialled sends them: a raft peer every [`KEEP_ALIVE_INTERVAL`], a client every
/// [`CLIENT_KEEP_ALIVE_INTERVAL`]; a master pinging each of 10,000 idle agents every second
/// was most of its idle cost) and [`SERVER_IDLE_TIMEOUT`].
pub fn server_transport_config() -> quinn::TransportConfig {
    let mut t = with_liveness(None, SERVER_IDLE_TIMEOUT);
    t.max_concurrent_bidi_streams(INITIAL_BI_STREAMS.into());
    t
}

/// The QUIC transport parameters of client endpoints (agents, frameworks, operators): those of
/// [`transport_config`] with [`CLIENT_KEEP_ALIVE_INTERVAL`] and [`CLIENT_IDLE_TIMEOUT`], and
/// asking the master (QUIC ACK-frequency extension, which quinn speaks on both sides) to
/// acknowledge each of our ack-eliciting packets at once: a lone keep-alive PING would
/// otherwise be acknowledged after the 25 ms ACK delay, a second wake-up of the master's
/// connection driver (a timer) for every PING of every idle client.
pub fn client_transport_config() -> quinn::TransportConfig {
    let mut t = with_liveness(Some(CLIENT_KEEP_ALIVE_INTERVAL), CLIENT_IDLE_TIMEOUT);
    let mut ack = quinn::AckFrequencyConfig::default();
    ack.ack_eliciting_threshold(quinn::VarInt::from_u32(0));
    t.ack_frequency_config(Some(ack));
    t
}

fn with_liveness(keep_alive: Option<Duration>, idle: Duration) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(keep_alive);
    // IdleTimeout is in milliseconds; both constants fit a u32 (checked above).
    let idle_ms = idle.as_millis() as u32;
    t.max_idle_timeout(Some(quinn::VarInt::from_u32(idle_ms).into()));
    t.max_concurrent_bidi_streams(MAX_CONCURRENT_BI_STREAMS.into());
    t.max_concurrent_uni_streams(MAX_CONCURRENT_UNI_STREAMS.into());
    t.stream_receive_window(STREAM_RECEIVE_WINDOW.into());
    t.receive_window(CONNECTION_RECEIVE_WINDOW.into());
    t
}

/// Wraps a rustls client configuration for QUIC, with [`transport_config`].
pub fn quic_client_config(
    tls: rustls::ClientConfig,
) -> Result<quinn::ClientConfig, TransportError> {
    let crypto = QuicClientConfig::try_from(tls)
        .map_err(|e| TransportError::Tls(format!("client config unusable for quic: {e}")))?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
    cfg.transport_config(Arc::new(transport_config()));
    Ok(cfg)
}

/// The client configuration of a master connecting to other masters: our certificate, the
/// role/name checking verifier, [`transport_config`]. Client endpoints replace the transport
/// configuration with [`client_transport_config`].
pub fn client_config(id: &Identity) -> Result<quinn::ClientConfig, TransportError> {
    quic_client_config(id.client_tls_config()?)
}

/// The server configuration: client certificate required and chaining to our CA (the server
/// endpoints build theirs with [`server_config_with`]; this one is for `transport::raw`).
#[cfg(feature = "quinn-internals")]
pub fn server_config(id: &Identity) -> Result<quinn::ServerConfig, TransportError> {
    server_config_with(id, false)
}

/// [`server_config`], or with `accept_joins` a client may come without a certificate (see
/// [`server_endpoint_accepting_joins`]).
fn server_config_with(
    id: &Identity,
    accept_joins: bool,
) -> Result<quinn::ServerConfig, TransportError> {
    let crypto = QuicServerConfig::try_from(id.server_tls_config(accept_joins)?)
        .map_err(|e| TransportError::Tls(format!("server config unusable for quic: {e}")))?;
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    cfg.transport_config(Arc::new(server_transport_config()));
    Ok(cfg)
}

/// A server endpoint on `listen` that requires a client certificate chaining to our CA. It can
/// also [`connect`] out (a master reaching other masters) with our identity.
pub fn server_endpoint(listen: SocketAddr, id: &Identity) -> Result<Endpoint, TransportError> {
    bind_server(listen, id, false)
}

/// A server endpoint like [`server_endpoint`] that also completes handshakes with clients that
/// present no certificate, for nodes joining with a token (a certificate that is presented must
/// still chain to our CA), and sends the CA certificate after its own so that a joining node
/// can pin it. Such a connection's [`Connection::peer_identity`] is
/// [`TransportError::NoPeerCertificate`]: the server must let it make nothing but the join call.
pub fn server_endpoint_accepting_joins(
    listen: SocketAddr,
    id: &Identity,
) -> Result<Endpoint, TransportError> {
    bind_server(listen, id, true)
}

fn bind_server(
    listen: SocketAddr,
    id: &Identity,
    accept_joins: bool,
) -> Result<Endpoint, TransportError> {
    let bind_error = |source| TransportError::Bind {
        addr: listen,
        source,
    };
    let socket = std::net::UdpSocket::bind(listen).map_err(bind_error)?;
    let runtime = quinn::default_runtime().ok_or_else(|| {
        bind_error(std::io::Error::other(
            "no async runtime (quinn needs tokio)",
        ))
    })?;
    let mut ep = quinn::Endpoint::new(
        server_endpoint_config(id),
        Some(server_config_with(id, accept_joins)?),
        socket,
        runtime,
    )
    .map_err(bind_error)?;
    ep.set_default_client_config(client_config(id)?);
    Ok(Endpoint::new(ep))
}

/// A server endpoint's stateless-reset key comes from its private key, so it survives a
/// restart. Clients keep their connection to a master through an idle timeout of 30 s and PING
/// only every 10 s; when a master is killed and started again on its address, the first packet
/// of a connection its previous process had is answered with a stateless reset the client
/// recognises (RFC 9000 10.3), and the client reconnects at once instead of after the idle
/// timeout (see [`STATELESS_RESET_INTERVAL`]).
fn server_endpoint_config(id: &Identity) -> quinn::EndpointConfig {
    let mut cfg = match id.stateless_reset_secret() {
        Some(secret) => {
            let mut cfg = quinn::EndpointConfig::new(Arc::new(ring::hmac::Key::new(
                ring::hmac::HMAC_SHA256,
                &secret,
            )));
            // The connection ids carry a checksum under a key too: a restarted endpoint must
            // recognise its previous process's ids as its own to answer them with a reset.
            let mut cid_key = [0u8; 8];
            cid_key.copy_from_slice(&secret[24..]);
            let cid_key = u64::from_le_bytes(cid_key);
            cfg.cid_generator(move || {
                Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
            });
            cfg
        }
        None => quinn::EndpointConfig::default(),
    };
    cfg.min_reset_interval(STATELESS_RESET_INTERVAL);
    cfg
}

/// At most one stateless reset per this interval per endpoint: 2,000 a second, so that 10,000
/// agents of a restarted master are told within a keep-alive interval. A reset is smaller than
/// the packet that asked for it, so this amplifies nothing.
const STATELESS_RESET_INTERVAL: Duration = Duration::from_micros(500);

/// A client-only endpoint for a master's own connections to the other masters (raft), on
/// `local` (port 0: any), with `transport_config` and our certificate.
///
/// Not the master's server endpoint, because of what a shared socket does to a handshake that
/// is given up (timed out while the peer was unreachable, or a spare one closed): packets the
/// peer still sends for it (its Initial and Handshake resends, or ones queued in the kernel
/// while the neighbour was unresolved and flushed when the link healed) carry a connection id
/// our endpoint no longer knows. A server endpoint takes an Initial packet with an unknown id
/// for a new incoming connection and derives its keys from that id, but the peer encrypted it
/// with keys from the id our client first chose, so decryption fails and quinn reports
/// "authentication failed", logged as a failed TLS handshake *from the peer* for as long as the
/// peer resends (seconds after a heal). A client-only endpoint takes no packet for a new
/// connection (quinn answers an unknown one with at most a stateless reset, which a peer
/// ignores during a handshake), and the server endpoint only sees connections peers open.
pub fn peer_client_endpoint(local: SocketAddr, id: &Identity) -> Result<Endpoint, TransportError> {
    let mut ep = quinn::Endpoint::client(local).map_err(|source| TransportError::Bind {
        addr: local,
        source,
    })?;
    ep.set_default_client_config(client_config(id)?);
    Ok(Endpoint::new(ep))
}

/// A client endpoint on `0.0.0.0:0`, for IPv4 peers, with `client_transport_config` (agents,
/// frameworks, operators). See [`client_endpoint_for`].
pub fn client_endpoint(id: &Identity) -> Result<Endpoint, TransportError> {
    bind_client(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)), id)
}

/// A client endpoint able to reach `target`: `[::]:0` for an IPv6 target, else `0.0.0.0:0`.
pub fn client_endpoint_for(target: SocketAddr, id: &Identity) -> Result<Endpoint, TransportError> {
    let local = match target {
        SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
    };
    bind_client(local, id)
}

fn bind_client(local: SocketAddr, id: &Identity) -> Result<Endpoint, TransportError> {
    let mut ep = quinn::Endpoint::client(local).map_err(|source| TransportError::Bind {
        addr: local,
        source,
    })?;
    let mut cfg = client_config(id)?;
    cfg.transport_config(Arc::new(client_transport_config()));
    ep.set_default_client_config(cfg);
    Ok(Endpoint::new(ep))
}

/// Client-only endpoints that many connections share, one per address family, bound on first
/// use. A client process (an agent, a framework, the gateway) keeps one for all its connections
/// to the masters, and the load generator shares a few among thousands of simulated agents:
/// an endpoint per connection costs a UDP socket (a file descriptor) and a driver task each, and
/// 10,000 simulated agents dialling 3 masters ran out of descriptors. Connections made with
/// [`connect_as`] carry their own identity, so endpoints shared between identities are fine.
/// Clones share the endpoints.
#[derive(Clone, Debug, Default)]
pub struct ClientEndpoints {
    /// IPv4 (`0.0.0.0:0`) and IPv6 (`[::]:0`) endpoints.
    bound: Arc<std::sync::Mutex<[Option<Endpoint>; 2]>>,
}

impl ClientEndpoints {
    /// No endpoint yet; each is bound when a connection first needs it.
    pub fn new() -> ClientEndpoints {
        ClientEndpoints::default()
    }

    /// The endpoint able to reach `target`, bound now if it is the first of its family.
    pub fn for_target(&self, target: SocketAddr) -> Result<Endpoint, TransportError> {
        let (slot, local) = match target {
            SocketAddr::V4(_) => (0, SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))),
            SocketAddr::V6(_) => (1, SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0))),
        };
        // A panic while holding the lock leaves two optional endpoints: still usable.
        let mut bound = self.bound.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ep) = &bound[slot] {
            return Ok(ep.clone());
        }
        let ep = quinn::Endpoint::client(local).map_err(|source| TransportError::Bind {
            addr: local,
            source,
        })?;
        let ep = Endpoint::new(ep);
        bound[slot] = Some(ep.clone());
        Ok(ep)
    }
}

/// [`connect`] from a client endpoint as `id` (its certificate, [`client_transport_config`]),
/// whatever identity the endpoint's other connections have: see [`ClientEndpoints`].
pub async fn connect_as(
    ep: &Endpoint,
    id: &Identity,
    addr: SocketAddr,
    expect_role: Role,
    expect_name: Option<&str>,
) -> Result<Connection, TransportError> {
    let mut cfg = client_config(id)?;
    cfg.transport_config(Arc::new(client_transport_config()));
    connect_inner(ep, Some(cfg), addr, expect_role, expect_name).await
}

/// How error messages name a peer we are connecting to: "the master 'm1' at 10.0.0.1:5050".
fn expected_peer(addr: SocketAddr, role: Role, name: Option<&str>) -> String {
    match name {
        Some(name) => format!("the {role} '{name}' at {addr}"),
        None => format!("the {role} at {addr}"),
    }
}

/// How error messages name the peer of an established connection.
pub(crate) fn describe_peer(conn: &quinn::Connection) -> String {
    match identity_of(conn) {
        Ok(id) => format!("the {} '{}' at {}", id.role, id.name, conn.remote_address()),
        Err(_) => format!("the peer at {}", conn.remote_address()),
    }
}

/// Connects and verifies that the server's certificate chains to our CA and carries role
/// `expect_role` (and, if `expect_name` is `Some`, that exact name). The TLS server name is not
/// checked against the address: peers are identified by their role/name SAN, not DNS, so
/// `--master 127.0.0.1:5050` works.
///
/// In TLS 1.3 the client finishes its handshake before the server has checked the client's
/// certificate. So when the server refuses *our* certificate (expired, another CA), `connect`
/// may still succeed and the refusal arrives a round trip later: the first `recv` on a stream
/// (or the next `open`/`send`) then fails with [`TransportError::CertificateRefused`]. Do not
/// treat a successful `connect` as "the server accepted us".
pub async fn connect(
    ep: &Endpoint,
    addr: SocketAddr,
    expect_role: Role,
    expect_name: Option<&str>,
) -> Result<Connection, TransportError> {
    connect_inner(ep, None, addr, expect_role, expect_name).await
}

/// [`connect`] with an explicit client configuration instead of the endpoint's default (tests
/// use it to offer another ALPN).
#[cfg_attr(not(feature = "quinn-internals"), allow(dead_code))]
pub async fn connect_with_config(
    ep: &Endpoint,
    config: quinn::ClientConfig,
    addr: SocketAddr,
    expect_role: Role,
    expect_name: Option<&str>,
) -> Result<Connection, TransportError> {
    connect_inner(ep, Some(config), addr, expect_role, expect_name).await
}

async fn connect_inner(
    ep: &Endpoint,
    config: Option<quinn::ClientConfig>,
    addr: SocketAddr,
    expect_role: Role,
    expect_name: Option<&str>,
) -> Result<Connection, TransportError> {
    let peer = expected_peer(addr, expect_role, expect_name);
    let server_name = expectation_server_name(expect_role, expect_name);
    let connecting = match config {
        Some(cfg) => ep.inner.connect_with(cfg, addr, &server_name),
        None => ep.inner.connect(addr, &server_name),
    }
    .map_err(|e| TransportError::Connect {
        addr,
        reason: e.to_string(),
    })?;
    let conn = connecting
        .await
        .map_err(|e| connect_error(&peer, addr, e))?;
    // The verifier already checked this; checking again here keeps the guarantee even if a
    // caller-supplied configuration has another verifier.
    let id = identity_of(&conn)?;
    if let Err(reason) = check_expected(&id, expect_role, expect_name) {
        conn.close(0u32.into(), b"unexpected identity");
        return Err(TransportError::PeerCertificate { peer, reason });
    }
    Ok(Connection::new(conn, Some(ep.inner.clone())))
}

/// The verified identity of the peer of `conn` (either side): the role and name of its
/// certificate's `corral://ROLE/NAME` SAN.
pub fn peer_identity(conn: &Connection) -> Result<PeerIdentity, TransportError> {
    identity_of(conn.quinn_conn())
}

fn identity_of(conn: &quinn::Connection) -> Result<PeerIdentity, TransportError> {
    let chain = conn
        .peer_identity()
        .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok())
        .ok_or(TransportError::NoPeerCertificate)?;
    let leaf = chain.first().ok_or(TransportError::NoPeerCertificate)?;
    Ok(certs::identity_from_cert_der(leaf)?)
}

/// Server side: completes the handshake of an incoming connection and returns it with the
/// verified identity of the client. A client whose certificate is missing, expired or from
/// another CA fails here with an error naming its address.
pub async fn accept(incoming: Incoming) -> Result<(Connection, PeerIdentity), TransportError> {
    let conn = incoming.handshake().await?;
    let id = conn.peer_identity()?;
    Ok((conn, id))
}

/// Resolves `"host:port"` (a name or an IP) to one address, preferring the first the resolver
/// returns. Errors name the address.
pub async fn resolve(addr: &str) -> Result<SocketAddr, TransportError> {
    if let Ok(sa) = addr.parse::<SocketAddr>() {
        return Ok(sa);
    }
    let err = |reason: String| TransportError::Resolve {
        addr: addr.to_owned(),
        reason,
    };
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() => {
            port.parse::<u16>()
                .map_err(|_| err(format!("'{port}' is not a port number")))?;
        }
        _ => return Err(err("expected HOST:PORT".into())),
    }
    let mut addrs = tokio::net::lookup_host(addr)
        .await
        .map_err(|e| err(e.to_string()))?;
    addrs
        .next()
        .ok_or_else(|| err("the name has no addresses".into()))
}
