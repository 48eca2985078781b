//! Corral's network transport. This crate owns everything between a typed message and a UDP
//! socket: QUIC endpoints (quinn 0.11) secured by mutual TLS (rustls 0.23, ring provider only),
//! the mapping from a verified certificate to a [`PeerIdentity`] (role and name from the
//! `corral://ROLE/NAME` SAN written by the `certs` crate), and framed message streams that move
//! [`proto`] messages with its length-delimited codec.
//!
//! Both sides must present a certificate chaining to the cluster CA; the server's TLS name is
//! never matched against DNS or the address. Instead the client states which role (and
//! optionally name) it expects and the handshake fails if the server's certificate says
//! otherwise. The ALPN name ([`proto::ALPN`]) carries the protocol's major version. Errors are
//! translated into what happened ("the master at ADDR refused our certificate: ...") rather
//! than raw quinn/rustls codes. Transport parameters (keep-alive, idle timeout, stream limits)
//! are fixed here, with their reasons, in [`transport_config`].

mod endpoint;
mod error;
mod framed;
mod tls;

pub use endpoint::{
    accept, client_config, client_endpoint, client_endpoint_for, client_transport_config, connect,
    connect_with_config, install_crypto_provider, peer_client_endpoint, peer_identity,
    quic_client_config, resolve, server_config, server_endpoint, transport_config,
    CLIENT_IDLE_TIMEOUT, CLIENT_KEEP_ALIVE_INTERVAL, CONNECTION_RECEIVE_WINDOW,
    KEEP_ALIVE_INTERVAL, MAX_CONCURRENT_BI_STREAMS, MAX_CONCURRENT_UNI_STREAMS, MAX_IDLE_TIMEOUT,
    STREAM_RECEIVE_WINDOW,
};
pub use error::TransportError;
pub use framed::{
    accept_framed, framed, open_framed, FramedRecv, FramedSend, RecvBudget, STOP_FRAME_TOO_LARGE,
};
pub use proto::{PeerIdentity, Role};
pub use tls::{expectation_server_name, parse_expectation, Identity, TlsFiles};

#[cfg(test)]
mod tests;
