//! Blobs: pack archives stored in bounded chunks, with the bao outboard that
//! iroh-blobs' verified streaming needs, computed once at import.

use std::collections::HashSet;
use std::io::{self, Read, Write};

use bao_tree::BlockSize;
use bao_tree::io::outboard::PreOrderOutboard;
use bao_tree::io::sync::CreateOutboard;
use packfed_protocol::ContentHash;
use serde::{Deserialize, Serialize};

use super::{Store, StoreError};

/// Largest value written to sled: bytes are stored and read in pieces of
/// this size, so no blob is ever held whole in memory.
pub const CHUNK_SIZE: usize = 64 * 1024;

/// Chunks between intermediate flushes of a large import (16 MiB).
const FLUSH_EVERY_CHUNKS: u32 = 256;

/// iroh-blobs' block size: chunk groups of 2^4 BLAKE3 chunks (16 KiB).
pub const IROH_BLOCK_SIZE: BlockSize = BlockSize::from_chunk_log(4);

/// What the store knows of a complete blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobMeta {
    pub seq: u64,
    pub size: u64,
    pub outboard_len: u64,
}

fn chunk_key(seq: u64, index: u32) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..8].copy_from_slice(&seq.to_be_bytes());
    k[8..].copy_from_slice(&index.to_be_bytes());
    k
}

fn to_io(e: sled::Error) -> io::Error {
    io::Error::other(e)
}

/// Streams bytes into the store under a fresh sequence number, hashing as it
/// goes. Nothing is visible until [`Store::commit_blob`].
pub struct BlobWriter {
    store: Store,
    seq: u64,
    index: u32,
    buf: Vec<u8>,
    hasher: blake3::Hasher,
    size: u64,
    limit: u64,
}

/// Bytes written but not yet committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StagedBlob {
    pub seq: u64,
    pub hash: ContentHash,
    pub size: u64,
}

impl BlobWriter {
    fn flush_chunk(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.store
            .chunks
            .insert(chunk_key(self.seq, self.index), self.buf.as_slice())
            .map_err(to_io)?;
        self.index += 1;
        self.buf.clear();
        // Flush every few MiB so sled's dirty buffers stay bounded: a 1 GiB
        // import must not pile up in memory until the final flush.
        if self.index.is_multiple_of(FLUSH_EVERY_CHUNKS) {
            self.store.db.flush().map_err(to_io)?;
        }
        Ok(())
    }

    /// Bytes written so far (where a resumed download continues).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Writes the last chunk; the bytes are staged under their hash.
    pub fn finish(mut self) -> io::Result<StagedBlob> {
        self.flush_chunk()?;
        Ok(StagedBlob {
            seq: self.seq,
            hash: self.hasher.finalize().into(),
            size: self.size,
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
        let room = CHUNK_SIZE - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        self.hasher.update(&data[..n]);
        self.size += n as u64;
        if self.buf.len() == CHUNK_SIZE {
            self.flush_chunk()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Reads a blob's chunks in order.
pub struct BlobReader {
    tree: sled::Tree,
    seq: u64,
    index: u32,
    current: sled::IVec,
    pos: usize,
    remaining: u64,
}

impl Read for BlobReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || out.is_empty() {
            return Ok(0);
        }
        if self.pos == self.current.len() {
            self.current = self
                .tree
                .get(chunk_key(self.seq, self.index))
                .map_err(to_io)?
                .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "blob chunk missing from store"))?;
            self.index += 1;
            self.pos = 0;
            if self.current.is_empty() {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "empty blob chunk in store"));
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
    /// Starts streaming a new blob of at most `limit` bytes.
    pub fn blob_writer(&self, limit: u64) -> Result<BlobWriter, StoreError> {
        Ok(BlobWriter {
            store: self.clone(),
            seq: self.db.generate_id()?,
            index: 0,
            buf: Vec::with_capacity(CHUNK_SIZE),
            hasher: blake3::Hasher::new(),
            size: 0,
            limit,
        })
    }

    /// Reads staged (not yet committed) bytes.
    pub fn staged_reader(&self, staged: &StagedBlob) -> BlobReader {
        self.reader_at(&self.chunks, staged.seq, staged.size)
    }

    fn reader_at(&self, tree: &sled::Tree, seq: u64, size: u64) -> BlobReader {
        BlobReader {
            tree: tree.clone(),
            seq,
            index: 0,
            current: sled::IVec::default(),
            pos: 0,
            remaining: size,
        }
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
            PreOrderOutboard::<Vec<u8>>::create_sized(self.staged_reader(&staged), staged.size, IROH_BLOCK_SIZE)?;
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
        };
        let encoded = postcard::to_stdvec(&meta).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.blob_meta.insert(staged.hash.as_bytes(), encoded)?;
        Ok(meta)
    }

    /// Drops staged chunks (a failed or refused import).
    pub fn discard(&self, seq: u64) -> Result<(), StoreError> {
        for tree in [&self.chunks, &self.outboards] {
            let mut batch = sled::Batch::default();
            for key in tree.scan_prefix(seq.to_be_bytes()).keys() {
                batch.remove(key?);
            }
            tree.apply_batch(batch)?;
        }
        Ok(())
    }

    /// Undoes an import that was refused: drops the staged chunks, and the
    /// blob itself if this import committed it and no release refers to it.
    pub fn abandon(&self, staged: &StagedBlob) -> Result<(), StoreError> {
        if let Some(meta) = self.blob_meta(&staged.hash)?
            && meta.seq == staged.seq
        {
            if !self.releases_with_hash(&staged.hash)?.is_empty() {
                return Ok(());
            }
            self.blob_meta.remove(staged.hash.as_bytes())?;
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

    /// Streams a stored blob.
    pub fn blob_reader(&self, hash: &ContentHash) -> Result<(BlobMeta, BlobReader), StoreError> {
        let meta = self
            .blob_meta(hash)?
            .ok_or_else(|| StoreError::MissingBlob(hash.to_string()))?;
        Ok((meta, self.reader_at(&self.chunks, meta.seq, meta.size)))
    }

    /// Streams a stored blob's pre-order bao outboard.
    pub fn outboard_reader(&self, hash: &ContentHash) -> Result<BlobReader, StoreError> {
        let meta = self
            .blob_meta(hash)?
            .ok_or_else(|| StoreError::MissingBlob(hash.to_string()))?;
        Ok(self.reader_at(&self.outboards, meta.seq, meta.outboard_len))
    }

    /// Reads `len` bytes at `offset` (fewer at the end of the blob).
    pub fn read_at(&self, hash: &ContentHash, offset: u64, len: usize) -> Result<Vec<u8>, StoreError> {
        let meta = self
            .blob_meta(hash)?
            .ok_or_else(|| StoreError::MissingBlob(hash.to_string()))?;
        if offset > meta.size {
            return Err(StoreError::Corrupt(format!("read at {offset} past the end of {hash}")));
        }
        let len = len.min((meta.size - offset) as usize);
        let mut out = Vec::with_capacity(len);
        let mut pos = offset;
        while out.len() < len {
            let index = (pos / CHUNK_SIZE as u64) as u32;
            let within = (pos % CHUNK_SIZE as u64) as usize;
            let chunk = self
                .chunks
                .get(chunk_key(meta.seq, index))?
                .ok_or_else(|| StoreError::Corrupt(format!("chunk {index} of {hash} is missing")))?;
            if within >= chunk.len() {
                return Err(StoreError::Corrupt(format!("chunk {index} of {hash} is short")));
            }
            let take = (chunk.len() - within).min(len - out.len());
            out.extend_from_slice(&chunk[within..within + take]);
            pos += take as u64;
        }
        Ok(out)
    }

    pub fn blob_count(&self) -> usize {
        self.blob_meta.len()
    }

    /// Removes chunks that belong to no committed blob: the leftovers of an
    /// import interrupted by a crash.
    pub(super) fn sweep_orphan_chunks(&self) -> Result<usize, StoreError> {
        let mut live = HashSet::new();
        for v in self.blob_meta.iter().values() {
            let meta: BlobMeta = postcard::from_bytes(&v?).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            live.insert(meta.seq);
        }
        let mut swept = 0;
        for tree in [&self.chunks, &self.outboards] {
            let mut batch = sled::Batch::default();
            for key in tree.iter().keys() {
                let key = key?;
                let seq = u64::from_be_bytes(
                    key[..8]
                        .try_into()
                        .map_err(|_| StoreError::Corrupt("chunk key".into()))?,
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_round_trip_across_chunks_with_outboard() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let data: Vec<u8> = (0..(CHUNK_SIZE * 3 + 123)).map(|i| (i * 7 % 251) as u8).collect();
        let mut w = store.blob_writer(u64::MAX).unwrap();
        w.write_all(&data).unwrap();
        let staged = w.finish().unwrap();
        assert_eq!(staged.hash, ContentHash::of(&data));
        let meta = store.commit_blob(staged).unwrap();
        assert!(meta.outboard_len > 0);
        let (_, mut r) = store.blob_reader(&staged.hash).unwrap();
        let mut back = Vec::new();
        r.read_to_end(&mut back).unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn uncommitted_chunks_are_swept_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        {
            let store = Store::open(&path).unwrap();
            let mut w = store.blob_writer(u64::MAX).unwrap();
            w.write_all(&vec![1u8; CHUNK_SIZE * 2]).unwrap();
            w.finish().unwrap();
            store.flush().unwrap();
            assert_eq!(store.chunks.len(), 2);
        }
        let store = Store::open(&path).unwrap();
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
