//! The networked subcommands of `auditlog`: `send`, `get`, `checkpoint` (`prove` is in
//! `prove.rs`). Each prints what it did on stdout and fails with a message naming the step.

use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::http::{ClientOptions, HttpClient, HttpError, Receipt, Receipts};
use anyhow::{bail, Context};
use auditlog_formats::hash::to_hex;
use auditlog_formats::note::{self, VerifierKey};
use auditlog_formats::record::PAYLOAD_BYTES_MAX;
use auditlog_formats::Secret;

/// Where the server is and who we are; shared by every networked subcommand.
#[derive(clap::Args, Debug)]
pub struct Conn {
    /// Server base URL (`http://…` or `https://…`).
    #[arg(
        long,
        env = "AUDITLOG_URL",
        default_value = "http://127.0.0.1:8080",
        global = true,
        help_heading = "Server"
    )]
    pub url: String,
    /// Bearer token (writer for `send`, auditor for `checkpoint` and `prove`); without it
    /// and --token-file, `AUDITLOG_TOKEN`.
    #[arg(long, global = true, help_heading = "Server")]
    pub token: Option<Secret>,
    /// File holding the bearer token, one line (instead of --token: a token on the command
    /// line shows in the process list and the shell's history).
    #[arg(
        long,
        global = true,
        conflicts_with = "token",
        value_name = "FILE",
        help_heading = "Server"
    )]
    pub token_file: Option<PathBuf>,
    /// PEM file of CA certificates to trust for an `https://` URL.
    #[arg(long, global = true, help_heading = "Server")]
    pub ca_file: Option<PathBuf>,
    /// Timeout of each request (connect, read, write), in milliseconds.
    #[arg(long, default_value_t = 30_000, global = true, help_heading = "Server")]
    pub timeout_ms: u64,
}

impl Conn {
    pub fn client(&self) -> anyhow::Result<HttpClient> {
        let opts = ClientOptions {
            timeout_ms: self.timeout_ms,
            ca_file: self.ca_file.clone(),
        };
        let token = token_from(self.token.as_ref(), self.token_file.as_deref())?;
        HttpClient::new(&self.url, token.as_ref().map(Secret::expose), &opts)
            .with_context(|| format!("connecting to {}", self.url))
    }
}

/// The environment variable read when neither `--token` nor `--token-file` is given.
pub const TOKEN_ENV: &str = "AUDITLOG_TOKEN";

/// The bearer token: `--token-file`'s one line, else `--token`, else `AUDITLOG_TOKEN`,
/// else none. The two flags exclude each other (clap checks); the variable is read here
/// rather than by clap so that a `--token-file` overrides it instead of conflicting with it.
pub fn token_from(token: Option<&Secret>, file: Option<&Path>) -> anyhow::Result<Option<Secret>> {
    match (file, token) {
        (Some(path), _) => read_token_file(path).map(Some),
        (None, Some(t)) => Ok(Some(t.clone())),
        (None, None) => Ok(std::env::var(TOKEN_ENV)
            .ok()
            .filter(|t| !t.is_empty())
            .map(Secret::new)),
    }
}

/// Reads a token file: one line, its line break (LF or CRLF) and surrounding blanks ignored.
pub fn read_token_file(path: &Path) -> anyhow::Result<Secret> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading token file {}", path.display()))?;
    let token = text.trim();
    if token.is_empty() {
        bail!("token file {} is empty", path.display());
    }
    if token.contains(['\n', '\r']) {
        // `initial-tokens` holds one `<role> <token>` line per role.
        bail!(
            "token file {} holds more than one line; put the one token in a file of its own",
            path.display()
        );
    }
    Ok(Secret::new(token))
}

/// A verifier key given as `name+keyid+base64`, or `@FILE` holding one.
pub fn load_key(arg: &str) -> anyhow::Result<VerifierKey> {
    let text = match arg.strip_prefix('@') {
        Some(file) => {
            std::fs::read_to_string(file).with_context(|| format!("reading key file {file}"))?
        }
        None => arg.to_string(),
    };
    VerifierKey::parse(text.trim()).context("parsing the verifier key")
}

#[derive(clap::Args, Debug)]
pub struct SendArgs {
    /// File of events: one JSON object, or NDJSON (one per line). `-` or nothing: stdin.
    pub file: Option<PathBuf>,
    /// Events per request.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Bytes per request at most (keep under the server's `body_bytes_max`).
    #[arg(long, default_value_t = 1 << 20)]
    pub batch_bytes_max: usize,
    /// Append each receipt (index, leaf_hash, received_at_unix_ns) as a JSON line here.
    #[arg(long)]
    pub receipts: Option<PathBuf>,
    /// Retries of a request the server refuses for back-pressure (429 / 503).
    #[arg(long, default_value_t = 5)]
    pub retries_max: u32,
}

/// A line longer than this cannot hold an event the server would take; reading stops there
/// instead of buffering an unbounded line.
const LINE_BYTES_MAX: u64 = PAYLOAD_BYTES_MAX as u64 + 4096;
/// Inputs at least this large get a progress bar on a terminal.
const PROGRESS_BYTES_MIN: u64 = 1 << 20;
/// First wait before retrying a 429 / 503; doubled per retry.
const RETRY_WAIT_MS_FIRST: u64 = 200;

/// Counts bytes as they are read, for the progress bar.
struct Counting<R> {
    inner: R,
    bar: Option<indicatif::ProgressBar>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(b) = &self.bar {
            b.inc(n as u64);
        }
        Ok(n)
    }
}

fn progress_bar(len: Option<u64>) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() || len.is_some_and(|n| n < PROGRESS_BYTES_MIN) {
        return None;
    }
    let (bar, template) = match len {
        Some(n) => (
            indicatif::ProgressBar::new(n),
            "sending {bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        ),
        None => (
            indicatif::ProgressBar::new_spinner(),
            "sending {spinner} {bytes} {bytes_per_sec}",
        ),
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    Some(bar)
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if !first.is_ascii_whitespace() {
            break;
        }
        s = rest;
    }
    while let [rest @ .., last] = s {
        if !last.is_ascii_whitespace() {
            break;
        }
        s = rest;
    }
    s
}

fn is_json(bytes: &[u8]) -> bool {
    serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok()
}

/// `json` without the whitespace outside its strings (whitespace inside strings is
/// escaped in valid JSON, so it never holds a raw line break).
fn compact_json(json: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for &b in json {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if b == b'"' {
            in_string = true;
        } else if matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            continue;
        }
        out.push(b);
    }
    out
}

/// What has been sent so far, for the summary and for a failure's report.
#[derive(Default)]
struct Sent {
    events: u64,
    batches: u64,
    first_index: Option<u64>,
    last_index: Option<u64>,
}

impl Sent {
    fn stored(&self) -> String {
        match (self.first_index, self.last_index) {
            (Some(f), Some(l)) => format!(
                "{} events in {} requests were stored before it (indexes {f}..={l})",
                self.events, self.batches
            ),
            _ => "no event was stored before it".to_string(),
        }
    }

    fn add(&mut self, receipts: &[Receipt]) {
        if let (Some(first), Some(last)) = (receipts.first(), receipts.last()) {
            self.first_index.get_or_insert(first.index);
            self.last_index = Some(last.index);
        }
        self.events += receipts.len() as u64;
        self.batches += 1;
    }
}

/// A batch being filled: events and the input line each came from.
#[derive(Default)]
struct Pending {
    events: Vec<Vec<u8>>,
    lines: Vec<u64>,
    bytes: usize,
}

impl Pending {
    fn add(&mut self, line_no: u64, event: &[u8]) {
        self.bytes += event.len() + 1;
        self.events.push(event.to_vec());
        self.lines.push(line_no);
    }

    fn clear(&mut self) {
        self.events.clear();
        self.lines.clear();
        self.bytes = 0;
    }
}

/// Sends with retries on back-pressure; any other refusal is returned as is.
fn with_retries<T>(
    retries_max: u32,
    mut f: impl FnMut() -> Result<T, HttpError>,
) -> Result<T, HttpError> {
    let mut wait = RETRY_WAIT_MS_FIRST;
    let mut tries = 0;
    loop {
        match f() {
            Err(e) if matches!(e.status(), Some(429 | 503)) && tries < retries_max => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(wait));
                wait *= 2;
            }
            r => return r,
        }
    }
}

/// The event a 400 names ("event K refused: …"), as its position in the request.
fn refused_position(e: &HttpError) -> Option<usize> {
    let HttpError::Api { message, .. } = e else {
        return None;
    };
    message
        .strip_prefix("event ")?
        .split(' ')
        .next()?
        .parse()
        .ok()
}

pub fn send(conn: &Conn, args: &SendArgs) -> anyhow::Result<()> {
    if args.batch == 0 {
        bail!("--batch must be at least 1");
    }
    let client = conn.client()?;
    let (input, len, name): (Box<dyn Read>, Option<u64>, String) = match &args.file {
        Some(p) if p.as_os_str() != "-" => {
            let f = File::open(p).with_context(|| format!("opening {}", p.display()))?;
            let len = f.metadata().ok().map(|m| m.len());
            (Box::new(f), len, p.display().to_string())
        }
        _ => (Box::new(std::io::stdin().lock()), None, "stdin".to_string()),
    };
    let bar = progress_bar(len);
    let mut reader = BufReader::with_capacity(
        1 << 20,
        Counting {
            inner: input,
            bar: bar.clone(),
        },
    );
    let mut sink = match &args.receipts {
        Some(p) => Some(
            Receipts::create(p)
                .with_context(|| format!("opening receipts file {}", p.display()))?,
        ),
        None => None,
    };
    let mut sent = Sent::default();
    let result = send_all(
        &mut reader,
        &mut Outbox {
            client: &client,
            args,
            name: &name,
            sink: &mut sink,
            sent: &mut sent,
            pending: Pending::default(),
        },
    );
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    if let Some(s) = sink {
        let p = s.path().display().to_string();
        s.finish()
            .with_context(|| format!("writing receipts file {p}"))?;
    }
    result?;
    match (sent.first_index, sent.last_index) {
        (Some(f), Some(l)) => println!(
            "sent {} events in {} requests: indexes {f}..={l}{}",
            sent.events,
            sent.batches,
            match &args.receipts {
                Some(p) => format!(", receipts in {}", p.display()),
                None => String::new(),
            }
        ),
        _ => bail!("{name} holds no event"),
    }
    Ok(())
}

/// Where events go: batched by size and count, each batch's receipts kept.
struct Outbox<'a> {
    client: &'a HttpClient,
    args: &'a SendArgs,
    /// The input's name, for messages.
    name: &'a str,
    sink: &'a mut Option<Receipts>,
    sent: &'a mut Sent,
    pending: Pending,
}

impl Outbox<'_> {
    /// Adds one event: the pending batch is sent first if the event would take it over
    /// `batch_bytes_max`, and after if it then holds `batch` events.
    fn push(&mut self, line_no: u64, event: &[u8]) -> anyhow::Result<()> {
        if !self.pending.events.is_empty()
            && self.pending.bytes + event.len() + 1 > self.args.batch_bytes_max
        {
            self.flush()?;
        }
        self.pending.add(line_no, event);
        if self.pending.events.len() >= self.args.batch {
            self.flush()?;
        }
        Ok(())
    }

    /// Sends the pending batch, keeps its receipts, and on a refusal names the batch, the
    /// input line the server pointed at, and what was stored before it.
    fn flush(&mut self) -> anyhow::Result<()> {
        let pending = &self.pending;
        if pending.events.is_empty() {
            return Ok(());
        }
        let refs: Vec<&[u8]> = pending.events.iter().map(Vec::as_slice).collect();
        let batch_no = self.sent.batches + 1;
        let (first_line, last_line) = (pending.lines[0], pending.lines[pending.lines.len() - 1]);
        match with_retries(self.args.retries_max, || self.client.send_events(&refs)) {
            Ok(receipts) => {
                self.keep(&receipts)?;
                self.pending.clear();
                Ok(())
            }
            Err(e) => {
                let name = self.name;
                let at = refused_position(&e)
                    .and_then(|k| pending.lines.get(k))
                    .map(|l| format!(" at {name} line {l}"))
                    .unwrap_or_default();
                bail!(
                    "batch {batch_no} ({name} lines {first_line}..={last_line}) refused{at}: {e}; \
                     nothing of this batch or after it was stored; {}",
                    self.sent.stored()
                )
            }
        }
    }

    /// Sends one JSON object written over several lines as one line. The server takes an
    /// event only as one line: the whitespace between tokens is dropped, nothing else, so
    /// keys keep their order and numbers their spelling.
    fn send_one_object(&mut self, held: Held) -> anyhow::Result<()> {
        let name = self.name;
        let event = compact_json(trim(&held.whole));
        eprintln!(
            "{name}: one JSON object over {} lines, sent as one line of {} bytes \
             (its receipt covers those bytes)",
            held.lines.len(),
            event.len()
        );
        let r = with_retries(self.args.retries_max, || self.client.send_event(&event))
            .with_context(|| format!("{name}: the event was refused"))?;
        self.keep(std::slice::from_ref(&r))
    }

    /// Writes receipts to the receipts file and counts them as sent.
    fn keep(&mut self, receipts: &[Receipt]) -> anyhow::Result<()> {
        if let Some(s) = self.sink.as_mut() {
            s.append(receipts)
                .with_context(|| format!("writing receipts file {}", s.path().display()))?;
        }
        self.sent.add(receipts);
        Ok(())
    }
}

/// Reads one line of at most `LINE_BYTES_MAX + 1` bytes; 0 at the end of the input.
fn read_line(reader: &mut dyn BufRead, name: &str, line: &mut Vec<u8>) -> anyhow::Result<usize> {
    reader
        .take(LINE_BYTES_MAX + 1)
        .read_until(b'\n', line)
        .with_context(|| format!("reading {name}"))
}

/// Lines held after a first line that is not a JSON value on its own.
struct Held {
    /// Each line with its number, the first included.
    lines: Vec<(u64, Vec<u8>)>,
    /// All of them joined.
    whole: Vec<u8>,
    /// The input ended (rather than growing too long to be one event).
    ended: bool,
}

/// Holds the lines after `first` until the input ends or is too long to be one event.
fn hold_lines(
    reader: &mut dyn BufRead,
    name: &str,
    first: &[u8],
    line_no: &mut u64,
) -> anyhow::Result<Held> {
    let mut held = Held {
        lines: vec![(*line_no, first.to_vec())],
        whole: first.to_vec(),
        ended: false,
    };
    while held.whole.len() as u64 <= LINE_BYTES_MAX {
        let mut l = Vec::new();
        if read_line(reader, name, &mut l)? == 0 {
            held.ended = true;
            break;
        }
        *line_no += 1;
        if l.len() as u64 > LINE_BYTES_MAX {
            bail!("{name} line {line_no}: over {LINE_BYTES_MAX} bytes, larger than any event the server takes");
        }
        held.whole.extend_from_slice(&l);
        held.lines.push((*line_no, l));
    }
    Ok(held)
}

/// Sends every event of the input: NDJSON batched, or one JSON object over several lines.
fn send_all(reader: &mut dyn BufRead, out: &mut Outbox<'_>) -> anyhow::Result<()> {
    let name = out.name;
    let mut line_no = 0u64;
    let mut line = Vec::new();
    let mut first = true;
    loop {
        line.clear();
        if read_line(reader, name, &mut line)? == 0 {
            break;
        }
        line_no += 1;
        if line.len() as u64 > LINE_BYTES_MAX {
            bail!(
                "{name} line {line_no}: over {LINE_BYTES_MAX} bytes, larger than any event \
                 the server takes; {}",
                out.sent.stored()
            );
        }
        let event = trim(&line);
        if event.is_empty() {
            continue;
        }
        if first && !is_json(event) {
            // Not a complete JSON value on its own: maybe one object over several lines.
            let held = hold_lines(reader, name, &line, &mut line_no)?;
            if held.ended && is_json(trim(&held.whole)) {
                return out.send_one_object(held);
            }
            // Not one object either: send it line by line and let the server name the line.
            for (n, l) in held.lines {
                let e = trim(&l);
                if !e.is_empty() {
                    out.pending.add(n, e);
                }
            }
            first = false;
            continue;
        }
        first = false;
        out.push(line_no, event)?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compacting_keeps_strings_and_order() {
        let pretty = b"{\n  \"b\": \"x y\\\" \\n\",\n  \"a\": [1, 2.50]\r\n}";
        assert_eq!(
            compact_json(pretty),
            br#"{"b":"x y\" \n","a":[1,2.50]}"#.to_vec()
        );
        assert!(is_json(&compact_json(pretty)));
    }
}

#[derive(clap::Args, Debug)]
pub struct GetArgs {
    /// The event's index.
    pub index: u64,
    /// Write the exact record bytes (what the leaf hash covers) instead of JSON.
    #[arg(long)]
    pub record: bool,
    /// Write to this file instead of stdout.
    #[arg(long, short = 'o')]
    pub output: Option<PathBuf>,
}

pub fn get(conn: &Conn, args: &GetArgs) -> anyhow::Result<()> {
    let client = conn.client()?;
    let bytes = if args.record {
        client.get_record(args.index)?
    } else {
        let mut t = client.get_event(args.index)?;
        t.push('\n');
        t.into_bytes()
    };
    match &args.output {
        Some(p) => std::fs::write(p, &bytes).with_context(|| format!("writing {}", p.display())),
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(&bytes)
                .and_then(|()| out.flush())
                .context("writing to stdout")
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct CheckpointArgs {
    /// Wait for a checkpoint covering at least this many events.
    #[arg(long)]
    pub min_size: Option<u64>,
    /// How long the server may wait for it, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub wait_ms: u64,
    /// Verify the signature with this verifier key (`name+keyid+base64` or @FILE).
    #[arg(long, env = "AUDITLOG_VERIFIER_KEY")]
    pub key: Option<String>,
    #[command(flatten)]
    pub witnesses: crate::witness::WitnessArgs,
}

/// Prints the note on stdout (so it can be saved for `prove --since`); what was verified
/// goes to stderr.
pub fn checkpoint(conn: &Conn, args: &CheckpointArgs) -> anyhow::Result<()> {
    let client = conn.client()?;
    let text = client.checkpoint(args.min_size, args.wait_ms)?;
    // With --key the note is printed only once it verified, so what lands in a file an
    // auditor keeps (`prove --since`, `verify --since`) is never an unchecked note.
    if let Some(k) = &args.key {
        let key = load_key(k)?;
        match note::open_checkpoint(&text, std::slice::from_ref(&key)) {
            Ok((cp, _)) => eprintln!(
                "verified: signed by {key}; origin {}, size {}, root {}",
                cp.origin,
                cp.size,
                to_hex(&cp.root)
            ),
            Err(e) => bail!("checkpoint signature check with key {key} FAILED: {e}"),
        }
    }
    if let Some(policy) = args.witnesses.policy()? {
        let line = policy
            .check(&text)
            .context("checkpoint cosignature check FAILED")?;
        eprintln!("witnesses: {line}");
    }
    print!("{text}");
    std::io::stdout().flush().context("writing to stdout")?;
    Ok(())
}
