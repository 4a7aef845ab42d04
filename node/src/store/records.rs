//! Signed records and the indexes over them. Records are stored only after
//! the caller verified them; the indexes are written in one transaction with
//! the record so a crash never leaves one without the other.

use packfed_protocol::records::PackName;
use packfed_protocol::{ContentHash, FederationId, PublicKey, RecordId, Signed, Verified, pb};
use serde::{Deserialize, Serialize};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionalTree};

use super::{Store, StoreError};

/// Who owns a namespace, and by which claim.
///
/// Concurrent claims on two nodes resolve by one deterministic rule, the same
/// everywhere: the claim with the earliest `claimed_at_ms` wins, ties broken
/// by the smaller claim record id. Releases are stored whoever signed them;
/// only those signed by the winning key are visible, so every node that holds
/// the same records shows the same owner and the same packs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceOwner {
    pub owner: [u8; 32],
    pub claim: [u8; 32],
    pub claimed_at_ms: u64,
}

impl NamespaceOwner {
    pub fn key(&self) -> PublicKey {
        PublicKey(self.owner)
    }

    /// The deterministic order of claims: earlier wins, then smaller id.
    fn beats(&self, other: &NamespaceOwner) -> bool {
        (self.claimed_at_ms, self.claim) < (other.claimed_at_ms, other.claim)
    }
}

/// A stored release with what the node knows about it.
#[derive(Debug, Clone)]
pub struct ReleaseEntry {
    pub record_id: RecordId,
    pub envelope: Signed,
    pub release: pb::Release,
    pub publisher: PublicKey,
    pub yanked: bool,
}

/// A release record as the search catalog reads it: decoded without checking
/// the signature again (it was checked before it was stored), with whether
/// it is the visible record of its version and whether it is yanked.
#[derive(Debug, Clone)]
pub struct PackageRow {
    pub record_id: RecordId,
    pub envelope: Signed,
    pub release: pb::Release,
    pub visible: bool,
    pub yanked: bool,
}

/// Outcome of [`Store::publish_local`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InsertRelease {
    Inserted,
    /// The same record was already stored (an idempotent retry).
    AlreadyPresent,
    /// name@version is taken by a different record.
    VersionTaken(RecordId),
    /// The namespace belongs to another key.
    NamespaceOwned(PublicKey),
    /// The namespace is unclaimed and no claim came with the release.
    NeedsClaim,
}

fn release_key(name: &str, version: &str, rid: &RecordId) -> Vec<u8> {
    let mut k = Vec::with_capacity(name.len() + version.len() + 34);
    k.extend_from_slice(name.as_bytes());
    k.push(0);
    k.extend_from_slice(version.as_bytes());
    k.push(0);
    k.extend_from_slice(rid.as_bytes());
    k
}

fn yank_key(name: &str, version: &str, hash: &[u8]) -> Vec<u8> {
    let mut k = release_key(name, version, &RecordId([0; 32]));
    k.truncate(k.len() - 32);
    k.extend_from_slice(hash);
    k
}

fn abort(e: StoreError) -> ConflictableTransactionError<StoreError> {
    ConflictableTransactionError::Abort(e)
}

fn decode_owner(ns: &str, v: &[u8]) -> Result<NamespaceOwner, StoreError> {
    postcard::from_bytes(v).map_err(|e| StoreError::Corrupt(format!("namespace {ns}: {e}")))
}

fn owner_in(
    tx: &TransactionalTree,
    ns: &str,
) -> Result<Option<NamespaceOwner>, ConflictableTransactionError<StoreError>> {
    match tx.get(ns.as_bytes())? {
        None => Ok(None),
        Some(v) => decode_owner(ns, &v).map(Some).map_err(abort),
    }
}

/// The package name a release index key starts with.
fn name_of(key: &[u8]) -> String {
    let end = key.iter().position(|b| *b == 0).unwrap_or(key.len());
    String::from_utf8_lossy(&key[..end]).into_owned()
}

fn rid_of(key: &[u8]) -> Result<RecordId, StoreError> {
    if key.len() < 32 {
        return Err(StoreError::Corrupt("short release index key".into()));
    }
    RecordId::from_slice(&key[key.len() - 32..]).map_err(|e| StoreError::Corrupt(e.to_string()))
}

impl Store {
    /// Stores a verified namespace claim; returns true if it became (or
    /// already was) the winning claim.
    pub fn insert_claim(&self, claim: &Verified<pb::NamespaceClaim>) -> Result<bool, StoreError> {
        let ns = claim.record().namespace.clone();
        let candidate = NamespaceOwner {
            owner: claim.signer().0,
            claim: claim.id().0,
            claimed_at_ms: claim.record().claimed_at_ms,
        };
        let encoded = postcard::to_stdvec(&candidate).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let won =
            (&self.records, &self.namespaces, &self.doc_pending).transaction(|(records, namespaces, pending)| {
                records.insert(claim.id().as_bytes(), claim.envelope().encoded())?;
                pending.insert(claim.id().as_bytes(), &[])?;
                match owner_in(namespaces, &ns)? {
                    Some(current) if current == candidate => Ok(true),
                    Some(current) if !candidate.beats(&current) => Ok(false),
                    _ => {
                        namespaces.insert(ns.as_bytes(), encoded.as_slice())?;
                        Ok(true)
                    }
                }
            })?;
        if won {
            self.changed(super::Change::Namespace(ns));
        }
        Ok(won)
    }

    /// Stores a verified release record and its indexes, whoever signed it:
    /// reads show only releases signed by the namespace owner.
    pub fn insert_release_record(
        &self,
        release: &Verified<pb::Release>,
        hash: &ContentHash,
    ) -> Result<bool, StoreError> {
        let r = release.record();
        let rid = release.id();
        let key = release_key(&r.name, &r.version, &rid);
        let mut by_hash_key = hash.as_bytes().to_vec();
        by_hash_key.extend_from_slice(rid.as_bytes());
        // The pending mark goes first, outside the transaction (a fourth
        // tree in it slowed a fresh node's sync): sled recovers writes in
        // order, so a stored record always has its mark; a mark left by a
        // record that was already stored is dropped at the next save.
        self.doc_pending.insert(rid.as_bytes(), &[])?;
        let new = (&self.records, &self.releases, &self.by_hash).transaction(|(records, releases, by_hash)| {
            if releases.get(key.as_slice())?.is_some() {
                return Ok(false);
            }
            records.insert(rid.as_bytes(), release.envelope().encoded())?;
            releases.insert(key.as_slice(), &[])?;
            by_hash.insert(by_hash_key.as_slice(), &[])?;
            Ok(true)
        })?;
        if new {
            self.release_records.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.changed(super::Change::Package(r.name.clone()));
        }
        Ok(new)
    }

    /// A publish on this node: the first key to publish in a namespace owns
    /// it (with the claim it sends), versions are immutable. Serialized so two
    /// concurrent local publishes cannot both pass the checks.
    pub fn publish_local(
        &self,
        fed: &FederationId,
        release: &Verified<pb::Release>,
        hash: &ContentHash,
        claim: Option<&Verified<pb::NamespaceClaim>>,
    ) -> Result<InsertRelease, StoreError> {
        let _guard = self
            .publish_lock
            .lock()
            .map_err(|_| StoreError::Corrupt("publish lock poisoned".into()))?;
        let r = release.record();
        let name: PackName = r
            .name
            .parse()
            .map_err(|e: packfed_protocol::records::RecordError| StoreError::Corrupt(e.to_string()))?;
        let ns = name.namespace();
        let signer = release.signer();
        match self.namespace_owner(ns)? {
            Some(o) if o.owner != signer.0 => return Ok(InsertRelease::NamespaceOwned(o.key())),
            Some(_) => {}
            None => match claim.filter(|c| c.signer() == signer && c.record().namespace == ns) {
                Some(c) => {
                    self.insert_claim(c)?;
                }
                None => return Ok(InsertRelease::NeedsClaim),
            },
        }
        if let Some(existing) = self.release(fed, &r.name, &r.version)? {
            return Ok(if existing.record_id == release.id() {
                InsertRelease::AlreadyPresent
            } else {
                InsertRelease::VersionTaken(existing.record_id)
            });
        }
        self.insert_release_record(release, hash)?;
        Ok(InsertRelease::Inserted)
    }

    /// Records a verified yank. Keyed by what it names (name, version,
    /// hash), so it may arrive before the release; it counts only if its
    /// signer owns the namespace when read.
    pub fn insert_yank(&self, yank: &Verified<pb::Yank>) -> Result<bool, StoreError> {
        let y = yank.record();
        let key = yank_key(&y.name, &y.version, &y.content_hash);
        let mut value = yank.id().as_bytes().to_vec();
        value.extend_from_slice(yank.signer().as_bytes());
        let new = (&self.records, &self.yanks, &self.doc_pending).transaction(|(records, yanks, pending)| {
            records.insert(yank.id().as_bytes(), yank.envelope().encoded())?;
            pending.insert(yank.id().as_bytes(), &[])?;
            Ok(yanks.insert(key.as_slice(), value.as_slice())?.is_none())
        })?;
        self.changed(super::Change::Package(y.name.clone()));
        Ok(new)
    }

    fn is_yanked(&self, r: &pb::Release) -> Result<bool, StoreError> {
        let Some(v) = self.yanks.get(yank_key(&r.name, &r.version, &r.content_hash))? else {
            return Ok(false);
        };
        let ns = r.name.split('/').next().unwrap_or_default();
        let owner = self.namespace_owner(ns)?;
        Ok(v.len() == 64 && owner.map(|o| o.owner.as_slice() == &v[32..]).unwrap_or(false))
    }

    /// Gives a namespace to `owner` by governance: recorded as a claim at
    /// time 0 with id 0, which no signed claim can beat. Returns true if the
    /// owner changed.
    pub fn reassign_namespace(&self, ns: &str, owner: &PublicKey) -> Result<bool, StoreError> {
        let forced = NamespaceOwner {
            owner: owner.0,
            claim: [0; 32],
            claimed_at_ms: 0,
        };
        if self.namespace_owner(ns)? == Some(forced) {
            return Ok(false);
        }
        let encoded = postcard::to_stdvec(&forced).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.namespaces.insert(ns.as_bytes(), encoded)?;
        self.changed(super::Change::Namespace(ns.to_string()));
        Ok(true)
    }

    pub fn namespace_owner(&self, ns: &str) -> Result<Option<NamespaceOwner>, StoreError> {
        match self.namespaces.get(ns.as_bytes())? {
            None => Ok(None),
            Some(v) => decode_owner(ns, &v).map(Some),
        }
    }

    pub fn record(&self, id: &RecordId) -> Result<Option<Signed>, StoreError> {
        match self.records.get(id.as_bytes())? {
            None => Ok(None),
            Some(v) => Signed::decode(&v)
                .map(Some)
                .map_err(|e| StoreError::Corrupt(format!("record {id}: {e}"))),
        }
    }

    fn entry(&self, fed: &FederationId, rid: RecordId) -> Result<ReleaseEntry, StoreError> {
        let envelope = self
            .record(&rid)?
            .ok_or_else(|| StoreError::Corrupt(format!("index names missing record {rid}")))?;
        // Records were verified before they were stored; verifying again on
        // read guards against a damaged database at ~40 µs per record.
        let verified = envelope
            .verify::<pb::Release>(fed)
            .map_err(|e| StoreError::Corrupt(format!("record {rid}: {e}")))?;
        Ok(ReleaseEntry {
            record_id: rid,
            publisher: verified.signer(),
            release: verified.record().clone(),
            envelope,
            yanked: self.is_yanked(verified.record())?,
        })
    }

    /// The visible release `name@version` read without checking its
    /// signature again: for hot internal paths (checking the subject of each
    /// attestation in a sync batch), never for what is shown or served.
    pub fn release_unverified(&self, name: &str, version: &str) -> Result<Option<pb::Release>, StoreError> {
        let prefix = format!("{name}\0{version}\0");
        let ns = name.split('/').next().unwrap_or_default();
        let Some(owner) = self.namespace_owner(ns)? else {
            return Ok(None);
        };
        let mut best: Option<(RecordId, pb::Release)> = None;
        for key in self.releases.scan_prefix(prefix.as_bytes()).keys() {
            let rid = rid_of(&key?)?;
            let Some(env) = self.record(&rid)? else { continue };
            if env.claimed_signer() != owner.owner.as_slice() {
                continue;
            }
            let r = <pb::Release as prost::Message>::decode(env.to_pb().payload.as_slice())
                .map_err(|e| StoreError::Corrupt(format!("record {rid}: {e}")))?;
            if best.as_ref().is_none_or(|(b, _)| rid < *b) {
                best = Some((rid, r));
            }
        }
        Ok(best.map(|(_, r)| r))
    }

    /// The visible release for each version among index keys: signed by the
    /// namespace owner, the smallest record id if the owner signed two.
    fn visible(&self, fed: &FederationId, keys: Vec<sled::IVec>) -> Result<Vec<ReleaseEntry>, StoreError> {
        let mut by_version: std::collections::BTreeMap<(String, String), ReleaseEntry> = Default::default();
        let mut owners: std::collections::HashMap<String, Option<NamespaceOwner>> = Default::default();
        for key in keys {
            let rid = rid_of(&key)?;
            let entry = self.entry(fed, rid)?;
            let name = entry.release.name.clone();
            let ns = name.split('/').next().unwrap_or_default().to_string();
            let owner = match owners.get(&ns) {
                Some(o) => *o,
                None => {
                    let o = self.namespace_owner(&ns)?;
                    owners.insert(ns.clone(), o);
                    o
                }
            };
            if owner.map(|o| o.owner) != Some(entry.publisher.0) {
                continue;
            }
            let slot = (name, entry.release.version.clone());
            match by_version.get(&slot) {
                Some(have) if have.record_id <= entry.record_id => {}
                _ => {
                    by_version.insert(slot, entry);
                }
            }
        }
        Ok(by_version.into_values().collect())
    }

    /// Every release record of package `name` (see [`PackageRow`]).
    pub fn package_rows(&self, name: &str) -> Result<Vec<PackageRow>, StoreError> {
        let ns = name.split('/').next().unwrap_or_default();
        let owner = self.namespace_owner(ns)?.map(|o| o.owner);
        let mut rows: Vec<PackageRow> = Vec::new();
        for key in self.releases.scan_prefix(format!("{name}\0").as_bytes()).keys() {
            let rid = rid_of(&key?)?;
            let Some(env) = self.record(&rid)? else { continue };
            let release = <pb::Release as prost::Message>::decode(env.to_pb().payload.as_slice())
                .map_err(|e| StoreError::Corrupt(format!("record {rid}: {e}")))?;
            let by_owner = owner.is_some_and(|o| env.claimed_signer() == o.as_slice());
            let by_owner_yanked = by_owner && self.is_yanked(&release)?;
            rows.push(PackageRow {
                record_id: rid,
                envelope: env,
                visible: by_owner,
                yanked: by_owner_yanked,
                release,
            });
        }
        // Of two records by the owner for one version, the smaller id shows.
        let mut seen = std::collections::HashSet::new();
        rows.sort_by_key(|r| r.record_id);
        for r in rows.iter_mut().filter(|r| r.visible) {
            if !seen.insert(r.release.version.clone()) {
                r.visible = false;
            }
        }
        Ok(rows)
    }

    /// Names of every package with a stored release record (under a
    /// namespace, when given).
    pub fn package_names(&self, namespace: Option<&str>) -> Result<Vec<String>, StoreError> {
        let prefix = namespace.map(|ns| format!("{ns}/")).unwrap_or_default();
        let mut out: Vec<String> = Vec::new();
        for key in self.releases.scan_prefix(prefix.as_bytes()).keys() {
            let name = name_of(&key?);
            if out.last() != Some(&name) {
                out.push(name);
            }
        }
        Ok(out)
    }

    /// The visible releases among index keys under `prefix`.
    fn visible_under(&self, fed: &FederationId, prefix: &[u8]) -> Result<Vec<ReleaseEntry>, StoreError> {
        let keys = self
            .releases
            .scan_prefix(prefix)
            .keys()
            .collect::<Result<Vec<_>, _>>()?;
        self.visible(fed, keys)
    }

    /// Every visible version of `name`, in no particular order.
    pub fn releases_of(&self, fed: &FederationId, name: &str) -> Result<Vec<ReleaseEntry>, StoreError> {
        self.visible_under(fed, format!("{name}\0").as_bytes())
    }

    pub fn release(&self, fed: &FederationId, name: &str, version: &str) -> Result<Option<ReleaseEntry>, StoreError> {
        Ok(self
            .visible_under(fed, format!("{name}\0{version}\0").as_bytes())?
            .into_iter()
            .next())
    }

    /// (package name, record id) of every stored release record, in name
    /// order, read from the index alone.
    pub fn release_index(&self) -> impl Iterator<Item = Result<(String, RecordId), StoreError>> + '_ {
        self.releases.iter().keys().map(|k| {
            let k = k?;
            Ok((name_of(&k), rid_of(&k)?))
        })
    }

    /// Number of stored release records (visible or not).
    pub fn release_count(&self) -> usize {
        self.release_records.load(std::sync::atomic::Ordering::Relaxed) as usize
    }

    /// Whether a record is stored.
    pub fn has_record(&self, id: &RecordId) -> Result<bool, StoreError> {
        Ok(self.records.contains_key(id.as_bytes())?)
    }

    /// Every stored record envelope (for rebuilding replication state).
    pub fn all_records(&self) -> impl Iterator<Item = Result<(RecordId, sled::IVec), StoreError>> + '_ {
        self.records.iter().map(|kv| {
            let (k, v) = kv?;
            Ok((
                RecordId::from_slice(&k).map_err(|e| StoreError::Corrupt(e.to_string()))?,
                v,
            ))
        })
    }

    /// Release records whose archive is `hash`.
    pub fn releases_with_hash(&self, hash: &ContentHash) -> Result<Vec<RecordId>, StoreError> {
        let mut out = Vec::new();
        for k in self.by_hash.scan_prefix(hash.as_bytes()).keys() {
            let k = k?;
            out.push(RecordId::from_slice(&k[32..]).map_err(|e| StoreError::Corrupt(e.to_string()))?);
        }
        Ok(out)
    }
}
