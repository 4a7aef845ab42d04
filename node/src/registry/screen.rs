//! Which changes a peer sends may enter a registry document.
//!
//! The document is how the registry replicates: whatever enters it is saved
//! and offered to every later peer. So a change enters only if each of its
//! operations is what an honest node writes: a put, at the root, of a signed
//! record under its own id (the lower-case hex BLAKE3 of its bytes) whose
//! signature the caller accepts. A change holding anything else (a delete, a
//! nested object, bytes that are no record, a record under another id) is
//! refused whole, and so is every change built on it: automerge changes are
//! hash-chained, so nothing can be cut out of one. Deletes and overwrites
//! therefore never enter, a vandal cannot hide a record from third parties,
//! and garbage is never saved or synced on.

use std::collections::{HashMap, HashSet};

use automerge::legacy::{Key, ObjectId, OpType};
use automerge::{Automerge, Change, ChangeHash, ScalarValue};
use packfed_protocol::RecordId;

use super::bounds::{self, CHUNK_CHANGE, CHUNK_COMPRESSED, CHUNK_DOCUMENT};

/// The changes a sync message's change list holds, one by one (a saved
/// document, which automerge sends when the peer lacks much, is opened and
/// read back as its changes).
pub(super) fn changes<'a>(entries: impl Iterator<Item = &'a [u8]>) -> Result<Vec<Change>, String> {
    let mut out = Vec::new();
    for entry in entries {
        for (kind, chunk) in bounds::chunks(entry).map_err(|e| e.to_string())? {
            match kind {
                CHUNK_CHANGE | CHUNK_COMPRESSED => out.push(Change::try_from(chunk).map_err(|e| e.to_string())?),
                CHUNK_DOCUMENT => out.extend(Automerge::load(chunk).map_err(|e| e.to_string())?.get_changes(&[])),
                _ => return Err("a chunk type automerge's sync never sends".into()),
            }
        }
    }
    Ok(out)
}

/// Changes split into those that may enter and those refused.
pub(super) struct Screened {
    pub kept: Vec<Change>,
    pub refused: Vec<ChangeHash>,
}

/// Refuses every change `bad` names, and every change built on one of
/// them (each change is visited once, whatever order the peer sent them in).
pub(super) fn refuse(changes: Vec<Change>, mut bad: impl FnMut(&Change) -> bool) -> Screened {
    let mut refused = HashSet::new();
    let mut dependents: HashMap<ChangeHash, Vec<ChangeHash>> = HashMap::new();
    let mut spread = Vec::new();
    for c in &changes {
        let hash = c.hash();
        for dep in c.deps() {
            dependents.entry(*dep).or_default().push(hash);
        }
        if bad(c) && refused.insert(hash) {
            spread.push(hash);
        }
    }
    while let Some(hash) = spread.pop() {
        for child in dependents.get(&hash).into_iter().flatten() {
            if refused.insert(*child) {
                spread.push(*child);
            }
        }
    }
    let (kept, out): (Vec<Change>, Vec<Change>) = changes.into_iter().partition(|c| !refused.contains(&c.hash()));
    Screened {
        kept,
        refused: out.iter().map(Change::hash).collect(),
    }
}

/// For each change, whether every operation puts a valid record at the
/// root under its own id. The structure is checked here; the records'
/// bytes are judged by `valid` (a signature check) on every core, since a
/// fresh node's first sync brings the whole registry in one message.
pub(super) fn clean(changes: &[Change], valid: &(impl Fn(&[u8]) -> bool + Sync)) -> Vec<bool> {
    let decoded: Vec<_> = changes.iter().map(Change::decode).collect();
    let mut clean = vec![true; changes.len()];
    let mut records: Vec<(usize, &[u8])> = Vec::new();
    for (i, change) in decoded.iter().enumerate() {
        for op in &change.operations {
            match (&op.obj, op.insert, &op.key, &op.action) {
                (ObjectId::Root, false, Key::Map(key), OpType::Put(ScalarValue::Bytes(bytes)))
                    if RecordId::of(bytes).to_hex() == key.as_str() =>
                {
                    records.push((i, bytes))
                }
                _ => clean[i] = false,
            }
        }
    }
    for ((i, _), ok) in records.iter().zip(on_every_core(&records, |(_, b)| valid(b))) {
        if !ok {
            clean[*i] = false;
        }
    }
    clean
}

/// `f` of each item, in order, the items split between the cores.
fn on_every_core<T: Sync>(items: &[T], f: impl Fn(&T) -> bool + Sync) -> Vec<bool> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cores < 2 || items.len() < 256 {
        return items.iter().map(&f).collect();
    }
    let per = items.len().div_ceil(cores);
    std::thread::scope(|s| {
        let parts: Vec<_> = items
            .chunks(per)
            .map(|part| (part.len(), s.spawn(|| part.iter().map(&f).collect::<Vec<bool>>())))
            .collect();
        // A part whose thread died is refused, not trusted.
        parts
            .into_iter()
            .flat_map(|(n, h)| h.join().unwrap_or_else(|_| vec![false; n]))
            .collect()
    })
}
