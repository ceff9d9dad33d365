//! `auditlogd keys …` and `auditlogd tokens …`: offline key and token commands, run instead
//! of the daemon. Keys are generated where they will live (in the HSM, or a development key
//! file); adding one to the log is a rotation, approved under the two-person rule.

use std::path::PathBuf;

use anyhow::{bail, Context};
use auditlog_engine::keyhistory_path;
use auditlog_engine::{
    KeyBackend, KeyFileSigner, KeyHistory, PinSource, Pkcs11Spec, Signer, SignerConfig,
};
use auditlog_formats::note::VerifierKey;
use clap::Subcommand;

use crate::config::Config;

#[derive(Subcommand)]
pub enum Cmd {
    /// Generate a key, show the verifier key, list the key history.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Manage bearer tokens.
    #[command(subcommand)]
    Tokens(TokensCmd),
    /// Parse and validate a configuration file; print the effective values (secrets
    /// redacted), or exit non-zero naming the first bad field.
    CheckConfig { file: PathBuf },
}

#[derive(Subcommand)]
pub enum KeysCmd {
    /// Generate an Ed25519 key in the HSM (--pkcs11) or in a key file (--file PATH), create
    /// one in AWS KMS (--aws-kms) or adopt one in AWS KMS (--aws-kms --key-id), Google Cloud
    /// KMS (--gcp-kms) or Azure Key Vault (--azure-kv); print its verifier key and the
    /// `backend` to give a rotate_key request.
    Generate(Box<GenerateArgs>),
    /// Print the current verifier key(s) of the log.
    Show,
    /// Print the key history (keys.json).
    History,
}

// No doc comment here: the `Generate` subcommand's own is its help text.
#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("place").required(true)
    .args(["pkcs11", "file", "aws_kms", "gcp_kms", "azure_kv"])))]
pub struct GenerateArgs {
    #[arg(long)]
    pkcs11: bool,
    #[arg(long)]
    file: Option<PathBuf>,
    /// AWS KMS: creates a key (CreateKey) unless --key-id names one to adopt.
    #[arg(long)]
    aws_kms: bool,
    /// Google Cloud KMS: adopts the EC_SIGN_ED25519 key version --key-version.
    #[arg(long)]
    gcp_kms: bool,
    /// Azure Key Vault / Managed HSM: adopts the P-256 key --vault-key version --key-version
    /// in --vault-url.
    #[arg(long)]
    azure_kv: bool,
    /// AWS region (default: AWS_REGION).
    #[arg(long)]
    region: Option<String>,
    /// AWS key id, key ARN or alias of an existing key.
    #[arg(long)]
    key_id: Option<String>,
    /// AWS key spec of a created key: ed25519 (ECC_NIST_EDWARDS25519) or p256 (ECC_NIST_P256).
    #[arg(long, default_value = "ed25519")]
    key_spec: String,
    /// KMS endpoint when not the cloud's default (AWS, Google).
    #[arg(long)]
    endpoint: Option<String>,
    /// Google: the full key version name; Azure: the key version.
    #[arg(long)]
    key_version: Option<String>,
    #[arg(long)]
    vault_url: Option<String>,
    #[arg(long)]
    vault_key: Option<String>,
    /// PKCS#11 module (default: `[signer] pkcs11_module`).
    #[arg(long)]
    module: Option<PathBuf>,
    /// Token label (default: `[signer] token_label`).
    #[arg(long)]
    token_label: Option<String>,
    /// Label of the new key (required with --pkcs11).
    #[arg(long)]
    key_label: Option<String>,
    /// Environment variable holding the PIN (default: `[signer] pin_env` / `pin_file`).
    #[arg(long)]
    pin_env: Option<String>,
    /// Note key name (default: from the origin).
    #[arg(long)]
    name: Option<String>,
}

#[derive(Subcommand)]
pub enum TokensCmd {
    /// Add a token for a named person; prints it once (only its hash is kept).
    Add {
        #[arg(long)]
        role: String,
        #[arg(long)]
        name: String,
    },
    /// Revoke the token of a named holder: refused from the next start, and recorded in the
    /// log by it (`token_revoked`).
    Revoke {
        #[arg(long)]
        name: String,
    },
}

pub fn run(cmd: Cmd, cfg: &Config) -> anyhow::Result<()> {
    let data_dir = &cfg.engine.data_dir;
    // A flat dispatch table: each arm is a call or two.
    match cmd {
        Cmd::CheckConfig { file } => crate::check_config(&file),
        Cmd::Tokens(TokensCmd::Add { role, name }) => {
            crate::admin::tokens_add(data_dir, &role, &name)
        }
        Cmd::Tokens(TokensCmd::Revoke { name }) => {
            crate::auth::revoke_token(data_dir, &name)?;
            eprintln!("auditlogd: token of {name} revoked; restart the daemon to refuse it");
            Ok(())
        }
        Cmd::Keys(KeysCmd::History) => {
            let h = read_history(cfg)?;
            print!("{}", h.to_json());
            Ok(())
        }
        Cmd::Keys(KeysCmd::Show) => keys_show(cfg),
        Cmd::Keys(KeysCmd::Generate(a)) => keys_generate(cfg, *a),
    }
}

/// The log's current verifier key(s); with no log yet, the key it will be created with.
fn keys_show(cfg: &Config) -> anyhow::Result<()> {
    let data_dir = &cfg.engine.data_dir;
    let path = keyhistory_path(data_dir);
    if path.exists() {
        let h = read_history(cfg)?;
        for k in h.keys.iter().filter(|k| k.until_size.is_none()) {
            println!("{}", k.verifier_key);
        }
        return Ok(());
    }
    let key = match &cfg.engine.signer {
        SignerConfig::DevKeyFile => {
            let p = data_dir.join("keys/checkpoint.key");
            KeyFileSigner::load(&p)
                .with_context(|| format!("no log and no key at {}", p.display()))?
                .verifier_key()
        }
        SignerConfig::Pkcs11 { spec, name } => {
            let pin = cfg.engine.pkcs11_pin.clone().context("no PIN source")?;
            let name = name.clone().unwrap_or_else(|| default_name(cfg));
            auditlog_engine::Pkcs11Signer::open(spec.clone(), pin, &name)?.verifier_key()
        }
        SignerConfig::Kms { backend, name } => {
            let name = name.clone().unwrap_or_else(|| default_name(cfg));
            auditlog_engine::open_backend(backend, &name, data_dir, None)?.verifier_key()
        }
    };
    println!("{key}");
    Ok(())
}

/// Generates a key in a key file or the HSM and prints its verifier key and the
/// `backend` a rotate_key request names.
fn keys_generate(cfg: &Config, a: GenerateArgs) -> anyhow::Result<()> {
    let name = a.name.clone().unwrap_or_else(|| default_name(cfg));
    if let Some(path) = a.file {
        let key = KeyFileSigner::generate(&path, &name)?.verifier_key();
        println!("{key}");
        let backend = serde_json::json!({"type": "file", "path": path.display().to_string()});
        println!("backend: {backend}");
        return Ok(());
    }
    if a.aws_kms || a.gcp_kms || a.azure_kv {
        return kms_generate(cfg, a, &name);
    }
    if !a.pkcs11 {
        bail!("give --pkcs11, --file PATH, --aws-kms, --gcp-kms or --azure-kv");
    }
    let configured = match &cfg.engine.signer {
        SignerConfig::Pkcs11 { spec, .. } => Some(spec.clone()),
        SignerConfig::DevKeyFile | SignerConfig::Kms { .. } => None,
    };
    let spec = Pkcs11Spec {
        module: a
            .module
            .or_else(|| configured.as_ref().map(|s| s.module.clone()))
            .context("--module (or [signer] pkcs11_module) is needed")?,
        token_label: a
            .token_label
            .or_else(|| configured.as_ref().map(|s| s.token_label.clone()))
            .context("--token-label (or [signer] token_label) is needed")?,
        key_label: a.key_label.context("--key-label is needed")?,
    };
    let pin = match a.pin_env {
        // Read once and removed from the environment; still one thread here.
        Some(v) => PinSource::Env(v).take_from_env(),
        None => cfg
            .engine
            .pkcs11_pin
            .clone()
            .context("--pin-env (or [signer] pin_env / pin_file) is needed")?,
    };
    let public = auditlog_engine::pkcs11::generate(&spec, &pin)?;
    let key = VerifierKey::new(&name, public).context("key name")?;
    println!("{key}");
    let backend = serde_json::json!({"type": "pkcs11", "module": spec.module.display().to_string(), "token_label": spec.token_label, "key_label": spec.key_label});
    println!("backend: {backend}");
    Ok(())
}

/// Creates (AWS, without --key-id) or adopts a KMS key, reads its public key back and
/// prints its verifier key and backend.
fn kms_generate(cfg: &Config, a: GenerateArgs, name: &str) -> anyhow::Result<()> {
    let backend = if a.aws_kms {
        let region = a
            .region
            .or_else(|| std::env::var("AWS_REGION").ok())
            .context("--region (or AWS_REGION) is needed")?;
        let key_id = match a.key_id {
            Some(k) => k,
            None => {
                let spec = match a.key_spec.as_str() {
                    "ed25519" => auditlog_engine::kms::aws::KEY_SPEC_ED25519,
                    "p256" => auditlog_engine::kms::aws::KEY_SPEC_P256,
                    other => bail!("--key-spec {other:?}: expected ed25519 or p256"),
                };
                let env = auditlog_engine::kms::aws::AwsEnv::from_process();
                let description = format!("auditlog checkpoint key {name}");
                auditlog_engine::AwsKmsSigner::create(
                    &region,
                    a.endpoint.clone(),
                    spec,
                    &description,
                    env,
                )?
            }
        };
        KeyBackend::AwsKms {
            region,
            key_id,
            endpoint: a.endpoint,
        }
    } else if a.gcp_kms {
        KeyBackend::GcpKms {
            key_version: a.key_version.context("--key-version is needed")?,
            endpoint: a.endpoint,
        }
    } else {
        KeyBackend::AzureKeyVault {
            vault: a.vault_url.context("--vault-url is needed")?,
            key: a.vault_key.context("--vault-key is needed")?,
            version: a.key_version.context("--key-version is needed")?,
        }
    };
    let signer = auditlog_engine::open_backend(&backend, name, &cfg.engine.data_dir, None)?;
    println!("{}", signer.verifier_key());
    println!("backend: {}", serde_json::to_string(&backend)?);
    Ok(())
}

fn default_name(cfg: &Config) -> String {
    auditlog_formats::layout::default_key_name(&cfg.engine.origin)
}

fn read_history(cfg: &Config) -> anyhow::Result<KeyHistory> {
    let path = keyhistory_path(&cfg.engine.data_dir);
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let checked = KeyHistory::parse(&bytes).with_context(|| format!("{}", path.display()))?;
    Ok(checked.history)
}
