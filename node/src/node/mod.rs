//! The shell around the core: the running node's store, registry documents
//! and the core's state, and the operations the API exposes. The core
//! (`crate::core`) decides; this module reads the store for it
//! ([`StoreView`]) and carries out the effects it returns ([`Node::apply`]).
//! What goes to the network leaves through the outbox ([`Outbound`]),
//! which the daemon connects to the reactor. The HTTP layer (`api`) only
//! translates.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use anyhow::{Context, Result};
use packfed_governance::Genesis;
use packfed_protocol::manifest::Visibility;
use packfed_protocol::records::PackId;
use packfed_protocol::{ContentHash, FederationId, KeyPair, RecordId, Signed, pb};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::config::{Config, Home};
use crate::core::gov::Governance;
use crate::core::learning::Learning;
use crate::core::{Channel, Effect, Topic, View, Write};
use crate::docfile::DocFile;
use crate::keys;
use crate::registry::Replica;
use crate::store::{AttestationEntry, Change, ReleaseEntry, ReleaseStatus, Store, StoreError};

pub mod blob_source;
mod documents;
pub mod governance;
mod ingest;
mod learning;
mod trust;
mod witness;

pub use crate::core::admit::{AttestError, DeprecateError, YankError};
pub use crate::core::gov::GovError;
pub use documents::{Loaded, load_replica};
pub use ingest::{IngestStats, Ingested};
pub use learning::LearnTick;
pub use trust::{AttestationView, load_local_policy};
pub use witness::{Freshness, WitnessStatus};

/// What the node hands to the network layer (and the mirror), in order.
#[derive(Debug)]
pub enum Outbound {
    /// Gossip these bytes on a topic.
    Gossip(Topic, Vec<u8>),
    /// Announce that this node holds a blob.
    Provide(ContentHash),
    /// Fetch a blob this mirror accepted.
    Mirror(ContentHash, u64),
}

/// Everything a running node holds: the store, the registry documents, and
/// the core's state (governance, learning). The rules are the core's
/// ([`crate::core`]); this shell reads the store for it and carries out the
/// effects it returns.
pub struct Node {
    pub home: Home,
    pub config: Config,
    pub genesis: Genesis,
    pub store: Store,
    pub key: KeyPair,
    pub peer_id: String,
    /// The replicated public registry document.
    pub replica: Mutex<Replica>,
    /// The org registry document, synced only with org peers.
    pub org_replica: Mutex<Replica>,
    /// Where each document is saved.
    replica_file: Mutex<DocFile>,
    org_replica_file: Mutex<DocFile>,
    /// Counters of what peers sent.
    pub stats: IngestStats,
    /// Set while a sync's many releases are being stored.
    pub bulk: ingest::BulkIngest,
    /// What `/metrics` shows.
    pub metrics: crate::metrics::Metrics,
    /// The iroh endpoint that moves pack bytes, once started.
    pub iroh: OnceLock<iroh::Endpoint>,
    /// Governance records held, and the policy and membership in force.
    gov: Mutex<Governance>,
    /// Signalled when a governance record arrives.
    pub gov_changed: tokio::sync::Notify,
    /// Federated learning: the model in force and this round's summaries.
    learn: Mutex<Learning>,
    /// Every witness's checkpoint log, this node's own, witnessed times.
    witness: Mutex<crate::core::witness::Witnesses>,
    /// The org's logs: its nodes witness org records with their node keys.
    org_witness: Mutex<crate::core::witness::Witnesses>,
    /// Held by the one caller of [`Node::checkpoint_now`] signing now.
    checkpointing: Mutex<()>,
    /// Set by callers of [`Node::checkpoint_now`] that have news for it.
    checkpoint_wanted: std::sync::atomic::AtomicBool,
    /// The keys this node witnesses with.
    witness_keys: std::collections::HashMap<packfed_protocol::PublicKey, KeyPair>,
    /// Records dated ahead of our clock, until their time comes.
    held: Mutex<witness::Held>,
    /// Where gossip, provider records and mirror requests go, once the
    /// network runs (absent in offline tools and tests: dropped).
    outbox: OnceLock<mpsc::UnboundedSender<Outbound>>,
    /// `[net] max_upload_rate`, shared by both transports.
    pub upload_limit: Option<Arc<crate::upload_limit::UploadLimit>>,
    /// Blobs being fetched piece by piece (served while they arrive).
    partials: Mutex<HashMap<ContentHash, Arc<crate::swarm::Partial>>>,
    /// One fetch per blob at a time.
    fetch_locks: Mutex<HashMap<ContentHash, Arc<tokio::sync::Mutex<()>>>>,
    /// Providers that served corrupted bytes, and until when they are
    /// skipped.
    penalized: Mutex<HashMap<libp2p::PeerId, std::time::Instant>>,
}

/// The store as the core reads it.
/// How long a provider that served corrupted bytes is skipped.
pub const PENALTY: std::time::Duration = std::time::Duration::from_secs(600);

pub struct StoreView<'a> {
    store: &'a Store,
    fed: &'a FederationId,
    witness: &'a Mutex<crate::core::witness::Witnesses>,
    org_witness: &'a Mutex<crate::core::witness::Witnesses>,
}

impl View for StoreView<'_> {
    fn has_record(&self, id: &RecordId) -> Result<bool, StoreError> {
        self.store.has_record(id)
    }
    fn namespace_owner(&self, ns: &str) -> Result<Option<packfed_protocol::PublicKey>, StoreError> {
        Ok(self.store.namespace_owner(ns)?.map(|o| o.key()))
    }
    fn release(&self, name: &str, version: &str) -> Result<Option<ReleaseEntry>, StoreError> {
        self.store.release(self.fed, name, version)
    }
    fn release_record(&self, name: &str, version: &str) -> Result<Option<pb::Release>, StoreError> {
        self.store.release_unverified(name, version)
    }
    fn attestations_of(&self, name: &str, version: &str) -> Result<Vec<AttestationEntry>, StoreError> {
        self.store.attestations_of(name, version)
    }
    fn attestation_count(&self, name: &str, version: &str, at_most: usize) -> Result<usize, StoreError> {
        self.store.attestation_count(name, version, at_most)
    }
    fn status(&self, release: &RecordId) -> Result<Option<ReleaseStatus>, StoreError> {
        self.store.status(release)
    }
    fn pack_is_org(&self, name: &str) -> Result<Option<bool>, StoreError> {
        self.store.pack_is_org(name)
    }
    fn witnessed(&self, id: &RecordId) -> Option<u64> {
        let public = self.witness.lock().unwrap_or_else(|p| p.into_inner()).witnessed(id);
        public.or_else(|| self.org_witness.lock().unwrap_or_else(|p| p.into_inner()).witnessed(id))
    }
}

/// A release as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ReleaseView {
    pub id: String,
    pub name: String,
    pub version: String,
    pub description: String,
    pub license: String,
    pub keywords: Vec<String>,
    pub category: String,
    pub hash: ContentHash,
    pub size: u64,
    pub publisher: String,
    pub record_id: RecordId,
    pub visibility: &'static str,
    pub yanked: bool,
    pub status: &'static str,
    /// What nodes that recomputed the quality found, when it differs from the claim.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub quality_disputes: Vec<String>,
    pub reasons: Vec<String>,
    pub quality: QualityView,
    pub dependencies: Vec<DependencyView>,
    pub published_at_ms: u64,
    /// Installs and failed installs across the federation (learning aggregates).
    pub installs: u64,
    pub failed_installs: u64,
    /// The signed release, hex: clients verify it themselves.
    pub envelope: String,
    /// The namespace owner's deprecation covering this version.
    pub deprecated: Option<DeprecationView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeprecationView {
    pub message: String,
    /// A pack to use instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replacement: Option<String>,
    /// The versions it covers.
    pub requirement: String,
}

impl DeprecationView {
    pub fn of(d: pb::Deprecation) -> DeprecationView {
        DeprecationView {
            message: d.message,
            replacement: (!d.replacement.is_empty()).then_some(d.replacement),
            requirement: d.requirement,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct QualityView {
    pub score: u32,
    pub tier: String,
    pub guards: Vec<GuardView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GuardView {
    pub name: String,
    pub weight: u32,
    pub passed: bool,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct DependencyView {
    pub name: String,
    pub requirement: String,
}

pub fn quality_view(q: Option<&pb::QualityReport>) -> QualityView {
    let q = q.cloned().unwrap_or_default();
    QualityView {
        score: q.score,
        tier: q.tier,
        guards: q
            .guards
            .into_iter()
            .map(|g| GuardView {
                name: g.name,
                weight: g.weight,
                passed: g.passed,
                detail: g.detail,
            })
            .collect(),
    }
}

impl ReleaseView {
    /// The view with the node's verdict on it under the policy in force.
    pub fn judged(node: &Node, e: &ReleaseEntry) -> ReleaseView {
        let mut v = ReleaseView::from_entry(e);
        if let Some(other) = e.conflict {
            v.status = "quarantined";
            v.reasons = vec![format!(
                "equivocation: the owner of {} signed two archives for version {} (records {} and {}); neither may be installed",
                e.release.name.split('/').next().unwrap_or_default(),
                e.release.version,
                e.record_id,
                other
            )];
            return v;
        }
        match node.status_of(e) {
            Ok(s) if s.accepted() => {}
            Ok(s) => {
                v.status = "quarantined";
                v.reasons = s.reasons;
            }
            Err(err) => {
                v.status = "quarantined";
                v.reasons = vec![format!("cannot evaluate: {err}")];
            }
        }
        (v.installs, v.failed_installs) = node.usage_of(&v.hash);
        v.deprecated = node
            .deprecation(&e.release.name, &e.release.version)
            .ok()
            .flatten()
            .map(DeprecationView::of);
        let claimed = v.quality.score;
        if let Ok(atts) = node.attestation_entries(&e.release) {
            v.quality_disputes = atts
                .iter()
                .filter(|a| a.kind == "quality" && a.score != claimed)
                .map(|a| {
                    format!(
                        "{} recomputed quality {} (publisher claims {claimed})",
                        &packfed_protocol::PublicKey(a.attester).to_hex()[..16],
                        a.score
                    )
                })
                .collect();
        }
        v
    }

    /// The view of a release's own content, without a verdict.
    pub fn from_entry(e: &ReleaseEntry) -> ReleaseView {
        let r = &e.release;
        ReleaseView {
            id: format!("{}@{}", r.name, r.version),
            name: r.name.clone(),
            version: r.version.clone(),
            description: r.description.clone(),
            license: r.license.clone(),
            keywords: r.keywords.clone(),
            category: r.category.clone(),
            hash: ContentHash::from_slice(&r.content_hash).unwrap_or(ContentHash([0; 32])),
            size: r.size,
            publisher: e.publisher.to_hex(),
            record_id: e.record_id,
            visibility: Visibility::from_pb(r.visibility).as_str(),
            yanked: e.yanked,
            status: "accepted",
            reasons: Vec::new(),
            quality_disputes: Vec::new(),
            quality: quality_view(r.quality.as_ref()),
            dependencies: r
                .dependencies
                .iter()
                .map(|d| DependencyView {
                    name: d.name.clone(),
                    requirement: d.requirement.clone(),
                })
                .collect(),
            published_at_ms: r.published_at_ms,
            installs: 0,
            failed_installs: 0,
            envelope: hex::encode(e.envelope.encoded()),
            deprecated: None,
        }
    }
}

impl Node {
    /// Opens the node in an initialized home.
    pub fn open(home: Home) -> Result<Node> {
        home.require_initialized()?;
        let config = home.load_config()?;
        let genesis_bytes =
            std::fs::read(home.genesis()).with_context(|| format!("reading {}", home.genesis().display()))?;
        let genesis = Genesis::parse(&genesis_bytes)?;
        let key = keys::node_key(&home)?;
        let peer_id = keys::peer_id(&key)?.to_string();
        let store = Store::open(&home.store())?;
        let (replica, replica_file, public_loaded) = load_replica(&store, Channel::Public)?;
        let (org_replica, org_replica_file, org_loaded) = load_replica(&store, Channel::Org)?;
        let local_policy = load_local_policy(&home, config.policy.local.as_deref())?;
        let learn = Learning::new(config.learn.round.millis(), config.learn.enabled);
        let set = crate::core::witness::WitnessSet::new(
            &genesis.members,
            &genesis.parameters.witness_roles,
            genesis.parameters.witness_quorum,
        );
        let witness_keys = witness::own_witness_keys(keys::list_keys(&home)?, config.witness.keys.as_deref(), &set);
        let org_set = witness::org_witness_set(&key, &config.org.peers);
        let upload_limit = crate::upload_limit::UploadLimit::new(config.net.max_upload_rate).map(Arc::new);
        let node = Node {
            witness: Mutex::new(crate::core::witness::Witnesses::new(set, witness_keys.keys().copied())),
            org_witness: Mutex::new(crate::core::witness::Witnesses::for_channel(
                Channel::Org,
                org_set,
                [key.public()],
            )),
            witness_keys,
            held: Mutex::new(Default::default()),
            gov: Mutex::new(Governance::new(genesis.clone(), local_policy)),
            gov_changed: tokio::sync::Notify::new(),
            checkpointing: Mutex::new(()),
            checkpoint_wanted: Default::default(),
            learn: Mutex::new(learn),
            home,
            config,
            genesis,
            store,
            key,
            peer_id,
            replica: Mutex::new(replica),
            org_replica: Mutex::new(org_replica),
            replica_file: Mutex::new(replica_file),
            org_replica_file: Mutex::new(org_replica_file),
            stats: Default::default(),
            bulk: Default::default(),
            metrics: Default::default(),
            iroh: Default::default(),
            outbox: Default::default(),
            upload_limit,
            partials: Default::default(),
            fetch_locks: Default::default(),
            penalized: Default::default(),
        };
        node.load_learning();
        node.load_governance()?;
        node.load_witnesses()?;
        node.apply_governance(crate::packing::now_ms());
        // The store is the authority and the documents are derived from it:
        // whatever a crash kept out of them goes back before any peer syncs.
        node.reconcile_documents(public_loaded, org_loaded)?;
        Ok(node)
    }

    /// The receiving end of what the node hands to the network; once.
    pub fn connect_outbox(&self) -> Option<mpsc::UnboundedReceiver<Outbound>> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.outbox.set(tx).ok().map(|_| rx)
    }

    fn send_out(&self, o: Outbound) {
        if let Some(tx) = self.outbox.get() {
            let _ = tx.send(o);
        }
    }

    /// The store as the core reads it.
    pub fn view(&self) -> StoreView<'_> {
        StoreView {
            store: &self.store,
            fed: &self.genesis.id,
            witness: &self.witness,
            org_witness: &self.org_witness,
        }
    }

    /// Whether this node fetches every pack it accepts.
    pub fn mirrors(&self) -> bool {
        self.config.node.role == crate::config::NodeRole::Regional
    }

    /// Whether `key` is a federation member in the membership in force.
    pub fn is_member(&self, key: &packfed_protocol::PublicKey) -> bool {
        self.policy().members.iter().any(|m| m.public_key == *key)
    }

    /// The member key this node signs its learning summaries with: a
    /// witness key it holds, else any member key in its home. None: it
    /// learns from the federation's model but does not train it.
    pub(crate) fn learning_key(&self) -> Option<KeyPair> {
        let mut witness: Vec<&KeyPair> = self.witness_keys.values().collect();
        witness.sort_by_key(|k| k.public().0);
        if let Some(k) = witness.first() {
            return Some((*k).clone());
        }
        crate::keys::list_keys(&self.home)
            .ok()?
            .into_iter()
            .map(|(_, k)| k)
            .find(|k| self.is_member(&k.public()))
    }

    /// How the core judges releases under `policy` on this node.
    pub(crate) fn judge<'a>(&self, policy: &'a crate::core::verdict::PolicyInForce) -> crate::core::verdict::Judge<'a> {
        crate::core::verdict::Judge {
            policy,
            mirror: self.mirrors(),
            max_pack_bytes: self.config.node.max_pack_bytes(),
        }
    }

    fn gov_lock(&self) -> MutexGuard<'_, Governance> {
        self.gov.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn learn_lock(&self) -> MutexGuard<'_, Learning> {
        self.learn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Carries out what the core decided, in order.
    pub(crate) fn apply(&self, effects: Vec<Effect>) -> Result<(), StoreError> {
        for e in effects {
            match e {
                Effect::Store(w) => self.write(*w)?,
                Effect::Flush => self.store.flush()?,
                Effect::Replicate(channel, env) => self.replicate_to(channel, &env.id(), env.encoded()),
                Effect::Gossip(topic, bytes) => self.send_out(Outbound::Gossip(topic, bytes)),
                Effect::SetStatus(id, status) => {
                    self.store.set_status(&id, &status)?;
                }
                Effect::Reevaluate(subjects) => {
                    for (name, version) in subjects {
                        let fx = self.reevaluation(&name, &version)?;
                        self.apply(fx)?;
                    }
                }
                Effect::ReevaluateStale => match self.reevaluate_stale() {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(releases = n, "re-evaluated releases"),
                    Err(e) => tracing::warn!(error = %e, "re-evaluating releases failed"),
                },
                Effect::Fetch(hash, size) => self.send_out(Outbound::Mirror(hash, size)),
                Effect::OwnerMayChange(ns) => self.owner_may_change(&ns)?,
                Effect::Forget { doc, witness, seq, id } => self.store.remove_checkpoint(doc, &witness, seq, &id)?,
                Effect::Reassign(ns, owner) => {
                    if self.store.reassign_namespace(&ns, &owner)? {
                        tracing::info!(namespace = %ns, %owner, "namespace reassigned by governance");
                        self.store.flush()?;
                    }
                }
                Effect::GovernanceChanged => self.gov_changed.notify_one(),
                Effect::MembersChanged => self.store.changed(Change::Members),
                Effect::WakeAt(_) => {}
            }
        }
        Ok(())
    }

    /// Stores a record; a public one is offered to this node's checkpoint
    /// logs, and claims and governance records are tracked for what their
    /// witnessed time decides.
    fn write(&self, w: Write) -> Result<(), StoreError> {
        match w {
            Write::Claim(v) => {
                self.store.insert_claim(&v)?;
                let ns = &v.record().namespace;
                let fx = self.witness_lock().track_claim(v.id(), ns, v.signer());
                self.note_witnessable(v.id(), Some(ns));
                self.apply(fx)
            }
            Write::Release(v, hash) => {
                self.store.insert_release_record(&v, &hash)?;
                if v.record().visibility == pb::Visibility::Org as i32 {
                    self.org_witness_lock().note_admitted(v.id(), None);
                } else {
                    self.note_witnessable(v.id(), None);
                }
                Ok(())
            }
            Write::Yank(v) => {
                self.store.insert_yank(&v)?;
                match crate::core::admit::yank_channel(&self.view(), v.record())? {
                    Channel::Public => self.note_witnessable(v.id(), None),
                    Channel::Org => self.org_witness_lock().note_admitted(v.id(), None),
                }
                Ok(())
            }
            Write::Deprecation(v) => {
                self.store.insert_deprecation(&v)?;
                match crate::core::admit::pack_channel(&self.view(), &v.record().name)? {
                    Channel::Public => self.note_witnessable(v.id(), None),
                    Channel::Org => self.org_witness_lock().note_admitted(v.id(), None),
                }
                Ok(())
            }
            Write::Attestations(items) => {
                let stored: Vec<_> = items.iter().map(|(a, e, _)| (a, e.clone())).collect();
                self.store.insert_attestations(&stored)?;
                for (a, _, channel) in &items {
                    let r = a.record();
                    let mut w = match channel {
                        Channel::Public => self.witness_lock(),
                        Channel::Org => self.org_witness_lock(),
                    };
                    w.track_attestation(a.id(), &r.name, &r.version);
                    w.note_admitted(a.id(), None);
                }
                Ok(())
            }
            Write::Gov(env) => {
                self.store.insert_gov(&env.id(), env.encoded())?;
                self.witness_lock().track_gov(env.id());
                self.note_witnessable(env.id(), None);
                Ok(())
            }
            Write::Checkpoint(v) => self.store.insert_checkpoint(&v).map(drop),
        }
    }

    /// Signs this node's checkpoints now if it witnesses and has news (a
    /// local write need not wait for the timer).
    ///
    /// Concurrent local writes share checkpoints: while one caller signs,
    /// the others leave their news to it and return, and it goes round
    /// again for news that arrived meanwhile. Each publish through the API
    /// signed, stored and flushed a checkpoint of its own, a second flush
    /// per publish that the other publishers queued behind.
    pub fn checkpoint_now(&self) {
        use std::sync::TryLockError;
        use std::sync::atomic::Ordering;
        self.checkpoint_wanted.store(true, Ordering::SeqCst);
        loop {
            let leader = match self.checkpointing.try_lock() {
                Ok(guard) => guard,
                Err(TryLockError::Poisoned(p)) => p.into_inner(),
                // The signer checks the flag after it lets go of the lock.
                Err(TryLockError::WouldBlock) => return,
            };
            if !self.checkpoint_wanted.swap(false, Ordering::SeqCst) {
                return;
            }
            if let Err(e) = self.checkpoint_tick(crate::packing::now_ms()) {
                tracing::warn!(error = %e, "signing a checkpoint failed");
            }
            drop(leader);
            if !self.checkpoint_wanted.load(Ordering::SeqCst) {
                return;
            }
        }
    }

    pub fn federation(&self) -> &FederationId {
        &self.genesis.id
    }

    /// Versions of `name`, newest first.
    pub fn versions(&self, name: &str) -> Result<Vec<ReleaseEntry>, StoreError> {
        let mut v = self.store.releases_of(self.federation(), name)?;
        v.sort_by_key(|e| std::cmp::Reverse(version_of(e)));
        Ok(v)
    }

    /// `name@version`, or the newest non-yanked version when none is given.
    pub fn info(&self, name: &str, version: Option<&str>) -> Result<Option<ReleaseEntry>, StoreError> {
        match version {
            Some(v) => self.store.release(self.federation(), name, v),
            None => {
                let versions = self.versions(name)?;
                let newest = versions.iter().find(|e| !e.yanked).or(versions.first()).cloned();
                Ok(newest)
            }
        }
    }

    /// Applies a signed deprecation: only the namespace owner may deprecate.
    pub fn deprecate(&self, envelope: &Signed) -> Result<String, DeprecateError> {
        let (what, effects) = crate::core::admit::local_deprecation(&self.view(), self.federation(), envelope)?;
        self.apply(effects)?;
        self.checkpoint_now();
        Ok(what)
    }

    /// The owner's deprecation covering `name@version`, if any.
    pub fn deprecation(&self, name: &str, version: &str) -> Result<Option<pb::Deprecation>, StoreError> {
        match semver::Version::parse(version) {
            Ok(v) => self.store.deprecation(name, &v),
            Err(_) => Ok(None),
        }
    }

    /// Applies a signed yank: only the namespace owner may yank.
    pub fn yank(&self, envelope: &Signed) -> Result<PackId, YankError> {
        let (id, effects) = crate::core::admit::local_yank(&self.view(), self.federation(), envelope)?;
        self.apply(effects)?;
        self.checkpoint_now();
        Ok(id)
    }
}

impl Node {
    /// Whether `peer` shares this node's org catalog.
    pub fn is_org_peer(&self, peer: &libp2p::PeerId) -> bool {
        self.config.org.peers.iter().any(|p| p == &peer.to_string())
    }

    /// The blob `hash` as far as it has arrived, if a fetch is under way.
    pub fn partial(&self, hash: &ContentHash) -> Option<Arc<crate::swarm::Partial>> {
        self.partials.lock().ok()?.get(hash).cloned()
    }

    /// Opens (or resumes) a partial blob and starts serving what it holds.
    pub fn open_partial(&self, hash: ContentHash, size: u64) -> std::io::Result<Arc<crate::swarm::Partial>> {
        let mut partials = self.partials.lock().map_err(|_| std::io::Error::other("poisoned"))?;
        if let Some(p) = partials.get(&hash) {
            return Ok(p.clone());
        }
        let p = Arc::new(crate::swarm::Partial::open(&self.store.partial_dir(), hash, size)?);
        partials.insert(hash, p.clone());
        Ok(p)
    }

    /// Stops serving a partial blob (it was adopted, or the fetch stopped).
    pub fn close_partial(&self, hash: &ContentHash) {
        if let Ok(mut p) = self.partials.lock() {
            p.remove(hash);
        }
    }

    /// The lock that keeps two fetches of one blob from running at once.
    pub fn fetch_lock(&self, hash: ContentHash) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.fetch_locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.retain(|_, l| Arc::strong_count(l) > 1);
        locks.entry(hash).or_default().clone()
    }

    /// Skips `peer` as a blob provider for [`PENALTY`].
    pub fn penalize(&self, peer: libp2p::PeerId) {
        if let Ok(mut p) = self.penalized.lock() {
            p.insert(peer, std::time::Instant::now() + PENALTY);
        }
        crate::metrics::Metrics::add(&self.metrics.providers_penalized, 1);
    }

    pub fn is_penalized(&self, peer: &libp2p::PeerId) -> bool {
        let Ok(mut p) = self.penalized.lock() else {
            return false;
        };
        let now = std::time::Instant::now();
        p.retain(|_, until| *until > now);
        p.contains_key(peer)
    }

    /// Whether this node may serve `hash` to `peer`: public releases to
    /// anyone in the federation, org releases only to the org allow-list.
    pub fn may_serve(&self, hash: &ContentHash, peer: &libp2p::PeerId) -> bool {
        let (any, public) = self.servable(hash);
        public || (any && self.is_org_peer(peer))
    }

    /// Whether this node may say in public (the DHT) that it holds `hash`:
    /// an accepted public release names it. Org archives are never provided.
    pub fn is_public_blob(&self, hash: &ContentHash) -> bool {
        self.servable(hash).1
    }

    /// Whether accepted releases this node shows name `hash`: (any, a
    /// public one).
    fn servable(&self, hash: &ContentHash) -> (bool, bool) {
        let Ok(ids) = self.store.releases_with_hash(hash) else {
            return (false, false);
        };
        let mut any = false;
        for id in ids {
            let Ok(Some(env)) = self.store.record(&id) else {
                continue;
            };
            let Ok(v) = env.verify::<pb::Release>(self.federation()) else {
                continue;
            };
            // Quarantined releases are kept but not served.
            let r = v.record();
            match self.store.release(self.federation(), &r.name, &r.version) {
                Ok(Some(entry)) if entry.record_id == id && self.is_accepted(&entry) => {}
                _ => continue,
            }
            any = true;
            if Visibility::from_pb(v.record().visibility) == Visibility::Public {
                return (true, true);
            }
        }
        (any, false)
    }

    /// The signed size of a blob, from a visible release that names it
    /// ([`Node::known_sizes`]); `wanted` wins when one of them says it.
    pub fn known_size(&self, hash: &ContentHash, wanted: Option<u64>) -> Option<u64> {
        let sizes = self.known_sizes(hash);
        wanted.filter(|w| sizes.contains(w)).or(sizes.first().copied())
    }

    /// Sizes that visible releases (each signed by its namespace owner)
    /// give a blob. Anyone can sign a release naming someone else's hash
    /// with a wrong size in their own namespace, so a caller that knows
    /// which release it wants passes that release's size.
    pub fn known_sizes(&self, hash: &ContentHash) -> Vec<u64> {
        let Ok(ids) = self.store.releases_with_hash(hash) else {
            return Vec::new();
        };
        let mut sizes: Vec<u64> = ids
            .iter()
            .filter_map(|id| {
                let env = self.store.record(id).ok()??;
                let v = env.verify::<pb::Release>(self.federation()).ok()?;
                let r = v.record();
                let shown = self.store.release(self.federation(), &r.name, &r.version).ok()??;
                (shown.record_id == *id).then_some(r.size)
            })
            .collect();
        sizes.dedup();
        sizes
    }

    /// Replicates and gossips what a local publish stored (the release and
    /// claim as [`crate::publish::verify_release`] checked them).
    pub fn announce_publish(&self, verified: &crate::publish::VerifiedPublish) {
        let (release, _, claim) = verified;
        let mut envs = vec![release.envelope()];
        if let Some(v) = claim
            && self.store.has_record(&v.id()).unwrap_or(false)
        {
            envs.insert(0, v.envelope());
            // The store took the claim directly (under its publish lock):
            // track it here, so its witnessed time can make it the owner.
            let fx = self
                .witness_lock()
                .track_claim(v.id(), &v.record().namespace, v.signer());
            self.note_witnessable(v.id(), Some(&v.record().namespace));
            if let Err(e) = self.apply(fx) {
                tracing::warn!(error = %e, "putting a namespace owner in force failed");
            }
        }
        let org = Visibility::from_pb(release.record().visibility) == Visibility::Org;
        if !org {
            self.note_witnessable(release.id(), None);
        } else {
            self.org_witness_lock().note_admitted(release.id(), None);
        }
        for env in envs {
            // Org releases never enter the public document or public gossip.
            if org && env.domain() == Some(packfed_protocol::Domain::Release) {
                self.replicate_to(Channel::Org, &env.id(), env.encoded());
                continue;
            }
            self.replicate_to(Channel::Public, &env.id(), env.encoded());
            self.send_out(Outbound::Gossip(Topic::Records, env.encoded().to_vec()));
        }
        // The DHT is public: an org archive's hash never goes there.
        if let Ok(h) = ContentHash::from_slice(&release.record().content_hash)
            && !org
        {
            self.send_out(Outbound::Provide(h));
        }
        self.checkpoint_now();
    }
}

fn version_of(e: &ReleaseEntry) -> semver::Version {
    semver::Version::parse(&e.release.version).unwrap_or(semver::Version::new(0, 0, 0))
}

pub type SharedNode = Arc<Node>;
