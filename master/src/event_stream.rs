//! Serving `OperatorCall::SubscribeEvents` on the leading master: the first reply
//! (`EventsSubscribed`: resumed after the client's cursor, or the current state) from the
//! [`Journal`], then `Events` batches as the journal grows, until the client leaves, this master
//! stops leading (the client is sent `NotLeader` and resumes at the next leader), or the client
//! falls behind what the journal holds (`TooSlow`: it is cut off, never buffered for).
//!
//! One stream costs one batch in flight; QUIC flow control holds a slow reader, and the shared
//! ring moves on without it. At most [`MAX_SUBSCRIBERS`] streams at once.

use crate::journal::{Journal, Read};
use master_raft::ReplicatedRegistry;
use proto::{
    ClientFrame, ErrorCode, ErrorReply, EventCursor, OperatorReply, PeerIdentity, ServerFrame,
};
use std::sync::Arc;
use tokio::sync::Semaphore;
use transport::{FramedRecv, FramedSend};

/// Event streams served at once; more are refused as unavailable.
pub const MAX_SUBSCRIBERS: usize = 256;
/// Events per `Events` frame at most.
const BATCH: usize = 256;

/// What an event stream needs from the master.
pub struct EventSource {
    pub journal: Arc<Journal>,
    pub registry: ReplicatedRegistry,
    pub slots: Arc<Semaphore>,
}

fn error(code: ErrorCode, message: String) -> ServerFrame {
    ServerFrame::Error(ErrorReply {
        code,
        message,
        fatal: true,
    })
}

/// The refusal of a peer that is not an operator.
pub fn forbidden(peer: &PeerIdentity) -> ServerFrame {
    let msg =
        format!("{peer} may not follow the cluster's events: it needs an operator certificate");
    error(ErrorCode::Forbidden, msg)
}

/// Serves one subscription until it ends, then finishes the stream; or sends `refusal` (the
/// caller's check of the peer's role and of this master's leadership) and finishes.
pub async fn serve(
    source: &EventSource,
    mut tx: FramedSend<ServerFrame>,
    mut rx: FramedRecv<ClientFrame>,
    after: Option<EventCursor>,
    refusal: Option<ServerFrame>,
    leader: impl Fn() -> Option<String>,
) {
    if let Some(frame) = refusal {
        let _ = tx.send(&frame).await;
        let _ = tx.finish().await;
        return;
    }
    let Ok(_slot) = source.slots.clone().try_acquire_owned() else {
        let msg = format!("this master serves {MAX_SUBSCRIBERS} event streams already");
        let _ = tx.send(&error(ErrorCode::Unavailable, msg)).await;
        let _ = tx.finish().await;
        return;
    };
    let mut changed = source.journal.watch();
    let subscribed = match source.journal.subscribe(&source.registry, after) {
        Ok(s) => s,
        Err(e) => {
            let _ = tx.send(&error(ErrorCode::BadRequest, e.to_string())).await;
            let _ = tx.finish().await;
            return;
        }
    };
    let mut cursor = subscribed.cursor;
    tracing::info!(%cursor, resumed = subscribed.resumed, "operator event stream subscribed");
    let first = ServerFrame::Operator(OperatorReply::EventsSubscribed(Box::new(subscribed)));
    if tx.send(&first).await.is_err() {
        return;
    }
    let mut raft = source.registry.metrics();
    loop {
        if !source.registry.is_leader() {
            let _ = tx.send(&ServerFrame::NotLeader { leader: leader() }).await;
            break;
        }
        match next_frame(&source.journal, cursor) {
            Step::Send { frame, last } => {
                cursor = last;
                if tx.send(&frame).await.is_err() {
                    return;
                }
                continue;
            }
            Step::CutOff(frame) => {
                tracing::warn!(%cursor, "cutting off an operator event stream that fell behind");
                let _ = tx.send(&frame).await;
                break;
            }
            Step::Wait => {}
        }
        tokio::select! {
            c = changed.changed() => if c.is_err() { break },
            m = raft.changed() => if m.is_err() { break },
            inbound = rx.recv() => match inbound {
                // The client sends nothing more; a frame, an end or an error ends the stream.
                Ok(Some(_)) | Ok(None) | Err(_) => break,
            },
        }
    }
    let _ = tx.finish().await;
}

/// What a stream at `cursor` does next.
#[derive(Debug)]
enum Step {
    /// Send the next batch of events, the last of which is at `last`.
    Send {
        frame: ServerFrame,
        last: EventCursor,
    },
    /// The reader fell behind what the journal holds: send this `TooSlow` error and end.
    CutOff(ServerFrame),
    /// Nothing new yet.
    Wait,
}

fn next_frame(journal: &Journal, cursor: EventCursor) -> Step {
    match journal.read_after(cursor, BATCH) {
        Read::Behind { horizon } => {
            let msg = format!(
                "this client read events more slowly than the cluster changed: the events \
                 after {cursor} were dropped (this master keeps the last {} events, from \
                 {horizon} on); subscribe again to start from the current state",
                journal.capacity()
            );
            Step::CutOff(error(ErrorCode::TooSlow, msg))
        }
        Read::Events(events) => match events.last() {
            Some(last) => Step::Send {
                last: last.cursor,
                frame: ServerFrame::Operator(OperatorReply::Events(
                    events.iter().map(|e| (**e).clone()).collect(),
                )),
            },
            None => Step::Wait,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use master_core::testing::agent_info;
    use master_raft::{Registry, RegistryOp};
    use proto::AgentId;

    #[test]
    fn a_reader_behind_the_journal_is_cut_off_as_too_slow_and_others_get_batches() {
        let journal = Journal::new(2);
        journal.attached(0);
        let mut reg = Registry::default();
        for i in 1..=4u64 {
            let name = format!("a{i}");
            let op = RegistryOp::AgentAdmitted {
                agent_id: AgentId::new(&name),
                info: agent_info(&name, "cpus:1".parse().expect("resources")),
                principal: name.clone(),
            };
            journal.record(i, &op, &reg);
            reg.apply(&op);
        }
        // The reader that stopped after the first event: the next two were dropped.
        match next_frame(&journal, EventCursor { index: 1, seq: 0 }) {
            Step::CutOff(ServerFrame::Error(e)) => {
                assert_eq!(e.code, ErrorCode::TooSlow);
                assert!(e.fatal);
                assert!(
                    e.message.contains("after 1.0 were dropped"),
                    "{}",
                    e.message
                );
                assert!(
                    e.message.contains("keeps the last 2 events"),
                    "{}",
                    e.message
                );
            }
            other => panic!("not cut off: {other:?}"),
        }
        // A reader at the horizon gets what is held, then waits.
        let at = EventCursor { index: 2, seq: 0 };
        let Step::Send { frame, last } = next_frame(&journal, at) else {
            panic!("no batch")
        };
        assert_eq!(last, EventCursor { index: 4, seq: 0 });
        let ServerFrame::Operator(OperatorReply::Events(batch)) = frame else {
            panic!("not events: {frame:?}")
        };
        assert_eq!(batch.len(), 2);
        assert!(matches!(next_frame(&journal, last), Step::Wait));
    }
}
