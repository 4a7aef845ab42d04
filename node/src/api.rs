//! The JSON API on 127.0.0.1 (axum). Mutating calls and blob downloads need
//! the bearer token in `HOME/api-token`; reads without it see public data
//! only (no org release in search, info, versions or attestations, where
//! it is a plain 404); every call needs a Host header that
//! names this node (loopback or the bound address: no DNS rebinding). Handlers translate HTTP to [`Node`] operations and back;
//! errors are `{"error", "code"}` with a 4xx for the caller's mistakes.
//!
//! | method | path | does |
//! |---|---|---|
//! | GET  | /v1/status | node status |
//! | GET  | /v1/witness | witnesses, their latest checkpoints, freshness |
//! | GET  | /v1/peers | known peers |
//! | POST | /v1/publish | header `packfed-publish: <hex PublishRequest>`, body: the archive |
//! | POST | /v1/yank | `{"envelope": hex}` |
//! | POST | /v1/deprecate | `{"envelope": hex}` (a signed deprecation) |
//! | GET  | /v1/search?q=&limit=&all_versions=&include_quarantined=&category=&license=&tier=&attested=&peers=local\|lacking\|all&timeout_ms=&explain= | search here and on peers |
//! | GET  | /v1/packages/{ns}/{name} | every version, newest first |
//! | GET  | /v1/info/{ns}/{name}?version= | one release |
//! | POST | /v1/sparql | `{"query", "format": "json"\|"csv"}`: SPARQL results (read-only) |
//! | GET  | /v1/blobs/{hash} | the archive bytes, streamed (token) |
//! | GET  | /metrics | Prometheus text |

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use futures_util::StreamExt;
use packfed_protocol::{ContentHash, Signed};
use serde::Deserialize;
use serde_json::json;
use std::io::{Read, Write};

use crate::node::{Node, ReleaseView};

mod ui;
use crate::publish::{self, PublishError, PublishRequest};
use crate::search;
use crate::store::CHUNK_SIZE;

/// Header carrying the hex-encoded `PublishRequest`.
pub const PUBLISH_HEADER: &str = "packfed-publish";

/// Shared API state.
pub struct ApiState {
    pub node: Arc<Node>,
    pub token: String,
    pub publishes: AtomicU64,
    /// The network, when it runs (absent in offline tools and benches).
    pub net: Option<crate::net::NetHandle>,
    /// The search service, when it runs.
    pub search: Option<Arc<crate::search::SearchService>>,
    /// The SPARQL catalog graphs, built on first use.
    pub sparql: crate::sparql::GraphCache,
    /// The web UI's index of who depends on what.
    pub dependents: ui::Dependents,
}

/// An error as the API returns it.
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
    fn bad(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({"error": self.message, "code": self.code}))).into_response()
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        ApiError::internal(e)
    }
}

type ApiResult<T> = Result<T, ApiError>;

pub fn router(state: Arc<ApiState>) -> Router {
    router_with(state, Router::new())
}

/// The API with more routes behind the token (a harness adds its own).
pub fn router_with(state: Arc<ApiState>, extra: Router<Arc<ApiState>>) -> Router {
    let mutating = Router::new()
        .route("/v1/publish", post(publish))
        .route("/v1/yank", post(yank))
        .route("/v1/deprecate", post(deprecate))
        .route("/v1/sparql", post(sparql))
        .route("/v1/attest", post(attest))
        .route("/v1/gov/submit", post(gov_submit))
        .route("/v1/learn/install", post(learn_install))
        // Blob bytes include org and quarantined packs: token only.
        .route("/v1/blobs/{hash}", get(blob))
        .route("/v1/blobs/{hash}/fetch", get(prefetch))
        .merge(extra)
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    // On a public address ([api] public) only the read-only public part.
    let mutating = if state.node.config.api.exposed() {
        Router::new()
    } else {
        mutating
    };
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/witness", get(witness_status))
        .route("/v1/peers", get(peers))
        .route("/v1/search", get(search))
        .route("/v1/packages/{ns}/{name}", get(package))
        .route("/v1/info/{ns}/{name}", get(info))
        .route("/v1/attestations/{ns}/{name}", get(attestations))
        .route("/v1/policy", get(policy))
        .route("/v1/learn", get(learn_status))
        .route("/v1/gov/members", get(gov_members))
        .route("/v1/gov/proposals", get(gov_list))
        .route("/v1/gov/proposals/{id}", get(gov_show))
        .route("/metrics", get(metrics))
        .merge(ui::routes())
        .merge(mutating)
        .layer(middleware::from_fn_with_state(state.clone(), require_host))
        .with_state(state)
}

/// Whether a Host header names this node: a loopback name or the address
/// the API is bound to (with any port). Anything else is a web page that
/// resolved its own name to 127.0.0.1 (DNS rebinding), or a misrouted call.
fn host_allowed(host: &str, bound: &str) -> bool {
    let name = |h: &str| -> String {
        let h = h.trim();
        match h.strip_prefix('[') {
            Some(rest) => rest.split(']').next().unwrap_or_default().to_string(),
            None => h.rsplit_once(':').map_or(h, |(n, _)| n).to_string(),
        }
    };
    let host = name(host).to_ascii_lowercase();
    matches!(host.as_str(), "localhost" | "127.0.0.1" | "::1") || host == name(bound).to_ascii_lowercase()
}

async fn require_host(State(state): State<Arc<ApiState>>, req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // A public API holds nothing a rebound page could steal; any name may
    // front it.
    if !state.node.config.api.exposed() && !host_allowed(host, &state.node.config.api.listen) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "bad_host",
            format!("Host {host:?} is not this node: call it as localhost or by its bound address"),
        )
        .into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod public_tests {
    use super::*;
    use tower::ServiceExt;

    /// A node whose config says `listen`, `[api] public = true`; its API
    /// router, without sockets.
    fn api(dir: &std::path::Path, listen: &str) -> (Router, String) {
        let home = crate::config::Home { root: dir.join("home") };
        crate::init::init_dev_home(&home).unwrap();
        let cfg = std::fs::read_to_string(home.config()).unwrap();
        let cfg = cfg.replacen("[api]\n", "[api]\npublic = true\n", 1);
        let cfg = with_api_listen(&cfg, listen);
        std::fs::write(home.config(), cfg).unwrap();
        let node = Arc::new(Node::open(home).unwrap());
        let token = "secret-token".to_string();
        let state = Arc::new(ApiState {
            node,
            token: token.clone(),
            publishes: AtomicU64::new(0),
            net: None,
            search: None,
            sparql: Default::default(),
            dependents: Default::default(),
        });
        (router_with(state, Router::new()), token)
    }

    /// The config with `[api] listen` set to `listen`.
    fn with_api_listen(cfg: &str, listen: &str) -> String {
        let mut section = "";
        cfg.lines()
            .map(|l| {
                if l.starts_with('[') {
                    section = l;
                }
                if section == "[api]" && l.starts_with("listen = ") {
                    format!("listen = \"{listen}\"")
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    async fn status_of(app: &Router, method: &str, path: &str, host: &str, token: Option<&str>) -> u16 {
        let mut req = Request::builder().method(method).uri(path).header(header::HOST, host);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let resp = app.clone().oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
        resp.status().as_u16()
    }

    #[tokio::test]
    async fn a_public_api_serves_only_its_read_only_public_part() {
        let dir = tempfile::tempdir().unwrap();
        let blob = format!("/v1/blobs/{}", "00".repeat(32));
        // Loopback (the control): the token opens blob downloads, the Host
        // must name the node.
        let (local, token) = api(&dir.path().join("local"), "127.0.0.1:0");
        assert_eq!(status_of(&local, "GET", &blob, "localhost", None).await, 401);
        assert_eq!(status_of(&local, "GET", &blob, "localhost", Some(&token)).await, 404);
        assert_eq!(
            status_of(&local, "GET", "/v1/status", "registry.example", None).await,
            403
        );
        // Public: no route needs or honours the token; reads answer any Host.
        let (public, token) = api(&dir.path().join("public"), "0.0.0.0:7420");
        assert_eq!(
            status_of(&public, "GET", "/v1/status", "registry.example", None).await,
            200
        );
        assert_eq!(status_of(&public, "GET", &blob, "localhost", Some(&token)).await, 404);
        assert_eq!(
            status_of(&public, "POST", "/v1/yank", "localhost", Some(&token)).await,
            404
        );
        assert_eq!(
            status_of(&public, "POST", "/v1/publish", "localhost", Some(&token)).await,
            404
        );
    }

    #[test]
    fn only_loopback_addresses_are_private() {
        let api = |listen: &str| crate::config::ApiSection {
            listen: listen.into(),
            public: false,
        };
        for private in ["127.0.0.1:7420", "[::1]:80", "localhost:7420", "127.0.0.2:1"] {
            assert!(!api(private).exposed(), "{private}");
        }
        for exposed in ["0.0.0.0:7420", "10.0.0.5:7420", "[::]:80", "registry.example:443"] {
            assert!(api(exposed).exposed(), "{exposed}");
        }
    }
}

#[cfg(test)]
mod host_tests {
    use super::host_allowed;

    #[test]
    fn only_loopback_names_and_the_bound_address_pass() {
        for ok in [
            "127.0.0.1:7420",
            "localhost:7420",
            "LOCALHOST",
            "[::1]:80",
            "10.0.0.5:7420",
        ] {
            assert!(host_allowed(ok, "10.0.0.5:7420"), "{ok}");
        }
        for bad in ["evil.example:7420", "", "127.0.0.1.evil.example", "attacker.test"] {
            assert!(!host_allowed(bad, "127.0.0.1:0"), "{bad}");
        }
    }
}

/// Constant-time comparison, so the token cannot be guessed byte by byte.
fn token_matches(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len() && given.iter().zip(expected).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// Whether a request carries this node's API token: its own users, who may
/// see its org catalog. Reads without it get public data only.
fn has_token(state: &ApiState, headers: &HeaderMap) -> bool {
    // On a public address the token would cross the network in clear.
    if state.node.config.api.exposed() {
        return false;
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    token_matches(given.as_bytes(), state.token.as_bytes())
}

async fn require_token(State(state): State<Arc<ApiState>>, req: Request, next: Next) -> Response {
    if !has_token(&state, req.headers()) {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this call needs the node's API token (the CLI reads it from HOME/api-token)",
        )
        .into_response();
    }
    next.run(req).await
}

async fn status(State(s): State<Arc<ApiState>>) -> ApiResult<Json<serde_json::Value>> {
    let n = &s.node;
    let freshness = n.freshness(crate::packing::now_ms());
    let peers = match s.net.as_ref() {
        Some(net) => net.peers().await.len(),
        None => 0,
    };
    Ok(Json(json!({
        "peer_id": n.peer_id,
        "name": n.config.node.name,
        "role": n.config.node.role.as_str(),
        "federation_id": n.federation().to_hex(),
        "federation": n.genesis.info.name,
        "peers": peers,
        "rejected_records": crate::node::IngestStats::get(&n.stats.rejected),
        "crdt_garbage": crate::node::IngestStats::get(&n.stats.crdt_garbage),
        "sync_refused": crate::node::IngestStats::get(&n.stats.sync_refused),
        "releases": n.store.release_count(),
        "blobs": n.store.blob_count(),
        "policy_version": n.policy().version,
        "gov_records": n.gov_records().len(),
        "fresh": freshness.fresh,
        "view_age_ms": freshness.view_age_ms,
        "max_staleness_ms": freshness.max_staleness_ms,
        "equivocating_witnesses": n.witness_status(crate::packing::now_ms()).witnesses.iter().filter(|w| w.equivocated).count(),
        "search": s.search.as_ref().map(|s| {
            let st = s.stats();
            json!({
                "documents": st.documents,
                "catalog": st.catalog,
                "applied_changes": st.applied_changes,
                "rebuilt": st.rebuilt,
                "rate_limited": s.rate_limited.load(Ordering::Relaxed),
            })
        }),
    })))
}

async fn witness_status(State(s): State<Arc<ApiState>>) -> Json<crate::node::WitnessStatus> {
    Json(s.node.witness_status(crate::packing::now_ms()))
}

/// How long a local publish or governance record waits for a witness
/// quorum before the call returns with it still pending.
const WITNESS_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Polls `done` until it holds or [`WITNESS_WAIT`] passes.
async fn wait_witnessed(done: impl Fn() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + WITNESS_WAIT;
    loop {
        if done() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}

async fn peers(State(s): State<Arc<ApiState>>) -> Json<serde_json::Value> {
    let peers = match s.net.as_ref() {
        Some(net) => net.peers().await,
        None => Vec::new(),
    };
    Json(json!(peers))
}

#[derive(Deserialize)]
struct InstallReport {
    hash: String,
    ok: bool,
}

/// The CLI reports each install (and failed install): the local signal of
/// federated learning. Kept on this node only.
async fn learn_install(
    State(s): State<Arc<ApiState>>,
    Json(r): Json<InstallReport>,
) -> ApiResult<Json<serde_json::Value>> {
    let hash: ContentHash = r
        .hash
        .parse()
        .map_err(|_| ApiError::bad("bad_hash", "hash must be 64 lowercase hex digits"))?;
    let node = s.node.clone();
    let event = tokio::task::spawn_blocking(move || node.learn_install(&hash, r.ok, crate::packing::now_ms()))
        .await
        .map_err(ApiError::internal)??;
    Ok(Json(json!({"recorded": true, "event": event})))
}

async fn learn_status(State(s): State<Arc<ApiState>>) -> Json<serde_json::Value> {
    Json(s.node.learn_status(crate::packing::now_ms()))
}

async fn metrics(State(s): State<Arc<ApiState>>) -> ApiResult<Response> {
    use crate::metrics::Gauge;
    let peers = match s.net.as_ref() {
        Some(net) => net.peers().await.len() as u64,
        None => 0,
    };
    let node = s.node.clone();
    let text = tokio::task::spawn_blocking(move || -> Result<String, crate::store::StoreError> {
        let quarantined = node.store.quarantined_count()?;
        Ok(node.metrics.render(&[
            Gauge(
                "packfed_releases",
                "Release records held.",
                node.store.release_count() as u64,
            ),
            Gauge("packfed_blobs", "Pack archives held.", node.store.blob_count() as u64),
            Gauge("packfed_peers_connected", "Peers connected now.", peers),
            Gauge(
                "packfed_quarantined",
                "Releases the acceptance policy in force quarantines.",
                quarantined,
            ),
        ]))
    })
    .await
    .map_err(ApiError::internal)??;
    Response::builder()
        .header(header::CONTENT_TYPE, "text/plain; version=0.0.4")
        .body(Body::from(text))
        .map_err(ApiError::internal)
}

fn publish_status(e: &PublishError) -> StatusCode {
    match e {
        PublishError::VersionTaken { .. } | PublishError::NamespaceOwned { .. } => StatusCode::CONFLICT,
        e if e.is_client_error() => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<PublishError> for ApiError {
    fn from(e: PublishError) -> Self {
        ApiError::new(publish_status(&e), e.code(), e.to_string())
    }
}

async fn publish(State(s): State<Arc<ApiState>>, headers: HeaderMap, body: Body) -> ApiResult<Json<serde_json::Value>> {
    let result = publish_counted(&s, headers, body).await;
    s.node.metrics.publish(match &result {
        Ok(_) => "ok",
        Err(e) => e.code,
    });
    result
}

async fn publish_counted(s: &Arc<ApiState>, headers: HeaderMap, body: Body) -> ApiResult<Json<serde_json::Value>> {
    let prefix = headers
        .get(PUBLISH_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::bad("malformed_record", format!("missing {PUBLISH_HEADER} header")))?;
    let prefix = hex::decode(prefix).map_err(|_| ApiError::bad("malformed_record", "publish header is not hex"))?;
    let req = PublishRequest::decode(&prefix)?;
    // Refuse bad signatures before reading a byte of the archive; checked
    // once, and carried through the publish and its announcement.
    let verified = publish::verify_release(s.node.federation(), &req)?;
    let declared = verified.0.record().size;
    let limit = s.node.config.node.max_pack_bytes();
    if declared > limit {
        return Err(ApiError::bad(
            "too_large",
            format!("the archive's {declared} bytes are over this node's {limit}-byte limit ([node] max_pack_bytes)"),
        ));
    }

    // Stream the body into the store on a blocking thread, bounded by the size
    // the signed release declares.
    let store = s.node.store.clone();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(8);
    let writer = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
        let mut w = store.blob_writer(declared).map_err(std::io::Error::other)?;
        while let Some(chunk) = rx.blocking_recv() {
            w.write_all(&chunk)?;
        }
        w.finish()
    });
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad("upload", format!("upload interrupted: {e}")))?;
        if tx.send(chunk).await.is_err() {
            break; // the writer stopped: its error is reported below
        }
    }
    drop(tx);
    let staged = writer
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| ApiError::bad("too_large", format!("archive refused: {e}")))?;

    // Storing, announcing (document, gossip, checkpoint) and re-judging
    // all touch sled and sign: one blocking step, off the async workers.
    let node = s.node.clone();
    let (published, verified) = tokio::task::spawn_blocking(move || {
        let published = publish::publish_staged(&node.store, node.federation(), &verified, staged)?;
        node.announce_publish(&verified);
        let id = &verified.1.id;
        if let Err(e) = node.reevaluate(&id.name.to_string(), &id.version.to_string()) {
            tracing::warn!(%id, error = %e, "judging the new release failed; the next re-evaluation retries");
        }
        Ok::<_, publish::PublishError>((published, verified))
    })
    .await
    .map_err(ApiError::internal)??;
    s.publishes.fetch_add(1, Ordering::Relaxed);
    let (release, facts, _) = verified;

    // The namespace is this publisher's once witnesses have seen its claim.
    let ns = facts.id.name.namespace().to_string();
    let signer = release.signer();
    let witnessed = wait_witnessed(|| {
        s.node
            .store
            .namespace_owner(&ns)
            .ok()
            .flatten()
            .is_some_and(|o| o.key() == signer)
    })
    .await;
    tracing::info!(id = %facts.id, hash = %facts.hash, new = published.new, witnessed, "published");
    let q = crate::node::quality_view(Some(&published.quality));
    Ok(Json(json!({
        "id": published.facts.id.to_string(),
        "name": published.facts.id.name.to_string(),
        "version": published.facts.id.version.to_string(),
        "hash": published.facts.hash.to_hex(),
        "size": declared,
        "record_id": published.record_id.to_hex(),
        "witnessed": witnessed,
        "quality": q,
        "status": "accepted",
        "new": published.new,
    })))
}

#[derive(Deserialize)]
struct YankBody {
    envelope: String,
}

async fn yank(State(s): State<Arc<ApiState>>, Json(body): Json<YankBody>) -> ApiResult<Json<serde_json::Value>> {
    let bytes = hex::decode(&body.envelope).map_err(|_| ApiError::bad("malformed_record", "envelope is not hex"))?;
    let env = Signed::decode(&bytes).map_err(|e| ApiError::bad("malformed_record", e.to_string()))?;
    let node = s.node.clone();
    let id = tokio::task::spawn_blocking(move || node.yank(&env))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| match e {
            crate::node::YankError::NotFound(_) => ApiError::new(StatusCode::NOT_FOUND, "not_found", e.to_string()),
            crate::node::YankError::NotOwner { .. } => ApiError::new(StatusCode::FORBIDDEN, "not_owner", e.to_string()),
            crate::node::YankError::Store(e) => ApiError::internal(e),
            other => ApiError::bad("bad_yank", other.to_string()),
        })?;
    Ok(Json(json!({"id": id.to_string(), "yanked": true})))
}

async fn deprecate(State(s): State<Arc<ApiState>>, Json(body): Json<YankBody>) -> ApiResult<Json<serde_json::Value>> {
    let bytes = hex::decode(&body.envelope).map_err(|_| ApiError::bad("malformed_record", "envelope is not hex"))?;
    let env = Signed::decode(&bytes).map_err(|e| ApiError::bad("malformed_record", e.to_string()))?;
    let id = env.id().to_hex();
    let node = s.node.clone();
    let what = tokio::task::spawn_blocking(move || node.deprecate(&env))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| match e {
            crate::node::DeprecateError::NotFound(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", e.to_string())
            }
            crate::node::DeprecateError::NotOwner { .. } => {
                ApiError::new(StatusCode::FORBIDDEN, "not_owner", e.to_string())
            }
            crate::node::DeprecateError::Store(e) => ApiError::internal(e),
            other => ApiError::bad("bad_deprecation", other.to_string()),
        })?;
    Ok(Json(json!({"deprecation_id": id, "deprecated": what})))
}

#[derive(Deserialize)]
struct SparqlBody {
    query: String,
    #[serde(default)]
    format: Option<String>,
}

async fn sparql(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    Json(body): Json<SparqlBody>,
) -> ApiResult<Response> {
    use crate::sparql::{Format, SparqlError};
    let format = match body.format.as_deref() {
        None | Some("json") => Format::Json,
        Some("csv") => Format::Csv,
        Some(other) => {
            return Err(ApiError::bad(
                "bad_format",
                format!("format {other:?}: use json or csv"),
            ));
        }
    };
    let include_org = has_token(&s, &headers);
    let limits = crate::sparql::Limits::from(&s.node.config.sparql);
    let state = s.clone();
    let answer = tokio::task::spawn_blocking(move || {
        let generation = state.search.as_ref().map(|x| x.changes_seen());
        let graph = state.sparql.get(&state.node, include_org, generation)?;
        Ok::<_, anyhow::Error>(crate::sparql::run(&graph, &body.query, format, limits))
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?
    .map_err(|e| match e {
        SparqlError::Timeout(_) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "sparql_timeout", e.to_string()),
        SparqlError::Busy => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "sparql_busy", e.to_string()),
        SparqlError::Update | SparqlError::Service => ApiError::bad("sparql_refused", e.to_string()),
        _ => ApiError::bad("sparql_error", e.to_string()),
    })?;
    Response::builder()
        .header(header::CONTENT_TYPE, answer.content_type)
        .header("packfed-truncated", if answer.truncated { "true" } else { "false" })
        .body(Body::from(answer.body))
        .map_err(ApiError::internal)
}

#[derive(Deserialize)]
struct SearchQuery {
    #[serde(default)]
    q: String,
    limit: Option<usize>,
    #[serde(default)]
    all_versions: bool,
    #[serde(default)]
    include_quarantined: bool,
    category: Option<String>,
    license: Option<String>,
    tier: Option<String>,
    attested: Option<String>,
    /// `local`, `lacking` (default) or `all`.
    peers: Option<String>,
    timeout_ms: Option<u64>,
    #[serde(default)]
    explain: bool,
}

/// Longest deadline a search may ask peers for.
const MAX_SEARCH_TIMEOUT_MS: u64 = 10_000;

async fn search(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    Query(q): Query<SearchQuery>,
) -> ApiResult<Json<search::fanout::SearchResponse>> {
    if q.q.len() > search::fanout::MAX_QUERY_BYTES {
        return Err(ApiError::bad(
            "query_too_long",
            format!("queries are limited to {} bytes", search::fanout::MAX_QUERY_BYTES),
        ));
    }
    let attested = match q.attested.as_deref() {
        None | Some("") => None,
        Some(k) => Some(search::catalog::kind_bit(k).ok_or_else(|| {
            ApiError::bad(
                "bad_kind",
                format!(
                    "unknown attestation kind {k:?}; use one of {}",
                    packfed_protocol::records::ATTESTATION_KINDS.join(", ")
                ),
            )
        })?),
    };
    let fanout = match q.peers.as_deref() {
        None | Some("lacking") => search::federated::Fanout::Lacking,
        Some("local") => search::federated::Fanout::Local,
        Some("all") => search::federated::Fanout::All,
        Some(other) => {
            return Err(ApiError::bad(
                "bad_peers",
                format!("peers={other:?}: use local, lacking or all"),
            ));
        }
    };
    let lower = |v: Option<String>| v.filter(|v| !v.is_empty()).map(|v| v.to_ascii_lowercase());
    let query = search::LocalQuery {
        text: q.q,
        limit: q.limit.unwrap_or(20).clamp(1, search::MAX_RESULTS),
        filters: search::catalog::Filters {
            category: lower(q.category),
            license: lower(q.license),
            tier: lower(q.tier),
            attested,
            include_quarantined: q.include_quarantined,
            all_versions: q.all_versions,
            // This node's own users (the token) see its org catalog.
            include_org: has_token(&s, &headers),
        },
    };
    let timeout = q
        .timeout_ms
        .map(|ms| std::time::Duration::from_millis(ms.min(MAX_SEARCH_TIMEOUT_MS)))
        .unwrap_or(search::federated::DEFAULT_TIMEOUT);
    let started = std::time::Instant::now();
    let resp = search::federated::search(
        &s.node,
        s.search.as_ref(),
        s.net.as_ref(),
        query,
        fanout,
        timeout,
        q.explain,
    )
    .await
    .map_err(|e| match e {
        search::federated::SearchError::NotRunning => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "search_unavailable", e.to_string())
        }
        other => ApiError::internal(other),
    })?;
    s.node.metrics.search_seconds.observe(started.elapsed());
    let mut resp = resp;
    for hit in &mut resp.results {
        hit.deprecated = s.node.deprecation(&hit.name, &hit.version)?.map(|d| d.message);
    }
    Ok(Json(resp))
}

fn pack_name(ns: &str, name: &str) -> ApiResult<String> {
    let full = format!("{ns}/{name}");
    full.parse::<packfed_protocol::records::PackName>()
        .map_err(|e| ApiError::bad("bad_name", e.to_string()))?;
    Ok(full)
}

async fn package(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path((ns, name)): Path<(String, String)>,
) -> ApiResult<Json<serde_json::Value>> {
    let full = pack_name(&ns, &name)?;
    let org = has_token(&s, &headers);
    let versions: Vec<ReleaseView> = s
        .node
        .versions(&full)?
        .iter()
        .filter(|e| org || !is_org(e))
        .map(|e| ReleaseView::judged(&s.node, e))
        .collect();
    if versions.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no pack named {full} on this node"),
        ));
    }
    Ok(Json(json!({"name": full, "versions": versions})))
}

#[derive(Deserialize)]
struct InfoQuery {
    version: Option<String>,
}

async fn info(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path((ns, name)): Path<(String, String)>,
    Query(q): Query<InfoQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    let full = pack_name(&ns, &name)?;
    let entry = release_or_404(&s, &full, q.version.as_deref(), has_token(&s, &headers))?;
    let view = ReleaseView::judged(&s.node, &entry);
    let have_blob = s.node.store.has_blob(&view.hash)?;
    let mut v = serde_json::to_value(&view).map_err(ApiError::internal)?;
    v["attestations"] = json!(s.node.attestation_views(&entry)?);
    v["witnessed_at"] = json!(s.node.witnessed_at(&entry.record_id));
    v["owner"] = json!(
        s.node
            .store
            .namespace_owner(full.split('/').next().unwrap_or_default())?
            .map(|o| o.key().to_hex())
    );
    v["providers"] = if have_blob { json!([s.node.peer_id]) } else { json!([]) };
    Ok(Json(v))
}

fn is_org(e: &crate::store::ReleaseEntry) -> bool {
    e.release.visibility == packfed_protocol::pb::Visibility::Org as i32
}

/// The release `ns/name@version` or a 404 naming it. Without the token an
/// org release is not there (the same 404: its existence is org data too).
fn release_or_404(s: &ApiState, full: &str, version: Option<&str>, org: bool) -> ApiResult<crate::store::ReleaseEntry> {
    let found = match s.node.info(full, version)? {
        Some(e) if !org && is_org(&e) => match version {
            // The newest public version, if the newest is an org one.
            None => s.node.versions(full)?.into_iter().find(|e| !is_org(e)),
            Some(_) => None,
        },
        other => other,
    };
    found.ok_or_else(|| {
        let what = match version {
            Some(v) => format!("{full}@{v}"),
            None => full.to_string(),
        };
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} is not known to this node; check the name with `packfed search`"),
        )
    })
}

/// Every attestation of a release, with the signed envelopes so clients
/// can check them themselves.
async fn attestations(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path((ns, name)): Path<(String, String)>,
    Query(q): Query<InfoQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    let full = pack_name(&ns, &name)?;
    let entry = release_or_404(&s, &full, q.version.as_deref(), has_token(&s, &headers))?;
    let mut out = Vec::new();
    for view in s.node.attestation_views(&entry)? {
        let id: packfed_protocol::RecordId = view.id.parse().map_err(ApiError::internal)?;
        let envelope = s.node.store.record(&id)?.map(|e| hex::encode(e.encoded()));
        let mut v = serde_json::to_value(&view).map_err(ApiError::internal)?;
        v["envelope"] = json!(envelope);
        out.push(v);
    }
    Ok(Json(json!(out)))
}

#[derive(Deserialize)]
struct AttestBody {
    /// The signed attestation, hex.
    envelope: String,
}

async fn attest(State(s): State<Arc<ApiState>>, Json(body): Json<AttestBody>) -> ApiResult<Json<serde_json::Value>> {
    let bytes = hex::decode(&body.envelope).map_err(|_| ApiError::bad("bad_hex", "envelope is not hex"))?;
    let env = packfed_protocol::Signed::decode(&bytes).map_err(|e| ApiError::bad("bad_attestation", e.to_string()))?;
    let node = s.node.clone();
    let id = tokio::task::spawn_blocking(move || node.attest_local(&env))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| match e {
            crate::node::AttestError::Store(e) => ApiError::internal(e),
            other => ApiError::bad("bad_attestation", other.to_string()),
        })?;
    Ok(Json(json!({"attestation_id": id.to_hex()})))
}

/// The policy in force: each rule set and where it comes from.
async fn policy(State(s): State<Arc<ApiState>>) -> Json<serde_json::Value> {
    Json(policy_json(&s))
}

/// The policy in force, as `/v1/policy` and the web UI show it.
fn policy_json(s: &ApiState) -> serde_json::Value {
    let sets = s.node.rule_sets();
    let source = sets.iter().map(|r| r.source.clone()).collect::<Vec<_>>().join(" + ");
    let rules: serde_json::Map<String, serde_json::Value> = sets
        .iter()
        .map(|r| (r.source.clone(), json!({"accept": r.rules})))
        .collect();
    let p = s.node.policy();
    json!({
        "version": p.version,
        "set_by": p.set_by.map(hex::encode),
        "source": source,
        "rules": rules,
        "fingerprint": hex::encode(s.node.policy().fingerprint),
    })
}

/// Fetches a blob this node lacks from the federation, streaming progress
/// as JSON lines (`{"offset","size"}` ... then `{"done":true}` or
/// `{"error"}`), so the CLI can draw a progress bar while the node fetches.
#[derive(Deserialize)]
struct PrefetchQuery {
    /// The size the caller's verified release gives (used if a visible
    /// release says so too).
    size: Option<u64>,
}

async fn prefetch(
    State(s): State<Arc<ApiState>>,
    Path(hash): Path<String>,
    Query(q): Query<PrefetchQuery>,
) -> ApiResult<Response> {
    let hash: ContentHash = hash.parse().map_err(|e| ApiError::bad("bad_hash", format!("{e}")))?;
    let (tx, rx) = tokio::sync::mpsc::channel::<serde_json::Value>(64);
    let have = s.node.store.has_blob(&hash)?;
    match (have, s.node.known_size(&hash, q.size), s.net.clone()) {
        (true, _, _) => {
            let _ = tx.try_send(json!({"done": true, "fetched": false}));
        }
        (false, Some(size), Some(net)) => {
            let node = s.node.clone();
            tokio::spawn(async move {
                let progress_tx = tx.clone();
                let report = move |offset: u64| {
                    // Dropped updates are fine: the next one supersedes them.
                    let _ = progress_tx.try_send(json!({"offset": offset, "size": size}));
                };
                let last = match crate::fetch::fetch_blob_with_progress(&node, &net, hash, size, &report).await {
                    Ok(()) => json!({"done": true, "fetched": true}),
                    Err(e) => json!({"error": format!("{e:#}")}),
                };
                let _ = tx.send(last).await;
            });
        }
        (false, _, _) => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("blob {hash} is not on this node and no known release names it"),
            ));
        }
    }
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let v = rx.recv().await?;
        Some((Ok::<_, std::io::Error>(Bytes::from(format!("{v}\n"))), rx))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(stream))
        .map_err(ApiError::internal)
}

async fn gov_members(State(s): State<Arc<ApiState>>) -> Json<serde_json::Value> {
    let st = s.node.gov_state(crate::packing::now_ms());
    Json(json!(st.members))
}

/// One proposal as `gov list` shows it (CLI.md fields, then the rest).
fn proposal_json(p: &packfed_governance::proposals::ProposalView, with_votes: bool) -> serde_json::Value {
    let mut v = json!({
        "proposal_id": hex::encode(p.id),
        "title": p.title,
        "kind": p.kind,
        "state": p.state,
        "for": p.votes_for,
        "against": p.votes_against,
        "abstain": p.votes_abstain,
        "total_weight": p.total_weight,
        "voting_starts": p.voting_starts_ms,
        "voting_ends": p.voting_ends_ms,
        "executable_at": p.executable_at_ms,
        "proposer": p.proposer,
        "reason": p.reason,
        "ignored_votes": p.ignored_votes,
        "action": p.action,
    });
    if with_votes {
        v["votes"] = json!(p
            .votes
            .iter()
            .map(|c| json!({"voter": c.voter, "choice": c.choice, "weight": c.weight, "cast_at": c.cast_at_ms, "vote_id": hex::encode(c.id)}))
            .collect::<Vec<_>>());
    }
    v
}

async fn gov_list(State(s): State<Arc<ApiState>>) -> Json<serde_json::Value> {
    let st = s.node.gov_state(crate::packing::now_ms());
    Json(json!(
        st.proposals.iter().map(|p| proposal_json(p, false)).collect::<Vec<_>>()
    ))
}

async fn gov_show(State(s): State<Arc<ApiState>>, Path(id): Path<String>) -> ApiResult<Json<serde_json::Value>> {
    let st = s.node.gov_state(crate::packing::now_ms());
    let found = st
        .proposals
        .iter()
        .find(|p| hex::encode(p.id) == id.to_lowercase())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no proposal {id} on this node; see `packfed gov list`"),
            )
        })?;
    Ok(Json(proposal_json(found, true)))
}

async fn gov_submit(
    State(s): State<Arc<ApiState>>,
    Json(body): Json<AttestBody>,
) -> ApiResult<Json<serde_json::Value>> {
    let bytes = hex::decode(&body.envelope).map_err(|_| ApiError::bad("bad_hex", "envelope is not hex"))?;
    let env = packfed_protocol::Signed::decode(&bytes).map_err(|e| ApiError::bad("bad_record", e.to_string()))?;
    let node = s.node.clone();
    let id = tokio::task::spawn_blocking(move || node.submit_gov(&env))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| match e {
            crate::node::GovError::Store(e) => ApiError::internal(e),
            crate::node::GovError::Refused { code, message } => ApiError::bad(code, message),
            other => ApiError::bad("bad_record", other.to_string()),
        })?;
    let rid = packfed_protocol::RecordId(id);
    let witnessed = wait_witnessed(|| s.node.witnessed_at(&rid).is_some()).await;
    Ok(Json(json!({"id": hex::encode(id), "witnessed": witnessed})))
}

async fn blob(State(s): State<Arc<ApiState>>, Path(hash): Path<String>) -> ApiResult<Response> {
    let hash: ContentHash = hash.parse().map_err(|e| ApiError::bad("bad_hash", format!("{e}")))?;
    if !s.node.store.has_blob(&hash)? {
        // A release this node knows but whose bytes it lacks: fetch them from
        // the federation first (company nodes cache what they install).
        let size = s.node.known_size(&hash, None);
        if let (Some(size), Some(net)) = (size, s.net.as_ref()) {
            crate::fetch::fetch_blob(&s.node, net, hash, size)
                .await
                .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, "fetch_failed", format!("{e:#}")))?;
        }
    }
    let (meta, mut reader) = match s.node.store.blob_reader(&hash) {
        Ok(r) => r,
        Err(crate::store::StoreError::MissingBlob(h)) => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("blob {h} is not on this node"),
            ));
        }
        Err(e) => return Err(e.into()),
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    let node = s.node.clone();
    tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; CHUNK_SIZE];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if tx.blocking_send(Ok(Bytes::copy_from_slice(&buf[..n]))).is_err() {
                        break;
                    }
                    crate::metrics::Metrics::add(&node.metrics.blob_bytes_served, n as u64);
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    break;
                }
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, meta.size)
        .body(Body::from_stream(stream))
        .map_err(ApiError::internal)
}
