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
        Self::with_round(move || {
            let (registry, events) = (registry.clone(), events.clone());
            async move { confirm_once(&registry, &events).await }
        })
    }

    /// A gate whose confirmation round is `round` (one call per round).
    fn with_round<F, Fut>(round: F) -> ReadGate
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Answer> + Send + 'static,
    {
        let (waiting, rx) = mpsc::channel(READ_QUEUE);
        tokio::spawn(confirm_loop(round, rx));
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

async fn confirm_loop<F, Fut>(round: F, mut waiting: mpsc::Receiver<oneshot::Sender<Answer>>)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Answer>,
{
    while let Some(first) = waiting.recv().await {
        // Everyone waiting now shares this round; later arrivals wait for the next.
        let mut batch = vec![first];
        while let Ok(w) = waiting.try_recv() {
            batch.push(w);
        }
        let answer = round().await;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    /// A burst of reads shares rounds: a read arriving while a round runs waits for the next
    /// one (that round began before it), so 200 concurrent reads cost two rounds, not 200.
    #[tokio::test]
    async fn a_burst_of_reads_costs_one_or_two_rounds() {
        let rounds = Arc::new(AtomicU32::new(0));
        let counted = rounds.clone();
        let gate = ReadGate::with_round(move || {
            let counted = counted.clone();
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(200)).await;
                Ok(())
            }
        });
        // One read starts a round; the burst arrives while it runs.
        let first = tokio::spawn({
            let gate = gate.clone();
            async move { gate.confirm().await }
        });
        while rounds.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        let burst: Vec<_> = (0..200)
            .map(|_| {
                let gate = gate.clone();
                tokio::spawn(async move { gate.confirm().await })
            })
            .collect();
        assert!(first.await.expect("read").is_ok());
        for r in burst {
            assert!(r.await.expect("read").is_ok());
        }
        assert_eq!(
            rounds.load(Ordering::SeqCst),
            2,
            "one round, then one for the burst"
        );
    }

    /// A round that fails answers every read waiting for it with its frame.
    #[tokio::test]
    async fn a_failed_round_answers_each_waiting_read_not_leader() {
        let gate = ReadGate::with_round(|| async {
            Err(ServerFrame::NotLeader {
                leader: Some("10.0.0.2:5050".into()),
            })
        });
        for _ in 0..3 {
            assert_eq!(
                gate.confirm().await,
                Err(ServerFrame::NotLeader {
                    leader: Some("10.0.0.2:5050".into())
                })
            );
        }
    }
}
