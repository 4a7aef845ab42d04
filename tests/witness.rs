//! Witnessed time end to end: real nodes whose members witness, and the
//! adversary (`testnet adversary`, a real peer) sending records that lean
//! on a signer's own clock or on a stolen key. Every "the attack failed"
//! check has a positive control: a valid record from the same adversary
//! that does arrive.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use packfed_protocol::{FederationId, KeyPair, Signed, pb};
use packfed_testnet::{Federation, TestNode, make_pack, wait_for};
use serde_json::Value;

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_packfed"))
}

fn testnet_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_testnet"))
}

const DEADLINE: Duration = Duration::from_secs(40);
const DAY_MS: u64 = 86_400_000;

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

fn federation_id(n: &TestNode) -> FederationId {
    let st = n.json(&["status"]).unwrap();
    FederationId(
        hex::decode(st["federation_id"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap(),
    )
}

fn key_in(home: &Path, name: &str) -> KeyPair {
    KeyPair::from_file_text(&std::fs::read_to_string(home.join("keys").join(format!("{name}.key"))).unwrap()).unwrap()
}

fn info(n: &TestNode, id: &str) -> Option<Value> {
    n.json(&["info", id]).ok()
}

fn publish(n: &TestNode, root: &Path, name: &str, version: &str, key: &str) -> Value {
    let dir = root.join(format!("pack-{}-{version}", name.replace('/', "-")));
    make_pack(&dir, name, version, &[], 0).unwrap();
    n.json(&["publish", &dir.to_string_lossy(), "--key", key]).unwrap()
}

/// A crafted release of `ns/tool` and its claim, signed by `key`.
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

/// The positive control: a fresh claim and release from the adversary do
/// arrive (and get witnessed) on `victim`.
fn control_arrives(evil: &TestNode, victim: &TestNode, key: &KeyPair, fed: &FederationId, ns: &str) {
    let mut attempt = 0u64;
    wait_for(DEADLINE, &format!("the adversary's {ns}/tool to arrive"), || {
        attempt += 1;
        let (claim, release) = claim_and_release(key, fed, ns, &format!("1.0.{attempt}"), attempt);
        let _ = evil.gossip("", claim.encoded());
        let _ = evil.gossip("", release.encoded());
        info(victim, &format!("{ns}/tool"))
    })
    .unwrap();
}

fn member_proposal(key: &KeyPair, fed: &FederationId, created_at_ms: u64, new_member: &KeyPair) -> Signed {
    Signed::sign(
        &pb::Proposal {
            title: "add a member".into(),
            created_at_ms,
            action: Some(pb::proposal::Action::AddMember(pb::MemberSpec {
                public_key: new_member.public().as_bytes().to_vec(),
                role: "community".into(),
                weight: 1,
            })),
        },
        key,
        fed,
    )
}

fn vote(key: &KeyPair, fed: &FederationId, proposal: &Signed, at: u64) -> Signed {
    Signed::sign(
        &pb::Vote {
            proposal_id: proposal.id().0.to_vec(),
            choice: "for".into(),
            cast_at_ms: at,
        },
        key,
        fed,
    )
}

#[test]
fn records_that_lean_on_their_signers_clock_or_a_stolen_key_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    // n0, n1, n2 witness with k0, k1, k2 (quorum 2 of 3).
    let fed = Federation::up(&bin(), root, &["public", "public", "public"]).unwrap();
    let (n0, victim) = (&fed.nodes[0], &fed.nodes[1]);
    let evil_home = fed
        .init_home("evil", "public", Some(&n0.p2p_addr().unwrap()), &[])
        .unwrap();
    let evil = TestNode::start_adversary(&bin(), &testnet_bin(), &evil_home).unwrap();
    let fid = federation_id(n0);
    let attacker = KeyPair::generate().unwrap();

    n0.json(&["key", "new", "alice"]).unwrap();
    let published = publish(n0, root, "acme/tool", "1.0.0", "alice");
    assert_eq!(published["witnessed"], true, "the publish waits for a witness quorum");
    publish(n0, root, "acme/tool", "1.1.0", "alice");
    let alice = key_in(&n0.home, "alice");
    wait_for(DEADLINE, "acme/tool@1.1.0 on the victim", || {
        info(victim, "acme/tool@1.1.0")
    })
    .unwrap();
    let v = info(victim, "acme/tool@1.0.0").unwrap();
    assert_eq!(v["owner"], alice.public().to_hex());
    assert!(v["witnessed_at"].as_u64().is_some());

    // 1. A claim on acme dated at 0 (it would win by its own date), with a
    // release of the attacker's under it.
    let (backdated, takeover) = claim_and_release(&attacker, &fid, "acme", "9.9.9", 0);
    evil.gossip("", backdated.encoded()).unwrap();
    evil.gossip("", takeover.encoded()).unwrap();
    // 2. A non-owner's yank after the owner's.
    n0.json(&["yank", "acme/tool@1.0.0", "--key", "alice"]).unwrap();
    wait_for(DEADLINE, "the owner's yank on the victim", || {
        (info(victim, "acme/tool@1.0.0")?["yanked"] == true).then_some(())
    })
    .unwrap();
    let hash = hex::decode(info(victim, "acme/tool@1.0.0").unwrap()["hash"].as_str().unwrap()).unwrap();
    let foreign_yank = Signed::sign(
        &pb::Yank {
            name: "acme/tool".into(),
            version: "1.0.0".into(),
            content_hash: hash,
            reason: "mine now".into(),
            yanked_at_ms: now_ms() + 1000,
        },
        &attacker,
        &fid,
    );
    evil.gossip("", foreign_yank.encoded()).unwrap();
    // 3. A member's proposal whose window and timelock (72 h + 24 h) lie in
    // the past, with backdated votes by every member.
    let members: Vec<KeyPair> = (0..3).map(|i| key_in(&n0.home, &format!("k{i}"))).collect();
    let old = now_ms() - 5 * DAY_MS;
    let proposal = member_proposal(&members[0], &fid, old, &attacker);
    evil.gossip("governance", proposal.encoded()).unwrap();
    for m in &members {
        evil.gossip("governance", vote(m, &fid, &proposal, old + 1).encoded())
            .unwrap();
    }
    // 4. A proposal dated 65 s ahead of every clock (beyond the 60 s skew).
    let ahead = member_proposal(&members[1], &fid, now_ms() + 65_000, &KeyPair::generate().unwrap());
    evil.gossip("governance", ahead.encoded()).unwrap();

    // Positive control, sent after all of the above: it arrives, so the
    // adversary's records reach the victim and it is not graylisted.
    control_arrives(&evil, victim, &attacker, &fid, "evil");

    // 1: acme stays alice's; the attacker's release never shows.
    let v = info(victim, "acme/tool@1.1.0").unwrap();
    assert_eq!(v["owner"], alice.public().to_hex());
    assert!(info(victim, "acme/tool@9.9.9").is_none());
    assert_eq!(info(victim, "evil/tool").unwrap()["owner"], attacker.public().to_hex());
    // 2: still yanked.
    assert_eq!(info(victim, "acme/tool@1.0.0").unwrap()["yanked"], true);
    // 3: the proposal counts from when witnesses saw it: active, not executed.
    let pid = proposal.id().to_hex();
    let shown = wait_for(DEADLINE, "the backdated proposal to be witnessed", || {
        victim.json(&["gov", "show", &pid]).ok()
    })
    .unwrap();
    assert_eq!(shown["state"], "active", "{shown}");
    let members_now = victim.json(&["gov", "members"]).unwrap().to_string();
    assert!(!members_now.contains(&attacker.public().to_hex()), "{members_now}");
    // 4: held, not refused; admitted when its time comes.
    let held = victim.json(&["witness", "status"]).unwrap();
    let ahead_id = ahead.id().to_hex();
    assert!(victim.json(&["gov", "show", &ahead_id]).is_err(), "not before its time");
    assert!(held["held"].as_u64().unwrap() >= 1, "{held}");
    wait_for(Duration::from_secs(60), "the future proposal to be admitted", || {
        victim.json(&["gov", "show", &ahead_id]).ok()
    })
    .unwrap();

    // 6. An attestation dated 2100, then a fresh opposite one by the same
    // key: the fresh one counts (latest by witnessed time).
    let hash11 = hex::decode(info(victim, "acme/tool@1.1.0").unwrap()["hash"].as_str().unwrap()).unwrap();
    let attest = |result: &str, at: u64| {
        Signed::sign(
            &pb::Attestation {
                name: "acme/tool".into(),
                version: "1.1.0".into(),
                content_hash: hash11.clone(),
                kind: "audit".into(),
                result: result.into(),
                note: String::new(),
                attested_at_ms: at,
                score: 0,
            },
            &attacker,
            &fid,
        )
    };
    let future = attest("fail", 4_102_444_800_000);
    evil.gossip("attestations", future.encoded()).unwrap();
    let views = wait_for(DEADLINE, "the 2100 attestation to be witnessed", || {
        let v = victim.json(&["attestations", "acme/tool@1.1.0"]).ok()?;
        let a = v
            .as_array()?
            .iter()
            .find(|a| a["id"] == future.id().to_hex().as_str())?
            .clone();
        a["witnessed_at"].as_u64().map(|_| a)
    })
    .unwrap();
    assert_eq!(views["current"], true, "alone, it counts");
    let fresh = attest("pass", now_ms());
    evil.gossip("attestations", fresh.encoded()).unwrap();
    wait_for(DEADLINE, "the fresh attestation to supersede the 2100 one", || {
        let v = victim.json(&["attestations", "acme/tool@1.1.0"]).ok()?;
        let current = |id: &str| {
            v.as_array()?
                .iter()
                .find(|a| a["id"] == id)
                .map(|a| a["current"] == true)
        };
        (current(&fresh.id().to_hex())? && current(&future.id().to_hex()) == Some(false)).then_some(())
    })
    .unwrap();

    // 5. A second archive for a published version, signed with the owner's
    // stolen key: both are refused for resolution, the same on every node.
    let second = Signed::sign(
        &pb::Release {
            name: "acme/tool".into(),
            version: "1.1.0".into(),
            content_hash: blake3::hash(b"substituted").as_bytes().to_vec(),
            size: 100,
            description: "substituted archive".into(),
            license: "MIT".into(),
            ..Default::default()
        },
        &alice,
        &fid,
    );
    evil.gossip("", second.encoded()).unwrap();
    for n in [victim, n0] {
        let v = wait_for(DEADLINE, "the equivocation to show", || {
            let v = info(n, "acme/tool@1.1.0")?;
            (v["status"] == "quarantined").then_some(v)
        })
        .unwrap();
        assert!(v["reasons"].to_string().contains("two archives"), "{v}");
    }
    let out = victim
        .run(&["install", "acme/tool@=1.1.0", "--to", &root.join("t").to_string_lossy()])
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn an_equivocating_witness_stops_counting_and_a_cut_off_node_refuses_stale_installs() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let fed = Federation::empty(&bin(), root, 3).unwrap();
    // `w` is the first home: it witnesses with all three member keys.
    let w_home = fed.init_home("w", "company", None, &[]).unwrap();
    let edit = |home: &Path, from: &str, to: &str| {
        let cfg = std::fs::read_to_string(home.join("config.toml")).unwrap();
        assert!(cfg.contains(from), "{cfg}");
        std::fs::write(home.join("config.toml"), cfg.replacen(from, to, 1)).unwrap();
    };
    edit(&w_home, "idle_interval_ms = 60000", "idle_interval_ms = 300");
    let mut w = TestNode::start(&bin(), &w_home).unwrap();
    let v_home = fed.init_home("v", "public", Some(&w.p2p_addr().unwrap()), &[]).unwrap();
    edit(&v_home, "max_staleness = \"1h\"", "max_staleness = \"3s\"");
    let victim = TestNode::start(&bin(), &v_home).unwrap();
    // The restarted witness finds the victim again through its bootstrap.
    w.stop().unwrap();
    edit(
        &w_home,
        "bootstrap = []",
        &format!("bootstrap = [\"{}\"]", victim.p2p_addr().unwrap()),
    );
    w.restart().unwrap();
    let evil_home = fed
        .init_home("evil", "public", Some(&victim.p2p_addr().unwrap()), &[])
        .unwrap();
    let evil = TestNode::start_adversary(&bin(), &testnet_bin(), &evil_home).unwrap();
    let fid = federation_id(&w);

    w.json(&["key", "new", "alice"]).unwrap();
    publish(&w, root, "acme/tool", "1.0.0", "alice");
    wait_for(DEADLINE, "acme/tool on the victim", || info(&victim, "acme/tool@1.0.0")).unwrap();
    let st = wait_for(DEADLINE, "a fresh view", || {
        let st = victim.json(&["witness", "status"]).ok()?;
        (st["fresh"] == true).then_some(st)
    })
    .unwrap();
    assert_eq!(st["witnesses"].as_array().unwrap().len(), 3);

    // k0's key, stolen: the adversary signs a second checkpoint 0 for it.
    let k0 = key_in(&evil_home, "k0");
    let forged = Signed::sign(
        &pb::Checkpoint {
            seq: 0,
            time_ms: now_ms(),
            prev: Vec::new(),
            records: vec![blake3::hash(b"a record nobody holds").as_bytes().to_vec()],
            digest: vec![0; 32],
            total: 1,
            doc: 0,
        },
        &k0,
        &fid,
    );
    evil.gossip("", forged.encoded()).unwrap();
    let k0_hex = k0.public().to_hex();
    let st = wait_for(DEADLINE, "the equivocation to be detected", || {
        let st = victim.json(&["witness", "status"]).ok()?;
        let w = st["witnesses"]
            .as_array()?
            .iter()
            .find(|x| x["public_key"] == k0_hex.as_str())?
            .clone();
        (w["equivocated"] == true).then_some(w)
    })
    .unwrap();
    assert!(st["equivocation"]["second"].is_string() || st["equivocation"]["first"].is_string());
    // It stops counting, and the other two witnesses still order the
    // federation: a new namespace is witnessed (positive control, from the
    // adversary itself).
    let attacker = KeyPair::generate().unwrap();
    control_arrives(&evil, &victim, &attacker, &fid, "after");

    // Cut off: the witness is killed; the adversary answers the victim's
    // sync with nothing new. After max_staleness the victim refuses installs.
    w.kill9().unwrap();
    wait_for(DEADLINE, "the victim's view to go stale", || {
        (victim.json(&["status"]).ok()?["fresh"] == false).then_some(())
    })
    .unwrap();
    let target = root.join("target");
    let out = victim
        .run(&["--json", "install", "acme/tool", "--to", &target.to_string_lossy()])
        .unwrap();
    assert!(!out.status.success());
    let err: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(err["code"], "stale_view", "{err}");
    assert!(err["error"].as_str().unwrap().contains("--allow-stale"), "{err}");

    // The witness comes back (after a kill -9): the view is fresh again and
    // the install goes through, recording the checkpoint it rested on.
    w.restart().unwrap();
    wait_for(DEADLINE, "a fresh view again", || {
        (victim.json(&["status"]).ok()?["fresh"] == true).then_some(())
    })
    .unwrap();
    let done = wait_for(DEADLINE, "the install", || {
        victim
            .json(&["install", "acme/tool", "--to", &target.to_string_lossy()])
            .ok()
    })
    .unwrap();
    assert_eq!(done["installed"][0]["id"], "acme/tool@1.0.0");
    let lock = std::fs::read_to_string(target.join("packfed.lock")).unwrap();
    assert!(lock.contains("checkpoint = "), "{lock}");
    assert!(!lock.contains("allow_stale"), "{lock}");
}

#[test]
fn install_refuses_to_go_below_the_lockfile_without_allow_downgrade() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    packfed_testnet::init_single(&bin(), &home, "alice").unwrap();
    let node = TestNode::start(&bin(), &home).unwrap();
    publish(&node, tmp.path(), "acme/tool", "1.0.0", "alice");
    publish(&node, tmp.path(), "acme/tool", "2.0.0", "alice");
    let target = tmp.path().join("t");
    let t = target.to_string_lossy().into_owned();
    node.json(&["install", "acme/tool", "--to", &t]).unwrap();
    let out = node
        .run(&["--json", "install", "acme/tool@=1.0.0", "--to", &t])
        .unwrap();
    let err: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(err["code"], "downgrade", "{err}");
    // Positive control: with the flag it installs.
    let done = node
        .json(&["install", "acme/tool@=1.0.0", "--to", &t, "--allow-downgrade"])
        .unwrap();
    assert_eq!(done["installed"][0]["id"], "acme/tool@1.0.0");
}

#[test]
fn a_backdated_vote_on_a_closed_proposal_leaves_its_outcome() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let fed = Federation::up_with(
        &bin(),
        root,
        &["public", "public", "public"],
        &["--voting-delay", "0s", "--voting-period", "3s", "--timelock", "1s"],
    )
    .unwrap();
    let (n0, victim) = (&fed.nodes[0], &fed.nodes[1]);
    let evil_home = fed
        .init_home("evil", "public", Some(&n0.p2p_addr().unwrap()), &[])
        .unwrap();
    let evil = TestNode::start_adversary(&bin(), &testnet_bin(), &evil_home).unwrap();
    let fid = federation_id(n0);

    let p = n0
        .json(&[
            "gov",
            "propose",
            "--key",
            "k0",
            "--title",
            "a longer timelock",
            "--set",
            "timelock=2s",
        ])
        .unwrap();
    assert_eq!(p["witnessed"], true, "{p}");
    let id = p["proposal_id"].as_str().unwrap().to_string();
    n0.json(&["gov", "vote", &id, "for", "--key", "k0"]).unwrap();
    n0.json(&["gov", "vote", &id, "for", "--key", "k1"]).unwrap();
    let executed = wait_for(DEADLINE, "the proposal to execute on the victim", || {
        let v = victim.json(&["gov", "show", &id]).ok()?;
        (v["state"] == "executed").then_some(v)
    })
    .unwrap();

    // Members k1 and k2 now vote against, dated inside the closed window.
    let created = executed["created_at_ms"]
        .as_u64()
        .or(executed["start_ms"].as_u64())
        .unwrap_or(now_ms() - 5_000);
    let proposal_id = hex::decode(&id).unwrap();
    for k in ["k1", "k2"] {
        let key = key_in(&n0.home, k);
        let v = Signed::sign(
            &pb::Vote {
                proposal_id: proposal_id.clone(),
                choice: "against".into(),
                cast_at_ms: created + 100,
            },
            &key,
            &fid,
        );
        evil.gossip("governance", v.encoded()).unwrap();
    }
    // Positive control: the adversary's own record arrives after them.
    control_arrives(&evil, victim, &KeyPair::generate().unwrap(), &fid, "late");
    let after = victim.json(&["gov", "show", &id]).unwrap();
    assert_eq!(after["state"], "executed", "{after}");
    assert_eq!(after["votes_for"], executed["votes_for"], "{after}");
    assert_eq!(after["votes_against"], executed["votes_against"], "{after}");
    // They arrive and are witnessed (after the window): ignored, as votes
    // cast too late.
    wait_for(DEADLINE, "the late votes to be witnessed and ignored", || {
        let v = victim.json(&["gov", "show", &id]).ok()?;
        (v["ignored_votes"].as_u64()? >= 2).then_some(())
    })
    .unwrap();
    let after = victim.json(&["gov", "show", &id]).unwrap();
    assert_eq!(after["state"], "executed", "{after}");
    assert_eq!(after["votes_against"], executed["votes_against"], "{after}");
}

#[test]
fn org_records_are_ordered_by_the_orgs_own_witnesses_and_never_reach_public_logs() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    // a and b form an org (each witnesses org records with its node key);
    // c, outside it, is the adversary.
    let fed = Federation::org_trio(&bin(), root, Some(&testnet_bin())).unwrap();
    let (a, b, c) = (&fed.nodes[0], &fed.nodes[1], &fed.nodes[2]);
    let fid = federation_id(a);
    let dir = root.join("secret");
    make_pack(&dir, "acme/secret", "1.0.0", &[], 0).unwrap();
    a.json(&["publish", &dir.to_string_lossy(), "--key", "k0", "--visibility", "org"])
        .unwrap();
    let att = a
        .json(&[
            "attest",
            "acme/secret@1.0.0",
            "--kind",
            "audit",
            "--result",
            "pass",
            "--key",
            "k1",
        ])
        .unwrap();
    let att_id = att["attestation_id"].as_str().unwrap().to_string();
    // Both org nodes list it in the org log: it is dated on both.
    for n in [a, b] {
        wait_for(DEADLINE, "the org attestation to be witnessed by the org", || {
            let v = n.json(&["attestations", "acme/secret@1.0.0"]).ok()?;
            let found = v.as_array()?.iter().find(|x| x["id"] == att_id.as_str())?.clone();
            found["witnessed_at"].as_u64()
        })
        .unwrap();
        let st = n.json(&["witness", "status"]).unwrap();
        let org = st["org_witnesses"].as_array().unwrap();
        assert_eq!(org.len(), 2, "{st}");
        assert!(org.iter().all(|w| w["seq"].as_u64().is_some()), "{st}");
    }
    // The adversary outside the org sees no org log, and an org checkpoint it
    // gossips publicly is refused.
    let st = c.json(&["witness", "status"]).unwrap();
    assert!(st["org_witnesses"].as_array().unwrap().is_empty(), "{st}");
    let key = KeyPair::generate().unwrap();
    let forged = Signed::sign(
        &pb::Checkpoint {
            seq: 0,
            time_ms: now_ms(),
            prev: Vec::new(),
            records: vec![blake3::hash(b"x").as_bytes().to_vec()],
            digest: vec![0; 32],
            total: 1,
            doc: 1,
        },
        &key,
        &fid,
    );
    let rejected = b.json(&["status"]).unwrap()["rejected_records"].as_u64().unwrap();
    c.gossip("", forged.encoded()).unwrap();
    // Positive control: the adversary's valid public record arrives at b.
    control_arrives(c, b, &key, &fid, "outside");
    wait_for(DEADLINE, "the forged org checkpoint to be refused", || {
        (b.json(&["status"]).ok()?["rejected_records"].as_u64()? > rejected).then_some(())
    })
    .unwrap();
}

/// Yank records of `name` in a stopped node's store.
fn stored_yanks(home: &Path, name: &str) -> usize {
    let store = packfed_node::store::Store::open(&home.join("store")).unwrap();
    store
        .all_records()
        .filter_map(Result::ok)
        .filter_map(|(_, bytes)| {
            let env = Signed::decode(&bytes).ok()?;
            (env.domain() == Some(packfed_protocol::Domain::Yank)).then_some(env)
        })
        .filter(|env| {
            <pb::Yank as prost::Message>::decode(env.to_pb().payload.as_slice()).is_ok_and(|y| y.name == name)
        })
        .count()
}

#[test]
fn an_org_yank_stays_in_the_org() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let mut fed = Federation::org_trio(&bin(), root, Some(&testnet_bin())).unwrap();
    for (name, vis) in [("acme/secret", "org"), ("acme/open", "public")] {
        let dir = root.join(name.replace('/', "-"));
        make_pack(&dir, name, "1.0.0", &[], 0).unwrap();
        fed.nodes[0]
            .json(&["publish", &dir.to_string_lossy(), "--key", "k0", "--visibility", vis])
            .unwrap();
        fed.nodes[0]
            .json(&["yank", &format!("{name}@1.0.0"), "--key", "k0"])
            .unwrap();
    }
    // The org peer gets the org yank; the outsider gets the public one (the
    // positive control) and never the org one.
    wait_for(DEADLINE, "b to see the org yank", || {
        (fed.nodes[1].json(&["info", "acme/secret@1.0.0"]).ok()?["yanked"] == true).then_some(())
    })
    .unwrap();
    wait_for(DEADLINE, "c to see the public yank", || {
        (fed.nodes[2].json(&["info", "acme/open@1.0.0"]).ok()?["yanked"] == true).then_some(())
    })
    .unwrap();
    let c_home = fed.nodes[2].home.clone();
    fed.nodes[2].stop().unwrap();
    assert_eq!(stored_yanks(&c_home, "acme/open"), 1);
    assert_eq!(
        stored_yanks(&c_home, "acme/secret"),
        0,
        "the org yank reached a node outside the org"
    );
}
