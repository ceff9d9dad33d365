//! Per-event CPU costs on the producer's side: leaf hashing and schema validation, and the
//! syslog listener's per-message work: before messages were stored once (parse, map to an
//! audit event, then the engine's check and leaf hash of that event) and since (the check
//! before storing, the leaf hash of the version 3 record; deriving the event when read).

use std::hint::black_box;
use std::time::Duration;

use auditlog_benches::event;
use auditlog_formats::record::{PayloadKind, Record};
use auditlog_formats::schema::{validate, SchemaMode};
use auditlog_formats::syslog;
use auditlog_formats::TreeHash;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn leaf_hash(c: &mut Criterion) {
    let mut g = c.benchmark_group("leaf_hash");
    for bytes in [64usize, 256] {
        let record = vec![0x5au8; bytes];
        g.throughput(Throughput::Bytes(bytes as u64));
        for (name, alg) in [("sha256", TreeHash::Sha256), ("blake3", TreeHash::Blake3)] {
            g.bench_with_input(BenchmarkId::new(name, bytes), &record, |b, r| {
                b.iter(|| alg.leaf(black_box(r)))
            });
        }
    }
    g.finish();

    let mut g = c.benchmark_group("node_hash");
    let (l, r) = ([1u8; 32], [2u8; 32]);
    for (name, alg) in [("sha256", TreeHash::Sha256), ("blake3", TreeHash::Blake3)] {
        g.bench_function(name, |b| b.iter(|| alg.node(black_box(&l), black_box(&r))));
    }
    g.finish();
}

fn schema(c: &mut Criterion) {
    let mut g = c.benchmark_group("schema_validate");
    let payload = event(42, 256);
    assert_eq!(payload.len(), 256);
    g.throughput(Throughput::Bytes(payload.len() as u64));
    g.bench_function("audit_256B", |b| {
        b.iter(|| validate(black_box(&payload), SchemaMode::Audit).expect("valid event"))
    });
    g.bench_function("raw_256B", |b| {
        b.iter(|| validate(black_box(&payload), SchemaMode::Raw).expect("valid object"))
    });
    g.finish();
}

/// The message loadgen's `--protocol syslog` sends: an RFC 3164 line carrying a 256-byte
/// audit event as its text.
fn syslog_message(c: &mut Criterion) {
    let mut raw = b"<134>Nov 23 10:00:00 host app: ".to_vec();
    raw.extend_from_slice(&event(42, 256));
    let now = 1_795_428_000_000_000_000u64;
    let peer = Some("127.0.0.1".parse().expect("ip"));
    let mut g = c.benchmark_group("syslog");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse", |b| {
        b.iter(|| syslog::parse(black_box(&raw), now).expect("parse"))
    });
    let m = syslog::parse(&raw, now).expect("parse");
    let mut out = Vec::with_capacity(4096);
    g.bench_function("map", |b| {
        b.iter(|| {
            out.clear();
            syslog::write_audit_event(black_box(&m), &raw, now, peer, &mut out).expect("map")
        })
    });
    out.clear();
    syslog::write_audit_event(&m, &raw, now, peer, &mut out).expect("map");
    eprintln!(
        "syslog: a {}-byte message maps to a {}-byte event",
        raw.len(),
        out.len()
    );
    g.bench_function("validate_mapped", |b| {
        b.iter(|| validate(black_box(&out), SchemaMode::Audit).expect("valid"))
    });
    g.bench_function("leaf_hash_mapped", |b| {
        b.iter(|| TreeHash::Sha256.leaf(black_box(&out)))
    });
    // Since messages are stored once (record version 3): the listener's whole check, the
    // leaf hash of the record, and what a reader pays to derive the event.
    g.bench_function("check_to_store", |b| {
        b.iter(|| syslog::check_to_store(black_box(&raw), now, peer).expect("valid"))
    });
    let record = Record {
        received_at_unix_ns: now,
        submitter: Some("syslog:127.0.0.1"),
        kind: PayloadKind::Syslog,
        payload: &raw,
    }
    .to_bytes();
    eprintln!(
        "syslog: stored once, as a {}-byte record (the mapped event's record: {} bytes)",
        record.len(),
        record.len() - raw.len() + out.len()
    );
    g.bench_function("leaf_hash_record_v3", |b| {
        b.iter(|| TreeHash::Sha256.leaf(black_box(&record)))
    });
    g.bench_function("event_json_v3", |b| {
        b.iter(|| {
            Record::parse(black_box(&record))
                .and_then(|r| r.event_json().map(|e| e.len()))
                .expect("event")
        })
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
}

criterion_group! {
    name = benches;
    config = config();
    targets = leaf_hash, schema, syslog_message
}
criterion_main!(benches);
