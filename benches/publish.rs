//! Criterion bench of the publish pipeline (pack, hash, sign, store, flush)
//! for 10 KiB, 1 MiB and 50 MiB packs, beside raw BLAKE3 and a bare sled
//! insert + flush of the same bytes.

mod pipeline;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use packfed_node::store::Store;
use packfed_protocol::{FederationId, KeyPair};
use packfed_testnet::make_pack;

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("publish");
    group.sample_size(10);
    for (label, size) in [("10KiB", 10 * 1024), ("1MiB", 1024 * 1024), ("50MiB", 50 * 1024 * 1024)] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pack");
        make_pack(&dir, "bench/pack", "1.0.0", &[], size).unwrap();
        let bytes = pipeline::archive_bytes(&dir);
        group.throughput(Throughput::Bytes(bytes.len() as u64));

        let store = Store::open(&tmp.path().join("store")).unwrap();
        let fed = FederationId([1; 32]);
        let key = KeyPair::generate().unwrap();
        let mut n = 0u64;
        // Only the pipeline is timed; rewriting pack.toml between publishes is not.
        group.bench_function(BenchmarkId::new("pipeline", label), |b| {
            b.iter_custom(|iters| {
                let mut spent = std::time::Duration::ZERO;
                for _ in 0..iters {
                    n += 1;
                    pipeline::set_version(&dir, &format!("1.0.{n}"));
                    let t = std::time::Instant::now();
                    std::hint::black_box(pipeline::publish_dir(&store, &fed, &key, &dir));
                    spent += t.elapsed();
                }
                spent
            })
        });
        group.bench_function(BenchmarkId::new("blake3", label), |b| b.iter(|| blake3::hash(&bytes)));
        let db = sled::open(tmp.path().join("bare")).unwrap();
        let tree = db.open_tree("t").unwrap();
        let mut p = 0u64;
        group.bench_function(BenchmarkId::new("sled_insert_flush", label), |b| {
            b.iter(|| {
                p += 1;
                pipeline::sled_insert_flush(&tree, &db, p, &bytes)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
