//! Federated learning in the running node (the I/O edge of this module):
//! search-then-install events kept in sled, one signed summary per round
//! gossiped on the learn topic, peers' summaries checked and aggregated with
//! the trimmed mean, the result adopted as the ranking model.
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

use packfed_protocol::{ContentHash, Signed, Verified, pb};
use serde::{Deserialize, Serialize};

use super::aggregate::{Contribution, Rule, aggregate, validate};
use super::model::{FEATURES, Model, SCHEMA_VERSION};
use super::train::{Event, TrainConfig, clip, update, usable};
use crate::node::Node;
use crate::store::StoreError;

/// Longest update a node may send (and the clip applied to ours).
pub const MAX_NORM: f64 = 3.0;
/// A node's samples count at most this much in the weighted aggregate.
pub const SAMPLE_CAP: u64 = 100;
/// Fraction trimmed from each end per coordinate.
pub const TRIM: f64 = 0.2;
/// Events kept at most, and for how long.
const MAX_EVENTS: usize = 10_000;
const MAX_EVENT_AGE_MS: u64 = 30 * 86_400_000;
/// An install counts as chosen from a search made at most this long before.
const SEARCH_WINDOW_MS: u64 = 10 * 60 * 1000;
/// Searches remembered for that purpose.
const RECENT_SEARCHES: usize = 256;
/// Bounds on what a summary may carry.
const MAX_USAGE_ENTRIES: usize = 1024;
const MAX_COUNT: u64 = 1 << 20;
/// Summaries kept per round: with envelopes of at most 64 KiB and three open
/// rounds, at most 48 MiB whatever peers send.
const MAX_CONTRIBUTORS: usize = 256;

/// Why a peer's summary was ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    Signature,
    Schema,
    Range,
    Round,
}

/// Counts of ignored summaries, by reason.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Rejected {
    pub bad_signature: u64,
    pub wrong_schema: u64,
    pub out_of_range: u64,
    pub wrong_round: u64,
}

/// A stored event (the install may have failed; only successful installs
/// chosen from a search train the model).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredEvent {
    at_ms: u64,
    hash: [u8; 32],
    ok: bool,
    shown: Vec<[f64; FEATURES]>,
    chosen: Option<u32>,
}

struct RecentSearch {
    at_ms: u64,
    shown: Vec<([u8; 32], [f64; FEATURES])>,
}

/// The learning state of a node.
#[derive(Default)]
pub struct LearnBook {
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
    loaded: bool,
}

/// The power of two at or below `n` (0 stays 0): what a summary says of a count.
pub fn bucket(n: u64) -> u64 {
    if n == 0 { 0 } else { 1 << (63 - n.leading_zeros()) }
}

#[derive(Serialize, Deserialize)]
struct SavedModel {
    weights: [f64; FEATURES],
    version: u64,
    last_aggregated: Option<u64>,
    last_published: Option<u64>,
    usage: Vec<([u8; 32], u64, u64)>,
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("learning state: {e}"))
}

impl Node {
    fn round_ms(&self) -> u64 {
        self.config.learn.round.millis().max(1000)
    }

    fn learn_tree(&self) -> Result<sled::Tree, StoreError> {
        Ok(self.store.db.open_tree("learn")?)
    }

    fn learn_events(&self) -> Result<sled::Tree, StoreError> {
        Ok(self.store.db.open_tree("learn_events")?)
    }

    fn book(&self) -> std::sync::MutexGuard<'_, LearnBook> {
        let mut b = self.learn.lock().unwrap_or_else(|p| p.into_inner());
        if !b.loaded {
            b.loaded = true;
            match self.learn_tree().and_then(|t| Ok(t.get("model")?)) {
                Ok(Some(bytes)) => match postcard::from_bytes::<SavedModel>(&bytes) {
                    Ok(m) => {
                        b.model = Some(Model { weights: m.weights }).filter(|m| m.check().is_ok());
                        b.model_version = m.version;
                        b.last_aggregated = m.last_aggregated;
                        b.last_published = m.last_published;
                        b.usage = m.usage.into_iter().map(|(h, i, f)| (h, (i, f))).collect();
                    }
                    Err(e) => tracing::warn!(error = %e, "learning state unreadable; starting from the default model"),
                },
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "learning state unreadable"),
            }
        }
        b
    }

    /// The ranking model in force.
    pub fn ranking_model(&self) -> Model {
        self.book().model.clone().unwrap_or_default()
    }

    /// Installs and failed installs of an archive, from the aggregates.
    pub fn usage_of(&self, hash: &ContentHash) -> (u64, u64) {
        self.book().usage.get(&hash.0).copied().unwrap_or((0, 0))
    }

    /// Remembers what a search showed, so a later install can be tied to it.
    pub fn learn_note_search(&self, shown: Vec<([u8; 32], [f64; FEATURES])>, now_ms: u64) {
        if shown.is_empty() || !self.config.learn.enabled {
            return;
        }
        let mut b = self.book();
        if b.recent.len() >= RECENT_SEARCHES {
            b.recent.pop_front();
        }
        b.recent.push_back(RecentSearch { at_ms: now_ms, shown });
    }

    /// Records an install (or a failed one) of `hash`: an event if a recent
    /// search showed it. Durable before it returns. Returns whether it
    /// became a training event.
    pub fn learn_install(&self, hash: &ContentHash, ok: bool, now_ms: u64) -> Result<bool, StoreError> {
        let (shown, chosen) = {
            let b = self.book();
            let found = b
                .recent
                .iter()
                .rev()
                .take_while(|s| now_ms.saturating_sub(s.at_ms) <= SEARCH_WINDOW_MS)
                .find_map(|s| {
                    let i = s.shown.iter().position(|(h, _)| *h == hash.0)?;
                    Some((s.shown.iter().map(|(_, f)| *f).collect::<Vec<_>>(), i as u32))
                });
            match found {
                Some((shown, i)) if ok => (shown, Some(i)),
                _ => (Vec::new(), None),
            }
        };
        let ev = StoredEvent {
            at_ms: now_ms,
            hash: hash.0,
            ok,
            shown,
            chosen,
        };
        let tree = self.learn_events()?;
        let mut key = now_ms.to_be_bytes().to_vec();
        key.extend_from_slice(&self.store.next_id()?.to_be_bytes());
        tree.insert(key, postcard::to_stdvec(&ev).map_err(corrupt)?)?;
        // Bounded in number and age: drop the oldest.
        let horizon = now_ms.saturating_sub(MAX_EVENT_AGE_MS);
        while tree.len() > MAX_EVENTS
            || tree
                .first()?
                .is_some_and(|(k, _)| k.len() >= 8 && u64::from_be_bytes(k[..8].try_into().unwrap_or([0; 8])) < horizon)
        {
            if tree.pop_min()?.is_none() {
                break;
            }
        }
        self.store.flush()?;
        Ok(ev.chosen.is_some())
    }

    fn events_between(&self, from_ms: u64, to_ms: u64) -> Result<Vec<StoredEvent>, StoreError> {
        let tree = self.learn_events()?;
        tree.range(from_ms.to_be_bytes()..to_ms.to_be_bytes())
            .values()
            .map(|v| postcard::from_bytes(&v?).map_err(corrupt))
            .collect()
    }

    pub fn learn_rejected(&self, why: Rejection) {
        let mut b = self.book();
        match why {
            Rejection::Signature => b.rejected.bad_signature += 1,
            Rejection::Schema => b.rejected.wrong_schema += 1,
            Rejection::Range => b.rejected.out_of_range += 1,
            Rejection::Round => b.rejected.wrong_round += 1,
        }
    }

    /// Checks and keeps a peer's summary (signature already verified).
    /// Ok(true) if new.
    pub fn learn_receive(&self, v: &Verified<pb::LearningSummary>, now_ms: u64) -> Result<bool, String> {
        let s = v.record();
        let check = || -> Result<(), (Rejection, String)> {
            if s.schema != SCHEMA_VERSION {
                return Err((
                    Rejection::Schema,
                    format!("model schema {} (this node speaks {SCHEMA_VERSION})", s.schema),
                ));
            }
            if s.round_ms != self.round_ms() {
                return Err((Rejection::Round, format!("round length {} ms differs", s.round_ms)));
            }
            let current = now_ms / self.round_ms();
            if s.round + 2 < current || s.round > current {
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
        };
        if let Err((why, msg)) = check() {
            self.learn_rejected(why);
            return Err(format!("learning summary ignored: {msg}"));
        }
        let mut b = self.book();
        let round = b.summaries.entry(s.round).or_default();
        if round.len() >= MAX_CONTRIBUTORS && !round.contains_key(&v.signer().0) {
            return Ok(false);
        }
        match round.insert(v.signer().0, s.clone()) {
            Some(old) if old == *s => Ok(false),
            _ => Ok(true),
        }
    }

    /// Runs what is due at `now_ms`: publishes this node's summary of the
    /// round that ended, aggregates the round before it. Returns a summary
    /// envelope to gossip.
    pub fn learn_tick(&self, now_ms: u64) -> Result<Option<Vec<u8>>, StoreError> {
        if !self.config.learn.enabled {
            return Ok(None);
        }
        let r_ms = self.round_ms();
        let current = now_ms / r_ms;
        let mut out = None;
        if current >= 1 && self.book().last_published.is_none_or(|p| p < current - 1) {
            out = Some(self.publish_summary(current - 1, r_ms)?);
        }
        if current >= 2 && self.book().last_aggregated.is_none_or(|a| a < current - 2) {
            self.aggregate_round(current - 2)?;
        }
        Ok(out)
    }

    fn publish_summary(&self, round: u64, r_ms: u64) -> Result<Vec<u8>, StoreError> {
        let stored = self.events_between(round * r_ms, (round + 1) * r_ms)?;
        let events: Vec<Event> = stored
            .iter()
            .filter_map(|e| {
                Some(Event {
                    shown: e.shown.clone(),
                    chosen: e.chosen? as usize,
                })
            })
            .collect();
        let model = self.ranking_model();
        let mut delta = clip(&update(&model, &events, &TrainConfig::default()), MAX_NORM);
        if let Some(eps) = self.config.learn.dp_epsilon {
            let cfg = super::dp::DpConfig {
                clip: MAX_NORM,
                epsilon: eps,
                delta: 1e-5,
            };
            let mut seed = [0u8; 8];
            let _ = getrandom::fill(&mut seed);
            match super::dp::privatize(&delta, &cfg, &mut super::dp::Rng::new(u64::from_le_bytes(seed))) {
                Ok(noisy) => delta = clip(&noisy, MAX_NORM),
                Err(e) => tracing::warn!(error = %e, "[learn] dp_epsilon is invalid; sending no update this round"),
            }
        }
        let mut usage: HashMap<[u8; 32], (u64, u64)> = HashMap::new();
        for e in &stored {
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
        let summary = pb::LearningSummary {
            round,
            round_ms: r_ms,
            schema: SCHEMA_VERSION,
            delta: delta.to_vec(),
            samples: usable(&events),
            usage,
        };
        let env = Signed::sign(&summary, &self.key, self.federation());
        {
            let mut b = self.book();
            b.summaries
                .entry(round)
                .or_default()
                .insert(self.key.public().0, summary);
            b.last_published = Some(round);
        }
        self.save_learning()?;
        tracing::info!(round, samples = usable(&events), "learning summary published");
        Ok(env.encoded().to_vec())
    }

    fn aggregate_round(&self, round: u64) -> Result<(), StoreError> {
        let installs = {
            let mut b = self.book();
            let summaries = b.summaries.remove(&round).unwrap_or_default();
            // Older rounds can no longer be aggregated.
            b.summaries.retain(|r, _| *r > round);
            b.last_aggregated = Some(round);
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
            b.contributors = summaries.keys().map(hex::encode).collect();
            b.contributors.sort();
            let mut changed = Vec::new();
            for s in summaries.values() {
                for u in &s.usage {
                    let Ok(h) = <[u8; 32]>::try_from(u.hash.as_slice()) else {
                        continue;
                    };
                    let slot = b.usage.entry(h).or_default();
                    slot.0 = slot.0.saturating_add(u.installs.min(MAX_COUNT));
                    slot.1 = slot.1.saturating_add(u.failed.min(MAX_COUNT));
                    changed.push((ContentHash(h), slot.0, slot.1));
                }
            }
            // Rounds where nobody searched and installed leave the model alone.
            if contribs.iter().any(|c| c.samples > 0)
                && let Some(agg) = aggregate(&contribs, Rule::TrimmedMean { trim: TRIM }, SAMPLE_CAP)
            {
                let next = b.model.clone().unwrap_or_default().apply(&agg);
                tracing::info!(round, contributors = contribs.len(), weights = ?next.weights, "ranking model updated");
                b.model = Some(next);
                b.model_version += 1;
            }
            changed
        };
        if let Some(svc) = self.search.get() {
            svc.set_weights(self.ranking_model().weights);
            svc.set_installs(&installs);
        }
        self.save_learning()
    }

    fn save_learning(&self) -> Result<(), StoreError> {
        let saved = {
            let b = self.book();
            SavedModel {
                weights: b.model.clone().unwrap_or_default().weights,
                version: b.model_version,
                last_aggregated: b.last_aggregated,
                last_published: b.last_published,
                usage: b.usage.iter().map(|(h, (i, f))| (*h, *i, *f)).collect(),
            }
        };
        self.learn_tree()?
            .insert("model", postcard::to_stdvec(&saved).map_err(corrupt)?)?;
        self.store.flush()
    }

    /// `packfed learn status`.
    pub fn learn_status(&self, now_ms: u64) -> serde_json::Value {
        let local_samples = self.learn_events().map(|t| t.len()).unwrap_or(0);
        let b = self.book();
        let pending: BTreeMap<String, usize> = b.summaries.iter().map(|(r, s)| (r.to_string(), s.len())).collect();
        serde_json::json!({
            "round": now_ms / self.round_ms(),
            "round_ms": self.round_ms(),
            "enabled": self.config.learn.enabled,
            "local_samples": local_samples,
            "contributors": b.contributors,
            "model_version": b.model_version,
            "last_aggregated_round": b.last_aggregated,
            "weights": b.model.clone().unwrap_or_default().weights,
            "features": super::model::FEATURE_NAMES,
            "schema": SCHEMA_VERSION,
            "rule": format!("trimmed mean ({TRIM} each end), sample cap {SAMPLE_CAP}, norm bound {MAX_NORM}"),
            "pending_summaries": pending,
            "rejected": b.rejected,
            "dp_epsilon": self.config.learn.dp_epsilon,
        })
    }
}

/// Ticks the node's learning: at every round boundary publish, aggregate.
pub async fn run(node: std::sync::Arc<Node>) {
    if !node.config.learn.enabled {
        return;
    }
    // Adopt a model saved by an earlier run.
    if let Some(svc) = node.search.get() {
        svc.set_weights(node.ranking_model().weights);
        let usage: Vec<(ContentHash, u64, u64)> = node
            .book()
            .usage
            .iter()
            .map(|(h, (i, f))| (ContentHash(*h), *i, *f))
            .collect();
        svc.set_installs(&usage);
    }
    let tick = std::time::Duration::from_millis((node.round_ms() / 8).clamp(100, 5000));
    loop {
        let n = node.clone();
        match tokio::task::spawn_blocking(move || n.learn_tick(crate::packing::now_ms())).await {
            Ok(Ok(Some(envelope))) => {
                if let Some(net) = node.net.get() {
                    net.send(crate::net::Command::GossipLearn(envelope)).await;
                }
            }
            Ok(Ok(None)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "learning round failed"),
            Err(e) => tracing::warn!(error = %e, "learning task failed"),
        }
        tokio::time::sleep(tick).await;
    }
}

#[cfg(test)]
mod tests {
    use super::bucket;

    #[test]
    fn counts_are_rounded_down_to_a_power_of_two() {
        let got: Vec<u64> = [0, 1, 2, 3, 4, 7, 8, 1000].iter().map(|n| bucket(*n)).collect();
        assert_eq!(got, vec![0, 1, 2, 2, 4, 4, 8, 512]);
    }
}
