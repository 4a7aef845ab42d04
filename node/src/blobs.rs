//! Pack bytes over iroh-blobs: BLAKE3-verified streaming (bao, 16 KiB chunk
//! groups) between nodes, served straight from sled and received straight
//! into sled.
//!
//! - [`ChunkSource`]: what storage must provide (sizes, aligned reads, the
//!   pre-order outboard computed at import, and per-requester access).
//! - [`source_store`]: an irpc actor answering iroh-blobs' store commands from
//!   a `ChunkSource`, wrapped into an `iroh_blobs::api::Store`.
//! - [`acl_events`]: provider-event interception that refuses a request unless
//!   `allowed(hash, requester)`: org packs go only to the org allow-list.
//! - [`loopback_endpoint`]/[`serve`]: the endpoint (from the node key seed, so
//!   its id is the node's public key) with no relay, no address lookup and no
//!   port mapper, and the router serving the blobs ALPN.
//! - [`fetch_blob`]: verified, streaming, resumable download into a `Write`;
//!   a chunk group that fails verification never reaches the sink.
//! - [`get_ranges`]: chosen ranges of a blob, every item verified (swarm pieces).
//! - The node's store as a `ChunkSource` lives in `node::blob_source`.

use std::{collections::HashMap, fmt, io, sync::Arc};

use bao_tree::{
    BaoTree, ChunkNum, ChunkRanges,
    io::{
        EncodeError, Leaf, Parent,
        mixed::{EncodedItem, ReadBytesAt, traverse_ranges_validated},
        sync::Outboard,
    },
    iter::BaoChunk,
};
pub use bytes::Bytes;
pub use iroh::EndpointId;
use iroh::{
    Endpoint, EndpointAddr, RelayMode, SecretKey,
    endpoint::{NetReportConfig, PortmapperConfig, presets},
    protocol::Router,
};
pub use iroh_blobs::Hash;
use iroh_blobs::{
    ALPN, BlobsProtocol,
    api::{
        self, Store, TempTag,
        blobs::Bitfield,
        proto::{self, BlobStatus, Command, ExportRangesItem},
    },
    get::fsm::{self, BlobContentNext, ConnectedNext, DecodeError, EndBlobNext},
    protocol::GetRequest,
    provider::events::{
        AbortReason, ConnectMode, EventMask, EventSender, ObserveMode, ProviderMessage, RequestMode, ThrottleMode,
    },
    store::{IROH_BLOCK_SIZE, mem::MemStore},
};

/// Bytes per bao chunk group (block size = chunk_log 4 => 16 chunks * 1 KiB).
pub const CHUNK_GROUP_BYTES: u64 = 1024 << 4;

// ---------------------------------------------------------------------------
// 1. Storage abstraction
// ---------------------------------------------------------------------------

/// What the product storage (sled) must provide. All methods are synchronous and
/// are called from tokio tasks (never from the actor loop itself).
pub trait ChunkSource: Send + Sync + 'static {
    /// Size of the blob in bytes, `None` if unknown.
    fn size(&self, hash: &Hash) -> Option<u64>;
    /// Opens a blob to serve one request from; `None` if it is not here.
    fn open(&self, hash: &Hash) -> io::Result<Option<Arc<dyn BlobView>>>;
    /// Per-requester access control.
    fn allowed(&self, hash: &Hash, remote: &EndpointId) -> bool;
    /// Optional: enumerate blobs for `ListBlobs`.
    fn list(&self) -> Vec<Hash> {
        Vec::new()
    }
    /// The chunk ranges held of a blob still arriving; `None` when the blob
    /// is complete (or unknown: then `size` is `None` too).
    fn available(&self, _hash: &Hash) -> Option<ChunkRanges> {
        None
    }
    /// Follows the held ranges of a blob still arriving.
    fn watch(&self, _hash: &Hash) -> Option<tokio::sync::watch::Receiver<ChunkRanges>> {
        None
    }
    /// Called for every chunk group sent (metrics).
    fn sent(&self, _bytes: u64) {}
    /// The node's upload budget, if it has one.
    fn upload_limit(&self) -> Option<Arc<crate::upload_limit::UploadLimit>> {
        None
    }
}

/// One blob, opened for the reads of one request.
pub trait BlobView: Send + Sync {
    /// Exactly `len` bytes at `offset`. The server only asks for whole 16 KiB
    /// chunk groups (offset aligned to 16 KiB; the last one may be shorter).
    fn read_at(&self, offset: u64, len: usize) -> io::Result<Bytes>;
    /// Length of the pre-order bao outboard (no size prefix), block size
    /// `IROH_BLOCK_SIZE`; 0 for blobs <= 16 KiB.
    fn outboard_len(&self) -> u64;
    /// The hash pair at `offset` (a multiple of 64) of that outboard.
    fn outboard_pair(&self, offset: u64) -> io::Result<[u8; 64]>;
    /// `len` bytes at `offset` are about to be read: a file-backed view
    /// starts reading them (see [`crate::memory::read_ahead`]).
    fn read_ahead(&self, _offset: u64, _len: u64) {}
}

/// The bytes `ranges` span in a blob of `size` bytes, first to last.
fn byte_span(ranges: &ChunkRanges, size: u64) -> Option<(u64, u64)> {
    let bounds = ranges.boundaries();
    let start = bounds.first()?.0.saturating_mul(1024).min(size);
    let end = if bounds.len() % 2 == 1 {
        size
    } else {
        bounds.last()?.0.saturating_mul(1024).min(size)
    };
    (end > start).then_some((start, end - start))
}

/// A blob's outboard read pair by pair from its [`BlobView`].
struct ViewOutboard<'a> {
    root: blake3::Hash,
    tree: BaoTree,
    view: &'a dyn BlobView,
}

impl Outboard for ViewOutboard<'_> {
    fn root(&self) -> blake3::Hash {
        self.root
    }

    fn tree(&self) -> BaoTree {
        self.tree
    }

    fn load(&self, node: bao_tree::TreeNode) -> io::Result<Option<(blake3::Hash, blake3::Hash)>> {
        let Some(slot) = self.tree.pre_order_offset(node) else {
            return Ok(None);
        };
        let pair = self.view.outboard_pair(slot * 64)?;
        let half = |b: &[u8]| blake3::Hash::from_bytes(b.try_into().expect("32 bytes"));
        Ok(Some((half(&pair[..32]), half(&pair[32..]))))
    }
}

// ---------------------------------------------------------------------------
// 2. Store actor: iroh_blobs::api::proto::Command -> ChunkSource
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
pub struct StoreOptions {
    /// Validate data against the outboard before sending (recommended: a provider
    /// never sends corrupt chunk groups; costs one BLAKE3 pass over sent data).
    /// `false` sends unvalidated data; only meant to test client-side verification
    /// (whole-chunk-group requests only).
    pub validate_on_send: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self { validate_on_send: true }
    }
}

/// Build an `iroh_blobs::api::Store` backed by `source`. Must be called inside a
/// tokio runtime (spawns the actor task). The actor ends on `Shutdown` or when all
/// `Store` clones are dropped.
pub fn source_store(source: Arc<dyn ChunkSource>, opts: StoreOptions) -> Store {
    let (tx, rx) = tokio::sync::mpsc::channel::<Command>(64);
    tokio::spawn(
        Actor {
            source,
            opts,
            commands: rx,
            tasks: tokio::task::JoinSet::new(),
            idle_waiters: Vec::new(),
        }
        .run(),
    );
    let client: irpc::Client<proto::Request> = irpc::Client::from(tx);
    // `Store::from_sender` is pub(crate); `MemStore::from_sender` is the public door.
    MemStore::from_sender(client).into()
}

struct Actor {
    source: Arc<dyn ChunkSource>,
    opts: StoreOptions,
    commands: tokio::sync::mpsc::Receiver<Command>,
    tasks: tokio::task::JoinSet<()>,
    idle_waiters: Vec<irpc::channel::oneshot::Sender<()>>,
}

fn unsupported(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        format!("{what} not supported by read-only ChunkSource store"),
    )
}

fn api_unsupported(what: &str) -> api::Error {
    api::Error::from(unsupported(what))
}

impl Actor {
    async fn run(mut self) {
        loop {
            tokio::select! {
                cmd = self.commands.recv() => {
                    let Some(cmd) = cmd else { break };
                    if let Some(shutdown) = self.handle(cmd).await {
                        self.tasks.shutdown().await;
                        shutdown.send(()).await.ok();
                        break;
                    }
                }
                Some(res) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    if let Err(e) = res {
                        // a panicking ChunkSource impl ends up here, not in the actor
                        eprintln!("store task failed: {e}");
                    }
                    if self.tasks.is_empty() {
                        for tx in self.idle_waiters.drain(..) {
                            tx.send(()).await.ok();
                        }
                    }
                }
            }
        }
    }

    /// Returns the shutdown responder if the actor should stop.
    async fn handle(&mut self, cmd: Command) -> Option<irpc::channel::oneshot::Sender<()>> {
        let src = self.source.clone();
        match cmd {
            // ---- needed for serving ------------------------------------------
            Command::ExportBao(cmd) => {
                let validate = self.opts.validate_on_send;
                let proto::ExportBaoRequest { hash, ranges } = cmd.inner;
                let tx = cmd.tx;
                self.tasks
                    .spawn(async move { export_bao(src, hash, ranges, tx, validate).await });
            }
            Command::BlobStatus(cmd) => {
                let hash = cmd.inner.hash;
                self.tasks.spawn(async move {
                    let status = match src.size(&hash) {
                        Some(size) => BlobStatus::Complete { size },
                        None => BlobStatus::NotFound,
                    };
                    cmd.tx.send(status).await.ok();
                });
            }
            Command::Observe(cmd) => {
                let hash = cmd.inner.hash;
                // Not tracked in `tasks`: an observer stays until it goes away.
                tokio::spawn(observe(src, hash, cmd.tx));
            }
            Command::ListBlobs(cmd) => {
                self.tasks.spawn(async move {
                    for hash in src.list() {
                        if cmd.tx.send(Ok(hash)).await.is_err() {
                            break;
                        }
                    }
                });
            }
            Command::CreateTempTag(cmd) => {
                cmd.tx.send(TempTag::new(cmd.inner.value, None)).await.ok();
            }
            Command::WaitIdle(cmd) => {
                if self.tasks.is_empty() {
                    cmd.tx.send(()).await.ok();
                } else {
                    self.idle_waiters.push(cmd.tx);
                }
            }
            Command::SyncDb(cmd) => {
                cmd.tx.send(Ok(())).await.ok();
            }
            Command::Shutdown(cmd) => return Some(cmd.tx),
            Command::ClearProtected(cmd) => {
                cmd.tx.send(Ok(())).await.ok();
            }
            Command::ListTags(cmd) => {
                cmd.tx.send(Vec::new()).await.ok();
            }
            Command::ListTempTags(cmd) => {
                cmd.tx.send(Vec::new()).await.ok();
            }
            // ---- unsupported: answer with an explicit error ----------------------
            Command::ExportRanges(cmd) => {
                cmd.tx
                    .send(ExportRangesItem::Error(api_unsupported("ExportRanges")))
                    .await
                    .ok();
            }
            Command::ExportPath(cmd) => {
                cmd.tx.send(api_unsupported("ExportPath").into()).await.ok();
            }
            Command::ImportBao(cmd) => {
                cmd.tx.send(Err(api_unsupported("ImportBao"))).await.ok();
            }
            Command::ImportBytes(cmd) => {
                cmd.tx.send(unsupported("ImportBytes").into()).await.ok();
            }
            Command::ImportByteStream(cmd) => {
                cmd.tx.send(unsupported("ImportByteStream").into()).await.ok();
            }
            Command::ImportPath(cmd) => {
                cmd.tx.send(unsupported("ImportPath").into()).await.ok();
            }
            Command::DeleteBlobs(cmd) => {
                cmd.tx.send(Err(api_unsupported("DeleteBlobs"))).await.ok();
            }
            Command::SetTag(cmd) => {
                cmd.tx.send(Err(api_unsupported("SetTag"))).await.ok();
            }
            Command::DeleteTags(cmd) => {
                cmd.tx.send(Err(api_unsupported("DeleteTags"))).await.ok();
            }
            Command::RenameTag(cmd) => {
                cmd.tx.send(Err(api_unsupported("RenameTag"))).await.ok();
            }
            Command::CreateTag(cmd) => {
                cmd.tx.send(Err(api_unsupported("CreateTag"))).await.ok();
            }
            Command::Batch(cmd) => {
                // Response type is `Scope` (no error slot): dropping the channels makes
                // the caller's `batch()` fail with a closed-channel error.
                drop(cmd);
            }
        }
        None
    }
}

/// Streams what this node holds of `hash`: nothing yet (checked again every
/// quarter second, since a fetch may start), a growing partial blob (every
/// change), or the whole blob; until the observer goes away.
async fn observe(src: Arc<dyn ChunkSource>, hash: Hash, tx: irpc::channel::mpsc::Sender<Bitfield>) {
    let mut sent_empty = false;
    loop {
        if let Some(mut watch) = src.watch(&hash) {
            let size = src.size(&hash).unwrap_or(0);
            loop {
                let ranges = watch.borrow_and_update().clone();
                if tx.send(Bitfield::new(ranges, size)).await.is_err() {
                    return;
                }
                tokio::select! {
                    changed = watch.changed() => if changed.is_err() { break },
                    _ = tx.closed() => return,
                }
            }
        }
        if let (Some(size), None) = (src.size(&hash), src.available(&hash)) {
            if tx.send(Bitfield::complete(size)).await.is_ok() {
                tx.closed().await;
            }
            return;
        }
        if !sent_empty {
            if tx.send(Bitfield::empty()).await.is_err() {
                return;
            }
            sent_empty = true;
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_millis(250)) => {}
            _ = tx.closed() => return,
        }
    }
}

/// `ReadBytesAt` adapter so bao-tree can read leaves from a [`BlobView`].
struct ViewReader(Arc<dyn BlobView>);

impl ReadBytesAt for ViewReader {
    fn read_bytes_at(&self, offset: u64, size: usize) -> io::Result<Bytes> {
        let b = self.0.read_at(offset, size)?;
        if b.len() != size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("short read at {offset}: {} of {size}", b.len()),
            ));
        }
        Ok(b)
    }
}

/// Newtype so an irpc mpsc sender can be the sink of `traverse_ranges_validated`
/// (iroh-blobs' own `BaoTreeSender` is crate-private).
/// Leaves wait for the upload budget and are counted as they go.
struct IrpcBaoSender(irpc::channel::mpsc::Sender<EncodedItem>, Arc<dyn ChunkSource>);

impl bao_tree::io::mixed::Sender for IrpcBaoSender {
    type Error = irpc::channel::SendError;
    async fn send(&mut self, item: EncodedItem) -> Result<(), Self::Error> {
        if let EncodedItem::Leaf(leaf) = &item {
            let n = leaf.data.len() as u64;
            if let Some(limit) = self.1.upload_limit() {
                limit.wait(n).await;
            }
            self.1.sent(n);
        }
        self.0.send(item).await
    }
}

async fn export_bao(
    source: Arc<dyn ChunkSource>,
    hash: Hash,
    ranges: ChunkRanges,
    tx: irpc::channel::mpsc::Sender<EncodedItem>,
    validate: bool,
) {
    let mut tx = IrpcBaoSender(tx, source.clone());
    let fail = |kind: io::ErrorKind, msg: String| EncodedItem::Error(EncodeError::Io(io::Error::new(kind, msg)));
    // NotFound/UnexpectedEof are treated as "don't have it" (not a local failure) by
    // the provider; any error makes the provider reset the QUIC stream.
    let not_found = || fail(io::ErrorKind::NotFound, format!("{hash} not found"));
    let Some(size) = source.size(&hash) else {
        tx.0.send(not_found()).await.ok();
        return;
    };
    let view = match source.open(&hash) {
        Ok(Some(view)) => view,
        Ok(None) => {
            tx.0.send(not_found()).await.ok();
            return;
        }
        Err(e) => {
            tx.0.send(EncodedItem::Error(EncodeError::Io(e))).await.ok();
            return;
        }
    };
    let tree = BaoTree::new(size, IROH_BLOCK_SIZE);
    // A blob still arriving serves only the groups it holds.
    if let Some(held) = source.available(&hash) {
        let asked = &ranges & &ChunkRanges::from(ChunkNum(0)..ChunkNum(size.div_ceil(1024).max(1)));
        if !held.is_superset(&asked) {
            tx.0.send(fail(
                io::ErrorKind::NotFound,
                format!("{hash}: those ranges are not here yet"),
            ))
            .await
            .ok();
            return;
        }
    }
    if view.outboard_len() != tree.outboard_size() {
        let msg = format!(
            "outboard size {} != expected {} for size {size}",
            view.outboard_len(),
            tree.outboard_size()
        );
        tx.0.send(fail(io::ErrorKind::InvalidData, msg)).await.ok();
        return;
    }
    if let Some((offset, len)) = byte_span(&ranges, size) {
        view.read_ahead(offset, len);
    }
    let outboard = ViewOutboard {
        root: hash.into(),
        tree,
        view: &*view,
    };
    let reader = ViewReader(view.clone());
    if validate {
        // Emits Size, then Parent/Leaf items, then Done or Error. Validation covers
        // the outboard (root == hash) and every leaf (before it is sent).
        traverse_ranges_validated(reader, outboard, &ranges, &mut tx).await.ok();
    } else {
        traverse_unvalidated(reader, outboard, &ranges, &mut tx).await.ok();
    }
}

/// Test helper: like `traverse_ranges_validated` but without checking anything.
/// Only handles requests made of whole chunk groups.
async fn traverse_unvalidated(
    data: ViewReader,
    outboard: ViewOutboard<'_>,
    ranges: &ChunkRanges,
    tx: &mut IrpcBaoSender,
) -> Result<(), irpc::channel::SendError> {
    let tree = outboard.tree;
    tx.0.send(EncodedItem::Size(tree.size())).await?;
    for item in tree.ranges_pre_order_chunks_iter_ref(ranges, 0) {
        let out = match item {
            BaoChunk::Parent { node, .. } => match outboard.load(node) {
                Ok(Some(pair)) => Parent { node, pair }.into(),
                Ok(None) => EncodedItem::Error(EncodeError::Io(io::Error::other("missing node"))),
                Err(e) => EncodedItem::Error(EncodeError::Io(e)),
            },
            BaoChunk::Leaf {
                start_chunk,
                size,
                ranges,
                ..
            } => {
                if !ranges.is_all() {
                    EncodedItem::Error(EncodeError::Io(unsupported("partial chunk group")))
                } else {
                    match data.read_bytes_at(start_chunk.to_bytes(), size) {
                        Ok(b) => Leaf {
                            offset: start_chunk.to_bytes(),
                            data: b,
                        }
                        .into(),
                        Err(e) => EncodedItem::Error(EncodeError::Io(e)),
                    }
                }
            }
        };
        let is_err = matches!(out, EncodedItem::Error(_));
        tx.0.send(out).await?;
        if is_err {
            return Ok(());
        }
    }
    tx.0.send(EncodedItem::Done).await
}

// ---------------------------------------------------------------------------
// 3. Access control via provider events
// ---------------------------------------------------------------------------

/// An `EventSender` that rejects requests for which `source.allowed(hash, remote)`
/// is false. The store commands do NOT carry the remote id; the provider event
/// stream does: `ClientConnected { connection_id, endpoint_id }` (intercept mode is
/// awaited before any stream of that connection is handled), then every request
/// event carries `connection_id`. Rejections reach the client as a stream reset with
/// `iroh_blobs::protocol::ERR_PERMISSION` (=1).
pub fn acl_events(source: Arc<dyn ChunkSource>) -> EventSender {
    let mask = EventMask {
        connected: ConnectMode::Intercept,
        get: RequestMode::Intercept,
        get_many: RequestMode::Intercept,
        push: RequestMode::Disabled,
        observe: ObserveMode::Intercept,
        throttle: ThrottleMode::None,
    };
    let (events, mut rx) = EventSender::channel(64, mask);
    tokio::spawn(async move {
        let mut conns: HashMap<u64, EndpointId> = HashMap::new();
        let check = |conns: &HashMap<u64, EndpointId>, conn: u64, hashes: &mut dyn Iterator<Item = Hash>| {
            let Some(remote) = conns.get(&conn) else {
                return Err(AbortReason::Permission);
            };
            for h in hashes {
                if !source.allowed(&h, remote) {
                    return Err(AbortReason::Permission);
                }
            }
            Ok(())
        };
        while let Some(msg) = rx.recv().await {
            match msg {
                ProviderMessage::ClientConnected(msg) => {
                    let res = match msg.inner.endpoint_id {
                        Some(id) => {
                            conns.insert(msg.inner.connection_id, id);
                            Ok(())
                        }
                        None => Err(AbortReason::Permission),
                    };
                    msg.tx.send(res).await.ok();
                }
                ProviderMessage::ConnectionClosed(msg) => {
                    conns.remove(&msg.inner.connection_id);
                }
                ProviderMessage::GetRequestReceived(msg) => {
                    let r = &msg.inner.request;
                    // Only plain blob requests: a request with child ranges would make
                    // the provider parse the blob as a hash sequence and serve the
                    // children, which we have not checked.
                    let res = if r.ranges.is_blob() {
                        check(&conns, msg.inner.connection_id, &mut std::iter::once(r.hash))
                    } else {
                        Err(AbortReason::Permission)
                    };
                    msg.tx.send(res).await.ok();
                }
                ProviderMessage::GetManyRequestReceived(msg) => {
                    let r = &msg.inner.request;
                    let res = check(&conns, msg.inner.connection_id, &mut r.hashes.iter().copied());
                    msg.tx.send(res).await.ok();
                }
                ProviderMessage::ObserveRequestReceived(msg) => {
                    let h = msg.inner.request.hash;
                    let res = check(&conns, msg.inner.connection_id, &mut std::iter::once(h));
                    msg.tx.send(res).await.ok();
                }
                ProviderMessage::PushRequestReceived(msg) => {
                    msg.tx.send(Err(AbortReason::Permission)).await.ok();
                }
                ProviderMessage::Throttle(msg) => {
                    msg.tx.send(Ok(())).await.ok();
                }
                // notify variants: not enabled by our mask
                _ => {}
            }
        }
    });
    events
}

// ---------------------------------------------------------------------------
// 4. Endpoints and serving
// ---------------------------------------------------------------------------

/// Offline endpoint: IPv4 loopback only, no relay, no address lookup, no portmapper,
/// no net-report probes.
pub async fn loopback_endpoint(seed: [u8; 32], bind: &str) -> anyhow::Result<Endpoint> {
    let ep = Endpoint::builder(presets::Minimal)
        .secret_key(SecretKey::from_bytes(&seed))
        .clear_ip_transports()
        .bind_addr(bind)?
        .relay_mode(RelayMode::Disabled)
        .clear_address_lookup()
        .portmapper_config(PortmapperConfig::Disabled)
        .net_report_config(NetReportConfig::minimal())
        .bind()
        .await?;
    Ok(ep)
}

/// The address to dial: endpoint id + its bound loopback socket(s).
pub fn direct_addr(ep: &Endpoint) -> EndpointAddr {
    let mut addr = EndpointAddr::new(ep.id());
    for sa in ep.bound_sockets() {
        addr = addr.with_ip_addr(sa);
    }
    addr
}

/// Serve `source` on `endpoint` under `iroh_blobs::ALPN`, with per-requester ACL.
/// Keep the returned `Router` alive; `router.shutdown().await` stops it (this also
/// sends `Shutdown` to the store actor).
pub fn serve(endpoint: Endpoint, source: Arc<dyn ChunkSource>, opts: StoreOptions) -> Router {
    let store = source_store(source.clone(), opts);
    let blobs = BlobsProtocol::new(&store, Some(acl_events(source)));
    Router::builder(endpoint).accept(ALPN, blobs).spawn()
}

// ---------------------------------------------------------------------------
// 5. Fetch: verified, streaming, resumable
// ---------------------------------------------------------------------------

#[derive(Debug)]
pub enum FetchError {
    /// Could not connect / open a stream.
    Connect(String),
    /// The provider sent data that does not match the hash (BLAKE3/bao mismatch).
    /// Nothing from the offending chunk group was written to the sink.
    Verification(String),
    /// The provider stopped sending: it does not have (all of) the blob, refused
    /// (`code == Some(1)` = ERR_PERMISSION), or detected corruption on its side.
    ProviderAborted { code: Option<u64>, detail: String },
    /// Writing to the sink failed.
    Sink(io::Error),
    /// Anything else (protocol violation, resume offset past end, ...).
    Other(String),
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchError::Connect(s) => write!(f, "connect: {s}"),
            FetchError::Verification(s) => write!(f, "verification failed: {s}"),
            FetchError::ProviderAborted { code, detail } => {
                write!(f, "provider aborted (code {code:?}): {detail}")
            }
            FetchError::Sink(e) => write!(f, "sink: {e}"),
            FetchError::Other(s) => write!(f, "{s}"),
        }
    }
}

impl std::error::Error for FetchError {}

fn reset_code(e: &io::Error) -> Option<u64> {
    match e.get_ref()?.downcast_ref::<iroh::endpoint::ReadError>()? {
        iroh::endpoint::ReadError::Reset(code) => Some(code.into_inner()),
        _ => None,
    }
}

fn map_decode(e: DecodeError) -> FetchError {
    match e {
        DecodeError::LeafHashMismatch { .. } | DecodeError::ParentHashMismatch { .. } => {
            FetchError::Verification(e.to_string())
        }
        DecodeError::Read { ref source, .. } => FetchError::ProviderAborted {
            code: reset_code(source),
            detail: e.to_string(),
        },
        DecodeError::Write { source, .. } => FetchError::Sink(source),
        other => FetchError::ProviderAborted {
            code: None,
            detail: other.to_string(),
        },
    }
}

#[derive(Debug, Clone, Copy)]
pub struct FetchProgress {
    /// Verified bytes written so far, as an absolute end offset in the blob.
    pub offset: u64,
    /// Total blob size (from the header; verified by the end of the transfer).
    pub size: u64,
}

#[derive(Debug, Clone, Copy)]
pub struct FetchStats {
    pub size: u64,
    /// Bytes written to the sink in this call (= size - resume_from).
    pub written: u64,
    /// Payload bytes received over the wire (may include up to 16 KiB before
    /// `resume_from` because requests are chunk-group aligned).
    pub payload_bytes_read: u64,
    pub elapsed: std::time::Duration,
}

/// Download `hash` from `provider`, writing verified bytes `[resume_from, size)` to
/// `sink` in order, as they arrive. Each 16 KiB chunk group is verified against the
/// BLAKE3 root (= `hash`) before any of its bytes reach the sink.
pub async fn fetch_blob<W: io::Write>(
    endpoint: &Endpoint,
    provider: impl Into<EndpointAddr>,
    hash: Hash,
    resume_from: u64,
    sink: &mut W,
    mut progress: impl FnMut(FetchProgress),
) -> Result<FetchStats, FetchError> {
    let conn = endpoint
        .connect(provider, ALPN)
        .await
        .map_err(|e| FetchError::Connect(e.to_string()))?;
    let res = fetch_on_conn(&conn, hash, resume_from, sink, &mut progress).await;
    conn.close(0u32.into(), b"done");
    res
}

/// Same as [`fetch_blob`] on an existing connection (reuse it for many blobs).
pub async fn fetch_on_conn<W: io::Write>(
    conn: &iroh::endpoint::Connection,
    hash: Hash,
    resume_from: u64,
    sink: &mut W,
    progress: &mut impl FnMut(FetchProgress),
) -> Result<FetchStats, FetchError> {
    // Round down to a chunk group: the provider only has hashes at chunk-group level.
    let start_chunk = (resume_from / CHUNK_GROUP_BYTES) * (CHUNK_GROUP_BYTES / 1024);
    // Open-ended range => includes the last chunk => the size is verified too.
    let ranges = ChunkRanges::from(ChunkNum(start_chunk)..);
    let mut written_to = resume_from; // absolute offset of next byte the sink expects
    let (size, stats) = get_ranges(conn, hash, ranges, |size, item| {
        if resume_from > size {
            return Err(io::Error::other(format!(
                "resume offset {resume_from} > blob size {size}"
            )));
        }
        let bao_tree::io::BaoContentItem::Leaf(leaf) = item else {
            return Ok(());
        };
        // verified leaf (whole chunk group)
        let start = leaf.offset;
        let stop = start + leaf.data.len() as u64;
        if start > written_to {
            return Err(io::Error::other(format!(
                "gap: expected data at {written_to}, got {start}"
            )));
        }
        if stop > written_to {
            let skip = (written_to - start) as usize;
            sink.write_all(&leaf.data[skip..])?;
            written_to = stop;
            progress(FetchProgress {
                offset: written_to,
                size,
            });
        }
        Ok(())
    })
    .await?;
    if written_to != size {
        return Err(FetchError::Other(format!(
            "incomplete: wrote up to {written_to} of {size}"
        )));
    }
    sink.flush().map_err(FetchError::Sink)?;
    Ok(FetchStats {
        size,
        written: size - resume_from,
        payload_bytes_read: stats.payload_bytes_read,
        elapsed: stats.elapsed,
    })
}

/// Requests `ranges` of `hash` on `conn` and hands every verified item
/// (parents and whole chunk groups, each checked against the BLAKE3 root
/// before it is handed over) to `sink`, with the blob's size. Returns the
/// size and the transfer's statistics.
pub async fn get_ranges(
    conn: &iroh::endpoint::Connection,
    hash: Hash,
    ranges: ChunkRanges,
    mut sink: impl FnMut(u64, bao_tree::io::BaoContentItem) -> io::Result<()>,
) -> Result<(u64, iroh_blobs::get::Stats), FetchError> {
    let request = GetRequest::blob_ranges(hash, ranges);
    let connected = fsm::start(conn.clone(), request, Default::default())
        .next()
        .await
        .map_err(|e| FetchError::Connect(e.to_string()))?;
    let ConnectedNext::StartRoot(root) = connected.next().await.map_err(|e| FetchError::Connect(e.to_string()))? else {
        return Err(FetchError::Other("unexpected response shape".into()));
    };
    let (mut content, size) = root.next().next().await.map_err(|e| {
        use iroh_blobs::get::fsm::AtBlobHeaderNextError as H;
        match e {
            H::NotFound { .. } => FetchError::ProviderAborted {
                code: None,
                detail: "not found".into(),
            },
            H::Read { ref source, .. } => FetchError::ProviderAborted {
                code: reset_code(source),
                detail: e.to_string(),
            },
        }
    })?;
    let end = loop {
        match content.next().await {
            BlobContentNext::More((next, item)) => {
                content = next;
                sink(size, item.map_err(map_decode)?).map_err(FetchError::Sink)?;
            }
            BlobContentNext::Done(end) => break end,
        }
    };
    let EndBlobNext::Closing(closing) = end.next() else {
        return Err(FetchError::Other("unexpected children".into()));
    };
    let stats = closing.next().await.map_err(|e| FetchError::Other(e.to_string()))?;
    Ok((size, stats))
}

/// The store's name for an iroh hash (the same 32 bytes).
pub fn content_hash(hash: &Hash) -> packfed_protocol::ContentHash {
    packfed_protocol::ContentHash(*hash.as_bytes())
}

/// The libp2p peer id of an endpoint: both come from the same ed25519 key.
pub fn peer_of(remote: &EndpointId) -> Option<libp2p::PeerId> {
    let pk = libp2p::identity::ed25519::PublicKey::try_from_bytes(remote.as_bytes()).ok()?;
    Some(libp2p::identity::PublicKey::from(pk).to_peer_id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_spans_from_its_first_to_its_last_chunk_within_the_blob() {
        let size = 100 * 1024 + 5;
        let piece = ChunkRanges::from(ChunkNum(16)..ChunkNum(32));
        assert_eq!(byte_span(&piece, size), Some((16 * 1024, 16 * 1024)));
        let to_end = ChunkRanges::from(ChunkNum(96)..);
        assert_eq!(byte_span(&to_end, size), Some((96 * 1024, 4 * 1024 + 5)));
        let two = &ChunkRanges::from(ChunkNum(0)..ChunkNum(16)) | &ChunkRanges::from(ChunkNum(64)..ChunkNum(80));
        assert_eq!(byte_span(&two, size), Some((0, 80 * 1024)));
        assert_eq!(byte_span(&ChunkRanges::empty(), size), None);
        assert_eq!(byte_span(&ChunkRanges::from(ChunkNum(200)..), size), None);
    }
}
