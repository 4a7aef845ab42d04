//! Gossip latency of the in-process simulation: `cargo bench --bench sim`
//! runs 50 and 200 nodes; `cargo bench --bench sim -- 500` picks the sizes.
//! Prints connect time and publish-to-accept p50 / p99 / max per size.

use packfed_testnet::sim;

fn main() -> anyhow::Result<()> {
    let mut sizes: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    if sizes.is_empty() {
        sizes = vec![50, 200];
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    for n in sizes {
        let report = rt.block_on(sim::run(n, 1))?;
        println!("sim/{n}: {report}");
    }
    Ok(())
}
