//! Running a search across the federation: this node's index, then the
//! peers that hold catalogs it lacks, each within a deadline (I/O edge of
//! [`fanout`]).

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use libp2p::PeerId;
use packfed_protocol::{Signed, pb};

use super::fanout::{self, SearchHit, SearchResponse, Unanswered};
use super::{LocalQuery, SearchService};
use crate::net::NetHandle;
use crate::node::Node;

/// Which peers a search asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fanout {
    /// This node's catalog only.
    Local,
    /// Org peers, and peers that announce more releases than this node
    /// holds (they know releases it lacks).
    #[default]
    Lacking,
    /// Every connected peer of the federation (at most [`fanout::MAX_FANOUT`]).
    All,
}

/// Default deadline for peers' answers.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(300);
/// How long a search waits for changes reported before it to be indexed.
const CATCH_UP: Duration = Duration::from_secs(2);

/// Why a search could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("search is not running on this node")]
    NotRunning,
    #[error(transparent)]
    Index(#[from] super::index::IndexError),
    #[error("search task failed: {0}")]
    Task(String),
}

/// Answers peers' searches from this node's index: bounded, rate-limited
/// by the network layer, org entries only for an org peer, each hit with its
/// signed release.
pub struct Answerer {
    pub node: Arc<Node>,
    pub search: Arc<SearchService>,
}

impl crate::net::SearchAnswers for Answerer {
    fn answer(&self, _peer: &PeerId, org_peer: bool, request: &pb::SearchRequest) -> pb::SearchResponse {
        let refuse = |error: String| pb::SearchResponse {
            hits: Vec::new(),
            error,
        };
        let q = match fanout::from_request(request, org_peer) {
            Ok(q) => q,
            Err(e) => return refuse(format!("bad search request: {e}")),
        };
        match self.search.search(&q, crate::packing::now_ms()) {
            Ok(hits) => pb::SearchResponse {
                hits: hits
                    .iter()
                    .filter_map(|h| {
                        let env = self.node.store.record(&h.entry.rid).ok().flatten()?;
                        Some(fanout::to_wire(h, env.encoded()))
                    })
                    .collect(),
                error: String::new(),
            },
            Err(e) => refuse(format!("search failed: {e}")),
        }
    }

    fn rate_limited(&self) {
        self.search
            .rate_limited
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Runs `q` here and on the peers `fanout` picks; merges what answers
/// within `timeout`.
pub async fn search(
    node: &Arc<Node>,
    svc: Option<&Arc<SearchService>>,
    net: Option<&NetHandle>,
    q: LocalQuery,
    fanout_to: Fanout,
    timeout: Duration,
    explain: bool,
) -> Result<SearchResponse, SearchError> {
    let svc = svc.ok_or(SearchError::NotRunning)?.clone();
    if !svc.caught_up(CATCH_UP).await {
        tracing::debug!("search ran before the index caught up with recent changes");
    }
    let local_q = q.clone();
    let svc2 = svc.clone();
    let local = tokio::task::spawn_blocking(move || svc2.search(&local_q, crate::packing::now_ms()))
        .await
        .map_err(|e| SearchError::Task(e.to_string()))??;
    let me = node.peer_id.clone();
    node.learn_note_search(
        local.iter().map(|h| (h.entry.hash.0, h.features)).collect(),
        crate::packing::now_ms(),
    );
    let local: Vec<SearchHit> = local.iter().map(|h| SearchHit::local(h, &me, explain)).collect();

    let (targets, mut unanswered) = targets(node, net, fanout_to).await;
    let request = fanout::to_request(&q);
    let asks = targets.iter().map(|peer| {
        let request = request.clone();
        let net = net.cloned();
        async move {
            let Some(net) = net else {
                return (*peer, Err("network not running".to_string()));
            };
            match tokio::time::timeout(timeout, net.search(*peer, request)).await {
                Ok(r) => (*peer, r),
                Err(_) => (*peer, Err(format!("no answer within {} ms", timeout.as_millis()))),
            }
        }
    });
    let answers = join_all(asks).await;
    let mut remote = Vec::new();
    for (peer, answer) in answers {
        let peer_s = peer.to_string();
        match answer {
            Ok(resp) if resp.error.is_empty() => {
                remote.extend(resp.hits.iter().take(fanout::MAX_REMOTE_RESULTS).filter_map(|h| {
                    match checked(node, &svc, &q, &peer_s, h, explain) {
                        Ok(hit) => hit,
                        Err(e) => {
                            tracing::info!(peer = %peer_s, error = %e, "dropped a search result a peer sent");
                            None
                        }
                    }
                }));
            }
            Ok(resp) => unanswered.push(Unanswered {
                peer_id: peer_s,
                error: resp.error.chars().take(200).collect(),
            }),
            Err(error) => unanswered.push(Unanswered { peer_id: peer_s, error }),
        }
    }
    Ok(SearchResponse {
        results: fanout::merge(local, remote, q.limit),
        partial: !unanswered.is_empty(),
        peers_queried: targets.iter().map(|p| p.to_string()).collect(),
        unanswered,
    })
}

/// A peer's hit, verified; where this node holds the same record, its own
/// verdict and attestation count replace the peer's, and a release it would
/// not show is dropped (Ok(None)).
fn checked(
    node: &Node,
    svc: &SearchService,
    q: &LocalQuery,
    peer: &str,
    h: &pb::SearchHit,
    explain: bool,
) -> Result<Option<SearchHit>, String> {
    let (mut hit, org) = fanout::from_wire(node.federation(), peer, h, explain)?;
    // An org peer answers with org releases; only this node's users see them.
    if org && !q.filters.include_org {
        return Ok(None);
    }
    let rid = Signed::decode(&h.envelope).map_err(|e| e.to_string())?.id();
    let catalog = svc.catalog.read();
    if let Some(e) = catalog.entry_by_rid(&rid) {
        if !q.filters.admits(e) {
            return Ok(None);
        }
        hit.status = if e.accepted { "accepted" } else { "quarantined" }.into();
        hit.attestations = e.attesters;
    } else if hit.status != "accepted" && !q.filters.include_quarantined {
        return Ok(None);
    }
    Ok(Some(hit))
}

/// The peers to ask, and the org peers that cannot be asked (not connected).
async fn targets(node: &Arc<Node>, net: Option<&NetHandle>, fanout_to: Fanout) -> (Vec<PeerId>, Vec<Unanswered>) {
    let Some(net) = net else {
        return (Vec::new(), Vec::new());
    };
    if fanout_to == Fanout::Local {
        return (Vec::new(), Vec::new());
    }
    let peers = net.peers().await;
    let own = node.store.public_release_count() as u64;
    let mut out: Vec<PeerId> = Vec::new();
    for p in &peers {
        let Ok(id) = p.peer_id.parse::<PeerId>() else { continue };
        let wanted = match fanout_to {
            Fanout::All => true,
            _ => node.is_org_peer(&id) || p.releases > own,
        };
        if wanted && out.len() < fanout::MAX_FANOUT {
            out.push(id);
        }
    }
    // An org peer that is not connected holds a catalog no one else has.
    let unanswered = node
        .config
        .org
        .peers
        .iter()
        .filter(|o| **o != node.peer_id && !peers.iter().any(|p| &p.peer_id == *o))
        .map(|o| Unanswered {
            peer_id: o.clone(),
            error: "org peer not connected".into(),
        })
        .collect();
    (out, unanswered)
}
