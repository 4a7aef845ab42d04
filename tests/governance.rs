//! Governance end-to-end on real node processes, with periods of seconds:
//! proposals and votes travel by gossip, every node computes the same
//! outcome at the same deadlines, and an executed policy applies everywhere.

use std::path::{Path, PathBuf};
use std::time::Duration;

use packfed_testnet::{Federation, TestNode, make_pack, packfed_json, wait_for};
use serde_json::Value;

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_packfed"))
}

/// The `testnet` binary: its `adversary` command is the hostile peer.
fn testnet_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_testnet"))
}

const DEADLINE: Duration = Duration::from_secs(40);

const AUDIT_POLICY: &str =
    "[accept]\n[[accept.require]]\nkind = \"audit\"\nresult = \"pass\"\nroles = [\"security\"]\n";

/// Members k0 (maintainer), k1 (core), k2 (community) and sec (security),
/// weight 1 each; quorum 0.5, threshold 0.5; votes open at once for 4 s,
/// then a 2 s timelock.
fn federation(root: &Path) -> Federation {
    let keys_home = Federation::keys_home(root);
    packfed_json(&bin(), &keys_home, &["key", "new", "sec"]).unwrap();
    packfed_json(&bin(), &keys_home, &["key", "new", "outsider"]).unwrap();
    let mut extra = vec!["--member", "sec:security:1"];
    extra.extend([
        "--quorum",
        "0.5",
        "--threshold",
        "0.5",
        "--voting-delay",
        "0s",
        "--voting-period",
        "4s",
        "--timelock",
        "2s",
    ]);
    Federation::up_with(&bin(), root, &["company", "regional", "public"], &extra).unwrap()
}

fn proposal(node: &TestNode, id: &str) -> Option<Value> {
    node.json(&["gov", "show", id]).ok()
}

fn wait_state(nodes: &[TestNode], id: &str, state: &str) {
    for n in nodes {
        wait_for(DEADLINE, &format!("proposal {id} to be {state}"), || {
            (proposal(n, id)?["state"] == state).then_some(())
        })
        .unwrap();
    }
}

fn propose(node: &TestNode, key: &str, title: &str, action: &[&str]) -> String {
    let mut args = vec!["gov", "propose", "--key", key, "--title", title];
    args.extend(action);
    let v = node.json(&args).unwrap();
    v["proposal_id"].as_str().unwrap().to_string()
}

fn vote(node: &TestNode, id: &str, choice: &str, key: &str) -> Value {
    wait_for(DEADLINE, "the proposal to reach the voter's node", || {
        proposal(node, id)
    })
    .unwrap();
    node.json(&["gov", "vote", id, choice, "--key", key]).unwrap()
}

#[test]
fn policy_proposal_executes_everywhere_and_quarantines_new_packs() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let fed = federation(root);
    let nodes = &fed.nodes;
    let policy = root.join("audit.toml");
    std::fs::write(&policy, AUDIT_POLICY).unwrap();

    // A security member proposes; two members vote for on other nodes.
    let id = propose(
        &nodes[0],
        "sec",
        "require an audit",
        &["--policy", &policy.to_string_lossy()],
    );
    vote(&nodes[1], &id, "for", "k0");
    vote(&nodes[2], &id, "for", "k1");
    wait_state(nodes, &id, "executed");
    for n in nodes {
        let p = wait_for(DEADLINE, "policy version 1", || {
            let p = n.json(&["policy", "show"]).ok()?;
            (p["version"] == 1).then_some(p)
        })
        .unwrap();
        assert_eq!(p["set_by"], id.as_str(), "{p}");
        assert_eq!(proposal(n, &id).unwrap()["for"], 2);
    }

    // A new, unattested pack is quarantined everywhere.
    let pack = root.join("p");
    make_pack(&pack, "acme/fresh", "1.0.0", &[], 0).unwrap();
    nodes[0]
        .json(&["publish", &pack.to_string_lossy(), "--key", "k0"])
        .unwrap();
    for n in nodes {
        wait_for(DEADLINE, "the new pack to be quarantined", || {
            let v = n.json(&["info", "acme/fresh@1.0.0"]).ok()?;
            (v["status"] == "quarantined" && v["reasons"].to_string().contains("audit")).then_some(())
        })
        .unwrap();
    }
}

#[test]
fn quorum_non_members_and_new_members() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let fed = federation(root);
    let nodes = &fed.nodes;

    // One vote of four weights: no quorum, defeated everywhere.
    let lonely = propose(&nodes[0], "k0", "raise quorum", &["--set", "quorum=0.6"]);
    vote(&nodes[1], &lonely, "for", "k0");
    wait_state(nodes, &lonely, "defeated");

    // Adding a member by proposal; the outsider's vote on it is refused by
    // the CLI and, injected straight onto the network, counted nowhere.
    let outsider = std::fs::read_to_string(root.join("keys-home/keys/outsider.key")).unwrap();
    let outsider_pub = packfed_json(&bin(), &Federation::keys_home(root), &["key", "list"]).unwrap();
    let outsider_pub = outsider_pub
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "outsider")
        .unwrap()["public_key"]
        .as_str()
        .unwrap()
        .to_string();
    let add = propose(
        &nodes[0],
        "k1",
        "welcome the outsider",
        &["--add-member", &format!("{outsider_pub}:community:1")],
    );
    wait_for(DEADLINE, "the proposal to reach node 2", || proposal(&nodes[2], &add)).unwrap();
    let refused = nodes[2]
        .run(&["gov", "vote", &add, "for", "--key", "outsider", "--json"])
        .unwrap();
    assert!(!refused.status.success());
    let err: Value = serde_json::from_slice(&refused.stdout).unwrap();
    assert_eq!(err["code"], "not_member", "{err}");
    let fed_id = nodes[0].json(&["status"]).unwrap()["federation_id"]
        .as_str()
        .unwrap()
        .to_string();
    // The adversary (a peer of its own) plays the injector.
    let boot = nodes[0].p2p_addr().unwrap();
    let evil_home = fed.init_home("evil", "public", Some(&boot), &[]).unwrap();
    let evil = TestNode::start_adversary(&bin(), &testnet_bin(), &evil_home).unwrap();
    let before: Vec<u64> = nodes.iter().map(rejected_or_stored).collect();
    wait_for(DEADLINE, "the injected vote to reach the other nodes", || {
        // Freshly signed each time: a new message id for gossip.
        let injected = packfed_testnet::sign_vote_hex(&outsider, &fed_id, &add, "against").unwrap();
        let _ = evil.gossip("governance", &hex::decode(injected).unwrap());
        nodes
            .iter()
            .zip(&before)
            .all(|(n, b)| rejected_or_stored(n) > *b)
            .then_some(())
    })
    .unwrap();
    // The positive control: a member's vote the same adversary gossips counts.
    let k0 = std::fs::read_to_string(root.join("keys-home/keys/k0.key")).unwrap();
    wait_for(DEADLINE, "the member's vote from the adversary to count", || {
        let member_vote = packfed_testnet::sign_vote_hex(&k0, &fed_id, &add, "for").unwrap();
        let _ = evil.gossip("governance", &hex::decode(member_vote).unwrap());
        nodes
            .iter()
            .all(|n| proposal(n, &add).is_some_and(|p| p["for"] == 1))
            .then_some(())
    })
    .unwrap();
    vote(&nodes[2], &add, "for", "k2");
    wait_state(nodes, &add, "executed");
    for n in nodes {
        let p = proposal(n, &add).unwrap();
        assert_eq!(p["against"], 0, "the outsider's vote must not count: {p}");
        assert_eq!(p["for"], 2, "{p}");
        let members = n.json(&["gov", "members"]).unwrap();
        assert!(members.to_string().contains(&outsider_pub), "{members}");
    }

    // The new member's vote counts on the next proposal.
    let next = propose(&nodes[1], "sec", "longer timelock", &["--set", "timelock=3s"]);
    // Five members now: quorum needs three.
    vote(&nodes[2], &next, "for", "outsider");
    vote(&nodes[0], &next, "for", "k0");
    vote(&nodes[1], &next, "for", "k1");
    wait_state(nodes, &next, "executed");
    let p = proposal(&nodes[1], &next).unwrap();
    assert_eq!(p["for"], 3, "{p}");
    assert!(p["votes"].to_string().contains(&outsider_pub), "{p}");
}

/// Records this node has judged (stored or refused): moves when a gossiped
/// record arrives.
fn rejected_or_stored(n: &TestNode) -> u64 {
    let s = n.json(&["status"]).unwrap_or_default();
    s["rejected_records"].as_u64().unwrap_or(0) + s["gov_records"].as_u64().unwrap_or(0)
}
