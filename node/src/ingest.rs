//! Records arriving from peers (gossip or registry sync): verify, check the
//! content rules, store, replicate. Nothing a peer sends is stored or
//! forwarded before this says it is valid, and nothing here can panic on
//! peer input.

use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Result;
use packfed_protocol::records::check_release;
use packfed_protocol::{ContentHash, Domain, RecordId, Signed, Verified, pb};

use crate::docfile::{DocFile, Saved};
use crate::node::Node;
use crate::registry::Replica;
use crate::store::{Store, StoreError};

/// Release signatures verified together in one batch (a failed batch is
/// re-checked one by one, so a bad record costs its batch a second pass).
const RELEASE_BATCH: usize = 1024;

/// What became of one record.
#[derive(Debug)]
pub enum Ingested {
    /// Stored now. For releases, the blob to fetch if the role wants it.
    New(Option<(ContentHash, u64)>),
    /// Already stored.
    Known,
    /// A signed node announcement (kept in memory by the network layer).
    Announcement(Box<Verified<pb::NodeAnnouncement>>),
    /// Refused, with the reason.
    Invalid(String),
}

/// Counters shown in status and metrics.
#[derive(Debug, Default)]
pub struct IngestStats {
    pub accepted: AtomicU64,
    pub rejected: AtomicU64,
    pub crdt_garbage: AtomicU64,
}

impl IngestStats {
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// Which replicated document (and trust boundary) a record came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// Public gossip and the public registry document.
    Public,
    /// The org document, synced only with org peers.
    Org,
}

impl Channel {
    /// The document number in sync requests.
    pub fn doc(self) -> u32 {
        match self {
            Channel::Public => 0,
            Channel::Org => 1,
        }
    }

    pub fn from_doc(doc: u32) -> Option<Channel> {
        match doc {
            0 => Some(Channel::Public),
            1 => Some(Channel::Org),
            _ => None,
        }
    }

    /// Where the document was saved in sled before it moved to a file.
    fn legacy_prefix(self) -> &'static [u8] {
        match self {
            Channel::Public => b"doc/public/",
            Channel::Org => b"doc/org/",
        }
    }

    fn file_name(self) -> &'static str {
        match self {
            Channel::Public => "public.automerge",
            Channel::Org => "org.automerge",
        }
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
    let mut file = DocFile::new(store.registry_doc(channel.file_name()));
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
    for kv in store.crdt.scan_prefix(channel.legacy_prefix()) {
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

/// The document a stored record belongs in: org releases in the org one.
fn record_channel(envelope: &[u8]) -> Channel {
    let org = Signed::decode(envelope)
        .ok()
        .filter(|e| e.domain() == Some(Domain::Release))
        .and_then(|e| <pb::Release as prost::Message>::decode(e.to_pb().payload.as_slice()).ok())
        .is_some_and(|r| r.visibility == pb::Visibility::Org as i32);
    if org { Channel::Org } else { Channel::Public }
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
    /// path: org releases and attestations of org releases in the org one.
    fn channel_of_stored(&self, envelope: &[u8]) -> Channel {
        let Ok(env) = Signed::decode(envelope) else {
            return Channel::Public;
        };
        match env.domain() {
            Some(Domain::Attestation) => env
                .verify::<pb::Attestation>(self.federation())
                .ok()
                .and_then(|v| self.check_subject(&v).ok())
                .unwrap_or(Channel::Public),
            _ => record_channel(envelope),
        }
    }

    /// Verifies and stores one record from a peer.
    pub fn ingest(&self, bytes: &[u8], channel: Channel) -> Ingested {
        let result = self.ingest_inner(bytes, channel);
        self.count(&result);
        result
    }

    fn count(&self, result: &Ingested) {
        match result {
            Ingested::Invalid(reason) => {
                self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%reason, "refused a record from a peer");
            }
            Ingested::New(_) => {
                self.stats.accepted.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }

    fn ingest_inner(&self, bytes: &[u8], channel: Channel) -> Ingested {
        let env = match Signed::decode(bytes) {
            Ok(e) => e,
            Err(e) => return Ingested::Invalid(e.to_string()),
        };
        let fed = *self.federation();
        let stored = match env.domain() {
            Some(Domain::Release) => {
                return match env.verify::<pb::Release>(&fed) {
                    Ok(v) => self.store_release(&v, channel),
                    Err(e) => Ingested::Invalid(e.to_string()),
                };
            }
            Some(Domain::NamespaceClaim) => match env.verify::<pb::NamespaceClaim>(&fed) {
                Ok(v) => {
                    if !valid_namespace(&v.record().namespace) {
                        return Ingested::Invalid(format!("bad namespace {:?}", v.record().namespace));
                    }
                    if self.store.has_record(&v.id()).unwrap_or(false) {
                        return Ingested::Known;
                    }
                    self.store.insert_claim(&v).map(|_| None)
                }
                Err(e) => return Ingested::Invalid(e.to_string()),
            },
            Some(Domain::Yank) => match env.verify::<pb::Yank>(&fed) {
                Ok(v) => {
                    if self.store.has_record(&v.id()).unwrap_or(false) {
                        return Ingested::Known;
                    }
                    self.store.insert_yank(&v).map(|_| None)
                }
                Err(e) => return Ingested::Invalid(e.to_string()),
            },
            Some(Domain::Attestation) => {
                let v = match env.verify::<pb::Attestation>(&fed) {
                    Ok(v) => v,
                    Err(e) => return Ingested::Invalid(e.to_string()),
                };
                return self
                    .ingest_attestations(&[v], channel, false)
                    .pop()
                    .unwrap_or(Ingested::Known);
            }
            Some(Domain::Proposal | Domain::Vote | Domain::ProposalCancel) => {
                return match crate::governance::decode_record(&env, &fed, crate::packing::now_ms()) {
                    Ok(r) => match self.store_gov(r, &env) {
                        Ok(true) => Ingested::New(None),
                        Ok(false) => Ingested::Known,
                        Err(e) => Ingested::Invalid(format!("store: {e}")),
                    },
                    Err(e) => Ingested::Invalid(e.to_string()),
                };
            }
            Some(Domain::LearningSummary) => {
                return match env.verify::<pb::LearningSummary>(&fed) {
                    Ok(v) => match self.learn_receive(&v, crate::packing::now_ms()) {
                        Ok(true) => Ingested::New(None),
                        Ok(false) => Ingested::Known,
                        Err(e) => Ingested::Invalid(e),
                    },
                    Err(e) => {
                        self.learn_rejected(crate::learn::node::Rejection::Signature);
                        Ingested::Invalid(e.to_string())
                    }
                };
            }
            Some(Domain::NodeAnnouncement) => {
                return match env.verify::<pb::NodeAnnouncement>(&fed) {
                    Ok(v) => Ingested::Announcement(Box::new(v)),
                    Err(e) => Ingested::Invalid(e.to_string()),
                };
            }
            None => return Ingested::Invalid(format!("unknown record kind {:?}", env.kind())),
        };
        self.after_store(stored, &env)
    }

    /// Replicates a record just stored, or reports the store's failure.
    fn after_store(&self, stored: Result<Option<(ContentHash, u64)>, StoreError>, env: &Signed) -> Ingested {
        match stored {
            Ok(fetch) => {
                let target = if record_channel(env.encoded()) == Channel::Org {
                    Channel::Org
                } else {
                    Channel::Public
                };
                self.replicate_to(target, &env.id(), env.encoded());
                Ingested::New(fetch)
            }
            Err(e) => {
                tracing::error!(error = %e, "store failed while ingesting a record");
                Ingested::Invalid(format!("store: {e}"))
            }
        }
    }

    /// Checks, stores and replicates a release whose signature holds.
    fn store_release(&self, v: &Verified<pb::Release>, channel: Channel) -> Ingested {
        if channel == Channel::Public && v.record().visibility == pb::Visibility::Org as i32 {
            return Ingested::Invalid("an org release arrived on a public channel".into());
        }
        let facts = match check_release(v.record()) {
            Ok(f) => f,
            Err(e) => return Ingested::Invalid(e.to_string()),
        };
        if self.store.has_record(&v.id()).unwrap_or(false) {
            return Ingested::Known;
        }
        // A release is judged on arrival; a mirror fetches only what the
        // policy accepts (later, if attestations come, see
        // `store_attestations`).
        let stored = self
            .store
            .insert_release_record(v, &facts.hash)
            .map(|_| self.judge_arrival(v).then_some((facts.hash, v.record().size)));
        self.after_store(stored, v.envelope())
    }
}

impl Node {
    /// Evaluates a release that just arrived; true if it is accepted (and
    /// visible). Built from the verified record, so a large sync does not
    /// read and verify every release again.
    fn judge_arrival(&self, v: &Verified<pb::Release>) -> bool {
        if self.policy().empty {
            return true;
        }
        let ns = v.record().name.split('/').next().unwrap_or_default();
        match self.store.namespace_owner(ns) {
            Ok(Some(o)) if o.owner == v.signer().0 => {}
            _ => return false, // not visible: nothing to serve or mirror
        }
        let entry = crate::store::ReleaseEntry {
            record_id: v.id(),
            envelope: v.envelope().clone(),
            release: v.record().clone(),
            publisher: v.signer(),
            yanked: false,
        };
        match self.reevaluate_entry(&entry) {
            Ok(Some(_)) => true,
            Ok(None) => self
                .store
                .status(&entry.record_id)
                .ok()
                .flatten()
                .is_some_and(|s| s.accepted()),
            Err(e) => {
                tracing::warn!(error = %e, "evaluating an arriving release failed");
                false
            }
        }
    }

    /// Stores signature-checked attestations and says what became of each.
    fn ingest_attestations(
        &self,
        batch: &[Verified<pb::Attestation>],
        channel: Channel,
        in_doc: bool,
    ) -> Vec<Ingested> {
        let crate::trust::StoredAttestations { results, fetch } = self.store_attestations(batch, channel, in_doc);
        let mut fetch = fetch.into_iter();
        results
            .into_iter()
            .map(|r| match r {
                Ok(true) => Ingested::New(fetch.next()),
                Ok(false) => Ingested::Known,
                Err(e) => Ingested::Invalid(e.to_string()),
            })
            .collect()
    }

    /// Ingests many records that came out of `channel`'s registry document
    /// (registry sync): attestations, the bulk of a large registry, get one
    /// batched signature check; every other record goes through
    /// [`Node::ingest`]. Results are in input order.
    pub fn ingest_batch(&self, records: &[Vec<u8>], channel: Channel) -> Vec<Ingested> {
        let mut out: Vec<Option<Ingested>> = (0..records.len()).map(|_| None).collect();
        let mut attest_idx = Vec::new();
        let mut attest_envs = Vec::new();
        let mut release_idx = Vec::new();
        let mut release_envs = Vec::new();
        let mut claims = Vec::new();
        let mut rest = Vec::new();
        for (i, bytes) in records.iter().enumerate() {
            let env = match Signed::decode(bytes) {
                Ok(env) => env,
                Err(_) => {
                    rest.push(i);
                    continue;
                }
            };
            let (idx, envs) = match env.domain() {
                Some(Domain::Attestation) => (&mut attest_idx, &mut attest_envs),
                Some(Domain::Release) => (&mut release_idx, &mut release_envs),
                // Namespace claims first: a release is judged (and mirrored)
                // on arrival only if its owner's claim is already known.
                Some(Domain::NamespaceClaim) => {
                    claims.push(i);
                    continue;
                }
                _ => {
                    rest.push(i);
                    continue;
                }
            };
            if self.store.has_record(&env.id()).unwrap_or(false) {
                out[i] = Some(Ingested::Known);
                continue;
            }
            idx.push(i);
            envs.push(env);
        }
        for i in claims {
            out[i] = Some(self.ingest(&records[i], channel));
        }
        // Releases next (yanks and attestations name them), their
        // signatures checked in batches: a fresh node's first sync brings
        // every release at once.
        for (idx, envs) in release_idx
            .chunks(RELEASE_BATCH)
            .zip(release_envs.chunks(RELEASE_BATCH))
        {
            let verified = packfed_protocol::verify_batch::<pb::Release>(envs, self.federation());
            for (i, v) in idx.iter().zip(verified) {
                let r = match v {
                    Ok(v) => self.store_release(&v, channel),
                    Err(e) => Ingested::Invalid(e.to_string()),
                };
                self.count(&r);
                out[*i] = Some(r);
            }
        }
        for i in rest {
            out[i] = Some(self.ingest(&records[i], channel));
        }
        if !attest_envs.is_empty() {
            let verified = packfed_protocol::verify_batch::<pb::Attestation>(&attest_envs, self.federation());
            let mut good = Vec::new();
            let mut good_idx = Vec::new();
            for (i, v) in attest_idx.iter().zip(verified) {
                match v {
                    Ok(v) => {
                        good.push(v);
                        good_idx.push(*i);
                    }
                    Err(e) => out[*i] = Some(Ingested::Invalid(e.to_string())),
                }
            }
            for (i, r) in good_idx.into_iter().zip(self.ingest_attestations(&good, channel, true)) {
                match &r {
                    Ingested::New(_) => self.stats.accepted.fetch_add(1, Ordering::Relaxed),
                    Ingested::Invalid(_) => self.stats.rejected.fetch_add(1, Ordering::Relaxed),
                    _ => 0,
                };
                out[i] = Some(r);
            }
        }
        out.into_iter().map(|o| o.unwrap_or(Ingested::Known)).collect()
    }
}

fn valid_namespace(ns: &str) -> bool {
    format!("{ns}/x").parse::<packfed_protocol::records::PackName>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let mut key = Channel::Public.legacy_prefix().to_vec();
        key.extend_from_slice(&1u64.to_be_bytes());
        store.crdt.insert(key, legacy.save()).unwrap();

        let (r, file, how) = load_replica(&store, Channel::Public).unwrap();
        assert_eq!(how, Loaded::Whole);
        assert!(
            r.contains(&a) && !r.contains(&b),
            "the saved document is loaded, not rebuilt"
        );
        assert_eq!(store.crdt.scan_prefix(Channel::Public.legacy_prefix()).count(), 0);
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
        assert!(matches!(
            node.ingest(saved.encoded(), Channel::Public),
            Ingested::New(_)
        ));
        node.save_replica().unwrap();
        assert!(
            node.store.doc_pending().unwrap().is_empty(),
            "a saved record is no longer pending"
        );
        // Stored and flushed, then the process dies before the next save.
        let lost = claim(&node, "lost");
        assert!(matches!(node.ingest(lost.encoded(), Channel::Public), Ingested::New(_)));
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
        let path = node.store.registry_doc(Channel::Public.file_name());
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
