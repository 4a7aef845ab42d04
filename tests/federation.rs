//! Federation end-to-end tests: real node processes on 127.0.0.1 talking
//! libp2p (gossip, registry sync, blob transfer).

use std::path::PathBuf;
use std::time::Duration;

use packfed_testnet::{Federation, TestNode, make_pack, wait_for};
use serde_json::Value;

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_packfed"))
}

/// The `testnet` binary: its `adversary` command is the hostile peer.
fn testnet_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_testnet"))
}

const DEADLINE: Duration = Duration::from_secs(30);

fn search_ids(node: &TestNode, q: &str) -> Vec<String> {
    node.json(&["search", q])
        .map(|v| {
            v["results"]
                .as_array()
                .map(|a| a.iter().filter_map(|r| r["id"].as_str().map(str::to_string)).collect())
                .unwrap_or_default()
        })
        .unwrap_or_default()
}

/// Every file under `dir` with its bytes.
fn read_tree(dir: &std::path::Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.strip_prefix(dir).unwrap().to_path_buf(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

fn status(node: &TestNode) -> Value {
    node.json(&["status"]).unwrap()
}

#[test]
fn publish_on_one_node_install_on_another_mirror_and_catch_up() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let mut fed = Federation::up(&bin(), root, &["company", "regional", "public"]).unwrap();

    let pack = root.join("pack1");
    make_pack(&pack, "acme/rest-api", "1.0.0", &[], 50_000).unwrap();
    let p = fed.nodes[0]
        .json(&["publish", &pack.to_string_lossy(), "--key", "k0"])
        .unwrap();
    let hash = p["hash"].as_str().unwrap().to_string();

    // C finds it (gossip), and installs it with verify passing.
    wait_for(DEADLINE, "C to see the release", || {
        search_ids(&fed.nodes[2], "rest")
            .contains(&"acme/rest-api@1.0.0".to_string())
            .then_some(())
    })
    .unwrap();
    // B is regional: it holds the blob without being asked.
    wait_for(DEADLINE, "B to mirror the blob", || {
        (status(&fed.nodes[1])["blobs"] == 1).then_some(())
    })
    .unwrap();

    let target = root.join("c-install");
    let t = target.to_string_lossy().to_string();
    let done = fed.nodes[2].json(&["install", "acme/rest-api", "--to", &t]).unwrap();
    assert_eq!(done["installed"][0]["hash"], hash.as_str());
    assert_eq!(fed.nodes[2].json(&["verify", &t]).unwrap()["ok"], true);
    let log = std::fs::read_to_string(fed.nodes[2].home.join("node.log")).unwrap();
    assert!(
        log.contains("fetched blob") && log.contains("via=\"iroh\""),
        "C should fetch over iroh:\n{log}"
    );

    // A node started after the publish catches up through registry sync.
    let boot = fed.nodes[1].p2p_addr().unwrap();
    let late = fed.init_home("late", "public", Some(&boot), &[]).unwrap();
    let late = TestNode::start(&bin(), &late).unwrap();
    wait_for(DEADLINE, "the late node to catch up", || {
        search_ids(&late, "rest")
            .contains(&"acme/rest-api@1.0.0".to_string())
            .then_some(())
    })
    .unwrap();

    // A newer version appears; installing from the lockfile still gives
    // exactly the pinned release, byte for byte.
    make_pack(&pack, "acme/rest-api", "1.1.0", &[], 50_000).unwrap();
    fed.nodes[0]
        .json(&["publish", &pack.to_string_lossy(), "--key", "k0"])
        .unwrap();
    wait_for(DEADLINE, "C to see 1.1.0", || {
        (fed.nodes[2].json(&["info", "acme/rest-api@1.1.0"]).ok()?["status"] == "accepted").then_some(())
    })
    .unwrap();
    let before = read_tree(&target.join("acme/rest-api"));
    std::fs::remove_dir_all(target.join("acme")).unwrap();
    let again = fed.nodes[2].json(&["install", "--locked", "--to", &t]).unwrap();
    assert_eq!(again["installed"][0]["id"], "acme/rest-api@1.0.0", "{again}");
    assert_eq!(read_tree(&target.join("acme/rest-api")), before);
    assert_eq!(fed.nodes[2].json(&["verify", &t]).unwrap()["ok"], true);

    // A second pack, mirrored by B; then A dies and C still installs it from B.
    let pack2 = root.join("pack2");
    make_pack(&pack2, "acme/http-core", "2.0.0", &[], 20_000).unwrap();
    fed.nodes[0]
        .json(&["publish", &pack2.to_string_lossy(), "--key", "k0"])
        .unwrap();
    wait_for(DEADLINE, "B to mirror pack 2", || {
        (status(&fed.nodes[1])["blobs"] == 3).then_some(())
    })
    .unwrap();
    wait_for(DEADLINE, "C to see pack 2", || {
        search_ids(&fed.nodes[2], "http-core")
            .contains(&"acme/http-core@2.0.0".to_string())
            .then_some(())
    })
    .unwrap();
    fed.nodes[0].kill9().unwrap();
    let t2 = root.join("c-install-2").to_string_lossy().to_string();
    let done = fed.nodes[2].json(&["install", "acme/http-core", "--to", &t2]).unwrap();
    assert_eq!(done["installed"][0]["id"], "acme/http-core@2.0.0");
    assert_eq!(fed.nodes[2].json(&["verify", &t2]).unwrap()["ok"], true);
}

#[test]
fn concurrent_namespace_claims_converge_on_one_owner() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let mut fed = Federation::empty(&bin(), root, 3).unwrap();
    // Two isolated nodes each take `shared/` with a different key.
    let a = fed.init_home("a", "company", None, &[]).unwrap();
    let b = fed.init_home("b", "company", None, &[]).unwrap();
    let node_a = TestNode::start(&bin(), &a).unwrap();
    let mut node_b = TestNode::start(&bin(), &b).unwrap();
    for (node, key, dir) in [(&node_a, "k0", "pa"), (&node_b, "k1", "pb")] {
        let d = root.join(dir);
        make_pack(&d, "shared/thing", "1.0.0", &[], 0).unwrap();
        std::fs::write(d.join("templates/who.txt"), key).unwrap();
        node.json(&["publish", &d.to_string_lossy(), "--key", key]).unwrap();
    }
    // Now connect them: b restarts with a as bootstrap.
    node_b.stop().unwrap();
    let cfg = std::fs::read_to_string(b.join("config.toml")).unwrap();
    let boot = node_a.p2p_addr().unwrap();
    std::fs::write(
        b.join("config.toml"),
        cfg.replace("bootstrap = []", &format!("bootstrap = [\"{boot}\"]")),
    )
    .unwrap();
    let node_b = TestNode::start(&bin(), &b).unwrap();
    fed.nodes.push(node_a);
    fed.nodes.push(node_b);
    let owner = |n: &TestNode| {
        n.json(&["info", "shared/thing@1.0.0"])
            .ok()
            .map(|v| v["publisher"].clone())
    };
    wait_for(DEADLINE, "both nodes to agree on the owner", || {
        let (oa, ob) = (owner(&fed.nodes[0])?, owner(&fed.nodes[1])?);
        (oa == ob).then_some(())
    })
    .unwrap();
    // And each node still shows exactly one thing@1.0.0.
    for n in &fed.nodes {
        let v = n.json(&["search", "thing"]).unwrap();
        assert_eq!(v["results"].as_array().unwrap().len(), 1);
    }
}

#[test]
fn corrupt_provider_is_detected_and_another_one_serves() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let mut fed = Federation::up(&bin(), root, &["company", "regional", "public"]).unwrap();
    let pack = root.join("p");
    make_pack(&pack, "acme/big", "1.0.0", &[], 3_000_000).unwrap();
    fed.nodes[0]
        .json(&["publish", &pack.to_string_lossy(), "--key", "k0"])
        .unwrap();
    wait_for(DEADLINE, "B to mirror", || {
        (status(&fed.nodes[1])["blobs"] == 1).then_some(())
    })
    .unwrap();
    wait_for(DEADLINE, "C to see it", || {
        search_ids(&fed.nodes[2], "big")
            .contains(&"acme/big@1.0.0".to_string())
            .then_some(())
    })
    .unwrap();

    // B (regional, asked first) comes back as the adversary, on the same
    // home, and serves corrupted bytes on both transports.
    let b_home = fed.nodes[1].home.clone();
    fed.nodes[1].stop().unwrap();
    fed.nodes[1] = TestNode::start_adversary(&bin(), &testnet_bin(), &b_home).unwrap();
    fed.nodes[1]
        .control("/v1/test/serve", &serde_json::json!({"mode": "corrupt"}))
        .unwrap();
    fed.wait_connected(DEADLINE).unwrap();
    // C asks regional mirrors first, once B's announcement says it is one.
    wait_for(DEADLINE, "C to hear B's announcement", || {
        let peers = fed.nodes[2].json(&["peers"]).ok()?;
        peers.as_array()?.iter().any(|p| p["role"] == "regional").then_some(())
    })
    .unwrap();

    let t = root.join("c").to_string_lossy().to_string();
    let done = fed.nodes[2].json(&["install", "acme/big", "--to", &t]).unwrap();
    assert_eq!(done["installed"][0]["id"], "acme/big@1.0.0");
    assert_eq!(fed.nodes[2].json(&["verify", &t]).unwrap()["ok"], true);
    let log = std::fs::read_to_string(fed.nodes[2].home.join("node.log")).unwrap();
    assert!(
        log.contains("corrupted bytes"),
        "C should have detected B's corruption:\n{log}"
    );
}

#[test]
fn forged_gossip_is_rejected_and_the_sender_penalized() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let fed = Federation::empty(&bin(), root, 3).unwrap();
    let victim_home = fed.init_home("victim", "public", None, &[]).unwrap();
    let victim = TestNode::start(&bin(), &victim_home).unwrap();
    let boot = victim.p2p_addr().unwrap();
    let evil_home = fed.init_home("evil", "public", Some(&boot), &[]).unwrap();
    let evil = TestNode::start_adversary(&bin(), &testnet_bin(), &evil_home).unwrap();
    let evil_id = evil.json(&["status"]).unwrap()["peer_id"].as_str().unwrap().to_string();
    wait_for(DEADLINE, "connection", || {
        (victim.json(&["peers"]).ok()?.as_array()?.len() == 1).then_some(())
    })
    .unwrap();

    // A real signed release from evil's node, with one payload byte flipped.
    let pack = root.join("p");
    make_pack(&pack, "evil/pack", "1.0.0", &[], 0).unwrap();
    let published = evil.json(&["publish", &pack.to_string_lossy(), "--key", "k2"]).unwrap();
    let info = evil.json(&["info", "evil/pack"]).unwrap();
    let mut env = hex::decode(info["envelope"].as_str().unwrap()).unwrap();
    let n = env.len();
    env[n - 80] ^= 0x01; // inside the payload or signature: never valid
    let before = status(&victim);
    // Keep sending forged records until the victim has judged some (gossip
    // needs the mesh to form first).
    wait_for(DEADLINE, "the victim to reject forged records", || {
        let mut garbage = env.clone();
        garbage.extend_from_slice(
            &std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
                .to_be_bytes(),
        );
        let _ = evil.gossip("", &garbage);
        (status(&victim)["rejected_records"].as_u64()? > before["rejected_records"].as_u64()?).then_some(())
    })
    .unwrap();
    let score = wait_for(DEADLINE, "evil's score to fall", || {
        let peers = victim.json(&["peers"]).ok()?;
        let p = peers
            .as_array()?
            .iter()
            .find(|p| p["peer_id"] == evil_id.as_str())?
            .clone();
        let s = p["score"].as_f64()?;
        (s < 0.0).then_some(s)
    })
    .unwrap();
    assert!(score < 0.0);
    // The forged record was not stored; the victim keeps running and answers.
    let after = status(&victim);
    assert!(after["releases"].as_u64().unwrap() <= 1, "{after}");
    assert!(victim.json(&["search", "evil"]).is_ok());
    // The positive control: the adversary's genuine release does arrive.
    wait_for(DEADLINE, "the genuine release to arrive", || {
        victim.has_release("evil/pack@1.0.0").then_some(())
    })
    .unwrap();
    let _ = published;
}

#[test]
fn org_packs_reach_org_peers_only() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    // a and b form an org; c is outside.
    // C, outside the org, is the adversary: it asks for the org blob by hash.
    let fed = Federation::org_trio(&bin(), root, Some(&testnet_bin())).unwrap();

    // A public pack too, so we know C is in sync when it sees that one.
    let public = root.join("public");
    make_pack(&public, "acme/open", "1.0.0", &[], 0).unwrap();
    let secret = root.join("secret");
    make_pack(&secret, "acme/secret", "1.0.0", &[], 30_000).unwrap();
    let p = fed.nodes[0]
        .json(&[
            "publish",
            &secret.to_string_lossy(),
            "--key",
            "k0",
            "--visibility",
            "org",
        ])
        .unwrap();
    let hash = p["hash"].as_str().unwrap().to_string();
    fed.nodes[0]
        .json(&["publish", &public.to_string_lossy(), "--key", "k0"])
        .unwrap();

    // B (org) sees and installs it.
    wait_for(DEADLINE, "B to see the org pack", || {
        fed.nodes[1].json(&["info", "acme/secret"]).ok()
    })
    .unwrap();
    let t = root.join("b-install").to_string_lossy().to_string();
    fed.nodes[1].json(&["install", "acme/secret", "--to", &t]).unwrap();
    assert_eq!(fed.nodes[1].json(&["verify", &t]).unwrap()["ok"], true);

    // C sees the public pack but never the org one, and cannot fetch its bytes.
    wait_for(DEADLINE, "C to see the public pack", || {
        fed.nodes[2].json(&["info", "acme/open"]).ok()
    })
    .unwrap();
    assert!(search_ids(&fed.nodes[2], "secret").is_empty());
    assert!(fed.nodes[2].json(&["info", "acme/secret"]).is_err());
    let size = p["size"].as_u64().unwrap();
    let resp = fed.nodes[2]
        .control("/v1/test/fetch", &serde_json::json!({"hash": hash, "size": size}))
        .unwrap_err()
        .to_string();
    assert!(resp.contains("502"), "C must not be able to fetch the org blob: {resp}");
    assert_eq!(status(&fed.nodes[2])["blobs"], 0);
    // The positive control: the same adversary fetches the public pack by hash.
    let open = fed.nodes[0].json(&["info", "acme/open"]).unwrap();
    fed.nodes[2]
        .control(
            "/v1/test/fetch",
            &serde_json::json!({"hash": open["hash"], "size": open["size"]}),
        )
        .unwrap();
    assert_eq!(status(&fed.nodes[2])["blobs"], 1);

    // Channel by channel, C learnt nothing of the org pack, and the public
    // pack is the positive control on each. DHT: providers of each hash;
    // sync and gossip: entries of C's registry documents and C's store;
    // learning: install counts C took from summaries; announcements: the
    // release count A tells the public.
    let (c, a) = (&fed.nodes[2], &fed.nodes[0]);
    let observe = |hash: &str, needle: &str| {
        c.control(
            "/v1/test/observed",
            &serde_json::json!({"hash": hash, "needle": needle}),
        )
        .unwrap()
    };
    let open_hash = open["hash"].as_str().unwrap();
    let control = wait_for(DEADLINE, "the public pack in C's DHT view and documents", || {
        let o = observe(open_hash, "acme/open");
        (o["providers"].as_u64()? > 0 && o["registry_entries"].as_u64()? > 0).then_some(o)
    })
    .unwrap();
    let org = observe(&hash, "acme/secret");
    assert_eq!(org["providers"], 0, "org hash in the DHT: {org} (control {control})");
    assert_eq!(org["registry_entries"], 0, "org record synced to C: {org}");
    assert_eq!(org["usage"], 0, "org usage learnt by C: {org}");
    assert_eq!(status(c)["releases"], 1, "C stores the public release only");
    let a_id = status(a)["peer_id"].as_str().unwrap().to_string();
    let announced = wait_for(DEADLINE, "A's announcement to reach C", || {
        let peers = c.json(&["peers"]).ok()?;
        let p = peers
            .as_array()?
            .iter()
            .find(|p| p["peer_id"] == a_id.as_str())?
            .clone();
        (p["releases"].as_u64()? >= 1).then_some(p)
    })
    .unwrap();
    assert_eq!(
        announced["releases"], 1,
        "A announces its public release only: {announced}"
    );
    // API of A without the token (a browser page, another user): only the
    // public pack; with the token (the CLI) the org one too.
    let api = packfed_testnet::NodeJson::read(&a.home).unwrap().api;
    let hits = packfed_testnet::get_json(&api, "/v1/search?q=acme")
        .unwrap()
        .to_string();
    assert!(hits.contains("acme/open") && !hits.contains("acme/secret"), "{hits}");
    assert!(packfed_testnet::get_json(&api, "/v1/info/acme/secret").is_err());
    assert!(packfed_testnet::get_json(&api, "/v1/packages/acme/secret").is_err());
    assert!(packfed_testnet::get_json(&api, &format!("/v1/blobs/{hash}")).is_err());
    let own = a.json(&["search", "secret"]).unwrap();
    assert!(own.to_string().contains("acme/secret"), "{own}");

    // Learning, with its positive control: each node restarted in turn with
    // rounds of 2 s (one at a time, so the others are where it remembers
    // them), then B installs the public and the org pack after a search
    // showed both. C learns the public pack's installs from B's summary,
    // and nothing of the org pack's. These homes share their member keys,
    // and a node without witness keys signs summaries with its first member
    // key: B's k0 is renamed so it signs with k1 (C signs with k0), and A
    // (a witness with all three) takes no part, so no summary stands for
    // another node's.
    let mut fed = fed;
    for i in 0..fed.nodes.len() {
        let n = &mut fed.nodes[i];
        n.stop().unwrap();
        let path = n.home.join("config.toml");
        let mut cfg = std::fs::read_to_string(&path).unwrap();
        cfg = cfg.replace("[learn]\nenabled = true", &format!("[learn]\nenabled = {}", i != 0));
        assert!(cfg.contains("round = \"1h\""), "{cfg}");
        std::fs::write(&path, cfg.replace("round = \"1h\"", "round = \"2s\"")).unwrap();
        if i == 1 {
            let keys = n.home.join("keys");
            std::fs::rename(keys.join("k0.key"), keys.join("zz-k0.key")).unwrap();
        }
        n.restart().unwrap();
        fed.wait_connected(DEADLINE).unwrap();
    }
    let (b, c) = (&fed.nodes[1], &fed.nodes[2]);
    let shown = b.json(&["search", "acme"]).unwrap().to_string();
    assert!(shown.contains("acme/open") && shown.contains("acme/secret"), "{shown}");
    for (pack, dir) in [("acme/open", "b-open"), ("acme/secret", "b-secret")] {
        let to = root.join(dir).to_string_lossy().into_owned();
        b.json(&["install", pack, "--to", &to]).unwrap();
    }
    let usage = |hash: &str| {
        c.control("/v1/test/observed", &serde_json::json!({"hash": hash, "needle": ""}))
            .unwrap()["usage"]
            .as_u64()
            .unwrap()
    };
    wait_for(
        Duration::from_secs(60),
        "C to learn the public pack's installs from B",
        || (usage(open_hash) > 0).then_some(()),
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e}: B {} C {}",
            b.json(&["learn", "status"]).unwrap(),
            c.json(&["learn", "status"]).unwrap()
        )
    });
    assert_eq!(usage(&hash), 0, "org usage learnt by C");
}

/// A deprecation signed on one node reaches another (gossip, and registry
/// sync after a kill -9), shows in versions, info and search there, and
/// makes an install warn. One signed by a key that does not own the
/// namespace is refused.
#[test]
fn a_deprecation_travels_and_installs_warn_with_its_message() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let mut fed = Federation::up(&bin(), root, &["company", "public"]).unwrap();
    for (name, v) in [("acme/old", "1.0.0"), ("acme/old", "2.0.0")] {
        let pack = root.join(format!("{}-{v}", name.replace('/', "-")));
        make_pack(&pack, name, v, &[], 1_000).unwrap();
        fed.nodes[0]
            .json(&["publish", &pack.to_string_lossy(), "--key", "k0"])
            .unwrap();
    }
    wait_for(DEADLINE, "B to see both versions", || {
        (fed.nodes[1].json(&["versions", "acme/old"]).ok()?.as_array()?.len() == 2).then_some(())
    })
    .unwrap();

    // Not the owner: refused, nothing recorded.
    let out = fed.nodes[0]
        .run(&["--json", "deprecate", "acme/old", "--key", "k1", "--message", "forged"])
        .unwrap();
    assert!(!out.status.success());
    let e: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(e["code"], "not_owner", "{e}");

    // B dies hard; the owner deprecates 1.x while it is down.
    fed.nodes[1].kill9().unwrap();
    let d = fed.nodes[0]
        .json(&[
            "deprecate",
            "acme/old@<2",
            "--key",
            "k0",
            "--message",
            "1.x is unmaintained",
            "--use",
            "acme/new",
        ])
        .unwrap();
    assert_eq!(d["deprecation_id"].as_str().unwrap().len(), 64, "{d}");
    fed.nodes[1].restart().unwrap();

    let versions = wait_for(DEADLINE, "B to hold the deprecation", || {
        let v = fed.nodes[1].json(&["versions", "acme/old"]).ok()?;
        v[1]["deprecated"].is_string().then_some(v)
    })
    .unwrap();
    assert_eq!(versions[0]["version"], "2.0.0");
    assert_eq!(
        versions[0]["deprecated"],
        Value::Null,
        "2.0.0 is not covered: {versions}"
    );
    assert_eq!(versions[1]["deprecated"], "1.x is unmaintained (use acme/new instead)");
    assert!(versions[1]["published_at"].as_str().unwrap().ends_with('Z'));
    assert!(versions[1]["size"].as_u64().unwrap() > 1_000);

    let info = fed.nodes[1].json(&["info", "acme/old@1.0.0"]).unwrap();
    assert_eq!(info["deprecated"]["message"], "1.x is unmaintained", "{info}");
    assert_eq!(info["deprecated"]["replacement"], "acme/new");
    let found = fed.nodes[1].json(&["search", "old", "--all-versions"]).unwrap();
    let hit = found["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["id"] == "acme/old@1.0.0")
        .unwrap_or_else(|| panic!("{found}"));
    assert_eq!(hit["deprecated"], "1.x is unmaintained");

    let target = root.join("b-install");
    let done = fed.nodes[1]
        .json(&["install", "acme/old@^1", "--to", &target.to_string_lossy()])
        .unwrap();
    assert_eq!(
        done["warnings"],
        serde_json::json!(["acme/old@1.0.0 is deprecated: 1.x is unmaintained (use acme/new instead)"])
    );
    // The control: 2.0.0 installs without a warning.
    let done = fed.nodes[1]
        .json(&["install", "acme/old@^2", "--to", &target.to_string_lossy()])
        .unwrap();
    assert!(done.get("warnings").is_none(), "{done}");
}

/// `/metrics` of a node, parsed: series (name with labels) -> value.
fn scrape(node: &TestNode) -> std::collections::BTreeMap<String, f64> {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(&node.api).unwrap();
    write!(
        c,
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    c.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: text/plain"), "{head}");
    body.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("bad line {l:?}"));
            (
                series.to_string(),
                value.parse().unwrap_or_else(|_| panic!("bad value in {l:?}")),
            )
        })
        .collect()
}

/// Each counter moves after a publish, a search and a fetch, and the text
/// parses as Prometheus exposition lines.
#[test]
fn metrics_move_after_a_publish_a_search_and_a_fetch() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let fed = Federation::up(&bin(), root, &["company", "public"]).unwrap();
    let (a, b) = (&fed.nodes[0], &fed.nodes[1]);
    let before = scrape(b);
    assert_eq!(before["packfed_search_seconds_count"], 0.0);
    assert_eq!(before["packfed_fetch_seconds_count"], 0.0);

    let pack = root.join("m");
    make_pack(&pack, "acme/metered", "1.0.0", &[], 20_000).unwrap();
    a.json(&["publish", &pack.to_string_lossy(), "--key", "k0"]).unwrap();
    assert_eq!(scrape(a)["packfed_publish_total{result=\"ok\"}"], 1.0);
    wait_for(DEADLINE, "B to see the release", || {
        search_ids(b, "metered")
            .contains(&"acme/metered@1.0.0".to_string())
            .then_some(())
    })
    .unwrap();
    let target = root.join("b-install");
    b.json(&["install", "acme/metered", "--to", &target.to_string_lossy()])
        .unwrap();

    let after = scrape(b);
    assert!(after["packfed_search_seconds_count"] >= 1.0, "{after:?}");
    assert_eq!(after["packfed_fetch_seconds_count"], 1.0, "{after:?}");
    assert!(after["packfed_blob_bytes_served_total"] > 20_000.0, "{after:?}");
    assert_eq!(after["packfed_releases"], 1.0);
    assert!(after["packfed_peers_connected"] >= 1.0);
    assert_eq!(after["packfed_quarantined"], 0.0);
    assert!(after["packfed_sync_bytes_total{direction=\"in\"}"] > 0.0, "{after:?}");
    let gossip_accepted: f64 = after
        .iter()
        .filter(|(k, _)| k.starts_with("packfed_gossip_messages_total{") && k.contains("result=\"accept\""))
        .map(|(_, v)| v)
        .sum();
    assert!(gossip_accepted >= 1.0, "{after:?}");
}
