//! Witnessing in the node: the checkpoint logs this node keeps for the
//! witness keys in its home, the logs of every other witness, and what
//! witnessed time puts in force (namespace owners, the governance clock,
//! freshness). The rules are the core's ([`crate::core::witness`]); this
//! shell loads the logs at open, signs on a timer, and carries out effects.

use std::collections::{BTreeMap, HashMap};

use packfed_governance::{Member, Role};
use packfed_protocol::{Domain, KeyPair, PublicKey, RecordId, Signed, Verified, pb};
use serde::Serialize;

use super::Node;
use crate::core::Channel;
use crate::core::gov::MAX_CLOCK_SKEW_MS;
use crate::core::witness::{Admission, WitnessSet, WitnessView, Witnesses};
use crate::core::{Effect, admit};
use crate::store::{NamespaceOwner, StoreError};

/// Most records kept aside because they are dated ahead of our clock.
const MAX_HELD: usize = 10_000;

/// How fresh this node's view of the federation is.
#[derive(Debug, Clone, Serialize)]
pub struct Freshness {
    pub fresh: bool,
    /// Age of the newest checkpoint a witness quorum has signed (null: no
    /// quorum of witnesses has signed one this node holds).
    pub view_age_ms: Option<u64>,
    pub max_staleness_ms: u64,
    /// Witness weight a quorum needs (0: the federation names no witness).
    pub quorum: u64,
}

/// `witness status`.
#[derive(Debug, Clone, Serialize)]
pub struct WitnessStatus {
    pub witnesses: Vec<WitnessView>,
    /// The org's witnesses (this node and its org peers), if it has an org.
    pub org_witnesses: Vec<WitnessView>,
    #[serde(flatten)]
    pub freshness: Freshness,
    /// Governance records and claims still waiting for a witness quorum.
    pub pending_governance: usize,
    /// Records kept aside until their time comes.
    pub held: usize,
    /// The newest checkpoint this view rests on (for lockfiles).
    pub checkpoint: Option<String>,
}

/// The witness keys in `home` this node signs with: `[witness] keys` (key
/// names or public keys), else every key that belongs to a witness.
pub(super) fn own_witness_keys(
    keys: Vec<(String, KeyPair)>,
    chosen: Option<&[String]>,
    set: &WitnessSet,
) -> HashMap<PublicKey, KeyPair> {
    keys.into_iter()
        .filter(|(name, k)| match chosen {
            Some(list) => list.iter().any(|c| c == name || *c == k.public().to_hex()),
            None => true,
        })
        .filter(|(_, k)| set.weight(&k.public()) > 0)
        .map(|(_, k)| (k.public(), k))
        .collect()
}

/// The org's witnesses: this node and its org peers, by node key, weight 1
/// each (a company with one node witnesses itself). Peer ids that are not
/// ed25519 keys are skipped.
pub(super) fn org_witness_set(node_key: &KeyPair, peers: &[String]) -> WitnessSet {
    let mut members = vec![Member {
        public_key: node_key.public(),
        role: Role::Maintainer,
        weight: 1,
    }];
    for p in peers {
        match crate::keys::public_key_of_peer(p) {
            Some(k) if k != node_key.public() => members.push(Member {
                public_key: k,
                role: Role::Maintainer,
                weight: 1,
            }),
            Some(_) => {}
            None => tracing::warn!(peer = %p, "org peer id is not an ed25519 key; it cannot witness org records"),
        }
    }
    members.sort_by_key(|m| m.public_key);
    members.dedup_by_key(|m| m.public_key);
    WitnessSet::new(&members, &[Role::Maintainer], 0.5)
}

impl Node {
    pub(super) fn org_witness_lock(&self) -> std::sync::MutexGuard<'_, Witnesses> {
        self.org_witness.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The logs of `channel`.
    fn logs(&self, channel: Channel) -> std::sync::MutexGuard<'_, Witnesses> {
        match channel {
            Channel::Public => self.witness_lock(),
            Channel::Org => self.org_witness_lock(),
        }
    }

    pub(super) fn witness_lock(&self) -> std::sync::MutexGuard<'_, Witnesses> {
        self.witness.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The witness set the governance state in force names.
    pub(super) fn witness_set_in_force(&self) -> WitnessSet {
        let st = self.gov_lock().state(crate::packing::now_ms());
        WitnessSet::new(&st.members, &st.parameters.witness_roles, st.parameters.witness_quorum)
    }

    /// Loads claims, governance ids and every stored checkpoint, lists in
    /// this node's own logs what they lack (records stored before a crash
    /// or before this node witnessed), and puts the owners in force.
    pub(super) fn load_witnesses(&self) -> Result<(), StoreError> {
        let mut effects = Vec::new();
        {
            let mut w = self.witness_lock();
            let mut org = self.org_witness_lock();
            for c in self.store.claims() {
                let (ns, id, signer) = c?;
                w.track_claim(id, &ns, signer);
            }
            for id in self.gov_lock().ids() {
                w.track_gov(RecordId(id));
            }
            // Tracked in both: only the log that lists one dates it.
            for a in self.store.attestation_subjects() {
                let (name, version, id) = a?;
                w.track_attestation(id, &name, &version);
                org.track_attestation(id, &name, &version);
            }
            let mut bad = 0;
            for env in self.store.checkpoints() {
                let env = env?;
                match env.verify::<pb::Checkpoint>(self.federation()) {
                    // Stored checkpoints were bounded in time on arrival.
                    Ok(v) => {
                        let logs = if v.record().doc == Channel::Org.doc() {
                            &mut org
                        } else {
                            &mut w
                        };
                        if let Admission::Invalid(_) = logs.admit(&v, u64::MAX - MAX_CLOCK_SKEW_MS) {
                            bad += 1;
                        }
                    }
                    Err(_) => bad += 1,
                }
            }
            if bad > 0 {
                tracing::warn!(
                    checkpoints = bad,
                    "stored checkpoints no longer count (not a witness any more, or damaged)"
                );
            }
            effects.extend(w.recount());
            effects.extend(org.recount());
        }
        self.list_unlisted()?;
        self.apply(effects)?;
        self.sync_gov_times();
        Ok(())
    }

    /// Queues in this node's logs every stored record they lack (public
    /// records in the federation's, org records in the org's).
    fn list_unlisted(&self) -> Result<(), StoreError> {
        let claims: HashMap<RecordId, String> = self
            .store
            .claims()
            .filter_map(Result::ok)
            .map(|(ns, id, _)| (id, ns))
            .collect();
        let public_own = !self.witness_lock().own_keys().is_empty();
        let mut queued = 0usize;
        for item in self.store.all_records() {
            let (id, bytes) = item?;
            // Most records are listed already: skip them before decoding.
            if self.witness_lock().lists_own(&id) || self.org_witness_lock().lists_own(&id) {
                continue;
            }
            let Ok(env) = Signed::decode(&bytes) else { continue };
            if matches!(env.domain(), Some(Domain::Checkpoint) | None) {
                continue;
            }
            let channel = self.stored_channel(&env)?;
            if channel == Channel::Public && !public_own {
                continue;
            }
            self.logs(channel)
                .note_admitted(id, claims.get(&id).map(String::as_str));
            queued += 1;
        }
        tracing::debug!(
            records = queued,
            "offered stored records to this node's checkpoint logs"
        );
        Ok(())
    }

    /// The channel of a stored record, without checking its signature again
    /// (it was checked before it was stored): org releases and
    /// attestations of org releases are org records.
    fn stored_channel(&self, env: &Signed) -> Result<Channel, StoreError> {
        match env.domain() {
            Some(Domain::Attestation) => {}
            Some(Domain::Yank | Domain::Deprecation) => {
                return Ok(admit::channel_of(&self.view(), self.federation(), env));
            }
            _ => return Ok(admit::record_channel(env)),
        }
        let Ok(a) = env.unchecked_record::<pb::Attestation>() else {
            return Ok(Channel::Public);
        };
        let org = self
            .store
            .release_unverified(&a.name, &a.version)?
            .is_some_and(|r| r.visibility == pb::Visibility::Org as i32);
        Ok(if org { Channel::Org } else { Channel::Public })
    }

    /// A record was stored on a public channel: this node's logs list it.
    pub(super) fn note_witnessable(&self, id: RecordId, claim_ns: Option<&str>) {
        self.witness_lock().note_admitted(id, claim_ns);
    }

    /// Signs the checkpoints that are due (news, or idle too long) and
    /// sends them. Returns how many logs had news.
    pub fn checkpoint_tick(&self, now_ms: u64) -> Result<bool, StoreError> {
        let idle = self.config.witness.idle_interval_ms;
        let effects = {
            let mut w = self.witness_lock();
            if w.due(now_ms, idle) {
                let keys = &self.witness_keys;
                w.produce(now_ms, idle, |k, cp| {
                    keys.get(k).map(|kp| Verified::sign(cp, kp, self.federation()))
                })
            } else {
                Vec::new()
            }
        };
        let org = {
            let mut w = self.org_witness_lock();
            if w.due(now_ms, idle) {
                w.produce(now_ms, idle, |k, cp| {
                    (*k == self.key.public()).then(|| Verified::sign(cp, &self.key, self.federation()))
                })
            } else {
                Vec::new()
            }
        };
        let signed = !effects.is_empty() || !org.is_empty();
        self.apply(effects)?;
        self.apply(org)?;
        Ok(signed)
    }

    /// A checkpoint from a peer.
    /// An org checkpoint only counts from the org document (org peers).
    pub(super) fn admit_checkpoint(
        &self,
        v: &packfed_protocol::Verified<pb::Checkpoint>,
        channel: Channel,
        now_ms: u64,
    ) -> Admission {
        match (v.record().doc == Channel::Org.doc(), channel) {
            (false, _) => self.witness_lock().admit(v, now_ms),
            (true, Channel::Org) => self.org_witness_lock().admit(v, now_ms),
            (true, Channel::Public) => Admission::Invalid("an org checkpoint arrived on a public channel".into()),
        }
    }

    /// Puts the owner of `ns` by witnessed claims in force; a release that
    /// becomes visible is judged.
    pub(super) fn owner_may_change(&self, ns: &str) -> Result<(), StoreError> {
        let owner = self.witness_lock().owner(ns).map(|o| NamespaceOwner {
            owner: o.owner.0,
            claim: o.claim.0,
            witnessed_at_ms: o.witnessed_at_ms,
        });
        if self.store.set_claimed_owner(ns, owner)? {
            tracing::info!(namespace = %ns, owner = ?owner.map(|o| o.key().to_hex()), "namespace owner by witnessed claims");
            let versions = self.store.versions_in_namespace(ns)?;
            if !versions.is_empty() {
                self.apply(vec![Effect::Reevaluate(versions.clone())])?;
            }
            // A mirror fetches what just became visible and accepted. (The
            // verdict may have been set meanwhile by a reader, so "newly
            // accepted" cannot be relied on here.)
            if self.mirrors() {
                for (name, version) in versions {
                    let Some(entry) = self.store.release(self.federation(), &name, &version)? else {
                        continue;
                    };
                    let Ok(hash) = packfed_protocol::ContentHash::from_slice(&entry.release.content_hash) else {
                        continue;
                    };
                    if self.is_accepted(&entry) && !self.store.has_blob(&hash)? {
                        self.apply(vec![Effect::Fetch(hash, entry.release.size)])?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Hands the witnessed times of governance records to the governance core.
    pub(super) fn sync_gov_times(&self) {
        let ids = self.gov_lock().ids();
        let times: HashMap<[u8; 32], u64> = {
            let w = self.witness_lock();
            ids.into_iter()
                .filter_map(|id| w.witnessed(&RecordId(id)).map(|t| (id, t)))
                .collect()
        };
        self.gov_lock().set_witnessed(times);
    }

    /// The witnessed time of a record, if a witness quorum listed it.
    pub fn witnessed_at(&self, id: &RecordId) -> Option<u64> {
        let public = self.witness_lock().witnessed(id);
        public.or_else(|| self.org_witness_lock().witnessed(id))
    }

    pub fn freshness(&self, now_ms: u64) -> Freshness {
        let w = self.witness_lock();
        let age = w.view_age_ms(now_ms);
        let max = self.config.witness.max_staleness.millis();
        Freshness {
            fresh: age.is_some_and(|a| a <= max),
            view_age_ms: age,
            max_staleness_ms: max,
            quorum: w.set().quorum(),
        }
    }

    pub fn witness_status(&self, now_ms: u64) -> WitnessStatus {
        let freshness = self.freshness(now_ms);
        let (witnesses, checkpoint) = {
            let w = self.witness_lock();
            (w.views(), w.newest_checkpoint().map(|(_, _, id)| id.to_hex()))
        };
        let org_witnesses = if self.config.org.peers.is_empty() {
            Vec::new()
        } else {
            self.org_witness_lock().views()
        };
        WitnessStatus {
            witnesses,
            org_witnesses,
            freshness,
            pending_governance: self.gov_lock().pending(),
            held: self.held_count(),
            checkpoint,
        }
    }

    /// Keeps a record dated ahead of our clock until `at_ms`.
    pub(super) fn hold(&self, bytes: &[u8], channel: Channel, at_ms: u64) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let count: usize = held.values().map(Vec::len).sum();
        if count >= MAX_HELD {
            tracing::debug!("held-record queue full; dropped a record dated in the future");
            return;
        }
        held.entry(at_ms).or_default().push((bytes.to_vec(), channel));
    }

    fn held_count(&self) -> usize {
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.values().map(Vec::len).sum()
    }

    /// Offers again every held record whose time has come.
    pub fn release_held(&self, now_ms: u64) -> usize {
        let due: Vec<(Vec<u8>, Channel)> = {
            let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
            let later = held.split_off(&now_ms.saturating_add(1));
            std::mem::replace(&mut *held, later).into_values().flatten().collect()
        };
        let n = due.len();
        for (bytes, channel) in due {
            let outcome = self.ingest(&bytes, channel);
            tracing::debug!(?outcome, "offered a held record again");
        }
        n
    }

    /// After governance changed the membership or parameters: the witness
    /// set in force, and everything it decides, recounted.
    pub(super) fn refresh_witness_set(&self) -> Vec<Effect> {
        let set = self.witness_set_in_force();
        let mut w = self.witness_lock();
        let same = w.set().quorum() == set.quorum() && w.set().keys().eq(set.keys());
        if same {
            return Vec::new();
        }
        w.set_witnesses(set);
        w.recount()
    }
}

/// Held records per due time (see [`Node::hold`]).
pub(super) type Held = BTreeMap<u64, Vec<(Vec<u8>, Channel)>>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::Ingested;

    fn open(dir: &std::path::Path) -> Node {
        Node::open(crate::config::Home {
            root: dir.to_path_buf(),
        })
        .unwrap()
    }

    /// A development home in a fresh directory (its node is the
    /// federation's one witness), and the node opened on it.
    fn dev_node() -> (tempfile::TempDir, Node) {
        let dir = tempfile::tempdir().unwrap();
        crate::init::init_dev_home(&crate::config::Home {
            root: dir.path().to_path_buf(),
        })
        .unwrap();
        let node = open(dir.path());
        (dir, node)
    }

    #[test]
    fn a_record_stored_before_a_crash_is_listed_by_the_restarted_witness() {
        let (dir, node) = dev_node();
        let key = KeyPair::generate().unwrap();
        let claim = Signed::sign(
            &pb::NamespaceClaim {
                namespace: "crashed".into(),
                claimed_at_ms: 1,
            },
            &key,
            node.federation(),
        );
        assert!(matches!(node.ingest(claim.encoded(), Channel::Public), Ingested::New));
        node.store.flush().unwrap();
        // It dies before its timer signs the checkpoint that lists the claim.
        assert_eq!(node.witnessed_at(&claim.id()), None);
        drop(node);

        let node = open(dir.path());
        node.checkpoint_tick(crate::packing::now_ms()).unwrap();
        assert!(node.witnessed_at(&claim.id()).is_some(), "listed after the restart");
        let owner = node.store.namespace_owner("crashed").unwrap().map(|o| o.key());
        assert_eq!(owner, Some(key.public()));
        // And its log continued: no second checkpoint 0 (no equivocation).
        let st = node.witness_status(crate::packing::now_ms());
        assert!(st.witnesses.iter().all(|w| !w.equivocated));
        assert!(st.freshness.fresh);
    }

    /// Callers that ask for a checkpoint while another signs leave their
    /// news to it; none is left out.
    #[test]
    fn concurrent_checkpoint_requests_leave_no_record_unlisted() {
        let (_dir, node) = dev_node();
        let claims: Vec<Signed> = (0..8)
            .map(|i| {
                let claim = pb::NamespaceClaim {
                    namespace: format!("busy{i}"),
                    claimed_at_ms: 1,
                };
                Signed::sign(&claim, &KeyPair::generate().unwrap(), node.federation())
            })
            .collect();
        std::thread::scope(|s| {
            for claim in &claims {
                let node = &node;
                s.spawn(move || {
                    for _ in 0..3 {
                        assert!(matches!(
                            node.ingest(claim.encoded(), Channel::Public),
                            Ingested::New | Ingested::Known
                        ));
                        node.checkpoint_now();
                    }
                });
            }
        });
        for claim in &claims {
            assert!(node.witnessed_at(&claim.id()).is_some(), "{} listed", claim.id());
        }
    }
}
