//! The raft network checks who is on the other end, both ways.

use crate::support::{localhost0, test_config, Master, Pki};
use master_raft::network::{Network, RaftRequest, RaftResponse, MAX_RAFT_FRAME};
use master_raft::{MasterNode, Vote};
use openraft::error::RPCError;
use openraft::network::{RPCOption, RaftNetwork};
use openraft::raft::VoteRequest;
use proto::Role;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_whose_certificate_names_another_master_is_refused() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let m2 = Master::start(
        &pki,
        test_config(2, dir.path().join("m2")),
        "m2",
        localhost0(),
    )
    .await;

    let id1 = pki.identity(Role::Master, "m1");
    let ep = transport::client_endpoint(&id1).expect("client endpoint");
    let net = Network::new(1, ep);
    let opt = || RPCOption::new(Duration::from_secs(5));
    let req = || VoteRequest::new(Vote::new(1, 1), None);

    // We meant to reach m3, but the master at that address is m2: refused, and reported as
    // unreachable so openraft backs off.
    let wrong = MasterNode::new(m2.addr.to_string(), "m3");
    match net.client(2, &wrong).vote(req(), opt()).await {
        Err(RPCError::Unreachable(e)) => {
            let msg = e.to_string();
            assert!(msg.contains("m3"), "{msg}");
        }
        other => panic!("a peer with the wrong name was accepted: {other:?}"),
    }
    assert_eq!(m2.metrics().vote, Vote::default(), "m2 saw no vote request");

    // The right name works (and the vote reaches m2's raft).
    let right = MasterNode::new(m2.addr.to_string(), "m2");
    let resp = net
        .client(2, &right)
        .vote(req(), opt())
        .await
        .expect("vote to the right master");
    assert!(resp.vote_granted, "{resp:?}");
    m2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_master_may_not_send_raft_requests() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let m2 = Master::start(
        &pki,
        test_config(2, dir.path().join("m2")),
        "m2",
        localhost0(),
    )
    .await;

    // An agent certificate chains to the same CA but has role "agent".
    let agent = pki.identity(Role::Agent, "a1");
    let ep = transport::client_endpoint(&agent).expect("client endpoint");
    let conn = transport::connect(&ep, m2.addr, Role::Master, Some("m2"))
        .await
        .expect("tls handshake");
    let answer = async {
        let (mut tx, mut rx) =
            transport::open_framed::<RaftRequest, RaftResponse>(&conn, MAX_RAFT_FRAME).await?;
        tx.send(&RaftRequest::Vote(VoteRequest::new(Vote::new(5, 9), None)))
            .await?;
        rx.recv().await
    }
    .await;
    assert!(
        !matches!(answer, Ok(Some(RaftResponse::Vote(_)))),
        "an agent got a vote answered: {answer:?}"
    );
    assert_eq!(
        m2.metrics().vote,
        Vote::default(),
        "m2's raft saw the request"
    );
    m2.stop().await;
}
