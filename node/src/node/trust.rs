//! Trust in the node: the policy in force, verdicts remembered in the store
//! and recomputed when attestations or the policy change, attestations
//! signed here, and this node's own checks of the packs it holds. The
//! decisions are the core's ([`crate::core::verdict`], [`crate::core::admit`]).

use std::sync::Arc;

use anyhow::{Context, Result};
use packfed_governance::Policy;
use packfed_governance::Role;
use packfed_governance::evaluate::{self, AttestationFact};
use packfed_protocol::{ContentHash, PublicKey, Signed, pb};
use serde::Serialize;

use super::Node;
use crate::core::Effect;
use crate::core::admit::{self, AttestError};
use crate::core::verdict::{self, PolicyInForce, RuleSet, Statement, fact_of, sign_attestation};
use crate::store::{AttestationEntry, ReleaseEntry, ReleaseStatus, StoreError};

/// Loads the node's local policy file (`[policy] local`), relative to the home.
pub fn load_local_policy(home: &crate::config::Home, local: Option<&str>) -> Result<Option<RuleSet>> {
    let Some(file) = local else { return Ok(None) };
    let path = home.root.join(file);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "reading the local policy {} ([policy] local in config.toml)",
            path.display()
        )
    })?;
    let policy = Policy::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(Some(RuleSet {
        source: format!("local ({file})"),
        rules: policy.accept,
    }))
}

/// An attestation as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct AttestationView {
    pub id: String,
    pub kind: String,
    pub result: &'static str,
    pub attester: String,
    pub role: Option<&'static str>,
    /// The time its signer claims.
    pub time: u64,
    /// When a witness quorum listed it (null: pending, it does not count yet).
    pub witnessed_at: Option<u64>,
    pub note: String,
    pub score: Option<u32>,
    /// Counts: no later attestation (by witnessed time) by the same
    /// attester and kind replaced it.
    pub current: bool,
}

impl Node {
    /// The policy in force (a snapshot: governance may replace it).
    pub fn policy(&self) -> Arc<PolicyInForce> {
        self.gov_lock().policy()
    }

    /// The rule sets in force: the federation's, then the local one.
    pub fn rule_sets(&self) -> Vec<RuleSet> {
        self.policy().sets.clone()
    }

    /// The role `key` holds in the membership in force.
    pub fn role_of(&self, key: &PublicKey) -> Option<Role> {
        self.policy().role_of(key)
    }

    /// The attestations that name this release's archive (all of them,
    /// witnessed or not).
    pub fn attestation_entries(&self, r: &pb::Release) -> Result<Vec<AttestationEntry>, StoreError> {
        verdict::attestations_of(&self.view(), r)
    }

    /// Those that count, at their witnessed time ([`verdict::counted_attestations`]).
    pub fn counted_attestations(&self, r: &pb::Release) -> Result<Vec<AttestationEntry>, StoreError> {
        verdict::counted_attestations(&self.view(), r)
    }

    /// Evaluates a release against the policy in force.
    pub fn evaluate(&self, entry: &ReleaseEntry) -> Result<ReleaseStatus, StoreError> {
        let policy = self.policy();
        let atts = if policy.empty {
            Vec::new()
        } else {
            self.counted_attestations(&entry.release)?
        };
        Ok(verdict::evaluate(&policy, entry, &atts))
    }

    /// The verdict on a release under the policy in force (computed and
    /// remembered if the stored one is missing or from other rules).
    pub fn status_of(&self, entry: &ReleaseEntry) -> Result<ReleaseStatus, StoreError> {
        let policy = self.policy();
        if let Some(s) = verdict::current_status(&policy, &self.view(), entry)? {
            return Ok(s);
        }
        let s = self.evaluate(entry)?;
        self.store.set_status(&entry.record_id, &s)?;
        Ok(s)
    }

    /// Re-evaluates `name@version` under the policy in force and carries out
    /// what follows (its new verdict; on a mirror, the fetch of a release
    /// that just became accepted).
    pub fn reevaluate(&self, name: &str, version: &str) -> Result<(), StoreError> {
        let effects = self.reevaluation(name, version)?;
        self.apply(effects)
    }

    /// What re-evaluating `name@version` implies.
    pub(super) fn reevaluation(&self, name: &str, version: &str) -> Result<Vec<Effect>, StoreError> {
        let Some(entry) = self.store.release(self.federation(), name, version)? else {
            return Ok(Vec::new());
        };
        let policy = self.policy();
        let judge = self.judge(&policy);
        verdict::reevaluate(&judge, &self.view(), &entry)
    }

    /// Re-evaluates every release whose verdict is from other rules (run at
    /// start, so a changed policy applies at once). Returns how many.
    pub fn reevaluate_stale(&self) -> Result<usize, StoreError> {
        let fp = self.policy().fingerprint;
        let fresh = |rid: &packfed_protocol::RecordId| -> Result<bool, StoreError> {
            Ok(self.store.status(rid)?.is_some_and(|s| s.policy == fp))
        };
        // Verdicts first, from the index alone: only packages with a stale
        // verdict are read (and their signatures checked), one at a time, so
        // a restart under the same policy holds no release in memory.
        let mut stale: Vec<String> = Vec::new();
        for item in self.store.release_index() {
            let (name, rid) = item?;
            if stale.last() != Some(&name) && !fresh(&rid)? {
                stale.push(name);
            }
        }
        let mut n = 0;
        for name in stale {
            for entry in self.store.releases_of(self.federation(), &name)? {
                if fresh(&entry.record_id)? {
                    continue;
                }
                let s = self.evaluate(&entry)?;
                self.store.set_status(&entry.record_id, &s)?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Whether a release may be listed, served and installed.
    pub fn is_accepted(&self, entry: &ReleaseEntry) -> bool {
        entry.conflict.is_none() && self.status_of(entry).map(|s| s.accepted()).unwrap_or(false)
    }

    /// A locally signed attestation (CLI or this node's own checks): verify,
    /// store, replicate, flush, gossip.
    pub fn attest_local(&self, env: &Signed) -> Result<packfed_protocol::RecordId, AttestError> {
        let policy = self.policy();
        let judge = self.judge(&policy);
        let (id, effects) = admit::local_attestation(&judge, &self.view(), self.federation(), env)?;
        self.apply(effects)?;
        self.checkpoint_now();
        Ok(id)
    }

    /// The attestations of a release, for `packfed attestations` and `info`.
    pub fn attestation_views(&self, entry: &ReleaseEntry) -> Result<Vec<AttestationView>, StoreError> {
        let entries = self.attestation_entries(&entry.release)?;
        let counted = self.counted_attestations(&entry.release)?;
        let facts: Vec<AttestationFact> = counted.iter().filter_map(fact_of).collect();
        let current: std::collections::HashSet<[u8; 32]> = evaluate::current(&facts).iter().map(|f| f.id).collect();
        let mut out: Vec<AttestationView> = entries
            .iter()
            .map(|e| AttestationView {
                id: hex::encode(e.id),
                kind: e.kind.clone(),
                result: if e.pass { "pass" } else { "fail" },
                attester: PublicKey(e.attester).to_hex(),
                role: self.role_of(&PublicKey(e.attester)).map(|r| r.as_str()),
                time: e.time_ms,
                witnessed_at: counted.iter().find(|c| c.id == e.id).map(|c| c.time_ms),
                note: e.note.clone(),
                score: (e.kind == "quality").then_some(e.score),
                current: current.contains(&e.id),
            })
            .collect();
        out.sort_by(|a, b| (a.time, &a.id).cmp(&(b.time, &b.id)));
        Ok(out)
    }
}

/// Largest pack a node re-checks on its own (unpack + repack costs disk and
/// time proportional to the pack).
const MAX_SELF_CHECK_BYTES: u64 = 512 * 1024 * 1024;

impl Node {
    /// Independent-builder checks (Trustix-style) on a blob this node holds:
    /// repacks it to see whether it reproduces the same hash, recomputes its
    /// quality, and signs a `reproducible-build` and a `quality` attestation
    /// with the node key for every release of that archive. Skips what this
    /// node already attested.
    pub fn self_attest(&self, hash: &ContentHash) -> Result<usize> {
        use packfed_protocol::archive::{self, ReadLimits};
        let mut subjects = Vec::new();
        for rid in self.store.releases_with_hash(hash)? {
            let Some(env) = self.store.record(&rid)? else { continue };
            let Ok(v) = env.verify::<pb::Release>(self.federation()) else {
                continue;
            };
            let r = v.record();
            let mine = self
                .attestation_entries(r)?
                .iter()
                .any(|a| a.attester == self.key.public().0 && a.kind == "reproducible-build");
            if !mine {
                subjects.push(r.clone());
            }
        }
        if subjects.is_empty() {
            return Ok(0);
        }
        let (meta, reader) = self.store.blob_reader(hash)?;
        if meta.size > MAX_SELF_CHECK_BYTES {
            return Ok(0);
        }
        let limits = ReadLimits::for_archive(meta.size);
        let inspection = archive::inspect(reader, limits)?;
        let recomputed = inspection
            .manifest_text
            .as_deref()
            .and_then(|t| packfed_protocol::manifest::Manifest::parse(t).ok())
            .map(|m| packfed_protocol::quality::assess(&m, &inspection.entries).score);
        let scratch = self.home.root.join("tmp");
        std::fs::create_dir_all(&scratch)?;
        let dir = tempfile::tempdir_in(&scratch)?;
        let unpacked = dir.path().join("pack");
        let (_, reader) = self.store.blob_reader(hash)?;
        archive::unpack(reader, &unpacked, limits)?;
        let (_, summary) = archive::pack_dir(&unpacked, std::io::sink())?;
        let reproducible = summary.hash == *hash;
        let now = crate::packing::now_ms();
        let mut signed = 0;
        for r in subjects {
            let note = if reproducible {
                "unpack and repack give the same archive".to_string()
            } else {
                format!("repacking gives {} instead", summary.hash)
            };
            let env = sign_attestation(
                &r,
                &Statement {
                    kind: "reproducible-build",
                    pass: reproducible,
                    note: &note,
                    score: 0,
                },
                &self.key,
                self.federation(),
                now,
            );
            self.attest_local(&env)?;
            signed += 1;
            if let Some(score) = recomputed {
                let claimed = r.quality.as_ref().map(|q| q.score).unwrap_or(0);
                let note = format!("recomputed quality {score}, publisher claims {claimed}");
                let env = sign_attestation(
                    &r,
                    &Statement {
                        kind: "quality",
                        pass: score == claimed,
                        note: &note,
                        score,
                    },
                    &self.key,
                    self.federation(),
                    now,
                );
                self.attest_local(&env)?;
                signed += 1;
            }
        }
        Ok(signed)
    }

    /// Runs [`Node::self_attest`] in the background.
    pub fn spawn_self_attest(self: &std::sync::Arc<Self>, hash: ContentHash) {
        let node = self.clone();
        tokio::task::spawn_blocking(move || match node.self_attest(&hash) {
            Ok(0) => {}
            Ok(n) => tracing::info!(%hash, attestations = n, "signed this node's own checks"),
            Err(e) => tracing::warn!(%hash, error = %e, "self-check of a pack failed"),
        });
    }
}
