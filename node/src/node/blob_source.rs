//! The node's store as a [`ChunkSource`]: complete blobs from sled and
//! their files, blobs still arriving from the swarm's partial files, the
//! node's access rules and upload budget.

use std::io;
use std::sync::Arc;

use crate::blobs::{BlobView, Bytes, ChunkSource, EndpointId, Hash, content_hash, peer_of};
use crate::store::StoredBlob;
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

    fn open(&self, hash: &Hash) -> io::Result<Option<Arc<dyn BlobView>>> {
        let h = content_hash(hash);
        match self.node.store.open_stored(&h) {
            Ok(blob) => Ok(Some(Arc::new(blob))),
            Err(crate::store::StoreError::MissingBlob(_)) => Ok(self.node.partial(&h).map(|p| p as Arc<dyn BlobView>)),
            Err(e) => Err(io::Error::other(e)),
        }
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

impl BlobView for StoredBlob {
    fn read_at(&self, offset: u64, len: usize) -> io::Result<Bytes> {
        StoredBlob::read_at(self, offset, len)
            .map(Bytes::from)
            .map_err(io::Error::other)
    }

    fn outboard_len(&self) -> u64 {
        self.meta().outboard_len
    }

    fn outboard_pair(&self, offset: u64) -> io::Result<[u8; 64]> {
        StoredBlob::outboard_pair(self, offset).map_err(io::Error::other)
    }

    fn read_ahead(&self, offset: u64, len: u64) {
        StoredBlob::read_ahead(self, offset, len);
    }
}
