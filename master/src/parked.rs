//! Sessions that reach an elected master before it serves.
//!
//! After a failover the other masters tell every client the new leader as soon as they hear of
//! its election, and the whole fleet opens its sessions there at once; the new leader serves
//! only once a majority has confirmed it and every earlier commit is applied (`server.rs`). Told
//! `NotLeader` in between, every client would retry every 100-500 ms: tens of thousands of
//! streams a second on the master whose raft heartbeats must get through for it to be
//! confirmed. So a master that raft says leads holds the sessions that arrive (their first
//! frames with them, in order) and hands them to its core when it starts serving, or answers
//! them `NotLeader` if it loses the election instead. Bounded: past [`MAX_PARKED_SESSIONS`]
//! sessions, or [`MAX_PARKED_EVENTS`] frames, a session is answered at once, as before.

use crate::server::{Event, MAX_CONNECTIONS};
use master_core::SessionId;
use proto::ServerFrame;
use std::collections::{HashSet, VecDeque};

/// Sessions held at once (one per connected client and more: a client may open several).
pub(crate) const MAX_PARKED_SESSIONS: usize = MAX_CONNECTIONS;
/// Events held at once. A client sends its first frame and waits for the answer, so a parked
/// session holds about two (its start and its first frame).
pub(crate) const MAX_PARKED_EVENTS: usize = 4 * MAX_PARKED_SESSIONS;

#[derive(Default)]
pub(crate) struct Parked {
    events: VecDeque<Event>,
    sessions: HashSet<SessionId>,
}

impl Parked {
    pub(crate) fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Holds a session's event for the core, or gives it back: a session not held (it began
    /// before, or the bounds are reached) and anything that is not a session's.
    pub(crate) fn hold(&mut self, event: Event) -> Option<Event> {
        if self.events.len() >= MAX_PARKED_EVENTS {
            return Some(event);
        }
        match &event {
            Event::Connected { session, .. } => {
                if self.sessions.len() >= MAX_PARKED_SESSIONS {
                    return Some(event);
                }
                self.sessions.insert(*session);
            }
            Event::Frame { session, .. } | Event::Disconnected { session } => {
                if !self.sessions.contains(session) {
                    return Some(event);
                }
            }
            Event::ReadBarrier { .. } => return Some(event),
        }
        self.events.push_back(event);
        None
    }

    /// Every held event, in arrival order, for the core that now serves.
    pub(crate) fn release(&mut self) -> VecDeque<Event> {
        self.sessions.clear();
        std::mem::take(&mut self.events)
    }

    /// This master lost the election: every held session is told where the leader is (dropping
    /// its outbox ends its stream).
    pub(crate) fn refuse_all(&mut self, leader: Option<String>) {
        for event in self.release() {
            refuse(event, leader.clone());
        }
    }
}

/// Answers a session's start `NotLeader`; anything else is dropped.
pub(crate) fn refuse(event: Event, leader: Option<String>) {
    if let Event::Connected { outbox, .. } = event {
        let _ = outbox.try_send(Box::new(ServerFrame::NotLeader { leader }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::{ClientFrame, OperatorCall, PeerIdentity, Role};
    use tokio::sync::mpsc;

    fn connected(n: u64) -> (Event, mpsc::Receiver<Box<ServerFrame>>) {
        let (outbox, rx) = mpsc::channel(4);
        let peer = PeerIdentity {
            role: Role::Agent,
            name: format!("a{n}"),
        };
        let event = Event::Connected {
            session: n,
            peer,
            outbox,
        };
        (event, rx)
    }

    fn frame(n: u64) -> Event {
        Event::Frame {
            session: n,
            frame: ClientFrame::Operator(OperatorCall::GetState),
        }
    }

    fn session_of(e: &Event) -> Option<u64> {
        match e {
            Event::Connected { session, .. }
            | Event::Frame { session, .. }
            | Event::Disconnected { session } => Some(*session),
            Event::ReadBarrier { .. } => None,
        }
    }

    #[test]
    fn held_sessions_come_back_in_arrival_order_with_their_frames() {
        let mut parked = Parked::default();
        let (c1, _rx1) = connected(1);
        let (c2, _rx2) = connected(2);
        assert!(parked.hold(c1).is_none());
        assert!(parked.hold(c2).is_none());
        assert!(parked.hold(frame(2)).is_none());
        assert!(parked.hold(frame(1)).is_none());
        // A session that began before (not held) is not held now either.
        assert!(parked.hold(frame(9)).is_some());
        let order: Vec<_> = parked.release().iter().map(session_of).collect();
        assert_eq!(order, vec![Some(1), Some(2), Some(2), Some(1)]);
        assert!(parked.is_empty());
        assert!(
            parked.hold(frame(1)).is_some(),
            "released sessions are not held any more"
        );
    }

    #[test]
    fn a_lost_election_tells_every_held_session_the_leader() {
        let mut parked = Parked::default();
        let (c1, mut rx1) = connected(1);
        assert!(parked.hold(c1).is_none());
        assert!(parked.hold(frame(1)).is_none());
        parked.refuse_all(Some("m2:5050".into()));
        assert!(parked.is_empty());
        let answer = rx1.try_recv().unwrap();
        assert_eq!(
            *answer,
            ServerFrame::NotLeader {
                leader: Some("m2:5050".into())
            }
        );
    }

    #[test]
    fn sessions_past_the_bound_are_given_back() {
        let mut parked = Parked::default();
        let mut outboxes = Vec::new();
        for n in 0..MAX_PARKED_SESSIONS as u64 {
            let (c, rx) = connected(n);
            outboxes.push(rx);
            assert!(parked.hold(c).is_none());
        }
        let (extra, _rx) = connected(u64::MAX);
        assert!(parked.hold(extra).is_some());
    }
}
