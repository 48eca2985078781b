//! Test support: a cluster CA in a tempdir, masters with real QUIC endpoints on 127.0.0.1 and
//! the accept loop the daemon would run, and metric waits with deadlines.

use master_raft::network::serve_raft_connection;
use master_raft::{MasterNode, NodeId, RaftConfig, RaftMetrics, RegistryOp, ReplicatedRegistry};
use proto::{FrameworkId, FrameworkInfo, ProtocolVersion, Role};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tempfile::TempDir;
use tokio::task::JoinHandle;
use transport::{Identity, TlsFiles};

/// How long any wait in these tests may take before it fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// A cluster CA and the certificates issued from it.
pub struct Pki {
    dir: TempDir,
}

impl Pki {
    pub fn new() -> Pki {
        transport::install_crypto_provider();
        let dir = tempfile::tempdir().expect("tempdir");
        certs::init_ca(dir.path(), false).expect("init ca");
        Pki { dir }
    }

    /// Issues (once) and loads the certificate of `role`/`name`.
    pub fn identity(&self, role: Role, name: &str) -> Arc<Identity> {
        let paths = certs::node_paths(self.dir.path(), name);
        if !paths.cert.exists() {
            let req = certs::IssueRequest {
                role,
                name: name.to_owned(),
                sans: vec!["127.0.0.1".into()],
                days: 1,
            };
            certs::issue(self.dir.path(), &req, false).expect("issue");
        }
        let files = TlsFiles {
            ca: certs::ca_paths(self.dir.path()).cert,
            cert: paths.cert,
            key: paths.key,
        };
        Arc::new(Identity::load(&files).expect("load identity"))
    }
}

/// One master: its registry, its endpoint and the accept loop handing raft streams over.
pub struct Master {
    pub id: NodeId,
    pub node: MasterNode,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    pub reg: ReplicatedRegistry,
    pub endpoint: transport::Endpoint,
    accept: JoinHandle<()>,
}

pub fn test_config(id: NodeId, data_dir: PathBuf) -> RaftConfig {
    RaftConfig::new(id, data_dir)
}

impl Master {
    /// Starts master `cfg.node_id` with the certificate of `cert_name` on `addr` (port 0 for
    /// any free port).
    pub async fn start(pki: &Pki, cfg: RaftConfig, cert_name: &str, addr: SocketAddr) -> Master {
        let identity = pki.identity(Role::Master, cert_name);
        let endpoint = transport::server_endpoint(addr, &identity).expect("bind");
        let addr = endpoint.local_addr().expect("local addr");
        let node = MasterNode::new(addr.to_string(), cert_name);
        let id = cfg.node_id;
        let data_dir = cfg.data_dir.clone();
        let reg = ReplicatedRegistry::start(cfg, node.clone(), identity, endpoint.clone())
            .await
            .expect("start raft");
        let raft = reg.raft_server();
        let ep = endpoint.clone();
        // What the daemon does for connections whose peer certificate says "master".
        let accept = tokio::spawn(async move {
            while let Some(incoming) = ep.accept().await {
                let raft = raft.clone();
                tokio::spawn(async move {
                    if let Ok((conn, _peer)) = transport::accept(incoming).await {
                        let _ = serve_raft_connection(raft, conn).await;
                    }
                });
            }
        });
        Master {
            id,
            node,
            addr,
            data_dir,
            reg,
            endpoint,
            accept,
        }
    }

    /// Stops the master as a crash would look to the others: raft stops, the endpoint closes.
    /// Returns what is needed to start it again.
    pub async fn stop(self) -> (NodeId, SocketAddr, PathBuf) {
        self.accept.abort();
        self.reg.shutdown().await;
        self.endpoint.close(0, b"stopped");
        (self.id, self.addr, self.data_dir)
    }

    pub fn metrics(&self) -> RaftMetrics {
        self.reg.metrics().borrow().clone()
    }

    /// Waits (up to [`WAIT`]) until `f` holds for this master's metrics.
    pub async fn wait(&self, what: &str, f: impl Fn(&RaftMetrics) -> bool + Send) -> RaftMetrics {
        self.reg
            .raft()
            .wait(Some(WAIT))
            .metrics(f, format!("master {}: {what}", self.id))
            .await
            .unwrap_or_else(|e| panic!("master {}: {what}: {e}", self.id))
    }

    pub async fn wait_applied(&self, index: u64) {
        self.reg
            .raft()
            .wait(Some(WAIT))
            .applied_index_at_least(Some(index), format!("master {} applies {index}", self.id))
            .await
            .unwrap_or_else(|e| panic!("master {} never applied {index}: {e}", self.id));
    }
}

/// Three (or `n`) masters on 127.0.0.1, initialized as one cluster, with a leader.
pub struct Cluster {
    pub pki: Pki,
    pub dirs: TempDir,
    pub masters: Vec<Master>,
}

impl Cluster {
    pub async fn start(n: u64, tweak: impl Fn(&mut RaftConfig)) -> Cluster {
        let pki = Pki::new();
        let dirs = tempfile::tempdir().expect("tempdir");
        let mut masters = Vec::new();
        for id in 1..=n {
            let mut cfg = test_config(id, dirs.path().join(format!("m{id}")));
            tweak(&mut cfg);
            let m = Master::start(&pki, cfg, &format!("m{id}"), localhost0()).await;
            masters.push(m);
        }
        let members: BTreeMap<NodeId, MasterNode> =
            masters.iter().map(|m| (m.id, m.node.clone())).collect();
        masters[0]
            .reg
            .initialize(members)
            .await
            .expect("initialize");
        let c = Cluster { pki, dirs, masters };
        c.wait_leader(None).await;
        c
    }

    pub fn master(&self, id: NodeId) -> &Master {
        self.masters
            .iter()
            .find(|m| m.id == id)
            .unwrap_or_else(|| panic!("no master {id}"))
    }

    /// Waits until every running master agrees on one leader that is not `not`; returns it.
    pub async fn wait_leader(&self, not: Option<NodeId>) -> NodeId {
        let first = self.masters[0]
            .wait("a leader", |m| {
                m.current_leader.is_some() && m.current_leader != not
            })
            .await
            .current_leader
            .expect("leader");
        for m in &self.masters[1..] {
            m.wait("the same leader", |x| x.current_leader == Some(first))
                .await;
        }
        first
    }

    pub fn remove(&mut self, id: NodeId) -> Master {
        let i = self
            .masters
            .iter()
            .position(|m| m.id == id)
            .unwrap_or_else(|| panic!("no master {id}"));
        self.masters.remove(i)
    }
}

pub fn localhost0() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A registry op that visibly changes the registry: framework `fw-i` subscribes.
pub fn fw_op(i: u64) -> RegistryOp {
    RegistryOp::FrameworkAdded {
        framework_id: FrameworkId::new(format!("fw-{i}")),
        info: FrameworkInfo {
            id: None,
            name: format!("framework {i}"),
            roles: vec![],
            failover_timeout_ms: 60_000,
            capabilities: vec![],
            version: ProtocolVersion::CURRENT,
        },
        principal: Some(format!("fw-{i}")),
    }
}
