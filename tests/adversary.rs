//! The adversary (`testnet adversary --home DIR`) driven over HTTP: it is a
//! full node of the federation, its hostile controls sit behind its API
//! token, and what it sends over the real wire protocol is judged by an
//! honest node like any peer's, across a kill -9 and a restart of the
//! adversary.

use std::path::PathBuf;
use std::time::Duration;

use packfed_protocol::{FederationId, KeyPair, Signed, pb};
use packfed_testnet::{Federation, NodeJson, TestNode, post_json_with_token, wait_for};
use serde_json::{Value, json};

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_packfed"))
}

fn testnet_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_testnet"))
}

const DEADLINE: Duration = Duration::from_secs(40);

fn status(n: &TestNode) -> Value {
    n.json(&["status"]).unwrap()
}

fn count(n: &TestNode, field: &str) -> u64 {
    n.json(&["status"]).ok().and_then(|s| s[field].as_u64()).unwrap_or(0)
}

/// A claim on `ns` and a release `ns/tool@version` signed by `key`.
fn claim_and_release(key: &KeyPair, fed: &FederationId, ns: &str, version: &str, claimed_at: u64) -> (Signed, Signed) {
    let claim = Signed::sign(
        &pb::NamespaceClaim {
            namespace: ns.into(),
            claimed_at_ms: claimed_at,
        },
        key,
        fed,
    );
    let release = Signed::sign(
        &pb::Release {
            name: format!("{ns}/tool"),
            version: version.into(),
            content_hash: blake3::hash(format!("{ns}@{version}").as_bytes()).as_bytes().to_vec(),
            size: 100,
            description: "crafted by the adversary".into(),
            license: "MIT".into(),
            ..Default::default()
        },
        key,
        fed,
    );
    (claim, release)
}

/// Gossips freshly crafted claims and releases of `ns/tool` from the
/// adversary until the victim shows one. Each attempt is a new record (a
/// repeated message is a duplicate to gossipsub, and the first may go out
/// before the mesh forms).
fn gossip_until_it_arrives(evil: &TestNode, victim: &TestNode, key: &KeyPair, fed: &FederationId, ns: &str) {
    let mut attempt = 0u64;
    wait_for(
        DEADLINE,
        &format!("a crafted {ns}/tool release to arrive by gossip"),
        || {
            attempt += 1;
            let (claim, release) = claim_and_release(key, fed, ns, &format!("1.0.{attempt}"), attempt);
            let _ = evil.gossip("", claim.encoded());
            let _ = evil.gossip("", release.encoded());
            victim.json(&["info", &format!("{ns}/tool")]).ok()
        },
    )
    .unwrap();
}

#[test]
fn the_adversary_is_a_peer_whose_hostile_controls_answer_over_http() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let fed = Federation::empty(&bin(), root, 1).unwrap();
    let victim_home = fed.init_home("victim", "public", None, &[]).unwrap();
    let victim = TestNode::start(&bin(), &victim_home).unwrap();
    let boot = victim.p2p_addr().unwrap();
    let evil_home = fed.init_home("evil", "public", Some(&boot), &[]).unwrap();
    let mut evil = TestNode::start_adversary(&bin(), &testnet_bin(), &evil_home).unwrap();

    // It runs as a node does: node.json, the same API, the same federation.
    let written = NodeJson::read(&evil_home).expect("the adversary writes node.json");
    assert_eq!(Some(written.pid), evil.pid());
    let st = status(&evil);
    assert_eq!(st["federation_id"], status(&victim)["federation_id"]);
    wait_for(DEADLINE, "the adversary and the victim to connect", || {
        (victim.json(&["peers"]).ok()?.as_array()?.len() == 1).then_some(())
    })
    .unwrap();
    let fed_id = FederationId(
        hex::decode(st["federation_id"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap(),
    );

    // Its controls sit behind its API token, and say what was wrong.
    let gossip = json!({"topic": "", "hex": "00"}).to_string();
    let refused = post_json_with_token(&evil.api, "/v1/test/gossip", "wrong-token", &gossip).unwrap();
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
    let err = evil
        .control("/v1/test/gossip", &json!({"topic": "nowhere", "hex": "00"}))
        .unwrap_err()
        .to_string();
    assert!(err.contains("400") && err.contains("bad_topic"), "{err}");
    assert_eq!(
        evil.control("/v1/test/serve", &json!({"mode": "truncate"})).unwrap()["mode"],
        "truncate"
    );

    // Gossip: a crafted but valid release (a fresh key's own namespace)
    // arrives, as from any peer.
    let key = KeyPair::generate().unwrap();
    gossip_until_it_arrives(&evil, &victim, &key, &fed_id, "gossiped");

    // Registry sync: the adversary answers with changes of its choosing. An
    // entry that is no record under its key is counted as garbage; a valid
    // one, never gossiped, arrives by sync.
    let garbage = count(&victim, "crdt_garbage");
    let (claim2, release2) = claim_and_release(&key, &fed_id, "synced", "1.0.0", 1);
    let edit = json!({"put": [
        {"key": "00".repeat(32), "hex": hex::encode(b"garbage")},
        {"key": claim2.id().to_hex(), "hex": hex::encode(claim2.encoded())},
        {"key": release2.id().to_hex(), "hex": hex::encode(release2.encoded())},
    ]});
    assert_eq!(evil.control("/v1/test/registry", &edit).unwrap()["changed"], 3);
    wait_for(DEADLINE, "the synced release and the garbage count", || {
        (victim.has_release("synced/tool@1.0.0") && count(&victim, "crdt_garbage") > garbage).then_some(())
    })
    .unwrap();

    // Bytes that are no record are refused (and cost the sender its score).
    let rejected = count(&victim, "rejected_records");
    wait_for(DEADLINE, "the victim to refuse garbage", || {
        let garbage = format!("not a record {:?}", std::time::Instant::now());
        let sent = evil.gossip("", garbage.as_bytes()).ok();
        (sent.is_some() && count(&victim, "rejected_records") > rejected).then_some(())
    })
    .unwrap();
    assert!(victim.json(&["info", "garbage"]).is_err());

    // Across a kill -9 and a restart of the adversary, its records still travel.
    // (The victim's penalty for the garbage decays meanwhile.)
    evil.kill9().unwrap();
    evil.restart().unwrap();
    gossip_until_it_arrives(&evil, &victim, &key, &fed_id, "restarted");
    // The victim kept running and answering throughout.
    assert!(victim.json(&["search", "tool"]).is_ok());
}

/// A release in the adversary's own namespace naming a victim's archive hash
/// with a wrong size: a fresh node still installs the victim's pack.
#[test]
fn a_wrong_size_for_a_victims_hash_does_not_stop_its_install() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let fed = Federation::empty(&bin(), root, 1).unwrap();
    let a_home = fed.init_home("a", "company", None, &[]).unwrap();
    let a = TestNode::start(&bin(), &a_home).unwrap();
    let boot = a.p2p_addr().unwrap();
    let evil_home = fed.init_home("evil", "public", Some(&boot), &[]).unwrap();
    let evil = TestNode::start_adversary(&bin(), &testnet_bin(), &evil_home).unwrap();
    let pack = root.join("victim");
    packfed_testnet::make_pack(&pack, "acme/victim", "1.0.0", &[], 20_000).unwrap();
    let published = a.json(&["publish", &pack.to_string_lossy(), "--key", "k0"]).unwrap();
    let hash = hex::decode(published["hash"].as_str().unwrap()).unwrap();
    let victim_record = published["record_id"].as_str().unwrap().to_string();
    let fed_id = FederationId(
        hex::decode(status(&a)["federation_id"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap(),
    );
    // Signed by a fresh key in its own namespace; ground until its record id
    // sorts before the victim's (the order a node meets them by hash).
    let key = KeyPair::generate().unwrap();
    let claim = Signed::sign(
        &pb::NamespaceClaim {
            namespace: "poison".into(),
            claimed_at_ms: 1,
        },
        &key,
        &fed_id,
    );
    let poison = (0u32..)
        .map(|i| {
            Signed::sign(
                &pb::Release {
                    name: "poison/tool".into(),
                    version: "1.0.0".into(),
                    content_hash: hash.clone(),
                    size: 7,
                    description: format!("wrong size {i}"),
                    license: "MIT".into(),
                    ..Default::default()
                },
                &key,
                &fed_id,
            )
        })
        .find(|r| r.id().to_hex() < victim_record)
        .unwrap();
    // Positive control: it arrives (visible, witnessed) on a.
    wait_for(DEADLINE, "the poisoning release to arrive", || {
        let _ = evil.gossip("", claim.encoded());
        let _ = evil.gossip("", poison.encoded());
        a.json(&["info", "poison/tool"]).ok()
    })
    .unwrap();
    // A fresh node syncs both and installs the victim's pack.
    let b_home = fed.init_home("b", "public", Some(&boot), &[]).unwrap();
    let b = TestNode::start(&bin(), &b_home).unwrap();
    wait_for(DEADLINE, "b to hold both releases", || {
        (b.has_release("acme/victim@1.0.0") && b.has_release("poison/tool@1.0.0")).then_some(())
    })
    .unwrap();
    let t = root.join("t").to_string_lossy().into_owned();
    let done = b.json(&["install", "acme/victim", "--to", &t]).unwrap();
    assert_eq!(done["installed"][0]["id"], "acme/victim@1.0.0");
    assert_eq!(b.json(&["verify", &t]).unwrap()["ok"], true);
}
