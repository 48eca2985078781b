use certs::IssueRequest;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tempfile::TempDir;
use transport::{Identity, Role, TlsFiles};

/// Frame limit used by the tests: small, so oversized frames are cheap to make.
pub const MAX: usize = 1024;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Msg {
    Ping(u32),
    Text(String),
}

/// Every test finishes well within this; hitting it means a hang, not slowness.
pub async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .expect("test did not finish within its deadline")
}

/// A cluster CA in a temporary directory.
pub struct Pki {
    pub dir: TempDir,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        certs::init_ca(dir.path(), false).unwrap();
        Pki { dir }
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.path().join(certs::CA_CERT_FILE)
    }

    fn files(&self, paths: certs::CertPaths) -> TlsFiles {
        TlsFiles {
            ca: self.ca(),
            cert: paths.cert,
            key: paths.key,
        }
    }

    /// Issues a normal certificate and returns the files (with this CA as trust root).
    pub fn issue(&self, role: Role, name: &str) -> TlsFiles {
        let req = IssueRequest {
            role,
            name: name.into(),
            sans: vec![],
            days: 1,
        };
        self.files(certs::issue(self.dir.path(), &req, false).unwrap())
    }

    /// Issues a certificate that expired yesterday.
    pub fn issue_expired(&self, role: Role, name: &str) -> TlsFiles {
        let req = IssueRequest {
            role,
            name: name.into(),
            sans: vec![],
            days: 1,
        };
        let now = time::OffsetDateTime::now_utc();
        let paths = certs::issue_with_validity(
            self.dir.path(),
            &req,
            now - time::Duration::days(10),
            now - time::Duration::days(1),
            false,
        )
        .unwrap();
        self.files(paths)
    }

    pub fn identity(&self, role: Role, name: &str) -> Identity {
        Identity::load(&self.issue(role, name)).unwrap()
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// A server endpoint on 127.0.0.1:0.
pub fn server(id: &Identity) -> (transport::Endpoint, SocketAddr) {
    let ep = transport::server_endpoint("127.0.0.1:0".parse().unwrap(), id).unwrap();
    let addr = ep.local_addr().unwrap();
    (ep, addr)
}

/// Accepts one connection and returns what `transport::accept` says about it.
pub async fn accept_one(
    ep: &transport::Endpoint,
) -> Result<(transport::Connection, transport::PeerIdentity), transport::TransportError> {
    let incoming = ep.accept().await.expect("endpoint closed");
    transport::accept(incoming).await
}

/// What a client sees when the server refuses its certificate. In TLS 1.3 that may surface in
/// `connect`, in `open_framed`, in `send` or (typically) in the first `recv`.
pub async fn refusal(
    conn: Result<transport::Connection, transport::TransportError>,
) -> transport::TransportError {
    let conn = match conn {
        Ok(c) => c,
        Err(e) => return e,
    };
    let (mut tx, mut rx) = match transport::open_framed::<Msg, Msg>(&conn, MAX).await {
        Ok(pair) => pair,
        Err(e) => return e,
    };
    if let Err(e) = tx.send(&Msg::Ping(1)).await {
        return e;
    }
    match rx.recv().await {
        Err(e) => e,
        Ok(v) => panic!("expected the server to refuse us, got {v:?}"),
    }
}
