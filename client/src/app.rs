//! `auditlog`: the command-line client. `src/main.rs` (the shipped binary) is one call to
//! [`main`]; it lives in the library so the system tests can build the same CLI as a binary
//! of their own package and run it through `CARGO_BIN_EXE_…` (no nested `cargo build`).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::{cli, prove, search, verify_cmd};

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
    Verify(verify_cmd::VerifyArgs),
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
    /// Events received in a time window, filtered; with --verify --key, provably every
    /// matching event of the window (records, boundaries and one range proof checked here).
    Search(crate::search::SearchArgs),
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
    let args = parse_args();
    // A flat dispatch table: each arm is one call.
    match args.command {
        Command::Send(a) => cli::send(&args.conn, &a),
        Command::Get(a) => cli::get(&args.conn, &a),
        Command::Checkpoint(a) => cli::checkpoint(&args.conn, &a),
        Command::Prove(a) => prove::prove(&args.conn, &a),
        Command::Export(a) => export(a),
        Command::Search(a) => search::run(&args.conn, &a),
        Command::Verify(a) => verify_cmd::verify(a),
    }
}

/// The command line, with `--version` naming the formats it reads too.
fn parse_args() -> Cli {
    use clap::{CommandFactory, FromArgMatches};
    // clap keeps the version as a `&'static str`.
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
