//! The node's store as a [`ChunkSource`]: complete blobs from sled and
//! their files, blobs still arriving from the swarm's partial files, the
//! node's access rules and upload budget.

use std::io;
use std::sync::Arc;

use crate::blobs::{Bytes, ChunkSource, EndpointId, Hash, content_hash, peer_of};
use bao_tree::ChunkRanges;

/// Serves blobs from a node's sled store; org packs only to org peers.
pub struct SledSource {
    pub node: Arc<super::Node>,
}

impl ChunkSource for SledSource {
    fn size(&self, hash: &Hash) -> Option<u64> {
        let h = content_hash(hash);
        match self.node.store.blob_meta(&h).ok().flatten() {
            Some(m) => Some(m.size),
            None => self.node.partial(&h).map(|p| p.size),
        }
    }

    fn read_at(&self, hash: &Hash, offset: u64, len: usize) -> io::Result<Bytes> {
        let h = content_hash(hash);
        match self.node.store.read_at(&h, offset, len) {
            Ok(data) => Ok(Bytes::from(data)),
            Err(crate::store::StoreError::MissingBlob(_)) => match self.node.partial(&h) {
                Some(p) => p.read_at(offset, len),
                None => Err(io::Error::new(io::ErrorKind::NotFound, "blob not here")),
            },
            Err(e) => Err(io::Error::other(e)),
        }
    }

    fn outboard(&self, hash: &Hash) -> io::Result<Option<Vec<u8>>> {
        use std::io::Read;
        let h = content_hash(hash);
        let mut reader = match self.node.store.outboard_reader(&h) {
            Ok(r) => r,
            Err(crate::store::StoreError::MissingBlob(_)) => {
                return self.node.partial(&h).map(|p| p.outboard()).transpose();
            }
            Err(e) => return Err(io::Error::other(e)),
        };
        let mut out = Vec::new();
        reader.read_to_end(&mut out)?;
        Ok(Some(out))
    }

    fn allowed(&self, hash: &Hash, remote: &EndpointId) -> bool {
        peer_of(remote).is_some_and(|peer| self.node.may_serve(&content_hash(hash), &peer))
    }

    fn available(&self, hash: &Hash) -> Option<ChunkRanges> {
        let h = content_hash(hash);
        if self.node.store.has_blob(&h).unwrap_or(false) {
            return None;
        }
        self.node.partial(&h).map(|p| p.have())
    }

    fn watch(&self, hash: &Hash) -> Option<tokio::sync::watch::Receiver<ChunkRanges>> {
        self.node.partial(&content_hash(hash)).map(|p| p.subscribe())
    }

    fn sent(&self, bytes: u64) {
        crate::metrics::Metrics::add(&self.node.metrics.blob_bytes_served, bytes);
    }

    fn upload_limit(&self) -> Option<Arc<crate::upload_limit::UploadLimit>> {
        self.node.upload_limit.clone()
    }
}
