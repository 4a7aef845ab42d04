//! Cuts a document's value column into small pieces: at load, and after a
//! received batch that may have left big ones.
//!
//! automerge 0.12 keeps record bytes in a `hexane::RawColumn`, a list of
//! slabs of about 4 KiB. A loaded document gets the whole column as **one**
//! slab (41 MB at 102,000 records). An insert in its middle splits it with
//! `Vec::split_off`: the left part keeps the whole capacity and the right
//! part is a fresh copy, so every random insert into a big slab leaves
//! megabytes behind. Measured on a 102,000-record document: applying two
//! saved pieces holding 52 records took the process from 98 MB to 1.16 GB
//! (and 0.54 s); a piece of 1,000 records took 95 s and 20 GB; the first
//! five random inserts after a load cost 86 MB.
//!
//! Splitting from the end, in order, copies the column once: each split
//! peels a few KiB off the end of the big slab. To split at a key through
//! the public API, this puts a one-byte value there and rolls the
//! transaction back; the document (heads, values, history) is unchanged,
//! only its memory layout. A last split at the front frees the loaded
//! buffer. Measured on the same document: 0.2 s per load; the two pieces
//! then apply in 39 ms, and the process holds 89 MB either way (98 MB with
//! the snapshot alone, unsplit; 129 MB when the loaded buffer was kept).

use automerge::transaction::Transactable;
use automerge::{AutoCommit, ROOT, ReadDoc, ScalarValue};

/// Keys per split: ~16 records of ~200 bytes fill a 4 KiB slab.
const KEYS_PER_SLAB: usize = 16;

/// Splits the value column of `doc` every [`KEYS_PER_SLAB`] keys. Commits
/// any open transaction first (rolling back would drop it).
pub fn split_value_column(doc: &mut AutoCommit) {
    doc.commit();
    // The first slab keeps the loaded buffer's whole capacity; it is left
    // bigger than a slab's budget so that the last step can drop it.
    let points: Vec<String> = doc.keys(ROOT).step_by(KEYS_PER_SLAB).skip(3).collect();
    for key in points.iter().rev() {
        if doc.put(ROOT, key.as_str(), ScalarValue::Bytes(vec![0])).is_ok() {
            doc.rollback();
        }
    }
    // A key that sorts before every record id lands at the front of that
    // first slab: the split moves the slab's bytes to a fresh one and the
    // rollback empties the old one, which the column then frees.
    if doc.put(ROOT, FRONT, ScalarValue::Bytes(vec![0])).is_ok() {
        doc.rollback();
    }
}

/// Sorts before every hex record id.
const FRONT: &str = " ";

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::Value;

    /// Every key and the bytes stored under it.
    fn contents(doc: &AutoCommit) -> Vec<(String, Vec<u8>)> {
        doc.keys(ROOT)
            .map(|k| {
                let bytes = match doc.get(ROOT, k.as_str()).unwrap() {
                    Some((Value::Scalar(s), _)) => match s.as_ref() {
                        ScalarValue::Bytes(b) => b.clone(),
                        other => panic!("unexpected value {other:?}"),
                    },
                    other => panic!("unexpected entry {other:?}"),
                };
                (k, bytes)
            })
            .collect()
    }

    #[test]
    fn splitting_changes_nothing_a_reader_or_peer_sees() {
        let mut doc = AutoCommit::new();
        for n in 0..200u32 {
            let key = format!("{:08x}", n.wrapping_mul(2_654_435_761));
            doc.put(ROOT, key, ScalarValue::Bytes(n.to_be_bytes().repeat(50)))
                .unwrap();
        }
        doc.commit();
        let mut loaded = AutoCommit::load(&doc.save()).unwrap();
        let heads = loaded.get_heads();
        let before = contents(&loaded);
        assert_eq!(before.len(), 200);

        split_value_column(&mut loaded);

        assert_eq!(loaded.get_heads(), heads, "no change was made");
        assert_eq!(loaded.pending_ops(), 0, "nothing left open");
        assert_eq!(contents(&loaded), before);
        assert_eq!(loaded.save(), doc.save(), "the same document");
    }
}
