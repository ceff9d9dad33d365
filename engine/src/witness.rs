//! Witness cosigning (c2sp.org/tlog-witness): before a checkpoint is published, the
//! checkpointer submits it to every configured witness at once, each with a consistency
//! proof from the size that witness last cosigned, and publishes it only when at least
//! `policy` of them returned a valid cosignature, which is attached as an extra signature
//! line. Fewer: nothing is published, the checkpointer retries with its backoff, and
//! ingest goes on (acknowledgements never wait for checkpoints).
//!
//! Why: a log operator who could show one auditor one tree and another a different one (a
//! split view) cannot get both cosigned by honest witnesses, which refuse any checkpoint not
//! consistent with the last one they saw. An auditor that requires k cosignatures on the
//! checkpoint it pins needs k witnesses to collude before it can be shown a fork.
//!
//! Each witness's last cosigned size is kept in memory only: after a restart the first
//! request says 0, the witness answers 409 with its size, and the retry carries a proof from
//! there. Sealed segment footers are signed by the sealer without witnesses; a later
//! cosigned checkpoint covers them.

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use auditlog_formats::cosignature::{
    self, parse_response, parse_size_body, AddCheckpoint, WitnessKey, PROOF_LINES_MAX,
};
use auditlog_formats::note::{Checkpoint, NoteSignature};
use auditlog_formats::{Hash, TreeHash};
use serde::Deserialize;

use crate::error::{EngineError, Result};

/// Most witnesses configured: their lines and the log's must stay within a note's 100
/// signature lines (`note::MAX_SIGNATURES`), and each costs a request per checkpoint.
pub const WITNESSES_MAX: usize = 32;

/// `[witness]`: who cosigns checkpoints, and how many must before one is published.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WitnessConfig {
    pub witnesses: Vec<WitnessEntry>,
    /// Valid cosignatures (from distinct witnesses) a checkpoint needs to be published.
    pub policy: usize,
    /// Per `add-checkpoint` request, connection included.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Largest witness answer read; a bigger one counts as a failure of that witness.
    #[serde(default = "default_body_bytes_max")]
    pub body_bytes_max: u64,
}

fn default_timeout_ms() -> u64 {
    5_000
}

fn default_body_bytes_max() -> u64 {
    16 << 10
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WitnessEntry {
    /// The witness's submission prefix; requests go to `<url>/add-checkpoint`.
    pub url: String,
    /// Its verifier key, `name+id+base64(0x04 || key)` (c2sp.org/tlog-cosignature).
    pub key: String,
}

impl WitnessConfig {
    /// The parsed keys, after checking the policy can be met and the tree is one witnesses
    /// can check (RFC 6962 SHA-256).
    pub fn check(&self, tree_hash: TreeHash) -> std::result::Result<Vec<WitnessKey>, String> {
        if tree_hash != TreeHash::Sha256 {
            return Err(format!(
                "witness: witnesses check RFC 6962 SHA-256 trees; this log's tree hash is {}",
                tree_hash.name()
            ));
        }
        if self.witnesses.len() > WITNESSES_MAX {
            return Err(format!(
                "witness: {} witnesses listed, at most {WITNESSES_MAX}",
                self.witnesses.len()
            ));
        }
        if self.policy == 0 || self.policy > self.witnesses.len() {
            return Err(format!(
                "witness.policy = {}: must be between 1 and the {} witnesses listed",
                self.policy,
                self.witnesses.len()
            ));
        }
        let mut keys: Vec<WitnessKey> = Vec::new();
        for w in &self.witnesses {
            let k = WitnessKey::parse(&w.key).map_err(|e| format!("witness {}: {e}", w.url))?;
            if keys.iter().any(|p| p.name() == k.name()) {
                return Err(format!(
                    "witness {}: key name {} listed twice",
                    w.url,
                    k.name()
                ));
            }
            if !(w.url.starts_with("http://") || w.url.starts_with("https://")) {
                return Err(format!(
                    "witness {}: url must be http:// or https://",
                    w.url
                ));
            }
            keys.push(k);
        }
        Ok(keys)
    }
}

/// Why one witness did not cosign, as named in metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// No answer: connection refused, reset, timed out.
    Unreachable,
    /// 409 twice, or the witness cosigned a larger tree than this checkpoint's.
    Conflict,
    /// 422: the witness found the checkpoint inconsistent with what it cosigned (a fork).
    Inconsistent,
    /// Another status: 403 (our key unknown to it), 404 (our origin unknown), 400, 5xx.
    Refused,
    /// A 200 without a valid cosignature by its configured key over this checkpoint.
    BadCosignature,
}

impl Failure {
    pub const ALL: [Failure; 5] = [
        Failure::Unreachable,
        Failure::Conflict,
        Failure::Inconsistent,
        Failure::Refused,
        Failure::BadCosignature,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Failure::Unreachable => "unreachable",
            Failure::Conflict => "conflict",
            Failure::Inconsistent => "inconsistent",
            Failure::Refused => "refused",
            Failure::BadCosignature => "bad_cosignature",
        }
    }
}

struct Witness {
    url: String,
    key: WitnessKey,
    /// The size this witness last cosigned, as far as we know (0: unknown, or none).
    cosigned_size: AtomicU64,
    cosignatures: AtomicU64,
    failures: [AtomicU64; 5],
    last_error: Mutex<Option<String>>,
}

/// What `/ready` and `/metrics` say of one witness.
#[derive(Clone, Debug)]
pub struct WitnessStatus {
    pub name: String,
    pub url: String,
    pub cosignatures: u64,
    /// Per [`Failure::ALL`], in that order.
    pub failures: [(&'static str, u64); 5],
    pub cosigned_size: u64,
    pub last_error: Option<String>,
}

/// The configured witnesses and what is known of each.
pub struct Witnesses {
    witnesses: Vec<Witness>,
    policy: usize,
    agent: ureq::Agent,
    body_bytes_max: u64,
    /// Why the last checkpoint was not published, until one is.
    error: Mutex<Option<String>>,
}

impl Witnesses {
    pub fn new(cfg: &WitnessConfig, tree_hash: TreeHash) -> Result<Witnesses> {
        let keys = cfg.check(tree_hash).map_err(EngineError::Config)?;
        let timeout = Duration::from_millis(cfg.timeout_ms.max(1));
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(timeout)
            .timeout(timeout)
            // A cosignature request goes to the configured witness or nowhere.
            .redirects(0)
            .build();
        Ok(Witnesses {
            witnesses: cfg
                .witnesses
                .iter()
                .zip(keys)
                .map(|(w, key)| Witness {
                    url: w.url.trim_end_matches('/').to_string(),
                    key,
                    cosigned_size: AtomicU64::new(0),
                    cosignatures: AtomicU64::new(0),
                    failures: Default::default(),
                    last_error: Mutex::new(None),
                })
                .collect(),
            policy: cfg.policy,
            agent,
            body_bytes_max: cfg.body_bytes_max,
            error: Mutex::new(None),
        })
    }

    /// Submits `note` (the log-signed `checkpoint`) to every witness in parallel and returns
    /// it with the valid cosignatures appended, or an error naming each witness's failure
    /// when fewer than the policy cosigned. `prove(old, new)` is the log's consistency proof.
    pub fn cosign(
        &self,
        checkpoint: &Checkpoint,
        note: &str,
        prove: &(dyn Fn(u64, u64) -> Result<Vec<Hash>> + Sync),
    ) -> Result<String> {
        let text = checkpoint.to_text();
        let outcomes: Vec<std::result::Result<NoteSignature, (Failure, String)>> =
            std::thread::scope(|s| {
                let handles: Vec<_> = self
                    .witnesses
                    .iter()
                    .map(|w| s.spawn(|| self.submit(w, checkpoint, &text, note, prove)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("witness submission panicked"))
                    .collect()
            });
        let mut lines = Vec::new();
        let mut why = Vec::new();
        for (w, outcome) in self.witnesses.iter().zip(outcomes) {
            match outcome {
                Ok(line) => {
                    w.cosignatures.fetch_add(1, Ordering::Relaxed);
                    *lock(&w.last_error) = None;
                    lines.push(line);
                }
                Err((failure, detail)) => {
                    w.failures[failure as usize].fetch_add(1, Ordering::Relaxed);
                    let msg = format!("{} ({}): {}: {detail}", w.key.name(), w.url, failure.name());
                    *lock(&w.last_error) = Some(msg.clone());
                    why.push(msg);
                }
            }
        }
        if lines.len() < self.policy {
            let msg = format!(
                "checkpoint at size {} has {} of the {} cosignatures the witness policy needs: {}",
                checkpoint.size,
                lines.len(),
                self.policy,
                why.join("; ")
            );
            *lock(&self.error) = Some(msg.clone());
            return Err(EngineError::WitnessPolicy(msg));
        }
        if lock(&self.error).take().is_some() {
            tracing::info!("witness policy met again at size {}", checkpoint.size);
        }
        Ok(cosignature::attach(note, &lines))
    }

    /// One witness: at most two requests (the second after a 409 taught its size).
    fn submit(
        &self,
        w: &Witness,
        cp: &Checkpoint,
        text: &str,
        note: &str,
        prove: &(dyn Fn(u64, u64) -> Result<Vec<Hash>> + Sync),
    ) -> std::result::Result<NoteSignature, (Failure, String)> {
        let mut old = w.cosigned_size.load(Ordering::Relaxed);
        for attempt in 0..2 {
            if old > cp.size {
                return Err((
                    Failure::Conflict,
                    format!("the witness cosigned size {old}, larger than this checkpoint"),
                ));
            }
            let proof = if old == 0 || old == cp.size {
                Vec::new()
            } else {
                prove(old, cp.size).map_err(|e| (Failure::Refused, format!("proof: {e}")))?
            };
            assert!(
                proof.len() <= PROOF_LINES_MAX,
                "a 64-bit tree's proof has at most 63 hashes"
            );
            let body = AddCheckpoint {
                old_size: old,
                proof,
                note: note.to_string(),
            }
            .to_body();
            let (status, answer) = self.post(&format!("{}/add-checkpoint", w.url), &body)?;
            match status {
                200 => {
                    let sigs = parse_response(&answer)
                        .map_err(|e| (Failure::BadCosignature, e.to_string()))?;
                    w.cosigned_size.store(cp.size, Ordering::Relaxed);
                    let mine = sigs.iter().filter(|s| w.key.names(s));
                    for s in mine {
                        if w.key.verify(text, s).is_ok() {
                            return Ok(s.clone());
                        }
                    }
                    return Err((
                        Failure::BadCosignature,
                        "no line verifies with its key over this checkpoint".into(),
                    ));
                }
                409 if attempt == 0 => {
                    let Some(size) = parse_size_body(&answer) else {
                        return Err((Failure::Conflict, "409 without a size".into()));
                    };
                    w.cosigned_size.store(size, Ordering::Relaxed);
                    old = size;
                }
                409 => return Err((Failure::Conflict, "409 twice".into())),
                422 => return Err((Failure::Inconsistent, answer_text(status, &answer))),
                _ => return Err((Failure::Refused, answer_text(status, &answer))),
            }
        }
        unreachable!("the loop returns on its second pass")
    }

    /// Status and (bounded) body; transport failures are `Unreachable`.
    fn post(
        &self,
        url: &str,
        body: &str,
    ) -> std::result::Result<(u16, Vec<u8>), (Failure, String)> {
        let resp = match self.agent.post(url).send_string(body) {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => return Err((Failure::Unreachable, e.to_string())),
        };
        let status = resp.status();
        let mut answer = Vec::new();
        resp.into_reader()
            .take(self.body_bytes_max + 1)
            .read_to_end(&mut answer)
            .map_err(|e| (Failure::Unreachable, format!("reading the answer: {e}")))?;
        if answer.len() as u64 > self.body_bytes_max {
            return Err((
                Failure::Refused,
                format!("answer over {} bytes", self.body_bytes_max),
            ));
        }
        Ok((status, answer))
    }

    /// Why the newest checkpoint is not published, if the policy is why.
    pub fn error(&self) -> Option<String> {
        lock(&self.error).clone()
    }

    pub fn policy(&self) -> usize {
        self.policy
    }

    pub fn status(&self) -> Vec<WitnessStatus> {
        self.witnesses
            .iter()
            .map(|w| WitnessStatus {
                name: w.key.name().to_string(),
                url: w.url.clone(),
                cosignatures: w.cosignatures.load(Ordering::Relaxed),
                failures: Failure::ALL
                    .map(|f| (f.name(), w.failures[f as usize].load(Ordering::Relaxed))),
                cosigned_size: w.cosigned_size.load(Ordering::Relaxed),
                last_error: lock(&w.last_error).clone(),
            })
            .collect()
    }
}

fn answer_text(status: u16, body: &[u8]) -> String {
    let n = body.len().min(300);
    format!(
        "HTTP {status}: {}",
        String::from_utf8_lossy(&body[..n]).trim_end()
    )
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
