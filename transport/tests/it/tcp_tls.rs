//! `TcpTlsAcceptor` (the Mesos gateway's HTTPS listener): a real TLS handshake on loopback TCP
//! with a certificate of the cluster CA, and load errors that name the file and the problem.

use crate::support::*;
use certs::IssueRequest;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use transport::{Role, TcpTlsAcceptor, TlsFiles, TransportError};

/// A server certificate naming `localhost`, as `corral certs issue --san localhost` makes.
fn server_cert(pki: &Pki, name: &str) -> TlsFiles {
    let req = IssueRequest {
        role: Role::Operator,
        name: name.into(),
        sans: vec!["localhost".into()],
        days: 1,
    };
    let paths = certs::issue(pki.path(), &req, false).unwrap();
    TlsFiles {
        ca: pki.ca(),
        cert: paths.cert,
        key: paths.key,
    }
}

/// An acceptor with a `localhost` certificate of `pki` and a TCP listener on loopback.
async fn listen(
    pki: &Pki,
) -> (
    TcpTlsAcceptor,
    tokio::net::TcpListener,
    std::net::SocketAddr,
) {
    let files = server_cert(pki, "gateway");
    let acceptor = TcpTlsAcceptor::from_pem_files(&files.cert, &files.key).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (acceptor, listener, addr)
}

/// A client that trusts only the cluster CA.
fn client(pki: &Pki) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(pki.ca()).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

#[tokio::test]
async fn a_client_trusting_the_ca_completes_the_handshake_and_bytes_flow_both_ways() {
    let pki = Pki::new();
    let (acceptor, listener, addr) = listen(&pki).await;
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = acceptor.accept(tcp).await.unwrap();
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await.unwrap();
        tls.write_all(b"pong").await.unwrap();
        tls.shutdown().await.unwrap();
        buf
    });
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = client(&pki).connect(name, tcp).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    tls.write_all(b"ping").await.unwrap();
    let mut reply = Vec::new();
    tls.read_to_end(&mut reply).await.unwrap();
    assert_eq!(reply, b"pong");
    assert_eq!(&server.await.unwrap(), b"ping");
}

#[tokio::test]
async fn a_plain_tcp_client_fails_the_handshake_with_an_error() {
    let pki = Pki::new();
    let (acceptor, listener, addr) = listen(&pki).await;
    let client = tokio::spawn(async move {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut reply = Vec::new();
        let _ = tcp.read_to_end(&mut reply).await;
        reply
    });
    let (tcp, _) = listener.accept().await.unwrap();
    let err = acceptor
        .accept(tcp)
        .await
        .err()
        .expect("plain HTTP is refused");
    assert!(matches!(err, TransportError::Handshake { .. }), "{err:?}");
    let reply = client.await.unwrap();
    assert!(!reply.starts_with(b"HTTP/"), "no HTTP answer: {reply:?}");
}

#[test]
fn load_errors_name_the_file_and_the_problem() {
    let pki = Pki::new();
    let good = server_cert(&pki, "gateway");
    let missing = pki.path().join("missing.pem");
    let err = TcpTlsAcceptor::from_pem_files(&missing, &good.key).unwrap_err();
    assert!(
        err.to_string().contains(&missing.display().to_string()),
        "{err}"
    );
    let err = TcpTlsAcceptor::from_pem_files(&good.cert, &missing).unwrap_err();
    assert!(
        err.to_string().contains(&missing.display().to_string()),
        "{err}"
    );
    // A certificate where the key should be: no private key in it.
    let err = TcpTlsAcceptor::from_pem_files(&good.cert, &good.cert).unwrap_err();
    assert!(err.to_string().contains("private key"), "{err}");
    // The key of another certificate.
    let other = server_cert(&pki, "other");
    let err = TcpTlsAcceptor::from_pem_files(&good.cert, &other.key).unwrap_err();
    assert!(
        err.to_string().contains("cannot serve the certificate"),
        "{err}"
    );
}
