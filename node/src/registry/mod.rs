//! Registry replication: an automerge document whose root map holds signed
//! records keyed by their record id (hex). Sans-IO: callers feed it records
//! and sync messages and get back what to verify and what to send.
//!
//! Authority never comes from the document. A peer's changes enter only
//! after [`screen`] found each of them to be puts of signed records under
//! their own ids (deletes, overwrites and garbage are refused with what is
//! built on them), and the node still indexes a record only after checking
//! it whole. Records live at the root (no nested map), because two nodes
//! creating the same nested map concurrently would conflict and one side's
//! entries would vanish from view.

use automerge::sync::{self, SyncDoc};
use automerge::transaction::Transactable;
use automerge::{AutoCommit, ChangeHash, PatchAction, ROOT, ReadDoc, ScalarValue, Value};
use packfed_protocol::RecordId;

mod bounds;
mod presplit;
mod screen;

/// How many refused change hashes a document remembers, so that changes a
/// peer builds on them later are refused too without being queued forever.
const REMEMBERED_REFUSALS: usize = 65_536;

/// Largest sync message we accept (a fresh peer's first sync of a large
/// registry is one message).
pub const MAX_SYNC_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// A received batch this large may leave big slabs in the value column.
const LARGE_BATCH: usize = 4096;

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

/// A peer's sync message after [`Replica::screen`]: the message, the
/// changes that passed, and the hashes of those refused.
pub struct Screened {
    msg: sync::Message,
    kept: Vec<automerge::Change>,
    refused: Vec<ChangeHash>,
}

/// What a received sync message brought.
#[derive(Debug, Default)]
pub struct Received {
    /// (record id, envelope bytes) new in the document, in id order: to
    /// verify and admit.
    pub candidates: Vec<(RecordId, Vec<u8>)>,
    /// Changes refused: holding something other than valid records under
    /// their ids, or built on such a change.
    pub refused: usize,
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
    /// Changes refused lately (bounded; see [`REMEMBERED_REFUSALS`]).
    refused: std::collections::HashSet<ChangeHash>,
    /// The value column may hold a big slab (a whole document received by
    /// sync): split it before the next change (see [`presplit`]). Loads
    /// split at once.
    unsplit: bool,
    /// Received batches whose records are not stored yet (see
    /// [`Replica::ahead_of_store`]).
    unstored: usize,
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
            refused: Default::default(),
            unsplit: false,
            unstored: 0,
        }
    }

    /// Loads a saved document (snapshot followed by incremental saves).
    pub fn load(bytes: &[u8]) -> Result<Replica, ReplicaError> {
        let mut doc = AutoCommit::load(bytes)?;
        presplit::split_value_column(&mut doc);
        doc.update_diff_cursor();
        let saved = doc.get_heads();
        Ok(Replica {
            doc,
            saved,
            unsaved: Vec::new(),
            refused: Default::default(),
            unsplit: false,
            unstored: 0,
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
        // Split before the pieces apply, and even with none: split, the
        // column takes less memory than as loaded.
        presplit::split_value_column(&mut doc);
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
                refused: Default::default(),
                unsplit: false,
                unstored: 0,
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
        self.split_if_needed();
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

    /// Splits the value column before a change if a received batch may
    /// have left big slabs (see [`presplit`]); ~2 µs per record.
    fn split_if_needed(&mut self) {
        if std::mem::take(&mut self.unsplit) {
            presplit::split_value_column(&mut self.doc);
        }
    }

    /// The next message for a peer, if there is anything to say.
    pub fn generate(&mut self, state: &mut sync::State) -> Option<Vec<u8>> {
        self.doc.sync().generate_sync_message(state).map(|m| m.encode())
    }

    /// Applies a peer's message and returns the new entries to verify:
    /// [`Replica::screen`], then [`Replica::apply`].
    pub fn receive(
        &mut self,
        state: &mut sync::State,
        bytes: &[u8],
        valid: impl Fn(&[u8]) -> bool + Sync,
    ) -> Result<Received, ReplicaError> {
        let screened = Replica::screen(bytes, valid)?;
        self.apply(state, screened)
    }

    /// Bounds a peer's message and screens its changes (see [`screen`]);
    /// `valid` judges a record's bytes (the caller's signature check). Needs
    /// no document, so the costly part runs without holding one.
    pub fn screen(bytes: &[u8], valid: impl Fn(&[u8]) -> bool + Sync) -> Result<Screened, ReplicaError> {
        if bytes.len() > MAX_SYNC_MESSAGE_BYTES {
            return Err(ReplicaError::TooLarge(bytes.len()));
        }
        // automerge inflates without a limit: measure first.
        bounds::inflated_size(bytes, bounds::inflate_limit(bytes.len())).map_err(|error| ReplicaError::Inflates {
            wire: bytes.len(),
            error,
        })?;
        let msg = sync::Message::decode(bytes).map_err(|e| ReplicaError::Malformed(e.to_string()))?;
        let changes = screen::changes(msg.changes.iter()).map_err(ReplicaError::Malformed)?;
        let mut clean = screen::clean(&changes, &valid).into_iter();
        let screened = screen::refuse(changes, |_| !clean.next().unwrap_or(false));
        Ok(Screened {
            msg,
            kept: screened.kept,
            refused: screened.refused,
        })
    }

    /// Applies a screened message: changes built on ones refused earlier
    /// are refused too, the rest go to automerge.
    pub fn apply(&mut self, state: &mut sync::State, screened: Screened) -> Result<Received, ReplicaError> {
        let Screened {
            mut msg,
            kept,
            mut refused,
        } = screened;
        let later = screen::refuse(kept, |c| c.deps().iter().any(|d| self.refused.contains(d)));
        refused.extend(later.refused);
        let mut out = Received::default();
        if !refused.is_empty() {
            out.refused = refused.len();
            if self.refused.len() + out.refused > REMEMBERED_REFUSALS {
                self.refused.clear();
            }
            self.refused.extend(refused);
            // Only the clean changes go on (otherwise the message as sent,
            // which keeps automerge's fast load of a whole document).
            let kept: Vec<Vec<u8>> = later.kept.iter().map(|c| c.raw_bytes().to_vec()).collect();
            msg.changes = kept.into();
        }
        self.split_if_needed();
        // Our own pending inserts are not news.
        self.settle();
        let before = self.len();
        self.doc
            .sync()
            .receive_sync_message(state, msg)
            .map_err(|e| ReplicaError::Malformed(e.to_string()))?;
        // An empty document takes a whole one as a load (one big slab),
        // and a large batch can leave big slabs too: split again before
        // the next change, which is cheap beside what the batch cost.
        let added = self.len().saturating_sub(before);
        if added > 0 && (before == 0 || added >= LARGE_BATCH.max(before / 8)) {
            self.unsplit = true;
        }
        self.forget_refused_heads(state);
        for patch in self.doc.diff_incremental() {
            // Screened changes hold only root puts; a conflicting put of the
            // same record shows as a put too.
            let PatchAction::PutMap { key, value, .. } = patch.action else {
                continue;
            };
            // The patch carries the value put; the document is asked (a
            // map lookup per record, 4 % of a fresh node's sync) only when
            // that value is not the record, i.e. for a conflicting put.
            let found = key.parse::<RecordId>().ok().and_then(|id| {
                let v = record_bytes(&value.0, &id).or_else(|| self.matching_value(&id))?;
                Some((id, v))
            });
            if let (true, Some((id, v))) = (patch.obj == ROOT, found) {
                self.unsaved.push(id);
                out.candidates.push((id, v));
            }
        }
        // In id order (automerge's diff already walks keys in order, so
        // this costs a pass): the store keys records by id, and a whole
        // registry of 50,000 releases stored in id order took 1.7 s where
        // the order a peer sent took 2.9 s.
        out.candidates.sort_unstable_by_key(|(id, _)| *id);
        if !out.candidates.is_empty() {
            self.unstored += 1;
        }
        Ok(out)
    }

    /// Whether the document holds received records the store may not hold
    /// yet: [`Replica::apply`] returned candidates and the caller has not
    /// called [`Replica::stored`] since. The document must not be saved
    /// then: a crash would leave a file that lists records the store never
    /// got, and no peer sends a document's records twice.
    pub fn ahead_of_store(&self) -> bool {
        self.unstored > 0
    }

    /// Whether the document holds every one of these changes.
    pub fn holds_changes(&mut self, hashes: &[ChangeHash]) -> bool {
        hashes.iter().all(|h| self.doc.get_change_by_hash(h).is_some())
    }

    /// The candidates of one [`Replica::apply`] are stored (or refused).
    pub fn stored(&mut self) {
        self.unstored = self.unstored.saturating_sub(1);
    }

    /// A peer whose heads are refused changes is, for this document, where
    /// its acceptable changes end: otherwise automerge would ask for the
    /// refused ones again every round. If all that is left of its heads is
    /// known here, it is treated as level with us (automerge still sends
    /// it what its `have` lacks), so the session ends.
    fn forget_refused_heads(&mut self, state: &mut sync::State) {
        let Some(heads) = &mut state.their_heads else { return };
        if !heads.iter().any(|h| self.refused.contains(h)) {
            return;
        }
        heads.retain(|h| !self.refused.contains(h));
        let all_known = heads.iter().all(|h| self.doc.get_change_by_hash(h).is_some());
        if all_known {
            *heads = self.doc.get_heads();
        }
    }

    /// Among the (possibly conflicting) values at `id`, the one that is a
    /// record with that id.
    fn matching_value(&self, id: &RecordId) -> Option<Vec<u8>> {
        let all = self.doc.get_all(ROOT, id.to_hex()).ok()?;
        all.into_iter().find_map(|(v, _)| record_bytes(&v, id))
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

/// `v`'s bytes if it is the record with id `id`.
fn record_bytes(v: &Value<'_>, id: &RecordId) -> Option<Vec<u8>> {
    match v {
        Value::Scalar(s) => match s.as_ref() {
            ScalarValue::Bytes(b) if RecordId::of(b) == *id => Some(b.clone()),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(n: u8) -> (RecordId, Vec<u8>) {
        let bytes = vec![n; 40];
        (RecordId::of(&bytes), bytes)
    }

    /// The test's signature check: records it calls forged start with 0xff.
    fn valid(bytes: &[u8]) -> bool {
        bytes.first() != Some(&0xff)
    }

    /// Runs sync rounds between two replicas until both are quiet.
    fn sync_pair(a: &mut Replica, b: &mut Replica) -> (Received, Received) {
        let (mut sa, mut sb) = (sync::State::new(), sync::State::new());
        let (mut got_a, mut got_b) = (Received::default(), Received::default());
        for _ in 0..20 {
            let m1 = a.generate(&mut sa);
            if let Some(m) = &m1 {
                let r = b.receive(&mut sb, m, valid).unwrap();
                got_b.candidates.extend(r.candidates);
                got_b.refused += r.refused;
            }
            let m2 = b.generate(&mut sb);
            if let Some(m) = &m2 {
                let r = a.receive(&mut sa, m, valid).unwrap();
                got_a.candidates.extend(r.candidates);
                got_a.refused += r.refused;
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
    fn received_records_hold_the_document_back_until_stored() {
        let (mut a, mut b) = (Replica::new(), Replica::new());
        let r1 = rec(1);
        a.insert(&r1.0, &r1.1).unwrap();
        assert!(!a.ahead_of_store(), "its own inserts are stored first");
        let (_, got_b) = sync_pair(&mut a, &mut b);
        assert_eq!(got_b.candidates.len(), 1);
        assert!(b.ahead_of_store(), "a received record is not stored yet");
        b.stored();
        assert!(!b.ahead_of_store());
        // Nothing new: no batch to store.
        let (_, again) = sync_pair(&mut a, &mut b);
        assert!(again.candidates.is_empty());
        assert!(!b.ahead_of_store());
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
        assert!(
            got_b.candidates.windows(2).all(|w| w[0].0 < w[1].0),
            "candidates come in id order, the store's key order"
        );
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
    fn a_loaded_document_reports_only_what_peers_bring() {
        let mut a = Replica::new();
        for n in 0..100 {
            let (id, bytes) = rec(n);
            a.insert(&id, &bytes).unwrap();
        }
        // Loaded: the load splits its value column (put + rollback at
        // existing keys), which must surface as nothing.
        let mut b = Replica::load(&a.save()).unwrap();
        let (mine, mine_bytes) = rec(150);
        assert!(b.insert(&mine, &mine_bytes).unwrap());
        let (theirs, theirs_bytes) = rec(200);
        a.insert(&theirs, &theirs_bytes).unwrap();
        let (got_a, got_b) = sync_pair(&mut a, &mut b);
        let ids = |r: &Received| r.candidates.iter().map(|c| c.0).collect::<Vec<_>>();
        assert_eq!(ids(&got_b), vec![theirs]);
        assert_eq!(ids(&got_a), vec![mine]);
        assert_eq!((a.len(), b.len()), (102, 102));
        // A document loaded from a snapshot and a piece, then changed.
        let mut c = Replica::load(&b.save()).unwrap();
        let (later, later_bytes) = rec(201);
        c.insert(&later, &later_bytes).unwrap();
        let piece = c.save_incremental();
        let snapshot = b.save();
        let (mut d, pieces) = Replica::load_pieces([&snapshot[..], &piece[..]].into_iter()).unwrap();
        assert_eq!((pieces, d.len()), (2, 103));
        assert!(d.contains(&later));
        let (next, next_bytes) = rec(202);
        assert!(d.insert(&next, &next_bytes).unwrap());
        assert_eq!(d.len(), 104);
    }

    /// A vandal's change: `edit` on `a`'s document, committed.
    fn vandalize(a: &mut Replica, edit: impl FnOnce(&mut AutoCommit)) {
        a.settle();
        edit(&mut a.doc);
        a.doc.commit();
    }

    #[test]
    fn garbage_never_enters_and_is_never_offered_on() {
        for (what, edit) in [
            (
                "a value under a key it does not hash to",
                Box::new(|d: &mut AutoCommit| {
                    d.put(ROOT, rec(9).0.to_hex(), ScalarValue::Bytes(vec![0; 10])).unwrap();
                }) as Box<dyn FnOnce(&mut AutoCommit)>,
            ),
            (
                "a key that is no id",
                Box::new(|d: &mut AutoCommit| d.put(ROOT, "not-an-id", 5).unwrap()),
            ),
            (
                "an upper-case copy of an id",
                Box::new(|d: &mut AutoCommit| {
                    let (id, bytes) = rec(8);
                    d.put(ROOT, id.to_hex().to_uppercase(), ScalarValue::Bytes(bytes))
                        .unwrap();
                }),
            ),
            (
                "a forged record",
                Box::new(|d: &mut AutoCommit| {
                    let bytes = vec![0xff; 40];
                    d.put(ROOT, RecordId::of(&bytes).to_hex(), ScalarValue::Bytes(bytes))
                        .unwrap();
                }),
            ),
            (
                "a nested object",
                Box::new(|d: &mut AutoCommit| {
                    d.put_object(ROOT, rec(7).0.to_hex(), automerge::ObjType::Map).unwrap();
                }),
            ),
        ] {
            let (mut a, mut b, mut c) = (Replica::new(), Replica::new(), Replica::new());
            vandalize(&mut a, edit);
            // A valid record in a later change of the vandal's: built on
            // the garbage, so refused with it.
            let (id, bytes) = rec(1);
            a.insert(&id, &bytes).unwrap();
            a.settle();
            a.doc.commit();
            let (_, got_b) = sync_pair(&mut a, &mut b);
            assert!(got_b.candidates.is_empty(), "{what}");
            assert_eq!(got_b.refused, 2, "{what}: both changes");
            assert!(b.is_empty() && b.doc.get_changes(&[]).is_empty(), "{what}");
            // Nothing of it is saved or offered to a third replica.
            assert!(b.save_incremental().is_empty(), "{what}");
            let (_, got_c) = sync_pair(&mut b, &mut c);
            assert!(got_c.candidates.is_empty() && c.is_empty(), "{what}");
        }
    }

    #[test]
    fn deletes_and_overwrites_never_enter_and_clean_changes_still_do() {
        let (mut a, mut b, mut c) = (Replica::new(), Replica::new(), Replica::new());
        let (id, bytes) = rec(1);
        a.insert(&id, &bytes).unwrap();
        sync_pair(&mut a, &mut b);
        assert!(b.contains(&id));
        vandalize(&mut a, |d| d.delete(ROOT, id.to_hex()).unwrap());
        let (_, got_b) = sync_pair(&mut a, &mut b);
        assert_eq!(got_b.refused, 1);
        vandalize(&mut a, |d| {
            d.put(ROOT, id.to_hex(), ScalarValue::Bytes(vec![1; 3])).unwrap()
        });
        let (_, got_b) = sync_pair(&mut a, &mut b);
        assert!(got_b.refused >= 1, "the overwrite, built on the delete");
        assert_eq!(
            b.matching_value(&id),
            Some(bytes.clone()),
            "b still holds and offers it"
        );
        let (_, got_c) = sync_pair(&mut b, &mut c);
        assert_eq!(got_c.candidates.len(), 1);
        assert!(c.contains(&id));
        // Control: a clean change from an honest replica still arrives at b.
        let (id2, bytes2) = rec(2);
        c.insert(&id2, &bytes2).unwrap();
        let (_, got_b) = sync_pair(&mut c, &mut b);
        assert_eq!(got_b.refused, 0);
        assert_eq!(got_b.candidates.iter().map(|c| c.0).collect::<Vec<_>>(), vec![id2]);
    }
}
