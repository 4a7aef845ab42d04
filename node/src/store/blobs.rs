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

use bao_tree::BlockSize;
use bao_tree::io::outboard::PreOrderOutboard;
use bao_tree::io::sync::CreateOutboard;
use packfed_protocol::ContentHash;
use serde::{Deserialize, Serialize};

use super::{Store, StoreError};

/// Size of the pieces inline blobs and outboards are stored in, and of read
/// buffers.
pub const CHUNK_SIZE: usize = 64 * 1024;

/// Blobs up to this size are stored inline in sled.
pub const INLINE_MAX: usize = 256 * 1024;

/// iroh-blobs' block size: chunk groups of 2^4 BLAKE3 chunks (16 KiB).
pub const IROH_BLOCK_SIZE: BlockSize = BlockSize::from_chunk_log(4);

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
/// goes: in memory up to [`INLINE_MAX`], then into a file. Nothing is
/// visible until [`Store::commit_blob`].
pub struct BlobWriter {
    store: Store,
    sink: Sink,
    seq: u64,
    hasher: blake3::Hasher,
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
        Ok(StagedBlob {
            seq: self.seq,
            hash: self.hasher.finalize().into(),
            size: self.size,
            inline,
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
            hasher: blake3::Hasher::new(),
            size: 0,
            limit,
        })
    }

    /// Reads staged (not yet committed) bytes.
    pub fn staged_reader(&self, staged: &StagedBlob) -> Result<BlobReader, StoreError> {
        self.open_blob(staged.seq, staged.size, staged.inline)
    }

    /// Computes the outboard of staged bytes and makes the blob visible under
    /// its hash. If the blob is already stored, the staged copy is dropped.
    /// Not durable until [`Store::flush`].
    pub fn commit_blob(&self, staged: StagedBlob) -> Result<BlobMeta, StoreError> {
        if let Some(existing) = self.blob_meta(&staged.hash)? {
            self.discard(staged.seq)?;
            return Ok(existing);
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
        for (i, piece) in outboard.data.chunks(CHUNK_SIZE).enumerate() {
            self.outboards.insert(chunk_key(staged.seq, i as u32), piece)?;
        }
        let meta = BlobMeta {
            seq: staged.seq,
            size: staged.size,
            outboard_len: outboard.data.len() as u64,
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
    /// committed like any import (the outboard is computed again from the
    /// file and its root must be `hash`). Not durable until flushed.
    pub fn adopt_file(&self, path: &std::path::Path, hash: ContentHash, size: u64) -> Result<BlobMeta, StoreError> {
        let file = File::open(path)?;
        if file.metadata()?.len() != size {
            return Err(StoreError::Corrupt(format!("{} is not {size} bytes", path.display())));
        }
        file.sync_all()?;
        let seq = self.db.generate_id()?;
        std::fs::rename(path, self.blob_path(seq))?;
        File::open(&self.packs)?.sync_all()?;
        self.commit_blob(StagedBlob {
            seq,
            hash,
            size,
            inline: false,
        })
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
        let meta = self.require_meta(hash)?;
        if offset > meta.size {
            return Err(StoreError::Corrupt(format!("read at {offset} past the end of {hash}")));
        }
        let len = len.min((meta.size - offset) as usize);
        let mut out = vec![0u8; len];
        if meta.inline {
            let mut r = self.pieces(&self.chunks, meta.seq, meta.size);
            io::copy(&mut (&mut r).take(offset), &mut io::sink())?;
            r.read_exact(&mut out)
                .map_err(|e| StoreError::Corrupt(format!("blob {hash} is shorter than its meta says: {e}")))?;
            return Ok(out);
        }
        File::open(self.blob_path(meta.seq))?
            .read_exact_at(&mut out, offset)
            .map_err(|e| StoreError::Corrupt(format!("blob {hash} is shorter than its meta says: {e}")))?;
        Ok(out)
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
        // sled's flusher thread lets go of the file lock a moment after the
        // store is dropped: poll for it (this test ran into it under load).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let store = loop {
            match Store::open(&path) {
                Err(crate::store::StoreError::Locked(_)) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(10))
                }
                other => break other.unwrap(),
            }
        };
        assert_eq!(store.blob_files(), 0);
        assert_eq!(store.chunks.len(), 0);
    }

    #[test]
    fn writer_refuses_past_limit() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let mut w = store.blob_writer(10).unwrap();
        assert!(w.write_all(&[0u8; 11]).is_err());
    }
}
