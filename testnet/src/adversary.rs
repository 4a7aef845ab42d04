//! The adversary: a full packfed node built from the library, with its own
//! home and keys, that joins a federation over the real wire protocol and
//! does what tests (or an operator red-teaming a federation) tell it to.
//! It publishes, serves, syncs and answers the API like `packfed node run`,
//! and adds hostile controls on its own API, behind its API token:
//!
//! - `POST /v1/test/gossip {"topic": "" | "attestations" | "governance" | "learn" | "nodes", "hex"}`:
//!   gossips the bytes exactly as given; answers `{"sent": true}`.
//! - `POST /v1/test/flood {"topic", "hex": [..], "repeat": N}`: gossips each
//!   message N times; answers `{"sent": count}`.
//! - `POST /v1/test/serve {"mode": "honest" | "corrupt" | "truncate"}`: what
//!   it serves of blob ranges from now on, on both transports (iroh without
//!   its own outboard check, and the libp2p range protocol).
//! - `POST /v1/test/registry {"put": [{"key", "hex"}], "delete": [key], "delete_all": bool}`:
//!   writes raw changes into its public registry document, which registry
//!   sync then offers to peers as they are. `"zeros": {"count", "len"}` adds
//!   `count` changes each putting `len` zero bytes under a key of its own:
//!   a compression bomb (automerge sends a saved document, deflated, to a
//!   peer that lacks most of the history).
//! - `POST /v1/test/fetch {"hash", "size"}`: fetches a blob by hash from the
//!   federation, as a node that learnt the hash out of band would.
//!
//! - `POST /v1/test/range {"peer", "hash", "offset", "length"}`: asks one
//!   peer for one blob range over the libp2p range protocol; answers
//!   `{"status", "bytes", "micros"}` (the round trip as it measured it).
//! - `POST /v1/test/observed {"hash", "needle"}`: what this node learnt of
//!   a blob and a name from the federation: DHT provider records of the hash,
//!   registry document entries (public and org) whose bytes hold the hash
//!   or the needle, and learnt install counts of the hash; answers
//!   `{"providers", "registry_entries", "usage"}`.
//!
//! Nothing here exists in the `packfed` binary: the product only offers
//! the extension points ([`packfed_node::daemon::Options`]) any program built
//! on the library has.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use anyhow::Result;
use automerge::transaction::Transactable;
use automerge::{ROOT, ReadDoc};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Extension, Json, Router};
use packfed_node::api::ApiState;
use packfed_node::blobs::{BlobView, Bytes, ChunkSource, EndpointId, Hash};
use packfed_node::config::Home;
use packfed_node::core::Topic;
use packfed_node::daemon::{Options, Sources};
use packfed_node::net::{Command, RangeSource};
use packfed_protocol::{ContentHash, pb};
use serde::Deserialize;
use serde_json::{Value, json};

/// What the adversary serves of blob bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Serve {
    Honest = 0,
    /// The first byte of every range flipped.
    Corrupt = 1,
    /// Half of every range.
    Truncate = 2,
}

/// The serving mode, shared by both transports and the API.
#[derive(Clone, Default)]
pub struct Mode(Arc<AtomicU8>);

impl Mode {
    pub fn get(&self) -> Serve {
        match self.0.load(Ordering::Relaxed) {
            1 => Serve::Corrupt,
            2 => Serve::Truncate,
            _ => Serve::Honest,
        }
    }

    pub fn set(&self, s: Serve) {
        self.0.store(s as u8, Ordering::Relaxed);
    }

    fn mangle(&self, data: &mut Vec<u8>) {
        match self.get() {
            Serve::Honest => {}
            Serve::Corrupt => {
                if let Some(b) = data.first_mut() {
                    *b ^= 0xff;
                }
            }
            Serve::Truncate => data.truncate(data.len() / 2),
        }
    }
}

struct MangledChunks {
    inner: Arc<dyn ChunkSource>,
    mode: Mode,
}

impl ChunkSource for MangledChunks {
    fn size(&self, hash: &Hash) -> Option<u64> {
        self.inner.size(hash)
    }
    fn open(&self, hash: &Hash) -> io::Result<Option<Arc<dyn BlobView>>> {
        Ok(self.inner.open(hash)?.map(|inner| {
            Arc::new(MangledView {
                inner,
                mode: self.mode.clone(),
            }) as Arc<dyn BlobView>
        }))
    }
    fn allowed(&self, hash: &Hash, remote: &EndpointId) -> bool {
        self.inner.allowed(hash, remote)
    }
    fn list(&self) -> Vec<Hash> {
        self.inner.list()
    }
}

struct MangledView {
    inner: Arc<dyn BlobView>,
    mode: Mode,
}

impl BlobView for MangledView {
    fn read_at(&self, offset: u64, len: usize) -> io::Result<Bytes> {
        let mut data = self.inner.read_at(offset, len)?.to_vec();
        self.mode.mangle(&mut data);
        Ok(Bytes::from(data))
    }
    fn outboard_len(&self) -> u64 {
        self.inner.outboard_len()
    }
    fn outboard_pair(&self, offset: u64) -> io::Result<[u8; 64]> {
        self.inner.outboard_pair(offset)
    }
}

struct MangledRanges {
    inner: Arc<dyn RangeSource>,
    mode: Mode,
}

impl RangeSource for MangledRanges {
    fn serve(&self, peer: &libp2p::PeerId, request: &pb::BlobRequest) -> pb::BlobResponse {
        let mut r = self.inner.serve(peer, request);
        self.mode.mangle(&mut r.data);
        r
    }
}

/// Runs the adversary's node in `home` (made by `packfed init`) until a
/// signal stops it.
pub async fn run(home: PathBuf) -> Result<()> {
    let mode = Mode::default();
    let serving = mode.clone();
    let sources = move |node: &Arc<packfed_node::node::Node>| {
        let honest = Sources::store(node);
        Sources {
            chunks: Arc::new(MangledChunks {
                inner: honest.chunks,
                mode: serving.clone(),
            }),
            ranges: Arc::new(MangledRanges {
                inner: honest.ranges,
                mode: serving,
            }),
            // It must not catch its own corruption.
            validate_on_send: false,
        }
    };
    let routes = Router::new()
        .route("/v1/test/gossip", post(gossip))
        .route("/v1/test/flood", post(flood))
        .route("/v1/test/serve", post(serve))
        .route("/v1/test/registry", post(registry))
        .route("/v1/test/fetch", post(fetch))
        .route("/v1/test/range", post(range))
        .route("/v1/test/observed", post(observed))
        .layer(Extension(mode));
    let options = Options {
        sources: Some(Box::new(sources)),
        routes: Some(routes),
    };
    packfed_node::daemon::run_with(Home { root: home }, options).await
}

type Reply = Result<Json<Value>, (StatusCode, Json<Value>)>;

fn bad(code: &str, message: impl Into<String>) -> (StatusCode, Json<Value>) {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": message.into(), "code": code})),
    )
}

fn topic(name: &str) -> Result<Topic, (StatusCode, Json<Value>)> {
    Ok(match name {
        "" | "records" => Topic::Records,
        "attestations" => Topic::Attestations,
        "governance" => Topic::Governance,
        "learn" => Topic::Learn,
        "nodes" => Topic::Nodes,
        other => return Err(bad("bad_topic", format!("no topic {other:?}"))),
    })
}

fn unhex(s: &str) -> Result<Vec<u8>, (StatusCode, Json<Value>)> {
    hex::decode(s).map_err(|_| bad("bad_hex", "hex must be hexadecimal bytes"))
}

#[derive(Deserialize)]
struct Gossip {
    #[serde(default)]
    topic: String,
    hex: String,
}

async fn gossip(State(s): State<Arc<ApiState>>, Json(body): Json<Gossip>) -> Reply {
    let (t, bytes) = (topic(&body.topic)?, unhex(&body.hex)?);
    let net = s.net.as_ref().ok_or_else(|| bad("offline", "no network"))?;
    net.send(Command::Gossip(t, bytes)).await;
    Ok(Json(json!({"sent": true})))
}

#[derive(Deserialize)]
struct Flood {
    #[serde(default)]
    topic: String,
    hex: Vec<String>,
    #[serde(default = "one")]
    repeat: usize,
}

fn one() -> usize {
    1
}

async fn flood(State(s): State<Arc<ApiState>>, Json(body): Json<Flood>) -> Reply {
    let t = topic(&body.topic)?;
    let messages = body.hex.iter().map(|h| unhex(h)).collect::<Result<Vec<_>, _>>()?;
    let net = s.net.as_ref().ok_or_else(|| bad("offline", "no network"))?;
    let mut sent = 0;
    for _ in 0..body.repeat {
        for m in &messages {
            net.send(Command::Gossip(t, m.clone())).await;
            sent += 1;
        }
    }
    Ok(Json(json!({"sent": sent})))
}

#[derive(Deserialize)]
struct ServeMode {
    mode: String,
}

async fn serve(Extension(mode): Extension<Mode>, Json(body): Json<ServeMode>) -> Reply {
    let m = match body.mode.as_str() {
        "honest" => Serve::Honest,
        "corrupt" => Serve::Corrupt,
        "truncate" => Serve::Truncate,
        other => return Err(bad("bad_mode", format!("mode {other:?}: honest, corrupt or truncate"))),
    };
    mode.set(m);
    Ok(Json(json!({"mode": body.mode})))
}

#[derive(Deserialize)]
struct Put {
    key: String,
    hex: String,
}

#[derive(Deserialize)]
struct RegistryEdit {
    #[serde(default)]
    put: Vec<Put>,
    #[serde(default)]
    delete: Vec<String>,
    /// Deletes every root key the document holds (after the puts).
    #[serde(default)]
    delete_all: bool,
    #[serde(default)]
    zeros: Option<Zeros>,
}

#[derive(Deserialize)]
struct Zeros {
    count: usize,
    len: usize,
}

async fn registry(State(s): State<Arc<ApiState>>, Json(body): Json<RegistryEdit>) -> Reply {
    let mut replica = s.node.replica.lock().map_err(|_| bad("poisoned", "registry lock"))?;
    let doc = replica.document_mut();
    let mut changed = 0;
    for p in &body.put {
        let bytes = unhex(&p.hex)?;
        doc.put(ROOT, p.key.as_str(), bytes)
            .map_err(|e| bad("automerge", e.to_string()))?;
        changed += 1;
    }
    let mut delete = body.delete.clone();
    if body.delete_all {
        delete.extend(doc.keys(ROOT));
    }
    for k in &delete {
        doc.delete(ROOT, k.as_str())
            .map_err(|e| bad("automerge", e.to_string()))?;
        changed += 1;
    }
    doc.commit();
    if let Some(z) = &body.zeros {
        // One change each, so they outnumber the history the peer shares.
        for i in 0..z.count {
            doc.put(ROOT, format!("zeros-{i}"), vec![0u8; z.len])
                .map_err(|e| bad("automerge", e.to_string()))?;
            doc.commit();
            changed += 1;
        }
    }
    Ok(Json(json!({"changed": changed})))
}

#[derive(Deserialize)]
struct Fetch {
    hash: String,
    size: u64,
}

async fn fetch(State(s): State<Arc<ApiState>>, Json(body): Json<Fetch>) -> Reply {
    let hash: ContentHash = body.hash.parse().map_err(|e| bad("bad_hash", format!("{e}")))?;
    let net = s.net.as_ref().ok_or_else(|| bad("offline", "no network"))?;
    packfed_node::fetch::fetch_blob(&s.node, net, hash, body.size)
        .await
        .map_err(|e| {
            (
                StatusCode::BAD_GATEWAY,
                Json(json!({"error": format!("{e:#}"), "code": "fetch_failed"})),
            )
        })?;
    Ok(Json(json!({"fetched": true})))
}

#[derive(Deserialize)]
struct Range {
    peer: String,
    hash: String,
    offset: u64,
    length: u32,
}

async fn range(State(s): State<Arc<ApiState>>, Json(body): Json<Range>) -> Reply {
    let peer: libp2p::PeerId = body.peer.parse().map_err(|e| bad("bad_peer", format!("{e}")))?;
    let hash: ContentHash = body.hash.parse().map_err(|e| bad("bad_hash", format!("{e}")))?;
    let net = s.net.as_ref().ok_or_else(|| bad("offline", "no network"))?;
    let request = pb::BlobRequest {
        hash: hash.0.to_vec(),
        offset: body.offset,
        length: body.length,
    };
    let started = std::time::Instant::now();
    let answer = net.blob_range(peer, request).await;
    let micros = started.elapsed().as_micros() as u64;
    let r = answer.map_err(|e| {
        (
            StatusCode::BAD_GATEWAY,
            Json(json!({"error": e, "code": "range_failed"})),
        )
    })?;
    Ok(Json(
        json!({"status": r.status, "bytes": r.data.len(), "micros": micros}),
    ))
}

#[derive(Deserialize)]
struct Observe {
    hash: String,
    needle: String,
}

async fn observed(State(s): State<Arc<ApiState>>, Json(body): Json<Observe>) -> Reply {
    let hash: ContentHash = body.hash.parse().map_err(|e| bad("bad_hash", format!("{e}")))?;
    let net = s.net.as_ref().ok_or_else(|| bad("offline", "no network"))?;
    // Peers that announced the hash on the DHT (connected peers are listed
    // on the chance too).
    let providers = net.providers(hash).await.iter().filter(|p| p.announced).count();
    let holds = |v: &[u8], what: &[u8]| !what.is_empty() && v.windows(what.len()).any(|w| w == what);
    let mut entries = 0;
    for replica in [&s.node.replica, &s.node.org_replica] {
        let mut r = replica.lock().map_err(|_| bad("poisoned", "registry lock"))?;
        let doc = r.document_mut();
        for key in doc.keys(ROOT).collect::<Vec<_>>() {
            if let Ok(Some((automerge::Value::Scalar(v), _))) = doc.get(ROOT, key.as_str())
                && let automerge::ScalarValue::Bytes(b) = v.as_ref()
                && (holds(b, &hash.0) || holds(b, body.needle.as_bytes()))
            {
                entries += 1;
            }
        }
    }
    let (installs, failed) = s.node.usage_of(&hash);
    Ok(Json(json!({
        "providers": providers,
        "registry_entries": entries,
        "usage": installs + failed,
    })))
}
