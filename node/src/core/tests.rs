//! The core driven with simulated peers and simulated time only: no store,
//! no sockets, no sleeps. [`Sim`] is a minimal shell that keeps records in
//! maps and carries out effects the way the node shell does with sled.

use std::collections::{HashMap, HashSet};

use packfed_governance::duration::Duration;
use packfed_governance::{Genesis, Member, Parameters, Policy, Role};
use packfed_protocol::limits::MAX_ENVELOPE_BYTES;
use packfed_protocol::{ContentHash, FederationId, KeyPair, PublicKey, RecordId, Signed, Verified, pb};
use prost::Message;

use super::admit::{self, Incoming, Outcome, YankError};
use super::gov::Governance;
use super::learning::Learning;
use super::verdict::{self, Judge};
use super::{Channel, Effect, Topic, View, Write};
use crate::learn::model::{FEATURES, SCHEMA_VERSION};
use crate::store::{AttestationEntry, ReleaseEntry, ReleaseStatus, StoreError};

const T0: u64 = 1_000_000_000;
const SECOND: u64 = 1000;

/// Records held, as maps.
#[derive(Default)]
struct Mem {
    records: HashSet<RecordId>,
    /// Namespace -> (claimed at, owner): the earliest claim wins.
    owners: HashMap<String, (u64, PublicKey)>,
    releases: Vec<ReleaseEntry>,
    attestations: Vec<(String, String, AttestationEntry)>,
    statuses: HashMap<RecordId, ReleaseStatus>,
    yanks: Vec<Verified<pb::Yank>>,
}

impl View for Mem {
    fn has_record(&self, id: &RecordId) -> Result<bool, StoreError> {
        Ok(self.records.contains(id))
    }
    fn namespace_owner(&self, ns: &str) -> Result<Option<PublicKey>, StoreError> {
        Ok(self.owners.get(ns).map(|(_, k)| *k))
    }
    fn release(&self, name: &str, version: &str) -> Result<Option<ReleaseEntry>, StoreError> {
        let ns = name.split('/').next().unwrap_or_default();
        let owner = self.namespace_owner(ns)?;
        Ok(self
            .releases
            .iter()
            .find(|e| e.release.name == name && e.release.version == version && Some(e.publisher) == owner)
            .cloned())
    }
    fn release_record(&self, name: &str, version: &str) -> Result<Option<pb::Release>, StoreError> {
        Ok(self.release(name, version)?.map(|e| e.release))
    }
    fn attestations_of(&self, name: &str, version: &str) -> Result<Vec<AttestationEntry>, StoreError> {
        Ok(self
            .attestations
            .iter()
            .filter(|(n, v, _)| n == name && v == version)
            .map(|(_, _, a)| a.clone())
            .collect())
    }
    fn attestation_count(&self, name: &str, version: &str, at_most: usize) -> Result<usize, StoreError> {
        Ok(self.attestations_of(name, version)?.len().min(at_most))
    }
    /// The sim witnesses an attestation at its own time (witnessing has its
    /// own tests).
    fn witnessed(&self, id: &RecordId) -> Option<u64> {
        self.attestations
            .iter()
            .find(|(_, _, a)| a.id == id.0)
            .map(|(_, _, a)| a.time_ms)
    }
    fn status(&self, release: &RecordId) -> Result<Option<ReleaseStatus>, StoreError> {
        Ok(self.statuses.get(release).cloned())
    }
    fn pack_is_org(&self, name: &str) -> Result<Option<bool>, StoreError> {
        let mut of = self.releases.iter().filter(|e| e.release.name == name).peekable();
        if of.peek().is_none() {
            return Ok(None);
        }
        Ok(Some(of.any(|e| e.release.visibility == pb::Visibility::Org as i32)))
    }
}

/// A node's core with a shell of maps around it.
struct Sim {
    fed: FederationId,
    gov: Governance,
    learn: Learning,
    mirror: bool,
    mem: Mem,
    gossiped: Vec<(Topic, Vec<u8>)>,
    replicated: Vec<(Channel, RecordId)>,
    fetched: Vec<ContentHash>,
    flushes: usize,
    /// The sim is its federation's one witness: governance records are
    /// witnessed when they arrive.
    witnessed: HashMap<[u8; 32], u64>,
}

impl Sim {
    fn new(genesis: &Genesis) -> Sim {
        Sim {
            fed: genesis.id,
            gov: Governance::new(genesis.clone(), None),
            learn: Learning::new(60 * SECOND, true),
            mirror: true,
            mem: Mem::default(),
            gossiped: Vec::new(),
            replicated: Vec::new(),
            fetched: Vec::new(),
            flushes: 0,
            witnessed: HashMap::new(),
        }
    }

    /// A record from a peer at `now`, decided and carried out.
    fn receive(&mut self, bytes: &[u8], channel: Channel, now: u64) -> Outcome {
        let incoming = match admit::open(bytes, &self.fed) {
            Ok(i) => i,
            Err(r) => return Outcome::Invalid(r.reason),
        };
        let policy = self.gov.policy();
        let judge = Judge {
            policy: &policy,
            mirror: self.mirror,
            max_pack_bytes: crate::config::DEFAULT_MAX_PACK_BYTES,
        };
        let admitted = match incoming {
            Incoming::Claim(v) => admit::claim(&self.mem, &v).unwrap(),
            Incoming::Release(v) => admit::release(&judge, &self.mem, &v, channel).unwrap(),
            Incoming::Yank(v) => admit::yank(&self.mem, &v, channel).unwrap(),
            Incoming::Deprecation(v) => admit::deprecation(&self.mem, &v, channel).unwrap(),
            Incoming::Attestation(v) => {
                let mut a = admit::attestations(&judge, &self.mem, &[v], channel, false).unwrap();
                let outcome = match a.results.pop().unwrap() {
                    Ok(true) => Outcome::New,
                    Ok(false) => Outcome::Known,
                    Err(e) => Outcome::Invalid(e.to_string()),
                };
                admit::Admitted {
                    outcome,
                    effects: a.effects,
                }
            }
            Incoming::Governance(env) => match self.gov.admit(&env, &self.fed, now) {
                Ok(Some(effects)) => {
                    self.witnessed.insert(env.id().0, now);
                    self.gov.set_witnessed(self.witnessed.clone());
                    admit::Admitted {
                        outcome: Outcome::New,
                        effects,
                    }
                }
                Err(super::gov::GovError::Future { at_ms, .. }) => admit::Admitted {
                    outcome: Outcome::Held(at_ms),
                    effects: Vec::new(),
                },
                Ok(None) => admit::Admitted {
                    outcome: Outcome::Known,
                    effects: Vec::new(),
                },
                Err(e) => admit::Admitted {
                    outcome: Outcome::Invalid(e.to_string()),
                    effects: Vec::new(),
                },
            },
            Incoming::Learning(v) => admit::Admitted {
                outcome: match self.learn.receive(
                    &v,
                    self.gov.policy().members.iter().any(|m| m.public_key == v.signer()),
                    now,
                ) {
                    Ok(true) => Outcome::New,
                    Ok(false) => Outcome::Known,
                    Err(e) => Outcome::Invalid(e),
                },
                effects: Vec::new(),
            },
            Incoming::Announcement(v) => admit::Admitted {
                outcome: Outcome::Announcement(Box::new(v)),
                effects: Vec::new(),
            },
            // Witnessing has its own tests (`witness_tests`).
            Incoming::Checkpoint(_) => admit::Admitted {
                outcome: Outcome::Invalid("the sim keeps no checkpoint logs".into()),
                effects: Vec::new(),
            },
        };
        self.apply(admitted.effects);
        admitted.outcome
    }

    /// The governance state at `now` put in force; the next wake-up.
    fn tick(&mut self, now: u64) -> Option<u64> {
        let effects = self.gov.apply(now);
        let wake = effects.iter().find_map(|e| match e {
            Effect::WakeAt(t) => Some(*t),
            _ => None,
        });
        self.apply(effects);
        wake
    }

    fn apply(&mut self, effects: Vec<Effect>) {
        for e in effects {
            match e {
                Effect::Store(w) => self.write(*w),
                Effect::Flush => self.flushes += 1,
                Effect::Replicate(c, env) => self.replicated.push((c, env.id())),
                Effect::Gossip(t, b) => self.gossiped.push((t, b)),
                Effect::SetStatus(id, s) => {
                    self.mem.statuses.insert(id, s);
                }
                Effect::Reevaluate(subjects) => {
                    for (n, v) in subjects {
                        if let Some(entry) = self.mem.release(&n, &v).unwrap() {
                            let fx = self.reevaluate(&entry);
                            self.apply(fx);
                        }
                    }
                }
                Effect::ReevaluateStale => {
                    let policy = self.gov.policy();
                    for entry in self.mem.releases.clone() {
                        if verdict::current_status(&policy, &self.mem, &entry).unwrap().is_none() {
                            let fx = self.reevaluate(&entry);
                            self.apply(fx);
                        }
                    }
                }
                Effect::Fetch(h, _) => self.fetched.push(h),
                Effect::Reassign(ns, owner) => {
                    self.mem.owners.insert(ns, (0, owner));
                }
                Effect::GovernanceChanged
                | Effect::MembersChanged
                | Effect::WakeAt(_)
                | Effect::OwnerMayChange(_)
                | Effect::Forget { .. } => {}
            }
        }
    }

    fn reevaluate(&self, entry: &ReleaseEntry) -> Vec<Effect> {
        let policy = self.gov.policy();
        let judge = Judge {
            policy: &policy,
            mirror: self.mirror,
            max_pack_bytes: crate::config::DEFAULT_MAX_PACK_BYTES,
        };
        verdict::reevaluate(&judge, &self.mem, entry).unwrap()
    }

    fn write(&mut self, w: Write) {
        match w {
            Write::Deprecation(v) => {
                self.mem.records.insert(v.id());
            }
            Write::Claim(v) => {
                self.mem.records.insert(v.id());
                let r = v.record();
                let earlier = self
                    .mem
                    .owners
                    .get(&r.namespace)
                    .is_none_or(|(t, _)| r.claimed_at_ms < *t);
                if earlier {
                    self.mem
                        .owners
                        .insert(r.namespace.clone(), (r.claimed_at_ms, v.signer()));
                }
            }
            Write::Release(v, _) => {
                self.mem.records.insert(v.id());
                self.mem.releases.push(ReleaseEntry {
                    record_id: v.id(),
                    envelope: v.envelope().clone(),
                    release: v.record().clone(),
                    publisher: v.signer(),
                    yanked: false,
                    conflict: None,
                });
            }
            Write::Yank(v) => {
                self.mem.records.insert(v.id());
                self.mem.yanks.push(v);
            }
            Write::Attestations(items) => {
                for (a, e, _) in items {
                    self.mem.records.insert(a.id());
                    let r = a.record();
                    self.mem.attestations.push((r.name.clone(), r.version.clone(), e));
                }
            }
            Write::Gov(env) => {
                self.mem.records.insert(env.id());
            }
            Write::Checkpoint(v) => {
                self.mem.records.insert(v.id());
            }
        }
    }

    /// The verdict the node holds on `name@version` (None: not judged).
    fn accepted(&self, name: &str, version: &str) -> Option<bool> {
        let e = self.mem.release(name, version).unwrap()?;
        self.mem.statuses.get(&e.record_id).map(|s| s.accepted())
    }
}

/// A simulated peer: a key and the records it signs.
struct Peer {
    key: KeyPair,
    fed: FederationId,
}

impl Peer {
    fn new(fed: FederationId) -> Peer {
        Peer {
            key: KeyPair::generate().unwrap(),
            fed,
        }
    }
    fn sign<R: packfed_protocol::signed::Record>(&self, r: &R) -> Signed {
        Signed::sign(r, &self.key, &self.fed)
    }
    fn claim(&self, ns: &str, at: u64) -> Signed {
        self.sign(&pb::NamespaceClaim {
            namespace: ns.into(),
            claimed_at_ms: at,
        })
    }
    fn release_record(&self, name: &str, version: &str, quality: u32) -> pb::Release {
        pb::Release {
            name: name.into(),
            version: version.into(),
            content_hash: blake3::hash(format!("{name}@{version}").as_bytes()).as_bytes().to_vec(),
            size: 1234,
            license: "MIT".into(),
            quality: Some(pb::QualityReport {
                score: quality,
                ..Default::default()
            }),
            published_at_ms: T0,
            ..Default::default()
        }
    }
    fn release(&self, name: &str, version: &str, quality: u32) -> Signed {
        self.sign(&self.release_record(name, version, quality))
    }
    fn yank(&self, r: &pb::Release) -> Signed {
        self.sign(&pb::Yank {
            name: r.name.clone(),
            version: r.version.clone(),
            content_hash: r.content_hash.clone(),
            reason: "broken".into(),
            yanked_at_ms: T0,
        })
    }
    fn attest(&self, r: &pb::Release, kind: &str, pass: bool) -> Signed {
        let s = verdict::Statement {
            kind,
            pass,
            note: "",
            score: 0,
        };
        verdict::sign_attestation(r, &s, &self.key, &self.fed, T0)
    }
    fn propose_policy(&self, toml: &str, at: u64) -> Signed {
        self.sign(&pb::Proposal {
            title: "new policy".into(),
            created_at_ms: at,
            action: Some(pb::proposal::Action::PolicyToml(toml.into())),
        })
    }
    fn vote(&self, proposal: &Signed, choice: &str, at: u64) -> Signed {
        self.sign(&pb::Vote {
            proposal_id: proposal.id().as_bytes().to_vec(),
            choice: choice.into(),
            cast_at_ms: at,
        })
    }
    fn summary(&self, round: u64, round_ms: u64) -> Signed {
        self.sign(&pb::LearningSummary {
            round,
            round_ms,
            schema: SCHEMA_VERSION,
            delta: vec![0.1; FEATURES],
            samples: 3,
            usage: Vec::new(),
        })
    }
}

/// Requires a passing audit by a maintainer.
const AUDITED: &str = "[accept]\n[[accept.require]]\nkind = \"audit\"\nresult = \"pass\"\nroles = [\"maintainer\"]\n";

/// A federation whose only member is `maintainer`: voting 60 s, timelock 10 s.
fn genesis(maintainer: &KeyPair, policy: &str) -> Genesis {
    let members = vec![Member {
        public_key: maintainer.public(),
        role: Role::Maintainer,
        weight: 1,
    }];
    let params = Parameters {
        voting_period: Duration(60),
        timelock: Duration(10),
        ..Parameters::default()
    };
    let text = Genesis::render("sim", "00", members, params, Policy::parse(policy).unwrap()).unwrap();
    Genesis::parse(text.as_bytes()).unwrap()
}

/// A genesis, its maintainer as a peer, and a node.
fn federation(policy: &str) -> (Sim, Peer) {
    let key = KeyPair::generate().unwrap();
    let g = genesis(&key, policy);
    let maintainer = Peer { key, fed: g.id };
    (Sim::new(&g), maintainer)
}

/// The same envelope with one bit of its signature flipped.
fn bad_signature(env: &Signed) -> Vec<u8> {
    let mut p = env.to_pb();
    p.signature[0] ^= 1;
    p.encode_to_vec()
}

fn is_invalid(o: &Outcome) -> bool {
    matches!(o, Outcome::Invalid(_))
}

#[test]
fn every_record_kind_is_admitted_once_and_refused_when_forged_foreign_or_oversize() {
    let (mut sim, maintainer) = federation("");
    let publisher = Peer::new(sim.fed);
    let stranger = Peer {
        key: KeyPair::generate().unwrap(),
        fed: FederationId::of(b"another federation"),
    };
    let rel = publisher.release_record("acme/tool", "1.0.0", 80);
    let proposal = maintainer.propose_policy("", T0);
    let big = "x".repeat(MAX_ENVELOPE_BYTES);
    // (kind, valid record, the same kind signed for another federation, an oversize one)
    let kinds: Vec<(&str, Signed, Signed, Signed)> = vec![
        (
            "claim",
            publisher.claim("acme", T0),
            stranger.claim("acme", T0),
            publisher.claim(&big, T0),
        ),
        (
            "release",
            publisher.sign(&rel),
            stranger.sign(&rel),
            publisher.sign(&pb::Release {
                description: big.clone(),
                ..rel.clone()
            }),
        ),
        (
            "yank",
            publisher.yank(&rel),
            stranger.yank(&rel),
            publisher.sign(&pb::Yank {
                reason: big.clone(),
                ..Default::default()
            }),
        ),
        (
            "attestation",
            maintainer.attest(&rel, "audit", true),
            stranger.attest(&rel, "audit", true),
            maintainer.sign(&pb::Attestation {
                note: big.clone(),
                ..Default::default()
            }),
        ),
        (
            "proposal",
            proposal.clone(),
            stranger.propose_policy("", T0),
            maintainer.sign(&pb::Proposal {
                title: big.clone(),
                created_at_ms: T0,
                action: Some(pb::proposal::Action::PolicyToml(String::new())),
            }),
        ),
        (
            "vote",
            maintainer.vote(&proposal, "for", T0 + SECOND),
            stranger.vote(&proposal, "for", T0 + SECOND),
            maintainer.vote(&proposal, &big, T0),
        ),
        (
            "learning summary",
            // From a member: only members' summaries count.
            maintainer.summary(T0 / (60 * SECOND), 60 * SECOND),
            stranger.summary(T0 / (60 * SECOND), 60 * SECOND),
            publisher.sign(&pb::LearningSummary {
                delta: vec![0.0; MAX_ENVELOPE_BYTES / 8],
                ..Default::default()
            }),
        ),
    ];
    let now = T0 + 2 * SECOND;
    for (kind, valid, foreign, oversize) in &kinds {
        let before = sim.mem.records.len();
        assert!(
            is_invalid(&sim.receive(&bad_signature(valid), Channel::Public, now)),
            "{kind}: a bad signature is refused"
        );
        assert!(
            is_invalid(&sim.receive(foreign.encoded(), Channel::Public, now)),
            "{kind}: another federation's record is refused"
        );
        assert!(
            oversize.encoded().len() > MAX_ENVELOPE_BYTES,
            "{kind}: the test record is oversize"
        );
        match sim.receive(oversize.encoded(), Channel::Public, now) {
            Outcome::Invalid(reason) => assert!(reason.contains("limit"), "{kind}: {reason}"),
            other => panic!("{kind}: an oversize envelope must be refused, got {other:?}"),
        }
        assert_eq!(sim.mem.records.len(), before, "{kind}: a refusal stores nothing");
        // The positive control: the same peer's valid record arrives.
        assert!(
            matches!(sim.receive(valid.encoded(), Channel::Public, now), Outcome::New),
            "{kind}: the valid record is new"
        );
        assert!(
            matches!(sim.receive(valid.encoded(), Channel::Public, now), Outcome::Known),
            "{kind}: the second copy is a duplicate"
        );
    }
    // Stored records are replicated once each (summaries live in memory only).
    assert_eq!(sim.mem.records.len(), kinds.len() - 1);
    assert_eq!(sim.replicated.len(), kinds.len() - 1);
}

#[test]
fn governance_records_from_the_future_are_held_until_their_time() {
    let (mut sim, maintainer) = federation("");
    let ahead = maintainer.propose_policy("", T0 + 120 * SECOND);
    assert!(matches!(
        sim.receive(ahead.encoded(), Channel::Public, T0),
        Outcome::Held(t) if t == T0 + 60 * SECOND
    ));
    assert!(matches!(
        sim.receive(ahead.encoded(), Channel::Public, T0 + 61 * SECOND),
        Outcome::New
    ));
}

#[test]
fn an_org_release_on_a_public_channel_is_refused() {
    let (mut sim, _) = federation("");
    let p = Peer::new(sim.fed);
    let mut r = p.release_record("acme/secret", "1.0.0", 80);
    r.visibility = pb::Visibility::Org as i32;
    assert!(is_invalid(&sim.receive(p.sign(&r).encoded(), Channel::Public, T0)));
    assert!(matches!(
        sim.receive(p.sign(&r).encoded(), Channel::Org, T0),
        Outcome::New
    ));
    assert_eq!(sim.replicated.last().map(|(c, _)| *c), Some(Channel::Org));
}

#[test]
fn only_the_namespace_owner_yanks_and_only_by_the_release_hash() {
    let (mut sim, _) = federation("");
    let owner = Peer::new(sim.fed);
    let other = Peer::new(sim.fed);
    sim.receive(owner.claim("acme", T0).encoded(), Channel::Public, T0);
    let rel = owner.release_record("acme/tool", "1.0.0", 80);
    sim.receive(owner.sign(&rel).encoded(), Channel::Public, T0);

    let err = admit::local_yank(&sim.mem, &sim.fed, &other.yank(&rel)).unwrap_err();
    assert!(matches!(err, YankError::NotOwner { .. }), "{err}");
    let wrong = owner.sign(&pb::Yank {
        content_hash: vec![7; 32],
        ..owner.yank(&rel).unchecked_record::<pb::Yank>().unwrap()
    });
    let err = admit::local_yank(&sim.mem, &sim.fed, &wrong).unwrap_err();
    assert!(matches!(err, YankError::HashMismatch { .. }), "{err}");
    let missing = owner.yank(&owner.release_record("acme/tool", "9.9.9", 80));
    let err = admit::local_yank(&sim.mem, &sim.fed, &missing).unwrap_err();
    assert!(matches!(err, YankError::NotFound(_)), "{err}");
    assert!(sim.mem.yanks.is_empty() && sim.gossiped.is_empty());

    let yank = owner.yank(&rel);
    let (id, effects) = admit::local_yank(&sim.mem, &sim.fed, &yank).unwrap();
    assert_eq!(id.to_string(), "acme/tool@1.0.0");
    // Stored, then durable, then gossiped: in that order.
    let order: Vec<&str> = effects
        .iter()
        .map(|e| match e {
            Effect::Store(_) => "store",
            Effect::Replicate(..) => "replicate",
            Effect::Flush => "flush",
            Effect::Gossip(..) => "gossip",
            _ => "other",
        })
        .collect();
    assert_eq!(order, ["store", "replicate", "flush", "gossip"]);
    sim.apply(effects);
    assert_eq!(sim.mem.yanks.len(), 1);
    assert_eq!(sim.gossiped, vec![(Topic::Records, yank.encoded().to_vec())]);
}

#[test]
fn a_release_waits_in_quarantine_for_its_audit_and_a_mirror_fetches_it_once_accepted() {
    let (mut sim, maintainer) = federation(AUDITED);
    let publisher = Peer::new(sim.fed);
    sim.receive(publisher.claim("acme", T0).encoded(), Channel::Public, T0);
    let rel = publisher.release_record("acme/tool", "1.0.0", 80);
    sim.receive(publisher.sign(&rel).encoded(), Channel::Public, T0);
    assert_eq!(sim.accepted("acme/tool", "1.0.0"), Some(false));
    assert!(sim.fetched.is_empty(), "a mirror fetches only what it accepts");

    // An audit by someone who is not a maintainer does not count.
    let outsider = Peer::new(sim.fed);
    sim.receive(outsider.attest(&rel, "audit", true).encoded(), Channel::Public, T0);
    assert_eq!(sim.accepted("acme/tool", "1.0.0"), Some(false));
    // An attestation naming another archive is refused outright.
    let mut other = rel.clone();
    other.content_hash = vec![9; 32];
    assert!(is_invalid(&sim.receive(
        maintainer.attest(&other, "audit", true).encoded(),
        Channel::Public,
        T0
    )));

    sim.receive(maintainer.attest(&rel, "audit", true).encoded(), Channel::Public, T0);
    assert_eq!(sim.accepted("acme/tool", "1.0.0"), Some(true));
    assert_eq!(sim.fetched.len(), 1);
}

#[test]
fn a_policy_proposal_executes_at_its_deadline_and_verdicts_follow() {
    let (mut sim, maintainer) = federation("");
    let publisher = Peer::new(sim.fed);
    sim.receive(publisher.claim("acme", T0).encoded(), Channel::Public, T0);
    sim.receive(
        publisher.release("acme/tool", "1.0.0", 10).encoded(),
        Channel::Public,
        T0,
    );
    sim.tick(T0);
    assert!(sim.gov.policy().empty);

    let proposal = maintainer.propose_policy("[accept]\nmin_quality = 50\n", T0 + SECOND);
    let vote = maintainer.vote(&proposal, "for", T0 + 2 * SECOND);
    assert!(matches!(
        sim.receive(proposal.encoded(), Channel::Public, T0 + 2 * SECOND),
        Outcome::New
    ));
    assert!(matches!(
        sim.receive(vote.encoded(), Channel::Public, T0 + 2 * SECOND),
        Outcome::New
    ));

    // Voting ends 60 s after the proposal was witnessed (it arrived, and
    // the sim witnessed it, at T0 + 2 s; its own date says T0 + 1 s); the
    // timelock adds 10 s.
    let executes = T0 + 2 * SECOND + 70 * SECOND;
    let mut now = T0 + 3 * SECOND;
    let mut wakes = 0;
    while let Some(next) = sim.tick(now) {
        assert!(next > now, "a wake-up lies in the future");
        assert_eq!(sim.gov.policy().version, 0, "not in force before its time (now {now})");
        now = next;
        wakes += 1;
        assert!(wakes < 10, "the deadlines converge");
    }
    assert_eq!(now, executes, "executed exactly at the end of its timelock");
    let p = sim.gov.policy();
    assert_eq!((p.version, p.empty), (1, false));
    assert_eq!(
        sim.accepted("acme/tool", "1.0.0"),
        Some(false),
        "the release quality 10 fails the new min_quality 50"
    );
    let good = publisher.release("acme/tool", "1.1.0", 90);
    sim.receive(good.encoded(), Channel::Public, now);
    assert_eq!(sim.accepted("acme/tool", "1.1.0"), Some(true));
}

#[test]
fn a_local_governance_record_that_could_not_count_is_refused_with_a_reason() {
    let (sim, maintainer) = federation("");
    let outsider = Peer::new(sim.fed);
    let p = outsider.propose_policy("", T0);
    let r = super::gov::decode_record(&p, &sim.fed, T0).unwrap();
    let err = sim.gov.check_local(&r, T0).unwrap_err();
    assert!(err.to_string().contains("not a member"), "{err}");
    let p = maintainer.propose_policy("", T0);
    let r = super::gov::decode_record(&p, &sim.fed, T0).unwrap();
    assert!(sim.gov.check_local(&r, T0).is_ok());
}

#[test]
fn learning_summaries_count_only_in_their_open_rounds_and_rounds_fall_due_in_order() {
    let (mut sim, peer) = federation("");
    let r_ms = 60 * SECOND;
    let now = 10 * r_ms + 5;
    // A fresh key's summary never counts, however valid (sybils).
    let sybil = Peer::new(sim.fed);
    assert!(is_invalid(&sim.receive(
        sybil.summary(10, r_ms).encoded(),
        Channel::Public,
        now
    )));
    assert_eq!(sim.learn.status(now, 0, None)["rejected"]["not_member"], 1);
    assert!(matches!(
        sim.receive(peer.summary(10, r_ms).encoded(), Channel::Public, now),
        Outcome::New
    ));
    assert!(matches!(
        sim.receive(peer.summary(10, r_ms).encoded(), Channel::Public, now),
        Outcome::Known
    ));
    for (round, len) in [(11, r_ms), (7, r_ms), (10, r_ms + 1), (u64::MAX, r_ms)] {
        assert!(
            is_invalid(&sim.receive(peer.summary(round, len).encoded(), Channel::Public, now)),
            "round {round} of {len} ms is refused"
        );
    }
    let due = sim.learn.due(now);
    assert_eq!((due.publish, due.aggregate), (Some(9), Some(8)));
    let summary = sim.learn.summarize(9, &[], None);
    sim.learn.published([1; 32], summary);
    sim.learn.aggregate(8);
    assert_eq!(sim.learn.due(now), Default::default());
    assert_eq!(sim.learn.due(now + r_ms).publish, Some(10));
}

#[test]
fn counts_are_rounded_down_to_a_power_of_two() {
    let got: Vec<u64> = [0, 1, 2, 3, 4, 7, 8, 1000]
        .iter()
        .map(|n| super::learning::bucket(*n))
        .collect();
    assert_eq!(got, vec![0, 1, 2, 2, 4, 4, 8, 512]);
}

#[test]
fn a_release_claiming_more_than_any_node_stores_is_refused() {
    let (mut sim, _) = federation("");
    sim.mirror = true;
    let publisher = Peer::new(sim.fed);
    sim.receive(publisher.claim("acme", T0).encoded(), Channel::Public, T0);
    let huge = pb::Release {
        size: 1 << 62,
        ..publisher.release_record("acme/tool", "1.0.0", 80)
    };
    assert!(is_invalid(&sim.receive(
        publisher.sign(&huge).encoded(),
        Channel::Public,
        T0
    )));
    assert!(sim.fetched.is_empty(), "no download starts");
    // Positive control: the same publisher's release of a real size arrives.
    let fine = publisher.release_record("acme/tool", "1.0.1", 80);
    assert!(matches!(
        sim.receive(publisher.sign(&fine).encoded(), Channel::Public, T0),
        Outcome::New
    ));
}

#[test]
fn governance_records_of_keys_that_never_were_members_are_refused_and_wait_for_a_proposal_naming_them() {
    let (mut sim, maintainer) = federation("");
    let proposal = maintainer.propose_policy("", T0);
    assert!(matches!(
        sim.receive(proposal.encoded(), Channel::Public, T0),
        Outcome::New
    ));
    let stored = sim.mem.records.len();
    // Valid votes from fresh keys: refused (so not forwarded either), none
    // stored, and the queue of records waiting for a proposal stays bounded.
    for i in 0..3_000 {
        let spam = Peer::new(sim.fed).vote(&proposal, "for", T0 + SECOND + i);
        match sim.receive(spam.encoded(), Channel::Public, T0 + 2 * SECOND) {
            Outcome::Invalid(reason) => assert!(reason.contains("never was a member"), "{reason}"),
            other => panic!("spam vote {i} was {other:?}"),
        }
    }
    assert_eq!(sim.mem.records.len(), stored, "no spam vote is stored");
    assert!(sim.gov.waiting() <= 1024, "{} records wait", sim.gov.waiting());
    // A newcomer's vote that arrives before the proposal adding them waits,
    // and is kept once that proposal arrives.
    let newcomer = Peer::new(sim.fed);
    let early = newcomer.vote(&proposal, "against", T0 + 3 * SECOND);
    assert!(is_invalid(&sim.receive(
        early.encoded(),
        Channel::Public,
        T0 + 3 * SECOND
    )));
    let add = maintainer.sign(&pb::Proposal {
        title: "welcome".into(),
        created_at_ms: T0 + 4 * SECOND,
        action: Some(pb::proposal::Action::AddMember(pb::MemberSpec {
            public_key: newcomer.key.public().as_bytes().to_vec(),
            role: "community".into(),
            weight: 1,
        })),
    });
    assert!(matches!(
        sim.receive(add.encoded(), Channel::Public, T0 + 4 * SECOND),
        Outcome::New
    ));
    assert!(
        sim.gov.knows(&early.id().0),
        "the early vote was admitted with the proposal"
    );
    assert_eq!(sim.mem.records.len(), stored + 2);
    assert!(matches!(
        sim.receive(early.encoded(), Channel::Public, T0 + 5 * SECOND),
        Outcome::Known
    ));
    // The positive control: the maintainer's vote arrives as ever.
    let ok = maintainer.vote(&proposal, "for", T0 + 5 * SECOND);
    assert!(matches!(
        sim.receive(ok.encoded(), Channel::Public, T0 + 5 * SECOND),
        Outcome::New
    ));
}

#[test]
fn attestations_past_a_releases_quota_are_refused_unless_a_member_signs_them() {
    let (mut sim, maintainer) = federation(AUDITED);
    let publisher = Peer::new(sim.fed);
    sim.receive(publisher.claim("acme", T0).encoded(), Channel::Public, T0);
    let rel = publisher.release_record("acme/tool", "1.0.0", 80);
    sim.receive(publisher.sign(&rel).encoded(), Channel::Public, T0);

    // An outsider's audit cannot change the verdict (the rule names a
    // role), so it asks for no re-evaluation; a maintainer's does.
    let policy = sim.gov.policy();
    let judge = Judge {
        policy: &policy,
        mirror: true,
        max_pack_bytes: crate::config::DEFAULT_MAX_PACK_BYTES,
    };
    let reevaluates = |signer: &Peer| {
        let v = signer
            .attest(&rel, "audit", true)
            .verify::<pb::Attestation>(&sim.fed)
            .unwrap();
        let a = admit::attestations(&judge, &sim.mem, &[v], Channel::Public, false).unwrap();
        a.effects.iter().any(|e| matches!(e, Effect::Reevaluate(_)))
    };
    assert!(!reevaluates(&Peer::new(sim.fed)));
    assert!(reevaluates(&maintainer));

    for _ in 0..admit::MAX_OPEN_ATTESTATIONS {
        let o = sim.receive(
            Peer::new(sim.fed).attest(&rel, "audit", true).encoded(),
            Channel::Public,
            T0,
        );
        assert!(matches!(o, Outcome::New), "{o:?}");
    }
    let over = sim.receive(
        Peer::new(sim.fed).attest(&rel, "audit", true).encoded(),
        Channel::Public,
        T0,
    );
    assert!(
        matches!(&over, Outcome::Invalid(r) if r.contains("no role")),
        "{over:?}"
    );
    assert_eq!(
        sim.mem.attestation_count("acme/tool", "1.0.0", usize::MAX).unwrap(),
        admit::MAX_OPEN_ATTESTATIONS
    );
    // Control: a member's attestation still counts past the quota.
    let o = sim.receive(maintainer.attest(&rel, "audit", true).encoded(), Channel::Public, T0);
    assert!(matches!(o, Outcome::New), "{o:?}");
    assert_eq!(sim.accepted("acme/tool", "1.0.0"), Some(true));
}
