//! Deadlines of the core, ordered by time. Each key has at most one deadline.
//!
//! A binary heap of `(deadline, key)` with lazy deletion: `by_key` holds each key's current
//! deadline; a heap entry that no longer matches it is stale and is dropped when it reaches the
//! top (kept there never: the top is always live, so [`Timers::next`] is a peek). Setting or
//! cancelling is a hash-map update plus at most one push, with no string comparisons for the
//! per-offer and per-filter keys, which are numeric. The heap is rebuilt from `by_key` when stale
//! entries outnumber live ones, so it stays within twice the live timers.

use crate::fastmap::FastMap;
use proto::{AgentId, FrameworkId};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// What a deadline is for. At equal instants, keys fire in this order, so an allocation due at
/// the same moment as offer timeouts runs after them and sees the rescinded resources.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum TimerKey {
    /// An outstanding offer (its numeric key) times out.
    Offer(u64),
    AgentSilence(AgentId),
    FrameworkFailover(FrameworkId),
    LogRequest(u64),
    /// A refusal filter ends: the resources may be offered to that framework again
    /// (framework index, agent index).
    FilterExpiry(u32, u32),
    Heartbeat,
    Allocate,
}

/// Stale entries tolerated beyond the live ones before the heap is rebuilt.
const COMPACT_SLACK: usize = 1_024;

/// Generic over the time type so that its tests need no clock; the master uses `Instant`.
pub(crate) struct Timers<T = Instant> {
    heap: BinaryHeap<Reverse<(T, TimerKey)>>,
    by_key: FastMap<TimerKey, T>,
}

impl<T> Default for Timers<T> {
    fn default() -> Self {
        Timers {
            heap: BinaryHeap::new(),
            by_key: FastMap::default(),
        }
    }
}

impl<T: Ord + Copy> Timers<T> {
    pub fn set(&mut self, key: TimerKey, at: T) {
        if self.by_key.insert(key.clone(), at) == Some(at) {
            return; // the live heap entry already says this
        }
        self.heap.push(Reverse((at, key)));
        self.tidy();
    }

    /// Sets the deadline unless one at or before `at` is already set for this key: the
    /// key fires at the earlier of the two.
    pub fn set_no_later(&mut self, key: TimerKey, at: T) {
        if self.by_key.get(&key).is_none_or(|&set| at < set) {
            self.set(key, at);
        }
    }

    pub fn cancel(&mut self, key: &TimerKey) {
        if self.by_key.remove(key).is_some() {
            self.tidy();
        }
    }

    pub fn next(&self) -> Option<T> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Removes and returns the earliest key due at or before `now`.
    pub fn pop_due(&mut self, now: T) -> Option<TimerKey> {
        let Reverse((at, _)) = self.heap.peek()?;
        if *at > now {
            return None;
        }
        let Reverse((_, key)) = self.heap.pop()?;
        self.by_key.remove(&key);
        self.tidy();
        Some(key)
    }

    fn is_live(&self, at: T, key: &TimerKey) -> bool {
        self.by_key.get(key) == Some(&at)
    }

    /// Drops stale entries from the top; rebuilds the heap when it is mostly stale.
    fn tidy(&mut self) {
        if self.heap.len() > 2 * self.by_key.len() + COMPACT_SLACK {
            self.heap = self
                .by_key
                .iter()
                .map(|(k, at)| Reverse((*at, k.clone())))
                .collect();
            return;
        }
        while let Some(Reverse((at, key))) = self.heap.peek() {
            if self.is_live(*at, key) {
                break;
            }
            self.heap.pop();
        }
    }
}
