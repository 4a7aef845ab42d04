//! Records arriving from peers (gossip or registry sync): verify, check the
//! content rules, store, replicate. Nothing a peer sends is stored or
//! forwarded before this says it is valid, and nothing here can panic on
//! peer input.

use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Result;
use packfed_protocol::records::check_release;
use packfed_protocol::{ContentHash, Domain, RecordId, Signed, Verified, pb};

use crate::node::Node;
use crate::registry::Replica;
use crate::store::{Store, StoreError};

/// What became of one record.
#[derive(Debug)]
pub enum Ingested {
    /// Stored now. For releases, the blob to fetch if the role wants it.
    New(Option<(ContentHash, u64)>),
    /// Already stored.
    Known,
    /// A signed node announcement (kept in memory by the network layer).
    Announcement(Box<Verified<pb::NodeAnnouncement>>),
    /// Refused, with the reason.
    Invalid(String),
}

/// Counters shown in status and metrics.
#[derive(Debug, Default)]
pub struct IngestStats {
    pub accepted: AtomicU64,
    pub rejected: AtomicU64,
    pub crdt_garbage: AtomicU64,
}

impl IngestStats {
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// Which replicated document (and trust boundary) a record came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// Public gossip and the public registry document.
    Public,
    /// The org document, synced only with org peers.
    Org,
}

impl Channel {
    /// The document number in sync requests.
    pub fn doc(self) -> u32 {
        match self {
            Channel::Public => 0,
            Channel::Org => 1,
        }
    }

    pub fn from_doc(doc: u32) -> Option<Channel> {
        match doc {
            0 => Some(Channel::Public),
            1 => Some(Channel::Org),
            _ => None,
        }
    }

    fn prefix(self) -> &'static [u8] {
        match self {
            Channel::Public => b"doc/public/",
            Channel::Org => b"doc/org/",
        }
    }
}

/// Loads the public registry document saved in the store (a snapshot plus
/// incremental saves, in key order); a missing or unreadable one is rebuilt
/// from the stored records, which are the authority.
pub fn load_replica(store: &Store, channel: Channel) -> Result<Replica, StoreError> {
    let mut bytes = Vec::new();
    for v in store.crdt.scan_prefix(channel.prefix()).values() {
        bytes.extend_from_slice(&v?);
    }
    if !bytes.is_empty() {
        match Replica::load(&bytes) {
            Ok(r) => return Ok(r),
            Err(e) => tracing::warn!(error = %e, "registry document unreadable; rebuilding it from stored records"),
        }
    }
    let mut r = Replica::new();
    for item in store.all_records() {
        let (id, env) = item?;
        if record_channel(&env) == channel {
            let _ = r.insert(&id, &env);
        }
    }
    Ok(r)
}

/// The document a stored record belongs in: org releases in the org one.
fn record_channel(envelope: &[u8]) -> Channel {
    let org = Signed::decode(envelope)
        .ok()
        .filter(|e| e.domain() == Some(Domain::Release))
        .and_then(|e| <pb::Release as prost::Message>::decode(e.to_pb().payload.as_slice()).ok())
        .is_some_and(|r| r.visibility == pb::Visibility::Org as i32);
    if org { Channel::Org } else { Channel::Public }
}

impl Node {
    /// The document of a channel.
    pub fn replica_for(&self, channel: Channel) -> &std::sync::Mutex<Replica> {
        match channel {
            Channel::Public => &self.replica,
            Channel::Org => &self.org_replica,
        }
    }

    /// Adds a verified record to the public replicated document.
    pub fn replicate(&self, id: &RecordId, envelope: &[u8]) {
        self.replicate_to(Channel::Public, id, envelope)
    }

    /// Adds a verified record to a channel's document.
    pub fn replicate_to(&self, channel: Channel, id: &RecordId, envelope: &[u8]) {
        if let Ok(mut r) = self.replica_for(channel).lock()
            && let Err(e) = r.insert(id, envelope)
        {
            tracing::warn!(error = %e, "cannot add record to the registry document");
        }
    }

    /// Appends the documents' changes since the last save to the store.
    pub fn save_replica(&self) -> Result<(), StoreError> {
        for channel in [Channel::Public, Channel::Org] {
            let piece = match self.replica_for(channel).lock() {
                Ok(mut r) => r.save_incremental(),
                Err(_) => continue,
            };
            if piece.is_empty() {
                continue;
            }
            let seq = self.store.next_id()?;
            let mut key = channel.prefix().to_vec();
            key.extend_from_slice(&seq.to_be_bytes());
            self.store.crdt.insert(key, piece)?;
        }
        Ok(())
    }

    /// Verifies and stores one record from a peer.
    pub fn ingest(&self, bytes: &[u8], channel: Channel) -> Ingested {
        let result = self.ingest_inner(bytes, channel);
        match &result {
            Ingested::Invalid(reason) => {
                self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%reason, "refused a record from a peer");
            }
            Ingested::New(_) => {
                self.stats.accepted.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
        result
    }

    fn ingest_inner(&self, bytes: &[u8], channel: Channel) -> Ingested {
        let env = match Signed::decode(bytes) {
            Ok(e) => e,
            Err(e) => return Ingested::Invalid(e.to_string()),
        };
        let fed = *self.federation();
        let stored = match env.domain() {
            Some(Domain::Release) => match env.verify::<pb::Release>(&fed) {
                Ok(v) if channel == Channel::Public && v.record().visibility == pb::Visibility::Org as i32 => {
                    return Ingested::Invalid("an org release arrived on a public channel".into());
                }
                Ok(v) => match check_release(v.record()) {
                    Ok(facts) => {
                        if self.store.has_record(&v.id()).unwrap_or(false) {
                            return Ingested::Known;
                        }
                        self.store
                            .insert_release_record(&v, &facts.hash)
                            .map(|_| Some((facts.hash, v.record().size)))
                    }
                    Err(e) => return Ingested::Invalid(e.to_string()),
                },
                Err(e) => return Ingested::Invalid(e.to_string()),
            },
            Some(Domain::NamespaceClaim) => match env.verify::<pb::NamespaceClaim>(&fed) {
                Ok(v) => {
                    if !valid_namespace(&v.record().namespace) {
                        return Ingested::Invalid(format!("bad namespace {:?}", v.record().namespace));
                    }
                    if self.store.has_record(&v.id()).unwrap_or(false) {
                        return Ingested::Known;
                    }
                    self.store.insert_claim(&v).map(|_| None)
                }
                Err(e) => return Ingested::Invalid(e.to_string()),
            },
            Some(Domain::Yank) => match env.verify::<pb::Yank>(&fed) {
                Ok(v) => {
                    if self.store.has_record(&v.id()).unwrap_or(false) {
                        return Ingested::Known;
                    }
                    self.store.insert_yank(&v).map(|_| None)
                }
                Err(e) => return Ingested::Invalid(e.to_string()),
            },
            Some(Domain::NodeAnnouncement) => {
                return match env.verify::<pb::NodeAnnouncement>(&fed) {
                    Ok(v) => Ingested::Announcement(Box::new(v)),
                    Err(e) => Ingested::Invalid(e.to_string()),
                };
            }
            Some(other) => return Ingested::Invalid(format!("{} records are not accepted here yet", other.tag())),
            None => return Ingested::Invalid(format!("unknown record kind {:?}", env.kind())),
        };
        match stored {
            Ok(fetch) => {
                let target = if record_channel(env.encoded()) == Channel::Org {
                    Channel::Org
                } else {
                    Channel::Public
                };
                self.replicate_to(target, &env.id(), env.encoded());
                Ingested::New(fetch)
            }
            Err(e) => {
                tracing::error!(error = %e, "store failed while ingesting a record");
                Ingested::Invalid(format!("store: {e}"))
            }
        }
    }
}

fn valid_namespace(ns: &str) -> bool {
    format!("{ns}/x").parse::<packfed_protocol::records::PackName>().is_ok()
}
