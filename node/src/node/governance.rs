//! Governance in the node: proposals, votes and cancels arrive (gossip on the
//! governance topic, registry sync, or this node's API); the core keeps them
//! and says what they put in force ([`crate::core::gov`]). This shell loads
//! them at open, carries out what changes, and wakes at each deadline.

use std::sync::Arc;

use packfed_governance::proposals::{GovRecord, GovState};
use packfed_protocol::Signed;

use super::Node;
use crate::core::gov::{GovError, MAX_CLOCK_SKEW_MS, decode_record};
use crate::core::{Effect, Topic};
use crate::store::StoreError;

impl Node {
    /// Loads the stored governance records (at open).
    pub(super) fn load_governance(&self) -> Result<usize, StoreError> {
        let mut n = 0;
        for id in self.store.gov_ids()? {
            let Some(env) = self.store.record(&id)? else { continue };
            // Stored records were checked when they arrived; their time is
            // not judged again against today's clock.
            match decode_record(&env, self.federation(), u64::MAX - MAX_CLOCK_SKEW_MS) {
                Ok(r) => {
                    if self.gov_lock().load(r) {
                        n += 1;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "stored governance record no longer verifies"),
            }
        }
        self.apply_governance(crate::packing::now_ms());
        Ok(n)
    }

    pub fn gov_records(&self) -> Vec<GovRecord> {
        self.gov_lock().records().to_vec()
    }

    /// The governance state at `now_ms`.
    pub fn gov_state(&self, now_ms: u64) -> GovState {
        self.gov_lock().state(now_ms)
    }

    /// Puts the governance state at `now_ms` in force (membership, policy,
    /// namespace owners; releases re-evaluated when they changed). Returns
    /// when to look again.
    pub fn apply_governance(&self, now_ms: u64) -> Option<u64> {
        self.sync_gov_times();
        let mut effects = self.gov_lock().apply(now_ms);
        if effects.iter().any(|e| matches!(e, Effect::MembersChanged)) {
            effects.extend(self.refresh_witness_set());
        }
        let next = effects.iter().find_map(|e| match e {
            Effect::WakeAt(t) => Some(*t),
            _ => None,
        });
        if let Err(e) = self.apply(effects) {
            tracing::warn!(error = %e, "applying the governance state failed");
        }
        next
    }

    /// A governance record signed on this node (the CLI): refused with a
    /// clear reason when it could not count, else stored, flushed, gossiped.
    pub fn submit_gov(&self, env: &Signed) -> Result<[u8; 32], GovError> {
        let now = crate::packing::now_ms();
        let record = decode_record(env, self.federation(), now)?;
        let id = record.id();
        let mut effects = {
            let mut gov = self.gov_lock();
            gov.check_local(&record, now)?;
            gov.admit_decoded(record, env)?.unwrap_or_default()
        };
        effects.push(Effect::Flush);
        effects.push(Effect::Gossip(Topic::Governance, env.encoded().to_vec()));
        self.apply(effects)?;
        self.checkpoint_now();
        self.apply_governance(now);
        Ok(id)
    }
}

/// Recomputes governance as records arrive and at each deadline.
pub async fn run(node: Arc<Node>) {
    loop {
        let next = {
            let node = node.clone();
            tokio::task::spawn_blocking(move || node.apply_governance(crate::packing::now_ms()))
                .await
                .ok()
                .flatten()
        };
        // Wake at the next deadline (at least every 5 s, in case the clock jumps).
        let wait = next
            .map(|t| t.saturating_sub(crate::packing::now_ms()))
            .unwrap_or(u64::MAX)
            .clamp(20, 5_000);
        tokio::select! {
            _ = node.gov_changed.notified() => {}
            _ = tokio::time::sleep(std::time::Duration::from_millis(wait)) => {}
        }
    }
}
