//! Swarm distribution: a large blob is fetched piece by piece (1 MiB, 64
//! chunk groups, or larger for blobs over 128 MiB: [`piece_bytes`]) from
//! every provider at once, and served to others while it is still arriving.
//!
//! - [`partial`]: the blob being fetched (data file, outboard, which groups
//!   are verified), resumable after a restart.
//! - [`plan`]: which piece to ask which provider for (sans-IO).
//! - [`download`]: the driver. For each provider: one iroh connection, an
//!   observe stream that follows which ranges it holds (its bitfield,
//!   updated as its own download progresses), and two workers that request
//!   pieces as bao-verified ranges. Every group is checked against the
//!   blob's BLAKE3 root before it is written; a provider that sends a bad
//!   group is dropped for this blob and reported, and its piece goes back
//!   to the others. A piece that does not arrive within [`PIECE_DEADLINE`]
//!   goes back too, and the slow provider is dropped.

pub mod partial;
pub mod plan;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use iroh::{Endpoint, EndpointAddr};
use libp2p::PeerId;

pub use partial::{MIN_PIECE_BYTES, Partial, piece_bytes, piece_count, piece_len, piece_ranges, pieces_in};
use plan::Plan;

use crate::blobs::FetchError;

/// Blobs at least this large are fetched from several providers at once;
/// smaller ones are not worth the extra connections.
pub const SWARM_MIN_BYTES: u64 = 4 * MIN_PIECE_BYTES;

/// How long one piece may take before it is given to another provider.
pub const PIECE_DEADLINE: Duration = Duration::from_secs(20);

/// Arrived bytes after which the disk is asked to write them back.
const WRITEBACK_BYTES: u64 = 16 * 1024 * 1024;

/// Requests in flight per provider.
const WORKERS_PER_SOURCE: usize = 2;

/// How long a worker waits for pieces designated to it before it takes
/// pieces designated to other fetchers from a seed.
const IMPATIENT_AFTER: Duration = Duration::from_secs(2);

/// How long a provider may take to say what it holds.
const BITFIELD_DEADLINE: Duration = Duration::from_secs(10);

/// How long the whole fetch may go without a new piece before it stops
/// (the verified pieces stay for a resume).
pub const STALL: Duration = Duration::from_secs(60);

/// A provider that announced an iroh address.
#[derive(Debug, Clone)]
pub struct Source {
    pub peer: PeerId,
    pub key: [u8; 32],
    pub addr: EndpointAddr,
}

/// What each provider contributed.
#[derive(Debug, Default)]
pub struct Outcome {
    /// (provider, verified bytes it delivered, what ended it, if anything).
    pub sources: Vec<(PeerId, u64, Option<String>)>,
    /// Providers that sent a group that failed verification.
    pub liars: Vec<PeerId>,
}

struct Shared {
    partial: Arc<Partial>,
    plan: Mutex<Plan<[u8; 32]>>,
    /// Bumped whenever a bitfield or a piece changes, to wake idle workers.
    generation: tokio::sync::watch::Sender<u64>,
    epoch: Instant,
    random: AtomicU64,
}

impl Shared {
    fn bump(&self) {
        self.generation.send_modify(|g| *g += 1);
    }

    fn random(&self) -> u64 {
        // xorshift64: tie-breaking only, needs no quality.
        let mut x = self.random.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.random.store(x, Ordering::Relaxed);
        x
    }

    fn plan(&self) -> std::sync::MutexGuard<'_, Plan<[u8; 32]>> {
        self.plan.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Why a provider stopped contributing.
enum Ended {
    Finished,
    Lied(String),
    Failed(String),
}

/// Fetches every missing piece of `partial` from `sources`. Returns when the
/// blob is complete, or with an error naming each provider's failure when
/// none can finish it (the verified pieces stay for a later resume).
pub async fn download(
    endpoint: &Endpoint,
    me: [u8; 32],
    partial: Arc<Partial>,
    sources: Vec<Source>,
    progress: &(dyn Fn(u64) + Sync),
) -> (anyhow::Result<()>, Outcome) {
    let done = pieces_in(partial.size, &partial.have());
    let mut seed = [0u8; 8];
    let _ = getrandom::fill(&mut seed);
    let shared = Arc::new(Shared {
        plan: Mutex::new(Plan::new(&done, me)),
        partial: partial.clone(),
        generation: tokio::sync::watch::Sender::new(0),
        epoch: Instant::now(),
        random: AtomicU64::new(u64::from_le_bytes(seed) | 1),
    });
    let mut outcome = Outcome::default();
    if shared.plan().remaining() == 0 {
        return (Ok(()), outcome);
    }
    tracing::debug!(hash = %partial.hash, sources = sources.len(), missing = shared.plan().remaining(), "swarm fetch starts");
    let mut tasks = tokio::task::JoinSet::new();
    // Kept here: tasks still running at the end are aborted, and their
    // bytes count all the same.
    let mut counters = Vec::new();
    for source in sources {
        let (endpoint, shared) = (endpoint.clone(), shared.clone());
        let bytes = Arc::new(AtomicU64::new(0));
        counters.push((source.peer, bytes.clone()));
        tasks.spawn(async move {
            let ended = from_source(&endpoint, &shared, &source, &bytes).await;
            (source.peer, ended)
        });
    }
    let mut have = partial.subscribe();
    let mut stalled = false;
    let started = Instant::now();
    let mut last_piece = Instant::now();
    let mut nobody = tokio::time::interval(Duration::from_millis(500));
    // The disk writes what has arrived while the rest arrives, so the sync
    // at adoption has little left to do.
    let mut writeback: Option<tokio::task::JoinHandle<()>> = None;
    let mut written_back = 0;
    loop {
        if shared.plan().remaining() == 0 {
            break;
        }
        // Providers that hold nothing may start fetching it too, but when
        // none holds anything for a while, waiting helps nobody.
        if started.elapsed() > BITFIELD_DEADLINE && !shared.plan().any_source() {
            tasks.abort_all();
            return (
                Err(anyhow::anyhow!(
                    "none of the {} providers reachable over iroh holds any missing piece",
                    counters.len()
                )),
                outcome,
            );
        }
        tokio::select! {
            _ = nobody.tick() => {
                if last_piece.elapsed() > STALL {
                    stalled = true;
                    break;
                }
            }
            changed = have.changed() => {
                if changed.is_err() {
                    break;
                }
                last_piece = Instant::now();
                let held = {
                    let plan = shared.plan();
                    (plan.pieces() - plan.remaining()) as u64 * piece_bytes(partial.size)
                };
                progress(held.min(partial.size));
                if held >= written_back + WRITEBACK_BYTES && writeback.as_ref().is_none_or(|w| w.is_finished()) {
                    let partial = partial.clone();
                    writeback = Some(tokio::task::spawn_blocking(move || partial.write_back()));
                    written_back = held;
                }
            }
            joined = tasks.join_next() => {
                let Some(joined) = joined else { break };
                if let Ok((peer, ended)) = joined {
                    record(&mut outcome, peer, ended);
                }
            }
        }
    }
    // The blob is complete (or nobody can complete it): stop the rest.
    tasks.abort_all();
    while let Some(joined) = tasks.join_next().await {
        if let Ok((peer, ended)) = joined {
            record(&mut outcome, peer, ended);
        }
    }
    for (peer, bytes) in counters {
        let bytes = bytes.load(Ordering::Relaxed);
        match outcome.sources.iter_mut().find(|(p, _, _)| *p == peer) {
            Some(entry) => entry.1 = bytes,
            None => outcome.sources.push((peer, bytes, None)),
        }
    }
    let remaining = shared.plan().remaining();
    if remaining == 0 {
        progress(partial.size);
        return (Ok(()), outcome);
    }
    if stalled {
        return (
            Err(anyhow::anyhow!(
                "no new piece for {STALL:?}, {remaining} of {} missing; the verified ones are kept for the next try",
                piece_count(partial.size)
            )),
            outcome,
        );
    }
    let why: Vec<String> = outcome
        .sources
        .iter()
        .map(|(peer, _, e)| format!("{peer}: {}", e.as_deref().unwrap_or("stopped")))
        .collect();
    (
        Err(anyhow::anyhow!(
            "{remaining} of {} pieces missing after every provider stopped: {}",
            piece_count(partial.size),
            why.join("; ")
        )),
        outcome,
    )
}

fn record(outcome: &mut Outcome, peer: PeerId, ended: Ended) {
    let why = match ended {
        Ended::Finished => None,
        Ended::Lied(e) => {
            outcome.liars.push(peer);
            Some(format!("served corrupted bytes ({e})"))
        }
        Ended::Failed(e) => Some(e),
    };
    outcome.sources.push((peer, 0, why));
}

/// One provider: connect, follow its bitfield, run the workers.
async fn from_source(endpoint: &Endpoint, shared: &Arc<Shared>, source: &Source, bytes: &Arc<AtomicU64>) -> Ended {
    let conn = match tokio::time::timeout(
        Duration::from_secs(10),
        endpoint.connect(source.addr.clone(), iroh_blobs::ALPN),
    )
    .await
    {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            tracing::debug!(peer = %source.peer, error = %e, "swarm source unreachable");
            return Ended::Failed(format!("connect: {e}"));
        }
        Err(_) => return Ended::Failed("connect: timed out".into()),
    };
    let observing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let observer = tokio::spawn(follow_bitfield(
        conn.clone(),
        shared.clone(),
        source.key,
        observing.clone(),
    ));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..WORKERS_PER_SOURCE {
        let (conn, shared, key, bytes, observing) = (
            conn.clone(),
            shared.clone(),
            source.key,
            bytes.clone(),
            observing.clone(),
        );
        workers.spawn(async move { worker(&conn, &shared, key, &bytes, &observing).await });
    }
    let mut ended = Ended::Finished;
    while let Some(res) = workers.join_next().await {
        match res {
            Ok(Ended::Finished) | Err(_) => {}
            Ok(other) => {
                // One worker's verdict ends this provider for the blob.
                ended = other;
                workers.abort_all();
            }
        }
    }
    observer.abort();
    shared.plan().drop_provider(&source.key);
    shared.bump();
    conn.close(0u32.into(), b"done");
    ended
}

/// Applies the provider's bitfield messages (the first is whole, later ones
/// are differences) to the plan.
async fn follow_bitfield(
    conn: iroh::endpoint::Connection,
    shared: Arc<Shared>,
    key: [u8; 32],
    observing: Arc<std::sync::atomic::AtomicBool>,
) {
    let hash = iroh_blobs::Hash::from_bytes(*shared.partial.hash.as_bytes());
    let request = iroh_blobs::protocol::ObserveRequest {
        hash,
        ranges: iroh_blobs::protocol::RangeSpec::all(),
    };
    let mut stream = std::pin::pin!(observer().remote().observe(conn, request));
    let mut ranges = bao_tree::ChunkRanges::empty();
    // A node without the blob sends an empty bitfield of size 0; one that
    // is fetching it names the size.
    let mut fetching = false;
    loop {
        match stream.next().await {
            Some(Ok(update)) => {
                ranges = &ranges ^ &update.ranges;
                fetching |= update.size() > 0;
                let size = shared.partial.size;
                shared.plan().set_have(key, pieces_in(size, &ranges), fetching);
                shared.bump();
            }
            Some(Err(e)) => {
                tracing::debug!(error = %e, "a provider's bitfield stream failed");
                break;
            }
            None => break,
        }
    }
    // Without a bitfield nothing more is asked of this provider.
    observing.store(false, Ordering::Relaxed);
    shared.bump();
}

/// A store handle, only for its client of the remote observe protocol.
fn observer() -> &'static iroh_blobs::api::Store {
    static STORE: std::sync::OnceLock<iroh_blobs::store::mem::MemStore> = std::sync::OnceLock::new();
    STORE.get_or_init(iroh_blobs::store::mem::MemStore::new)
}

async fn worker(
    conn: &iroh::endpoint::Connection,
    shared: &Shared,
    key: [u8; 32],
    bytes: &AtomicU64,
    observing: &std::sync::atomic::AtomicBool,
) -> Ended {
    let partial = &shared.partial;
    let mut failures = 0;
    let started = Instant::now();
    let mut idle_since: Option<Instant> = None;
    loop {
        // Idle for a while: seed pieces designated to other fetchers are
        // fair game (one of them may be slow).
        let patient = idle_since.is_none_or(|t| t.elapsed() < IMPATIENT_AFTER);
        let mut wake = shared.generation.subscribe();
        let now = shared.epoch.elapsed().as_millis() as u64;
        let random = shared.random();
        let pick = {
            let mut plan = shared.plan();
            if plan.remaining() == 0 {
                return Ended::Finished;
            }
            if !plan.knows(&key) && (!observing.load(Ordering::Relaxed) || started.elapsed() > BITFIELD_DEADLINE) {
                return Ended::Failed("sent no bitfield".into());
            }
            plan.next_for(&key, random, now, patient)
        };
        let Some(piece) = pick else {
            idle_since.get_or_insert_with(Instant::now);
            // Nothing this provider holds is wanted yet: wait for news.
            let _ = tokio::time::timeout(Duration::from_secs(1), wake.changed()).await;
            continue;
        };
        idle_since = None;
        let ranges = piece_ranges(partial.size, piece);
        let hash = iroh_blobs::Hash::from_bytes(*partial.hash.as_bytes());
        let got = tokio::time::timeout(
            PIECE_DEADLINE,
            crate::blobs::get_ranges(conn, hash, ranges.clone(), |_, item| match item {
                bao_tree::io::BaoContentItem::Parent(p) => partial.save_parent(p.node, &p.pair),
                bao_tree::io::BaoContentItem::Leaf(l) => partial.write_leaf(l.offset, &l.data),
            }),
        )
        .await;
        match got {
            Ok(Ok((size, _))) if size == partial.size => {
                if let Err(e) = partial.add_have(&ranges) {
                    shared.plan().failed(piece);
                    return Ended::Failed(format!("writing the outboard: {e}"));
                }
                let n = piece_len(partial.size, piece);
                bytes.fetch_add(n, Ordering::Relaxed);
                let now = shared.epoch.elapsed().as_millis() as u64;
                shared.plan().finished(piece, now);
                shared.bump();
                failures = 0;
            }
            Ok(Ok((size, _))) => {
                shared.plan().failed(piece);
                return Ended::Lied(format!("claims a size of {size}, the release says {}", partial.size));
            }
            Ok(Err(FetchError::Verification(e))) => {
                shared.plan().failed(piece);
                return Ended::Lied(e);
            }
            Ok(Err(e)) => {
                tracing::debug!(piece, error = %e, "piece request failed");
                shared.plan().failed(piece);
                failures += 1;
                if failures >= 3 {
                    return Ended::Failed(e.to_string());
                }
            }
            Err(_) => {
                shared.plan().failed(piece);
                return Ended::Failed(format!("piece {piece} took over {PIECE_DEADLINE:?}"));
            }
        }
    }
}
