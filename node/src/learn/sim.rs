//! The evaluation harness: a synthetic federation, pure and seeded.
//!
//! **World.** Each of `nodes` nodes has its own users, whose taste is a hidden
//! true weight vector w*_k = `truth` + `node_spread`·N(0, I) (non-identical
//! across nodes). A query has `candidates` results with features drawn like
//! real ones (text = BM25-like score / best in the set, so every query has its
//! own text profile; quality, attesters, installs and age from skewed
//! distributions), and each result has a true utility
//! u = w*_k · f + `item_noise`·N(0, 1): the noise is what no linear model over
//! the features can see.
//!
//! **Users.** A node shows the top `shown` results by its current model. The
//! user examines position p (0-based) with chance 1 / (1 + p)^`exam_decay`,
//! each independently (the top always), and installs one examined result with
//! probability ∝ exp(`choice_sharpness` · u). So installs follow true
//! relevance, filtered by position bias; the learner's examination curve is
//! only an approximation of this (it assumes a multinomial logit with
//! log-examination offsets).
//!
//! **Protocol.** Each round every node's users make between
//! `events_min` and `events_max` installs; the counts, queries and the users'
//! random draws are fixed by the seed and shared by all arms (common random
//! numbers), so the arms differ only by the models that order the results.
//! Every learner trains from its current model on the events of the round
//! (an online, proximal step; see `train`), the way nodes use each round's
//! events once:
//! - `alone`: each node trains only on its own events and serves its own model
//!   (with `alone_keeps_history` it retrains on all of its events so far every
//!   round; that stronger baseline closes most of the gap: on the default
//!   world federated then leads by 0–1.2% over seeds 1–8 instead of 3–5%);
//! - `federated`: each node trains from the global model, clips its delta to
//!   `max_norm` and sends it with its sample count; receivers [`validate`] the
//!   deltas, [`aggregate`] them with `rule` and everyone adopts the result;
//! - `centralized`: one model trained on all nodes' events pooled (upper bound);
//! - `clean_mean`: federated with [`Rule::Mean`];
//! - `poisoned_*`: a `poisoned_fraction` of the nodes attack (see [`Attack`];
//!   by default they push the model away from text relevance toward recency
//!   and installs at the largest accepted norm) and claim `claimed_samples`
//!   samples, with `rule` or with plain Mean.
//!
//! The defaults model a young federation: 20 nodes with 30–80 installs per
//! round each, users whose installs follow relevance only loosely
//! (`choice_sharpness` 1.5), node tastes that differ by `node_spread` 0.15
//! around the shared truth.
//!
//! **Evaluation.** `eval_queries` held-out queries per node, graded from that
//! node's true utility (the best result 4, the next two 3, the next three 2,
//! the next four 1, the rest 0), NDCG@10 of the model the node serves, averaged
//! over queries and then over nodes (so every node's users count the same, and
//! `alone` is judged on its own users, where it has the advantage of
//! personalisation).

use super::aggregate::{Contribution, Rule, aggregate, validate};
use super::dp::Rng;
use super::model::{FEATURES, Model, norm};
use super::train::{Event, TrainConfig, clip, train, update, usable};

/// What poisoned nodes send instead of their honest delta.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Attack {
    /// Their honest delta flipped and stretched to `max_norm` (the longest
    /// receivers accept; −50× would be rejected by [`validate`] outright).
    Flip,
    /// `max_norm` along a fixed direction every round, e.g. away from text
    /// relevance and toward the features a spammer can fake. (Pushing along
    /// −w only shrinks the weights, which ranks the same.)
    Push([f64; FEATURES]),
}

/// The simulated federation.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub seed: u64,
    pub nodes: usize,
    pub rounds: usize,
    /// Installs per node per round, drawn uniformly in [min, max].
    pub events_min: usize,
    pub events_max: usize,
    /// Results per query, and how many of them a user sees.
    pub candidates: usize,
    pub shown: usize,
    /// Held-out queries per node.
    pub eval_queries: usize,
    /// The users' shared true weights, before each node's perturbation.
    pub truth: [f64; FEATURES],
    pub node_spread: f64,
    pub item_noise: f64,
    pub choice_sharpness: f64,
    pub exam_decay: f64,
    pub train: TrainConfig,
    /// The robust rule used by `federated` and `poisoned_robust`.
    pub rule: Rule,
    /// The norm honest nodes clip to and receivers accept (the default 3 is
    /// about twice the typical honest delta, 0.9–1.5, so it rarely bites).
    pub max_norm: f64,
    /// Above the largest honest count, so honest nodes keep their weight.
    pub sample_cap: u64,
    pub poisoned_fraction: f64,
    pub attack: Attack,
    pub claimed_samples: u64,
    /// `alone` retrains on all of its events so far every round instead of
    /// the round's events only (a stronger baseline than the shared protocol).
    pub alone_keeps_history: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 1,
            nodes: 20,
            rounds: 8,
            events_min: 30,
            events_max: 80,
            candidates: 30,
            shown: 10,
            eval_queries: 60,
            truth: [1.2, 0.9, 0.8, 1.1, 0.5],
            node_spread: 0.15,
            item_noise: 0.3,
            choice_sharpness: 1.5,
            exam_decay: 1.0,
            train: TrainConfig::default(),
            rule: Rule::TrimmedMean { trim: 0.2 },
            max_norm: 3.0,
            sample_cap: 100,
            poisoned_fraction: 0.2,
            attack: Attack::Push([-1.0, 0.0, 0.0, 0.5, 1.0]),
            claimed_samples: 1_000_000_000,
            alone_keeps_history: false,
        }
    }
}

impl SimConfig {
    /// A quicker federation for unit tests: half the nodes (two of them
    /// poisoned) and half the evaluation queries.
    pub fn small() -> Self {
        SimConfig {
            nodes: 10,
            rounds: 8,
            eval_queries: 30,
            ..SimConfig::default()
        }
    }
}

/// Mean NDCG@10 of each arm (see the module doc).
#[derive(Clone, Debug, PartialEq)]
pub struct SimReport {
    pub fixed: f64,
    pub alone: f64,
    pub federated: f64,
    pub centralized: f64,
    pub poisoned_robust: f64,
    pub poisoned_mean: f64,
    pub clean_mean: f64,
}

/// Runs every arm of the simulation.
pub fn run(cfg: &SimConfig) -> SimReport {
    let world = World::new(cfg);
    let fixed = Model::default_weights();
    let poisoned = cfg.poisoned_count();
    SimReport {
        fixed: world.evaluate(|_| &fixed),
        alone: world.alone(),
        federated: world.federated(cfg.rule, 0),
        centralized: world.centralized(),
        poisoned_robust: world.federated(cfg.rule, poisoned),
        poisoned_mean: world.federated(Rule::Mean, poisoned),
        clean_mean: world.federated(Rule::Mean, 0),
    }
}

impl SimConfig {
    fn poisoned_count(&self) -> usize {
        let p = (self.poisoned_fraction.clamp(0.0, 1.0) * self.nodes as f64).round();
        (p as usize).min(self.nodes)
    }
}

/// A query's candidates and their true utilities for one node.
struct Query {
    cands: Vec<[f64; FEATURES]>,
    utility: Vec<f64>,
}

/// A held-out query: candidates and the grade of each.
type Graded = (Vec<[f64; FEATURES]>, Vec<u32>);

struct World<'a> {
    cfg: &'a SimConfig,
    truth: Vec<[f64; FEATURES]>,
    /// Installs per [round][node].
    counts: Vec<Vec<usize>>,
    /// Held-out queries per node.
    eval: Vec<Vec<Graded>>,
}

/// Independent streams of the seed.
const STREAM_WORLD: u64 = 1;
const STREAM_EVAL: u64 = 2;
const STREAM_EVENTS: u64 = 3;

fn stream(seed: u64, kind: u64, a: u64, b: u64) -> Rng {
    let mut r = Rng::new(seed);
    let mut s = r.next_u64() ^ kind.wrapping_mul(0xA076_1D64_78BD_642F);
    s = Rng::new(s).next_u64() ^ a.wrapping_mul(0xE703_7ED1_A0B4_28DB);
    s = Rng::new(s).next_u64() ^ b.wrapping_mul(0x8EBC_6AF0_9C88_C6E3);
    Rng::new(s)
}

/// Grades by true rank: 4 for the best, 3 for the next two, 2 for the next
/// three, 1 for the next four, 0 after.
fn grades(utility: &[f64]) -> Vec<u32> {
    let mut order: Vec<usize> = (0..utility.len()).collect();
    order.sort_by(|&a, &b| utility[b].total_cmp(&utility[a]).then(a.cmp(&b)));
    let mut g = vec![0; utility.len()];
    for (rank, &i) in order.iter().enumerate() {
        g[i] = match rank {
            0 => 4,
            1..=2 => 3,
            3..=5 => 2,
            6..=9 => 1,
            _ => 0,
        };
    }
    g
}

fn dcg(grades: impl Iterator<Item = u32>) -> f64 {
    grades
        .take(10)
        .enumerate()
        .map(|(p, g)| (2f64.powi(g as i32) - 1.0) / ((p + 2) as f64).log2())
        .sum()
}

fn ndcg10(model: &Model, cands: &[[f64; FEATURES]], g: &[u32]) -> f64 {
    let mut ideal = g.to_vec();
    ideal.sort_unstable_by(|a, b| b.cmp(a));
    let best = dcg(ideal.into_iter());
    if best <= 0.0 {
        return 0.0;
    }
    dcg(model.rank(cands).into_iter().map(|i| g[i])) / best
}

impl<'a> World<'a> {
    fn new(cfg: &'a SimConfig) -> Self {
        let mut rng = stream(cfg.seed, STREAM_WORLD, 0, 0);
        let truth = (0..cfg.nodes)
            .map(|_| {
                let mut w = cfg.truth;
                for x in w.iter_mut() {
                    *x += cfg.node_spread * rng.normal();
                }
                w
            })
            .collect::<Vec<_>>();
        let (lo, hi) = (cfg.events_min.min(cfg.events_max), cfg.events_min.max(cfg.events_max));
        let counts = (0..cfg.rounds)
            .map(|_| {
                (0..cfg.nodes)
                    .map(|_| lo + rng.below(((hi - lo) as u64).saturating_add(1)) as usize)
                    .collect()
            })
            .collect();
        let mut world = World {
            cfg,
            truth,
            counts,
            eval: Vec::new(),
        };
        world.eval = (0..cfg.nodes)
            .map(|k| {
                let mut r = stream(cfg.seed, STREAM_EVAL, k as u64, 0);
                (0..cfg.eval_queries)
                    .map(|_| {
                        let q = world.query(k, &mut r);
                        let g = grades(&q.utility);
                        (q.cands, g)
                    })
                    .collect()
            })
            .collect();
        world
    }

    fn query(&self, node: usize, rng: &mut Rng) -> Query {
        let n = self.cfg.candidates.max(1);
        let bm25: Vec<f64> = (0..n).map(|_| (0.6 * rng.normal()).exp()).collect();
        let best = bm25.iter().fold(0.0f64, |m, &b| m.max(b));
        let mut cands = Vec::with_capacity(n);
        let mut utility = Vec::with_capacity(n);
        for b in bm25 {
            let text = b / best;
            let quality = (0.55 + 0.2 * rng.normal()).clamp(0.0, 1.0);
            let mut attesters = 0.0;
            while attesters < 8.0 && rng.next_f64() < 0.45 {
                attesters += 1.0;
            }
            let installs = (3.0 + 2.5 * rng.normal()).exp().floor();
            let l = installs.ln_1p();
            let age_days = -(1.0 - rng.next_f64()).ln() * 600.0;
            let f = [
                text,
                quality,
                attesters / (attesters + 1.0),
                l / (l + 2.0),
                (-age_days / 365.0).exp(),
            ];
            let u = super::model::dot(&self.truth[node], &f) + self.cfg.item_noise * rng.normal();
            cands.push(f);
            utility.push(u);
        }
        Query { cands, utility }
    }

    /// Node `node`'s installs in round `round`, its results ordered by `model`.
    fn events(&self, node: usize, round: usize, model: &Model) -> Vec<Event> {
        let cfg = self.cfg;
        let mut rng = stream(cfg.seed, STREAM_EVENTS, node as u64, round as u64);
        let count = self.counts.get(round).and_then(|c| c.get(node)).copied().unwrap_or(0);
        let mut out = Vec::with_capacity(count.min(1 << 12));
        for _ in 0..count {
            let q = self.query(node, &mut rng);
            let order = model.rank(&q.cands);
            let top: Vec<usize> = order.into_iter().take(cfg.shown.max(1)).collect();
            // Every position gets its draw whether or not it matters, so the
            // random stream does not depend on the model.
            let weights: Vec<f64> = top
                .iter()
                .enumerate()
                .map(|(p, &i)| {
                    let examined = rng.next_f64() < ((1 + p) as f64).powf(-cfg.exam_decay);
                    if examined || p == 0 {
                        (cfg.choice_sharpness * q.utility[i]).exp()
                    } else {
                        0.0
                    }
                })
                .collect();
            let total: f64 = weights.iter().sum();
            let mut u = rng.next_f64() * total;
            let mut chosen = 0;
            for (p, w) in weights.iter().enumerate() {
                if *w > 0.0 {
                    chosen = p;
                    if u < *w {
                        break;
                    }
                    u -= w;
                }
            }
            out.push(Event {
                shown: top.iter().map(|&i| q.cands[i]).collect(),
                chosen,
            });
        }
        out
    }

    /// Mean over nodes of the mean NDCG@10 of the model node k serves.
    fn evaluate<'m>(&self, model_of: impl Fn(usize) -> &'m Model) -> f64 {
        if self.eval.is_empty() {
            return 0.0;
        }
        let per_node: Vec<f64> = self
            .eval
            .iter()
            .enumerate()
            .map(|(k, qs)| {
                let m = model_of(k);
                let sum: f64 = qs.iter().map(|(c, g)| ndcg10(m, c, g)).sum();
                sum / qs.len().max(1) as f64
            })
            .collect();
        per_node.iter().sum::<f64>() / per_node.len() as f64
    }

    fn alone(&self) -> f64 {
        let mut models = vec![Model::default_weights(); self.cfg.nodes];
        let mut history: Vec<Vec<Event>> = vec![Vec::new(); self.cfg.nodes];
        for round in 0..self.cfg.rounds {
            for (k, m) in models.iter_mut().enumerate() {
                let evs = self.events(k, round, m);
                *m = if self.cfg.alone_keeps_history {
                    history[k].extend(evs);
                    train(m, &history[k], &self.cfg.train)
                } else {
                    train(m, &evs, &self.cfg.train)
                };
            }
        }
        self.evaluate(|k| &models[k])
    }

    fn centralized(&self) -> f64 {
        let mut global = Model::default_weights();
        for round in 0..self.cfg.rounds {
            let pooled: Vec<Event> = (0..self.cfg.nodes)
                .flat_map(|k| self.events(k, round, &global))
                .collect();
            global = train(&global, &pooled, &self.cfg.train);
        }
        self.evaluate(|_| &global)
    }

    /// Federated learning with `rule`; the last `poisoned` nodes attack.
    fn federated(&self, rule: Rule, poisoned: usize) -> f64 {
        let cfg = self.cfg;
        let honest = cfg.nodes - poisoned.min(cfg.nodes);
        let mut global = Model::default_weights();
        for round in 0..cfg.rounds {
            let mut contribs = Vec::with_capacity(cfg.nodes);
            for k in 0..cfg.nodes {
                let evs = self.events(k, round, &global);
                let own = clip(&update(&global, &evs, &cfg.train), cfg.max_norm);
                let (delta, samples) = if k < honest {
                    (own, usable(&evs))
                } else {
                    (self.attack(&own), cfg.claimed_samples)
                };
                if validate(&delta, cfg.max_norm).is_ok() {
                    let mut node = [0u8; 32];
                    node[..8].copy_from_slice(&(k as u64).to_be_bytes());
                    contribs.push(Contribution { node, delta, samples });
                }
            }
            if let Some(d) = aggregate(&contribs, rule, cfg.sample_cap) {
                global = global.apply(&d);
            }
        }
        self.evaluate(|_| &global)
    }

    fn attack(&self, honest: &[f64; FEATURES]) -> [f64; FEATURES] {
        let dir = match self.cfg.attack {
            Attack::Flip => honest.map(|x| -x),
            Attack::Push(d) => d,
        };
        let n = norm(&dir);
        if n > 0.0 && n.is_finite() {
            dir.map(|x| x * self.cfg.max_norm / n)
        } else {
            [0.0; FEATURES]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ndcg_of_the_true_order_is_one() {
        let cands: Vec<[f64; FEATURES]> = (0..12).map(|i| [i as f64 / 12.0, 0.0, 0.0, 0.0, 0.0]).collect();
        let utility: Vec<f64> = cands.iter().map(|f| f[0]).collect();
        let g = grades(&utility);
        assert_eq!(g[11], 4);
        assert_eq!(g[0], 0);
        let right = Model {
            weights: [1.0, 0.0, 0.0, 0.0, 0.0],
        };
        let wrong = Model {
            weights: [-1.0, 0.0, 0.0, 0.0, 0.0],
        };
        assert!((ndcg10(&right, &cands, &g) - 1.0).abs() < 1e-12);
        assert!(ndcg10(&wrong, &cands, &g) < 0.5);
    }

    #[test]
    fn the_simulation_is_deterministic_and_total() {
        let tiny = SimConfig {
            nodes: 5,
            rounds: 2,
            eval_queries: 5,
            ..SimConfig::small()
        };
        for cfg in [
            tiny.clone(),
            SimConfig {
                attack: Attack::Flip,
                alone_keeps_history: true,
                rule: Rule::Median,
                ..tiny.clone()
            },
            SimConfig {
                nodes: 0,
                candidates: 0,
                shown: 0,
                events_min: 5,
                events_max: 0,
                poisoned_fraction: f64::NAN,
                ..tiny.clone()
            },
        ] {
            let r = run(&cfg);
            assert_eq!(r, run(&cfg));
            for x in [
                r.fixed,
                r.alone,
                r.federated,
                r.centralized,
                r.poisoned_robust,
                r.poisoned_mean,
                r.clean_mean,
            ] {
                assert!((0.0..=1.0).contains(&x), "{cfg:?}: {r:?}");
            }
        }
    }

    #[test]
    fn small_federation_meets_the_floors() {
        let r = run(&SimConfig::small());
        assert!(r.federated > r.alone, "{r:?}");
        assert!(r.federated > r.fixed, "{r:?}");
        assert!(r.federated >= 0.9 * r.centralized, "{r:?}");
        assert!(r.poisoned_robust >= 0.95 * r.federated, "{r:?}");
        assert!(r.poisoned_mean < 0.9 * r.clean_mean, "{r:?}");
    }
}
