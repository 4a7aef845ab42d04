//! Crash soak on real node processes: two nodes; in each iteration a stream
//! of publishes, attestations, proposals, votes and installs runs against one
//! of them, which is killed -9 at a random moment, then restarted. After
//! every restart: the store opened, every acknowledged record is on both
//! nodes, no install is half-written, and every completed install verifies.
//!
//! CI runs a few iterations; `scripts/soak` runs 200
//! (`PACKFED_SOAK_ITERATIONS`, seed in `PACKFED_SOAK_SEED`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use packfed_testnet::{Federation, TestNode, make_pack, packfed_json, wait_for};
use serde_json::Value;

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_packfed"))
}

const DEADLINE: Duration = Duration::from_secs(60);

/// xorshift64: repeatable from the printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below.max(1)
    }
}

/// What the nodes acknowledged, to be found on both afterwards.
#[derive(Default)]
struct Acked {
    releases: Vec<String>,
    /// (release id, attestation id)
    attestations: Vec<(String, String)>,
    proposals: Vec<String>,
    /// (proposal id, vote id)
    votes: Vec<(String, String)>,
    /// (install directory, whether the CLI reported success)
    installs: Vec<(PathBuf, bool)>,
}

/// One iteration's stream of writes against `home`'s node, until `stop` or
/// the first refusal (the node died). `doing` names the operation in flight.
fn stream(
    home: &Path,
    root: &Path,
    iteration: usize,
    member: &str,
    stop: &AtomicBool,
    doing: &Mutex<&'static str>,
) -> Acked {
    let mut acked = Acked::default();
    let set = |what: &'static str| *doing.lock().unwrap() = what;
    for j in 0.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let name = format!("soak{iteration}/pack{j}");
        let id = format!("{name}@1.0.0");
        let dir = root.join(format!("src/{iteration}-{j}"));
        make_pack(&dir, &name, "1.0.0", &[], 20_000).unwrap();
        set("publish");
        if packfed_json(&bin(), home, &["publish", &dir.to_string_lossy(), "--key", "k0"]).is_err() {
            break;
        }
        acked.releases.push(id.clone());
        set("attest");
        let Ok(a) = packfed_json(
            &bin(),
            home,
            &["attest", &id, "--kind", "audit", "--result", "pass", "--key", "k1"],
        ) else {
            break;
        };
        acked
            .attestations
            .push((id.clone(), a["attestation_id"].as_str().unwrap().to_string()));
        set("propose");
        let Ok(p) = packfed_json(
            &bin(),
            home,
            &[
                "gov",
                "propose",
                "--key",
                "k0",
                "--title",
                &name,
                "--remove-member",
                member,
            ],
        ) else {
            break;
        };
        let proposal = p["proposal_id"].as_str().unwrap().to_string();
        acked.proposals.push(proposal.clone());
        set("vote");
        let Ok(v) = packfed_json(&bin(), home, &["gov", "vote", &proposal, "for", "--key", "k1"]) else {
            break;
        };
        acked.votes.push((proposal, v["vote_id"].as_str().unwrap().to_string()));
        set("install");
        let target = root.join(format!("installs/{iteration}-{j}"));
        let ok = packfed_json(&bin(), home, &["install", &name, "--to", &target.to_string_lossy()]).is_ok();
        acked.installs.push((target, ok));
        set("between operations");
        if !ok {
            break;
        }
    }
    acked
}

fn proposal_votes(node: &TestNode, proposal: &str) -> Option<Vec<String>> {
    let v: Value = node.json(&["gov", "show", proposal]).ok()?;
    Some(
        v["votes"]
            .as_array()?
            .iter()
            .filter_map(|x| x["vote_id"].as_str().map(str::to_string))
            .collect(),
    )
}

/// Every acknowledged record is on every node.
fn assert_everywhere(nodes: &[TestNode], acked: &Acked) {
    for n in nodes {
        for id in &acked.releases {
            wait_for(DEADLINE, &format!("{id} on {}", n.home.display()), || {
                n.has_release(id).then_some(())
            })
            .unwrap();
        }
        for (id, att) in &acked.attestations {
            wait_for(DEADLINE, &format!("attestation {att} on {}", n.home.display()), || {
                n.has_attestation(id, att).then_some(())
            })
            .unwrap();
        }
        for p in &acked.proposals {
            wait_for(DEADLINE, &format!("proposal {p}"), || proposal_votes(n, p)).unwrap();
        }
        for (p, vote) in &acked.votes {
            wait_for(DEADLINE, &format!("vote {vote}"), || {
                proposal_votes(n, p)?.contains(vote).then_some(())
            })
            .unwrap();
        }
    }
}

/// An install either completed (and verifies) or left nothing behind.
fn assert_install_whole(node: &TestNode, dir: &Path, reported_ok: bool) {
    let lock = dir.join("packfed.lock");
    let leftovers: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(".packfed-staging"))
                .collect()
        })
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "{} keeps {leftovers:?}", dir.display());
    if reported_ok || lock.exists() {
        let v = node.json(&["verify", &dir.to_string_lossy()]).unwrap();
        assert_eq!(v["ok"], true, "install in {} verifies: {v}", dir.display());
    } else if dir.exists() {
        let entries: Vec<_> = std::fs::read_dir(dir).unwrap().filter_map(|e| e.ok()).collect();
        assert!(
            entries.is_empty(),
            "a failed install left {:?} in {}",
            entries.iter().map(|e| e.file_name()).collect::<Vec<_>>(),
            dir.display()
        );
    }
}

#[test]
fn acknowledged_records_survive_kill_9_at_random_moments() {
    let iterations: usize = std::env::var("PACKFED_SOAK_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let seed: u64 = std::env::var("PACKFED_SOAK_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(7)
                | 1
        });
    println!("soak: {iterations} iterations, PACKFED_SOAK_SEED={seed}");
    let mut rng = Rng(seed);
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let mut fed = Federation::up_with(
        &bin(),
        &root,
        &["company", "regional"],
        &["--voting-delay", "0s", "--voting-period", "1h", "--timelock", "0s"],
    )
    .unwrap();
    // Proposals that stay open for the whole soak (a one-hour vote).
    let keys = packfed_json(&bin(), &Federation::keys_home(&root), &["key", "list"]).unwrap();
    let member = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "k2")
        .and_then(|k| k["public_key"].as_str())
        .unwrap()
        .to_string();
    let mut all = Acked::default();
    let mut kill_points: BTreeMap<&'static str, usize> = BTreeMap::new();
    let started = Instant::now();
    for i in 0..iterations {
        let victim = rng.next(2) as usize;
        let kill_after = Duration::from_millis(rng.next(2_000));
        let stop = Arc::new(AtomicBool::new(false));
        let doing = Arc::new(Mutex::new("between operations"));
        let home = fed.nodes[victim].home.clone();
        let worker = {
            let (stop, doing, root, member) = (stop.clone(), doing.clone(), root.clone(), member.clone());
            std::thread::spawn(move || stream(&home, &root, i, &member, &stop, &doing))
        };
        // Not a wait for the network: the random moment of the crash.
        std::thread::sleep(kill_after);
        let point = *doing.lock().unwrap();
        fed.nodes[victim].kill9().unwrap();
        stop.store(true, Ordering::Relaxed);
        *kill_points.entry(point).or_default() += 1;
        let acked = worker.join().unwrap();

        // The store opens again (restart waits for a listening API).
        fed.nodes[victim].restart().unwrap();
        assert_everywhere(&fed.nodes, &acked);
        for (dir, ok) in &acked.installs {
            assert_install_whole(&fed.nodes[victim], dir, *ok);
        }
        all.releases.extend(acked.releases);
        all.attestations.extend(acked.attestations);
        all.proposals.extend(acked.proposals);
        all.votes.extend(acked.votes);
        all.installs.extend(acked.installs);
        if (i + 1) % 20 == 0 {
            println!("soak: {} iterations done, {:.0?}", i + 1, started.elapsed());
        }
    }
    // Nothing acknowledged in an earlier iteration was lost by a later crash.
    assert_everywhere(&fed.nodes, &all);
    let completed = all.installs.iter().filter(|(_, ok)| *ok).count();
    println!(
        "soak: {iterations} iterations in {:.0?}; kill points {kill_points:?}; acknowledged {} releases, {} attestations, {} proposals, {} votes; {completed} of {} installs completed",
        started.elapsed(),
        all.releases.len(),
        all.attestations.len(),
        all.proposals.len(),
        all.votes.len(),
        all.installs.len()
    );
    assert!(
        !all.releases.is_empty(),
        "the stream acknowledged nothing: the soak tested nothing"
    );
}
