//! `packfed node run`: the daemon. Opens the node, serves the API, writes
//! `HOME/node.json` once listening and removes it on a clean exit
//! (SIGINT/SIGTERM).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::api::{self, ApiState};
use crate::config::{Home, write_atomic};
use crate::init;
use crate::node::Node;

/// The contents of `HOME/node.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeJson {
    pub peer_id: String,
    pub api: String,
    pub listen_addrs: Vec<String>,
    pub pid: u32,
}

/// Runs the daemon until a signal asks it to stop.
pub async fn run(home: Home) -> Result<()> {
    if !home.config().exists() {
        let created = init::init_dev_home(&home)?;
        eprintln!(
            "initialized a development node in {} (federation {}, key \"default\" is its only member)",
            home.root.display(),
            &created.federation_id[..16]
        );
    }
    let node = Arc::new(Node::open(home.clone())?);
    // Verdicts from other rules (a changed policy) are recomputed at once.
    match node.reevaluate_stale() {
        Ok(0) => {}
        Ok(n) => tracing::info!(releases = n, "re-evaluated releases under the policy in force"),
        Err(e) => tracing::warn!(error = %e, "re-evaluating releases failed"),
    }
    crate::memory::release_freed();
    // Search loads its catalog in the background; searches wait for it.
    let search = Arc::new(
        crate::search::SearchService::open(&home.search_index())
            .with_context(|| format!("opening the search index in {}", home.search_index().display()))?,
    );
    let _ = node.search.set(search.clone());
    search.start(node.clone())?;
    let token = std::fs::read_to_string(home.api_token())
        .with_context(|| format!("reading {}", home.api_token().display()))?
        .trim()
        .to_string();
    let listener = tokio::net::TcpListener::bind(&node.config.api.listen).await.with_context(|| {
        format!(
            "cannot listen on {} for the API; is another node running? Set [api] listen in {} (port 0 picks a free one)",
            node.config.api.listen,
            home.config().display()
        )
    })?;
    let api_addr = listener.local_addr()?;
    let state = Arc::new(ApiState {
        node: node.clone(),
        token,
        publishes: AtomicU64::new(0),
    });
    let info = NodeJson {
        peer_id: node.peer_id.clone(),
        api: api_addr.to_string(),
        listen_addrs: Vec::new(),
        pid: std::process::id(),
    };
    write_atomic(&home.node_json(), serde_json::to_string_pretty(&info)?.as_bytes())?;
    // Pack bytes move over iroh, from an endpoint with the node's own key.
    let endpoint = crate::blobs::loopback_endpoint(node.key.seed(), &iroh_bind(&node.config.api.listen))
        .await
        .context("starting the iroh endpoint")?;
    let opts = crate::blobs::StoreOptions {
        // Test hook: a corrupt provider must not catch its own corruption.
        validate_on_send: !node.corrupt_serving(),
    };
    let router = crate::blobs::serve(
        endpoint.clone(),
        Arc::new(crate::blobs::SledSource { node: node.clone() }),
        opts,
    );
    let _ = node.iroh.set(endpoint);
    // After node.json exists: the network adds its listen addresses to it.
    let _net = crate::net::start(node.clone()).context("starting the libp2p network")?;
    tokio::spawn(crate::governance::run(node.clone()));
    tokio::spawn(crate::learn::node::run(node.clone()));
    tracing::info!(peer_id = %node.peer_id, api = %api_addr, federation = %node.federation(), "node running");
    eprintln!("packfed node {} serving the API on http://{api_addr}", node.peer_id);

    // No Nagle: streamed answers (progress lines, small JSON) would otherwise
    // wait for the client's delayed ACK, ~40 ms per exchange.
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    let served = axum::serve(listener, api::router(state))
        .with_graceful_shutdown(shutdown_signal())
        .await;
    let _ = std::fs::remove_file(home.node_json());
    let _ = router.shutdown().await;
    node.save_replica()?;
    node.store.flush()?;
    tracing::info!("node stopped");
    served.context("API server failed")
}

/// The iroh endpoint binds on the API's host (loopback unless configured
/// otherwise), any port.
fn iroh_bind(api: &str) -> String {
    let host = api.rsplit_once(':').map(|(h, _)| h).unwrap_or("127.0.0.1");
    format!("{host}:0")
}

/// Rewrites node.json with the libp2p addresses once they are known.
pub fn update_listen_addrs<'a>(home: &Home, addrs: impl Iterator<Item = &'a libp2p::Multiaddr>) -> Result<()> {
    let path = home.node_json();
    let mut info: NodeJson = serde_json::from_slice(&std::fs::read(&path)?)?;
    let peer = info.peer_id.clone();
    info.listen_addrs = addrs.map(|a| format!("{a}/p2p/{peer}")).collect();
    write_atomic(&path, serde_json::to_string_pretty(&info)?.as_bytes())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM; stop the node with Ctrl-C");
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("shutting down");
}
