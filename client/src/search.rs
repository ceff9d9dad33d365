//! `auditlog search [--since T1] [--until T2] [filters] [--limit N]`: the matching events,
//! found by the server's search index (`GET /v1/search`, cursors followed until the end or
//! `--limit`). `auditlog search --since T1 --until T2 [filters] --verify --key K`: the
//! events received in the window, fetched whole (as tlog-tiles entry bundles) and filtered
//! here. With `--verify`, the answer is provably every matching
//! event received in the window, trusting only the key: the checkpoint's signature; every
//! record of the window against the checkpoint's root with one range proof; the records
//! just outside the window (with inclusion proofs) received before `since` and at or after
//! `until`; and every receipt time in the window, never decreasing (FORMATS.md §4). A server
//! that leaves out, adds or alters one event of the window fails one of these.

use anyhow::{bail, Context};
use auditlog_formats::hash::from_hex;
use auditlog_formats::note;
use auditlog_formats::record::Record;
use auditlog_formats::search::{EventFields, Filter, SearchField};
use auditlog_formats::{tree, Hash, TreeHash};
use base64::Engine as _;
use serde_json::Value;

use crate::cli::{load_key, Conn};

#[derive(clap::Args, Debug)]
pub struct SearchArgs {
    /// Start of the receipt-time window (inclusive): RFC 3339 or Unix nanoseconds.
    #[arg(long)]
    pub since: Option<String>,
    /// End of the receipt-time window (exclusive): RFC 3339 or Unix nanoseconds.
    #[arg(long)]
    pub until: Option<String>,
    /// Check every record of the window and its boundaries against a checkpoint signed by
    /// --key (see the module note); needs --since and --until.
    #[arg(long, requires_all = ["key", "since", "until"])]
    pub verify: bool,
    /// The event's own `timestamp` from (inclusive) / until (exclusive).
    #[arg(long)]
    pub timestamp_since: Option<String>,
    #[arg(long)]
    pub timestamp_until: Option<String>,
    /// Events printed at most (without --verify).
    #[arg(long)]
    pub limit: Option<u64>,
    /// The log's verifier key (`name+keyid+base64` or @FILE), obtained out of band.
    #[arg(long, env = "AUDITLOG_VERIFIER_KEY")]
    pub key: Option<String>,
    /// Filters (all must match; `resource` also matches by prefix).
    #[arg(long)]
    pub actor: Option<String>,
    #[arg(long)]
    pub event_type: Option<String>,
    #[arg(long)]
    pub action: Option<String>,
    #[arg(long)]
    pub outcome: Option<String>,
    #[arg(long)]
    pub resource: Option<String>,
    #[arg(long)]
    pub classification: Option<String>,
    #[arg(long)]
    pub session_id: Option<String>,
    #[arg(long)]
    pub request_id: Option<String>,
    #[arg(long)]
    pub source_ip: Option<String>,
}

/// RFC 3339 (to the millisecond) or integer Unix nanoseconds.
pub fn parse_time(text: &str) -> anyhow::Result<u64> {
    auditlog_formats::time::parse_unix_ns(text)
        .with_context(|| format!("{text:?} is neither RFC 3339 nor Unix nanoseconds"))
}

/// What the server said about a window, as the checks need it.
pub struct WindowAnswer<'a> {
    pub since: u64,
    pub until: u64,
    pub size: u64,
    pub root: Hash,
    /// The window endpoint's JSON.
    pub window: &'a Value,
    /// The records `[start, end)` as the server sent them.
    pub records: &'a [Vec<u8>],
}

fn hashes(v: &Value, what: &str) -> anyhow::Result<Vec<Hash>> {
    v.as_array()
        .with_context(|| format!("{what} is not a list"))?
        .iter()
        .map(|h| {
            h.as_str()
                .and_then(from_hex)
                .with_context(|| format!("{what}: not a hash"))
        })
        .collect()
}

/// A boundary record: its bytes hash to its leaf, its proof leads to the root, and its
/// receipt time is what `ok` wants. Returns its index.
fn check_boundary(
    alg: TreeHash,
    w: &WindowAnswer<'_>,
    side: &str,
    ok: impl Fn(u64) -> bool,
) -> anyhow::Result<u64> {
    let b = &w.window[side];
    let index = b["index"]
        .as_u64()
        .with_context(|| format!("{side}: no index"))?;
    let record = base64::engine::general_purpose::STANDARD
        .decode(
            b["record"]
                .as_str()
                .with_context(|| format!("{side}: no record"))?,
        )
        .with_context(|| format!("{side}: record is not base64"))?;
    let r = Record::parse(&record).map_err(|e| anyhow::anyhow!("{side}: {e}"))?;
    let proof = hashes(&b["inclusion"], side)?;
    tree::verify_inclusion(alg, index, w.size, &alg.leaf(&record), &proof, &w.root)
        .map_err(|e| anyhow::anyhow!("{side} record {index}: {e}"))?;
    if !ok(r.received_at_unix_ns) {
        bail!(
            "{side} record {index} was received at {}, inside the window: the range is not the whole window",
            r.received_at_unix_ns
        );
    }
    Ok(index)
}

/// Every check of the module note; the error names the first that fails.
pub fn check_window(alg: TreeHash, w: &WindowAnswer<'_>) -> anyhow::Result<(u64, u64)> {
    let start = w.window["start"].as_u64().context("no start")?;
    let end = w.window["end"].as_u64().context("no end")?;
    if start > end || end > w.size {
        bail!(
            "range [{start}, {end}) is not in the tree of size {}",
            w.size
        );
    }
    if w.records.len() as u64 != end - start {
        bail!("{} records for the range [{start}, {end})", w.records.len());
    }
    // The boundaries: the record before received before `since`, the one after at or after
    // `until`; none only at the ends of the tree.
    if w.window["before"].is_null() {
        if start != 0 {
            bail!("no record before the range, which starts at {start}");
        }
    } else if check_boundary(alg, w, "before", |t| t < w.since)? + 1 != start {
        bail!(
            "the record before the range is not at {}",
            start.wrapping_sub(1)
        );
    }
    if w.window["after"].is_null() {
        if end != w.size {
            bail!(
                "no record after the range, which ends at {end} < {}",
                w.size
            );
        }
    } else if check_boundary(alg, w, "after", |t| t >= w.until)? != end {
        bail!("the record after the range is not at {end}");
    }
    // Every record of the range: in the window, in order, and in the tree (one proof).
    let threads = crate::verify::default_threads().get();
    let leaves = window_leaves(threads, alg, start, w.since, w.until, w.records)?;
    if start < end {
        let proof = hashes(&w.window["range_proof"], "range_proof")?;
        tree::verify_range(alg, start, end, w.size, &leaves, &proof, &w.root)
            .map_err(|e| anyhow::anyhow!("the window's records [{start}, {end}): {e}"))?;
    }
    Ok((start, end))
}

/// Runs `f(first index, chunk)` over `records` cut into a chunk per thread: the
/// results come back in the records' order.
fn in_chunks<T: Send>(
    threads: usize,
    start: u64,
    records: &[Vec<u8>],
    f: impl Fn(u64, &[Vec<u8>]) -> T + Sync,
) -> Vec<T> {
    let per = records.len().div_ceil(threads).max(1);
    if records.len() <= per {
        return vec![f(start, records)];
    }
    std::thread::scope(|s| {
        let workers: Vec<_> = records
            .chunks(per)
            .enumerate()
            .map(|(k, chunk)| {
                let f = &f;
                s.spawn(move || f(start + (k * per) as u64, chunk))
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

/// The leaf hashes of the records from index `start`, each checked to be a record
/// received in `[since, until)` no earlier than the one before it; the error names the
/// first record that is not. Hashed on `threads` threads: a window is millions of records.
fn window_leaves(
    threads: usize,
    alg: TreeHash,
    start: u64,
    since: u64,
    until: u64,
    records: &[Vec<u8>],
) -> anyhow::Result<Vec<Hash>> {
    // Each chunk checks its own records against the window and each other; where chunks
    // meet, the first of one against the last of the one before.
    let chunks = in_chunks(threads, start, records, |first, chunk| {
        let mut leaves = Vec::with_capacity(chunk.len());
        let (mut head, mut last) = (None, since);
        for (k, rec) in chunk.iter().enumerate() {
            let i = first + k as u64;
            let r = Record::parse(rec).map_err(|e| anyhow::anyhow!("record {i}: {e}"))?;
            let t = r.received_at_unix_ns;
            if t < last || t >= until {
                bail!(
                    "record {i} was received at {t}, outside the window or before the record before it"
                );
            }
            head.get_or_insert((i, t));
            last = t;
            leaves.push(alg.leaf(rec));
        }
        Ok((head, last, leaves))
    });
    let mut leaves = Vec::with_capacity(records.len());
    let mut last = since;
    for chunk in chunks {
        let (head, chunk_last, chunk_leaves) = chunk?;
        if let Some((i, t)) = head {
            if t < last {
                bail!(
                    "record {i} was received at {t}, outside the window or before the record before it"
                );
            }
        }
        last = chunk_last;
        leaves.extend(chunk_leaves);
    }
    Ok(leaves)
}

/// The filters given, as the server and the local check both read them (`resource`
/// matches by prefix).
fn filter(a: &SearchArgs) -> anyhow::Result<Filter> {
    let mut f = Filter::default();
    for (field, v) in [
        (SearchField::Actor, &a.actor),
        (SearchField::EventType, &a.event_type),
        (SearchField::Action, &a.action),
        (SearchField::Outcome, &a.outcome),
        (SearchField::Classification, &a.classification),
        (SearchField::SessionId, &a.session_id),
        (SearchField::RequestId, &a.request_id),
        (SearchField::SourceIp, &a.source_ip),
    ] {
        if let Some(v) = v {
            f.equals.push((field, v.clone()));
        }
    }
    f.resource_prefix = a.resource.clone();
    f.timestamp_since_unix_ns = a.timestamp_since.as_deref().map(parse_time).transpose()?;
    f.timestamp_until_unix_ns = a.timestamp_until.as_deref().map(parse_time).transpose()?;
    Ok(f)
}

/// The query of `GET /v1/search` for these arguments.
fn query(a: &SearchArgs, f: &Filter) -> Vec<(&'static str, String)> {
    let mut q: Vec<(&'static str, String)> = f
        .equals
        .iter()
        .map(|(k, v)| (k.name(), v.clone()))
        .collect();
    if let Some(p) = &f.resource_prefix {
        q.push(("resource", format!("{p}*")));
    }
    for (k, v) in [
        ("since", &a.since),
        ("until", &a.until),
        ("timestamp_since", &a.timestamp_since),
        ("timestamp_until", &a.timestamp_until),
    ] {
        if let Some(v) = v {
            q.push((k, v.clone()));
        }
    }
    q
}

/// Without --verify: the server's search, cursor after cursor.
fn run_indexed(conn: &Conn, a: &SearchArgs) -> anyhow::Result<()> {
    let f = filter(a)?;
    let q = query(a, &f);
    let client = conn.client()?;
    let (mut printed, mut cursor) = (0u64, None::<String>);
    let want = a.limit.unwrap_or(u64::MAX);
    loop {
        let (body, next) = client
            .search(&q, cursor.as_deref())
            .context("GET /v1/search")?;
        for line in body.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            if printed == want {
                break;
            }
            println!("{}", String::from_utf8_lossy(line));
            printed += 1;
        }
        match next {
            Some(c) if printed < want => cursor = Some(c),
            _ => break,
        }
    }
    eprintln!("auditlog: {printed} matching events (not verified: --verify --key K)");
    Ok(())
}

/// The records of `[start, end)` as the tree of `size` holds them: from the tlog-tiles
/// entry bundles (binary, FORMATS.md §5.8), or as base64 JSON pages (`/v1/events`) where
/// the server has no bundles for them (a BLAKE3 log, a bundle holding a record over one
/// entry, a server from before the tiles API). Either way every record is checked below.
fn window_records(
    client: &crate::http::HttpClient,
    alg: TreeHash,
    start: u64,
    end: u64,
    size: u64,
) -> anyhow::Result<Vec<Vec<u8>>> {
    if alg == TreeHash::Sha256 {
        match client.entries(start, end, size) {
            Err(crate::http::HttpError::Api { status: 404, .. }) => {}
            r => return Ok(r?),
        }
    }
    Ok(client.records(start, end, 1000)?)
}

pub fn run(conn: &Conn, a: &SearchArgs) -> anyhow::Result<()> {
    if !a.verify {
        return run_indexed(conn, a);
    }
    let f = filter(a)?;
    let (Some(since), Some(until)) = (&a.since, &a.until) else {
        bail!("--verify needs --since and --until");
    };
    let (since, until) = (parse_time(since)?, parse_time(until)?);
    if since > until {
        bail!("--since is after --until");
    }
    let client = conn.client()?;
    let info = client.log_info().context("GET /v1/log")?;
    let alg = TreeHash::from_name(&info.tree_hash).context("the log's tree hash")?;
    let text = client.checkpoint(None, 0).context("GET /v1/checkpoint")?;
    let (size, root) = match &a.key {
        Some(k) => {
            let key = load_key(k)?;
            let (cp, _) = note::open_checkpoint(&text, std::slice::from_ref(&key))
                .context("the checkpoint does not verify with --key")?;
            (cp.size, cp.root)
        }
        None => {
            let (body, _) = note::parse_note(&text).context("the checkpoint")?;
            let cp = note::Checkpoint::parse_text(&body).context("the checkpoint")?;
            (cp.size, cp.root)
        }
    };
    let window = client
        .window(since, until, size)
        .context("GET /v1/proof/window")?;
    let start = window["start"].as_u64().context("no start")?;
    let end = window["end"].as_u64().context("no end")?;
    let records = window_records(&client, alg, start, end.max(start), size)?;
    check_window(
        alg,
        &WindowAnswer {
            since,
            until,
            size,
            root,
            window: &window,
            records: &records,
        },
    )
    .context("verification failed")?;
    // Filtered on every core, printed in index order. The prefilter's substring check
    // refuses most records before any JSON is parsed; the parse decides.
    let pre = f.prefilter();
    let threads = crate::verify::default_threads().get();
    let found = in_chunks(
        threads,
        start,
        &records,
        |first, chunk| -> anyhow::Result<String> {
            let mut out = String::new();
            for (k, rec) in chunk.iter().enumerate() {
                let i = first + k as u64;
                let r = Record::parse(rec).map_err(|e| anyhow::anyhow!("record {i}: {e}"))?;
                let json = r
                    .event_json()
                    .map_err(|e| anyhow::anyhow!("record {i}: {e}"))?;
                if !pre.may_match(&json) || !f.matches(&EventFields::of(&json)) {
                    continue;
                }
                let event: Value = serde_json::from_slice(&json).unwrap_or(Value::Null);
                let line = serde_json::json!({
                    "index": i,
                    "received_at_unix_ns": r.received_at_unix_ns,
                    "event": event,
                });
                out.push_str(&line.to_string());
                out.push('\n');
            }
            Ok(out)
        },
    );
    let mut matched = 0u64;
    let mut stdout = std::io::stdout().lock();
    for chunk in found {
        let chunk = chunk?;
        matched += chunk.lines().count() as u64;
        std::io::Write::write_all(&mut stdout, chunk.as_bytes()).context("stdout")?;
    }
    drop(stdout);
    eprintln!(
        "auditlog: window [{start}, {end}) at size {size}: {} records, every one verified with the window's boundaries, {matched} matching",
        records.len(),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use auditlog_formats::record::{PayloadKind, Record};

    use super::*;

    fn record(t: u64) -> Vec<u8> {
        Record {
            received_at_unix_ns: t,
            submitter: Some("token:t"),
            kind: PayloadKind::Event,
            payload: br#"{"actor":"a"}"#,
        }
        .to_bytes()
    }

    /// Whatever the thread count (so wherever the chunks meet), the leaves are the
    /// records' leaves in order, and a receipt time that steps back, or one outside the
    /// window, is named at the same record as one thread names it.
    #[test]
    fn window_leaves_is_the_same_check_on_any_number_of_threads() {
        let alg = TreeHash::Sha256;
        let times: Vec<u64> = (0..23).map(|k| 100 + k / 2).collect();
        let records: Vec<Vec<u8>> = times.iter().map(|&t| record(t)).collect();
        let want: Vec<Hash> = records.iter().map(|r| alg.leaf(r)).collect();
        for threads in 1..=6 {
            let got = window_leaves(threads, alg, 40, 100, 112, &records).expect("in order");
            assert_eq!(got, want, "{threads} threads");
        }
        let one = |recs: &[Vec<u8>], since, until| {
            window_leaves(1, alg, 40, since, until, recs)
                .expect_err("refused")
                .to_string()
        };
        for bad in 1..records.len() {
            let mut back = records.clone();
            back[bad] = record(times[bad - 1] - 1); // before the record before it
            let serial = one(&back, 100, 112);
            assert!(
                serial.contains(&format!("record {} ", 40 + bad)),
                "{serial}"
            );
            for threads in 2..=6 {
                let e = window_leaves(threads, alg, 40, 100, 112, &back).expect_err("refused");
                assert_eq!(
                    e.to_string(),
                    serial,
                    "{threads} threads, step back at {bad}"
                );
            }
        }
        for (since, until, at) in [(101, 112, 40), (100, 111, 62)] {
            let serial = one(&records, since, until);
            assert!(serial.contains(&format!("record {at} ")), "{serial}");
            for threads in 2..=6 {
                let e = window_leaves(threads, alg, 40, since, until, &records).expect_err("x");
                assert_eq!(e.to_string(), serial, "{threads} threads");
            }
        }
    }
}
