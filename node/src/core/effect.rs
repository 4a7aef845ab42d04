//! What the core asks the shell to do. The shell carries effects out in
//! order: a [`Effect::Reevaluate`] comes after the writes it depends on.

use packfed_protocol::{ContentHash, PublicKey, RecordId, Signed, Verified, pb};

use super::Channel;
use crate::store::{AttestationEntry, ReleaseStatus};

/// A gossip topic of the federation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic {
    /// Releases, claims, yanks.
    Records,
    Attestations,
    Governance,
    Learn,
    /// Signed node announcements.
    Nodes,
}

/// A verified record to store (with its indexes and pending mark).
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant, reason = "always boxed, in Effect::Store")]
pub enum Write {
    Claim(Verified<pb::NamespaceClaim>),
    Release(Verified<pb::Release>, ContentHash),
    Yank(Verified<pb::Yank>),
    Deprecation(Verified<pb::Deprecation>),
    /// With the channel each belongs to.
    Attestations(Vec<(Verified<pb::Attestation>, AttestationEntry, Channel)>),
    Gov(Signed),
    Checkpoint(Verified<pb::Checkpoint>),
}

#[derive(Debug, Clone)]
pub enum Effect {
    /// Boxed: a release is much larger than every other effect.
    Store(Box<Write>),
    /// Make every write before this durable (flushed).
    Flush,
    /// Add a stored record to a channel's registry document.
    Replicate(Channel, Signed),
    /// Gossip bytes on a topic.
    Gossip(Topic, Vec<u8>),
    /// Remember a verdict.
    SetStatus(RecordId, ReleaseStatus),
    /// Re-evaluate these releases (name, version) once the writes before
    /// this effect are done: [`super::verdict::reevaluate`].
    Reevaluate(Vec<(String, String)>),
    /// Re-evaluate every release whose verdict is from other rules.
    ReevaluateStale,
    /// This node mirrors accepted packs and one just became accepted.
    Fetch(ContentHash, u64),
    /// A claim on this namespace became witnessed (or stopped counting):
    /// put the owner by witnessed claims in force.
    OwnerMayChange(String),
    /// Governance gave a namespace to a new owner.
    Reassign(String, PublicKey),
    /// A governance record arrived: recompute the state in force.
    GovernanceChanged,
    /// The membership in force changed (roles weigh attestations).
    MembersChanged,
    /// Drop a stored idle checkpoint a newer one of its witness replaced.
    Forget {
        doc: u32,
        witness: PublicKey,
        seq: u64,
        id: RecordId,
    },
    /// Look again at this time (a governance deadline).
    WakeAt(u64),
}
