//! The operator event journal: the recent events of the cluster, derived from the replicated
//! log on every master (leader or not) by observing each committed op as the state machine
//! applies it (`master_raft::ApplyObserver`, with `master_core::events::op_events`), and
//! numbered by log position ([`EventCursor`]: the entry's index and the event's place among its
//! events). Every master applies the same log, so every master numbers the same events the same
//! way; a master that becomes leader has followed the log all along, so a client that lost the
//! old leader resumes here after the last cursor it processed, with nothing lost or repeated.
//!
//! Bounded: the ring holds [`JOURNAL_EVENTS`] events, shared by every subscriber; older ones
//! are dropped and the horizon (the cursor after which every event is still held) moves on. A
//! resumption from before the horizon gets the current state instead; a subscriber that falls
//! behind the horizon while reading is cut off (`event_stream.rs`). Nothing grows per client.
//!
//! Lock order: the state machine's lock, then the journal's (the observer runs under the
//! former; [`Journal::subscribe`] reads the registry under it too).

use master_core::events::{op_events, state_events};
use master_raft::{ApplyObserver, Registry, RegistryOp, ReplicatedRegistry};
use proto::{EventCursor, EventsSubscribed, StampedEvent};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::watch;

/// Events kept for resumption and for subscribers that read behind the newest.
pub const JOURNAL_EVENTS: usize = 32_768;

#[derive(Debug)]
struct Ring {
    events: VecDeque<Arc<StampedEvent>>,
    /// Every event after this cursor is in `events`.
    horizon: EventCursor,
    /// The entry being numbered and the next event number in it.
    entry: u64,
    next_seq: u32,
    capacity: usize,
}

/// What a reader gets after its cursor.
#[derive(Debug, PartialEq)]
pub enum Read {
    /// The next events in order (empty: none yet).
    Events(Vec<Arc<StampedEvent>>),
    /// Events after the cursor were dropped: the reader fell behind `horizon`.
    Behind { horizon: EventCursor },
}

/// Why a subscription was refused.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum SubscribeError {
    #[error("the cursor {cursor} is ahead of this cluster's log (applied up to entry {applied}); is it from another cluster?")]
    Ahead { cursor: EventCursor, applied: u64 },
}

#[derive(Debug)]
pub struct Journal {
    ring: Mutex<Ring>,
    /// Bumped when events are added or the ring is reset; subscribers wait on it.
    changed: watch::Sender<u64>,
}

impl Journal {
    pub fn new(capacity: usize) -> Arc<Journal> {
        Arc::new(Journal {
            ring: Mutex::new(Ring {
                events: VecDeque::new(),
                horizon: EventCursor::default(),
                entry: 0,
                next_seq: 0,
                capacity: capacity.max(1),
            }),
            changed: watch::channel(0).0,
        })
    }

    /// Makes this journal observe every op `registry` applies from now on.
    pub fn attach(self: &Arc<Self>, registry: &ReplicatedRegistry) {
        registry.observe(Box::new(Observer(self.clone())));
    }

    fn lock(&self) -> MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes when events are added (or the ring reset).
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Events held at most.
    pub fn capacity(&self) -> usize {
        self.lock().capacity
    }

    /// The cursor after which every event is held.
    pub fn horizon(&self) -> EventCursor {
        self.lock().horizon
    }

    pub(crate) fn attached(&self, applied_index: u64) {
        let mut r = self.lock();
        r.events.clear();
        r.horizon = EventCursor::after_entry(applied_index);
        r.entry = applied_index;
        r.next_seq = 0;
    }

    pub(crate) fn record(&self, index: u64, op: &RegistryOp, registry: &Registry) {
        let events = op_events(registry, op);
        if events.is_empty() {
            return;
        }
        {
            let mut r = self.lock();
            if r.entry != index {
                r.entry = index;
                r.next_seq = 0;
            }
            for event in events {
                let cursor = EventCursor {
                    index,
                    seq: r.next_seq,
                };
                r.next_seq = r.next_seq.saturating_add(1);
                if r.events.len() >= r.capacity {
                    if let Some(old) = r.events.pop_front() {
                        r.horizon = old.cursor;
                    }
                }
                r.events.push_back(Arc::new(StampedEvent { cursor, event }));
            }
        }
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Up to `max` events after `after`, or `Behind` when some were dropped.
    pub fn read_after(&self, after: EventCursor, max: usize) -> Read {
        let r = self.lock();
        if after < r.horizon {
            return Read::Behind { horizon: r.horizon };
        }
        let start = r.events.partition_point(|e| e.cursor <= after);
        Read::Events(r.events.range(start..).take(max).cloned().collect())
    }

    /// Starts a subscription: after `after` when every later event is still held, else from
    /// the registry's current state (with a note saying why when a resumption was asked for).
    pub fn subscribe(
        &self,
        registry: &ReplicatedRegistry,
        after: Option<EventCursor>,
    ) -> Result<EventsSubscribed, SubscribeError> {
        registry.read_registry(|reg, applied| self.subscribe_at(reg, applied, after))
    }

    /// [`Journal::subscribe`] against `registry` as of entry `applied`, with no op applied
    /// meanwhile.
    fn subscribe_at(
        &self,
        registry: &Registry,
        applied: u64,
        after: Option<EventCursor>,
    ) -> Result<EventsSubscribed, SubscribeError> {
        let horizon = self.horizon();
        let note = match after {
            Some(cursor) if cursor.index > applied => {
                return Err(SubscribeError::Ahead { cursor, applied })
            }
            Some(cursor) if cursor >= horizon => {
                return Ok(EventsSubscribed {
                    cursor,
                    resumed: true,
                    state: Vec::new(),
                    note: None,
                })
            }
            Some(cursor) => Some(format!(
                "cannot resume after {cursor}: this master holds the events after {horizon} only; \
                 starting again from the current state"
            )),
            None => None,
        };
        Ok(EventsSubscribed {
            cursor: EventCursor::after_entry(applied),
            resumed: false,
            state: state_events(registry),
            note,
        })
    }

    fn replaced(&self, index: u64) {
        self.attached(index);
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }
}

struct Observer(Arc<Journal>);

impl ApplyObserver for Observer {
    fn attached(&mut self, applied_index: u64) {
        self.0.attached(applied_index);
    }

    fn before_apply(&mut self, index: u64, op: &RegistryOp, registry: &Registry) {
        self.0.record(index, op, registry);
    }

    fn replaced(&mut self, index: u64) {
        self.0.replaced(index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use master_core::testing::{agent_info, framework_info};
    use proto::{AgentId, ClusterEvent, FrameworkId};

    fn admit(reg: &mut Registry, journal: &Journal, index: u64, name: &str) {
        let op = RegistryOp::AgentAdmitted {
            agent_id: AgentId::new(name),
            info: agent_info(name, "cpus:1;mem:1GiB".parse().expect("resources")),
            principal: name.into(),
        };
        journal.record(index, &op, reg);
        reg.apply(&op);
    }

    #[test]
    fn events_are_numbered_by_entry_and_read_after_a_cursor() {
        let journal = Journal::new(16);
        let mut reg = Registry::default();
        journal.attached(4);
        admit(&mut reg, &journal, 5, "a1");
        admit(&mut reg, &journal, 5, "a2");
        let fw = RegistryOp::FrameworkAdded {
            framework_id: FrameworkId::new("f"),
            info: framework_info("f", &[]),
            principal: None,
        };
        journal.record(7, &fw, &reg);
        reg.apply(&fw);
        let Read::Events(all) = journal.read_after(EventCursor::after_entry(4), 10) else {
            panic!("behind")
        };
        let cursors: Vec<String> = all.iter().map(|e| e.cursor.to_string()).collect();
        assert_eq!(cursors, ["5.0", "5.1", "7.0"]);
        assert!(matches!(all[2].event, ClusterEvent::FrameworkAdded(_)));
        let Read::Events(rest) = journal.read_after(all[0].cursor, 10) else {
            panic!("behind")
        };
        assert_eq!(rest.len(), 2);
        assert_eq!(
            journal.read_after(EventCursor::after_entry(7), 10),
            Read::Events(vec![])
        );
        // Before the journal started: not held.
        assert_eq!(
            journal.read_after(EventCursor { index: 4, seq: 0 }, 10),
            Read::Behind {
                horizon: EventCursor::after_entry(4)
            }
        );
    }

    #[test]
    fn a_full_ring_drops_the_oldest_and_a_reader_behind_it_is_told() {
        let journal = Journal::new(3);
        let mut reg = Registry::default();
        journal.attached(0);
        for i in 1..=5 {
            admit(&mut reg, &journal, i, &format!("a{i}"));
        }
        let first = EventCursor { index: 1, seq: 0 };
        assert_eq!(
            journal.read_after(first, 10),
            Read::Behind {
                horizon: EventCursor { index: 2, seq: 0 }
            }
        );
        let Read::Events(held) = journal.read_after(EventCursor { index: 2, seq: 0 }, 10) else {
            panic!("behind")
        };
        assert_eq!(held.len(), 3);
        // A resumption from before the horizon starts from the state, and says why.
        let sub = journal
            .subscribe_at(&reg, 5, Some(first))
            .expect("subscribed");
        assert!(!sub.resumed);
        assert_eq!(sub.state.len(), 5);
        assert_eq!(sub.cursor, EventCursor::after_entry(5));
        assert!(sub
            .note
            .expect("a note")
            .contains("cannot resume after 1.0"));
        // From the horizon on, it resumes.
        let sub = journal
            .subscribe_at(&reg, 5, Some(EventCursor { index: 3, seq: 0 }))
            .expect("subscribed");
        assert!(sub.resumed && sub.state.is_empty());
        // A cursor from the future is refused.
        assert_eq!(
            journal.subscribe_at(&reg, 5, Some(EventCursor { index: 9, seq: 0 })),
            Err(SubscribeError::Ahead {
                cursor: EventCursor { index: 9, seq: 0 },
                applied: 5
            })
        );
    }

    #[test]
    fn a_snapshot_install_starts_the_journal_again() {
        let journal = Journal::new(8);
        let mut reg = Registry::default();
        journal.attached(0);
        admit(&mut reg, &journal, 1, "a1");
        journal.replaced(10);
        assert_eq!(
            journal.read_after(EventCursor { index: 1, seq: 0 }, 10),
            Read::Behind {
                horizon: EventCursor::after_entry(10)
            }
        );
    }
}
