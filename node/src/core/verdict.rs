//! The acceptance policy in force and the verdict on a release under it. The
//! rules themselves are the governance crate's pure engine; this module
//! gathers a release's facts, names the rules a verdict was computed under
//! (so a changed policy or membership makes old verdicts stale), and says
//! what a new verdict implies.

use std::collections::HashSet;
use std::str::FromStr;

use packfed_governance::evaluate::{self, AttestationFact};
use packfed_governance::policy::{Accept, AttestationKind, Verdict};
use packfed_governance::{Member, Role};
use packfed_protocol::{ContentHash, FederationId, KeyPair, PublicKey, Signed, pb};
use serde::Serialize;

use super::{Effect, View};
use crate::store::{AttestationEntry, ReleaseEntry, ReleaseStatus, StoreError};

/// One rule set of the policy in force and where it comes from.
#[derive(Debug, Clone, Serialize)]
pub struct RuleSet {
    pub source: String,
    pub rules: Accept,
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
    /// Identifies the rules and the membership a verdict was computed under
    /// (roles weigh attestations, so a new member can change a verdict).
    pub fingerprint: [u8; 32],
    /// The attestation kinds any rule looks at.
    pub kinds: HashSet<&'static str>,
    /// The kinds some rule counts from anyone (no roles named); for other
    /// kinds only members' attestations can change a verdict.
    pub open_kinds: HashSet<&'static str>,
    /// No rule at all: every release is accepted without reading anything.
    pub empty: bool,
    /// The membership in force.
    pub members: Vec<Member>,
}

impl PolicyInForce {
    pub fn new(
        version: u64,
        set_by: Option<[u8; 32]>,
        federation: Accept,
        local: Option<RuleSet>,
        members: Vec<Member>,
    ) -> PolicyInForce {
        let source = match set_by {
            None => "federation (genesis)".to_string(),
            Some(id) => format!("federation v{version} (proposal {})", hex::encode(&id[..8])),
        };
        let mut sets = vec![RuleSet {
            source,
            rules: federation,
        }];
        sets.extend(local);
        let mut h = blake3::Hasher::new();
        h.update(&serde_json::to_vec(&sets).unwrap_or_default());
        for m in &members {
            h.update(m.public_key.as_bytes());
            h.update(m.role.as_str().as_bytes());
            h.update(&m.weight.to_le_bytes());
        }
        let fingerprint = *h.finalize().as_bytes();
        // Every (kind, roles) a rule names: which kinds matter, and which
        // of them count anyone's attestation.
        let named: Vec<(&'static str, bool)> = sets
            .iter()
            .flat_map(|s| {
                let a = &s.rules;
                a.require
                    .iter()
                    .map(|r| (r.kind, r.roles.is_empty()))
                    .chain(a.deny.iter().map(|d| (d.kind, d.roles.is_empty())))
                    .collect::<Vec<_>>()
            })
            .map(|(k, open)| (k.as_str(), open))
            .collect();
        let kinds = named.iter().map(|(k, _)| *k).collect();
        let open_kinds = named.iter().filter(|(_, open)| *open).map(|(k, _)| *k).collect();
        let empty = sets.iter().all(|s| s.rules == Accept::default());
        PolicyInForce {
            version,
            set_by,
            sets,
            fingerprint,
            kinds,
            open_kinds,
            empty,
            members,
        }
    }

    /// Whether an attestation of `kind` by `attester` can change a verdict.
    pub fn counts(&self, kind: &str, attester: &PublicKey) -> bool {
        self.kinds.contains(kind) && (self.open_kinds.contains(kind) || self.role_of(attester).is_some())
    }

    /// The role `key` holds in the membership in force.
    pub fn role_of(&self, key: &PublicKey) -> Option<Role> {
        self.members.iter().find(|m| m.public_key == *key).map(|m| m.role)
    }
}

/// What a verdict decision needs besides the release: the policy in force
/// and whether this node mirrors what it accepts.
pub struct Judge<'a> {
    pub policy: &'a PolicyInForce,
    /// Regional mirrors fetch every accepted pack.
    pub mirror: bool,
    /// Releases claiming more are invalid here: never stored, judged,
    /// mirrored or fetched.
    pub max_pack_bytes: u64,
}

pub fn fact_of(e: &AttestationEntry) -> Option<AttestationFact> {
    Some(AttestationFact {
        id: e.id,
        attester: PublicKey(e.attester),
        kind: AttestationKind::from_str(&e.kind).ok()?,
        result: if e.pass { Verdict::Pass } else { Verdict::Fail },
        time_ms: e.time_ms,
    })
}

/// The attestations that name this release's own archive.
pub fn attestations_of(view: &impl View, r: &pb::Release) -> Result<Vec<AttestationEntry>, StoreError> {
    Ok(view
        .attestations_of(&r.name, &r.version)?
        .into_iter()
        .filter(|a| a.content_hash.as_slice() == r.content_hash.as_slice())
        .collect())
}

/// The attestations of this release's archive that count, each at its
/// witnessed time: the latest by witnessed time supersedes, so one dated
/// 2100 by its signer does not win forever, and one no witness quorum has
/// listed yet does not count. (Attestations of org releases are dated by
/// the org's own witnesses.)
pub fn counted_attestations(view: &impl View, r: &pb::Release) -> Result<Vec<AttestationEntry>, StoreError> {
    let all = attestations_of(view, r)?;
    Ok(all
        .into_iter()
        .filter_map(|mut a| {
            a.time_ms = view.witnessed(&packfed_protocol::RecordId(a.id))?;
            Some(a)
        })
        .collect())
}

/// The verdict on a release, given the attestations of its archive.
pub fn evaluate(policy: &PolicyInForce, entry: &ReleaseEntry, attestations: &[AttestationEntry]) -> ReleaseStatus {
    if policy.empty {
        return ReleaseStatus {
            reasons: Vec::new(),
            policy: policy.fingerprint,
        };
    }
    let facts: Vec<AttestationFact> = attestations.iter().filter_map(fact_of).collect();
    let r = &entry.release;
    let release = evaluate::ReleaseFacts {
        license: &r.license,
        quality: r.quality.as_ref().map(|q| q.score).unwrap_or(0),
        size: r.size,
        publisher: entry.publisher,
    };
    let refs: Vec<(&str, &Accept)> = policy.sets.iter().map(|s| (s.source.as_str(), &s.rules)).collect();
    let role_of = |k: &PublicKey| policy.role_of(k);
    let ev = evaluate::evaluate_all(&refs, &release, &facts, &role_of);
    ReleaseStatus {
        reasons: ev
            .failures
            .iter()
            .map(|f| format!("{}: {}", f.rule, f.reason))
            .collect(),
        policy: policy.fingerprint,
    }
}

/// The verdict under the policy in force, read from the view when it is
/// current; `None` when it must be computed ([`evaluate`]) and remembered.
pub fn current_status(
    policy: &PolicyInForce,
    view: &impl View,
    entry: &ReleaseEntry,
) -> Result<Option<ReleaseStatus>, StoreError> {
    Ok(view
        .status(&entry.record_id)?
        .filter(|s| s.policy == policy.fingerprint))
}

/// Re-evaluates a release: the new verdict, and the blob to fetch if it just
/// became accepted on a mirror.
pub fn reevaluate(judge: &Judge, view: &impl View, entry: &ReleaseEntry) -> Result<Vec<Effect>, StoreError> {
    let atts = if judge.policy.empty {
        Vec::new()
    } else {
        counted_attestations(view, &entry.release)?
    };
    let now = evaluate(judge.policy, entry, &atts);
    let before = view.status(&entry.record_id)?;
    let id = format!("{}@{}", entry.release.name, entry.release.version);
    if before.as_ref().is_none_or(|b| b.reasons != now.reasons) {
        if now.accepted() {
            tracing::info!(%id, "release accepted");
        } else {
            tracing::info!(%id, reasons = ?now.reasons, "release quarantined");
        }
    }
    let newly = now.accepted() && !before.is_some_and(|b| b.accepted());
    let mut out = vec![Effect::SetStatus(entry.record_id, now)];
    if newly
        && judge.mirror
        && let Ok(hash) = ContentHash::from_slice(&entry.release.content_hash)
    {
        out.push(Effect::Fetch(hash, entry.release.size));
    }
    Ok(out)
}

/// What an attester states about a release.
pub struct Statement<'a> {
    pub kind: &'a str,
    pub pass: bool,
    pub note: &'a str,
    /// For `quality`: the recomputed score.
    pub score: u32,
}

/// Builds and signs an attestation record about `release`.
pub fn sign_attestation(
    release: &pb::Release,
    statement: &Statement,
    key: &KeyPair,
    fed: &FederationId,
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
