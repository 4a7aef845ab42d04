//! `scripts/bench` runs this: measures the publish pipeline and prints a table
//! with baselines measured in the same run (raw single-core BLAKE3 and a bare
//! sled insert + flush of the same bytes; for the HTTP row, a plain GET on the
//! same server with the same client concurrency).

mod pipeline;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use packfed_node::api::PUBLISH_HEADER;
use packfed_node::store::Store;
use packfed_node::{keys, packing};
use packfed_protocol::{FederationId, KeyPair};
use packfed_testnet::{TestNode, init_single, make_pack};

struct Row {
    what: String,
    ops_per_s: f64,
    mb_per_s: f64,
    baseline: String,
    ratio: String,
}

/// Runs `f` repeatedly for about `budget` (at least `min` times); returns ops/s.
fn rate(budget: Duration, min: u32, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut n = 0u32;
    while n < min || start.elapsed() < budget {
        f();
        n += 1;
    }
    f64::from(n) / start.elapsed().as_secs_f64()
}

/// Measures one in-process publisher; returns the same run's serial sled rate.
fn in_process(rows: &mut Vec<Row>, label: &str, size: usize, budget: Duration, min: u32) -> f64 {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pack");
    make_pack(&dir, "bench/pack", "1.0.0", &[], size).unwrap();
    let bytes = pipeline::archive_bytes(&dir);
    let mb = bytes.len() as f64 / 1e6;

    let store = Store::open(&tmp.path().join("store")).unwrap();
    let fed = FederationId([1; 32]);
    let key = KeyPair::generate().unwrap();
    // Only the pipeline is timed; rewriting pack.toml between publishes is not.
    let mut n = 0u32;
    let mut spent = Duration::ZERO;
    let start = Instant::now();
    while n < min || start.elapsed() < budget {
        pipeline::set_version(&dir, &format!("1.0.{n}"));
        let t = Instant::now();
        pipeline::publish_dir(&store, &fed, &key, &dir);
        spent += t.elapsed();
        n += 1;
    }
    let publish = f64::from(n) / spent.as_secs_f64();

    let hash = rate(budget / 4, min, || {
        std::hint::black_box(blake3::hash(&bytes));
    });
    let db = sled::open(tmp.path().join("bare")).unwrap();
    let tree = db.open_tree("t").unwrap();
    let mut p = 0u64;
    let sled_rate = rate(budget, min, || {
        p += 1;
        pipeline::sled_insert_flush(&tree, &db, p, &bytes);
    });
    rows.push(Row {
        what: format!("publish in-process {label}"),
        ops_per_s: publish,
        mb_per_s: publish * mb,
        baseline: format!("sled insert+flush {:.0}/s {:.0} MB/s", sled_rate, sled_rate * mb),
        ratio: format!("{:.0} % of sled", 100.0 * publish / sled_rate),
    });
    rows.push(Row {
        what: format!("  baseline BLAKE3 1 core {label}"),
        ops_per_s: hash,
        mb_per_s: hash * mb,
        baseline: String::new(),
        ratio: format!("pipeline {:.1} % of it", 100.0 * publish / hash),
    });
    sled_rate
}

/// `writers` threads publish at once into one store, as the API's clients
/// do (sled shares their concurrent flushes). Beside it: the serial sled
/// baseline `serial_sled` from [`in_process`] and, measured here, `writers`
/// threads each doing a bare sled insert + flush. Each thread's rewrite of
/// its pack.toml is inside the timed loop here (a few % of a publish).
fn concurrent(rows: &mut Vec<Row>, label: &str, size: usize, budget: Duration, writers: usize, serial_sled: f64) {
    use std::sync::Barrier;
    use std::sync::atomic::{AtomicU64, Ordering};
    let tmp = tempfile::tempdir().unwrap();
    let dirs: Vec<_> = (0..writers)
        .map(|w| {
            let dir = tmp.path().join(format!("pack{w}"));
            make_pack(&dir, &format!("bench/pack{w}"), "1.0.0", &[], size).unwrap();
            dir
        })
        .collect();
    let bytes = pipeline::archive_bytes(&dirs[0]);
    let mb = bytes.len() as f64 / 1e6;

    // Runs `op(writer, n)` on every writer until `budget` has passed; ops/s.
    let run = |op: &(dyn Fn(usize, u64) + Sync)| {
        let done = AtomicU64::new(0);
        let ready = Barrier::new(writers + 1);
        // The scope ends when every writer has; `start` is when they began.
        let start = std::thread::scope(|s| {
            for w in 0..writers {
                let (done, ready) = (&done, &ready);
                s.spawn(move || {
                    ready.wait();
                    let start = Instant::now();
                    let mut n = 0;
                    while start.elapsed() < budget {
                        op(w, n);
                        n += 1;
                    }
                    done.fetch_add(n, Ordering::Relaxed);
                });
            }
            ready.wait();
            Instant::now()
        });
        done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
    };

    let store = Store::open(&tmp.path().join("store")).unwrap();
    let fed = FederationId([1; 32]);
    let key = KeyPair::generate().unwrap();
    let publish = run(&|w, n| {
        pipeline::set_version(&dirs[w], &format!("1.0.{n}"));
        pipeline::publish_dir(&store, &fed, &key, &dirs[w]);
    });
    let db = sled::open(tmp.path().join("bare")).unwrap();
    let tree = db.open_tree("t").unwrap();
    let sled_rate = run(&|w, n| pipeline::sled_insert_flush(&tree, &db, ((w as u64) << 40) | n, &bytes));
    rows.push(Row {
        what: format!("publish in-process {label}, {writers} publishers"),
        ops_per_s: publish,
        mb_per_s: publish * mb,
        baseline: format!("sled insert+flush: 1 writer {serial_sled:.0}/s, {writers} writers {sled_rate:.0}/s"),
        ratio: format!(
            "{:.0} % of 1 writer, {:.0} % of {writers}",
            100.0 * publish / serial_sled,
            100.0 * publish / sled_rate
        ),
    });
}

/// Publishes prepared 10 KiB packs through the HTTP API with 4 clients.
fn over_http(rows: &mut Vec<Row>, packs: usize) {
    let tmp = tempfile::tempdir().unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_packfed"));
    let home = tmp.path().join("home");
    init_single(bin, &home, "alice").unwrap();
    let node = TestNode::start(bin, &home).unwrap();
    let key = keys::load_key(&packfed_node::config::Home { root: home.clone() }, "alice").unwrap();
    let fed = FederationId::of(&std::fs::read(home.join("genesis.toml")).unwrap());

    // Client side (not timed): pack, assess and sign each release.
    let dir = tmp.path().join("pack");
    make_pack(&dir, "bench/http", "1.0.0", &[], 10 * 1024).unwrap();
    let mut prepared = Vec::with_capacity(packs);
    for i in 0..packs {
        pipeline::set_version(&dir, &format!("1.0.{i}"));
        let p = packing::prepare(&dir, tmp.path()).unwrap();
        let now = packing::now_ms();
        let release = packing::release_record(&p.manifest, &p.summary, &p.quality, None, now);
        let req = packing::sign_publish(&release, &key, &fed, now);
        let header = hex::encode(prost::Message::encode_to_vec(&req.to_pb()));
        prepared.push((header, std::fs::read(p.file.path()).unwrap()));
    }
    let mb = prepared[0].1.len() as f64 / 1e6;
    let token = std::fs::read_to_string(home.join("api-token"))
        .unwrap()
        .trim()
        .to_string();
    let base = format!("http://{}", node.api);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let http = reqwest::Client::new();
    let publish_rate = rt.block_on(async {
        let work = Arc::new(std::sync::Mutex::new(prepared));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let (http, work, base, token) = (http.clone(), work.clone(), base.clone(), token.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    let Some((header, body)) = work.lock().unwrap().pop() else {
                        break;
                    };
                    let r = http
                        .post(format!("{base}/v1/publish"))
                        .bearer_auth(&token)
                        .header(PUBLISH_HEADER, header)
                        .body(body)
                        .send()
                        .await
                        .unwrap();
                    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        packs as f64 / start.elapsed().as_secs_f64()
    });
    // The baseline runs on a settled node: while the search index still
    // works off the publishes, GET rates varied 3x between runs.
    node.wait_indexed(packs as u64, Duration::from_secs(60)).unwrap();
    let get_rate = rt.block_on(async {
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let (http, base) = (http.clone(), base.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..packs / 4 {
                    http.get(format!("{base}/v1/status"))
                        .send()
                        .await
                        .unwrap()
                        .bytes()
                        .await
                        .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        (packs / 4 * 4) as f64 / start.elapsed().as_secs_f64()
    });
    rows.push(Row {
        what: "publish via HTTP API 10KiB, 4 clients".into(),
        ops_per_s: publish_rate,
        mb_per_s: publish_rate * mb,
        baseline: format!("GET /v1/status, 4 clients {get_rate:.0}/s"),
        ratio: format!("{:.1} % of GET rate", 100.0 * publish_rate / get_rate),
    });
    drop(node);
}

fn main() {
    // `cargo bench` passes --bench; criterion-style filters are not used here.
    let quick = std::env::var_os("PACKFED_BENCH_QUICK").is_some();
    let budget = if quick {
        Duration::from_millis(500)
    } else {
        Duration::from_secs(3)
    };
    let mut rows = Vec::new();
    let sled_10k = in_process(&mut rows, "10KiB", 10 * 1024, budget, 20);
    concurrent(&mut rows, "10KiB", 10 * 1024, budget, 4, sled_10k);
    let sled_1m = in_process(&mut rows, "1MiB", 1024 * 1024, budget, 5);
    concurrent(&mut rows, "1MiB", 1024 * 1024, budget, 4, sled_1m);
    in_process(&mut rows, "50MiB", 50 * 1024 * 1024, budget * 2, 3);
    over_http(&mut rows, if quick { 200 } else { 1500 });

    println!("\n| measurement | ops/s | MB/s | baseline (same run) | ratio |");
    println!("|---|---:|---:|---|---|");
    for r in rows {
        println!(
            "| {} | {:.0} | {:.1} | {} | {} |",
            r.what, r.ops_per_s, r.mb_per_s, r.baseline, r.ratio
        );
    }
}
