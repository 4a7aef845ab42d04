//! Witnessed time: the order of the federation, from members' checkpoint
//! logs rather than from any signer's clock.
//!
//! A witness is a member whose role the genesis names (maintainer and core
//! by default). The node that holds a witness key keeps one hash-chained,
//! append-only log for it: every checkpoint lists the ids of the records the
//! node admitted since the previous one, at the witness's own time. A
//! record's *witnessed time* is the quorum-th earliest time at which it
//! appears in the witnesses' logs: the earliest `t` such that witnesses of
//! at least `quorum` weight had listed it by `t`. With witnesses of less
//! than `quorum` weight lying, at least one honest witness listed the record
//! by `t` (so it cannot be backdated before any honest witness saw it), and
//! the honest quorum alone bounds it from above (it cannot be postdated).
//!
//! Namespace claims are the one kind a witness lists selectively: only the
//! first claim per namespace it admits. With an honest witness quorum of
//! more than half the weight, two claims on one namespace can never both be
//! witnessed: each would need more than half of the weight, and no honest
//! witness lists both. The owner is the earliest witnessed claim (ties by
//! record id); a claim nobody witnessed yet is pending and owns nothing.
//!
//! Two checkpoints with one (witness, seq), a checkpoint whose `prev` is not
//! the witness's checkpoint before it, or one whose time runs backwards are
//! equivocation: both envelopes are the proof, and every checkpoint of that
//! witness stops counting.
//!
//! Sans-IO: the time is an argument, signing is a closure.

use std::collections::{BTreeMap, HashMap, HashSet};

use packfed_governance::{Member, Role};
use packfed_protocol::limits::MAX_CHECKPOINT_RECORDS;
use packfed_protocol::{PublicKey, RecordId, Verified, pb};
use serde::Serialize;

use super::gov::MAX_CLOCK_SKEW_MS;
use super::{Channel, Effect, Topic, Write};

/// Which members witness, and how much weight is a quorum.
#[derive(Debug, Clone, Default)]
pub struct WitnessSet {
    weights: BTreeMap<PublicKey, u64>,
    quorum: u64,
}

impl WitnessSet {
    /// Members with one of `roles`; a quorum is more than `share` of their
    /// weight (the default share is one half).
    pub fn new(members: &[Member], roles: &[Role], share: f64) -> WitnessSet {
        let weights: BTreeMap<PublicKey, u64> = members
            .iter()
            .filter(|m| roles.contains(&m.role))
            .map(|m| (m.public_key, m.weight))
            .collect();
        let total: u64 = weights.values().sum();
        let share = share.clamp(0.0, 1.0);
        // More than `share` of the weight, and never more than all of it.
        let quorum = (((total as f64) * share).floor() as u64 + 1).min(total);
        WitnessSet { weights, quorum }
    }

    pub fn weight(&self, key: &PublicKey) -> u64 {
        self.weights.get(key).copied().unwrap_or(0)
    }

    pub fn keys(&self) -> impl Iterator<Item = &PublicKey> {
        self.weights.keys()
    }

    /// Weight needed; 0 when the federation names no witness (then nothing
    /// is ever witnessed).
    pub fn quorum(&self) -> u64 {
        self.quorum
    }
}

/// A checkpoint's content, checked.
#[derive(Debug, Clone)]
pub struct CheckpointFacts {
    pub id: RecordId,
    pub channel: Channel,
    pub witness: PublicKey,
    pub seq: u64,
    pub time_ms: u64,
    pub prev: Option<RecordId>,
    pub records: Vec<RecordId>,
}

/// Checks a verified checkpoint's fields.
pub fn check(v: &Verified<pb::Checkpoint>) -> Result<CheckpointFacts, String> {
    let c = v.record();
    if c.records.len() > MAX_CHECKPOINT_RECORDS {
        return Err(format!(
            "checkpoint lists {} records, over the {MAX_CHECKPOINT_RECORDS} limit",
            c.records.len()
        ));
    }
    let prev = match (c.seq, c.prev.len()) {
        (0, 0) => None,
        (0, _) => return Err("checkpoint 0 names a previous checkpoint".into()),
        (_, 32) => Some(RecordId::from_slice(&c.prev).map_err(|e| e.to_string())?),
        (_, n) => return Err(format!("checkpoint prev must be 32 bytes, not {n}")),
    };
    let records = c
        .records
        .iter()
        .map(|r| RecordId::from_slice(r).map_err(|e| format!("checkpoint record id: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    if c.digest.len() != 32 {
        return Err("checkpoint digest must be 32 bytes".into());
    }
    let channel = Channel::from_doc(c.doc).ok_or_else(|| format!("checkpoint names unknown log {}", c.doc))?;
    Ok(CheckpointFacts {
        id: v.id(),
        channel,
        witness: v.signer(),
        seq: c.seq,
        time_ms: c.time_ms,
        prev,
        records,
    })
}

/// Proof that a witness signed two histories.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Equivocation {
    pub seq: u64,
    pub first: RecordId,
    pub second: RecordId,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    id: RecordId,
    time_ms: u64,
    prev: Option<RecordId>,
}

#[derive(Debug, Default)]
struct Log {
    by_seq: BTreeMap<u64, Entry>,
    /// The one idle checkpoint (it lists no record, it only says "still
    /// here") this log keeps: the newest. Tracked here, not found by a scan
    /// of `by_seq`, which grows by one entry per batch of news, forever.
    idle: Option<u64>,
    equivocation: Option<Equivocation>,
}

impl Log {
    /// Notes idle checkpoint `seq`, just added; returns the idle one that
    /// goes (the older of it and the one kept so far), removed from the log.
    fn keep_newest_idle(&mut self, seq: u64) -> Option<(u64, RecordId)> {
        let older = match self.idle {
            Some(kept) if kept > seq => seq,
            kept => {
                self.idle = Some(seq);
                kept?
            }
        };
        self.by_seq.remove(&older).map(|e| (older, e.id))
    }

    fn latest(&self) -> Option<(u64, Entry)> {
        self.by_seq.iter().next_back().map(|(s, e)| (*s, *e))
    }

    /// Whether `c` contradicts what this log holds.
    fn conflict(&self, c: &CheckpointFacts) -> Option<Equivocation> {
        let proof = |other: RecordId| Equivocation {
            seq: c.seq,
            first: other,
            second: c.id,
        };
        if let Some(have) = self.by_seq.get(&c.seq) {
            return (have.id != c.id).then(|| proof(have.id));
        }
        if let Some(before) = c.seq.checked_sub(1).and_then(|s| self.by_seq.get(&s))
            && (Some(before.id) != c.prev || before.time_ms > c.time_ms)
        {
            return Some(proof(before.id));
        }
        if let Some(after) = c.seq.checked_add(1).and_then(|s| self.by_seq.get(&s))
            && (after.prev != Some(c.id) || after.time_ms < c.time_ms)
        {
            return Some(proof(after.id));
        }
        None
    }
}

/// What the node tracks of a record beyond its time.
#[derive(Debug, Clone)]
enum Tracked {
    Claim {
        ns: String,
        signer: PublicKey,
    },
    Gov,
    /// A public attestation of `name@version`: which one is the latest is
    /// decided by witnessed time.
    Attestation {
        name: String,
        version: String,
    },
}

/// The log this node keeps for one witness key it holds.
#[derive(Debug, Default)]
struct Own {
    pending: Vec<RecordId>,
    queued: HashSet<RecordId>,
    /// Namespaces whose first claim this log listed.
    claimed: HashSet<String>,
    digest: [u64; 4],
    total: u64,
}

/// What became of a checkpoint.
#[derive(Debug)]
pub enum Admission {
    New(Vec<Effect>),
    Known,
    /// Dated after `now` + skew: look again at this time.
    Held(u64),
    Invalid(String),
}

/// The owner of a namespace by witnessed claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WitnessedOwner {
    pub owner: PublicKey,
    pub claim: RecordId,
    pub witnessed_at_ms: u64,
}

/// One witness as `witness status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct WitnessView {
    pub public_key: String,
    pub weight: u64,
    pub seq: Option<u64>,
    pub time: Option<u64>,
    pub equivocated: bool,
    pub equivocation: Option<Equivocation>,
    /// This node signs this witness's checkpoints.
    pub local: bool,
}

/// Every witness's log as this node holds it, the logs it keeps itself, and
/// the witnessed time of each record.
#[derive(Debug)]
pub struct Witnesses {
    /// Whose log this is: the federation's (public) or an org's.
    channel: Channel,
    set: WitnessSet,
    logs: HashMap<PublicKey, Log>,
    /// Per record: which witness listed it, at what time (the earliest).
    listed: HashMap<RecordId, Listing>,
    /// The witnesses a [`Listing`] names, by index: every key that was in
    /// the set when one of its checkpoints arrived (governance bounds them).
    listers: Vec<PublicKey>,
    tracked: HashMap<RecordId, Tracked>,
    claims_by_ns: HashMap<String, Vec<RecordId>>,
    own: BTreeMap<PublicKey, Own>,
}

impl Witnesses {
    /// `own`: the witness keys this node signs with (a subset of the set).
    pub fn new(set: WitnessSet, own: impl IntoIterator<Item = PublicKey>) -> Witnesses {
        Self::for_channel(Channel::Public, set, own)
    }

    /// The logs of one channel. Org checkpoints replicate only into the org
    /// document and are never gossiped (gossip is public), and an org log
    /// signs no idle checkpoints (they would travel nowhere).
    pub fn for_channel(channel: Channel, set: WitnessSet, own: impl IntoIterator<Item = PublicKey>) -> Witnesses {
        let own = own
            .into_iter()
            .filter(|k| set.weight(k) > 0)
            .map(|k| (k, Own::default()))
            .collect();
        Witnesses {
            channel,
            set,
            own,
            logs: Default::default(),
            listed: Default::default(),
            listers: Vec::new(),
            tracked: Default::default(),
            claims_by_ns: Default::default(),
        }
    }

    fn idle_ms(&self, idle_ms: u64) -> u64 {
        match self.channel {
            Channel::Public => idle_ms,
            Channel::Org => u64::MAX,
        }
    }

    pub fn set(&self) -> &WitnessSet {
        &self.set
    }

    /// Replaces the witness set (governance changed the membership); the
    /// logs stay, and only the witnesses in the new set count.
    pub fn set_witnesses(&mut self, set: WitnessSet) -> Vec<PublicKey> {
        self.set = set;
        let set = &self.set;
        self.own.retain(|k, _| set.weight(k) > 0);
        self.own.keys().copied().collect()
    }

    /// The keys this node witnesses with.
    pub fn own_keys(&self) -> Vec<PublicKey> {
        self.own.keys().copied().collect()
    }

    fn counts(&self, w: &PublicKey) -> bool {
        self.set.weight(w) > 0 && self.logs.get(w).is_none_or(|l| l.equivocation.is_none())
    }

    /// The witnessed time of a record, if a quorum listed it.
    pub fn witnessed(&self, id: &RecordId) -> Option<u64> {
        let quorum = self.set.quorum();
        if quorum == 0 {
            return None;
        }
        let mut times: Vec<(u64, u64)> = self
            .listed
            .get(id)?
            .as_slice()
            .iter()
            .map(|(w, t)| (&self.listers[*w as usize], *t))
            .filter(|(w, _)| self.counts(w))
            .map(|(w, t)| (t, self.set.weight(w)))
            .collect();
        times.sort_unstable();
        let mut weight = 0;
        for (t, w) in times {
            weight += w;
            if weight >= quorum {
                return Some(t);
            }
        }
        None
    }

    /// Remembers a stored namespace claim (owner decisions need them).
    pub fn track_claim(&mut self, id: RecordId, ns: &str, signer: PublicKey) -> Vec<Effect> {
        if self.tracked.contains_key(&id) {
            return Vec::new();
        }
        self.tracked.insert(
            id,
            Tracked::Claim {
                ns: ns.to_string(),
                signer,
            },
        );
        self.claims_by_ns.entry(ns.to_string()).or_default().push(id);
        if self.witnessed(&id).is_some() {
            vec![Effect::OwnerMayChange(ns.to_string())]
        } else {
            Vec::new()
        }
    }

    /// Remembers a stored governance record (its time is witnessed time).
    pub fn track_gov(&mut self, id: RecordId) {
        self.tracked.entry(id).or_insert(Tracked::Gov);
    }

    /// Remembers a stored public attestation: its subject is judged again
    /// when witnesses date it.
    pub fn track_attestation(&mut self, id: RecordId, name: &str, version: &str) {
        self.tracked.entry(id).or_insert_with(|| Tracked::Attestation {
            name: name.to_string(),
            version: version.to_string(),
        });
    }

    /// The owner of `ns`: the earliest witnessed claim, ties by id.
    pub fn owner(&self, ns: &str) -> Option<WitnessedOwner> {
        self.claims_by_ns
            .get(ns)?
            .iter()
            .filter_map(|id| {
                let t = self.witnessed(id)?;
                let Some(Tracked::Claim { signer, .. }) = self.tracked.get(id) else {
                    return None;
                };
                Some(WitnessedOwner {
                    owner: *signer,
                    claim: *id,
                    witnessed_at_ms: t,
                })
            })
            .min_by_key(|o| (o.witnessed_at_ms, o.claim))
    }

    /// A checkpoint from a peer, or stored (at open).
    pub fn admit(&mut self, v: &Verified<pb::Checkpoint>, now_ms: u64) -> Admission {
        let c = match check(v) {
            Ok(c) => c,
            Err(e) => return Admission::Invalid(e),
        };
        if c.channel != self.channel {
            return Admission::Invalid(format!(
                "a checkpoint of the {:?} log offered to the {:?} one",
                c.channel, self.channel
            ));
        }
        if self.set.weight(&c.witness) == 0 {
            return Admission::Invalid(format!("{} is not a witness of this federation", c.witness));
        }
        if c.time_ms > now_ms.saturating_add(MAX_CLOCK_SKEW_MS) {
            return Admission::Held(c.time_ms - MAX_CLOCK_SKEW_MS);
        }
        let log = self.logs.entry(c.witness).or_default();
        if log.by_seq.get(&c.seq).is_some_and(|e| e.id == c.id) {
            return Admission::Known;
        }
        let mut effects = vec![Effect::Store(Box::new(Write::Checkpoint(v.clone())))];
        let conflict = log.conflict(&c);
        // Idle checkpoints only tell how fresh a witness is: they travel by
        // gossip, and only the newest per witness is kept (one a minute,
        // forever, would otherwise fill every store and the registry
        // document). Proofs of equivocation are always kept and synced.
        if !c.records.is_empty() || conflict.is_some() {
            effects.push(Effect::Replicate(self.channel, v.envelope().clone()));
        }
        if let Some(proof) = conflict {
            // Kept as proof; nothing this witness signed counts any more.
            let first = log.equivocation.is_none();
            log.equivocation.get_or_insert(proof);
            if first {
                tracing::warn!(witness = %c.witness, seq = c.seq, "witness equivocated: its checkpoints stop counting");
                effects.extend(self.recount_all());
            }
            return Admission::New(effects);
        }
        log.by_seq.insert(
            c.seq,
            Entry {
                id: c.id,
                time_ms: c.time_ms,
                prev: c.prev,
            },
        );
        if c.records.is_empty()
            && let Some((seq, id)) = log.keep_newest_idle(c.seq)
        {
            effects.push(Effect::Forget {
                doc: c.channel.doc(),
                witness: c.witness,
                seq,
                id,
            });
        }
        let counts = log.equivocation.is_none();
        let lister = self.lister(&c.witness);
        let mut changed = Vec::new();
        for r in &c.records {
            let before = counts.then(|| self.witnessed(r)).flatten();
            match self.listed.entry(*r) {
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(Listing::One((lister, c.time_ms)));
                }
                std::collections::hash_map::Entry::Occupied(mut o) => {
                    if !o.get_mut().note(lister, c.time_ms) {
                        continue;
                    }
                }
            }
            if counts && self.witnessed(r) != before {
                changed.push(*r);
            }
        }
        if let Some(own) = self.own.get_mut(&c.witness) {
            // Our own log, loaded at open: continue it.
            for r in &c.records {
                own.add_to_digest(r);
                if let Some(Tracked::Claim { ns, .. }) = self.tracked.get(r) {
                    own.claimed.insert(ns.clone());
                }
            }
        }
        effects.extend(self.consequences(&changed));
        Admission::New(effects)
    }

    /// What records whose witnessed time changed imply.
    fn consequences(&self, changed: &[RecordId]) -> Vec<Effect> {
        let mut namespaces = std::collections::BTreeSet::new();
        let mut subjects = std::collections::BTreeSet::new();
        let mut gov = false;
        for r in changed {
            match self.tracked.get(r) {
                Some(Tracked::Claim { ns, .. }) => {
                    namespaces.insert(ns.clone());
                }
                Some(Tracked::Gov) => gov = true,
                Some(Tracked::Attestation { name, version }) => {
                    subjects.insert((name.clone(), version.clone()));
                }
                None => {}
            }
        }
        let mut out: Vec<Effect> = namespaces.into_iter().map(Effect::OwnerMayChange).collect();
        if !subjects.is_empty() {
            out.push(Effect::Reevaluate(subjects.into_iter().collect()));
        }
        if gov {
            out.push(Effect::GovernanceChanged);
        }
        out
    }

    /// After an equivocation or a new witness set: every decision again.
    fn recount_all(&self) -> Vec<Effect> {
        let mut out: Vec<Effect> = self.claims_by_ns.keys().cloned().map(Effect::OwnerMayChange).collect();
        out.sort_by_key(|e| match e {
            Effect::OwnerMayChange(ns) => ns.clone(),
            _ => String::new(),
        });
        out.push(Effect::GovernanceChanged);
        out
    }

    /// Recounts after [`Witnesses::set_witnesses`].
    pub fn recount(&self) -> Vec<Effect> {
        self.recount_all()
    }

    /// Whether a log this node keeps lists (or will list) `id`.
    pub fn lists_own(&self, id: &RecordId) -> bool {
        self.own
            .iter()
            .any(|(k, own)| own.queued.contains(id) || self.own_lists(k, id))
    }

    /// Whether this node's log for `key` already lists `id`.
    fn own_lists(&self, key: &PublicKey, id: &RecordId) -> bool {
        let Some(i) = self.listers.iter().position(|k| k == key) else {
            return false;
        };
        self.listed
            .get(id)
            .is_some_and(|l| l.as_slice().iter().any(|(w, _)| *w as usize == i))
    }

    /// The index [`Listing`]s name witness `key` by.
    fn lister(&mut self, key: &PublicKey) -> u32 {
        let i = match self.listers.iter().position(|k| k == key) {
            Some(i) => i,
            None => {
                self.listers.push(*key);
                self.listers.len() - 1
            }
        };
        // Only keys in the witness set get here, and governance adds them
        // one vote at a time: never 2^32 of them.
        i as u32
    }

    /// A record this node stored on a public channel: each log it keeps
    /// lists it at the next checkpoint (a claim only if it is the first
    /// claim on its namespace that log lists).
    pub fn note_admitted(&mut self, id: RecordId, claim_ns: Option<&str>) {
        let keys: Vec<PublicKey> = self.own.keys().copied().collect();
        for key in keys {
            if self.own_lists(&key, &id) {
                continue;
            }
            let Some(own) = self.own.get_mut(&key) else { continue };
            if own.queued.contains(&id) {
                continue;
            }
            if let Some(ns) = claim_ns
                && !own.claimed.insert(ns.to_string())
            {
                continue;
            }
            own.queued.insert(id);
            own.pending.push(id);
        }
    }

    /// Whether a log this node keeps has news, or has been idle for
    /// `idle_ms` (so peers can tell the view is fresh).
    pub fn due(&self, now_ms: u64, idle_ms: u64) -> bool {
        let idle_ms = self.idle_ms(idle_ms);
        self.own.iter().any(|(k, own)| {
            !own.pending.is_empty()
                || self
                    .logs
                    .get(k)
                    .and_then(Log::latest)
                    .is_none_or(|(_, e)| now_ms.saturating_sub(e.time_ms) >= idle_ms)
        })
    }

    /// Signs the next checkpoints of every log this node keeps that is due,
    /// admits them, and says how to store and send them: stored, flushed
    /// (a witness must never reuse a sequence number after a crash), then
    /// gossiped.
    pub fn produce(
        &mut self,
        now_ms: u64,
        idle_ms: u64,
        sign: impl Fn(&PublicKey, pb::Checkpoint) -> Option<Verified<pb::Checkpoint>>,
    ) -> Vec<Effect> {
        let idle_ms = self.idle_ms(idle_ms);
        let keys: Vec<PublicKey> = self.own.keys().copied().collect();
        let mut effects = Vec::new();
        let mut gossip = Vec::new();
        let mut signed = false;
        for key in keys {
            loop {
                let latest = self.logs.get(&key).and_then(Log::latest);
                let Some(own) = self.own.get_mut(&key) else { break };
                let idle = latest.is_none_or(|(_, e)| now_ms.saturating_sub(e.time_ms) >= idle_ms);
                if own.pending.is_empty() && !idle {
                    break;
                }
                let take = own.pending.len().min(MAX_CHECKPOINT_RECORDS);
                let batch: Vec<RecordId> = own.pending.drain(..take).collect();
                for id in &batch {
                    own.queued.remove(id);
                }
                let (digest, total) = own.digest_with(&batch);
                let cp = pb::Checkpoint {
                    seq: latest.map_or(0, |(s, _)| s + 1),
                    // Never backwards, even if the clock steps back.
                    time_ms: latest.map_or(now_ms, |(_, e)| e.time_ms.max(now_ms)),
                    prev: latest.map(|(_, e)| e.id.0.to_vec()).unwrap_or_default(),
                    records: batch.iter().map(|id| id.0.to_vec()).collect(),
                    digest: digest.to_vec(),
                    total,
                    doc: self.channel.doc(),
                };
                let Some(v) = sign(&key, cp) else { break };
                match self.admit(&v, now_ms) {
                    Admission::New(fx) => effects.extend(fx),
                    other => {
                        tracing::error!(?other, "own checkpoint not admitted");
                        break;
                    }
                }
                signed = true;
                if self.channel == Channel::Public {
                    gossip.push(Effect::Gossip(Topic::Records, v.envelope().encoded().to_vec()));
                }
                let more = self.own.get(&key).is_some_and(|o| !o.pending.is_empty());
                if !more {
                    break;
                }
            }
        }
        if signed {
            effects.push(Effect::Flush);
            effects.extend(gossip);
        }
        effects
    }

    /// This node's view is fresh while witnesses of quorum weight have
    /// checkpoints at most `max_staleness_ms` old: the view's age is the
    /// quorum-th newest witness time (never ahead of `now`).
    pub fn view_age_ms(&self, now_ms: u64) -> Option<u64> {
        let quorum = self.set.quorum();
        if quorum == 0 {
            return None;
        }
        let mut latest: Vec<(u64, u64)> = self
            .set
            .keys()
            .filter(|w| self.counts(w))
            .filter_map(|w| {
                let (_, e) = self.logs.get(w)?.latest()?;
                Some((e.time_ms.min(now_ms), self.set.weight(w)))
            })
            .collect();
        latest.sort_unstable_by(|a, b| b.cmp(a));
        let mut weight = 0;
        for (t, w) in latest {
            weight += w;
            if weight >= quorum {
                return Some(now_ms - t);
            }
        }
        None
    }

    /// Every witness of the set, with its latest checkpoint.
    pub fn views(&self) -> Vec<WitnessView> {
        self.set
            .keys()
            .map(|w| {
                let log = self.logs.get(w);
                let latest = log.and_then(Log::latest);
                let equivocation = log.and_then(|l| l.equivocation);
                WitnessView {
                    public_key: w.to_hex(),
                    weight: self.set.weight(w),
                    seq: latest.map(|(s, _)| s),
                    time: latest.map(|(_, e)| e.time_ms),
                    equivocated: equivocation.is_some(),
                    equivocation,
                    local: self.own.contains_key(w),
                }
            })
            .collect()
    }

    /// The highest checkpoint (witness, seq, id) of a quorum, for lockfiles:
    /// the newest checkpoint this view rests on.
    pub fn newest_checkpoint(&self) -> Option<(PublicKey, u64, RecordId)> {
        self.set
            .keys()
            .filter(|w| self.counts(w))
            .filter_map(|w| {
                let (s, e) = self.logs.get(w)?.latest()?;
                Some((e.time_ms, *w, s, e.id))
            })
            .max()
            .map(|(_, w, s, id)| (w, s, id))
    }

    /// Records listed by at least one witness (for the size benchmark).
    pub fn listed_count(&self) -> usize {
        self.listed.len()
    }
}

/// Which witnesses listed one record, each at its earliest time, by index
/// into [`Witnesses::listers`]. There is one per record, 100k and more, and
/// nearly every record is listed by one witness or a few, so the first
/// listing is kept inline: 24 bytes and no allocation, where a `Vec` of
/// `(PublicKey, u64)` cost 24 bytes plus 48 on the heap (12 MB at 100k).
#[derive(Debug)]
enum Listing {
    One((u32, u64)),
    Many(Vec<(u32, u64)>),
}

impl Listing {
    fn as_slice(&self) -> &[(u32, u64)] {
        match self {
            Listing::One(l) => std::slice::from_ref(l),
            Listing::Many(v) => v,
        }
    }

    /// Notes that `lister` listed the record at `time`. False when it had
    /// already, as early: nothing changed.
    fn note(&mut self, lister: u32, time: u64) -> bool {
        match self {
            Listing::One((w, t)) if *w == lister => earlier(t, time),
            Listing::One(first) => {
                *self = Listing::Many(vec![*first, (lister, time)]);
                true
            }
            Listing::Many(v) => match v.iter_mut().find(|(w, _)| *w == lister) {
                Some((_, t)) => earlier(t, time),
                None => {
                    // Grown one slot at a time: few records are listed by
                    // many witnesses.
                    v.reserve_exact(1);
                    v.push((lister, time));
                    true
                }
            },
        }
    }
}

/// Lowers `*t` to `time` if that is earlier; whether it did.
fn earlier(t: &mut u64, time: u64) -> bool {
    let lower = time < *t;
    if lower {
        *t = time;
    }
    lower
}

impl Own {
    fn add_to_digest(&mut self, id: &RecordId) {
        // Order-free: a sum of the ids, lane by lane.
        for (lane, chunk) in self.digest.iter_mut().zip(id.0.chunks_exact(8)) {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            *lane = lane.wrapping_add(u64::from_le_bytes(b));
        }
        self.total += 1;
    }

    /// The digest and count once `batch` is added, leaving `self` as is
    /// (the checkpoint is admitted like any other, which adds it).
    fn digest_with(&self, batch: &[RecordId]) -> ([u8; 32], u64) {
        let mut next = Own {
            digest: self.digest,
            total: self.total,
            ..Default::default()
        };
        batch.iter().for_each(|id| next.add_to_digest(id));
        let mut out = [0u8; 32];
        for (chunk, lane) in out.chunks_exact_mut(8).zip(next.digest) {
            chunk.copy_from_slice(&lane.to_le_bytes());
        }
        (out, next.total)
    }
}

#[cfg(test)]
mod listing_tests {
    use super::Listing;

    #[test]
    fn a_listing_keeps_each_witness_earliest_time_and_one_stays_inline() {
        assert_eq!(std::mem::size_of::<Listing>(), 24, "one per record: keep it small");
        let mut l = Listing::One((0, 50));
        assert!(!l.note(0, 60), "a later listing by the same witness changes nothing");
        assert!(l.note(0, 40));
        assert!(matches!(l, Listing::One((0, 40))));
        assert!(l.note(1, 70));
        assert!(!l.note(1, 70));
        assert!(l.note(2, 10));
        assert!(l.note(1, 20));
        assert_eq!(l.as_slice(), &[(0, 40), (1, 20), (2, 10)]);
    }
}
