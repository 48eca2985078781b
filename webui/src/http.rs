//! The UI's HTTP routes: the embedded page, the state, the event stream as server-sent events,
//! and a task's output.

use bytes::Bytes;
use framework::{ClientOptions, EventStream, ReadRetry, StreamItem};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, HOST};
use hyper::{Method, Request, Response, StatusCode};
use mesos_gateway::serve::{Body, ChannelBody};
use proto::{EventCursor, LogStream, OperatorCall, OperatorReply, TaskId};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Semaphore};

/// Event streams relayed at once (each is one subscription at the master).
pub const MAX_EVENT_STREAMS: usize = 16;
/// Bytes of a task's output one request returns at most (the start of it).
pub const MAX_OUTPUT: usize = 256 << 10;
/// Server-sent event messages queued for one browser.
const SSE_QUEUE: usize = 64;
/// A comment line this often keeps idle event streams (and proxies) alive.
const SSE_KEEPALIVE: Duration = Duration::from_secs(15);

const INDEX_HTML: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const STYLE_CSS: &str = include_str!("../assets/style.css");

pub struct Shared {
    operator: ClientOptions,
    pub local: SocketAddr,
    streams: Arc<Semaphore>,
}

impl Shared {
    pub fn new(operator: ClientOptions, local: SocketAddr) -> Shared {
        Shared {
            operator,
            local,
            streams: Arc::new(Semaphore::new(MAX_EVENT_STREAMS)),
        }
    }
}

/// Whether `Host` names the server at `local` by a loopback name (not a DNS-rebound foreign
/// name).
fn host_allowed(local: SocketAddr, host: Option<&str>) -> bool {
    let Some(host) = host else {
        return false;
    };
    let port = local.port();
    ["127.0.0.1", "localhost", "[::1]"]
        .iter()
        .any(|name| host == format!("{name}:{port}") || (port == 80 && host == *name))
}

pub async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let host = req.headers().get(HOST).and_then(|h| h.to_str().ok());
    if !host_allowed(shared.local, host) {
        return Ok(text(
            403,
            "the Host header does not name this loopback server",
        ));
    }
    if req.method() != Method::GET {
        return Ok(text(405, "the UI answers GET only"));
    }
    let resp = match req.uri().path() {
        "/" | "/index.html" => asset(INDEX_HTML, "text/html; charset=utf-8"),
        "/app.js" => asset(APP_JS, "text/javascript; charset=utf-8"),
        "/style.css" => asset(STYLE_CSS, "text/css; charset=utf-8"),
        "/api/state" => state(&shared).await,
        "/api/events" => {
            let last = req
                .headers()
                .get("last-event-id")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<EventCursor>().ok());
            events(&shared, last)
        }
        "/api/output" => output(&shared, req.uri().query().unwrap_or("")).await,
        other => text(404, &format!("no page {other}")),
    };
    Ok(resp)
}

async fn state(shared: &Shared) -> Response<Body> {
    match framework::operator_call(&shared.operator, OperatorCall::GetState).await {
        Ok(OperatorReply::State(s)) => match serde_json::to_vec(&*s) {
            Ok(body) => with_type(200, body.into(), "application/json"),
            Err(e) => text(500, &format!("cannot encode the state: {e}")),
        },
        Ok(other) => text(502, &format!("unexpected answer to GetState: {other:?}")),
        Err(e) => text(503, &format!("cannot read the cluster state: {e}")),
    }
}

/// One server-sent event message.
fn sse(event: Option<&str>, id: Option<EventCursor>, data: &serde_json::Value) -> Bytes {
    let mut m = String::new();
    if let Some(e) = event {
        m.push_str(&format!("event: {e}\n"));
    }
    if let Some(id) = id {
        m.push_str(&format!("id: {id}\n"));
    }
    m.push_str(&format!("data: {data}\n\n"));
    Bytes::from(m)
}

/// The event stream, relayed from the masters; `after` from the browser's `Last-Event-ID`.
fn events(shared: &Shared, after: Option<EventCursor>) -> Response<Body> {
    let Ok(slot) = shared.streams.clone().try_acquire_owned() else {
        return text(
            503,
            &format!("this UI relays {MAX_EVENT_STREAMS} event streams already"),
        );
    };
    let (tx, rx) = mpsc::channel(SSE_QUEUE);
    let mut upstream = EventStream::new(shared.operator.clone(), after);
    tokio::spawn(async move {
        let _slot = slot;
        loop {
            let item = tokio::select! {
                item = upstream.next() => item,
                _ = tokio::time::sleep(SSE_KEEPALIVE) => {
                    if tx.send(Bytes::from_static(b": keep-alive\n\n")).await.is_err() {
                        return;
                    }
                    continue;
                }
            };
            let message = match item {
                Ok(StreamItem::Subscribed(s)) => sse(
                    Some("subscribed"),
                    Some(s.cursor),
                    &crate::json::subscribed(&s),
                ),
                Ok(StreamItem::Resumed { master, after }) => sse(
                    Some("resumed"),
                    None,
                    &crate::json::resumed(&master, &after),
                ),
                Ok(StreamItem::Event(e)) => {
                    upstream.acknowledge(e.cursor);
                    sse(None, Some(e.cursor), &crate::json::stamped(&e))
                }
                Err(e) => {
                    // The browser reconnects by itself (from its last event id).
                    let _ = tx
                        .send(sse(Some("failed"), None, &serde_json::json!(e.to_string())))
                        .await;
                    return;
                }
            };
            if tx.send(message).await.is_err() {
                return;
            }
        }
    });
    let mut r = Response::new(ChannelBody(rx).boxed());
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// `task=ID&stream=stdout|stderr`: the start of a task's output, as `corral logs` reads it.
async fn output(shared: &Shared, query: &str) -> Response<Body> {
    let mut task = None;
    let mut stream = LogStream::Stdout;
    for (k, v) in query.split('&').filter_map(|kv| kv.split_once('=')) {
        match (k, percent_decode(v).as_deref()) {
            ("task", Some(t)) if !t.is_empty() => task = Some(TaskId::new(t)),
            ("stream", Some("stderr")) => stream = LogStream::Stderr,
            ("stream", Some("stdout")) => stream = LogStream::Stdout,
            _ => return text(400, &format!("bad query parameter {k}")),
        }
    }
    let Some(task) = task else {
        return text(400, "missing task=ID");
    };
    let mut data = Vec::new();
    let retry = ReadRetry {
        deadline: Duration::from_secs(10),
        attempts: 3,
    };
    let read = framework::read_output(&shared.operator, &task, stream, retry, |chunk| {
        let room = MAX_OUTPUT - data.len();
        data.extend_from_slice(&chunk[..chunk.len().min(room)]);
        data.len() < MAX_OUTPUT
    })
    .await;
    match read {
        Ok(_) => with_type(200, data.into(), "text/plain; charset=utf-8"),
        Err(e) => text(502, &e.to_string()),
    }
}

/// `%XX` and `+` decoded; `None` if malformed or not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'%' => {
                let hex = [bytes.next()?, bytes.next()?];
                out.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
    }
    String::from_utf8(out).ok()
}

fn with_type(code: u16, body: Bytes, content_type: &'static str) -> Response<Body> {
    let mut r = Response::new(Full::new(body).boxed());
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn asset(body: &'static str, content_type: &'static str) -> Response<Body> {
    with_type(200, Bytes::from_static(body.as_bytes()), content_type)
}

fn text(code: u16, message: &str) -> Response<Body> {
    with_type(
        code,
        Bytes::from(message.to_owned()),
        "text/plain; charset=utf-8",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Fb+c").as_deref(), Some("a/b c"));
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%4"), None);
    }

    #[test]
    fn only_loopback_host_names_of_this_port_are_served() {
        let local: SocketAddr = "127.0.0.1:8123".parse().expect("addr");
        let ok = |h: &str| host_allowed(local, Some(h));
        assert!(ok("127.0.0.1:8123") && ok("localhost:8123") && ok("[::1]:8123"));
        assert!(!ok("evil.example:8123") && !ok("127.0.0.1:9999") && !ok("localhost"));
        assert!(!host_allowed(local, None));
    }
}
