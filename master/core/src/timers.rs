//! Deadlines of the core, ordered by time. Each key has at most one deadline.

use proto::{AgentId, FrameworkId, OfferId};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

/// What a deadline is for. At equal instants, keys fire in this order, so an allocation due at
/// the same moment as offer timeouts runs after them and sees the rescinded resources.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum TimerKey {
    Offer(OfferId),
    AgentSilence(AgentId),
    FrameworkFailover(FrameworkId),
    LogRequest(u64),
    /// A refusal filter ends: the resources may be offered to that framework again.
    FilterExpiry(FrameworkId, AgentId),
    Heartbeat,
    Allocate,
}

#[derive(Default)]
pub(crate) struct Timers {
    by_time: BTreeSet<(Instant, TimerKey)>,
    by_key: BTreeMap<TimerKey, Instant>,
}

impl Timers {
    pub fn set(&mut self, key: TimerKey, at: Instant) {
        if let Some(old) = self.by_key.insert(key.clone(), at) {
            self.by_time.remove(&(old, key.clone()));
        }
        self.by_time.insert((at, key));
    }

    /// Sets the deadline unless one is already set for this key.
    pub fn set_if_unset(&mut self, key: TimerKey, at: Instant) {
        if !self.by_key.contains_key(&key) {
            self.set(key, at);
        }
    }

    pub fn cancel(&mut self, key: &TimerKey) {
        if let Some(at) = self.by_key.remove(key) {
            self.by_time.remove(&(at, key.clone()));
        }
    }

    pub fn next(&self) -> Option<Instant> {
        self.by_time.first().map(|(at, _)| *at)
    }

    /// Removes and returns the earliest key due at or before `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<TimerKey> {
        let (at, _) = self.by_time.first()?;
        if *at > now {
            return None;
        }
        let (_, key) = self.by_time.pop_first()?;
        self.by_key.remove(&key);
        Some(key)
    }
}
