//! Three masters in one process over real QUIC: replication, failover, restart from disk,
//! catching up from a snapshot, membership changes.

use crate::support::{fw_op, test_config, Cluster, Master, WAIT};
use master_raft::{CommitEvent, NodeId, ProposeError, Registry, ReplicatedRegistry, Subscription};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

/// Proposes `ops` concurrently on `reg`; returns their log indexes by op number.
async fn propose_all(reg: &ReplicatedRegistry, ops: std::ops::Range<u64>) -> BTreeMap<u64, u64> {
    let mut tasks = tokio::task::JoinSet::new();
    for i in ops {
        let reg = reg.clone();
        tasks.spawn(async move { (i, reg.propose(fw_op(i)).await) });
    }
    let mut out = BTreeMap::new();
    while let Some(res) = tasks.join_next().await {
        let (i, r) = res.expect("proposal task");
        let index = r.unwrap_or_else(|e| panic!("proposal {i} failed: {e}"));
        out.insert(i, index);
    }
    out
}

/// Rebuilds a registry as the daemon would: the subscription's copy, then its events in
/// order, until it reaches `target` (or the wait runs out).
async fn follow(sub: &mut Subscription, target: &Registry) -> Registry {
    let mut reg = sub.registry.clone();
    let mut last = sub.applied_index;
    let deadline = tokio::time::Instant::now() + WAIT;
    while reg != *target {
        let ev = tokio::time::timeout_at(deadline, sub.events.recv())
            .await
            .expect("subscription caught up in time")
            .expect("subscription open");
        match ev {
            CommitEvent::Op { index, op, .. } => {
                assert!(index >= last, "op of entry {index} after entry {last}");
                last = index;
                reg.apply(&op);
            }
            CommitEvent::Reset { index, registry } => {
                assert!(index >= last, "reset to {index} after {last}");
                last = index;
                reg = *registry;
            }
        }
    }
    reg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_masters_replicate_fail_over_and_restart() {
    let mut c = Cluster::start(3, |_| {}).await;
    let leader_id = c.wait_leader(None).await;
    let leader = c.master(leader_id);

    // The leader's daemon subscribes, then proposals commit and come back once each, in order.
    let mut sub = leader
        .reg
        .subscribe_as_leader()
        .await
        .expect("leader subscribes");
    let base = sub.applied_index;
    let indexes = propose_all(&leader.reg, 0..20).await;
    let last = *indexes.values().max().expect("indexes");
    // Each op comes back once, with the index propose returned, in log order (ops batched in
    // one entry share its index).
    let mut seen: BTreeMap<u64, u64> = BTreeMap::new();
    let mut prev = base;
    while seen.len() < 20 {
        match sub.events.recv().await.expect("event") {
            CommitEvent::Op { index, op, .. } => {
                assert!(index > base && index >= prev, "entry {index} after {prev}");
                prev = index;
                let i = (0..20)
                    .find(|&i| fw_op(i) == op)
                    .unwrap_or_else(|| panic!("unexpected op {op:?}"));
                assert!(seen.insert(i, index).is_none(), "op {i} twice");
            }
            other => panic!("unexpected {other:?} on the leader"),
        }
    }
    assert_eq!(seen, indexes);

    // Ops submitted one after another enter the log in that order, batched or not.
    let mut pending = Vec::new();
    for i in 100..150 {
        pending.push(leader.reg.submit(fw_op(i)).await.expect("submit"));
    }
    let mut prev = 0;
    for p in pending {
        let index = p.await.expect("committed");
        assert!(
            index >= prev,
            "submitted later, logged earlier: {index} < {prev}"
        );
        prev = index;
    }
    let last = last.max(prev);
    for _ in 0..50 {
        sub.events.recv().await.expect("event");
    }

    // Followers refuse writes and name the leader; a second initialize is harmless.
    let follower = c
        .masters
        .iter()
        .find(|m| m.id != leader_id)
        .expect("follower");
    match follower.reg.propose(fw_op(99)).await {
        Err(ProposeError::NotLeader {
            leader: Some((id, node)),
        }) => {
            assert_eq!(id, leader_id);
            assert_eq!(node, leader.node);
        }
        other => panic!("follower accepted a proposal: {other:?}"),
    }
    let members = c.masters.iter().map(|m| (m.id, m.node.clone())).collect();
    follower
        .reg
        .initialize(members)
        .await
        .expect("initialize again");

    // Everyone converges on the same registry.
    for m in &c.masters {
        m.wait_applied(last).await;
    }
    let reg = leader.reg.registry_snapshot();
    assert_eq!(reg.frameworks().len(), 70);
    for m in &c.masters {
        assert_eq!(m.reg.registry_snapshot(), reg, "master {} differs", m.id);
    }
    let status = leader.reg.status();
    assert_eq!(status.role, "leader");
    assert_eq!(status.leader.as_ref().map(|l| l.0), Some(leader_id));
    assert_eq!(status.voters.len(), 3);
    let others: BTreeSet<NodeId> = c
        .masters
        .iter()
        .map(|m| m.id)
        .filter(|&i| i != leader_id)
        .collect();
    assert_eq!(status.lag.keys().copied().collect::<BTreeSet<_>>(), others);

    // The leader dies: the others elect a new one, which takes writes.
    let old = c.remove(leader_id);
    let started = Instant::now();
    let (old_id, old_addr, old_dir) = old.stop().await;
    let new_leader = c.wait_leader(Some(old_id)).await;
    let elected = started.elapsed();
    let nl = c.master(new_leader);
    let more = propose_all(&nl.reg, 20..30).await;
    eprintln!(
        "failover: new leader {new_leader} after {elected:?}, first write after {:?}",
        started.elapsed()
    );
    let last = *more.values().max().expect("indexes");

    // The old leader restarts from its data dir, rejoins as a follower and catches up.
    let cfg = test_config(old_id, old_dir);
    let back = Master::start(&c.pki, cfg, &format!("m{old_id}"), old_addr).await;
    back.wait_applied(last).await;
    back.wait("follows the new leader", |m| {
        m.current_leader == Some(new_leader)
    })
    .await;
    let reg = nl.reg.registry_snapshot();
    assert_eq!(reg.frameworks().len(), 80);
    assert_eq!(back.reg.registry_snapshot(), reg);
    assert!(!back.reg.is_leader());
    c.masters.push(back);
    for m in c.masters {
        m.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_master_catches_up_from_a_snapshot() {
    let mut c = Cluster::start(3, |cfg| {
        cfg.snapshot_every = 10;
        cfg.keep_after_snapshot = 0;
    })
    .await;
    let leader_id = c.wait_leader(None).await;
    let lagging_id = c
        .masters
        .iter()
        .map(|m| m.id)
        .find(|&i| i != leader_id)
        .expect("follower");
    let lagging = c.remove(lagging_id);
    let lagging_last = lagging.metrics().last_log_index.unwrap_or(0);
    let (id, addr, dir) = lagging.stop().await;

    let leader = c.master(leader_id);
    // One at a time: one entry each, so the snapshot policy (every 10 entries) kicks in.
    let mut last = 0;
    for i in 0..40 {
        last = leader.reg.propose(fw_op(i)).await.expect("propose");
    }
    // The entries the stopped master lacks are gone from the leader's log.
    leader
        .wait("log purged past the lagging master", |m| {
            m.purged.is_some_and(|p| p.index > lagging_last + 5)
        })
        .await;

    let back = Master::start(&c.pki, test_config(id, dir), &format!("m{id}"), addr).await;
    let mut sub = back.reg.subscribe();
    back.wait_applied(last).await;
    let target = leader.reg.registry_snapshot();
    assert_eq!(target.frameworks().len(), 40);
    assert_eq!(back.reg.registry_snapshot(), target);
    // A daemon following the subscription ends with the same registry.
    assert_eq!(follow(&mut sub, &target).await, target);
    let snap = back.metrics().snapshot.expect("installed a snapshot");
    assert!(snap.index > lagging_last);
    c.masters.push(back);
    for m in c.masters {
        m.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masters_are_added_and_removed() {
    let mut c = Cluster::start(3, |_| {}).await;
    let leader_id = c.wait_leader(None).await;
    propose_all(&c.master(leader_id).reg, 0..5).await;

    // A fourth master starts empty and is added by the leader.
    let cfg = test_config(4, c.dirs.path().join("m4"));
    let m4 = Master::start(&c.pki, cfg, "m4", crate::support::localhost0()).await;
    let follower = c
        .masters
        .iter()
        .find(|m| m.id != leader_id)
        .expect("follower");
    assert!(matches!(
        follower.reg.add_master(4, m4.node.clone()).await,
        Err(master_raft::MembershipError::NotLeader { leader: Some(_) })
    ));
    let leader = c.master(leader_id);
    leader
        .reg
        .add_master(4, m4.node.clone())
        .await
        .expect("add master 4");
    m4.wait("is a voter", |m| {
        m.membership_config.membership().voter_ids().any(|v| v == 4)
    })
    .await;

    // A follower is removed; the remaining three keep committing.
    let removed = c
        .masters
        .iter()
        .map(|m| m.id)
        .find(|&i| i != leader_id)
        .expect("follower");
    leader.reg.remove_master(removed).await.expect("remove");
    let voters: BTreeSet<NodeId> = leader.reg.status().voters.keys().copied().collect();
    let want: BTreeSet<NodeId> = [1, 2, 3, 4].into_iter().filter(|&i| i != removed).collect();
    assert_eq!(voters, want);
    let indexes = propose_all(&leader.reg, 5..10).await;
    let last = *indexes.values().max().expect("indexes");
    m4.wait_applied(last).await;
    assert_eq!(m4.reg.registry_snapshot(), leader.reg.registry_snapshot());
    assert_eq!(m4.reg.registry_snapshot().frameworks().len(), 10);
    c.masters.push(m4);
    for m in c.masters {
        m.stop().await;
    }
}

/// A master that cannot be reached (a typo in its address, or not started yet) is refused with
/// a clear error and does not become a voter: a single master would otherwise need it for a
/// majority and commit nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_master_is_not_added_and_the_cluster_keeps_committing() {
    let c = Cluster::start(1, |cfg| {
        cfg.add_master_catch_up = std::time::Duration::from_secs(2)
    })
    .await;
    let leader_id = c.wait_leader(None).await;
    let leader = c.master(leader_id);
    propose_all(&leader.reg, 0..3).await;
    let err = tokio::time::timeout(
        WAIT,
        leader
            .reg
            .add_master(2, master_raft::MasterNode::new("127.0.0.1:1", "m2")),
    )
    .await
    .expect("adding an unreachable master answers (the cluster is not stuck)")
    .expect_err("an unreachable master is refused");
    let msg = err.to_string();
    assert!(
        matches!(err, master_raft::MembershipError::Refused(_))
            && msg.contains("did not catch up")
            && msg.contains("127.0.0.1:1"),
        "{msg}"
    );
    let status = leader.reg.status();
    let voters: BTreeSet<NodeId> = status.voters.keys().copied().collect();
    assert_eq!(voters, BTreeSet::from([leader_id]));
    assert!(status.learners.is_empty(), "{:?}", status.learners);
    // Still a majority of one: proposals commit.
    let committed = tokio::time::timeout(WAIT, propose_all(&leader.reg, 3..6))
        .await
        .expect("the cluster still commits");
    assert_eq!(committed.len(), 3);
    for m in c.masters {
        m.stop().await;
    }
}

/// A master back from an outage where nothing answered (its host cut off: packets vanish, no
/// ICMP) is reached at once. The leader's handshakes to it began while it was away, and QUIC
/// resends an unanswered Initial only on a backoff (about 1 s, then 2 s, up to the 4 s idle
/// timeout); with one handshake per peer at a time the leader would reach the returning master
/// only at the next resend, after the master's election timer (0.9-1.2 s) could have run out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_back_from_a_silent_outage_is_reached_within_a_second() {
    let mut c = Cluster::start(3, |_| {}).await;
    let leader_id = c.wait_leader(None).await;
    let gone_id = c
        .masters
        .iter()
        .map(|m| m.id)
        .find(|&i| i != leader_id)
        .expect("follower");
    let (id, addr, dir) = c.remove(gone_id).stop().await;
    // Its address goes silent: a plain socket there swallows every datagram.
    let deadline = Instant::now() + WAIT;
    let hole = loop {
        match std::net::UdpSocket::bind(addr) {
            Ok(s) => break s,
            Err(e) => assert!(Instant::now() < deadline, "bind {addr}: {e}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    // The leader tries to reach it: wait for two handshakes' worth of Initials (full-size
    // datagrams), so one is in its resend backoff when the master returns.
    let swallowed = tokio::task::spawn_blocking(move || {
        hole.set_read_timeout(Some(WAIT)).expect("timeout");
        let mut buf = [0u8; 2048];
        let mut initials = 0;
        while initials < 2 {
            let (n, _) = hole
                .recv_from(&mut buf)
                .expect("the leader never tried to reach it");
            initials += usize::from(n >= 1200);
        }
        initials
    })
    .await
    .expect("hole");
    assert!(swallowed >= 2);
    let back = Master::start(&c.pki, test_config(id, dir), &format!("m{id}"), addr).await;
    let back_at = Instant::now();
    let leader = c.master(leader_id);
    let last = leader.reg.propose(fw_op(1)).await.expect("propose");
    back.wait_applied(last).await;
    let reached = back_at.elapsed();
    println!("a master back from a silent outage was replicated to after {reached:?}");
    assert!(
        reached < std::time::Duration::from_millis(1500),
        "the leader reached the returning master only after {reached:?}"
    );
    c.masters.push(back);
    for m in c.masters {
        m.stop().await;
    }
}
