//! Registry replication: an automerge document whose root map holds signed
//! records keyed by their record id (hex). Sans-IO: callers feed it records
//! and sync messages and get back what to verify and what to send.
//!
//! Authority never comes from the document. Anything a peer writes into it
//! is only a candidate: the node indexes a value after checking that it
//! hashes to its key and that its signature and namespace rule hold. A
//! value whose hash does not match its key is garbage and is counted; a key
//! a peer deletes is written back, so a vandal cannot hide records from
//! third parties. Records live at the root (no nested map), because two
//! nodes creating the same nested map concurrently would conflict and one
//! side's entries would vanish from view.

use automerge::sync::{self, SyncDoc};
use automerge::transaction::Transactable;
use automerge::{AutoCommit, PatchAction, ROOT, ReadDoc, ScalarValue, Value};
use packfed_protocol::RecordId;

mod bounds;

/// Largest sync message we accept (a fresh peer's first sync of a large
/// registry is one message).
pub const MAX_SYNC_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error("sync message of {0} bytes is over the limit")]
    TooLarge(usize),
    #[error("sync message of {wire} bytes {error}: refused unread (a compression bomb, or not automerge)")]
    Inflates { wire: usize, error: bounds::BoundError },
    #[error("malformed sync message: {0}")]
    Malformed(String),
    #[error("automerge: {0}")]
    Automerge(#[from] automerge::AutomergeError),
}

/// What a received sync message brought.
#[derive(Debug, Default)]
pub struct Received {
    /// (record id, envelope bytes) whose bytes hash to their key: to verify.
    pub candidates: Vec<(RecordId, Vec<u8>)>,
    /// Entries that were not records at all (bad key, bad value, wrong hash).
    pub garbage: usize,
    /// Record ids the peer deleted or overwrote with bytes that are not that
    /// record: to put back from the store ([`Replica::restore`]), so no peer
    /// can remove a valid record from what this node offers others.
    pub damaged: Vec<RecordId>,
}

/// One replicated registry document.
pub struct Replica {
    doc: AutoCommit,
    /// Heads at the last save. Tracked here because automerge starts a
    /// loaded document's own cursor empty, so its first incremental save
    /// would repeat the whole history.
    saved: Vec<automerge::ChangeHash>,
    /// Records put or received since the last save: once that save is
    /// synced they are in the file, and their pending marks can go.
    unsaved: Vec<RecordId>,
}

impl Default for Replica {
    fn default() -> Self {
        Self::new()
    }
}

impl Replica {
    pub fn new() -> Replica {
        let mut doc = AutoCommit::new();
        doc.update_diff_cursor();
        Replica {
            doc,
            saved: Vec::new(),
            unsaved: Vec::new(),
        }
    }

    /// Loads a saved document (snapshot followed by incremental saves).
    pub fn load(bytes: &[u8]) -> Result<Replica, ReplicaError> {
        let mut doc = AutoCommit::load(bytes)?;
        doc.update_diff_cursor();
        let saved = doc.get_heads();
        Ok(Replica {
            doc,
            saved,
            unsaved: Vec::new(),
        })
    }

    /// Loads saved pieces in order (a snapshot, then incremental saves),
    /// stopping at the first piece that does not load. Returns the document
    /// and how many pieces it holds; `Ok` with 0 pieces is an empty document.
    pub fn load_pieces<'a>(mut pieces: impl Iterator<Item = &'a [u8]>) -> Result<(Replica, usize), ReplicaError> {
        let Some(first) = pieces.next() else {
            return Ok((Replica::new(), 0));
        };
        let mut doc = AutoCommit::load(first)?;
        let mut loaded = 1;
        for piece in pieces {
            // The file's framing already dropped a torn last piece; a piece
            // that still fails (damaged bytes) ends what can be trusted.
            if let Err(e) = doc.load_incremental(piece) {
                tracing::warn!(error = %e, piece = loaded, "registry document piece does not load; ignoring it and what follows");
                break;
            }
            loaded += 1;
        }
        doc.update_diff_cursor();
        let saved = doc.get_heads();
        Ok((
            Replica {
                doc,
                saved,
                unsaved: Vec::new(),
            },
            loaded,
        ))
    }

    pub fn contains(&self, id: &RecordId) -> bool {
        self.doc.get(ROOT, id.to_hex()).ok().flatten().is_some()
    }

    /// The document's current heads (its history, by change hash).
    pub fn heads(&mut self) -> Vec<automerge::ChangeHash> {
        self.doc.get_heads()
    }

    pub fn len(&self) -> usize {
        self.doc.length(ROOT)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds a verified record; false if it was already there.
    pub fn insert(&mut self, id: &RecordId, envelope: &[u8]) -> Result<bool, ReplicaError> {
        self.unsaved.push(*id);
        if self.contains(id) {
            return Ok(false);
        }
        // No commit here: the open transaction is committed by the next
        // sync, save or `settle`, so a burst of records becomes one change.
        // A change per record cost ~3 KB of memory each and made every sync
        // walk 100k change hashes.
        self.doc.put(ROOT, id.to_hex(), ScalarValue::Bytes(envelope.to_vec()))?;
        Ok(true)
    }

    /// Commits pending inserts and marks them seen, so `receive` reports
    /// only what peers brought.
    /// The automerge document itself, for tools that write changes of their
    /// own (a test harness playing a peer that vandalizes the registry).
    /// Whatever it writes reaches peers only as candidates they verify.
    pub fn document_mut(&mut self) -> &mut AutoCommit {
        &mut self.doc
    }

    pub fn settle(&mut self) {
        self.doc.update_diff_cursor();
    }

    /// The next message for a peer, if there is anything to say.
    pub fn generate(&mut self, state: &mut sync::State) -> Option<Vec<u8>> {
        self.doc.sync().generate_sync_message(state).map(|m| m.encode())
    }

    /// Applies a peer's message and returns the new entries to verify.
    pub fn receive(&mut self, state: &mut sync::State, bytes: &[u8]) -> Result<Received, ReplicaError> {
        if bytes.len() > MAX_SYNC_MESSAGE_BYTES {
            return Err(ReplicaError::TooLarge(bytes.len()));
        }
        // automerge inflates without a limit: measure first.
        bounds::inflated_size(bytes, bounds::inflate_limit(bytes.len())).map_err(|error| ReplicaError::Inflates {
            wire: bytes.len(),
            error,
        })?;
        let msg = sync::Message::decode(bytes).map_err(|e| ReplicaError::Malformed(e.to_string()))?;
        // Our own pending inserts are not news.
        self.settle();
        self.doc
            .sync()
            .receive_sync_message(state, msg)
            .map_err(|e| ReplicaError::Malformed(e.to_string()))?;
        let mut out = Received::default();
        let mut deleted = Vec::new();
        for patch in self.doc.diff_incremental() {
            if patch.obj != ROOT {
                out.garbage += 1;
                continue;
            }
            match patch.action {
                PatchAction::PutMap { key, .. } => match key.parse::<RecordId>() {
                    Ok(id) => match self.matching_value(&id) {
                        Some(v) => {
                            self.unsaved.push(id);
                            out.candidates.push((id, v))
                        }
                        None => {
                            out.garbage += 1;
                            out.damaged.push(id);
                        }
                    },
                    Err(_) => out.garbage += 1,
                },
                PatchAction::DeleteMap { key } => deleted.push(key),
                _ => out.garbage += 1,
            }
        }
        out.garbage += deleted.len();
        out.damaged
            .extend(deleted.iter().filter_map(|k| k.parse::<RecordId>().ok()));
        Ok(out)
    }

    /// Among the (possibly conflicting) values at `id`, the one that is a
    /// record with that id.
    fn matching_value(&self, id: &RecordId) -> Option<Vec<u8>> {
        let all = self.doc.get_all(ROOT, id.to_hex()).ok()?;
        all.into_iter().find_map(|(v, _)| match v {
            Value::Scalar(s) => match s.as_ref() {
                ScalarValue::Bytes(b) if RecordId::of(b) == *id => Some(b.clone()),
                _ => None,
            },
            _ => None,
        })
    }

    /// Writes back verified records a peer deleted.
    pub fn restore(&mut self, records: &[(RecordId, Vec<u8>)]) -> Result<(), ReplicaError> {
        for (id, bytes) in records {
            if self.matching_value(id).is_none() {
                self.doc.put(ROOT, id.to_hex(), ScalarValue::Bytes(bytes.clone()))?;
                self.unsaved.push(*id);
            }
        }
        self.doc.commit();
        self.doc.update_diff_cursor();
        Ok(())
    }

    /// The records put or received since the last call: what the next
    /// save holds that earlier ones may not.
    pub fn take_unsaved(&mut self) -> Vec<RecordId> {
        std::mem::take(&mut self.unsaved)
    }

    /// The whole document, compressed.
    pub fn save(&mut self) -> Vec<u8> {
        let bytes = self.doc.save();
        self.saved = self.doc.get_heads();
        bytes
    }

    /// The changes since the last save or load.
    pub fn save_incremental(&mut self) -> Vec<u8> {
        let heads = self.doc.get_heads();
        if heads == self.saved {
            return Vec::new();
        }
        let bytes = self.doc.save_after(&self.saved);
        self.saved = heads;
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(n: u8) -> (RecordId, Vec<u8>) {
        let bytes = vec![n; 40];
        (RecordId::of(&bytes), bytes)
    }

    /// Runs sync rounds between two replicas until both are quiet.
    fn sync_pair(a: &mut Replica, b: &mut Replica) -> (Received, Received) {
        let (mut sa, mut sb) = (sync::State::new(), sync::State::new());
        let (mut got_a, mut got_b) = (Received::default(), Received::default());
        for _ in 0..20 {
            let m1 = a.generate(&mut sa);
            if let Some(m) = &m1 {
                let r = b.receive(&mut sb, m).unwrap();
                got_b.candidates.extend(r.candidates);
                got_b.garbage += r.garbage;
            }
            let m2 = b.generate(&mut sb);
            if let Some(m) = &m2 {
                let r = a.receive(&mut sa, m).unwrap();
                got_a.candidates.extend(r.candidates);
                got_a.garbage += r.garbage;
            }
            if m1.is_none() && m2.is_none() {
                break;
            }
        }
        (got_a, got_b)
    }

    #[test]
    fn concurrent_inserts_converge_and_surface_once() {
        let (mut a, mut b) = (Replica::new(), Replica::new());
        let (r1, r2, r3) = (rec(1), rec(2), rec(3));
        a.insert(&r1.0, &r1.1).unwrap();
        a.insert(&r3.0, &r3.1).unwrap();
        b.insert(&r2.0, &r2.1).unwrap();
        b.insert(&r3.0, &r3.1).unwrap();
        let (got_a, got_b) = sync_pair(&mut a, &mut b);
        assert_eq!(a.len(), 3);
        assert_eq!(b.len(), 3);
        let ids_a: Vec<_> = got_a.candidates.iter().map(|c| c.0).collect();
        let ids_b: Vec<_> = got_b.candidates.iter().map(|c| c.0).collect();
        assert!(ids_a.contains(&r2.0) && !ids_a.contains(&r1.0));
        assert!(ids_b.contains(&r1.0) && !ids_b.contains(&r2.0));
    }

    #[test]
    fn a_burst_of_inserts_is_one_change_and_not_news() {
        let (mut a, mut b) = (Replica::new(), Replica::new());
        for n in 0..50 {
            let (id, bytes) = rec(n);
            assert!(a.insert(&id, &bytes).unwrap());
        }
        assert_eq!(a.doc.get_changes(&[]).len(), 1, "50 inserts, one change");
        let (extra_id, extra) = rec(200);
        b.insert(&extra_id, &extra).unwrap();
        let (got_a, got_b) = sync_pair(&mut a, &mut b);
        assert_eq!(a.doc.get_changes(&[]).len(), 2, "A's change and B's");
        assert_eq!(got_b.candidates.len(), 50);
        // A's own 50 were pending when B's record arrived: only B's is news.
        assert_eq!(got_a.candidates.len(), 1);
        assert_eq!(got_a.candidates[0].0, extra_id);
    }

    #[test]
    fn a_loaded_document_saves_only_what_is_new() {
        let mut a = Replica::new();
        let (id, bytes) = rec(1);
        a.insert(&id, &bytes).unwrap();
        let mut b = Replica::load(&a.save()).unwrap();
        assert!(b.save_incremental().is_empty());
        let (id2, bytes2) = rec(2);
        b.insert(&id2, &bytes2).unwrap();
        let piece = b.save_incremental();
        assert!(
            !piece.is_empty() && piece.len() < 200,
            "one small change, not the history"
        );
        assert!(b.save_incremental().is_empty());
    }

    #[test]
    fn garbage_is_counted_not_offered() {
        let (mut a, mut b) = (Replica::new(), Replica::new());
        // A vandal writes a value under a key it does not hash to, and a non-id key.
        let (id, _) = rec(9);
        a.doc.put(ROOT, id.to_hex(), ScalarValue::Bytes(vec![0; 10])).unwrap();
        a.doc.put(ROOT, "not-an-id", 5).unwrap();
        a.doc.commit();
        let (_, got_b) = sync_pair(&mut a, &mut b);
        assert!(got_b.candidates.is_empty());
        assert_eq!(got_b.garbage, 2);
    }
}
