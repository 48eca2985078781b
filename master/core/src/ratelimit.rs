//! Per-principal rate limits on framework calls: a token bucket per certificate name
//! (`MasterConfig::framework_rate_limit`, off by default). A call over the limit is answered
//! with a "rate limited" error, never dropped silently, and costs the master one map lookup.
//! Tests: `tests/it/policy.rs` (this crate's `src/` reads no clock).

use crate::config::limits;
use std::collections::BTreeMap;
use std::time::Instant;

/// Calls per second, with a burst: a principal idle long enough may make `burst` calls at once,
/// then `per_second` on average.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: u32,
}

impl RateLimit {
    /// `per_second` finite and positive, `burst` at least 1.
    pub fn check(&self) -> Result<(), String> {
        if !self.per_second.is_finite() || self.per_second <= 0.0 {
            return Err(format!(
                "the call rate must be a positive number of calls per second, not {}",
                self.per_second
            ));
        }
        if self.burst == 0 {
            return Err("the burst must be at least 1 call".to_owned());
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The buckets of the principals that called lately. A full bucket is the same as none, so
/// when the map reaches `MAX_SESSIONS` principals the full ones are dropped; if none is, a new
/// principal is let through unmetered rather than the map grown.
#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: BTreeMap<String, Bucket>,
}

impl RateLimiter {
    /// Takes a token of `principal`'s bucket: false when it has none left.
    pub fn admit(&mut self, limit: RateLimit, principal: &str, now: Instant) -> bool {
        let burst = f64::from(limit.burst.max(1));
        let refill = |b: &Bucket| {
            let secs = now.saturating_duration_since(b.at).as_secs_f64();
            (b.tokens + secs * limit.per_second).min(burst)
        };
        if let Some(b) = self.buckets.get_mut(principal) {
            let tokens = refill(b);
            *b = Bucket { tokens, at: now };
            if tokens < 1.0 {
                return false;
            }
            b.tokens -= 1.0;
            return true;
        }
        if self.buckets.len() >= limits::MAX_SESSIONS {
            self.buckets.retain(|_, b| refill(b) < burst);
            if self.buckets.len() >= limits::MAX_SESSIONS {
                return true;
            }
        }
        let tokens = burst - 1.0;
        self.buckets
            .insert(principal.to_owned(), Bucket { tokens, at: now });
        true
    }
}
