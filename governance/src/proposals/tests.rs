use super::*;
use crate::duration::Duration;
use crate::genesis::{FederationInfo, Role};
use packfed_protocol::FederationId;
use proptest::prelude::*;

fn key(n: u8) -> PublicKey {
    PublicKey([n; 32])
}

fn member(n: u8, weight: u64) -> Member {
    Member {
        public_key: key(n),
        role: Role::Core,
        weight,
    }
}

/// Voting opens at creation, lasts 10s, then a 5s timelock.
fn params() -> Parameters {
    Parameters {
        quorum: 0.5,
        threshold: 0.5,
        voting_delay: Duration(0),
        voting_period: Duration(10),
        timelock: Duration(5),
        grace_period: Duration(0),
        proposal_threshold: 1,
        ..Parameters::default()
    }
}

fn genesis_with(members: Vec<Member>, parameters: Parameters) -> Genesis {
    Genesis {
        id: FederationId::of(b"test federation"),
        info: FederationInfo {
            name: "test".into(),
            salt: "00".into(),
        },
        members,
        parameters,
        policy: Policy::default(),
    }
}

/// Members 1, 2 and 3 with weight 1.
fn three() -> Genesis {
    genesis_with(vec![member(1, 1), member(2, 1), member(3, 1)], params())
}

fn pid(n: u8) -> [u8; 32] {
    let mut id = [0; 32];
    id[0] = 1;
    id[1] = n;
    id
}

fn proposal(n: u8, proposer: u8, action: Action, at: u64) -> GovRecord {
    GovRecord::Proposal(ProposalRecord {
        id: pid(n),
        proposer: key(proposer),
        title: format!("proposal {n}"),
        action,
        created_at_ms: at,
    })
}

fn vote(n: u32, voter: u8, proposal: u8, choice: Choice, at: u64) -> GovRecord {
    let mut id = [0; 32];
    id[0] = 2;
    id[1..5].copy_from_slice(&n.to_be_bytes());
    GovRecord::Vote(VoteRecord {
        id,
        voter: key(voter),
        proposal: pid(proposal),
        choice,
        cast_at_ms: at,
    })
}

fn cancel(n: u8, by: u8, proposal: u8, at: u64) -> GovRecord {
    let mut id = [0; 32];
    id[0] = 3;
    id[1] = n;
    GovRecord::Cancel(CancelRecord {
        id,
        by: key(by),
        proposal: pid(proposal),
        at_ms: at,
    })
}

fn namespace(name: &str, owner: u8) -> Action {
    Action::ReassignNamespace {
        namespace: name.into(),
        owner: key(owner),
    }
}

fn set(name: &str, value: &str) -> Action {
    Action::SetParameter {
        name: name.into(),
        value: value.into(),
    }
}

fn view(s: &GovState, n: u8) -> &ProposalView {
    s.proposal(&pid(n)).unwrap()
}

#[test]
fn passes_with_two_of_three() {
    let g = three();
    let records = vec![
        proposal(1, 1, namespace("acme", 9), 1000),
        vote(1, 1, 1, Choice::For, 2000),
        vote(2, 2, 1, Choice::For, 3000),
    ];
    let s = state(&g, &records, 100_000);
    let p = view(&s, 1);
    assert_eq!(p.state, ProposalState::Executed);
    assert_eq!(p.kind, "reassign-namespace");
    assert_eq!(
        (p.votes_for, p.votes_against, p.votes_abstain, p.total_weight),
        (2, 0, 0, 3)
    );
    assert_eq!(p.votes.len(), 2);
    assert_eq!(s.namespace_owners.get("acme"), Some(&key(9)));
    assert_eq!(s.next_deadline_ms, None);
    assert_eq!(s.policy_version, 0);
}

#[test]
fn states_over_time() {
    let mut ps = params();
    ps.voting_delay = Duration(2);
    let g = genesis_with(vec![member(1, 1), member(2, 1), member(3, 1)], ps);
    // start 3000, end 13000, executable_at 18000.
    let records = vec![
        proposal(1, 1, namespace("acme", 9), 1000),
        vote(1, 1, 1, Choice::For, 4000),
        vote(2, 2, 1, Choice::For, 5000),
    ];
    let at = |t| state(&g, &records, t);
    let before = at(999);
    assert!(before.proposals.is_empty(), "a record dated later is not in effect yet");
    assert_eq!(before.next_deadline_ms, Some(1000));
    for (t, expected, next) in [
        (1000, ProposalState::Pending, Some(3000)),
        (2999, ProposalState::Pending, Some(3000)),
        (3000, ProposalState::Active, Some(4000)),
        (4500, ProposalState::Active, Some(5000)),
        (12_999, ProposalState::Active, Some(13_000)),
        (13_000, ProposalState::Queued, Some(18_000)),
        (17_999, ProposalState::Queued, Some(18_000)),
        (18_000, ProposalState::Executed, None),
    ] {
        let s = at(t);
        let p = view(&s, 1);
        assert_eq!(p.state, expected, "at {t}");
        assert_eq!(s.next_deadline_ms, next, "at {t}");
        assert_eq!(
            (p.voting_starts_ms, p.voting_ends_ms, p.executable_at_ms),
            (3000, 13_000, 18_000)
        );
        assert_eq!(s.namespace_owners.contains_key("acme"), t >= 18_000);
    }
    // Running tally while active: only votes cast so far.
    let s = at(4500);
    assert_eq!((view(&s, 1).votes_for, view(&s, 1).total_weight), (1, 3));
    assert_eq!(view(&at(2000), 1).total_weight, 0);
}

#[test]
fn quorum_failure_defeats() {
    let g = genesis_with((1..=5).map(|n| member(n, 1)).collect(), params());
    let mut records = vec![
        proposal(1, 1, namespace("acme", 9), 0),
        vote(1, 1, 1, Choice::For, 1000),
        vote(2, 2, 1, Choice::For, 1000),
    ];
    // 2 of 5 voted: below the 50% quorum.
    assert_eq!(view(&state(&g, &records, 60_000), 1).state, ProposalState::Defeated);
    // An abstention reaches quorum without changing the for/against ratio.
    records.push(vote(3, 3, 1, Choice::Abstain, 2000));
    let s = state(&g, &records, 60_000);
    assert_eq!(view(&s, 1).state, ProposalState::Executed);
    assert_eq!(view(&s, 1).votes_abstain, 1);
}

#[test]
fn threshold_is_strict() {
    let g = genesis_with((1..=4).map(|n| member(n, 1)).collect(), params());
    let mut records = vec![
        proposal(1, 1, namespace("acme", 9), 0),
        vote(1, 1, 1, Choice::For, 1000),
        vote(2, 2, 1, Choice::For, 1000),
        vote(3, 3, 1, Choice::Against, 1000),
        vote(4, 4, 1, Choice::Against, 1000),
    ];
    assert_eq!(view(&state(&g, &records, 60_000), 1).state, ProposalState::Defeated);
    // Only abstentions: quorum met, but no for votes.
    let abstain: Vec<_> = (1..=4)
        .map(|n| vote(10 + u32::from(n), n, 1, Choice::Abstain, 2000))
        .collect();
    records.extend(abstain);
    let p = state(&g, &records, 60_000).proposals[0].clone();
    assert_eq!((p.votes_abstain, p.state), (4, ProposalState::Defeated));
}

#[test]
fn revote_replaces_the_earlier_vote() {
    let g = three();
    let records = vec![
        proposal(1, 1, namespace("acme", 9), 0),
        vote(1, 1, 1, Choice::For, 1000),
        vote(2, 2, 1, Choice::For, 1000),
        vote(3, 1, 1, Choice::Against, 2000),
        // Same time: the larger id wins.
        vote(5, 2, 1, Choice::Against, 3000),
        vote(4, 2, 1, Choice::For, 3000),
    ];
    let s = state(&g, &records, 60_000);
    let p = view(&s, 1);
    assert_eq!((p.votes_for, p.votes_against), (0, 2));
    assert_eq!(p.state, ProposalState::Defeated);
    assert_eq!(p.votes.len(), 2);
    assert!(p.votes.iter().all(|v| v.choice == Choice::Against));
    assert_eq!(p.ignored_votes, 0);
}

#[test]
fn votes_outside_the_window_are_ignored() {
    let mut ps = params();
    ps.voting_delay = Duration(2);
    let g = genesis_with(vec![member(1, 1), member(2, 1), member(3, 1)], ps);
    // start 2000, end 12000.
    let records = vec![
        proposal(1, 1, namespace("acme", 9), 0),
        vote(1, 1, 1, Choice::For, 1999),
        vote(2, 2, 1, Choice::For, 12_000),
        vote(3, 3, 1, Choice::For, 11_999),
    ];
    let s = state(&g, &records, 60_000);
    let p = view(&s, 1);
    assert_eq!((p.votes_for, p.ignored_votes), (1, 2));
    assert_eq!(p.votes[0].voter, key(3));
    assert_eq!(p.state, ProposalState::Defeated);
}

#[test]
fn non_member_and_unknown_proposal_votes_are_ignored() {
    let g = three();
    let records = vec![
        proposal(1, 1, namespace("acme", 9), 0),
        vote(1, 1, 1, Choice::For, 1000),
        vote(2, 9, 1, Choice::For, 1000),
        vote(3, 2, 7, Choice::For, 1000),
    ];
    let s = state(&g, &records, 60_000);
    let p = view(&s, 1);
    assert_eq!((p.votes_for, p.ignored_votes), (1, 1));
    assert_eq!(p.state, ProposalState::Defeated);
    assert_eq!(s.ignored_votes, 1);
}

#[test]
fn only_the_proposer_cancels_before_end() {
    let g = three();
    let base = vec![
        proposal(1, 1, namespace("acme", 9), 0),
        vote(1, 1, 1, Choice::For, 1000),
        vote(2, 2, 1, Choice::For, 1000),
    ];
    let with = |extra: GovRecord| {
        let mut r = base.clone();
        r.push(extra);
        r
    };

    let by_other = with(cancel(1, 2, 1, 3000));
    let s = state(&g, &by_other, 60_000);
    assert_eq!(view(&s, 1).state, ProposalState::Executed);
    assert_eq!(s.ignored_cancels, 1);

    let too_late = with(cancel(1, 1, 1, 10_000));
    assert_eq!(view(&state(&g, &too_late, 60_000), 1).state, ProposalState::Executed);

    let by_proposer = with(cancel(1, 1, 1, 3000));
    assert_eq!(view(&state(&g, &by_proposer, 2999), 1).state, ProposalState::Active);
    let s = state(&g, &by_proposer, 3000);
    assert_eq!(view(&s, 1).state, ProposalState::Canceled);
    assert_eq!(s.next_deadline_ms, None);
    let s = state(&g, &by_proposer, 60_000);
    assert_eq!((view(&s, 1).state, view(&s, 1).votes_for), (ProposalState::Canceled, 2));
    assert!(s.namespace_owners.is_empty());
    assert_eq!(s.ignored_cancels, 0);

    let unknown = with(cancel(1, 1, 8, 3000));
    assert_eq!(state(&g, &unknown, 60_000).ignored_cancels, 1);
}

#[test]
fn ineligible_proposers_are_rejected() {
    let mut ps = params();
    ps.proposal_threshold = 2;
    let g = genesis_with(vec![member(1, 1), member(2, 2), member(3, 2)], ps);
    let records = vec![
        proposal(1, 1, namespace("low", 9), 0),
        proposal(2, 9, namespace("outsider", 9), 0),
        proposal(3, 2, namespace("ok", 9), 0),
        vote(1, 2, 1, Choice::For, 1000),
        vote(2, 3, 1, Choice::For, 1000),
        vote(3, 2, 3, Choice::For, 1000),
        vote(4, 3, 3, Choice::For, 1000),
    ];
    let s = state(&g, &records, 60_000);
    let low = view(&s, 1);
    assert_eq!(low.state, ProposalState::Rejected);
    assert!(
        low.reason
            .as_deref()
            .unwrap()
            .contains("below the proposal threshold 2")
    );
    assert_eq!((low.votes_for, low.ignored_votes), (0, 2));
    assert_eq!(view(&s, 2).state, ProposalState::Rejected);
    assert!(view(&s, 2).reason.as_deref().unwrap().contains("not a member"));
    assert_eq!(view(&s, 3).state, ProposalState::Executed);
    assert_eq!(s.namespace_owners.keys().collect::<Vec<_>>(), ["ok"]);
}

#[test]
fn the_electorate_is_fixed_at_activation() {
    let g = genesis_with(vec![member(1, 1), member(2, 1)], params());
    let records = vec![
        // Adds member 3 (weight 10) at 15000.
        proposal(1, 1, Action::AddMember(member(3, 10)), 0),
        vote(1, 1, 1, Choice::For, 1000),
        vote(2, 2, 1, Choice::For, 1000),
        // Starts at 12000, before member 3 exists.
        proposal(2, 1, namespace("early", 9), 12_000),
        vote(3, 3, 2, Choice::For, 16_000),
        vote(4, 1, 2, Choice::For, 16_000),
        // Starts at 15000, the same millisecond member 3 is added.
        proposal(3, 2, namespace("late", 9), 15_000),
        vote(5, 3, 3, Choice::For, 16_000),
    ];
    let s = state(&g, &records, 100_000);
    assert_eq!(view(&s, 1).state, ProposalState::Executed);
    let early = view(&s, 2);
    assert_eq!((early.total_weight, early.votes_for, early.ignored_votes), (2, 1, 1));
    assert_eq!(early.state, ProposalState::Executed);
    let late = view(&s, 3);
    assert_eq!((late.total_weight, late.votes_for), (12, 10));
    assert_eq!(late.state, ProposalState::Executed);
    assert_eq!(s.member(&key(3)).map(|m| m.weight), Some(10));
    assert_eq!(s.members.len(), 3);
}

#[test]
fn policy_replacement_bumps_the_version() {
    let g = three();
    let policy = |q: u32| {
        let text = format!("[accept]\nmin_quality = {q}\n");
        Action::ReplacePolicy {
            policy: Policy::parse(&text).unwrap(),
            text,
        }
    };
    let records = vec![
        proposal(1, 1, policy(40), 0),
        vote(1, 1, 1, Choice::For, 1000),
        vote(2, 2, 1, Choice::For, 1000),
        proposal(2, 1, policy(60), 20_000),
        vote(3, 1, 2, Choice::For, 21_000),
        vote(4, 2, 2, Choice::For, 21_000),
    ];
    let s = state(&g, &records, 15_000);
    assert_eq!((s.policy_version, s.policy_set_by), (1, Some(pid(1))));
    assert_eq!(s.policy.accept.min_quality, 40);
    assert_eq!(view(&s, 1).kind, "policy");
    let s = state(&g, &records, 100_000);
    assert_eq!((s.policy_version, s.policy_set_by), (2, Some(pid(2))));
    assert_eq!(s.policy.accept.min_quality, 60);
    assert_eq!(state(&g, &records, 14_999).policy_version, 0);
}

#[test]
fn actions_that_no_longer_apply_expire() {
    let g = genesis_with(vec![member(1, 1), member(2, 1)], params());
    let all_for = |n: u8, base: u32| {
        vec![
            vote(base, 1, n, Choice::For, 1000),
            vote(base + 1, 2, n, Choice::For, 1000),
        ]
    };
    let mut records = vec![
        proposal(1, 1, Action::RemoveMember(key(9)), 0),
        proposal(2, 1, set("quorum", "1.5"), 0),
        proposal(3, 1, set("colour", "blue"), 0),
        proposal(4, 1, Action::AddMember(member(5, 0)), 0),
    ];
    for n in 1..=4 {
        records.extend(all_for(n, u32::from(n) * 10));
    }
    let s = state(&g, &records, 100_000);
    for n in 1..=4 {
        let p = view(&s, n);
        assert_eq!(p.state, ProposalState::Expired, "{n}");
        assert!(p.reason.is_some());
    }
    assert!(view(&s, 1).reason.as_deref().unwrap().contains("is not a member"));
    assert_eq!(s.parameters, params());
    assert_eq!(s.members.len(), 2);

    // Removing both members: the first (smaller id) applies, the second would empty the federation.
    let records = [
        vec![
            proposal(1, 1, Action::RemoveMember(key(1)), 0),
            proposal(2, 1, Action::RemoveMember(key(2)), 0),
        ],
        all_for(1, 10),
        all_for(2, 20),
    ]
    .concat();
    let s = state(&g, &records, 100_000);
    assert_eq!(view(&s, 1).state, ProposalState::Executed);
    assert_eq!(view(&s, 2).state, ProposalState::Expired);
    assert!(view(&s, 2).reason.as_deref().unwrap().contains("no members"));
    assert_eq!(s.members, vec![member(2, 1)]);
}

#[test]
fn simultaneous_executions_apply_in_id_order() {
    let g = three();
    for (small, large) in [("0.3", "0.7"), ("0.7", "0.3")] {
        let records = vec![
            proposal(7, 1, set("quorum", large), 0),
            proposal(5, 2, set("quorum", small), 0),
            vote(1, 1, 5, Choice::For, 1000),
            vote(2, 2, 5, Choice::For, 1000),
            vote(3, 1, 7, Choice::For, 1000),
            vote(4, 2, 7, Choice::For, 1000),
        ];
        let s = state(&g, &records, 100_000);
        assert_eq!(view(&s, 5).state, ProposalState::Executed);
        assert_eq!(view(&s, 7).state, ProposalState::Executed);
        assert_eq!(s.parameters.quorum, large.parse::<f64>().unwrap());
        // Listed by (created_at, id).
        assert_eq!(s.proposals[0].id, pid(5));
    }
}

#[test]
fn parameters_in_force_at_creation_set_the_timeline() {
    let g = three();
    let records = vec![
        proposal(1, 1, set("voting_period", "20s"), 0),
        vote(1, 1, 1, Choice::For, 1000),
        vote(2, 2, 1, Choice::For, 1000),
        // Created before the change executes (15000): 10s vote.
        proposal(2, 1, namespace("a", 9), 14_999),
        // Created when it executes: 20s vote.
        proposal(3, 1, namespace("b", 9), 15_000),
    ];
    let s = state(&g, &records, 15_000);
    assert_eq!(s.parameters.voting_period, Duration(20));
    assert_eq!(view(&s, 2).voting_ends_ms, 24_999);
    assert_eq!(view(&s, 3).voting_ends_ms, 35_000);
    assert_eq!(view(&s, 3).executable_at_ms, 40_000);
}

#[test]
fn duplicates_count_once() {
    let g = three();
    let records = vec![
        proposal(1, 1, namespace("acme", 9), 0),
        vote(1, 1, 1, Choice::For, 1000),
        vote(1, 1, 1, Choice::For, 1000),
        proposal(1, 1, namespace("acme", 9), 0),
    ];
    let s = state(&g, &records, 100_000);
    assert_eq!(s.proposals.len(), 1);
    assert_eq!((view(&s, 1).votes_for, view(&s, 1).ignored_votes), (1, 0));
}

#[test]
fn parameters_set_parses_like_the_genesis_file() {
    let mut p = params();
    p.set("quorum", "0.25").unwrap();
    p.set("timelock", "72h").unwrap();
    p.set("proposal_threshold", "3").unwrap();
    assert_eq!(
        (p.quorum, p.timelock, p.proposal_threshold),
        (0.25, Duration(72 * 3600), 3)
    );
    for (name, value) in [
        ("quorum", "1.01"),
        ("threshold", "NaN"),
        ("voting_period", "0s"),
        ("grace_period", "2y"),
        ("proposal_threshold", "-1"),
        ("colour", "1"),
    ] {
        assert!(p.clone().set(name, value).is_err(), "{name}={value}");
    }
    assert_eq!("abstain".parse::<Choice>().unwrap().as_str(), "abstain");
    assert!("maybe".parse::<Choice>().is_err());
}

/// 1,000 proposals with 100 voters each (100,000 votes); run with
/// `cargo test --release proposals` to see the release-mode speed.
#[test]
fn proposals_at_scale() {
    let voter = |m: u16| {
        let mut k = [7u8; 32];
        k[..2].copy_from_slice(&m.to_be_bytes());
        PublicKey(k)
    };
    let members: Vec<Member> = (0..100)
        .map(|m| Member {
            public_key: voter(m),
            role: Role::Community,
            weight: 1,
        })
        .collect();
    let g = genesis_with(members, params());
    let mut records = Vec::with_capacity(101_000);
    for p in 0..1000u32 {
        let mut id = [1u8; 32];
        id[..4].copy_from_slice(&p.to_be_bytes());
        let created = u64::from(p) * 1000;
        records.push(GovRecord::Proposal(ProposalRecord {
            id,
            proposer: voter((p % 100) as u16),
            title: format!("p{p}"),
            action: Action::ReassignNamespace {
                namespace: format!("ns{p}"),
                owner: voter(0),
            },
            created_at_ms: created,
        }));
        for m in 0..100u16 {
            let mut vid = [2u8; 32];
            vid[..4].copy_from_slice(&p.to_be_bytes());
            vid[4..6].copy_from_slice(&m.to_be_bytes());
            records.push(GovRecord::Vote(VoteRecord {
                id: vid,
                voter: voter(m),
                proposal: id,
                choice: if m % 4 == 0 { Choice::Against } else { Choice::For },
                cast_at_ms: created + 1 + u64::from(m),
            }));
        }
    }
    let s = state(&g, &records, u64::from(u32::MAX));
    assert_eq!(s.proposals.len(), 1000);
    assert!(
        s.proposals
            .iter()
            .all(|p| p.state == ProposalState::Executed
                && (p.votes_for, p.votes_against, p.total_weight) == (75, 25, 100))
    );
    assert_eq!(s.namespace_owners.len(), 1000);
    assert_eq!(s.ignored_votes, 0);
}

// ---- property tests ----

/// Genesis members are keys 1..=4 (weights 1, 1, 2, 3); key 5 is an outsider
/// until a proposal adds it.
fn prop_genesis() -> Genesis {
    let mut ps = params();
    ps.voting_delay = Duration(2);
    genesis_with(vec![member(1, 1), member(2, 1), member(3, 2), member(4, 3)], ps)
}

fn arb_action(kind: u8, arg: u8) -> Action {
    match kind {
        0 => set("quorum", ["0.2", "0.5", "0.9", "1.5"][usize::from(arg % 4)]),
        1 => set("voting_period", ["5s", "20s", "0s"][usize::from(arg % 3)]),
        2 => Action::AddMember(member(arg % 5 + 1, u64::from(arg % 3))),
        3 => Action::RemoveMember(key(arg % 5 + 1)),
        4 => namespace(["a", "b"][usize::from(arg % 2)], arg),
        _ => Action::ReplacePolicy {
            policy: Policy::parse(&format!("[accept]\nmin_quality = {arg}\n")).unwrap(),
            text: format!("[accept]\nmin_quality = {arg}\n"),
        },
    }
}

fn arb_records() -> impl Strategy<Value = Vec<GovRecord>> {
    // Whole seconds, so that ties in time are common.
    let secs = |max: u64| (0..max).prop_map(|s| s * 1000);
    let proposals = prop::collection::vec((1u8..=5, secs(40), 0u8..6, 0u8..10), 1..6);
    let votes = prop::collection::vec((1u8..=5, 0u8..7, 0u8..3, secs(70)), 0..60);
    let cancels = prop::collection::vec((1u8..=5, 0u8..7, secs(50)), 0..4);
    (proposals, votes, cancels).prop_map(|(proposals, votes, cancels)| {
        let mut records = Vec::new();
        for (n, (proposer, at, kind, arg)) in proposals.into_iter().enumerate() {
            records.push(proposal(n as u8, proposer, arb_action(kind, arg), at));
        }
        // Proposal index 6 never exists.
        for (n, (voter, p, choice, at)) in votes.into_iter().enumerate() {
            let choice = [Choice::For, Choice::Against, Choice::Abstain][usize::from(choice)];
            records.push(vote(n as u32, voter, p, choice, at));
        }
        for (n, (by, p, at)) in cancels.into_iter().enumerate() {
            records.push(cancel(n as u8, by, p, at));
        }
        records
    })
}

/// Every proposal state that can no longer change.
fn is_final(s: ProposalState) -> bool {
    !matches!(
        s,
        ProposalState::Pending | ProposalState::Active | ProposalState::Queued | ProposalState::Succeeded
    )
}

fn without_deadline(s: &GovState) -> GovState {
    GovState {
        next_deadline_ms: None,
        ..s.clone()
    }
}

/// A view without its ignored-vote count, which late votes keep raising.
fn settle(p: &ProposalView) -> ProposalView {
    ProposalView {
        ignored_votes: 0,
        ..p.clone()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn independent_of_order_and_duplication(
        (records, shuffled, dups, now) in arb_records().prop_flat_map(|r| {
            let n = r.len();
            (Just(r.clone()), Just(r).prop_shuffle(), prop::collection::vec(0..n, 0..20), 0u64..90_000)
        })
    ) {
        let g = prop_genesis();
        let mut noisy = shuffled.clone();
        noisy.extend(dups.iter().map(|&i| shuffled[i].clone()));
        let expected = state(&g, &records, now);
        prop_assert_eq!(&state(&g, &noisy, now), &expected);
        let mut reversed = noisy;
        reversed.reverse();
        prop_assert_eq!(&state(&g, &reversed, now), &expected);
    }

    #[test]
    fn late_receipt_equals_live_view(records in arb_records()) {
        let g = prop_genesis();
        let end = 1_000_000;
        let mut times: Vec<u64> = records.iter().map(GovRecord::time_ms).collect();
        times.sort_unstable();
        times.dedup();

        // A live node: at each record's time it holds exactly the records dated so far.
        let mut live = Vec::new();
        let mut settled: BTreeMap<[u8; 32], ProposalView> = BTreeMap::new();
        for &t in &times {
            let so_far: Vec<GovRecord> = records.iter().filter(|r| r.time_ms() <= t).cloned().collect();
            let now = state(&g, &so_far, t);
            // Holding records dated later changes nothing at t but the next deadline.
            let all = state(&g, &records, t);
            prop_assert_eq!(without_deadline(&all), without_deadline(&now));
            prop_assert!(all.next_deadline_ms <= now.next_deadline_ms || now.next_deadline_ms.is_none());
            // Nothing changes before the announced deadline.
            for (set, s) in [(&so_far, &now), (&records, &all)] {
                if let Some(d) = s.next_deadline_ms {
                    prop_assert!(d > t);
                    prop_assert_eq!(&state(&g, set, d - 1), s);
                }
            }
            for p in now.proposals.iter().filter(|p| is_final(p.state)) {
                settled.entry(p.id).or_insert_with(|| settle(p));
            }
            live = so_far;
        }
        let live_final = state(&g, &live, end);
        let late = state(&g, &records, end);
        prop_assert_eq!(&live_final, &late);
        prop_assert_eq!(late.next_deadline_ms, None);
        // A settled outcome is never rewritten.
        for (id, p) in settled {
            prop_assert_eq!(late.proposal(&id).map(settle), Some(p));
        }
    }
}
