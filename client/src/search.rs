//! `auditlog search --since T1 --until T2 [filters] [--verify --key K]`: the events received
//! in a time window, filtered here. With `--verify`, the answer is provably every matching
//! event received in the window, trusting only the key: the checkpoint's signature; every
//! record of the window against the checkpoint's root with one range proof; the records
//! just outside the window (with inclusion proofs) received before `since` and at or after
//! `until`; and every receipt time in the window, never decreasing (FORMATS.md §4). A server
//! that leaves out, adds or alters one event of the window fails one of these.

use anyhow::{bail, Context};
use auditlog_formats::hash::from_hex;
use auditlog_formats::note;
use auditlog_formats::record::Record;
use auditlog_formats::{tree, Hash, TreeHash};
use base64::Engine as _;
use serde_json::Value;

use crate::cli::{load_key, Conn};

#[derive(clap::Args, Debug)]
pub struct SearchArgs {
    /// Start of the window (inclusive): RFC 3339 or Unix nanoseconds.
    #[arg(long)]
    pub since: String,
    /// End of the window (exclusive): RFC 3339 or Unix nanoseconds.
    #[arg(long)]
    pub until: String,
    /// Check every record of the window and its boundaries against a checkpoint signed by
    /// --key (see the module note).
    #[arg(long, requires = "key")]
    pub verify: bool,
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
    let mut last = w.since;
    let mut leaves = Vec::with_capacity(w.records.len());
    for (k, rec) in w.records.iter().enumerate() {
        let i = start + k as u64;
        let r = Record::parse(rec).map_err(|e| anyhow::anyhow!("record {i}: {e}"))?;
        let t = r.received_at_unix_ns;
        if t < last || t >= w.until {
            bail!(
                "record {i} was received at {t}, outside the window or before the record before it"
            );
        }
        last = t;
        leaves.push(alg.leaf(rec));
    }
    if start < end {
        let proof = hashes(&w.window["range_proof"], "range_proof")?;
        tree::verify_range(alg, start, end, w.size, &leaves, &proof, &w.root)
            .map_err(|e| anyhow::anyhow!("the window's records [{start}, {end}): {e}"))?;
    }
    Ok((start, end))
}

/// Whether an event's payload matches every filter given.
fn matches(a: &SearchArgs, event: &Value) -> bool {
    let field = |k: &str| event.get(k).and_then(Value::as_str);
    let eq = |want: &Option<String>, k: &str| want.as_deref().is_none_or(|w| field(k) == Some(w));
    eq(&a.actor, "actor")
        && eq(&a.event_type, "event_type")
        && eq(&a.action, "action")
        && eq(&a.outcome, "outcome")
        && eq(&a.classification, "classification")
        && eq(&a.session_id, "session_id")
        && eq(&a.request_id, "request_id")
        && eq(&a.source_ip, "source_ip")
        && a.resource
            .as_deref()
            .is_none_or(|w| field("resource").is_some_and(|r| r.starts_with(w)))
}

pub fn run(conn: &Conn, a: &SearchArgs) -> anyhow::Result<()> {
    let (since, until) = (parse_time(&a.since)?, parse_time(&a.until)?);
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
    let records = client.records(start, end.max(start), 1000)?;
    if a.verify {
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
    }
    let mut matched = 0u64;
    for (k, rec) in records.iter().enumerate() {
        let r =
            Record::parse(rec).map_err(|e| anyhow::anyhow!("record {}: {e}", start + k as u64))?;
        let json = r
            .event_json()
            .map_err(|e| anyhow::anyhow!("record {}: {e}", start + k as u64))?;
        let event: Value = serde_json::from_slice(&json).unwrap_or(Value::Null);
        if matches(a, &event) {
            matched += 1;
            println!(
                "{}",
                serde_json::json!({
                    "index": start + k as u64,
                    "received_at_unix_ns": r.received_at_unix_ns,
                    "event": event,
                })
            );
        }
    }
    eprintln!(
        "auditlog: window [{start}, {end}) at size {size}: {} records{}, {matched} matching",
        records.len(),
        if a.verify {
            ", every one verified with the window's boundaries"
        } else {
            " (not verified: --verify --key K)"
        }
    );
    Ok(())
}
