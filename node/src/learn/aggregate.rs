//! Robust aggregation of the peers' updates for one round.
//!
//! Each [`Contribution`] is a node's delta and the number of events it
//! trained on. Its weight is `min(samples, sample_cap)`, so a node claiming
//! 10^9 samples weighs no more than one that really had `sample_cap`. Every
//! rule works coordinate by coordinate over the values sorted by (value, node
//! id), so the result does not depend on the order the contributions arrived
//! in (the floating-point sums are always taken in that order).
//!
//! Before any rule: contributions with a non-finite coordinate or zero samples
//! are dropped, identical copies of one node's contribution count once, and a
//! node that sent two *different* contributions (equivocation) is dropped
//! altogether.
//!
//! - [`Rule::Mean`]: the weighted mean; one poisoned delta can move it without
//!   bound (the non-robust baseline).
//! - [`Rule::TrimmedMean`]: trims **by count**: with n contributions, cut
//!   k = ⌊trim·n⌋ (at most ⌊(n−1)/2⌋, so one value is always left) from each end
//!   of every coordinate, then take the weighted mean of the rest.
//!   *Bound*: if at most k contributions are poisoned, each output coordinate
//!   lies in [min, max] of the honest contributions' values, whatever values
//!   and sample counts the poisoned ones claim. Proof: were a kept value below
//!   the honest minimum, it and the k values sorted below it would all be
//!   poisoned, k + 1 > k of them; symmetrically above. So every kept value is in
//!   the honest range, and so is any weighted mean of them (the result is
//!   clamped to the kept values' range to keep this exact under rounding).
//!   Trimming by weight instead would make the bound depend on the weights the
//!   attackers claim; by count it depends only on how many there are.
//! - [`Rule::Median`]: the weighted median (the lowest value whose cumulative
//!   weight reaches half; the midpoint of two values when the cumulative weight
//!   is exactly half, so equal weights give the usual median). *Bound*: if the
//!   poisoned contributions hold less than half of the capped weight, each
//!   output coordinate lies in the honest [min, max] (a value below the honest
//!   minimum has only poisoned values below it, less than half the weight).

use serde::{Deserialize, Serialize};

use super::model::{FEATURES, norm};

/// One node's update for a round.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Contribution {
    pub node: [u8; 32],
    pub delta: [f64; FEATURES],
    pub samples: u64,
}

/// How a round's contributions are combined.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Rule {
    /// Plain sample-weighted average: the non-robust baseline.
    Mean,
    /// Coordinate-wise trimmed mean; `trim` is the fraction of contributions
    /// (by count) cut from each end, e.g. 0.2. Non-finite or negative means 0.
    TrimmedMean { trim: f64 },
    /// Coordinate-wise weighted median.
    Median,
}

/// Relative slack in [`validate`], so that a delta clipped to exactly
/// `max_norm` passes despite rounding in the norm.
const NORM_SLACK: f64 = 1e-9;

/// Rejects a received delta that is non-finite or longer than `max_norm`.
pub fn validate(delta: &[f64; FEATURES], max_norm: f64) -> Result<(), String> {
    if !(max_norm.is_finite() && max_norm >= 0.0) {
        return Err(format!("max_norm must be finite and >= 0, got {max_norm}"));
    }
    if delta.iter().any(|x| !x.is_finite()) {
        return Err("delta has a non-finite coordinate".to_string());
    }
    let n = norm(delta);
    if n > max_norm * (1.0 + NORM_SLACK) {
        return Err(format!("delta norm {n} exceeds {max_norm}"));
    }
    Ok(())
}

/// How many values [`Rule::TrimmedMean`] cuts from each end of `n`.
pub fn trim_count(n: usize, trim: f64) -> usize {
    if n == 0 || trim.is_nan() || trim <= 0.0 {
        return 0;
    }
    let k = (trim * n as f64).floor();
    let most = (n - 1) / 2;
    if k >= most as f64 { most } else { k as usize }
}

/// The round's aggregated delta, or None when no usable contribution is left.
pub fn aggregate(contribs: &[Contribution], rule: Rule, sample_cap: u64) -> Option<[f64; FEATURES]> {
    let kept = usable(contribs);
    if kept.is_empty() {
        return None;
    }
    let cap = sample_cap.max(1);
    let weights: Vec<u64> = kept.iter().map(|c| c.samples.min(cap)).collect();
    let mut out = [0.0; FEATURES];
    for (k, o) in out.iter_mut().enumerate() {
        // (value, weight) sorted by value, then node id: kept is in node-id
        // order and the sort is stable.
        let mut col: Vec<(f64, u64)> = kept.iter().zip(&weights).map(|(c, &w)| (c.delta[k], w)).collect();
        col.sort_by(|a, b| a.0.total_cmp(&b.0));
        *o = match rule {
            Rule::Mean => weighted_mean(&col),
            Rule::TrimmedMean { trim } => {
                let t = trim_count(col.len(), trim);
                weighted_mean(&col[t..col.len() - t])
            }
            Rule::Median => weighted_median(&col),
        };
    }
    Some(out)
}

/// The contributions that take part, one per node, sorted by node id.
fn usable(contribs: &[Contribution]) -> Vec<&Contribution> {
    let mut all: Vec<&Contribution> = contribs
        .iter()
        .filter(|c| c.samples > 0 && c.delta.iter().all(|x| x.is_finite()))
        .collect();
    all.sort_by_key(|c| c.node);
    let mut out: Vec<&Contribution> = Vec::with_capacity(all.len());
    let mut i = 0;
    while i < all.len() {
        let mut j = i + 1;
        while j < all.len() && all[j].node == all[i].node {
            j += 1;
        }
        let first = all[i];
        let same = all[i + 1..j]
            .iter()
            .all(|c| c.samples == first.samples && bits(&c.delta) == bits(&first.delta));
        if same {
            out.push(first);
        }
        i = j;
    }
    out
}

fn bits(d: &[f64; FEATURES]) -> [u64; FEATURES] {
    d.map(f64::to_bits)
}

/// Weighted mean of sorted (value, weight) pairs, clamped to their range.
/// Scaled so that huge finite values and weights cannot overflow.
fn weighted_mean(col: &[(f64, u64)]) -> f64 {
    let (Some(first), Some(last)) = (col.first(), col.last()) else {
        return 0.0;
    };
    let (lo, hi) = (first.0, last.0);
    let total: f64 = col.iter().map(|&(_, w)| w as f64).sum();
    let scale = lo.abs().max(hi.abs());
    if scale == 0.0 || total <= 0.0 {
        return lo;
    }
    let s: f64 = col.iter().map(|&(x, w)| (w as f64 / total) * (x / scale)).sum();
    (s * scale).clamp(lo, hi)
}

/// Weighted median of sorted (value, weight) pairs; weights are summed as
/// integers so that "exactly half" is decided exactly.
fn weighted_median(col: &[(f64, u64)]) -> f64 {
    let total: u128 = col.iter().map(|&(_, w)| u128::from(w)).sum();
    let mut cum: u128 = 0;
    for (i, &(x, w)) in col.iter().enumerate() {
        cum += u128::from(w);
        if 2 * cum == total {
            if let Some(&(y, _)) = col.get(i + 1) {
                // x / 2 + y / 2 cannot overflow, and lies in [x, y].
                return (x / 2.0 + y / 2.0).clamp(x, y);
            }
            return x;
        }
        if 2 * cum > total {
            return x;
        }
    }
    col.last().map_or(0.0, |&(x, _)| x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn c(node: u8, delta: [f64; FEATURES], samples: u64) -> Contribution {
        Contribution {
            node: [node; 32],
            delta,
            samples,
        }
    }

    /// A contribution whose delta is `v` on every coordinate.
    fn s(node: u8, v: f64, samples: u64) -> Contribution {
        c(node, [v; FEATURES], samples)
    }

    /// The first coordinate of the aggregate (NaN for None).
    fn agg(cs: &[Contribution], rule: Rule, cap: u64) -> f64 {
        aggregate(cs, rule, cap).map_or(f64::NAN, |d| d[0])
    }

    fn tm(trim: f64) -> Rule {
        Rule::TrimmedMean { trim }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn empty_and_unusable_give_none() {
        assert_eq!(aggregate(&[], Rule::Mean, 100), None);
        let bad = [s(1, f64::NAN, 10), s(2, 1.0, 0), s(3, f64::INFINITY, 5)];
        for rule in [Rule::Mean, Rule::Median, tm(0.2)] {
            assert_eq!(aggregate(&bad, rule, 100), None);
        }
    }

    #[test]
    fn mean_is_sample_weighted_with_the_cap() {
        // (1·10 + 4·30) / 40 = 3.25
        assert!(close(agg(&[s(1, 1.0, 10), s(2, 4.0, 30)], Rule::Mean, 100), 3.25));
        // Capped at 10: (1·10 + 4·10) / 20 = 2.5, a 10^9 claim included.
        assert!(close(
            agg(&[s(1, 1.0, 10), s(2, 4.0, 1_000_000_000)], Rule::Mean, 10),
            2.5
        ));
        // A cap of 0 is treated as 1: the unweighted mean.
        assert!(close(agg(&[s(1, 1.0, 10), s(2, 4.0, 30)], Rule::Mean, 0), 2.5));
        // Coordinates are independent.
        let d = aggregate(
            &[c(1, [1.0, -1.0, 0.0, 2.0, 0.5], 1), c(2, [3.0, 1.0, 0.0, 0.0, 0.5], 1)],
            Rule::Mean,
            9,
        );
        let want = [2.0, 0.0, 0.0, 1.0, 0.5];
        assert!(
            d.is_some_and(|d| d.iter().zip(&want).all(|(a, b)| close(*a, *b))),
            "{d:?}"
        );
    }

    #[test]
    fn trimmed_mean_cuts_by_count_from_each_end() {
        let five = [s(1, 100.0, 1), s(2, 1.0, 1), s(3, 2.0, 1), s(4, 3.0, 1), s(5, -50.0, 1)];
        // trim 0.2 of 5 cuts 1 each end: mean(1, 2, 3) = 2.
        assert!(close(agg(&five, tm(0.2), 10), 2.0));
        // trim 0.1 of 5 cuts nothing: the plain mean 56 / 5.
        assert!(close(agg(&five, tm(0.1), 10), 11.2));
        // Weighted among the kept: (1·1 + 2·1 + 3·6) / 8.
        let w = [s(1, 100.0, 1), s(2, 1.0, 1), s(3, 2.0, 1), s(4, 3.0, 6), s(5, -50.0, 1)];
        assert!(close(agg(&w, tm(0.2), 10), 21.0 / 8.0));
        // Even count, trim >= 0.5: the two middle values are left.
        let four = [s(1, 1.0, 1), s(2, 2.0, 1), s(3, 4.0, 1), s(4, 8.0, 1)];
        assert!(close(agg(&four, tm(0.9), 10), 3.0));
        // A NaN or negative trim trims nothing.
        assert!(close(agg(&four, tm(f64::NAN), 10), 3.75));
        assert!(close(agg(&four, tm(-1.0), 10), 3.75));
        assert_eq!(trim_count(10, 0.2), 2);
        assert_eq!(trim_count(9, 0.2), 1);
        assert_eq!(trim_count(1, 0.4), 0);
        assert_eq!(trim_count(4, 0.5), 1);
        assert_eq!(trim_count(0, 0.5), 0);
    }

    #[test]
    fn median_odd_even_and_weighted() {
        let odd = [s(1, 5.0, 1), s(2, 1.0, 1), s(3, 3.0, 1)];
        assert_eq!(agg(&odd, Rule::Median, 10), 3.0);
        let even = [s(1, 5.0, 1), s(2, 1.0, 1), s(3, 3.0, 1), s(4, 10.0, 1)];
        assert_eq!(agg(&even, Rule::Median, 10), 4.0);
        // Weights 1, 1, 5: the value 5.0 holds more than half.
        let heavy = [s(1, 5.0, 5), s(2, 1.0, 1), s(3, 3.0, 1)];
        assert_eq!(agg(&heavy, Rule::Median, 10), 5.0);
        // ... unless the cap levels the weights.
        assert_eq!(agg(&heavy, Rule::Median, 1), 3.0);
        // Cumulative weight exactly half: midpoint of 1 and 3.
        let half = [s(1, 1.0, 2), s(2, 3.0, 1), s(3, 7.0, 1)];
        assert_eq!(agg(&half, Rule::Median, 10), 2.0);
        assert_eq!(agg(&[s(1, -2.0, 7)], Rule::Median, 10), -2.0);
    }

    #[test]
    fn duplicates_count_once_and_equivocators_are_dropped() {
        let dup = [s(1, 1.0, 1), s(1, 1.0, 1), s(2, 4.0, 1)];
        assert!(close(agg(&dup, Rule::Mean, 10), 2.5));
        let equivocal = [s(1, 1.0, 1), s(1, 100.0, 1), s(2, 4.0, 1)];
        assert!(close(agg(&equivocal, Rule::Mean, 10), 4.0));
    }

    #[test]
    fn huge_values_do_not_overflow() {
        let big = [s(1, f64::MAX, u64::MAX), s(2, f64::MAX, u64::MAX)];
        assert_eq!(agg(&big, Rule::Mean, u64::MAX), f64::MAX);
        let opposite = [s(1, f64::MAX, 1), s(2, -f64::MAX, 1)];
        assert_eq!(agg(&opposite, Rule::Mean, 1), 0.0);
        assert_eq!(agg(&opposite, Rule::Median, 1), 0.0);
    }

    #[test]
    fn validate_rejects_non_finite_and_long_deltas() {
        assert!(validate(&[0.3, 0.4, 0.0, 0.0, 0.0], 0.5).is_ok());
        assert!(validate(&[0.3, 0.4, 0.0, 0.0, 0.0], 0.49).is_err());
        assert!(validate(&[f64::NAN, 0.0, 0.0, 0.0, 0.0], 1.0).is_err());
        assert!(validate(&[0.0, f64::INFINITY, 0.0, 0.0, 0.0], 1.0).is_err());
        assert!(validate(&[0.0, 0.0, f64::NEG_INFINITY, 0.0, 0.0], f64::INFINITY).is_err());
        assert!(validate(&[1e300; 5], 1.0).is_err());
        assert!(validate(&[0.0; 5], f64::NAN).is_err());
        assert!(validate(&[0.0; 5], -1.0).is_err());
        assert!(validate(&[0.0; 5], 0.0).is_ok());
        // A delta clipped to the norm passes despite rounding.
        let clipped = crate::learn::train::clip(&[0.1, 0.7, 0.3, 0.9, 0.2], 0.3);
        assert!(validate(&clipped, 0.3).is_ok());
    }

    fn rules() -> impl Strategy<Value = Rule> {
        prop_oneof![
            Just(Rule::Mean),
            Just(Rule::Median),
            (0.0f64..0.6).prop_map(|trim| Rule::TrimmedMean { trim }),
        ]
    }

    /// Deltas from a range wide enough to include the extremes that matter.
    fn value() -> impl Strategy<Value = f64> {
        prop_oneof![
            -1.0f64..1.0,
            -1e300f64..1e300,
            Just(f64::MAX),
            Just(-f64::MAX),
            Just(0.0)
        ]
    }

    fn honest_range(honest: &[Contribution], k: usize) -> (f64, f64) {
        let lo = honest.iter().map(|c| c.delta[k]).fold(f64::INFINITY, f64::min);
        let hi = honest.iter().map(|c| c.delta[k]).fold(f64::NEG_INFINITY, f64::max);
        (lo, hi)
    }

    proptest! {
        #[test]
        fn trimmed_mean_stays_within_the_honest_range(
            honest in prop::collection::vec((prop::array::uniform5(-1.0f64..1.0), 1u64..1000), 1..20),
            poison in prop::collection::vec((prop::array::uniform5(value()), any::<u64>()), 0..20),
            trim in 0.0f64..0.5,
            cap in 1u64..2000,
        ) {
            let mut all: Vec<Contribution> = honest
                .iter()
                .enumerate()
                .map(|(i, (d, n))| c(i as u8, *d, *n))
                .collect();
            let honest_only = all.clone();
            // As many poisoned contributions as the trim allows: p <= floor(trim * (h + p)).
            let h = all.len();
            let p = (0..=poison.len()).rev().find(|&p| p <= trim_count(h + p, trim)).unwrap_or(0);
            for (i, (d, n)) in poison.iter().take(p).enumerate() {
                all.push(c(100 + i as u8, *d, *n));
            }
            let out = aggregate(&all, Rule::TrimmedMean { trim }, cap).unwrap();
            for (k, o) in out.iter().enumerate() {
                let (lo, hi) = honest_range(&honest_only, k);
                prop_assert!(lo <= *o && *o <= hi, "coord {}: {} not in [{}, {}] (p = {})", k, o, lo, hi, p);
            }
        }

        #[test]
        fn median_stays_within_the_honest_range_below_half_the_weight(
            honest in prop::collection::vec((prop::array::uniform5(-1.0f64..1.0), 1u64..1000), 1..20),
            poison in prop::collection::vec((prop::array::uniform5(value()), any::<u64>()), 0..20),
            cap in 1u64..2000,
        ) {
            let honest_only: Vec<Contribution> =
                honest.iter().enumerate().map(|(i, (d, n))| c(i as u8, *d, *n)).collect();
            let honest_weight: u128 = honest_only.iter().map(|h| u128::from(h.samples.min(cap))).sum();
            let mut all = honest_only.clone();
            let mut poison_weight: u128 = 0;
            for (i, (d, n)) in poison.iter().enumerate() {
                let w = u128::from((*n).min(cap).max(1));
                if poison_weight + w >= honest_weight {
                    break;
                }
                poison_weight += w;
                all.push(c(100 + i as u8, *d, (*n).max(1)));
            }
            let out = aggregate(&all, Rule::Median, cap).unwrap();
            for (k, o) in out.iter().enumerate() {
                let (lo, hi) = honest_range(&honest_only, k);
                prop_assert!(lo <= *o && *o <= hi, "coord {}: {} not in [{}, {}]", k, o, lo, hi);
            }
        }

        #[test]
        fn order_does_not_matter(
            items in prop::collection::vec((prop::array::uniform5(value()), 0u64..50, 0u8..8), 0..16),
            rule in rules(),
            rotate in 0usize..16,
            cap in 0u64..60,
        ) {
            let all: Vec<Contribution> = items.iter().map(|(d, n, id)| c(*id, *d, *n)).collect();
            let mut shuffled = all.clone();
            shuffled.reverse();
            if !shuffled.is_empty() {
                let r = rotate % shuffled.len();
                shuffled.rotate_left(r);
            }
            let a = aggregate(&all, rule, cap).map(|d| d.map(f64::to_bits));
            let b = aggregate(&shuffled, rule, cap).map(|d| d.map(f64::to_bits));
            prop_assert_eq!(a, b);
        }

        #[test]
        fn output_is_finite_and_within_all_inputs(
            items in prop::collection::vec((prop::array::uniform5(value()), 1u64..50), 1..16),
            rule in rules(),
        ) {
            let all: Vec<Contribution> = items.iter().enumerate().map(|(i, (d, n))| c(i as u8, *d, *n)).collect();
            let out = aggregate(&all, rule, 30).unwrap();
            for (k, o) in out.iter().enumerate() {
                let (lo, hi) = honest_range(&all, k);
                prop_assert!(o.is_finite() && lo <= *o && *o <= hi);
            }
        }
    }
}
