//! The in-process gossip simulation (testnet/src/sim.rs): many libp2p
//! swarms over the memory transport, each validating what it receives the
//! way a node does.

use packfed_testnet::sim::{self, DEADLINE, Sim};

const N: usize = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_release_reaches_every_one_of_50_nodes() {
    let report = sim::run(N, 7).await.unwrap();
    eprintln!("{report}");
    assert_eq!(report.nodes, N);
    // Every node but the publisher accepted it, each once.
    assert_eq!(report.latencies.len(), N - 1);
    assert!(report.latencies.windows(2).all(|w| w[0] <= w[1]));
    assert!(report.p50 <= report.p99 && report.p99 <= report.max);
    assert_eq!(report.max, *report.latencies.last().unwrap());
    assert!(report.max < DEADLINE, "slowest node took {:?}", report.max);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_release_is_rejected_by_the_publishers_neighbours_and_goes_no_further() {
    let mut sim = Sim::start(N, 11).await.unwrap();
    let attacker = sim.pick();
    let neighbours = sim.neighbours(attacker).to_vec();
    assert!(!neighbours.is_empty());

    let genuine = sim::release(&sim.fed, 11, "acme/rest-api", "1.0.0");
    let forged = sim::forge(&genuine).unwrap();
    let forged_id = packfed_protocol::RecordId::of(&forged);
    sim.publish(attacker, forged).await.unwrap();

    // Every direct neighbour receives it and rejects it.
    sim.wait(DEADLINE, "the attacker's neighbours to judge the forgery", |ds| {
        neighbours
            .iter()
            .all(|n| ds.iter().any(|d| d.node == *n && d.record == forged_id))
    })
    .await
    .unwrap();
    // The rejection costs the attacker its score with each of them (the
    // invalid-delivery penalty is -100, below the publish threshold of -50).
    for &n in &neighbours {
        let score = sim.score(n, attacker).await.unwrap().unwrap();
        assert!(score < -50.0, "node {n} scores the attacker {score}");
    }

    // A genuine release from another node then reaches everyone else: the
    // network is live, and it had every chance to carry the forgery too.
    let honest = (attacker + 1) % N;
    let record = sim::release(&sim.fed, 12, "acme/http-core", "2.0.0");
    let published = sim.publish(honest, record.encoded().to_vec()).await.unwrap();
    let record_id = record.id();
    sim.wait(DEADLINE, "the genuine release to reach every other node", |ds| {
        (0..N)
            .filter(|&n| n != honest && n != attacker)
            .all(|n| ds.iter().any(|d| d.node == n && d.record == record_id && d.accepted))
    })
    .await
    .unwrap();
    let slowest = sim
        .deliveries()
        .iter()
        .filter(|d| d.record == record_id)
        .map(|d| d.at.duration_since(published))
        .max()
        .unwrap();
    assert!(slowest < DEADLINE);

    // The forgery: seen only by the attacker's neighbours, accepted by none.
    let forged_seen: Vec<_> = sim.deliveries().iter().filter(|d| d.record == forged_id).collect();
    assert!(forged_seen.iter().all(|d| !d.accepted), "a node accepted the forgery");
    let mut seen_by: Vec<usize> = forged_seen.iter().map(|d| d.node).collect();
    seen_by.sort_unstable();
    assert_eq!(seen_by, neighbours, "the forgery went past the attacker's neighbours");
    assert!(forged_seen.iter().all(|d| d.from == sim.peer_id(attacker)));
}

/// The swarm planner in a flash crowd of 100 simulated nodes (testnet's
/// `swarm_sim`: the node's own `Plan`, a modelled network): everyone
/// completes, the crowd serves itself, and the origin uploads at most twice
/// the blob. (`cargo bench --bench swarm` runs it with a 128 MiB blob.)
#[test]
fn a_flash_crowd_of_100_simulated_nodes_costs_the_origin_at_most_twice_the_blob() {
    use packfed_testnet::swarm_sim::{Crowd, run};
    let crowd = |fetchers| Crowd {
        fetchers,
        pieces: 32,
        piece_bytes: 1 << 20,
        upload_rate: 50e6,
        latency: std::time::Duration::from_millis(1),
        seed: 9,
    };
    let lone = run(&crowd(1)).done[0];
    let r = run(&crowd(100));
    eprintln!("{r}; lone fetch {lone:?}");
    assert_eq!(r.done.len(), 100);
    assert!(r.origin_ratio() <= 2.0, "{r}");
    // Without peers serving each other the last node would wait for 100
    // copies from the origin.
    assert!(r.quantile(0.99) < lone * 20, "{r}; lone {lone:?}");
    let total: u64 = r.uploads.iter().sum();
    assert!(total >= 100 * r.pack_bytes, "every copy was uploaded by someone");
}
