//! Finding the leading master and opening a stream to it.

use proto::{ClientFrame, ErrorCode, Role, ServerFrame};
use std::sync::Arc;
use std::time::Duration;
use transport::{FramedRecv, FramedSend, Identity, TransportError};

/// Where the masters are and who we are.
#[derive(Clone)]
pub struct ClientOptions {
    /// Master addresses, `host:port`. The client tries them in order and follows redirects to
    /// the leader.
    pub masters: Vec<String>,
    pub identity: Arc<Identity>,
    /// How long to keep trying to reach a leader before giving up.
    pub connect_timeout: Duration,
    pub max_frame_len: usize,
}

/// How long one QUIC handshake to a master may take before the next master is tried. A dead
/// master answers nothing (QUIC would wait for its idle timeout), so this bounds failover.
pub const CONNECT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a reachable master may take to answer the first request.
pub const FIRST_REPLY_TIMEOUT: Duration = Duration::from_secs(15);

impl ClientOptions {
    /// After losing `master`, try the others first: it is the one most likely down.
    pub fn try_last(&mut self, master: &str) {
        if let Some(i) = self.masters.iter().position(|m| m == master) {
            let m = self.masters.remove(i);
            self.masters.push(m);
        }
    }

    pub fn new(masters: Vec<String>, identity: Arc<Identity>) -> Self {
        ClientOptions {
            masters,
            identity,
            connect_timeout: Duration::from_secs(15),
            max_frame_len: proto::MAX_FRAME_LEN,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no master given: pass --master HOST:PORT or set CORRAL_MASTER")]
    NoMasters,
    #[error("could not reach a leading master at {tried} within {timeout:?}: {last}")]
    NoLeader {
        tried: String,
        timeout: Duration,
        last: String,
    },
    #[error("the master refused the request ({code:?}): {message}")]
    Refused { code: ErrorCode, message: String },
    #[error("the connection to the master closed")]
    Closed,
    #[error("unexpected reply from the master: {0}")]
    Unexpected(String),
    #[error(transparent)]
    Transport(#[from] TransportError),
}

/// An open stream to the leading master, after the first request frame was answered.
pub struct Session {
    /// Kept alive for as long as the stream is used.
    pub _endpoint: quinn::Endpoint,
    pub connection: quinn::Connection,
    pub send: FramedSend<ClientFrame>,
    pub recv: FramedRecv<ServerFrame>,
    /// The master address that answered.
    pub master: String,
}

/// How many redirects to follow before concluding the masters disagree about the leader.
const MAX_REDIRECTS: usize = 8;

/// Opens a stream to the leader, sends `first`, and returns the session with the master's
/// first answer. Follows `NotLeader` redirects and retries with backoff until
/// `opts.connect_timeout` passes.
pub async fn open_session(
    opts: &ClientOptions,
    first: &ClientFrame,
) -> Result<(Session, ServerFrame), ClientError> {
    if opts.masters.is_empty() {
        return Err(ClientError::NoMasters);
    }
    let deadline = tokio::time::Instant::now() + opts.connect_timeout;
    let mut backoff = Duration::from_millis(100);
    let mut last_error = String::from("no attempt made");
    loop {
        let mut candidates: Vec<String> = opts.masters.clone();
        let mut redirects = 0;
        while let Some(addr) = candidates.first().cloned() {
            candidates.remove(0);
            match try_master(opts, &addr, first).await {
                Ok((session, ServerFrame::NotLeader { leader })) => {
                    drop(session);
                    last_error = format!("{addr} is not the leader");
                    if let Some(leader) = leader {
                        if redirects < MAX_REDIRECTS && leader != addr {
                            redirects += 1;
                            candidates.insert(0, leader);
                        }
                    }
                }
                Ok((_, ServerFrame::Error(e))) => {
                    if e.code == ErrorCode::Unavailable {
                        last_error = format!("{addr}: {}", e.message);
                        continue;
                    }
                    return Err(ClientError::Refused {
                        code: e.code,
                        message: e.message,
                    });
                }
                Ok(ok) => return Ok(ok),
                Err(e) => {
                    // Certificate problems will not go away by retrying.
                    if is_permanent(&e) {
                        return Err(e);
                    }
                    tracing::debug!(master = %addr, error = %e, "master not reachable");
                    last_error = format!("{addr}: {e}");
                }
            }
        }
        if tokio::time::Instant::now() + backoff > deadline {
            return Err(ClientError::NoLeader {
                tried: opts.masters.join(","),
                timeout: opts.connect_timeout,
                last: last_error,
            });
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

fn is_permanent(e: &ClientError) -> bool {
    match e {
        ClientError::Refused { .. } => true,
        ClientError::Transport(t) => t.is_certificate_refused(),
        _ => false,
    }
}

async fn try_master(
    opts: &ClientOptions,
    addr: &str,
    first: &ClientFrame,
) -> Result<(Session, ServerFrame), ClientError> {
    let sock = transport::resolve(addr).await?;
    let endpoint = transport::client_endpoint_for(sock, &opts.identity)?;
    let connection = tokio::time::timeout(
        CONNECT_ATTEMPT_TIMEOUT,
        transport::connect(&endpoint, sock, Role::Master, None),
    )
    .await
    .map_err(|_| ClientError::Transport(TransportError::TimedOut { addr: sock }))??;
    let (mut send, mut recv) =
        transport::open_framed::<ClientFrame, ServerFrame>(&connection, opts.max_frame_len).await?;
    send.send(first).await?;
    let reply = tokio::time::timeout(FIRST_REPLY_TIMEOUT, recv.recv())
        .await
        .map_err(|_| ClientError::Transport(TransportError::TimedOut { addr: sock }))??
        .ok_or(ClientError::Closed)?;
    Ok((
        Session {
            _endpoint: endpoint,
            connection,
            send,
            recv,
            master: addr.to_owned(),
        },
        reply,
    ))
}
