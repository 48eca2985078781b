//! Framed streams against a peer that writes raw bytes: each bad stream gets its own error and
//! the connection and its other streams keep working.

use crate::support::*;
use proto::DecodeError;
use transport::{FramedRecv, FramedSend, Role, TransportError};

struct Pair {
    client: transport::Connection,
    server: transport::Connection,
    _eps: (transport::Endpoint, transport::Endpoint),
    _pki: Pki,
}

async fn pair() -> Pair {
    let pki = Pki::new();
    let (sep, addr) = server(&pki.identity(Role::Master, "m1"));
    let cep = transport::client_endpoint(&pki.identity(Role::Agent, "a1")).unwrap();
    let (client, accepted) = tokio::join!(
        transport::connect(&cep, addr, Role::Master, Some("m1")),
        accept_one(&sep)
    );
    let client = client.unwrap();
    let (server, _) = accepted.unwrap();
    Pair {
        client,
        server,
        _eps: (sep, cep),
        _pki: pki,
    }
}

/// Opens a raw stream on the client, writes `bytes`, optionally finishes it, and returns the
/// server's framed view of it plus the client's raw send half.
async fn raw_stream(
    p: &Pair,
    bytes: &[u8],
    finish: bool,
) -> (quinn::SendStream, FramedSend<Msg>, FramedRecv<Msg>) {
    raw_stream_max(p, MAX, bytes, finish).await
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

async fn assert_connection_still_works(p: &Pair) {
    let (mut tx, mut rx) = transport::open_framed::<Msg, Msg>(&p.client, MAX)
        .await
        .unwrap();
    tx.send(&Msg::Text("still here".into())).await.unwrap();
    tx.finish().await.unwrap();
    let (mut stx, mut srx) = transport::accept_framed::<Msg, Msg>(&p.server, MAX)
        .await
        .unwrap();
    assert_eq!(
        srx.recv().await.unwrap(),
        Some(Msg::Text("still here".into()))
    );
    assert_eq!(srx.recv().await.unwrap(), None);
    stx.send(&Msg::Ping(7)).await.unwrap();
    stx.finish().await.unwrap();
    assert_eq!(rx.recv().await.unwrap(), Some(Msg::Ping(7)));
    assert_eq!(rx.recv().await.unwrap(), None);
    assert!(!p.client.is_closed());
    assert!(!p.server.is_closed());
}

#[tokio::test]
async fn garbage_body_is_a_decode_error_and_the_stream_stays_in_sync() {
    within(async {
        let p = pair().await;
        // 0xc1 is never valid MessagePack.
        let mut bytes = frame(&[0xc1, 0xc1, 0xc1]);
        // Valid MessagePack of the wrong shape.
        bytes.extend(frame(&rmp_serde::to_vec_named(&"not a Msg").unwrap()));
        bytes.extend(frame(&rmp_serde::to_vec_named(&Msg::Ping(5)).unwrap()));
        let (_send, _tx, mut rx) = raw_stream(&p, &bytes, true).await;
        for _ in 0..2 {
            let err = rx.recv().await.unwrap_err();
            assert!(
                matches!(
                    err,
                    TransportError::Decode {
                        source: DecodeError::Malformed(_),
                        ..
                    }
                ),
                "{err:?}"
            );
            assert!(err.to_string().contains("the agent 'a1'"), "{err}");
        }
        assert_eq!(rx.recv().await.unwrap(), Some(Msg::Ping(5)));
        assert_eq!(rx.recv().await.unwrap(), None);
        assert_connection_still_works(&p).await;
    })
    .await
}

#[tokio::test]
async fn truncated_frames_are_errors() {
    within(async {
        let p = pair().await;
        // The body is cut short.
        let mut bytes = 10u32.to_be_bytes().to_vec();
        bytes.extend_from_slice(&[1, 2, 3]);
        let (_s1, _t1, mut rx) = raw_stream(&p, &bytes, true).await;
        let err = rx.recv().await.unwrap_err();
        assert!(
            matches!(
                err,
                TransportError::Truncated {
                    got: 7,
                    want: 14,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            matches!(rx.recv().await, Err(TransportError::StreamClosed { .. })),
            "a failed stream stays failed"
        );

        // The header itself is cut short.
        let (_s2, _t2, mut rx) = raw_stream(&p, &[0, 0], true).await;
        let err = rx.recv().await.unwrap_err();
        assert!(
            matches!(
                err,
                TransportError::Truncated {
                    got: 2,
                    want: 4,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_connection_still_works(&p).await;
    })
    .await
}

#[tokio::test]
async fn oversized_header_is_refused_without_waiting_for_the_body() {
    within(async {
        let p = pair().await;
        // Announces MAX + 1 bytes and sends none of them, and does not finish: if recv waited
        // for the body it would hang until the test deadline.
        let header = ((MAX + 1) as u32).to_be_bytes();
        let (send, _tx, mut rx) = raw_stream(&p, &header, false).await;
        let err = rx.recv().await.unwrap_err();
        assert!(
            matches!(
                err,
                TransportError::Decode {
                    source: DecodeError::FrameTooLarge { len, max },
                    ..
                } if len == MAX + 1 && max == MAX
            ),
            "{err:?}"
        );
        // The sender learns that we stopped reading.
        let stopped = send.stopped().await.unwrap();
        assert_eq!(
            stopped,
            Some(quinn::VarInt::from_u32(transport::STOP_FRAME_TOO_LARGE))
        );
        // A 4 GiB announcement is refused the same way.
        let (_s, _t, mut rx) = raw_stream(&p, &u32::MAX.to_be_bytes(), false).await;
        assert!(matches!(
            rx.recv().await,
            Err(TransportError::Decode {
                source: DecodeError::FrameTooLarge { .. },
                ..
            })
        ));
        assert_connection_still_works(&p).await;
    })
    .await
}

#[tokio::test]
async fn sending_an_oversized_message_fails_locally_and_sends_nothing() {
    within(async {
        let p = pair().await;
        let (mut tx, _rx) = transport::open_framed::<Msg, Msg>(&p.client, MAX)
            .await
            .unwrap();
        let err = tx.send(&Msg::Text("x".repeat(MAX * 2))).await.unwrap_err();
        assert!(matches!(err, TransportError::Encode { .. }), "{err:?}");
        tx.send(&Msg::Ping(1)).await.unwrap();
        tx.finish().await.unwrap();
        let (_stx, mut srx) = transport::accept_framed::<Msg, Msg>(&p.server, MAX)
            .await
            .unwrap();
        assert_eq!(srx.recv().await.unwrap(), Some(Msg::Ping(1)));
        assert_eq!(srx.recv().await.unwrap(), None);
    })
    .await
}

#[tokio::test]
async fn a_reset_stream_and_a_closed_connection_are_reported() {
    within(async {
        let p = pair().await;
        let (mut tx, _rx) = transport::open_framed::<Msg, Msg>(&p.client, MAX)
            .await
            .unwrap();
        tx.send(&Msg::Ping(1)).await.unwrap();
        let (_stx, mut srx) = transport::accept_framed::<Msg, Msg>(&p.server, MAX)
            .await
            .unwrap();
        assert_eq!(srx.recv().await.unwrap(), Some(Msg::Ping(1)));
        tx.reset(9);
        let err = srx.recv().await.unwrap_err();
        assert!(
            matches!(err, TransportError::StreamReset { code: 9, .. }),
            "{err:?}"
        );

        let (_tx2, mut rx2) = transport::open_framed::<Msg, Msg>(&p.client, MAX)
            .await
            .unwrap();
        p.server.close(3, b"bye");
        let err = rx2.recv().await.unwrap_err();
        assert!(
            err.to_string().contains("the master 'm1' at")
                && err.to_string().contains("closed by the peer (code 3: bye)"),
            "{err}"
        );
    })
    .await
}

/// [`raw_stream`] with a maximum frame length of `max`.
async fn raw_stream_max(
    p: &Pair,
    max: usize,
    bytes: &[u8],
    finish: bool,
) -> (quinn::SendStream, FramedSend<Msg>, FramedRecv<Msg>) {
    let (mut send, _recv) = p.client.quinn().open_bi().await.unwrap();
    send.write_all(bytes).await.unwrap();
    if finish {
        send.finish().unwrap();
    }
    let (tx, rx) = transport::accept_framed::<Msg, Msg>(&p.server, max)
        .await
        .unwrap();
    (send, tx, rx)
}

/// A peer that announces large frames on many streams and never completes them holds no more
/// than the budget: the next large frame is not buffered (the peer is held by flow control)
/// until budget frees, and small frames never wait.
#[tokio::test]
async fn large_frames_are_buffered_only_within_the_budget() {
    within(async {
        let p = pair().await;
        const BIG: usize = 200 << 10;
        let budget = transport::RecvBudget::new(300 << 10);
        let encoded = |text: String| {
            let mut out = Vec::new();
            proto::encode(&Msg::Text(text), usize::MAX, &mut out).unwrap();
            out
        };
        let big = encoded("x".repeat(BIG));
        // Stream A: a large frame's header and half of its body, left incomplete.
        let half = big.len() / 2;
        let (mut send_a, _ta, rx_a) = raw_stream_max(&p, 1 << 20, &big[..half], false).await;
        let mut rx_a = rx_a.with_budget(budget.clone());
        let a = tokio::spawn(async move { rx_a.recv().await });
        // Poll until the receiver has read the header and taken the frame's length.
        let want = (300 << 10) - (big.len() - 4);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while budget.available() != want {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the incomplete frame holds its length: available {} (want {want})",
                budget.available()
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        // Stream B: a complete large frame does not fit beside it and waits.
        let (_sb, _tb, rx_b) = raw_stream_max(&p, 1 << 20, &big, true).await;
        let mut rx_b = rx_b.with_budget(budget.clone());
        let mut b = tokio::spawn(async move { rx_b.recv().await });
        let waited = tokio::time::timeout(std::time::Duration::from_millis(500), &mut b).await;
        assert!(
            waited.is_err(),
            "a large frame was buffered beyond the budget"
        );
        // A small frame on stream C does not wait.
        let (_sc, _tc, rx_c) = raw_stream_max(&p, 1 << 20, &encoded("small".into()), true).await;
        let mut rx_c = rx_c.with_budget(budget.clone());
        assert_eq!(rx_c.recv().await.unwrap(), Some(Msg::Text("small".into())));
        // A completes; then B gets its turn; the whole budget is free again.
        send_a.write_all(&big[half..]).await.unwrap();
        send_a.finish().unwrap();
        assert_eq!(a.await.unwrap().unwrap(), Some(Msg::Text("x".repeat(BIG))));
        assert_eq!(b.await.unwrap().unwrap(), Some(Msg::Text("x".repeat(BIG))));
        assert_eq!(budget.available(), 300 << 10);
    })
    .await
}

/// `recv` is cancel-safe: callers wait on it in `select!` beside other events, and a large
/// frame arrives in many packets. A receiver whose `recv` is cancelled again and again while
/// frames stream in still gets every frame whole and in order (before, the bytes read before
/// a cancellation were lost, and the next header was read from the middle of a body).
#[tokio::test]
async fn a_receive_cancelled_mid_frame_loses_nothing() {
    within(async {
        let p = pair().await;
        let big: Vec<String> = (0..4)
            .map(|i| format!("{i}").repeat(300_000 + i * 7_777))
            .collect();
        let (mut tx, _rx) = transport::open_framed::<Msg, Msg>(&p.client, 4 << 20)
            .await
            .unwrap();
        let sent = big.clone();
        let sender = tokio::spawn(async move {
            for text in sent {
                tx.send(&Msg::Text(text)).await.unwrap();
            }
            tx.finish().await.unwrap();
        });
        let (_stx, mut srx) = transport::accept_framed::<Msg, Msg>(&p.server, 4 << 20)
            .await
            .unwrap();
        let mut got = Vec::new();
        let mut cancelled = 0u32;
        loop {
            tokio::select! {
                r = srx.recv() => match r.unwrap() {
                    Some(Msg::Text(t)) => got.push(t),
                    Some(other) => panic!("unexpected {other:?}"),
                    None => break,
                },
                // Yields after a poll or two of `recv`: most receives are cut off mid-frame.
                _ = tokio::task::yield_now() => cancelled += 1,
            }
        }
        sender.await.unwrap();
        assert!(cancelled > 0, "no receive was cancelled");
        assert_eq!(got.len(), big.len());
        assert!(got == big, "frames arrived altered");
    })
    .await;
}
