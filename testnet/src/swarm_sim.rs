//! In-process flash-crowd simulation of swarm distribution: `fetchers`
//! nodes start fetching one blob at the same moment, and only the origin
//! holds it. Each fetcher runs the node's own piece planner
//! ([`packfed_node::swarm::plan::Plan`]) the way `swarm::download` drives
//! it: every other node is a provider, with [`WORKERS_PER_SOURCE`] requests
//! in flight each; a worker with nothing to ask for waits for news (a
//! bitfield change from its provider, or a piece arriving at its own node),
//! looks again at least every second, and after [`IMPATIENT_AFTER`] idle
//! takes seed pieces designated to other fetchers. A node serves every
//! piece it holds (serve while downloading) and its bitfield reaches the
//! others one latency later.
//!
//! The network is a model, not sockets: a node's upload rate is shared
//! equally by the pieces it is sending at that moment (as the node's upload
//! limiter shares its bucket between streams), downloads are not limited,
//! and every message takes `latency` one way. Time is simulated, so the
//! result is the same on a busy machine: it measures the planner's
//! decisions (who asks whom for what), not this machine's CPU.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::time::Duration;

use packfed_node::swarm::plan::Plan;

use crate::sim::XorShift;

/// Requests in flight per provider (as in `swarm::download`).
pub const WORKERS_PER_SOURCE: usize = 2;

/// Idle time after which a worker takes any seed piece (as in `swarm::download`).
pub const IMPATIENT_AFTER: Duration = Duration::from_secs(2);

/// How often an idle worker looks again without news (as in `swarm::download`).
const IDLE_RECHECK: Duration = Duration::from_secs(1);

/// One simulated flash crowd.
#[derive(Debug, Clone)]
pub struct Crowd {
    /// Nodes fetching, besides the origin.
    pub fetchers: usize,
    pub pieces: usize,
    pub piece_bytes: u64,
    /// Every node's upload limit, bytes per second.
    pub upload_rate: f64,
    /// One-way delay of every message.
    pub latency: Duration,
    pub seed: u64,
}

/// What a simulated crowd did.
#[derive(Debug, Clone)]
pub struct CrowdReport {
    pub pack_bytes: u64,
    /// When each fetcher held the whole blob, sorted.
    pub done: Vec<Duration>,
    /// Bytes each node uploaded; index 0 is the origin.
    pub uploads: Vec<u64>,
}

impl CrowdReport {
    /// The completion time below which a share `q` of the fetchers finished.
    pub fn quantile(&self, q: f64) -> Duration {
        let i = ((self.done.len() as f64 * q).ceil() as usize).clamp(1, self.done.len());
        self.done[i - 1]
    }

    /// The origin's upload as a multiple of the blob's size.
    pub fn origin_ratio(&self) -> f64 {
        self.uploads[0] as f64 / self.pack_bytes as f64
    }
}

impl fmt::Display for CrowdReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total: u64 = self.uploads.iter().sum();
        write!(
            f,
            "{} fetchers: p50 {:.2?} p99 {:.2?}; origin uploaded {:.2}x the blob, all nodes {:.2}x",
            self.done.len(),
            self.quantile(0.5),
            self.quantile(0.99),
            self.origin_ratio(),
            total as f64 / self.pack_bytes as f64
        )
    }
}

/// Simulated time, nanoseconds.
type Ns = u64;

fn ns(d: Duration) -> Ns {
    d.as_nanos() as Ns
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    /// A request reaches `provider`.
    Request {
        worker: usize,
        provider: usize,
        piece: usize,
    },
    /// The earliest upload of `provider` may have finished (stale unless
    /// `generation` is still the provider's).
    Upload { provider: usize, generation: u64 },
    /// A piece has fully arrived at the worker's node.
    Arrive { worker: usize, piece: usize },
    /// `holder` now holds `piece`; the news reaches `to`.
    Have { to: usize, holder: usize, piece: usize },
    /// An idle worker looks again.
    Wake { worker: usize },
}

/// A piece being sent: who asked, and the bytes still to go.
struct Job {
    worker: usize,
    piece: usize,
    left: f64,
}

#[derive(Default)]
struct Uploader {
    jobs: Vec<Job>,
    last: Ns,
    generation: u64,
    sent: u64,
}

#[derive(Clone, Copy, Default)]
struct Worker {
    busy: bool,
    idle_since: Option<Ns>,
    wake_pending: bool,
}

struct Fetcher {
    plan: Plan<usize>,
    /// What this node has heard each other node holds.
    views: Vec<Vec<bool>>,
    done_at: Option<Ns>,
}

struct Engine {
    crowd: Crowd,
    /// Node count, the origin (index 0) included.
    nodes: usize,
    queue: BinaryHeap<Reverse<(Ns, u64, Event)>>,
    seq: u64,
    now: Ns,
    held: Vec<Vec<bool>>,
    /// Index `fetcher`, `None` for the origin.
    fetchers: Vec<Option<Fetcher>>,
    /// Worker `(node * nodes + provider) * WORKERS_PER_SOURCE + k`.
    workers: Vec<Worker>,
    uploaders: Vec<Uploader>,
    rng: XorShift,
}

/// Runs the crowd to the end (every fetcher complete).
pub fn run(crowd: &Crowd) -> CrowdReport {
    assert!(crowd.fetchers > 0 && crowd.pieces > 0 && crowd.upload_rate > 0.0);
    let nodes = crowd.fetchers + 1;
    let mut held = vec![vec![false; crowd.pieces]; nodes];
    held[0] = vec![true; crowd.pieces];
    let mut engine = Engine {
        nodes,
        queue: BinaryHeap::new(),
        seq: 0,
        now: 0,
        fetchers: (0..nodes)
            .map(|i| {
                (i > 0).then(|| Fetcher {
                    plan: Plan::new(&vec![false; crowd.pieces], i),
                    views: held.clone(),
                    done_at: None,
                })
            })
            .collect(),
        held,
        workers: vec![Worker::default(); nodes * nodes * WORKERS_PER_SOURCE],
        uploaders: (0..nodes).map(|_| Uploader::default()).collect(),
        rng: XorShift::new(crowd.seed),
        crowd: crowd.clone(),
    };
    engine.start();
    while let Some(Reverse((at, _, event))) = engine.queue.pop() {
        engine.now = at;
        engine.handle(event);
    }
    let mut done: Vec<Duration> = engine
        .fetchers
        .iter()
        .flatten()
        .map(|f| Duration::from_nanos(f.done_at.expect("every fetcher completes")))
        .collect();
    done.sort();
    CrowdReport {
        pack_bytes: crowd.pieces as u64 * crowd.piece_bytes,
        done,
        uploads: engine.uploaders.iter().map(|u| u.sent).collect(),
    }
}

impl Engine {
    fn at(&mut self, delay: Ns, event: Event) {
        self.seq += 1;
        self.queue.push(Reverse((self.now + delay, self.seq, event)));
    }

    fn worker_of(&self, node: usize, provider: usize, k: usize) -> usize {
        (node * self.nodes + provider) * WORKERS_PER_SOURCE + k
    }

    /// (node, provider) of a worker index.
    fn parts(&self, worker: usize) -> (usize, usize) {
        let pair = worker / WORKERS_PER_SOURCE;
        (pair / self.nodes, pair % self.nodes)
    }

    fn start(&mut self) {
        for node in 1..self.nodes {
            let Some(f) = self.fetchers[node].as_mut() else {
                continue;
            };
            f.plan.set_have(0, vec![true; self.crowd.pieces], false);
            for other in (1..self.nodes).filter(|o| *o != node) {
                // Everyone fetching has announced itself: an empty
                // bitfield that names the size.
                f.plan.set_have(other, vec![false; self.crowd.pieces], true);
            }
            self.try_all(node);
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Request {
                worker,
                provider,
                piece,
            } => {
                debug_assert!(self.held[provider][piece]);
                self.advance(provider);
                let left = self.crowd.piece_bytes as f64;
                self.uploaders[provider].jobs.push(Job { worker, piece, left });
                self.reschedule(provider);
            }
            Event::Upload { provider, generation } => {
                if generation != self.uploaders[provider].generation {
                    return;
                }
                self.advance(provider);
                let latency = ns(self.crowd.latency);
                let jobs = std::mem::take(&mut self.uploaders[provider].jobs);
                let (finished, going): (Vec<Job>, Vec<Job>) = jobs.into_iter().partition(|j| j.left < 0.5);
                self.uploaders[provider].jobs = going;
                for job in finished {
                    self.uploaders[provider].sent += self.crowd.piece_bytes;
                    self.at(
                        latency,
                        Event::Arrive {
                            worker: job.worker,
                            piece: job.piece,
                        },
                    );
                }
                self.reschedule(provider);
            }
            Event::Arrive { worker, piece } => {
                let (node, _) = self.parts(worker);
                self.workers[worker].busy = false;
                if !self.held[node][piece] {
                    self.held[node][piece] = true;
                    let now = self.now;
                    let f = self.fetchers[node].as_mut().expect("only fetchers fetch");
                    f.plan.finished(piece, now / 1_000_000);
                    if f.plan.remaining() == 0 {
                        f.done_at = Some(now);
                    }
                    let latency = ns(self.crowd.latency);
                    for to in (1..self.nodes).filter(|to| *to != node) {
                        self.at(
                            latency,
                            Event::Have {
                                to,
                                holder: node,
                                piece,
                            },
                        );
                    }
                }
                self.try_worker(worker);
                // News for every idle worker of this node.
                self.try_all(node);
            }
            Event::Have { to, holder, piece } => {
                let Some(f) = self.fetchers[to].as_mut() else { return };
                if f.done_at.is_some() {
                    return;
                }
                f.views[holder][piece] = true;
                let view = f.views[holder].clone();
                let complete = view.iter().all(|x| *x);
                f.plan.set_have(holder, view, !complete);
                if complete {
                    // A new seed changes which seed pieces are open.
                    self.try_all(to);
                } else {
                    for k in 0..WORKERS_PER_SOURCE {
                        let w = self.worker_of(to, holder, k);
                        self.try_worker(w);
                    }
                }
            }
            Event::Wake { worker } => {
                self.workers[worker].wake_pending = false;
                self.try_worker(worker);
            }
        }
    }

    fn try_all(&mut self, node: usize) {
        for provider in (0..self.nodes).filter(|p| *p != node) {
            for k in 0..WORKERS_PER_SOURCE {
                let w = self.worker_of(node, provider, k);
                self.try_worker(w);
            }
        }
    }

    /// What `swarm::download`'s worker does when it looks for work.
    fn try_worker(&mut self, worker: usize) {
        let (node, provider) = self.parts(worker);
        let now = self.now;
        let state = self.workers[worker];
        if state.busy || self.fetchers[node].as_ref().is_none_or(|f| f.done_at.is_some()) {
            return;
        }
        let patient = state.idle_since.is_none_or(|t| now - t < ns(IMPATIENT_AFTER));
        let random = self.rng.next_u64();
        let Some(f) = self.fetchers[node].as_mut() else { return };
        match f.plan.next_for(&provider, random, now / 1_000_000, patient) {
            Some(piece) => {
                self.workers[worker] = Worker {
                    busy: true,
                    idle_since: None,
                    wake_pending: state.wake_pending,
                };
                self.at(
                    ns(self.crowd.latency),
                    Event::Request {
                        worker,
                        provider,
                        piece,
                    },
                );
            }
            None => {
                let w = &mut self.workers[worker];
                w.idle_since.get_or_insert(now);
                if !w.wake_pending {
                    w.wake_pending = true;
                    self.at(ns(IDLE_RECHECK), Event::Wake { worker });
                }
            }
        }
    }

    /// Brings the provider's uploads up to now: each got an equal share.
    fn advance(&mut self, provider: usize) {
        let rate = self.crowd.upload_rate;
        let now = self.now;
        let u = &mut self.uploaders[provider];
        if !u.jobs.is_empty() {
            let share = (now - u.last) as f64 / 1e9 * rate / u.jobs.len() as f64;
            for job in &mut u.jobs {
                job.left -= share;
            }
        }
        u.last = now;
    }

    /// Schedules the provider's next finished upload.
    fn reschedule(&mut self, provider: usize) {
        let rate = self.crowd.upload_rate;
        let u = &mut self.uploaders[provider];
        u.generation += 1;
        let generation = u.generation;
        let Some(least) = u.jobs.iter().map(|j| j.left).reduce(f64::min) else {
            return;
        };
        let delay = (least.max(0.0) * u.jobs.len() as f64 / rate * 1e9).ceil() as Ns;
        self.at(delay, Event::Upload { provider, generation });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crowd(fetchers: usize) -> Crowd {
        Crowd {
            fetchers,
            pieces: 16,
            piece_bytes: 1 << 20,
            upload_rate: 50e6,
            latency: Duration::from_millis(1),
            seed: 3,
        }
    }

    #[test]
    fn a_lone_fetch_takes_the_blob_at_the_upload_rate() {
        let r = run(&crowd(1));
        let ideal = 16.0 * (1 << 20) as f64 / 50e6;
        let took = r.done[0].as_secs_f64();
        assert!(took >= ideal && took < ideal * 1.2, "{took} vs {ideal}");
        // The endgame may ask for the last piece twice.
        assert!(r.uploads[0] >= r.pack_bytes && r.uploads[0] <= r.pack_bytes + (1 << 20));
    }

    #[test]
    fn the_crowd_serves_itself() {
        let r = run(&crowd(12));
        assert_eq!(r.done.len(), 12);
        // One by one the origin would send 12 copies.
        assert!(r.origin_ratio() < 3.0, "{r}");
        let total: u64 = r.uploads.iter().sum();
        assert!(total >= 12 * r.pack_bytes);
    }
}
