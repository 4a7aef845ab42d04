//! Trust measurements for `scripts/bench`, each beside a baseline from the
//! same run:
//! (f) acceptance policy evaluation per release, 10 rules, 20 attestations,
//!     one core;
//! (g) attestation verify-and-store throughput (batched signature check,
//!     sled write, re-evaluation), beside ed25519-dalek's own batch and
//!     single verification rates on the same signatures;
//! (h) time from `packfed attest` to the status change on every node of a
//!     10-process testnet;
//! (i) governance tally + state for 1,000 proposals x 100 members' votes;
//! (j) time from the last vote to `executed` on every node of that testnet,
//!     beyond the timelock (runs with (h)).
//! PACKFED_BENCH_QUICK=1 shrinks every size (smoke runs).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use packfed_governance::Role;
use packfed_governance::evaluate::{AttestationFact, ReleaseFacts, evaluate_all};
use packfed_governance::policy::{Accept, AttestationKind, Denial, Requirement, Verdict};
use packfed_node::config::Home;
use packfed_node::core::Channel;
use packfed_node::node::Ingested;
use packfed_node::node::Node;
use packfed_protocol::{KeyPair, PublicKey, Signed, pb};
use packfed_testnet::{Federation, TestNode, make_pack, packfed_json, wait_for};

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_packfed"))
}

struct Row(String, String, String);

fn per_sec(n: usize, d: Duration) -> String {
    let r = n as f64 / d.as_secs_f64();
    if r >= 1e6 {
        format!("{:.2} M/s", r / 1e6)
    } else {
        format!("{:.0}/s", r)
    }
}

fn bench_f(rows: &mut Vec<Row>, iterations: usize) {
    let keys: Vec<PublicKey> = (0..8u8).map(|i| PublicKey([i; 32])).collect();
    let role_of = |k: &PublicKey| match k.0[0] % 3 {
        0 => Some(Role::Security),
        1 => Some(Role::Core),
        _ => None,
    };
    let req = |kind, min, roles: Vec<Role>| Requirement {
        kind,
        result: Verdict::Pass,
        min,
        roles,
    };
    // 10 rules: licenses, quality, size, 5 requirements, 2 denials.
    let accept = Accept {
        licenses: vec!["MIT".into(), "Apache-2.0".into(), "BSD-3-Clause".into()],
        min_quality: 40,
        max_pack_bytes: Some(50 << 20),
        require: vec![
            req(AttestationKind::Audit, 1, vec![Role::Security]),
            req(AttestationKind::ReproducibleBuild, 2, vec![]),
            req(AttestationKind::License, 1, vec![]),
            req(AttestationKind::Review, 1, vec![Role::Core, Role::Security]),
            req(AttestationKind::Quality, 1, vec![]),
        ],
        deny: vec![
            Denial {
                kind: AttestationKind::VulnScan,
                result: Verdict::Fail,
                roles: vec![],
            },
            Denial {
                kind: AttestationKind::Audit,
                result: Verdict::Fail,
                roles: vec![Role::Security],
            },
        ],
    };
    let kinds = [
        AttestationKind::Audit,
        AttestationKind::ReproducibleBuild,
        AttestationKind::License,
        AttestationKind::Review,
        AttestationKind::Quality,
    ];
    let atts: Vec<AttestationFact> = (0..20u64)
        .map(|i| AttestationFact {
            id: *blake3::hash(&i.to_le_bytes()).as_bytes(),
            attester: keys[(i % 8) as usize],
            kind: kinds[(i % 5) as usize],
            result: Verdict::Pass,
            time_ms: 1000 + i,
        })
        .collect();
    let release = ReleaseFacts {
        license: "MIT OR Apache-2.0",
        quality: 70,
        size: 1 << 20,
        publisher: keys[0],
    };
    let sets = [("federation", &accept)];
    let mut accepted = 0;
    let t = Instant::now();
    for _ in 0..iterations {
        accepted += usize::from(evaluate_all(&sets, &release, &atts, &role_of).accepted());
    }
    let took = t.elapsed();
    assert_eq!(accepted, iterations, "the bench release should pass");
    // Baseline: one ed25519 verification, the cost of checking one record.
    let key = KeyPair::generate().unwrap();
    let sig = key.sign(b"baseline");
    let vk = ed25519_dalek::VerifyingKey::from_bytes(key.public().as_bytes()).unwrap();
    let sig = ed25519_dalek::Signature::from_bytes(&sig);
    let n = 2000;
    let t = Instant::now();
    for _ in 0..n {
        vk.verify_strict(b"baseline", &sig).unwrap();
    }
    rows.push(Row(
        "(f) policy evaluation per release, 10 rules, 20 attestations, 1 core".into(),
        per_sec(iterations, took),
        format!("ed25519 verify_strict {} (floor >= 100,000/s)", per_sec(n, t.elapsed())),
    ));
}

fn bench_g(rows: &mut Vec<Row>, n: usize) {
    let tmp = tempfile::tempdir().unwrap();
    // The audit policy, open to any attester (the attesters below hold no
    // role, and only attestations that can change a verdict re-evaluate):
    // one kind in five of the attestations below is one the rules look at,
    // so those trigger re-evaluation.
    let policy = tmp.path().join("policy.toml");
    std::fs::write(&policy, OPEN_AUDIT_POLICY).unwrap();
    let fed = Federation::empty_with(&bin(), tmp.path(), 1, &["--policy", &policy.to_string_lossy()]).unwrap();
    let home = fed.init_home("a", "public", None, &[]).unwrap();
    let releases = 100;
    let fid = *Node::open(Home { root: home }).unwrap().federation();
    let attesters: Vec<KeyPair> = (0..50).map(|_| KeyPair::generate().unwrap()).collect();
    let kinds = ["audit", "review", "license", "vuln-scan", "benchmark"];
    let envelopes: Vec<Signed> = (0..n)
        .map(|i| {
            let r = i % releases;
            let a = pb::Attestation {
                name: format!("ns{}/pack-{r}", r / 100),
                version: "1.0.0".into(),
                content_hash: blake3::hash(&r.to_le_bytes()).as_bytes().to_vec(),
                kind: kinds[i % kinds.len()].into(),
                result: "pass".into(),
                note: format!("bench {i}"),
                attested_at_ms: 1000 + i as u64,
                score: 0,
            };
            Signed::sign(&a, &attesters[i % attesters.len()], &fid)
        })
        .collect();
    let bytes: Vec<Vec<u8>> = envelopes.iter().map(|e| e.encoded().to_vec()).collect();

    // Baselines on the same signatures: ed25519-dalek batch and single.
    let parts: Vec<(Vec<u8>, ed25519_dalek::Signature, ed25519_dalek::VerifyingKey)> = envelopes
        .iter()
        .map(|e| {
            let p = e.to_pb();
            let mut msg = packfed_protocol::Domain::Attestation.tag().as_bytes().to_vec();
            msg.push(0);
            msg.extend_from_slice(fid.as_bytes());
            msg.extend_from_slice(&p.payload);
            let sig = ed25519_dalek::Signature::from_bytes(&p.signature.as_slice().try_into().unwrap());
            let vk = ed25519_dalek::VerifyingKey::from_bytes(&p.signer.as_slice().try_into().unwrap()).unwrap();
            (msg, sig, vk)
        })
        .collect();
    let t = Instant::now();
    for chunk in parts.chunks(BATCH) {
        let msgs: Vec<&[u8]> = chunk.iter().map(|p| p.0.as_slice()).collect();
        let sigs: Vec<_> = chunk.iter().map(|p| p.1).collect();
        let vks: Vec<_> = chunk.iter().map(|p| p.2).collect();
        ed25519_dalek::verify_batch(&msgs, &sigs, &vks).unwrap();
    }
    let batch_rate = per_sec(n, t.elapsed());
    let single_n = n.min(5000);
    let t = Instant::now();
    for p in &parts[..single_n] {
        p.2.verify_strict(&p.0, &p.1).unwrap();
    }
    let single_rate = per_sec(single_n, t.elapsed());

    // Registry sync hands over one message's records at a time: measure
    // messages of BATCH records and one message with everything (a fresh
    // node's first sync), each into a fresh store, as `absorb` does.
    let mut rates = Vec::new();
    for batch in [BATCH, n] {
        let home = fed.init_home(&format!("g{batch}"), "public", None, &[]).unwrap();
        packfed_testnet::preload(&home, releases).expect("preload the releases");
        let node = Node::open(Home { root: home }).unwrap();
        // Records a sync delivers are already in the node's registry
        // document (automerge applied the peer's changes); what remains is
        // to verify, check, store, index and re-evaluate them.
        for e in &envelopes {
            node.replicate_to(Channel::Public, &e.id(), e.encoded());
        }
        let t = Instant::now();
        let mut new = 0;
        for chunk in bytes.chunks(batch) {
            for r in node.ingest_batch(chunk, &Default::default(), Channel::Public) {
                match r {
                    Ingested::New => new += 1,
                    other => panic!("attestation not stored: {other:?}"),
                }
            }
        }
        node.store.flush().unwrap();
        let took = t.elapsed();
        assert_eq!(new, n);
        rates.push(format!("{} in messages of {batch}", per_sec(n, took)));
    }
    rows.push(Row(
        format!("(g) attestation verify-and-store from registry sync (strict verify, subject check, sled index, re-evaluation), {n} attestations of {releases} releases"),
        rates.join("; "),
        format!("ed25519-dalek verify_batch {batch_rate}, verify_strict {single_rate} (floor >= 20,000/s)"),
    ));
}

/// Attestations per sync message in the first measurement.
const BATCH: usize = 512;

const OPEN_AUDIT_POLICY: &str = "[accept]\n[[accept.require]]\nkind = \"audit\"\nresult = \"pass\"\n";
const AUDIT_POLICY: &str =
    "[accept]\n[[accept.require]]\nkind = \"audit\"\nresult = \"pass\"\nroles = [\"security\"]\n";

fn bench_h(rows: &mut Vec<Row>, nodes: usize, rounds: usize) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    packfed_json(&bin(), &Federation::keys_home(root), &["key", "new", "sec"]).unwrap();
    let policy = root.join("policy.toml");
    std::fs::write(&policy, AUDIT_POLICY).unwrap();
    let policy = policy.to_string_lossy().into_owned();
    let roles: Vec<&str> = (0..nodes).map(|_| "public").collect();
    let fed = Federation::up_with(
        &bin(),
        root,
        &roles,
        &[
            "--member",
            "sec:security:1",
            "--policy",
            &policy,
            "--voting-delay",
            "0s",
            "--voting-period",
            "2s",
            "--timelock",
            "1s",
        ],
    )
    .unwrap();
    let mut samples = Vec::new();
    let dir = root.join("p");
    let status_is =
        |n: &TestNode, id: &str, want: &str| n.json(&["info", id]).ok().is_some_and(|v| v["status"] == want);
    for i in 0..rounds {
        let version = format!("1.0.{i}");
        let id = format!("bench/audited@{version}");
        make_pack(&dir, "bench/audited", &version, &[], 0).unwrap();
        fed.nodes[0]
            .json(&["publish", &dir.to_string_lossy(), "--key", "k0"])
            .unwrap();
        for n in &fed.nodes {
            wait_for(Duration::from_secs(30), "the release to arrive quarantined", || {
                status_is(n, &id, "quarantined").then_some(())
            })
            .unwrap();
        }
        let start = Instant::now();
        fed.nodes[1]
            .json(&["attest", &id, "--kind", "audit", "--result", "pass", "--key", "sec"])
            .unwrap();
        let handles: Vec<_> = fed
            .nodes
            .iter()
            .map(|n| {
                let (bin, home, id) = (bin(), n.home.clone(), id.clone());
                std::thread::spawn(move || {
                    while start.elapsed() < Duration::from_secs(30) {
                        let ok = packfed_json(&bin, &home, &["info", &id])
                            .ok()
                            .is_some_and(|v| v["status"] == "accepted");
                        if ok {
                            return start.elapsed();
                        }
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Duration::from_secs(30)
                })
            })
            .collect();
        for h in handles {
            samples.push(h.join().unwrap());
        }
    }
    samples.sort();
    bench_j(rows, &fed, rounds);
    // Baseline: one `packfed info` call (the polling granularity).
    let t = Instant::now();
    let _ = fed.nodes[0].json(&["info", "bench/audited"]);
    let cli = t.elapsed();
    let p = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    rows.push(Row(
        format!(
            "(h) `packfed attest` to accepted on every node, {nodes}-process testnet, {} samples",
            samples.len()
        ),
        format!(
            "p50 {:.0} ms, p99 {:.0} ms",
            p(0.5).as_secs_f64() * 1e3,
            p(0.99).as_secs_f64() * 1e3
        ),
        format!("one `packfed info` call {:.0} ms", cli.as_secs_f64() * 1e3),
    ));
}

/// (i) The tally and state of 1,000 proposals with 100 members' votes each.
fn bench_i(rows: &mut Vec<Row>, proposals: usize, members: usize) {
    use packfed_governance::Member;
    use packfed_governance::duration::Duration as Span;
    use packfed_governance::proposals::{Action, Choice, GovRecord, ProposalRecord, VoteRecord, state};
    let keys: Vec<PublicKey> = (0..members)
        .map(|i| KeyPair::from_seed(*blake3::hash(&(i as u64).to_le_bytes()).as_bytes()).public())
        .collect();
    let params = packfed_governance::Parameters {
        voting_delay: Span(0),
        voting_period: Span(60),
        timelock: Span(10),
        ..Default::default()
    };
    let genesis_members = keys
        .iter()
        .map(|k| Member {
            public_key: *k,
            role: Role::Core,
            weight: 1,
        })
        .collect();
    let text = packfed_governance::Genesis::render("bench", "00", genesis_members, params, Default::default()).unwrap();
    let genesis = packfed_governance::Genesis::parse(text.as_bytes()).unwrap();
    let id = |tag: u8, i: usize, j: usize| {
        let mut h = blake3::Hasher::new();
        h.update(&[tag]);
        h.update(&(i as u64).to_le_bytes());
        h.update(&(j as u64).to_le_bytes());
        *h.finalize().as_bytes()
    };
    let mut records = Vec::with_capacity(proposals * (members + 1));
    for p in 0..proposals {
        let created = 1_000_000 + p as u64 * 1000;
        let pid = id(0, p, 0);
        records.push(GovRecord::Proposal(ProposalRecord {
            id: pid,
            proposer: keys[p % members],
            title: format!("proposal {p}"),
            action: Action::SetParameter {
                name: "quorum".into(),
                value: format!("0.{}", 4 + p % 3),
            },
            created_at_ms: created,
        }));
        for (m, voter) in keys.iter().enumerate() {
            records.push(GovRecord::Vote(VoteRecord {
                id: id(1, p, m),
                voter: *voter,
                proposal: pid,
                choice: [Choice::For, Choice::Against, Choice::Abstain][(p + m) % 3],
                cast_at_ms: created + 1 + m as u64,
            }));
        }
    }
    let now = 1_000_000 + proposals as u64 * 1000 + 3_600_000;
    let mut times = Vec::new();
    let mut listed = 0;
    for _ in 0..5 {
        let t = Instant::now();
        let st = state(&genesis, &records, now);
        times.push(t.elapsed());
        listed = st.proposals.len();
    }
    times.sort();
    assert_eq!(listed, proposals);
    // Baseline: sorting the same records by time, the least any tally does.
    let mut keyed: Vec<(u64, [u8; 32])> = records.iter().map(|r| (r.time_ms(), r.id())).collect();
    let t = Instant::now();
    keyed.sort_unstable();
    let sort = t.elapsed();
    rows.push(Row(
        format!("(i) governance tally + state, {proposals} proposals x {members} members' votes, 1 core"),
        format!("{:.1} ms (median of 5)", times[2].as_secs_f64() * 1e3),
        format!(
            "sorting the {} records by time {:.1} ms (floor < 50 ms)",
            records.len(),
            sort.as_secs_f64() * 1e3
        ),
    ));
}

/// (j) From the last vote to `executed` on every node, beyond the timelock.
fn bench_j(rows: &mut Vec<Row>, fed: &Federation, rounds: usize) {
    let policy = fed.root.join("policy-j.toml");
    std::fs::write(&policy, AUDIT_POLICY).unwrap();
    let policy = policy.to_string_lossy().into_owned();
    let mut lags = Vec::new();
    for i in 0..rounds {
        let title = format!("j{i}");
        let v = fed.nodes[0]
            .json(&["gov", "propose", "--key", "sec", "--title", &title, "--policy", &policy])
            .unwrap();
        let id = v["proposal_id"].as_str().unwrap().to_string();
        for (n, key) in [(1, "k0"), (2 % fed.nodes.len(), "k1")] {
            wait_for(Duration::from_secs(30), "the proposal to arrive", || {
                fed.nodes[n].json(&["gov", "show", &id]).ok()
            })
            .unwrap();
            fed.nodes[n].json(&["gov", "vote", &id, "for", "--key", key]).unwrap();
        }
        let shown = fed.nodes[0].json(&["gov", "show", &id]).unwrap();
        let executable_at = shown["executable_at"].as_u64().unwrap();
        let handles: Vec<_> = fed
            .nodes
            .iter()
            .map(|n| {
                let (bin, home, id) = (bin(), n.home.clone(), id.clone());
                std::thread::spawn(move || {
                    let deadline = Instant::now() + Duration::from_secs(30);
                    while Instant::now() < deadline {
                        let done = packfed_json(&bin, &home, &["gov", "show", &id])
                            .ok()
                            .is_some_and(|v| v["state"] == "executed");
                        if done {
                            return now_ms().saturating_sub(executable_at);
                        }
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    30_000
                })
            })
            .collect();
        for h in handles {
            lags.push(h.join().unwrap());
        }
    }
    lags.sort();
    let p = |q: f64| lags[((lags.len() - 1) as f64 * q).round() as usize];
    rows.push(Row(
        format!(
            "(j) last vote to `executed` on every node, beyond the 1 s timelock, {}-process testnet, {} samples",
            fed.nodes.len(),
            lags.len()
        ),
        format!("p50 {} ms, p99 {} ms after executable_at", p(0.5), p(0.99)),
        "polled with `packfed gov show` (one CLI call ~7 ms)".into(),
    ));
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let quick = std::env::var_os("PACKFED_BENCH_QUICK").is_some();
    let only = std::env::var("PACKFED_BENCH_ONLY").unwrap_or_else(|_| "fghi".into());
    let mut rows = Vec::new();
    if only.contains('f') {
        bench_f(&mut rows, if quick { 20_000 } else { 300_000 });
    }
    if only.contains('g') {
        bench_g(&mut rows, if quick { 2_000 } else { 20_000 });
    }
    if only.contains('i') {
        bench_i(&mut rows, 1000, 100);
    }
    if only.contains('h') {
        bench_h(&mut rows, if quick { 3 } else { 10 }, if quick { 1 } else { 3 });
    }
    println!("| trust and governance measurement | result | baseline (same run) |");
    println!("|---|---|---|");
    for Row(a, b, c) in rows {
        println!("| {a} | {b} | {c} |");
    }
}
