//! `--witness KEY` (repeatable) and `--witness-policy K` for `prove` and `verify`: the
//! checkpoint the auditor relies on must carry valid cosignatures (c2sp.org/tlog-cosignature)
//! from at least K distinct listed witnesses, so a log showing this auditor a different tree
//! than everyone else would need K witnesses to collude.

use anyhow::{bail, Context};
use auditlog_formats::cosignature::{require_cosignatures, WitnessKey};

#[derive(clap::Args, Debug, Clone, Default)]
pub struct WitnessArgs {
    /// A witness's verifier key (`name+keyid+base64`, type 0x04, or @FILE holding one);
    /// repeatable. The checkpoint must be cosigned by --witness-policy of them.
    #[arg(long = "witness", value_name = "KEY")]
    pub witness: Vec<String>,
    /// How many distinct --witness keys must have validly cosigned (default: all given).
    #[arg(long, value_name = "K", requires = "witness")]
    pub witness_policy: Option<usize>,
}

/// The witness keys and the policy, checked: distinct keys, 1 <= K <= their number.
#[derive(Debug, Clone)]
pub struct WitnessPolicy {
    pub keys: Vec<WitnessKey>,
    pub need: usize,
}

impl WitnessArgs {
    /// `None` when no --witness was given.
    pub fn policy(&self) -> anyhow::Result<Option<WitnessPolicy>> {
        if self.witness.is_empty() {
            return Ok(None);
        }
        let mut keys: Vec<WitnessKey> = Vec::new();
        for arg in &self.witness {
            let text = match arg.strip_prefix('@') {
                Some(file) => std::fs::read_to_string(file)
                    .with_context(|| format!("reading witness key file {file}"))?,
                None => arg.clone(),
            };
            let key = WitnessKey::parse(text.trim())
                .with_context(|| format!("parsing the witness key {:?}", text.trim()))?;
            // The same witness given twice is one witness.
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        let need = self.witness_policy.unwrap_or(keys.len());
        if need == 0 || need > keys.len() {
            bail!(
                "--witness-policy {need}: must be between 1 and the {} distinct witness key(s) given",
                keys.len()
            );
        }
        Ok(Some(WitnessPolicy { keys, need }))
    }
}

impl WitnessPolicy {
    /// Checks the signed checkpoint note; returns a line naming who cosigned.
    pub fn check(&self, note: &str) -> anyhow::Result<String> {
        let valid = require_cosignatures(note, &self.keys, self.need)?;
        let names: Vec<&str> = valid.iter().map(|v| self.keys[v.witness].name()).collect();
        Ok(format!(
            "{} of {} required cosignatures OK ({})",
            valid.len(),
            self.need,
            names.join(", ")
        ))
    }
}
