//! Moving pack bytes between nodes over the libp2p blob protocol: serving
//! byte ranges straight from the store, and fetching a blob from the
//! providers the network knows, one after another until one serves bytes
//! whose BLAKE3 matches the signed release. Bytes land in staged chunks and
//! become visible only after the hash checks out, so nothing corrupt is ever
//! committed; a provider that fails or lies is skipped for the next one.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, bail};
use libp2p::PeerId;
use packfed_protocol::{ContentHash, pb};

use crate::net::{MAX_BLOB_RANGE, NetHandle};
use crate::node::Node;

const STATUS_OK: u32 = 0;
const STATUS_NOT_FOUND: u32 = 1;
const STATUS_REFUSED: u32 = 2;

/// Answers one range request from the store.
pub fn serve_range(node: &Node, peer: &PeerId, req: &pb::BlobRequest) -> pb::BlobResponse {
    let refuse = |status| pb::BlobResponse {
        status,
        data: Vec::new(),
        size: 0,
    };
    let Ok(hash) = ContentHash::from_slice(&req.hash) else {
        return refuse(STATUS_REFUSED);
    };
    if !node.may_serve(&hash, peer) {
        return refuse(STATUS_NOT_FOUND);
    }
    let Ok((meta, mut reader)) = node.store.blob_reader(&hash) else {
        return refuse(STATUS_NOT_FOUND);
    };
    if req.offset > meta.size {
        return refuse(STATUS_REFUSED);
    }
    let len = u64::from(req.length.min(MAX_BLOB_RANGE)).min(meta.size - req.offset) as usize;
    // Skip to the offset chunk by chunk (bounded reads, never the whole blob).
    if std::io::copy(&mut (&mut reader).take(req.offset), &mut std::io::sink()).is_err() {
        return refuse(STATUS_NOT_FOUND);
    }
    let mut data = vec![0u8; len];
    if reader.read_exact(&mut data).is_err() {
        return refuse(STATUS_NOT_FOUND);
    }
    if node.corrupt_serving() && !data.is_empty() {
        data[0] ^= 0xff; // test hook: play a provider that serves corrupted bytes
    }
    pb::BlobResponse {
        status: STATUS_OK,
        data,
        size: meta.size,
    }
}

/// Fetches `hash` from one peer into the store; Ok only if it verified.
async fn fetch_from(node: &Arc<Node>, net: &NetHandle, peer: PeerId, hash: ContentHash, size: u64) -> Result<()> {
    let store = node.store.clone();
    let mut writer = store.blob_writer(size)?;
    let mut offset = 0u64;
    while offset < size || size == 0 {
        let length = (size - offset).min(u64::from(MAX_BLOB_RANGE)) as u32;
        let req = pb::BlobRequest {
            hash: hash.as_bytes().to_vec(),
            offset,
            length,
        };
        let resp = tokio::time::timeout(Duration::from_secs(30), net.blob_range(peer, req))
            .await
            .map_err(|_| anyhow::anyhow!("peer stalled"))?
            .map_err(|e| anyhow::anyhow!(e))?;
        if resp.status != STATUS_OK {
            bail!("peer does not have it (status {})", resp.status);
        }
        if resp.size != size || resp.data.len() != length as usize {
            bail!(
                "peer answered {} bytes of a {}-byte blob where {length} of {size} were asked",
                resp.data.len(),
                resp.size
            );
        }
        writer = tokio::task::block_in_place(|| -> std::io::Result<_> {
            writer.write_all(&resp.data)?;
            Ok(writer)
        })?;
        offset += u64::from(length);
        if size == 0 {
            break;
        }
    }
    let staged = tokio::task::block_in_place(|| writer.finish())?;
    if staged.hash != hash {
        store.discard(staged.seq)?;
        bail!("peer served corrupted bytes (BLAKE3 {} instead of {hash})", staged.hash);
    }
    tokio::task::block_in_place(|| -> Result<()> {
        store.commit_blob(staged)?;
        store.flush()?;
        Ok(())
    })?;
    Ok(())
}

/// Fetches a blob from the federation, trying each provider in turn.
pub async fn fetch_blob(node: &Arc<Node>, net: &NetHandle, hash: ContentHash, size: u64) -> Result<()> {
    if node.store.has_blob(&hash)? {
        return Ok(());
    }
    let providers = net.providers(hash).await;
    if providers.is_empty() {
        bail!("no peer is connected that could provide {hash}; check `packfed peers`");
    }
    let mut errors = Vec::new();
    for peer in providers {
        match fetch_from(node, net, peer, hash, size).await {
            Ok(()) => {
                tracing::info!(%hash, %peer, "fetched blob");
                net.send(crate::net::Command::Provide(hash)).await;
                return Ok(());
            }
            Err(e) => {
                tracing::warn!(%hash, %peer, error = %e, "provider failed; trying the next");
                errors.push(format!("{peer}: {e}"));
            }
        }
    }
    bail!("no provider could serve {hash}: {}", errors.join("; "))
}

/// Regional mirrors fetch every new public release in the background.
pub fn spawn_mirror(node: Arc<Node>, net: NetHandle, hash: ContentHash, size: u64) {
    tokio::spawn(async move {
        if let Err(e) = fetch_blob(&node, &net, hash, size).await {
            tracing::warn!(%hash, error = %e, "mirror fetch failed; will retry on the next sync");
        }
    });
}
