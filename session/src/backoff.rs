//! Jittered exponential backoff, the retry schedule of every client of the masters.

use std::time::Duration;

/// Waits that start at `first`, double after each one up to `max`, and are each jittered by
/// ±25% so that a fleet of clients retrying after the same event (a master died) does not come
/// back in lockstep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// A backoff whose first wait is about `first` and whose waits never exceed about `max`
    /// (a `max` below `first` is taken as `first`).
    pub fn new(first: Duration, max: Duration) -> Backoff {
        Backoff {
            first,
            max: max.max(first),
            next: first,
        }
    }

    /// The next wait, jittered into `[0.75, 1.25)` of its nominal value; the nominal value then
    /// doubles, up to `max`.
    pub fn next_wait(&mut self) -> Duration {
        self.next_wait_with(rand::random::<f64>())
    }

    /// [`Backoff::next_wait`] with the random draw `unit` in `[0, 1)` given (tests).
    pub fn next_wait_with(&mut self, unit: f64) -> Duration {
        let wait = self.next.mul_f64(0.75 + unit.clamp(0.0, 1.0) * 0.5);
        self.next = (self.next * 2).min(self.max);
        wait
    }

    /// The nominal (unjittered) next wait.
    pub fn peek(&self) -> Duration {
        self.next
    }

    /// Starts again from `first` (after a success).
    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn doubles_up_to_the_maximum_within_the_jitter_and_resets() {
        let mut b = Backoff::new(100 * MS, 500 * MS);
        let nominal = [100, 200, 400, 500, 500];
        for n in nominal {
            let lo = b.clone().next_wait_with(0.0);
            let hi = b.clone().next_wait_with(0.999_999);
            assert_eq!(lo, n * MS * 3 / 4, "nominal {n} ms");
            assert!(hi < n * MS * 5 / 4 && hi > n * MS * 5 / 4 - MS, "{hi:?}");
            let w = b.next_wait();
            assert!(w >= lo && w <= hi, "{w:?} outside [{lo:?}, {hi:?}]");
        }
        b.reset();
        assert_eq!(b.peek(), 100 * MS);
    }

    #[test]
    fn a_maximum_below_the_first_wait_is_the_first_wait() {
        let mut b = Backoff::new(300 * MS, 10 * MS);
        assert_eq!(b.next_wait_with(0.5), 300 * MS);
        assert_eq!(b.peek(), 300 * MS);
    }
}
