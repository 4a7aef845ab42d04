//! Admission of records: what a node does with a record a peer sent (gossip
//! or registry sync) or a local command signed. Every envelope is bounded in
//! size and verified (signature, federation, kind) before anything else
//! looks at it; then the kind's content rules, duplicates and authority
//! decide. Nothing here panics on peer input, and a refusal changes nothing.

use std::collections::{BTreeSet, HashMap, HashSet};

use packfed_protocol::records::{PackId, check_attestation, check_deprecation, check_release};
use packfed_protocol::{ContentHash, Domain, FederationId, Signed, SignedError, Verified, pb};

use super::verdict::{self, Judge};
use super::{Channel, Effect, Topic, View, Write};
use crate::store::{AttestationEntry, ReleaseEntry, StoreError};

/// What became of one record.
#[derive(Debug)]
pub enum Outcome {
    /// New: the effects store it.
    New,
    /// Already held.
    Known,
    /// A signed node announcement (kept in memory by the network layer).
    Announcement(Box<Verified<pb::NodeAnnouncement>>),
    /// Dated too far ahead of our clock: kept aside and offered again at
    /// this time (neither refused nor forwarded; its forwarder is not
    /// penalized, since its clock may simply be ahead).
    Held(u64),
    /// Refused, with the reason.
    Invalid(String),
}

/// An outcome and what the shell must do for it.
#[derive(Debug)]
pub struct Admitted {
    pub outcome: Outcome,
    pub effects: Vec<Effect>,
}

impl Admitted {
    fn known() -> Admitted {
        Admitted {
            outcome: Outcome::Known,
            effects: Vec::new(),
        }
    }

    fn invalid(reason: impl Into<String>) -> Admitted {
        Admitted {
            outcome: Outcome::Invalid(reason.into()),
            effects: Vec::new(),
        }
    }

    fn new(effects: Vec<Effect>) -> Admitted {
        Admitted {
            outcome: Outcome::New,
            effects,
        }
    }
}

/// An envelope that decoded within its size bound and whose signature holds
/// for this federation, by kind.
pub enum Incoming {
    Claim(Verified<pb::NamespaceClaim>),
    Release(Verified<pb::Release>),
    Yank(Verified<pb::Yank>),
    Deprecation(Verified<pb::Deprecation>),
    Attestation(Verified<pb::Attestation>),
    /// Proposals, votes and cancels: [`super::gov::Governance::admit`].
    Governance(Signed),
    Learning(Verified<pb::LearningSummary>),
    Announcement(Verified<pb::NodeAnnouncement>),
    /// A witness's checkpoint: [`super::witness::Witnesses::admit`].
    Checkpoint(Verified<pb::Checkpoint>),
}

/// Why an envelope was refused, and its kind if it named one.
pub struct Refused {
    pub domain: Option<Domain>,
    pub reason: String,
}

/// Decodes (at most `MAX_ENVELOPE_BYTES`) and verifies an envelope.
pub fn open(bytes: &[u8], fed: &FederationId) -> Result<Incoming, Refused> {
    let env = Signed::decode(bytes).map_err(|e| Refused {
        domain: None,
        reason: e.to_string(),
    })?;
    let domain = env.domain();
    let bad = |e: SignedError| Refused {
        domain,
        reason: e.to_string(),
    };
    Ok(match domain {
        Some(Domain::Release) => Incoming::Release(env.verify(fed).map_err(bad)?),
        Some(Domain::NamespaceClaim) => Incoming::Claim(env.verify(fed).map_err(bad)?),
        Some(Domain::Yank) => Incoming::Yank(env.verify(fed).map_err(bad)?),
        Some(Domain::Deprecation) => Incoming::Deprecation(env.verify(fed).map_err(bad)?),
        Some(Domain::Attestation) => Incoming::Attestation(env.verify(fed).map_err(bad)?),
        Some(Domain::LearningSummary) => Incoming::Learning(env.verify(fed).map_err(bad)?),
        Some(Domain::NodeAnnouncement) => Incoming::Announcement(env.verify(fed).map_err(bad)?),
        Some(Domain::Checkpoint) => Incoming::Checkpoint(env.verify(fed).map_err(bad)?),
        // Verified by the governance decoder, which also bounds their times.
        Some(Domain::Proposal | Domain::Vote | Domain::ProposalCancel) => Incoming::Governance(env),
        None => {
            return Err(Refused {
                domain,
                reason: format!("unknown record kind {:?}", env.kind()),
            });
        }
    })
}

fn valid_namespace(ns: &str) -> bool {
    format!("{ns}/x").parse::<packfed_protocol::records::PackName>().is_ok()
}

/// The document a record belongs in by its own content: org releases in
/// the org one (attestations: see [`channel_of`]).
pub fn record_channel(env: &Signed) -> Channel {
    if env.domain() != Some(Domain::Release) {
        return Channel::Public;
    }
    env.unchecked_record::<pb::Release>()
        .map_or(Channel::Public, |r| release_channel(&r))
}

/// The document a release belongs in.
fn release_channel(r: &pb::Release) -> Channel {
    if r.visibility == pb::Visibility::Org as i32 {
        Channel::Org
    } else {
        Channel::Public
    }
}

/// The document a stored record belongs in, decided as on the live path:
/// org releases, and attestations and yanks of org releases, in the org one.
pub fn channel_of(view: &impl View, fed: &FederationId, env: &Signed) -> Channel {
    match env.domain() {
        // Stored yanks were verified on arrival.
        Some(Domain::Yank) => env
            .unchecked_record::<pb::Yank>()
            .ok()
            .and_then(|y| yank_channel(view, &y).ok())
            .unwrap_or(Channel::Public),
        Some(Domain::Deprecation) => env
            .unchecked_record::<pb::Deprecation>()
            .ok()
            .and_then(|d| pack_channel(view, &d.name).ok())
            .unwrap_or(Channel::Public),
        Some(Domain::Attestation) => env
            .verify::<pb::Attestation>(fed)
            .ok()
            .and_then(|v| check_subject(view, &v, &mut SubjectCache::default()).ok())
            .unwrap_or(Channel::Public),
        _ => record_channel(env),
    }
}

/// A namespace claim from a peer. Who owns a namespace is the store's index
/// of claims (the earliest claim wins).
pub fn claim(view: &impl View, v: &Verified<pb::NamespaceClaim>) -> Result<Admitted, StoreError> {
    if !valid_namespace(&v.record().namespace) {
        return Ok(Admitted::invalid(format!("bad namespace {:?}", v.record().namespace)));
    }
    if view.has_record(&v.id())? {
        return Ok(Admitted::known());
    }
    Ok(Admitted::new(vec![
        Effect::Store(Box::new(Write::Claim(v.clone()))),
        Effect::Replicate(Channel::Public, v.envelope().clone()),
    ]))
}

/// A release whose signature holds, from a peer (`channel`: how it came).
/// It is judged on arrival; a mirror fetches only what the policy accepts
/// (later, if attestations come: [`attestations`]).
pub fn release(
    judge: &Judge,
    view: &impl View,
    v: &Verified<pb::Release>,
    channel: Channel,
) -> Result<Admitted, StoreError> {
    if channel == Channel::Public && v.record().visibility == pb::Visibility::Org as i32 {
        return Ok(Admitted::invalid("an org release arrived on a public channel"));
    }
    let facts = match check_release(v.record()) {
        Ok(f) => f,
        Err(e) => return Ok(Admitted::invalid(e.to_string())),
    };
    // A size this node would not store: never judged, mirrored or fetched.
    if v.record().size > judge.max_pack_bytes {
        return Ok(Admitted::invalid(format!(
            "release claims {} bytes, over this node's {}-byte pack limit",
            v.record().size,
            judge.max_pack_bytes
        )));
    }
    if view.has_record(&v.id())? {
        return Ok(Admitted::known());
    }
    let mut effects = vec![Effect::Store(Box::new(Write::Release(v.clone(), facts.hash)))];
    effects.extend(judge_arrival(judge, view, v)?);
    // From the decoded record: a large sync admits every release here.
    effects.push(Effect::Replicate(release_channel(v.record()), v.envelope().clone()));
    Ok(Admitted::new(effects))
}

/// The verdict on a release that just arrived. Built from the verified
/// record, so a large sync does not read and verify every release again.
fn judge_arrival(judge: &Judge, view: &impl View, v: &Verified<pb::Release>) -> Result<Vec<Effect>, StoreError> {
    let ns = v.record().name.split('/').next().unwrap_or_default();
    if view.namespace_owner(ns)? != Some(v.signer()) {
        // Not visible (yet: its namespace's claim may still wait for
        // witnesses): nothing to judge, serve or mirror.
        return Ok(Vec::new());
    }
    if judge.policy.empty {
        let fetch = ContentHash::from_slice(&v.record().content_hash).ok();
        return Ok(fetch
            .filter(|_| judge.mirror)
            .map(|h| Effect::Fetch(h, v.record().size))
            .into_iter()
            .collect());
    }
    let entry = ReleaseEntry {
        record_id: v.id(),
        envelope: v.envelope().clone(),
        release: v.record().clone(),
        publisher: v.signer(),
        yanked: false,
        conflict: None,
    };
    verdict::reevaluate(judge, view, &entry)
}

/// A yank from a peer: verified, kept if new. Which yank holds is decided
/// when releases are read.
pub fn yank(view: &impl View, v: &Verified<pb::Yank>, channel: Channel) -> Result<Admitted, StoreError> {
    if view.has_record(&v.id())? {
        return Ok(Admitted::known());
    }
    // A yank of an org release stays in the org document.
    let target = match channel {
        Channel::Org => Channel::Org,
        Channel::Public => yank_channel(view, v.record())?,
    };
    Ok(Admitted::new(vec![
        Effect::Store(Box::new(Write::Yank(v.clone()))),
        Effect::Replicate(target, v.envelope().clone()),
    ]))
}

/// Org if the yank names an org release this node holds.
pub fn yank_channel(view: &impl View, y: &pb::Yank) -> Result<Channel, StoreError> {
    let org = view
        .release_record(&y.name, &y.version)?
        .is_some_and(|r| r.visibility == pb::Visibility::Org as i32);
    Ok(if org { Channel::Org } else { Channel::Public })
}

/// Org if this node holds an org release of the pack: a deprecation of an
/// org pack must not name it in the public document.
pub fn pack_channel(view: &impl View, name: &str) -> Result<Channel, StoreError> {
    Ok(if view.is_org_pack(name)? {
        Channel::Org
    } else {
        Channel::Public
    })
}

/// A deprecation from a peer: well-formed, and signed by the namespace's
/// owner when the owner is known (one by anyone else is refused here and
/// would count for nothing when read).
pub fn deprecation(view: &impl View, v: &Verified<pb::Deprecation>, channel: Channel) -> Result<Admitted, StoreError> {
    if view.has_record(&v.id())? {
        return Ok(Admitted::known());
    }
    let facts = match check_deprecation(v.record()) {
        Ok(f) => f,
        Err(e) => return Ok(Admitted::invalid(format!("deprecation: {e}"))),
    };
    if let Some(owner) = view.namespace_owner(facts.name.namespace())?
        && owner != v.signer()
    {
        return Ok(Admitted::invalid(format!(
            "deprecation of {} not signed by the owner of its namespace",
            facts.name
        )));
    }
    let target = match channel {
        Channel::Org => Channel::Org,
        Channel::Public => pack_channel(view, &v.record().name)?,
    };
    Ok(Admitted::new(vec![
        Effect::Store(Box::new(Write::Deprecation(v.clone()))),
        Effect::Replicate(target, v.envelope().clone()),
    ]))
}

/// Why a local deprecation was refused.
#[derive(Debug, thiserror::Error)]
pub enum DeprecateError {
    #[error("deprecation record refused: {0}")]
    Signature(#[from] SignedError),
    #[error("deprecation record is malformed: {0}")]
    Malformed(String),
    #[error("{0} has no release on this node")]
    NotFound(String),
    #[error("only the owner of namespace {namespace} ({owner}) may deprecate its packs")]
    NotOwner { namespace: String, owner: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A deprecation signed on this node: only the namespace owner may
/// deprecate, and only a pack this node holds. Durable before it is gossiped.
pub fn local_deprecation(
    view: &impl View,
    fed: &FederationId,
    env: &Signed,
) -> Result<(String, Vec<Effect>), DeprecateError> {
    let v = env.verify::<pb::Deprecation>(fed)?;
    let facts = check_deprecation(v.record()).map_err(|e| DeprecateError::Malformed(e.to_string()))?;
    let name = facts.name.to_string();
    if !view.has_pack(&name)? {
        return Err(DeprecateError::NotFound(name));
    }
    let ns = facts.name.namespace();
    let owner = view.namespace_owner(ns)?;
    if owner != Some(v.signer()) {
        return Err(DeprecateError::NotOwner {
            namespace: ns.to_string(),
            owner: owner.map(|o| o.to_hex()).unwrap_or_else(|| "nobody".into()),
        });
    }
    let channel = pack_channel(view, &name)?;
    let mut effects = vec![
        Effect::Store(Box::new(Write::Deprecation(v.clone()))),
        Effect::Replicate(channel, env.clone()),
        Effect::Flush,
    ];
    if channel == Channel::Public {
        effects.push(Effect::Gossip(Topic::Records, env.encoded().to_vec()));
    }
    Ok((format!("{name}@{}", facts.requirement), effects))
}

/// Why a local yank was refused.
#[derive(Debug, thiserror::Error)]
pub enum YankError {
    #[error("yank record refused: {0}")]
    Signature(#[from] SignedError),
    #[error("yank record is malformed: {0}")]
    Malformed(String),
    #[error("{0} is not published on this node")]
    NotFound(String),
    #[error("the yank names hash {claimed} but {id} is {actual}")]
    HashMismatch {
        id: String,
        claimed: String,
        actual: String,
    },
    #[error("only the owner of namespace {namespace} ({owner}) may yank its releases")]
    NotOwner { namespace: String, owner: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A yank signed on this node: only the namespace owner may yank, and only a
/// release this node holds, by its own hash. Durable before it is gossiped.
pub fn local_yank(view: &impl View, fed: &FederationId, env: &Signed) -> Result<(PackId, Vec<Effect>), YankError> {
    let yank = env.verify::<pb::Yank>(fed)?;
    let y = yank.record();
    let id: PackId = format!("{}@{}", y.name, y.version)
        .parse()
        .map_err(|e: packfed_protocol::records::RecordError| YankError::Malformed(e.to_string()))?;
    let entry = view
        .release(&y.name, &y.version)?
        .ok_or_else(|| YankError::NotFound(id.to_string()))?;
    if entry.release.content_hash != y.content_hash {
        return Err(YankError::HashMismatch {
            id: id.to_string(),
            claimed: hex::encode(&y.content_hash),
            actual: hex::encode(&entry.release.content_hash),
        });
    }
    let ns = id.name.namespace();
    let owner = view.namespace_owner(ns)?;
    if owner != Some(yank.signer()) {
        return Err(YankError::NotOwner {
            namespace: ns.to_string(),
            owner: owner.map(|o| o.to_hex()).unwrap_or_else(|| "nobody".into()),
        });
    }
    let org = entry.release.visibility == pb::Visibility::Org as i32;
    let mut effects = vec![
        Effect::Store(Box::new(Write::Yank(yank.clone()))),
        Effect::Replicate(if org { Channel::Org } else { Channel::Public }, env.clone()),
        // A crash cannot take back what a peer already holds.
        Effect::Flush,
    ];
    // Gossip is public: an org yank travels by org sync only.
    if !org {
        effects.push(Effect::Gossip(Topic::Records, env.encoded().to_vec()));
    }
    Ok((id, effects))
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
    #[error(
        "attestation refused: {name}@{version} already holds {MAX_OPEN_ATTESTATIONS} attestations, and its signer holds no role in the federation"
    )]
    OverQuota { name: String, version: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Attestations a release may hold before only members' are taken: room for
/// any rule that counts attestations from anyone, and a bound on what fresh
/// keys can make every node store and re-read when it judges the release.
pub const MAX_OPEN_ATTESTATIONS: usize = 256;

/// Per `(name, version)`: the visible release, if this node has it.
pub type SubjectCache = HashMap<(String, String), Option<pb::Release>>;

/// Checks a verified attestation against what this node knows: a known
/// release's hash must match. Returns the channel it belongs to.
pub fn check_subject(
    view: &impl View,
    a: &Verified<pb::Attestation>,
    known: &mut SubjectCache,
) -> Result<Channel, AttestError> {
    let facts = check_attestation(a.record()).map_err(|e| AttestError::Invalid(e.to_string()))?;
    let r = a.record();
    let key = (r.name.clone(), r.version.clone());
    let entry = match known.get(&key) {
        Some(e) => e,
        None => {
            let e = view.release_record(&r.name, &r.version)?;
            known.entry(key).or_insert(e)
        }
    };
    let Some(release) = entry else {
        // The release may still be on its way: keep the attestation; it
        // counts only for a release with the hash it names.
        return Ok(Channel::Public);
    };
    let actual = ContentHash::from_slice(&release.content_hash).map_err(|e| AttestError::Invalid(e.to_string()))?;
    if actual != facts.hash {
        return Err(AttestError::HashMismatch {
            id: facts.id.to_string(),
            claimed: facts.hash,
            actual,
        });
    }
    Ok(if release.visibility == pb::Visibility::Org as i32 {
        Channel::Org
    } else {
        Channel::Public
    })
}

/// What [`attestations`] decided: per attestation Ok(true) if new, and the
/// effects (store the new ones, replicate, re-evaluate their subjects).
pub struct AdmittedAttestations {
    pub results: Vec<Result<bool, AttestError>>,
    pub effects: Vec<Effect>,
}

/// Signature-checked attestations from `channel`. `in_doc`: they came out of
/// that channel's registry document (sync), so they need no replicating
/// there. Only new ones are stored, replicated, and re-evaluate their
/// release, and only if a rule in force looks at their kind.
pub fn attestations(
    judge: &Judge,
    view: &impl View,
    batch: &[Verified<pb::Attestation>],
    channel: Channel,
    in_doc: bool,
) -> Result<AdmittedAttestations, StoreError> {
    let mut results: Vec<Result<bool, AttestError>> = Vec::with_capacity(batch.len());
    let mut known = SubjectCache::default();
    let mut seen = HashSet::new();
    // Attestations each subject holds, counted once per batch.
    let mut held: HashMap<(String, String), usize> = HashMap::new();
    let mut store = Vec::new();
    let mut replicate = Vec::new();
    let mut subjects = BTreeSet::new();
    for a in batch {
        let target = match check_subject(view, a, &mut known) {
            Ok(target) if channel == Channel::Public && target == Channel::Org => {
                results.push(Err(AttestError::Invalid(
                    "an attestation of an org release arrived on a public channel".into(),
                )));
                continue;
            }
            Ok(target) => target,
            Err(AttestError::Store(e)) => return Err(e),
            Err(e) => {
                results.push(Err(e));
                continue;
            }
        };
        if !seen.insert(a.id()) || view.has_record(&a.id())? {
            results.push(Ok(false));
            continue;
        }
        let (name, version) = (&a.record().name, &a.record().version);
        let held = match held.entry((name.clone(), version.clone())) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(view.attestation_count(name, version, MAX_OPEN_ATTESTATIONS)?)
            }
        };
        if *held >= MAX_OPEN_ATTESTATIONS && judge.policy.role_of(&a.signer()).is_none() {
            results.push(Err(AttestError::OverQuota {
                name: name.clone(),
                version: version.clone(),
            }));
            continue;
        }
        *held += 1;
        results.push(Ok(true));
        let hash = ContentHash::from_slice(&a.record().content_hash).unwrap_or(ContentHash([0; 32]));
        store.push((a.clone(), AttestationEntry::from_verified(a, &hash), target));
        if !(in_doc && target == channel) {
            replicate.push(Effect::Replicate(target, a.envelope().clone()));
        }
        // A verdict depends only on attestations of kinds the rules name,
        // and, unless a rule counts anyone's, only on members' ones.
        if judge.policy.counts(&a.record().kind, &a.signer()) {
            subjects.insert((a.record().name.clone(), a.record().version.clone()));
        }
    }
    let mut effects = Vec::new();
    if !store.is_empty() {
        effects.push(Effect::Store(Box::new(Write::Attestations(store))));
    }
    effects.extend(replicate);
    if !subjects.is_empty() {
        effects.push(Effect::Reevaluate(subjects.into_iter().collect()));
    }
    Ok(AdmittedAttestations { results, effects })
}

/// An attestation signed on this node (the CLI or its own checks): stored,
/// made durable, then gossiped unless it is about an org release.
pub fn local_attestation(
    judge: &Judge,
    view: &impl View,
    fed: &FederationId,
    env: &Signed,
) -> Result<(packfed_protocol::RecordId, Vec<Effect>), AttestError> {
    let v = env
        .verify::<pb::Attestation>(fed)
        .map_err(|e| AttestError::Invalid(e.to_string()))?;
    let target = check_subject(view, &v, &mut SubjectCache::default())?;
    let AdmittedAttestations {
        mut results,
        mut effects,
    } = attestations(judge, view, std::slice::from_ref(&v), Channel::Org, false)?;
    results.pop().unwrap_or(Ok(false))?;
    effects.push(Effect::Flush);
    if target == Channel::Public {
        effects.push(Effect::Gossip(Topic::Attestations, env.encoded().to_vec()));
    }
    Ok((v.id(), effects))
}
