//! The address book: peers of this federation this node has met, with the
//! addresses they listen on, kept across restarts so a restarted node (or
//! one whose bootstrap peer moved) dials its federation again by itself.
//!
//! What a peer says it listens on is a claim: it is kept only after the peer
//! proved its federation (identify), bounded in count per peer and overall,
//! and used only to dial.

use serde::{Deserialize, Serialize};

use super::{Store, StoreError};

/// Most peers remembered; the least recently seen go first.
pub const MAX_KNOWN_PEERS: usize = 256;
/// Most addresses kept per peer.
pub const MAX_ADDRS_PER_PEER: usize = 8;
/// Longest address kept, in bytes.
const MAX_ADDR_LEN: usize = 256;

/// One remembered peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownPeer {
    pub peer_id: String,
    pub addrs: Vec<String>,
    pub last_seen_ms: u64,
}

fn sync_state_prefix(peer_id: &str) -> Vec<u8> {
    format!("sync/{peer_id}/").into_bytes()
}

fn sync_state_key(peer_id: &str, doc: u32) -> Vec<u8> {
    let mut key = sync_state_prefix(peer_id);
    key.extend_from_slice(doc.to_string().as_bytes());
    key
}

impl Store {
    /// The saved registry sync state with a peer, for document `doc`.
    pub fn sync_state(&self, peer_id: &str, doc: u32) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.crdt.get(sync_state_key(peer_id, doc))?.map(|v| v.to_vec()))
    }

    /// Saves a sync state, for a remembered peer only; false if the peer
    /// is not in the book (its state then lives as long as the session).
    pub fn set_sync_state(&self, peer_id: &str, doc: u32, state: &[u8]) -> Result<bool, StoreError> {
        if !self.peer_book()?.contains_key(peer_id.as_bytes())? {
            return Ok(false);
        }
        self.crdt.insert(sync_state_key(peer_id, doc), state)?;
        Ok(true)
    }

    fn forget_sync_states(&self, peer_id: &str) -> Result<(), StoreError> {
        for key in self.crdt.scan_prefix(sync_state_prefix(peer_id)).keys() {
            self.crdt.remove(key?)?;
        }
        Ok(())
    }

    fn peer_book(&self) -> Result<sled::Tree, StoreError> {
        Ok(self.db.open_tree("peers")?)
    }

    /// Remembers (or refreshes) a peer's listen addresses.
    pub fn remember_peer(&self, peer_id: &str, addrs: &[String], now_ms: u64) -> Result<(), StoreError> {
        let addrs: Vec<String> = addrs
            .iter()
            .filter(|a| a.len() <= MAX_ADDR_LEN)
            .take(MAX_ADDRS_PER_PEER)
            .cloned()
            .collect();
        if addrs.is_empty() {
            return Ok(());
        }
        let book = self.peer_book()?;
        let entry = KnownPeer {
            peer_id: peer_id.to_string(),
            addrs,
            last_seen_ms: now_ms,
        };
        let bytes = postcard::to_stdvec(&entry).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let known = book
            .insert(peer_id.as_bytes(), bytes)?
            .and_then(|old| postcard::from_bytes::<KnownPeer>(&old).ok())
            .is_some_and(|old| old.addrs == entry.addrs);
        // A new peer (or new addresses) is flushed at once: a node restarted
        // on another port is found again only if one side remembers the other.
        if !known {
            book.flush()?;
        }
        if book.len() > MAX_KNOWN_PEERS {
            let mut all = self.known_peers()?;
            all.sort_by_key(|p| std::cmp::Reverse(p.last_seen_ms));
            for p in all.into_iter().skip(MAX_KNOWN_PEERS) {
                book.remove(p.peer_id.as_bytes())?;
                self.forget_sync_states(&p.peer_id)?;
            }
        }
        Ok(())
    }

    /// Every remembered peer, most recently seen first. Entries that do not
    /// decode are skipped (the book is a hint, not a record).
    pub fn known_peers(&self) -> Result<Vec<KnownPeer>, StoreError> {
        let mut out: Vec<KnownPeer> = self
            .peer_book()?
            .iter()
            .values()
            .filter_map(|v| v.ok().and_then(|v| postcard::from_bytes(&v).ok()))
            .collect();
        out.sort_by_key(|p| std::cmp::Reverse(p.last_seen_ms));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_book_is_bounded_and_keeps_the_most_recent() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let many: Vec<String> = (0..20).map(|i| format!("/ip4/127.0.0.1/tcp/{i}")).collect();
        for i in 0..(MAX_KNOWN_PEERS + 10) {
            store.remember_peer(&format!("peer{i}"), &many, i as u64).unwrap();
        }
        let known = store.known_peers().unwrap();
        assert_eq!(known.len(), MAX_KNOWN_PEERS);
        assert_eq!(known[0].peer_id, format!("peer{}", MAX_KNOWN_PEERS + 9));
        assert!(known.iter().all(|p| p.addrs.len() == MAX_ADDRS_PER_PEER));
        assert!(!known.iter().any(|p| p.peer_id == "peer0"), "the oldest went first");
        store.remember_peer("quiet", &[], 1).unwrap();
        assert!(!store.known_peers().unwrap().iter().any(|p| p.peer_id == "quiet"));
    }

    #[test]
    fn sync_states_are_kept_for_remembered_peers_and_leave_with_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let addr = ["/ip4/127.0.0.1/tcp/1".to_string()];
        assert!(!store.set_sync_state("stranger", 0, b"state").unwrap());
        assert_eq!(store.sync_state("stranger", 0).unwrap(), None);
        store.remember_peer("peer0", &addr, 0).unwrap();
        assert!(store.set_sync_state("peer0", 0, b"public").unwrap());
        assert!(store.set_sync_state("peer0", 1, b"org").unwrap());
        // "peer0" is a prefix of "peer01": its states must stay apart.
        store.remember_peer("peer01", &addr, 1).unwrap();
        assert!(store.set_sync_state("peer01", 0, b"other").unwrap());
        assert_eq!(store.sync_state("peer0", 1).unwrap().as_deref(), Some(&b"org"[..]));
        for i in 2..(MAX_KNOWN_PEERS + 2) {
            store.remember_peer(&format!("later{i}"), &addr, i as u64).unwrap();
        }
        assert_eq!(store.sync_state("peer0", 0).unwrap(), None, "left with its peer");
        assert_eq!(store.sync_state("peer0", 1).unwrap(), None);
        assert_eq!(store.sync_state("peer01", 0).unwrap(), None);
    }
}
