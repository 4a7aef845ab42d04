//! Ranking: text relevance combined with signals this node can verify, by a
//! small linear model whose weights the nodes learn together (see `learn`).
//!
//! Every feature is in [0, 1] so the weights are comparable:
//! - `text`: BM25 relative to the best candidate of the same query;
//! - `quality`: the quality score / 100;
//! - `attested`: n / (n + 1), n = distinct members with a current passing
//!   attestation (keys that are not members cost nothing to make, so they do
//!   not move ranking);
//! - `installs`: l / (l + 2), l = ln(1 + installs from the learning aggregates);
//! - `recency`: exp(-age in days / 365).

use serde::Serialize;

use super::catalog::Entry;

// The feature order and the starting weights are the learning schema's
// (text first, then trust and quality signals strong enough to order equally
// relevant packs, recency a tie-breaker).
pub use crate::learn::model::{DEFAULT_WEIGHTS, FEATURE_NAMES, FEATURES};

const DAY_MS: f64 = 86_400_000.0;

/// `e` with [`Entry::signals`] filled as of `now_ms`.
pub fn with_signals(mut e: Entry, now_ms: u64) -> Entry {
    e.signals = features(&e, 1.0, 1.0, now_ms).map(|x| x as f32);
    e
}

/// A result's feature vector.
pub fn features(e: &Entry, bm25: f32, best_bm25: f32, now_ms: u64) -> [f64; FEATURES] {
    let text = if best_bm25 > 0.0 {
        (f64::from(bm25) / f64::from(best_bm25)).clamp(0.0, 1.0)
    } else {
        1.0
    };
    let n = f64::from(e.attesters);
    let age_days = now_ms.saturating_sub(e.published_ms) as f64 / DAY_MS;
    [
        text,
        f64::from(e.quality.min(100)) / 100.0,
        n / (n + 1.0),
        installs_feature(e.installs),
        (-age_days / 365.0).exp(),
    ]
}

/// The `installs` feature: l / (l + 2), l = ln(1 + installs).
pub fn installs_feature(installs: u64) -> f64 {
    let l = (1.0 + installs as f64).ln();
    l / (l + 2.0)
}

/// A result's score parts (`--explain`): each weight times its feature.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct Explain {
    pub text: f64,
    pub quality: f64,
    pub attested: f64,
    pub installs: f64,
    pub recency: f64,
    /// The raw text score the first part is relative to.
    pub bm25: f64,
}

pub fn score(weights: &[f64; FEATURES], f: &[f64; FEATURES]) -> f64 {
    weights.iter().zip(f).map(|(w, x)| w * x).sum()
}

pub fn explain(weights: &[f64; FEATURES], f: &[f64; FEATURES], bm25: f32) -> Explain {
    Explain {
        text: weights[0] * f[0],
        quality: weights[1] * f[1],
        attested: weights[2] * f[2],
        installs: weights[3] * f[3],
        recency: weights[4] * f[4],
        bm25: f64::from(bm25),
    }
}

/// The first-pass score the index collects candidates by: BM25 nudged by the
/// signals, so that among many equal text matches the trusted ones make the
/// candidate list (the final order is [`score`] over [`features`]).
pub fn prior(weights: &[f64; FEATURES], e: &Entry, bm25: f32) -> f32 {
    bm25 * prior_factor(weights, e)
}

/// What [`prior`] multiplies BM25 by: it does not depend on the query, so
/// the catalog keeps it per entry.
pub fn prior_factor(weights: &[f64; FEATURES], e: &Entry) -> f32 {
    let f = e.signals.map(f64::from);
    let total: f64 = weights[1..].iter().map(|w| w.abs()).sum();
    let signal = if total > 0.0 {
        (score(weights, &f) - weights[0] * f[0]) / total
    } else {
        0.0
    };
    1.0 + 0.2 * signal.clamp(-1.0, 1.0) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        let mut e = crate::search::catalog::tests::entry("a/x", "1.0.0", 1);
        e.quality = 80;
        e
    }

    #[test]
    fn features_are_bounded_and_attestation_raises_score() {
        let mut e = entry();
        let plain = features(&e, 3.0, 6.0, 365 * 86_400_000);
        assert_eq!(plain[0], 0.5);
        assert_eq!(plain[1], 0.8);
        assert_eq!(plain[2], 0.0);
        assert!((plain[4] - (-1f64).exp()).abs() < 1e-12);
        e.attesters = 1;
        e.installs = 1_000_000;
        let attested = features(&e, 3.0, 6.0, 365 * 86_400_000);
        assert_eq!(attested[2], 0.5);
        assert!(attested.iter().all(|x| (0.0..=1.0).contains(x)));
        assert!(score(&DEFAULT_WEIGHTS, &attested) > score(&DEFAULT_WEIGHTS, &plain));
        e = with_signals(e, 0);
        let plain = with_signals(entry(), 0);
        assert!(prior(&DEFAULT_WEIGHTS, &e, 2.0) > prior(&DEFAULT_WEIGHTS, &plain, 2.0));
    }

    #[test]
    fn explain_parts_sum_to_the_score() {
        let f = features(&entry(), 1.0, 2.0, 0);
        let x = explain(&DEFAULT_WEIGHTS, &f, 1.0);
        let sum = x.text + x.quality + x.attested + x.installs + x.recency;
        assert!((sum - score(&DEFAULT_WEIGHTS, &f)).abs() < 1e-12);
    }
}
