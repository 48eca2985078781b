//! Prometheus metrics for the Corral daemons: a tiny HTTP/1.1 server for `GET /metrics` on its
//! own listener (`--metrics-listen`), separate from the QUIC port, and the text encoding of a
//! [`prometheus_client`] registry.
//!
//! The server answers only `GET /metrics` (and `GET /`), one request per connection: in the
//! OpenMetrics text format when the request's `Accept` asks for it (Prometheus does), else in
//! the Prometheus text format 0.0.4 (curl, `promtool check metrics`), as the Go client
//! negotiates. The two differ for counters only: OpenMetrics names the family without the
//! `_total` its sample carries. Requests are
//! bounded: at most [`MAX_REQUEST_BYTES`] of headers, [`REQUEST_TIMEOUT`] to send them, and
//! [`MAX_CONNECTIONS`] served at once (more wait in the kernel's accept queue).
//!
//! **Why `prometheus-client`:** it is the Prometheus project's own Rust client (the
//! `prometheus/client_rust` repository), kept in step with the OpenMetrics specification,
//! typed (counters, gauges, histograms and label sets are Rust types, so a label set cannot be
//! misspelt at one call site) and without global state: each daemon owns its registry, which
//! matters because `corral dev` runs a master and an agent in one process.

pub use prometheus_client;

use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Header bytes read from one request before it is refused.
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// How long a client may take to send its request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 16;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot listen for metrics on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// What the server renders at each scrape: refreshes the gauges it derives (under the same
/// lock as the encoding, so a scrape never sees a half-updated family), then encodes.
pub type Refresh = Box<dyn Fn() + Send + Sync>;

/// A registry shared by the daemon that fills it and the server that encodes it.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Mutex<Registry>>,
    refresh: Arc<Mutex<Option<Refresh>>>,
}

/// Held while a daemon rewrites a family (clear, then set each series): a scrape waits for it.
pub struct Updating<'a> {
    _guard: std::sync::MutexGuard<'a, Option<Refresh>>,
}

impl Metrics {
    /// Takes `registry` (names registered in it get the `corral_` prefix if it was made with
    /// [`Metrics::registry`]).
    pub fn new(registry: Registry) -> Metrics {
        Metrics {
            inner: Arc::new(Mutex::new(registry)),
            refresh: Arc::new(Mutex::new(None)),
        }
    }

    /// An empty registry whose names start with `corral_`.
    pub fn registry() -> Registry {
        Registry::with_prefix("corral")
    }

    /// Called before every encoding, e.g. to copy gauges from a published snapshot.
    pub fn set_refresh(&self, refresh: Refresh) {
        if let Ok(mut r) = self.refresh.lock() {
            *r = Some(refresh);
        }
    }

    /// Keeps scrapes out until the guard is dropped.
    pub fn updating(&self) -> Updating<'_> {
        Updating {
            _guard: self.refresh.lock().unwrap_or_else(|e| e.into_inner()),
        }
    }

    /// The OpenMetrics text of every registered metric.
    pub fn encode(&self) -> String {
        let refresh = self.refresh.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = refresh.as_ref() {
            r();
        }
        let registry = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}

/// Binds `addr` for the metrics server (done before the daemon starts, so a taken port fails
/// the start with the address named).
pub fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, MetricsError> {
    let listener = std::net::TcpListener::bind(addr)
        .map_err(|source| MetricsError::Listen { addr, source })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| MetricsError::Listen { addr, source })?;
    Ok(listener)
}

/// Serves `metrics` on `listener` until the task is dropped. Inside a tokio runtime.
pub async fn serve(listener: std::net::TcpListener, metrics: Metrics) {
    let local = listener.local_addr().ok();
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(listen = ?local, error = %e, "cannot serve metrics");
            return;
        }
    };
    tracing::info!(listen = ?local, "serving metrics at /metrics");
    let open = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = open.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "metrics listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(stream, &metrics).await {
                tracing::debug!(%peer, error = %e, "metrics request failed");
            }
            drop(permit);
        });
    }
}

/// A request: its method, path and whether it accepts OpenMetrics.
#[derive(Debug, PartialEq, Eq)]
struct Request {
    method: String,
    path: String,
    openmetrics: bool,
}

/// The request, once its headers are complete; `None` until then, `Err` if it is not HTTP/1.
fn parse_request(buf: &[u8]) -> Option<Result<Request, ()>> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let Ok(head) = std::str::from_utf8(&buf[..end]) else {
        return Some(Err(()));
    };
    let mut lines = head.split("\r\n");
    let mut parts = lines.next().unwrap_or("").split(' ');
    let (Some(method), Some(path), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Some(Err(()));
    };
    if !version.starts_with("HTTP/1.") {
        return Some(Err(()));
    }
    let openmetrics = lines.any(|l| {
        l.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("accept")
                && value.contains("application/openmetrics-text")
        })
    });
    Some(Ok(Request {
        method: method.to_owned(),
        path: path.to_owned(),
        openmetrics,
    }))
}

/// The Prometheus text format 0.0.4 of `openmetrics` (as `prometheus_client` encodes it):
/// a counter family's HELP and TYPE take the `_total` name of its sample, `# UNIT` and
/// `# EOF` go.
pub fn prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut help: Option<&str> = None;
    for line in openmetrics.lines() {
        if line.starts_with("# HELP ") {
            if let Some(h) = help.replace(line) {
                out.push_str(h);
                out.push('\n');
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let counter = rest
                .strip_suffix(" counter")
                .filter(|name| !name.ends_with("_total"));
            match (counter, help.take()) {
                (Some(name), h) => {
                    if let Some(h) = h {
                        let text = h.strip_prefix("# HELP ").unwrap_or(h);
                        let text = text.strip_prefix(name).unwrap_or(text);
                        out.push_str(&format!("# HELP {name}_total{text}\n"));
                    }
                    out.push_str(&format!("# TYPE {name}_total counter\n"));
                }
                (None, h) => {
                    if let Some(h) = h {
                        out.push_str(h);
                        out.push('\n');
                    }
                    out.push_str(line);
                    out.push('\n');
                }
            }
            continue;
        }
        if let Some(h) = help.take() {
            out.push_str(h);
            out.push('\n');
        }
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    if let Some(h) = help {
        out.push_str(h);
        out.push('\n');
    }
    out
}

async fn answer(mut stream: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(512);
    let request = tokio::time::timeout(REQUEST_TIMEOUT, async {
        let mut chunk = [0u8; 1024];
        loop {
            if let Some(r) = parse_request(&buf) {
                return Ok(r);
            }
            if buf.len() > MAX_REQUEST_BYTES {
                return Ok(Err(()));
            }
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    let text = "text/plain; charset=utf-8";
    let (status, content_type, body) = match request {
        Ok(r) if r.method == "GET" && (r.path == "/metrics" || r.path.starts_with("/metrics?")) => {
            if r.openmetrics {
                ("200 OK", OPENMETRICS, metrics.encode())
            } else {
                (
                    "200 OK",
                    PROMETHEUS_TEXT,
                    prometheus_text(&metrics.encode()),
                )
            }
        }
        Ok(r) if r.method == "GET" && r.path == "/" => (
            "200 OK",
            text,
            "Corral metrics are at /metrics\n".to_string(),
        ),
        Ok(r) if r.method != "GET" => ("405 Method Not Allowed", text, "only GET\n".to_string()),
        Ok(_) => (
            "404 Not Found",
            text,
            "not found: metrics are at /metrics\n".to_string(),
        ),
        Err(()) => ("400 Bad Request", text, "bad request\n".to_string()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

/// Buckets for durations from 1 ms to about 65 s (doubling), in seconds.
pub fn duration_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 17)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;

    #[test]
    fn requests_are_parsed_only_once_complete() {
        assert!(parse_request(b"GET /metrics HTTP/1.1\r\nHost: x\r\n").is_none());
        let plain = parse_request(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(
            plain,
            Some(Ok(Request {
                method: "GET".into(),
                path: "/metrics".into(),
                openmetrics: false
            }))
        );
        let om = parse_request(
            b"GET /metrics HTTP/1.1\r\nACCEPT: application/openmetrics-text;version=1.0.0,text/plain;q=0.5\r\n\r\n",
        );
        assert!(om.is_some_and(|r| r.is_ok_and(|r| r.openmetrics)));
        assert_eq!(parse_request(b"garbage\r\n\r\n"), Some(Err(())));
        assert_eq!(parse_request(b"GET / SPDY/3\r\n\r\n"), Some(Err(())));
        assert_eq!(parse_request(b"\xff\xfe\r\n\r\n"), Some(Err(())));
    }

    #[test]
    fn the_prometheus_text_names_counter_families_by_their_samples() {
        let om = "# HELP corral_x Things.\n# TYPE corral_x counter\ncorral_x_total 3\n\
                  # HELP corral_d_seconds Time.\n# TYPE corral_d_seconds histogram\n# UNIT corral_d_seconds seconds\n\
                  corral_d_seconds_sum 0.5\n# EOF\n";
        assert_eq!(
            prometheus_text(om),
            "# HELP corral_x_total Things.\n# TYPE corral_x_total counter\ncorral_x_total 3\n\
             # HELP corral_d_seconds Time.\n# TYPE corral_d_seconds histogram\n\
             corral_d_seconds_sum 0.5\n"
        );
    }

    #[tokio::test]
    async fn a_scrape_gets_the_encoded_registry_and_other_paths_do_not() {
        let mut reg = Metrics::registry();
        let c: Counter = Counter::default();
        reg.register("things", "Things seen", c.clone());
        c.inc_by(3);
        let metrics = Metrics::new(reg);
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(listener, metrics));
        let get = |path: &'static str, accept: &'static str| async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n{accept}\r\n").as_bytes())
                .await
                .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        let om = get("/metrics", "Accept: application/openmetrics-text\r\n").await;
        assert!(om.starts_with("HTTP/1.1 200 OK\r\n"), "{om}");
        assert!(
            om.contains("\r\n\r\n# HELP corral_things Things seen."),
            "{om}"
        );
        assert!(om.contains("\ncorral_things_total 3\n"), "{om}");
        assert!(om.ends_with("# EOF\n"), "{om}");
        let text = get("/metrics", "").await;
        assert!(text.contains("version=0.0.4"), "{text}");
        assert!(
            text.contains("\r\n\r\n# HELP corral_things_total Things seen."),
            "{text}"
        );
        assert!(text.ends_with("\ncorral_things_total 3\n"), "{text}");
        let missing = get("/nothing", "").await;
        assert!(missing.starts_with("HTTP/1.1 404 "), "{missing}");
        server.abort();
    }
}
