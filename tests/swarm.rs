//! Swarm distribution end to end: real node processes on 127.0.0.1 fetch
//! one large pack from each other piece by piece, a lying provider among
//! them, and a fetch killed with -9 resumes where it stopped.

use std::path::{Path, PathBuf};
use std::time::Duration;

use packfed_testnet::{Federation, TestNode, make_big_pack, wait_for};
use serde_json::Value;

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_packfed"))
}

fn testnet_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_testnet"))
}

const DEADLINE: Duration = Duration::from_secs(60);

/// Restarts node `i` with an upload budget, so a fetch from it alone takes
/// seconds and the crowd has to share.
fn limit_upload(fed: &mut Federation, i: usize, bytes_per_sec: u64) {
    let home = fed.nodes[i].home.clone();
    fed.nodes[i].stop().unwrap();
    let rate = bytes_per_sec.to_string();
    fed.nodes[i] = TestNode::start_with_env(&bin(), &home, &[("PACKFED_NET_MAX_UPLOAD_RATE", &rate)]).unwrap();
}

/// Publishes a pack of `bytes` incompressible bytes on node 0 and waits
/// until every node shows it: (hash, archive size).
fn publish_big(fed: &Federation, root: &Path, bytes: usize) -> (String, u64) {
    let dir = root.join("big");
    make_big_pack(&dir, "acme/big", "1.0.0", bytes).unwrap();
    let p = fed.nodes[0]
        .json(&["publish", &dir.to_string_lossy(), "--key", "k0"])
        .unwrap();
    for n in &fed.nodes {
        wait_for(DEADLINE, "every node to show the release", || {
            n.json(&["info", "acme/big"])
                .ok()
                .filter(|v| v["id"] == "acme/big@1.0.0")
        })
        .unwrap();
    }
    (p["hash"].as_str().unwrap().to_string(), p["size"].as_u64().unwrap())
}

/// `(peer, bytes)` of the last swarm fetch in a node's log.
fn swarm_sources(node: &TestNode) -> Vec<(String, u64)> {
    let log = std::fs::read_to_string(node.home.join("node.log")).unwrap_or_default();
    let Some(line) = log.lines().rev().find(|l| l.contains("via=\"swarm\"")) else {
        return Vec::new();
    };
    let Some(list) = line.split("bytes_by_source=").nth(1) else {
        return Vec::new();
    };
    list.split_whitespace()
        .next()
        .unwrap_or("")
        .split(',')
        .filter_map(|kv| {
            let (p, b) = kv.split_once('=')?;
            Some((p.to_string(), b.parse().ok()?))
        })
        .collect()
}

fn peer_id(node: &TestNode) -> String {
    node.json(&["status"]).unwrap()["peer_id"].as_str().unwrap().to_string()
}

#[test]
fn a_crowd_fetches_from_each_other_while_a_liar_is_caught_and_nothing_corrupt_is_stored() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let mut fed = Federation::up(&bin(), root, &["company", "public", "public", "public"]).unwrap();
    // 4 MB/s from the publisher: 24 MiB alone would take about 6 s. Node 3,
    // the seed that fetches first, gets a budget too, or it alone could serve
    // the crowd before anyone else has a piece.
    // One restart at a time: ports are ephemeral, so a node restarted
    // finds the others through those still up.
    limit_upload(&mut fed, 3, 8_000_000);
    fed.wait_connected(DEADLINE).unwrap();
    limit_upload(&mut fed, 0, 4_000_000);
    fed.wait_connected(DEADLINE).unwrap();
    let (hash, size) = publish_big(&fed, root, 24 << 20);

    // The adversary joins as a full node and fetches the pack honestly.
    let boot = fed.nodes[0].p2p_addr().unwrap();
    let evil_home = fed.init_home("evil", "public", Some(&boot), &[]).unwrap();
    let evil = TestNode::start_adversary(&bin(), &testnet_bin(), &evil_home).unwrap();
    fed.nodes.push(evil);
    fed.wait_connected(DEADLINE).unwrap();
    // Announcements carry iroh addresses: wait for every node's.
    for n in 0..4 {
        let name = format!("n{n}");
        wait_for(DEADLINE, "announcements to reach the adversary", || {
            let peers = fed.nodes[4].json(&["peers"]).ok()?;
            peers
                .as_array()?
                .iter()
                .any(|p| p["name"] == name.as_str())
                .then_some(())
        })
        .unwrap();
    }
    wait_for(DEADLINE, "the adversary to show the release", || {
        fed.nodes[4]
            .json(&["info", "acme/big"])
            .ok()
            .filter(|v| v["id"] == "acme/big@1.0.0")
    })
    .unwrap();
    fed.nodes[4].fetch_by_hash(&hash, size).unwrap();
    let evil_id = peer_id(&fed.nodes[4]);

    // Positive control: while it serves honestly, its bytes arrive.
    let first = fed.nodes[3].prefetch(&hash, size, |_| false).unwrap();
    assert_eq!(first["done"], true, "{first}");
    assert!(fed.nodes[3].holds_verified(&hash));
    let from_evil: u64 = swarm_sources(&fed.nodes[3])
        .iter()
        .filter(|(p, _)| *p == evil_id)
        .map(|(_, b)| b)
        .sum();
    assert!(
        from_evil > 0,
        "the honest adversary should have served: {:?}",
        swarm_sources(&fed.nodes[3])
    );

    // Now it serves corrupted groups, and two nodes fetch at once.
    fed.nodes[4]
        .control("/v1/test/serve", &serde_json::json!({"mode": "corrupt"}))
        .unwrap();
    let results: Vec<Value> = std::thread::scope(|s| {
        let handles: Vec<_> = [1, 2]
            .into_iter()
            .map(|i| {
                let node = &fed.nodes[i];
                let hash = &hash;
                s.spawn(move || node.prefetch(hash, size, |_| false).unwrap())
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, r) in [1, 2].into_iter().zip(&results) {
        assert_eq!(r["done"], true, "node {i}: {r}");
        assert!(
            fed.nodes[i].holds_verified(&hash),
            "node {i} stored bytes that do not hash"
        );
        let sources = swarm_sources(&fed.nodes[i]);
        let log = std::fs::read_to_string(fed.nodes[i].home.join("node.log")).unwrap();
        assert!(
            sources.len() >= 2,
            "node {i} fetched from one provider only: {sources:?}\n{log}"
        );
        assert!(
            !sources.iter().any(|(p, b)| *p == evil_id && *b > 0),
            "node {i} counted bytes from the liar: {sources:?}"
        );
        assert!(
            fed.nodes[i]
                .metric("packfed_blob_providers_penalized_total")
                .unwrap_or(0.0)
                >= 1.0,
            "node {i} should have penalized the liar"
        );
        assert!(
            log.contains(&evil_id) && log.contains("corrupted bytes"),
            "node {i}:\n{log}"
        );
    }
    // The two fetched from each other while both were still partial, or
    // from node 3: either way not everything came from the publisher.
    let from_publisher = fed.nodes[0].metric("packfed_blob_bytes_served_total").unwrap();
    assert!(
        from_publisher < 3.0 * size as f64,
        "the publisher uploaded {from_publisher} bytes for 4 fetches of {size}"
    );
}

#[test]
fn a_swarm_fetch_killed_with_minus_9_resumes_from_its_verified_pieces() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let mut fed = Federation::up(&bin(), root, &["company", "public"]).unwrap();
    limit_upload(&mut fed, 0, 4_000_000);
    fed.wait_connected(DEADLINE).unwrap();
    let (hash, size) = publish_big(&fed, root, 24 << 20);

    wait_for(DEADLINE, "the publisher's announcement", || {
        let peers = fed.nodes[1].json(&["peers"]).ok()?;
        peers.as_array()?.iter().any(|p| p["name"] == "n0").then_some(())
    })
    .unwrap();
    // Stop reading once a quarter has arrived, then kill -9 the fetcher.
    let partway = fed.nodes[1]
        .prefetch(&hash, size, |v| v["offset"].as_u64().is_some_and(|o| o >= size / 4))
        .unwrap();
    assert!(partway["offset"].as_u64().is_some_and(|o| o < size), "{partway}");
    fed.nodes[1].kill9().unwrap();
    fed.nodes[1].restart().unwrap();
    fed.wait_connected(DEADLINE).unwrap();
    // The publisher's announcement carries its iroh address.
    wait_for(DEADLINE, "the publisher's announcement", || {
        let peers = fed.nodes[1].json(&["peers"]).ok()?;
        peers.as_array()?.iter().any(|p| p["name"] == "n0").then_some(())
    })
    .unwrap();

    let done = fed.nodes[1].prefetch(&hash, size, |_| false).unwrap();
    assert_eq!(done["done"], true, "{done}");
    assert!(fed.nodes[1].holds_verified(&hash));
    let log = std::fs::read_to_string(fed.nodes[1].home.join("node.log")).unwrap();
    let resumed = log
        .lines()
        .find(|l| l.contains("resuming a fetch"))
        .unwrap_or_else(|| panic!("no resume in the log:\n{log}"));
    let held: u64 = resumed
        .split("held=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap();
    assert!(held >= 4, "only {held} pieces kept: {resumed}");
    // The publisher sent about one copy, not one and a quarter.
    let sent = fed.nodes[0].metric("packfed_blob_bytes_served_total").unwrap();
    assert!(sent < 1.2 * size as f64, "publisher sent {sent} for {size}");
}
