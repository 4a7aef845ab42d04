//! Where a registry document is saved: one file per channel, holding an
//! automerge snapshot followed by the incremental pieces saved since.
//!
//! Each piece is framed (`u32` little-endian length, then the bytes) after a
//! header line, so a crash in the middle of an append leaves a torn last
//! frame that is recognised and dropped, and the history before it loads.
//! (automerge's own partial load drops every change of a damaged file but a
//! leading snapshot, which would make the node rebuild the document with a
//! fresh history: every key a second value across the federation.)
//!
//! The document lives in a file rather than in sled because sled keeps every
//! value it has read or written resident, and at 100k releases the document
//! is tens of MB. The file is derived state: the verified records in sled are
//! the authority (see `Store::doc_pending`).

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::registry::Replica;

/// Appended pieces are folded into a new snapshot once they outgrow the
/// snapshot, and never below this.
const MIN_APPENDED_BEFORE_COMPACTION: u64 = 4 * 1024 * 1024;

/// First bytes of a framed document file.
const HEADER: &[u8] = b"packfed registry document v1\n";

/// The saved form of one registry document.
#[derive(Debug)]
pub struct DocFile {
    path: PathBuf,
    snapshot_len: u64,
    appended: u64,
}

/// What a document file held.
#[derive(Debug)]
pub enum Saved {
    /// No file, or an empty one.
    Nothing,
    /// The whole frames, in order (ranges of `bytes`: the document can be
    /// tens of MB, so the pieces are not copied out), and whether a torn
    /// frame followed them.
    Pieces {
        bytes: Vec<u8>,
        pieces: Vec<std::ops::Range<usize>>,
        torn: bool,
    },
    /// An unframed file as nodes before framing wrote it: one automerge save.
    Unframed(Vec<u8>),
}

impl DocFile {
    pub fn new(path: PathBuf) -> DocFile {
        let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        DocFile {
            path,
            snapshot_len: len,
            appended: 0,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the saved pieces.
    pub fn read(&self) -> std::io::Result<Saved> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Saved::Nothing),
            Err(e) => return Err(e),
        };
        if bytes.is_empty() {
            return Ok(Saved::Nothing);
        }
        if !bytes.starts_with(HEADER) {
            return Ok(Saved::Unframed(bytes));
        }
        let mut at = HEADER.len();
        let mut pieces = Vec::new();
        let torn = loop {
            let rest = &bytes[at..];
            if rest.is_empty() {
                break false;
            }
            let Some((len, tail)) = rest.split_first_chunk::<4>() else {
                break true;
            };
            let len = u32::from_le_bytes(*len) as usize;
            if tail.len() < len {
                break true;
            }
            pieces.push(at + 4..at + 4 + len);
            at += 4 + len;
        };
        Ok(Saved::Pieces { bytes, pieces, torn })
    }

    /// Replaces the file with a full snapshot of `replica`.
    pub fn snapshot(&mut self, replica: &mut Replica) -> anyhow::Result<()> {
        self.write_snapshot(&replica.save())
    }

    /// Whether a piece of `len` bytes should rather be saved as a snapshot:
    /// once the pieces have grown as large as the snapshot.
    pub fn wants_snapshot(&self, len: usize) -> bool {
        self.appended + len as u64 > self.snapshot_len.max(MIN_APPENDED_BEFORE_COMPACTION)
    }

    /// Replaces the file with `bytes`, a full save.
    pub fn write_snapshot(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        let mut framed = Vec::with_capacity(HEADER.len() + 4 + bytes.len());
        framed.extend_from_slice(HEADER);
        framed.extend_from_slice(&frame_len(bytes)?);
        framed.extend_from_slice(bytes);
        crate::config::write_atomic(&self.path, &framed)?;
        self.snapshot_len = framed.len() as u64;
        self.appended = 0;
        Ok(())
    }

    /// Appends an incremental save, synced. A file that does not exist yet
    /// gets the header first.
    pub fn append(&mut self, piece: &[u8]) -> anyhow::Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let new = std::fs::metadata(&self.path).map(|m| m.len() == 0).unwrap_or(true);
        if new {
            std::fs::create_dir_all(dir)?;
        }
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&self.path)?;
        let mut framed = Vec::with_capacity(HEADER.len() + 4 + piece.len());
        if new {
            framed.extend_from_slice(HEADER);
        }
        framed.extend_from_slice(&frame_len(piece)?);
        framed.extend_from_slice(piece);
        f.write_all(&framed)?;
        f.sync_data()?;
        if new {
            crate::config::sync_dir(dir)?;
        }
        self.appended += framed.len() as u64;
        Ok(())
    }
}

fn frame_len(bytes: &[u8]) -> anyhow::Result<[u8; 4]> {
    let len = u32::try_from(bytes.len()).map_err(|_| anyhow::anyhow!("registry document piece over 4 GiB"))?;
    Ok(len.to_le_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use packfed_protocol::RecordId;

    fn rec(n: u32) -> (RecordId, Vec<u8>) {
        let bytes = n.to_le_bytes().repeat(10);
        (RecordId::of(&bytes), bytes)
    }

    fn load(file: &DocFile) -> (Replica, bool) {
        match file.read().unwrap() {
            Saved::Pieces { bytes, pieces, torn } => {
                let (r, n) = Replica::load_pieces(pieces.iter().map(|p| &bytes[p.clone()])).unwrap();
                assert_eq!(n, pieces.len());
                (r, torn)
            }
            other => panic!("expected pieces, got {other:?}"),
        }
    }

    #[test]
    fn snapshot_and_pieces_load_back_and_compact() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = DocFile::new(dir.path().join("public.automerge"));
        assert!(matches!(file.read().unwrap(), Saved::Nothing));
        let mut r = Replica::new();
        for n in 0..10 {
            let (id, b) = rec(n);
            r.insert(&id, &b).unwrap();
        }
        file.snapshot(&mut r).unwrap();
        let snapshot_len = std::fs::metadata(file.path()).unwrap().len();
        for n in 10..20 {
            let (id, b) = rec(n);
            r.insert(&id, &b).unwrap();
            let piece = r.save_incremental();
            assert!(!file.wants_snapshot(piece.len()));
            file.append(&piece).unwrap();
        }
        // Small pieces are appended, not rewritten.
        assert!(std::fs::metadata(file.path()).unwrap().len() > snapshot_len);
        let (loaded, torn) = load(&file);
        assert!(!torn);
        assert_eq!(loaded.len(), 20);
        for n in 0..20 {
            assert!(loaded.contains(&rec(n).0));
        }
        // Past the threshold the pieces fold into one snapshot.
        file.appended = MIN_APPENDED_BEFORE_COMPACTION;
        let (id, b) = rec(99);
        r.insert(&id, &b).unwrap();
        assert!(file.wants_snapshot(r.save_incremental().len()));
        file.snapshot(&mut r).unwrap();
        assert_eq!(file.appended, 0);
        let reopened = DocFile::new(file.path().to_path_buf());
        assert_eq!(load(&reopened).0.len(), 21);
    }

    #[test]
    fn a_torn_last_piece_is_dropped_and_what_precedes_it_loads() {
        let dir = tempfile::tempdir().unwrap();
        // No snapshot yet: the first append starts the file.
        let mut file = DocFile::new(dir.path().join("registry/public.automerge"));
        let mut r = Replica::new();
        for n in 0..3 {
            let (id, b) = rec(n);
            r.insert(&id, &b).unwrap();
            file.append(&r.save_incremental()).unwrap();
        }
        let bytes = std::fs::read(file.path()).unwrap();
        for cut in [1, 5, 30] {
            std::fs::write(file.path(), &bytes[..bytes.len() - cut]).unwrap();
            let (loaded, torn) = load(&file);
            assert!(torn, "cut {cut}");
            assert_eq!(loaded.len(), 2, "cut {cut}");
            assert!(!loaded.contains(&rec(2).0));
        }
    }
}
