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

/// Bytes per piece: the unit of scheduling between providers.
pub const PIECE_BYTES: u64 = 1024 * 1024;
/// Chunks (1 KiB) per piece.
const PIECE_CHUNKS: u64 = PIECE_BYTES / 1024;

/// Pieces of a blob of `size` bytes.
pub fn piece_count(size: u64) -> usize {
    size.div_ceil(PIECE_BYTES).max(1) as usize
}

/// The chunk ranges of piece `i`.
pub fn piece_ranges(size: u64, i: usize) -> ChunkRanges {
    let start = i as u64 * PIECE_CHUNKS;
    let end = ((i as u64 + 1) * PIECE_CHUNKS).min(size.div_ceil(1024).max(1));
    ChunkRanges::from(ChunkNum(start)..ChunkNum(end))
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
        {
            let mut ob = self
                .outboard
                .write()
                .map_err(|_| io::Error::other("outboard lock poisoned"))?;
            let Some(slot) = ob.get_mut(at..at + 64) else {
                return Err(io::Error::other("parent outside the outboard"));
            };
            slot.copy_from_slice(&bytes);
        }
        self.outboard_file.write_all_at(&bytes, at as u64)
    }

    /// Writes a verified group at its offset (not yet announced).
    pub fn write_leaf(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        if offset + data.len() as u64 > self.size {
            return Err(io::Error::other("leaf beyond the end of the blob"));
        }
        self.data.write_all_at(data, offset)
    }

    /// Announces `ranges` as held (their groups and parents are written).
    pub fn add_have(&self, ranges: &ChunkRanges) {
        self.have.send_modify(|h| *h |= ranges.clone());
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
        Ok(self
            .outboard
            .read()
            .map_err(|_| io::Error::other("outboard lock poisoned"))?
            .clone())
    }

    /// Removes both files (after adoption into the store, or when refused).
    pub fn remove_files(&self) {
        let _ = std::fs::remove_file(&self.data_path);
        let _ = std::fs::remove_file(self.data_path.with_extension("obao"));
    }
}
