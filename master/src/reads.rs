//! Linearizable reads: every answer a client takes as the cluster's truth (`GetState`, log
//! reads, kills and reconciliation answered from the registry) comes only from a master that
//! leads *now*.
//!
//! A leader cut off from the majority does not know it has been replaced: openraft 0.9 has no
//! check-quorum, so it keeps `current_leader == me` until it hears of a higher term, which
//! happens only once its link is back. Answering from its registry then would serve a stale
//! view ("no such task" for a task the new leader launched). So before a read is answered,
//! [`ReadGate::confirm`] has leadership confirmed by a heartbeat round to a majority
//! (openraft's `ensure_linearizable`, see `ReplicatedRegistry::confirm_leadership`) and then
//! makes the core take in every op committed up to the read index (a barrier through the core
//! loop, which also republishes the state snapshot). A master that cannot confirm answers
//! `NotLeader`, and clients try the others.
//!
//! Reads are coalesced: one task runs one confirmation at a time for every read that was
//! waiting when it began; reads that arrive meanwhile wait for the next one (a round that began
//! before a read arrived proves nothing about that read). A burst of `corral state` therefore
//! costs one or two heartbeat rounds, not one each. Why not a leader lease: openraft 0.9 keeps
//! no lease on the leader side that a read could check (its lease is the followers' refusal to
//! vote), and a lease is only as safe as the clocks' drift bound; a round on a LAN is a
//! millisecond.

use crate::server::Event;
use master_raft::{ProposeError, ReplicatedRegistry};
use proto::{ErrorCode, ErrorReply, ServerFrame};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Reads waiting for a confirmation; more are answered `Unavailable` (clients retry).
const READ_QUEUE: usize = 4096;
/// How long one confirmation may take (the heartbeat round is bounded by the heartbeat
/// interval per RPC; this also bounds the wait for the apply and the core barrier).
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(2);

type Answer = Result<(), ServerFrame>;

/// Hands reads to the confirming task.
#[derive(Clone)]
pub(crate) struct ReadGate {
    waiting: mpsc::Sender<oneshot::Sender<Answer>>,
}

impl ReadGate {
    /// Starts the confirming task: it confirms with `registry` and barriers through the core
    /// loop on `events`.
    pub(crate) fn start(registry: ReplicatedRegistry, events: mpsc::Sender<Event>) -> ReadGate {
        let (waiting, rx) = mpsc::channel(READ_QUEUE);
        tokio::spawn(confirm_loop(registry, events, rx));
        ReadGate { waiting }
    }

    /// Waits until this master is confirmed the leader as of now and its core has taken in
    /// every op committed before; `Err` carries the frame to answer instead (`NotLeader`, or
    /// `Unavailable` when too many reads wait).
    pub(crate) async fn confirm(&self) -> Answer {
        let (tx, rx) = oneshot::channel();
        if self.waiting.try_send(tx).is_err() {
            return Err(ServerFrame::Error(ErrorReply {
                code: ErrorCode::Unavailable,
                message: "too many reads waiting for the leader to confirm; retry".into(),
                fatal: true,
            }));
        }
        rx.await
            .unwrap_or(Err(ServerFrame::NotLeader { leader: None }))
    }
}

async fn confirm_loop(
    registry: ReplicatedRegistry,
    events: mpsc::Sender<Event>,
    mut waiting: mpsc::Receiver<oneshot::Sender<Answer>>,
) {
    while let Some(first) = waiting.recv().await {
        // Everyone waiting now shares this round; later arrivals wait for the next.
        let mut batch = vec![first];
        while let Ok(w) = waiting.try_recv() {
            batch.push(w);
        }
        let answer = confirm_once(&registry, &events).await;
        for w in batch {
            let _ = w.send(answer.clone());
        }
    }
}

/// `NotLeader` naming the leader this master knows of, unless that is itself.
fn not_leader(registry: &ReplicatedRegistry) -> ServerFrame {
    ServerFrame::NotLeader {
        leader: registry
            .leader()
            .filter(|(id, _)| *id != registry.id())
            .map(|(_, n)| n.addr),
    }
}

async fn confirm_once(registry: &ReplicatedRegistry, events: &mpsc::Sender<Event>) -> Answer {
    if !registry.is_leader() {
        return Err(not_leader(registry));
    }
    match registry.confirm_leadership(CONFIRM_TIMEOUT).await {
        Ok(_) => {}
        Err(ProposeError::NotLeader { leader }) => {
            return Err(ServerFrame::NotLeader {
                leader: leader.map(|(_, n)| n.addr),
            })
        }
        Err(ProposeError::Stopped(_)) => return Err(ServerFrame::NotLeader { leader: None }),
    }
    // Every op up to the read index is applied, so it is queued for the core (the state
    // machine hands ops over before it reports them applied): the barrier takes them in.
    let (done, barrier) = oneshot::channel();
    if events.send(Event::ReadBarrier { done }).await.is_err() {
        return Err(ServerFrame::NotLeader { leader: None });
    }
    match tokio::time::timeout(CONFIRM_TIMEOUT, barrier).await {
        Ok(Ok(true)) => Ok(()),
        _ => Err(not_leader(registry)),
    }
}
