//! What the replicated registry knows about join tokens (see `certs::join` for the design):
//! per token id that was used or revoked, its expiry, the keys that joined with it and whether
//! it was revoked. The masters never hold a token's secret: the daemon checks a token's MAC
//! with the CA key, and this table decides, in log order and so the same way on every master,
//! whether one more join may use it. A token id absent from the table is unused and not
//! revoked. Entries are dropped once their token has expired (checked against each op's
//! timestamp), and the table holds at most [`MAX_JOIN_TOKENS`] entries: a join with a token the
//! full table does not know is refused (and a revocation of one is still recorded by evicting
//! the entry expiring first, so revoking always works).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Token ids remembered at once (used or revoked, not yet expired).
pub const MAX_JOIN_TOKENS: usize = 10_000;
/// How long a revoked token whose expiry the operator did not give is remembered: the longest a
/// token may live (`certs::MAX_TOKEN_TTL_SECS`).
pub const REVOKED_UNKNOWN_EXPIRY_MS: u64 = 30 * 24 * 3600 * 1000;
/// Joins one token may allow at most (`certs::MAX_TOKEN_USES`).
pub const MAX_USES: u32 = 1000;

/// One token's uses.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinTokenUses {
    /// Wall-clock ms after which the token is refused anyway (the entry is then dropped).
    pub expires_ms: u64,
    /// Fingerprints of the keys that joined with it, oldest first.
    pub keys: Vec<String>,
    pub revoked: bool,
}

/// The table of used and revoked tokens.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinTokens {
    tokens: BTreeMap<String, JoinTokenUses>,
}

impl JoinTokens {
    pub fn get(&self, token_id: &str) -> Option<&JoinTokenUses> {
        self.tokens.get(token_id)
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Whether the key `key_fingerprint` joined with `token_id` (after the daemon's
    /// `JoinTokenUsed` committed: whether its join won a use).
    pub fn joined(&self, token_id: &str, key_fingerprint: &str) -> bool {
        self.get(token_id)
            .is_some_and(|t| t.keys.iter().any(|k| k == key_fingerprint))
    }

    /// Records one join if the token has a use left, is not revoked and has not expired at
    /// `at_ms`. A key already recorded is not counted twice (a retried join).
    pub fn use_token(
        &mut self,
        token_id: &str,
        max_uses: u32,
        expires_ms: u64,
        at_ms: u64,
        key_fingerprint: &str,
    ) {
        self.forget_expired(at_ms);
        if at_ms >= expires_ms || self.joined(token_id, key_fingerprint) {
            return;
        }
        if !self.tokens.contains_key(token_id) && self.tokens.len() >= MAX_JOIN_TOKENS {
            return;
        }
        let entry = self.tokens.entry(token_id.to_owned()).or_default();
        entry.expires_ms = entry.expires_ms.max(expires_ms);
        if !entry.revoked && entry.keys.len() < max_uses.min(MAX_USES) as usize {
            entry.keys.push(key_fingerprint.to_owned());
        }
    }

    /// Marks `token_id` revoked until `expires_ms` (or [`REVOKED_UNKNOWN_EXPIRY_MS`] after
    /// `at_ms` when unknown, 0).
    pub fn revoke(&mut self, token_id: &str, expires_ms: u64, at_ms: u64) {
        self.forget_expired(at_ms);
        let expires_ms = match expires_ms {
            0 => at_ms.saturating_add(REVOKED_UNKNOWN_EXPIRY_MS),
            e => e,
        };
        if !self.tokens.contains_key(token_id) && self.tokens.len() >= MAX_JOIN_TOKENS {
            let first = self
                .tokens
                .iter()
                .min_by_key(|(_, t)| t.expires_ms)
                .map(|(id, _)| id.clone());
            if let Some(id) = first {
                self.tokens.remove(&id);
            }
        }
        let entry = self.tokens.entry(token_id.to_owned()).or_default();
        entry.expires_ms = entry.expires_ms.max(expires_ms);
        entry.revoked = true;
    }

    fn forget_expired(&mut self, at_ms: u64) {
        self.tokens.retain(|_, t| t.expires_ms > at_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_use_token_admits_one_key_and_a_retry_of_it() {
        let mut t = JoinTokens::default();
        t.use_token("a", 1, 100, 10, "k1");
        t.use_token("a", 1, 100, 11, "k2");
        t.use_token("a", 1, 100, 12, "k1");
        assert!(t.joined("a", "k1"));
        assert!(!t.joined("a", "k2"));
        assert_eq!(t.get("a").unwrap().keys, vec!["k1".to_owned()]);
    }

    #[test]
    fn a_counted_token_admits_that_many_keys() {
        let mut t = JoinTokens::default();
        for k in ["k1", "k2", "k3"] {
            t.use_token("a", 2, 100, 10, k);
        }
        assert!(t.joined("a", "k1") && t.joined("a", "k2") && !t.joined("a", "k3"));
    }

    #[test]
    fn revoked_and_expired_tokens_admit_nobody() {
        let mut t = JoinTokens::default();
        t.revoke("a", 0, 10);
        t.use_token("a", 5, 100, 11, "k1");
        assert!(!t.joined("a", "k1"));
        assert_eq!(
            t.get("a").unwrap().expires_ms,
            10 + REVOKED_UNKNOWN_EXPIRY_MS
        );
        t.use_token("b", 5, 100, 100, "k1");
        assert!(!t.joined("b", "k1"));
        // An entry is forgotten once its token expired.
        t.use_token("c", 1, 50, 20, "k1");
        t.use_token("d", 1, 500, 60, "k1");
        assert!(t.get("c").is_none() && t.joined("d", "k1"));
    }

    #[test]
    fn the_table_is_bounded_but_revocation_always_lands() {
        let mut t = JoinTokens::default();
        for i in 0..MAX_JOIN_TOKENS {
            t.use_token(&format!("t{i}"), 1, 1_000 + i as u64, 1, "k");
        }
        t.use_token("late", 1, 5_000, 2, "k");
        assert!(!t.joined("late", "k"));
        t.revoke("late", 5_000, 2);
        assert!(t.get("late").unwrap().revoked);
        assert!(t.get("t0").is_none());
        assert_eq!(t.len(), MAX_JOIN_TOKENS);
    }
}
