//! Getting a certificate with a join token, and renewing it (the design is `certs::join`'s).
//!
//! [`join`]: the node makes its own key (it never leaves the host), connects to the masters
//! without a certificate, trusting only a master whose TLS chain holds the CA with the token's
//! hash, sends a CSR with the token, checks that the answer's CA has that hash and that the
//! certificate names the role and name it asked for, and writes the CA, key and certificate.
//! [`renew`]: the same with the current certificate as authentication, then the identity is
//! reloaded so new connections present the new certificate (open ones go on).
//! [`keep_renewed`] renews at [`RENEW_AT`] of each certificate's lifetime, retrying a failure
//! every [`RETRY`] (less near the end), so a node whose masters were briefly away renews late
//! rather than never.

use crate::{open_session, ClientError, ClientOptions};
use proto::{CertificateCall, ClientFrame, IssuedCertificate, PeerIdentity, ServerFrame};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use transport::{Identity, TlsFiles};

/// The fraction of a certificate's lifetime after which it is renewed (kubelet renews between
/// 70% and 90%).
pub const RENEW_AT: f64 = 2.0 / 3.0;
/// The wait after a failed renewal before the next attempt (at most; a tenth of the time left
/// when that is shorter, but at least a second).
pub const RETRY: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    #[error(transparent)]
    Token(#[from] certs::JoinError),
    #[error(transparent)]
    Certs(#[from] certs::CertsError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Transport(#[from] transport::TransportError),
    #[error("the master answered with {0}")]
    Unexpected(String),
    #[error("the master sent a CA certificate whose hash is not the token's (sha256:{0})")]
    WrongCa(String),
    #[error("the master signed a certificate for {got}, not {wanted}")]
    WrongIdentity { got: String, wanted: String },
    #[error("missing --name: the join token binds no name, so the node must choose one")]
    NoName,
    #[error("the master does not accept nodes without a certificate: it must run with --ca-key to sign certificates for joins ({0})")]
    JoinsDisabled(String),
}

/// Joins the cluster with `token`: writes `files.ca`, `files.key` (0600) and `files.cert`, and
/// returns who the certificate says this node is. `name` is the node's name unless the token
/// binds one.
pub async fn join(
    masters: Vec<String>,
    token: &str,
    name: Option<&str>,
    files: &TlsFiles,
    connect_timeout: Duration,
) -> Result<PeerIdentity, CertificateError> {
    let token: certs::JoinToken = token.parse()?;
    let name = token
        .name
        .clone()
        .or(name.map(str::to_owned))
        .ok_or(CertificateError::NoName)?;
    let me = PeerIdentity {
        role: token.role,
        name: name.clone(),
    };
    let (key_pem, csr_pem) = certs::new_key_and_csr(&name)?;
    let mut opts = ClientOptions::new(
        masters,
        Arc::new(Identity::joining(token.ca_hash, me.clone())),
    );
    opts.connect_timeout = connect_timeout;
    let call = CertificateCall::Join {
        token: token.to_string(),
        name,
        csr_pem,
    };
    let issued = match ask(&opts, call).await {
        Err(CertificateError::Client(ClientError::Transport(t))) if t.is_certificate_refused() => {
            return Err(CertificateError::JoinsDisabled(t.to_string()))
        }
        other => other?,
    };
    let ca_der = certs::first_pem_der_of(&issued.ca_pem)?;
    if certs::ca_hash(&ca_der) != token.ca_hash {
        return Err(CertificateError::WrongCa(certs::hex(&certs::ca_hash(
            &ca_der,
        ))));
    }
    check_and_store(&issued, &me, files, &key_pem, true)?;
    // What the node will load: the files must make a valid identity now.
    Identity::load(files)?;
    Ok(me)
}

/// Renews the certificate of `opts.identity` (a new key, the same role and name), writes the
/// key and certificate over its files and reloads the identity. Returns the new certificate's
/// not-after (Unix seconds).
pub async fn renew(opts: &ClientOptions) -> Result<i64, CertificateError> {
    let me = opts.identity.peer().clone();
    let files = opts.identity.files().clone();
    let (key_pem, csr_pem) = certs::new_key_and_csr(&me.name)?;
    let issued = ask(opts, CertificateCall::Renew { csr_pem }).await?;
    check_and_store(&issued, &me, &files, &key_pem, false)?;
    opts.identity.reload()?;
    let (_, not_after) = certs::cert_validity(&issued.cert_pem)?;
    Ok(not_after)
}

/// How long after `now` a certificate that expires at `not_after` (Unix seconds) is due for
/// renewal: [`RENEW_AT`] of the time it has left. Counted from now, not from its not-before,
/// because certificates are backdated (`certs::BACKDATE`) for clock skew; for a certificate
/// just issued it is [`RENEW_AT`] of its lifetime.
pub fn renew_at(not_after: i64, now: i64) -> Duration {
    let left = (not_after - now).max(0) as f64;
    Duration::from_secs_f64(left * RENEW_AT)
}

/// Renews `opts.identity`'s certificate when [`renew_at`] says, forever (spawn it; abort the
/// task to stop). Failures are logged and retried.
pub async fn keep_renewed(opts: ClientOptions) {
    loop {
        let cert = std::fs::read_to_string(&opts.identity.files().cert).ok();
        let not_after = match cert.as_deref().map(certs::cert_validity) {
            Some(Ok((_, not_after))) => not_after,
            _ => {
                tracing::warn!(cert = %opts.identity.files().cert.display(),
                    "cannot read the certificate's validity; retrying");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        tokio::time::sleep(renew_at(not_after, unix_now())).await;
        loop {
            match renew(&opts).await {
                Ok(until) => {
                    tracing::info!(until, "renewed this node's certificate");
                    break;
                }
                Err(e) => {
                    let left = (not_after - unix_now()).max(0) as u64;
                    let wait = RETRY
                        .min(Duration::from_secs(left / 10))
                        .max(Duration::from_secs(1));
                    tracing::warn!(error = %e, expires_in_secs = left,
                        "certificate renewal failed; retrying");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

async fn ask(
    opts: &ClientOptions,
    call: CertificateCall,
) -> Result<IssuedCertificate, CertificateError> {
    let (session, reply) = open_session(opts, &ClientFrame::Certificates(call)).await?;
    drop(session);
    match reply {
        ServerFrame::Certificate(issued) => Ok(issued),
        other => Err(CertificateError::Unexpected(format!("{other:?}"))),
    }
}

/// Checks that `issued` names `wanted`, then writes it with our new key (and, with `with_ca`,
/// the CA certificate) to `files`.
fn check_and_store(
    issued: &IssuedCertificate,
    wanted: &PeerIdentity,
    files: &TlsFiles,
    key_pem: &str,
    with_ca: bool,
) -> Result<(), CertificateError> {
    let der = certs::first_pem_der_of(&issued.cert_pem)?;
    let got = certs::identity_from_cert_der(&der)?;
    if got != *wanted {
        return Err(CertificateError::WrongIdentity {
            got: got.to_string(),
            wanted: wanted.to_string(),
        });
    }
    certs::write_joined_files(
        with_ca.then_some(files.ca.as_path()),
        &files.cert,
        &files.key,
        &issued.ca_pem,
        &issued.cert_pem,
        key_pem,
    )?;
    Ok(())
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::renew_at;
    use std::time::Duration;

    #[test]
    fn renewal_is_due_at_two_thirds_of_the_time_left() {
        assert_eq!(renew_at(1090, 1000), Duration::from_secs(60));
        assert_eq!(renew_at(1000, 1000), Duration::ZERO);
        assert_eq!(renew_at(900, 1000), Duration::ZERO);
    }
}
