//! The ranking model (schema version 1): a linear score over five features of a
//! search result, each in [0, 1] so that the weights are comparable.
//!
//! | index | name       | feature                                                   |
//! |-------|------------|-----------------------------------------------------------|
//! | 0     | `text`     | BM25 / best BM25 among the query's candidates             |
//! | 1     | `quality`  | quality score / 100                                       |
//! | 2     | `attested` | n / (n + 1), n = distinct attesters with passing verdicts |
//! | 3     | `installs` | l / (l + 2), l = ln(1 + installs)                         |
//! | 4     | `recency`  | exp(-age in days / 365)                                   |
//!
//! score = w · f. Only the order of scores matters, so a positive rescaling of
//! `w` ranks identically; [`MAX_WEIGHT`] bounds the weights so that a model
//! received from peers cannot carry absurd magnitudes.

use serde::{Deserialize, Serialize};

/// Bumped whenever the features or their meaning change; models and updates
/// of another schema must not be mixed.
pub const SCHEMA_VERSION: u32 = 1;
/// Number of features, in the order of [`FEATURE_NAMES`].
pub const FEATURES: usize = 5;
pub const FEATURE_NAMES: [&str; FEATURES] = ["text", "quality", "attested", "installs", "recency"];
/// The fixed starting weights: text first, trust and quality strong enough to
/// order equally relevant results, recency a tie-breaker.
pub const DEFAULT_WEIGHTS: [f64; FEATURES] = [1.0, 0.25, 0.3, 0.2, 0.05];
/// Largest absolute weight a valid model may have.
pub const MAX_WEIGHT: f64 = 10.0;

/// A ranking model: one weight per feature.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Model {
    pub weights: [f64; FEATURES],
}

impl Default for Model {
    fn default() -> Self {
        Self::default_weights()
    }
}

impl Model {
    /// The fixed default weights ([`DEFAULT_WEIGHTS`]).
    pub fn default_weights() -> Self {
        Model {
            weights: DEFAULT_WEIGHTS,
        }
    }

    /// w · f.
    pub fn score(&self, f: &[f64; FEATURES]) -> f64 {
        dot(&self.weights, f)
    }

    /// Indices of `candidates`, best score first; equal scores keep index
    /// order, and a NaN score (from non-finite input) ranks last.
    pub fn rank(&self, candidates: &[[f64; FEATURES]]) -> Vec<usize> {
        let scores: Vec<f64> = candidates
            .iter()
            .map(|f| {
                let s = self.score(f);
                if s.is_nan() { f64::NEG_INFINITY } else { s }
            })
            .collect();
        let mut order: Vec<usize> = (0..candidates.len()).collect();
        // Stable sort: ties stay in index order. No NaN is left, so
        // partial_cmp always answers (and treats -0.0 == 0.0 as a tie).
        order.sort_by(|&a, &b| scores[b].partial_cmp(&scores[a]).unwrap_or(std::cmp::Ordering::Equal));
        order
    }

    /// A model is valid when every weight is finite and |w| <= [`MAX_WEIGHT`].
    pub fn check(&self) -> Result<(), String> {
        for (name, w) in FEATURE_NAMES.iter().zip(&self.weights) {
            if !w.is_finite() {
                return Err(format!("weight {name} is not finite"));
            }
            if w.abs() > MAX_WEIGHT {
                return Err(format!("weight {name} = {w} exceeds {MAX_WEIGHT} in magnitude"));
            }
        }
        Ok(())
    }

    /// This model moved by `delta` (an aggregated update), each weight clamped
    /// to ±[`MAX_WEIGHT`]; a non-finite delta coordinate leaves its weight as
    /// it was, so the result of a valid model is always valid.
    pub fn apply(&self, delta: &[f64; FEATURES]) -> Model {
        let mut weights = self.weights;
        for (w, d) in weights.iter_mut().zip(delta) {
            let moved = *w + d;
            if moved.is_finite() {
                *w = moved.clamp(-MAX_WEIGHT, MAX_WEIGHT);
            }
        }
        Model { weights }
    }
}

pub(crate) fn dot(a: &[f64; FEATURES], b: &[f64; FEATURES]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Euclidean norm without overflow for huge finite coordinates (it scales by
/// the largest magnitude first); NaN if any coordinate is NaN, +inf if any is
/// infinite.
pub fn norm(v: &[f64; FEATURES]) -> f64 {
    if v.iter().any(|x| x.is_nan()) {
        return f64::NAN;
    }
    let m = v.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    if m == 0.0 || m.is_infinite() {
        return m;
    }
    m * v.iter().map(|x| (x / m) * (x / m)).sum::<f64>().sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn score_is_the_dot_product() {
        let m = Model::default_weights();
        assert_eq!(m.score(&[1.0, 0.0, 0.0, 0.0, 0.0]), 1.0);
        let s = m.score(&[0.5, 1.0, 0.5, 1.0, 1.0]);
        assert!((s - (0.5 + 0.25 + 0.15 + 0.2 + 0.05)).abs() < 1e-12);
    }

    #[test]
    fn rank_orders_best_first_with_ties_by_index_and_nan_last() {
        let m = Model::default_weights();
        let c = [
            [0.5, 0.0, 0.0, 0.0, 0.0],
            [1.0, 0.0, 0.0, 0.0, 0.0],
            [f64::NAN, 0.0, 0.0, 0.0, 0.0],
            [0.5, 0.0, 0.0, 0.0, 0.0],
            [0.0; 5],
        ];
        assert_eq!(m.rank(&c), vec![1, 0, 3, 4, 2]);
        assert!(m.rank(&[]).is_empty());
        // -0.0 and 0.0 tie.
        let z = Model {
            weights: [1.0, 0.0, 0.0, 0.0, 0.0],
        };
        assert_eq!(z.rank(&[[0.0; 5], [-0.0, 0.0, 0.0, 0.0, 0.0]]), vec![0, 1]);
    }

    #[test]
    fn check_rejects_non_finite_and_large_weights() {
        assert!(Model::default_weights().check().is_ok());
        assert!(
            Model {
                weights: [10.0, -10.0, 0.0, 0.0, 0.0]
            }
            .check()
            .is_ok()
        );
        assert!(
            Model {
                weights: [10.01, 0.0, 0.0, 0.0, 0.0]
            }
            .check()
            .is_err()
        );
        assert!(
            Model {
                weights: [0.0, f64::NAN, 0.0, 0.0, 0.0]
            }
            .check()
            .is_err()
        );
        assert!(
            Model {
                weights: [0.0, 0.0, f64::NEG_INFINITY, 0.0, 0.0]
            }
            .check()
            .is_err()
        );
    }

    #[test]
    fn apply_clamps_and_ignores_non_finite() {
        let m = Model::default_weights().apply(&[100.0, f64::NAN, -0.3, 0.0, f64::INFINITY]);
        assert_eq!(m.weights, [MAX_WEIGHT, 0.25, 0.0, 0.2, 0.05]);
        assert!(m.check().is_ok());
    }

    #[test]
    fn norm_handles_extremes() {
        assert_eq!(norm(&[3.0, 4.0, 0.0, 0.0, 0.0]), 5.0);
        assert_eq!(norm(&[0.0; 5]), 0.0);
        let big = norm(&[1e300, 1e300, 0.0, 0.0, 0.0]);
        assert!((big / 1e300 - 2f64.sqrt()).abs() < 1e-12);
        assert!(norm(&[f64::NAN, 0.0, 0.0, 0.0, 0.0]).is_nan());
        assert_eq!(norm(&[f64::NEG_INFINITY, 0.0, 0.0, 0.0, 0.0]), f64::INFINITY);
    }
}
