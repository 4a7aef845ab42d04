//! Blobs: pack archives. Large ones live in one file per blob under the
//! store's `packs/` directory; small ones (up to [`INLINE_MAX`]) inline in
//! sled, so publishing a small pack costs one sled flush rather than three
//! fsyncs. Sled also holds each blob's meta and its pre-order bao outboard
//! (what iroh-blobs' verified streaming needs, computed once at import).
//!
//! Why not the bytes in sled too: measured on this machine, sled 0.34 keeps
//! every value it has read resident whatever `cache_capacity` says (reading
//! back a 1 GiB blob in 16 KiB values left the process at 1 GB RSS), so a
//! node serving or importing large packs from sled would hold them whole.
//! Files go through the OS page cache instead, which the kernel reclaims.
//! iroh-blobs' own store makes the same split (small inline, large in files).

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use bao_tree::io::outboard::PreOrderOutboard;
use bao_tree::io::sync::CreateOutboard;
use packfed_protocol::ContentHash;
use serde::{Deserialize, Serialize};

pub use super::outboard::IROH_BLOCK_SIZE;
use super::outboard::OutboardHasher;
use super::{Store, StoreError};

/// Size of the pieces inline blobs and outboards are stored in, and of read
/// buffers.
pub const CHUNK_SIZE: usize = 64 * 1024;

/// Blobs up to this size are stored inline in sled.
pub const INLINE_MAX: usize = 256 * 1024;

/// What the store knows of a complete blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobMeta {
    pub seq: u64,
    pub size: u64,
    pub outboard_len: u64,
    /// Stored in sled pieces rather than a file.
    pub inline: bool,
}

fn chunk_key(seq: u64, index: u32) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..8].copy_from_slice(&seq.to_be_bytes());
    k[8..].copy_from_slice(&index.to_be_bytes());
    k
}

/// Streams bytes into the store under a new sequence number, hashing as it
/// goes (hash and outboard in one pass): in memory up to [`INLINE_MAX`],
/// then into a file. Nothing is visible until [`Store::commit_blob`].
pub struct BlobWriter {
    store: Store,
    sink: Sink,
    seq: u64,
    hasher: OutboardHasher,
    size: u64,
    limit: u64,
}

enum Sink {
    Memory(Vec<u8>),
    File(BufWriter<File>),
}

/// Bytes written but not yet committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StagedBlob {
    pub seq: u64,
    pub hash: ContentHash,
    pub size: u64,
    pub inline: bool,
    /// Length of the outboard already stored under `seq` by the writer that
    /// hashed the bytes; None if it is still to be computed from them.
    pub outboard_len: Option<u64>,
}

impl BlobWriter {
    /// Bytes written so far (where a resumed download continues).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Makes the bytes durable (file and directory entry, or sled pieces
    /// made durable by the caller's flush); they are staged under their hash.
    pub fn finish(self) -> io::Result<StagedBlob> {
        let inline = match self.sink {
            Sink::Memory(buf) => {
                // Plain inserts: a batch would seal a log buffer of its own.
                // Pieces are invisible until the blob's meta is written
                // (after them, and sled recovers writes in order); pieces
                // of an interrupted import are swept at open.
                for (i, piece) in buf.chunks(CHUNK_SIZE).enumerate() {
                    self.store
                        .chunks
                        .insert(chunk_key(self.seq, i as u32), piece)
                        .map_err(io::Error::other)?;
                }
                true
            }
            Sink::File(file) => {
                let file = file.into_inner().map_err(|e| e.into_error())?;
                file.sync_all()?;
                File::open(&self.store.packs)?.sync_all()?;
                false
            }
        };
        // Invisible like the pieces until the meta is written.
        let (hash, outboard) = self.hasher.finish();
        self.store.put_outboard(self.seq, &outboard).map_err(io::Error::other)?;
        Ok(StagedBlob {
            seq: self.seq,
            hash,
            size: self.size,
            inline,
            outboard_len: Some(outboard.len() as u64),
        })
    }
}

impl Write for BlobWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.size + data.len() as u64 > self.limit {
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                StoreError::TooLarge(self.limit),
            ));
        }
        if let Sink::Memory(buf) = &mut self.sink
            && buf.len() + data.len() > INLINE_MAX
        {
            let mut file = BufWriter::with_capacity(4 * CHUNK_SIZE, File::create(self.store.blob_path(self.seq))?);
            file.write_all(buf)?;
            self.sink = Sink::File(file);
        }
        let n = match &mut self.sink {
            Sink::Memory(buf) => {
                buf.extend_from_slice(data);
                data.len()
            }
            Sink::File(file) => file.write(data)?,
        };
        self.hasher.update(&data[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        match &mut self.sink {
            Sink::Memory(_) => Ok(()),
            Sink::File(f) => f.flush(),
        }
    }
}

/// Reads a blob (or an outboard) front to back.
pub struct BlobReader {
    inner: Box<dyn Read + Send>,
}

impl Read for BlobReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        self.inner.read(out)
    }
}

/// Reads an outboard's sled pieces in order.
struct PieceReader {
    tree: sled::Tree,
    seq: u64,
    index: u32,
    current: sled::IVec,
    pos: usize,
    remaining: u64,
}

impl Read for PieceReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || out.is_empty() {
            return Ok(0);
        }
        if self.pos == self.current.len() {
            self.current = self
                .tree
                .get(chunk_key(self.seq, self.index))
                .map_err(io::Error::other)?
                .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "outboard piece missing from store"))?;
            self.index += 1;
            self.pos = 0;
            if self.current.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "empty outboard piece in store",
                ));
            }
        }
        let n = out
            .len()
            .min(self.current.len() - self.pos)
            .min(self.remaining.min(usize::MAX as u64) as usize);
        out[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// Whether `outboard` is the complete pre-order outboard of a blob of `size`
/// bytes with root `hash` (every parent hashes to its parent). A blob of one
/// chunk group has an empty outboard, which says nothing: false.
fn outboard_hashes_to(outboard: &[u8], hash: ContentHash, size: u64) -> bool {
    let tree = bao_tree::BaoTree::new(size, IROH_BLOCK_SIZE);
    if outboard.is_empty() || outboard.len() as u64 != tree.outboard_size() {
        return false;
    }
    let ob = bao_tree::io::outboard::PreOrderMemOutboard {
        root: blake3::Hash::from_bytes(*hash.as_bytes()),
        tree,
        data: outboard,
    };
    let mut valid = bao_tree::ChunkRanges::empty();
    for range in bao_tree::io::sync::valid_outboard_ranges(ob, &bao_tree::ChunkRanges::all()) {
        match range {
            Ok(r) => valid |= bao_tree::ChunkRanges::from(r),
            Err(_) => return false,
        }
    }
    valid.is_superset(&bao_tree::ChunkRanges::from(
        bao_tree::ChunkNum(0)..bao_tree::ChunkNum(size.div_ceil(1024)),
    ))
}

/// A stored blob opened for reads at random offsets. Outboard entries are
/// read one hash pair at a time from their sled pieces: a range request
/// needs a few dozen pairs, and the whole outboard of a 1 GiB blob is 4 MiB.
pub struct StoredBlob {
    hash: ContentHash,
    meta: BlobMeta,
    file: Option<File>,
    chunks: sled::Tree,
    outboards: sled::Tree,
}

impl StoredBlob {
    pub fn meta(&self) -> BlobMeta {
        self.meta
    }

    /// Starts reading `len` bytes at `offset` of a file-backed blob into
    /// the page cache (an inline blob is in sled's cache already).
    pub fn read_ahead(&self, offset: u64, len: u64) {
        if let Some(file) = &self.file {
            crate::memory::read_ahead(file, offset, len);
        }
    }

    /// Reads `len` bytes at `offset` (fewer at the end of the blob).
    pub fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>, StoreError> {
        let (hash, size) = (self.hash, self.meta.size);
        if offset > size {
            return Err(StoreError::Corrupt(format!("read at {offset} past the end of {hash}")));
        }
        let len = len.min((size - offset) as usize);
        let short = || StoreError::Corrupt(format!("blob {hash} is shorter than its meta says"));
        let Some(file) = &self.file else {
            let mut out = Vec::with_capacity(len);
            let mut at = offset;
            while out.len() < len {
                let index = (at / CHUNK_SIZE as u64) as u32;
                let piece = self.chunks.get(chunk_key(self.meta.seq, index))?.ok_or_else(short)?;
                let from = (at % CHUNK_SIZE as u64) as usize;
                let take = (len - out.len()).min(piece.len().saturating_sub(from));
                if take == 0 {
                    return Err(short());
                }
                out.extend_from_slice(&piece[from..from + take]);
                at += take as u64;
            }
            return Ok(out);
        };
        let mut out = vec![0u8; len];
        file.read_exact_at(&mut out, offset).map_err(|_| short())?;
        Ok(out)
    }

    /// The 64 bytes at `offset` of the pre-order outboard: the hash pair of
    /// one tree node.
    pub fn outboard_pair(&self, offset: u64) -> Result<[u8; 64], StoreError> {
        let (index, from) = (offset / CHUNK_SIZE as u64, (offset % CHUNK_SIZE as u64) as usize);
        let missing = || StoreError::Corrupt(format!("outboard of {} lacks the pair at {offset}", self.hash));
        if offset + 64 > self.meta.outboard_len {
            return Err(missing());
        }
        // Pieces are CHUNK_SIZE bytes, a multiple of 64: a pair never straddles two.
        let piece = self
            .outboards
            .get(chunk_key(self.meta.seq, index as u32))?
            .ok_or_else(missing)?;
        piece
            .get(from..from + 64)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(missing)
    }
}

impl Store {
    fn blob_path(&self, seq: u64) -> PathBuf {
        self.packs.join(format!("{seq:016x}.pack"))
    }

    fn pieces(&self, tree: &sled::Tree, seq: u64, size: u64) -> BlobReader {
        BlobReader {
            inner: Box::new(PieceReader {
                tree: tree.clone(),
                seq,
                index: 0,
                current: sled::IVec::default(),
                pos: 0,
                remaining: size,
            }),
        }
    }

    fn open_blob(&self, seq: u64, size: u64, inline: bool) -> Result<BlobReader, StoreError> {
        if inline {
            return Ok(self.pieces(&self.chunks, seq, size));
        }
        let file = File::open(self.blob_path(seq))?;
        Ok(BlobReader {
            inner: Box::new(io::BufReader::with_capacity(CHUNK_SIZE, file).take(size)),
        })
    }

    /// Starts streaming a new blob of at most `limit` bytes.
    pub fn blob_writer(&self, limit: u64) -> Result<BlobWriter, StoreError> {
        Ok(BlobWriter {
            store: self.clone(),
            sink: Sink::Memory(Vec::new()),
            seq: self.db.generate_id()?,
            hasher: OutboardHasher::default(),
            size: 0,
            limit,
        })
    }

    /// Reads staged (not yet committed) bytes.
    pub fn staged_reader(&self, staged: &StagedBlob) -> Result<BlobReader, StoreError> {
        self.open_blob(staged.seq, staged.size, staged.inline)
    }

    /// Makes staged bytes visible under their hash, with the outboard their
    /// writer stored or, failing that, one computed from them. If the blob is
    /// already stored, the staged copy is dropped. Not durable until
    /// [`Store::flush`].
    pub fn commit_blob(&self, staged: StagedBlob) -> Result<BlobMeta, StoreError> {
        if let Some(existing) = self.blob_meta(&staged.hash)? {
            self.discard(staged.seq)?;
            return Ok(existing);
        }
        if let Some(outboard_len) = staged.outboard_len {
            return self.write_meta(staged, outboard_len);
        }
        let outboard =
            PreOrderOutboard::<Vec<u8>>::create_sized(self.staged_reader(&staged)?, staged.size, IROH_BLOCK_SIZE)?;
        if ContentHash::from(outboard.root) != staged.hash {
            self.discard(staged.seq)?;
            return Err(StoreError::Corrupt(format!(
                "blob {} changed while it was imported",
                staged.hash
            )));
        }
        self.commit_with_outboard(staged, &outboard.data)
    }

    /// Makes the blob visible under its hash with an outboard already known
    /// to hash to it.
    fn commit_with_outboard(&self, staged: StagedBlob, outboard: &[u8]) -> Result<BlobMeta, StoreError> {
        self.put_outboard(staged.seq, outboard)?;
        self.write_meta(staged, outboard.len() as u64)
    }

    /// Stores the outboard of blob `seq`, unseen until its meta is written.
    fn put_outboard(&self, seq: u64, outboard: &[u8]) -> Result<(), StoreError> {
        for (i, piece) in outboard.chunks(CHUNK_SIZE).enumerate() {
            self.outboards.insert(chunk_key(seq, i as u32), piece)?;
        }
        Ok(())
    }

    /// Makes blob `staged` visible: its bytes and outboard are stored.
    fn write_meta(&self, staged: StagedBlob, outboard_len: u64) -> Result<BlobMeta, StoreError> {
        let meta = BlobMeta {
            seq: staged.seq,
            size: staged.size,
            outboard_len,
            inline: staged.inline,
        };
        let encoded = postcard::to_stdvec(&meta).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        if self.blob_meta.insert(staged.hash.as_bytes(), encoded)?.is_none() {
            self.blob_records.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(meta)
    }

    /// Where blobs still arriving piece by piece are kept (outside `packs/`,
    /// which is swept of files without meta at open).
    pub fn partial_dir(&self) -> PathBuf {
        self.packs.with_file_name("partial")
    }

    /// Makes a fully fetched file a blob: synced, moved into `packs/`, then
    /// committed with `outboard`, the tree its groups were verified against
    /// as they arrived. The outboard is checked to hash up to `hash` (parent
    /// hashes only, no pass over the data); if it does not, it is computed
    /// again from the file like any import's. Not durable until flushed.
    pub fn adopt_file(
        &self,
        path: &std::path::Path,
        hash: ContentHash,
        size: u64,
        outboard: &[u8],
    ) -> Result<BlobMeta, StoreError> {
        let file = File::open(path)?;
        if file.metadata()?.len() != size {
            return Err(StoreError::Corrupt(format!("{} is not {size} bytes", path.display())));
        }
        file.sync_all()?;
        // Written once, read when served: no reason to hold it in memory.
        crate::memory::drop_cached(&file);
        if let Some(existing) = self.blob_meta(&hash)? {
            std::fs::remove_file(path)?;
            return Ok(existing);
        }
        let seq = self.db.generate_id()?;
        std::fs::rename(path, self.blob_path(seq))?;
        File::open(&self.packs)?.sync_all()?;
        let staged = StagedBlob {
            seq,
            hash,
            size,
            inline: false,
            outboard_len: None,
        };
        if outboard_hashes_to(outboard, hash, size) {
            self.commit_with_outboard(staged, outboard)
        } else {
            tracing::warn!(%hash, "a fetched blob's outboard does not hash to it; computing it again from the data");
            self.commit_blob(staged)
        }
    }

    /// Drops staged bytes (a failed or refused import).
    pub fn discard(&self, seq: u64) -> Result<(), StoreError> {
        match std::fs::remove_file(self.blob_path(seq)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
        for tree in [&self.chunks, &self.outboards] {
            let mut batch = sled::Batch::default();
            for key in tree.scan_prefix(seq.to_be_bytes()).keys() {
                batch.remove(key?);
            }
            tree.apply_batch(batch)?;
        }
        Ok(())
    }

    /// Undoes an import that was refused: drops the staged bytes, and the
    /// blob itself if this import committed it and no release refers to it.
    pub fn abandon(&self, staged: &StagedBlob) -> Result<(), StoreError> {
        if let Some(meta) = self.blob_meta(&staged.hash)?
            && meta.seq == staged.seq
        {
            if !self.releases_with_hash(&staged.hash)?.is_empty() {
                return Ok(());
            }
            if self.blob_meta.remove(staged.hash.as_bytes())?.is_some() {
                self.blob_records.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        self.discard(staged.seq)
    }

    pub fn blob_meta(&self, hash: &ContentHash) -> Result<Option<BlobMeta>, StoreError> {
        match self.blob_meta.get(hash.as_bytes())? {
            None => Ok(None),
            Some(v) => postcard::from_bytes(&v)
                .map(Some)
                .map_err(|e| StoreError::Corrupt(format!("blob meta of {hash}: {e}"))),
        }
    }

    pub fn has_blob(&self, hash: &ContentHash) -> Result<bool, StoreError> {
        Ok(self.blob_meta.contains_key(hash.as_bytes())?)
    }

    fn require_meta(&self, hash: &ContentHash) -> Result<BlobMeta, StoreError> {
        self.blob_meta(hash)?
            .ok_or_else(|| StoreError::MissingBlob(hash.to_string()))
    }

    /// Streams a stored blob.
    pub fn blob_reader(&self, hash: &ContentHash) -> Result<(BlobMeta, BlobReader), StoreError> {
        let meta = self.require_meta(hash)?;
        Ok((meta, self.open_blob(meta.seq, meta.size, meta.inline)?))
    }

    /// Streams a stored blob's pre-order bao outboard.
    pub fn outboard_reader(&self, hash: &ContentHash) -> Result<BlobReader, StoreError> {
        let meta = self.require_meta(hash)?;
        Ok(self.pieces(&self.outboards, meta.seq, meta.outboard_len))
    }

    /// Reads `len` bytes at `offset` (fewer at the end of the blob).
    pub fn read_at(&self, hash: &ContentHash, offset: u64, len: usize) -> Result<Vec<u8>, StoreError> {
        self.open_stored(hash)?.read_at(offset, len)
    }

    /// Opens a stored blob for many reads at random offsets (serving ranges
    /// of it): the meta is looked up and the file opened once.
    pub fn open_stored(&self, hash: &ContentHash) -> Result<StoredBlob, StoreError> {
        let meta = self.require_meta(hash)?;
        let file = if meta.inline {
            None
        } else {
            Some(File::open(self.blob_path(meta.seq))?)
        };
        Ok(StoredBlob {
            hash: *hash,
            meta,
            file,
            chunks: self.chunks.clone(),
            outboards: self.outboards.clone(),
        })
    }

    /// Blobs held. A counter: sled's `len` walks the whole tree, and
    /// `/v1/status` and `/metrics` read this on every call.
    pub fn blob_count(&self) -> usize {
        self.blob_records.load(std::sync::atomic::Ordering::Relaxed) as usize
    }

    /// Removes staged files and pieces that belong to no committed
    /// blob: the leftovers of an import interrupted by a crash.
    pub(super) fn sweep_orphan_chunks(&self) -> Result<usize, StoreError> {
        let mut live = HashSet::new();
        for v in self.blob_meta.iter().values() {
            let meta: BlobMeta = postcard::from_bytes(&v?).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            live.insert(meta.seq);
        }
        let mut swept = 0;
        for entry in std::fs::read_dir(&self.packs)? {
            let path = entry?.path();
            let seq = path
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| u64::from_str_radix(s, 16).ok());
            if seq.is_none_or(|seq| !live.contains(&seq)) {
                std::fs::remove_file(&path)?;
                swept += 1;
            }
        }
        for tree in [&self.chunks, &self.outboards] {
            let mut batch = sled::Batch::default();
            for key in tree.iter().keys() {
                let key = key?;
                let seq = u64::from_be_bytes(
                    key[..8]
                        .try_into()
                        .map_err(|_| StoreError::Corrupt("blob piece key".into()))?,
                );
                if !live.contains(&seq) {
                    batch.remove(key);
                    swept += 1;
                }
            }
            tree.apply_batch(batch)?;
        }
        Ok(swept)
    }

    /// Number of blob files on disk (committed or staged).
    #[cfg(test)]
    fn blob_files(&self) -> usize {
        std::fs::read_dir(&self.packs).map(|d| d.count()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(len: usize, inline: bool) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        let mut w = store.blob_writer(u64::MAX).unwrap();
        w.write_all(&data).unwrap();
        let staged = w.finish().unwrap();
        assert_eq!(staged.inline, inline);
        assert_eq!(staged.hash, ContentHash::of(&data));
        let meta = store.commit_blob(staged).unwrap();
        assert!(meta.outboard_len > 0);
        let (_, mut r) = store.blob_reader(&staged.hash).unwrap();
        let mut back = Vec::new();
        r.read_to_end(&mut back).unwrap();
        assert_eq!(back, data);
        let mid = len as u64 / 2 + 1;
        assert_eq!(
            store.read_at(&staged.hash, mid, 1000).unwrap(),
            &data[mid as usize..][..1000]
        );
        // Random reads across a piece boundary and at the end, and the
        // outboard read pair by pair, agree with the streams.
        let opened = store.open_stored(&staged.hash).unwrap();
        let across = CHUNK_SIZE as u64 - 10;
        assert_eq!(opened.read_at(across, 20).unwrap(), &data[across as usize..][..20]);
        assert_eq!(opened.read_at(len as u64 - 5, 100).unwrap(), &data[len - 5..]);
        let mut outboard = Vec::new();
        store
            .outboard_reader(&staged.hash)
            .unwrap()
            .read_to_end(&mut outboard)
            .unwrap();
        for (i, pair) in outboard.chunks(64).enumerate() {
            assert_eq!(opened.outboard_pair(i as u64 * 64).unwrap(), pair);
        }
        assert!(opened.outboard_pair(outboard.len() as u64).is_err());
    }

    #[test]
    fn small_blobs_round_trip_inline() {
        round_trip(CHUNK_SIZE * 3 + 123, true);
    }

    #[test]
    fn large_blobs_round_trip_through_files() {
        round_trip(INLINE_MAX + CHUNK_SIZE + 7, false);
    }

    #[test]
    fn uncommitted_blobs_are_swept_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        {
            let store = Store::open(&path).unwrap();
            for len in [CHUNK_SIZE * 2, INLINE_MAX * 2] {
                let mut w = store.blob_writer(u64::MAX).unwrap();
                w.write_all(&vec![1u8; len]).unwrap();
                w.finish().unwrap();
            }
            store.flush().unwrap();
            assert_eq!(store.blob_files(), 1);
            assert_eq!(store.chunks.len(), 2);
        }
        let store = crate::store::reopen(&path);
        assert_eq!(store.blob_files(), 0);
        assert_eq!(store.chunks.len(), 0);
    }

    /// A fetched file, and the outboard it was verified against.
    fn fetched(dir: &std::path::Path, len: usize) -> (PathBuf, Vec<u8>, ContentHash, Vec<u8>) {
        let data: Vec<u8> = (0..len).map(|i| (i * 13 % 251) as u8).collect();
        let ob = PreOrderOutboard::<Vec<u8>>::create_sized(&data[..], len as u64, IROH_BLOCK_SIZE).unwrap();
        let path = dir.join("fetched.data");
        std::fs::write(&path, &data).unwrap();
        (path, data, ContentHash::from(ob.root), ob.data)
    }

    #[test]
    fn an_adopted_file_keeps_its_verified_outboard_and_a_wrong_one_is_computed_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let len = INLINE_MAX * 4 + 999;
        for corrupt in [false, true] {
            let (path, data, hash, outboard) = fetched(dir.path(), len);
            let mut given = outboard.clone();
            if corrupt {
                given[64 * 3] ^= 1;
            }
            assert!(outboard_hashes_to(&outboard, hash, len as u64));
            assert_eq!(outboard_hashes_to(&given, hash, len as u64), !corrupt);
            let meta = store.adopt_file(&path, hash, len as u64, &given).unwrap();
            assert_eq!((meta.size, meta.outboard_len), (len as u64, outboard.len() as u64));
            let mut stored = Vec::new();
            store.outboard_reader(&hash).unwrap().read_to_end(&mut stored).unwrap();
            assert_eq!(stored, outboard, "the store holds the true outboard");
            assert_eq!(store.read_at(&hash, 5, 10).unwrap(), &data[5..15]);
            // Adopting the same blob again keeps the first copy.
            let (path, _, _, _) = fetched(dir.path(), len);
            assert_eq!(store.adopt_file(&path, hash, len as u64, &outboard).unwrap(), meta);
            assert!(!path.exists());
            store.blob_meta.remove(hash.as_bytes()).unwrap();
        }
        // An outboard for another tree shape, or of a blob of one group, says nothing.
        let (_, _, hash, outboard) = fetched(dir.path(), len);
        assert!(!outboard_hashes_to(&outboard, hash, len as u64 * 2));
        assert!(!outboard_hashes_to(&[], hash, 100));
    }

    #[test]
    fn writer_refuses_past_limit() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let mut w = store.blob_writer(10).unwrap();
        assert!(w.write_all(&[0u8; 11]).is_err());
    }
}
