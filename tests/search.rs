//! Search end-to-end: the tantivy index behind `packfed search` on real node
//! processes, federated fan-out with org isolation, and a peer that does not
//! answer.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use packfed_testnet::{Federation, TestNode, wait_for};
use serde_json::Value;

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_packfed"))
}

/// The `testnet` binary: its `adversary` command is the hostile peer.
fn testnet_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_testnet"))
}

const DEADLINE: Duration = Duration::from_secs(30);

/// A pack with chosen searchable fields. `polished` adds a README and
/// templates (a higher quality tier than a bare pack).
fn pack(dir: &Path, name: &str, description: &str, keywords: &[&str], category: &str, license: &str, polished: bool) {
    std::fs::create_dir_all(dir.join("templates")).unwrap();
    let kw = keywords
        .iter()
        .map(|k| format!("\"{k}\""))
        .collect::<Vec<_>>()
        .join(", ");
    std::fs::write(
        dir.join("pack.toml"),
        format!(
            "[pack]\nname = \"{name}\"\nversion = \"1.0.0\"\ndescription = \"{description}\"\nlicense = \"{license}\"\nkeywords = [{kw}]\ncategory = \"{category}\"\nauthors = [\"T <t@example.test>\"]\n"
        ),
    )
    .unwrap();
    std::fs::write(dir.join("LICENSE"), format!("{license}\n")).unwrap();
    std::fs::write(dir.join("templates/main.tmpl"), format!("{name}\n")).unwrap();
    if polished {
        std::fs::write(
            dir.join("README.md"),
            format!("# {name}\n\n{}", "Usage notes. ".repeat(40)),
        )
        .unwrap();
        std::fs::create_dir_all(dir.join("examples")).unwrap();
        std::fs::write(dir.join("examples/basic.tmpl"), "example\n").unwrap();
        std::fs::create_dir_all(dir.join("tests")).unwrap();
        std::fs::write(dir.join("tests/basic.txt"), "expected\n").unwrap();
    }
}

fn publish(node: &TestNode, root: &Path, name: &str, f: (&str, &[&str], &str, &str, bool)) -> Value {
    let dir = root.join(name.replace('/', "_"));
    pack(&dir, name, f.0, f.1, f.2, f.3, f.4);
    node.json(&["publish", &dir.to_string_lossy(), "--key", "k0"]).unwrap()
}

fn ids(v: &Value) -> Vec<String> {
    v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

fn search(node: &TestNode, args: &[&str]) -> Value {
    let mut full = vec!["search"];
    full.extend_from_slice(args);
    node.json(&full).unwrap()
}

#[test]
fn typos_filters_boosts_and_trust_signals_on_one_node() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let fed = Federation::up(&bin(), root, &["company"]).unwrap();
    let n = &fed.nodes[0];
    publish(
        n,
        root,
        "acme/rest-api",
        ("Handlers for HTTP services", &["http"], "web", "MIT", true),
    );
    publish(
        n,
        root,
        "acme/orm-kit",
        (
            "Table mappers for a rest api over SQL",
            &["sql"],
            "db",
            "Apache-2.0",
            false,
        ),
    );
    publish(
        n,
        root,
        "kube/operator",
        (
            "A kubernetes operator scaffold",
            &["kubernetes"],
            "cloud",
            "MIT OR Apache-2.0",
            true,
        ),
    );
    // Identical but for the name; alpha is published last (newer).
    publish(
        n,
        root,
        "beta/twin-kit",
        ("Twin templates", &["twin"], "web", "MIT", true),
    );
    publish(
        n,
        root,
        "alpha/twin-kit",
        ("Twin templates", &["twin"], "web", "MIT", true),
    );

    // Typo tolerance: one edit in a name still finds it, first.
    assert_eq!(
        ids(&search(n, &["rest-apj"])).first().map(String::as_str),
        Some("acme/rest-api@1.0.0")
    );
    assert_eq!(
        ids(&search(n, &["kubernets"])).first().map(String::as_str),
        Some("kube/operator@1.0.0")
    );

    // Multi-field boosts: the name match ranks above the description match.
    let v = search(n, &["rest api", "--explain"]);
    assert_eq!(ids(&v), vec!["acme/rest-api@1.0.0", "acme/orm-kit@1.0.0"], "{v}");
    let top = &v["results"][0];
    assert!(top["explain"]["text"].as_f64().unwrap() > v["results"][1]["explain"]["text"].as_f64().unwrap());
    assert_eq!(top["source"], n.json(&["status"]).unwrap()["peer_id"], "{v}");

    // Filters.
    assert_eq!(ids(&search(n, &["", "--category", "db"])), vec!["acme/orm-kit@1.0.0"]);
    let apache = ids(&search(n, &["", "--license", "apache-2.0"]));
    assert_eq!(apache.len(), 2, "an id inside an OR expression counts: {apache:?}");
    assert!(apache.contains(&"kube/operator@1.0.0".to_string()));
    let all = search(n, &["", "--limit", "50"]);
    let tier_of_orm = all["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "acme/orm-kit")
        .unwrap()["tier"]
        .as_str()
        .unwrap()
        .to_string();
    let same_tier = search(n, &["", "--tier", &tier_of_orm]);
    assert!(!ids(&same_tier).is_empty());
    assert!(
        same_tier["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["tier"] == tier_of_orm.as_str()),
        "{same_tier}"
    );
    assert!(ids(&search(n, &["", "--attested", "audit"])).is_empty());
    let bad = n.run(&["search", "x", "--attested", "nonsense", "--json"]).unwrap();
    assert!(!bad.status.success());
    let err: Value = serde_json::from_slice(&bad.stdout).unwrap();
    assert_eq!(err["code"], "bad_kind", "{err}");

    // Identical packs: the newer first, then the attested one above it.
    let v = search(n, &["twin-kit", "--explain"]);
    assert_eq!(ids(&v), vec!["alpha/twin-kit@1.0.0", "beta/twin-kit@1.0.0"], "{v}");
    n.json(&[
        "attest",
        "beta/twin-kit@1.0.0",
        "--kind",
        "audit",
        "--result",
        "pass",
        "--key",
        "k1",
    ])
    .unwrap();
    let v = wait_for(DEADLINE, "the attestation to reach the ranking", || {
        let v = search(n, &["twin-kit", "--explain"]);
        (ids(&v).first().map(String::as_str) == Some("beta/twin-kit@1.0.0")).then_some(v)
    })
    .unwrap();
    assert_eq!(v["results"][0]["attestations"], 1, "{v}");
    assert!(v["results"][0]["explain"]["attested"].as_f64().unwrap() > 0.0);
    assert_eq!(
        ids(&search(n, &["", "--attested", "audit"])),
        vec!["beta/twin-kit@1.0.0"]
    );

    // Versions: the newest by default, every one on request.
    let dir = root.join("twin2");
    pack(&dir, "alpha/twin-kit", "Twin templates", &["twin"], "web", "MIT", true);
    let toml = std::fs::read_to_string(dir.join("pack.toml")).unwrap();
    std::fs::write(dir.join("pack.toml"), toml.replace("1.0.0", "1.1.0")).unwrap();
    n.json(&["publish", &dir.to_string_lossy(), "--key", "k0"]).unwrap();
    let alpha: Vec<String> = ids(&search(n, &["twin-kit"]))
        .into_iter()
        .filter(|i| i.starts_with("alpha/"))
        .collect();
    assert_eq!(alpha, vec!["alpha/twin-kit@1.1.0"]);
    let every = ids(&search(n, &["twin-kit", "--all-versions"]));
    assert!(every.contains(&"alpha/twin-kit@1.0.0".to_string()), "{every:?}");
}

#[test]
fn a_damaged_index_is_rebuilt_from_the_store() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let mut fed = Federation::up(&bin(), root, &["company"]).unwrap();
    publish(
        &fed.nodes[0],
        root,
        "acme/rest-api",
        ("Handlers for HTTP services", &["http"], "web", "MIT", false),
    );
    let home = fed.nodes[0].home.clone();
    fed.nodes[0].stop().unwrap();
    let index = home.join("index");
    let mut damaged = 0;
    for e in std::fs::read_dir(&index).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::write(&p, b"garbage").unwrap();
            damaged += 1;
        }
    }
    assert!(damaged > 0, "the index lives in {}", index.display());
    let node = TestNode::start(&bin(), &home).unwrap();
    assert_eq!(ids(&search(&node, &["rest"])), vec!["acme/rest-api@1.0.0"]);
    let status = node.json(&["status"]).unwrap();
    assert_eq!(status["search"]["rebuilt"], true, "{status}");
    assert_eq!(status["search"]["documents"], 1, "{status}");
}

#[test]
fn fan_out_keeps_org_entries_in_the_org_and_reports_a_silent_peer() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let mut fed = Federation::org_trio(&bin(), root, None).unwrap();
    let (a, b, c) = (&fed.nodes[0], &fed.nodes[1], &fed.nodes[2]);
    let peer_id = |n: &TestNode| n.json(&["status"]).unwrap()["peer_id"].as_str().unwrap().to_string();
    let (ida, idb, idc) = (peer_id(a), peer_id(b), peer_id(c));

    let secret = root.join("secret");
    pack(
        &secret,
        "acme/secret-sauce",
        "Internal sauce recipes",
        &["sauce"],
        "web",
        "MIT",
        false,
    );
    a.json(&[
        "publish",
        &secret.to_string_lossy(),
        "--key",
        "k0",
        "--visibility",
        "org",
    ])
    .unwrap();
    publish(
        a,
        root,
        "acme/open-sauce",
        ("Public sauce recipes", &["sauce"], "web", "MIT", false),
    );

    // C gets the public pack from every peer it asks, with every source.
    let v = wait_for(DEADLINE, "C to find the public pack on itself and both peers", || {
        let v = search(c, &["sauce", "--all-peers", "--timeout", "2s"]);
        let r = v["results"].as_array()?.first()?.clone();
        (r["sources"].as_array()?.len() == 3).then_some(v)
    })
    .unwrap();
    assert_eq!(
        ids(&v),
        vec!["acme/open-sauce@1.0.0"],
        "the org pack never reaches C: {v}"
    );
    assert_eq!(v["partial"], false, "{v}");
    let queried: Vec<&str> = v["peers_queried"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(
        queried.contains(&ida.as_str()) && queried.contains(&idb.as_str()),
        "{v}"
    );
    assert_eq!(
        v["results"][0]["source"],
        idc.as_str(),
        "C holds the public record itself: {v}"
    );

    // B, in the org, finds both, and asks A (its org peer) by default.
    let v = wait_for(DEADLINE, "B to find the org pack", || {
        let v = search(b, &["sauce"]);
        (ids(&v).len() == 2).then_some(v)
    })
    .unwrap();
    assert!(
        v["peers_queried"].as_array().unwrap().iter().any(|p| p == ida.as_str()),
        "org peers are always asked: {v}"
    );

    // A's org peer B stops answering (SIGSTOP): A's search still returns
    // within the deadline, says it is partial and names B.
    let b_pid = fed.nodes[1].child.as_ref().unwrap().id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-STOP", &b_pid])
            .status()
            .unwrap()
            .success()
    );
    let started = Instant::now();
    let v = search(&fed.nodes[0], &["sauce", "--timeout", "300ms"]);
    let took = started.elapsed();
    let _ = std::process::Command::new("kill").args(["-CONT", &b_pid]).status();
    assert_eq!(v["partial"], true, "{v}");
    assert_eq!(v["unanswered"][0]["peer_id"], idb.as_str(), "{v}");
    assert_eq!(ids(&v).len(), 2, "A's own results are all there: {v}");
    // The CLI starts a process and connects; the search itself waits 300 ms.
    assert!(took < Duration::from_secs(5), "search took {took:?}");
    fed.nodes[1].stop().unwrap();
}

/// Sets `[learn] round` in a home's config.
fn set_round(home: &Path, round: &str) {
    let path = home.join("config.toml");
    let cfg = std::fs::read_to_string(&path).unwrap();
    let cfg = if cfg.contains("[learn]") {
        cfg.replace("round = \"1h\"", &format!("round = \"{round}\""))
    } else {
        format!("{cfg}\n[learn]\nround = \"{round}\"\n")
    };
    assert!(cfg.contains(&format!("round = \"{round}\"")), "{cfg}");
    std::fs::write(path, cfg).unwrap();
}

#[test]
fn nodes_learn_ranking_together_from_signed_summaries() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let mut fed = Federation::empty(&bin(), root, 3).unwrap();
    let first = fed.init_home("n0", "public", None, &[]).unwrap();
    set_round(&first, "2s");
    // n0 is the adversary: a full node (its own summaries count like any
    // other's, the positive control) that also gossips hostile ones.
    fed.nodes
        .push(TestNode::start_adversary(&bin(), &testnet_bin(), &first).unwrap());
    let boot = fed.nodes[0].p2p_addr().unwrap();
    for i in 1..3 {
        let home = fed.init_home(&format!("n{i}"), "company", Some(&boot), &[]).unwrap();
        set_round(&home, "2s");
        fed.nodes.push(TestNode::start(&bin(), &home).unwrap());
    }
    fed.wait_connected(DEADLINE).unwrap();
    let (n0, n1, n2) = (&fed.nodes[0], &fed.nodes[1], &fed.nodes[2]);

    // Users of n1 and n2 search, then install what they found.
    // (An event needs at least two results shown: one says nothing about order.)
    publish(
        n1,
        root,
        "acme/widget",
        ("Widget templates", &["widget"], "web", "MIT", true),
    );
    publish(
        n1,
        root,
        "acme/widget-lite",
        ("Widget templates, lite", &["widget"], "web", "MIT", false),
    );
    wait_for(DEADLINE, "n2 to see the packs", || {
        n2.json(&["info", "acme/widget-lite"]).ok()
    })
    .unwrap();
    for (i, n) in [n1, n2].into_iter().enumerate() {
        assert_eq!(ids(&search(n, &["widget"])).len(), 2);
        let to = root.join(format!("install-{i}"));
        n.json(&["install", "acme/widget", "--to", &to.to_string_lossy()])
            .unwrap();
        let st = n.json(&["learn", "status"]).unwrap();
        assert_eq!(st["local_samples"], 1, "{st}");
    }

    // Every node aggregates every node's summary and adopts the same model.
    let statuses: Vec<Value> = [n0, n1, n2]
        .iter()
        .map(|n| {
            wait_for(DEADLINE, "a model trained on the installs", || {
                let st = n.json(&["learn", "status"]).ok()?;
                (st["contributors"].as_array()?.len() == 3 && st["model_version"].as_u64()? >= 1).then_some(st)
            })
            .unwrap_or_else(|e| panic!("{e}: {}", n.json(&["learn", "status"]).unwrap()))
        })
        .collect();
    let first_weights = &statuses[0]["weights"];
    assert_ne!(
        *first_weights,
        serde_json::json!([1.0, 0.25, 0.3, 0.2, 0.05]),
        "{first_weights}"
    );
    // n0 never installed anything: the popularity it shows came from peers.
    let info = wait_for(DEADLINE, "install counts from the aggregates", || {
        let v = n0.json(&["info", "acme/widget"]).ok()?;
        (v["installs"].as_u64()? >= 2).then_some(v)
    })
    .unwrap();
    assert_eq!(info["failed_installs"], 0, "{info}");

    // Summaries of another schema or with a bad signature are ignored.
    let fed_id = n0.json(&["status"]).unwrap()["federation_id"]
        .as_str()
        .unwrap()
        .to_string();
    let rejected = |n: &TestNode, what: &str| {
        n.json(&["learn", "status"]).unwrap()["rejected"][what]
            .as_u64()
            .unwrap()
    };
    for (what, schema, corrupt) in [("wrong_schema", 99, false), ("bad_signature", 1, true)] {
        let before: Vec<u64> = [n1, n2].iter().map(|n| rejected(n, what)).collect();
        wait_for(DEADLINE, &format!("peers to count a summary as {what}"), || {
            let hex =
                packfed_testnet::sign_learning_summary_hex(&fed_id, 2000, schema, [5.0, 0.0, 0.0, 0.0, 0.0], corrupt)
                    .unwrap();
            let _ = n0.gossip("learn", &hex::decode(hex).unwrap());
            [n1, n2]
                .iter()
                .zip(&before)
                .all(|(n, b)| rejected(n, what) > *b)
                .then_some(())
        })
        .unwrap();
    }

    // 300 sybils: valid summaries of the open round, within every bound,
    // each from a fresh key. None is a member's, so none is kept, and no
    // later aggregate counts anyone but the three nodes (the positive
    // control: their own summaries keep counting).
    let members: std::collections::BTreeSet<String> = statuses[0]["contributors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    // A second adversary floods: n0 is graylisted by now (its forged
    // summaries above), so nothing it sends reaches n1 or n2.
    let evil_home = fed.init_home("evil", "public", Some(&boot), &[]).unwrap();
    set_round(&evil_home, "2s");
    let evil = TestNode::start_adversary(&bin(), &testnet_bin(), &evil_home).unwrap();
    let before: Vec<u64> = [n1, n2].iter().map(|n| rejected(n, "not_member")).collect();
    wait_for(DEADLINE, "peers to refuse the sybils", || {
        let sybils: Vec<String> = (0..300)
            .map(|_| {
                packfed_testnet::sign_learning_summary_hex(&fed_id, 2000, 1, [2.5, 0.0, 0.0, 0.0, 0.0], false).unwrap()
            })
            .collect();
        let _ = evil.control("/v1/test/flood", &serde_json::json!({"topic": "learn", "hex": sybils}));
        [n1, n2]
            .iter()
            .zip(&before)
            .all(|(n, b)| rejected(n, "not_member") > *b)
            .then_some(())
    })
    .unwrap();
    for n in [n1, n2] {
        let flooded = n.json(&["learn", "status"]).unwrap()["round"].as_u64().unwrap();
        let st = wait_for(DEADLINE, "an aggregate after the flood", || {
            let st = n.json(&["learn", "status"]).ok()?;
            (st["last_aggregated_round"].as_u64()? > flooded).then_some(st)
        })
        .unwrap();
        let counted: std::collections::BTreeSet<String> = st["contributors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_string())
            .collect();
        assert!(!counted.is_empty() && counted.is_subset(&members), "{st}");
        for waiting in st["pending_summaries"].as_object().unwrap().values() {
            assert!(waiting.as_u64().unwrap() <= 3, "no sybil waits in a round: {st}");
        }
    }
}
