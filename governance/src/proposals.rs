//! Proposals, votes and the tally. [`state`] folds a set of governance
//! records (already signature- and federation-checked by the caller) into the
//! governance state in force at `now_ms`: proposals and their outcomes,
//! members, parameters, the acceptance policy and namespace owners.
//!
//! It is a pure function of `(genesis, set of records, now_ms)`, so every node
//! holding the same records agrees, whatever order they arrived in. Rules:
//!
//! - **Record set.** Records are keyed by id (a content hash), so duplicates
//!   count once; everything is processed in (time, id) order. Records dated
//!   after `now_ms` are not in effect yet (they only feed `next_deadline_ms`),
//!   so a node that receives records late computes what a live node computed.
//! - **Timeline.** `start = created + voting_delay`, `end = start +
//!   voting_period`, `executable_at = end + timelock`, with the parameters in
//!   force at `created_at_ms`. Quorum and threshold are also fixed then, so a
//!   parameter change never alters a vote already under way.
//! - **Eligibility.** The proposer must be a member whose weight is at least
//!   `proposal_threshold` at `created_at_ms`; otherwise the proposal is listed
//!   as `Rejected` with a reason and never votes or executes.
//! - **Electorate.** The members and weights in force at `start`; the total
//!   weight is their sum.
//! - **Votes.** A vote counts if it names a known proposal, its voter is in the
//!   electorate and `start <= cast_at < end` (and before a cancel). A voter's
//!   latest vote by (cast_at, id) replaces earlier ones. Other votes are
//!   counted in `ignored_votes` (per proposal, or in [`GovState`] when they
//!   name no known proposal).
//! - **Cancel.** Only by the proposer with `at < end`; the proposal is
//!   `Canceled` from the earliest such cancel on. Other cancels are ignored.
//! - **Outcome at end.** Quorum is met iff `for + against + abstain >= quorum *
//!   total`; the proposal succeeds iff quorum is met and `for > threshold *
//!   (for + against)` (strict, so no for/against votes means defeat). Fractions
//!   become exact rationals over 10^9 and are compared in `u128`.
//! - **Execution.** Every succeeded proposal executes by itself at
//!   `executable_at`, in (executable_at, id) order, against the state in force
//!   then. If its action no longer applies (removing a non-member or the last
//!   member, a bad parameter value, weight 0...) it is `Expired` with a reason.
//!   Each executed policy replacement raises the policy version (genesis = 0).
//! - **Same millisecond.** Ends come first, then executions, creations and
//!   starts: what executes at `t` is in force for proposals created or
//!   starting at `t`.
//! - **States.** `Pending` (before start), `Active`, then `Defeated`, or
//!   `Queued` (won, before executable_at) and finally `Executed`/`Expired`;
//!   `Canceled` and `Rejected` as above. Since execution is automatic,
//!   `Succeeded` is never produced (with a zero timelock a winner goes straight
//!   to `Executed`/`Expired` at end) and `grace_period` plays no part here.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::rc::Rc;

use serde::{Deserialize, Serialize, Serializer};

use packfed_protocol::PublicKey;

use crate::genesis::{Genesis, Member, Parameters};
use crate::policy::Policy;

/// What a proposal does when it executes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// `text` is the TOML as proposed; `policy` is its parse.
    #[serde(rename = "policy")]
    ReplacePolicy {
        policy: Policy,
        text: String,
    },
    /// Adding an existing member updates its role and weight.
    AddMember(Member),
    RemoveMember(PublicKey),
    /// One of [`Parameters::NAMES`], with its value as written in a genesis file.
    SetParameter {
        name: String,
        value: String,
    },
    ReassignNamespace {
        namespace: String,
        owner: PublicKey,
    },
}

impl Action {
    /// Short name for tables and JSON: "policy", "add-member", "remove-member",
    /// "set-parameter" or "reassign-namespace".
    pub fn kind(&self) -> &'static str {
        match self {
            Action::ReplacePolicy { .. } => "policy",
            Action::AddMember(_) => "add-member",
            Action::RemoveMember(_) => "remove-member",
            Action::SetParameter { .. } => "set-parameter",
            Action::ReassignNamespace { .. } => "reassign-namespace",
        }
    }
}

/// A proposal, as the node extracted it from a verified signed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProposalRecord {
    pub id: [u8; 32],
    pub proposer: PublicKey,
    pub title: String,
    pub action: Action,
    pub created_at_ms: u64,
}

/// A vote's choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Choice {
    For,
    Against,
    Abstain,
}

impl Choice {
    pub fn as_str(self) -> &'static str {
        match self {
            Choice::For => "for",
            Choice::Against => "against",
            Choice::Abstain => "abstain",
        }
    }
}

impl std::fmt::Display for Choice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Choice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "for" => Ok(Choice::For),
            "against" => Ok(Choice::Against),
            "abstain" => Ok(Choice::Abstain),
            _ => Err(format!("vote {s:?} must be for, against or abstain")),
        }
    }
}

/// A vote, as the node extracted it from a verified signed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoteRecord {
    pub id: [u8; 32],
    pub voter: PublicKey,
    pub proposal: [u8; 32],
    pub choice: Choice,
    pub cast_at_ms: u64,
}

/// A cancellation, as the node extracted it from a verified signed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelRecord {
    pub id: [u8; 32],
    pub by: PublicKey,
    pub proposal: [u8; 32],
    pub at_ms: u64,
}

/// Any governance record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GovRecord {
    Proposal(ProposalRecord),
    Vote(VoteRecord),
    Cancel(CancelRecord),
}

impl GovRecord {
    pub fn id(&self) -> [u8; 32] {
        match self {
            GovRecord::Proposal(p) => p.id,
            GovRecord::Vote(v) => v.id,
            GovRecord::Cancel(c) => c.id,
        }
    }

    /// The time the record claims for itself.
    pub fn time_ms(&self) -> u64 {
        match self {
            GovRecord::Proposal(p) => p.created_at_ms,
            GovRecord::Vote(v) => v.cast_at_ms,
            GovRecord::Cancel(c) => c.at_ms,
        }
    }
}

/// Where a proposal stands at `now_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProposalState {
    /// Voting has not started.
    Pending,
    /// Voting is open.
    Active,
    /// Voting ended without quorum or without enough votes for.
    Defeated,
    /// Never produced by [`state`], which executes automatically (see the
    /// module doc); kept for views that separate winning from queuing.
    Succeeded,
    /// Won; waits for its timelock.
    Queued,
    /// Won and applied at executable_at.
    Executed,
    /// Canceled by its proposer before voting ended.
    Canceled,
    /// Won, but its action could not apply at executable_at.
    Expired,
    /// Its proposer could not propose.
    Rejected,
}

impl ProposalState {
    pub fn as_str(self) -> &'static str {
        match self {
            ProposalState::Pending => "pending",
            ProposalState::Active => "active",
            ProposalState::Defeated => "defeated",
            ProposalState::Succeeded => "succeeded",
            ProposalState::Queued => "queued",
            ProposalState::Executed => "executed",
            ProposalState::Canceled => "canceled",
            ProposalState::Expired => "expired",
            ProposalState::Rejected => "rejected",
        }
    }
}

impl std::fmt::Display for ProposalState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A vote that counts: the voter's latest in the window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CountedVote {
    pub voter: PublicKey,
    pub choice: Choice,
    /// The voter's weight in the proposal's electorate.
    pub weight: u64,
    pub cast_at_ms: u64,
    /// The vote record's id.
    #[serde(serialize_with = "hex_id")]
    pub id: [u8; 32],
}

/// One proposal as of `now_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProposalView {
    #[serde(serialize_with = "hex_id")]
    pub id: [u8; 32],
    pub proposer: PublicKey,
    pub title: String,
    pub action: Action,
    /// [`Action::kind`].
    pub kind: &'static str,
    pub state: ProposalState,
    /// Why it is `Rejected` or `Expired`.
    pub reason: Option<String>,
    pub votes_for: u64,
    pub votes_against: u64,
    pub votes_abstain: u64,
    /// The electorate's weight; 0 until voting starts.
    pub total_weight: u64,
    pub created_at_ms: u64,
    pub voting_starts_ms: u64,
    pub voting_ends_ms: u64,
    pub executable_at_ms: u64,
    /// Counted votes (latest per voter), sorted by voter.
    pub votes: Vec<CountedVote>,
    /// Votes naming this proposal that do not count: outside the window, after
    /// a cancel, by someone outside the electorate, or on a rejected proposal.
    pub ignored_votes: u64,
}

/// The governance state in force at `now_ms`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GovState {
    /// Sorted by (created_at_ms, id).
    pub proposals: Vec<ProposalView>,
    /// Sorted by key.
    pub members: Vec<Member>,
    pub parameters: Parameters,
    pub policy: Policy,
    /// 0 for the genesis policy; +1 per executed replacement.
    pub policy_version: u64,
    /// The proposal that set the policy; `None` for the genesis policy.
    #[serde(serialize_with = "hex_opt_id")]
    pub policy_set_by: Option<[u8; 32]>,
    /// Namespace owners set by executed reassignments.
    pub namespace_owners: BTreeMap<String, PublicKey>,
    /// The earliest time after `now_ms` at which this state changes by itself
    /// (a start, end or executable_at, or a record dated in the future).
    pub next_deadline_ms: Option<u64>,
    /// Votes naming no proposal known at `now_ms`.
    pub ignored_votes: u64,
    /// Cancels not by the proposer, too late, or naming no known proposal.
    pub ignored_cancels: u64,
}

impl GovState {
    pub fn proposal(&self, id: &[u8; 32]) -> Option<&ProposalView> {
        self.proposals.iter().find(|p| &p.id == id)
    }

    pub fn member(&self, key: &PublicKey) -> Option<&Member> {
        self.members
            .binary_search_by(|m| m.public_key.cmp(key))
            .ok()
            .map(|i| &self.members[i])
    }
}

fn hex_id<S: Serializer>(id: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(id))
}

fn hex_opt_id<S: Serializer>(id: &Option<[u8; 32]>, s: S) -> Result<S::Ok, S::Error> {
    match id {
        Some(id) => hex_id(id, s),
        None => s.serialize_none(),
    }
}

/// Fractions become rationals over this, so comparisons are exact in `u128`.
const SCALE: u128 = 1_000_000_000;

fn scaled(fraction: f64) -> u128 {
    // `as` saturates (NaN -> 0); genesis and `Parameters::set` keep it in 0..=1.
    (fraction.clamp(0.0, 1.0) * SCALE as f64).round() as u128
}

fn to_u64(x: u128) -> u64 {
    u64::try_from(x).unwrap_or(u64::MAX)
}

/// Event kinds in the order they run within one millisecond (see module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    End,
    Execute,
    Create,
    Start,
}

/// (time, kind, proposal id, proposal index): pops in (time, kind, id) order.
type Scheduled = (u64, Event, [u8; 32], usize);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    Created,
    Rejected(String),
    Started,
    Defeated,
    Queued,
    Executed,
    Expired(String),
}

#[derive(Debug, Default)]
struct Tally {
    for_: u128,
    against: u128,
    abstain: u128,
    total: u128,
    votes: Vec<CountedVote>,
    ignored: u64,
}

struct Prop<'a> {
    rec: &'a ProposalRecord,
    start: u64,
    end: u64,
    executable_at: u64,
    quorum: u128,
    threshold: u128,
    cancel_at: Option<u64>,
    phase: Phase,
    electorate: Option<Rc<Vec<Member>>>,
    tally: Option<Tally>,
    /// Its votes, sorted by (cast_at, id).
    votes: &'a [&'a VoteRecord],
}

/// The state in force as events are applied.
struct World {
    members: Rc<Vec<Member>>,
    parameters: Parameters,
    policy: Policy,
    policy_version: u64,
    policy_set_by: Option<[u8; 32]>,
    namespace_owners: BTreeMap<String, PublicKey>,
}

impl World {
    fn member(&self, key: &PublicKey) -> Option<&Member> {
        find(&self.members, key)
    }

    /// Applies an executed action, or says why it cannot apply now.
    fn apply(&mut self, id: [u8; 32], action: &Action) -> Result<(), String> {
        match action {
            Action::ReplacePolicy { policy, .. } => {
                self.policy = policy.clone();
                self.policy_version += 1;
                self.policy_set_by = Some(id);
            }
            Action::AddMember(m) => {
                if m.weight == 0 {
                    return Err(format!("member {} would have weight 0", m.public_key));
                }
                let members = Rc::make_mut(&mut self.members);
                match members.binary_search_by(|x| x.public_key.cmp(&m.public_key)) {
                    Ok(i) => members[i] = m.clone(),
                    Err(i) => members.insert(i, m.clone()),
                }
            }
            Action::RemoveMember(key) => {
                let i = self
                    .members
                    .binary_search_by(|x| x.public_key.cmp(key))
                    .map_err(|_| format!("{key} is not a member"))?;
                if self.members.len() == 1 {
                    return Err(format!("removing {key} would leave no members"));
                }
                Rc::make_mut(&mut self.members).remove(i);
            }
            Action::SetParameter { name, value } => self.parameters.set(name, value)?,
            Action::ReassignNamespace { namespace, owner } => {
                if namespace.trim().is_empty() {
                    return Err("the namespace name is empty".into());
                }
                self.namespace_owners.insert(namespace.clone(), *owner);
            }
        }
        Ok(())
    }
}

fn find<'m>(members: &'m [Member], key: &PublicKey) -> Option<&'m Member> {
    members
        .binary_search_by(|m| m.public_key.cmp(key))
        .ok()
        .map(|i| &members[i])
}

/// Counts `votes` (sorted by (cast_at, id)) cast in `[start, until)` by the
/// electorate; the last one per voter wins.
fn tally(electorate: &[Member], votes: &[&VoteRecord], start: u64, until: u64) -> Tally {
    let mut latest: Vec<Option<&VoteRecord>> = vec![None; electorate.len()];
    let mut out = Tally::default();
    for v in votes {
        let slot = electorate.binary_search_by(|m| m.public_key.cmp(&v.voter));
        match slot {
            Ok(i) if start <= v.cast_at_ms && v.cast_at_ms < until => latest[i] = Some(v),
            _ => out.ignored += 1,
        }
    }
    for (m, v) in electorate.iter().zip(latest) {
        out.total += u128::from(m.weight);
        let Some(v) = v else { continue };
        let w = u128::from(m.weight);
        match v.choice {
            Choice::For => out.for_ += w,
            Choice::Against => out.against += w,
            Choice::Abstain => out.abstain += w,
        }
        out.votes.push(CountedVote {
            voter: v.voter,
            choice: v.choice,
            weight: m.weight,
            cast_at_ms: v.cast_at_ms,
            id: v.id,
        });
    }
    out
}

/// Quorum met and strictly more than `threshold` of for + against voted for.
fn succeeded(t: &Tally, quorum: u128, threshold: u128) -> bool {
    let voted = t.for_ + t.against + t.abstain;
    let decisive = t.for_ + t.against;
    voted * SCALE >= quorum * t.total && decisive > 0 && t.for_ * SCALE > threshold * decisive
}

/// The governance state at `now_ms` given the genesis and every governance
/// record known (in any order, duplicates allowed). See the module doc for
/// the rules.
pub fn state(genesis: &Genesis, records: &[GovRecord], now_ms: u64) -> GovState {
    // Records dated in the future are not in effect yet; their time is a deadline.
    let mut future: Option<u64> = None;
    let mut proposals: Vec<&ProposalRecord> = Vec::new();
    let mut votes: Vec<&VoteRecord> = Vec::new();
    let mut cancels: Vec<&CancelRecord> = Vec::new();
    for r in records {
        let t = r.time_ms();
        if t > now_ms {
            future = Some(future.map_or(t, |f| f.min(t)));
            continue;
        }
        match r {
            GovRecord::Proposal(p) => proposals.push(p),
            GovRecord::Vote(v) => votes.push(v),
            GovRecord::Cancel(c) => cancels.push(c),
        }
    }

    // One proposal per id; the full key keeps the choice independent of input order.
    proposals.sort_unstable_by(|a, b| {
        (a.id, a.created_at_ms, a.proposer, &a.title).cmp(&(b.id, b.created_at_ms, b.proposer, &b.title))
    });
    proposals.dedup_by_key(|p| p.id);
    proposals.sort_unstable_by_key(|p| (p.created_at_ms, p.id));

    // Grouped by proposal, then in (time, id) order; equal ids are equal
    // records (content hashes), and the full key keeps the order total anyway.
    votes.sort_unstable_by(|a, b| {
        // Compared by reference: copying the 32-byte keys per comparison is the cost here.
        (&a.proposal, a.cast_at_ms, &a.id, &a.voter, a.choice).cmp(&(
            &b.proposal,
            b.cast_at_ms,
            &b.id,
            &b.voter,
            b.choice,
        ))
    });
    votes.dedup_by_key(|v| v.id);
    cancels.sort_unstable_by_key(|c| (c.proposal, c.at_ms, c.id, c.by));
    cancels.dedup_by_key(|c| c.id);

    let mut members = genesis.members.clone();
    members.sort_by_key(|m| m.public_key);
    members.dedup_by_key(|m| m.public_key);
    let mut world = World {
        members: Rc::new(members),
        parameters: genesis.parameters.clone(),
        policy: genesis.policy.clone(),
        policy_version: 0,
        policy_set_by: None,
        namespace_owners: BTreeMap::new(),
    };

    let mut matched_votes = 0usize;
    let mut props: Vec<Prop> = proposals
        .iter()
        .map(|&rec| {
            let lo = votes.partition_point(|v| v.proposal < rec.id);
            let hi = votes.partition_point(|v| v.proposal <= rec.id);
            matched_votes += hi - lo;
            Prop {
                rec,
                start: 0,
                end: 0,
                executable_at: 0,
                quorum: 0,
                threshold: 0,
                cancel_at: None,
                phase: Phase::Created,
                electorate: None,
                tally: None,
                votes: &votes[lo..hi],
            }
        })
        .collect();

    let mut events: BinaryHeap<Reverse<Scheduled>> = props
        .iter()
        .enumerate()
        .map(|(i, p)| Reverse((p.rec.created_at_ms, Event::Create, p.rec.id, i)))
        .collect();
    let mut valid_cancels = 0usize;

    while let Some(&Reverse((t, event, id, i))) = events.peek() {
        if t > now_ms {
            break;
        }
        events.pop();
        let p = &mut props[i];
        match event {
            Event::Create => {
                let params = &world.parameters;
                p.start = t.saturating_add(params.voting_delay.millis());
                p.end = p.start.saturating_add(params.voting_period.millis());
                p.executable_at = p.end.saturating_add(params.timelock.millis());
                p.quorum = scaled(params.quorum);
                p.threshold = scaled(params.threshold);
                let threshold = params.proposal_threshold;
                match world.member(&p.rec.proposer) {
                    None => {
                        p.phase = Phase::Rejected(format!("proposer {} is not a member", p.rec.proposer));
                        continue;
                    }
                    Some(m) if m.weight < threshold => {
                        p.phase = Phase::Rejected(format!(
                            "proposer weight {} is below the proposal threshold {threshold}",
                            m.weight
                        ));
                        continue;
                    }
                    Some(_) => {}
                }
                let lo = cancels.partition_point(|c| c.proposal < id);
                let hi = cancels.partition_point(|c| c.proposal <= id);
                let (proposer, end) = (p.rec.proposer, p.end);
                let valid = cancels[lo..hi].iter().filter(|c| c.by == proposer && c.at_ms < end);
                valid_cancels += valid.clone().count();
                // Sorted by time, so the first valid cancel is the earliest.
                p.cancel_at = valid.map(|c| c.at_ms).next();
                match p.cancel_at {
                    // Canceled before voting opened: nothing more will happen to it.
                    Some(c) if c <= p.start => {}
                    Some(_) => events.push(Reverse((p.start, Event::Start, id, i))),
                    None => {
                        events.push(Reverse((p.start, Event::Start, id, i)));
                        events.push(Reverse((p.end, Event::End, id, i)));
                    }
                }
            }
            Event::Start => {
                p.electorate = Some(Rc::clone(&world.members));
                // A zero-length vote has already ended (ends run first); keep its outcome.
                if p.phase == Phase::Created {
                    p.phase = Phase::Started;
                }
            }
            Event::End => {
                let electorate = p.electorate.as_deref().map_or(&[][..], |e| &e[..]);
                let result = tally(electorate, p.votes, p.start, p.end);
                if succeeded(&result, p.quorum, p.threshold) {
                    p.phase = Phase::Queued;
                    events.push(Reverse((p.executable_at, Event::Execute, id, i)));
                } else {
                    p.phase = Phase::Defeated;
                }
                p.tally = Some(result);
            }
            Event::Execute => {
                p.phase = match world.apply(id, &p.rec.action) {
                    Ok(()) => Phase::Executed,
                    Err(reason) => Phase::Expired(reason),
                };
            }
        }
    }

    let pending_deadline = events.peek().map(|Reverse((t, ..))| *t);
    let next_deadline_ms = match (pending_deadline, future) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };

    let views = props
        .into_iter()
        .map(|p| {
            let tally = match (p.tally, &p.electorate) {
                (Some(t), _) => t,
                // Still open, or canceled while open: count what was cast so far.
                (None, Some(e)) => tally(e, p.votes, p.start, p.cancel_at.unwrap_or(p.end).min(p.end)),
                (None, None) => Tally {
                    ignored: p.votes.len() as u64,
                    ..Tally::default()
                },
            };
            let (state, reason) = match p.phase {
                Phase::Rejected(r) => (ProposalState::Rejected, Some(r)),
                _ if p.cancel_at.is_some() => (ProposalState::Canceled, None),
                Phase::Created => (ProposalState::Pending, None),
                Phase::Started => (ProposalState::Active, None),
                Phase::Defeated => (ProposalState::Defeated, None),
                Phase::Queued => (ProposalState::Queued, None),
                Phase::Executed => (ProposalState::Executed, None),
                Phase::Expired(r) => (ProposalState::Expired, Some(r)),
            };
            ProposalView {
                id: p.rec.id,
                proposer: p.rec.proposer,
                title: p.rec.title.clone(),
                action: p.rec.action.clone(),
                kind: p.rec.action.kind(),
                state,
                reason,
                votes_for: to_u64(tally.for_),
                votes_against: to_u64(tally.against),
                votes_abstain: to_u64(tally.abstain),
                total_weight: to_u64(tally.total),
                created_at_ms: p.rec.created_at_ms,
                voting_starts_ms: p.start,
                voting_ends_ms: p.end,
                executable_at_ms: p.executable_at,
                votes: tally.votes,
                ignored_votes: tally.ignored,
            }
        })
        .collect();

    GovState {
        proposals: views,
        members: Rc::unwrap_or_clone(world.members),
        parameters: world.parameters,
        policy: world.policy,
        policy_version: world.policy_version,
        policy_set_by: world.policy_set_by,
        namespace_owners: world.namespace_owners,
        next_deadline_ms,
        ignored_votes: (votes.len() - matched_votes) as u64,
        ignored_cancels: (cancels.len() - valid_cancels) as u64,
    }
}

#[cfg(test)]
mod tests;
