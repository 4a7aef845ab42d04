//! A blob's BLAKE3 hash and its bao pre-order outboard, computed in the one
//! pass that writes the bytes.
//!
//! Committing a blob used to read it back and hash it again for its outboard
//! (`PreOrderOutboard::create_sized`), after the writer had already hashed it
//! once. Here each 16 KiB chunk group is hashed as it streams past, keeping
//! only its chaining value (32 bytes per group); at the end the parent nodes
//! above the groups are merged from those values, which is the outboard, and
//! their top is the root hash. No byte is hashed twice.

use blake3::hazmat::{ChainingValue, HasherExt, Mode, merge_subtrees_non_root, merge_subtrees_root};
use packfed_protocol::ContentHash;

/// iroh-blobs' block size: chunk groups of 2^4 BLAKE3 chunks (16 KiB).
pub const IROH_BLOCK_SIZE: bao_tree::BlockSize = bao_tree::BlockSize::from_chunk_log(4);

/// Bytes in a chunk group.
const GROUP_BYTES: u64 = IROH_BLOCK_SIZE.bytes() as u64;

/// Hashes a stream into its root hash and pre-order outboard.
pub struct OutboardHasher {
    /// The group being hashed (at its offset in the stream).
    current: blake3::Hasher,
    /// Bytes of the stream in `current`.
    in_current: u64,
    /// Chaining values of the full groups before `current`.
    done: Vec<ChainingValue>,
    size: u64,
}

impl Default for OutboardHasher {
    fn default() -> Self {
        Self {
            current: blake3::Hasher::new(),
            in_current: 0,
            done: Vec::new(),
            size: 0,
        }
    }
}

impl OutboardHasher {
    pub fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            // A full group is closed only when more bytes follow: if it
            // turns out to be the only one, it is the root and hashed as such.
            if self.in_current == GROUP_BYTES {
                self.done.push(self.current.finalize_non_root());
                self.current = blake3::Hasher::new();
                self.current.set_input_offset(self.size);
                self.in_current = 0;
            }
            let take = (GROUP_BYTES - self.in_current).min(data.len() as u64) as usize;
            self.current.update(&data[..take]);
            self.in_current += take as u64;
            self.size += take as u64;
            data = &data[take..];
        }
    }

    /// The root hash and the pre-order outboard (empty for one group).
    pub fn finish(mut self) -> (ContentHash, Vec<u8>) {
        if self.done.is_empty() {
            return (self.current.finalize().into(), Vec::new());
        }
        self.done.push(self.current.finalize_non_root());
        let mut outboard = Vec::with_capacity((self.done.len() - 1) * 64);
        let root = parent(&self.done, true, &mut outboard);
        (ContentHash(root), outboard)
    }
}

/// Appends the parent nodes over `groups` (at least two) in pre-order and
/// returns their top: the root hash if `root`, else a chaining value.
fn parent(groups: &[ChainingValue], root: bool, out: &mut Vec<u8>) -> [u8; 32] {
    // BLAKE3's left subtree is the largest power of two of chunks that
    // leaves the right one non-empty; in whole groups, the largest power
    // of two below the count.
    let split = 1 << (groups.len() - 1).ilog2();
    let at = out.len();
    out.extend_from_slice(&[0; 64]);
    let left = child(&groups[..split], out);
    let right = child(&groups[split..], out);
    out[at..at + 32].copy_from_slice(&left);
    out[at + 32..at + 64].copy_from_slice(&right);
    if root {
        *merge_subtrees_root(&left, &right, Mode::Hash).as_bytes()
    } else {
        merge_subtrees_non_root(&left, &right, Mode::Hash)
    }
}

fn child(groups: &[ChainingValue], out: &mut Vec<u8>) -> ChainingValue {
    match groups {
        [one] => *one,
        more => parent(more, false, out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::blobs::IROH_BLOCK_SIZE;
    use bao_tree::io::outboard::PreOrderOutboard;
    use bao_tree::io::sync::CreateOutboard;

    fn expected(data: &[u8]) -> (ContentHash, Vec<u8>) {
        let ob =
            PreOrderOutboard::<Vec<u8>>::create_sized(std::io::Cursor::new(data), data.len() as u64, IROH_BLOCK_SIZE)
                .unwrap();
        (ContentHash::from(ob.root), ob.data)
    }

    /// Same hash and outboard bytes as bao-tree's own, whatever the size
    /// (group and chunk edges, uneven trees) and however writes are cut.
    #[test]
    fn matches_bao_tree_at_every_edge() {
        let data: Vec<u8> = (0..GROUP_BYTES as usize * 37 + 5)
            .map(|i| (i * 7 + i / 251) as u8)
            .collect();
        let g = GROUP_BYTES as usize;
        let sizes = [
            0,
            1,
            1024,
            1025,
            g - 1,
            g,
            g + 1,
            2 * g,
            2 * g + 1,
            3 * g,
            4 * g,
            4 * g + 1,
            5 * g - 3,
            8 * g,
            9 * g + 100,
            data.len(),
        ];
        for size in sizes {
            let input = &data[..size];
            for cut in [1, 1000, 4096, g, 3 * g + 17, usize::MAX] {
                let mut h = OutboardHasher::default();
                for piece in input.chunks(cut.min(input.len().max(1))) {
                    h.update(piece);
                }
                let got = h.finish();
                assert_eq!(got, expected(input), "size {size}, writes of {cut}");
            }
            assert_eq!(expected(input).0, ContentHash::of(input));
        }
    }
}
