//! Typed message streams: one bidirectional QUIC stream carries frames of [`proto::codec`] each
//! way.

use crate::conn::Connection;
use crate::error::{connection_error, read_error, write_error, TransportError};
use proto::codec::{decode_body, encode, frame_len};
use proto::FRAME_HEADER_LEN;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::marker::PhantomData;
use std::sync::Arc;

/// Application error code sent with STOP_SENDING when we refuse the rest of a stream because a
/// frame header announced more than the maximum frame length.
pub const STOP_FRAME_TOO_LARGE: u32 = 1;
/// Body bytes reserved up front for a frame; the rest grows as bytes arrive, so a header that
/// announces a large frame costs memory only when the peer actually sends it.
const INITIAL_BODY_CAPACITY: usize = 64 << 10;
/// A send buffer larger than this is dropped after its frame went out.
const RETAINED_SEND_BUFFER: usize = 4 << 10;

/// The sending half of a framed stream.
pub struct FramedSend<T> {
    send: quinn::SendStream,
    max_frame_len: usize,
    buf: Vec<u8>,
    peer: Arc<str>,
    _msg: PhantomData<fn(&T)>,
}

/// The receiving half of a framed stream.
pub struct FramedRecv<T> {
    recv: quinn::RecvStream,
    max_frame_len: usize,
    peer: Arc<str>,
    state: RecvState,
    /// Budgets a frame larger than [`INITIAL_BODY_CAPACITY`] takes its length from, in order,
    /// while its body is buffered.
    budgets: Vec<RecvBudget>,
    /// The frame being read, kept here rather than in `recv`'s future so that `recv` is
    /// cancel-safe: callers wait on it in `select!` beside other events, and a frame that
    /// arrives in several packets must not lose the bytes read before a cancellation. Boxed:
    /// stream halves are held in many places, and this is the rare, large part.
    partial: Box<Partial>,
    _msg: PhantomData<fn() -> T>,
}

/// What has been read of the current frame.
#[derive(Default)]
struct Partial {
    header: [u8; FRAME_HEADER_LEN],
    header_got: usize,
    /// The body's length once the header is complete, and the body read so far.
    body: Option<(usize, Vec<u8>)>,
    /// Budget permits held for a large body (see [`FramedRecv::with_budget`]).
    permits: Vec<Option<tokio::sync::OwnedSemaphorePermit>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RecvState {
    Open,
    /// The peer finished the stream cleanly; `recv` keeps answering `Ok(None)`.
    Ended,
    /// Framing was lost (oversized header, truncated frame, stream error); `recv` keeps failing.
    Failed,
}

impl<T> std::fmt::Debug for FramedSend<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FramedSend")
            .field("stream", &self.send.id())
            .field("peer", &self.peer)
            .finish()
    }
}

impl<T> std::fmt::Debug for FramedRecv<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FramedRecv")
            .field("stream", &self.recv.id())
            .field("peer", &self.peer)
            .field("state", &self.state)
            .finish()
    }
}

impl<T: Serialize> FramedSend<T> {
    /// Sends one message as one frame. Fails if the message encodes to more than the maximum
    /// frame length (nothing is sent then), or if the stream or connection is gone.
    pub async fn send(&mut self, msg: &T) -> Result<(), TransportError> {
        self.buf.clear();
        encode(msg, self.max_frame_len, &mut self.buf).map_err(|source| {
            TransportError::Encode {
                peer: self.peer.to_string(),
                source,
            }
        })?;
        let res = self.send.write_all(&self.buf).await;
        // Keep no more than a small frame's buffer: a session lives as long as its agent, and
        // thousands of sessions each holding what their largest message needed add up.
        if self.buf.capacity() > RETAINED_SEND_BUFFER {
            self.buf = Vec::new();
        }
        res.map_err(|e| write_error(&self.peer, e))
    }
}

impl<T> FramedSend<T> {
    /// Ends the stream cleanly: the peer's `recv` answers `Ok(None)` after the last message.
    /// Does not wait for delivery: quinn keeps sending while the connection lives (see
    /// [`FramedSend::finish_and_wait`] before closing the connection).
    pub async fn finish(mut self) -> Result<(), TransportError> {
        self.send
            .finish()
            .map_err(|_| TransportError::StreamClosed {
                peer: self.peer.to_string(),
            })
    }

    /// Ends the stream and waits until the peer's QUIC stack has acknowledged every byte (or
    /// refused the stream). Use it before closing a connection right after the last message.
    pub async fn finish_and_wait(mut self) -> Result<(), TransportError> {
        self.send
            .finish()
            .map_err(|_| TransportError::StreamClosed {
                peer: self.peer.to_string(),
            })?;
        match self.send.stopped().await {
            Ok(None) => Ok(()),
            Ok(Some(code)) => Err(TransportError::StreamStopped {
                peer: self.peer.to_string(),
                code: code.into_inner(),
            }),
            Err(quinn::StoppedError::ConnectionLost(e)) => Err(connection_error(&self.peer, e)),
            Err(quinn::StoppedError::ZeroRttRejected) => Err(TransportError::StreamClosed {
                peer: self.peer.to_string(),
            }),
        }
    }

    /// Abandons the stream: unsent data is discarded and the peer's `recv` fails with
    /// [`TransportError::StreamReset`] carrying `code`.
    pub fn reset(mut self, code: u32) {
        let _ = self.send.reset(code.into());
    }

    /// The QUIC stream id (for logs).
    pub fn id(&self) -> u64 {
        self.send.id().into()
    }
}

impl<T: DeserializeOwned> FramedRecv<T> {
    /// The next message, or `Ok(None)` on a clean end of stream. A frame larger than the
    /// maximum frame length is refused from its header, never buffered: the error is
    /// [`TransportError::Decode`] with [`proto::DecodeError::FrameTooLarge`], and we stop the
    /// stream. A stream that ends mid-frame is [`TransportError::Truncated`]. After either,
    /// further calls fail. A complete frame whose body does not decode is
    /// [`TransportError::Decode`] with [`proto::DecodeError::Malformed`]; framing is intact, so
    /// the caller may go on reading. Nothing here panics on peer input, and the connection and
    /// its other streams are unaffected by a bad stream.
    pub async fn recv(&mut self) -> Result<Option<T>, TransportError> {
        match self.state {
            RecvState::Open => {}
            RecvState::Ended => return Ok(None),
            RecvState::Failed => {
                return Err(TransportError::StreamClosed {
                    peer: self.peer.to_string(),
                })
            }
        }
        let res = self.recv_frame().await;
        match &res {
            Ok(None) => self.state = RecvState::Ended,
            Ok(Some(_)) | Err(TransportError::Decode { .. }) => {}
            Err(_) => self.state = RecvState::Failed,
        }
        let body = res?;
        let Some(body) = body else { return Ok(None) };
        decode_body(&body)
            .map(Some)
            .map_err(|source| TransportError::Decode {
                peer: self.peer.to_string(),
                source,
            })
    }

    /// Reads one frame's body. Cancel-safe: progress is kept in `self.partial` (quinn's reads
    /// consume data only when they complete).
    async fn recv_frame(&mut self) -> Result<Option<Vec<u8>>, TransportError> {
        while self.partial.header_got < FRAME_HEADER_LEN {
            let got = self.partial.header_got;
            match self.recv.read(&mut self.partial.header[got..]).await {
                Ok(Some(n)) => self.partial.header_got += n,
                Ok(None) if got == 0 => return Ok(None),
                Ok(None) => {
                    return Err(TransportError::Truncated {
                        peer: self.peer.to_string(),
                        got,
                        want: FRAME_HEADER_LEN,
                    })
                }
                Err(e) => return Err(read_error(&self.peer, e)),
            }
        }
        if self.partial.body.is_none() {
            let len = match frame_len(self.partial.header, self.max_frame_len) {
                Ok(len) => len,
                Err(source) => {
                    // Framing is lost; tell the peer we will not read the rest.
                    let _ = self.recv.stop(STOP_FRAME_TOO_LARGE.into());
                    self.state = RecvState::Failed;
                    return Err(TransportError::Decode {
                        peer: self.peer.to_string(),
                        source,
                    });
                }
            };
            self.partial.body = Some((len, Vec::with_capacity(len.min(INITIAL_BODY_CAPACITY))));
        }
        let len = self.partial.body.as_ref().map_or(0, |(len, _)| *len);
        // A large body is buffered only within the budgets (a peer announcing large frames
        // on many streams and never completing them would otherwise hold max_frame_len per
        // stream); until they have room, we do not read and QUIC flow control holds the peer.
        if len > INITIAL_BODY_CAPACITY {
            while self.partial.permits.len() < self.budgets.len() {
                let budget = &self.budgets[self.partial.permits.len()];
                let permit = budget.take(len).await;
                self.partial.permits.push(permit);
            }
        }
        while let Some((len, body)) = self.partial.body.as_mut() {
            if body.len() >= *len {
                break;
            }
            match self.recv.read_chunk(*len - body.len(), true).await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk.bytes),
                Ok(None) => {
                    return Err(TransportError::Truncated {
                        peer: self.peer.to_string(),
                        got: FRAME_HEADER_LEN + body.len(),
                        want: FRAME_HEADER_LEN + *len,
                    })
                }
                Err(e) => return Err(read_error(&self.peer, e)),
            }
        }
        let partial = std::mem::take(&mut *self.partial);
        Ok(partial.body.map(|(_, body)| body))
    }
}

impl<T> FramedRecv<T> {
    /// Buffers frame bodies larger than 64 KiB only within `budget` (shared with other streams,
    /// e.g. those of one connection, or of a whole server). Several budgets are taken in the
    /// order they were added. Smaller frames need no budget: QUIC's stream limit bounds them.
    pub fn with_budget(mut self, budget: RecvBudget) -> Self {
        self.budgets.push(budget);
        self
    }

    /// The QUIC stream id (for logs).
    pub fn id(&self) -> u64 {
        self.recv.id().into()
    }
}

/// Wraps the two halves of a bidirectional stream. Error messages call the other side "the
/// peer"; [`open_framed`] and [`accept_framed`] name it from the connection instead. Only with
/// the `quinn-internals` feature (this crate's tests frame raw streams).
#[cfg_attr(not(feature = "quinn-internals"), allow(dead_code))]
pub fn framed<S, R>(
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    max_frame_len: usize,
) -> (FramedSend<S>, FramedRecv<R>) {
    framed_named(send, recv, max_frame_len, Arc::from("the peer"))
}

fn framed_named<S, R>(
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    max_frame_len: usize,
    peer: Arc<str>,
) -> (FramedSend<S>, FramedRecv<R>) {
    (
        FramedSend {
            send,
            max_frame_len,
            buf: Vec::new(),
            peer: peer.clone(),
            _msg: PhantomData,
        },
        FramedRecv {
            recv,
            max_frame_len,
            peer,
            state: RecvState::Open,
            budgets: Vec::new(),
            partial: Box::default(),
            _msg: PhantomData,
        },
    )
}

/// Opens a bidirectional stream on `conn` and frames it. The peer sees the stream only once we
/// send on it. If the server refused our certificate this (or the first `recv`) fails with
/// [`TransportError::CertificateRefused`].
pub async fn open_framed<S, R>(
    conn: &Connection,
    max_frame_len: usize,
) -> Result<(FramedSend<S>, FramedRecv<R>), TransportError> {
    let peer = conn.peer_name();
    let (send, recv) = conn
        .quinn_conn()
        .open_bi()
        .await
        .map_err(|e| connection_error(&peer, e))?;
    Ok(framed_named(send, recv, max_frame_len, peer))
}

/// Accepts the next bidirectional stream the peer opens on `conn` and frames it. Fails when
/// the connection ends (a peer's clean close is [`TransportError::ConnectionLost`] with its
/// reason).
pub async fn accept_framed<S, R>(
    conn: &Connection,
    max_frame_len: usize,
) -> Result<(FramedSend<S>, FramedRecv<R>), TransportError> {
    let peer = conn.peer_name();
    let (send, recv) = conn
        .quinn_conn()
        .accept_bi()
        .await
        .map_err(|e| connection_error(&peer, e))?;
    Ok(framed_named(send, recv, max_frame_len, peer))
}

/// Bytes that partly received frames of a group of streams may hold at once (see
/// [`FramedRecv::with_budget`]). A frame takes its length (at most the whole budget) from the
/// moment its header arrives until its body is complete or the stream fails.
#[derive(Clone, Debug)]
pub struct RecvBudget {
    bytes: Arc<tokio::sync::Semaphore>,
    capacity: u32,
}

impl RecvBudget {
    /// A budget of `capacity` bytes (at most 4 GiB - 1; a frame's length fits in a u32).
    pub fn new(capacity: usize) -> RecvBudget {
        let capacity = u32::try_from(capacity).unwrap_or(u32::MAX).max(1);
        RecvBudget {
            bytes: Arc::new(tokio::sync::Semaphore::new(capacity as usize)),
            capacity,
        }
    }

    /// Bytes free now.
    pub fn available(&self) -> usize {
        self.bytes.available_permits()
    }

    async fn take(&self, len: usize) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let n = u32::try_from(len).unwrap_or(u32::MAX).min(self.capacity);
        // Closed never: the semaphore is never closed.
        self.bytes.clone().acquire_many_owned(n).await.ok()
    }
}
