//! `open_session` against fake masters on loopback (real QUIC and certificates): every master
//! is dialled at once, redirects are followed, a follower is polled over its open connection.

use proto::{ClientFrame, OperatorCall, OperatorReply, Role, ServerFrame};
use session::{open_session, reopen, ClientError, ClientOptions, CONNECT_ATTEMPT_TIMEOUT};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use transport::{Identity, TlsFiles};

struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        certs::init_ca(dir.path(), false).unwrap();
        Pki { dir }
    }

    fn identity(&self, role: Role, name: &str) -> Arc<Identity> {
        let req = certs::IssueRequest {
            role,
            name: name.into(),
            sans: vec![],
            days: 1,
        };
        let paths = certs::issue(self.dir.path(), &req, false).unwrap();
        Arc::new(
            Identity::load(&TlsFiles {
                ca: self.dir.path().join(certs::CA_CERT_FILE),
                cert: paths.cert,
                key: paths.key,
            })
            .unwrap(),
        )
    }
}

/// Connections and streams a fake master accepted.
#[derive(Default)]
struct Seen {
    connections: AtomicUsize,
    streams: AtomicUsize,
}

/// A fake master that answers the first frame of its `n`th stream (from 0) with `answer(n)`.
fn fake_master(
    pki: &Pki,
    name: &str,
    answer: impl Fn(usize) -> ServerFrame + Send + Sync + 'static,
) -> (SocketAddr, Arc<Seen>) {
    let ep = transport::server_endpoint(
        "127.0.0.1:0".parse().unwrap(),
        &pki.identity(Role::Master, name),
    )
    .unwrap();
    let addr = ep.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let answer = Arc::new(answer);
    let s = seen.clone();
    tokio::spawn(async move {
        while let Some(incoming) = ep.accept().await {
            let Ok((conn, _)) = transport::accept(incoming).await else {
                continue;
            };
            s.connections.fetch_add(1, Ordering::SeqCst);
            let (s, answer) = (s.clone(), answer.clone());
            tokio::spawn(async move {
                while let Ok((mut tx, mut rx)) =
                    transport::accept_framed::<ServerFrame, ClientFrame>(&conn, 1 << 20).await
                {
                    let n = s.streams.fetch_add(1, Ordering::SeqCst);
                    if let Ok(Some(_)) = rx.recv().await {
                        let _ = tx.send(&answer(n)).await;
                    }
                    let _ = tx.finish().await;
                }
            });
        }
    });
    (addr, seen)
}

/// An address that swallows every packet: a master that was killed.
fn dead_master() -> (std::net::UdpSocket, SocketAddr) {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    (sock, addr)
}

fn options(pki: &Pki, masters: &[SocketAddr]) -> ClientOptions {
    ClientOptions::new(
        masters.iter().map(|a| a.to_string()).collect(),
        pki.identity(Role::Operator, "op"),
    )
}

fn first() -> ClientFrame {
    ClientFrame::Operator(OperatorCall::GetState)
}

fn done(_: usize) -> ServerFrame {
    ServerFrame::Operator(OperatorReply::Done)
}

#[tokio::test]
async fn a_dead_master_first_in_the_list_costs_nothing_and_redirects_are_followed() {
    let pki = Pki::new();
    let (leader, _) = fake_master(&pki, "m3", done);
    let hint = leader.to_string();
    let (follower, _) = fake_master(&pki, "m2", move |_| ServerFrame::NotLeader {
        leader: Some(hint.clone()),
    });
    let (_dead, dead) = dead_master();
    // The leader is reachable only through the follower's redirect.
    let opts = options(&pki, &[dead, follower]);
    let started = Instant::now();
    let (session, reply) = open_session(&opts, &first()).await.unwrap();
    let took = started.elapsed();
    assert_eq!(reply, ServerFrame::Operator(OperatorReply::Done));
    assert_eq!(session.master, leader.to_string());
    assert!(
        took < CONNECT_ATTEMPT_TIMEOUT / 2,
        "took {took:?}: the dead master was waited for"
    );
}

#[tokio::test]
async fn a_follower_is_polled_over_its_open_connection_until_it_leads() {
    let pki = Pki::new();
    // No leader known for the first three requests (an election), then this master leads.
    let (m, seen) = fake_master(&pki, "m1", |n| {
        if n < 3 {
            ServerFrame::NotLeader { leader: None }
        } else {
            done(n)
        }
    });
    let started = Instant::now();
    let (_, reply) = open_session(&options(&pki, &[m]), &first()).await.unwrap();
    let took = started.elapsed();
    assert_eq!(reply, ServerFrame::Operator(OperatorReply::Done));
    assert_eq!(seen.streams.load(Ordering::SeqCst), 4);
    assert_eq!(
        seen.connections.load(Ordering::SeqCst),
        1,
        "a retry made a new handshake"
    );
    // Backoff 100, 200, 400 ms, each ±25%.
    assert!(took < Duration::from_millis(1500), "took {took:?}");
}

#[tokio::test]
async fn no_leader_within_the_connect_timeout_is_an_error_naming_the_masters() {
    let pki = Pki::new();
    let (follower, _) = fake_master(&pki, "m2", |_| ServerFrame::NotLeader { leader: None });
    let (_dead, dead) = dead_master();
    let mut opts = options(&pki, &[dead, follower]);
    opts.connect_timeout = Duration::from_millis(600);
    let started = Instant::now();
    let err = open_session(&opts, &first())
        .await
        .err()
        .expect("no leader");
    let took = started.elapsed();
    assert!(matches!(err, ClientError::NoLeader { .. }), "{err}");
    assert!(err.to_string().contains(&dead.to_string()), "{err}");
    assert!(
        took >= Duration::from_millis(600) && took < Duration::from_millis(1500),
        "took {took:?}"
    );
}

#[tokio::test]
async fn two_masters_naming_each_other_are_not_polled_in_a_tight_loop() {
    let pki = Pki::new();
    let b_addr: Arc<std::sync::Mutex<Option<String>>> = Default::default();
    let hint = b_addr.clone();
    let (a, seen_a) = fake_master(&pki, "m1", move |_| ServerFrame::NotLeader {
        leader: hint.lock().unwrap().clone(),
    });
    let a_hint = a.to_string();
    let (b, seen_b) = fake_master(&pki, "m2", move |_| ServerFrame::NotLeader {
        leader: Some(a_hint.clone()),
    });
    *b_addr.lock().unwrap() = Some(b.to_string());
    let mut opts = options(&pki, &[a, b]);
    opts.connect_timeout = Duration::from_secs(1);
    let err = open_session(&opts, &first())
        .await
        .err()
        .expect("no leader");
    assert!(matches!(err, ClientError::NoLeader { .. }), "{err}");
    // At most one request per master per first backoff (100 ms), not one per round trip.
    let streams = seen_a.streams.load(Ordering::SeqCst) + seen_b.streams.load(Ordering::SeqCst);
    assert!(streams <= 2 * 12, "{streams} requests in 1 s");
}

/// `reopen` after a lost master: the same request again, within the timeout it is given (a
/// framework's failover timeout), not the options' own; the lost master, dead now, is listed
/// last and costs nothing while another answers.
#[tokio::test]
async fn reopen_after_a_lost_master_uses_its_own_timeout_and_finds_the_new_leader() {
    let pki = Pki::new();
    let (_dead, dead) = dead_master();
    let mut opts = options(&pki, &[dead]);
    opts.connect_timeout = Duration::from_secs(30);
    let started = Instant::now();
    let err = reopen(
        &opts,
        &dead.to_string(),
        Duration::from_millis(400),
        &first(),
    )
    .await
    .err()
    .expect("no leader");
    let took = started.elapsed();
    match &err {
        ClientError::NoLeader { timeout, .. } => {
            assert_eq!(*timeout, Duration::from_millis(400), "{err}")
        }
        other => panic!("expected NoLeader, got {other}"),
    }
    assert!(took < Duration::from_secs(2), "took {took:?}");

    let (leader, seen) = fake_master(&pki, "m2", done);
    opts.masters = vec![dead.to_string(), leader.to_string()];
    let started = Instant::now();
    let (session, reply) = reopen(&opts, &dead.to_string(), Duration::from_secs(5), &first())
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(reply, ServerFrame::Operator(OperatorReply::Done));
    assert_eq!(session.master, leader.to_string());
    assert_eq!(seen.streams.load(Ordering::SeqCst), 1);
    assert!(took < CONNECT_ATTEMPT_TIMEOUT / 2, "took {took:?}");
}

#[tokio::test]
async fn a_preferred_leader_is_asked_alone() {
    let pki = Pki::new();
    let (leader, leader_seen) = fake_master(&pki, "m1", done);
    let (follower, follower_seen) =
        fake_master(&pki, "m2", |_| ServerFrame::NotLeader { leader: None });
    let (_dead, dead) = dead_master();
    let mut opts = options(&pki, &[dead, follower, leader]);
    opts.prefer(&leader.to_string());
    let (session, reply) = open_session(&opts, &first()).await.unwrap();
    assert_eq!(session.master, leader.to_string());
    assert_eq!(reply, done(0));
    assert_eq!(leader_seen.streams.load(Ordering::SeqCst), 1);
    // The others are asked only after the grace, and the session was made long before it.
    assert_eq!(follower_seen.connections.load(Ordering::SeqCst), 0);
    assert_eq!(follower_seen.streams.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_preferred_master_that_does_not_lead_brings_the_others_in_at_once() {
    let pki = Pki::new();
    let (leader, _) = fake_master(&pki, "m1", done);
    let (follower, follower_seen) =
        fake_master(&pki, "m2", |_| ServerFrame::NotLeader { leader: None });
    let mut opts = options(&pki, &[follower, leader]);
    opts.prefer(&follower.to_string());
    let started = Instant::now();
    let (session, _) = open_session(&opts, &first()).await.unwrap();
    assert_eq!(session.master, leader.to_string());
    assert!(follower_seen.streams.load(Ordering::SeqCst) >= 1);
    assert!(
        started.elapsed() < session::PREFERRED_GRACE,
        "the leader was asked only after the grace: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_timeout_with_only_silent_masters_says_they_did_not_answer() {
    let pki = Pki::new();
    let (_dead, dead) = dead_master();
    let mut opts = options(&pki, &[dead]);
    // Shorter than a handshake attempt: the only attempt is still under way at the deadline.
    opts.connect_timeout = CONNECT_ATTEMPT_TIMEOUT / 4;
    let err = open_session(&opts, &first())
        .await
        .err()
        .expect("no leader");
    let text = err.to_string();
    assert!(
        text.contains(&format!("no answer yet from {dead}")),
        "{text}"
    );
}
