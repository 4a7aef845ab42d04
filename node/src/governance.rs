//! Governance in the node: proposals, votes and cancels arrive (gossip on the
//! governance topic, registry sync, or this node's API), are verified and
//! kept; the governance crate's pure `state` turns the record set into the
//! membership, parameters and policy in force, recomputed as records arrive
//! and at each deadline. When a policy proposal executes, the node switches
//! policy version and re-evaluates every release.
//!
//! Records are not judged against membership on arrival: a vote by someone
//! who was a member when it was cast must count on a node that receives it
//! after that member was removed. The tally ignores what does not count.

use std::collections::HashSet;
use std::sync::Arc;

use packfed_governance::proposals::{
    self, Action, CancelRecord, Choice, GovRecord, GovState, ProposalRecord, VoteRecord,
};
use packfed_governance::{Member, Policy, Role};
use packfed_protocol::{Domain, PublicKey, Signed, pb};

use crate::node::Node;
use crate::store::StoreError;

/// Records may claim a time at most this far ahead of our clock.
pub const MAX_CLOCK_SKEW_MS: u64 = 60_000;

const MAX_TITLE_BYTES: usize = 256;

/// The governance records this node holds.
#[derive(Default)]
pub struct GovBook {
    records: Vec<GovRecord>,
    ids: HashSet<[u8; 32]>,
}

/// Why a governance record was refused.
#[derive(Debug, thiserror::Error)]
pub enum GovError {
    #[error("{0}")]
    Invalid(String),
    #[error("{message}")]
    Refused { code: &'static str, message: String },
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
    if record.time_ms() > now_ms + MAX_CLOCK_SKEW_MS {
        return Err(GovError::Invalid(format!(
            "record is dated {} ms in the future",
            record.time_ms() - now_ms
        )));
    }
    Ok(record)
}

impl Node {
    /// Loads the stored governance records (at open).
    pub fn load_governance(&self) -> Result<usize, StoreError> {
        let now = crate::packing::now_ms();
        let mut n = 0;
        for id in self.store.gov_ids()? {
            let Some(env) = self.store.record(&id)? else { continue };
            match decode_record(&env, self.federation(), u64::MAX - MAX_CLOCK_SKEW_MS) {
                Ok(r) => {
                    self.book_insert(r);
                    n += 1;
                }
                Err(e) => tracing::warn!(error = %e, "stored governance record no longer verifies"),
            }
        }
        self.apply_governance(now);
        Ok(n)
    }

    fn book_insert(&self, r: GovRecord) -> bool {
        let Ok(mut book) = self.gov.lock() else { return false };
        if !book.ids.insert(r.id()) {
            return false;
        }
        book.records.push(r);
        true
    }

    pub fn gov_records(&self) -> Vec<GovRecord> {
        self.gov.lock().map(|b| b.records.clone()).unwrap_or_default()
    }

    /// The governance state at `now_ms`.
    pub fn gov_state(&self, now_ms: u64) -> GovState {
        proposals::state(&self.genesis, &self.gov_records(), now_ms)
    }

    /// Stores a verified governance record; true if new. Not durable until flushed.
    pub fn store_gov(&self, r: GovRecord, env: &Signed) -> Result<bool, StoreError> {
        if self.gov.lock().map(|b| b.ids.contains(&r.id())).unwrap_or(false) {
            return Ok(false);
        }
        self.store.insert_gov(&env.id(), env.encoded())?;
        self.replicate(&env.id(), env.encoded());
        let new = self.book_insert(r);
        self.gov_changed.notify_one();
        Ok(new)
    }

    /// Recomputes the state; switches the policy (and re-evaluates every
    /// release) or the membership when they changed. Returns when to look
    /// again.
    pub fn apply_governance(&self, now_ms: u64) -> Option<u64> {
        let st = self.gov_state(now_ms);
        let members_changed = self.members.read().map(|m| **m != st.members).unwrap_or(true);
        if members_changed && let Ok(mut m) = self.members.write() {
            *m = Arc::new(st.members.clone());
        }
        if members_changed {
            self.store.changed(crate::store::Change::Members);
        }
        let current = self.policy();
        let policy_changed = current.version != st.policy_version;
        if policy_changed {
            let next = crate::trust::PolicyInForce::new(
                st.policy_version,
                st.policy_set_by,
                st.policy.accept.clone(),
                self.local_policy.clone(),
            );
            tracing::info!(version = st.policy_version, "acceptance policy changed by governance");
            if let Ok(mut p) = self.policy.write() {
                *p = Arc::new(next);
            }
        }
        let mut owners_changed = false;
        for (ns, owner) in &st.namespace_owners {
            match self.store.reassign_namespace(ns, owner) {
                Ok(true) => {
                    tracing::info!(namespace = %ns, owner = %owner, "namespace reassigned by governance");
                    owners_changed = true;
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "reassigning a namespace failed"),
            }
        }
        if owners_changed {
            let _ = self.store.flush();
        }
        if policy_changed || members_changed || owners_changed {
            match self.reevaluate_stale() {
                Ok(n) if n > 0 => tracing::info!(releases = n, "re-evaluated releases"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "re-evaluating releases failed"),
            }
        }
        st.next_deadline_ms
    }

    /// A governance record signed on this node (the CLI): refused with a
    /// clear reason when it could not count, else stored, gossiped, flushed.
    pub fn submit_gov(&self, env: &Signed) -> Result<[u8; 32], GovError> {
        let now = crate::packing::now_ms();
        let record = decode_record(env, self.federation(), now)?;
        let st = self.gov_state(now);
        let refuse = |code, message: String| Err(GovError::Refused { code, message });
        match &record {
            GovRecord::Proposal(p) => match st.member(&p.proposer) {
                None => {
                    return refuse(
                        "not_member",
                        format!("{} is not a member of this federation", p.proposer),
                    );
                }
                Some(m) if m.weight < st.parameters.proposal_threshold => {
                    return refuse(
                        "below_threshold",
                        format!(
                            "{} has weight {}, below the proposal threshold {}",
                            p.proposer, m.weight, st.parameters.proposal_threshold
                        ),
                    );
                }
                Some(_) => {}
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
            }
            GovRecord::Cancel(c) => match st.proposal(&c.proposal) {
                None => {
                    return refuse(
                        "not_found",
                        format!("no proposal {} on this node", hex::encode(c.proposal)),
                    );
                }
                Some(p) if p.proposer != c.by => {
                    return refuse("not_proposer", "only the proposer may cancel a proposal".into());
                }
                Some(_) => {}
            },
        }
        let id = record.id();
        self.store_gov(record, env)?;
        self.store.flush()?;
        if let Some(net) = self.net.get() {
            net.try_send(crate::net::Command::GossipGovernance(env.encoded().to_vec()));
        }
        self.apply_governance(now);
        Ok(id)
    }

    /// The role a key holds in the membership in force.
    pub fn member_role(&self, key: &PublicKey) -> Option<Role> {
        let members = self.members.read().ok()?;
        members.iter().find(|m| m.public_key == *key).map(|m| m.role)
    }
}

/// Recomputes governance as records arrive and at each deadline.
pub async fn run(node: Arc<Node>) {
    loop {
        let next = {
            let node = node.clone();
            tokio::task::spawn_blocking(move || node.apply_governance(crate::packing::now_ms()))
                .await
                .ok()
                .flatten()
        };
        // Wake at the next deadline (at least every 5 s, in case the clock jumps).
        let wait = next
            .map(|t| t.saturating_sub(crate::packing::now_ms()))
            .unwrap_or(u64::MAX)
            .clamp(20, 5_000);
        tokio::select! {
            _ = node.gov_changed.notified() => {}
            _ = tokio::time::sleep(std::time::Duration::from_millis(wait)) => {}
        }
    }
}
