//! The registry documents of a node: loaded from their files at open,
//! kept derived from the store (records marked pending until a synced file
//! holds them), saved incrementally, and rebuilt from the store when a file
//! is unreadable.

use anyhow::Result;
use packfed_protocol::{RecordId, Signed};

use super::Node;
use crate::core::{Channel, admit};
use crate::docfile::{DocFile, Saved};
use crate::registry::Replica;
use crate::store::{Store, StoreError};

/// Where the document was saved in sled before it moved to a file.
fn legacy_prefix(channel: Channel) -> &'static [u8] {
    match channel {
        Channel::Public => b"doc/public/",
        Channel::Org => b"doc/org/",
    }
}

fn file_name(channel: Channel) -> &'static str {
    match channel {
        Channel::Public => "public.automerge",
        Channel::Org => "org.automerge",
    }
}

/// How a channel's document came out of its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loaded {
    /// Read whole from the file (or from sled, where older nodes kept it).
    Whole,
    /// The file ended in a torn piece (a crash during an append): the
    /// readable prefix was loaded and the file rewritten from it. Records
    /// of the lost tail are still marked pending in the store.
    Prefix,
    /// No readable document: it must be rebuilt from every stored record.
    Rebuild,
}

/// Loads a channel's registry document from its file (or from sled, where
/// older nodes kept it). The stored records are the authority: the caller
/// puts back what the document lacks ([`Node::reconcile_documents`]).
pub fn load_replica(store: &Store, channel: Channel) -> Result<(Replica, DocFile, Loaded)> {
    let mut file = DocFile::new(store.registry_doc(file_name(channel)));
    let shown = file.path().display().to_string();
    match file.read() {
        Ok(Saved::Pieces { bytes, pieces, torn }) => {
            match Replica::load_pieces(pieces.iter().map(|p| &bytes[p.clone()])) {
                Ok((r, n)) if !torn && n == pieces.len() => return Ok((r, file, Loaded::Whole)),
                // Keeping the readable history (rather than rebuilding with a
                // fresh one) keeps peers from holding every key twice.
                Ok((mut r, n)) if n > 0 => {
                    tracing::warn!(file = %shown, pieces = n, "registry document ends in a torn or damaged piece (a crash while saving); loaded what precedes it");
                    file.snapshot(&mut r)?;
                    return Ok((r, file, Loaded::Prefix));
                }
                Ok(_) => {
                    tracing::warn!(file = %shown, "registry document holds no readable piece; rebuilding it from stored records")
                }
                Err(e) => {
                    tracing::warn!(error = %e, file = %shown, "registry document unreadable; rebuilding it from stored records")
                }
            }
        }
        // Written by a node from before framing: one whole automerge save.
        Ok(Saved::Unframed(bytes)) => match Replica::load(&bytes) {
            Ok(mut r) => {
                file.snapshot(&mut r)?;
                return Ok((r, file, Loaded::Whole));
            }
            Err(e) => {
                tracing::warn!(error = %e, file = %shown, "registry document unreadable; rebuilding it from stored records")
            }
        },
        Ok(Saved::Nothing) => {}
        Err(e) => {
            tracing::warn!(error = %e, file = %shown, "cannot read the registry document; rebuilding it from stored records")
        }
    }
    let mut legacy = Vec::new();
    let mut legacy_keys = Vec::new();
    for kv in store.crdt.scan_prefix(legacy_prefix(channel)) {
        let (k, v) = kv.map_err(StoreError::from)?;
        legacy.extend_from_slice(&v);
        legacy_keys.push(k);
    }
    let loaded = (!legacy.is_empty()).then(|| Replica::load(&legacy).ok()).flatten();
    drop(legacy);
    let (mut r, how) = match loaded {
        Some(r) => (r, Loaded::Whole),
        None => (Replica::new(), Loaded::Rebuild),
    };
    if how == Loaded::Whole {
        file.snapshot(&mut r)?;
        for k in legacy_keys {
            store.crdt.remove(k).map_err(StoreError::from)?;
        }
    }
    Ok((r, file, how))
}

impl Node {
    /// The file a channel's document is saved in.
    fn doc_file_for(&self, channel: Channel) -> &std::sync::Mutex<DocFile> {
        match channel {
            Channel::Public => &self.replica_file,
            Channel::Org => &self.org_replica_file,
        }
    }

    /// The document of a channel.
    pub fn replica_for(&self, channel: Channel) -> &std::sync::Mutex<Replica> {
        match channel {
            Channel::Public => &self.replica,
            Channel::Org => &self.org_replica,
        }
    }

    /// Adds a verified record to the public replicated document.
    pub fn replicate(&self, id: &RecordId, envelope: &[u8]) {
        self.replicate_to(Channel::Public, id, envelope)
    }

    /// Adds a verified record to a channel's document.
    pub fn replicate_to(&self, channel: Channel, id: &RecordId, envelope: &[u8]) {
        if let Ok(mut r) = self.replica_for(channel).lock()
            && let Err(e) = r.insert(id, envelope)
        {
            tracing::warn!(error = %e, "cannot add record to the registry document");
        }
    }

    /// Saves the documents' changes since the last save to their files, in
    /// the order that keeps them derived from the store: the bytes are taken
    /// under the document lock, then the store is flushed (so a document
    /// never lists a record the store could lose), then the file is written
    /// and synced, and only then are the records it holds unmarked pending.
    /// If a write fails, their marks stay, and the next open puts them back.
    pub fn save_replica(&self) -> Result<()> {
        let mut saved = Vec::new();
        let mut flushed = false;
        for channel in [Channel::Public, Channel::Org] {
            let Ok(mut file) = self.doc_file_for(channel).lock() else {
                continue;
            };
            let (bytes, snapshot, held) = match self.replica_for(channel).lock() {
                // A later save takes it; meanwhile the records' pending
                // marks keep them (see `reconcile_documents`).
                Ok(r) if r.ahead_of_store() => continue,
                Ok(mut r) => {
                    let held = r.take_unsaved();
                    let piece = r.save_incremental();
                    if piece.is_empty() {
                        // Nothing new: what it holds is in the file already.
                        saved.extend(held);
                        continue;
                    }
                    if file.wants_snapshot(piece.len()) {
                        (r.save(), true, held)
                    } else {
                        (piece, false, held)
                    }
                }
                Err(_) => continue,
            };
            if !flushed {
                self.store.flush()?;
                flushed = true;
            }
            if snapshot {
                file.write_snapshot(&bytes)?;
                drop(bytes);
                // A full save allocates several times the document's size.
                crate::memory::release_freed();
            } else {
                file.append(&bytes)?;
            }
            saved.extend(held);
        }
        if !saved.is_empty() {
            self.store.doc_saved(&saved)?;
        }
        Ok(())
    }

    /// Puts every stored record a document lacks back into it, then saves:
    /// the records of a crashed node's last seconds (marked pending in the
    /// store) or, for a document that had to be rebuilt, every record.
    /// Records keep the channel the live path gives them.
    pub fn reconcile_documents(&self, public: Loaded, org: Loaded) -> Result<usize> {
        let rebuild = |c: Channel| match c {
            Channel::Public => public == Loaded::Rebuild,
            Channel::Org => org == Loaded::Rebuild,
        };
        let mut restored = 0;
        let mut put_back = |id: &RecordId, env: &[u8]| {
            let channel = self.channel_of_stored(env);
            if let Ok(mut r) = self.replica_for(channel).lock()
                && !r.contains(id)
                && r.insert(id, env).unwrap_or(false)
            {
                restored += 1;
                // Bounds what automerge buffers for the open transaction.
                if restored % 4096 == 0 {
                    r.settle();
                }
            }
        };
        if rebuild(Channel::Public) || rebuild(Channel::Org) {
            for item in self.store.all_records() {
                let (id, env) = item?;
                let channel = self.channel_of_stored(&env);
                if rebuild(channel) {
                    put_back(&id, &env);
                }
            }
        }
        let mut orphans = Vec::new();
        for id in self.store.doc_pending()? {
            match self.store.record(&id)? {
                Some(env) => put_back(&id, env.encoded()),
                // Marked, then the crash came before the record was stored.
                None => orphans.push(id),
            }
        }
        self.store.doc_saved(&orphans)?;
        for channel in [Channel::Public, Channel::Org] {
            if let Ok(mut r) = self.replica_for(channel).lock() {
                r.settle();
            }
        }
        if restored > 0 {
            tracing::info!(records = restored, "put stored records back into the registry document");
        }
        self.save_replica()?;
        Ok(restored)
    }

    /// The document a stored record belongs in, decided as on the live
    /// path ([`admit::channel_of`]).
    fn channel_of_stored(&self, envelope: &[u8]) -> Channel {
        match Signed::decode(envelope) {
            Ok(env) => admit::channel_of(&self.view(), self.federation(), &env),
            Err(_) => Channel::Public,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::Ingested;
    use packfed_protocol::pb;

    fn stored(store: &Store, n: u8) -> (RecordId, Vec<u8>) {
        let bytes = vec![n; 40];
        let id = RecordId::of(&bytes);
        store.insert_gov(&id, &bytes).unwrap();
        (id, bytes)
    }

    #[test]
    fn registry_document_moves_out_of_sled_and_a_bad_file_asks_for_a_rebuild() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (a, a_bytes) = stored(&store, 1);
        let (b, _) = stored(&store, 2);
        // As older nodes saved it: in sled, holding only `a`.
        let mut legacy = Replica::new();
        legacy.insert(&a, &a_bytes).unwrap();
        let mut key = legacy_prefix(Channel::Public).to_vec();
        key.extend_from_slice(&1u64.to_be_bytes());
        store.crdt.insert(key, legacy.save()).unwrap();

        let (r, file, how) = load_replica(&store, Channel::Public).unwrap();
        assert_eq!(how, Loaded::Whole);
        assert!(
            r.contains(&a) && !r.contains(&b),
            "the saved document is loaded, not rebuilt"
        );
        assert_eq!(store.crdt.scan_prefix(legacy_prefix(Channel::Public)).count(), 0);
        let (again, _, how) = load_replica(&store, Channel::Public).unwrap();
        assert_eq!((again.len(), how), (1, Loaded::Whole), "now read from the file");

        std::fs::write(file.path(), b"not an automerge document").unwrap();
        let (_, _, how) = load_replica(&store, Channel::Public).unwrap();
        assert_eq!(how, Loaded::Rebuild);
    }

    fn home_store(dir: &std::path::Path) -> std::path::PathBuf {
        crate::config::Home {
            root: dir.to_path_buf(),
        }
        .store()
    }

    /// A node in a fresh development home.
    fn dev_node(dir: &std::path::Path) -> Node {
        let home = crate::config::Home {
            root: dir.to_path_buf(),
        };
        crate::init::init_dev_home(&home).unwrap();
        Node::open(home).unwrap()
    }

    fn claim(node: &Node, ns: &str) -> Signed {
        let key = packfed_protocol::KeyPair::generate().unwrap();
        let c = pb::NamespaceClaim {
            namespace: ns.into(),
            claimed_at_ms: 1,
        };
        Signed::sign(&c, &key, node.federation())
    }

    #[test]
    fn records_stored_but_not_saved_in_the_document_are_put_back_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let node = dev_node(dir.path());
        let saved = claim(&node, "saved");
        assert!(matches!(node.ingest(saved.encoded(), Channel::Public), Ingested::New));
        node.save_replica().unwrap();
        assert!(
            node.store.doc_pending().unwrap().is_empty(),
            "a saved record is no longer pending"
        );
        // Stored and flushed, then the process dies before the next save.
        let lost = claim(&node, "lost");
        assert!(matches!(node.ingest(lost.encoded(), Channel::Public), Ingested::New));
        node.store.flush().unwrap();
        assert_eq!(node.store.doc_pending().unwrap(), vec![lost.id()]);
        drop(node);

        let node = Node::open(crate::config::Home {
            root: dir.path().to_path_buf(),
        })
        .unwrap();
        let r = node.replica.lock().unwrap();
        assert!(r.contains(&saved.id()) && r.contains(&lost.id()));
        drop(r);
        assert!(node.store.doc_pending().unwrap().is_empty());
    }

    #[test]
    fn a_torn_append_keeps_the_history_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let node = dev_node(dir.path());
        let first = claim(&node, "first");
        node.ingest(first.encoded(), Channel::Public);
        node.save_replica().unwrap();
        let heads_before = node.replica.lock().unwrap().heads();
        let second = claim(&node, "second");
        node.ingest(second.encoded(), Channel::Public);
        node.save_replica().unwrap();
        let path = node.store.registry_doc(file_name(Channel::Public));
        drop(node);
        // A crash in the middle of the last append: part of it is on disk.
        // (The second record would still be marked pending then: the marks
        // go only after the append is synced.)
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 20]).unwrap();

        let (mut r, _, how) = load_replica(&Store::open(&home_store(dir.path())).unwrap(), Channel::Public).unwrap();
        assert_eq!(how, Loaded::Prefix);
        assert!(r.contains(&first.id()), "the history before the torn piece is kept");
        assert_eq!(r.heads(), heads_before, "the same history, not a rebuilt one");
    }
}
