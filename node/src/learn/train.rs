//! Local training from install events.
//!
//! An [`Event`] is one search whose user installed one of the shown results.
//! The learner fits the weights by maximum likelihood of the installs under a
//! choice model with **known position bias**, regularised toward the model it
//! starts from, by a fixed number of full-batch gradient-descent epochs (so the
//! result is a deterministic function of the inputs).
//!
//! The default loss ([`Loss::Softmax`]) is the conditional logit of the
//! install among the shown results,
//! P(chosen = i) ∝ exp(w · x_i − η ln(1 + pos_i)),
//! where exp(−η ln(1 + pos)) = 1 / (1 + pos)^η is the chance that a user
//! examines position `pos` (η = [`TrainConfig::position_bias`]). The offset is
//! the position-bias correction: an install at position 8 says more about
//! relevance than one at position 0, and a result shown low is not counted as
//! rejected as strongly as one the user scrolled past.
//!
//! Why not the "chosen beats each skipped result above it, and the next one
//! below" pair heuristic ([`Loss::Pairwise`] with `below = 1`): with one
//! install per search and the results shown in the model's own order, the
//! "skipped above" pairs outnumber the others and all disagree with the
//! displayed order, so the fit turns against the current model. Measured: on
//! 400 events from a known truth (the tests here) it drives the text weight
//! negative and lowers pairwise accuracy (0.70 → 0.64), while the softmax
//! with η = 1 reaches cosine 0.98 to the truth and accuracy 0.94; in the
//! simulation, rounds of the heuristic end below the fixed default weights
//! (NDCG@10 0.38 against 0.70; softmax 0.80). Pairs between the install and
//! *every* other shown result (`below >= MAX_SHOWN`) with the same offsets do
//! not have that bias and do about as well as the softmax, which is the exact
//! likelihood of the choice model, so the softmax is the default. η = 0 drops
//! the correction (measured NDCG 0.79 against 0.80 when users' examination
//! really falls as 1 / (1 + p)).
//!
//! Loss = mean over events of the event's loss + (l2 / 2)·‖w − start‖². The
//! pull toward `start` keeps one round's step proportional to the evidence, so
//! a node with a few dozen events cannot swing the model, and training on no
//! events returns `start` exactly (a zero delta).
//!
//! Inputs are untrusted: results past the first [`MAX_SHOWN`], events whose
//! chosen index is out of range or that show fewer than two results, and
//! events with a non-finite feature are ignored; finite features are clamped
//! to [0, 1]. The result is always a valid model when `start` is.

use serde::{Deserialize, Serialize};

use super::model::{FEATURES, MAX_WEIGHT, Model, dot, norm};

/// Results per event that training looks at.
pub const MAX_SHOWN: usize = 20;

/// One search with an install.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Event {
    /// Feature vectors of the results shown, in displayed order (<= 20 used).
    pub shown: Vec<[f64; FEATURES]>,
    /// Index into `shown` of the result the user installed.
    pub chosen: usize,
}

/// The training objective.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Loss {
    /// Conditional logit over all shown results with log-examination offsets.
    Softmax,
    /// Pairwise logistic loss on "chosen beats each result shown above it"
    /// and "chosen beats the `below` results right under it", with the same
    /// offsets on each pair's logit. Use `below >= MAX_SHOWN` (all pairs): the
    /// classic `below = 1` is biased (see the module doc).
    Pairwise { below: usize },
}

/// Training hyper-parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub loss: Loss,
    /// Full-batch gradient-descent steps.
    pub epochs: u32,
    pub learning_rate: f64,
    /// Strength of the L2 pull toward the start model.
    pub l2: f64,
    /// η: position `p` (0-based) is examined with relative chance
    /// 1 / (1 + p)^η; 0 turns the correction off.
    pub position_bias: f64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            loss: Loss::Softmax,
            epochs: 40,
            learning_rate: 2.0,
            l2: 0.02,
            position_bias: 1.0,
        }
    }
}

/// An event reduced to what the gradient needs.
struct Prepared {
    rows: Vec<[f64; FEATURES]>,
    /// Log-examination offset of each row.
    offsets: Vec<f64>,
    chosen: usize,
}

fn prepare(e: &Event, eta: f64) -> Option<Prepared> {
    let n = e.shown.len().min(MAX_SHOWN);
    if n < 2 || e.chosen >= n {
        return None;
    }
    let mut rows = Vec::with_capacity(n);
    for f in &e.shown[..n] {
        if f.iter().any(|x| !x.is_finite()) {
            return None;
        }
        rows.push(f.map(|x| x.clamp(0.0, 1.0)));
    }
    let offsets = (0..n).map(|p| -eta * ((1 + p) as f64).ln()).collect();
    Some(Prepared {
        rows,
        offsets,
        chosen: e.chosen,
    })
}

/// The number of events training would use (the sample count to report).
pub fn usable(events: &[Event]) -> u64 {
    events.iter().filter(|e| prepare(e, 0.0).is_some()).count() as u64
}

/// Adds the gradient of one event's loss at `w` to `g`.
fn add_gradient(p: &Prepared, w: &[f64; FEATURES], loss: Loss, g: &mut [f64; FEATURES]) {
    match loss {
        Loss::Softmax => {
            // prepare() keeps at most MAX_SHOWN rows: stack buffers suffice.
            let mut exps = [0.0; MAX_SHOWN];
            let n = p.rows.len().min(MAX_SHOWN);
            for (z, (x, o)) in exps.iter_mut().zip(p.rows.iter().zip(&p.offsets)) {
                *z = dot(w, x) + o;
            }
            let max = exps[..n].iter().fold(f64::NEG_INFINITY, |m, &z| m.max(z));
            let mut total = 0.0;
            for z in exps[..n].iter_mut() {
                *z = (*z - max).exp();
                total += *z;
            }
            // d/dw [logsumexp − z_chosen] = Σ p_i x_i − x_chosen.
            for (x, e) in p.rows.iter().zip(&exps[..n]) {
                axpy(g, e / total, x);
            }
            axpy(g, -1.0, &p.rows[p.chosen]);
        }
        Loss::Pairwise { below } => {
            let c = p.chosen;
            let end = c.saturating_add(below).min(p.rows.len() - 1);
            for j in (0..c).chain(c + 1..=end) {
                let d = sub(&p.rows[c], &p.rows[j]);
                let s = dot(w, &d) + p.offsets[c] - p.offsets[j];
                // d/dw ln(1 + e^{−s}) = −σ(−s)·d.
                axpy(g, -1.0 / (1.0 + s.exp()), &d);
            }
        }
    }
}

/// g += a·x.
fn axpy(g: &mut [f64; FEATURES], a: f64, x: &[f64; FEATURES]) {
    for (gi, xi) in g.iter_mut().zip(x) {
        *gi += a * xi;
    }
}

fn sub(a: &[f64; FEATURES], b: &[f64; FEATURES]) -> [f64; FEATURES] {
    std::array::from_fn(|k| a[k] - b[k])
}

/// The model trained from `start` on `events`.
pub fn train(start: &Model, events: &[Event], cfg: &TrainConfig) -> Model {
    let w0 = start.weights;
    let usable_cfg = cfg.learning_rate.is_finite()
        && cfg.learning_rate > 0.0
        && cfg.l2.is_finite()
        && cfg.l2 >= 0.0
        && cfg.position_bias.is_finite();
    if !usable_cfg || w0.iter().any(|w| !w.is_finite()) {
        return start.clone();
    }
    let prepared: Vec<Prepared> = events.iter().filter_map(|e| prepare(e, cfg.position_bias)).collect();
    if prepared.is_empty() {
        return start.clone();
    }
    let n = prepared.len() as f64;
    let mut w = w0;
    for _ in 0..cfg.epochs {
        let mut g = [0.0; FEATURES];
        for p in &prepared {
            add_gradient(p, &w, cfg.loss, &mut g);
        }
        let next: [f64; FEATURES] = std::array::from_fn(|k| {
            let grad = g[k] / n + cfg.l2 * (w[k] - w0[k]);
            (w[k] - cfg.learning_rate * grad).clamp(-MAX_WEIGHT, MAX_WEIGHT)
        });
        // A diverging step (learning rate far too large) stops training
        // rather than producing NaN.
        if next.iter().any(|x| !x.is_finite()) {
            break;
        }
        w = next;
    }
    Model { weights: w }
}

/// trained − start: the delta a node shares with its peers.
pub fn update(start: &Model, events: &[Event], cfg: &TrainConfig) -> [f64; FEATURES] {
    let d = sub(&train(start, events, cfg).weights, &start.weights);
    if d.iter().any(|x| !x.is_finite()) {
        [0.0; FEATURES]
    } else {
        d
    }
}

/// `delta` scaled down to L2 norm `max_norm` if it is longer. A delta with a
/// non-finite coordinate, or a `max_norm` that is NaN or <= 0, gives zeros
/// (nothing safe to share); `max_norm = +inf` leaves the delta as it is.
pub fn clip(delta: &[f64; FEATURES], max_norm: f64) -> [f64; FEATURES] {
    if delta.iter().any(|x| !x.is_finite()) || max_norm.is_nan() || max_norm <= 0.0 {
        return [0.0; FEATURES];
    }
    let n = norm(delta);
    if n <= max_norm {
        return *delta;
    }
    let s = max_norm / n;
    delta.map(|x| x * s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::learn::dp::Rng;

    const TRUE_W: [f64; FEATURES] = [2.0, 3.0, -1.0, 2.5, 0.5];

    fn features(rng: &mut Rng) -> [f64; FEATURES] {
        [0.0; FEATURES].map(|_| rng.next_f64())
    }

    /// Events from a user who examines position p with chance 1/(1+p) and
    /// installs among the examined with probability ∝ exp(TRUE_W · x); the
    /// results are shown in the order of `shown_by`.
    fn events(n: usize, shown_by: &Model, seed: u64) -> Vec<Event> {
        let mut rng = Rng::new(seed);
        let mut out = Vec::new();
        while out.len() < n {
            let cands: Vec<[f64; FEATURES]> = (0..20).map(|_| features(&mut rng)).collect();
            let shown: Vec<[f64; FEATURES]> = shown_by.rank(&cands).into_iter().take(10).map(|i| cands[i]).collect();
            let weights: Vec<f64> = shown
                .iter()
                .enumerate()
                .map(|(p, x)| {
                    let examined = rng.next_f64() < 1.0 / (1.0 + p as f64);
                    if examined { dot(&TRUE_W, x).exp() } else { 0.0 }
                })
                .collect();
            let total: f64 = weights.iter().sum();
            let mut u = rng.next_f64() * total;
            let mut chosen = 0;
            for (i, w) in weights.iter().enumerate() {
                if *w > 0.0 {
                    chosen = i;
                    if u < *w {
                        break;
                    }
                    u -= w;
                }
            }
            out.push(Event { shown, chosen });
        }
        out
    }

    /// Share of random candidate pairs the model orders like TRUE_W.
    fn pairwise_accuracy(m: &Model) -> f64 {
        let mut rng = Rng::new(99);
        let mut right = 0;
        let n = 4000;
        for _ in 0..n {
            let (a, b) = (features(&mut rng), features(&mut rng));
            let truth = dot(&TRUE_W, &a) > dot(&TRUE_W, &b);
            if (m.score(&a) > m.score(&b)) == truth {
                right += 1;
            }
        }
        right as f64 / n as f64
    }

    fn cosine(a: &[f64; FEATURES], b: &[f64; FEATURES]) -> f64 {
        dot(a, b) / (norm(a) * norm(b))
    }

    #[test]
    fn training_moves_weights_toward_the_truth() {
        let start = Model::default_weights();
        let evs = events(400, &start, 1);
        let all_pairs = Loss::Pairwise { below: MAX_SHOWN };
        for (loss, eta) in [
            (Loss::Softmax, 1.0),
            (Loss::Softmax, 0.0),
            (all_pairs, 1.0),
            (all_pairs, 0.0),
        ] {
            let cfg = TrainConfig {
                loss,
                position_bias: eta,
                ..TrainConfig::default()
            };
            let trained = train(&start, &evs, &cfg);
            assert!(trained.check().is_ok());
            let (before, after) = (pairwise_accuracy(&start), pairwise_accuracy(&trained));
            assert!(after > before + 0.08, "{loss:?} {eta}: {before} -> {after}");
            let (c0, c1) = (cosine(&start.weights, &TRUE_W), cosine(&trained.weights, &TRUE_W));
            assert!(c1 > c0 + 0.1, "{loss:?} {eta}: {c0} -> {c1}");
            // The position-bias correction is what gets close to the truth.
            if eta > 0.0 {
                assert!(c1 > 0.95 && after > 0.9, "{loss:?}: {c1} {after} {:?}", trained.weights);
            }
        }
    }

    /// Pins the measurement the module doc cites: with single installs and the
    /// results shown in the model's own order, "chosen beats skipped above"
    /// pairs outnumber the "next below" ones and the fit turns against the
    /// displayed order (here it makes the text weight negative).
    #[test]
    fn skip_above_heuristic_reverses_the_display_order() {
        let start = Model::default_weights();
        let evs = events(400, &start, 1);
        let cfg = TrainConfig {
            loss: Loss::Pairwise { below: 1 },
            position_bias: 0.0,
            ..TrainConfig::default()
        };
        let trained = train(&start, &evs, &cfg);
        assert!(trained.weights[0] < 0.0, "{:?}", trained.weights);
        assert!(pairwise_accuracy(&trained) < pairwise_accuracy(&start));
    }

    #[test]
    fn repeated_rounds_approach_the_truth() {
        let mut m = Model::default_weights();
        for round in 0..15 {
            let evs = events(200, &m, 100 + round);
            m = train(&m, &evs, &TrainConfig::default());
        }
        assert!(cosine(&m.weights, &TRUE_W) > 0.97, "{:?}", m.weights);
        assert!(pairwise_accuracy(&m) > 0.9);
    }

    #[test]
    fn update_is_trained_minus_start_and_zero_without_events() {
        let start = Model::default_weights();
        let evs = events(50, &start, 3);
        let cfg = TrainConfig::default();
        let d = update(&start, &evs, &cfg);
        let t = train(&start, &evs, &cfg);
        assert_eq!(d, sub(&t.weights, &start.weights));
        assert!(norm(&d) > 0.0);
        assert_eq!(update(&start, &[], &cfg), [0.0; FEATURES]);
        // Training is deterministic.
        assert_eq!(update(&start, &evs, &cfg), d);
    }

    #[test]
    fn bad_events_and_configs_are_ignored() {
        let start = Model::default_weights();
        let bad = vec![
            Event {
                shown: vec![[0.5; 5]],
                chosen: 0,
            },
            Event {
                shown: vec![[0.5; 5]; 3],
                chosen: 3,
            },
            Event {
                shown: vec![[f64::NAN; 5]; 3],
                chosen: 1,
            },
            Event {
                shown: vec![[0.5; 5]; 30],
                chosen: 25,
            },
            Event {
                shown: vec![],
                chosen: 0,
            },
        ];
        assert_eq!(usable(&bad), 0);
        assert_eq!(train(&start, &bad, &TrainConfig::default()), start);
        let good = events(20, &start, 5);
        assert_eq!(usable(&good), 20);
        for cfg in [
            TrainConfig {
                learning_rate: f64::NAN,
                ..TrainConfig::default()
            },
            TrainConfig {
                learning_rate: -1.0,
                ..TrainConfig::default()
            },
            TrainConfig {
                l2: f64::INFINITY,
                ..TrainConfig::default()
            },
        ] {
            assert_eq!(train(&start, &good, &cfg), start);
        }
        // A wildly large step is clamped, never NaN.
        let wild = TrainConfig {
            learning_rate: 1e300,
            ..TrainConfig::default()
        };
        assert!(train(&start, &good, &wild).check().is_ok());
        // Out-of-range features are clamped, not rejected.
        let loud = vec![Event {
            shown: vec![[5.0; 5], [-3.0; 5]],
            chosen: 1,
        }];
        assert!(train(&start, &loud, &TrainConfig::default()).check().is_ok());
        // A non-finite start is returned as is, and its update is zero.
        let nan = Model { weights: [f64::NAN; 5] };
        assert_eq!(update(&nan, &good, &TrainConfig::default()), [0.0; FEATURES]);
    }

    #[test]
    fn clip_scales_long_deltas_only() {
        assert_eq!(clip(&[3.0, 4.0, 0.0, 0.0, 0.0], 10.0), [3.0, 4.0, 0.0, 0.0, 0.0]);
        let c = clip(&[3.0, 4.0, 0.0, 0.0, 0.0], 1.0);
        assert!((c[0] - 0.6).abs() < 1e-12 && (c[1] - 0.8).abs() < 1e-12);
        assert!((norm(&c) - 1.0).abs() < 1e-12);
        assert_eq!(clip(&[f64::NAN, 0.0, 0.0, 0.0, 0.0], 1.0), [0.0; 5]);
        assert_eq!(clip(&[f64::INFINITY, 0.0, 0.0, 0.0, 0.0], 1.0), [0.0; 5]);
        assert_eq!(clip(&[1.0; 5], f64::NAN), [0.0; 5]);
        assert_eq!(clip(&[1.0; 5], 0.0), [0.0; 5]);
        assert_eq!(clip(&[1.0; 5], f64::INFINITY), [1.0; 5]);
        let huge = clip(&[1e300, -1e300, 0.0, 0.0, 0.0], 2.0);
        assert!((norm(&huge) - 2.0).abs() < 1e-12);
    }
}
