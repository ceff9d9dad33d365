//! `auditlog verify`: which keys and pins the auditor gave, the run over a data directory
//! or a bucket with a progress bar, and the report.

use std::io::IsTerminal;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};

use crate::bucket::RetentionReport;
use crate::verify::{default_threads, load_history, DirSource, Pins, Summary, VerifyError};
use anyhow::Context;
use auditlog_formats::keyhistory::{CheckedHistory, KeyHistory};
use auditlog_formats::note::{Checkpoint, VerifierKey};

// No doc comment here: the `Verify` subcommand's own is its help text.
#[derive(clap::Args)]
pub struct VerifyArgs {
    /// A data directory (./data), or s3://bucket/prefix, azure://container/prefix,
    /// gs://bucket/prefix, file:///path (credentials from the usual environment variables).
    dir: PathBuf,
    /// The store's endpoint (S3-compatible servers, Azure emulators, GCS emulators).
    #[arg(long, env = "AUDITLOG_WORM_ENDPOINT")]
    endpoint: Option<String>,
    /// Region (S3); default AWS_REGION or us-east-1.
    #[arg(long)]
    region: Option<String>,
    /// Retention policy override, `CLASS=DAYS` (e.g. `CUI//BASIC=2555`); repeatable.
    #[arg(long = "retention-days", value_name = "CLASS=DAYS")]
    retention_days: Vec<String>,
    /// The log's verifier key (`name+keyid+base64`), or @FILE to read it from a file,
    /// for a log that never rotated its key.
    #[arg(long, env = "AUDITLOG_VERIFIER_KEY", conflicts_with = "history")]
    key: Option<String>,
    /// The key history (`keys.json`), obtained out of band.
    #[arg(long)]
    history: Option<PathBuf>,
    /// Without --key or --history, trust `<dir>/keys.json` from the directory being
    /// verified: this proves nothing against whoever can write it.
    #[arg(long)]
    insecure: bool,
    /// The log's origin, pinned (default: the --since checkpoint's; else log.json's,
    /// reported as not pinned).
    #[arg(long)]
    origin: Option<String>,
    /// A checkpoint note the auditor kept (`auditlog checkpoint --key K > FILE`): the log
    /// must extend it; a rolled-back or forked log fails.
    #[arg(long, value_name = "NOTE_FILE")]
    since: Option<PathBuf>,
    /// The signed size must be at least this.
    #[arg(long)]
    min_size: Option<u64>,
    /// A key history kept with --since: the history used must extend it (no key added
    /// or retired for sizes already signed then).
    #[arg(long, value_name = "FILE", requires = "since")]
    prev_history: Option<PathBuf>,
    /// Accept records past the signed size (e.g. a directory after a crash): they are
    /// counted and reported, never as verified.
    #[arg(long)]
    allow_unsigned_tail: bool,
    /// Threads reading segments (default: one per core, up to 8). 1 reads them one after
    /// the other; the verdict and the first failure named are the same for every count.
    #[arg(long, value_name = "N")]
    threads: Option<NonZeroUsize>,
    /// With --since: the kept checkpoint must carry the witnesses' cosignatures.
    #[command(flatten)]
    witnesses: crate::witness::WitnessArgs,
}

pub fn verify(a: VerifyArgs) -> anyhow::Result<()> {
    let history = pinned_history(&a)?;
    let since = kept_checkpoint(&a, &history)?;
    witnessed_since(&a)?;
    let pins = Pins {
        origin: a.origin.clone(),
        since,
        min_size: a.min_size,
        allow_unsigned_tail: a.allow_unsigned_tail,
    };
    let key_names = history
        .keys
        .iter()
        .map(|k| k.name().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let bar = progress_bar();
    let mut progress = |done: u64, total: u64| {
        if let Some(b) = &bar {
            b.set_length(total);
            b.set_position(done);
        }
    };
    let (result, retention) = run(&a, &history, &pins, &mut progress)?;
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    report(result, retention, &key_names)
}

/// The keys the auditor pinned: one key (--key, or @FILE), a key history (--history), or
/// with --insecure the directory's own `keys.json` (never a bucket's).
fn pinned_history(a: &VerifyArgs) -> anyhow::Result<CheckedHistory> {
    match (&a.key, &a.history) {
        (Some(key), _) => {
            let key_text = match key.strip_prefix('@') {
                Some(file) => std::fs::read_to_string(file)
                    .with_context(|| format!("reading key file {file}"))?,
                None => key.clone(),
            };
            let key = VerifierKey::parse(key_text.trim()).context("parsing the verifier key")?;
            KeyHistory::single(&key).check().context("the verifier key")
        }
        (None, Some(path)) => Ok(load_history(path)?),
        (None, None) => {
            if auditlog_worm::is_url(&a.dir.to_string_lossy()) {
                anyhow::bail!("verifying a bucket needs --key or --history: the bucket's own key history is not trusted");
            }
            if !a.insecure {
                anyhow::bail!("no pinned key: give --key or --history (obtained out of band); --insecure trusts the directory's own keys.json, which proves nothing against whoever can write it");
            }
            let path = a.dir.join("keys.json");
            eprintln!(
                "warning: no --key or --history: trusting {} from the directory being verified",
                path.display()
            );
            Ok(load_history(&path)?)
        }
    }
}

/// The kept checkpoint (--since) verifies under the history kept with it (or, without one,
/// the pinned keys); the history used must then extend that one.
fn kept_checkpoint(a: &VerifyArgs, history: &CheckedHistory) -> anyhow::Result<Option<Checkpoint>> {
    let prev = match &a.prev_history {
        Some(p) => Some(load_history(p)?),
        None => None,
    };
    let since = match &a.since {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            let cp = prev
                .as_ref()
                .unwrap_or(history)
                .open_checkpoint(&text)
                .with_context(|| {
                    format!(
                        "{}: the kept checkpoint does not verify under the pinned key(s)",
                        p.display()
                    )
                })?;
            Some(cp)
        }
        None => None,
    };
    if let (Some(prev), Some(kept)) = (&prev, &since) {
        history.extends(prev, kept.size).with_context(|| {
            format!(
                "the key history against {}",
                a.prev_history.as_deref().unwrap_or(Path::new("")).display()
            )
        })?;
    }
    Ok(since)
}

/// With --witness, the kept checkpoint (--since: the one the auditor pinned, which the log
/// must extend) carries the cosignatures the policy needs.
fn witnessed_since(a: &VerifyArgs) -> anyhow::Result<()> {
    let Some(policy) = a.witnesses.policy()? else {
        return Ok(());
    };
    let Some(path) = &a.since else {
        anyhow::bail!("--witness checks the kept checkpoint: give it with --since NOTE_FILE");
    };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let line = policy
        .check(&text)
        .with_context(|| format!("{}: the kept checkpoint's cosignatures", path.display()))?;
    println!("witnesses: {line}");
    Ok(())
}

/// A progress bar on a terminal only.
fn progress_bar() -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let b = indicatif::ProgressBar::new(0);
    b.set_style(
        indicatif::ProgressStyle::with_template(
            "verifying {bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    Some(b)
}

/// Verifies the bucket (with its objects' retention) or the data directory. An error here
/// is one of the arguments or of opening the bucket; the verification's own outcome is the
/// first value returned.
fn run(
    a: &VerifyArgs,
    history: &CheckedHistory,
    pins: &Pins,
    progress: &mut dyn FnMut(u64, u64),
) -> anyhow::Result<(Result<Summary, VerifyError>, Option<RetentionReport>)> {
    let url = a.dir.to_string_lossy().to_string();
    let threads = a.threads.unwrap_or_else(default_threads);
    if !auditlog_worm::is_url(&url) {
        let src = DirSource::new(&a.dir);
        let result = crate::verify::verify_source(&src, history, pins, threads, progress);
        return Ok((result, None));
    }
    let policy = retention_policy(&a.retention_days)?;
    let opts = auditlog_worm::TargetOptions {
        endpoint: a.endpoint.clone(),
        region: a.region.clone(),
        ..Default::default()
    };
    let target = auditlog_worm::open(&url, &opts).context("opening the bucket")?;
    Ok(
        match crate::bucket::verify_bucket_pinned(
            target.into(),
            history,
            pins,
            threads,
            &policy,
            progress,
        ) {
            Ok((s, r)) => (Ok(s), Some(r)),
            Err(e) => (Err(e), None),
        },
    )
}

/// The default retention policy with the --retention-days overrides.
fn retention_policy(overrides: &[String]) -> anyhow::Result<auditlog_worm::RetentionPolicy> {
    let mut policy = auditlog_worm::RetentionPolicy::default();
    for r in overrides {
        let (class, days) = r
            .split_once('=')
            .context("--retention-days wants CLASS=DAYS")?;
        let days: u32 = days.parse().context("--retention-days: DAYS")?;
        policy
            .set(class, days)
            .map_err(|e| anyhow::anyhow!("--retention-days: {e}"))?;
    }
    Ok(policy)
}

/// Prints the outcome: warnings, what is vouched for, what is not, and the retention
/// check; fails on a failed verification or short retention.
fn report(
    result: Result<Summary, VerifyError>,
    retention: Option<RetentionReport>,
    key_names: &str,
) -> anyhow::Result<()> {
    let s = match result {
        Ok(s) => s,
        Err(e) => {
            println!("FAILED: {e}");
            anyhow::bail!("verification failed: {e}")
        }
    };
    for w in &s.warnings {
        eprintln!("warning: {w}");
    }
    println!(
        "OK: signed size {} ({} sealed, {} open, {} pruned segments), root {}, {} checkpoints verified with {}, {} stored hashes checked",
        s.signed_size,
        s.sealed_segments,
        s.open_segments,
        s.pruned_segments,
        hex::encode(s.signed_root),
        s.checkpoints,
        key_names,
        s.hash_nodes_checked
    );
    if s.unsigned_records > 0 {
        println!(
            "UNSIGNED: {} record(s) past the signed size, NOT verified (--allow-unsigned-tail)",
            s.unsigned_records
        );
    }
    let Some(r) = retention else {
        return Ok(());
    };
    for line in &r.short {
        println!("RETENTION: {line}");
    }
    if !r.short.is_empty() {
        anyhow::bail!(
            "{} of {} objects have less retention than policy",
            r.short.len(),
            r.objects_checked
        );
    }
    println!(
        "retention: {} objects checked against policy",
        r.objects_checked
    );
    Ok(())
}
