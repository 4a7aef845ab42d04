//! In-process large-N gossip simulation: N full libp2p swarms (noise +
//! yamux over [`MemoryTransport`]) in one tokio runtime, each running the
//! node's gossipsub configuration and peer scoring on the federation's
//! records topic, and validating what it receives the way a node does
//! (verify the `Signed` envelope, then report `Accept` or `Reject`).
//!
//! What it is for: how long a signed release takes to reach every node of a
//! large federation, and what a forged one does to the publisher's
//! neighbours. What it is not: a model of the node's storage, registry sync
//! or blob transfer; only gossip is simulated.
//!
//! Topology: node `i` dials [`DEGREE`] distinct random earlier nodes (all of
//! them when there are fewer), drawn from a seeded xorshift, so one seed
//! gives one graph. Every wait is event-driven with a deadline; nothing
//! sleeps for the network.
//!
//! The gossipsub behaviour is the node's own
//! (`packfed_node::net::gossipsub_behaviour`: same config, scoring, topics);
//! kademlia, registry sync and blob transfer are left out.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use libp2p::core::transport::MemoryTransport;
use libp2p::core::upgrade::Version;
use libp2p::futures::StreamExt;
use libp2p::gossipsub::{self, MessageAcceptance, TopicHash};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, Swarm, Transport, identity, noise, yamux};
use packfed_node::net::Names;
use packfed_protocol::{ContentHash, FederationId, KeyPair, RecordId, Signed, pb};
use tokio::sync::{mpsc, oneshot};

/// How many earlier nodes each node dials.
pub const DEGREE: usize = 4;

/// The default deadline of every wait in the simulation.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// A tiny deterministic generator (xorshift64), enough for a topology.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> XorShift {
        XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform enough in `0..n` for a simulation (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn bytes32(&mut self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for chunk in out.chunks_mut(8) {
            chunk.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        out
    }
}

/// Who dials whom: `dials[i]` lists the earlier nodes node `i` dials.
pub fn topology(n: usize, degree: usize, rng: &mut XorShift) -> Vec<Vec<usize>> {
    (0..n)
        .map(|i| {
            if i <= degree {
                return (0..i).collect();
            }
            let mut picked = Vec::with_capacity(degree);
            while picked.len() < degree {
                let j = rng.below(i);
                if !picked.contains(&j) {
                    picked.push(j);
                }
            }
            picked.sort_unstable();
            picked
        })
        .collect()
}

/// The undirected neighbour lists of a dial list.
pub fn neighbours(dials: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let mut out = vec![Vec::new(); dials.len()];
    for (i, targets) in dials.iter().enumerate() {
        for &j in targets {
            out[i].push(j);
            out[j].push(i);
        }
    }
    for list in &mut out {
        list.sort_unstable();
        list.dedup();
    }
    out
}

/// The node's gossipsub: the configuration and scoring of
/// `packfed_node::net::behaviour` (see the module docs), subscribed to the
/// records and nodes topics.
pub fn gossipsub_behaviour(key: &identity::Keypair, names: &Names) -> Result<gossipsub::Behaviour> {
    packfed_node::net::gossipsub_behaviour(key, names)
}

/// One swarm over the in-memory transport.
fn build_swarm(key: identity::Keypair, names: &Names) -> Result<Swarm<gossipsub::Behaviour>> {
    let swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_other_transport(|key| -> Result<_, Box<dyn std::error::Error + Send + Sync>> {
            Ok(MemoryTransport::default()
                .upgrade(Version::V1)
                .authenticate(noise::Config::new(key)?)
                .multiplex(yamux::Config::default()))
        })
        .map_err(|e| anyhow!("memory transport: {e}"))?
        .with_behaviour(|key| gossipsub_behaviour(key, names).map_err(|e| e.into()))
        .map_err(|e| anyhow!("behaviour: {e}"))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(300)))
        .build();
    Ok(swarm)
}

/// One node's verdict on one gossiped message.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The receiving node.
    pub node: usize,
    /// BLAKE3 of the message bytes (the gossipsub message id, the record id).
    pub record: RecordId,
    /// True when the envelope verified as a release of this federation.
    pub accepted: bool,
    /// When the message reached the node's application layer.
    pub at: Instant,
    /// The peer it came from.
    pub from: PeerId,
}

enum Cmd {
    Dial(Multiaddr),
    Expect(HashSet<PeerId>),
    Publish(Vec<u8>, oneshot::Sender<Result<Instant, String>>),
    Score(PeerId, oneshot::Sender<Option<f64>>),
}

enum Report {
    Listening(usize, Multiaddr),
    Ready(usize),
    Delivered(Delivery),
}

/// One simulated node: its swarm and what it waits for.
struct NodeTask {
    index: usize,
    swarm: Swarm<gossipsub::Behaviour>,
    topic: TopicHash,
    fed: FederationId,
    expect: Option<HashSet<PeerId>>,
    ready: bool,
    listening: bool,
    reports: mpsc::UnboundedSender<Report>,
}

impl NodeTask {
    async fn run(mut self, mut cmds: mpsc::UnboundedReceiver<Cmd>) {
        // Readiness also depends on the mesh, which the gossipsub heartbeat
        // changes without a swarm event: look again on a short tick.
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_event(event),
                cmd = cmds.recv() => match cmd {
                    Some(cmd) => self.on_cmd(cmd),
                    None => return, // the simulation is over
                },
                _ = tick.tick(), if !self.ready => {}
            }
            self.check_ready();
        }
    }

    fn on_cmd(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Dial(addr) => {
                if let Err(e) = self.swarm.dial(addr) {
                    warn_node(self.index, &format!("dial failed: {e}"));
                }
            }
            Cmd::Expect(peers) => self.expect = Some(peers),
            Cmd::Publish(bytes, reply) => {
                let at = Instant::now();
                let r = self.swarm.behaviour_mut().publish(self.topic.clone(), bytes);
                let _ = reply.send(r.map(|_| at).map_err(|e| e.to_string()));
            }
            Cmd::Score(peer, reply) => {
                let _ = reply.send(self.swarm.behaviour().peer_score(&peer));
            }
        }
    }

    fn on_event(&mut self, event: SwarmEvent<gossipsub::Event>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } if !self.listening => {
                self.listening = true;
                let _ = self.reports.send(Report::Listening(self.index, address));
            }
            SwarmEvent::Behaviour(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            }) => {
                let at = Instant::now();
                // What the node does with a gossiped release: check the
                // envelope's shape, then the signature over the bytes as
                // received, for this federation.
                let accepted = Signed::decode(&message.data)
                    .and_then(|s| s.verify::<pb::Release>(&self.fed))
                    .is_ok();
                let verdict = if accepted {
                    MessageAcceptance::Accept
                } else {
                    MessageAcceptance::Reject
                };
                self.swarm
                    .behaviour_mut()
                    .report_message_validation_result(&message_id, &propagation_source, verdict);
                let _ = self.reports.send(Report::Delivered(Delivery {
                    node: self.index,
                    record: RecordId::of(&message.data),
                    accepted,
                    at,
                    from: propagation_source,
                }));
            }
            _ => {}
        }
    }

    /// Ready: every expected neighbour is connected and subscribed to the
    /// records topic, and this node's records mesh is not empty.
    fn check_ready(&mut self) {
        if self.ready {
            return;
        }
        let Some(expect) = &self.expect else {
            return;
        };
        let gs = self.swarm.behaviour();
        let subscribed: HashSet<&PeerId> = gs
            .all_peers()
            .filter(|(_, topics)| topics.contains(&&self.topic))
            .map(|(p, _)| p)
            .collect();
        if expect.iter().all(|p| subscribed.contains(p)) && gs.mesh_peers(&self.topic).next().is_some() {
            self.ready = true;
            let _ = self.reports.send(Report::Ready(self.index));
        }
    }
}

/// Dial errors are rare (memory transport) and not fatal: readiness then
/// times out and says which node was not ready.
fn warn_node(node: usize, msg: &str) {
    eprintln!("sim node {node}: {msg}");
}

/// A running simulation. Dropping it stops every node.
pub struct Sim {
    /// The simulated federation (the records carry its id in their signatures).
    pub fed: FederationId,
    /// Time from the first dial until every node was ready.
    pub connect_time: Duration,
    peers: Vec<PeerId>,
    neighbours: Vec<Vec<usize>>,
    cmds: Vec<mpsc::UnboundedSender<Cmd>>,
    reports: mpsc::UnboundedReceiver<Report>,
    deliveries: Vec<Delivery>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    rng: XorShift,
}

impl Drop for Sim {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Sim {
    /// Starts `n` nodes, connects them (seeded topology) and waits until
    /// every node is ready to gossip (see [`NodeTask::check_ready`]).
    pub async fn start(n: usize, seed: u64) -> Result<Sim> {
        if n < 2 {
            bail!("a simulation needs at least two nodes");
        }
        let mut rng = XorShift::new(seed);
        let fed = FederationId::of(format!("packfed simulation genesis, seed {seed}").as_bytes());
        let names = Names::new(&fed);
        let (report_tx, mut reports) = mpsc::unbounded_channel();
        let mut peers = Vec::with_capacity(n);
        let mut cmds = Vec::with_capacity(n);
        let mut tasks = Vec::with_capacity(n);
        for index in 0..n {
            let key = identity::Keypair::ed25519_from_bytes(rng.bytes32()).context("node key")?;
            peers.push(key.public().to_peer_id());
            let mut swarm = build_swarm(key, &names)?;
            swarm.listen_on("/memory/0".parse()?)?;
            let (tx, rx) = mpsc::unbounded_channel();
            cmds.push(tx);
            let task = NodeTask {
                index,
                swarm,
                topic: names.records_topic.hash(),
                fed,
                expect: None,
                ready: false,
                listening: false,
                reports: report_tx.clone(),
            };
            tasks.push(tokio::spawn(task.run(rx)));
        }
        drop(report_tx);

        let deadline = tokio::time::Instant::now() + DEADLINE;
        let mut addrs: Vec<Option<Multiaddr>> = vec![None; n];
        let mut missing = n;
        while missing > 0 {
            match recv_by(&mut reports, deadline).await? {
                Some(Report::Listening(i, addr)) => {
                    addrs[i] = Some(addr.with(Protocol::P2p(peers[i])));
                    missing -= 1;
                }
                Some(_) => {}
                None => bail!("timed out after {DEADLINE:?} waiting for {missing} nodes to listen"),
            }
        }

        let dials = topology(n, DEGREE, &mut rng);
        let neighbours = neighbours(&dials);
        let started = Instant::now();
        for (i, list) in neighbours.iter().enumerate() {
            let expect = list.iter().map(|&j| peers[j]).collect();
            let _ = cmds[i].send(Cmd::Expect(expect));
        }
        for (i, targets) in dials.iter().enumerate() {
            for &j in targets {
                let addr = addrs[j].clone().context("listen address")?;
                let _ = cmds[i].send(Cmd::Dial(addr));
            }
        }
        let deadline = tokio::time::Instant::now() + DEADLINE;
        let mut ready = vec![false; n];
        while ready.iter().any(|r| !r) {
            match recv_by(&mut reports, deadline).await? {
                Some(Report::Ready(i)) => ready[i] = true,
                Some(_) => {}
                None => {
                    let not_ready: Vec<usize> = (0..n).filter(|&i| !ready[i]).collect();
                    bail!("timed out after {DEADLINE:?} waiting for nodes {not_ready:?} to join the records mesh");
                }
            }
        }
        Ok(Sim {
            fed,
            connect_time: started.elapsed(),
            peers,
            neighbours,
            cmds,
            reports,
            deliveries: Vec::new(),
            tasks,
            rng,
        })
    }

    pub fn len(&self) -> usize {
        self.peers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    pub fn peer_id(&self, node: usize) -> libp2p::PeerId {
        self.peers[node]
    }

    /// The nodes directly connected to `node`.
    pub fn neighbours(&self, node: usize) -> &[usize] {
        &self.neighbours[node]
    }

    /// A node picked by the simulation's seeded generator.
    pub fn pick(&mut self) -> usize {
        self.rng.below(self.len())
    }

    /// Every delivery seen so far (call [`Sim::wait`] to see more).
    pub fn deliveries(&self) -> &[Delivery] {
        &self.deliveries
    }

    /// Publishes `bytes` on the records topic from `node`; returns the time
    /// of the publish.
    pub async fn publish(&mut self, node: usize, bytes: Vec<u8>) -> Result<Instant> {
        let (tx, rx) = oneshot::channel();
        self.cmds[node]
            .send(Cmd::Publish(bytes, tx))
            .map_err(|_| anyhow!("node {node} stopped"))?;
        rx.await
            .map_err(|_| anyhow!("node {node} stopped"))?
            .map_err(|e| anyhow!("node {node} could not publish: {e}"))
    }

    /// `node`'s gossipsub score of node `of`.
    pub async fn score(&self, node: usize, of: usize) -> Result<Option<f64>> {
        let (tx, rx) = oneshot::channel();
        self.cmds[node]
            .send(Cmd::Score(self.peers[of], tx))
            .map_err(|_| anyhow!("node {node} stopped"))?;
        rx.await.map_err(|_| anyhow!("node {node} stopped"))
    }

    /// Collects deliveries until `done(deliveries)` holds or `deadline` passes.
    pub async fn wait(
        &mut self,
        deadline: Duration,
        what: &str,
        mut done: impl FnMut(&[Delivery]) -> bool,
    ) -> Result<()> {
        let until = tokio::time::Instant::now() + deadline;
        while !done(&self.deliveries) {
            match recv_by(&mut self.reports, until).await? {
                Some(Report::Delivered(d)) => self.deliveries.push(d),
                Some(_) => {}
                None => bail!("timed out after {deadline:?} waiting for {what}"),
            }
        }
        Ok(())
    }

    /// Waits until every node but `publisher` has accepted `record`; returns
    /// the latencies from `published`, sorted.
    pub async fn wait_everywhere(
        &mut self,
        record: RecordId,
        publisher: usize,
        published: Instant,
    ) -> Result<Vec<Duration>> {
        let n = self.len();
        let accepted_by = |ds: &[Delivery]| {
            ds.iter()
                .filter(|d| d.record == record && d.accepted && d.node != publisher)
                .count()
        };
        self.wait(DEADLINE, "every node to accept the record", |ds| {
            accepted_by(ds) >= n - 1
        })
        .await?;
        let mut latencies: Vec<Duration> = self
            .deliveries
            .iter()
            .filter(|d| d.record == record && d.accepted)
            .map(|d| d.at.saturating_duration_since(published))
            .collect();
        latencies.sort_unstable();
        Ok(latencies)
    }
}

/// The next report, or None once `deadline` passed; an error if every node
/// has stopped.
async fn recv_by(
    reports: &mut mpsc::UnboundedReceiver<Report>,
    deadline: tokio::time::Instant,
) -> Result<Option<Report>> {
    match tokio::time::timeout_at(deadline, reports.recv()).await {
        Ok(Some(r)) => Ok(Some(r)),
        Ok(None) => bail!("every simulated node has stopped"),
        Err(_) => Ok(None),
    }
}

/// A signed release record of federation `fed`, from a publisher key drawn
/// from `seed`.
pub fn release(fed: &FederationId, seed: u64, name: &str, version: &str) -> Signed {
    let mut rng = XorShift::new(seed.rotate_left(17) ^ 0xA5A5_A5A5);
    let key = KeyPair::from_seed(rng.bytes32());
    let content = format!("archive of {name}@{version}");
    let record = pb::Release {
        name: name.to_string(),
        version: version.to_string(),
        content_hash: ContentHash::of(content.as_bytes()).0.to_vec(),
        size: content.len() as u64,
        description: format!("{name}, published in a simulation"),
        license: "MIT".into(),
        keywords: vec!["sim".into()],
        category: "web".into(),
        authors: vec!["Sim <sim@example.test>".into()],
        published_at_ms: 1_700_000_000_000 + seed,
        ..Default::default()
    };
    Signed::sign(&record, &key, fed)
}

/// The record with its content hash swapped for an attacker's, the
/// signature left as it was: a well-formed envelope that must not verify.
pub fn forge(record: &Signed) -> Result<Vec<u8>> {
    use prost::Message;
    let mut env = record.to_pb();
    let mut release = pb::Release::decode(env.payload.as_slice()).context("not a release")?;
    release.content_hash = ContentHash::of(b"the attacker's archive").0.to_vec();
    env.payload = release.encode_to_vec();
    Ok(Signed::from_pb(env)?.encoded().to_vec())
}

/// What [`run`] measured.
#[derive(Debug, Clone)]
pub struct SimReport {
    pub nodes: usize,
    /// The node that published.
    pub publisher: usize,
    /// From the first dial until every node had joined the records mesh.
    pub connect_time: Duration,
    /// Publish-to-accept time at every other node, sorted.
    pub latencies: Vec<Duration>,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl std::fmt::Display for SimReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} nodes: connected in {:.2?}; release from node {} reached all {} others: p50 {:.2?}, p99 {:.2?}, max {:.2?}",
            self.nodes,
            self.connect_time,
            self.publisher,
            self.latencies.len(),
            self.p50,
            self.p99,
            self.max
        )
    }
}

/// Nearest-rank percentile of sorted durations (`p` in 0..=100).
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Starts `n` nodes, publishes one signed release from a seeded node and
/// measures how long it takes to be accepted everywhere.
pub async fn run(n: usize, seed: u64) -> Result<SimReport> {
    let mut sim = Sim::start(n, seed).await?;
    let publisher = sim.pick();
    let record = release(&sim.fed, seed, "sim/rest-api", "1.0.0");
    let published = sim.publish(publisher, record.encoded().to_vec()).await?;
    let latencies = sim.wait_everywhere(record.id(), publisher, published).await?;
    if let Some(d) = sim.deliveries().iter().find(|d| !d.accepted) {
        bail!("node {} rejected a valid release", d.node);
    }
    Ok(SimReport {
        nodes: n,
        publisher,
        connect_time: sim.connect_time,
        p50: percentile(&latencies, 50.0),
        p99: percentile(&latencies, 99.0),
        max: latencies.last().copied().unwrap_or_default(),
        latencies,
    })
}
