//! Offers made recently and not answered yet: launches on their way to the registry.
//!
//! Admission control (`limits::ALLOCATION_HOLD_WEIGHT`) holds allocation while the registry
//! is behind. Counting only what is proposed misses what is about to be: a pass at 50,000
//! agents offers 4,096 of them, the next pass 10 ms later sees nothing proposed yet (the
//! frameworks have not answered) and offers 4,096 more, and the accepts that follow put tens
//! of thousands of launches in flight at once, every launch and status update queued behind
//! them. So an offer counts toward the hold from the pass that makes it until its framework
//! answers (accept, decline) or the master takes it back, but for at most [`ANSWER_GRACE`]:
//! a framework that holds its offers (as some do, for seconds) delays allocation by that
//! much at most and never stops it.
//!
//! Book-keeping is per pass: offer keys grow with every offer made, so a pass is the range
//! of keys from its first one, and an answered offer is found by binary search.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How long an unanswered offer counts toward admission control.
pub const ANSWER_GRACE: Duration = Duration::from_secs(1);

/// Passes remembered at most (one per `allocation_batch`, 10 ms by default, so about 100
/// within [`ANSWER_GRACE`]); the oldest are forgotten first.
const MAX_PASSES: usize = 1_024;

/// One pass's offers: keys from `first_key` up to the next pass's first key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Pass<T> {
    made_at: T,
    first_key: u64,
    unanswered: usize,
}

/// Offers younger than [`ANSWER_GRACE`] that are still outstanding. Generic over the time
/// type so that its tests need no clock; the master uses `Instant`.
#[derive(Debug)]
pub struct UnansweredOffers<T = Instant> {
    passes: VecDeque<Pass<T>>,
    total: usize,
}

impl<T> Default for UnansweredOffers<T> {
    fn default() -> Self {
        UnansweredOffers {
            passes: VecDeque::new(),
            total: 0,
        }
    }
}

impl<T: Ord + Copy> UnansweredOffers<T> {
    /// A pass at `at` made `count` offers with keys from `first_key` (above every earlier
    /// pass's keys).
    pub fn made(&mut self, at: T, first_key: u64, count: usize) {
        if count == 0 {
            return;
        }
        if self.passes.len() >= MAX_PASSES {
            self.forget_oldest();
        }
        self.passes.push_back(Pass {
            made_at: at,
            first_key,
            unanswered: count,
        });
        self.total += count;
    }

    /// The offer with `key` was answered or taken back (once per offer).
    pub fn answered(&mut self, key: u64) {
        let after = self.passes.partition_point(|p| p.first_key <= key);
        let Some(pass) = after.checked_sub(1).and_then(|i| self.passes.get_mut(i)) else {
            return; // made before the oldest pass remembered
        };
        if pass.unanswered > 0 {
            pass.unanswered -= 1;
            self.total -= 1;
        }
    }

    /// Forgets the passes made at or before `cutoff` (now minus [`ANSWER_GRACE`]).
    pub fn expire(&mut self, cutoff: T) {
        while self.passes.front().is_some_and(|p| p.made_at <= cutoff) {
            self.forget_oldest();
        }
    }

    /// When the oldest remembered pass was made (its offers stop counting
    /// [`ANSWER_GRACE`] later).
    pub fn oldest(&self) -> Option<T> {
        self.passes.front().map(|p| p.made_at)
    }

    /// Offers counted: made within the grace and not answered.
    pub fn count(&self) -> usize {
        self.total
    }

    fn forget_oldest(&mut self) {
        if let Some(p) = self.passes.pop_front() {
            self.total -= p.unanswered;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_offer_counts_until_its_framework_answers() {
        let mut u = UnansweredOffers::<u64>::default();
        u.made(0, 10, 3); // keys 10, 11, 12
        u.made(5, 13, 2); // keys 13, 14
        assert_eq!(u.count(), 5);
        u.answered(11);
        u.answered(14);
        assert_eq!(u.count(), 3);
        u.answered(9); // before any pass remembered
        assert_eq!(u.count(), 3);
    }

    #[test]
    fn offers_stop_counting_after_the_grace_answered_or_not() {
        let mut u = UnansweredOffers::<u64>::default();
        u.made(0, 1, 4);
        u.made(7, 5, 4);
        assert_eq!(u.oldest(), Some(0));
        u.expire(3);
        assert_eq!(u.count(), 4);
        assert_eq!(u.oldest(), Some(7));
        // An answer to a forgotten pass's offer changes nothing.
        u.answered(2);
        assert_eq!(u.count(), 4);
        u.expire(7);
        assert_eq!(u.count(), 0);
        assert_eq!(u.oldest(), None);
    }

    #[test]
    fn a_pass_never_counts_below_zero() {
        let mut u = UnansweredOffers::<u64>::default();
        u.made(0, 1, 1);
        u.answered(1);
        u.answered(1);
        assert_eq!(u.count(), 0);
        u.made(1, 2, 0); // an empty pass is not remembered
        assert_eq!(u.oldest(), Some(0));
    }

    #[test]
    fn the_book_is_bounded() {
        let mut u = UnansweredOffers::<u64>::default();
        for i in 0..(MAX_PASSES as u64 + 10) {
            u.made(i, i, 1);
        }
        assert_eq!(u.count(), MAX_PASSES);
        assert_eq!(u.oldest(), Some(10));
    }
}
