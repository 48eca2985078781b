//! Latency samples and their percentiles, for the scenarios' tables. Pure: no clock, no IO.

use std::time::Duration;

/// At most this many samples are kept; later ones are counted but not stored (a run at a few
/// thousand launches per second for ten minutes stays under it).
pub const MAX_SAMPLES: usize = 4_000_000;

/// Durations in microseconds, kept in arrival order until summarised.
#[derive(Clone, Debug, Default)]
pub struct Latencies {
    micros: Vec<u64>,
    /// Samples seen, stored or not.
    count: u64,
}

/// p50, p99 and max of a set of durations.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Summary {
    pub count: u64,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Latencies {
    pub fn record(&mut self, d: Duration) {
        self.count += 1;
        if self.micros.len() < MAX_SAMPLES {
            self.micros
                .push(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        }
    }

    pub fn extend(&mut self, other: &Latencies) {
        self.count += other.count;
        let room = MAX_SAMPLES.saturating_sub(self.micros.len());
        self.micros.extend(other.micros.iter().take(room).copied());
    }

    /// The first `n` samples stored, and the rest.
    pub fn split_at(&self, n: usize) -> (Latencies, Latencies) {
        let (a, b) = self.micros.split_at(n.min(self.micros.len()));
        let part = |v: &[u64]| Latencies {
            micros: v.to_vec(),
            count: v.len() as u64,
        };
        (part(a), part(b))
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn summary(&self) -> Summary {
        let mut sorted = self.micros.clone();
        sorted.sort_unstable();
        let at = |q: f64| Duration::from_micros(percentile(&sorted, q));
        Summary {
            count: self.count,
            p50: at(0.50),
            p99: at(0.99),
            max: at(1.0),
        }
    }
}

/// The `q` quantile (0..=1) of ascending `sorted` by the nearest-rank method: the smallest
/// value with at least `q` of the samples at or below it. Zero for no samples.
pub fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Milliseconds with one decimal, for tables.
pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.5), 50);
        assert_eq!(percentile(&v, 0.99), 99);
        assert_eq!(percentile(&v, 1.0), 100);
        assert_eq!(percentile(&v, 0.0), 1);
        assert_eq!(percentile(&[7], 0.99), 7);
        assert_eq!(percentile(&[], 0.5), 0);
    }

    #[test]
    fn summary_of_unsorted_samples() {
        let mut l = Latencies::default();
        for ms in [30u64, 10, 20, 1000] {
            l.record(Duration::from_millis(ms));
        }
        let s = l.summary();
        assert_eq!(s.count, 4);
        assert_eq!(s.p50, Duration::from_millis(20));
        assert_eq!(s.p99, Duration::from_millis(1000));
        assert_eq!(s.max, Duration::from_millis(1000));
        let mut all = Latencies::default();
        all.extend(&l);
        all.extend(&l);
        assert_eq!(all.summary().count, 8);
        let (first, rest) = l.split_at(1);
        assert_eq!(first.summary().max, Duration::from_millis(30));
        assert_eq!(rest.summary().count, 3);
    }
}
