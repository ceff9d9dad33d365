//! `auditlog`: the command-line client. `src/main.rs` (the shipped binary) is one call to
//! [`main`]; it lives in the library so the system tests can build the same CLI as a binary
//! of their own package and run it through `CARGO_BIN_EXE_…` (no nested `cargo build`).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use auditlog_formats::keyhistory::KeyHistory;
use auditlog_formats::note::VerifierKey;
use clap::{Parser, Subcommand};

use crate::{cli, prove};

#[derive(Parser)]
#[command(
    name = "auditlog",
    version,
    about = "auditlog client: send events, fetch checkpoints and proofs, verify a log trusting only its key"
)]
struct Cli {
    #[command(flatten)]
    conn: cli::Conn,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Verify a data directory, or a WORM bucket the log was replicated to: every record,
    /// segment, hash and checkpoint; for a bucket also every object's retention.
    Verify {
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
    },
    /// Send events (one JSON object, or NDJSON) from a file or stdin; keeps receipts.
    Send(cli::SendArgs),
    /// Fetch one event as JSON, or its exact record bytes.
    Get(cli::GetArgs),
    /// Fetch the latest signed checkpoint; with --key, verify its signature.
    Checkpoint(cli::CheckpointArgs),
    /// Prove an event is in the log: checkpoint signature, leaf hash and inclusion proof
    /// (and consistency with an older checkpoint), all checked here.
    Prove(prove::ProveArgs),
    /// Export events as CEF, JSON lines or CSV from a running daemon.
    Export(ExportArgs),
}

#[derive(clap::Args)]
struct ExportArgs {
    /// The daemon's base URL.
    #[arg(long, env = "AUDITLOG_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// A bearer token of role reader, auditor or admin; without it and --token-file,
    /// `AUDITLOG_TOKEN`.
    #[arg(long)]
    token: Option<auditlog_formats::Secret>,
    /// File holding the bearer token, one line (instead of --token).
    #[arg(long, conflicts_with = "token", value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// cef, json or csv.
    #[arg(long, default_value = "json")]
    format: String,
    /// First log index (inclusive).
    #[arg(long, default_value_t = 0)]
    start: u64,
    /// End log index (exclusive); default: the tree size when the export starts.
    #[arg(long)]
    end: Option<u64>,
    /// Output file; default stdout.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// The CLI: parses the command line, runs the command, and says what failed.
pub fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("auditlog: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let args = {
        use clap::{CommandFactory, FromArgMatches};
        // `--version` names the formats it reads too; clap keeps it as a `&'static str`.
        let version: &'static str = Box::leak(
            format!(
                "{} (formats {})",
                env!("CARGO_PKG_VERSION"),
                auditlog_formats::FORMATS_VERSION
            )
            .into_boxed_str(),
        );
        let matches = Cli::command().version(version).get_matches();
        Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    };
    match args.command {
        Command::Send(a) => cli::send(&args.conn, &a),
        Command::Get(a) => cli::get(&args.conn, &a),
        Command::Checkpoint(a) => cli::checkpoint(&args.conn, &a),
        Command::Prove(a) => prove::prove(&args.conn, &a),
        Command::Export(a) => export(a),
        Command::Verify {
            dir,
            key,
            history,
            insecure,
            origin,
            since,
            min_size,
            prev_history,
            allow_unsigned_tail,
            endpoint,
            region,
            retention_days,
        } => {
            let history = match (key, history) {
                (Some(key), _) => {
                    let key_text = match key.strip_prefix('@') {
                        Some(file) => std::fs::read_to_string(file)
                            .with_context(|| format!("reading key file {file}"))?,
                        None => key,
                    };
                    let key =
                        VerifierKey::parse(key_text.trim()).context("parsing the verifier key")?;
                    KeyHistory::single(&key)
                        .check()
                        .context("the verifier key")?
                }
                (None, Some(path)) => crate::verify::load_history(&path)?,
                (None, None) => {
                    if auditlog_worm::is_url(&dir.to_string_lossy()) {
                        anyhow::bail!("verifying a bucket needs --key or --history: the bucket's own key history is not trusted");
                    }
                    if !insecure {
                        anyhow::bail!("no pinned key: give --key or --history (obtained out of band); --insecure trusts the directory's own keys.json, which proves nothing against whoever can write it");
                    }
                    let path = dir.join("keys.json");
                    eprintln!(
                        "warning: no --key or --history: trusting {} from the directory being verified",
                        path.display()
                    );
                    crate::verify::load_history(&path)?
                }
            };
            // The kept checkpoint verifies under the history kept with it (or, without one,
            // the pinned keys); the history used must then extend that one.
            let prev = match &prev_history {
                Some(p) => Some(crate::verify::load_history(p)?),
                None => None,
            };
            let since = match &since {
                Some(p) => {
                    let text = std::fs::read_to_string(p)
                        .with_context(|| format!("reading {}", p.display()))?;
                    let cp = prev
                        .as_ref()
                        .unwrap_or(&history)
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
                        prev_history.as_deref().unwrap_or(Path::new("")).display()
                    )
                })?;
            }
            let pins = crate::verify::Pins {
                origin,
                since,
                min_size,
                allow_unsigned_tail,
            };
            let key_names = history
                .keys
                .iter()
                .map(|k| k.name().to_string())
                .collect::<Vec<_>>()
                .join(", ");
            let bar = if std::io::stderr().is_terminal() {
                let b = indicatif::ProgressBar::new(0);
                b.set_style(
                    indicatif::ProgressStyle::with_template(
                        "verifying {bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                Some(b)
            } else {
                None
            };
            let mut progress = |done: u64, total: u64| {
                if let Some(b) = &bar {
                    b.set_length(total);
                    b.set_position(done);
                }
            };
            let url = dir.to_string_lossy().to_string();
            let (result, retention) = if auditlog_worm::is_url(&url) {
                let mut policy = auditlog_worm::RetentionPolicy::default();
                for r in &retention_days {
                    let (class, days) = r
                        .split_once('=')
                        .context("--retention-days wants CLASS=DAYS")?;
                    let days: u32 = days.parse().context("--retention-days: DAYS")?;
                    policy
                        .set(class, days)
                        .map_err(|e| anyhow::anyhow!("--retention-days: {e}"))?;
                }
                let opts = auditlog_worm::TargetOptions {
                    endpoint,
                    region,
                    ..Default::default()
                };
                let target = auditlog_worm::open(&url, &opts).context("opening the bucket")?;
                match crate::bucket::verify_bucket_pinned(
                    target.into(),
                    &history,
                    &pins,
                    &policy,
                    &mut progress,
                ) {
                    Ok((s, r)) => (Ok(s), Some(r)),
                    Err(e) => (Err(e), None),
                }
            } else {
                (
                    crate::verify::verify_dir_pinned(&dir, &history, &pins, &mut progress),
                    None,
                )
            };
            if let Some(b) = &bar {
                b.finish_and_clear();
            }
            match result {
                Ok(s) => {
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
                    if let Some(r) = retention {
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
                    }
                    Ok(())
                }
                Err(e) => {
                    println!("FAILED: {e}");
                    anyhow::bail!("verification failed: {e}")
                }
            }
        }
    }
}

fn export(a: ExportArgs) -> anyhow::Result<()> {
    use crate::export::{export, ExportRequest};
    let token = cli::token_from(a.token.as_ref(), a.token_file.as_deref())?
        .context("a token is needed: --token, --token-file or AUDITLOG_TOKEN")?;
    let req = ExportRequest {
        url: a.url,
        token,
        format: a.format,
        start: a.start,
        end: a.end,
    };
    let bar = std::io::stderr().is_terminal().then(|| {
        let b = match req.end {
            Some(e) => indicatif::ProgressBar::new(e.saturating_sub(req.start)),
            None => indicatif::ProgressBar::new_spinner(),
        };
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "exporting {bar:40} {pos}/{len} events {per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    let mut progress = |events: u64| {
        if let Some(b) = &bar {
            b.set_position(events);
        }
    };
    let summary = match &a.out {
        Some(path) => {
            let f = std::fs::File::create(path)
                .with_context(|| format!("creating {}", path.display()))?;
            let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
            let s = export(&req, &mut w, &mut progress)?;
            w.into_inner()
                .map_err(|e| e.into_error())
                .and_then(|f| f.sync_all())
                .with_context(|| format!("writing {}", path.display()))?;
            s
        }
        None => export(&req, &mut std::io::stdout().lock(), &mut progress)?,
    };
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    eprintln!(
        "exported {} events ({} bytes) as {} from index {}",
        summary.events, summary.bytes, req.format, req.start
    );
    Ok(())
}
