//! Registry sync sessions over request-response. The swarm task only routes
//! messages and checks budgets: absorbing a peer's message (bounding,
//! screening, verifying, ingesting) and computing the answer run as a step
//! on the blocking pool, which reports back to the reactor to send it.
//!
//! Only the peer with the smaller id asks, so one session carries both
//! directions; a session is at most [`MAX_SYNC_ROUNDS`] round trips.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;

use automerge::sync;
use libp2p::PeerId;
use libp2p::request_response::{self, ResponseChannel};
use packfed_protocol::{Signed, SignerKeys, pb};
use tokio::sync::mpsc;

use super::Reactor;
use super::limiter::RateLimiter;
use crate::core::Channel;
use crate::node::{Ingested, Node};
use crate::registry::{Replica, ReplicaError};

/// What one peer may make this node absorb by registry sync: a session
/// every 5 s takes a few requests; the byte burst holds a fresh node's
/// first sync of a large registry (one message of up to 64 MiB).
const SYNC_REQUESTS_PER_SEC: f64 = 1.0;
const SYNC_REQUESTS_BURST: f64 = 128.0;
const SYNC_BYTES_PER_SEC: f64 = 2.0 * 1024.0 * 1024.0;
const SYNC_BYTES_BURST: f64 = 160.0 * 1024.0 * 1024.0;
/// Most round trips in one sync session (automerge converges in a few).
const MAX_SYNC_ROUNDS: u32 = 64;
/// Most steps running at once (they are CPU-bound, and two cores is the
/// usual machine); requests past it wait in a queue of [`MAX_SYNC_QUEUED`],
/// in arrival order, and past that are declined (the peer retries with its
/// next session), so no crowd of peers can pile up work. Every node of a
/// federation starts a session with each peer every 5 s, so dozens of
/// requests can arrive at once from honest peers alone.
const MAX_SYNC_STEPS: usize = 4;
const MAX_SYNC_QUEUED: usize = 256;

pub(super) fn requests_limiter() -> RateLimiter<PeerId> {
    RateLimiter::new(SYNC_REQUESTS_PER_SEC, SYNC_REQUESTS_BURST)
}

pub(super) fn bytes_limiter() -> RateLimiter<PeerId> {
    RateLimiter::new(SYNC_BYTES_PER_SEC, SYNC_BYTES_BURST)
}

/// A session this node opened, between round trips.
pub(super) struct Session {
    state: sync::State,
    rounds: u32,
}

/// What to do with a step's answer.
enum Then {
    /// Answer a peer's request.
    Respond(ResponseChannel<pb::SyncResponse>),
    /// Send the next request of our own session, if there is more to say.
    Continue { rounds: u32, heard: bool },
}

/// A finished step, back on the swarm task.
pub(super) struct StepDone {
    peer: PeerId,
    channel: Channel,
    state: sync::State,
    reply: Option<Vec<u8>>,
    then: Then,
}

/// A peer's request waiting for a free step.
struct Queued {
    peer: PeerId,
    channel: Channel,
    msg: Option<Vec<u8>>,
    reply: ResponseChannel<pb::SyncResponse>,
}

/// Steps in flight, keyed by (peer, document, whether we answer), and the
/// requests waiting for one.
pub(super) struct Steps {
    running: HashSet<(PeerId, u32, bool)>,
    queued: VecDeque<Queued>,
    tx: mpsc::UnboundedSender<StepDone>,
    pub(super) done: mpsc::UnboundedReceiver<StepDone>,
}

impl Steps {
    pub(super) fn new() -> Steps {
        let (tx, done) = mpsc::unbounded_channel();
        Steps {
            running: HashSet::new(),
            queued: VecDeque::new(),
            tx,
            done,
        }
    }

    /// Whether (peer, doc) has an answer running or waiting.
    fn answering(&self, peer: &PeerId, doc: u32) -> bool {
        self.running.contains(&(*peer, doc, true))
            || self.queued.iter().any(|q| q.peer == *peer && q.channel.doc() == doc)
    }
}

/// The saved session state with `peer`, if the document holds every
/// change it says both sides share. After a crash the state (in the store)
/// can be newer than the document file; trusted, it would tell the peer we
/// hold changes we lost, and the peer would never send them again.
fn load_state(node: &Node, peer: &PeerId, channel: Channel) -> sync::State {
    let saved = node
        .store
        .sync_state(&peer.to_string(), channel.doc())
        .ok()
        .flatten()
        .and_then(|b| sync::State::decode(&b).ok());
    match saved {
        Some(state)
            if node
                .replica_for(channel)
                .lock()
                .is_ok_and(|mut r| r.holds_changes(&state.shared_heads)) =>
        {
            state
        }
        _ => sync::State::new(),
    }
}

fn save_state(node: &Node, peer: &PeerId, doc: u32, state: &sync::State) {
    if let Err(e) = node.store.set_sync_state(&peer.to_string(), doc, &state.encode()) {
        tracing::warn!(error = %e, "cannot persist sync state");
    }
}

/// One more registry sync message refused whole (`status.sync_refused`).
fn count_refused(node: &Node) {
    node.stats.sync_refused.fetch_add(1, Ordering::Relaxed);
}

/// Absorbs a peer's message (if any) and computes the answer. Blocking.
fn step(node: &Node, peer: &PeerId, channel: Channel, state: &mut sync::State, msg: Option<&[u8]>) -> Option<Vec<u8>> {
    if let Some(msg) = msg {
        absorb(node, peer, channel, state, msg);
    }
    let reply = node
        .replica_for(channel)
        .lock()
        .ok()
        .and_then(|mut r| r.generate(state));
    save_state(node, peer, channel.doc(), state);
    reply
}

/// Feeds a peer's sync message to the document and ingests what is new.
fn absorb(node: &Node, peer: &PeerId, channel: Channel, state: &mut sync::State, msg: &[u8]) {
    let federation = *node.federation();
    // Screening verifies every record's signature: not under the document
    // lock, which publishes and other sessions need meanwhile. What it
    // checked is kept, so ingesting does not check it again. A record may
    // be carried on if it is a signed envelope of this federation whose
    // signature holds, of any kind (a newer kind travels through nodes
    // that cannot read it yet).
    let checked = std::sync::Mutex::new(HashMap::new());
    let keys = SignerKeys::default();
    let carried = |bytes: &[u8]| match Signed::decode(bytes).and_then(|env| env.check_as_sent_with(&federation, &keys))
    {
        Ok(c) => {
            if let Ok(mut map) = checked.lock() {
                map.insert(c.id(), c);
            }
            true
        }
        Err(_) => false,
    };
    let received = Replica::screen(msg, carried).and_then(|screened| match node.replica_for(channel).lock() {
        Ok(mut r) => r.apply(state, screened),
        Err(_) => Err(ReplicaError::Malformed("registry document lock poisoned".into())),
    });
    match received {
        Ok(got) => {
            if got.refused > 0 {
                tracing::warn!(%peer, changes = got.refused, "refused registry changes that hold no valid record, or build on such");
                node.stats.crdt_garbage.fetch_add(got.refused as u64, Ordering::Relaxed);
            }
            if got.candidates.is_empty() {
                return;
            }
            let bytes: Vec<Vec<u8>> = got.candidates.into_iter().map(|(_, b)| b).collect();
            let outcomes = node.ingest_batch(&bytes, &checked.into_inner().unwrap_or_default(), channel);
            if let Ok(mut r) = node.replica_for(channel).lock() {
                r.stored();
            }
            for outcome in outcomes {
                if let Ingested::Invalid(reason) = outcome {
                    tracing::warn!(%peer, %reason, "ignored an invalid record from registry sync");
                    node.stats.crdt_garbage.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        Err(e) => {
            tracing::warn!(%peer, error = %e, "refused a registry sync message");
            count_refused(node);
        }
    }
}

impl Reactor {
    /// Starts sessions with a peer: the public document, and the org one
    /// with org peers.
    pub(super) fn start_sync(&mut self, peer: PeerId) {
        if *self.swarm.local_peer_id() > peer {
            return;
        }
        self.start_doc_sync(peer, Channel::Public);
        if self.node.is_org_peer(&peer) {
            self.start_doc_sync(peer, Channel::Org);
        }
    }

    fn start_doc_sync(&mut self, peer: PeerId, channel: Channel) {
        let doc = channel.doc();
        if self.sessions.contains_key(&(peer, doc)) || self.sync_steps.running.contains(&(peer, doc, false)) {
            return;
        }
        self.spawn_step(
            peer,
            channel,
            None,
            None,
            Then::Continue {
                rounds: 0,
                heard: false,
            },
        );
    }

    /// Runs a step on the blocking pool; `state` None loads the saved one.
    fn spawn_step(
        &mut self,
        peer: PeerId,
        channel: Channel,
        state: Option<sync::State>,
        msg: Option<Vec<u8>>,
        then: Then,
    ) {
        let answering = matches!(then, Then::Respond(_));
        self.sync_steps.running.insert((peer, channel.doc(), answering));
        let (node, tx) = (self.node.clone(), self.sync_steps.tx.clone());
        tokio::task::spawn_blocking(move || {
            let mut state = state.unwrap_or_else(|| load_state(&node, &peer, channel));
            let reply = step(&node, &peer, channel, &mut state, msg.as_deref());
            // The receiver lives as long as the reactor.
            let _ = tx.send(StepDone {
                peer,
                channel,
                state,
                reply,
                then,
            });
        });
    }

    /// Starts waiting requests while steps are free.
    fn run_queued(&mut self) {
        while self.sync_steps.running.len() < MAX_SYNC_STEPS {
            let Some(q) = self.sync_steps.queued.pop_front() else {
                break;
            };
            if !self.swarm.is_connected(&q.peer) {
                continue;
            }
            let state = self.responder_states.remove(&(q.peer, q.channel.doc()));
            self.spawn_step(q.peer, q.channel, state, q.msg, Then::Respond(q.reply));
        }
    }

    pub(super) fn on_sync_step_done(&mut self, done: StepDone) {
        let StepDone {
            peer,
            channel,
            state,
            reply,
            then,
        } = done;
        let doc = channel.doc();
        match then {
            Then::Respond(ch) => {
                self.sync_steps.running.remove(&(peer, doc, true));
                if self.swarm.is_connected(&peer) {
                    self.responder_states.insert((peer, doc), state);
                }
                let sent = reply.as_ref().map_or(0, Vec::len) as u64;
                crate::metrics::Metrics::add(&self.node.metrics.sync_bytes_sent, sent);
                let _ = self.swarm.behaviour_mut().sync.send_response(
                    ch,
                    pb::SyncResponse {
                        message: reply,
                        error: String::new(),
                    },
                );
            }
            Then::Continue { rounds, heard } => {
                self.sync_steps.running.remove(&(peer, doc, false));
                let first = rounds == 0;
                if (first || reply.is_some() || heard) && rounds < MAX_SYNC_ROUNDS && self.swarm.is_connected(&peer) {
                    let sent = reply.as_ref().map_or(0, Vec::len) as u64;
                    crate::metrics::Metrics::add(&self.node.metrics.sync_bytes_sent, sent);
                    let id = self
                        .swarm
                        .behaviour_mut()
                        .sync
                        .send_request(&peer, pb::SyncRequest { doc, message: reply });
                    self.sync_requests.insert(id, doc);
                    self.sessions.insert(
                        (peer, doc),
                        Session {
                            state,
                            rounds: rounds + 1,
                        },
                    );
                }
            }
        }
        self.run_queued();
    }

    fn refuse_sync(&mut self, ch: ResponseChannel<pb::SyncResponse>, error: &str) {
        let _ = self.swarm.behaviour_mut().sync.send_response(
            ch,
            pb::SyncResponse {
                message: None,
                error: error.into(),
            },
        );
    }

    pub(super) fn on_sync_event(&mut self, ev: request_response::Event<pb::SyncRequest, pb::SyncResponse>) {
        match ev {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request { request, channel, .. } => {
                    self.on_sync_request(peer, request, channel)
                }
                request_response::Message::Response { request_id, response } => {
                    let Some(doc) = self.sync_requests.remove(&request_id) else {
                        return;
                    };
                    let Some(session) = self.sessions.remove(&(peer, doc)) else {
                        return;
                    };
                    let Some(ch) = Channel::from_doc(doc) else { return };
                    if !response.error.is_empty() {
                        tracing::debug!(%peer, error = %response.error, "peer declined registry sync");
                        return;
                    }
                    let bytes = response.message.as_ref().map_or(0, Vec::len);
                    crate::metrics::Metrics::add(&self.node.metrics.sync_bytes_received, bytes as u64);
                    if !self
                        .sync_bytes_limiter
                        .allow_n(&peer, bytes as f64, crate::packing::now_ms())
                    {
                        tracing::warn!(%peer, bytes, "registry sync budget spent: dropped a response");
                        count_refused(&self.node);
                        return;
                    }
                    let heard = response.message.is_some();
                    self.spawn_step(
                        peer,
                        ch,
                        Some(session.state),
                        response.message,
                        Then::Continue {
                            rounds: session.rounds,
                            heard,
                        },
                    );
                }
            },
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                tracing::debug!(%peer, %error, "registry sync request failed");
                if let Some(doc) = self.sync_requests.remove(&request_id) {
                    self.sessions.remove(&(peer, doc));
                }
            }
            _ => {}
        }
    }

    fn on_sync_request(&mut self, peer: PeerId, request: pb::SyncRequest, ch: ResponseChannel<pb::SyncResponse>) {
        let doc = request.doc;
        // Only peers that identified as this federation's sync; the org
        // document goes only to org peers.
        let member = self.peers.get(&peer).is_some_and(|p| p.federation_ok);
        let allowed = match Channel::from_doc(doc) {
            _ if !member => None,
            Some(Channel::Org) => self.node.is_org_peer(&peer).then_some(Channel::Org),
            other => other,
        };
        let Some(channel) = allowed else {
            return self.refuse_sync(ch, "document not shared with this peer");
        };
        let now = crate::packing::now_ms();
        let bytes = request.message.as_ref().map_or(0, Vec::len) as f64;
        crate::metrics::Metrics::add(&self.node.metrics.sync_bytes_received, bytes as u64);
        if !self.sync_requests_limiter.allow(&peer, now) || !self.sync_bytes_limiter.allow_n(&peer, bytes, now) {
            tracing::warn!(%peer, bytes, "registry sync budget spent: refused a request");
            count_refused(&self.node);
            return self.refuse_sync(ch, "sync budget spent: retry later");
        }
        if self.sync_steps.answering(&peer, doc) || self.sync_steps.queued.len() >= MAX_SYNC_QUEUED {
            return self.refuse_sync(ch, "busy: retry later");
        }
        self.sync_steps.queued.push_back(Queued {
            peer,
            channel,
            msg: request.message,
            reply: ch,
        });
        self.run_queued();
    }
}
