//! Federated learning in the running node (the I/O edge of
//! [`crate::core::learning`]): search-then-install events kept in sled, the
//! learning state saved between runs, and at each tick this node's signed
//! summary handed to gossip.

use packfed_protocol::{ContentHash, Signed};

use super::{Node, Outbound};
use crate::core::Topic;
use crate::core::learning::{Aggregated, Rejection, SavedModel, StoredEvent};
use crate::learn::model::{FEATURES, Model};
use crate::store::StoreError;

/// Events kept at most, and for how long.
const MAX_EVENTS: usize = 10_000;
const MAX_EVENT_AGE_MS: u64 = 30 * 86_400_000;

/// What a learning tick did.
#[derive(Default)]
pub struct LearnTick {
    /// A round was aggregated: the ranking model and usage counts to adopt.
    pub aggregated: Option<Aggregated>,
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("learning state: {e}"))
}

impl Node {
    fn learn_tree(&self) -> Result<sled::Tree, StoreError> {
        Ok(self.store.db.open_tree("learn")?)
    }

    fn learn_events(&self) -> Result<sled::Tree, StoreError> {
        Ok(self.store.db.open_tree("learn_events")?)
    }

    /// Continues from the state saved by an earlier run (at open).
    pub(super) fn load_learning(&self) {
        match self.learn_tree().and_then(|t| Ok(t.get("model")?)) {
            Ok(Some(bytes)) => match postcard::from_bytes::<SavedModel>(&bytes) {
                Ok(m) => self.learn_lock().restore(m),
                Err(e) => tracing::warn!(error = %e, "learning state unreadable; starting from the default model"),
            },
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "learning state unreadable"),
        }
    }

    /// The ranking model in force.
    pub fn ranking_model(&self) -> Model {
        self.learn_lock().model()
    }

    /// Installs and failed installs of an archive, from the aggregates.
    pub fn usage_of(&self, hash: &ContentHash) -> (u64, u64) {
        self.learn_lock().usage_of(hash)
    }

    /// Installs and failed installs of every archive the aggregates name.
    pub fn all_usage(&self) -> Vec<(ContentHash, u64, u64)> {
        self.learn_lock().all_usage()
    }

    /// Remembers what a search showed, so a later install can be tied to it.
    pub fn learn_note_search(&self, shown: Vec<([u8; 32], [f64; FEATURES])>, now_ms: u64) {
        self.learn_lock().note_search(shown, now_ms);
    }

    /// Records an install (or a failed one) of `hash`: an event if a recent
    /// search showed it. Durable before it returns. Returns whether it
    /// became a training event.
    pub fn learn_install(&self, hash: &ContentHash, ok: bool, now_ms: u64) -> Result<bool, StoreError> {
        let ev = self.learn_lock().install_event(hash, ok, now_ms);
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
        self.learn_lock().rejected(why);
    }

    /// Runs what is due at `now_ms`: publishes (gossips) this node's summary
    /// of the round that ended, aggregates the round before it.
    pub fn learn_tick(&self, now_ms: u64) -> Result<LearnTick, StoreError> {
        let due = self.learn_lock().due(now_ms);
        let mut tick = LearnTick::default();
        if let Some(round) = due.publish
            && let Some(envelope) = self.publish_summary(round)?
        {
            self.send_out(Outbound::Gossip(Topic::Learn, envelope));
        }
        if let Some(round) = due.aggregate {
            tick.aggregated = Some(self.learn_lock().aggregate(round));
            self.save_learning()?;
        }
        Ok(tick)
    }

    /// Signs and keeps this node's summary of `round`; None when the home
    /// holds no member key (peers would ignore it, so it does not count
    /// here either).
    fn publish_summary(&self, round: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(key) = self.learning_key() else {
            self.learn_lock().skipped(round);
            tracing::debug!(
                round,
                "no federation member key in this home: no learning summary published"
            );
            return Ok(None);
        };
        let r_ms = self.learn_lock().round_ms();
        let stored = self.events_between(round * r_ms, (round + 1) * r_ms)?;
        let dp = self.config.learn.dp_epsilon.map(|eps| crate::learn::dp::DpConfig {
            clip: crate::core::learning::MAX_NORM,
            epsilon: eps,
            delta: 1e-5,
        });
        let noise = |delta: &[f64; FEATURES]| {
            let cfg = dp.as_ref()?;
            let mut seed = [0u8; 8];
            let _ = getrandom::fill(&mut seed);
            let mut rng = crate::learn::dp::Rng::new(u64::from_le_bytes(seed));
            match crate::learn::dp::privatize(delta, cfg, &mut rng) {
                Ok(noisy) => Some(noisy),
                Err(e) => {
                    tracing::warn!(error = %e, "[learn] dp_epsilon is invalid; sending no update this round");
                    None
                }
            }
        };
        let mut summary = {
            let learn = self.learn_lock();
            learn.summarize(round, &stored, dp.is_some().then_some(&noise as &dyn Fn(&_) -> _))
        };
        // Summaries are public: install counts of org archives stay home
        // (their events still train the model, which names no archive).
        summary
            .usage
            .retain(|u| ContentHash::from_slice(&u.hash).is_ok_and(|h| self.is_public_blob(&h)));
        let samples = summary.samples;
        let env = Signed::sign(&summary, &key, self.federation());
        self.learn_lock().published(key.public().0, summary);
        self.save_learning()?;
        tracing::info!(round, samples, "learning summary published");
        Ok(Some(env.encoded().to_vec()))
    }

    fn save_learning(&self) -> Result<(), StoreError> {
        let saved = self.learn_lock().saved();
        self.learn_tree()?
            .insert("model", postcard::to_stdvec(&saved).map_err(corrupt)?)?;
        self.store.flush()
    }

    /// `packfed learn status`.
    pub fn learn_status(&self, now_ms: u64) -> serde_json::Value {
        let local_samples = self.learn_events().map(|t| t.len()).unwrap_or(0);
        self.learn_lock()
            .status(now_ms, local_samples, self.config.learn.dp_epsilon)
    }

    /// Whether learning runs on this node, and how often it ticks.
    pub fn learn_schedule(&self) -> Option<std::time::Duration> {
        let l = self.learn_lock();
        l.enabled()
            .then(|| std::time::Duration::from_millis((l.round_ms() / 8).clamp(100, 5000)))
    }
}
