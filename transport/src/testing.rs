//! Helpers for tests in other crates that must act as a peer Corral's own configurations never
//! make, without reaching for quinn or rustls themselves.

use crate::conn::{Connection, Endpoint};
use crate::endpoint::client_transport_config;
use crate::error::{connection_error, read_error, write_error, TransportError};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

/// A client endpoint on `0.0.0.0:0` that trusts the cluster CA in `ca` and checks the server's
/// role like any client (so [`crate::connect`] succeeds against a real master), but presents
/// **no** certificate: for proving that a server refuses such a client. With TLS 1.3 the
/// refusal arrives after `connect` returns, on the first use of the connection.
pub fn client_endpoint_without_certificate(ca: &Path) -> Result<Endpoint, TransportError> {
    let tls = crate::tls::anonymous_client_tls_config(ca)?;
    let mut cfg = crate::endpoint::quic_client_config(tls)?;
    cfg.transport_config(Arc::new(client_transport_config()));
    let local = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0));
    let mut ep = quinn::Endpoint::client(local).map_err(|source| TransportError::Bind {
        addr: local,
        source,
    })?;
    ep.set_default_client_config(cfg);
    Ok(Endpoint::new(ep))
}

/// Opens a bidirectional stream on `conn`, writes `bytes` raw (no framing: garbage, a
/// truncated or oversized frame header), finishes the stream if `finish`, and returns every
/// byte the peer sends back until it ends the stream (at most `max_reply`): for proving that a
/// server refuses bad input on one stream and goes on serving.
pub async fn raw_exchange(
    conn: &Connection,
    bytes: &[u8],
    finish: bool,
    max_reply: usize,
) -> Result<Vec<u8>, TransportError> {
    let peer = conn.peer_name();
    let (mut send, mut recv) = conn
        .quinn_conn()
        .open_bi()
        .await
        .map_err(|e| connection_error(&peer, e))?;
    send.write_all(bytes)
        .await
        .map_err(|e| write_error(&peer, e))?;
    if finish {
        let _ = send.finish();
    }
    match recv.read_to_end(max_reply).await {
        Ok(reply) => Ok(reply),
        Err(quinn::ReadToEndError::Read(e)) => Err(read_error(&peer, e)),
        Err(quinn::ReadToEndError::TooLong) => Err(TransportError::StreamClosed {
            peer: peer.to_string(),
        }),
    }
}
