//! Where a registry document is saved: one file per channel, holding an
//! automerge snapshot followed by the incremental pieces saved since, which
//! is a byte string `AutoCommit::load` reads whole.
//!
//! The document lives in a file rather than in sled because sled keeps every
//! value it has read or written resident, and at 100k releases the document
//! is tens of MB. The file is derived state: the verified records in sled are
//! the authority, and an unreadable file is rebuilt from them.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::registry::Replica;

/// Appended pieces are folded into a new snapshot once they outgrow the
/// snapshot, and never below this.
const MIN_APPENDED_BEFORE_COMPACTION: u64 = 4 * 1024 * 1024;

/// The saved form of one registry document.
#[derive(Debug)]
pub struct DocFile {
    path: PathBuf,
    snapshot_len: u64,
    appended: u64,
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

    /// The saved bytes; `None` when nothing was saved yet.
    pub fn read(&self) -> std::io::Result<Option<Vec<u8>>> {
        match std::fs::read(&self.path) {
            Ok(b) if b.is_empty() => Ok(None),
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
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
        crate::config::write_atomic(&self.path, bytes)?;
        self.snapshot_len = bytes.len() as u64;
        self.appended = 0;
        Ok(())
    }

    /// Appends an incremental save, synced. A torn append makes the file
    /// unreadable, and the document is then rebuilt from the records.
    pub fn append(&mut self, piece: &[u8]) -> anyhow::Result<()> {
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&self.path)?;
        f.write_all(piece)?;
        f.sync_data()?;
        self.appended += piece.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use packfed_protocol::RecordId;

    fn rec(n: u32) -> (RecordId, Vec<u8>) {
        let bytes = n.to_le_bytes().repeat(10);
        (RecordId::of(&bytes), bytes)
    }

    #[test]
    fn snapshot_and_pieces_load_back_and_compact() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = DocFile::new(dir.path().join("public.automerge"));
        assert!(file.read().unwrap().is_none());
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
        let loaded = Replica::load(&file.read().unwrap().unwrap()).unwrap();
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
        assert_eq!(Replica::load(&reopened.read().unwrap().unwrap()).unwrap().len(), 21);
    }
}
