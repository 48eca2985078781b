//! The HTTP/1.1 plumbing the gateway shares with `corral ui` (the `webui` crate): the accept
//! loop with its connection limit and header timeout, and a response body fed chunk by chunk
//! from a bounded channel (the Mesos event stream's RecordIO, the UI's server-sent events).

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use transport::TcpTlsAcceptor;

/// A response body of either kind: whole, or streamed through a [`ChannelBody`].
pub type Body = BoxBody<Bytes, Infallible>;

/// Serves HTTP/1.1 (over TLS with `tls`) on `listener` with `handle` until `shutdown` resolves:
/// at most `max_connections` at once (more wait in the listen backlog), each finishing its TLS
/// handshake and sending its request headers within `header_read_timeout`. Open connections
/// end with it.
pub async fn serve_http1<H, F>(
    listener: &TcpListener,
    tls: Option<TcpTlsAcceptor>,
    max_connections: usize,
    header_read_timeout: Duration,
    handle: H,
    shutdown: impl Future<Output = ()>,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + 'static,
    F: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    let limit = Arc::new(tokio::sync::Semaphore::new(max_connections));
    let mut conns = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and the like: wait a little instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        while conns.try_join_next().is_some() {}
        let handle = handle.clone();
        let tls = tls.clone();
        conns.spawn(async move {
            let _permit = permit;
            match tls {
                None => serve_connection(stream, peer, header_read_timeout, handle).await,
                Some(tls) => {
                    match tokio::time::timeout(header_read_timeout, tls.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            serve_connection(stream, peer, header_read_timeout, handle).await
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
    conns.shutdown().await;
}

/// Serves HTTP/1.1 on one connection (plain or TLS) until it closes.
async fn serve_connection<H, F>(
    stream: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    peer: SocketAddr,
    header_read_timeout: Duration,
    handle: H,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + 'static,
    F: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .serve_connection(TokioIo::new(stream), hyper::service::service_fn(handle));
    if let Err(e) = conn.await {
        tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
    }
}

/// A streamed response body: one chunk per message received, ending when the sender is
/// dropped.
pub struct ChannelBody(pub mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|r| r.map(|b| Ok(Frame::data(b))))
    }
}
