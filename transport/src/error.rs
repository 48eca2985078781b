//! [`TransportError`] and the translation of quinn/rustls failures into messages that say what
//! happened from the operator's point of view.

use proto::{DecodeError, EncodeError};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// A TLS file (CA, certificate, key) is missing or unusable.
    #[error("{path}: {problem}", path = path.display())]
    File { path: PathBuf, problem: String },
    /// Building a TLS or QUIC configuration failed.
    #[error("tls configuration: {0}")]
    Tls(String),
    #[error("cannot bind a UDP socket on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot resolve '{addr}': {reason}")]
    Resolve { addr: String, reason: String },
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: SocketAddr, reason: String },
    #[error("timed out connecting to {addr}")]
    TimedOut { addr: SocketAddr },
    /// The peer's TLS stack rejected the certificate we presented.
    #[error("{peer} refused our certificate: {reason}")]
    CertificateRefused { peer: String, reason: String },
    /// We rejected the certificate the peer presented.
    #[error("{peer} presented an unacceptable certificate: {reason}")]
    PeerCertificate { peer: String, reason: String },
    #[error("no application protocol: {peer} does not speak {}", alpn())]
    NoApplicationProtocol { peer: String },
    #[error("tls handshake with {peer} failed: {reason}")]
    Handshake { peer: String, reason: String },
    #[error("connection to {peer} lost: {reason}")]
    ConnectionLost { peer: String, reason: String },
    #[error("the connection has no verified peer certificate")]
    NoPeerCertificate,
    #[error("peer certificate: {0}")]
    PeerIdentity(#[from] certs::CertsError),
    #[error("cannot send to {peer}: {source}")]
    Encode {
        peer: String,
        #[source]
        source: EncodeError,
    },
    #[error("bad frame from {peer}: {source}")]
    Decode {
        peer: String,
        #[source]
        source: DecodeError,
    },
    #[error("{peer} ended the stream in the middle of a frame ({got} of {want} bytes)")]
    Truncated {
        peer: String,
        got: usize,
        want: usize,
    },
    #[error("{peer} reset the stream (code {code})")]
    StreamReset { peer: String, code: u64 },
    #[error("{peer} stopped reading the stream (code {code})")]
    StreamStopped { peer: String, code: u64 },
    #[error("stream to {peer} is already finished or failed")]
    StreamClosed { peer: String },
}

fn alpn() -> String {
    String::from_utf8_lossy(proto::ALPN).into_owned()
}

impl TransportError {
    pub(crate) fn file(path: &Path, problem: impl Into<String>) -> Self {
        TransportError::File {
            path: path.to_owned(),
            problem: problem.into(),
        }
    }

    /// Whether this error means the peer refused our certificate (expired, another CA, none).
    pub fn is_certificate_refused(&self) -> bool {
        matches!(self, TransportError::CertificateRefused { .. })
    }
}

/// TLS alert numbers (RFC 8446 §6) that a peer sends when it refuses our certificate.
const CERT_ALERTS: &[(u8, &str)] = &[
    (42, "bad certificate"),
    (43, "unsupported certificate (wrong key usage?)"),
    (44, "certificate revoked"),
    (45, "certificate expired or not yet valid"),
    (46, "certificate unknown (no corral://ROLE/NAME identity?)"),
    (
        48,
        "unknown CA: our certificate is not signed by its cluster CA",
    ),
    (49, "access denied"),
    (
        51,
        "signature check failed (is our certificate from another cluster's CA?)",
    ),
    (116, "certificate required: we presented none"),
];
const ALERT_NO_APPLICATION_PROTOCOL: u8 = 120;
/// QUIC carries TLS alerts as transport error codes 0x100 + alert (RFC 9001 §4.8).
const CRYPTO_ERROR_BASE: u64 = 0x100;

fn alert_of(code: quinn::TransportErrorCode) -> Option<u8> {
    let code = u64::from(code);
    if (CRYPTO_ERROR_BASE..CRYPTO_ERROR_BASE + 0x100).contains(&code) {
        Some((code - CRYPTO_ERROR_BASE) as u8)
    } else {
        None
    }
}

fn reason_text(reason: &[u8]) -> String {
    String::from_utf8_lossy(reason).into_owned()
}

/// Translates a connection-level failure. `peer` names the other side ("the master at ADDR").
pub(crate) fn connection_error(peer: &str, e: quinn::ConnectionError) -> TransportError {
    use quinn::ConnectionError as E;
    match e {
        // The peer closed the connection during or after the handshake with a TLS alert.
        E::ConnectionClosed(close) => match alert_of(close.error_code) {
            Some(ALERT_NO_APPLICATION_PROTOCOL) => TransportError::NoApplicationProtocol {
                peer: peer.to_owned(),
            },
            Some(alert) => {
                let reason = reason_text(&close.reason);
                match CERT_ALERTS.iter().find(|(a, _)| *a == alert) {
                    Some((_, what)) => TransportError::CertificateRefused {
                        peer: peer.to_owned(),
                        reason: if reason.is_empty() {
                            (*what).to_owned()
                        } else {
                            format!("{what} ({reason})")
                        },
                    },
                    None => TransportError::Handshake {
                        peer: peer.to_owned(),
                        reason: format!("tls alert {alert} from the peer ({reason})"),
                    },
                }
            }
            None => TransportError::ConnectionLost {
                peer: peer.to_owned(),
                reason: format!("aborted by the peer: {close}"),
            },
        },
        // Our own TLS stack failed the handshake (we sent the alert).
        E::TransportError(t) => match alert_of(t.code) {
            Some(ALERT_NO_APPLICATION_PROTOCOL) => TransportError::NoApplicationProtocol {
                peer: peer.to_owned(),
            },
            Some(_) if t.reason.contains("certificate") => TransportError::PeerCertificate {
                peer: peer.to_owned(),
                reason: certificate_reason(&t.reason),
            },
            Some(_) => TransportError::Handshake {
                peer: peer.to_owned(),
                reason: t.reason,
            },
            None => TransportError::ConnectionLost {
                peer: peer.to_owned(),
                reason: format!("protocol error: {t}"),
            },
        },
        E::ApplicationClosed(close) => TransportError::ConnectionLost {
            peer: peer.to_owned(),
            reason: format!(
                "closed by the peer (code {}{})",
                close.error_code,
                match reason_text(&close.reason) {
                    r if r.is_empty() => String::new(),
                    r => format!(": {r}"),
                }
            ),
        },
        E::TimedOut => TransportError::ConnectionLost {
            peer: peer.to_owned(),
            reason: "no answer within the idle timeout".into(),
        },
        other => TransportError::ConnectionLost {
            peer: peer.to_owned(),
            reason: other.to_string(),
        },
    }
}

/// Translates a failure while connecting to `addr`: like [`connection_error`] but a timeout is
/// "timed out connecting".
pub(crate) fn connect_error(
    peer: &str,
    addr: SocketAddr,
    e: quinn::ConnectionError,
) -> TransportError {
    match e {
        quinn::ConnectionError::TimedOut => TransportError::TimedOut { addr },
        e => connection_error(peer, e),
    }
}

/// Makes rustls's text about a certificate it rejected say what it means for a cluster.
pub(crate) fn certificate_reason(reason: &str) -> String {
    let reason = reason
        .strip_prefix("invalid peer certificate: ")
        .unwrap_or(reason);
    // Our own verifiers' refusals (`tls.rs`) arrive wrapped in rustls's Debug text.
    if let Some(ours) = reason
        .split_once("IdentityMismatch(\"")
        .and_then(|(_, rest)| rest.rsplit_once("\")"))
    {
        return ours.0.replace("\\\"", "\"");
    }
    if reason.contains("UnknownIssuer") || reason.contains("BadSignature") {
        format!("it is not signed by our cluster CA ({reason})")
    } else if reason == "peer sent no certificates" {
        "it presented no certificate".to_owned()
    } else {
        reason.to_owned()
    }
}

pub(crate) fn read_error(peer: &str, e: quinn::ReadError) -> TransportError {
    match e {
        quinn::ReadError::ConnectionLost(c) => connection_error(peer, c),
        quinn::ReadError::Reset(code) => TransportError::StreamReset {
            peer: peer.to_owned(),
            code: code.into_inner(),
        },
        quinn::ReadError::ClosedStream
        | quinn::ReadError::IllegalOrderedRead
        | quinn::ReadError::ZeroRttRejected => TransportError::StreamClosed {
            peer: peer.to_owned(),
        },
    }
}

pub(crate) fn write_error(peer: &str, e: quinn::WriteError) -> TransportError {
    match e {
        quinn::WriteError::ConnectionLost(c) => connection_error(peer, c),
        quinn::WriteError::Stopped(code) => TransportError::StreamStopped {
            peer: peer.to_owned(),
            code: code.into_inner(),
        },
        quinn::WriteError::ClosedStream | quinn::WriteError::ZeroRttRejected => {
            TransportError::StreamClosed {
                peer: peer.to_owned(),
            }
        }
    }
}
