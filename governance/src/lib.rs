//! packfed governance, pure and deterministic: no I/O and no clock reads
//! (time is always an argument).
//!
//! Today: the genesis file ([`genesis`]) that founds a federation, with its
//! members, parameters and initial acceptance policy ([`policy`]). Proposals,
//! votes and the tally build on these.

pub mod duration;
pub mod genesis;
pub mod policy;

pub use genesis::{Genesis, GenesisError, Member, Parameters, Role};
pub use policy::Policy;
