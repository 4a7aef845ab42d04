//! Federation measurements for `scripts/bench`, each beside a baseline from
//! the same run:
//! (a) publish-to-visible latency on every node of a 10-process testnet;
//! (b) the same in the in-process simulation with 1,000 nodes (testnet::sim);
//! (c) a fresh node's registry sync of 50,000 releases from one peer;
//! (d) a 1 GiB pack transfer between two nodes into the receiver's store,
//!     beside raw loopback TCP and a bare sled write of the same bytes, with
//!     the receiver's peak RSS;
//! (e) install of a pack with 50 dependencies from a peer;
//! (q) restart-to-propagation: a node of a 3-process testnet restarts
//!     (alternately SIGTERM and kill -9), then its next release is timed
//!     until visible on both peers, beside publish-to-visible on the same
//!     testnet without a restart.
//! (r) a release in a new namespace (its claim must be witnessed) accepted
//!     on every node of the 10-process testnet with 3 witnesses, beside
//!     publish-to-visible in a namespace already owned, same testnet;
//! (s) checkpoint verification and witnessed-time computation for 100,000
//!     records listed by 3 witnesses, on one core, with each witness's log
//!     size, beside the bare bookkeeping (a hash map of the same listings).
//! (t) a peer asks the publisher of a 1 GiB pack for its last MiB over the
//!     libp2p range protocol while the publisher answers searches: the
//!     range round trip beside one at the start of the pack, and search
//!     latency during it beside the same search on the idle node.
//! PACKFED_BENCH_QUICK=1 shrinks every size (smoke runs).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use packfed_testnet::timing::pct;
use packfed_testnet::{Federation, TestNode, make_big_pack, make_pack, pseudo_random_bytes, wait_for};

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_packfed"))
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

struct Row(String, String, String);

/// One HTTP GET round trip on a node's API (the polling baseline).
fn http_get(api: &str, path: &str) -> Option<String> {
    let mut c = std::net::TcpStream::connect(api).ok()?;
    write!(c, "GET {path} HTTP/1.1\r\nHost: {api}\r\nConnection: close\r\n\r\n").ok()?;
    let mut s = String::new();
    c.read_to_string(&mut s).ok()?;
    Some(s)
}

fn visible(api: &str, name: &str, version: &str) -> bool {
    http_get(api, &format!("/v1/info/{name}?version={version}")).is_some_and(|r| r.starts_with("HTTP/1.1 200"))
}

/// Publishes `name@version` on node 0; the time until each other node shows it.
fn publish_to_each(fed: &Federation, dir: &Path, name: &str, version: &str) -> Vec<Duration> {
    make_pack(dir, name, version, &[], 0).unwrap();
    let apis: Vec<String> = fed.nodes[1..].iter().map(|n| n.api.clone()).collect();
    let start = Instant::now();
    fed.nodes[0]
        .json(&["publish", &dir.to_string_lossy(), "--key", "k0"])
        .unwrap();
    let handles: Vec<_> = apis
        .into_iter()
        .map(|api| {
            let (name, version) = (name.to_string(), version.to_string());
            std::thread::spawn(move || {
                while start.elapsed() < Duration::from_secs(20) {
                    if visible(&api, &name, &version) {
                        return Some(start.elapsed());
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                None
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().unwrap().unwrap_or(Duration::from_secs(20)))
        .collect()
}

fn bench_a(rows: &mut Vec<Row>, nodes: usize, publishes: usize, new_namespaces: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let roles: Vec<&str> = (0..nodes).map(|i| if i == 1 { "regional" } else { "public" }).collect();
    // n0, n1, n2 witness (members k0, k1, k2); the others do not.
    let fed = Federation::up(&bin(), tmp.path(), &roles).unwrap();
    let dir = tmp.path().join("p");
    if new_namespaces {
        // (r), then (a) on the same testnet as its baseline.
        let mut fresh = Vec::new();
        let mut owned = Vec::new();
        publish_to_each(&fed, &dir, "bench/latency", "0.0.1");
        for i in 0..publishes {
            fresh.extend(publish_to_each(&fed, &dir, &format!("fresh{i}/latency"), "1.0.0"));
            owned.extend(publish_to_each(&fed, &dir, "bench/latency", &format!("1.0.{i}")));
        }
        fresh.sort();
        owned.sort();
        rows.push(Row(
            format!(
                "(r) release in a new namespace visible on every node, {nodes}-process testnet, 3 witnesses, {} samples",
                fresh.len()
            ),
            format!("p50 {} p99 {}", ms(pct(&fresh, 0.5)), ms(pct(&fresh, 0.99))),
            format!(
                "owned namespace p50 {} p99 {} (floor p99 < 1.5 s)",
                ms(pct(&owned, 0.5)),
                ms(pct(&owned, 0.99))
            ),
        ));
        return;
    }
    let mut samples = Vec::new();
    publish_to_each(&fed, &dir, "bench/latency", "0.0.1");
    for i in 0..publishes {
        samples.extend(publish_to_each(&fed, &dir, "bench/latency", &format!("1.0.{i}")));
    }
    samples.sort();
    // Baseline: one API round trip (the polling granularity).
    let api = fed.nodes[0].api.clone();
    let mut rtt: Vec<Duration> = (0..200)
        .map(|_| {
            let t = Instant::now();
            http_get(&api, "/v1/status");
            t.elapsed()
        })
        .collect();
    rtt.sort();
    rows.push(Row(
        format!(
            "(a) publish-to-visible, {nodes}-process testnet, {} samples",
            samples.len()
        ),
        format!("p50 {} p99 {}", ms(pct(&samples, 0.5)), ms(pct(&samples, 0.99))),
        format!("API round trip p50 {} (floor p99 < 1 s)", ms(pct(&rtt, 0.5))),
    ));
}

fn bench_s(rows: &mut Vec<Row>, records: usize) {
    use packfed_governance::{Member, Role};
    use packfed_node::core::witness::{WitnessSet, Witnesses};
    use packfed_protocol::{FederationId, KeyPair, RecordId, Signed, Verified, pb};

    let fed = FederationId::of(b"bench s");
    let keys: Vec<KeyPair> = (0..3).map(|_| KeyPair::generate().unwrap()).collect();
    let members: Vec<Member> = keys
        .iter()
        .map(|k| Member {
            public_key: k.public(),
            role: Role::Maintainer,
            weight: 1,
        })
        .collect();
    let set = WitnessSet::new(&members, &[Role::Maintainer], 0.5);
    let ids: Vec<RecordId> = (0..records as u64).map(|i| RecordId::of(&i.to_le_bytes())).collect();
    // Each witness's log: the records in its own order, as fast as news came.
    let mut logs: Vec<Vec<Vec<u8>>> = Vec::new();
    let t0 = 1_700_000_000_000u64;
    for (w, key) in keys.iter().enumerate() {
        let mut node = Witnesses::new(set.clone(), [key.public()]);
        let mut order = ids.clone();
        order.rotate_left(w * 7919 % records.max(1));
        for id in &order {
            node.note_admitted(*id, None);
        }
        let effects = node.produce(t0 + w as u64, 60_000, |_, cp| Some(Verified::sign(cp, key, &fed)));
        logs.push(
            effects
                .into_iter()
                .filter_map(|e| match e {
                    packfed_node::core::Effect::Gossip(_, bytes) => Some(bytes),
                    _ => None,
                })
                .collect(),
        );
    }
    let sizes: Vec<usize> = logs.iter().map(|l| l.iter().map(Vec::len).sum()).collect();
    let checkpoints: usize = logs.iter().map(Vec::len).sum();
    let mut best = Duration::MAX;
    for _ in 0..3 {
        let start = Instant::now();
        let mut victim = Witnesses::new(set.clone(), []);
        for bytes in logs.iter().flatten() {
            let v = Signed::decode(bytes).unwrap().verify::<pb::Checkpoint>(&fed).unwrap();
            victim.admit(&v, t0 + 10);
        }
        let witnessed = ids.iter().filter(|id| victim.witnessed(id).is_some()).count();
        best = best.min(start.elapsed());
        assert_eq!(witnessed, records);
    }
    // Baseline: the bare bookkeeping, a hash map of every (record, witness, time).
    let mut floor = Duration::MAX;
    for _ in 0..3 {
        let start = Instant::now();
        let mut m: std::collections::HashMap<RecordId, Vec<(u8, u64)>> = Default::default();
        for w in 0..3u8 {
            for id in &ids {
                m.entry(*id).or_default().push((w, t0));
            }
        }
        let n = ids.iter().filter(|id| m.get(id).is_some_and(|v| v.len() >= 2)).count();
        floor = floor.min(start.elapsed());
        assert_eq!(n, records);
    }
    rows.push(Row(
        format!("(s) verify {checkpoints} checkpoints and compute witnessed time of {records} records (3 witnesses, one core)"),
        format!(
            "{} (best of 3); log per witness {:.2} MB (floor < 1 s, < 8 MB)",
            ms(best),
            sizes.iter().copied().max().unwrap_or(0) as f64 / 1e6
        ),
        format!("hash map of the same listings {}", ms(floor)),
    ));
}

fn bench_b(rows: &mut Vec<Row>, n: usize) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let report = rt.block_on(packfed_testnet::sim::run(n, 7)).unwrap();
    rows.push(Row(
        format!("(b) publish-to-visible, in-process simulation, {n} nodes"),
        format!("p50 {} p99 {} max {}", ms(report.p50), ms(report.p99), ms(report.max)),
        format!(
            "connect all {} (floor p99 < 1 s at 1,000 nodes)",
            ms(report.connect_time)
        ),
    ));
}

fn bench_c(rows: &mut Vec<Row>, n: usize) {
    let tmp = tempfile::tempdir().unwrap();
    let mut fed = Federation::empty(&bin(), tmp.path(), 1).unwrap();
    let a = fed.init_home("a", "public", None, &[]).unwrap();
    let t = Instant::now();
    packfed_testnet::preload(&a, n).expect("preload the releases");
    let preload_time = t.elapsed();
    fed.nodes.push(TestNode::start(&bin(), &a).unwrap());
    // The source is a running node: its start-up work (indexing what the
    // preload stored) is done before the fresh node starts, or the two
    // share the cores and the row measures the source's start-up too.
    fed.nodes[0].wait_indexed(n as u64, Duration::from_secs(120)).unwrap();
    let boot = fed.nodes[0].p2p_addr().unwrap();
    let b = fed.init_home("b", "public", Some(&boot), &[]).unwrap();
    let start = Instant::now();
    let node_b = TestNode::start(&bin(), &b).unwrap();
    let api = node_b.api.clone();
    wait_for(Duration::from_secs(120), "the fresh node to sync", || {
        let s = http_get(&api, "/v1/status")?;
        let body = &s[s.find("\r\n\r\n")? + 4..];
        let v: serde_json::Value = serde_json::from_str(body).ok()?;
        (v["releases"].as_u64()? >= n as u64).then_some(())
    })
    .unwrap();
    let took = start.elapsed();
    rows.push(Row(
        format!("(c) fresh node's registry sync of {n} releases"),
        format!(
            "{:.2} s ({:.0} releases/s)",
            took.as_secs_f64(),
            n as f64 / took.as_secs_f64()
        ),
        format!(
            "offline ingest of the same into the source: {:.2} s (floor < 10 s)",
            preload_time.as_secs_f64()
        ),
    ));
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Node A publishes a pack of `bytes` incompressible bytes (the source
/// directory is removed again); the adversary B, a full node serving
/// honestly, joins it. Returns the pack's hash and archive size.
fn big_pack_and_a_peer(bytes: usize) -> (tempfile::TempDir, Federation, String, u64) {
    let tmp = tempfile::tempdir().unwrap();
    let mut fed = Federation::empty(&bin(), tmp.path(), 1).unwrap();
    let a = fed.init_home("a", "company", None, &[]).unwrap();
    fed.nodes.push(TestNode::start(&bin(), &a).unwrap());
    let dir = tmp.path().join("big");
    make_big_pack(&dir, "bench/big", "1.0.0", bytes).unwrap();
    let p = fed.nodes[0]
        .json(&["publish", &dir.to_string_lossy(), "--key", "k0"])
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let boot = fed.nodes[0].p2p_addr().unwrap();
    let b = fed.init_home("b", "public", Some(&boot), &[]).unwrap();
    let testnet = PathBuf::from(env!("CARGO_BIN_EXE_testnet"));
    fed.nodes.push(TestNode::start_adversary(&bin(), &testnet, &b).unwrap());
    fed.wait_connected(Duration::from_secs(30)).unwrap();
    let hash = p["hash"].as_str().unwrap().to_string();
    (tmp, fed, hash, p["size"].as_u64().unwrap())
}

fn bench_d(rows: &mut Vec<Row>, bytes: usize) {
    // B fetches by hash as a node that learnt it out of band would (the
    // adversary runs the product's fetch; it serves honestly).
    let (tmp, fed, hash, size) = big_pack_and_a_peer(bytes);
    let b = fed.nodes[1].home.clone();
    let pid = fed.nodes[1].child.as_ref().unwrap().id();
    // Announcements carry the iroh address (and the name): wait for A's.
    wait_for(Duration::from_secs(60), "A's announcement to reach B", || {
        let peers = fed.nodes[1].json(&["peers"]).ok()?;
        peers.as_array()?.iter().any(|p| p["name"] == "a").then_some(())
    })
    .unwrap();
    let start = Instant::now();
    fed.nodes[1].fetch_by_hash(&hash, size).unwrap();
    let took = start.elapsed();
    let rss = peak_rss_kib(pid);
    let log = std::fs::read_to_string(b.join("node.log")).unwrap_or_default();
    let via = if log.contains("via=\"swarm\"") {
        "iroh (swarm pieces)"
    } else if log.contains("via=\"iroh\"") {
        "iroh"
    } else {
        "libp2p"
    };
    let mbps = size as f64 / 1e6 / took.as_secs_f64();

    // Baselines: raw loopback TCP and a bare sled write of the same bytes.
    let tcp = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let total = size;
        let h = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = vec![0u8; 1 << 20];
            let mut got = 0u64;
            while got < total {
                let n = s.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                got += n as u64;
            }
        });
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        let buf = pseudo_random_bytes(1 << 20, 5);
        let t = Instant::now();
        let mut sent = 0u64;
        while sent < size {
            let n = (size - sent).min(buf.len() as u64) as usize;
            s.write_all(&buf[..n]).unwrap();
            sent += n as u64;
        }
        drop(s);
        h.join().unwrap();
        size as f64 / 1e6 / t.elapsed().as_secs_f64()
    };
    let sled_rate = {
        let db = sled::open(tmp.path().join("bare")).unwrap();
        let buf = pseudo_random_bytes(packfed_node::store::CHUNK_SIZE, 3);
        let t = Instant::now();
        let mut i = 0u64;
        let mut written = 0u64;
        while written < size {
            db.insert(i.to_be_bytes(), buf.as_slice()).unwrap();
            written += buf.len() as u64;
            i += 1;
        }
        db.flush().unwrap();
        size as f64 / 1e6 / t.elapsed().as_secs_f64()
    };
    rows.push(Row(
        format!(
            "(d) {:.0} MiB pack transfer A -> B, verified, into B's store",
            size as f64 / 1048576.0
        ),
        format!(
            "{mbps:.0} MB/s over {}, receiver peak RSS {:.0} MB",
            via,
            rss as f64 / 1024.0
        ),
        format!(
            "raw loopback TCP {tcp:.0} MB/s; bare sled write {sled_rate:.0} MB/s (floor >= 150 MB/s, RSS < 200 MB)"
        ),
    ));
}

fn bench_e(rows: &mut Vec<Row>, deps: usize) {
    let tmp = tempfile::tempdir().unwrap();
    let mut fed = Federation::up(&bin(), tmp.path(), &["company", "public"]).unwrap();
    let mut dep_specs = Vec::new();
    for i in 0..deps {
        let d = tmp.path().join(format!("d{i}"));
        let name = format!("bench/dep-{i}");
        make_pack(&d, &name, "1.0.0", &[], 4096).unwrap();
        fed.nodes[0]
            .json(&["publish", &d.to_string_lossy(), "--key", "k0"])
            .unwrap();
        dep_specs.push(name);
    }
    let reqs: Vec<(&str, &str)> = dep_specs.iter().map(|n| (n.as_str(), "^1")).collect();
    let root = tmp.path().join("root");
    make_pack(&root, "bench/app", "1.0.0", &reqs, 4096).unwrap();
    fed.nodes[0]
        .json(&["publish", &root.to_string_lossy(), "--key", "k0"])
        .unwrap();
    wait_for(Duration::from_secs(30), "B to know every release", || {
        (fed.nodes[1].json(&["status"]).ok()?["releases"].as_u64()? as usize > deps).then_some(())
    })
    .unwrap();
    let time_install = |node: &TestNode, to: &Path| {
        let t = Instant::now();
        let v = node
            .json(&["install", "bench/app", "--to", &to.to_string_lossy()])
            .unwrap();
        assert_eq!(v["installed"].as_array().unwrap().len(), deps + 1);
        t.elapsed()
    };
    let from_peer = time_install(&fed.nodes[1], &tmp.path().join("b-install"));
    let local = time_install(&fed.nodes[0], &tmp.path().join("a-install"));
    fed.nodes.clear();
    rows.push(Row(
        format!("(e) install of a pack with {deps} dependencies from a peer"),
        ms(from_peer),
        format!("same install where the blobs are local: {} (floor < 2 s)", ms(local)),
    ));
}

/// Times a publish on `fed.nodes[0]` until visible on every other node.
fn publish_to_visible(fed: &Federation, dir: &Path, name: &str, version: &str) -> Duration {
    make_pack(dir, name, version, &[], 0).unwrap();
    let apis: Vec<String> = fed.nodes[1..].iter().map(|n| n.api.clone()).collect();
    let start = Instant::now();
    fed.nodes[0]
        .json(&["publish", &dir.to_string_lossy(), "--key", "k0"])
        .unwrap();
    for api in apis {
        while !visible(&api, name, version) && start.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    start.elapsed()
}

fn connected_peers(api: &str) -> u64 {
    http_get(api, "/v1/status")
        .and_then(|r| r.split_once("\r\n\r\n").map(|(_, b)| b.to_string()))
        .and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok())
        .and_then(|v| v["peers"].as_u64())
        .unwrap_or(0)
}

fn bench_t(rows: &mut Vec<Row>, bytes: usize, samples: usize) {
    const MIB: u64 = 1 << 20;
    let (_tmp, fed, hash, size) = big_pack_and_a_peer(bytes);
    wait_for(Duration::from_secs(60), "B to hold the release", || {
        fed.nodes[1].has_release("bench/big@1.0.0").then_some(())
    })
    .unwrap();
    let peer = fed.nodes[0].json(&["status"]).unwrap()["peer_id"]
        .as_str()
        .unwrap()
        .to_string();
    let range = |offset: u64| -> Duration {
        let r = fed.nodes[1]
            .control(
                "/v1/test/range",
                &serde_json::json!({"peer": peer, "hash": hash, "offset": offset, "length": MIB}),
            )
            .unwrap();
        assert_eq!(r["bytes"].as_u64(), Some(MIB), "{r}");
        Duration::from_micros(r["micros"].as_u64().unwrap())
    };
    let api = fed.nodes[0].api.clone();
    let search = |api: &str| -> Duration {
        let t = Instant::now();
        let r = http_get(api, "/v1/search?q=big&peers=local").unwrap();
        assert!(r.contains("bench/big"), "{r}");
        t.elapsed()
    };
    let mut idle: Vec<Duration> = (0..samples).map(|_| search(&api)).collect();
    let mut start: Vec<Duration> = (0..samples).map(|_| range(0)).collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let searcher = {
        let (stop, api) = (stop.clone(), api.clone());
        std::thread::spawn(move || {
            let mut took = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                took.push(search(&api));
            }
            took
        })
    };
    let mut end: Vec<Duration> = (0..samples).map(|_| range(size - MIB)).collect();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut busy = searcher.join().unwrap();
    for v in [&mut idle, &mut start, &mut end, &mut busy] {
        v.sort();
    }
    rows.push(Row(
        format!(
            "(t) 1 MiB range at the end of a {:.2} GiB pack, asked by a peer (libp2p range protocol), {samples} samples",
            size as f64 / (1u64 << 30) as f64
        ),
        format!("p50 {}, p99 {} (floor < 50 ms)", ms(pct(&end, 0.5)), ms(pct(&end, 0.99))),
        format!("range at the start: p50 {}, p99 {}", ms(pct(&start, 0.5)), ms(pct(&start, 0.99))),
    ));
    rows.push(Row(
        format!(
            "(t) search (HTTP, local) on the publisher while it serves those ranges, {} samples",
            busy.len()
        ),
        format!(
            "p50 {}, p99 {} (floor < 10 ms)",
            ms(pct(&busy, 0.5)),
            ms(pct(&busy, 0.99))
        ),
        format!("idle node: p50 {}, p99 {}", ms(pct(&idle, 0.5)), ms(pct(&idle, 0.99))),
    ));
}

fn bench_q(rows: &mut Vec<Row>, restarts: usize) {
    let tmp = tempfile::tempdir().unwrap();
    let mut fed = Federation::up(&bin(), tmp.path(), &["company", "regional", "public"]).unwrap();
    let dir = tmp.path().join("p");
    let mut steady: Vec<Duration> = (0..restarts)
        .map(|i| publish_to_visible(&fed, &dir, "bench/steady", &format!("1.0.{i}")))
        .collect();
    steady.sort();
    let mut after = Vec::new();
    let mut whole = Vec::new();
    for i in 0..restarts {
        if i % 2 == 0 {
            fed.nodes[0].kill9().unwrap();
        } else {
            fed.nodes[0].stop().unwrap();
        }
        let t = Instant::now();
        fed.nodes[0].restart().unwrap();
        // Published as soon as its peers are back, as a user would.
        let apis: Vec<String> = fed.nodes.iter().map(|n| n.api.clone()).collect();
        for api in &apis {
            while connected_peers(api) < 2 && t.elapsed() < Duration::from_secs(60) {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        after.push(publish_to_visible(&fed, &dir, "bench/restarted", &format!("1.0.{i}")));
        whole.push(t.elapsed());
    }
    after.sort();
    whole.sort();
    rows.push(Row(
        format!("(q) restart-to-propagation, 3-process testnet, {restarts} restarts (alternating SIGTERM, kill -9)"),
        format!(
            "publish after restart to visible on both peers p50 {} p99 {}; restart to visible p50 {} p99 {}",
            ms(pct(&after, 0.5)),
            ms(pct(&after, 0.99)),
            ms(pct(&whole, 0.5)),
            ms(pct(&whole, 0.99))
        ),
        format!(
            "publish-to-visible without a restart p50 {} p99 {}",
            ms(pct(&steady, 0.5)),
            ms(pct(&steady, 0.99))
        ),
    ));
}

fn main() {
    let quick = std::env::var_os("PACKFED_BENCH_QUICK").is_some();
    let only = std::env::var("PACKFED_BENCH_ONLY").unwrap_or_default();
    let want = |k: &str| only.is_empty() || only.contains(k);
    let mut rows = Vec::new();
    if want("a") {
        bench_a(&mut rows, if quick { 4 } else { 10 }, if quick { 3 } else { 10 }, false);
    }
    if want("r") {
        bench_a(&mut rows, if quick { 4 } else { 10 }, if quick { 3 } else { 10 }, true);
    }
    if want("s") {
        bench_s(&mut rows, if quick { 10_000 } else { 100_000 });
    }
    if want("b") {
        bench_b(&mut rows, if quick { 50 } else { 1_000 });
    }
    if want("c") {
        bench_c(&mut rows, if quick { 2_000 } else { 50_000 });
    }
    if want("d") {
        let bytes: usize = std::env::var("PACKFED_BENCH_D_MB")
            .ok()
            .and_then(|v| v.parse().ok())
            .map(|mb: usize| mb << 20)
            .unwrap_or(if quick {
                64 << 20
            } else {
                packfed_testnet::ONE_GIB_PACK_BYTES
            });
        bench_d(&mut rows, bytes);
    }
    if want("e") {
        bench_e(&mut rows, if quick { 10 } else { 50 });
    }
    if want("t") {
        let bytes = if quick {
            64 << 20
        } else {
            packfed_testnet::ONE_GIB_PACK_BYTES
        };
        bench_t(&mut rows, bytes, if quick { 10 } else { 100 });
    }
    if want("q") {
        bench_q(&mut rows, if quick { 4 } else { 20 });
    }
    println!("\n| federation measurement | result | baseline (same run) |");
    println!("|---|---|---|");
    for Row(a, b, c) in rows {
        println!("| {a} | {b} | {c} |");
    }
}
