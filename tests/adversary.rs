//! The adversary (`testnet adversary --home DIR`) driven over HTTP: it is a
//! full node of the federation, its hostile controls sit behind its API
//! token, and what it sends over the real wire protocol is judged by an
//! honest node like any peer's, across a kill -9 and a restart of the
//! adversary.

use std::path::PathBuf;
use std::time::Duration;

use packfed_protocol::{FederationId, KeyPair, Signed, pb};
use packfed_testnet::torsion::sign_with_torsion;
use packfed_testnet::{Federation, NodeJson, TestNode, get_json, post_json_with_token, wait_for};
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

/// The federation id a node reports.
fn federation_id(n: &TestNode) -> FederationId {
    FederationId(
        hex::decode(status(n)["federation_id"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap(),
    )
}

/// A federation of `members` keys, its first node `a` (a company node that
/// witnesses with every member key) and the adversary bootstrapped to it.
fn victim_and_adversary(root: &std::path::Path, members: usize) -> (Federation, TestNode, TestNode) {
    let fed = Federation::empty(&bin(), root, members).unwrap();
    let a_home = fed.init_home("a", "company", None, &[]).unwrap();
    let a = TestNode::start(&bin(), &a_home).unwrap();
    let boot = a.p2p_addr().unwrap();
    let evil_home = fed.init_home("evil", "public", Some(&boot), &[]).unwrap();
    let evil = TestNode::start_adversary(&bin(), &testnet_bin(), &evil_home).unwrap();
    (fed, a, evil)
}

/// `a` publishes the victim's pack, `acme/victim@1.0.0`; returns once the
/// adversary holds its release.
fn publish_victim(root: &std::path::Path, a: &TestNode, evil: &TestNode) {
    let pack = root.join("victim");
    packfed_testnet::make_pack(&pack, "acme/victim", "1.0.0", &[], 5_000).unwrap();
    a.json(&["publish", &pack.to_string_lossy(), "--key", "k0"]).unwrap();
    wait_for(DEADLINE, "the adversary to sync the victim's release", || {
        evil.has_release("acme/victim@1.0.0").then_some(())
    })
    .unwrap();
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

    // Registry sync: the adversary answers with changes of its choosing. A
    // valid record, never gossiped, arrives by sync; a later change holding
    // an entry that is no record under its key is refused (counted as
    // garbage), and with it the valid record put in the same change.
    let (claim2, release2) = claim_and_release(&key, &fed_id, "synced", "1.0.0", 1);
    let edit = json!({"put": [
        {"key": claim2.id().to_hex(), "hex": hex::encode(claim2.encoded())},
        {"key": release2.id().to_hex(), "hex": hex::encode(release2.encoded())},
    ]});
    assert_eq!(evil.control("/v1/test/registry", &edit).unwrap()["changed"], 2);
    wait_for(DEADLINE, "the synced release", || {
        victim.has_release("synced/tool@1.0.0").then_some(())
    })
    .unwrap();
    let garbage = count(&victim, "crdt_garbage");
    let (_, release3) = claim_and_release(&key, &fed_id, "synced", "1.0.1", 1);
    let edit = json!({"put": [
        {"key": "00".repeat(32), "hex": hex::encode(b"garbage")},
        {"key": release3.id().to_hex(), "hex": hex::encode(release3.encoded())},
    ]});
    assert_eq!(evil.control("/v1/test/registry", &edit).unwrap()["changed"], 2);
    wait_for(DEADLINE, "the garbage count", || {
        (count(&victim, "crdt_garbage") > garbage).then_some(())
    })
    .unwrap();
    assert!(
        !victim.has_release("synced/tool@1.0.1"),
        "a record in a refused change arrived"
    );

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
    let (fed, a, evil) = victim_and_adversary(root, 1);
    let pack = root.join("victim");
    packfed_testnet::make_pack(&pack, "acme/victim", "1.0.0", &[], 20_000).unwrap();
    let published = a.json(&["publish", &pack.to_string_lossy(), "--key", "k0"]).unwrap();
    let hash = hex::decode(published["hash"].as_str().unwrap()).unwrap();
    let victim_record = published["record_id"].as_str().unwrap().to_string();
    let fed_id = federation_id(&a);
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
    let b_home = fed.init_home("b", "public", Some(&a.p2p_addr().unwrap()), &[]).unwrap();
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

/// Records signed with a small-torsion component in R (a lone ed25519 batch
/// check accepts them, strict verification refuses them), by sync and by
/// gossip: none is stored, so none can make a package unreadable to a later
/// strict read; the victim's package installs on a fresh node, across a
/// kill -9 of that node.
#[test]
fn a_torsion_signature_never_makes_a_package_unreadable() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let (fed, a, evil) = victim_and_adversary(root, 1);
    let pack = root.join("victim");
    packfed_testnet::make_pack(&pack, "acme/victim", "1.0.0", &[], 20_000).unwrap();
    let published = a.json(&["publish", &pack.to_string_lossy(), "--key", "k0"]).unwrap();
    let hash = hex::decode(published["hash"].as_str().unwrap()).unwrap();
    let fed_id = federation_id(&a);

    let key = KeyPair::generate().unwrap();
    let (tors_claim, _) = claim_and_release(&key, &fed_id, "tors", "1.0.0", 1);
    let tors_own = sign_with_torsion(
        &pb::Release {
            name: "tors/tool".into(),
            version: "1.0.0".into(),
            content_hash: blake3::hash(b"tors").as_bytes().to_vec(),
            size: 100,
            license: "MIT".into(),
            ..Default::default()
        },
        &key,
        &fed_id,
    );
    let tors_victim = sign_with_torsion(
        &pb::Release {
            name: "acme/victim".into(),
            version: "1.0.1".into(),
            content_hash: hash.clone(),
            size: 20_000,
            license: "MIT".into(),
            ..Default::default()
        },
        &key,
        &fed_id,
    );
    let tors_attest = sign_with_torsion(
        &pb::Attestation {
            name: "acme/victim".into(),
            version: "1.0.0".into(),
            content_hash: hash.clone(),
            kind: "audit".into(),
            result: "fail".into(),
            note: "torsion".into(),
            attested_at_ms: 1,
            score: 0,
        },
        &key,
        &fed_id,
    );
    for env in [&tors_own, &tors_victim] {
        assert!(
            env.verify::<pb::Release>(&fed_id).is_err(),
            "strict verification refuses it"
        );
    }
    assert!(tors_attest.verify::<pb::Attestation>(&fed_id).is_err());
    // Positive control: a valid claim and release from the same key, in a
    // change of its own (a change holding a torsion record is refused
    // whole, with every change built on it).
    let (ctl_claim, ctl_release) = claim_and_release(&key, &fed_id, "ctl", "1.0.0", 2);
    let put = |envs: &[&Signed]| -> Value {
        let put: Vec<Value> = envs
            .iter()
            .map(|e| json!({"key": e.id().to_hex(), "hex": hex::encode(e.encoded())}))
            .collect();
        json!({ "put": put })
    };
    evil.control("/v1/test/registry", &put(&[&ctl_claim, &ctl_release]))
        .unwrap();
    evil.control(
        "/v1/test/registry",
        &put(&[&tors_claim, &tors_own, &tors_victim, &tors_attest]),
    )
    .unwrap();
    for env in [&tors_own, &tors_victim, &tors_attest] {
        let topic = if env.kind() == packfed_protocol::Domain::Attestation.tag() {
            "attestations"
        } else {
            ""
        };
        evil.gossip(topic, env.encoded()).unwrap();
    }

    // A fresh node that syncs from the adversary.
    let evil_addr = evil.p2p_addr().unwrap();
    let b_home = fed.init_home("b", "public", Some(&evil_addr), &[]).unwrap();
    let mut b = TestNode::start(&bin(), &b_home).unwrap();
    wait_for(DEADLINE, "b to sync the control and the victim's release", || {
        (b.has_release("ctl/tool@1.0.0") && b.has_release("acme/victim@1.0.0")).then_some(())
    })
    .unwrap();
    wait_for(DEADLINE, "a to take the control by sync too", || {
        a.has_release("ctl/tool@1.0.0").then_some(())
    })
    .unwrap();
    let tors_attest_id = tors_attest.id().to_hex();
    let check = |n: &TestNode| {
        assert!(!n.has_release("tors/tool@1.0.0"), "a torsion release was stored");
        assert!(!n.has_release("acme/victim@1.0.1"), "a torsion release was stored");
        assert!(!n.has_attestation("acme/victim@1.0.0", &tors_attest_id));
        let info = n.json(&["info", "acme/victim@1.0.0"]).unwrap();
        assert_eq!(info["version"], "1.0.0", "{info}");
    };
    check(&a);
    check(&b);
    let t = root.join("t").to_string_lossy().into_owned();
    let done = b.json(&["install", "acme/victim", "--to", &t]).unwrap();
    assert_eq!(done["installed"][0]["id"], "acme/victim@1.0.0");

    // Across a kill -9 of b: it reopens, syncs again, and the package reads.
    b.kill9().unwrap();
    b.restart().unwrap();
    wait_for(DEADLINE, "b to answer after the restart", || {
        b.has_release("ctl/tool@1.0.0").then_some(())
    })
    .unwrap();
    check(&b);
    let t2 = root.join("t2").to_string_lossy().into_owned();
    let done = b.json(&["install", "acme/victim", "--to", &t2]).unwrap();
    assert_eq!(done["installed"][0]["id"], "acme/victim@1.0.0");
}

/// A release in the adversary's own (visible) namespace claiming 2^62 bytes:
/// a regional mirror refuses it on arrival, starts no download and keeps
/// answering; the same key's release of a sane size arrives (the control).
#[test]
fn a_huge_size_claim_starts_no_download() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let fed = Federation::empty(&bin(), root, 1).unwrap();
    let m_home = fed.init_home("m", "regional", None, &[]).unwrap();
    let m = TestNode::start(&bin(), &m_home).unwrap();
    let boot = m.p2p_addr().unwrap();
    let evil_home = fed.init_home("evil", "public", Some(&boot), &[]).unwrap();
    let evil = TestNode::start_adversary(&bin(), &testnet_bin(), &evil_home).unwrap();
    let fed_id = federation_id(&m);
    let key = KeyPair::generate().unwrap();
    // Positive control first: the key's sane releases arrive.
    gossip_until_it_arrives(&evil, &m, &key, &fed_id, "huge");
    let rejected = count(&m, "rejected_records");
    let mut attempt = 0u64;
    // 2^62 bytes, and 2 GiB: over the default 1 GiB `[node] max_pack_bytes`.
    wait_for(DEADLINE, "the mirror to refuse both oversized releases", || {
        attempt += 1;
        for (minor, size) in [(0, 1u64 << 62), (1, 2u64 << 30)] {
            let huge = Signed::sign(
                &pb::Release {
                    name: "huge/tool".into(),
                    version: format!("9.{minor}.{attempt}"),
                    content_hash: blake3::hash(format!("{minor}-{attempt}").as_bytes())
                        .as_bytes()
                        .to_vec(),
                    size,
                    license: "MIT".into(),
                    ..Default::default()
                },
                &key,
                &fed_id,
            );
            let _ = evil.gossip("", huge.encoded());
        }
        (count(&m, "rejected_records") >= rejected + 2).then_some(())
    })
    .unwrap();
    // And after it, the same key's next sane release still arrives.
    gossip_until_it_arrives(&evil, &m, &key, &fed_id, "after");
    for i in 1..=attempt {
        assert!(
            !m.has_release(&format!("huge/tool@9.0.{i}")),
            "a 2^62-byte release was stored"
        );
        assert!(
            !m.has_release(&format!("huge/tool@9.1.{i}")),
            "a 2 GiB release was stored"
        );
    }
    // No download started: the mirror holds no partial blob, and answers.
    assert_eq!(status(&m)["blobs"].as_u64().unwrap_or(0), 0, "{}", status(&m));
    assert!(m.json(&["search", "tool"]).is_ok());
}

/// A peer that deletes every root key of the registry document: the honest
/// node refuses the deleting change (it holds no record), so a fresh node
/// syncing from it still gets everything and no trace of the deletions,
/// across a kill -9 and restart of the honest node. Control: a valid record
/// the adversary put in an earlier edit arrives.
#[test]
fn deleting_every_root_key_changes_nothing_a_fresh_node_syncs() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let (fed, mut a, mut evil) = victim_and_adversary(root, 1);
    publish_victim(root, &a, &evil);
    let fed_id = federation_id(&a);
    let key = KeyPair::generate().unwrap();
    let (claim, release) = claim_and_release(&key, &fed_id, "ctl", "1.0.0", 1);
    let garbage = count(&a, "crdt_garbage");
    let edit = json!({"put": [
        {"key": claim.id().to_hex(), "hex": hex::encode(claim.encoded())},
        {"key": release.id().to_hex(), "hex": hex::encode(release.encoded())},
    ]});
    evil.control("/v1/test/registry", &edit).unwrap();
    wait_for(DEADLINE, "the control to reach a by sync", || {
        a.has_release("ctl/tool@1.0.0").then_some(())
    })
    .unwrap();
    // Now it deletes every key, its own control included.
    let deleted = evil.control("/v1/test/registry", &json!({"delete_all": true})).unwrap()["changed"]
        .as_u64()
        .unwrap();
    assert!(deleted >= 4, "it deleted {deleted} keys");
    // (Some of its keys, such as its idle checkpoints, a never held.)
    wait_for(DEADLINE, "a to see the deletions", || {
        (count(&a, "crdt_garbage") > garbage).then_some(())
    })
    .unwrap();
    // The adversary leaves: a fresh node could otherwise find it through a
    // and take the deletions from it directly, which says nothing of a.
    evil.kill9().unwrap();
    let fresh = |name: &str, a: &TestNode| {
        let home = fed
            .init_home(name, "public", Some(&a.p2p_addr().unwrap()), &[])
            .unwrap();
        let n = TestNode::start(&bin(), &home).unwrap();
        wait_for(DEADLINE, "a fresh node to sync everything from a", || {
            (n.has_release("acme/victim@1.0.0") && n.has_release("ctl/tool@1.0.0")).then_some(())
        })
        .unwrap();
        assert_eq!(count(&n, "crdt_garbage"), 0, "a passed the deletions on");
        n
    };
    drop(fresh("b", &a));
    // Across a kill -9 of a: its document still holds every record, and no deletion.
    a.kill9().unwrap();
    a.restart().unwrap();
    drop(fresh("c", &a));
}

/// Peak resident memory of a process, in bytes, since the last reset.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

/// Resets the peak (Linux: "5" to clear_refs); false where that is refused,
/// and then the peak since start is compared, which only makes the check
/// stricter.
fn reset_peak_rss(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// A 64 MiB compression bomb in the adversary's registry document (64
/// changes of 1 MiB of zeros, which automerge sends as one saved document
/// deflated to a few KiB): the victim refuses the sync message before it
/// inflates, its memory stays flat, it keeps answering, and the
/// adversary's gossip still arrives; across a kill -9 of the victim.
#[test]
fn a_compression_bomb_in_sync_is_refused_before_it_inflates() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let (_fed, mut a, evil) = victim_and_adversary(root, 1);
    publish_victim(root, &a, &evil);
    let pid = a.pid().unwrap();
    let reset = reset_peak_rss(pid);
    let before = peak_rss(pid);
    let refused = count(&a, "sync_refused");
    let wrote = evil
        .control("/v1/test/registry", &json!({"zeros": {"count": 64, "len": 1 << 20}}))
        .unwrap();
    assert_eq!(wrote["changed"], 64, "{wrote}");
    wait_for(DEADLINE, "a to refuse the bomb", || {
        (count(&a, "sync_refused") > refused).then_some(())
    })
    .unwrap();
    let grew = peak_rss(pid).saturating_sub(before);
    assert!(
        grew < 64 << 20,
        "the victim's peak RSS grew by {grew} bytes (peak reset: {reset})"
    );
    // It answers, holds nothing of the bomb, and the adversary's valid
    // records still arrive (by gossip: its document now carries the bomb).
    assert!(a.has_release("acme/victim@1.0.0"));
    let fed_id = federation_id(&a);
    let key = KeyPair::generate().unwrap();
    gossip_until_it_arrives(&evil, &a, &key, &fed_id, "ctl");
    // Across a kill -9: the restarted victim syncs with the adversary again
    // and refuses again, and what it held is still there.
    a.kill9().unwrap();
    a.restart().unwrap();
    let pid = a.pid().unwrap();
    let before = peak_rss(pid);
    wait_for(DEADLINE, "the restarted a to refuse the bomb again", || {
        (count(&a, "sync_refused") > 0).then_some(())
    })
    .unwrap();
    let grew = peak_rss(pid).saturating_sub(before);
    assert!(grew < 64 << 20, "after the restart the peak RSS grew by {grew} bytes");
    assert!(a.has_release("acme/victim@1.0.0"));
    assert!(
        a.json(&["info", "ctl/tool"]).is_ok(),
        "the control survives the kill -9"
    );
}

fn vote_on(key: &KeyPair, fed: &FederationId, proposal: &str, cast_at_ms: u64) -> Signed {
    Signed::sign(
        &pb::Vote {
            proposal_id: hex::decode(proposal).unwrap(),
            choice: "for".into(),
            cast_at_ms,
        },
        key,
        fed,
    )
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// 10,000 valid votes signed by fresh keys: the victim neither stores nor
/// forwards them, `gov list` still answers at once, and the adversary's
/// gossip score falls below the graylist threshold; a member's vote from
/// the same adversary (the positive control) counts. Across a kill -9 of
/// the victim, nothing of the spam is there and the control still is.
#[test]
fn ten_thousand_votes_from_fresh_keys_are_refused_and_score_their_sender_out() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let (_fed, mut a, evil) = victim_and_adversary(root, 2);
    let proposal = a
        .json(&[
            "gov",
            "propose",
            "--key",
            "k0",
            "--title",
            "longer timelock",
            "--set",
            "timelock=3d",
        ])
        .unwrap()["proposal_id"]
        .as_str()
        .unwrap()
        .to_string();
    let fed_id = federation_id(&a);
    // Positive control: member k1's vote, gossiped by the adversary, counts.
    let k1 = KeyPair::from_file_text(&std::fs::read_to_string(evil.home.join("keys/k1.key")).unwrap()).unwrap();
    wait_for(DEADLINE, "the member's vote from the adversary to count", || {
        let _ = evil.gossip("governance", vote_on(&k1, &fed_id, &proposal, now_ms()).encoded());
        let p = a.json(&["gov", "show", &proposal]).ok()?;
        (p["for"] == 1).then_some(())
    })
    .unwrap();
    let gov_records = count(&a, "gov_records");
    let rejected = count(&a, "rejected_records");
    let spam: Vec<String> = (0..10_000)
        .map(|_| hex::encode(vote_on(&KeyPair::generate().unwrap(), &fed_id, &proposal, now_ms()).encoded()))
        .collect();
    // In pieces: the adversary's API takes bodies of up to 2 MiB.
    let mut sent = 0;
    for piece in spam.chunks(2_000) {
        let r = evil
            .control("/v1/test/flood", &json!({"topic": "governance", "hex": piece}))
            .unwrap();
        sent += r["sent"].as_u64().unwrap();
    }
    assert_eq!(sent, 10_000);
    let evil_peer = status(&evil)["peer_id"].as_str().unwrap().to_string();
    let score = wait_for(DEADLINE, "the adversary to be scored out", || {
        let peers = a.json(&["peers"]).ok()?;
        let s = peers.as_array()?.iter().find(|p| p["peer_id"] == evil_peer.as_str())?["score"].as_f64()?;
        (s < -80.0).then_some(s)
    })
    .unwrap();
    assert!(count(&a, "rejected_records") > rejected, "score {score}");
    // `gov list` answers at once (the API call behind the command).
    let api = NodeJson::read(&a.home).unwrap().api;
    let mut took: Vec<Duration> = (0..5)
        .map(|_| {
            let t = std::time::Instant::now();
            let list = packfed_testnet::get_json(&api, "/v1/gov/proposals").unwrap();
            assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
            t.elapsed()
        })
        .collect();
    took.sort();
    assert!(took[2] < Duration::from_millis(100), "gov list took {took:?}");
    assert_eq!(count(&a, "gov_records"), gov_records, "no spam vote is kept");
    let p = a.json(&["gov", "show", &proposal]).unwrap();
    assert_eq!(p["for"], 1, "{p}");
    // Across a kill -9 of the victim.
    a.kill9().unwrap();
    a.restart().unwrap();
    assert_eq!(count(&a, "gov_records"), gov_records);
    assert_eq!(a.json(&["gov", "show", &proposal]).unwrap()["for"], 1);
}

/// The adversary, as a peer, asks the publisher of a 1 GiB pack for the
/// last MiB of it, over and over, while the publisher answers searches:
/// each range is read in place (a positional read, off the swarm task), so
/// it comes back as fast as one at the start of the pack, and searches keep
/// answering. A range past the end holds nothing, and the last range is still
/// served after a kill -9 and restart of the publisher. (The latencies are
/// measured against the done-when floors in `scripts/bench`, row t; here
/// they only have to stay far from a read of the whole pack.)
#[test]
fn a_range_at_the_end_of_a_1_gib_pack_is_read_in_place() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let (_fed, mut a, evil) = victim_and_adversary(root, 1);
    let pack = root.join("big");
    packfed_testnet::make_big_pack(&pack, "acme/big", "1.0.0", packfed_testnet::ONE_GIB_PACK_BYTES).unwrap();
    let published = a.json(&["publish", &pack.to_string_lossy(), "--key", "k0"]).unwrap();
    std::fs::remove_dir_all(&pack).unwrap();
    let hash = published["hash"].as_str().unwrap().to_string();
    let size = published["size"].as_u64().unwrap();
    assert!(size > 1_000_000_000, "{published}");
    wait_for(DEADLINE, "the adversary to hold the release", || {
        evil.has_release("acme/big@1.0.0").then_some(())
    })
    .unwrap();
    const MIB: u64 = 1 << 20;
    let ask = |a: &TestNode, offset: u64, length: u64| -> Value {
        let peer = status(a)["peer_id"].as_str().unwrap().to_string();
        evil.control(
            "/v1/test/range",
            &json!({"peer": peer, "hash": hash, "offset": offset, "length": length}),
        )
        .unwrap()
    };
    let api = NodeJson::read(&a.home).unwrap().api;
    let search = || {
        let t = std::time::Instant::now();
        let hits = packfed_testnet::get_json(&api, "/v1/search?q=big").unwrap();
        assert!(hits.to_string().contains("acme/big"), "{hits}");
        t.elapsed()
    };
    let mut end = Vec::new();
    let mut start = Vec::new();
    let mut searches = Vec::new();
    for _ in 0..5 {
        let r = ask(&a, size - MIB, MIB);
        assert_eq!((r["status"].as_u64(), r["bytes"].as_u64()), (Some(0), Some(MIB)), "{r}");
        end.push(r["micros"].as_u64().unwrap());
        searches.push(search());
        let r = ask(&a, 0, MIB);
        assert_eq!(r["bytes"].as_u64(), Some(MIB), "{r}");
        start.push(r["micros"].as_u64().unwrap());
    }
    end.sort();
    start.sort();
    searches.sort();
    // Reading 1 GiB to reach the end would take seconds; in place it is
    // about the cost of a range at the start.
    assert!(end[2] < 10 * start[2] + 50_000, "end {end:?} µs, start {start:?} µs");
    assert!(searches[2] < Duration::from_millis(500), "searches took {searches:?}");
    eprintln!("ranges at the end {end:?} µs, at the start {start:?} µs, searches {searches:?}");
    let past = ask(&a, size, MIB);
    assert_eq!(past["bytes"].as_u64(), Some(0), "a range past the end: {past}");
    // Across a kill -9 of the publisher.
    a.kill9().unwrap();
    a.restart().unwrap();
    let mut last = None;
    let r = wait_for(DEADLINE, "the restarted publisher to serve the range", || {
        let peer = status(&a)["peer_id"].as_str()?.to_string();
        let r = evil.control(
            "/v1/test/range",
            &json!({"peer": peer, "hash": hash, "offset": size - MIB, "length": MIB}),
        );
        let ok = r.as_ref().ok().filter(|r| r["status"].as_u64() == Some(0)).cloned();
        last = Some(r.map_err(|e| e.to_string()));
        ok
    })
    .unwrap_or_else(|e| {
        let log = std::fs::read_to_string(a.home.join("node.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        panic!(
            "{e}: last answer {last:?}; a's peers {:?}; evil's peers {:?}\n{}",
            a.json(&["peers"]).ok(),
            evil.json(&["peers"]).ok(),
            tail.join("\n")
        )
    });
    assert_eq!(r["bytes"].as_u64(), Some(MIB), "{r}");
}

fn attestation_by(key: &KeyPair, fed: &FederationId, hash: &[u8], note: &str) -> Signed {
    Signed::sign(
        &pb::Attestation {
            name: "acme/victim".into(),
            version: "1.0.0".into(),
            content_hash: hash.to_vec(),
            kind: "audit".into(),
            result: "pass".into(),
            note: note.into(),
            attested_at_ms: 1,
            score: 0,
        },
        key,
        fed,
    )
}

/// 400 valid attestations of the victim's release from fresh keys: the
/// victim keeps the first 256 (the per-release quota for keys without a
/// role) and refuses the rest, which scores the adversary out; a member's
/// attestation from the same adversary (the positive control) still
/// arrives past the quota. Across a kill -9 of the victim, the count holds.
#[test]
fn attestation_spam_from_fresh_keys_stops_at_the_release_quota() {
    const QUOTA: usize = 256;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let (_fed, mut a, evil) = victim_and_adversary(root, 2);
    publish_victim(root, &a, &evil);
    let fed_id = federation_id(&a);
    let info = a.json(&["info", "acme/victim@1.0.0"]).unwrap();
    let hash = hex::decode(info["hash"].as_str().unwrap()).unwrap();
    let held = |n: &TestNode| {
        n.json(&["attestations", "acme/victim@1.0.0"])
            .ok()
            .and_then(|v| v.as_array().map(Vec::len))
            .unwrap_or(0)
    };
    let rejected = count(&a, "rejected_records");
    let spam: Vec<String> = (0..400)
        .map(|i| {
            let key = KeyPair::generate().unwrap();
            hex::encode(attestation_by(&key, &fed_id, &hash, &format!("spam {i}")).encoded())
        })
        .collect();
    let r = evil
        .control("/v1/test/flood", &json!({"topic": "attestations", "hex": spam}))
        .unwrap();
    assert_eq!(r["sent"], 400);
    let evil_peer = status(&evil)["peer_id"].as_str().unwrap().to_string();
    wait_for(DEADLINE, "the quota to fill and the adversary to be scored out", || {
        let peers = a.json(&["peers"]).ok()?;
        let s = peers.as_array()?.iter().find(|p| p["peer_id"] == evil_peer.as_str())?["score"].as_f64()?;
        (held(&a) == QUOTA && s < -80.0).then_some(())
    })
    .unwrap();
    assert!(count(&a, "rejected_records") > rejected);
    // The control: member k1's attestation, from the same adversary, counts
    // past the quota. (Gossip from a graylisted peer is ignored, so it
    // arrives by registry sync, which scoring does not cut.)
    let k1 = KeyPair::from_file_text(&std::fs::read_to_string(evil.home.join("keys/k1.key")).unwrap()).unwrap();
    let control = attestation_by(&k1, &fed_id, &hash, "a member's audit");
    let put = json!({"put": [{"key": control.id().to_hex(), "hex": hex::encode(control.encoded())}]});
    evil.control("/v1/test/registry", &put).unwrap();
    let control_id = control.id().to_hex();
    wait_for(DEADLINE, "the member's attestation to arrive", || {
        a.has_attestation("acme/victim@1.0.0", &control_id).then_some(())
    })
    .unwrap();
    assert_eq!(held(&a), QUOTA + 1);
    a.kill9().unwrap();
    a.restart().unwrap();
    assert_eq!(held(&a), QUOTA + 1);
    assert!(a.has_attestation("acme/victim@1.0.0", &control_id));
}

/// A deprecation of the victim's pack signed by a key that does not own its
/// namespace, gossiped by the adversary, is refused and never shows on the
/// honest node. Control: the adversary's deprecation of its own pack, sent
/// after it on the same path, does.
#[test]
fn a_deprecation_by_a_key_that_does_not_own_the_namespace_counts_for_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let (_fed, a, evil) = victim_and_adversary(root, 1);
    publish_victim(root, &a, &evil);
    let fed_id = federation_id(&a);
    let key = KeyPair::generate().unwrap();
    gossip_until_it_arrives(&evil, &a, &key, &fed_id, "evilns");
    let deprecation = |name: &str, at: u64| {
        Signed::sign(
            &pb::Deprecation {
                name: name.into(),
                requirement: "*".into(),
                message: format!("deprecated by the adversary {at}"),
                replacement: String::new(),
                deprecated_at_ms: at,
            },
            &key,
            &fed_id,
        )
    };
    // The hostile deprecation until the honest node has refused it (sent
    // with the control every round, each refusal scored the adversary under
    // gossipsub's graylist, and on a loaded machine the control could then
    // go unheard for the whole deadline).
    let rejected = || get_json(&a.api, "/v1/status").ok()?["rejected_records"].as_u64();
    let before = rejected().unwrap();
    let mut at = 0u64;
    wait_for(
        DEADLINE,
        "the adversary's deprecation of the victim's pack to be refused",
        || {
            at += 1;
            let _ = evil.gossip("", deprecation("acme/victim", at).encoded());
            (rejected()? > before).then_some(())
        },
    )
    .unwrap();
    wait_for(
        DEADLINE,
        "the adversary's deprecation of its own pack to arrive",
        || {
            at += 1;
            let _ = evil.gossip("", deprecation("evilns/tool", at).encoded());
            let info = a.json(&["info", "evilns/tool"]).ok()?;
            info["deprecated"]["message"].is_string().then_some(())
        },
    )
    .unwrap();
    let victim = a.json(&["info", "acme/victim"]).unwrap();
    assert_eq!(victim["deprecated"], Value::Null, "{victim}");
    let versions = a.json(&["versions", "acme/victim"]).unwrap();
    assert_eq!(versions[0]["deprecated"], Value::Null, "{versions}");
}
