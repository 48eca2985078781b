//! Join tokens and certificate renewal on the master (the design is `certs::join`'s doc).
//!
//! A master started with `--ca-key` holds a [`certs::CaSigner`] and listens with
//! `transport::server_endpoint_accepting_joins`: a client may connect without a certificate,
//! and such a connection ([`serve_anonymous`]) may make only `CertificateCall::Join`, at most
//! [`ANONYMOUS_STREAMS`] times, each answered and closed; anything else gets `Forbidden`. A
//! join is answered only by the leader: the token's MAC, CA hash and expiry are checked here
//! (no registry needed), then a `JoinTokenUsed` op is committed and the registry (the same on
//! every master, in log order) says whether this join won one of the token's uses; only then is
//! the CSR's key signed, with the token's role and a lifetime of `--join-cert-ttl`. A retried
//! join with the same key is answered again rather than counted twice. Renewal
//! (`CertificateCall::Renew`) needs a valid certificate on the connection and signs the same
//! role and name for the new key, on any master holding the CA key; masters never renew this
//! way (their certificates keep the manual path). Revocation (`RevokeJoinToken`, operators) is
//! a committed `JoinTokenRevoked`. A master without `--ca-key` refuses joins and renewals with
//! an error that says so. The master never sees a private key: only CSRs.

use master_raft::{ProposeError, RegistryOp, ReplicatedRegistry};
use proto::{
    CertificateCall, ClientFrame, ErrorCode, ErrorReply, IssuedCertificate, OperatorReply,
    PeerIdentity, Role, ServerFrame,
};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use transport::{Connection, TransportError};

/// Streams a connection without a certificate may open (each one join attempt) before the
/// master closes it: a joiner needs one, and a retry after `NotLeader` opens another.
pub const ANONYMOUS_STREAMS: usize = 8;
/// How long an anonymous stream may take to send its request.
const ANONYMOUS_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request frame from a connection without a certificate (a token and a CSR fit in a
/// few KiB).
const ANONYMOUS_MAX_FRAME: usize = 64 * 1024;

/// What a master needs to sign certificates (from `--ca-key` and `--join-cert-ttl`).
pub struct JoinSetup {
    pub signer: Arc<certs::CaSigner>,
    /// Lifetime of the certificates it signs for joins and renewals.
    pub cert_ttl: Duration,
}

/// Whether this master leads now, and who does if not (from the server's leadership view).
pub(crate) struct LeaderView {
    pub is_leader: bool,
    pub leader: Option<String>,
}

/// Answers certificate calls; one per master.
pub(crate) struct Joins {
    setup: Option<JoinSetup>,
    registry: ReplicatedRegistry,
}

fn refuse(code: ErrorCode, message: impl Into<String>) -> ServerFrame {
    ServerFrame::Error(ErrorReply {
        code,
        message: message.into(),
        fatal: true,
    })
}

/// A refusal (or a `NotLeader`) on its way out of a fallible step, boxed: a `ServerFrame` is
/// large.
type Refused = Box<ServerFrame>;

fn refused(code: ErrorCode, message: impl Into<String>) -> Refused {
    Box::new(refuse(code, message))
}

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Joins {
    pub(crate) fn new(setup: Option<JoinSetup>, registry: ReplicatedRegistry) -> Joins {
        Joins { setup, registry }
    }

    /// Whether this master signs certificates (and so accepts clients without one).
    pub(crate) fn enabled(&self) -> bool {
        self.setup.is_some()
    }

    /// The answer to `call` from `peer` (`None`: a connection without a certificate).
    pub(crate) async fn answer(
        &self,
        peer: Option<&PeerIdentity>,
        call: CertificateCall,
        leader: LeaderView,
    ) -> ServerFrame {
        match (call, peer) {
            (CertificateCall::Join { .. }, Some(p)) => refuse(
                ErrorCode::BadRequest,
                format!("{p} already has a certificate: renew it instead of joining"),
            ),
            (
                CertificateCall::Join {
                    token,
                    name,
                    csr_pem,
                },
                None,
            ) => self.join(&token, &name, &csr_pem, leader).await,
            (_, None) => refuse(
                ErrorCode::Forbidden,
                "a connection without a certificate may only join with a token",
            ),
            (CertificateCall::Renew { csr_pem }, Some(p)) => self.renew(p, &csr_pem),
            (CertificateCall::RevokeJoinToken { token_id }, Some(p)) => {
                self.revoke(p, &token_id, leader).await
            }
        }
    }

    fn setup(&self) -> Result<&JoinSetup, Refused> {
        // Unavailable, not Forbidden: a client asking every master goes on to one that can.
        self.setup.as_ref().ok_or_else(|| {
            refused(
                ErrorCode::Unavailable,
                "this master cannot sign certificates: it was started without --ca-key \
                 (joins and renewals are disabled)",
            )
        })
    }

    async fn join(
        &self,
        token: &str,
        name: &str,
        csr_pem: &str,
        leader: LeaderView,
    ) -> ServerFrame {
        match self.try_join(token, name, csr_pem, leader).await {
            Ok(frame) => frame,
            Err(frame) => *frame,
        }
    }

    async fn try_join(
        &self,
        token: &str,
        name: &str,
        csr_pem: &str,
        leader: LeaderView,
    ) -> Result<ServerFrame, Refused> {
        let setup = self.setup()?;
        if !leader.is_leader {
            return Ok(ServerFrame::NotLeader {
                leader: leader.leader,
            });
        }
        let bad = |e: &dyn std::fmt::Display| refused(ErrorCode::BadRequest, e.to_string());
        let token: certs::JoinToken = token.parse().map_err(|e| bad(&e))?;
        let now_ms = now_unix_ms();
        setup
            .signer
            .check_token(&token, now_ms / 1000)
            .map_err(|e| refused(ErrorCode::Forbidden, e.to_string()))?;
        let name = match &token.name {
            Some(bound) if !name.is_empty() && name != bound => {
                return Err(refused(
                    ErrorCode::Forbidden,
                    format!("the join token is bound to the name '{bound}', not '{name}'"),
                ))
            }
            Some(bound) => bound.clone(),
            None => name.to_owned(),
        };
        certs::validate_name(&name).map_err(|e| bad(&e))?;
        let csr = setup.signer.parse_csr(csr_pem).map_err(|e| bad(&e))?;
        let fingerprint = csr.key_fingerprint.clone();
        if let Some(reason) = self.refusal(&token, &fingerprint) {
            return Err(refused(ErrorCode::Forbidden, reason));
        }
        let op = RegistryOp::JoinTokenUsed {
            token_id: token.id.clone(),
            max_uses: token.uses,
            expires_ms: token.expires_unix.saturating_mul(1000),
            at_ms: now_ms,
            key_fingerprint: fingerprint.clone(),
        };
        self.commit(op).await?;
        if !self
            .registry
            .read_registry(|r, _| r.join_tokens().joined(&token.id, &fingerprint))
        {
            let reason = self
                .refusal(&token, &fingerprint)
                .unwrap_or_else(|| format!("the join token {} could not be used", token.id));
            return Err(refused(ErrorCode::Forbidden, reason));
        }
        let cert_pem = setup
            .signer
            .sign(&csr, token.role, &name, setup.cert_ttl.as_secs().max(1))
            .map_err(|e| refused(ErrorCode::Unavailable, e.to_string()))?;
        tracing::info!(token = %token.id, role = %token.role, %name, "a node joined with a token");
        Ok(ServerFrame::Certificate(IssuedCertificate {
            cert_pem,
            ca_pem: setup.signer.ca_pem().to_owned(),
        }))
    }

    /// Why the registry refuses one more join with `token` by the key `fingerprint`, if it does.
    fn refusal(&self, token: &certs::JoinToken, fingerprint: &str) -> Option<String> {
        self.registry.read_registry(|r, _| {
            let t = r.join_tokens();
            let uses = t.get(&token.id)?;
            if uses.revoked {
                Some(format!("the join token {} was revoked", token.id))
            } else if uses.keys.iter().any(|k| k == fingerprint) {
                None
            } else if uses.keys.len() >= token.uses as usize {
                Some(format!(
                    "the join token {} was already used ({} of {} joins)",
                    token.id,
                    uses.keys.len(),
                    token.uses
                ))
            } else {
                None
            }
        })
    }

    /// Commits `op`; a lost leadership sends the client on to the new leader.
    async fn commit(&self, op: RegistryOp) -> Result<(), Refused> {
        match self.registry.propose(op).await {
            Ok(_) => Ok(()),
            Err(ProposeError::NotLeader { leader }) => Err(Box::new(ServerFrame::NotLeader {
                leader: leader.map(|(_, node)| node.addr),
            })),
            Err(e) => Err(refused(ErrorCode::Unavailable, e.to_string())),
        }
    }

    fn renew(&self, peer: &PeerIdentity, csr_pem: &str) -> ServerFrame {
        match self.try_renew(peer, csr_pem) {
            Ok(frame) => frame,
            Err(frame) => *frame,
        }
    }

    fn try_renew(&self, peer: &PeerIdentity, csr_pem: &str) -> Result<ServerFrame, Refused> {
        let setup = self.setup()?;
        if peer.role == Role::Master {
            return Err(refused(
                ErrorCode::Forbidden,
                "master certificates are not renewed by the masters: issue them with \
                 `corral certs issue`",
            ));
        }
        let csr = setup
            .signer
            .parse_csr(csr_pem)
            .map_err(|e| refused(ErrorCode::BadRequest, e.to_string()))?;
        let cert_pem = setup
            .signer
            .sign(&csr, peer.role, &peer.name, setup.cert_ttl.as_secs().max(1))
            .map_err(|e| refused(ErrorCode::Unavailable, e.to_string()))?;
        tracing::info!(%peer, "renewed a certificate");
        Ok(ServerFrame::Certificate(IssuedCertificate {
            cert_pem,
            ca_pem: setup.signer.ca_pem().to_owned(),
        }))
    }

    async fn revoke(&self, peer: &PeerIdentity, token_id: &str, leader: LeaderView) -> ServerFrame {
        if peer.role != Role::Operator {
            return refuse(
                ErrorCode::Forbidden,
                format!("{peer} may not revoke join tokens: it needs an operator certificate"),
            );
        }
        let well_formed = token_id.len() == 16 && token_id.bytes().all(|b| b.is_ascii_hexdigit());
        if !well_formed {
            return refuse(
                ErrorCode::BadRequest,
                format!("'{token_id}' is not a join token id (16 hex digits)"),
            );
        }
        if !leader.is_leader {
            return ServerFrame::NotLeader {
                leader: leader.leader,
            };
        }
        let op = RegistryOp::JoinTokenRevoked {
            token_id: token_id.to_ascii_lowercase(),
            expires_ms: 0,
            at_ms: now_unix_ms(),
        };
        match self.commit(op).await {
            Ok(()) => {
                tracing::info!(token = %token_id, %peer, "join token revoked");
                ServerFrame::Operator(OperatorReply::Done)
            }
            Err(frame) => *frame,
        }
    }
}

/// Serves a connection whose client presented no certificate: at most [`ANONYMOUS_STREAMS`]
/// streams, each one `Join` request answered (anything else is refused), then the connection
/// is closed.
pub(crate) async fn serve_anonymous(
    conn: Connection,
    joins: &Joins,
    leader: impl Fn() -> LeaderView,
) {
    let remote = conn.remote_address();
    for _ in 0..ANONYMOUS_STREAMS {
        let (mut tx, mut rx) =
            match transport::accept_framed::<ServerFrame, ClientFrame>(&conn, ANONYMOUS_MAX_FRAME)
                .await
            {
                Ok(stream) => stream,
                Err(_) => return,
            };
        let first = tokio::time::timeout(ANONYMOUS_REQUEST_TIMEOUT, rx.recv()).await;
        let reply = match first {
            Ok(Ok(Some(ClientFrame::Certificates(call)))) => {
                joins.answer(None, call, leader()).await
            }
            Ok(Ok(Some(_))) => refuse(
                ErrorCode::Forbidden,
                "a connection without a certificate may only join with a token",
            ),
            Ok(Ok(None)) => continue,
            Ok(Err(e)) => refuse(ErrorCode::MalformedFrame, e.to_string()),
            Err(_) => refuse(ErrorCode::BadRequest, "no request in time"),
        };
        if let ServerFrame::Error(e) = &reply {
            tracing::warn!(%remote, error = %e.message, "refused a join");
        }
        if tx.send(&reply).await.is_err() {
            return;
        }
        let _ = tx.finish().await;
    }
    conn.close(0, b"too many requests without a certificate");
}

/// The master's endpoint: one that also accepts clients without a certificate when it `signs`.
pub(crate) fn endpoint(
    listen: std::net::SocketAddr,
    identity: &transport::Identity,
    signs: bool,
) -> Result<transport::Endpoint, TransportError> {
    if signs {
        transport::server_endpoint_accepting_joins(listen, identity)
    } else {
        transport::server_endpoint(listen, identity)
    }
}

/// Whether `e` says the peer presented no certificate (a joining node).
pub(crate) fn is_anonymous(e: &TransportError) -> bool {
    matches!(e, TransportError::NoPeerCertificate)
}
