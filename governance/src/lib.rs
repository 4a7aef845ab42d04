//! packfed governance, pure and deterministic: no I/O and no clock reads
//! (time is always an argument).
//!
//! Today: the genesis file ([`genesis`]) that founds a federation, with its
//! members ([`membership`]: keys, roles, weights), parameters and initial
//! acceptance policy ([`policy`]); the engine
//! that evaluates acceptance policies against a release ([`evaluate`]); and
//! the per-user install trust policy ([`trust`]); and proposals, votes and
//! the tally ([`proposals`]), whose [`state`] folds governance records into
//! the members, parameters and policy in force at a given time.

pub mod duration;
pub mod evaluate;
pub mod genesis;
pub mod membership;
pub mod policy;
pub mod proposals;
pub mod trust;

pub use evaluate::{AttestationFact, Evaluation, Failure, ReleaseFacts, current, evaluate, evaluate_all};
pub use genesis::{Genesis, GenesisError, Member, Parameters, Role};
pub use policy::{Accept, AttestationKind, Denial, Policy, Requirement, Verdict};
pub use proposals::{
    Action, CancelRecord, Choice, CountedVote, GovRecord, GovState, ProposalRecord, ProposalState, ProposalView,
    VoteRecord, state,
};
pub use trust::{TrustPolicy, TrustRequirement};
