//! Federated-learning round bookkeeping: which peer summaries count, when a
//! round's summary is due and when a round is aggregated, what the
//! aggregate does to the ranking model and the usage counts. The shell
//! keeps the events and the saved model in sled and signs and gossips.
//!
//! Timeline: round r covers [r·R, (r+1)·R) with R = `[learn] round`. When
//! round r ends, each node trains on that round's events and publishes its
//! summary for r; when round r+1 ends, it aggregates every summary for r it
//! received (its own included) and adopts the result. A whole round of slack
//! lets late summaries arrive.
//!
//! What leaves the node: the clipped (optionally noised) weight delta, the
//! number of events, and per archive installs and failed installs rounded
//! down to a power of two. Never queries, never which user, never when.

use std::collections::{BTreeMap, HashMap, VecDeque};

use packfed_protocol::{ContentHash, Verified, pb};
use serde::{Deserialize, Serialize};

use crate::learn::aggregate::{Contribution, Rule, aggregate, validate};
use crate::learn::model::{FEATURES, Model, SCHEMA_VERSION};
use crate::learn::train::{Event, TrainConfig, clip, update, usable};

/// Longest update a node may send (and the clip applied to ours).
pub const MAX_NORM: f64 = 3.0;
/// A node's samples count at most this much in the weighted aggregate.
pub const SAMPLE_CAP: u64 = 100;
/// Fraction trimmed from each end per coordinate.
pub const TRIM: f64 = 0.2;
/// An install counts as chosen from a search made at most this long before.
const SEARCH_WINDOW_MS: u64 = 10 * 60 * 1000;
/// Searches remembered for that purpose.
const RECENT_SEARCHES: usize = 256;
/// Bounds on what a summary may carry.
pub const MAX_USAGE_ENTRIES: usize = 1024;
pub const MAX_COUNT: u64 = 1 << 20;
/// Summaries kept per round: with envelopes of at most 64 KiB and three open
/// rounds, at most 48 MiB whatever peers send.
pub const MAX_CONTRIBUTORS: usize = 256;
/// Archives whose usage counts are kept; past it, new ones are ignored (a
/// member naming random hashes cannot grow the node's memory for ever).
pub const MAX_TRACKED_ARCHIVES: usize = 100_000;

/// Why a peer's summary was ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    Signature,
    Schema,
    Range,
    Round,
    /// Signed by a key that is no federation member: anyone can make
    /// fresh keys, so only members' summaries may move the model.
    NotMember,
}

/// Counts of ignored summaries, by reason.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Rejected {
    pub bad_signature: u64,
    pub wrong_schema: u64,
    pub out_of_range: u64,
    pub wrong_round: u64,
    pub not_member: u64,
}

/// A local event (the install may have failed; only successful installs
/// chosen from a search train the model).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredEvent {
    pub at_ms: u64,
    pub hash: [u8; 32],
    pub ok: bool,
    pub shown: Vec<[f64; FEATURES]>,
    pub chosen: Option<u32>,
}

struct RecentSearch {
    at_ms: u64,
    shown: Vec<([u8; 32], [f64; FEATURES])>,
}

/// What the shell saves between runs.
#[derive(Serialize, Deserialize)]
pub struct SavedModel {
    pub weights: [f64; FEATURES],
    pub version: u64,
    pub last_aggregated: Option<u64>,
    pub last_published: Option<u64>,
    pub usage: Vec<([u8; 32], u64, u64)>,
}

/// Privatizes an update (differential privacy); None sends no noise.
pub type Noise<'a> = &'a dyn Fn(&[f64; FEATURES]) -> Option<[f64; FEATURES]>;

/// What is due at a tick.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Due {
    /// This node's summary of this round is due.
    pub publish: Option<u64>,
    /// This round can be aggregated.
    pub aggregate: Option<u64>,
}

/// What aggregating a round changed.
pub struct Aggregated {
    /// (archive, installs, failed installs) now, for every archive a summary named.
    pub usage: Vec<(ContentHash, u64, u64)>,
    pub model_changed: bool,
}

/// The learning state of a node.
pub struct Learning {
    round_ms: u64,
    enabled: bool,
    model: Option<Model>,
    model_version: u64,
    last_aggregated: Option<u64>,
    contributors: Vec<String>,
    last_published: Option<u64>,
    /// Round -> signer -> summary.
    summaries: BTreeMap<u64, HashMap<[u8; 32], pb::LearningSummary>>,
    recent: VecDeque<RecentSearch>,
    rejected: Rejected,
    /// Installs and failed installs per archive, summed over aggregated rounds.
    usage: HashMap<[u8; 32], (u64, u64)>,
}

/// The power of two at or below `n` (0 stays 0): what a summary says of a count.
pub fn bucket(n: u64) -> u64 {
    if n == 0 { 0 } else { 1 << (63 - n.leading_zeros()) }
}

impl Learning {
    /// Rounds of `round_ms` (at least 1 s).
    pub fn new(round_ms: u64, enabled: bool) -> Learning {
        Learning {
            round_ms: round_ms.max(1000),
            enabled,
            model: None,
            model_version: 0,
            last_aggregated: None,
            contributors: Vec::new(),
            last_published: None,
            summaries: BTreeMap::new(),
            recent: VecDeque::new(),
            rejected: Rejected::default(),
            usage: HashMap::new(),
        }
    }

    pub fn round_ms(&self) -> u64 {
        self.round_ms
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Continues from a saved state.
    pub fn restore(&mut self, m: SavedModel) {
        self.model = Some(Model { weights: m.weights }).filter(|m| m.check().is_ok());
        self.model_version = m.version;
        self.last_aggregated = m.last_aggregated;
        self.last_published = m.last_published;
        self.usage = m.usage.into_iter().map(|(h, i, f)| (h, (i, f))).collect();
    }

    pub fn saved(&self) -> SavedModel {
        SavedModel {
            weights: self.model().weights,
            version: self.model_version,
            last_aggregated: self.last_aggregated,
            last_published: self.last_published,
            usage: self.usage.iter().map(|(h, (i, f))| (*h, *i, *f)).collect(),
        }
    }

    /// The ranking model in force.
    pub fn model(&self) -> Model {
        self.model.clone().unwrap_or_default()
    }

    /// Installs and failed installs of an archive, from the aggregates.
    pub fn usage_of(&self, hash: &ContentHash) -> (u64, u64) {
        self.usage.get(&hash.0).copied().unwrap_or((0, 0))
    }

    pub fn all_usage(&self) -> Vec<(ContentHash, u64, u64)> {
        self.usage.iter().map(|(h, (i, f))| (ContentHash(*h), *i, *f)).collect()
    }

    /// Remembers what a search showed, so a later install can be tied to it.
    pub fn note_search(&mut self, shown: Vec<([u8; 32], [f64; FEATURES])>, now_ms: u64) {
        if shown.is_empty() || !self.enabled {
            return;
        }
        if self.recent.len() >= RECENT_SEARCHES {
            self.recent.pop_front();
        }
        self.recent.push_back(RecentSearch { at_ms: now_ms, shown });
    }

    /// The event an install (or a failed one) of `hash` makes: chosen from a
    /// recent search that showed it, or not.
    pub fn install_event(&self, hash: &ContentHash, ok: bool, now_ms: u64) -> StoredEvent {
        let found = self
            .recent
            .iter()
            .rev()
            .take_while(|s| now_ms.saturating_sub(s.at_ms) <= SEARCH_WINDOW_MS)
            .find_map(|s| {
                let i = s.shown.iter().position(|(h, _)| *h == hash.0)?;
                Some((s.shown.iter().map(|(_, f)| *f).collect::<Vec<_>>(), i as u32))
            });
        let (shown, chosen) = match found {
            Some((shown, i)) if ok => (shown, Some(i)),
            _ => (Vec::new(), None),
        };
        StoredEvent {
            at_ms: now_ms,
            hash: hash.0,
            ok,
            shown,
            chosen,
        }
    }

    pub fn rejected(&mut self, why: Rejection) {
        let r = &mut self.rejected;
        match why {
            Rejection::Signature => r.bad_signature += 1,
            Rejection::Schema => r.wrong_schema += 1,
            Rejection::Range => r.out_of_range += 1,
            Rejection::Round => r.wrong_round += 1,
            Rejection::NotMember => r.not_member += 1,
        }
    }

    /// Checks and keeps a peer's summary (signature already verified);
    /// `member` says whether its signer is a federation member now.
    /// Ok(true) if new.
    pub fn receive(&mut self, v: &Verified<pb::LearningSummary>, member: bool, now_ms: u64) -> Result<bool, String> {
        let s = v.record();
        let checked = self.check(s, now_ms).and_then(|()| {
            member
                .then_some(())
                .ok_or((Rejection::NotMember, "its signer is no federation member".to_string()))
        });
        if let Err((why, msg)) = checked {
            self.rejected(why);
            return Err(format!("learning summary ignored: {msg}"));
        }
        let round = self.summaries.entry(s.round).or_default();
        if round.len() >= MAX_CONTRIBUTORS && !round.contains_key(&v.signer().0) {
            return Ok(false);
        }
        match round.insert(v.signer().0, s.clone()) {
            Some(old) if old == *s => Ok(false),
            _ => Ok(true),
        }
    }

    fn check(&self, s: &pb::LearningSummary, now_ms: u64) -> Result<(), (Rejection, String)> {
        if s.schema != SCHEMA_VERSION {
            return Err((
                Rejection::Schema,
                format!("model schema {} (this node speaks {SCHEMA_VERSION})", s.schema),
            ));
        }
        if s.round_ms != self.round_ms {
            return Err((Rejection::Round, format!("round length {} ms differs", s.round_ms)));
        }
        let current = now_ms / self.round_ms;
        if s.round.saturating_add(2) < current || s.round > current {
            return Err((
                Rejection::Round,
                format!("round {} is not open (now {current})", s.round),
            ));
        }
        let delta: [f64; FEATURES] = s.delta.as_slice().try_into().map_err(|_| {
            (
                Rejection::Schema,
                format!("{} weights, expected {FEATURES}", s.delta.len()),
            )
        })?;
        validate(&delta, MAX_NORM).map_err(|e| (Rejection::Range, e))?;
        if s.samples > MAX_COUNT || s.usage.len() > MAX_USAGE_ENTRIES {
            return Err((Rejection::Range, "sample or usage count out of range".into()));
        }
        for u in &s.usage {
            if u.hash.len() != 32 || u.installs > MAX_COUNT || u.failed > MAX_COUNT {
                return Err((Rejection::Range, "usage entry out of range".into()));
            }
        }
        Ok(())
    }

    /// What is due at `now_ms`.
    pub fn due(&self, now_ms: u64) -> Due {
        if !self.enabled {
            return Due::default();
        }
        let current = now_ms / self.round_ms;
        Due {
            publish: (current >= 1 && self.last_published.is_none_or(|p| p < current - 1)).then(|| current - 1),
            aggregate: (current >= 2 && self.last_aggregated.is_none_or(|a| a < current - 2)).then(|| current - 2),
        }
    }

    /// This node's summary of `round` from its events of that round; `noise`
    /// privatizes the update when `[learn] dp_epsilon` is set.
    pub fn summarize(&self, round: u64, stored: &[StoredEvent], noise: Option<Noise>) -> pb::LearningSummary {
        let events: Vec<Event> = stored
            .iter()
            .filter_map(|e| {
                Some(Event {
                    shown: e.shown.clone(),
                    chosen: e.chosen? as usize,
                })
            })
            .collect();
        let mut delta = clip(&update(&self.model(), &events, &TrainConfig::default()), MAX_NORM);
        if let Some(noise) = noise
            && let Some(noisy) = noise(&delta)
        {
            delta = clip(&noisy, MAX_NORM);
        }
        let mut usage: HashMap<[u8; 32], (u64, u64)> = HashMap::new();
        for e in stored {
            let slot = usage.entry(e.hash).or_default();
            if e.ok {
                slot.0 += 1;
            } else {
                slot.1 += 1;
            }
        }
        let mut usage: Vec<pb::UsageCount> = usage
            .into_iter()
            .map(|(h, (i, f))| pb::UsageCount {
                hash: h.to_vec(),
                installs: bucket(i),
                failed: bucket(f),
            })
            .collect();
        usage.sort_by(|a, b| a.hash.cmp(&b.hash));
        usage.truncate(MAX_USAGE_ENTRIES);
        pb::LearningSummary {
            round,
            round_ms: self.round_ms,
            schema: SCHEMA_VERSION,
            delta: delta.to_vec(),
            samples: usable(&events),
            usage,
        }
    }

    /// Notes that this node publishes nothing for `round`.
    pub fn skipped(&mut self, round: u64) {
        self.last_published = Some(round);
    }

    /// Keeps this node's own summary of `round`.
    pub fn published(&mut self, signer: [u8; 32], summary: pb::LearningSummary) {
        let round = summary.round;
        self.summaries.entry(round).or_default().insert(signer, summary);
        self.last_published = Some(round);
    }

    /// Aggregates every summary of `round` with the trimmed mean and adopts
    /// the result; rounds before it can no longer be aggregated.
    pub fn aggregate(&mut self, round: u64) -> Aggregated {
        let summaries = self.summaries.remove(&round).unwrap_or_default();
        self.summaries.retain(|r, _| *r > round);
        self.last_aggregated = Some(round);
        let contribs: Vec<Contribution> = summaries
            .iter()
            .filter_map(|(node, s)| {
                Some(Contribution {
                    node: *node,
                    delta: s.delta.as_slice().try_into().ok()?,
                    samples: s.samples,
                })
            })
            .collect();
        self.contributors = summaries.keys().map(hex::encode).collect();
        self.contributors.sort();
        // Per archive, every contributor's counts (0 where it named none),
        // trimmed like the weights: the highest and lowest TRIM share of
        // contributors are dropped, so a few members cannot inflate a count.
        let mut named: BTreeMap<[u8; 32], (Vec<u64>, Vec<u64>)> = BTreeMap::new();
        for s in summaries.values() {
            for u in &s.usage {
                let Ok(h) = <[u8; 32]>::try_from(u.hash.as_slice()) else {
                    continue;
                };
                let e = named.entry(h).or_default();
                e.0.push(u.installs.min(MAX_COUNT));
                e.1.push(u.failed.min(MAX_COUNT));
            }
        }
        let n = summaries.len();
        let mut usage = Vec::new();
        for (h, (installs, failed)) in named {
            if self.usage.len() >= MAX_TRACKED_ARCHIVES && !self.usage.contains_key(&h) {
                continue;
            }
            let slot = self.usage.entry(h).or_default();
            slot.0 = slot.0.saturating_add(trimmed_total(installs, n));
            slot.1 = slot.1.saturating_add(trimmed_total(failed, n));
            usage.push((ContentHash(h), slot.0, slot.1));
        }
        let mut model_changed = false;
        // Rounds where nobody searched and installed leave the model alone.
        if contribs.iter().any(|c| c.samples > 0)
            && let Some(agg) = aggregate(&contribs, Rule::TrimmedMean { trim: TRIM }, SAMPLE_CAP)
        {
            let next = self.model().apply(&agg);
            tracing::info!(round, contributors = contribs.len(), weights = ?next.weights, "ranking model updated");
            self.model = Some(next);
            self.model_version += 1;
            model_changed = true;
        }
        Aggregated { usage, model_changed }
    }

    /// `packfed learn status`.
    pub fn status(&self, now_ms: u64, local_samples: usize, dp_epsilon: Option<f64>) -> serde_json::Value {
        let pending: BTreeMap<String, usize> = self.summaries.iter().map(|(r, s)| (r.to_string(), s.len())).collect();
        serde_json::json!({
            "round": now_ms / self.round_ms,
            "round_ms": self.round_ms,
            "enabled": self.enabled,
            "local_samples": local_samples,
            "contributors": self.contributors,
            "model_version": self.model_version,
            "last_aggregated_round": self.last_aggregated,
            "weights": self.model().weights,
            "features": crate::learn::model::FEATURE_NAMES,
            "schema": SCHEMA_VERSION,
            "rule": format!("trimmed mean ({TRIM} each end), sample cap {SAMPLE_CAP}, norm bound {MAX_NORM}"),
            "pending_summaries": pending,
            "rejected": self.rejected,
            "dp_epsilon": dp_epsilon,
        })
    }
}

/// The total of `counts` (one per contributor that named the archive, the
/// other `n - len` contributors counting 0) after dropping the TRIM share at
/// each end, scaled back to `n` contributors.
fn trimmed_total(mut counts: Vec<u64>, n: usize) -> u64 {
    let n = n.max(counts.len());
    counts.resize(n, 0);
    counts.sort_unstable();
    let cut = (n as f64 * TRIM).floor() as usize;
    let kept = &counts[cut..n - cut];
    let sum: u128 = kept.iter().map(|&c| u128::from(c)).sum();
    let total = sum * n as u128 / kept.len().max(1) as u128;
    u64::try_from(total).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod usage_tests {
    use super::*;

    #[test]
    fn usage_counts_are_trimmed_like_the_weights() {
        // Three contributors: nothing is trimmed (0.2 x 3 rounds down to 0).
        assert_eq!(trimmed_total(vec![1, 2, 4], 3), 7);
        // Ten members, six saw 2 installs, one claims a million, three
        // named none: the two highest and two lowest are cut, and the six
        // kept (sum 10) scale back to ten contributors.
        let mut named = vec![2; 6];
        named.push(MAX_COUNT);
        assert_eq!(trimmed_total(named, 10), 10 * 10 / 6);
        assert_eq!(trimmed_total(Vec::new(), 0), 0);
        assert_eq!(trimmed_total(vec![MAX_COUNT; 256], 256), MAX_COUNT * 256);
    }
}
