//! Federated search results: what a node tells a peer, what it accepts
//! back, and how answers from several nodes merge. Pure.
//!
//! A peer's hit carries the signed release, so the asker shows only what the
//! publisher signed (name, version, description, hash) and verifies it; the
//! score, verdict and attestation count are the answering node's opinion and
//! are labelled with its id. Merging: by score, best first; one result per
//! content hash, listing every node that returned it (`sources`), and the
//! asker's own verdict wins over a peer's when it holds the release too.

use std::collections::HashMap;

use packfed_protocol::records::check_release;
use packfed_protocol::{FederationId, Signed, pb};
use serde::{Deserialize, Serialize};

use super::catalog::{Filters, kind_bit};
use super::rank::Explain;
use super::{LocalHit, LocalQuery, MAX_RESULTS};

/// Longest query text a peer may send.
pub const MAX_QUERY_BYTES: usize = 256;
/// Most results a peer may ask for or send.
pub const MAX_REMOTE_RESULTS: usize = 50;
/// Frame limits of the search protocol.
pub const MAX_REQUEST_FRAME: usize = crate::net::MAX_SEARCH_REQUEST_FRAME;
pub const MAX_RESPONSE_FRAME: usize = crate::net::MAX_SEARCH_RESPONSE_FRAME;
/// Most peers one search asks.
pub const MAX_FANOUT: usize = 32;

/// One result as `packfed search --json` prints it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SearchHit {
    pub id: String,
    pub name: String,
    pub version: String,
    pub description: String,
    pub hash: String,
    pub score: f64,
    /// The node that answered first (this node when it holds the release).
    pub source: String,
    /// Every node that returned this content hash.
    pub sources: Vec<String>,
    /// Distinct federation members with a current passing attestation.
    pub attestations: u32,
    pub status: String,
    pub tier: String,
    pub quality: u32,
    pub category: String,
    pub license: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explain: Option<Explain>,
    /// The owner's deprecation message, as this node holds it (filled in
    /// by the API from its own store; never taken from a peer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deprecated: Option<String>,
}

/// A peer that was asked and did not answer in time (or refused).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Unanswered {
    pub peer_id: String,
    pub error: String,
}

/// The response of `packfed search`.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct SearchResponse {
    pub results: Vec<SearchHit>,
    /// Some peers that were asked did not answer: results may be missing.
    pub partial: bool,
    pub peers_queried: Vec<String>,
    pub unanswered: Vec<Unanswered>,
}

impl SearchHit {
    /// A local result as printed; `source` is this node's peer id.
    pub fn local(h: &LocalHit, source: &str, explain: bool) -> SearchHit {
        let e = &h.entry;
        SearchHit {
            id: format!("{}@{}", e.name, e.version),
            name: e.name.to_string(),
            version: e.version.to_string(),
            description: e.description.to_string(),
            hash: e.hash.to_hex(),
            score: h.score,
            source: source.to_string(),
            sources: vec![source.to_string()],
            attestations: e.attesters,
            status: if e.accepted { "accepted" } else { "quarantined" }.into(),
            tier: e.facets.tier.to_string(),
            quality: e.quality,
            category: e.facets.category.to_string(),
            license: e.facets.license.to_string(),
            explain: explain.then_some(h.explain),
            deprecated: None,
        }
    }
}

/// The wire form of a query.
pub fn to_request(q: &LocalQuery) -> pb::SearchRequest {
    let f = &q.filters;
    pb::SearchRequest {
        query: q.text.clone(),
        limit: q.limit.min(MAX_REMOTE_RESULTS) as u32,
        category: f.category.clone().unwrap_or_default(),
        license: f.license.clone().unwrap_or_default(),
        tier: f.tier.clone().unwrap_or_default(),
        attested: attested_kind(f.attested).unwrap_or_default(),
        all_versions: f.all_versions,
        include_quarantined: f.include_quarantined,
    }
}

fn attested_kind(bit: Option<u16>) -> Option<String> {
    let bit = bit?;
    packfed_protocol::records::ATTESTATION_KINDS
        .iter()
        .find(|k| kind_bit(k) == Some(bit))
        .map(|k| k.to_string())
}

fn opt(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_ascii_lowercase())
}

/// A peer's query as this node runs it: bounded, and org entries only for
/// an org peer.
pub fn from_request(r: &pb::SearchRequest, org_peer: bool) -> Result<LocalQuery, String> {
    if r.query.len() > MAX_QUERY_BYTES {
        return Err(format!("query over {MAX_QUERY_BYTES} bytes"));
    }
    let attested = match opt(&r.attested) {
        None => None,
        Some(k) => Some(kind_bit(&k).ok_or_else(|| format!("unknown attestation kind {k:?}"))?),
    };
    for (what, v) in [("category", &r.category), ("license", &r.license), ("tier", &r.tier)] {
        if v.len() > 128 {
            return Err(format!("{what} over 128 bytes"));
        }
    }
    Ok(LocalQuery {
        text: r.query.clone(),
        limit: (r.limit as usize).clamp(1, MAX_REMOTE_RESULTS),
        filters: Filters {
            category: opt(&r.category),
            license: opt(&r.license),
            tier: opt(&r.tier),
            attested,
            include_quarantined: r.include_quarantined,
            all_versions: r.all_versions,
            include_org: org_peer,
        },
    })
}

/// A local result as sent to a peer, with its signed release.
pub fn to_wire(h: &LocalHit, envelope: &[u8]) -> pb::SearchHit {
    let x = &h.explain;
    pb::SearchHit {
        envelope: envelope.to_vec(),
        score: h.score,
        explain: vec![x.text, x.quality, x.attested, x.installs, x.recency, x.bm25],
        attestations: h.entry.attesters,
        accepted: h.entry.accepted,
    }
}

/// A peer's hit, verified: the envelope must be a release of this
/// federation with a valid signature, and the numbers must be sane.
/// A peer's hit, verified, and whether it is an org release (which only
/// this node's own users may see).
pub fn from_wire(
    fed: &FederationId,
    peer: &str,
    h: &pb::SearchHit,
    explain: bool,
) -> Result<(SearchHit, bool), String> {
    let env = Signed::decode(&h.envelope).map_err(|e| e.to_string())?;
    let v = env.verify::<pb::Release>(fed).map_err(|e| e.to_string())?;
    let r = v.record();
    check_release(r).map_err(|e| e.to_string())?;
    if !h.score.is_finite() || h.explain.len() > 6 || h.explain.iter().any(|x| !x.is_finite()) {
        return Err("score is not a finite number".into());
    }
    let q = r.quality.as_ref();
    let part = |i: usize| h.explain.get(i).copied().unwrap_or(0.0);
    let org = r.visibility == pb::Visibility::Org as i32;
    let hit = SearchHit {
        id: format!("{}@{}", r.name, r.version),
        name: r.name.clone(),
        version: r.version.clone(),
        description: r.description.clone(),
        hash: hex::encode(&r.content_hash),
        // A peer cannot push its results above every local one by a huge score.
        score: h.score.clamp(-10.0, 10.0),
        source: peer.to_string(),
        sources: vec![peer.to_string()],
        attestations: h.attestations,
        status: if h.accepted { "accepted" } else { "quarantined" }.into(),
        tier: q.map(|q| q.tier.clone()).unwrap_or_default(),
        quality: q.map(|q| q.score).unwrap_or(0),
        category: r.category.clone(),
        license: r.license.clone(),
        explain: explain.then(|| Explain {
            text: part(0),
            quality: part(1),
            attested: part(2),
            installs: part(3),
            recency: part(4),
            bm25: part(5),
        }),
        deprecated: None,
    };
    Ok((hit, org))
}

/// Merges this node's results with peers' answers: one result per content
/// hash (the local one if any, else the best-scoring), every source listed,
/// best first, at most `limit`.
pub fn merge(local: Vec<SearchHit>, remote: Vec<SearchHit>, limit: usize) -> Vec<SearchHit> {
    let mut by_hash: HashMap<String, usize> = HashMap::new();
    let mut out: Vec<SearchHit> = Vec::new();
    let mut local_hashes = std::collections::HashSet::new();
    for h in local {
        local_hashes.insert(h.hash.clone());
        by_hash.insert(h.hash.clone(), out.len());
        out.push(h);
    }
    for h in remote {
        match by_hash.get(&h.hash) {
            Some(&i) => {
                let have = &mut out[i];
                if !have.sources.contains(&h.source) {
                    have.sources.push(h.source.clone());
                }
                if !local_hashes.contains(&h.hash) && h.score > have.score {
                    let sources = std::mem::take(&mut have.sources);
                    *have = SearchHit { sources, ..h };
                }
            }
            None => {
                by_hash.insert(h.hash.clone(), out.len());
                out.push(h);
            }
        }
    }
    out.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| a.name.cmp(&b.name))
            .then_with(|| a.version.cmp(&b.version))
    });
    out.truncate(limit.clamp(1, MAX_RESULTS));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use packfed_protocol::KeyPair;

    fn hit(hash: &str, score: f64, source: &str) -> SearchHit {
        SearchHit {
            id: format!("a/{hash}@1.0.0"),
            name: format!("a/{hash}"),
            version: "1.0.0".into(),
            description: String::new(),
            hash: hash.into(),
            score,
            source: source.into(),
            sources: vec![source.into()],
            attestations: 0,
            status: "accepted".into(),
            tier: String::new(),
            quality: 0,
            category: String::new(),
            license: String::new(),
            explain: None,
            deprecated: None,
        }
    }

    #[test]
    fn merge_dedupes_by_hash_keeping_every_source_and_orders_by_score() {
        let local = vec![hit("x", 1.0, "me")];
        let remote = vec![
            hit("x", 5.0, "p1"),
            hit("y", 2.0, "p1"),
            hit("y", 3.0, "p2"),
            hit("z", 0.5, "p2"),
        ];
        let m = merge(local, remote, 10);
        let names: Vec<_> = m.iter().map(|h| (h.hash.as_str(), h.score)).collect();
        assert_eq!(names, vec![("y", 3.0), ("x", 1.0), ("z", 0.5)]);
        assert_eq!(
            m[1].sources,
            vec!["me", "p1"],
            "the local copy stays, with the peer as a source"
        );
        assert_eq!(m[1].source, "me");
        assert_eq!(m[0].sources, vec!["p1", "p2"]);
        assert_eq!(m[0].source, "p2", "the better-scoring remote copy is kept");
        assert_eq!(merge(vec![], vec![hit("a", 1.0, "p"), hit("b", 2.0, "p")], 1).len(), 1);
    }

    #[test]
    fn a_peer_hit_must_carry_a_valid_release_of_this_federation() {
        let key = KeyPair::generate().unwrap();
        let fed = FederationId([7; 32]);
        let r = pb::Release {
            name: "a/x".into(),
            version: "1.0.0".into(),
            content_hash: vec![1; 32],
            description: "d".into(),
            license: "MIT".into(),
            ..Default::default()
        };
        let env = Signed::sign(&r, &key, &fed);
        let good = pb::SearchHit {
            envelope: env.encoded().to_vec(),
            score: 1e300,
            explain: vec![1.0; 6],
            attestations: 1,
            accepted: true,
        };
        let (h, org) = from_wire(&fed, "p", &good, true).unwrap();
        assert!(!org);
        assert_eq!(h.id, "a/x@1.0.0");
        assert_eq!(h.score, 10.0, "clamped");
        assert!(
            from_wire(&FederationId([8; 32]), "p", &good, false).is_err(),
            "other federation"
        );
        let mut bad = good.clone();
        let n = bad.envelope.len();
        bad.envelope[n - 1] ^= 1;
        assert!(from_wire(&fed, "p", &bad, false).is_err(), "bad signature");
        let nan = pb::SearchHit {
            score: f64::NAN,
            ..good.clone()
        };
        assert!(from_wire(&fed, "p", &nan, false).is_err());
        let att = pb::Attestation::default();
        let wrong_kind = pb::SearchHit {
            envelope: Signed::sign(&att, &key, &fed).encoded().to_vec(),
            ..good
        };
        assert!(from_wire(&fed, "p", &wrong_kind, false).is_err(), "not a release");
    }

    #[test]
    fn requests_are_bounded_and_org_entries_need_an_org_peer() {
        let mut r = pb::SearchRequest {
            query: "x".repeat(MAX_QUERY_BYTES + 1),
            ..Default::default()
        };
        assert!(from_request(&r, true).is_err());
        r.query = "rest".into();
        r.limit = 1_000_000;
        let q = from_request(&r, false).unwrap();
        assert_eq!(q.limit, MAX_REMOTE_RESULTS);
        assert!(!q.filters.include_org);
        assert!(from_request(&r, true).unwrap().filters.include_org);
        r.attested = "nonsense".into();
        assert!(from_request(&r, true).is_err());
        r.attested = "audit".into();
        let back = to_request(&from_request(&r, true).unwrap());
        assert_eq!(back.attested, "audit");
    }
}
