//! Records arriving from peers (gossip or registry sync): the core admits
//! them ([`crate::core::admit`]) and this shell carries out what it decided.
//! Nothing a peer sends is stored or forwarded before the core says it is
//! valid, and nothing here can panic on peer input.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use packfed_protocol::signed::Record;
use packfed_protocol::{Checked, Domain, RecordId, Signed, SignedError, Verified, pb};

use super::Node;
use crate::core::admit::{self, Admitted, Incoming};
use crate::core::learning::Rejection;
use crate::core::{Channel, Effect};

pub use crate::core::admit::Outcome as Ingested;

/// Releases verified and admitted per chunk (each signer's key decompressed
/// once per chunk).
const RELEASE_BATCH: usize = 1024;

/// Where a record being admitted came from.
#[derive(Debug, Clone, Copy)]
enum Source {
    /// Gossip or a fetch; also a sync's few records that are not admitted
    /// in batches (adding those back to their document changes nothing).
    Peer,
    /// A channel's registry document, by sync.
    Document(Channel),
}

impl Source {
    /// The effects minus adding records back to the document they came
    /// from: it holds them already (sync applied them before they were
    /// admitted, and marked them for the next save), and each add takes
    /// the document's lock, which a save of a large document holds for
    /// about a second. Admitting a release or an attestation replicates
    /// only the admitted record itself.
    fn needed(self, mut effects: Vec<Effect>) -> Vec<Effect> {
        if let Source::Document(doc) = self {
            effects.retain(|e| !matches!(e, Effect::Replicate(c, _) if *c == doc));
        }
        effects
    }
}

/// Whether a bulk ingest (a sync message of many releases) is running.
/// The search indexer waits for it to end rather than take CPU from it
/// (every release it stores is a change to index): a fresh node's first
/// sync then stores its records sooner, and the indexer takes them in
/// one batch afterwards.
#[derive(Debug, Default)]
pub struct BulkIngest {
    running: Mutex<usize>,
    ended: Condvar,
}

impl BulkIngest {
    fn start(&self) -> BulkGuard<'_> {
        if let Ok(mut n) = self.running.lock() {
            *n += 1;
        }
        BulkGuard(self)
    }

    /// Waits while a bulk ingest runs, at most `max`.
    pub fn wait_idle(&self, max: Duration) {
        if let Ok(n) = self.running.lock() {
            let _ = self.ended.wait_timeout_while(n, max, |n| *n > 0);
        }
    }
}

struct BulkGuard<'a>(&'a BulkIngest);

impl Drop for BulkGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut n) = self.0.running.lock() {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.0.ended.notify_all();
            }
        }
    }
}

/// Counters shown in status and metrics.
#[derive(Debug, Default)]
pub struct IngestStats {
    pub accepted: AtomicU64,
    pub rejected: AtomicU64,
    pub crdt_garbage: AtomicU64,
    /// Registry sync messages refused whole (over a size or inflation bound, or malformed).
    pub sync_refused: AtomicU64,
}

impl IngestStats {
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

impl Node {
    /// Verifies and stores one record from a peer.
    pub fn ingest(&self, bytes: &[u8], channel: Channel) -> Ingested {
        let result = match admit::open(bytes, self.federation()) {
            Ok(incoming) => self.admit(incoming, channel, crate::packing::now_ms(), Source::Peer),
            Err(refused) => {
                if refused.domain == Some(Domain::LearningSummary) {
                    self.learn_lock().rejected(Rejection::Signature);
                }
                Ingested::Invalid(refused.reason)
            }
        };
        self.count(&result);
        result
    }

    fn count(&self, result: &Ingested) {
        match result {
            Ingested::Invalid(reason) => {
                self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%reason, "refused a record from a peer");
            }
            Ingested::New => {
                self.stats.accepted.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }

    /// Has the core decide on a verified record, and carries it out.
    fn admit(&self, incoming: Incoming, channel: Channel, now_ms: u64, source: Source) -> Ingested {
        let policy = self.policy();
        let judge = self.judge(&policy);
        let view = self.view();
        let decided = match incoming {
            Incoming::Claim(v) => admit::claim(&view, &v),
            Incoming::Release(v) => admit::release(&judge, &view, &v, channel),
            Incoming::Yank(v) => admit::yank(&view, &v, channel),
            Incoming::Deprecation(v) => admit::deprecation(&view, &v, channel),
            Incoming::Attestation(v) => admit::attestations(&judge, &view, std::slice::from_ref(&v), channel, false)
                .map(|mut a| Admitted {
                    outcome: match a.results.pop() {
                        Some(Ok(true)) => Ingested::New,
                        Some(Ok(false)) | None => Ingested::Known,
                        Some(Err(e)) => Ingested::Invalid(e.to_string()),
                    },
                    effects: a.effects,
                }),
            Incoming::Checkpoint(v) => Ok(match self.admit_checkpoint(&v, channel, now_ms) {
                crate::core::witness::Admission::New(effects) => Admitted {
                    outcome: Ingested::New,
                    effects,
                },
                crate::core::witness::Admission::Known => Admitted {
                    outcome: Ingested::Known,
                    effects: Vec::new(),
                },
                crate::core::witness::Admission::Held(at) => {
                    self.hold(v.envelope().encoded(), channel, at);
                    Admitted {
                        outcome: Ingested::Held(at),
                        effects: Vec::new(),
                    }
                }
                crate::core::witness::Admission::Invalid(e) => Admitted {
                    outcome: Ingested::Invalid(e),
                    effects: Vec::new(),
                },
            }),
            Incoming::Governance(env) => {
                let admitted = self.gov_lock().admit(&env, self.federation(), now_ms);
                Ok(match admitted {
                    Err(crate::core::gov::GovError::Future { at_ms, .. }) => {
                        self.hold(env.encoded(), channel, at_ms);
                        Admitted {
                            outcome: Ingested::Held(at_ms),
                            effects: Vec::new(),
                        }
                    }
                    Ok(Some(effects)) => Admitted {
                        outcome: Ingested::New,
                        effects,
                    },
                    Ok(None) => Admitted {
                        outcome: Ingested::Known,
                        effects: Vec::new(),
                    },
                    Err(e) => Admitted {
                        outcome: Ingested::Invalid(e.to_string()),
                        effects: Vec::new(),
                    },
                })
            }
            Incoming::Learning(v) => Ok(Admitted {
                outcome: match self.learn_lock().receive(&v, self.is_member(&v.signer()), now_ms) {
                    Ok(true) => Ingested::New,
                    Ok(false) => Ingested::Known,
                    Err(e) => Ingested::Invalid(e),
                },
                effects: Vec::new(),
            }),
            Incoming::Announcement(v) => Ok(Admitted {
                outcome: Ingested::Announcement(Box::new(v)),
                effects: Vec::new(),
            }),
        };
        match decided.and_then(|a| self.apply(source.needed(a.effects)).map(|_| a.outcome)) {
            Ok(outcome) => outcome,
            Err(e) => {
                tracing::error!(error = %e, "store failed while ingesting a record");
                Ingested::Invalid(format!("store: {e}"))
            }
        }
    }

    /// Ingests many records that came out of `channel`'s registry document
    /// (registry sync): releases and attestations, the bulk of a large
    /// registry, are decided in batches, and those whose signature the
    /// sync screen already checked (`checked`, by id) are not checked
    /// again; every other record goes through [`Node::ingest`]. Results
    /// are in input order.
    pub fn ingest_batch(
        &self,
        records: &[Vec<u8>],
        checked: &HashMap<RecordId, Checked>,
        channel: Channel,
    ) -> Vec<Ingested> {
        let mut out: Vec<Option<Ingested>> = (0..records.len()).map(|_| None).collect();
        let mut attest_idx = Vec::new();
        let mut attest_envs = Vec::new();
        let mut release_idx = Vec::new();
        let mut release_envs = Vec::new();
        let mut claims = Vec::new();
        let mut rest = Vec::new();
        for (i, bytes) in records.iter().enumerate() {
            let env = match Signed::decode(bytes) {
                Ok(env) => env,
                Err(_) => {
                    rest.push(i);
                    continue;
                }
            };
            let (idx, envs) = match env.domain() {
                Some(Domain::Attestation) => (&mut attest_idx, &mut attest_envs),
                Some(Domain::Release) => (&mut release_idx, &mut release_envs),
                // Namespace claims first: a release is judged (and mirrored)
                // on arrival only if its owner's claim is already known.
                Some(Domain::NamespaceClaim) => {
                    claims.push(i);
                    continue;
                }
                _ => {
                    rest.push(i);
                    continue;
                }
            };
            // Whether it is known already is for admission to say: the
            // document brings only entries new to it, nearly all new here.
            idx.push(i);
            envs.push(env);
        }
        let _bulk = (release_envs.len() >= RELEASE_BATCH).then(|| self.bulk.start());
        for i in claims {
            out[i] = Some(self.ingest(&records[i], channel));
        }
        // Releases next (yanks and attestations name them), their
        // signatures checked per chunk: a fresh node's first sync brings
        // every release at once.
        let now = crate::packing::now_ms();
        for (idx, envs) in release_idx
            .chunks(RELEASE_BATCH)
            .zip(release_envs.chunks(RELEASE_BATCH))
        {
            let verified = self.verify_all::<pb::Release>(envs, checked);
            for (i, v) in idx.iter().zip(verified) {
                let r = match v {
                    Ok(v) => self.admit(Incoming::Release(v), channel, now, Source::Document(channel)),
                    Err(e) => Ingested::Invalid(e.to_string()),
                };
                self.count(&r);
                out[*i] = Some(r);
            }
        }
        for i in rest {
            out[i] = Some(self.ingest(&records[i], channel));
        }
        if !attest_envs.is_empty() {
            let verified = self.verify_all::<pb::Attestation>(&attest_envs, checked);
            let mut good = Vec::new();
            let mut good_idx = Vec::new();
            for (i, v) in attest_idx.iter().zip(verified) {
                match v {
                    Ok(v) => {
                        good.push(v);
                        good_idx.push(*i);
                    }
                    Err(e) => out[*i] = Some(Ingested::Invalid(e.to_string())),
                }
            }
            let results = self.admit_attestations(&good, channel);
            for (i, r) in good_idx.into_iter().zip(results) {
                self.count(&r);
                out[i] = Some(r);
            }
        }
        out.into_iter().map(|o| o.unwrap_or(Ingested::Known)).collect()
    }

    /// Each envelope as `R`: through its `checked` signature where there is
    /// one, through a signature check otherwise. In input order.
    fn verify_all<R: Record>(
        &self,
        envs: &[Signed],
        checked: &HashMap<RecordId, Checked>,
    ) -> Vec<Result<Verified<R>, SignedError>> {
        let fed = self.federation();
        let unchecked: Vec<Signed> = envs
            .iter()
            .filter(|e| !checked.contains_key(&e.id()))
            .cloned()
            .collect();
        let mut fresh = packfed_protocol::verify_many::<R>(&unchecked, fed).into_iter();
        envs.iter()
            .map(|e| match checked.get(&e.id()) {
                Some(c) => e.verified_by::<R>(c, fed),
                None => fresh.next().unwrap_or(Err(SignedError::BadSignature)),
            })
            .collect()
    }

    /// Attestations out of `channel`'s document, decided and carried out together.
    fn admit_attestations(
        &self,
        batch: &[packfed_protocol::Verified<pb::Attestation>],
        channel: Channel,
    ) -> Vec<Ingested> {
        let policy = self.policy();
        let judge = self.judge(&policy);
        let decided = admit::attestations(&judge, &self.view(), batch, channel, true).and_then(|a| {
            self.apply(Source::Document(channel).needed(a.effects))
                .map(|_| a.results)
        });
        match decided {
            Ok(results) => results
                .into_iter()
                .map(|r| match r {
                    Ok(true) => Ingested::New,
                    Ok(false) => Ingested::Known,
                    Err(e) => Ingested::Invalid(e.to_string()),
                })
                .collect(),
            Err(e) => {
                tracing::error!(error = %e, "store failed while ingesting attestations");
                batch.iter().map(|_| Ingested::Invalid(format!("store: {e}"))).collect()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::BulkIngest;

    #[test]
    fn waiting_for_a_bulk_ingest_ends_with_it_or_at_the_bound() {
        let bulk = Arc::new(BulkIngest::default());
        let idle = Instant::now();
        bulk.wait_idle(Duration::from_secs(60));
        assert!(idle.elapsed() < Duration::from_secs(30), "no ingest running: no wait");

        let running = bulk.start();
        let bounded = Instant::now();
        bulk.wait_idle(Duration::from_millis(50));
        assert!(bounded.elapsed() >= Duration::from_millis(50), "waits while one runs");

        let waiter = {
            let bulk = bulk.clone();
            std::thread::spawn(move || {
                let t = Instant::now();
                bulk.wait_idle(Duration::from_secs(60));
                t.elapsed()
            })
        };
        drop(running);
        let waited = waiter.join().unwrap();
        assert!(
            waited < Duration::from_secs(30),
            "the end of the ingest wakes the waiter"
        );
    }
}
