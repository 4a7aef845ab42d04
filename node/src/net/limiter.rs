//! Per-peer rate limits (searches a node answers, registry sync requests
//! and their bytes): a token bucket per peer (pure; the caller passes the
//! time). A peer that floods gets a clear refusal instead of the node's CPU.

use std::collections::HashMap;
use std::hash::Hash;

/// Sustained queries per second and burst per peer.
pub const RATE_PER_SEC: f64 = 20.0;
pub const BURST: f64 = 40.0;
/// Peers remembered at most; the idlest are forgotten first.
const MAX_PEERS: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at_ms: u64,
}

/// Token buckets keyed by peer.
#[derive(Debug)]
pub struct RateLimiter<K> {
    rate: f64,
    burst: f64,
    buckets: HashMap<K, Bucket>,
}

impl<K: Hash + Eq + Clone> Default for RateLimiter<K> {
    fn default() -> Self {
        RateLimiter::new(RATE_PER_SEC, BURST)
    }
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    pub fn new(rate: f64, burst: f64) -> Self {
        RateLimiter {
            rate,
            burst,
            buckets: HashMap::new(),
        }
    }

    /// Takes one token for `peer` at `now_ms`; false if it has none left.
    pub fn allow(&mut self, peer: &K, now_ms: u64) -> bool {
        self.allow_n(peer, 1.0, now_ms)
    }

    /// Takes `cost` tokens (bytes, for a byte budget); false, taking
    /// nothing, if fewer are left.
    pub fn allow_n(&mut self, peer: &K, cost: f64, now_ms: u64) -> bool {
        if self.buckets.len() >= MAX_PEERS && !self.buckets.contains_key(peer) {
            // Full buckets carry no information: forget them first.
            let (rate, burst) = (self.rate, self.burst);
            self.buckets
                .retain(|_, b| b.tokens + now_ms.saturating_sub(b.at_ms) as f64 / 1000.0 * rate < burst);
            if self.buckets.len() >= MAX_PEERS {
                return false;
            }
        }
        let b = self.buckets.entry(peer.clone()).or_insert(Bucket {
            tokens: self.burst,
            at_ms: now_ms,
        });
        let elapsed = now_ms.saturating_sub(b.at_ms) as f64 / 1000.0;
        b.tokens = (b.tokens + elapsed * self.rate).min(self.burst);
        b.at_ms = b.at_ms.max(now_ms);
        if b.tokens >= cost {
            b.tokens -= cost;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_cut_to_the_burst_then_the_rate() {
        let mut l = RateLimiter::new(10.0, 5.0);
        let allowed = (0..100).filter(|_| l.allow(&"p", 1_000)).count();
        assert_eq!(allowed, 5, "burst");
        assert!(!l.allow(&"p", 1_050), "half a token after 50 ms");
        assert!(l.allow(&"p", 1_100), "one token after 100 ms");
        assert!(l.allow(&"q", 1_100), "other peers are not affected");
        let later = (0..100).filter(|_| l.allow(&"p", 60_000)).count();
        assert_eq!(later, 5, "refills to the burst, not beyond");
    }

    #[test]
    fn a_byte_budget_takes_what_a_message_costs() {
        let mut l = RateLimiter::new(1000.0, 4000.0);
        assert!(l.allow_n(&"p", 3000.0, 0));
        assert!(!l.allow_n(&"p", 2000.0, 0), "1000 left");
        assert!(l.allow_n(&"p", 1000.0, 0), "a refusal took nothing");
        assert!(l.allow_n(&"p", 1000.0, 1_000), "refilled 1000 in 1 s");
    }

    #[test]
    fn time_going_backwards_gives_nothing() {
        let mut l = RateLimiter::new(10.0, 1.0);
        assert!(l.allow(&1, 10_000));
        assert!(!l.allow(&1, 5_000));
    }
}
