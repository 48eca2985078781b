//! The Mesos v1 HTTP API gateway: unchanged Mesos frameworks (pymesos, avmesos) run on Corral.
//!
//! `corral mesos-gateway` runs one [`Gateway`]: an HTTP/1.1 server, on loopback unless it
//! serves TLS (HTTPS with `--tls-cert`/`--tls-key`, [`GatewayTls`]), that speaks the Mesos v1 scheduler API (`POST /api/v1/scheduler`, `GET
//! /version`) to local clients and Corral's protocol (QUIC + mutual TLS, through the
//! `framework` crate) to the masters, with the framework certificate it was given. No
//! plaintext crosses the network: the Mesos side has no authentication, which is why it stays
//! on loopback. Several frameworks may share one gateway; each gets its own Corral session.
//!
//! Map: [`wire`] (the Mesos `Call` JSON), [`calls`] (calls → `FrameworkCall`), [`events`]
//! (`FrameworkEvent` → Mesos event JSON, RecordIO), [`scheduler`] (subscriptions, stream ids,
//! the per-framework task), [`legacy`] (`/master/state`, `/slaves`, `/frameworks`, `/tasks`
//! from Corral's `ClusterState`, read with an operator identity), [`operator`] (the v1
//! operator API's read calls, `POST /api/v1`), `http` (routing, the header and body checks
//! Mesos makes; `/health`, `/redirect`), [`serve`] (the HTTP/1.1 accept loop and the streamed
//! body, shared with `corral ui`).
//! The wire shapes follow `shared/reference/mesos.md` §2-§4: nested event bodies, `agent_id`
//! and a base64 uuid on every update to acknowledge, a numeric `/version`, unknown JSON fields
//! ignored, unsupported calls refused with a 400 whose body names the call and why.
//!
//! Where Corral differs from Mesos, on purpose or not yet:
//! - `FrameworkInfo.user` is not applied to tasks (Mesos clients fill it with the local login,
//!   often root): a task runs as its `CommandInfo.user`, else the agent's default user.
//! - UPDATE_FRAMEWORK (roles, failover timeout, name, capabilities, suppressed roles) is a
//!   re-subscription of the framework's Corral session with the new info
//!   ([`framework::Scheduler::update_framework`]): outstanding offers are rescinded and filters
//!   cleared, as after any subscription.
//! - Not served yet: LAUNCH_GROUP (Corral has no default executor to run a task group), custom
//!   executors (`TaskInfo.executor`, SHUTDOWN, the agent's executor API), inverse offers and
//!   operation feedback, the operator event stream, protobuf bodies, the fetcher
//!   (`CommandInfo.uris`) and container images. Each is refused with a 400 (415 for protobuf)
//!   saying so.
//! - The Mesos side has no authentication: without TLS the gateway listens on loopback only;
//!   with TLS it may listen anywhere, and clients must then trust its certificate. Every
//!   framework it serves acts with its one framework certificate (one Corral principal).

pub mod calls;
pub mod events;
mod http;
pub mod legacy;
pub mod operator;
pub mod scheduler;
pub mod serve;
pub mod wire;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// HTTP connections served at once; more wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 1024;
/// A client must send its request headers within this time.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(
        "refusing to listen on {addr}: the Mesos HTTP API carries no authentication, so a \
         non-loopback --listen needs TLS: pass --tls-cert and --tls-key (HTTPS), or listen on \
         127.0.0.1 or [::1] and run the framework on this host"
    )]
    NotLoopback { addr: String },
    #[error("cannot resolve --listen {addr}: {source}")]
    Resolve {
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("the gateway's TLS certificate (--tls-cert, --tls-key): {0}")]
    Tls(#[from] transport::TransportError),
}

/// The HTTPS listener's certificate and key (PEM files).
#[derive(Clone, Debug)]
pub struct GatewayTls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// How a gateway runs.
#[derive(Clone)]
pub struct GatewayConfig {
    /// `HOST:PORT` for the Mesos HTTP API; a loopback address unless `tls` is given.
    pub listen: String,
    /// Serve HTTPS with this certificate; required for a non-loopback `listen`.
    pub tls: Option<GatewayTls>,
    /// The masters and the framework identity every subscription uses.
    pub framework: framework::ClientOptions,
    /// The interval of HEARTBEAT events (Mesos: 15 s).
    pub heartbeat: Duration,
    /// The operator identity the legacy read endpoints (`/master/state`, `/slaves`,
    /// `/frameworks`, `/tasks`) read the cluster with; without it they answer 501.
    pub operator: Option<framework::ClientOptions>,
}

/// `listen` resolved; unless it will be served with TLS (`tls`), only if every address it
/// names is loopback (else [`GatewayError::NotLoopback`]).
pub async fn listen_addr(listen: &str, tls: bool) -> Result<SocketAddr, GatewayError> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(listen)
        .await
        .map_err(|source| GatewayError::Resolve {
            addr: listen.to_owned(),
            source,
        })?
        .collect();
    let Some(addr) = addrs.first().copied() else {
        return Err(GatewayError::Resolve {
            addr: listen.to_owned(),
            source: std::io::Error::other("no address"),
        });
    };
    if !tls && addrs.iter().any(|a| !a.ip().is_loopback()) {
        return Err(GatewayError::NotLoopback {
            addr: listen.to_owned(),
        });
    }
    Ok(addr)
}

pub struct Gateway {
    listener: TcpListener,
    tls: Option<transport::TcpTlsAcceptor>,
    shared: Arc<http::Shared>,
}

impl Gateway {
    /// Loads the TLS certificate (if any), resolves and binds `config.listen`, refusing an
    /// address that is not loopback without TLS.
    pub async fn bind(config: GatewayConfig) -> Result<Gateway, GatewayError> {
        let addr = listen_addr(&config.listen, config.tls.is_some()).await?;
        let tls = match &config.tls {
            Some(t) => Some(transport::TcpTlsAcceptor::from_pem_files(&t.cert, &t.key)?),
            None => None,
        };
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| GatewayError::Bind {
                addr: config.listen.clone(),
                source,
            })?;
        let local = listener.local_addr().map_err(|source| GatewayError::Bind {
            addr: config.listen.clone(),
            source,
        })?;
        let hostname = local.ip().to_string();
        let master_info = events::master_info(
            &uuid::Uuid::new_v4().hyphenated().to_string(),
            local,
            &hostname,
        );
        let schedulers =
            scheduler::Schedulers::new(config.framework, config.heartbeat, master_info);
        Ok(Gateway {
            listener,
            tls,
            shared: Arc::new(http::Shared {
                schedulers,
                operator: config.operator,
            }),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Serves until `shutdown` resolves; open streams end with it.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let shared = self.shared;
        let handle = move |req| http::handle(shared.clone(), req);
        serve::serve_http1(
            &self.listener,
            self.tls,
            MAX_CONNECTIONS,
            HEADER_READ_TIMEOUT,
            handle,
            shutdown,
        )
        .await;
    }

    /// Whether the gateway serves HTTPS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }
}
