//! Fetching pack bytes from the federation: iroh-blobs (verified streaming)
//! from every provider that announced an iroh address, the libp2p range
//! protocol otherwise; provider after provider, resuming where the last one
//! stopped. Bytes land in staged chunks and become visible only after the
//! whole blob hashes to the signed release's hash, so nothing corrupt is
//! ever committed; a provider that fails, stalls or lies is skipped.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, bail};
use libp2p::PeerId;
use packfed_protocol::{ContentHash, pb};

use crate::net::{MAX_BLOB_RANGE, NetHandle, Provider};
use crate::node::Node;
use crate::store::BlobWriter;

use crate::net::ranges::STATUS_OK;

/// Fetches `[writer.size..size)` of `hash` from one peer over the libp2p
/// range protocol (the fallback when the peer announced no iroh address).
async fn fetch_ranges(
    net: &NetHandle,
    peer: PeerId,
    hash: ContentHash,
    size: u64,
    writer: &mut BlobWriter,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<()> {
    let mut offset = writer.size();
    while offset < size {
        let length = (size - offset).min(u64::from(MAX_BLOB_RANGE)) as u32;
        let req = pb::BlobRequest {
            hash: hash.as_bytes().to_vec(),
            offset,
            length,
        };
        let resp = tokio::time::timeout(STALL, net.blob_range(peer, req))
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
        tokio::task::block_in_place(|| writer.write_all(&resp.data))?;
        offset += u64::from(length);
        progress(offset);
    }
    Ok(())
}

/// Fetches the rest of `hash` from one peer over iroh-blobs: every 16 KiB
/// group is BLAKE3-verified before it reaches the writer, and the request
/// starts where the writer stands (resume).
async fn fetch_iroh(
    node: &Node,
    provider: &Provider,
    hash: ContentHash,
    writer: &mut BlobWriter,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<()> {
    let (Some(ep), Some(key)) = (node.iroh.get(), provider.key) else {
        bail!("no iroh endpoint");
    };
    let id = iroh::EndpointId::from_bytes(&key).map_err(|e| anyhow::anyhow!("bad endpoint id: {e}"))?;
    let mut addr = iroh::EndpointAddr::new(id);
    for a in &provider.iroh_addrs {
        addr = addr.with_ip_addr(*a);
    }
    let from = writer.size();
    let fut = crate::blobs::fetch_blob(
        ep,
        addr,
        iroh_blobs::Hash::from_bytes(*hash.as_bytes()),
        from,
        writer,
        |p| progress(p.offset),
    );
    match tokio::time::timeout(STALL * 10, fut).await {
        Err(_) => bail!("peer stalled"),
        Ok(Err(crate::blobs::FetchError::Verification(e))) => bail!("peer served corrupted bytes ({e})"),
        Ok(Err(e)) => bail!("{e}"),
        Ok(Ok(_)) => Ok(()),
    }
}

/// How long a provider may stay silent before we move on.
const STALL: Duration = Duration::from_secs(30);

/// Fetches a blob from the federation, trying each provider in turn and
/// resuming where the previous one stopped. Bytes land in staged chunks that
/// become visible only once the whole blob hashes to `hash`.
pub async fn fetch_blob(node: &Arc<Node>, net: &NetHandle, hash: ContentHash, size: u64) -> Result<()> {
    fetch_blob_with_progress(node, net, hash, size, &|_| {}).await
}

pub async fn fetch_blob_with_progress(
    node: &Arc<Node>,
    net: &NetHandle,
    hash: ContentHash,
    size: u64,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<()> {
    // A second fetch of the same blob (an install during a mirror fetch)
    // waits for the first, then finds the blob stored.
    let lock = node.fetch_lock(hash);
    let _one_at_a_time = lock.lock().await;
    if node.store.has_blob(&hash)? {
        return Ok(());
    }
    let limit = node.config.node.max_pack_bytes();
    if size > limit {
        bail!("{hash} is {size} bytes, over this node's {limit}-byte pack limit ([node] max_pack_bytes)");
    }
    let started = std::time::Instant::now();
    let result = fetch_from_providers(node, net, hash, size, progress).await;
    if result.is_ok() {
        node.metrics.fetch_seconds.observe(started.elapsed());
    }
    result
}

/// [`fetch_blob_with_progress`] once the blob is known to be missing.
async fn fetch_from_providers(
    node: &Arc<Node>,
    net: &NetHandle,
    hash: ContentHash,
    size: u64,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<()> {
    let mut providers = net.providers(hash).await;
    let all = providers.len();
    providers.retain(|p| !node.is_penalized(&p.peer));
    if providers.is_empty() {
        if all > 0 {
            bail!("the only peers that could provide {hash} served corrupted bytes before and are skipped for now");
        }
        bail!("no peer is connected that could provide {hash}; check `packfed peers`");
    }
    if size >= crate::swarm::SWARM_MIN_BYTES
        && let Some(ep) = node.iroh.get()
    {
        let sources = swarm_sources(&providers);
        if !sources.is_empty() {
            match fetch_swarm(node, net, ep, hash, size, sources, progress).await {
                Ok(()) => return Ok(()),
                // Providers without iroh may still serve it over libp2p.
                Err(e) if providers.iter().any(|p| p.key.is_none() || p.iroh_addrs.is_empty()) => {
                    tracing::warn!(%hash, error = %e, "swarm fetch failed; trying providers one by one");
                }
                Err(e) => return Err(e),
            }
        }
    }
    let store = node.store.clone();
    let mut writer = store.blob_writer(size)?;
    let mut errors = Vec::new();
    for provider in &providers {
        let via = if !provider.iroh_addrs.is_empty() && node.iroh.get().is_some() {
            "iroh"
        } else {
            "libp2p"
        };
        let attempt = if via == "iroh" {
            fetch_iroh(node, provider, hash, &mut writer, progress).await
        } else {
            fetch_ranges(net, provider.peer, hash, size, &mut writer, progress).await
        };
        match attempt {
            Ok(()) if writer.size() == size => {
                let staged = tokio::task::block_in_place(|| writer.finish())?;
                if staged.hash != hash {
                    // Only the range fallback can get here: iroh verifies as
                    // it goes. Where the bad bytes are is unknown, so the
                    // next provider starts from the beginning.
                    store.discard(staged.seq)?;
                    tracing::warn!(%hash, peer = %provider.peer, via, "provider served corrupted bytes; trying the next");
                    node.penalize(provider.peer);
                    errors.push(format!(
                        "{}: peer served corrupted bytes (BLAKE3 {} instead of {hash})",
                        provider.peer, staged.hash
                    ));
                    writer = store.blob_writer(size)?;
                    continue;
                }
                tokio::task::block_in_place(|| -> Result<()> {
                    store.commit_blob(staged)?;
                    store.flush()?;
                    Ok(())
                })?;
                tracing::info!(%hash, peer = %provider.peer, via, "fetched blob");
                if node.config.node.self_check() {
                    node.spawn_self_attest(hash);
                }
                if node.is_public_blob(&hash) {
                    net.send(crate::net::Command::Provide(hash)).await;
                }
                return Ok(());
            }
            Ok(()) => errors.push(format!(
                "{}: stopped at {} of {size} bytes",
                provider.peer,
                writer.size()
            )),
            Err(e) => {
                tracing::warn!(%hash, peer = %provider.peer, via, error = %e, resume_at = writer.size(), "provider failed; trying the next");
                errors.push(format!("{}: {e:#}", provider.peer));
            }
        }
    }
    let staged = tokio::task::block_in_place(|| writer.finish())?;
    store.discard(staged.seq)?;
    bail!("no provider could serve {hash}: {}", errors.join("; "))
}

/// Providers that announced an iroh address, as swarm sources.
fn swarm_sources(providers: &[Provider]) -> Vec<crate::swarm::Source> {
    providers
        .iter()
        .filter_map(|p| {
            let key = p.key?;
            if p.iroh_addrs.is_empty() {
                return None;
            }
            let id = iroh::EndpointId::from_bytes(&key).ok()?;
            let mut addr = iroh::EndpointAddr::new(id);
            for a in &p.iroh_addrs {
                addr = addr.with_ip_addr(*a);
            }
            Some(crate::swarm::Source {
                peer: p.peer,
                key,
                addr,
            })
        })
        .collect()
}

/// Fetches a large blob piece by piece from every source at once, serving
/// its verified pieces to others meanwhile, then adopts it into the store.
async fn fetch_swarm(
    node: &Arc<Node>,
    net: &NetHandle,
    ep: &iroh::Endpoint,
    hash: ContentHash,
    size: u64,
    sources: Vec<crate::swarm::Source>,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<()> {
    let partial = node.open_partial(hash, size)?;
    let pieces = crate::swarm::piece_count(size);
    let held = crate::swarm::pieces_in(size, &partial.have())
        .iter()
        .filter(|x| **x)
        .count();
    if held > 0 {
        tracing::info!(%hash, held, pieces, "resuming a fetch: pieces already verified on disk");
    }
    // Others may fetch from us from now on: say so before we have it all.
    if node.is_public_blob(&hash) {
        net.send(crate::net::Command::Provide(hash)).await;
    }
    let (result, outcome) =
        crate::swarm::download(ep, *node.key.public().as_bytes(), partial.clone(), sources, progress).await;
    for liar in &outcome.liars {
        tracing::warn!(%hash, peer = %liar, "provider served corrupted bytes; skipped for {:?}", crate::node::PENALTY);
        node.penalize(*liar);
    }
    for (peer, bytes, ended) in &outcome.sources {
        tracing::debug!(%hash, %peer, bytes, ended = ended.as_deref().unwrap_or("-"), "swarm source");
    }
    if let Err(e) = result {
        // The verified pieces stay on disk; the next fetch resumes them.
        node.close_partial(&hash);
        return Err(e);
    }
    let adopted = tokio::task::block_in_place(|| -> Result<()> {
        node.store
            .adopt_file(partial.data_path(), hash, size, &partial.outboard()?)?;
        node.store.flush()?;
        Ok(())
    });
    // Serving switches to the store once the meta is written.
    node.close_partial(&hash);
    partial.remove_files();
    adopted?;
    let from: Vec<String> = outcome
        .sources
        .iter()
        .filter(|(_, b, _)| *b > 0)
        .map(|(p, b, _)| format!("{p}={b}"))
        .collect();
    tracing::info!(%hash, via = "swarm", sources = from.len(), bytes_by_source = %from.join(","), "fetched blob");
    if node.config.node.self_check() {
        node.spawn_self_attest(hash);
    }
    Ok(())
}

/// Regional mirrors fetch every new public release in the background, at
/// most `MAX_MIRROR_FETCHES` at a time: the rest wait in `slots`' queue (a
/// fresh mirror's first sync can name tens of thousands of packs).
pub fn spawn_mirror(node: Arc<Node>, net: NetHandle, slots: Arc<tokio::sync::Semaphore>, hash: ContentHash, size: u64) {
    tokio::spawn(async move {
        let Ok(_slot) = slots.acquire_owned().await else {
            return;
        };
        // Providers refuse a release they do not show yet (its claim may
        // reach their witness quorum a moment after ours): try again a few
        // times, backing off, before giving up until the next sync.
        let mut wait = std::time::Duration::from_millis(500);
        for attempt in 1..=MIRROR_ATTEMPTS {
            match fetch_blob(&node, &net, hash, size).await {
                Ok(_) => return,
                Err(e) if attempt == MIRROR_ATTEMPTS => {
                    tracing::warn!(%hash, error = %e, attempts = attempt, "mirror fetch failed; will retry on the next sync")
                }
                Err(e) => {
                    tracing::debug!(%hash, error = %e, attempt, "mirror fetch failed; trying again");
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
            }
        }
    });
}

/// Mirror fetches running at once.
pub const MAX_MIRROR_FETCHES: usize = 4;

/// Tries of a mirror fetch (waits 0.5, 1, 2, 4, 8 s in between).
const MIRROR_ATTEMPTS: u32 = 6;
