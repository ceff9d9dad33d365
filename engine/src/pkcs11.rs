//! A checkpoint signer whose Ed25519 key lives in an HSM, reached over PKCS#11 (`cryptoki`).
//! Pure Ed25519: `CKM_EDDSA` without parameters, which SoftHSM2 and the common HSMs accept.
//!
//! The public key is read from the token when the signer is opened; every signature is
//! checked against it (`sign_checkpoint`), so a faulty HSM cannot publish a bad checkpoint.
//! The PIN comes from an environment variable or a file, never from the configuration file,
//! and is never logged.
//!
//! One session, behind a mutex. The checkpointer and the sealer are the only callers and both
//! sign rarely (once per checkpoint interval, once per sealed segment), so serialising them
//! costs nothing, and a PKCS#11 session must not be used by two threads at once. On any
//! failure the session and the library context are dropped (the library is finalised once
//! nothing uses it) and the next call connects from scratch: load, initialise, find the token,
//! log in, find the key, check it is still the same key.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use auditlog_formats::note::VerifierKey;
use cryptoki::context::{CInitializeArgs, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};
use crate::signer::Signer;

/// DER of the OID 1.3.101.112 (id-Ed25519), the `CKA_EC_PARAMS` of an Ed25519 key.
const ED25519_OID_DER: [u8; 5] = [0x06, 0x03, 0x2b, 0x65, 0x70];

/// Where the PIN comes from. Only the name of the variable or file is configured.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PinSource {
    Env(String),
    File(PathBuf),
    /// The PIN itself, read once at start: the daemon reads `Env`'s variable and removes
    /// it from its environment (see [`PinSource::take_from_env`]), then keeps the text here
    /// for reconnecting to the token. Prints `<redacted>` in `Debug`; never serialised.
    #[serde(skip)]
    Value(auditlog_formats::Secret),
}

impl PinSource {
    fn read(&self) -> std::result::Result<String, Pkcs11Error> {
        match self {
            PinSource::Env(var) => std::env::var(var).map_err(|_| Pkcs11Error::PinUnavailable {
                what: format!("environment variable {var} is not set"),
            }),
            // Mode 0600 or stricter; a link is followed, as the operator chose the place
            // (container platforms mount secrets through links) and a swapped link could
            // only make the login fail.
            PinSource::File(path) => crate::private::read_private_file_following(path)
                .map_err(|e| Pkcs11Error::PinUnavailable {
                    what: e.to_string(),
                })
                .and_then(|bytes| {
                    String::from_utf8(bytes).map_err(|_| Pkcs11Error::PinUnavailable {
                        what: format!("{}: not UTF-8", path.display()),
                    })
                })
                .map(|s| s.trim_end_matches(['\n', '\r']).to_string()),
            PinSource::Value(pin) => Ok(pin.expose().to_string()),
        }
    }

    /// For `Env`: reads the variable and removes it from the process environment, so that
    /// no child process inherits the PIN and no later reader of the environment finds it;
    /// returns the PIN as a `Value`. Other sources, and an unset variable (the error then
    /// comes, naming the variable, when a key in the HSM is opened), are returned as they
    /// are.
    ///
    /// Call it while the process has one thread only: changing the environment races with
    /// any other thread reading it (C code calling `getenv` included), which is why Rust
    /// 2024 makes `remove_var` unsafe. The copy the kernel made at `exec`
    /// (`/proc/<pid>/environ`, readable by the same user and root) is not changed.
    pub fn take_from_env(self) -> PinSource {
        let PinSource::Env(var) = &self else {
            return self;
        };
        match std::env::var(var) {
            Ok(pin) => {
                std::env::remove_var(var);
                PinSource::Value(auditlog_formats::Secret::new(pin))
            }
            Err(_) => self,
        }
    }
}

/// Which key on which token: public information, kept in the key history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pkcs11Spec {
    pub module: PathBuf,
    pub token_label: String,
    pub key_label: String,
}

/// What can go wrong reaching the HSM; each names what failed, so an operator knows what to fix.
#[derive(Debug, thiserror::Error)]
pub enum Pkcs11Error {
    #[error("PKCS#11 module {module}: cannot load it: {why}")]
    ModuleNotFound { module: PathBuf, why: String },
    #[error("PKCS#11 module {module}: no token labelled {label:?} (tokens present: {present})")]
    TokenMissing {
        module: PathBuf,
        label: String,
        present: String,
    },
    #[error("PKCS#11 token {label:?}: wrong PIN (login refused)")]
    WrongPin { label: String },
    #[error("PKCS#11 PIN unavailable: {what}")]
    PinUnavailable { what: String },
    #[error("PKCS#11 token {token:?}: no Ed25519 key labelled {key:?}")]
    KeyMissing { token: String, key: String },
    #[error("PKCS#11 token {token:?}: key {key:?}: {what}")]
    BadKey {
        token: String,
        key: String,
        what: String,
    },
    #[error("PKCS#11 {what}: {source}")]
    Device {
        what: &'static str,
        #[source]
        source: CkError,
    },
}

fn device(what: &'static str) -> impl FnOnce(CkError) -> Pkcs11Error {
    move |source| Pkcs11Error::Device { what, source }
}

fn contexts() -> &'static Mutex<HashMap<PathBuf, Pkcs11>> {
    static CONTEXTS: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    CONTEXTS.get_or_init(Default::default)
}

/// One library context per module path for the whole process: PKCS#11 allows one
/// `C_Initialize` per process, so two signers on one module must share it.
fn context(module: &Path) -> std::result::Result<Pkcs11, Pkcs11Error> {
    let mut map = contexts().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(c) = map.get(module) {
        return Ok(c.clone());
    }
    if !module.exists() {
        return Err(Pkcs11Error::ModuleNotFound {
            module: module.to_path_buf(),
            why: "no such file".into(),
        });
    }
    let ctx = Pkcs11::new(module).map_err(|e| Pkcs11Error::ModuleNotFound {
        module: module.to_path_buf(),
        why: e.to_string(),
    })?;
    ctx.initialize(CInitializeArgs::OsThreads)
        .map_err(device("C_Initialize"))?;
    map.insert(module.to_path_buf(), ctx.clone());
    Ok(ctx)
}

/// Forgets the shared context of `module` so a later connection re-initialises the library
/// (it is finalised when the last session holding it is dropped). Needed after the token
/// went away: some modules only rescan their slots in `C_Initialize`.
fn forget_context(module: &Path) {
    contexts()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(module);
}

struct Conn {
    session: Session,
    key: ObjectHandle,
}

pub struct Pkcs11Signer {
    spec: Pkcs11Spec,
    pin: PinSource,
    verifier: VerifierKey,
    conn: Mutex<Option<Conn>>,
}

impl Pkcs11Signer {
    /// Connects, logs in, finds the key and reads its public key. Every way this can fail is
    /// a distinct [`Pkcs11Error`].
    pub fn open(spec: Pkcs11Spec, pin: PinSource, name: &str) -> Result<Pkcs11Signer> {
        let (conn, public) = connect(&spec, &pin)?;
        let verifier = VerifierKey::new(name, public)
            .map_err(|e| EngineError::Signer(format!("key name {name:?}: {e}")))?;
        Ok(Pkcs11Signer {
            spec,
            pin,
            verifier,
            conn: Mutex::new(Some(conn)),
        })
    }

    pub fn spec(&self) -> &Pkcs11Spec {
        &self.spec
    }

    fn sign_with(&self, conn: &Conn, message: &[u8]) -> std::result::Result<[u8; 64], String> {
        let sig = conn
            .session
            .sign(&Mechanism::Eddsa(eddsa_pure()), conn.key, message)
            .map_err(|e| format!("C_Sign: {e}"))?;
        <[u8; 64]>::try_from(sig.as_slice())
            .map_err(|_| format!("C_Sign returned {} bytes, not 64", sig.len()))
    }
}

fn eddsa_pure() -> cryptoki::mechanism::eddsa::EddsaParams<'static> {
    cryptoki::mechanism::eddsa::EddsaParams::new(
        cryptoki::mechanism::eddsa::EddsaSignatureScheme::Pure,
    )
}

impl Signer for Pkcs11Signer {
    fn verifier_key(&self) -> VerifierKey {
        self.verifier.clone()
    }

    fn backend(&self) -> auditlog_formats::keyhistory::KeyBackend {
        auditlog_formats::keyhistory::KeyBackend::Pkcs11 {
            module: self.spec.module.display().to_string(),
            token_label: self.spec.token_label.clone(),
            key_label: self.spec.key_label.clone(),
        }
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
        let mut guard = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            let (conn, public) = connect(&self.spec, &self.pin).map_err(|e| {
                forget_context(&self.spec.module);
                EngineError::Signer(format!("reconnecting: {e}"))
            })?;
            if public.as_slice() != self.verifier.public_key() {
                return Err(EngineError::Signer(format!(
                    "token {:?} key {:?} now holds a different public key; refusing to sign",
                    self.spec.token_label, self.spec.key_label
                )));
            }
            tracing::info!("PKCS#11 token {:?}: reconnected", self.spec.token_label);
            *guard = Some(conn);
        }
        let conn = guard.as_ref().expect("connected above");
        match self.sign_with(conn, message) {
            Ok(sig) => Ok(sig.to_vec()),
            Err(why) => {
                // The session may be dead (token removed, device error): start over next time.
                *guard = None;
                forget_context(&self.spec.module);
                Err(EngineError::Signer(format!(
                    "PKCS#11 token {:?} key {:?}: {why}",
                    self.spec.token_label, self.spec.key_label
                )))
            }
        }
    }
}

impl From<Pkcs11Error> for EngineError {
    fn from(e: Pkcs11Error) -> EngineError {
        EngineError::Pkcs11(e)
    }
}

fn connect(
    spec: &Pkcs11Spec,
    pin: &PinSource,
) -> std::result::Result<(Conn, [u8; 32]), Pkcs11Error> {
    let ctx = context(&spec.module)?;
    let session = open_session(&ctx, spec)?;
    let pin = AuthPin::new(pin.read()?);
    match session.login(UserType::User, Some(&pin)) {
        Ok(()) => {}
        // Another session of this process already logged the token in.
        Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        Err(CkError::Pkcs11(
            RvError::PinIncorrect | RvError::PinInvalid | RvError::PinLenRange,
            _,
        )) => {
            return Err(Pkcs11Error::WrongPin {
                label: spec.token_label.clone(),
            })
        }
        Err(e) => return Err(device("C_Login")(e)),
    }
    let key = find_key(&session, spec, ObjectClass::PRIVATE_KEY)?;
    let public_handle = find_key(&session, spec, ObjectClass::PUBLIC_KEY)?;
    let public = read_public(&session, spec, public_handle)?;
    Ok((Conn { session, key }, public))
}

fn open_session(ctx: &Pkcs11, spec: &Pkcs11Spec) -> std::result::Result<Session, Pkcs11Error> {
    let slots = ctx
        .get_slots_with_token()
        .map_err(device("C_GetSlotList"))?;
    let mut present = Vec::new();
    for slot in slots {
        let info = match ctx.get_token_info(slot) {
            Ok(i) => i,
            Err(_) => continue,
        };
        let label = info.label().trim_end().to_string();
        if label == spec.token_label {
            return ctx.open_rw_session(slot).map_err(device("C_OpenSession"));
        }
        present.push(format!("{label:?}"));
    }
    Err(Pkcs11Error::TokenMissing {
        module: spec.module.clone(),
        label: spec.token_label.clone(),
        present: if present.is_empty() {
            "none".into()
        } else {
            present.join(", ")
        },
    })
}

fn find_key(
    session: &Session,
    spec: &Pkcs11Spec,
    class: ObjectClass,
) -> std::result::Result<ObjectHandle, Pkcs11Error> {
    let template = [
        Attribute::Class(class),
        Attribute::KeyType(KeyType::EC_EDWARDS),
        Attribute::Label(spec.key_label.as_bytes().to_vec()),
    ];
    let found = session
        .find_objects(&template)
        .map_err(device("C_FindObjects"))?;
    match found.as_slice() {
        [one] => Ok(*one),
        [] => Err(Pkcs11Error::KeyMissing {
            token: spec.token_label.clone(),
            key: spec.key_label.clone(),
        }),
        more => Err(Pkcs11Error::BadKey {
            token: spec.token_label.clone(),
            key: spec.key_label.clone(),
            what: format!("{} objects of one class share the label", more.len()),
        }),
    }
}

/// `CKA_EC_POINT` of an Ed25519 public key: the 32-byte key, DER-wrapped in an OCTET STRING
/// (`04 20 ‖ key`) by most modules, raw by a few.
fn read_public(
    session: &Session,
    spec: &Pkcs11Spec,
    handle: ObjectHandle,
) -> std::result::Result<[u8; 32], Pkcs11Error> {
    let attrs = session
        .get_attributes(handle, &[AttributeType::EcPoint])
        .map_err(device("C_GetAttributeValue"))?;
    let bad = |what: String| Pkcs11Error::BadKey {
        token: spec.token_label.clone(),
        key: spec.key_label.clone(),
        what,
    };
    let point = attrs
        .into_iter()
        .find_map(|a| match a {
            Attribute::EcPoint(p) => Some(p),
            _ => None,
        })
        .ok_or_else(|| bad("no CKA_EC_POINT".into()))?;
    let raw: &[u8] = match point.as_slice() {
        [0x04, 0x20, rest @ ..] if rest.len() == 32 => rest,
        p if p.len() == 32 => p,
        p => {
            return Err(bad(format!(
                "CKA_EC_POINT of {} bytes is not Ed25519",
                p.len()
            )))
        }
    };
    let mut out = [0u8; 32];
    out.copy_from_slice(raw);
    Ok(out)
}

/// Generates an Ed25519 key pair on the token (`CKM_EC_EDWARDS_KEY_PAIR_GEN`), private key
/// sensitive and not extractable. Refuses if a key with that label exists. Returns the
/// public key.
pub fn generate(spec: &Pkcs11Spec, pin: &PinSource) -> Result<[u8; 32]> {
    let ctx = context(&spec.module)?;
    let session = open_session(&ctx, spec)?;
    let pin_text = AuthPin::new(pin.read()?);
    match session.login(UserType::User, Some(&pin_text)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        Err(CkError::Pkcs11(
            RvError::PinIncorrect | RvError::PinInvalid | RvError::PinLenRange,
            _,
        )) => {
            return Err(Pkcs11Error::WrongPin {
                label: spec.token_label.clone(),
            }
            .into())
        }
        Err(e) => return Err(device("C_Login")(e).into()),
    }
    match find_key(&session, spec, ObjectClass::PRIVATE_KEY) {
        Err(Pkcs11Error::KeyMissing { .. }) => {}
        Ok(_) | Err(Pkcs11Error::BadKey { .. }) => {
            return Err(EngineError::Signer(format!(
                "token {:?} already holds a key labelled {:?}",
                spec.token_label, spec.key_label
            )))
        }
        Err(e) => return Err(e.into()),
    }
    let label = Attribute::Label(spec.key_label.as_bytes().to_vec());
    let public_template = [
        Attribute::Token(true),
        Attribute::Verify(true),
        Attribute::EcParams(ED25519_OID_DER.to_vec()),
        label.clone(),
    ];
    let private_template = [
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        label,
    ];
    session
        .generate_key_pair(
            &Mechanism::EccEdwardsKeyPairGen,
            &public_template,
            &private_template,
        )
        .map_err(device("C_GenerateKeyPair"))?;
    let public_handle = find_key(&session, spec, ObjectClass::PUBLIC_KEY)?;
    Ok(read_public(&session, spec, public_handle)?)
}
