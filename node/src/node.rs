//! The running node's state and the operations the API exposes. The HTTP
//! layer (`api`) only translates; everything a node does lives here or in the
//! modules it calls.

use std::sync::Arc;

use anyhow::{Context, Result};
use packfed_governance::Genesis;
use packfed_protocol::manifest::Visibility;
use packfed_protocol::records::PackId;
use packfed_protocol::{ContentHash, FederationId, KeyPair, RecordId, Signed, SignedError, pb};
use serde::Serialize;

use crate::config::{Config, Home};
use crate::keys;
use crate::store::{ReleaseEntry, Store, StoreError};

/// Everything a running node holds.
pub struct Node {
    pub home: Home,
    pub config: Config,
    pub genesis: Genesis,
    pub store: Store,
    pub key: KeyPair,
    pub peer_id: String,
    /// The replicated public registry document.
    pub replica: std::sync::Mutex<crate::registry::Replica>,
    /// The org registry document, synced only with org peers.
    pub org_replica: std::sync::Mutex<crate::registry::Replica>,
    /// Where each document is saved.
    pub(crate) replica_file: std::sync::Mutex<crate::docfile::DocFile>,
    pub(crate) org_replica_file: std::sync::Mutex<crate::docfile::DocFile>,
    /// Counters of what peers sent.
    pub stats: crate::ingest::IngestStats,
    /// The network, once started (absent in offline tools and tests).
    pub net: std::sync::OnceLock<crate::net::NetHandle>,
    /// The iroh endpoint that moves pack bytes, once started.
    pub iroh: std::sync::OnceLock<iroh::Endpoint>,
    /// Restrictions this node adds to the federation policy (`[policy] local`).
    pub local_policy: Option<crate::trust::RuleSet>,
    /// The acceptance policy in force (federation + local).
    pub policy: std::sync::RwLock<Arc<crate::trust::PolicyInForce>>,
    /// Governance records held, and the membership in force.
    pub gov: std::sync::Mutex<crate::governance::GovBook>,
    pub members: std::sync::RwLock<Arc<Vec<packfed_governance::Member>>>,
    /// Signalled when a governance record arrives.
    pub gov_changed: tokio::sync::Notify,
    /// The search index, once the daemon started it.
    pub search: std::sync::OnceLock<Arc<crate::search::SearchService>>,
    /// Federated learning: the model in force and this round's summaries.
    pub learn: std::sync::Mutex<crate::learn::node::LearnBook>,
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
        }
    }
}

/// Why a yank was refused.
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
        let (replica, replica_file, public_loaded) =
            crate::ingest::load_replica(&store, crate::ingest::Channel::Public)?;
        let (org_replica, org_replica_file, org_loaded) =
            crate::ingest::load_replica(&store, crate::ingest::Channel::Org)?;
        let local_policy = crate::trust::load_local_policy(&home, config.policy.local.as_deref())?;
        let policy = crate::trust::PolicyInForce::new(0, None, genesis.policy.accept.clone(), local_policy.clone());
        let node = Node {
            gov: Default::default(),
            members: std::sync::RwLock::new(Arc::new(genesis.members.clone())),
            gov_changed: tokio::sync::Notify::new(),
            policy: std::sync::RwLock::new(Arc::new(policy)),
            local_policy,
            home,
            config,
            genesis,
            store,
            key,
            peer_id,
            replica: std::sync::Mutex::new(replica),
            org_replica: std::sync::Mutex::new(org_replica),
            replica_file: std::sync::Mutex::new(replica_file),
            org_replica_file: std::sync::Mutex::new(org_replica_file),
            stats: Default::default(),
            net: Default::default(),
            iroh: Default::default(),
            search: Default::default(),
            learn: Default::default(),
        };
        node.load_governance()?;
        // The store is the authority and the documents are derived from it:
        // whatever a crash kept out of them goes back before any peer syncs.
        node.reconcile_documents(public_loaded, org_loaded)?;
        Ok(node)
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

    /// Applies a signed yank: only the namespace owner may yank.
    pub fn yank(&self, envelope: &Signed) -> Result<PackId, YankError> {
        let yank = envelope.verify::<pb::Yank>(self.federation())?;
        let y = yank.record();
        let id: PackId = format!("{}@{}", y.name, y.version)
            .parse()
            .map_err(|e: packfed_protocol::records::RecordError| YankError::Malformed(e.to_string()))?;
        let entry = self
            .store
            .release(self.federation(), &y.name, &y.version)?
            .ok_or_else(|| YankError::NotFound(id.to_string()))?;
        if entry.release.content_hash != y.content_hash {
            return Err(YankError::HashMismatch {
                id: id.to_string(),
                claimed: hex::encode(&y.content_hash),
                actual: hex::encode(&entry.release.content_hash),
            });
        }
        let ns = id.name.namespace();
        let owner = self.store.namespace_owner(ns)?.map(|o| o.key());
        if owner != Some(yank.signer()) {
            return Err(YankError::NotOwner {
                namespace: ns.to_string(),
                owner: owner.map(|o| o.to_hex()).unwrap_or_else(|| "nobody".into()),
            });
        }
        self.store.insert_yank(&yank)?;
        self.replicate(&yank.id(), yank.envelope().encoded());
        // Durable before anyone hears of it: a crash cannot take back what
        // a peer already holds.
        self.store.flush()?;
        if let Some(net) = self.net.get() {
            net.try_send(crate::net::Command::Gossip(yank.envelope().encoded().to_vec()));
        }
        Ok(id)
    }
}

impl Node {
    /// Whether `peer` shares this node's org catalog.
    pub fn is_org_peer(&self, peer: &libp2p::PeerId) -> bool {
        self.config.org.peers.iter().any(|p| p == &peer.to_string())
    }

    /// Whether this node may serve `hash` to `peer`: public releases to
    /// anyone in the federation, org releases only to the org allow-list.
    pub fn may_serve(&self, hash: &ContentHash, peer: &libp2p::PeerId) -> bool {
        let Ok(ids) = self.store.releases_with_hash(hash) else {
            return false;
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
                return true;
            }
        }
        any && self.is_org_peer(peer)
    }

    /// The signed size of a blob some stored release names.
    pub fn known_size(&self, hash: &ContentHash) -> Option<u64> {
        let ids = self.store.releases_with_hash(hash).ok()?;
        ids.iter().find_map(|id| {
            let env = self.store.record(id).ok()??;
            env.verify::<pb::Release>(self.federation())
                .ok()
                .map(|v| v.record().size)
        })
    }

    /// Replicates and gossips what a local publish stored.
    pub fn announce_publish(&self, req: &crate::publish::PublishRequest) {
        let mut envs = vec![&req.release];
        if let Some(c) = &req.claim
            && self.store.has_record(&c.id()).unwrap_or(false)
        {
            envs.insert(0, c);
        }
        let org = req
            .release
            .verify::<pb::Release>(self.federation())
            .map(|v| Visibility::from_pb(v.record().visibility) == Visibility::Org)
            .unwrap_or(false);
        for env in envs {
            // Org releases never enter the public document or public gossip.
            if org && env.domain() == Some(packfed_protocol::Domain::Release) {
                self.replicate_to(crate::ingest::Channel::Org, &env.id(), env.encoded());
                continue;
            }
            self.replicate(&env.id(), env.encoded());
            if let Some(net) = self.net.get() {
                net.try_send(crate::net::Command::Gossip(env.encoded().to_vec()));
            }
        }
        if let (Some(net), Ok(v)) = (self.net.get(), req.release.verify::<pb::Release>(self.federation()))
            && let Ok(h) = ContentHash::from_slice(&v.record().content_hash)
        {
            net.try_send(crate::net::Command::Provide(h));
        }
    }

    /// Test hook (PACKFED_TEST_CORRUPT_SERVING=1): serve corrupted bytes.
    pub fn corrupt_serving(&self) -> bool {
        std::env::var_os("PACKFED_TEST_CORRUPT_SERVING").is_some()
    }
}

fn version_of(e: &ReleaseEntry) -> semver::Version {
    semver::Version::parse(&e.release.version).unwrap_or(semver::Version::new(0, 0, 0))
}

pub type SharedNode = Arc<Node>;
