//! The `[auth.oidc]` section of the daemon's configuration: OIDC JWT sign-in for HTTP
//! callers (the verifier is `oidc.rs`). Kept apart from `config.rs` so the sign-in settings
//! and their limits live next to each other.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use jsonwebtoken::{Algorithm, AlgorithmFamily};
use serde::Deserialize;

use crate::auth::Role;

/// `[auth]`: how callers authenticate besides the API tokens of `tokens.json`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    pub oidc: Option<OidcSection>,
}

/// `[auth.oidc]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcSection {
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub jwks_file: Option<PathBuf>,
    pub jwks_url: Option<String>,
    pub jwks_refresh_s: Option<u64>,
    pub jwks_refetch_min_s: Option<u64>,
    pub jwks_fetch_timeout_s: Option<u64>,
    pub jwks_bytes_max: Option<usize>,
    pub leeway_s: Option<u64>,
    pub algorithms: Option<Vec<String>>,
    #[serde(default)]
    pub roles: Vec<RoleRuleSection>,
}

/// `[[auth.oidc.roles]]`: a claim value that grants a role.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleRuleSection {
    pub claim: String,
    pub value: String,
    pub role: Role,
}

/// Where the signing keys come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JwksSource {
    /// A JWKS document on disk, read at start (a bad one stops the start) and again every
    /// refresh.
    File(PathBuf),
    /// The IdP's `jwks_uri`: `https://`, or `http://` to a loopback address only.
    Url(String),
}

/// A role granted when the claim `claim` is the string `value` or an array holding it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleRule {
    pub claim: String,
    pub value: String,
    pub role: Role,
}

/// `[auth.oidc]`, resolved.
#[derive(Clone, Debug)]
pub struct OidcConfig {
    /// The `iss` every token must carry, exactly.
    pub issuer: String,
    /// A value the token's `aud` (a string or an array) must hold.
    pub audience: String,
    pub jwks: JwksSource,
    /// The keys are fetched (or read) again this often; a failed fetch keeps the last good set.
    pub jwks_refresh: Duration,
    /// A token whose `kid` is not in the set asks for a refetch, at most once this often (an
    /// attacker sending made-up kids cannot make the daemon hammer the IdP).
    pub jwks_refetch_min: Duration,
    /// One fetch of `jwks_url`, connect to last byte.
    pub jwks_fetch_timeout: Duration,
    /// A JWKS document larger than this is refused (the last good set is kept).
    pub jwks_bytes_max: usize,
    /// Clock skew allowed on `exp` and `nbf`, seconds.
    pub leeway_s: u64,
    /// The `alg` values accepted; never an HMAC one, never `none`.
    pub algorithms: Vec<Algorithm>,
    /// Claim values to roles, in order; a token may match several.
    pub roles: Vec<RoleRule>,
}

pub const JWKS_REFRESH_S_DEFAULT: u64 = 300;
pub const JWKS_REFRESH_S_MAX: u64 = 86_400;
pub const JWKS_REFETCH_MIN_S_DEFAULT: u64 = 30;
pub const JWKS_FETCH_TIMEOUT_S_DEFAULT: u64 = 10;
pub const JWKS_FETCH_TIMEOUT_S_MAX: u64 = 60;
pub const JWKS_BYTES_MAX_DEFAULT: usize = 64 << 10;
pub const JWKS_BYTES_MAX_LIMIT: usize = 1 << 20;
pub const LEEWAY_S_DEFAULT: u64 = 30;
pub const LEEWAY_S_MAX: u64 = 300;

/// The asymmetric algorithms the verifier supports; the default of `algorithms`.
pub const ASYMMETRIC: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// The JOSE name of an algorithm (`RS256`, …).
pub fn alg_name(a: Algorithm) -> String {
    format!("{a:?}")
}

pub fn resolve(a: AuthSection) -> anyhow::Result<Option<OidcConfig>> {
    let Some(o) = a.oidc else {
        return Ok(None);
    };
    let issuer = match o.issuer.as_deref() {
        Some(v) if !v.trim().is_empty() => v.to_string(),
        _ => bail!("auth.oidc.issuer is required (the IdP's issuer URL, exactly as in `iss`)"),
    };
    let audience = match o.audience.as_deref() {
        Some(v) if !v.trim().is_empty() => v.to_string(),
        _ => bail!("auth.oidc.audience is required (the client id tokens are issued for)"),
    };
    let jwks = jwks_source(&o)?;
    let limits = JwksLimits::resolve(&o)?;
    let algorithms = algorithms(o.algorithms.as_deref())?;
    let roles = role_rules(&o.roles)?;
    Ok(Some(OidcConfig {
        issuer,
        audience,
        jwks,
        jwks_refresh: Duration::from_secs(limits.refresh_s),
        jwks_refetch_min: Duration::from_secs(limits.refetch_min_s),
        jwks_fetch_timeout: Duration::from_secs(limits.fetch_timeout_s),
        jwks_bytes_max: limits.bytes_max,
        leeway_s: limits.leeway_s,
        algorithms,
        roles,
    }))
}

/// Exactly one of `jwks_file` and `jwks_url`; a URL must be safe to fetch keys from.
fn jwks_source(o: &OidcSection) -> anyhow::Result<JwksSource> {
    Ok(match (&o.jwks_file, &o.jwks_url) {
        (Some(_), Some(_)) => bail!("auth.oidc: give jwks_file or jwks_url, not both"),
        (None, None) => bail!("auth.oidc: jwks_file or jwks_url is required"),
        (Some(p), None) => JwksSource::File(p.clone()),
        (None, Some(u)) => {
            check_jwks_url(u)?;
            JwksSource::Url(u.clone())
        }
    })
}

/// How often and how much the key set is fetched, and the clock skew allowed, each
/// defaulted and held to its range.
struct JwksLimits {
    refresh_s: u64,
    refetch_min_s: u64,
    fetch_timeout_s: u64,
    bytes_max: usize,
    leeway_s: u64,
}

impl JwksLimits {
    fn resolve(o: &OidcSection) -> anyhow::Result<JwksLimits> {
        let refresh = o.jwks_refresh_s.unwrap_or(JWKS_REFRESH_S_DEFAULT);
        if !(1..=JWKS_REFRESH_S_MAX).contains(&refresh) {
            bail!("auth.oidc.jwks_refresh_s {refresh}: must be 1 to {JWKS_REFRESH_S_MAX}");
        }
        let refetch = o
            .jwks_refetch_min_s
            .unwrap_or(JWKS_REFETCH_MIN_S_DEFAULT.min(refresh));
        if !(1..=refresh).contains(&refetch) {
            bail!(
                "auth.oidc.jwks_refetch_min_s {refetch}: must be 1 to jwks_refresh_s ({refresh})"
            );
        }
        let timeout = o
            .jwks_fetch_timeout_s
            .unwrap_or(JWKS_FETCH_TIMEOUT_S_DEFAULT);
        if !(1..=JWKS_FETCH_TIMEOUT_S_MAX).contains(&timeout) {
            bail!(
                "auth.oidc.jwks_fetch_timeout_s {timeout}: must be 1 to {JWKS_FETCH_TIMEOUT_S_MAX}"
            );
        }
        let bytes_max = o.jwks_bytes_max.unwrap_or(JWKS_BYTES_MAX_DEFAULT);
        if !(256..=JWKS_BYTES_MAX_LIMIT).contains(&bytes_max) {
            bail!("auth.oidc.jwks_bytes_max {bytes_max}: must be 256 to {JWKS_BYTES_MAX_LIMIT}");
        }
        let leeway_s = o.leeway_s.unwrap_or(LEEWAY_S_DEFAULT);
        if leeway_s > LEEWAY_S_MAX {
            bail!("auth.oidc.leeway_s {leeway_s}: must be at most {LEEWAY_S_MAX}");
        }
        Ok(JwksLimits {
            refresh_s: refresh,
            refetch_min_s: refetch,
            fetch_timeout_s: timeout,
            bytes_max,
            leeway_s,
        })
    }
}

/// The accepted `alg` values: by default every asymmetric one the verifier supports.
fn algorithms(names: Option<&[String]>) -> anyhow::Result<Vec<Algorithm>> {
    let Some(names) = names else {
        return Ok(ASYMMETRIC.to_vec());
    };
    if names.is_empty() {
        bail!("auth.oidc.algorithms is empty: no token could be accepted");
    }
    names.iter().map(|n| parse_algorithm(n)).collect()
}

/// The role rules, at least one, none granting admin.
fn role_rules(rules: &[RoleRuleSection]) -> anyhow::Result<Vec<RoleRule>> {
    if rules.is_empty() {
        bail!(
            "auth.oidc.roles is empty: add [[auth.oidc.roles]] entries (claim, value, role), \
             or no signed-in caller could do anything"
        );
    }
    let mut roles = Vec::new();
    for (i, r) in rules.iter().enumerate() {
        if r.role == Role::Admin {
            bail!(
                "auth.oidc.roles[{i}]: role \"admin\" cannot be granted by OIDC sign-in: admins \
                 are the people the two-person rule counts, added only by an approved \
                 add_admin request, and an IdP that could make admins (or two of them) would \
                 bypass that rule; admins use API tokens"
            );
        }
        if r.claim.is_empty() || r.value.is_empty() {
            bail!("auth.oidc.roles[{i}]: claim and value must not be empty");
        }
        roles.push(RoleRule {
            claim: r.claim.clone(),
            value: r.value.clone(),
            role: r.role,
        });
    }
    Ok(roles)
}

fn parse_algorithm(name: &str) -> anyhow::Result<Algorithm> {
    if name.eq_ignore_ascii_case("none") {
        bail!("auth.oidc.algorithms: \"none\" is refused: an unsigned token proves nothing");
    }
    let alg: Algorithm = name.parse().map_err(|_| {
        anyhow::anyhow!(
            "auth.oidc.algorithms: {name:?} is not one of RS256, RS384, RS512, PS256, PS384, \
             PS512, ES256, ES384, EdDSA"
        )
    })?;
    if alg.family() == AlgorithmFamily::Hmac {
        bail!(
            "auth.oidc.algorithms: {name} is refused: HMAC needs a shared secret, and with the \
             IdP's public keys as the secret anyone could sign tokens (key confusion)"
        );
    }
    Ok(alg)
}

/// `https://`, or `http://` to a loopback host only: keys fetched in the clear from another
/// host could be swapped by anyone on the path.
fn check_jwks_url(u: &str) -> anyhow::Result<()> {
    if let Some(rest) = u.strip_prefix("https://") {
        if rest.is_empty() {
            bail!("auth.oidc.jwks_url {u:?} has no host");
        }
        return Ok(());
    }
    let Some(rest) = u.strip_prefix("http://") else {
        bail!("auth.oidc.jwks_url {u:?}: must start with https://");
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.split(':').next().unwrap_or(""),
    };
    let loopback = !authority.contains('@')
        && (host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback()));
    if !loopback {
        bail!(
            "auth.oidc.jwks_url {u:?}: must be https:// (http:// only to a loopback address: \
             keys fetched in the clear could be swapped on the way)"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> anyhow::Result<Option<OidcConfig>> {
        let file: crate::config::FileConfig = toml::from_str(text)?;
        resolve(file.auth)
    }

    const BASE: &str = "[auth.oidc]\nissuer = \"https://idp.example\"\naudience = \"auditlog\"\n\
                        jwks_url = \"https://idp.example/jwks\"\n\
                        [[auth.oidc.roles]]\nclaim = \"groups\"\nvalue = \"audit-auditors\"\n\
                        role = \"auditor\"\n";

    #[test]
    fn defaults_and_absent_section() {
        assert!(parse("").expect("no section").is_none());
        let c = parse(BASE).expect("parse").expect("oidc");
        assert_eq!(c.issuer, "https://idp.example");
        assert_eq!(c.jwks, JwksSource::Url("https://idp.example/jwks".into()));
        assert_eq!(c.jwks_refresh, Duration::from_secs(300));
        assert_eq!(c.jwks_refetch_min, Duration::from_secs(30));
        assert_eq!(c.jwks_bytes_max, 64 << 10);
        assert_eq!(c.leeway_s, 30);
        assert_eq!(c.algorithms, ASYMMETRIC.to_vec());
        assert_eq!(
            c.roles,
            vec![RoleRule {
                claim: "groups".into(),
                value: "audit-auditors".into(),
                role: Role::Auditor
            }]
        );
    }

    /// Each refusal names the field at fault.
    #[test]
    fn bad_values_name_their_field() {
        let cases = [
            (
                BASE.replace("role = \"auditor\"", "role = \"admin\""),
                "roles[0]",
            ),
            (
                BASE.replace("issuer = \"https://idp.example\"\n", ""),
                "issuer",
            ),
            (BASE.replace("audience = \"auditlog\"\n", ""), "audience"),
            (
                BASE.replace(
                    "\"https://idp.example/jwks\"",
                    "\"http://idp.example/jwks\"",
                ),
                "jwks_url",
            ),
            (
                BASE.replace(
                    "\"https://idp.example/jwks\"",
                    "\"http://127.0.0.1@evil/jwks\"",
                ),
                "jwks_url",
            ),
            (
                BASE.replace("jwks_url = ", "jwks_file = \"/x\"\njwks_url = "),
                "not both",
            ),
            (
                BASE.replace("[[auth", "algorithms = [\"HS256\"]\n[[auth"),
                "HS256 is refused",
            ),
            (
                BASE.replace("[[auth", "algorithms = [\"none\"]\n[[auth"),
                "\"none\" is refused",
            ),
            (
                BASE.replace("[[auth", "algorithms = []\n[[auth"),
                "algorithms",
            ),
            (
                BASE.replace("[[auth", "jwks_refresh_s = 0\n[[auth"),
                "jwks_refresh_s",
            ),
            (
                BASE.replace(
                    "[[auth",
                    "jwks_refresh_s = 10\njwks_refetch_min_s = 20\n[[auth",
                ),
                "jwks_refetch_min_s",
            ),
            (
                BASE.replace("[[auth", "jwks_bytes_max = 100000000\n[[auth"),
                "jwks_bytes_max",
            ),
            (
                BASE.replace("[[auth", "leeway_s = 3600\n[[auth"),
                "leeway_s",
            ),
            (
                BASE.replace("[[auth", "jwks_fetch_timeout_s = 0\n[[auth"),
                "jwks_fetch_timeout_s",
            ),
            (BASE.replace("[[auth", "bogus = 1\n[[auth"), "bogus"),
            (
                BASE[..BASE.find("[[auth").expect("roles")].to_string(),
                "roles is empty",
            ),
        ];
        for (text, want) in cases {
            let e = format!("{:#}", parse(&text).expect_err(want));
            assert!(e.contains(want), "{want}: {e}");
        }
        // A loopback http:// JWKS (a local IdP or a test) is allowed.
        for url in [
            "http://127.0.0.1:8/j",
            "http://[::1]/j",
            "http://localhost:9/j",
        ] {
            let text = BASE.replace("https://idp.example/jwks", url);
            assert!(parse(&text).is_ok(), "{url}");
        }
    }
}
