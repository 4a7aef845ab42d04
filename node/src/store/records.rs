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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceOwner {
    pub owner: [u8; 32],
    pub claim: [u8; 32],
}

impl NamespaceOwner {
    pub fn key(&self) -> PublicKey {
        PublicKey(self.owner)
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

/// Outcome of [`Store::insert_release`].
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

fn release_key(name: &str, version: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(name.len() + 1 + version.len());
    k.extend_from_slice(name.as_bytes());
    k.push(0);
    k.extend_from_slice(version.as_bytes());
    k
}

fn abort(e: StoreError) -> ConflictableTransactionError<StoreError> {
    ConflictableTransactionError::Abort(e)
}

fn owner_in(
    tx: &TransactionalTree,
    ns: &str,
) -> Result<Option<NamespaceOwner>, ConflictableTransactionError<StoreError>> {
    match tx.get(ns.as_bytes())? {
        None => Ok(None),
        Some(v) => postcard::from_bytes(&v)
            .map(Some)
            .map_err(|e| abort(StoreError::Corrupt(format!("namespace {ns}: {e}")))),
    }
}

impl Store {
    /// Stores a verified release and its indexes, enforcing the namespace rule
    /// atomically: the first key to publish in a namespace owns it. `claim`,
    /// if given, must be verified and signed by the release's signer.
    pub fn insert_release(
        &self,
        release: &Verified<pb::Release>,
        hash: &ContentHash,
        claim: Option<&Verified<pb::NamespaceClaim>>,
    ) -> Result<InsertRelease, StoreError> {
        let r = release.record();
        let name: PackName = r
            .name
            .parse()
            .map_err(|e: packfed_protocol::records::RecordError| StoreError::Corrupt(e.to_string()))?;
        let ns = name.namespace().to_string();
        let rid = release.id();
        let rkey = release_key(&r.name, &r.version);
        let signer = release.signer();
        let mut by_hash_key = hash.as_bytes().to_vec();
        by_hash_key.extend_from_slice(rid.as_bytes());

        let outcome = (&self.records, &self.releases, &self.by_hash, &self.namespaces).transaction(
            |(records, releases, by_hash, namespaces)| {
                if let Some(existing) = releases.get(&rkey)? {
                    return Ok(if existing.as_ref() == rid.as_bytes() {
                        InsertRelease::AlreadyPresent
                    } else {
                        let id =
                            RecordId::from_slice(&existing).map_err(|e| abort(StoreError::Corrupt(e.to_string())))?;
                        InsertRelease::VersionTaken(id)
                    });
                }
                match owner_in(namespaces, &ns)? {
                    Some(o) if o.owner != signer.0 => return Ok(InsertRelease::NamespaceOwned(o.key())),
                    Some(_) => {}
                    None => {
                        let Some(c) = claim.filter(|c| c.signer() == signer && c.record().namespace == ns) else {
                            return Ok(InsertRelease::NeedsClaim);
                        };
                        let owner = NamespaceOwner {
                            owner: signer.0,
                            claim: c.id().0,
                        };
                        let v = postcard::to_stdvec(&owner).map_err(|e| abort(StoreError::Corrupt(e.to_string())))?;
                        records.insert(c.id().as_bytes(), c.envelope().encoded())?;
                        namespaces.insert(ns.as_bytes(), v)?;
                    }
                }
                records.insert(rid.as_bytes(), release.envelope().encoded())?;
                releases.insert(rkey.as_slice(), rid.as_bytes())?;
                by_hash.insert(by_hash_key.as_slice(), &[])?;
                Ok(InsertRelease::Inserted)
            },
        )?;
        Ok(outcome)
    }

    /// Records a verified yank of a stored release.
    pub fn insert_yank(&self, release: RecordId, yank: &Verified<pb::Yank>) -> Result<(), StoreError> {
        (&self.records, &self.yanks).transaction(|(records, yanks)| {
            records.insert(yank.id().as_bytes(), yank.envelope().encoded())?;
            yanks.insert(release.as_bytes(), yank.id().as_bytes())?;
            Ok(())
        })?;
        Ok(())
    }

    pub fn namespace_owner(&self, ns: &str) -> Result<Option<NamespaceOwner>, StoreError> {
        match self.namespaces.get(ns.as_bytes())? {
            None => Ok(None),
            Some(v) => postcard::from_bytes(&v)
                .map(Some)
                .map_err(|e| StoreError::Corrupt(format!("namespace {ns}: {e}"))),
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
            yanked: self.yanks.contains_key(rid.as_bytes())?,
        })
    }

    /// Every stored version of `name`, in no particular order.
    pub fn releases_of(&self, fed: &FederationId, name: &str) -> Result<Vec<ReleaseEntry>, StoreError> {
        let mut prefix = name.as_bytes().to_vec();
        prefix.push(0);
        let mut out = Vec::new();
        for v in self.releases.scan_prefix(&prefix).values() {
            let rid = RecordId::from_slice(&v?).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            out.push(self.entry(fed, rid)?);
        }
        Ok(out)
    }

    pub fn release(&self, fed: &FederationId, name: &str, version: &str) -> Result<Option<ReleaseEntry>, StoreError> {
        match self.releases.get(release_key(name, version))? {
            None => Ok(None),
            Some(v) => {
                let rid = RecordId::from_slice(&v).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                self.entry(fed, rid).map(Some)
            }
        }
    }

    /// Every stored release.
    pub fn all_releases(&self, fed: &FederationId) -> Result<Vec<ReleaseEntry>, StoreError> {
        let mut out = Vec::with_capacity(self.releases.len());
        for v in self.releases.iter().values() {
            let rid = RecordId::from_slice(&v?).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            out.push(self.entry(fed, rid)?);
        }
        Ok(out)
    }

    pub fn release_count(&self) -> usize {
        self.releases.len()
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
