//! Witnessed time driven with simulated witnesses and simulated time: each
//! witness is a [`Witnesses`] that signs its own log; a victim node admits
//! what they (and a hostile key) send. Every "the attack failed" check has
//! a positive control from the same attacker in the same test.

use packfed_governance::duration::Duration;
use packfed_governance::proposals::{Action, Choice, GovRecord, ProposalRecord, ProposalState, VoteRecord};
use packfed_governance::{Genesis, Member, Parameters, Policy, Role};
use packfed_protocol::{FederationId, KeyPair, RecordId, Signed, Verified, pb};

use super::Effect;
use super::gov::Governance;
use super::witness::{Admission, WitnessSet, Witnesses};

const T0: u64 = 1_700_000_000_000;
const IDLE: u64 = 60_000;

struct World {
    fed: FederationId,
    keys: Vec<KeyPair>,
    set: WitnessSet,
}

impl World {
    /// `n` witnesses of weight 1 (quorum: more than half).
    fn new(n: usize) -> World {
        let keys: Vec<KeyPair> = (0..n).map(|_| KeyPair::generate().unwrap()).collect();
        let members: Vec<Member> = keys
            .iter()
            .map(|k| Member {
                public_key: k.public(),
                role: Role::Maintainer,
                weight: 1,
            })
            .collect();
        World {
            fed: FederationId::of(b"witness sim"),
            set: WitnessSet::new(&members, &[Role::Maintainer, Role::Core], 0.5),
            keys,
        }
    }

    /// The node that holds witness key `i`.
    fn witness(&self, i: usize) -> Witnesses {
        Witnesses::new(self.set.clone(), [self.keys[i].public()])
    }

    /// A node that witnesses nothing.
    fn victim(&self) -> Witnesses {
        Witnesses::new(self.set.clone(), [])
    }

    /// Signs witness `i`'s due checkpoints at `now`; returns them.
    fn checkpoint(&self, w: &mut Witnesses, i: usize, now: u64) -> Vec<Verified<pb::Checkpoint>> {
        let key = &self.keys[i];
        let effects = w.produce(now, IDLE, |k, cp| {
            (*k == key.public()).then(|| Verified::sign(cp, key, &self.fed))
        });
        effects
            .into_iter()
            .filter_map(|e| match e {
                Effect::Gossip(_, bytes) => Signed::decode(&bytes).ok()?.verify(&self.fed).ok(),
                _ => None,
            })
            .collect()
    }

    /// A checkpoint signed by key `key` with these fields, outside any log.
    fn forge(
        &self,
        key: &KeyPair,
        seq: u64,
        time: u64,
        prev: Option<RecordId>,
        records: &[RecordId],
    ) -> Verified<pb::Checkpoint> {
        let cp = pb::Checkpoint {
            seq,
            time_ms: time,
            prev: prev.map(|p| p.0.to_vec()).unwrap_or_default(),
            records: records.iter().map(|r| r.0.to_vec()).collect(),
            digest: vec![0; 32],
            total: records.len() as u64,
            doc: 0,
        };
        Signed::sign(&cp, key, &self.fed).verify(&self.fed).unwrap()
    }
}

fn claim(key: &KeyPair, fed: &FederationId, ns: &str, at: u64) -> Verified<pb::NamespaceClaim> {
    let c = pb::NamespaceClaim {
        namespace: ns.into(),
        claimed_at_ms: at,
    };
    Signed::sign(&c, key, fed).verify(fed).unwrap()
}

/// Admits a checkpoint that must be new; returns its effects.
fn admit_new(node: &mut Witnesses, cp: &Verified<pb::Checkpoint>, now: u64) -> Vec<Effect> {
    match node.admit(cp, now) {
        Admission::New(fx) => fx,
        _ => panic!("checkpoint {} was not admitted as new", cp.record().seq),
    }
}

/// The (seq, id) of each checkpoint these effects forget.
fn forgotten(fx: &[Effect]) -> Vec<(u64, RecordId)> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Forget { seq, id, .. } => Some((*seq, *id)),
            _ => None,
        })
        .collect()
}

fn admit_all(node: &mut Witnesses, cps: &[Verified<pb::Checkpoint>], now: u64) {
    for cp in cps {
        assert!(matches!(node.admit(cp, now), Admission::New(_) | Admission::Known));
    }
}

/// Every witness admits a claim at `at`, lists it, and everyone admits every
/// checkpoint.
fn witness_claim(
    world: &World,
    witnesses: &mut [Witnesses],
    victim: &mut Witnesses,
    c: &Verified<pb::NamespaceClaim>,
    at: u64,
) {
    for w in witnesses.iter_mut() {
        w.track_claim(c.id(), &c.record().namespace, c.signer());
        w.note_admitted(c.id(), Some(&c.record().namespace));
    }
    victim.track_claim(c.id(), &c.record().namespace, c.signer());
    let cps: Vec<_> = (0..witnesses.len())
        .flat_map(|i| world.checkpoint(&mut witnesses[i], i, at))
        .collect();
    for w in witnesses.iter_mut() {
        admit_all(w, &cps, at);
    }
    admit_all(victim, &cps, at);
}

#[test]
fn a_backdated_claim_never_takes_a_witnessed_namespace_and_a_fresh_one_is_owned() {
    let world = World::new(3);
    let mut ws: Vec<Witnesses> = (0..3).map(|i| world.witness(i)).collect();
    let mut victim = world.victim();
    let owner = KeyPair::generate().unwrap();
    let attacker = KeyPair::generate().unwrap();

    let honest = claim(&owner, &world.fed, "acme", T0);
    witness_claim(&world, &mut ws, &mut victim, &honest, T0 + 100);
    assert_eq!(victim.owner("acme").map(|o| o.owner), Some(owner.public()));
    assert_eq!(victim.witnessed(&honest.id()), Some(T0 + 100));

    // Dated at 0, it would have won under the signer's clock.
    let backdated = claim(&attacker, &world.fed, "acme", 0);
    witness_claim(&world, &mut ws, &mut victim, &backdated, T0 + 5_000);
    assert_eq!(
        victim.witnessed(&backdated.id()),
        None,
        "no witness lists a second claim"
    );
    assert_eq!(victim.owner("acme").map(|o| o.owner), Some(owner.public()));

    // Positive control: the same attacker's claim on a fresh namespace.
    let fresh = claim(&attacker, &world.fed, "evil", 0);
    witness_claim(&world, &mut ws, &mut victim, &fresh, T0 + 6_000);
    let o = victim
        .owner("evil")
        .expect("the attacker owns a namespace nobody claimed");
    assert_eq!(o.owner, attacker.public());
    assert_eq!(o.witnessed_at_ms, T0 + 6_000, "its own date (0) counts for nothing");
}

#[test]
fn witnessed_time_is_the_quorum_th_earliest_so_a_lying_minority_cannot_move_it() {
    let world = World::new(3);
    let mut victim = world.victim();
    let r = RecordId::of(b"some record");
    // Honest witnesses 0 and 1 list it at T0+10 and T0+20; witness 2 lies
    // with a time of 0 (backdating).
    let a = world.forge(&world.keys[0], 0, T0 + 10, None, &[r]);
    let liar = world.forge(&world.keys[2], 0, 0, None, &[r]);
    admit_all(&mut victim, std::slice::from_ref(&liar), T0);
    assert_eq!(victim.witnessed(&r), None, "one witness of three is no quorum");
    admit_all(&mut victim, std::slice::from_ref(&a), T0 + 30);
    assert_eq!(
        victim.witnessed(&r),
        Some(T0 + 10),
        "not earlier than an honest witness saw it"
    );
    let b = world.forge(&world.keys[1], 0, T0 + 20, None, &[r]);
    admit_all(&mut victim, std::slice::from_ref(&b), T0 + 30);
    assert_eq!(victim.witnessed(&r), Some(T0 + 10));

    // Postdating by the minority: a record honest witnesses listed at T0+10
    // and T0+20 is witnessed at T0+20 at the latest, whatever witness 2 says.
    let late = RecordId::of(b"another");
    let c0 = world.forge(&world.keys[0], 1, T0 + 40, Some(a.id()), &[late]);
    let c1 = world.forge(&world.keys[1], 1, T0 + 50, Some(b.id()), &[late]);
    let c2 = world.forge(&world.keys[2], 1, u64::MAX / 4, Some(liar.id()), &[late]);
    admit_all(&mut victim, &[c2], u64::MAX / 2);
    admit_all(&mut victim, &[c0, c1], T0 + 60);
    assert_eq!(victim.witnessed(&late), Some(T0 + 50));
}

#[test]
fn an_equivocating_witness_is_detected_and_stops_counting() {
    let world = World::new(3);
    let mut victim = world.victim();
    let r = RecordId::of(b"record");
    let s = RecordId::of(b"other record");
    let honest = world.forge(&world.keys[0], 0, T0, None, &[r, s]);
    let first = world.forge(&world.keys[2], 0, T0, None, &[r]);
    admit_all(&mut victim, &[honest, first.clone()], T0);
    assert_eq!(
        victim.witnessed(&r),
        Some(T0),
        "positive control: two witnesses make a quorum"
    );

    // Witness 2 signs a second, different checkpoint 0.
    let second = world.forge(&world.keys[2], 0, T0 + 1, None, &[s]);
    // The proof is kept: the conflicting checkpoint is admitted as new.
    let effects = admit_new(&mut victim, &second, T0 + 1);
    assert!(
        effects.iter().any(|e| matches!(e, Effect::GovernanceChanged)),
        "everything is recounted"
    );
    let view = victim
        .views()
        .into_iter()
        .find(|v| v.public_key == world.keys[2].public().to_hex())
        .unwrap();
    assert!(view.equivocated);
    let proof = view.equivocation.unwrap();
    assert_eq!((proof.first, proof.second), (first.id(), second.id()));
    assert_eq!(victim.witnessed(&r), None, "its listing no longer counts");
    assert_eq!(victim.witnessed(&s), None);

    // A checkpoint that does not chain onto the witness's previous one, or
    // whose time runs backwards, is equivocation too.
    let mut other = world.victim();
    let c0 = world.forge(&world.keys[1], 0, T0, None, &[r]);
    let wrong_prev = world.forge(&world.keys[1], 1, T0 + 5, Some(RecordId::of(b"x")), &[s]);
    admit_all(&mut other, &[c0.clone(), wrong_prev], T0 + 5);
    assert!(other.views().iter().any(|v| v.equivocated));
    let mut third = world.victim();
    let backwards = world.forge(&world.keys[1], 1, T0 - 5, Some(c0.id()), &[s]);
    admit_all(&mut third, &[c0, backwards], T0);
    assert!(third.views().iter().any(|v| v.equivocated));
}

#[test]
fn a_checkpoint_from_a_non_witness_is_refused_and_one_from_the_future_is_held() {
    let world = World::new(3);
    let mut victim = world.victim();
    let stranger = KeyPair::generate().unwrap();
    let r = RecordId::of(b"r");
    let forged = world.forge(&stranger, 0, T0, None, &[r]);
    assert!(matches!(victim.admit(&forged, T0), Admission::Invalid(_)));
    let future = world.forge(&world.keys[0], 0, T0 + 5 * 60_000, None, &[r]);
    let Admission::Held(at) = victim.admit(&future, T0) else {
        panic!("a checkpoint 5 min ahead is held");
    };
    assert!(at > T0 && at <= T0 + 5 * 60_000);
    // When its time comes it is admitted (positive control).
    assert!(matches!(victim.admit(&future, at), Admission::New(_)));
}

#[test]
fn freshness_needs_recent_checkpoints_from_a_quorum() {
    let world = World::new(3);
    let mut victim = world.victim();
    assert_eq!(victim.view_age_ms(T0), None);
    let mut w0 = world.witness(0);
    let mut w1 = world.witness(1);
    let a = world.checkpoint(&mut w0, 0, T0);
    admit_all(&mut victim, &a, T0);
    assert_eq!(victim.view_age_ms(T0 + 10), None, "one witness of three");
    let b = world.checkpoint(&mut w1, 1, T0 + 1_000);
    admit_all(&mut victim, &b, T0 + 1_000);
    assert_eq!(victim.view_age_ms(T0 + 2_000), Some(2_000), "the quorum-th newest");
    // Idle witnesses sign again after the idle interval; nothing before.
    assert!(world.checkpoint(&mut w0, 0, T0 + 10).is_empty());
    let again = world.checkpoint(&mut w0, 0, T0 + IDLE);
    assert_eq!(again.len(), 1);
    admit_all(&mut victim, &again, T0 + IDLE);
    assert_eq!(victim.view_age_ms(T0 + IDLE), Some(IDLE - 1_000));
}

#[test]
fn only_the_newest_idle_checkpoint_of_a_witness_is_kept_and_none_is_synced() {
    let world = World::new(1);
    let mut victim = world.victim();
    let replicated = |fx: &[Effect]| fx.iter().any(|e| matches!(e, Effect::Replicate(..)));
    let idle0 = world.forge(&world.keys[0], 0, T0, None, &[]);
    let fx = admit_new(&mut victim, &idle0, T0);
    assert!(!replicated(&fx), "idle: gossip only");
    let news = world.forge(&world.keys[0], 1, T0 + 1, Some(idle0.id()), &[RecordId::of(b"r")]);
    let fx = admit_new(&mut victim, &news, T0 + 1);
    assert!(replicated(&fx), "news is synced");
    assert_eq!(forgotten(&fx), []);
    let idle2 = world.forge(&world.keys[0], 2, T0 + 2, Some(news.id()), &[]);
    let fx = admit_new(&mut victim, &idle2, T0 + 2);
    assert_eq!(forgotten(&fx), [(0, idle0.id())], "the older idle checkpoint goes");
    assert_eq!(victim.witnessed(&RecordId::of(b"r")), Some(T0 + 1));
    assert_eq!(victim.views()[0].seq, Some(2));
}

#[test]
fn an_idle_checkpoint_older_than_the_kept_one_goes_at_once() {
    let world = World::new(1);
    let mut victim = world.victim();
    let idle0 = world.forge(&world.keys[0], 0, T0, None, &[]);
    let news = world.forge(&world.keys[0], 1, T0 + 1, Some(idle0.id()), &[RecordId::of(b"r")]);
    let idle2 = world.forge(&world.keys[0], 2, T0 + 2, Some(news.id()), &[]);
    // Arrival out of order: the newest idle one first.
    for cp in [&idle2, &news] {
        assert_eq!(forgotten(&admit_new(&mut victim, cp, T0 + 2)), []);
    }
    assert_eq!(
        forgotten(&admit_new(&mut victim, &idle0, T0 + 2)),
        [(0, idle0.id())],
        "the late, older idle checkpoint is forgotten, not the kept one"
    );
    assert_eq!(victim.views()[0].seq, Some(2));
    // A newer idle one then replaces the kept one.
    let idle3 = world.forge(&world.keys[0], 3, T0 + 3, Some(idle2.id()), &[]);
    assert_eq!(
        forgotten(&admit_new(&mut victim, &idle3, T0 + 3)),
        [(2, idle2.id())],
        "a newer idle checkpoint replaces the kept one"
    );
}

#[test]
fn a_witness_log_chains_and_splits_large_news() {
    let world = World::new(1);
    let mut w = world.witness(0);
    for i in 0..4000u32 {
        w.note_admitted(RecordId::of(&i.to_le_bytes()), None);
    }
    let cps = world.checkpoint(&mut w, 0, T0);
    assert_eq!(cps.len(), 3, "1,800 ids per checkpoint");
    for pair in cps.windows(2) {
        assert_eq!(pair[1].record().prev, pair[0].id().0.to_vec());
        assert_eq!(pair[1].record().seq, pair[0].record().seq + 1);
    }
    assert_eq!(cps[2].record().total, 4000);
    let mut victim = world.victim();
    admit_all(&mut victim, &cps, T0);
    assert_eq!(victim.witnessed(&RecordId::of(&7u32.to_le_bytes())), Some(T0));
    // A restarted witness continues its log from what it stored.
    let mut restarted = world.witness(0);
    admit_all(&mut restarted, &cps, T0);
    restarted.note_admitted(RecordId::of(b"new"), None);
    let next = world.checkpoint(&mut restarted, 0, T0 + 1);
    assert_eq!(next[0].record().seq, 3);
    assert_eq!(next[0].record().total, 4001);
    admit_all(&mut victim, &next, T0 + 1);
    assert!(!victim.views()[0].equivocated);
}

fn gov_genesis(member: &KeyPair) -> Genesis {
    let members = vec![Member {
        public_key: member.public(),
        role: Role::Maintainer,
        weight: 1,
    }];
    let params = Parameters {
        voting_period: Duration(60),
        timelock: Duration(10),
        ..Parameters::default()
    };
    let text = Genesis::render("gov sim", "00", members, params, Policy::default()).unwrap();
    Genesis::parse(text.as_bytes()).unwrap()
}

#[test]
fn governance_runs_on_witnessed_time_not_on_the_signers_dates() {
    let member = KeyPair::generate().unwrap();
    let mut gov = Governance::new(gov_genesis(&member), None);
    let stranger = KeyPair::generate().unwrap();
    // Signed as if created two days ago, with a vote dated inside that window:
    // by its own dates it would have executed long ago.
    let p = ProposalRecord {
        id: [1; 32],
        proposer: member.public(),
        title: "add".into(),
        action: Action::AddMember(Member {
            public_key: stranger.public(),
            role: Role::Community,
            weight: 1,
        }),
        created_at_ms: T0 - 2 * 86_400_000,
    };
    let v = VoteRecord {
        id: [2; 32],
        voter: member.public(),
        proposal: [1; 32],
        choice: Choice::For,
        cast_at_ms: T0 - 2 * 86_400_000 + 1,
    };
    gov.load(GovRecord::Proposal(p));
    gov.load(GovRecord::Vote(v));
    let st = gov.state(T0);
    assert!(st.proposals.is_empty(), "nothing counts before witnesses saw it");
    // Witnessed now: the window runs from now.
    gov.set_witnessed([([1; 32], T0), ([2; 32], T0 + 5)].into_iter().collect());
    let st = gov.state(T0 + 1_000);
    assert_eq!(st.proposals[0].state, ProposalState::Active);
    let st = gov.state(T0 + 30_000);
    assert!(
        !st.members.iter().any(|m| m.public_key == stranger.public()),
        "not before a real window"
    );
    let st = gov.state(T0 + 71_000);
    assert!(
        st.members.iter().any(|m| m.public_key == stranger.public()),
        "after window and timelock"
    );

    // A vote against, backdated into the closed window but witnessed after it:
    // the outcome stays.
    let mut gov2 = Governance::new(gov_genesis(&member), None);
    gov2.load(GovRecord::Proposal(ProposalRecord {
        id: [3; 32],
        proposer: member.public(),
        title: "add".into(),
        action: Action::AddMember(Member {
            public_key: stranger.public(),
            role: Role::Community,
            weight: 1,
        }),
        created_at_ms: T0,
    }));
    gov2.load(GovRecord::Vote(VoteRecord {
        id: [4; 32],
        voter: member.public(),
        proposal: [3; 32],
        choice: Choice::For,
        cast_at_ms: T0 + 1,
    }));
    gov2.set_witnessed([([3; 32], T0), ([4; 32], T0 + 1)].into_iter().collect());
    let before = gov2.state(T0 + 65_000).proposals[0].state;
    assert_eq!(before, ProposalState::Queued);
    gov2.load(GovRecord::Vote(VoteRecord {
        id: [5; 32],
        voter: member.public(),
        proposal: [3; 32],
        choice: Choice::Against,
        cast_at_ms: T0 + 2,
    }));
    gov2.set_witnessed(
        [([3; 32], T0), ([4; 32], T0 + 1), ([5; 32], T0 + 64_000)]
            .into_iter()
            .collect(),
    );
    assert_eq!(gov2.state(T0 + 65_000).proposals[0].state, before);
}
