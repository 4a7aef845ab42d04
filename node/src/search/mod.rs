//! Search: a tantivy index over every release's text ([`index`]), an
//! in-memory catalog of what can change about each release ([`catalog`]),
//! a ranking model over verifiable signals ([`rank`]), and the merge of
//! answers from peers ([`fanout`]).
//!
//! The store reports every change ([`Change`]); one indexer thread turns
//! them into catalog updates and index additions, committing in batches.
//! A search first waits (briefly) until every change reported before it was
//! applied, so a publish is visible to the next search.

pub mod catalog;
pub mod fanout;
pub mod federated;
pub mod first_pass;
pub mod index;
pub mod rank;

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use packfed_protocol::{ContentHash, PublicKey, pb};
use serde::Serialize;

use crate::node::Node;
use crate::store::{Change, PackageRow, ReleaseEntry, StoreError};
use catalog::{Catalog, Entry, Filters, doc_key, kind_bit};
use index::{DocText, IndexError, TextIndex};
use rank::{Explain, FEATURES};

/// Candidates the index hands to the ranking model per query.
const CANDIDATES: usize = 256;
/// Most results one query returns.
pub const MAX_RESULTS: usize = 100;
/// Longest the indexer waits for a bulk ingest to end.
const BULK_PAUSE: Duration = Duration::from_secs(30);
/// Most changes applied per index commit.
const BATCH: usize = 20_000;
/// Shortest time between two index commits while changes keep coming (a
/// change after a quiet spell is applied at once). Like a search engine's
/// refresh interval: under a stream of publishes, one commit and one read
/// of each changed package serve every change of the interval. A search
/// that waits for the index to catch up waits this much longer at most.
const COMMIT_GAP: Duration = Duration::from_millis(100);

thread_local! {
    /// Set on the indexer thread: the verdicts it computes while reading are
    /// already what it indexes, so their change reports are dropped.
    static INDEXING: Cell<bool> = const { Cell::new(false) };
}

/// One local result, with what ranked it.
#[derive(Debug, Clone)]
pub struct LocalHit {
    pub entry: Entry,
    pub score: f64,
    pub features: [f64; FEATURES],
    pub explain: Explain,
}

/// A query as the node runs it.
#[derive(Debug, Clone, Default)]
pub struct LocalQuery {
    pub text: String,
    pub filters: Filters,
    pub limit: usize,
}

/// Counters shown in `status`.
#[derive(Debug, Default, Serialize, Clone)]
pub struct IndexStats {
    pub documents: u64,
    pub segments: usize,
    pub catalog: u64,
    pub applied_changes: u64,
    pub rebuilt: bool,
}

struct Feed {
    tx: mpsc::Sender<Change>,
    sent: u64,
}

/// The search service of a running node.
pub struct SearchService {
    index: TextIndex,
    catalog: Arc<parking_lot::RwLock<Catalog>>,
    slot_maps: Arc<first_pass::SlotMaps>,
    feed: Mutex<Feed>,
    rx: Mutex<Option<mpsc::Receiver<Change>>>,
    applied: tokio::sync::watch::Sender<u64>,
    rebuilt: bool,
    pub rate_limited: AtomicU64,
}

impl SearchService {
    /// Opens (or rebuilds) the index under `dir`. Nothing is searchable until
    /// [`SearchService::start`] has loaded the catalog.
    pub fn open(dir: &Path) -> Result<SearchService, IndexError> {
        let (index, rebuilt) = TextIndex::open(dir)?;
        let (tx, rx) = mpsc::channel();
        Ok(SearchService {
            index,
            catalog: Default::default(),
            slot_maps: Default::default(),
            feed: Mutex::new(Feed { tx, sent: 0 }),
            rx: Mutex::new(Some(rx)),
            applied: tokio::sync::watch::Sender::new(0),
            rebuilt,
            rate_limited: AtomicU64::new(0),
        })
    }

    /// Hooks the service to the node's store and starts the indexer thread.
    pub fn start(self: &Arc<Self>, node: Arc<Node>) -> anyhow::Result<()> {
        let me = Arc::downgrade(self);
        node.store.on_change(Box::new(move |c| {
            if INDEXING.with(Cell::get) {
                return;
            }
            if let Some(s) = me.upgrade() {
                s.report(c);
            }
        }));
        // The first "change" is the full load.
        let rx = self
            .rx
            .lock()
            .ok()
            .and_then(|mut r| r.take())
            .ok_or_else(|| anyhow::anyhow!("search indexer already started"))?;
        let initial = {
            let mut feed = self.feed.lock().map_err(|_| anyhow::anyhow!("search feed poisoned"))?;
            feed.sent += 1;
            feed.sent
        };
        let me = self.clone();
        std::thread::Builder::new()
            .name("search-indexer".into())
            .spawn(move || {
                INDEXING.with(|f| f.set(true));
                let mut indexer = Indexer {
                    svc: &me,
                    node: &node,
                    keys: HashSet::new(),
                    strings: Default::default(),
                };
                indexer.run(rx, initial);
            })?;
        Ok(())
    }

    fn report(&self, c: Change) {
        // One lock for the count and the send: the indexer sees changes in
        // count order, so "applied >= n" means the first n are applied.
        if let Ok(mut feed) = self.feed.lock() {
            feed.sent += 1;
            let _ = feed.tx.send(c);
        }
    }

    /// How many store changes were reported so far: state derived from
    /// the store (the SPARQL graph) is current while this has not moved.
    pub fn changes_seen(&self) -> u64 {
        self.feed.lock().map(|f| f.sent).unwrap_or(0)
    }

    /// Waits until every change reported so far is searchable (at most
    /// `timeout`); false if it timed out.
    pub async fn caught_up(&self, timeout: Duration) -> bool {
        let target = self.feed.lock().map(|f| f.sent).unwrap_or(0);
        let mut rx = self.applied.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|a| *a >= target))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    pub fn weights(&self) -> [f64; FEATURES] {
        self.catalog.read().weights()
    }

    /// Adopts a new ranking model (from learning).
    pub fn set_weights(&self, w: [f64; FEATURES]) {
        self.catalog.write().set_weights(w);
    }

    /// Sets install counts from the learning aggregates.
    pub fn set_installs(&self, counts: &[(ContentHash, u64, u64)]) {
        let mut c = self.catalog.write();
        for (h, ok, failed) in counts {
            c.set_installs(h, *ok, *failed);
        }
    }

    pub fn stats(&self) -> IndexStats {
        IndexStats {
            documents: self.index.num_docs(),
            segments: self.index.segments(),
            catalog: self.catalog.read().len() as u64,
            applied_changes: *self.applied.borrow(),
            rebuilt: self.rebuilt,
        }
    }

    /// Runs a query over this node's catalog, best first.
    pub fn search(&self, q: &LocalQuery, now_ms: u64) -> Result<Vec<LocalHit>, IndexError> {
        let parsed = self.index.parse(&q.text);
        let cands = self.index.candidates(
            &parsed,
            CANDIDATES.max(q.limit),
            first_pass::scorer(self.catalog.clone(), self.slot_maps.clone(), q.filters.clone()),
        )?;
        let best = cands.iter().map(|c| c.bm25).fold(0.0f32, f32::max);
        let c = self.catalog.read();
        let weights = c.weights();
        // Scored by reference: only the entries that make the page are
        // cloned (there are up to CANDIDATES candidates, and a page of ten).
        let mut scored: Vec<(f64, &Entry, [f64; FEATURES], f32)> = cands
            .iter()
            .filter_map(|cand| {
                let e = c.get(cand.key)?;
                let f = rank::features(e, cand.bm25, best, now_ms);
                Some((rank::score(&weights, &f), e, f, cand.bm25))
            })
            .collect();
        scored.sort_by(|(sa, a, ..), (sb, b, ..)| {
            sb.total_cmp(sa)
                .then_with(|| a.name.cmp(&b.name))
                .then_with(|| b.version.cmp(&a.version))
        });
        scored.truncate(q.limit.clamp(1, MAX_RESULTS));
        Ok(scored
            .into_iter()
            .map(|(score, e, f, bm25)| LocalHit {
                score,
                explain: rank::explain(&weights, &f, bm25),
                features: f,
                entry: e.clone(),
            })
            .collect())
    }
}

/// The indexer thread's state.
struct Indexer<'a> {
    svc: &'a SearchService,
    node: &'a Node,
    /// Keys of every document in the index.
    keys: HashSet<u64>,
    strings: catalog::Interner,
}

impl Indexer<'_> {
    fn run(&mut self, rx: mpsc::Receiver<Change>, initial: u64) {
        let started = std::time::Instant::now();
        match self.full_load() {
            Ok(n) => tracing::info!(
                releases = n,
                ms = started.elapsed().as_millis() as u64,
                rebuilt = self.svc.rebuilt,
                "search index ready"
            ),
            Err(e) => tracing::error!(error = %e, "loading the search catalog failed; search may miss releases"),
        }
        crate::memory::release_freed();
        let mut applied = initial;
        self.svc.applied.send_replace(applied);
        let mut committed = std::time::Instant::now();
        while let Ok(first) = rx.recv() {
            self.node.bulk.wait_idle(BULK_PAUSE);
            if let Some(rest) = COMMIT_GAP.checked_sub(committed.elapsed()) {
                std::thread::sleep(rest);
            }
            let mut batch = vec![first];
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(c) => batch.push(c),
                    Err(_) => break,
                }
            }
            applied += batch.len() as u64;
            if let Err(e) = self.apply(batch) {
                tracing::warn!(error = %e, "search index update failed");
            }
            committed = std::time::Instant::now();
            self.svc.applied.send_replace(applied);
        }
    }

    /// Loads every release into the catalog and adds what the index lacks.
    fn full_load(&mut self) -> Result<usize, IndexError> {
        self.keys = self.svc.index.keys()?;
        let names = self.node.store.package_names(None).map_err(store_err)?;
        let mut docs = Vec::new();
        let mut live = HashSet::new();
        for name in &names {
            let entries = self.package(name, &mut docs)?;
            live.extend(entries.iter().map(|e| e.key));
            self.install(name, entries)?;
            if docs.len() >= BATCH {
                self.svc.index.add(&std::mem::take(&mut docs))?;
            }
        }
        self.svc.index.add(&docs)?;
        // Documents of records the store does not hold (a store restored
        // from an older copy) would only be filtered out at every query.
        let stale: Vec<u64> = self.keys.difference(&live).copied().collect();
        if !stale.is_empty() {
            self.svc.index.delete(&stale)?;
            for k in &stale {
                self.keys.remove(k);
            }
        }
        self.svc.index.commit()?;
        Ok(live.len())
    }

    fn apply(&mut self, batch: Vec<Change>) -> Result<(), IndexError> {
        let mut names: HashSet<String> = HashSet::new();
        let unique: HashSet<Change> = batch.into_iter().collect();
        for c in unique {
            match c {
                Change::Package(n) => {
                    names.insert(n);
                }
                Change::Namespace(ns) => {
                    names.extend(self.node.store.package_names(Some(&ns)).map_err(store_err)?);
                }
                Change::Status(rid) => {
                    let known = self.svc.catalog.read().entry_by_rid(&rid).map(|e| e.name.to_string());
                    match known {
                        Some(n) => {
                            names.insert(n);
                        }
                        None => {
                            if let Ok(Some(r)) = self.node.store.record(&rid)
                                && let Ok(rel) = r.unchecked_record::<pb::Release>()
                            {
                                names.insert(rel.name);
                            }
                        }
                    }
                }
                Change::Members => {
                    names.extend(self.node.store.package_names(None).map_err(store_err)?);
                }
            }
        }
        let mut docs = Vec::new();
        for name in &names {
            let entries = self.package(name, &mut docs)?;
            self.install(name, entries)?;
        }
        if !docs.is_empty() {
            self.svc.index.add(&docs)?;
            self.svc.index.commit()?;
        }
        Ok(())
    }

    fn install(&self, name: &str, entries: Vec<Entry>) -> Result<(), IndexError> {
        let mut c = self.svc.catalog.write();
        for k in c.replace_package(name, entries) {
            tracing::warn!(
                package = name,
                key = k,
                "two release records share a search key; one is not searchable"
            );
        }
        Ok(())
    }

    /// Reads package `name` from the store: its catalog entries, and the
    /// documents of records the index lacks (appended to `docs`).
    fn package(&mut self, name: &str, docs: &mut Vec<DocText>) -> Result<Vec<Entry>, IndexError> {
        let rows = self.node.store.package_rows(name).map_err(store_err)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let key = doc_key(&row.record_id);
            if self.keys.insert(key) {
                let r = &row.release;
                docs.push(DocText {
                    key,
                    name: r.name.clone(),
                    keywords: r.keywords.clone(),
                    description: r.description.clone(),
                    category: r.category.clone(),
                });
            }
            out.push(self.entry(row));
        }
        Ok(out)
    }

    fn entry(&mut self, row: PackageRow) -> Entry {
        let r = &row.release;
        let hash = ContentHash::from_slice(&r.content_hash).unwrap_or(ContentHash([0; 32]));
        let (accepted, attesters, kinds) = if row.visible {
            let entry = ReleaseEntry {
                record_id: row.record_id,
                publisher: PublicKey::from_slice(row.envelope.claimed_signer()).unwrap_or(PublicKey([0; 32])),
                envelope: row.envelope.clone(),
                release: r.clone(),
                yanked: row.yanked,
                conflict: row.conflict,
            };
            let accepted = self.node.is_accepted(&entry);
            let (n, kinds) = self.attestation_signal(r);
            (accepted, n, kinds)
        } else {
            (false, 0, 0)
        };
        let q = r.quality.as_ref();
        let tier = q.map(|q| q.tier.as_str()).unwrap_or_default();
        let facets = self.strings.facets(&r.category, &r.license, tier, spdx_ids);
        let entry = Entry {
            key: doc_key(&row.record_id),
            rid: row.record_id,
            name: Arc::from(r.name.as_str()),
            version: semver::Version::parse(&r.version).unwrap_or(semver::Version::new(0, 0, 0)),
            description: r.description.as_str().into(),
            facets,
            hash,
            quality: q.map(|q| q.score).unwrap_or(0),
            published_ms: recency_time(
                r.published_at_ms,
                self.node.witnessed_at(&row.record_id),
                crate::packing::now_ms(),
            ),
            visible: row.visible,
            yanked: row.yanked,
            accepted,
            org: r.visibility == pb::Visibility::Org as i32,
            attesters,
            kinds,
            installs: 0,
            failed_installs: 0,
            signals: [0.0; FEATURES],
        };
        rank::with_signals(entry, crate::packing::now_ms())
    }

    /// Distinct members with a current passing attestation, and the kinds
    /// those attest. Current: the latest by each attester for each kind.
    fn attestation_signal(&self, r: &pb::Release) -> (u32, u16) {
        let Ok(all) = self.node.attestation_entries(r) else {
            return (0, 0);
        };
        // (attester, kind) -> (time, id, pass) of the latest.
        type Latest<'a> = HashMap<([u8; 32], &'a str), (u64, [u8; 32], bool)>;
        let mut latest: Latest = HashMap::new();
        for a in &all {
            let slot = latest
                .entry((a.attester, a.kind.as_str()))
                .or_insert((0, [0; 32], false));
            if (a.time_ms, a.id) >= (slot.0, slot.1) {
                *slot = (a.time_ms, a.id, a.pass);
            }
        }
        let mut attesters = HashSet::new();
        let mut kinds = 0u16;
        for ((attester, kind), (_, _, pass)) in latest {
            if pass && self.node.role_of(&PublicKey(attester)).is_some() {
                attesters.insert(attester);
                kinds |= kind_bit(kind).unwrap_or(0);
            }
        }
        (attesters.len() as u32, kinds)
    }
}

fn store_err(e: StoreError) -> IndexError {
    IndexError::Other(e.to_string())
}

/// The SPDX ids named by a license expression, lowercase (what `--license`
/// matches); the whole expression when it does not parse.
pub fn spdx_ids(expr: &str) -> Vec<String> {
    match spdx::Expression::parse(expr) {
        Ok(e) => e
            .requirements()
            .map(|r| r.req.license.to_string().to_ascii_lowercase())
            .collect(),
        Err(_) => vec![expr.to_ascii_lowercase()],
    }
}

/// The time ranking recency counts from: the publisher's date, but never
/// later than witnesses saw the release (or than now, while none has), so
/// a release dated in the future cannot keep full recency forever.
fn recency_time(published_ms: u64, witnessed_ms: Option<u64>, now_ms: u64) -> u64 {
    published_ms.min(witnessed_ms.unwrap_or(now_ms))
}

#[cfg(test)]
mod recency_tests {
    #[test]
    fn a_future_date_is_capped_at_witnessed_time() {
        let now = 1_700_000_000_000;
        assert_eq!(super::recency_time(4_102_444_800_000, Some(now - 5), now), now - 5);
        assert_eq!(super::recency_time(4_102_444_800_000, None, now), now);
        assert_eq!(super::recency_time(now - 1_000, Some(now), now), now - 1_000);
    }
}
