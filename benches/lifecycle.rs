//! Pack lifecycle measurements for `scripts/bench`, each beside a baseline
//! from the same run:
//! (u) `packfed generate` of a pack with 10 templates into a fresh
//!     directory (the CLI against a daemon: resolve, fetch, verify, render,
//!     write), beside writing the same 10 files' bytes without rendering
//!     (staged, synced, renamed) in-process; floor p50 < 100 ms;
//! (v) `packfed install --dry-run` of a pack with 50 dependencies (the plan),
//!     beside `packfed info` of the same pack (one process, one API call);
//! (w) SPARQL over the catalog graph of ~10,000 releases, in-process: a
//!     simple lookup and a join, beside the equivalent local search of the
//!     same name; floor simple p50 < 20 ms;
//! (x) building that graph at ~10,000 and ~100,000 releases: time, and the
//!     resident memory it adds, beside the search index's initial load.
//!
//! (y) each web UI page served by a daemon holding ~10,000 releases, beside
//!     the JSON API call behind it; floor p50 < 50 ms per page.
//!
//! PACKFED_BENCH_QUICK=1 shrinks every size; PACKFED_BENCH_ONLY=uw runs
//! only those rows (default: u..y).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use packfed_node::config::Home;
use packfed_node::node::Node;
use packfed_node::search::catalog::Filters;
use packfed_node::search::{LocalQuery, SearchService};
use packfed_node::sparql;
use packfed_testnet::catalog;
use packfed_testnet::timing::{dur, p50_p99, pct, samples};
use packfed_testnet::{TestNode, init_single, make_pack, preload_catalog};

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_packfed"))
}

/// One table row: letter, measurement, result, baseline, floor.
struct Row(char, String, String, String, String);

/// This process's resident memory, KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn run_ok(node: &TestNode, args: &[&str]) {
    let out = node.run(args).expect("run packfed");
    assert!(
        out.status.success(),
        "packfed {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------
// (u) and (v): the CLI against a daemon

fn bench_uv(rows: &mut Vec<Row>, quick: bool, want_u: bool, want_v: bool) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    let home = root.join("home");
    init_single(&bin(), &home, "alice").expect("init");
    let node = TestNode::start(&bin(), &home).expect("start");
    let runs = if quick { 5 } else { 30 };

    if want_u {
        let dir = root.join("gen-pack");
        make_pack(&dir, "bench/gen", "1.0.0", &[], 0).expect("pack");
        std::fs::remove_dir_all(dir.join("templates")).expect("clear templates");
        let mut toml = std::fs::read_to_string(dir.join("pack.toml")).expect("manifest");
        toml.push_str("[variables.service]\ntype = \"string\"\ndescription = \"Service name\"\ndefault = \"svc\"\n");
        toml.push_str("[variables.port]\ntype = \"integer\"\ndescription = \"Port\"\ndefault = 8080\n");
        std::fs::write(dir.join("pack.toml"), toml).expect("manifest");
        // Ten templates of ~4 KiB each, loops and conditionals included.
        let body = "// {{ service }} on {{ port }}\n{% for i in range(end=40) %}fn handler_{{ i }}() -> u16 { {{ port }} + {{ i }} }\n{% endfor %}{% if name %}// {{ name | upper }}{% endif %}\n";
        for t in 0..10 {
            let at = dir.join(format!("templates/src/{{{{ service }}}}_{t}.rs.tera"));
            std::fs::create_dir_all(at.parent().expect("parent")).expect("dirs");
            std::fs::write(at, body).expect("template");
        }
        run_ok(&node, &["publish", &dir.to_string_lossy(), "--key", "alice"]);
        let mut rendered: Vec<(String, Vec<u8>)> = Vec::new();
        let cli = samples(runs, |i| {
            let out = root.join(format!("gen-out-{i}"));
            run_ok(
                &node,
                &["generate", "bench/gen", "--to", &out.to_string_lossy(), "--json"],
            );
            if rendered.is_empty() {
                rendered = walk(&out);
            }
        });
        assert_eq!(rendered.len(), 10, "generate wrote {} files", rendered.len());
        let baseline = samples(runs, |i| {
            let out = root.join(format!("plain-out-{i}"));
            let staging = out.join(".staging");
            for (rel, bytes) in &rendered {
                let at = staging.join(rel);
                std::fs::create_dir_all(at.parent().expect("parent")).expect("dirs");
                let mut f = std::fs::File::create(&at).expect("create");
                std::io::Write::write_all(&mut f, bytes).expect("write");
                f.sync_all().expect("sync");
            }
            for (rel, _) in &rendered {
                let dest = out.join(rel);
                std::fs::create_dir_all(dest.parent().expect("parent")).expect("dirs");
                std::fs::rename(staging.join(rel), dest).expect("rename");
            }
        });
        let p50 = pct(&cli, 0.5);
        rows.push(Row(
            'u',
            format!("(u) `packfed generate` of 10 templates (~4 KiB each, {runs} runs; CLI process against a daemon)"),
            p50_p99(&cli),
            format!("same 10 writes without rendering, in-process: {}", p50_p99(&baseline)),
            format!(
                "p50 < 100 ms: {}",
                if p50 < Duration::from_millis(100) {
                    "**met**"
                } else {
                    "**NOT met**"
                }
            ),
        ));
    }

    if want_v {
        let deps: Vec<(String, String)> = (0..50).map(|i| (format!("dep/lib-{i}"), "^1".to_string())).collect();
        for (name, _) in &deps {
            let dir = root.join(name.replace('/', "-"));
            make_pack(&dir, name, "1.0.0", &[], 0).expect("pack");
            run_ok(&node, &["publish", &dir.to_string_lossy(), "--key", "alice"]);
        }
        let app = root.join("app");
        let dep_refs: Vec<(&str, &str)> = deps.iter().map(|(n, r)| (n.as_str(), r.as_str())).collect();
        make_pack(&app, "dep/app", "1.0.0", &dep_refs, 0).expect("pack");
        run_ok(&node, &["publish", &app.to_string_lossy(), "--key", "alice"]);
        let target = root.join("plan-target");
        let plan = samples(runs, |_| {
            run_ok(
                &node,
                &[
                    "install",
                    "dep/app",
                    "--to",
                    &target.to_string_lossy(),
                    "--dry-run",
                    "--json",
                ],
            );
        });
        let info = samples(runs, |_| run_ok(&node, &["info", "dep/app", "--json"]));
        rows.push(Row(
            'v',
            format!("(v) `packfed install --dry-run` of a pack with 50 dependencies ({runs} runs)"),
            p50_p99(&plan),
            format!("`packfed info` of the same pack: {}", p50_p99(&info)),
            "-".into(),
        ));
    }
}

fn walk(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).expect("prefix").to_string_lossy().into_owned();
                out.push((rel, std::fs::read(&p).expect("read")));
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// (w) and (x): the catalog graph, in-process

/// A home holding `packages` generated packs of 2 versions each.
fn catalog_home(root: &Path, name: &str, packages: usize) -> (PathBuf, Vec<catalog::PackSpec>) {
    let home = root.join(name);
    init_single(&bin(), &home, "alice").expect("init");
    let specs = catalog::generate_releases(packages, 2, 7);
    preload_catalog(&home, &specs).expect("preload");
    (home, specs)
}

fn bench_wx(rows: &mut Vec<Row>, quick: bool, want_w: bool, want_x: bool) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let tmp = tempfile::tempdir().expect("tempdir");
    let sizes: &[usize] = if quick { &[500, 2_000] } else { &[5_000, 50_000] };
    for (n, &packages) in sizes.iter().enumerate() {
        let releases = packages * 2;
        if n == 1 && !want_x {
            break;
        }
        let (home, specs) = catalog_home(tmp.path(), &format!("home-{packages}"), packages);
        let node = Arc::new(Node::open(Home { root: home.clone() }).expect("open the node"));
        let before = rss_kib();
        let t = Instant::now();
        let graph = sparql::build(&node, false).expect("build the graph");
        let built = t.elapsed();
        let added = rss_kib().saturating_sub(before);
        let quads = graph.len().unwrap_or(0);

        let index = tmp.path().join(format!("index-{packages}"));
        let svc = Arc::new(SearchService::open(&index).expect("open the index"));
        let t = Instant::now();
        svc.start(node.clone()).expect("start search");
        assert!(rt.block_on(svc.caught_up(Duration::from_secs(1800))), "index load");
        let indexed = t.elapsed();
        if want_x {
            rows.push(Row(
                'x',
                format!(
                    "(x) catalog graph of {releases} releases ({quads} triples): build time, resident memory added"
                ),
                format!("{}, +{:.0} MB", dur(built), added as f64 / 1024.0),
                format!("search index initial load of the same catalog: {}", dur(indexed)),
                "-".into(),
            ));
        }
        if n == 0 && want_w {
            let runs = if quick { 50 } else { 300 };
            let limits = sparql::Limits::default();
            let names: Vec<&str> = specs.iter().step_by(7).map(|s| s.name.as_str()).collect();
            let pf = "PREFIX pf: <https://packfed.dev/ns#>\n";
            let simple = samples(runs, |i| {
                let q = format!(
                    "{pf}SELECT ?id ?tier WHERE {{ ?r pf:id ?id ; pf:tier ?tier ; pf:pack/pf:name \"{}\" }}",
                    names[i % names.len()]
                );
                let a = sparql::run(&graph, &q, sparql::Format::Json, limits).expect("simple query");
                assert!(a.rows > 0, "no rows for {q}");
            });
            let join = samples(runs, |i| {
                let q = format!(
                    "{pf}SELECT DISTINCT ?id WHERE {{ ?a pf:pack/pf:name \"{}\" ; pf:keyword ?k ; pf:category ?c .
                       ?r pf:keyword ?k ; pf:category ?c ; pf:status \"accepted\" ; pf:id ?id }} LIMIT 20",
                    names[i % names.len()]
                );
                sparql::run(&graph, &q, sparql::Format::Json, limits).expect("join query");
            });
            let now = packfed_node::packing::now_ms();
            let search = samples(runs, |i| {
                let q = LocalQuery {
                    text: names[i % names.len()].to_string(),
                    filters: Filters::default(),
                    limit: 10,
                };
                svc.search(&q, now).expect("search");
            });
            let p50 = pct(&simple, 0.5);
            rows.push(Row(
                'w',
                format!("(w) SPARQL over {releases} releases, in-process ({runs} queries each)"),
                format!(
                    "lookup by name: {}; join (same keyword and category, accepted): {}",
                    p50_p99(&simple),
                    p50_p99(&join)
                ),
                format!("local search of the same name: {}", p50_p99(&search)),
                format!(
                    "lookup p50 < 20 ms: {}",
                    if p50 < Duration::from_millis(20) {
                        "**met**"
                    } else {
                        "**NOT met**"
                    }
                ),
            ));
        }
    }
}

// ---------------------------------------------------------------------------
// (y): web UI pages against a daemon

/// One HTTP GET on a new connection; the status code.
fn get(api: &str, path: &str) -> u16 {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(api).expect("connect");
    write!(c, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").expect("write");
    let mut s = String::new();
    c.read_to_string(&mut s).expect("read");
    s.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0)
}

fn bench_y(rows: &mut Vec<Row>, quick: bool) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let packages = if quick { 500 } else { 5_000 };
    let (home, specs) = catalog_home(tmp.path(), "ui-home", packages);
    let node = TestNode::start(&bin(), &home).expect("start");
    let runs = if quick { 20 } else { 100 };
    let name = specs[packages].name.clone();
    let word = name
        .split('/')
        .nth(1)
        .unwrap_or(&name)
        .split('-')
        .next()
        .unwrap_or("api")
        .to_string();
    let pages = [
        (
            "search page",
            format!("/?q={word}"),
            format!("/v1/search?q={word}&peers=local"),
        ),
        ("pack page", format!("/packs/{name}"), format!("/v1/packages/{name}")),
        ("quarantine", "/quarantine".to_string(), "/v1/status".to_string()),
        ("peers", "/peers".to_string(), "/v1/peers".to_string()),
        ("governance", "/governance".to_string(), "/v1/gov/proposals".to_string()),
        ("policy", "/policy".to_string(), "/v1/policy".to_string()),
        ("learning", "/learn".to_string(), "/v1/learn".to_string()),
    ];
    let mut worst = Duration::ZERO;
    let mut parts = Vec::new();
    let mut bases = Vec::new();
    for (label, page, api) in &pages {
        assert_eq!(get(&node.api, page), 200, "{page}");
        assert_eq!(get(&node.api, api), 200, "{api}");
        let p = samples(runs, |_| {
            get(&node.api, page);
        });
        let b = samples(runs, |_| {
            get(&node.api, api);
        });
        worst = worst.max(pct(&p, 0.5));
        parts.push(format!("{label} {}", p50_p99(&p)));
        bases.push(format!("{api} {}", p50_p99(&b)));
    }
    rows.push(Row(
        'y',
        format!(
            "(y) web UI pages over HTTP, {} releases ({runs} requests each)",
            packages * 2
        ),
        parts.join("; "),
        bases.join("; "),
        format!(
            "every page p50 < 50 ms: {}",
            if worst < Duration::from_millis(50) {
                "**met**"
            } else {
                "**NOT met**"
            }
        ),
    ));
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let quick = std::env::var_os("PACKFED_BENCH_QUICK").is_some();
    let only = std::env::var("PACKFED_BENCH_ONLY").unwrap_or_else(|_| "uvwxy".into());
    let want = |c: char| only.contains(c);
    let mut rows = Vec::new();
    if want('u') || want('v') {
        bench_uv(&mut rows, quick, want('u'), want('v'));
    }
    if want('w') || want('x') {
        bench_wx(&mut rows, quick, want('w'), want('x'));
    }
    if want('y') {
        bench_y(&mut rows, quick);
    }
    rows.sort_by_key(|r| r.0);
    println!("| lifecycle measurement | result | baseline (same run) | floor |");
    println!("|---|---|---|---|");
    for Row(_, a, b, c, d) in rows {
        println!("| {a} | {b} | {c} | {d} |");
    }
}
