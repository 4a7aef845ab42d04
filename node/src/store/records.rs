//! Signed records and the indexes over them. Records are stored only after
//! the caller verified them; the indexes are written in one transaction with
//! the record so a crash never leaves one without the other.

use packfed_protocol::records::PackName;
use packfed_protocol::{ContentHash, FederationId, PublicKey, RecordId, Signed, Verified, pb};
use serde::{Deserialize, Serialize};
use sled::Transactional;

use super::{Store, StoreError};

/// Who owns a namespace, and by which claim.
///
/// Ownership goes to the earliest *witnessed* claim (ties by the smaller
/// claim id), decided by the witness rules of the node core and
/// written here; a claim's own `claimed_at_ms` counts for nothing. Releases
/// are stored whoever signed them; only those signed by the owner are
/// visible, so every node that holds the same records and checkpoints shows
/// the same owner and the same packs. Governance can also assign an owner
/// (claim id 0), which no claim replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceOwner {
    pub owner: [u8; 32],
    pub claim: [u8; 32],
    pub witnessed_at_ms: u64,
}

impl NamespaceOwner {
    pub fn key(&self) -> PublicKey {
        PublicKey(self.owner)
    }

    /// Assigned by governance rather than by a claim.
    pub fn by_governance(&self) -> bool {
        self.claim == [0; 32]
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
    /// The owner signed another record for this version too (a second
    /// archive for a published version): neither may be installed.
    pub conflict: Option<RecordId>,
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
    /// Visible, but the owner signed another record for this version.
    pub conflict: Option<RecordId>,
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

/// A stored envelope's record (its signature was checked on the way in).
fn stored<R: prost::Message + Default>(rid: &RecordId, env: &Signed) -> Result<R, StoreError> {
    env.unchecked_record()
        .map_err(|e| StoreError::Corrupt(format!("record {rid}: {e}")))
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

fn decode_owner(ns: &str, v: &[u8]) -> Result<NamespaceOwner, StoreError> {
    postcard::from_bytes(v).map_err(|e| StoreError::Corrupt(format!("namespace {ns}: {e}")))
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
    /// Stores a verified namespace claim (and its index by namespace);
    /// returns true if it was new. Who owns the namespace is decided by
    /// witnesses ([`Store::set_claimed_owner`]), never by the claim itself.
    pub fn insert_claim(&self, claim: &Verified<pb::NamespaceClaim>) -> Result<bool, StoreError> {
        // Plain inserts in order rather than a transaction (each sled
        // transaction seals and writes a log buffer of its own): sled
        // recovers writes in order, so a stored envelope always has its
        // pending mark, and a crash between the envelope and the index is
        // mended at the next open ([`Store::repair_torn_writes`]).
        self.doc_pending.insert(claim.id().as_bytes(), &[])?;
        self.records.insert(claim.id().as_bytes(), claim.envelope().encoded())?;
        self.write_claim_index(claim.record(), &claim.id(), &claim.signer())
    }

    fn write_claim_index(&self, c: &pb::NamespaceClaim, id: &RecordId, signer: &PublicKey) -> Result<bool, StoreError> {
        let mut key = c.namespace.as_bytes().to_vec();
        key.push(0);
        key.extend_from_slice(id.as_bytes());
        Ok(self.claims.insert(key.as_slice(), signer.as_bytes())?.is_none())
    }

    /// Every stored claim: (namespace, claim id, signer).
    pub fn claims(&self) -> impl Iterator<Item = Result<(String, RecordId, PublicKey), StoreError>> + '_ {
        self.claims.iter().map(|kv| {
            let (k, v) = kv?;
            let bad = || StoreError::Corrupt("claim index entry".into());
            if k.len() < 33 || v.len() != 32 {
                return Err(bad());
            }
            let ns = String::from_utf8(k[..k.len() - 33].to_vec()).map_err(|_| bad())?;
            let id = RecordId::from_slice(&k[k.len() - 32..]).map_err(|_| bad())?;
            let signer = PublicKey::from_slice(&v).map_err(|_| bad())?;
            Ok((ns, id, signer))
        })
    }

    /// Puts the owner by witnessed claims in force (None: no claim on `ns`
    /// is witnessed). An owner governance assigned stays. Returns true if
    /// the owner changed.
    pub fn set_claimed_owner(&self, ns: &str, owner: Option<NamespaceOwner>) -> Result<bool, StoreError> {
        let current = self.namespace_owner(ns)?;
        if current.is_some_and(|c| c.by_governance()) || current == owner {
            return Ok(false);
        }
        match owner {
            Some(o) => {
                let encoded = postcard::to_stdvec(&o).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                self.namespaces.insert(ns.as_bytes(), encoded)?;
            }
            None => {
                self.namespaces.remove(ns.as_bytes())?;
            }
        }
        self.changed(super::Change::Namespace(ns.to_string()));
        Ok(true)
    }

    /// Stores a verified checkpoint (equivocating ones too: they are the
    /// proof). Keyed `log || witness || seq || id` (log: 0 public, 1 org).
    pub fn insert_checkpoint(&self, cp: &Verified<pb::Checkpoint>) -> Result<bool, StoreError> {
        let mut key = vec![cp.record().doc.min(255) as u8];
        key.extend_from_slice(cp.signer().as_bytes());
        key.extend_from_slice(&cp.record().seq.to_be_bytes());
        key.extend_from_slice(cp.id().as_bytes());
        // Idle (empty) checkpoints stay out of the registry document, so
        // they get no pending mark.
        let in_document = !cp.record().records.is_empty();
        let new = (&self.records, &self.checkpoints, &self.doc_pending).transaction(|(records, cps, pending)| {
            records.insert(cp.id().as_bytes(), cp.envelope().encoded())?;
            if in_document {
                pending.insert(cp.id().as_bytes(), &[])?;
            }
            Ok(cps.insert(key.as_slice(), &[])?.is_none())
        })?;
        Ok(new)
    }

    /// Drops a stored checkpoint (an idle one a newer one replaced).
    pub fn remove_checkpoint(&self, doc: u32, witness: &PublicKey, seq: u64, id: &RecordId) -> Result<(), StoreError> {
        let mut key = vec![doc.min(255) as u8];
        key.extend_from_slice(witness.as_bytes());
        key.extend_from_slice(&seq.to_be_bytes());
        key.extend_from_slice(id.as_bytes());
        (&self.records, &self.checkpoints, &self.doc_pending).transaction(|(records, cps, pending)| {
            cps.remove(key.as_slice())?;
            records.remove(id.as_bytes())?;
            pending.remove(id.as_bytes())?;
            Ok::<_, sled::transaction::ConflictableTransactionError<StoreError>>(())
        })?;
        Ok(())
    }

    /// Every stored checkpoint envelope, by witness then sequence number.
    pub fn checkpoints(&self) -> impl Iterator<Item = Result<Signed, StoreError>> + '_ {
        self.checkpoints.iter().keys().map(|k| {
            let k = k?;
            let id = RecordId::from_slice(&k[k.len().saturating_sub(32)..])
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            self.record(&id)?
                .ok_or_else(|| StoreError::Corrupt(format!("checkpoint index names missing record {id}")))
        })
    }

    /// Bytes of stored checkpoint envelopes per witness key.
    pub fn checkpoint_bytes(&self) -> Result<std::collections::BTreeMap<PublicKey, u64>, StoreError> {
        let mut out = std::collections::BTreeMap::new();
        for env in self.checkpoints() {
            let env = env?;
            let signer = PublicKey::from_slice(env.claimed_signer()).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            *out.entry(signer).or_insert(0) += env.encoded().len() as u64;
        }
        Ok(out)
    }

    /// (name, version) of every stored release record in namespace `ns`.
    pub fn versions_in_namespace(&self, ns: &str) -> Result<Vec<(String, String)>, StoreError> {
        let mut out: Vec<(String, String)> = Vec::new();
        for key in self.releases.scan_prefix(format!("{ns}/").as_bytes()).keys() {
            let key = key?;
            let mut parts = key.splitn(3, |b| *b == 0);
            let (Some(name), Some(version)) = (parts.next(), parts.next()) else {
                continue;
            };
            let pair = (
                String::from_utf8_lossy(name).into_owned(),
                String::from_utf8_lossy(version).into_owned(),
            );
            if out.last() != Some(&pair) {
                out.push(pair);
            }
        }
        Ok(out)
    }

    /// Stores a verified release record and its indexes, whoever signed it:
    /// reads show only releases signed by the namespace owner.
    pub fn insert_release_record(
        &self,
        release: &Verified<pb::Release>,
        hash: &ContentHash,
    ) -> Result<bool, StoreError> {
        let rid = release.id();
        // The pending mark goes first, outside the transaction (a fourth
        // tree in it slowed a fresh node's sync): sled recovers writes in
        // order, so a stored record always has its mark; a mark left by a
        // record that was already stored is dropped at the next save. A
        // crash between the envelope and its indexes leaves the mark, and
        // the next open writes the indexes again
        // ([`Store::repair_torn_writes`]).
        self.doc_pending.insert(rid.as_bytes(), &[])?;
        // Ordered plain inserts, not a transaction: a sled transaction seals
        // and writes a log buffer of its own, which cost a publish one more
        // write.
        self.records.insert(rid.as_bytes(), release.envelope().encoded())?;
        self.write_release_indexes(release.record(), &rid, hash)
    }

    /// Writes the indexes of every record marked pending again
    /// (idempotent): a kill -9 can cut a release or a claim off between its
    /// envelope and its indexes, and such a record counts as known, so
    /// nothing else would ever write them. Runs at open, before anything
    /// reads the indexes. Returns how many records lacked an index.
    pub(super) fn repair_torn_writes(&self) -> Result<usize, StoreError> {
        let mut repaired = 0;
        for id in self.doc_pending()? {
            let Some(env) = self.record(&id)? else { continue };
            let corrupt = |e: String| StoreError::Corrupt(format!("record {id}: {e}"));
            let mended = match env.domain() {
                Some(packfed_protocol::Domain::Release) => {
                    let r = stored::<pb::Release>(&id, &env)?;
                    let hash = ContentHash::from_slice(&r.content_hash).map_err(|e| corrupt(e.to_string()))?;
                    self.write_release_indexes(&r, &id, &hash)?
                }
                Some(packfed_protocol::Domain::NamespaceClaim) => {
                    let c = stored::<pb::NamespaceClaim>(&id, &env)?;
                    let signer = PublicKey::from_slice(env.claimed_signer()).map_err(|e| corrupt(e.to_string()))?;
                    self.write_claim_index(&c, &id, &signer)?
                }
                _ => false,
            };
            repaired += usize::from(mended);
        }
        Ok(repaired)
    }

    /// A release's indexes, in an order that keeps every crash consistent:
    /// the release key goes last, and its insert decides, atomically,
    /// which caller stored it first.
    fn write_release_indexes(&self, r: &pb::Release, rid: &RecordId, hash: &ContentHash) -> Result<bool, StoreError> {
        let key = release_key(&r.name, &r.version, rid);
        let mut by_hash_key = hash.as_bytes().to_vec();
        by_hash_key.extend_from_slice(rid.as_bytes());
        // The org mark before the release key: a crash after it undercounts
        // public releases, never counts an org one as public.
        let org = r.visibility == pb::Visibility::Org as i32;
        if org && self.org_releases.insert(key.as_slice(), &[])?.is_none() {
            self.org_release_records
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        self.by_hash.insert(by_hash_key.as_slice(), &[])?;
        let new = self.releases.insert(key.as_slice(), &[])?.is_none();
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
            // The claim is stored; it owns the namespace once witnessed.
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
        // One entry per signer: a yank by someone else never replaces the
        // owner's.
        let mut key = yank_key(&y.name, &y.version, &y.content_hash);
        key.extend_from_slice(yank.signer().as_bytes());
        let value = yank.id().as_bytes().to_vec();
        let new = (&self.records, &self.yanks, &self.doc_pending).transaction(|(records, yanks, pending)| {
            records.insert(yank.id().as_bytes(), yank.envelope().encoded())?;
            pending.insert(yank.id().as_bytes(), &[])?;
            Ok(yanks.insert(key.as_slice(), value.as_slice())?.is_none())
        })?;
        self.changed(super::Change::Package(y.name.clone()));
        Ok(new)
    }

    /// Records a verified deprecation; it counts only if its signer owns
    /// the namespace when read.
    pub fn insert_deprecation(&self, d: &Verified<pb::Deprecation>) -> Result<bool, StoreError> {
        let mut key = format!("{}\0", d.record().name).into_bytes();
        key.extend_from_slice(d.signer().as_bytes());
        key.extend_from_slice(d.id().as_bytes());
        let new = (&self.records, &self.deprecations, &self.doc_pending).transaction(|(records, deps, pending)| {
            records.insert(d.id().as_bytes(), d.envelope().encoded())?;
            pending.insert(d.id().as_bytes(), &[])?;
            Ok(deps.insert(key.as_slice(), &[])?.is_none())
        })?;
        self.changed(super::Change::Package(d.record().name.clone()));
        Ok(new)
    }

    /// The namespace owner's deprecation covering `name@version`, the one
    /// the owner signed last by its own clock (only the owner's own records
    /// are compared, so nobody else's clock orders anything).
    pub fn deprecation(&self, name: &str, version: &semver::Version) -> Result<Option<pb::Deprecation>, StoreError> {
        let ns = name.split('/').next().unwrap_or_default();
        let Some(owner) = self.namespace_owner(ns)? else {
            return Ok(None);
        };
        let mut prefix = format!("{name}\0").into_bytes();
        prefix.extend_from_slice(&owner.owner);
        let mut best: Option<pb::Deprecation> = None;
        for key in self.deprecations.scan_prefix(&prefix).keys() {
            let rid = rid_of(&key?)?;
            let Some(env) = self.record(&rid)? else { continue };
            let d = stored::<pb::Deprecation>(&rid, &env)?;
            let covers = semver::VersionReq::parse(&d.requirement).is_ok_and(|r| r.matches(version));
            if covers && best.as_ref().is_none_or(|b| d.deprecated_at_ms > b.deprecated_at_ms) {
                best = Some(d);
            }
        }
        Ok(best)
    }

    /// Whether any visible release of `name` is org (`None`: none held).
    pub fn pack_is_org(&self, name: &str) -> Result<Option<bool>, StoreError> {
        let mut any = None;
        for key in self.releases.scan_prefix(format!("{name}\0").as_bytes()).keys() {
            let rid = rid_of(&key?)?;
            let Some(env) = self.record(&rid)? else { continue };
            let r = stored::<pb::Release>(&rid, &env)?;
            if r.visibility == pb::Visibility::Org as i32 {
                return Ok(Some(true));
            }
            any = Some(false);
        }
        Ok(any)
    }

    /// Yanked by the namespace owner (a yank by anyone else counts for
    /// nothing).
    fn is_yanked(&self, r: &pb::Release) -> Result<bool, StoreError> {
        let ns = r.name.split('/').next().unwrap_or_default();
        let Some(owner) = self.namespace_owner(ns)? else {
            return Ok(false);
        };
        let mut key = yank_key(&r.name, &r.version, &r.content_hash);
        key.extend_from_slice(&owner.owner);
        Ok(self.yanks.contains_key(key)?)
    }

    /// Gives a namespace to `owner` by governance: recorded with claim id
    /// 0, which witnessed claims never replace. Returns true if the owner
    /// changed.
    pub fn reassign_namespace(&self, ns: &str, owner: &PublicKey) -> Result<bool, StoreError> {
        let forced = NamespaceOwner {
            owner: owner.0,
            claim: [0; 32],
            witnessed_at_ms: 0,
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
            conflict: None,
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
            let r = stored::<pb::Release>(&rid, &env)?;
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
            match by_version.get_mut(&slot) {
                // Two archives signed by the owner for one version: shown
                // (the smaller id) with the conflict, installable by no one.
                Some(have) if have.record_id <= entry.record_id => {
                    have.conflict = have.conflict.min(Some(entry.record_id)).or(Some(entry.record_id));
                }
                Some(have) => {
                    let other = have.record_id;
                    let mut entry = entry;
                    entry.conflict = Some(other);
                    *have = entry;
                }
                None => {
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
            let release = stored::<pb::Release>(&rid, &env)?;
            let by_owner = owner.is_some_and(|o| env.claimed_signer() == o.as_slice());
            let by_owner_yanked = by_owner && self.is_yanked(&release)?;
            rows.push(PackageRow {
                record_id: rid,
                envelope: env,
                visible: by_owner,
                yanked: by_owner_yanked,
                conflict: None,
                release,
            });
        }
        // Of two records by the owner for one version, the smaller id shows,
        // with the conflict.
        let mut first: std::collections::HashMap<String, usize> = Default::default();
        rows.sort_by_key(|r| r.record_id);
        for i in 0..rows.len() {
            if !rows[i].visible {
                continue;
            }
            match first.get(&rows[i].release.version) {
                Some(&f) => {
                    rows[i].visible = false;
                    let other = rows[i].record_id;
                    rows[f].conflict.get_or_insert(other);
                }
                None => {
                    first.insert(rows[i].release.version.clone(), i);
                }
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

    /// Release records that are not org releases: what the node may tell
    /// peers outside its org.
    pub fn public_release_count(&self) -> usize {
        let org = self.org_release_records.load(std::sync::atomic::Ordering::Relaxed) as usize;
        self.release_count().saturating_sub(org)
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

#[cfg(test)]
mod tests {
    use super::*;
    use packfed_protocol::KeyPair;

    /// A kill -9 can keep a record's envelope and pending mark and lose
    /// what came after them; the next open writes the indexes again.
    #[test]
    fn an_open_mends_releases_and_claims_cut_off_from_their_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let fed = FederationId([7; 32]);
        let key = KeyPair::generate().unwrap();
        let claim = pb::NamespaceClaim {
            namespace: "acme".into(),
            claimed_at_ms: 1,
        };
        let claim = Signed::sign(&claim, &key, &fed).verify(&fed).unwrap();
        let release = |version: &str| {
            let r = pb::Release {
                name: "acme/web".into(),
                version: version.into(),
                content_hash: vec![1; 32],
                ..Default::default()
            };
            Signed::sign(&r, &key, &fed).verify::<pb::Release>(&fed).unwrap()
        };
        let (torn, whole) = (release("1.0.0"), release("1.0.1"));
        {
            let store = Store::open(dir.path()).unwrap();
            assert!(store.insert_claim(&claim).unwrap());
            for r in [&torn, &whole] {
                assert!(store.insert_release_record(r, &ContentHash([1; 32])).unwrap());
            }
            // What a crash right after the envelopes leaves: no indexes.
            store.claims.clear().unwrap();
            store.releases.clear().unwrap();
            store.by_hash.clear().unwrap();
            // The repair reads the pending marks only, not every record: a
            // mark is dropped once a saved document holds its record, after
            // the record was stored whole. Shown here by a dropped mark.
            store.doc_saved(&[whole.id()]).unwrap();
            store.flush().unwrap();
        }
        let store = crate::store::reopen(dir.path());
        let claims: Vec<_> = store.claims().map(Result::unwrap).collect();
        assert_eq!(claims, vec![("acme".to_string(), claim.id(), key.public())]);
        assert_eq!(
            store.release_count(),
            1,
            "the marked release is back; only marks are read"
        );
        assert_eq!(
            store.versions_in_namespace("acme").unwrap(),
            vec![("acme/web".into(), "1.0.0".into())]
        );
        drop(store);
        // Idempotent: a second open changes nothing.
        assert_eq!(crate::store::reopen(dir.path()).release_count(), 1);
    }
}
