//! `scripts/bench` runs this: swarm distribution of one large pack.
//!
//! (z1) a lone node fetches a 128 MiB pack from its publisher: the baseline.
//! (z2) flash crowd: 15 nodes fetch another 128 MiB pack from the same
//!      publisher at once; every node uploads at most `max_upload_rate`
//!      (50 MB/s). Completion p50/p99 against (z1), and each node's upload.
//! (z3) the same crowd while one node (the adversary, holding the pack)
//!      serves corrupted groups: every other node completes, verified.
//! (z4) the crowd again with no upload limit: total time and origin bytes.
//!
//! (z5) the planner's flash crowd at 100 simulated nodes (testnet's
//!      `swarm_sim`: the node's own `Plan`, a modelled network, simulated
//!      time): completion against a lone simulated fetch, and the origin's
//!      upload. `PACKFED_BENCH_ONLY=z5` runs only this row.
//!
//! z1..z4 are 16 real node processes on 127.0.0.1. `PACKFED_BENCH_QUICK=1`
//! shrinks the pack to 16 MiB and the crowd to 5 nodes.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use packfed_testnet::timing::pct;
use packfed_testnet::{Federation, TestNode, make_big_pack, wait_for};

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_packfed"))
}

fn testnet_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_testnet"))
}

const DEADLINE: Duration = Duration::from_secs(120);
const RATE: u64 = 50_000_000;

/// Publishes a `bytes` pack as `acme/big@version` on node 0 and waits until
/// every running node shows it: (hash, size).
fn publish(fed: &Federation, root: &Path, version: &str, bytes: usize) -> (String, u64) {
    let dir = root.join(format!("big-{version}"));
    make_big_pack(&dir, "acme/big", version, bytes).unwrap();
    let p = fed.nodes[0]
        .json(&["publish", &dir.to_string_lossy(), "--key", "k0"])
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let id = format!("acme/big@{version}");
    for n in &fed.nodes {
        wait_for(DEADLINE, "every node to show the release", || {
            n.has_release(&id).then_some(())
        })
        .unwrap();
    }
    (p["hash"].as_str().unwrap().to_string(), p["size"].as_u64().unwrap())
}

/// Waits until every node has heard every other's announcement (they carry
/// the iroh addresses).
fn wait_announced(fed: &Federation) {
    let want = fed.nodes.len() - 1;
    for n in &fed.nodes {
        wait_for(DEADLINE, "announcements", || {
            let peers = n.json(&["peers"]).ok()?;
            let named = peers
                .as_array()?
                .iter()
                .filter(|p| p["name"].as_str().is_some_and(|s| !s.is_empty()))
                .count();
            (named >= want).then_some(())
        })
        .unwrap();
    }
}

fn served(fed: &Federation) -> Vec<u64> {
    fed.nodes
        .iter()
        .map(|n| n.metric("packfed_blob_bytes_served_total").unwrap_or(0.0) as u64)
        .collect()
}

/// How many providers each of nodes `who` has penalized so far.
fn penalties(fed: &Federation, who: &[usize]) -> Vec<f64> {
    who.iter()
        .map(|&i| {
            fed.nodes[i]
                .metric("packfed_blob_providers_penalized_total")
                .unwrap_or(0.0)
        })
        .collect()
}

/// Nodes `who` fetch `hash` at once; each one's completion time.
fn crowd(fed: &Federation, who: &[usize], hash: &str, size: u64) -> Vec<Duration> {
    let start = Instant::now();
    let mut times: Vec<Duration> = std::thread::scope(|s| {
        let handles: Vec<_> = who
            .iter()
            .map(|&i| {
                let node = &fed.nodes[i];
                s.spawn(move || {
                    let r = node.prefetch(hash, size, |_| false).unwrap();
                    assert_eq!(r["done"], true, "node {i}: {r}");
                    start.elapsed()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    times.sort();
    times
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn mib(b: u64) -> String {
    format!("{:.0} MiB", b as f64 / (1 << 20) as f64)
}

/// (z5): simulated crowds of `sizes` nodes, 128 pieces of 1 MiB, 50 MB/s.
fn simulated(rows: &mut Vec<(String, String, String)>, sizes: &[usize]) {
    use packfed_testnet::swarm_sim::{Crowd, run};
    let crowd = |fetchers| Crowd {
        fetchers,
        pieces: 128,
        piece_bytes: 1 << 20,
        upload_rate: RATE as f64,
        latency: Duration::from_millis(1),
        seed: 5,
    };
    let started = Instant::now();
    let lone = run(&crowd(1)).done[0];
    for &n in sizes {
        let r = run(&crowd(n));
        rows.push((
            format!("(z5) simulated flash crowd: {n} nodes fetch a 128 MiB pack from one origin (50 MB/s each)"),
            format!(
                "p50 {}, p99 {}; origin uploaded {:.2}x the pack (floor <= 2x)",
                secs(r.quantile(0.5)),
                secs(r.quantile(0.99)),
                r.origin_ratio()
            ),
            format!(
                "lone simulated fetch {}: p99 = {:.2}x; all nodes uploaded {:.2}x the pack",
                secs(lone),
                r.quantile(0.99).as_secs_f64() / lone.as_secs_f64(),
                r.uploads.iter().sum::<u64>() as f64 / r.pack_bytes as f64
            ),
        ));
    }
    eprintln!(
        "simulations took {:.1} s of this machine's time",
        started.elapsed().as_secs_f64()
    );
}

fn print(rows: &[(String, String, String)]) {
    println!("\n| measurement | result | baseline (same run) |");
    println!("|---|---|---|");
    for (m, r, b) in rows {
        println!("| {m} | {r} | {b} |");
    }
}

fn main() {
    let quick = std::env::var_os("PACKFED_BENCH_QUICK").is_some();
    let mut sim_rows = Vec::new();
    simulated(&mut sim_rows, if quick { &[20] } else { &[16, 100] });
    if std::env::var("PACKFED_BENCH_ONLY").is_ok_and(|o| o == "z5") {
        print(&sim_rows);
        return;
    }
    let (bytes, crowd_size) = if quick { (16 << 20, 5) } else { (128 << 20, 15) };
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    // Every node inherits the upload budget from the environment.
    // SAFETY: set before any thread of this process starts.
    unsafe { std::env::set_var("PACKFED_NET_MAX_UPLOAD_RATE", RATE.to_string()) };
    let roles: Vec<&str> = std::iter::once("company")
        .chain(std::iter::repeat_n("public", crowd_size - 1))
        .collect();
    let mut fed = Federation::up(&bin(), root, &roles).unwrap();
    let boot = fed.nodes[0].p2p_addr().unwrap();
    let evil_home = fed.init_home("evil", "public", Some(&boot), &[]).unwrap();
    fed.nodes
        .push(TestNode::start_adversary(&bin(), &testnet_bin(), &evil_home).unwrap());
    fed.wait_connected(DEADLINE).unwrap();
    wait_announced(&fed);
    let evil = fed.nodes.len() - 1;
    let fetchers: Vec<usize> = (1..fed.nodes.len()).collect();
    let mut rows: Vec<(String, String, String)> = Vec::new();

    // (z1) the lone fetch.
    let (hash, size) = publish(&fed, root, "1.0.0", bytes);
    let before = served(&fed)[0];
    let lone = crowd(&fed, &[1], &hash, size)[0];
    let lone_origin = served(&fed)[0] - before;
    rows.push((
        format!(
            "(z1) one node fetches a {} pack from its publisher (upload limit 50 MB/s)",
            mib(size)
        ),
        secs(lone),
        format!(
            "publisher uploaded {} ({:.2}x the pack)",
            mib(lone_origin),
            lone_origin as f64 / size as f64
        ),
    ));

    // (z2) the flash crowd.
    let (hash, size) = publish(&fed, root, "1.0.1", bytes);
    let before = served(&fed);
    let times = crowd(&fed, &fetchers, &hash, size);
    let after = served(&fed);
    let up: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    let (p50, p99) = (pct(&times, 0.5), pct(&times, 0.99));
    rows.push((
        format!(
            "(z2) flash crowd: {} nodes fetch one {} pack at once (each node uploads <= 50 MB/s)",
            fetchers.len(),
            mib(size)
        ),
        format!("p50 {}, p99 {}", secs(p50), secs(p99)),
        format!(
            "p99 = {:.2}x the lone fetch (floor <= 3x)",
            p99.as_secs_f64() / lone.as_secs_f64()
        ),
    ));
    rows.push((
        "(z2) publisher's upload in the crowd".into(),
        mib(up[0]),
        format!(
            "{:.2}x the pack (floor <= 2x; one by one: {}x)",
            up[0] as f64 / size as f64,
            fetchers.len()
        ),
    ));
    rows.push((
        "(z2) each node's upload (MiB, node 0 = publisher)".into(),
        up.iter()
            .map(|b| format!("{:.0}", *b as f64 / (1 << 20) as f64))
            .collect::<Vec<_>>()
            .join(" "),
        format!("total {} for {} copies", mib(up.iter().sum()), fetchers.len()),
    ));

    // (z3) a liar in the crowd: it holds the pack and serves corrupt groups.
    let (hash, size) = publish(&fed, root, "1.0.2", bytes);
    fed.nodes[evil].fetch_by_hash(&hash, size).unwrap();
    fed.nodes[evil]
        .control("/v1/test/serve", &serde_json::json!({"mode": "corrupt"}))
        .unwrap();
    let honest: Vec<usize> = fetchers.iter().copied().filter(|&i| i != evil).collect();
    let before = penalties(&fed, &honest);
    let times = crowd(&fed, &honest, &hash, size);
    let after = penalties(&fed, &honest);
    let caught = after.iter().filter(|p| **p > 0.0).count();
    let penalized: f64 = after.iter().sum::<f64>() - before.iter().sum::<f64>();
    // Read back from each store and hashed here: no corrupt byte was stored.
    let intact = honest.iter().filter(|&&i| fed.nodes[i].holds_verified(&hash)).count();
    rows.push((
        format!("(z3) {} nodes fetch while a holder serves corrupted groups", honest.len()),
        format!("p50 {}, p99 {}", secs(pct(&times, 0.5)), secs(pct(&times, 0.99))),
        format!(
            "all {} completed, {intact} stores read back hash to the pack; {caught} nodes penalized the liar ({penalized:.0} penalties)",
            honest.len()
        ),
    ));

    // (z4) no upload limit: restart everyone without it.
    unsafe { std::env::remove_var("PACKFED_NET_MAX_UPLOAD_RATE") };
    fed.nodes[evil]
        .control("/v1/test/serve", &serde_json::json!({"mode": "honest"}))
        .unwrap();
    for n in fed.nodes.iter_mut() {
        n.stop().unwrap();
        n.restart().unwrap();
    }
    fed.wait_connected(DEADLINE).unwrap();
    wait_announced(&fed);
    let (hash, size) = publish(&fed, root, "1.0.3", bytes);
    let before = served(&fed)[0];
    let lone_unlimited = crowd(&fed, &[1], &hash, size)[0];
    let lone_origin = served(&fed)[0] - before;
    let (hash, size) = publish(&fed, root, "1.0.4", bytes);
    let before = served(&fed)[0];
    let times = crowd(&fed, &fetchers, &hash, size);
    let origin = served(&fed)[0] - before;
    rows.push((
        format!("(z4) flash crowd of {} without upload limits", fetchers.len()),
        format!(
            "all done in {} (p50 {})",
            secs(*times.last().unwrap()),
            secs(pct(&times, 0.5))
        ),
        format!(
            "lone fetch {} ({:.2}x the pack from the publisher); crowd origin upload {} = {:.2}x the pack",
            secs(lone_unlimited),
            lone_origin as f64 / size as f64,
            mib(origin),
            origin as f64 / size as f64
        ),
    ));

    rows.extend(sim_rows);
    print(&rows);
}
