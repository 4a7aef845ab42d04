//! Governance: proposals, votes and cancels are verified and kept; the
//! governance crate's pure `state` turns the record set into the
//! membership, parameters and policy in force at a given time. When they
//! change, [`Governance::apply`] says so ([`Effect::MembersChanged`],
//! [`Effect::ReevaluateStale`], [`Effect::Reassign`]) and when to look again.
//!
//! Records are not judged against the membership *in force* on arrival: a
//! vote by someone who was a member when it was cast must count on a node
//! that receives it after that member was removed. The tally ignores what
//! does not count. But a key that never was a member (not in the genesis,
//! named by no known add-member proposal) signs records that can never
//! count: they are refused as `not_member`, neither stored nor forwarded,
//! so a fresh key cannot make every node keep and re-tally its spam (and
//! its forwarder is penalized like for any invalid record). Such records
//! wait in a small bounded queue in case the proposal adding their signer
//! is still on its way. A record signed on this node is also refused when
//! it could not count ([`Governance::check_local`]), so its signer hears
//! why.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use packfed_governance::proposals::{
    self, Action, CancelRecord, Choice, GovRecord, GovState, ProposalRecord, VoteRecord,
};
use packfed_governance::{Genesis, Member, Policy, Role};
use packfed_protocol::{Domain, PublicKey, Signed, pb};

use super::verdict::{PolicyInForce, RuleSet};
use super::{Channel, Effect, Write};
use crate::store::StoreError;

/// Records may claim a time at most this far ahead of our clock.
pub const MAX_CLOCK_SKEW_MS: u64 = 60_000;

const MAX_TITLE_BYTES: usize = 256;

/// Records from keys that are not (yet) members, kept in case the proposal
/// naming their signer arrives later; the oldest go first.
const MAX_WAITING: usize = 1024;

/// Why a governance record was refused.
#[derive(Debug, thiserror::Error)]
pub enum GovError {
    #[error("{0}")]
    Invalid(String),
    #[error("{message}")]
    Refused { code: &'static str, message: String },
    #[error(
        "record is dated {ahead_ms} ms ahead of this node's clock (more than the {MAX_CLOCK_SKEW_MS} ms allowed): held until then"
    )]
    Future { ahead_ms: u64, at_ms: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn key_of(bytes: &[u8], what: &str) -> Result<PublicKey, GovError> {
    PublicKey::from_slice(bytes).map_err(|e| GovError::Invalid(format!("{what}: {e}")))
}

fn id_of(bytes: &[u8]) -> Result<[u8; 32], GovError> {
    bytes
        .try_into()
        .map_err(|_| GovError::Invalid("proposal id must be 32 bytes".into()))
}

/// Verifies a governance envelope and turns it into the tally's input.
pub fn decode_record(env: &Signed, fed: &packfed_protocol::FederationId, now_ms: u64) -> Result<GovRecord, GovError> {
    let bad = |e: packfed_protocol::SignedError| GovError::Invalid(e.to_string());
    let id = env.id().0;
    let record = match env.domain() {
        Some(Domain::Proposal) => {
            let v = env.verify::<pb::Proposal>(fed).map_err(bad)?;
            let p = v.record();
            if p.title.len() > MAX_TITLE_BYTES {
                return Err(GovError::Invalid(format!("title over {MAX_TITLE_BYTES} bytes")));
            }
            use pb::proposal::Action as A;
            let action = match &p.action {
                Some(A::PolicyToml(text)) => Action::ReplacePolicy {
                    policy: Policy::parse(text).map_err(GovError::Invalid)?,
                    text: text.clone(),
                },
                Some(A::AddMember(m)) => Action::AddMember(Member {
                    public_key: key_of(&m.public_key, "add_member")?,
                    role: m.role.parse::<Role>().map_err(GovError::Invalid)?,
                    weight: m.weight,
                }),
                Some(A::RemoveMember(k)) => Action::RemoveMember(key_of(k, "remove_member")?),
                Some(A::SetParameter(c)) => {
                    if !packfed_governance::Parameters::NAMES.contains(&c.name.as_str()) {
                        return Err(GovError::Invalid(format!(
                            "parameter {:?} must be one of {}",
                            c.name,
                            packfed_governance::Parameters::NAMES.join(", ")
                        )));
                    }
                    Action::SetParameter {
                        name: c.name.clone(),
                        value: c.value.chars().take(64).collect(),
                    }
                }
                Some(A::ReassignNamespace(r)) => {
                    if format!("{}/x", r.namespace)
                        .parse::<packfed_protocol::records::PackName>()
                        .is_err()
                    {
                        return Err(GovError::Invalid(format!("bad namespace {:?}", r.namespace)));
                    }
                    Action::ReassignNamespace {
                        namespace: r.namespace.clone(),
                        owner: key_of(&r.owner, "reassign_namespace")?,
                    }
                }
                None => return Err(GovError::Invalid("proposal without an action".into())),
            };
            GovRecord::Proposal(ProposalRecord {
                id,
                proposer: v.signer(),
                title: p.title.clone(),
                action,
                created_at_ms: p.created_at_ms,
            })
        }
        Some(Domain::Vote) => {
            let v = env.verify::<pb::Vote>(fed).map_err(bad)?;
            let r = v.record();
            GovRecord::Vote(VoteRecord {
                id,
                voter: v.signer(),
                proposal: id_of(&r.proposal_id)?,
                choice: r.choice.parse::<Choice>().map_err(GovError::Invalid)?,
                cast_at_ms: r.cast_at_ms,
            })
        }
        Some(Domain::ProposalCancel) => {
            let v = env.verify::<pb::ProposalCancel>(fed).map_err(bad)?;
            let r = v.record();
            GovRecord::Cancel(CancelRecord {
                id,
                by: v.signer(),
                proposal: id_of(&r.proposal_id)?,
                at_ms: r.canceled_at_ms,
            })
        }
        _ => return Err(GovError::Invalid(format!("{} is not a governance record", env.kind()))),
    };
    if record.time_ms() > now_ms.saturating_add(MAX_CLOCK_SKEW_MS) {
        return Err(GovError::Future {
            ahead_ms: record.time_ms() - now_ms,
            at_ms: record.time_ms() - MAX_CLOCK_SKEW_MS,
        });
    }
    Ok(record)
}

/// The governance records a node holds and what they put in force.
pub struct Governance {
    genesis: Genesis,
    local: Option<RuleSet>,
    records: Vec<GovRecord>,
    ids: HashSet<[u8; 32]>,
    policy: Arc<PolicyInForce>,
    /// Namespace owners governance set, as last applied.
    owners: BTreeMap<String, PublicKey>,
    /// Witnessed time of each record a witness quorum has listed: the only
    /// time that counts (a record's own date is its signer's claim).
    witnessed: HashMap<[u8; 32], u64>,
    /// Keys that are or were members: the genesis's and those named by a
    /// known add-member proposal (whether it passed or not: whether it
    /// passed depends on witnessed time, which may still come).
    may_sign: HashSet<PublicKey>,
    /// Records whose signer is not in `may_sign`, oldest first.
    waiting: VecDeque<(PublicKey, GovRecord, Signed)>,
}

/// The key that signed a governance record.
fn signer(r: &GovRecord) -> PublicKey {
    match r {
        GovRecord::Proposal(p) => p.proposer,
        GovRecord::Vote(v) => v.voter,
        GovRecord::Cancel(c) => c.by,
    }
}

impl Governance {
    /// The genesis state, with the node's local rules added to the policy.
    pub fn new(genesis: Genesis, local: Option<RuleSet>) -> Governance {
        let genesis_keys = genesis.members.iter().map(|m| m.public_key).collect();
        let policy = PolicyInForce::new(
            0,
            None,
            genesis.policy.accept.clone(),
            local.clone(),
            genesis.members.clone(),
        );
        Governance {
            genesis,
            local,
            records: Vec::new(),
            ids: HashSet::new(),
            policy: Arc::new(policy),
            owners: BTreeMap::new(),
            witnessed: HashMap::new(),
            may_sign: genesis_keys,
            waiting: VecDeque::new(),
        }
    }

    /// Sets the witnessed times of the records (from the witness logs).
    pub fn set_witnessed(&mut self, times: HashMap<[u8; 32], u64>) {
        self.witnessed = times;
    }

    /// Ids of every record held.
    pub fn ids(&self) -> Vec<[u8; 32]> {
        self.records.iter().map(GovRecord::id).collect()
    }

    /// The records that count: witnessed ones, each at its witnessed time
    /// (so a proposal's window starts when witnesses saw it, and a vote
    /// counts only if they saw it before the window closed).
    fn timed(&self) -> Vec<GovRecord> {
        self.records
            .iter()
            .filter_map(|r| {
                let t = *self.witnessed.get(&r.id())?;
                let mut r = r.clone();
                match &mut r {
                    GovRecord::Proposal(p) => p.created_at_ms = t,
                    GovRecord::Vote(v) => v.cast_at_ms = t,
                    GovRecord::Cancel(c) => c.at_ms = t,
                }
                Some(r)
            })
            .collect()
    }

    /// How many records no witness quorum has listed yet.
    pub fn pending(&self) -> usize {
        self.records
            .iter()
            .filter(|r| !self.witnessed.contains_key(&r.id()))
            .count()
    }

    /// The policy (and membership) in force.
    pub fn policy(&self) -> Arc<PolicyInForce> {
        self.policy.clone()
    }

    pub fn records(&self) -> &[GovRecord] {
        &self.records
    }

    pub fn knows(&self, id: &[u8; 32]) -> bool {
        self.ids.contains(id)
    }

    /// Keeps a record already stored (at open); false if it was known.
    pub fn load(&mut self, r: GovRecord) -> bool {
        if !self.ids.insert(r.id()) {
            return false;
        }
        if let GovRecord::Proposal(ProposalRecord {
            action: Action::AddMember(m),
            ..
        }) = &r
        {
            self.may_sign.insert(m.public_key);
        }
        self.records.push(r);
        true
    }

    /// Whether `key` is or was a member as far as the records held say.
    pub fn may_sign(&self, key: &PublicKey) -> bool {
        self.may_sign.contains(key)
    }

    /// How many records from non-members wait for a proposal naming them.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// A record from a peer or from this node: verified, bounded in time
    /// (`now_ms` + skew), kept if new. Returns what to do with it, or None
    /// if it was known.
    pub fn admit(
        &mut self,
        env: &Signed,
        fed: &packfed_protocol::FederationId,
        now_ms: u64,
    ) -> Result<Option<Vec<Effect>>, GovError> {
        let r = decode_record(env, fed, now_ms)?;
        self.admit_decoded(r, env)
    }

    /// [`Governance::admit`] of a record already decoded from `env`.
    /// Refuses a record whose signer never was a member (it waits, bounded,
    /// for a proposal naming that key).
    pub fn admit_decoded(&mut self, r: GovRecord, env: &Signed) -> Result<Option<Vec<Effect>>, GovError> {
        if self.ids.contains(&r.id()) {
            return Ok(None);
        }
        let key = signer(&r);
        if !self.may_sign(&key) {
            if !self.waiting.iter().any(|(_, w, _)| w.id() == r.id()) {
                if self.waiting.len() >= MAX_WAITING {
                    self.waiting.pop_front();
                }
                self.waiting.push_back((key, r, env.clone()));
            }
            return Err(GovError::Refused {
                code: "not_member",
                message: format!(
                    "{key} is not and never was a member of this federation: its governance records cannot count"
                ),
            });
        }
        let named = match &r {
            GovRecord::Proposal(ProposalRecord {
                action: Action::AddMember(m),
                ..
            }) if !self.may_sign(&m.public_key) => Some(m.public_key),
            _ => None,
        };
        self.load(r);
        let mut effects = vec![
            Effect::Store(Box::new(Write::Gov(env.clone()))),
            Effect::Replicate(Channel::Public, env.clone()),
            Effect::GovernanceChanged,
        ];
        // What the newly named key signed before this proposal arrived.
        if let Some(named) = named {
            let (theirs, rest) = std::mem::take(&mut self.waiting)
                .into_iter()
                .partition::<VecDeque<_>, _>(|(k, _, _)| *k == named);
            self.waiting = rest;
            for (_, r, env) in theirs {
                if self.load(r) {
                    effects.push(Effect::Store(Box::new(Write::Gov(env.clone()))));
                    effects.push(Effect::Replicate(Channel::Public, env));
                }
            }
        }
        Ok(Some(effects))
    }

    /// The governance state at `now_ms`.
    pub fn state(&self, now_ms: u64) -> GovState {
        proposals::state(&self.genesis, &self.timed(), now_ms)
    }

    /// Puts the state at `now_ms` in force: the membership, the policy and
    /// namespace owners. Says what changed and when to look again.
    pub fn apply(&mut self, now_ms: u64) -> Vec<Effect> {
        let st = self.state(now_ms);
        let mut out = Vec::new();
        let members_changed = self.policy.members != st.members;
        let policy_changed = self.policy.version != st.policy_version;
        if members_changed {
            out.push(Effect::MembersChanged);
        }
        if policy_changed {
            tracing::info!(version = st.policy_version, "acceptance policy changed by governance");
        }
        if members_changed || policy_changed {
            self.policy = Arc::new(PolicyInForce::new(
                st.policy_version,
                st.policy_set_by,
                st.policy.accept.clone(),
                self.local.clone(),
                st.members.clone(),
            ));
        }
        // Who owns a namespace decides visibility when releases are read;
        // no verdict depends on it, so a reassignment re-evaluates nothing.
        for (ns, owner) in &st.namespace_owners {
            if self.owners.get(ns) != Some(owner) {
                self.owners.insert(ns.clone(), *owner);
                out.push(Effect::Reassign(ns.clone(), *owner));
            }
        }
        if policy_changed || members_changed {
            out.push(Effect::ReevaluateStale);
        }
        if let Some(t) = st.next_deadline_ms {
            out.push(Effect::WakeAt(t));
        }
        out
    }

    /// Refuses, with a clear reason, a record signed on this node that could
    /// not count in the state at `now_ms`.
    pub fn check_local(&self, record: &GovRecord, now_ms: u64) -> Result<(), GovError> {
        // Provisional: records not witnessed yet are taken at their own
        // time, so a vote right after a proposal is not refused. What
        // counts is decided by witnessed time alone ([`Governance::state`]).
        let st = proposals::state(&self.genesis, &self.records, now_ms);
        let refuse = |code, message: String| Err(GovError::Refused { code, message });
        match record {
            GovRecord::Proposal(p) => match st.member(&p.proposer) {
                None => refuse(
                    "not_member",
                    format!("{} is not a member of this federation", p.proposer),
                ),
                Some(m) if m.weight < st.parameters.proposal_threshold => refuse(
                    "below_threshold",
                    format!(
                        "{} has weight {}, below the proposal threshold {}",
                        p.proposer, m.weight, st.parameters.proposal_threshold
                    ),
                ),
                Some(_) => Ok(()),
            },
            GovRecord::Vote(v) => {
                let Some(p) = st.proposal(&v.proposal) else {
                    return refuse(
                        "not_found",
                        format!("no proposal {} on this node", hex::encode(v.proposal)),
                    );
                };
                if p.state != proposals::ProposalState::Active {
                    return refuse(
                        "not_active",
                        format!(
                            "proposal {} is {}, not active: votes cannot count",
                            hex::encode(v.proposal),
                            p.state
                        ),
                    );
                }
                if st.member(&v.voter).is_none() {
                    return refuse("not_member", format!("{} is not a member of this federation", v.voter));
                }
                Ok(())
            }
            GovRecord::Cancel(c) => match st.proposal(&c.proposal) {
                None => refuse(
                    "not_found",
                    format!("no proposal {} on this node", hex::encode(c.proposal)),
                ),
                Some(p) if p.proposer != c.by => {
                    refuse("not_proposer", "only the proposer may cancel a proposal".into())
                }
                Some(_) => Ok(()),
            },
        }
    }
}
