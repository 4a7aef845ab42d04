//! Trust in the node: attestations in and out, and the acceptance policy
//! applied to every release. The decisions themselves are the governance
//! crate's pure engine; this module gathers its inputs from the store,
//! remembers verdicts, and re-evaluates when attestations or the policy
//! change.

use std::str::FromStr;

use anyhow::{Context, Result};
use packfed_governance::Role;
use packfed_governance::evaluate::{self, AttestationFact};
use packfed_governance::policy::{Accept, AttestationKind, Policy, Verdict};
use packfed_protocol::records::check_attestation;
use packfed_protocol::{ContentHash, PublicKey, Signed, Verified, pb};
use serde::Serialize;

use crate::ingest::Channel;
use crate::node::Node;
use crate::store::{AttestationEntry, ReleaseEntry, ReleaseStatus, StoreError};

/// One rule set of the policy in force and where it comes from.
#[derive(Debug, Clone, Serialize)]
pub struct RuleSet {
    pub source: String,
    pub rules: Accept,
}

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

/// Why an attestation was refused.
#[derive(Debug, thiserror::Error)]
pub enum AttestError {
    #[error("attestation refused: {0}")]
    Invalid(String),
    #[error("attestation names archive {claimed} but {id} is {actual}: attest the release's own hash")]
    HashMismatch {
        id: String,
        claimed: ContentHash,
        actual: ContentHash,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn fact_of(e: &AttestationEntry) -> Option<AttestationFact> {
    Some(AttestationFact {
        id: e.id,
        attester: PublicKey(e.attester),
        kind: AttestationKind::from_str(&e.kind).ok()?,
        result: if e.pass { Verdict::Pass } else { Verdict::Fail },
        time_ms: e.time_ms,
    })
}

/// Per `(name, version)`: the visible release, if this node has it.
type SubjectCache = std::collections::HashMap<(String, String), Option<pb::Release>>;

/// What [`Node::store_attestations`] did: per attestation Ok(true) if new,
/// and the blobs of releases that became accepted.
pub struct StoredAttestations {
    pub results: Vec<Result<bool, AttestError>>,
    pub fetch: Vec<(ContentHash, u64)>,
}

/// What an attester states about a release.
pub struct Statement<'a> {
    pub kind: &'a str,
    pub pass: bool,
    pub note: &'a str,
    /// For `quality`: the recomputed score.
    pub score: u32,
}

/// An attestation as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct AttestationView {
    pub id: String,
    pub kind: String,
    pub result: &'static str,
    pub attester: String,
    pub role: Option<&'static str>,
    pub time: u64,
    pub note: String,
    pub score: Option<u32>,
    /// False when a later attestation by the same attester and kind replaced it.
    pub current: bool,
}

/// The acceptance policy in force, with what evaluation needs precomputed.
#[derive(Debug, Clone)]
pub struct PolicyInForce {
    /// 0 for the genesis policy; governance raises it.
    pub version: u64,
    /// The proposal that set the federation policy (None: genesis).
    pub set_by: Option<[u8; 32]>,
    /// The federation's rules, then the node's local ones.
    pub sets: Vec<RuleSet>,
    /// Identifies the rules a verdict was computed under.
    pub fingerprint: [u8; 32],
    /// The attestation kinds any rule looks at.
    pub kinds: std::collections::HashSet<&'static str>,
    /// No rule at all: every release is accepted without reading anything.
    pub empty: bool,
}

impl PolicyInForce {
    pub fn new(version: u64, set_by: Option<[u8; 32]>, federation: Accept, local: Option<RuleSet>) -> PolicyInForce {
        let source = match set_by {
            None => "federation (genesis)".to_string(),
            Some(id) => format!("federation v{version} (proposal {})", hex::encode(&id[..8])),
        };
        let mut sets = vec![RuleSet {
            source,
            rules: federation,
        }];
        sets.extend(local);
        let fingerprint = *blake3::hash(&serde_json::to_vec(&sets).unwrap_or_default()).as_bytes();
        let kinds = sets
            .iter()
            .flat_map(|s| {
                let a = &s.rules;
                a.require
                    .iter()
                    .map(|r| r.kind)
                    .chain(a.deny.iter().map(|d| d.kind))
                    .collect::<Vec<_>>()
            })
            .map(|k| k.as_str())
            .collect();
        let empty = sets.iter().all(|s| s.rules == Accept::default());
        PolicyInForce {
            version,
            set_by,
            sets,
            fingerprint,
            kinds,
            empty,
        }
    }
}

impl Node {
    /// The policy in force (a snapshot: governance may replace it).
    pub fn policy(&self) -> std::sync::Arc<PolicyInForce> {
        match self.policy.read() {
            Ok(p) => p.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The rule sets in force: the federation's, then the local one.
    pub fn rule_sets(&self) -> Vec<RuleSet> {
        self.policy().sets.clone()
    }

    /// The attestation kinds any rule in force looks at.
    pub fn policy_kinds(&self) -> std::collections::HashSet<&'static str> {
        self.policy().kinds.clone()
    }

    /// Identifies the rules a verdict was computed under.
    pub fn policy_fingerprint(&self) -> [u8; 32] {
        self.policy().fingerprint
    }

    /// The role `key` holds in the membership in force.
    pub fn role_of(&self, key: &PublicKey) -> Option<Role> {
        self.member_role(key)
    }

    /// The attestations that name this release's archive.
    pub fn attestation_entries(&self, r: &pb::Release) -> Result<Vec<AttestationEntry>, StoreError> {
        Ok(self
            .store
            .attestations_of(&r.name, &r.version)?
            .into_iter()
            .filter(|a| a.content_hash.as_slice() == r.content_hash.as_slice())
            .collect())
    }

    /// Evaluates a release against the policy in force.
    pub fn evaluate(&self, entry: &ReleaseEntry) -> Result<ReleaseStatus, StoreError> {
        let policy = self.policy();
        if policy.empty {
            return Ok(ReleaseStatus {
                reasons: Vec::new(),
                policy: policy.fingerprint,
            });
        }
        let facts: Vec<AttestationFact> = self
            .attestation_entries(&entry.release)?
            .iter()
            .filter_map(fact_of)
            .collect();
        let r = &entry.release;
        let release = evaluate::ReleaseFacts {
            license: &r.license,
            quality: r.quality.as_ref().map(|q| q.score).unwrap_or(0),
            size: r.size,
            publisher: entry.publisher,
        };
        let refs: Vec<(&str, &Accept)> = policy.sets.iter().map(|s| (s.source.as_str(), &s.rules)).collect();
        let role_of = |k: &PublicKey| self.role_of(k);
        let ev = evaluate::evaluate_all(&refs, &release, &facts, &role_of);
        Ok(ReleaseStatus {
            reasons: ev
                .failures
                .iter()
                .map(|f| format!("{}: {}", f.rule, f.reason))
                .collect(),
            policy: self.policy_fingerprint(),
        })
    }

    /// The verdict on a release under the policy in force (computed and
    /// remembered if the stored one is missing or from other rules).
    pub fn status_of(&self, entry: &ReleaseEntry) -> Result<ReleaseStatus, StoreError> {
        if let Some(s) = self.store.status(&entry.record_id)?
            && s.policy == self.policy_fingerprint()
        {
            return Ok(s);
        }
        let s = self.evaluate(entry)?;
        self.store.set_status(&entry.record_id, &s)?;
        Ok(s)
    }

    /// Re-evaluates `name@version`; returns the blob to fetch if the release
    /// just became accepted (a mirror takes accepted packs only).
    pub fn reevaluate(&self, name: &str, version: &str) -> Result<Option<(ContentHash, u64)>, StoreError> {
        match self.store.release(self.federation(), name, version)? {
            Some(entry) => self.reevaluate_entry(&entry),
            None => Ok(None),
        }
    }

    /// [`Node::reevaluate`] of a release already read.
    pub fn reevaluate_entry(&self, entry: &ReleaseEntry) -> Result<Option<(ContentHash, u64)>, StoreError> {
        let (name, version) = (&entry.release.name, &entry.release.version);
        let now = self.evaluate(entry)?;
        let before = self.store.set_status(&entry.record_id, &now)?;
        if before.as_ref().map(|b| b.reasons != now.reasons).unwrap_or(true) {
            if now.accepted() {
                tracing::info!(id = %format!("{name}@{version}"), "release accepted");
            } else {
                tracing::info!(id = %format!("{name}@{version}"), reasons = ?now.reasons, "release quarantined");
            }
        }
        let was_accepted = before.map(|b| b.accepted()).unwrap_or(false);
        if now.accepted() && !was_accepted {
            let hash = ContentHash::from_slice(&entry.release.content_hash).ok();
            return Ok(hash.map(|h| (h, entry.release.size)));
        }
        Ok(None)
    }

    /// Re-evaluates every release whose verdict is from other rules (run at
    /// start, so a changed policy applies at once). Returns how many.
    pub fn reevaluate_stale(&self) -> Result<usize, StoreError> {
        let fp = self.policy_fingerprint();
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
        self.status_of(entry).map(|s| s.accepted()).unwrap_or(false)
    }

    /// Checks a verified attestation against what this node knows: a known
    /// release's hash must match. Returns the channel it belongs to.
    pub(crate) fn check_subject(&self, a: &Verified<pb::Attestation>) -> Result<Channel, AttestError> {
        self.check_subject_cached(a, &mut Default::default())
    }

    /// [`Node::check_subject`] with the subject lookups of a batch cached
    /// (a release read verifies its signature again).
    fn check_subject_cached(
        &self,
        a: &Verified<pb::Attestation>,
        known: &mut SubjectCache,
    ) -> Result<Channel, AttestError> {
        let facts = check_attestation(a.record()).map_err(|e| AttestError::Invalid(e.to_string()))?;
        let r = a.record();
        let key = (r.name.clone(), r.version.clone());
        let entry = match known.get(&key) {
            Some(e) => e,
            None => {
                let e = self.store.release_unverified(&r.name, &r.version)?;
                known.entry(key).or_insert(e)
            }
        };
        let subject = match entry {
            Some(e) => Some((
                ContentHash::from_slice(&e.content_hash).map_err(|e| AttestError::Invalid(e.to_string()))?,
                e.visibility == pb::Visibility::Org as i32,
            )),
            None => None,
        };
        match subject {
            Some((actual, org)) => {
                if actual != facts.hash {
                    return Err(AttestError::HashMismatch {
                        id: facts.id.to_string(),
                        claimed: facts.hash,
                        actual,
                    });
                }
                Ok(if org { Channel::Org } else { Channel::Public })
            }
            // The release may still be on its way: keep the attestation; it
            // counts only for a release with the hash it names.
            None => Ok(Channel::Public),
        }
    }

    /// Stores verified attestations (already signature-checked) and
    /// re-evaluates their subjects. Returns per attestation: Ok(true) if new,
    /// and the blobs that became accepted.
    /// `in_doc`: they came out of `channel`'s registry document (sync), so
    /// they need no replicating there.
    pub fn store_attestations(
        &self,
        batch: &[Verified<pb::Attestation>],
        channel: Channel,
        in_doc: bool,
    ) -> StoredAttestations {
        let mut results: Vec<Result<bool, AttestError>> = Vec::with_capacity(batch.len());
        let mut keep = Vec::new();
        let mut known = SubjectCache::default();
        for a in batch {
            match self.check_subject_cached(a, &mut known) {
                Ok(target) if channel == Channel::Public && target == Channel::Org => {
                    results.push(Err(AttestError::Invalid(
                        "an attestation of an org release arrived on a public channel".into(),
                    )));
                }
                Ok(target) => {
                    let hash = ContentHash::from_slice(&a.record().content_hash).unwrap_or(ContentHash([0; 32]));
                    keep.push((a, AttestationEntry::from_verified(a, &hash), target, results.len()));
                    results.push(Ok(false));
                }
                Err(e) => results.push(Err(e)),
            }
        }
        let mut fetch = Vec::new();
        let mut new_ids = std::collections::HashSet::new();
        // Only new ones are replicated and trigger re-evaluation.
        for (a, _, _, _) in &keep {
            if !self.store.has_record(&a.id()).unwrap_or(true) {
                new_ids.insert(a.id());
            }
        }
        let items: Vec<_> = keep
            .iter()
            .filter(|(a, ..)| new_ids.contains(&a.id()))
            .map(|(a, e, _, _)| (*a, e.clone()))
            .collect();
        if let Err(e) = self.store.insert_attestations(&items) {
            let msg = e.to_string();
            for (_, _, _, i) in &keep {
                results[*i] = Err(AttestError::Invalid(format!("store: {msg}")));
            }
            return StoredAttestations { results, fetch };
        }
        let mut subjects = std::collections::BTreeSet::new();
        let named = self.policy_kinds();
        for (a, _, target, i) in &keep {
            if new_ids.contains(&a.id()) {
                results[*i] = Ok(true);
                if !(in_doc && *target == channel) {
                    self.replicate_to(*target, &a.id(), a.envelope().encoded());
                }
                // A verdict depends only on attestations of kinds the rules name.
                if named.contains(a.record().kind.as_str()) {
                    subjects.insert((a.record().name.clone(), a.record().version.clone()));
                }
            }
        }
        for (name, version) in subjects {
            match self.reevaluate(&name, &version) {
                Ok(Some(f)) => fetch.push(f),
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "re-evaluating after an attestation failed"),
            }
        }
        StoredAttestations { results, fetch }
    }

    /// A locally signed attestation (CLI or this node's own checks): verify,
    /// store, replicate, gossip, flush.
    pub fn attest_local(&self, env: &Signed) -> Result<packfed_protocol::RecordId, AttestError> {
        let v = env
            .verify::<pb::Attestation>(self.federation())
            .map_err(|e| AttestError::Invalid(e.to_string()))?;
        let StoredAttestations { mut results, fetch } =
            self.store_attestations(std::slice::from_ref(&v), Channel::Org, false);
        results.pop().unwrap_or(Ok(false))?;
        self.store.flush()?;
        let org = self.check_subject(&v).map(|c| c == Channel::Org).unwrap_or(false);
        if !org && let Some(net) = self.net.get() {
            net.try_send(crate::net::Command::GossipAttestation(env.encoded().to_vec()));
        }
        if let (Some(net), false) = (self.net.get(), fetch.is_empty()) {
            for (hash, size) in fetch {
                net.try_send(crate::net::Command::Mirror(hash, size));
            }
        }
        Ok(v.id())
    }

    /// The attestations of a release, for `packfed attestations` and `info`.
    pub fn attestation_views(&self, entry: &ReleaseEntry) -> Result<Vec<AttestationView>, StoreError> {
        let entries = self.attestation_entries(&entry.release)?;
        let facts: Vec<AttestationFact> = entries.iter().filter_map(fact_of).collect();
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
                note: e.note.clone(),
                score: (e.kind == "quality").then_some(e.score),
                current: current.contains(&e.id),
            })
            .collect();
        out.sort_by(|a, b| (a.time, &a.id).cmp(&(b.time, &b.id)));
        Ok(out)
    }
}

/// Builds and signs an attestation record about `release`.
pub fn sign_attestation(
    release: &pb::Release,
    statement: &Statement,
    key: &packfed_protocol::KeyPair,
    fed: &packfed_protocol::FederationId,
    now_ms: u64,
) -> Signed {
    let a = pb::Attestation {
        name: release.name.clone(),
        version: release.version.clone(),
        content_hash: release.content_hash.clone(),
        kind: statement.kind.to_string(),
        result: if statement.pass { "pass" } else { "fail" }.to_string(),
        note: statement.note.to_string(),
        attested_at_ms: now_ms,
        score: statement.score,
    };
    Signed::sign(&a, key, fed)
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
