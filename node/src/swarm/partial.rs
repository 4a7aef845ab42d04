//! A blob that is still arriving: its verified groups sit in a data file at
//! their offsets, the outboard (tree hashes) fills in as parents arrive,
//! and `have` says which chunk groups are verified, so the node can serve
//! them to others before the blob is complete.
//!
//! Both files live in the store's `partial/` directory and survive a
//! restart: on reopening, every group is checked again against the saved
//! outboard (`valid_ranges`), so nothing unverified is ever trusted, and
//! nothing needs an fsync until the blob is adopted into the store.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use bao_tree::io::outboard::PreOrderMemOutboard;
use bao_tree::io::sync::valid_ranges;
use bao_tree::{BaoTree, ChunkNum, ChunkRanges, TreeNode};
use bytes::Bytes;
use packfed_protocol::ContentHash;
use tokio::sync::watch;

use crate::store::blobs::IROH_BLOCK_SIZE;

/// Bytes per piece of a small blob: the unit of scheduling between providers.
pub const MIN_PIECE_BYTES: u64 = 1024 * 1024;
/// Bytes per piece at most.
const MAX_PIECE_BYTES: u64 = 16 * 1024 * 1024;
/// Pieces per blob above which pieces grow. Each piece is one request, and
/// on loopback 1 MiB requests held a 1 GiB fetch to 2.4-3.0 s against
/// 1.7-1.9 s in 16 MiB ones; 128 pieces still spread a crowd.
const MAX_PIECES: u64 = 128;

/// Bytes per piece of a blob of `size` bytes: 1 MiB up to 128 MiB, then
/// growing by powers of two to keep at most 128 pieces, up to 16 MiB. Only
/// the fetcher uses pieces (providers announce chunk ranges), so this may
/// change between versions.
pub fn piece_bytes(size: u64) -> u64 {
    size.div_ceil(MAX_PIECES)
        .next_power_of_two()
        .clamp(MIN_PIECE_BYTES, MAX_PIECE_BYTES)
}

/// Pieces of a blob of `size` bytes.
pub fn piece_count(size: u64) -> usize {
    size.div_ceil(piece_bytes(size)).max(1) as usize
}

/// The chunk ranges of piece `i`.
pub fn piece_ranges(size: u64, i: usize) -> ChunkRanges {
    let chunks = piece_bytes(size) / 1024;
    let start = i as u64 * chunks;
    let end = ((i as u64 + 1) * chunks).min(size.div_ceil(1024).max(1));
    ChunkRanges::from(ChunkNum(start)..ChunkNum(end))
}

/// Bytes in piece `i`.
pub fn piece_len(size: u64, i: usize) -> u64 {
    let bytes = piece_bytes(size);
    size.saturating_sub(i as u64 * bytes).min(bytes)
}

/// Which pieces `ranges` covers entirely.
pub fn pieces_in(size: u64, ranges: &ChunkRanges) -> Vec<bool> {
    (0..piece_count(size))
        .map(|i| ranges.is_superset(&piece_ranges(size, i)))
        .collect()
}

/// A blob being fetched.
pub struct Partial {
    pub hash: ContentHash,
    pub size: u64,
    tree: BaoTree,
    data: File,
    data_path: PathBuf,
    outboard_file: File,
    outboard: RwLock<Vec<u8>>,
    /// Offsets of pairs saved in `outboard` but not yet in its file.
    unwritten: std::sync::Mutex<Vec<u64>>,
    have: watch::Sender<ChunkRanges>,
}

impl Partial {
    /// Opens (or resumes) the partial blob `hash` of `size` bytes in `dir`.
    pub fn open(dir: &Path, hash: ContentHash, size: u64) -> io::Result<Partial> {
        std::fs::create_dir_all(dir)?;
        let tree = BaoTree::new(size, IROH_BLOCK_SIZE);
        let data_path = dir.join(format!("{hash}.data"));
        let outboard_path = dir.join(format!("{hash}.obao"));
        let open = |p: &Path| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(p)
        };
        let data = open(&data_path)?;
        let outboard_file = open(&outboard_path)?;
        let ob_len = tree.outboard_size() as usize;
        let mut outboard = vec![0u8; ob_len];
        let saved = outboard_file.metadata()?.len();
        if saved == ob_len as u64 {
            outboard_file.read_exact_at(&mut outboard, 0)?;
        } else {
            outboard_file.set_len(ob_len as u64)?;
        }
        if data.metadata()?.len() != size {
            data.set_len(size)?;
        }
        // Resume: keep only the groups that verify against the saved tree.
        let mut have = ChunkRanges::empty();
        if saved == ob_len as u64 {
            let ob = PreOrderMemOutboard {
                root: blake3::Hash::from_bytes(*hash.as_bytes()),
                tree,
                data: &outboard[..],
            };
            for range in valid_ranges(ob, &data, &ChunkRanges::all()) {
                // A group whose hashes are missing (zeros) is simply not valid.
                let Ok(range) = range else { break };
                have |= ChunkRanges::from(range);
            }
        }
        Ok(Partial {
            hash,
            size,
            tree,
            data,
            data_path,
            outboard_file,
            outboard: RwLock::new(outboard),
            unwritten: std::sync::Mutex::new(Vec::new()),
            have: watch::Sender::new(have),
        })
    }

    pub fn data_path(&self) -> &Path {
        &self.data_path
    }

    /// Stores a verified parent (a pair of child hashes).
    pub fn save_parent(&self, node: TreeNode, pair: &(blake3::Hash, blake3::Hash)) -> io::Result<()> {
        let Some(offset) = self.tree.pre_order_offset(node) else {
            return Ok(());
        };
        let at = (offset * 64) as usize;
        let mut bytes = [0u8; 64];
        bytes[..32].copy_from_slice(pair.0.as_bytes());
        bytes[32..].copy_from_slice(pair.1.as_bytes());
        let mut ob = self
            .outboard
            .write()
            .map_err(|_| io::Error::other("outboard lock poisoned"))?;
        let Some(slot) = ob.get_mut(at..at + 64) else {
            return Err(io::Error::other("parent outside the outboard"));
        };
        slot.copy_from_slice(&bytes);
        drop(ob);
        self.unwritten
            .lock()
            .map_err(|_| io::Error::other("outboard lock poisoned"))?
            .push(at as u64);
        Ok(())
    }

    /// Writes the saved pairs to the outboard file, runs of adjacent pairs
    /// at once (a piece's own subtree is one run): one write per run
    /// instead of one per pair.
    fn write_outboard(&self) -> io::Result<()> {
        let mut offsets = std::mem::take(
            &mut *self
                .unwritten
                .lock()
                .map_err(|_| io::Error::other("outboard lock poisoned"))?,
        );
        offsets.sort_unstable();
        offsets.dedup();
        let ob = self.outboard_lock()?;
        let mut i = 0;
        while i < offsets.len() {
            let start = offsets[i];
            let mut end = start + 64;
            i += 1;
            while i < offsets.len() && offsets[i] == end {
                end += 64;
                i += 1;
            }
            self.outboard_file
                .write_all_at(&ob[start as usize..end as usize], start)?;
        }
        Ok(())
    }

    /// Writes a verified group at its offset (not yet announced).
    pub fn write_leaf(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        if offset + data.len() as u64 > self.size {
            return Err(io::Error::other("leaf beyond the end of the blob"));
        }
        self.data.write_all_at(data, offset)
    }

    /// Writes the data that has arrived to disk (a partial blob needs no
    /// durability; this only spreads the work of the sync at adoption),
    /// then lets its pages leave the page cache (see
    /// [`crate::memory::drop_cached`]); peers asking for them later are
    /// served from disk.
    pub fn write_back(&self) {
        if let Err(e) = self.data.sync_data() {
            tracing::debug!(hash = %self.hash, error = %e, "writing back a partial blob failed");
            return;
        }
        crate::memory::drop_cached(&self.data);
    }

    /// Writes the parents saved so far, then announces `ranges` as held
    /// (their groups are written).
    pub fn add_have(&self, ranges: &ChunkRanges) -> io::Result<()> {
        self.write_outboard()?;
        self.have.send_modify(|h| *h |= ranges.clone());
        Ok(())
    }

    pub fn have(&self) -> ChunkRanges {
        self.have.borrow().clone()
    }

    /// Whether every group of `ranges` is held.
    pub fn covers(&self, ranges: &ChunkRanges) -> bool {
        self.have.borrow().is_superset(ranges)
    }

    /// Follows `have` as it grows.
    pub fn subscribe(&self) -> watch::Receiver<ChunkRanges> {
        self.have.subscribe()
    }

    /// Reads held bytes; refuses ranges not yet verified.
    pub fn read_at(&self, offset: u64, len: usize) -> io::Result<Bytes> {
        let first = offset / 1024;
        let last = (offset + len as u64).div_ceil(1024);
        if !self.covers(&ChunkRanges::from(ChunkNum(first)..ChunkNum(last))) {
            return Err(io::Error::new(io::ErrorKind::NotFound, "range not held yet"));
        }
        let mut out = vec![0u8; len];
        self.data.read_exact_at(&mut out, offset)?;
        Ok(Bytes::from(out))
    }

    /// The outboard as it stands (hashes of groups not held may be zeros;
    /// they are never read for ranges this node serves).
    pub fn outboard(&self) -> io::Result<Vec<u8>> {
        Ok(self.outboard_lock()?.clone())
    }

    fn outboard_lock(&self) -> io::Result<std::sync::RwLockReadGuard<'_, Vec<u8>>> {
        self.outboard
            .read()
            .map_err(|_| io::Error::other("outboard lock poisoned"))
    }

    /// Removes both files (after adoption into the store, or when refused).
    pub fn remove_files(&self) {
        let _ = std::fs::remove_file(&self.data_path);
        let _ = std::fs::remove_file(self.data_path.with_extension("obao"));
    }
}

impl crate::blobs::BlobView for Partial {
    fn read_at(&self, offset: u64, len: usize) -> io::Result<Bytes> {
        Partial::read_at(self, offset, len)
    }

    fn outboard_len(&self) -> u64 {
        self.tree.outboard_size()
    }

    fn outboard_pair(&self, offset: u64) -> io::Result<[u8; 64]> {
        let at = offset as usize;
        self.outboard_lock()?
            .get(at..at + 64)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| io::Error::other("pair outside the outboard"))
    }

    fn read_ahead(&self, offset: u64, len: u64) {
        crate::memory::read_ahead(&self.data, offset, len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_grow_with_the_blob_and_cover_it_exactly() {
        const MIB: u64 = 1024 * 1024;
        assert_eq!(piece_bytes(4 * MIB), MIB);
        assert_eq!(piece_bytes(128 * MIB), MIB);
        assert_eq!(piece_bytes(128 * MIB + 1), 2 * MIB);
        assert_eq!(piece_bytes(1024 * MIB), 8 * MIB);
        assert_eq!(piece_bytes(64 * 1024 * MIB), 16 * MIB);
        for size in [1, 4 * MIB + 3, 128 * MIB, 300 * MIB + 12345, 1024 * MIB - 1] {
            let n = piece_count(size);
            assert!(n as u64 <= MAX_PIECES.max(size.div_ceil(MAX_PIECE_BYTES)));
            let total: u64 = (0..n).map(|i| piece_len(size, i)).sum();
            assert_eq!(total, size);
            let mut all = ChunkRanges::empty();
            for i in 0..n {
                let r = piece_ranges(size, i);
                assert!((&all & &r).is_empty(), "pieces overlap");
                all |= r;
            }
            assert_eq!(all, ChunkRanges::from(ChunkNum(0)..ChunkNum(size.div_ceil(1024))));
            assert!(pieces_in(size, &all).iter().all(|x| *x));
        }
    }
}
