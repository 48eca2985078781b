//! Corral's network transport. This crate owns everything between a typed message and a UDP
//! socket: QUIC endpoints (quinn 0.11) secured by mutual TLS (rustls 0.23, ring provider only),
//! the mapping from a verified certificate to a [`PeerIdentity`] (role and name from the
//! `corral://ROLE/NAME` SAN written by the `certs` crate), and framed message streams that move
//! [`proto`] messages with its length-delimited codec.
//!
//! Both sides must present a certificate chaining to the cluster CA (except a node joining with
//! a token, on a master that accepts joins: see [`server_endpoint_accepting_joins`] and
//! [`Identity::joining`]); the server's TLS name is
//! never matched against DNS or the address. Instead the client states which role (and
//! optionally name) it expects and the handshake fails if the server's certificate says
//! otherwise. The ALPN name ([`proto::ALPN`]) carries the protocol's major version. Errors are
//! translated into what happened ("the master at ADDR refused our certificate: ...") rather
//! than raw quinn/rustls codes. Transport parameters (keep-alive, idle timeout, stream limits)
//! are fixed here, with their reasons, in `endpoint.rs` (`transport_config`,
//! `client_transport_config`).
//!
//! A client's certificate can be renewed while it runs: [`Identity::reload`] swaps the
//! certificate every clone of the identity presents on new connections.
//!
//! Other crates see no quinn or rustls type: they hold [`Endpoint`], [`Incoming`] and
//! [`Connection`] and move messages with [`FramedSend`]/[`FramedRecv`]. The one TCP use, the
//! Mesos gateway's HTTPS listener, gets its TLS from [`TcpTlsAcceptor`] (`tcp_tls.rs`).

mod conn;
mod endpoint;
mod error;
mod framed;
mod tcp_tls;
mod tls;

pub use conn::{Connection, Endpoint, Incoming};
pub use endpoint::{
    accept, client_endpoint, client_endpoint_for, connect, connect_as, install_crypto_provider,
    peer_client_endpoint, peer_identity, resolve, server_endpoint, server_endpoint_accepting_joins,
    ClientEndpoints, CLIENT_IDLE_TIMEOUT, CLIENT_KEEP_ALIVE_INTERVAL, CONNECTION_RECEIVE_WINDOW,
    INITIAL_BI_STREAMS, KEEP_ALIVE_INTERVAL, MAX_CONCURRENT_BI_STREAMS, MAX_CONCURRENT_UNI_STREAMS,
    MAX_IDLE_TIMEOUT, SERVER_IDLE_TIMEOUT, STREAM_RECEIVE_WINDOW,
};
pub use error::TransportError;
pub use framed::{
    accept_framed, open_framed, FramedRecv, FramedSend, RecvBudget, STOP_FRAME_TOO_LARGE,
};
pub use proto::{PeerIdentity, Role};
pub use tcp_tls::TcpTlsAcceptor;
pub use tls::{expectation_server_name, parse_expectation, Identity, TlsFiles};

pub mod testing;

/// quinn-typed configuration and raw stream framing, only with the `quinn-internals` feature:
/// this crate's own tests use them to build misbehaving peers (another ALPN, a client without a
/// certificate, raw bytes on a stream). No other crate enables the feature, so quinn and rustls
/// types stay inside `transport/`.
#[cfg(feature = "quinn-internals")]
pub mod raw {
    pub use crate::endpoint::{
        client_config, client_transport_config, connect_with_config, quic_client_config,
        server_config, server_transport_config, transport_config,
    };
    pub use crate::framed::framed;

    /// Our rustls client configuration (see `Identity::client_tls_config`).
    pub fn client_tls_config(
        id: &crate::Identity,
    ) -> Result<rustls::ClientConfig, crate::TransportError> {
        id.client_tls_config()
    }
}

#[cfg(test)]
mod tests;
