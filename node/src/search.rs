//! Local search over the releases this node stores: a first, honest version
//! that scans the catalog and scores term matches by field (name above
//! keywords above description). The tantivy index with typo tolerance and
//! federated fan-out replaces the scan; the JSON shape stays.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::node::{Node, ReleaseView};
use crate::store::StoreError;

/// One hit.
#[derive(Debug, Clone, Serialize)]
pub struct SearchHit {
    pub id: String,
    pub name: String,
    pub version: String,
    pub description: String,
    pub hash: String,
    pub score: f64,
    pub source: String,
    pub attestations: u32,
    pub status: &'static str,
    pub tier: String,
    pub quality: u32,
}

/// The response of a search.
#[derive(Debug, Clone, Serialize)]
pub struct SearchResponse {
    pub results: Vec<SearchHit>,
    pub partial: bool,
    pub peers_queried: Vec<String>,
}

fn terms(q: &str) -> Vec<String> {
    q.split(|c: char| !c.is_alphanumeric() && c != '-' && c != '/')
        .filter(|t| !t.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Field-weighted term score of a release; 0 means no match.
fn score(view: &ReleaseView, terms: &[String]) -> f64 {
    let name = view.name.to_lowercase();
    let short = name.split('/').nth(1).unwrap_or(&name).to_string();
    let desc = view.description.to_lowercase();
    let mut total = 0.0;
    for t in terms {
        let mut s: f64 = 0.0;
        if name == *t || short == *t {
            s = s.max(10.0);
        } else if name.contains(t.as_str()) {
            s = s.max(5.0);
        }
        if view.keywords.iter().any(|k| k.to_lowercase() == *t) {
            s = s.max(3.0);
        }
        if view.category.to_lowercase() == *t {
            s = s.max(2.0);
        }
        if desc.contains(t.as_str()) {
            s = s.max(1.0);
        }
        if s == 0.0 {
            return 0.0; // every term must match somewhere
        }
        total += s;
    }
    // Quality breaks ties between equal text matches.
    total + f64::from(view.quality.score) / 1000.0
}

/// Searches the local catalog: the newest non-yanked version of each
/// matching package, best first.
pub fn search_local(
    node: &Node,
    query: &str,
    limit: usize,
    all_versions: bool,
    include_quarantined: bool,
) -> Result<SearchResponse, StoreError> {
    let terms = terms(query);
    let mut best: BTreeMap<String, (semver::Version, SearchHit)> = BTreeMap::new();
    let mut all = Vec::new();
    for entry in node.store.all_releases(node.federation())? {
        if entry.yanked {
            continue;
        }
        let view = ReleaseView::judged(node, &entry);
        if view.status != "accepted" && !include_quarantined {
            continue;
        }
        let s = if terms.is_empty() { 1.0 } else { score(&view, &terms) };
        if s == 0.0 {
            continue;
        }
        let hit = SearchHit {
            id: view.id.clone(),
            name: view.name.clone(),
            version: view.version.clone(),
            description: view.description.clone(),
            hash: view.hash.to_hex(),
            score: s,
            source: node.peer_id.clone(),
            attestations: node
                .attestation_entries(&entry.release)
                .map(|a| a.iter().filter(|a| a.pass).count() as u32)
                .unwrap_or(0),
            status: view.status,
            tier: view.quality.tier.clone(),
            quality: view.quality.score,
        };
        if all_versions {
            all.push(hit);
            continue;
        }
        let v = semver::Version::parse(&view.version).unwrap_or(semver::Version::new(0, 0, 0));
        match best.get(&view.name) {
            Some((have, _)) if *have >= v => {}
            _ => {
                best.insert(view.name.clone(), (v, hit));
            }
        }
    }
    if !all_versions {
        all = best.into_values().map(|(_, h)| h).collect();
    }
    all.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.id.cmp(&b.id)));
    all.truncate(limit);
    Ok(SearchResponse {
        results: all,
        partial: false,
        peers_queried: Vec::new(),
    })
}
