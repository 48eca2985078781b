//! TLS for plain TCP servers: the HTTPS listener of `corral mesos-gateway`, whose clients
//! (Mesos frameworks) speak HTTP/1.1 over TCP, not QUIC. A server certificate and key from PEM
//! files (any CA the clients trust: the cluster's own `corral certs` CA, or a public one), TLS
//! 1.2 and 1.3 with ring, ALPN `http/1.1`, and no client certificates: Mesos clients present
//! none. Other crates hold a [`TcpTlsAcceptor`] and get back an opaque stream, so no rustls
//! type leaves this crate.

use crate::error::TransportError;
use crate::tls::{describe_rustls_error, provider, read_certs, read_file};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivateKeyDer;
use std::path::Path;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// Accepts TLS on TCP connections with one server certificate.
#[derive(Clone)]
pub struct TcpTlsAcceptor {
    inner: tokio_rustls::TlsAcceptor,
}

impl std::fmt::Debug for TcpTlsAcceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpTlsAcceptor").finish_non_exhaustive()
    }
}

impl TcpTlsAcceptor {
    /// Loads the certificate chain (`cert`, PEM, the server's certificate first) and its
    /// private key (`key`, PEM). Errors name the file and what is wrong with it, including a
    /// key that does not belong to the certificate.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<TcpTlsAcceptor, TransportError> {
        let chain = read_certs(cert, "server")?;
        let key_pem = read_file(key)?;
        let private = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|e| TransportError::file(key, format!("no usable PEM private key: {e}")))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TransportError::Tls(describe_rustls_error(&e)))?
            .with_no_client_auth()
            .with_single_cert(chain, private)
            .map_err(|e| {
                TransportError::file(
                    key,
                    format!(
                        "cannot serve the certificate in {} with this key: {}",
                        cert.display(),
                        describe_rustls_error(&e)
                    ),
                )
            })?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TcpTlsAcceptor {
            inner: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// The TLS handshake on an accepted connection; the caller bounds it in time.
    pub async fn accept(
        &self,
        tcp: TcpStream,
    ) -> Result<impl AsyncRead + AsyncWrite + Unpin + Send + 'static, TransportError> {
        let peer = tcp
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| "a TCP client".to_owned());
        self.inner
            .accept(tcp)
            .await
            .map_err(|e| TransportError::Handshake {
                peer,
                reason: e.to_string(),
            })
    }
}
