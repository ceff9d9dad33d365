//! Inclusion and consistency proofs served by the engine from its hash store.
//!
//! Under `cargo bench` the log has 10^7 leaves, built once into
//! `target/bench-data/proofs-1e7` and reused while its tree size is right (building it takes
//! a minute or so). Under `cargo test --benches` (no `--bench` argument: criterion runs each
//! benchmark once) a 10^4-leaf log is used instead, so tests stay quick.

use std::hint::black_box;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use auditlog_benches::{bench_data_root, run_load};
use auditlog_engine::{Engine, EngineConfig};
use auditlog_formats::schema::SchemaMode;
use criterion::{criterion_group, criterion_main, Criterion};
use rand::{Rng, SeedableRng};

fn benchmarking() -> bool {
    std::env::args().any(|a| a == "--bench")
}

fn config(dir: &Path) -> EngineConfig {
    let mut c = EngineConfig::new(dir);
    c.schema = SchemaMode::Raw;
    // Small segments: the engine keeps one zero-filled segment ready besides the open one,
    // so big segments would cost gigabytes of zeros for a log of a few hundred MB.
    c.segment_bytes = if benchmarking() { 64 << 20 } else { 8 << 20 };
    c
}

/// Opens the log in `dir`, appending tiny `{"i":N}` events until it has `size` leaves (a
/// log that is too big is rebuilt), and waits for a checkpoint covering all of it.
fn open_log(dir: &Path, size: u64) -> Engine {
    let mut engine = Engine::open(config(dir), None).expect("open proofs log");
    if engine.tree_size() > size {
        drop(engine);
        std::fs::remove_dir_all(dir).expect("remove oversized proofs log");
        engine = Engine::open(config(dir), None).expect("create proofs log");
    }
    let have = engine.tree_size();
    if have < size {
        let t = Instant::now();
        let pools: Vec<Vec<Vec<u8>>> = (0..2u64)
            .map(|p| {
                (0..65536u64)
                    .map(|i| format!(r#"{{"i":{}}}"#, p * 65536 + i).into_bytes())
                    .collect()
            })
            .collect();
        let load = run_load(&engine, &pools, size - have, 16384, 16);
        assert!(
            load.error.is_none(),
            "building proofs log: {:?}",
            load.error
        );
        eprintln!(
            "proofs: built {} leaves in {} in {:.1} s",
            size - have,
            dir.display(),
            t.elapsed().as_secs_f64()
        );
    }
    assert_eq!(engine.tree_size(), size);
    engine
        .wait_checkpoint(size, Duration::from_secs(120))
        .expect("checkpoint covering the whole log");
    engine
}

fn proofs(c: &mut Criterion) {
    let (size, name) = if benchmarking() {
        (10_000_000u64, "proofs-1e7")
    } else {
        (10_000u64, "proofs-test-1e4")
    };
    let dir = bench_data_root().join(name);
    std::fs::create_dir_all(&dir).expect("bench data dir");
    let engine = open_log(&dir, size);

    let mut rng = rand::rngs::StdRng::seed_from_u64(9162);
    let indices: Vec<u64> = (0..4096).map(|_| rng.gen_range(0..size)).collect();
    let olds: Vec<u64> = (0..4096).map(|_| rng.gen_range(1..size)).collect();
    let next = AtomicUsize::new(0);
    let pick = |v: &[u64]| v[next.fetch_add(1, Ordering::Relaxed) % v.len()];

    let mut g = c.benchmark_group(name);
    g.bench_function("prove_inclusion", |b| {
        b.iter(|| {
            engine
                .prove_inclusion(black_box(pick(&indices)), size)
                .expect("inclusion proof")
        })
    });
    g.bench_function("prove_consistency", |b| {
        b.iter(|| {
            engine
                .prove_consistency(black_box(pick(&olds)), size)
                .expect("consistency proof")
        })
    });
    // Inclusion proofs asked for by leaf hash start with this lookup (the leaf-hash index).
    let leaves: Vec<_> = indices
        .iter()
        .take(1024)
        .map(|&i| (engine.leaf_hash(i).expect("leaf hash"), i))
        .collect();
    let at = AtomicUsize::new(0);
    g.bench_function("index_of_leaf", |b| {
        b.iter(|| {
            let (leaf, i) = &leaves[at.fetch_add(1, Ordering::Relaxed) % leaves.len()];
            let found = engine.index_of_leaf(black_box(leaf), size).expect("lookup");
            assert!(found.is_some_and(|f| f <= *i), "leaf {i}");
        })
    });
    g.finish();
    engine.shutdown().expect("clean shutdown");
}

fn criterion_config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = criterion_config();
    targets = proofs
}
criterion_main!(benches);
