//! Search measurements for `scripts/bench`, each beside a baseline from the
//! same run:
//! (k) search quality: mean NDCG@10 over the 100 labelled queries on the
//!     10,000-pack generated catalog, overall and per query kind, beside a
//!     trivial ranker (packs with a query word in the name, by quality);
//! (l) local search latency on a catalog of ~100,000 releases, in-process and
//!     through the HTTP API of a daemon (`peers=local`, and the default
//!     `peers=lacking`), beside the bare tantivy index over the same texts
//!     (no catalog) and HTTP round trips (a 404, `/v1/status`);
//! (m) fan-out search across a 10-process testnet (`peers=all`), beside the
//!     same query with `peers=local`, counting partial answers;
//! (n) index build throughput: the initial load of that catalog from sled
//!     into an empty index, and an incremental batch of ~5,000 releases,
//!     beside the raw ingest rate of a same-size batch without search and a
//!     bare tantivy build of the same texts;
//! (o) the daemon's RSS with that catalog, beside its RSS on an empty home;
//! (p) the federated learning harness (`learn::sim`) and its floors.
//!
//! The in-process parts of (l) and (n) run after the daemon of (l)/(o) has
//! stopped, on the same home (sled allows one process at a time) with a
//! fresh index directory, so (n)'s initial load starts from nothing.
//! PACKFED_BENCH_QUICK=1 shrinks every size (smoke runs);
//! PACKFED_BENCH_VERBOSE=1 prints (k)'s per-query NDCG to stderr;
//! PACKFED_BENCH_ONLY=kl runs only those rows (default: k..p).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use packfed_node::config::Home;
use packfed_node::core::Channel;
use packfed_node::node::Ingested;
use packfed_node::node::Node;
use packfed_node::search::catalog::Filters;
use packfed_node::search::index::{DocText, TextIndex};
use packfed_node::search::{LocalQuery, SearchService};
use packfed_protocol::{FederationId, KeyPair, Signed, pb};
use packfed_testnet::catalog::{self, PackSpec, SEARCH_QUALITY_PACKAGES, SEARCH_QUALITY_SEED};
use packfed_testnet::timing::{dur, p50_p99, pct};
use packfed_testnet::{Federation, TestNode, make_pack, wait_for};

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_packfed"))
}

/// One table row: letter, measurement, result, baseline, floor.
struct Row(char, String, String, String, String);

fn per_sec(n: usize, d: Duration) -> String {
    format!("{:.0}/s", n as f64 / d.as_secs_f64().max(1e-9))
}

fn check(ok: bool) -> &'static str {
    if ok { "✓" } else { "✗" }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

// ---------------------------------------------------------------------------
// HTTP

/// One HTTP GET on a node's API (new connection): status code and body.
fn http_get(api: &str, path: &str) -> Option<(u16, String)> {
    let mut c = std::net::TcpStream::connect(api).ok()?;
    c.set_nodelay(true).ok()?;
    write!(c, "GET {path} HTTP/1.1\r\nHost: {api}\r\nConnection: close\r\n\r\n").ok()?;
    let mut s = String::new();
    c.read_to_string(&mut s).ok()?;
    let code = s.get(9..12)?.parse().ok()?;
    let body = s[s.find("\r\n\r\n")? + 4..].to_string();
    Some((code, body))
}

fn get_json(api: &str, path: &str) -> Option<serde_json::Value> {
    let (code, body) = http_get(api, path)?;
    if code != 200 {
        return None;
    }
    serde_json::from_str(&body).ok()
}

/// Percent-encodes a query parameter.
fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn search_path(q: &str, peers: &str, limit: usize) -> String {
    format!("/v1/search?q={}&limit={limit}&peers={peers}&timeout_ms=1000", enc(q))
}

/// Times `n` HTTP searches (after `warm` untimed ones), cycling `queries`.
fn time_http_searches(api: &str, peers: &str, queries: &[String], warm: usize, n: usize) -> Vec<Duration> {
    for q in queries.iter().cycle().take(warm) {
        get_json(api, &search_path(q, peers, 10)).expect("a search answer");
    }
    let mut samples: Vec<Duration> = queries
        .iter()
        .cycle()
        .take(n)
        .map(|q| {
            let path = search_path(q, peers, 10);
            let t = Instant::now();
            let (code, body) = http_get(api, &path).expect("a search answer");
            let took = t.elapsed();
            assert_eq!(code, 200, "search {q:?}: {body}");
            took
        })
        .collect();
    samples.sort();
    samples
}

/// Round trips of `GET path` (any status).
fn rtts(api: &str, path: &str, n: usize) -> Vec<Duration> {
    let mut rtt: Vec<Duration> = (0..n)
        .map(|_| {
            let t = Instant::now();
            http_get(api, path).expect("an HTTP answer");
            t.elapsed()
        })
        .collect();
    rtt.sort();
    rtt
}

/// VmRSS and VmHWM of a process, KiB.
fn rss_kib(pid: u32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Resident memory by kind (`/proc/PID/smaps_rollup`), for PACKFED_BENCH_VERBOSE.
fn memory_breakdown(pid: u32) -> String {
    let s = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    s.lines()
        .filter(|l| {
            ["Rss:", "Anonymous:", "Pss_Anon:", "Pss_File:"]
                .iter()
                .any(|k| l.starts_with(k))
        })
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join(", ")
}

fn mb(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

// ---------------------------------------------------------------------------
// In-process search

/// Opens the node on `home` and a search service over a fresh index in
/// `index`, and starts it; returns them and the time from start until the
/// catalog is loaded and indexed.
fn start_service(rt: &tokio::runtime::Runtime, home: &Path, index: &Path) -> (Arc<Node>, Arc<SearchService>, Duration) {
    let node = Arc::new(
        Node::open(Home {
            root: home.to_path_buf(),
        })
        .expect("open the node"),
    );
    let svc = open_service(index);
    let t = Instant::now();
    svc.start(node.clone()).expect("start the search service");
    assert!(
        rt.block_on(svc.caught_up(Duration::from_secs(1800))),
        "the search service did not load the catalog"
    );
    (node, svc, t.elapsed())
}

fn open_service(index: &Path) -> Arc<SearchService> {
    let _ = std::fs::remove_dir_all(index);
    Arc::new(SearchService::open(index).expect("open the search index"))
}

fn local_query(text: &str) -> LocalQuery {
    LocalQuery {
        text: text.to_string(),
        filters: Filters::default(),
        limit: 10,
    }
}

// ---------------------------------------------------------------------------
// (k)

fn words(s: &str) -> Vec<String> {
    s.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| w.to_ascii_lowercase())
        .collect()
}

/// The trivial ranker: packs with any query word among their name's words,
/// best quality first.
fn trivial_rank(specs: &[PackSpec], name_words: &[BTreeSet<String>], query: &str) -> Vec<String> {
    let q = words(query);
    let mut hits: Vec<&PackSpec> = specs
        .iter()
        .zip(name_words)
        .filter(|(_, nw)| q.iter().any(|w| nw.contains(w)))
        .map(|(s, _)| s)
        .collect();
    hits.sort_by(|a, b| b.quality.cmp(&a.quality).then_with(|| a.name.cmp(&b.name)));
    hits.into_iter().take(10).map(|s| s.name.clone()).collect()
}

fn bench_k(rows: &mut Vec<Row>, rt: &tokio::runtime::Runtime) {
    let tmp = tempfile::tempdir().expect("a temp dir");
    let fed = Federation::empty(&bin(), tmp.path(), 1).expect("a genesis");
    let home = fed.init_home("k", "public", None, &[]).expect("a home");
    let specs = catalog::generate(SEARCH_QUALITY_PACKAGES, SEARCH_QUALITY_SEED);
    packfed_testnet::preload_catalog(&home, &specs).expect("preload the catalog");
    let (_node, svc, _) = start_service(rt, &home, &tmp.path().join("k-index"));
    assert_eq!(
        svc.stats().catalog,
        specs.len() as u64,
        "every release is in the catalog"
    );

    let name_words: Vec<BTreeSet<String>> = specs.iter().map(|s| words(&s.name).into_iter().collect()).collect();
    let queries = catalog::labelled_queries();
    let now = now_ms();
    let verbose = std::env::var_os("PACKFED_BENCH_VERBOSE").is_some();
    // kind -> (sum engine, sum trivial, queries)
    let mut kinds: BTreeMap<String, (f64, f64, usize)> = BTreeMap::new();
    let (mut total, mut total_base, mut empty) = (0.0, 0.0, 0);
    for q in &queries {
        let hits = svc.search(&local_query(&q.query), now).expect("search");
        let ranked: Vec<String> = hits.iter().map(|h| h.entry.name.to_string()).collect();
        empty += usize::from(ranked.is_empty());
        let ndcg = catalog::ndcg_at(10, &ranked, &q.relevant);
        let base = catalog::ndcg_at(10, &trivial_rank(&specs, &name_words, &q.query), &q.relevant);
        if verbose {
            eprintln!(
                "(k) {:<14} {ndcg:.3} (trivial {base:.3}) {:?} -> {:?}",
                q.kind,
                q.query,
                &ranked[..ranked.len().min(3)]
            );
        }
        let k = kinds.entry(q.kind.clone()).or_default();
        k.0 += ndcg;
        k.1 += base;
        k.2 += 1;
        total += ndcg;
        total_base += base;
    }
    let n = queries.len().max(1) as f64;
    let per_kind = |engine: bool| {
        kinds
            .iter()
            .map(|(kind, (e, b, c))| format!("{kind} {:.3}", if engine { e } else { b } / *c as f64))
            .collect::<Vec<_>>()
            .join(", ")
    };
    rows.push(Row(
        'k',
        format!(
            "(k) search quality, mean NDCG@10 over {} labelled queries, {} packs",
            queries.len(),
            specs.len()
        ),
        format!(
            "**{:.3}** ({}; {empty} queries without results)",
            total / n,
            per_kind(true)
        ),
        format!("name-word match by quality {:.3} ({})", total_base / n, per_kind(false)),
        "none (reported)".into(),
    ));
}

// ---------------------------------------------------------------------------
// (l), (n), (o)

/// A namespace claim per namespace and a release per spec, signed by a fresh
/// key, namespaces prefixed with `prefix` (so they are new to the store).
/// Returns the records, the number of claims, and the last release's name.
/// The name a release of `signed_batch(.., prefix, ..)` is published under.
fn batch_name(prefix: &str, name: &str) -> String {
    let (ns, short) = name.split_once('/').expect("namespace/name");
    let ns: String = format!("{prefix}{ns}").chars().take(64).collect();
    format!("{}/{short}", ns.trim_end_matches('-'))
}

fn signed_batch(specs: &[PackSpec], prefix: &str, fed: &FederationId) -> (Vec<Vec<u8>>, usize, String) {
    let key = KeyPair::generate().expect("a key");
    let rename = |name: &str| batch_name(prefix, name);
    let namespaces: BTreeSet<String> = specs
        .iter()
        .map(|s| rename(&s.name).split('/').next().unwrap_or_default().to_string())
        .collect();
    let mut out: Vec<Vec<u8>> = namespaces
        .iter()
        .map(|ns| {
            let c = pb::NamespaceClaim {
                namespace: ns.clone(),
                claimed_at_ms: 1,
            };
            Signed::sign(&c, &key, fed).encoded().to_vec()
        })
        .collect();
    let now = now_ms();
    let mut last = String::new();
    for (i, s) in specs.iter().enumerate() {
        let name = rename(&s.name);
        last.clone_from(&name);
        let r = s.release(&name, now - (specs.len() - i) as u64);
        out.push(Signed::sign(&r, &key, fed).encoded().to_vec());
    }
    (out, namespaces.len(), last)
}

/// Copies the (stopped) node's home to `dir`, ingests `specs` into the copy
/// in-process and saves its registry document, then starts a daemon on it
/// and runs `timed` searches; returns its VmRSS and VmHWM.
fn grown_restart(home: &Path, dir: &Path, specs: &[PackSpec], queries: &[String], timed: usize) -> (u64, u64) {
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(home)
        .arg(dir)
        .status()
        .expect("run cp");
    assert!(copied.success(), "copy the home");
    let root = Home {
        root: dir.to_path_buf(),
    };
    let expected = {
        let node = Node::open(root).expect("open the copy");
        let before = node.store.release_count() as u64;
        let (batch, claims, _) = signed_batch(specs, "bc-", node.federation());
        ingest_all(&node, &batch);
        node.checkpoint_now();
        node.save_replica().expect("save the registry document");
        before + (batch.len() - claims) as u64
    };
    let d = TestNode::start(&bin(), dir).expect("start the grown copy");
    let pid = d.child.as_ref().expect("a child").id();
    wait_for(Duration::from_secs(600), "the grown copy's catalog", || {
        let s = &get_json(&d.api, "/v1/status")?["search"];
        (s["catalog"].as_u64()? >= expected).then_some(())
    })
    .expect("the grown copy loads its catalog");
    let _ = time_http_searches(&d.api, "local", queries, 0, timed);
    rss_kib(pid)
}

fn ingest_all(node: &Node, records: &[Vec<u8>]) {
    for r in records {
        if let Ingested::Invalid(e) = node.ingest(r, Channel::Public) {
            panic!("a bench record was refused: {e}");
        }
    }
}

/// What the daemon part of (l)/(o) measured.
struct Http {
    local: Vec<Duration>,
    lacking: Vec<Duration>,
    status: Vec<Duration>,
    not_found: Vec<Duration>,
    rss: (u64, u64),
    /// RSS and peak of the same node restarted (index and registry file present).
    restarted: (u64, u64),
    /// RSS and peak of a copy restarted after it took in 1,000 more releases
    /// (measured for (o) only).
    grown: Option<(u64, u64)>,
    empty_rss: (u64, u64),
}

struct Lno {
    quick: bool,
    packages: usize,
    want_l: bool,
    want_n: bool,
    want_o: bool,
}

fn bench_lno(rows: &mut Vec<Row>, rt: &tokio::runtime::Runtime, cfg: Lno) {
    const VERSIONS: usize = 3;
    let extra_packages = if cfg.quick { 500 } else { 1667 };
    let tmp = tempfile::tempdir().expect("a temp dir");
    let fed = Federation::empty(&bin(), tmp.path(), 1).expect("a genesis");
    let home = fed.init_home("big", "public", None, &[]).expect("a home");
    let all = catalog::generate_releases(cfg.packages + 2 * extra_packages, VERSIONS, SEARCH_QUALITY_SEED);
    let n = cfg.packages * VERSIONS;
    let specs = &all[..n];
    let t = Instant::now();
    packfed_testnet::preload_catalog(&home, specs).expect("preload the catalog");
    let preload = t.elapsed();
    let queries: Vec<String> = catalog::labelled_queries().into_iter().map(|q| q.query).collect();
    let timed = if cfg.quick { 1_000 } else { 5_000 };
    let verbose = std::env::var_os("PACKFED_BENCH_VERBOSE").is_some();

    // The daemon on the preloaded home: HTTP latency and RSS.
    let mut http = None;
    let mut daemon_load = Duration::ZERO;
    if cfg.want_l || cfg.want_o {
        let start = Instant::now();
        let mut d = TestNode::start(&bin(), &home).expect("start the daemon");
        let pid = d.child.as_ref().expect("a child").id();
        let api = d.api.clone();
        if verbose {
            eprintln!("(o) daemon up: {}", memory_breakdown(pid));
        }
        d.wait_indexed(n as u64, Duration::from_secs(1800))
            .expect("the daemon loads the catalog");
        daemon_load = start.elapsed();
        if verbose {
            eprintln!("(o) catalog loaded: {}", memory_breakdown(pid));
            let log = std::fs::read_to_string(home.join("node.log")).unwrap_or_default();
            for l in log.lines().take(30) {
                eprintln!("(o) node.log: {l}");
            }
        }
        let samples = time_http_searches(&api, "local", &queries, 200, timed);
        if verbose {
            eprintln!("(o) after {timed} local queries: {}", memory_breakdown(pid));
            let _ = time_http_searches(&api, "local", &queries, 0, timed);
            eprintln!("(o) after {} local queries: {}", 2 * timed, memory_breakdown(pid));
        }
        // The default fan-out (`lacking`), with no peer connected: only the
        // choice of peers differs from `local`.
        let lacking = time_http_searches(&api, "lacking", &queries, 20, timed / 5);
        let rtt = rtts(&api, "/v1/status", 300);
        let rtt404 = rtts(&api, "/v1/no-such-route", 300);
        let (rss, hwm) = rss_kib(pid);
        if verbose {
            eprintln!("(o) after the queries: {}", memory_breakdown(pid));
        }
        d.stop().expect("stop the daemon");

        // The same node restarted: the index and registry file exist, which
        // is how a node runs on every start but its first.
        let d = TestNode::start(&bin(), &home).expect("restart the daemon");
        let rpid = d.child.as_ref().expect("a child").id();
        wait_for(Duration::from_secs(600), "the restarted daemon's catalog", || {
            let s = &get_json(&d.api, "/v1/status")?["search"];
            (s["catalog"].as_u64()? >= n as u64).then_some(())
        })
        .expect("the restarted daemon loads the catalog");
        let _ = time_http_searches(&d.api, "local", &queries, 0, timed);
        let restarted = rss_kib(rpid);
        if verbose {
            eprintln!("(o) restarted, after {timed} queries: {}", memory_breakdown(rpid));
        }
        drop(d);

        // A copy restarted after it took in more releases: its registry
        // file is now a snapshot followed by an incremental piece, which is
        // how a running node's file looks between snapshots.
        let grown = cfg
            .want_o
            .then(|| grown_restart(&home, &tmp.path().join("grown"), &all[n..n + 1_000], &queries, timed));
        if let (true, Some((rss, hwm))) = (verbose, grown) {
            eprintln!("(o) grown copy restarted: {rss} / {hwm}");
        }

        // Baseline: the same daemon on an empty home, same queries.
        let empty_home = fed.init_home("empty", "public", None, &[]).expect("a home");
        let e = TestNode::start(&bin(), &empty_home).expect("start the empty daemon");
        let epid = e.child.as_ref().expect("a child").id();
        wait_for(Duration::from_secs(60), "the empty daemon's search", || {
            get_json(&e.api, "/v1/status")?["search"]["catalog"].as_u64()
        })
        .expect("the empty daemon's search runs");
        let _ = time_http_searches(&e.api, "local", &queries, 200, timed.min(1_000));
        let (erss, ehwm) = rss_kib(epid);
        drop(e);
        http = Some(Http {
            local: samples,
            lacking,
            status: rtt,
            not_found: rtt404,
            rss: (rss, hwm),
            restarted,
            grown,
            empty_rss: (erss, ehwm),
        });
    }

    // In-process, on the same home (daemon stopped), fresh index dir.
    let me = std::process::id();
    let rss_before_open = rss_kib(me).0;
    let t = Instant::now();
    let node = Arc::new(
        Node::open(Home {
            root: home.to_path_buf(),
        })
        .expect("open the node"),
    );
    let open_time = t.elapsed();
    let fid = *node.federation();
    let extra = &all[n..];
    let (batch_a, claims_a, _) = signed_batch(&extra[..extra.len() / 2], "ba-", &fid);
    let (batch_b, claims_b, probe_name) = signed_batch(&extra[extra.len() / 2..], "bb-", &fid);
    // Raw ingest rate, no search service.
    let t = Instant::now();
    ingest_all(&node, &batch_a);
    let raw_a = t.elapsed();
    let rss_opened = rss_kib(me).0;
    let svc = open_service(&tmp.path().join("inproc-index"));
    let t = Instant::now();
    svc.start(node.clone()).expect("start the search service");
    assert!(
        rt.block_on(svc.caught_up(Duration::from_secs(1800))),
        "the search service did not load the catalog"
    );
    let initial = t.elapsed();
    if verbose {
        eprintln!(
            "(o) bench process RSS: before Node::open {:.0} MB, after open + batch A {:.0} MB, after the search load {:.0} MB",
            mb(rss_before_open),
            mb(rss_opened),
            mb(rss_kib(me).0)
        );
    }
    let loaded = svc.stats().catalog as usize;
    assert_eq!(loaded, n + batch_a.len() - claims_a, "every release is in the catalog");

    // (l) in-process latency.
    let now = now_ms();
    for q in queries.iter().cycle().take(200) {
        svc.search(&local_query(q), now).expect("search");
    }
    let mut inproc: Vec<Duration> = queries
        .iter()
        .cycle()
        .take(timed)
        .map(|q| {
            let query = local_query(q);
            let t = Instant::now();
            let hits = svc.search(&query, now).expect("search");
            let took = t.elapsed();
            std::hint::black_box(hits);
            took
        })
        .collect();
    // Baselines: the bare tantivy index (same analyzers and query shape)
    // over the same texts, built in one go and queried without the catalog.
    let bare = TextIndex::open(&tmp.path().join("bare-index")).expect("a bare index").0;
    // The service's index also holds batch A: so does this one.
    let batch_a_specs = &extra[..extra.len() / 2];
    let docs: Vec<DocText> = specs
        .iter()
        .map(|s| (s, s.name.clone()))
        .chain(batch_a_specs.iter().map(|s| (s, batch_name("ba-", &s.name))))
        .enumerate()
        .map(|(i, (s, name))| DocText {
            key: i as u64,
            name,
            keywords: s.keywords.clone(),
            description: s.description.clone(),
            category: s.category.clone(),
        })
        .collect();
    let t = Instant::now();
    for chunk in docs.chunks(20_000) {
        bare.add(chunk).expect("add to the bare index");
    }
    bare.commit().expect("commit the bare index");
    let bare_build = t.elapsed();
    drop(docs);
    let parsed: Vec<_> = queries.iter().map(|q| bare.parse(q)).collect();
    for q in parsed.iter().cycle().take(200) {
        bare.candidates(q, 256, |_| |_, s| Some(s)).expect("bare search");
    }
    let mut bare_lat: Vec<Duration> = queries
        .iter()
        .cycle()
        .take(timed)
        .map(|q| {
            // Parsing is part of a search: time it here too.
            let t = Instant::now();
            let p = bare.parse(q);
            let c = bare.candidates(&p, 256, |_| |_, s| Some(s)).expect("bare search");
            let took = t.elapsed();
            std::hint::black_box(c);
            took
        })
        .collect();
    bare_lat.sort();
    drop(parsed);
    if verbose {
        eprintln!(
            "(l) segments: service index {}, bare index {}",
            svc.stats().segments,
            bare.segments()
        );
    }

    if verbose {
        // Per query: the slowest of its runs, and one more run.
        let mut per: BTreeMap<&str, Duration> = BTreeMap::new();
        for (q, d) in queries.iter().cycle().zip(&inproc) {
            let e = per.entry(q.as_str()).or_default();
            *e = (*e).max(*d);
        }
        let mut slow: Vec<(&str, Duration)> = per.into_iter().collect();
        slow.sort_by_key(|s| std::cmp::Reverse(s.1));
        let text: Vec<BTreeSet<String>> = specs
            .iter()
            .map(|s| {
                let mut w: BTreeSet<String> = words(&s.name).into_iter().chain(words(&s.description)).collect();
                w.extend(s.keywords.iter().cloned());
                w.insert(s.category.clone());
                w
            })
            .collect();
        for (q, d) in slow.iter().take(15) {
            let t = Instant::now();
            let hits = svc.search(&local_query(q), now).expect("search");
            let took = t.elapsed();
            let qw = words(q);
            let matching = text.iter().filter(|w| qw.iter().all(|x| w.contains(x))).count();
            eprintln!(
                "(l) slowest {q:?}: max {} (again: {}, {} hits; ~{matching} of {n} releases contain every word)",
                dur(*d),
                dur(took),
                hits.len()
            );
        }
    }
    inproc.sort();

    // (n) incremental: ingest with the service running, until searchable.
    let t = Instant::now();
    ingest_all(&node, &batch_b);
    // The daemon's checkpoint tick witnesses the new namespace claims; a
    // release is shown only once its claim is witnessed.
    node.checkpoint_now();
    let ingest_b = t.elapsed();
    assert!(
        rt.block_on(svc.caught_up(Duration::from_secs(600))),
        "the search service did not catch up with the batch"
    );
    let incremental = t.elapsed();
    let inc_releases = batch_b.len() - claims_b;
    assert_eq!(svc.stats().catalog as usize, loaded + inc_releases);
    let probe = svc.search(&local_query(&probe_name), now_ms()).expect("search");
    let found_new = probe.iter().any(|h| *h.entry.name == *probe_name);
    if verbose && !found_new {
        let mut q = local_query(&probe_name);
        q.filters.include_quarantined = true;
        q.filters.all_versions = true;
        let all = svc.search(&q, now_ms()).expect("search");
        eprintln!(
            "(n) {probe_name:?} not found; top hits: {:?}; with every version and quarantined: {:?}",
            probe.iter().map(|h| h.entry.name.to_string()).collect::<Vec<_>>(),
            all.iter()
                .map(|h| format!(
                    "{}@{} visible={} accepted={}",
                    h.entry.name, h.entry.version, h.entry.visible, h.entry.accepted
                ))
                .collect::<Vec<_>>()
        );
    }

    if cfg.want_l {
        let (p50, p99) = (pct(&inproc, 0.5), pct(&inproc, 0.99));
        let (bare50, bare99) = (pct(&bare_lat, 0.5), pct(&bare_lat, 0.99));
        let mut result = format!("in-process p50 **{}** p99 **{}**", dur(p50), dur(p99));
        let mut baseline = format!(
            "bare tantivy index over the in-process catalog's {loaded} texts, same query shape, no catalog: p50 {} p99 {}",
            dur(bare50),
            dur(bare99)
        );
        let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(1e-9);
        let mut floor = format!(
            "in-process p50 < 2 ms {} p99 < 10 ms {}; p50 {:.2}x bare <= 1.2x {}, p99 {:.2}x bare <= 1.5x {}",
            check(p50 < Duration::from_millis(2)),
            check(p99 < Duration::from_millis(10)),
            ratio(p50, bare50),
            check(ratio(p50, bare50) <= 1.2),
            ratio(p99, bare99),
            check(ratio(p99, bare99) <= 1.5)
        );
        if let Some(h) = &http {
            result.push_str(&format!(
                "; HTTP `peers=local` {}; HTTP default `peers=lacking` (no peers) {}",
                p50_p99(&h.local),
                p50_p99(&h.lacking)
            ));
            baseline.push_str(&format!(
                "; HTTP round trip: 404 {}; `/v1/status` {}",
                p50_p99(&h.not_found),
                p50_p99(&h.status)
            ));
            floor.push_str(" (HTTP: none)");
        }
        rows.push(Row(
            'l',
            format!(
                "(l) local search latency, {} releases ({} packages x {VERSIONS}), {timed} queries (100 labelled, cycled), limit 10",
                n,
                cfg.packages
            ),
            result,
            baseline,
            floor,
        ));
    }
    if cfg.want_n {
        rows.push(Row(
            'n',
            format!(
                "(n) index build: initial load of {loaded} releases from sled into an empty index; then {inc_releases} more ingested into the running node"
            ),
            format!(
                "initial **{}** ({:.1} s); incremental **{}** (ingest to searchable {:.2} s, of which ingest and the checkpoint that witnesses its claims {:.2} s){}",
                per_sec(loaded, initial),
                initial.as_secs_f64(),
                per_sec(inc_releases, incremental),
                incremental.as_secs_f64(),
                ingest_b.as_secs_f64(),
                if found_new { "" } else { " — a new release was NOT found" },
            ),
            format!(
                "bare tantivy add+commit of the same {n} texts {}; ingest of a same-size batch without search {} ({} releases); offline sign+ingest preload {}{}",
                per_sec(n, bare_build),
                per_sec(batch_a.len() - claims_a, raw_a),
                batch_a.len() - claims_a,
                per_sec(n, preload),
                if http.is_some() {
                    format!(
                        "; daemon start to {n} loaded {:.1} s (of which Node::open in-process takes {:.1} s)",
                        daemon_load.as_secs_f64(),
                        open_time.as_secs_f64()
                    )
                } else {
                    String::new()
                }
            ),
            "none (reported)".into(),
        ));
    }
    if cfg.want_o
        && let Some(Http {
            rss: (rss, hwm),
            restarted: (rrss, rhwm),
            grown: Some((grss, ghwm)),
            empty_rss: (erss, ehwm),
            ..
        }) = http
    {
        // The floor is on the working set (VmRSS after the queries, first
        // start and restart) and on a restart's peak; the first start's peak
        // includes building the index once and is reported beside.
        rows.push(Row(
            'o',
            format!("(o) daemon RSS with {n} releases loaded and indexed, after {timed} HTTP queries"),
            format!(
                "VmRSS **{:.0} MB** (peak {:.0} MB while building the index); restarted: VmRSS **{:.0} MB**, peak {:.0} MB; restarted after 1,000 more releases (registry file = snapshot + piece): VmRSS **{:.0} MB**, peak {:.0} MB",
                mb(rss),
                mb(hwm),
                mb(rrss),
                mb(rhwm),
                mb(grss),
                mb(ghwm)
            ),
            format!("empty home: VmRSS {:.0} MB, VmHWM {:.0} MB", mb(erss), mb(ehwm)),
            format!(
                "< 300 MB {}; working set < 150 MB {}",
                check(mb(rss.max(rrss).max(rhwm).max(grss).max(ghwm)) < 300.0),
                check(mb(rss.max(rrss).max(grss)) < 150.0)
            ),
        ));
    }
}

// ---------------------------------------------------------------------------
// (m)

fn bench_m(rows: &mut Vec<Row>, nodes: usize, samples: usize) {
    let tmp = tempfile::tempdir().expect("a temp dir");
    let roles: Vec<&str> = (0..nodes).map(|_| "public").collect();
    let fed = Federation::up(&bin(), tmp.path(), &roles).expect("a testnet");
    let packs = 5;
    for i in 0..packs {
        let dir = tmp.path().join(format!("p{i}"));
        make_pack(&dir, &format!("bench/search-{i}"), "1.0.0", &[], 0).expect("a pack");
        fed.nodes[0]
            .json(&["publish", &dir.to_string_lossy(), "--key", "k0"])
            .expect("publish");
    }
    for node in &fed.nodes {
        wait_for(Duration::from_secs(60), "every node to find the packs", || {
            let v = get_json(&node.api, &search_path("bench search", "local", 20))?;
            (v["results"].as_array()?.len() >= packs).then_some(())
        })
        .expect("the packs reach every node");
    }
    let queries: Vec<String> = [
        "bench search",
        "search-3",
        "templates",
        "bench/search-1",
        "generated tests",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let api = fed.nodes[0].api.clone();
    let (mut all, mut local) = (Vec::new(), Vec::new());
    let (mut partial, mut asked, mut results) = (0usize, 0usize, 0usize);
    // Peers answer at most 20 searches/s from one peer (burst 40): pace at
    // ~16/s so the limiter never refuses.
    let pace = Duration::from_millis(60);
    for (i, q) in queries.iter().cycle().take(samples + 10).enumerate() {
        let started = Instant::now();
        let t = Instant::now();
        let (code, body) = http_get(&api, &search_path(q, "all", 10)).expect("a search answer");
        let took = t.elapsed();
        assert_eq!(code, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("search JSON");
        let t = Instant::now();
        let (code, _) = http_get(&api, &search_path(q, "local", 10)).expect("a search answer");
        let took_local = t.elapsed();
        assert_eq!(code, 200);
        if i >= 10 {
            all.push(took);
            local.push(took_local);
            partial += usize::from(v["partial"].as_bool() == Some(true));
            asked += v["peers_queried"].as_array().map_or(0, |a| a.len());
            results += v["results"].as_array().map_or(0, |a| a.len());
        }
        std::thread::sleep(pace.saturating_sub(started.elapsed()));
    }
    all.sort();
    local.sort();
    let p99 = pct(&all, 0.99);
    rows.push(Row(
        'm',
        format!(
            "(m) fan-out search from node 0 to every peer (`peers=all`, timeout 1 s), {nodes}-process testnet, {} queries",
            all.len()
        ),
        format!(
            "p50 **{}** p99 **{}**; partial answers {partial}; peers asked {:.1}/query; {:.1} results/query",
            dur(pct(&all, 0.5)),
            dur(p99),
            asked as f64 / all.len().max(1) as f64,
            results as f64 / all.len().max(1) as f64
        ),
        format!(
            "`peers=local` p50 {} p99 {}",
            dur(pct(&local, 0.5)),
            dur(pct(&local, 0.99))
        ),
        format!(
            "p99 < 50 ms {}, 0 partial {}",
            check(p99 < Duration::from_millis(50)),
            check(partial == 0)
        ),
    ));
}

// ---------------------------------------------------------------------------
// (p)

fn bench_p(rows: &mut Vec<Row>, quick: bool) {
    use packfed_node::learn::sim::{SimConfig, run};
    let cfg = if quick {
        SimConfig::small()
    } else {
        SimConfig::default()
    };
    let t = Instant::now();
    let r = run(&cfg);
    let took = t.elapsed();
    rows.push(Row(
        'p',
        format!(
            "(p) federated learning of ranking weights (learn::sim), {} nodes x {} rounds, mean NDCG@10",
            cfg.nodes, cfg.rounds
        ),
        format!(
            "federated **{:.4}**, poisoned (robust) {:.4}, poisoned (plain mean) {:.4}",
            r.federated, r.poisoned_robust, r.poisoned_mean
        ),
        format!(
            "fixed weights {:.4}, alone {:.4}, centralized {:.4}, clean plain mean {:.4} ({:.1} s)",
            r.fixed,
            r.alone,
            r.centralized,
            r.clean_mean,
            took.as_secs_f64()
        ),
        format!(
            "federated > alone {}; >= 0.9 x centralized {}; robust under poison >= 0.95 x federated {}; plain mean degrades {}",
            check(r.federated > r.alone),
            check(r.federated >= 0.9 * r.centralized),
            check(r.poisoned_robust >= 0.95 * r.federated),
            check(r.poisoned_mean < r.clean_mean)
        ),
    ));
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let quick = std::env::var_os("PACKFED_BENCH_QUICK").is_some();
    let only = std::env::var("PACKFED_BENCH_ONLY").unwrap_or_else(|_| "klmnop".into());
    let want = |c: char| only.contains(c);
    let rt = runtime();
    let mut rows = Vec::new();
    if want('p') {
        bench_p(&mut rows, quick);
    }
    if want('k') {
        bench_k(&mut rows, &rt);
    }
    if want('l') || want('n') || want('o') {
        bench_lno(
            &mut rows,
            &rt,
            Lno {
                quick,
                packages: if quick { 3_334 } else { 34_000 },
                want_l: want('l'),
                want_n: want('n'),
                want_o: want('o'),
            },
        );
    }
    if want('m') {
        bench_m(&mut rows, if quick { 4 } else { 10 }, if quick { 60 } else { 400 });
    }
    rows.sort_by_key(|r| r.0);
    println!("| search measurement | result | baseline (same run) | floor |");
    println!("|---|---|---|---|");
    for Row(_, a, b, c, d) in rows {
        println!("| {a} | {b} | {c} | {d} |");
    }
}
