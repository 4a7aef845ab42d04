//! `packfed node run`: the daemon, the top of the shell. Opens the node,
//! starts search, iroh and the libp2p reactor, wires what the node hands
//! out (gossip, provider records, mirror fetches) to them, runs the
//! governance and learning timers, serves the API, writes `HOME/node.json`
//! once listening and removes it on a clean exit (SIGINT/SIGTERM).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use anyhow::{Context, Result};
use tokio::sync::mpsc;

use crate::api::{self, ApiState};
use crate::blobs::ChunkSource;
use crate::config::{Home, NodeJson, write_atomic};
use crate::init;
use crate::net::{NetHandle, RangeSource};
use crate::node::{Node, Outbound};
use crate::search::SearchService;

/// What answers peers' requests for blob bytes, on both transports.
pub struct Sources {
    pub chunks: Arc<dyn ChunkSource>,
    pub ranges: Arc<dyn RangeSource>,
    /// Whether iroh checks bytes against the outboard before sending them.
    pub validate_on_send: bool,
}

impl Sources {
    /// The store, as every node serves it.
    pub fn store(node: &Arc<Node>) -> Sources {
        Sources {
            chunks: Arc::new(crate::node::blob_source::SledSource { node: node.clone() }),
            ranges: Arc::new(crate::net::StoreRanges { node: node.clone() }),
            validate_on_send: true,
        }
    }
}

/// Builds the blob sources once the node is open.
pub type MakeSources = Box<dyn FnOnce(&Arc<Node>) -> Sources + Send>;

/// How a daemon is put together. `packfed node run` uses the defaults; a
/// program built on the library (the test harness's adversary) can serve
/// other bytes and add API routes, which sit behind the API token.
#[derive(Default)]
pub struct Options {
    pub sources: Option<MakeSources>,
    pub routes: Option<axum::Router<Arc<ApiState>>>,
}

/// Runs the daemon until a signal asks it to stop.
pub async fn run(home: Home) -> Result<()> {
    run_with(home, Options::default()).await
}

/// [`run`], put together as `options` say.
pub async fn run_with(home: Home, options: Options) -> Result<()> {
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
    search.start(node.clone())?;
    let token = std::fs::read_to_string(home.api_token())
        .with_context(|| format!("reading {}", home.api_token().display()))?
        .trim()
        .to_string();
    if node.config.api.exposed() && !node.config.api.public {
        return Err(crate::client::UserError::new(
            "api_not_loopback",
            format!(
                "[api] listen = {:?} is not a loopback address: the API speaks clear HTTP and its token opens org data and writes. Listen on 127.0.0.1 (behind a proxy with TLS), or set `public = true` under [api] in {} to serve only the read-only public part there",
                node.config.api.listen,
                home.config().display()
            ),
        )
        .into());
    }
    let listener = tokio::net::TcpListener::bind(&node.config.api.listen).await.with_context(|| {
        format!(
            "cannot listen on {} for the API; is another node running? Set [api] listen in {} (port 0 picks a free one)",
            node.config.api.listen,
            home.config().display()
        )
    })?;
    let api_addr = listener.local_addr()?;
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
    let sources = match options.sources {
        Some(make) => make(&node),
        None => Sources::store(&node),
    };
    let opts = crate::blobs::StoreOptions {
        validate_on_send: sources.validate_on_send,
    };
    let router = crate::blobs::serve(endpoint.clone(), sources.chunks, opts);
    let _ = node.iroh.set(endpoint);
    let outbox = node
        .connect_outbox()
        .context("the node's outbox is already connected")?;
    // After node.json exists: the network adds its listen addresses to it.
    let services = crate::net::Services {
        ranges: sources.ranges,
        search: Some(Arc::new(crate::search::federated::Answerer {
            node: node.clone(),
            search: search.clone(),
        })),
    };
    let net = crate::net::start(node.clone(), services).context("starting the libp2p network")?;
    tokio::spawn(dispatch(node.clone(), net.clone(), outbox));
    tokio::spawn(crate::node::governance::run(node.clone()));
    tokio::spawn(witness(node.clone()));
    tokio::spawn(learn(node.clone(), search.clone()));
    let state = Arc::new(ApiState {
        node: node.clone(),
        token,
        publishes: AtomicU64::new(0),
        net: Some(net),
        search: Some(search),
        sparql: Default::default(),
        dependents: Default::default(),
    });
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
    let app = api::router_with(state, options.routes.unwrap_or_default());
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await;
    let _ = std::fs::remove_file(home.node_json());
    let _ = router.shutdown().await;
    node.save_replica()?;
    node.store.flush()?;
    tracing::info!("node stopped");
    served.context("API server failed")
}

/// Carries what the node hands out to the network and the mirror, in order.
async fn dispatch(node: Arc<Node>, net: NetHandle, mut outbox: mpsc::UnboundedReceiver<Outbound>) {
    let mirror_slots = Arc::new(tokio::sync::Semaphore::new(crate::fetch::MAX_MIRROR_FETCHES));
    while let Some(out) = outbox.recv().await {
        match out {
            Outbound::Gossip(topic, bytes) => net.send(crate::net::Command::Gossip(topic, bytes)).await,
            Outbound::Provide(hash) => net.send(crate::net::Command::Provide(hash)).await,
            Outbound::Mirror(hash, size) => {
                crate::fetch::spawn_mirror(node.clone(), net.clone(), mirror_slots.clone(), hash, size)
            }
        }
    }
}

/// Signs this node's checkpoints when they are due (news, or idle too
/// long), and offers again records held for being dated ahead of our clock.
async fn witness(node: Arc<Node>) {
    let every = std::time::Duration::from_millis(node.config.witness.checkpoint_interval_ms.clamp(10, 60_000));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let n = node.clone();
        let done = tokio::task::spawn_blocking(move || {
            let now = crate::packing::now_ms();
            n.release_held(now);
            n.checkpoint_tick(now)
        })
        .await;
        match done {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "signing a checkpoint failed"),
            Err(e) => tracing::warn!(error = %e, "witness task failed"),
        }
    }
}

/// Ticks the node's learning (publish, aggregate at each round boundary)
/// and gives the search ranking what it learnt.
async fn learn(node: Arc<Node>, search: Arc<SearchService>) {
    let Some(tick) = node.learn_schedule() else { return };
    // Adopt a model saved by an earlier run.
    search.set_weights(node.ranking_model().weights);
    search.set_installs(&node.all_usage());
    loop {
        let n = node.clone();
        match tokio::task::spawn_blocking(move || n.learn_tick(crate::packing::now_ms())).await {
            Ok(Ok(t)) => {
                if let Some(agg) = t.aggregated {
                    search.set_weights(node.ranking_model().weights);
                    search.set_installs(&agg.usage);
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "learning round failed"),
            Err(e) => tracing::warn!(error = %e, "learning task failed"),
        }
        tokio::time::sleep(tick).await;
    }
}

/// The iroh endpoint binds on the API's host (loopback unless configured
/// otherwise), any port.
fn iroh_bind(api: &str) -> String {
    let host = api.rsplit_once(':').map(|(h, _)| h).unwrap_or("127.0.0.1");
    format!("{host}:0")
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
