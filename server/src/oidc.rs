//! OIDC JWT sign-in for HTTP callers (`[auth.oidc]`, `oidc_config.rs`): a bearer value
//! that is a JWT is verified here instead of being looked up among the API tokens.
//!
//! The signature is checked by `jsonwebtoken` with a key from the IdP's JWKS, then `exp`
//! (required), `nbf`, `iss` and `aud`; the caller is `oidc:<sub>`, and its roles come from
//! the configured claim values. Before any key is touched the header is checked here:
//! `alg: none` and the HMAC algorithms are refused outright (an HMAC "verified" with a
//! public key as its secret is the key-confusion attack), and so is any algorithm not in
//! `algorithms`. Keys come only from the configured JWKS, never from the token (`jku`,
//! `jwk`, `x5u` and `x5c` are ignored).
//!
//! The JWKS is read (file) or fetched (URL, with ureq) on a thread of its own, never on the
//! async runtime: at start, every `jwks_refresh`, and when a token names a `kid` the set
//! lacks — at most once per `jwks_refetch_min`, so made-up kids cannot make the daemon
//! hammer the IdP. A document that cannot be read, is over `jwks_bytes_max`, or holds no
//! usable signature key is refused and the last good set kept (and the failure logged).

use std::io::Read;
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyOperations, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use serde_json::{Map, Value};
use tokio::sync::watch;

use crate::auth::{Access, AuthError, Role};
use crate::oidc_config::{JwksSource, OidcConfig, RoleRule};

/// Longest `sub` accepted, in bytes (the recorded `oidc:<sub>` stays far under the
/// submitter limit).
pub const SUBJECT_BYTES_MAX: usize = 255;

/// Whether a bearer value is shaped as a JWS compact serialization: three base64url parts
/// (the third may be empty, as in an `alg: none` token, which the verifier then refuses).
/// API tokens (hex) never are.
pub fn looks_like_jwt(t: &[u8]) -> bool {
    let mut parts = t.split(|b| *b == b'.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let b64url = |x: &[u8]| {
        x.iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
    };
    !h.is_empty() && !p.is_empty() && b64url(h) && b64url(p) && b64url(s)
}

/// One signature key of the JWKS.
struct Key {
    kid: Option<String>,
    /// The JWK's `alg`, when it names one: then only that algorithm.
    alg: Option<Algorithm>,
    /// An EC key's curve: ES256 needs P-256, ES384 P-384.
    curve: Option<EllipticCurve>,
    key: DecodingKey,
}

impl Key {
    fn fits(&self, alg: Algorithm) -> bool {
        self.key.family() == alg.family()
            && self.alg.is_none_or(|a| a == alg)
            && match self.curve {
                Some(EllipticCurve::P256) => alg == Algorithm::ES256,
                Some(EllipticCurve::P384) => alg == Algorithm::ES384,
                _ => true,
            }
    }
}

/// The usable keys of one good JWKS document.
pub struct KeySet {
    keys: Vec<Key>,
}

impl KeySet {
    fn empty() -> KeySet {
        KeySet { keys: Vec::new() }
    }

    /// Whether a token naming `kid` (or none) has a key here to look at.
    fn knows(&self, kid: Option<&str>) -> bool {
        match kid {
            Some(k) => self.keys.iter().any(|key| key.kid.as_deref() == Some(k)),
            None => !self.keys.is_empty(),
        }
    }

    /// The kids, for the log.
    fn kids(&self) -> Vec<&str> {
        self.keys
            .iter()
            .map(|k| k.kid.as_deref().unwrap_or("-"))
            .collect()
    }
}

fn b64(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .ok()
}

/// The keys of a JWKS document. Keys that are not for signatures (`use` other than `sig`,
/// `key_ops` without `verify`), symmetric (`oct`: a secret has no place in a public set),
/// of a type, curve or size the verifier does not take, or malformed are skipped; a
/// document with none left is refused.
pub fn parse_jwks(bytes: &[u8]) -> Result<KeySet, String> {
    let doc: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    let Some(entries) = doc.get("keys").and_then(Value::as_array) else {
        return Err("not a JWKS: no \"keys\" array".into());
    };
    let keys: Vec<Key> = entries.iter().filter_map(parse_key).collect();
    if keys.is_empty() {
        return Err(format!(
            "no usable signature key among its {} keys",
            entries.len()
        ));
    }
    Ok(KeySet { keys })
}

fn parse_key(v: &Value) -> Option<Key> {
    let jwk: Jwk = serde_json::from_value(v.clone()).ok()?;
    let c = &jwk.common;
    if c.public_key_use
        .as_ref()
        .is_some_and(|u| *u != PublicKeyUse::Signature)
    {
        return None;
    }
    if c.key_operations
        .as_ref()
        .is_some_and(|ops| !ops.contains(&KeyOperations::Verify))
    {
        return None;
    }
    let alg = match c.key_algorithm {
        None => None,
        Some(a) => Some(
            Algorithm::try_from(a)
                .ok()
                .filter(|a| a.family() != AlgorithmFamily::Hmac)?,
        ),
    };
    // Sizes checked here: the crypto backend indexes an Ed25519 key without checking.
    let curve = match &jwk.algorithm {
        AlgorithmParameters::RSA(p) => {
            let n = b64(&p.n)?;
            let n: Vec<u8> = n.into_iter().skip_while(|b| *b == 0).collect();
            let bits = n.len() * 8 - n.first().map_or(8, |b| b.leading_zeros() as usize);
            if !(2048..=4096).contains(&bits) || b64(&p.e)?.is_empty() {
                return None;
            }
            None
        }
        AlgorithmParameters::EllipticCurve(p) => {
            let len = match p.curve {
                EllipticCurve::P256 => 32,
                EllipticCurve::P384 => 48,
                _ => return None,
            };
            if b64(&p.x)?.len() != len || b64(&p.y)?.len() != len {
                return None;
            }
            Some(p.curve.clone())
        }
        AlgorithmParameters::OctetKeyPair(p) => {
            if p.curve != EllipticCurve::Ed25519 || b64(&p.x)?.len() != 32 {
                return None;
            }
            None
        }
        _ => return None,
    };
    let key = DecodingKey::from_jwk(&jwk).ok()?;
    Some(Key {
        kid: c.key_id.clone(),
        alg,
        curve,
        key,
    })
}

/// Unknown-kid refetches: when the last was asked for, and whether one is under way.
#[derive(Default)]
struct Refetch {
    last: Option<Instant>,
    pending: bool,
}

struct Shared {
    cfg: OidcConfig,
    /// The key set in use; every read or fetch that ends sends (waiters wake on a failed
    /// one too).
    current: watch::Sender<Arc<KeySet>>,
    refetch: Mutex<Refetch>,
}

/// The verifier, with its key set kept fresh by a thread of its own.
pub struct Oidc {
    shared: Arc<Shared>,
    /// Wakes the JWKS thread for an unknown-kid refetch; dropped, the thread ends.
    wake: SyncSender<()>,
}

/// A verified sign-in: the subject and the roles its claims map to (maybe none).
#[derive(Debug, PartialEq, Eq)]
pub struct Identity {
    pub subject: String,
    pub roles: Vec<Role>,
}

impl Oidc {
    /// Reads a `jwks_file` now (a bad one stops the start), or starts fetching `jwks_url`
    /// (tokens that arrive before the first fetch ends wait for it); then keeps the set
    /// fresh on its own thread.
    pub fn start(cfg: OidcConfig) -> anyhow::Result<Oidc> {
        let (set, fetch_now) = match &cfg.jwks {
            JwksSource::File(p) => {
                let set = load(&cfg, None)
                    .map_err(|e| anyhow::anyhow!("auth.oidc.jwks_file {}: {e}", p.display()))?;
                tracing::info!("OIDC: JWKS {} read: keys {:?}", p.display(), set.kids());
                (set, false)
            }
            JwksSource::Url(_) => (KeySet::empty(), true),
        };
        let shared = Arc::new(Shared {
            cfg,
            current: watch::Sender::new(Arc::new(set)),
            refetch: Mutex::new(Refetch {
                last: None,
                pending: fetch_now,
            }),
        });
        let (wake, woken) = sync_channel(1);
        let s = shared.clone();
        std::thread::Builder::new()
            .name("auditlogd-jwks".into())
            .spawn(move || refresher(s, woken, fetch_now))
            .map_err(|e| anyhow::anyhow!("starting the JWKS thread: {e}"))?;
        Ok(Oidc { shared, wake })
    }

    /// The role `access` needs among the caller's, and who the caller is (`sub`). A valid
    /// token whose claims map to no role is `AuthError::NoRole` (403).
    pub async fn check(&self, token: &[u8], access: Access) -> Result<(Role, String), AuthError> {
        let id = self.verify(token).await?;
        match id.roles.iter().copied().find(|r| access.allows(*r)) {
            Some(role) => Ok((role, id.subject)),
            None => match id.roles.first() {
                Some(role) => Err(AuthError::Forbidden(*role)),
                None => Err(AuthError::NoRole),
            },
        }
    }

    /// Verifies a JWT: header, key, signature, claims; then maps its claims to roles.
    pub async fn verify(&self, token: &[u8]) -> Result<Identity, AuthError> {
        let cfg = &self.shared.cfg;
        let (alg, kid) = check_header(token, &cfg.algorithms)?;
        let mut set = self.shared.current.borrow().clone();
        if !set.knows(kid.as_deref()) {
            set = self.refetch_for(kid.as_deref()).await;
        }
        if set.keys.is_empty() {
            return Err(AuthError::Unauthenticated(
                "OIDC token: no signing keys loaded (the JWKS could not be read)",
            ));
        }
        let candidates: Vec<&Key> = set
            .keys
            .iter()
            .filter(|k| kid.is_none() || k.kid == kid)
            .collect();
        if candidates.is_empty() {
            return Err(AuthError::Unauthenticated(
                "OIDC token: unknown key id (its kid is not in the JWKS)",
            ));
        }
        let mut validation = Validation::new(alg);
        validation.set_issuer(&[&cfg.issuer]);
        validation.set_audience(&[&cfg.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.leeway = cfg.leeway_s;
        let mut refused = "OIDC token: the key for its kid is not for its algorithm";
        for key in candidates.into_iter().filter(|k| k.fits(alg)) {
            match jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation) {
                Ok(data) => return identity(&data.claims, &cfg.roles),
                // Without a kid every fitting key is tried.
                Err(e) if kid.is_none() && *e.kind() == ErrorKind::InvalidSignature => {
                    refused = reason(e.kind());
                }
                Err(e) => return Err(AuthError::Unauthenticated(reason(e.kind()))),
            }
        }
        Err(AuthError::Unauthenticated(refused))
    }

    /// The key set after an unknown-kid refetch, if one may be asked for now (or is under
    /// way); else the set as it is.
    async fn refetch_for(&self, kid: Option<&str>) -> Arc<KeySet> {
        let cfg = &self.shared.cfg;
        let mut rx = self.shared.current.subscribe();
        let wait = {
            let mut r = self
                .shared
                .refetch
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            if r.pending {
                true
            } else if r
                .last
                .is_none_or(|t| now.duration_since(t) >= cfg.jwks_refetch_min)
            {
                r.last = Some(now);
                r.pending = true;
                // Full: a wake-up is queued already.
                let _ = self.wake.try_send(());
                tracing::info!("OIDC: a token names kid {kid:?}, not in the JWKS: refetching");
                true
            } else {
                false
            }
        };
        if wait {
            let window = cfg.jwks_fetch_timeout + std::time::Duration::from_secs(1);
            let _ = tokio::time::timeout(window, rx.changed()).await;
        }
        let set = rx.borrow().clone();
        set
    }
}

/// The `alg` and `kid` of a token's header, once the algorithm is one `allowed` holds.
fn check_header(
    token: &[u8],
    allowed: &[Algorithm],
) -> Result<(Algorithm, Option<String>), AuthError> {
    let malformed = AuthError::Unauthenticated("OIDC token: malformed header");
    let part = token.split(|b| *b == b'.').next().unwrap_or(b"");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| AuthError::Unauthenticated("OIDC token: malformed header"))?;
    let Ok(Value::Object(h)) = serde_json::from_slice::<Value>(&bytes) else {
        return Err(malformed);
    };
    let Some(name) = h.get("alg").and_then(Value::as_str) else {
        return Err(AuthError::Unauthenticated(
            "OIDC token: no alg in its header",
        ));
    };
    if name.eq_ignore_ascii_case("none") {
        return Err(AuthError::Unauthenticated(
            "OIDC token: alg none is refused (an unsigned token proves nothing)",
        ));
    }
    let alg: Algorithm = name.parse().map_err(|_| {
        AuthError::Unauthenticated("OIDC token: its alg is not one the daemon supports")
    })?;
    if alg.family() == AlgorithmFamily::Hmac {
        return Err(AuthError::Unauthenticated(
            "OIDC token: HMAC algorithms (HS256, HS384, HS512) are refused: the IdP signs with a private key",
        ));
    }
    if !allowed.contains(&alg) {
        return Err(AuthError::Unauthenticated(
            "OIDC token: its alg is not in auth.oidc.algorithms",
        ));
    }
    if h.contains_key("crit") {
        return Err(AuthError::Unauthenticated(
            "OIDC token: critical header extensions (crit) are not supported",
        ));
    }
    let kid = match h.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err(malformed),
    };
    Ok((alg, kid))
}

/// The verified claims as an identity.
fn identity(claims: &Map<String, Value>, rules: &[RoleRule]) -> Result<Identity, AuthError> {
    let subject = match claims.get("sub").and_then(Value::as_str) {
        Some(s)
            if !s.is_empty()
                && s.len() <= SUBJECT_BYTES_MAX
                && !s.chars().any(char::is_control) =>
        {
            s
        }
        _ => {
            return Err(AuthError::Unauthenticated(
                "OIDC token: sub must be 1 to 255 bytes without control characters",
            ))
        }
    };
    let mut roles = Vec::new();
    for r in rules {
        let hit = match claims.get(&r.claim) {
            Some(Value::String(s)) => *s == r.value,
            Some(Value::Array(a)) => a.iter().any(|x| x.as_str() == Some(r.value.as_str())),
            _ => false,
        };
        if hit && !roles.contains(&r.role) {
            roles.push(r.role);
        }
    }
    Ok(Identity {
        subject: subject.to_string(),
        roles,
    })
}

/// Why `jsonwebtoken` refused a token, for the 401's body: fixed texts, nothing of the
/// token or the keys.
fn reason(kind: &ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidSignature => "OIDC token: bad signature",
        ErrorKind::ExpiredSignature => "OIDC token: expired (exp is past)",
        ErrorKind::ImmatureSignature => "OIDC token: not yet valid (nbf is in the future)",
        ErrorKind::InvalidIssuer => "OIDC token: wrong issuer (iss)",
        ErrorKind::InvalidAudience => "OIDC token: wrong audience (aud)",
        ErrorKind::MissingRequiredClaim(c) => match c.as_str() {
            "exp" => "OIDC token: exp missing or not a number (an expiry is required)",
            "iss" => "OIDC token: iss missing or not a string",
            "aud" => "OIDC token: aud missing or not a string or array",
            "sub" => "OIDC token: sub missing or not a string",
            _ => "OIDC token: a required claim is missing",
        },
        ErrorKind::InvalidClaimFormat(_) => "OIDC token: a claim has the wrong type",
        ErrorKind::InvalidAlgorithm => "OIDC token: the key for its kid is not for its algorithm",
        ErrorKind::InvalidEcdsaKey | ErrorKind::InvalidEddsaKey | ErrorKind::InvalidRsaKey(_) => {
            "OIDC token: the JWKS key for its kid is unusable"
        }
        _ => "OIDC token: malformed",
    }
}

/// Reads or fetches the JWKS, bounded by `jwks_bytes_max`, and parses it.
fn load(cfg: &OidcConfig, agent: Option<&ureq::Agent>) -> Result<KeySet, String> {
    let max = cfg.jwks_bytes_max;
    let bytes = match (&cfg.jwks, agent) {
        (JwksSource::File(p), _) => {
            let f = std::fs::File::open(p).map_err(|e| format!("opening: {e}"))?;
            read_bounded(f, max)?
        }
        (JwksSource::Url(u), Some(agent)) => {
            let resp = agent
                .get(u)
                .set("Accept", "application/json")
                .call()
                .map_err(|e| match e {
                    ureq::Error::Status(code, _) => format!("GET {u}: HTTP status {code}"),
                    e => format!("GET {u}: {e}"),
                })?;
            // Redirects are not followed: a 3xx is a failed fetch, not a document.
            if resp.status() != 200 {
                return Err(format!("GET {u}: HTTP status {}", resp.status()));
            }
            read_bounded(resp.into_reader(), max).map_err(|e| format!("GET {u}: {e}"))?
        }
        (JwksSource::Url(_), None) => return Err("no HTTP agent".into()),
    };
    parse_jwks(&bytes)
}

fn read_bounded(r: impl Read, max: usize) -> Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    r.take(max as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| format!("reading: {e}"))?;
    if buf.len() > max {
        return Err(format!("larger than jwks_bytes_max ({max} bytes)"));
    }
    Ok(buf)
}

/// The JWKS thread: reads or fetches at every refresh and when woken, publishes a good set,
/// keeps the last good one on failure. Ends when the verifier is dropped.
fn refresher(shared: Arc<Shared>, woken: Receiver<()>, mut now: bool) {
    let cfg = &shared.cfg;
    let agent = ureq::AgentBuilder::new()
        .timeout(cfg.jwks_fetch_timeout)
        .redirects(0)
        .build();
    loop {
        if !now {
            match woken.recv_timeout(cfg.jwks_refresh) {
                Ok(()) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
        now = false;
        let result = load(cfg, Some(&agent));
        shared
            .refetch
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pending = false;
        // `send_modify` wakes the waiters whether or not the set changed.
        shared.current.send_modify(|current| match result {
            Ok(set) => {
                if set.kids() != current.kids() {
                    tracing::info!("OIDC: JWKS keys now {:?}", set.kids());
                }
                *current = Arc::new(set);
            }
            Err(e) => tracing::warn!(
                "OIDC: JWKS refused, keeping the last good set (keys {:?}): {e}",
                current.kids()
            ),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;
    use std::time::Duration;

    /// An Ed25519 key from a fixed seed (PKCS#8 v1), and its public JWK with `kid`.
    fn ed_key(seed: u8, kid: &str) -> (EncodingKey, Value) {
        let mut der = hex::decode("302e020100300506032b657004220420").expect("hex");
        der.extend_from_slice(&[seed; 32]);
        let key = EncodingKey::from_ed_der(&der);
        let mut jwk = Jwk::from_encoding_key(&key, Algorithm::EdDSA).expect("jwk");
        jwk.common.key_id = Some(kid.into());
        (key, serde_json::to_value(&jwk).expect("json"))
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn claims() -> Value {
        json!({"iss": "https://idp.test", "aud": ["auditlog", "other"], "sub": "alice",
               "exp": now() + 300, "groups": ["audit-auditors"]})
    }

    fn sign(key: &EncodingKey, kid: Option<&str>, claims: &Value) -> String {
        let mut h = Header::new(Algorithm::EdDSA);
        h.kid = kid.map(str::to_string);
        jsonwebtoken::encode(&h, claims, key).expect("sign")
    }

    fn config(jwks: &std::path::Path) -> OidcConfig {
        OidcConfig {
            issuer: "https://idp.test".into(),
            audience: "auditlog".into(),
            jwks: JwksSource::File(jwks.to_path_buf()),
            jwks_refresh: Duration::from_secs(3600),
            jwks_refetch_min: Duration::from_secs(1),
            jwks_fetch_timeout: Duration::from_secs(5),
            jwks_bytes_max: 64 << 10,
            leeway_s: 30,
            algorithms: crate::oidc_config::ASYMMETRIC.to_vec(),
            roles: vec![
                RoleRule {
                    claim: "groups".into(),
                    value: "audit-auditors".into(),
                    role: Role::Auditor,
                },
                RoleRule {
                    claim: "team".into(),
                    value: "ingest".into(),
                    role: Role::Writer,
                },
            ],
        }
    }

    fn b64url(v: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v)
    }

    #[test]
    fn jwt_shape() {
        assert!(looks_like_jwt(b"eyJh.eyJz.c2ln"));
        assert!(looks_like_jwt(b"eyJh.eyJz."), "alg none: empty signature");
        for not in [
            &b"0123abcdef"[..],
            b"a.b",
            b"a.b.c.d",
            b".b.c",
            b"a..c",
            b"a.b+.c",
            b"a.b.c=",
        ] {
            assert!(!looks_like_jwt(not), "{}", String::from_utf8_lossy(not));
        }
    }

    /// Keys the verifier cannot or must not use are skipped, never a panic; a set of only
    /// those is refused.
    #[test]
    fn unusable_keys_are_skipped() {
        let (_, good) = ed_key(1, "good");
        let short_ed = json!({"kty": "OKP", "crv": "Ed25519", "x": "AAAA", "kid": "short"});
        let oct = json!({"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"});
        let mut enc = good.clone();
        enc["use"] = json!("enc");
        enc["kid"] = json!("enc");
        let small_rsa =
            json!({"kty": "RSA", "n": b64url(&[0xC1; 128]), "e": "AQAB", "kid": "r1024"});
        let mut hs_alg = good.clone();
        hs_alg["alg"] = json!("HS256");
        let bad = [
            short_ed,
            oct,
            enc,
            small_rsa,
            hs_alg,
            json!({"kty": "EC"}),
            json!(7),
        ];
        let set = parse_jwks(&serde_json::to_vec(&json!({"keys": bad})).expect("json"));
        assert!(set.err().expect("refused").contains("no usable"));
        let mut all = bad.to_vec();
        all.push(good);
        let set = parse_jwks(&serde_json::to_vec(&json!({"keys": all})).expect("json"));
        assert_eq!(set.expect("one usable").kids(), vec!["good"]);
        assert!(parse_jwks(b"{\"keys\": 1}").is_err());
        assert!(parse_jwks(b"<html>").is_err());
    }

    /// Every refusal has its reason; a good token is its subject and mapped roles; a key
    /// rotated into the JWKS file is picked up by the first token naming it.
    #[test]
    fn verify_refuses_with_reasons_and_picks_up_a_rotation() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("jwks.json");
        let (k1, j1) = ed_key(1, "k1");
        let (k2, j2) = ed_key(2, "k2");
        std::fs::write(&path, json!({"keys": [j1.clone()]}).to_string()).expect("write");
        let oidc = Oidc::start(config(&path)).expect("start");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        let verify = |t: &str| rt.block_on(oidc.verify(t.as_bytes()));
        let refused = |t: &str, want: &str| match verify(t) {
            Err(AuthError::Unauthenticated(why)) => assert!(why.contains(want), "{want}: {why}"),
            other => panic!("{want}: {other:?}"),
        };

        let good = sign(&k1, Some("k1"), &claims());
        assert_eq!(
            verify(&good),
            Ok(Identity {
                subject: "alice".into(),
                roles: vec![Role::Auditor]
            })
        );
        assert_eq!(
            rt.block_on(oidc.check(good.as_bytes(), Access::Ingest)),
            Err(AuthError::Forbidden(Role::Auditor))
        );
        let mut c = claims();
        c["groups"] = json!("nobody");
        let none = sign(&k1, Some("k1"), &c);
        assert_eq!(
            rt.block_on(oidc.check(none.as_bytes(), Access::ReadEvents)),
            Err(AuthError::NoRole)
        );
        c["team"] = json!("ingest");
        let writer = sign(&k1, Some("k1"), &c);
        assert_eq!(
            rt.block_on(oidc.check(writer.as_bytes(), Access::Ingest)),
            Ok((Role::Writer, "alice".into()))
        );

        let (_, payload) = good.split_once('.').expect("dot");
        let payload = payload.split('.').next().expect("payload");
        let none = format!("{}.{payload}.", b64url(br#"{"alg":"none","typ":"JWT"}"#));
        refused(&none, "alg none");
        // HS256 "signed" with the public key itself (the key-confusion attack).
        let hs = EncodingKey::from_secret(j1.to_string().as_bytes()).expect("secret");
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some("k1".into());
        let confused = jsonwebtoken::encode(&h, &claims(), &hs).expect("sign");
        refused(&confused, "HMAC");
        let with = |k: &str, v: Value| {
            let mut c = claims();
            c[k] = v;
            sign(&k1, Some("k1"), &c)
        };
        refused(&with("exp", json!(now() - 120)), "expired");
        refused(&with("exp", json!("never")), "exp missing or not a number");
        refused(&with("nbf", json!("later")), "wrong type");
        refused(&with("nbf", json!(now() + 600)), "not yet valid");
        refused(&with("iss", json!("https://evil.test")), "wrong issuer");
        refused(&with("aud", json!("someone-else")), "wrong audience");
        refused(&with("sub", json!("a\u{0}b")), "sub must be");
        let mut c = claims();
        c.as_object_mut().expect("object").remove("exp");
        refused(&sign(&k1, Some("k1"), &c), "exp missing");
        refused(&sign(&k1, Some("nope"), &claims()), "unknown key id");
        refused(&sign(&k2, Some("k1"), &claims()), "bad signature");
        let mut tampered = good.clone().into_bytes();
        let at = tampered.len() - 10;
        tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
        refused(&String::from_utf8(tampered).expect("utf8"), "bad signature");
        let mut h = Header::new(Algorithm::EdDSA);
        h.kid = Some("k1".into());
        h.crit = Some(vec!["exp".into()]);
        let crit = jsonwebtoken::encode(&h, &claims(), &k1).expect("sign");
        refused(&crit, "crit");

        // Rotation: k2 joins the file; the first token naming it triggers a reread, once
        // the refetch interval since the made-up kid above has passed (until then, none).
        std::fs::write(&path, json!({"keys": [j1, j2.clone()]}).to_string()).expect("write");
        let new = sign(&k2, Some("k2"), &claims());
        refused(&new, "unknown key id");
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(verify(&new).map(|i| i.subject), Ok("alice".into()));
        // k1 leaves; a made-up kid (after the refetch interval) triggers the reread that
        // drops it.
        std::fs::write(&path, json!({"keys": [j2]}).to_string()).expect("write");
        std::thread::sleep(Duration::from_millis(1100));
        refused(&sign(&k2, Some("other"), &claims()), "unknown key id");
        refused(&good, "unknown key id");
        // A JWKS file turned bad is refused and the last good set kept.
        std::fs::write(&path, "garbage").expect("write");
        std::thread::sleep(Duration::from_millis(1100));
        refused(&sign(&k2, Some("other"), &claims()), "unknown key id");
        assert!(verify(&new).is_ok(), "the last good set was dropped");
    }
}
