//! Answers to peers' blob range requests, from the store: only blobs this
//! node may serve to that peer ([`Node::may_serve`]), at most
//! [`MAX_BLOB_RANGE`] bytes, read at the offset (never from the start).

use std::sync::Arc;

use libp2p::PeerId;
use packfed_protocol::{ContentHash, pb};

use super::{MAX_BLOB_RANGE, RangeSource};
use crate::node::Node;

pub const STATUS_OK: u32 = 0;
pub const STATUS_NOT_FOUND: u32 = 1;
pub const STATUS_REFUSED: u32 = 2;

/// The store as a range source.
pub struct StoreRanges {
    pub node: Arc<Node>,
}

impl RangeSource for StoreRanges {
    fn serve(&self, peer: &PeerId, req: &pb::BlobRequest) -> pb::BlobResponse {
        let refuse = |status| pb::BlobResponse {
            status,
            data: Vec::new(),
            size: 0,
        };
        let Ok(hash) = ContentHash::from_slice(&req.hash) else {
            return refuse(STATUS_REFUSED);
        };
        if !self.node.may_serve(&hash, peer) {
            return refuse(STATUS_NOT_FOUND);
        }
        let Ok(Some(meta)) = self.node.store.blob_meta(&hash) else {
            return refuse(STATUS_NOT_FOUND);
        };
        if req.offset > meta.size {
            return refuse(STATUS_REFUSED);
        }
        let len = u64::from(req.length.min(MAX_BLOB_RANGE)).min(meta.size - req.offset) as usize;
        // Runs on a blocking thread: waiting for the upload budget is fine.
        if let Some(limit) = &self.node.upload_limit {
            limit.wait_blocking(len as u64);
        }
        match self.node.store.read_at(&hash, req.offset, len) {
            Ok(data) => {
                crate::metrics::Metrics::add(&self.node.metrics.blob_bytes_served, data.len() as u64);
                pb::BlobResponse {
                    status: STATUS_OK,
                    data,
                    size: meta.size,
                }
            }
            Err(_) => refuse(STATUS_NOT_FOUND),
        }
    }
}
