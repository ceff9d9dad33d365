//! `auditlog prove`: fetch a signed checkpoint, a record and its inclusion proof, and check
//! them here, trusting only the verifier key. Every step prints what it checked; the first
//! failure stops with the step's name.

use std::path::PathBuf;

use crate::http::{HttpClient, InclusionProof, Leaf, LogInfo};
use anyhow::{bail, Context};
use auditlog_formats::hash::{from_hex, to_hex};
use auditlog_formats::note::{self, Checkpoint, VerifierKey};
use auditlog_formats::record::{
    Record, Submitter, PAYLOAD_BYTES_MAX, RECORD_BYTES_MAX, RECORD_VERSION, RECORD_VERSION_SYSLOG,
    RECORD_VERSION_V1,
};
use auditlog_formats::tree;
use auditlog_formats::{Hash, TreeHash};

use crate::cli::{load_key, Conn};

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("leaf").required(true).args(["index", "leaf_hash", "event_file"])))]
pub struct ProveArgs {
    /// Prove the event at this index (its record is fetched and re-hashed here).
    #[arg(long)]
    pub index: Option<u64>,
    /// Prove the event with this leaf hash (from a receipt).
    #[arg(long)]
    pub leaf_hash: Option<String>,
    /// Prove the event in this file: its record bytes (`auditlog get --record`), or the
    /// event's JSON as sent together with `--received-at-ns` from its receipt.
    #[arg(long)]
    pub event_file: Option<PathBuf>,
    /// `received_at_unix_ns` of the receipt, for an `--event-file` holding JSON.
    #[arg(long, requires = "event_file")]
    pub received_at_ns: Option<u64>,
    /// `submitter` of the receipt, for an `--event-file` holding JSON: the record (version 2)
    /// carries who the server authenticated. Leave it out only for an event stored before
    /// submitters were recorded (a version 1 record).
    #[arg(long, requires = "received_at_ns")]
    pub submitter: Option<String>,
    /// Prove in the tree of this size (default: the checkpoint's size); linked to the
    /// signed checkpoint by a consistency proof.
    #[arg(long)]
    pub size: Option<u64>,
    /// The log's verifier key (`name+keyid+base64` or @FILE), obtained out of band.
    /// Required unless --insecure is given.
    #[arg(long, env = "AUDITLOG_VERIFIER_KEY")]
    pub key: Option<String>,
    /// Without --key, use the key the server itself lists: this proves nothing against
    /// that server (a demonstration only).
    #[arg(long)]
    pub insecure: bool,
    /// The log's origin, pinned; without it the server's is used (and reported).
    #[arg(long)]
    pub origin: Option<String>,
    /// A checkpoint saved earlier (`auditlog checkpoint > FILE`): also prove that the log
    /// then is a prefix of the log now.
    #[arg(long)]
    pub since: Option<PathBuf>,
    /// How long the server may wait for a checkpoint covering the event, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub wait_ms: u64,
    #[command(flatten)]
    pub witnesses: crate::witness::WitnessArgs,
}

/// Prints one checked step.
fn ok(step: &str, what: impl std::fmt::Display) {
    println!("{step:<12} {what}");
}

/// Fails naming the step; the message is also on stdout so a transcript shows where it
/// stopped.
fn failed(step: &str, what: impl std::fmt::Display) -> anyhow::Error {
    println!("{step:<12} FAILED: {what}");
    anyhow::anyhow!("{step}: {what}")
}

/// The record an event file stands for, and where that came from.
fn record_from_file(
    path: &PathBuf,
    received_at_ns: Option<u64>,
    submitter: Option<&str>,
) -> anyhow::Result<Vec<u8>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if bytes.len() > RECORD_BYTES_MAX {
        bail!(
            "{}: {} bytes is larger than any record",
            path.display(),
            bytes.len()
        );
    }
    if matches!(
        bytes.first(),
        Some(&RECORD_VERSION | &RECORD_VERSION_V1 | &RECORD_VERSION_SYSLOG)
    ) {
        Record::parse(&bytes).with_context(|| format!("{}: not a record", path.display()))?;
        return Ok(bytes);
    }
    let Some(at) = received_at_ns else {
        bail!(
            "{} holds the event's JSON: give --received-at-ns from its receipt, or save the \
             record with `auditlog get INDEX --record -o FILE`",
            path.display()
        );
    };
    // The server stores an event without surrounding whitespace (one NDJSON line, say).
    let payload = bytes.trim_ascii();
    if let Some(s) = submitter {
        Submitter::parse(s).with_context(|| format!("--submitter {s:?}"))?;
    }
    if payload.is_empty() || payload.len() > PAYLOAD_BYTES_MAX {
        bail!(
            "{}: {} bytes is not an event",
            path.display(),
            payload.len()
        );
    }
    Ok(Record {
        received_at_unix_ns: at,
        submitter,
        kind: auditlog_formats::record::PayloadKind::Event,
        payload,
    }
    .to_bytes())
}

fn open_checkpoint(
    step: &str,
    text: &str,
    key: &VerifierKey,
    origin: &str,
) -> anyhow::Result<Checkpoint> {
    let (cp, _) = note::open_checkpoint(text, std::slice::from_ref(key)).map_err(|e| {
        failed(
            step,
            format!("signature check with key {}: {e}", key.name()),
        )
    })?;
    if cp.origin != origin {
        return Err(failed(
            step,
            format!("origin {:?} is not the log's origin {origin:?}", cp.origin),
        ));
    }
    ok(
        step,
        format!(
            "signature OK ({}), origin {}, size {}, root {}",
            key.name(),
            cp.origin,
            cp.size,
            to_hex(&cp.root)
        ),
    );
    Ok(cp)
}

fn consistency(
    client: &HttpClient,
    alg: TreeHash,
    step: &str,
    (old_size, old_root): (u64, &Hash),
    new: &Checkpoint,
) -> anyhow::Result<()> {
    let p = client
        .consistency_proof(old_size, new.size)
        .map_err(|e| failed(step, e))?;
    tree::verify_consistency(alg, old_size, new.size, old_root, &new.root, &p.hashes).map_err(
        |e| {
            failed(
                step,
                format!("{old_size} -> {}: {} hashes: {e}", new.size, p.hashes.len()),
            )
        },
    )?;
    ok(
        step,
        format!(
            "{old_size} -> {}: {} hashes: OK (root {} at {old_size} is a prefix of the checkpoint)",
            new.size,
            p.hashes.len(),
            to_hex(old_root)
        ),
    );
    Ok(())
}

pub fn prove(conn: &Conn, args: &ProveArgs) -> anyhow::Result<()> {
    let client = conn.client()?;
    let (info, alg) = check_log(&client, args)?;
    let key = pinned_key(&info, args)?;
    let wanted = Wanted::from_args(args, alg)?;
    let old = kept_checkpoint(args, &key, &info.origin)?;
    let (cp, size) = fetch_checkpoint(&client, args, &info, &key, &wanted, old.as_ref())?;
    let proof = fetch_inclusion(&client, &wanted, size)?;
    let leaf = check_record(&client, alg, wanted, &proof)?;
    let root = check_inclusion(alg, &proof, size, &leaf, &cp)?;
    if size != cp.size {
        consistency(&client, alg, "consistency", (size, &root), &cp)?;
    }
    if let Some(old) = &old {
        consistency(&client, alg, "since", (old.size, &old.root), &cp)?;
    }
    println!(
        "OK: event {} is in the log {} of size {} signed by {}",
        proof.index,
        cp.origin,
        cp.size,
        key.name()
    );
    Ok(())
}

/// The server's log: its tree hash, and its origin held to the pinned one.
fn check_log(client: &HttpClient, args: &ProveArgs) -> anyhow::Result<(LogInfo, TreeHash)> {
    let info = client.log_info().map_err(|e| failed("log", e))?;
    let alg = TreeHash::from_name(&info.tree_hash)
        .ok_or_else(|| failed("log", format!("unknown tree hash {:?}", info.tree_hash)))?;
    if let Some(o) = &args.origin {
        if *o != info.origin {
            return Err(failed(
                "log",
                format!(
                    "the server's origin {:?} is not the pinned {o:?}",
                    info.origin
                ),
            ));
        }
    }
    ok(
        "log",
        format!(
            "origin {}{}, tree hash {}",
            info.origin,
            if args.origin.is_some() {
                " (pinned)"
            } else {
                " (from the server, not pinned: --origin)"
            },
            alg.name()
        ),
    );
    Ok((info, alg))
}

/// The verifier key: the one given, or with --insecure the server's own (said loudly).
fn pinned_key(info: &LogInfo, args: &ProveArgs) -> anyhow::Result<VerifierKey> {
    match &args.key {
        Some(k) => {
            let key = load_key(k).map_err(|e| failed("key", format!("{e:#}")))?;
            ok("key", format!("{key} (given)"));
            Ok(key)
        }
        None if !args.insecure => Err(failed(
            "key",
            "no verifier key: pin the log's key with --key (obtained out of band); \
             --insecure uses the server's own key, which proves nothing against it",
        )),
        None => {
            let text = info
                .verifier_keys
                .first()
                .ok_or_else(|| failed("key", "the server lists no verifier key"))?;
            let key = VerifierKey::parse(text).map_err(|e| failed("key", e))?;
            eprintln!(
                "warning: the verifier key came from the server itself (GET /v1/log), so this \
                 proves nothing against that server; pin it: --key '{key}'"
            );
            ok("key", format!("{key} (from the server, NOT pinned)"));
            Ok(key)
        }
    }
}

/// What is being proved: a leaf hash known here (given, or of the record in an event file,
/// which is kept), or an index whose record is fetched.
struct Wanted {
    index: Option<u64>,
    leaf: Option<Hash>,
    record: Option<Vec<u8>>,
}

impl Wanted {
    fn from_args(args: &ProveArgs, alg: TreeHash) -> anyhow::Result<Wanted> {
        let mut wanted = Wanted {
            index: args.index,
            leaf: None,
            record: None,
        };
        if let Some(h) = &args.leaf_hash {
            wanted.leaf =
                Some(from_hex(h).ok_or_else(|| {
                    failed("leaf", format!("{h:?} is not 64 lowercase hex digits"))
                })?);
        }
        if let Some(f) = &args.event_file {
            let rec = record_from_file(f, args.received_at_ns, args.submitter.as_deref())
                .map_err(|e| failed("leaf", format!("{e:#}")))?;
            let h = alg.leaf(&rec);
            ok(
                "leaf",
                format!(
                    "{} ({} of the record in {})",
                    to_hex(&h),
                    alg.name(),
                    f.display()
                ),
            );
            wanted.leaf = Some(h);
            wanted.record = Some(rec);
        }
        Ok(wanted)
    }
}

/// The checkpoint saved earlier (--since), verified under the key.
fn kept_checkpoint(
    args: &ProveArgs,
    key: &VerifierKey,
    origin: &str,
) -> anyhow::Result<Option<Checkpoint>> {
    let Some(p) = &args.since else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(p)
        .map_err(|e| failed("since", format!("reading {}: {e}", p.display())))?;
    Ok(Some(open_checkpoint("since", &text, key, origin)?))
}

/// A checkpoint covering the event, the size asked for and the old checkpoint, verified;
/// and the size to prove in (the size asked for, or the checkpoint's).
fn fetch_checkpoint(
    client: &HttpClient,
    args: &ProveArgs,
    info: &LogInfo,
    key: &VerifierKey,
    wanted: &Wanted,
    old: Option<&Checkpoint>,
) -> anyhow::Result<(Checkpoint, u64)> {
    // An event known by its leaf hash has an unknown index, but if it is in the log at all
    // it is below the size the log has now.
    let need = [
        wanted.index.map(|i| i + 1),
        wanted.index.is_none().then_some(info.tree_size),
        args.size,
        old.map(|c| c.size),
        Some(1),
    ]
    .into_iter()
    .flatten()
    .max()
    .unwrap_or(1);
    let text = client
        .checkpoint(Some(need), args.wait_ms)
        .map_err(|e| failed("checkpoint", e))?;
    let cp = open_checkpoint("checkpoint", &text, key, &info.origin)?;
    if let Some(policy) = args
        .witnesses
        .policy()
        .map_err(|e| failed("witnesses", format!("{e:#}")))?
    {
        let line = policy
            .check(&text)
            .map_err(|e| failed("witnesses", format!("{e:#}")))?;
        ok("witnesses", line);
    }
    let size = args.size.unwrap_or(cp.size);
    if size > cp.size {
        return Err(failed(
            "checkpoint",
            format!("size {} does not cover the size {size} asked for", cp.size),
        ));
    }
    Ok((cp, size))
}

/// The inclusion proof of the wanted event in the tree of `size`, by index or leaf hash.
fn fetch_inclusion(
    client: &HttpClient,
    wanted: &Wanted,
    size: u64,
) -> anyhow::Result<InclusionProof> {
    let by = match (wanted.index, wanted.leaf) {
        (Some(i), _) => Leaf::Index(i),
        (None, Some(h)) => Leaf::Hash(h),
        (None, None) => bail!("one of --index, --leaf-hash, --event-file is required"),
    };
    client
        .inclusion_proof(by, size)
        .map_err(|e| match (by, e.status()) {
            (Leaf::Hash(h), Some(404)) => failed(
                "inclusion",
                format!(
                    "no leaf {} in the tree of size {size}: the event differs from what was \
                 stored, or was never stored ({e})",
                    to_hex(&h)
                ),
            ),
            _ => failed("inclusion", e),
        })
}

/// The record at the proof's index, re-hashed here: for --index it is the leaf; otherwise
/// it must be the leaf that was given. Returns the leaf hash.
fn check_record(
    client: &HttpClient,
    alg: TreeHash,
    wanted: Wanted,
    proof: &InclusionProof,
) -> anyhow::Result<Hash> {
    let rec = match wanted.record {
        Some(r) => r,
        None => client
            .get_record(proof.index)
            .map_err(|e| failed("record", e))?,
    };
    let parsed =
        Record::parse(&rec).map_err(|e| failed("record", format!("index {}: {e}", proof.index)))?;
    let leaf = alg.leaf(&rec);
    if let Some(h) = wanted.leaf {
        if h != leaf {
            return Err(failed(
                "record",
                format!(
                    "the record at index {} hashes to {}, not the leaf {}",
                    proof.index,
                    to_hex(&leaf),
                    to_hex(&h)
                ),
            ));
        }
    }
    ok(
        "record",
        format!(
            "index {}, received_at_unix_ns {}, submitter {}, {} payload bytes, leaf hash {} ({}, recomputed here)",
            proof.index,
            parsed.received_at_unix_ns,
            parsed.submitter.unwrap_or("(none: a version 1 record)"),
            parsed.payload.len(),
            to_hex(&leaf),
            alg.name()
        ),
    );
    Ok(leaf)
}

/// The inclusion proof checked against the checkpoint's root (proving in its size), or
/// the root it gives at a smaller `size` (then linked to the checkpoint by a consistency
/// proof). Returns that root.
fn check_inclusion(
    alg: TreeHash,
    proof: &InclusionProof,
    size: u64,
    leaf: &Hash,
    cp: &Checkpoint,
) -> anyhow::Result<Hash> {
    let inclusion = if size == cp.size {
        tree::verify_inclusion(alg, proof.index, size, leaf, &proof.hashes, &cp.root)
            .map(|()| cp.root)
    } else {
        tree::root_from_inclusion_proof(alg, proof.index, size, leaf, &proof.hashes)
    };
    let root = inclusion.map_err(|e| {
        failed(
            "inclusion",
            format!(
                "leaf {} in tree of size {size}, {} hashes: {e}",
                proof.index,
                proof.hashes.len()
            ),
        )
    })?;
    ok(
        "inclusion",
        format!(
            "leaf {} in tree of size {size}: {} hashes: OK (root {}{})",
            proof.index,
            proof.hashes.len(),
            to_hex(&root),
            if size == cp.size {
                ", the checkpoint's"
            } else {
                ""
            }
        ),
    );
    Ok(root)
}
