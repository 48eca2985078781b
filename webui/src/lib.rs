//! `corral ui`: the operators' web UI. Like `kubectl proxy`, a local process holds the
//! operator's certificate and serves plain HTTP on loopback only, so the browser needs no client
//! certificate and nothing is exposed beyond this host. The page (static HTML, CSS and JS
//! embedded with `include_str!`, no build step, nothing fetched from the internet) shows the
//! cluster overview, agents (resources, usage, pressure), frameworks and roles (shares), tasks
//! (state, reason, limits, OOM forensics, and each task's output as `corral logs` reads it) and
//! the masters (leader, lag).
//!
//! Live: `GET /api/events` relays the operator event stream (`framework::EventStream`) as
//! server-sent events whose ids are event cursors, so a browser that reconnects (sending
//! `Last-Event-ID`) resumes where it stopped; `GET /api/state` is `corral state --json` (usage,
//! pressure and shares, which change without events, are polled). `GET /api/output` reads a
//! task's stdout or stderr (the first [`http::MAX_OUTPUT`] bytes).
//!
//! Bounded: [`MAX_CONNECTIONS`] connections, [`http::MAX_EVENT_STREAMS`] event streams, each
//! relayed through a small bounded queue (a browser that stops reading holds its upstream
//! subscription back until the master cuts it off as too slow). Requests whose `Host` is not
//! this loopback address are refused (DNS rebinding).

mod http;
pub mod json;

use mesos_gateway::serve::serve_http1;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// HTTP connections served at once; more wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 64;
/// A client must send its request headers within this time.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum UiError {
    #[error(
        "refusing to serve the UI on {addr}: it acts with the operator's certificate and has no \
         login of its own, so it listens on loopback only (127.0.0.1 or [::1]); reach it from \
         elsewhere through an SSH tunnel"
    )]
    NotLoopback { addr: String },
    #[error("cannot use --listen {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
}

/// A bound, not yet serving, UI.
pub struct Ui {
    listener: TcpListener,
    shared: Arc<http::Shared>,
}

impl Ui {
    /// Binds `listen` (loopback only); the UI reads the cluster as `operator`.
    pub async fn bind(listen: &str, operator: framework::ClientOptions) -> Result<Ui, UiError> {
        let failed = |source| UiError::Listen {
            addr: listen.to_owned(),
            source,
        };
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host(listen)
            .await
            .map_err(failed)?
            .collect();
        let addr = match addrs.first() {
            Some(a) if addrs.iter().all(|a| a.ip().is_loopback()) => *a,
            Some(_) => {
                return Err(UiError::NotLoopback {
                    addr: listen.to_owned(),
                })
            }
            None => return Err(failed(std::io::Error::other("no address"))),
        };
        let listener = TcpListener::bind(addr).await.map_err(failed)?;
        let local = listener.local_addr().map_err(failed)?;
        Ok(Ui {
            listener,
            shared: Arc::new(http::Shared::new(operator, local)),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local
    }

    /// Serves until `shutdown` resolves; open event streams end with it.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Ui { listener, shared } = self;
        let handle = move |req| http::handle(shared.clone(), req);
        serve_http1(
            &listener,
            None,
            MAX_CONNECTIONS,
            HEADER_READ_TIMEOUT,
            handle,
            shutdown,
        )
        .await;
    }
}
