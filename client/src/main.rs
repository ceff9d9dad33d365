//! `auditlog`: the command-line client.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use auditlog_formats::note::VerifierKey;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "auditlog",
    version,
    about = "auditlog client: verify a log offline, trusting only its key"
)]
struct Cli {
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
        /// The log's verifier key (`name+keyid+base64`), or @FILE to read it from a file.
        #[arg(long, env = "AUDITLOG_VERIFIER_KEY")]
        key: String,
    },
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("auditlog: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Verify {
            dir,
            key,
            endpoint,
            region,
            retention_days,
        } => {
            let key_text = match key.strip_prefix('@') {
                Some(file) => std::fs::read_to_string(file)
                    .with_context(|| format!("reading key file {file}"))?,
                None => key,
            };
            let key = VerifierKey::parse(key_text.trim()).context("parsing the verifier key")?;
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
                match auditlog_client::bucket::verify_bucket(
                    target.into(),
                    &key,
                    &policy,
                    &mut progress,
                ) {
                    Ok((s, r)) => (Ok(s), Some(r)),
                    Err(e) => (Err(e), None),
                }
            } else {
                (
                    auditlog_client::verify::verify_dir(&dir, &key, &mut progress),
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
                        "OK: {} events ({} sealed, {} open segments), root {}, {} checkpoints verified with {}, {} stored hashes checked",
                        s.events,
                        s.sealed_segments,
                        s.open_segments,
                        hex::encode(s.root),
                        s.checkpoints,
                        key.name(),
                        s.hash_nodes_checked
                    );
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
