//! Finding the leading master and opening a stream to it ([`open_session`]).

use crate::{Backoff, MasterLinks};
use proto::{ClientFrame, ErrorCode, ServerFrame};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use transport::{Connection, FramedRecv, FramedSend, Identity, TransportError};

/// Where the masters are and who we are.
#[derive(Clone)]
pub struct ClientOptions {
    /// Master addresses, `host:port`. The client dials them all at once and follows redirects
    /// to the leader.
    pub masters: Vec<String>,
    pub identity: Arc<Identity>,
    /// How long to keep trying to reach a leader before giving up.
    pub connect_timeout: Duration,
    pub max_frame_len: usize,
    /// The connections to the masters, shared by every session made from these options and
    /// their clones (see [`MasterLinks`]).
    pub links: MasterLinks,
    /// The master another master named as the new leader ([`ClientOptions::prefer`]): asked
    /// alone first, the others only if it does not take the session. `None`: all at once.
    pub preferred: Option<String>,
}

/// How long a preferred master (one a leader watch named) has to take a session before the
/// other masters are asked too. A re-registering fleet then costs the masters that do not lead
/// nothing, and the dead one no stream waiting for an answer that never comes.
pub const PREFERRED_GRACE: Duration = Duration::from_secs(2);

/// How long one QUIC handshake to a master may take before it is retried. A dead master answers
/// nothing; the other masters are dialled at the same time, so this matters only when a
/// follower's redirect names the dead master (before an election has replaced it).
pub const CONNECT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a reachable master may take to answer the first request.
pub const FIRST_REPLY_TIMEOUT: Duration = Duration::from_secs(15);

impl ClientOptions {
    /// After losing `master`, list it last: it is the one most likely down. (Every master is
    /// dialled at once; the order only breaks ties.)
    pub fn try_last(&mut self, master: &str) {
        if let Some(i) = self.masters.iter().position(|m| m == master) {
            let m = self.masters.remove(i);
            self.masters.push(m);
        }
    }

    /// Ask `leader` first (another master said it was elected): the others are asked only if
    /// it answers otherwise or not within [`PREFERRED_GRACE`].
    pub fn prefer(&mut self, leader: &str) {
        self.preferred = Some(leader.to_owned());
    }

    pub fn new(masters: Vec<String>, identity: Arc<Identity>) -> Self {
        ClientOptions {
            masters,
            identity,
            connect_timeout: Duration::from_secs(15),
            max_frame_len: proto::MAX_FRAME_LEN,
            links: MasterLinks::default(),
            preferred: None,
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
    #[error("the master at {master} refused the request ({code:?}): {message}")]
    Refused {
        master: String,
        code: ErrorCode,
        message: String,
    },
    #[error("the connection to the master closed")]
    Closed,
    #[error("unexpected reply from the master: {0}")]
    Unexpected(String),
    #[error(transparent)]
    Transport(#[from] TransportError),
}

/// An open stream to the leading master, after the first request frame was answered.
pub struct Session {
    /// The connection the stream is on (it keeps its endpoint open).
    pub connection: Connection,
    pub send: FramedSend<ClientFrame>,
    pub recv: FramedRecv<ServerFrame>,
    /// The master address that answered.
    pub master: String,
}

impl Session {
    /// Ends this session's stream, and only it: the connection is shared with the client's
    /// other sessions and leader watches (`MasterLinks`), so closing it would end theirs too.
    /// The master sees the stream end at once; the connection stays for the next call.
    pub async fn finish(self) {
        let _ = self.send.finish().await;
    }
}

/// How many redirects to masters outside `opts.masters` to follow before concluding the
/// masters disagree about the leader.
const MAX_REDIRECTS: usize = 8;
/// The first retry of a master that answered "not the leader" (or could not be reached); it
/// doubles per master up to [`MAX_RETRY_BACKOFF`], each wait jittered by ±25% so a fleet of
/// clients does not poll in lockstep. Short, because during a failover a follower becomes the
/// leader about a second after the old one died and the time until the next retry after that
/// is failover time; a retry on an open connection is one stream and one small answer.
const FIRST_RETRY_BACKOFF: Duration = Duration::from_millis(100);
const MAX_RETRY_BACKOFF: Duration = Duration::from_millis(500);

/// What one attempt at one master gave back.
type Attempt = (String, Result<(Session, ServerFrame), ClientError>);

/// Opens a stream to the leader, sends `first`, and returns the session with the master's
/// first answer. Retries until `opts.connect_timeout` passes.
///
/// Every master is dialled at once (a dead one costs nothing while another answers); followers
/// answer `NotLeader`, whose hint is dialled at once unless an attempt at it is under way or it
/// answered less than `FIRST_RETRY_BACKOFF` ago. The first master to answer otherwise wins and
/// the other attempts are dropped. A master that said "not the leader" or could not be reached
/// is retried after its own backoff (`FIRST_RETRY_BACKOFF` doubling to `MAX_RETRY_BACKOFF`).
/// Every attempt goes over the client's open connection to that master when it has one
/// (`opts.links`), so a retry, or a move to a new leader, is one stream, not a new handshake.
///
/// Sending `first` to every master is safe: only the leader acts on a request, and a deposed
/// leader that still believes it leads commits nothing (what it does without a commit, such as
/// forwarding a kill, is what the request asked anyway), and its session is dropped.
pub async fn open_session(
    opts: &ClientOptions,
    first: &ClientFrame,
) -> Result<(Session, ServerFrame), ClientError> {
    if opts.masters.is_empty() {
        return Err(ClientError::NoMasters);
    }
    let deadline = tokio::time::Instant::now() + opts.connect_timeout;
    let mut last_error = String::from("no attempt made");
    let mut attempts: tokio::task::JoinSet<Attempt> = tokio::task::JoinSet::new();
    // Masters with an attempt under way.
    let mut in_flight: HashSet<String> = HashSet::new();
    // Masters waiting for their retry, with when; and each master's next backoff.
    let mut retry_at: HashMap<String, tokio::time::Instant> = HashMap::new();
    let mut backoff: HashMap<String, Backoff> = HashMap::new();
    // When each master last answered (or failed).
    let mut answered_at: HashMap<String, tokio::time::Instant> = HashMap::new();
    let mut redirects = 0;
    let start = |attempts: &mut tokio::task::JoinSet<Attempt>,
                 in_flight: &mut HashSet<String>,
                 addr: String| {
        in_flight.insert(addr.clone());
        let opts = opts.clone();
        let first = first.clone();
        attempts.spawn(async move {
            let r = try_master(&opts, &addr, &first).await;
            (addr, r)
        });
    };
    match &opts.preferred {
        // The preferred master alone; the others after its grace (sooner if it says no).
        Some(first) => {
            start(&mut attempts, &mut in_flight, first.clone());
            let later = tokio::time::Instant::now() + PREFERRED_GRACE;
            for addr in opts.masters.iter().filter(|a| *a != first) {
                retry_at.insert(addr.clone(), later);
            }
        }
        None => {
            for addr in &opts.masters {
                if !in_flight.contains(addr) {
                    start(&mut attempts, &mut in_flight, addr.clone());
                }
            }
        }
    }
    loop {
        let next_retry = retry_at.values().min().copied();
        let wake = next_retry.map_or(deadline, |t| t.min(deadline));
        let done = tokio::select! {
            done = attempts.join_next(), if !attempts.is_empty() => done,
            _ = tokio::time::sleep_until(wake) => None,
        };
        if let Some(done) = done {
            let (addr, result) = match done {
                Ok(attempt) => attempt,
                // An attempt panicked or was cancelled: nothing to learn from it.
                Err(e) => {
                    last_error = format!("an attempt failed: {e}");
                    continue;
                }
            };
            in_flight.remove(&addr);
            let now = tokio::time::Instant::now();
            answered_at.insert(addr.clone(), now);
            if opts.preferred.as_ref() == Some(&addr) && !is_session(&result) {
                // The preferred master did not take it: ask the others now.
                for t in retry_at.values_mut() {
                    *t = (*t).min(now);
                }
            }
            match result {
                Ok((_, ServerFrame::NotLeader { leader })) => {
                    last_error = format!("{addr} is not the leader");
                    if let Some(leader) = leader.filter(|l| *l != addr && !in_flight.contains(l)) {
                        let known = opts.masters.contains(&leader);
                        if known || redirects < MAX_REDIRECTS {
                            redirects += usize::from(!known);
                            // Try it now, but not sooner than the first backoff after its own
                            // last answer: two masters naming each other make no tight loop.
                            let now = tokio::time::Instant::now();
                            let at = answered_at
                                .get(&leader)
                                .map_or(now, |t| (*t + FIRST_RETRY_BACKOFF).max(now));
                            let slot = retry_at.entry(leader).or_insert(at);
                            *slot = (*slot).min(at);
                        }
                    }
                }
                Ok((_, ServerFrame::Error(e))) if e.code == ErrorCode::Unavailable => {
                    last_error = format!("{addr}: {}", e.message);
                }
                Ok((_, ServerFrame::Error(e))) => {
                    return Err(ClientError::Refused {
                        master: addr,
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
            if !in_flight.contains(&addr) {
                let wait = backoff
                    .entry(addr.clone())
                    .or_insert_with(|| Backoff::new(FIRST_RETRY_BACKOFF, MAX_RETRY_BACKOFF))
                    .next_wait();
                retry_at.insert(addr, tokio::time::Instant::now() + wait);
            }
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            if answered_at.is_empty() && !in_flight.is_empty() {
                let mut waiting: Vec<&str> = in_flight.iter().map(String::as_str).collect();
                waiting.sort_unstable();
                last_error = format!("no answer yet from {}", waiting.join(", "));
            }
            return Err(ClientError::NoLeader {
                tried: opts.masters.join(","),
                timeout: opts.connect_timeout,
                last: last_error,
            });
        }
        let due: Vec<String> = retry_at
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(a, _)| a.clone())
            .collect();
        for addr in due {
            retry_at.remove(&addr);
            start(&mut attempts, &mut in_flight, addr);
        }
    }
}

/// Opens a session again after the one with master `lost` ended: the same request `first` (a
/// framework's `Subscribe` with its id, an agent's `Register` with its tasks), with `lost`
/// listed last and `timeout` as the connect timeout (a framework's failover timeout).
pub async fn reopen(
    opts: &ClientOptions,
    lost: &str,
    timeout: Duration,
    first: &ClientFrame,
) -> Result<(Session, ServerFrame), ClientError> {
    let mut opts = opts.clone();
    opts.connect_timeout = timeout;
    opts.try_last(lost);
    open_session(&opts, first).await
}

/// Whether an attempt's answer ends the search (a session, or a refusal to report).
fn is_session(result: &Result<(Session, ServerFrame), ClientError>) -> bool {
    match result {
        Ok((_, ServerFrame::NotLeader { .. })) => false,
        Ok((_, ServerFrame::Error(e))) => e.code != ErrorCode::Unavailable,
        Ok(_) => true,
        Err(e) => is_permanent(e),
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
    let connection = opts.links.connect(addr, &opts.identity).await?;
    let exchange = async {
        let (mut send, mut recv) =
            transport::open_framed::<ClientFrame, ServerFrame>(&connection, opts.max_frame_len)
                .await?;
        send.send(first).await?;
        let timed_out = TransportError::TimedOut {
            addr: connection.remote_address(),
        };
        let reply = tokio::time::timeout(FIRST_REPLY_TIMEOUT, recv.recv())
            .await
            .map_err(|_| ClientError::Transport(timed_out))??
            .ok_or(ClientError::Closed)?;
        Ok::<_, ClientError>((send, recv, reply))
    };
    match exchange.await {
        Ok((send, recv, reply)) => Ok((
            Session {
                connection,
                send,
                recv,
                master: addr.to_owned(),
            },
            reply,
        )),
        Err(e) => {
            // A connection that failed or did not answer is not used again; a stream refused
            // on a healthy one (an old master's "malformed frame") leaves it open.
            if connection.is_closed()
                || matches!(e, ClientError::Transport(TransportError::TimedOut { .. }))
            {
                opts.links.forget(addr, &connection);
            }
            Err(e)
        }
    }
}
