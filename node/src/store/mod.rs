//! The node's storage: one sled database per home, and pack bytes in
//! `packs/SEQ.pack` files beside it (see [`blobs`] for why).
//!
//! Trees:
//! - `blob_meta`: content hash -> [`BlobMeta`] (postcard). A blob exists only
//!   once its meta is written, after its file is synced and its outboard stored.
//! - `blob_chunks` (inline blobs), `blob_outboards`: `seq (u64 BE) ||
//!   index (u32 BE)` -> up to [`CHUNK_SIZE`] bytes. Blobs are keyed by a sequence number rather than
//!   the hash so bytes can stream in before their hash is known; files and
//!   pieces whose seq has no meta (an interrupted import) are swept at open.
//! - `records`: record id -> `Signed` envelope bytes, as received.
//! - `releases`: `name \0 version \0 record id` -> () (every verified release,
//!   visible only if signed by the namespace owner).
//! - `by_hash`: `content hash || record id` -> () (which releases are this blob).
//! - `namespaces`: namespace -> its owner ([`NamespaceOwner`]): the earliest
//!   witnessed claim, or governance's choice.
//! - `claims`: `namespace \0 claim id` -> signer (every stored claim).
//! - `checkpoints`: `log || witness || seq || id` -> () (witness checkpoint
//!   logs; log 0 the federation's, 1 the org's).
//! - `crdt`: automerge documents and per-peer sync states.
//! - `yanks`: `name \0 version \0 content hash || signer` -> yank record id.
//! - `deprecations`: `name \0 signer || record id` -> () (the envelopes are
//!   in `records`; one counts only if its signer owns the namespace).
//! - `attestations`, `status`: see [`trust`].
//! - `gov`: governance record id -> () (the envelopes are in `records`).
//! - `doc_pending`: record id -> () for every stored record that the saved
//!   registry document may not hold yet. Written in the same transaction (or
//!   before) the record, removed once a document file that holds the record
//!   is synced; at open the node puts these back into the document. This is
//!   the high-water mark that keeps the derived document complete after a
//!   crash without a scan of every record.
//!
//! Writes that a caller acknowledges are flushed first ([`Store::flush`]).

pub mod blobs;
mod outboard;
pub mod peers;
mod records;
pub mod trust;

pub use blobs::{BlobMeta, BlobReader, BlobWriter, CHUNK_SIZE, StagedBlob, StoredBlob};
pub use records::{InsertRelease, NamespaceOwner, PackageRow, ReleaseEntry};
pub use trust::{AttestationEntry, ReleaseStatus};

use std::path::Path;

/// Storage failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store is in use by another packfed process (stop the running node first): {0}")]
    Locked(String),
    #[error("store: {0}")]
    Sled(#[from] sled::Error),
    #[error("store: {0}")]
    Io(#[from] std::io::Error),
    #[error("store holds a corrupt entry: {0}")]
    Corrupt(String),
    #[error("blob {0} is not in this node's store")]
    MissingBlob(String),
    #[error("blob is larger than the {0}-byte limit")]
    TooLarge(u64),
}

impl From<sled::transaction::TransactionError<StoreError>> for StoreError {
    fn from(e: sled::transaction::TransactionError<StoreError>) -> Self {
        match e {
            sled::transaction::TransactionError::Abort(e) => e,
            sled::transaction::TransactionError::Storage(e) => StoreError::Sled(e),
        }
    }
}

/// A change to what the store holds, for state derived from it (the search
/// catalog). Coarse on purpose: the listener re-reads what it needs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Change {
    /// A release record, yank or attestation of package `name` was stored.
    Package(String),
    /// The verdict on a release record changed.
    Status(packfed_protocol::RecordId),
    /// A namespace may have a new owner.
    Namespace(String),
    /// The membership in force changed (roles weigh attestations).
    Members,
}

/// Receives [`Change`]s; must be cheap (it runs inside store writes).
pub type ChangeSink = Box<dyn Fn(Change) + Send + Sync>;

/// The sled database and its trees.
#[derive(Clone)]
pub struct Store {
    pub(crate) db: sled::Db,
    blob_meta: sled::Tree,
    /// Inline (small) blobs, in pieces like outboards.
    chunks: sled::Tree,
    /// Directory of blob files (`packs/` inside the sled directory).
    packs: std::path::PathBuf,
    /// Directory of the saved registry documents (see `docfile`).
    registry: std::path::PathBuf,
    outboards: sled::Tree,
    records: sled::Tree,
    releases: sled::Tree,
    by_hash: sled::Tree,
    namespaces: sled::Tree,
    yanks: sled::Tree,
    /// `name \0 signer || record id` -> () for every stored deprecation.
    deprecations: sled::Tree,
    attestations: sled::Tree,
    status: sled::Tree,
    /// Governance record ids (proposals, votes, cancels) -> ().
    gov: sled::Tree,
    /// `namespace \0 claim id` -> signer: every stored claim.
    claims: sled::Tree,
    /// `witness key || seq (u64 BE) || checkpoint id` -> ().
    checkpoints: sled::Tree,
    /// Replication state (automerge documents, per-peer sync states).
    pub(crate) crdt: sled::Tree,
    /// Stored records the saved registry document may lack (see above).
    doc_pending: sled::Tree,
    publish_lock: std::sync::Arc<std::sync::Mutex<()>>,
    changes: std::sync::Arc<std::sync::OnceLock<ChangeSink>>,
    /// Release records stored: sled's `len` walks the whole tree, and this is
    /// read on every search and announcement.
    release_records: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Release keys of org releases (a mark per release, written before the
    /// release), so what a node tells the public counts public releases only.
    org_releases: sled::Tree,
    org_release_records: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Entries in `blob_meta` (kept for the same reason as `release_records`).
    blob_records: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Store {
    /// Opens (or creates) the store at `path` and sweeps interrupted imports.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(16 * 1024 * 1024)
            .open()
            .map_err(|e| match e {
                sled::Error::Io(io)
                    if io.kind() == std::io::ErrorKind::WouldBlock || io.to_string().contains("lock") =>
                {
                    StoreError::Locked(io.to_string())
                }
                other => StoreError::Sled(other),
            })?;
        let store = Store {
            blob_meta: db.open_tree("blob_meta")?,
            chunks: db.open_tree("blob_chunks")?,
            packs: {
                let dir = path.join("packs");
                std::fs::create_dir_all(&dir)?;
                dir
            },
            registry: path.join("registry"),
            outboards: db.open_tree("blob_outboards")?,
            records: db.open_tree("records")?,
            releases: db.open_tree("releases")?,
            by_hash: db.open_tree("by_hash")?,
            namespaces: db.open_tree("namespaces")?,
            yanks: db.open_tree("yanks")?,
            deprecations: db.open_tree("deprecations")?,
            attestations: db.open_tree("attestations")?,
            status: db.open_tree("status")?,
            gov: db.open_tree("gov")?,
            claims: db.open_tree("claims")?,
            checkpoints: db.open_tree("checkpoints")?,
            crdt: db.open_tree("crdt")?,
            doc_pending: db.open_tree("doc_pending")?,
            org_releases: db.open_tree("org_releases")?,
            org_release_records: Default::default(),
            blob_records: Default::default(),
            publish_lock: Default::default(),
            changes: Default::default(),
            release_records: Default::default(),
            db,
        };
        store
            .release_records
            .store(store.releases.len() as u64, std::sync::atomic::Ordering::Relaxed);
        store
            .org_release_records
            .store(store.org_releases.len() as u64, std::sync::atomic::Ordering::Relaxed);
        store
            .blob_records
            .store(store.blob_meta.len() as u64, std::sync::atomic::Ordering::Relaxed);
        let repaired = store.repair_torn_writes()?;
        if repaired > 0 {
            tracing::info!(records = repaired, "wrote the indexes of records a crash cut off");
        }
        let swept = store.sweep_orphan_chunks()?;
        if swept > 0 {
            tracing::info!(files = swept, "removed leftovers of interrupted imports");
        }
        Ok(store)
    }

    /// The file a registry document is saved in.
    pub fn registry_doc(&self, file_name: &str) -> std::path::PathBuf {
        self.registry.join(file_name)
    }

    /// Sets the one listener for [`Change`]s; false if one is set already.
    pub fn on_change(&self, sink: ChangeSink) -> bool {
        self.changes.set(sink).is_ok()
    }

    pub(crate) fn changed(&self, c: Change) {
        if let Some(sink) = self.changes.get() {
            sink(c);
        }
    }

    /// Makes every write so far durable. Call before acknowledging.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    /// A fresh, strictly increasing id (persisted by sled).
    pub fn next_id(&self) -> Result<u64, StoreError> {
        Ok(self.db.generate_id()?)
    }

    /// Stores a verified governance record. Not durable until flushed.
    pub fn insert_gov(&self, id: &packfed_protocol::RecordId, envelope: &[u8]) -> Result<(), StoreError> {
        use sled::Transactional;
        (&self.records, &self.gov, &self.doc_pending).transaction(|(records, gov, pending)| {
            records.insert(id.as_bytes(), envelope)?;
            gov.insert(id.as_bytes(), &[])?;
            pending.insert(id.as_bytes(), &[])?;
            Ok::<_, sled::transaction::ConflictableTransactionError<StoreError>>(())
        })?;
        Ok(())
    }

    /// Every stored governance record id.
    pub fn gov_ids(&self) -> Result<Vec<packfed_protocol::RecordId>, StoreError> {
        self.gov
            .iter()
            .keys()
            .map(|k| packfed_protocol::RecordId::from_slice(&k?).map_err(|e| StoreError::Corrupt(e.to_string())))
            .collect()
    }

    /// Records the saved registry document may not hold yet.
    pub fn doc_pending(&self) -> Result<Vec<packfed_protocol::RecordId>, StoreError> {
        self.doc_pending
            .iter()
            .keys()
            .map(|k| packfed_protocol::RecordId::from_slice(&k?).map_err(|e| StoreError::Corrupt(e.to_string())))
            .collect()
    }

    /// Forgets pending entries whose records a synced document file holds.
    /// Not flushed: an entry that comes back after a crash is only checked
    /// again at the next open.
    pub fn doc_saved(&self, ids: &[packfed_protocol::RecordId]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for id in ids {
            batch.remove(id.as_bytes());
        }
        self.doc_pending.apply_batch(batch)?;
        Ok(())
    }

    pub async fn flush_async(&self) -> Result<(), StoreError> {
        self.db.flush_async().await?;
        Ok(())
    }
}

/// Opens the store at `path` again in a test: sled's flusher thread lets go
/// of the file lock a moment after the last handle is dropped, so a reopen
/// right away can find it still held (tests ran into it under load).
#[cfg(test)]
pub(crate) fn reopen(path: &Path) -> Store {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match Store::open(path) {
            Err(StoreError::Locked(_)) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            other => return other.unwrap(),
        }
    }
}
