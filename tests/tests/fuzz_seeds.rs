//! Writes the fuzz targets' seed corpora, `formats/fuzz/seeds/<target>/`, from what a real
//! engine writes on a temp dir (a batch, a sealed segment and its blocks, a leaf-index run,
//! a signed checkpoint) and from the encoders the daemon uses on the wire (TCP frames,
//! forwarded syslog). Random input rarely passes a magic number, a length or a checksum;
//! starting from real files, the fuzzer mutates its way into the decoders' deep paths.
//!
//! Re-run after a format changes (it replaces the seed files):
//! `cargo test -p auditlog-tests --test fuzz_seeds -- --ignored`

use std::path::{Path, PathBuf};
use std::time::Duration;

use auditlog_engine::{Engine, Submitter};
use auditlog_formats::batch::{self, Entries};
use auditlog_formats::record::Record;
use auditlog_formats::segment::{self, SegmentHeader, HEADER_BYTES, TRAILER_BYTES};
use auditlog_formats::syslog::{write_rfc5424, Rfc5424Header};
use auditlog_formats::{frame, layout};
use auditlog_tests::{event, small_config};

/// Seed files are kept small: libFuzzer's inputs grow from them.
const SEED_BYTES_MAX: usize = 16 << 10;

struct Seeds {
    root: PathBuf,
}

impl Seeds {
    /// Empties `root/<target>` for each target, so a re-run leaves no stale seed behind.
    fn new(root: PathBuf, targets: &[&str]) -> Seeds {
        for t in targets {
            let dir = root.join(t);
            if dir.exists() {
                std::fs::remove_dir_all(&dir).expect("remove old seeds");
            }
            std::fs::create_dir_all(&dir).expect("seed dir");
        }
        Seeds { root }
    }

    fn put(&self, target: &str, name: &str, bytes: &[u8]) {
        assert!(
            bytes.len() <= SEED_BYTES_MAX,
            "{target}/{name}: {} bytes",
            bytes.len()
        );
        std::fs::write(self.root.join(target).join(name), bytes).expect("write seed");
    }
}

fn files_in(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    out.sort();
    out
}

fn print_tree(root: &Path, dir: &Path) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .collect();
    entries.sort();
    for p in entries {
        let len = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        println!(
            "{} {len}",
            p.strip_prefix(root).expect("under root").display()
        );
        if p.is_dir() {
            print_tree(root, &p);
        }
    }
}

/// Waits up to 10 s for `f` to hold.
fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
#[ignore = "writes formats/fuzz/seeds; run by hand when a format changes"]
fn write_fuzz_seeds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../formats/fuzz/seeds");
    let seeds = Seeds::new(
        root,
        &[
            "batch",
            "segment",
            "block",
            "columnar",
            "leafindex",
            "record",
            "note",
            "schema",
            "frame",
            "syslog",
        ],
    );

    // Sealed by age after a few small batches, in tiny blocks: a sealed segment of a few
    // blocks is a few KiB (the smallest segment size holds two 128 KiB batches).
    let dir = tempfile::tempdir().expect("tmp");
    let mut cfg = small_config(dir.path());
    cfg.seal_age_ms = 400;
    cfg.block_raw_bytes = 1 << 10;
    let engine = Engine::open(cfg, None).expect("open");
    let mut n = 0u64;
    let mut append = |engine: &Engine, events: u64, bytes: usize| {
        let mut b = engine.new_batch(Submitter::token("seed-writer"));
        for _ in 0..events {
            b.add(&event(n, bytes)).expect("valid event");
            n += 1;
        }
        engine.append(b).expect("append");
    };
    for _ in 0..3 {
        append(&engine, 4, 220);
    }
    let data = dir.path();
    let seg_dir = data.join(layout::SEGMENTS_DIR);

    // The open segment before it is sealed: its first two batches, and the records of the
    // first.
    let open = files_in(&seg_dir, ".open");
    let bytes = std::fs::read(&open[0]).expect("read open");
    let mut at = 0;
    for i in 0..2 {
        let (h, body) = batch::decode_batch(&bytes[at..]).expect("a batch");
        let name = format!("batch-{i}");
        seeds.put("batch", &name, &bytes[at..at + h.total_bytes()]);
        if i == 0 {
            let rec = Entries::new(body).next().expect("a record").expect("valid");
            seeds.put("record", "v2", rec);
            let parsed = Record::parse(rec).expect("record");
            seeds.put("schema", "event", parsed.payload);
            // The version without a submitter, as logs from before submitters hold.
            let v1 = Record {
                submitter: None,
                ..parsed
            };
            let mut b = Vec::new();
            v1.encode_into(&mut b);
            seeds.put("record", "v1", &b);
            // A syslog message stored once, as the listener writes it.
            let v3 = Record {
                submitter: Some("syslog:192.0.2.7"),
                kind: auditlog_formats::record::PayloadKind::Syslog,
                payload: b"<34>1 2026-11-23T10:00:00Z web1 su - ID47 [m@1 a=\"b\"] failed",
                ..parsed
            };
            seeds.put("record", "v3", &v3.to_bytes());
        }
        at += h.total_bytes();
    }

    // Past the seal age, one more batch: the first segment is sealed.
    std::thread::sleep(Duration::from_millis(500));
    append(&engine, 1, 220);
    wait_for("a sealed segment", || engine.status().sealed_segments >= 1);
    let size = engine.tree_size();
    let cp = engine
        .wait_checkpoint(size, Duration::from_secs(10))
        .expect("checkpoint");
    seeds.put("note", "checkpoint", cp.note.as_bytes());

    let sealed = files_in(&seg_dir, ".seg");
    let seg = std::fs::read(&sealed[0]).expect("read sealed segment");
    seeds.put("segment", "sealed", &seg);
    let header = SegmentHeader::decode(&seg[..HEADER_BYTES]).expect("header");
    let trailer = segment::decode_trailer(seg.len() as u64, &seg[seg.len() - TRAILER_BYTES..])
        .expect("trailer");
    let (at, end) = (
        trailer.footer_offset as usize,
        (trailer.footer_offset + trailer.footer_bytes as u64) as usize,
    );
    let footer = segment::decode_footer(&header, &trailer, &seg[at..end]).expect("footer");
    assert!(footer.blocks.len() >= 2, "a segment of several blocks");
    for (i, b) in footer.blocks.iter().take(2).enumerate() {
        let (o, c) = (b.offset as usize, b.compressed_bytes as usize);
        let raw = segment::decode_block(i as u32, b, &seg[o..o + c]).expect("block");
        seeds.put("block", &format!("block-{i}"), &raw);
        seeds.put("columnar", &format!("coded-{i}"), &seg[o..o + c]);
    }
    if !footer.checkpoint_note.is_empty() {
        seeds.put("note", "footer", footer.checkpoint_note.as_bytes());
    }

    let runs_dir = data.join(layout::LEAF_INDEX_DIR);
    wait_for("a leaf-index run", || {
        !files_in(&runs_dir, ".run").is_empty()
    });
    let run = std::fs::read(&files_in(&runs_dir, ".run")[0]).expect("read run");
    seeds.put("leafindex", "run", &run);
    drop(engine);
    // What the engine wrote, for FORMATS.md §3's listing (shown with `--nocapture`).
    print_tree(data, data);

    // The TCP protocol, as the client and the server encode it.
    let mut events = vec![0u8; 4];
    frame::push_batch_event(&mut events, &event(1, 120));
    frame::push_batch_event(&mut events, &event(2, 60));
    let hello_ok = frame::HelloOk {
        version: frame::PROTOCOL_VERSION,
        tree_hash: 1,
        frame_bytes_max: 1 << 20,
        batches_in_flight_max: 8,
        submitter: Some("token:seed-writer".into()),
    };
    let ack = frame::ack_payload(7, 1_795_428_000_000_000_000, &[[3u8; 32], [4u8; 32]]);
    let err = frame::error_payload(frame::ErrorCode::Busy, "busy");
    for (name, t, p) in [
        (
            "hello",
            frame::FrameType::Hello,
            frame::hello_payload("tok-1"),
        ),
        ("batch", frame::FrameType::Batch, events),
        ("hello-ok", frame::FrameType::HelloOk, hello_ok.encode()),
        ("ack", frame::FrameType::Ack, ack),
        ("error", frame::FrameType::Error, err),
    ] {
        seeds.put("frame", name, &frame::frame(t, 5, &p));
    }

    // Syslog: the first byte is where the target cuts the stream. One octet-counted RFC
    // 5424 message as the forwarder writes it, one RFC 3164 line ended by a newline.
    let mut stream = vec![40u8];
    let h = Rfc5424Header {
        facility: 13,
        severity: 5,
        timestamp: "2026-11-23T10:00:00.123456Z",
        hostname: "auditlog-1",
        app_name: "auditlogd",
        procid: "-",
        msgid: "CEF",
    };
    write_rfc5424(
        &mut stream,
        &h,
        "CEF:0|auditlog|auditlogd|1|auth|login|3|suser=alice outcome=success",
    );
    stream.extend_from_slice(b"<34>Oct 11 22:14:15 mymachine su: 'su root' failed on /dev/pts/8\n");
    seeds.put("syslog", "stream", &stream);
}
