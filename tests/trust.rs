//! Trust end-to-end: attestations travel between real node processes and
//! the acceptance policy quarantines and releases packs on every node.

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

const DEADLINE: Duration = Duration::from_secs(30);

const AUDIT_POLICY: &str = r#"
[accept]
[[accept.require]]
kind = "audit"
result = "pass"
min = 1
roles = ["security"]
[[accept.deny]]
kind = "vuln-scan"
result = "fail"
"#;

/// A 3-node federation whose genesis has a `sec` security member and the
/// audit policy above.
fn audited_federation(root: &Path, roles: &[&str]) -> Federation {
    let keys_home = Federation::keys_home(root);
    packfed_json(&bin(), &keys_home, &["key", "new", "sec"]).unwrap();
    let policy = root.join("policy.toml");
    std::fs::write(&policy, AUDIT_POLICY).unwrap();
    let policy = policy.to_string_lossy().into_owned();
    Federation::up_with(
        &bin(),
        root,
        roles,
        &["--member", "sec:security:1", "--policy", &policy],
    )
    .unwrap()
}

fn info(node: &TestNode, id: &str) -> Option<Value> {
    node.json(&["info", id]).ok()
}

fn wait_status(node: &TestNode, id: &str, status: &str, reason_part: &str) -> Value {
    wait_for(
        DEADLINE,
        &format!("{id} to be {status} on {}", node.home.display()),
        || {
            let v = info(node, id)?;
            let reasons = v["reasons"].to_string();
            (v["status"] == status && reasons.contains(reason_part)).then_some(v)
        },
    )
    .unwrap()
}

#[test]
fn audit_policy_quarantines_until_a_security_member_attests() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let fed = audited_federation(root, &["company", "regional", "public"]);
    let (a, b, c) = (&fed.nodes[0], &fed.nodes[1], &fed.nodes[2]);

    let pack = root.join("tool");
    make_pack(&pack, "acme/tool", "1.0.0", &[], 10_000).unwrap();
    a.json(&["publish", &pack.to_string_lossy(), "--key", "k0"]).unwrap();
    let id = "acme/tool@1.0.0";

    // Quarantined everywhere, naming the rule.
    for n in [a, b, c] {
        wait_status(n, id, "quarantined", "accept.require[0]");
    }
    // Hidden from search by default, shown on request.
    let hits = c.json(&["search", "tool"]).unwrap();
    assert_eq!(hits["results"].as_array().unwrap().len(), 0, "{hits}");
    let hits = c.json(&["search", "tool", "--include-quarantined"]).unwrap();
    assert_eq!(hits["results"][0]["status"], "quarantined", "{hits}");

    // Install refuses it and says which rule.
    let target = root.join("c-install");
    let t = target.to_string_lossy().into_owned();
    let out = c.run(&["install", "acme/tool", "--to", &t, "--json"]).unwrap();
    assert!(!out.status.success());
    let err: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(err["code"], "quarantined", "{err}");
    assert!(err["error"].as_str().unwrap().contains("accept.require[0]"), "{err}");
    assert!(!target.join("acme/tool").exists());

    // A security member attests on B: C accepts it and installs it.
    let att = b
        .json(&[
            "attest",
            id,
            "--kind",
            "audit",
            "--result",
            "pass",
            "--key",
            "sec",
            "--note",
            "read it all",
        ])
        .unwrap();
    assert!(att["attestation_id"].as_str().unwrap().len() == 64, "{att}");
    let accepted = wait_status(c, id, "accepted", "");
    assert!(
        accepted["attestations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["kind"] == "audit" && x["role"] == "security"),
        "{accepted}"
    );
    // A user trust policy asking for two security audits refuses it; one
    // asking for one installs it and the lockfile says which attestation.
    let strict = root.join("strict-trust.toml");
    std::fs::write(
        &strict,
        "[trust]\n[[trust.require]]\nkind = \"audit\"\nresult = \"pass\"\nmin = 2\nroles = [\"security\"]\n",
    )
    .unwrap();
    let out = c
        .run(&[
            "install",
            "acme/tool",
            "--to",
            &t,
            "--trust",
            &strict.to_string_lossy(),
            "--json",
        ])
        .unwrap();
    let err: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(err["code"], "untrusted", "{err}");
    assert!(err["error"].as_str().unwrap().contains("trust.require[0]"), "{err}");
    let one = root.join("trust.toml");
    std::fs::write(
        &one,
        "[trust]\n[[trust.require]]\nkind = \"audit\"\nresult = \"pass\"\nroles = [\"security\"]\n",
    )
    .unwrap();
    let done = c
        .json(&["install", "acme/tool", "--to", &t, "--trust", &one.to_string_lossy()])
        .unwrap();
    assert_eq!(done["installed"][0]["id"], id);
    assert_eq!(c.json(&["verify", &t]).unwrap()["ok"], true);
    let lock = std::fs::read_to_string(target.join("packfed.lock")).unwrap();
    assert!(lock.contains(att["attestation_id"].as_str().unwrap()), "{lock}");

    // B, the regional mirror, fetched the accepted pack and checked it as an
    // independent builder: its node key signed reproducible-build and
    // quality attestations that reach the other nodes.
    wait_for(DEADLINE, "B's self-check attestations to reach A", || {
        let listed = a.json(&["attestations", id]).ok()?;
        let has = |kind: &str| {
            listed
                .as_array()?
                .iter()
                .find(|x| x["kind"] == kind && x["result"] == "pass")
                .cloned()
        };
        let repro = has("reproducible-build")?;
        let quality = has("quality")?;
        (repro["attester"] == quality["attester"]).then_some(())
    })
    .unwrap();

    // An audit by a non-security member would not have counted; a failed
    // vuln-scan by anyone quarantines the accepted pack everywhere.
    c.json(&["attest", id, "--kind", "vuln-scan", "--result", "fail", "--key", "k1"])
        .unwrap();
    for n in [a, b, c] {
        wait_status(n, id, "quarantined", "accept.deny[0]");
    }
    let listed = a.json(&["attestations", id]).unwrap();
    assert!(listed.as_array().unwrap().len() >= 2, "{listed}");
    let policy = a.json(&["policy", "show"]).unwrap();
    assert!(policy["source"].as_str().unwrap().contains("federation"), "{policy}");
}

#[test]
fn bad_attestations_are_rejected_everywhere() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let mut fed = Federation::empty(&bin(), root, 3).unwrap();
    let a_home = fed.init_home("a", "company", None, &[]).unwrap();
    // The publisher is the adversary: a node of its own that gossips what it is told.
    fed.nodes
        .push(TestNode::start_adversary(&bin(), &testnet_bin(), &a_home).unwrap());
    let boot = fed.nodes[0].p2p_addr().unwrap();
    for name in ["b", "c"] {
        let home = fed.init_home(name, "public", Some(&boot), &[]).unwrap();
        fed.nodes.push(TestNode::start(&bin(), &home).unwrap());
    }
    fed.wait_connected(DEADLINE).unwrap();
    let (a, b, c) = (&fed.nodes[0], &fed.nodes[1], &fed.nodes[2]);
    let pack = root.join("p");
    make_pack(&pack, "acme/lib", "1.0.0", &[], 0).unwrap();
    a.json(&["publish", &pack.to_string_lossy(), "--key", "k0"]).unwrap();
    for n in [b, c] {
        wait_for(DEADLINE, "the release to arrive", || {
            (info(n, "acme/lib@1.0.0")?["status"] == "accepted").then_some(())
        })
        .unwrap();
    }
    let release = info(a, "acme/lib@1.0.0").unwrap();
    let hash = release["hash"].as_str().unwrap().to_string();
    let sign = packfed_testnet::sign_attestation_hex;
    let k0 = std::fs::read_to_string(a.home.join("keys/k0.key")).unwrap();
    let fed_id = a.json(&["status"]).unwrap()["federation_id"]
        .as_str()
        .unwrap()
        .to_string();
    let wrong_hash = "00".repeat(32);
    // (what is wrong, signing key's federation, hash named, corrupt signature)
    let other_fed = "11".repeat(32);
    let bad = [
        ("wrong hash", &fed_id, &wrong_hash, false),
        ("bad signature", &fed_id, &hash, true),
        ("other federation", &other_fed, &hash, false),
    ];
    for (what, fed_hex, hash_hex, corrupt) in bad {
        let before: Vec<u64> = [b, c].iter().map(|n| rejected(n)).collect();
        // Gossip needs the mesh: resend freshly signed copies (a new note,
        // so a new message id) until both peers have judged one.
        wait_for(
            DEADLINE,
            &format!("peers to reject the attestation with a {what}"),
            || {
                let hex = sign(&k0, fed_hex, "acme/lib", "1.0.0", hash_hex, corrupt).unwrap();
                let _ = a.gossip("attestations", &hex::decode(hex).unwrap());
                ([b, c].iter().zip(&before).all(|(n, was)| rejected(n) > *was)).then_some(())
            },
        )
        .unwrap();
    }
    // Nothing was stored anywhere; every node still answers.
    for n in [b, c] {
        let listed = n.json(&["attestations", "acme/lib@1.0.0"]).unwrap();
        assert!(
            listed.as_array().unwrap().iter().all(|x| x["kind"] != "audit"),
            "{listed}"
        );
        assert_eq!(info(n, "acme/lib@1.0.0").unwrap()["status"], "accepted");
    }
    // The positive control: a valid attestation from the same adversary arrives.
    wait_for(DEADLINE, "the valid attestation to arrive", || {
        let hex = sign(&k0, &fed_id, "acme/lib", "1.0.0", &hash, false).unwrap();
        let _ = a.gossip("attestations", &hex::decode(hex).unwrap());
        [b, c]
            .iter()
            .all(|n| {
                n.json(&["attestations", "acme/lib@1.0.0"])
                    .ok()
                    .and_then(|l| l.as_array().map(|a| a.iter().any(|x| x["kind"] == "audit")))
                    .unwrap_or(false)
            })
            .then_some(())
    })
    .unwrap();
}

fn rejected(n: &TestNode) -> u64 {
    n.json(&["status"])
        .ok()
        .and_then(|s| s["rejected_records"].as_u64())
        .unwrap_or(0)
}
