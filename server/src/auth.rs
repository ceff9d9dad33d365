//! Bearer tokens mapped to roles. Only SHA-256 hashes of tokens are kept, in memory and in
//! `<data-dir>/tokens.json`; the tokens themselves are written once, on first start, to
//! `<data-dir>/initial-tokens`. Both files are mode 0600, created afresh (never over an
//! existing file) and read without following links (`auditlog_engine::private`); either
//! one found open to group or others stops the start.

use std::path::{Path, PathBuf};

use auditlog_engine::private;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Writer,
    Reader,
    Auditor,
    Admin,
}

pub const ROLES: [Role; 4] = [Role::Writer, Role::Reader, Role::Auditor, Role::Admin];

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Writer => "writer",
            Role::Reader => "reader",
            Role::Auditor => "auditor",
            Role::Admin => "admin",
        }
    }
}

/// What a route needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// POST /v1/events: writer.
    Ingest,
    /// GET /v1/events: reader, auditor.
    ReadEvents,
    /// Checkpoints, proofs, log metadata: auditor.
    Audit,
    /// Key and policy operations (`/v1/admin/…`): admin only.
    Admin,
}

/// Who a token belongs to: a name (for the audit trail and the two-person rule) and a role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub role: Role,
}

impl Access {
    pub fn allows(self, role: Role) -> bool {
        matches!(
            (self, role),
            (_, Role::Admin)
                | (Access::Ingest, Role::Writer)
                | (Access::ReadEvents, Role::Reader | Role::Auditor)
                | (Access::Audit, Role::Auditor)
        )
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum AuthError {
    /// No token, or one that matches no known hash.
    Unauthenticated(&'static str),
    /// A valid token whose role may not use the route.
    Forbidden(Role),
    /// A valid OIDC sign-in whose claims map to no role (`[[auth.oidc.roles]]`).
    NoRole,
}

#[derive(Serialize, Deserialize)]
struct TokenFile {
    tokens: Vec<TokenEntry>,
}

#[derive(Serialize, Deserialize)]
struct TokenEntry {
    role: Role,
    /// Who holds the token. Entries written before names existed are named after their role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    /// Lowercase hex SHA-256 of the token's text.
    sha256: String,
    /// The log holds this token's `token_added` event (written by the first start that
    /// loads it; `add_admin` records it as it executes).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    recorded: bool,
    /// Revoked (`auditlogd tokens revoke`): kept in the file, never accepted again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    revoked: bool,
    /// The log holds this token's `token_revoked` event.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    revocation_recorded: bool,
}

impl TokenEntry {
    fn holder(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| self.role.name().to_string())
    }
}

/// The tokens the daemon accepts. Behind a lock: an approved `add_admin` adds one while
/// the daemon runs.
pub struct Tokens {
    set: std::sync::RwLock<TokenSet>,
}

struct TokenSet {
    hashes: Vec<([u8; 32], Role)>,
    /// The holder of each hash, in the same order.
    names: Vec<String>,
}

/// A change to `tokens.json` the log does not hold yet (see `start_record`).
pub struct UnrecordedChange {
    /// `token_added` or `token_revoked`.
    pub action: &'static str,
    pub name: String,
    pub role: Role,
    pub sha256: String,
}

fn read_token_file(store: &Path) -> anyhow::Result<TokenFile> {
    let bytes = private::read_private_file(store)?;
    serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", store.display()))
}

fn write_token_file(store: &Path, file: &TokenFile) -> anyhow::Result<()> {
    let json = serde_json::to_vec_pretty(file).context("encoding tokens.json")?;
    private::replace_private_file(store, &json)?;
    Ok(())
}

/// Token changes in `<data_dir>/tokens.json` the log does not hold yet, oldest first.
pub fn unrecorded_changes(data_dir: &Path) -> anyhow::Result<Vec<UnrecordedChange>> {
    let file = read_token_file(&data_dir.join(auditlog_formats::layout::TOKENS_FILE))?;
    let mut out = Vec::new();
    for t in &file.tokens {
        let change = |action| UnrecordedChange {
            action,
            name: t.holder(),
            role: t.role,
            sha256: t.sha256.clone(),
        };
        if !t.recorded {
            out.push(change("token_added"));
        }
        if t.revoked && !t.revocation_recorded {
            out.push(change("token_revoked"));
        }
    }
    Ok(out)
}

/// Marks changes `unrecorded_changes` returned as held by the log, in one rewrite of
/// `tokens.json`.
pub fn mark_recorded(data_dir: &Path, changes: &[UnrecordedChange]) -> anyhow::Result<()> {
    if changes.is_empty() {
        return Ok(());
    }
    let store = data_dir.join(auditlog_formats::layout::TOKENS_FILE);
    let mut file = read_token_file(&store)?;
    for change in changes {
        for t in file.tokens.iter_mut().filter(|t| t.sha256 == change.sha256) {
            match change.action {
                "token_added" => t.recorded = true,
                _ => t.revocation_recorded = true,
            }
        }
    }
    write_token_file(&store, &file)
}

/// Bootstrap: the engine has never opened this data directory (no segment files), so the
/// log holds no admin yet. Only then may `tokens add --role admin` add an admin; later ones
/// come by an `add_admin` request under the two-person rule.
pub fn log_is_new(data_dir: &Path) -> anyhow::Result<bool> {
    match std::fs::read_dir(data_dir.join(auditlog_formats::layout::SEGMENTS_DIR)) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(e).with_context(|| format!("listing {}/segments", data_dir.display())),
    }
}

/// The rule for a token holder's name (the two-person rule counts people by it). A name
/// may not start with `oidc:`, so no token holder reads as an OIDC-signed-in subject.
pub fn check_token_name(name: &str) -> anyhow::Result<()> {
    if name.is_empty() || name.len() > 128 || name.chars().any(|c| c.is_control()) {
        bail!("token name must be 1 to 128 printable characters");
    }
    if name
        .get(..5)
        .is_some_and(|p| p.eq_ignore_ascii_case("oidc:"))
    {
        bail!("token name must not start with \"oidc:\": that is how OIDC sign-ins are named");
    }
    Ok(())
}

/// The token of an `Authorization: Bearer …` value; the scheme is case-insensitive
/// (RFC 9110 §11.1).
pub fn bearer(authorization: Option<&[u8]>) -> Result<&[u8], AuthError> {
    let Some(value) = authorization else {
        return Err(AuthError::Unauthenticated("no bearer token"));
    };
    match value.split_at_checked(7) {
        Some((scheme, t)) if scheme.eq_ignore_ascii_case(b"bearer ") => Ok(t),
        _ => Err(AuthError::Unauthenticated("not a bearer token")),
    }
}

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

impl Tokens {
    fn from_set(hashes: Vec<([u8; 32], Role)>, names: Vec<String>) -> Tokens {
        Tokens {
            set: std::sync::RwLock::new(TokenSet { hashes, names }),
        }
    }

    #[cfg(test)]
    pub fn from_pairs(pairs: &[(&str, Role)]) -> Tokens {
        Tokens::from_set(
            pairs
                .iter()
                .map(|(t, r)| (digest(t.as_bytes()), *r))
                .collect(),
            pairs.iter().map(|(_, r)| r.name().to_string()).collect(),
        )
    }

    /// Accepts a token from now on (an executed `add_admin`).
    pub fn insert(&self, sha256: [u8; 32], role: Role, name: &str) {
        let mut set = self.set.write().unwrap_or_else(|e| e.into_inner());
        set.hashes.push((sha256, role));
        set.names.push(name.to_string());
    }

    /// Loads `tokens.json`, or on first start makes one token per role, writes them to
    /// `initial-tokens` and returns that file's path alongside.
    pub fn load_or_create(data_dir: &Path) -> anyhow::Result<(Tokens, Option<PathBuf>)> {
        let store = data_dir.join(auditlog_formats::layout::TOKENS_FILE);
        let initial = data_dir.join(auditlog_formats::layout::INITIAL_TOKENS_FILE);
        // Not read, but it holds every role's first token: open to others, or a link, it
        // stops the start, before anything is written.
        let initial_exists = private::check_private_file(&initial)?;
        match private::read_private_file(&store) {
            Ok(bytes) => {
                let file: TokenFile = serde_json::from_slice(&bytes)
                    .with_context(|| format!("parsing {}", store.display()))?;
                let mut hashes = Vec::with_capacity(file.tokens.len());
                let mut names = Vec::with_capacity(file.tokens.len());
                for t in file.tokens.into_iter().filter(|t| !t.revoked) {
                    names.push(t.holder());
                    let raw = hex::decode(&t.sha256).ok().and_then(|v| {
                        let a: Option<[u8; 32]> = v.try_into().ok();
                        a
                    });
                    match raw {
                        Some(h) => hashes.push((h, t.role)),
                        None => bail!("{}: a hash is not 32 bytes of hex", store.display()),
                    }
                }
                Ok((Tokens::from_set(hashes, names), None))
            }
            Err(e) if e.is_not_found() => {
                if initial_exists {
                    bail!(
                        "{} exists but {} does not: a first start that did not finish, or a \
                         file put there by someone else; remove it and start again",
                        initial.display(),
                        store.display()
                    );
                }
                let tokens = Self::create(&initial, &store)?;
                Ok((tokens, Some(initial)))
            }
            Err(e) => Err(e.into()),
        }
    }

    fn create(initial: &Path, store: &Path) -> anyhow::Result<Tokens> {
        let mut lines = String::new();
        let mut hashes = Vec::new();
        for role in ROLES {
            let mut raw = [0u8; 32];
            getrandom::getrandom(&mut raw).map_err(|e| anyhow::anyhow!("getrandom: {e}"))?;
            let token = hex::encode(raw);
            lines.push_str(&format!("{} {token}\n", role.name()));
            hashes.push((digest(token.as_bytes()), role));
        }
        private::create_private_file(initial, lines.as_bytes())?;
        let file = TokenFile {
            tokens: hashes
                .iter()
                .map(|(h, r)| TokenEntry {
                    role: *r,
                    name: None,
                    sha256: hex::encode(h),
                    recorded: false,
                    revoked: false,
                    revocation_recorded: false,
                })
                .collect(),
        };
        write_token_file(store, &file)?;
        let names = ROLES.iter().map(|r| r.name().to_string()).collect();
        Ok(Tokens::from_set(hashes, names))
    }

    /// The holder and role of a bare token; every hash compared in constant time.
    pub fn principal_of_token(&self, token: &[u8]) -> Result<Principal, AuthError> {
        self.with_holder(token, |name, role| Principal {
            name: name.to_string(),
            role,
        })
    }

    /// `f` of the holder and role of a bare token; every hash compared in constant time.
    /// Callers that need only the role copy nothing.
    fn with_holder<T>(
        &self,
        token: &[u8],
        f: impl FnOnce(&str, Role) -> T,
    ) -> Result<T, AuthError> {
        let d = digest(token);
        let set = self.set.read().unwrap_or_else(|e| e.into_inner());
        let mut found = None;
        for (i, (h, _)) in set.hashes.iter().enumerate() {
            if bool::from(h.ct_eq(&d)) {
                found = Some(i);
            }
        }
        let i = found.ok_or(AuthError::Unauthenticated("unknown token"))?;
        Ok(f(&set.names[i], set.hashes[i].1))
    }

    /// The role of the bearer token in an `Authorization` value, if it may use `access`
    /// (the hot path of reads and proofs: no copy of the holder's name).
    pub fn check_role(
        &self,
        authorization: Option<&[u8]>,
        access: Access,
    ) -> Result<Role, AuthError> {
        let role = self.with_holder(bearer(authorization)?, |_, role| role)?;
        if access.allows(role) {
            Ok(role)
        } else {
            Err(AuthError::Forbidden(role))
        }
    }

    /// Who holds the bearer token in an `Authorization` header value, if their role may use
    /// `access`. The scheme is case-insensitive (RFC 9110 §11.1); every known hash is
    /// compared, in constant time, whichever matches.
    pub fn check_principal(
        &self,
        authorization: Option<&[u8]>,
        access: Access,
    ) -> Result<Principal, AuthError> {
        let p = self.principal_of_token(bearer(authorization)?)?;
        if access.allows(p.role) {
            Ok(p)
        } else {
            Err(AuthError::Forbidden(p.role))
        }
    }
}

/// `auditlogd tokens add`: a new random token for `name` with `role`, appended to
/// `tokens.json` (atomically). Returns the token; only its hash is stored. Names are unique:
/// the two-person rule counts people by name. An admin only while the log is new
/// (`log_is_new`): after that, admins are added by an approved `add_admin` request. The
/// next start records the token in the log (`token_added`).
pub fn add_token(data_dir: &Path, role: Role, name: &str) -> anyhow::Result<String> {
    check_token_name(name)?;
    if role == Role::Admin && !log_is_new(data_dir)? {
        bail!(
            "the log in {} exists: an admin is added by an `add_admin` request that other \
             admins approve (the two-person rule), not on the host; `tokens add --role admin` \
             only sets up the first admins, before the first start",
            data_dir.display()
        );
    }
    let _ = Tokens::load_or_create(data_dir)?;
    let mut raw = [0u8; 32];
    getrandom::getrandom(&mut raw).map_err(|e| anyhow::anyhow!("getrandom: {e}"))?;
    let token = hex::encode(raw);
    add_token_hash(data_dir, role, name, digest(token.as_bytes()), false)?;
    Ok(token)
}

/// Appends a token by its SHA-256 to `tokens.json`; refused if the name or the hash is
/// there already (revoked ones included: names and tokens are never reused).
pub fn add_token_hash(
    data_dir: &Path,
    role: Role,
    name: &str,
    sha256: [u8; 32],
    recorded: bool,
) -> anyhow::Result<()> {
    check_token_name(name)?;
    let store = data_dir.join(auditlog_formats::layout::TOKENS_FILE);
    let mut file = read_token_file(&store)?;
    let hex = hex::encode(sha256);
    if file.tokens.iter().any(|t| t.holder() == name) {
        bail!("a token named {name:?} exists already");
    }
    if file.tokens.iter().any(|t| t.sha256 == hex) {
        bail!("that token is in use already");
    }
    file.tokens.push(TokenEntry {
        role,
        name: Some(name.to_string()),
        sha256: hex,
        recorded,
        revoked: false,
        revocation_recorded: false,
    });
    write_token_file(&store, &file)
}

/// `auditlogd tokens revoke`: the token named `name` is never accepted again (from the
/// next start); it stays in `tokens.json`, and the next start records `token_revoked`.
pub fn revoke_token(data_dir: &Path, name: &str) -> anyhow::Result<()> {
    let store = data_dir.join(auditlog_formats::layout::TOKENS_FILE);
    let mut file = read_token_file(&store)?;
    let Some(t) = file.tokens.iter_mut().find(|t| t.holder() == name) else {
        bail!("no token named {name:?}");
    };
    if t.revoked {
        bail!("the token named {name:?} is revoked already");
    }
    t.revoked = true;
    write_token_file(&store, &file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_and_tokens() {
        let t = Tokens::from_pairs(&[("w", Role::Writer), ("a", Role::Auditor)]);
        assert_eq!(
            t.check_principal(Some(b"Bearer w"), Access::Ingest),
            Ok(Principal {
                name: "writer".into(),
                role: Role::Writer
            })
        );
        assert_eq!(
            t.check_principal(Some(b"bearer w"), Access::Ingest),
            Ok(Principal {
                name: "writer".into(),
                role: Role::Writer
            })
        );
        assert!(t.check_principal(Some(b"Basic w"), Access::Ingest).is_err());
        assert_eq!(
            t.check_principal(Some(b"Bearer w"), Access::Audit),
            Err(AuthError::Forbidden(Role::Writer))
        );
        assert_eq!(
            t.check_principal(Some(b"Bearer a"), Access::ReadEvents),
            Ok(Principal {
                name: "auditor".into(),
                role: Role::Auditor
            })
        );
        assert!(matches!(
            t.check_principal(Some(b"Bearer x"), Access::Ingest),
            Err(AuthError::Unauthenticated(_))
        ));
        assert!(matches!(
            t.check_principal(None, Access::Ingest),
            Err(AuthError::Unauthenticated(_))
        ));
    }

    /// No token holder can be named like an OIDC sign-in (`oidc:<sub>`).
    #[test]
    fn token_names_stay_out_of_the_oidc_namespace() {
        assert!(check_token_name("ci-writer").is_ok());
        assert!(check_token_name("oidc").is_ok());
        for name in ["oidc:alice", "OIDC:alice", "oidc:"] {
            let e = check_token_name(name).expect_err(name);
            assert!(e.to_string().contains("oidc:"), "{e}");
        }
        let dir = tempfile::tempdir().expect("tmp");
        assert!(add_token(dir.path(), Role::Writer, "oidc:alice").is_err());
    }

    #[test]
    fn first_start_writes_tokens_and_restart_keeps_them() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("auditlogd-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let (_, path) = Tokens::load_or_create(&dir).expect("create");
        let path = path.expect("first start");
        for file in [path.clone(), dir.join("tokens.json")] {
            let mode = std::fs::metadata(&file).expect("stat").permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", file.display());
        }
        let text = std::fs::read_to_string(&path).expect("read");
        // The store the daemon keeps holds hashes only, never a token itself.
        let store = std::fs::read_to_string(dir.join("tokens.json")).expect("store");
        for line in text.lines() {
            let (_, token) = line.split_once(' ').expect("role token");
            assert!(
                !store.contains(token),
                "a token in the clear in tokens.json"
            );
            assert!(store.contains(&hex::encode(digest(token.as_bytes()))));
        }
        let (again, none) = Tokens::load_or_create(&dir).expect("reload");
        assert!(none.is_none());
        for line in text.lines() {
            let (role, token) = line.split_once(' ').expect("role token");
            let got = again.principal_of_token(token.as_bytes()).expect("known");
            assert_eq!(got.role.name(), role);
        }
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    /// A link planted at `initial-tokens` before the first start (to a file its planter can
    /// read) is refused, and nothing is written through it.
    #[test]
    fn a_link_planted_at_initial_tokens_is_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let stolen = dir.path().join("stolen");
        std::fs::write(&stolen, b"").expect("write");
        std::os::unix::fs::symlink(&stolen, dir.path().join("initial-tokens")).expect("link");
        let e = Tokens::load_or_create(dir.path()).err().expect("refused");
        assert!(e.to_string().contains("symbolic link"), "{e:#}");
        assert_eq!(
            std::fs::read(&stolen).expect("read"),
            b"",
            "written through the link"
        );
        assert!(!dir.path().join("tokens.json").exists());
        // A dangling link, pointing where the planter will look, is refused too.
        let dir = tempfile::tempdir().expect("tmp");
        let later = dir.path().join("later");
        std::os::unix::fs::symlink(&later, dir.path().join("initial-tokens")).expect("link");
        assert!(Tokens::load_or_create(dir.path()).is_err());
        assert!(!later.exists(), "created through the link");
    }

    /// An `initial-tokens` (or `tokens.json`) that group or others may read stops the start
    /// with the file and its mode named, and nothing in the directory changes.
    #[test]
    fn an_open_token_file_is_refused_and_nothing_changes() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tmp");
        Tokens::load_or_create(dir.path()).expect("first start");
        for name in ["initial-tokens", "tokens.json"] {
            let path = dir.path().join(name);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
            let before = snapshot(dir.path());
            let e = Tokens::load_or_create(dir.path()).err().expect("refused");
            let text = format!("{e:#}");
            assert!(text.contains(name) && text.contains("0644"), "{text}");
            assert_eq!(snapshot(dir.path()), before, "{name}: something changed");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        }
        Tokens::load_or_create(dir.path()).expect("restart once private again");
    }

    /// Every file's name, mode and bytes.
    fn snapshot(dir: &Path) -> Vec<(String, u32, Vec<u8>)> {
        use std::os::unix::fs::PermissionsExt;
        let mut all: Vec<_> = std::fs::read_dir(dir)
            .expect("list")
            .map(|e| {
                let e = e.expect("entry");
                let m = e.metadata().expect("stat").permissions().mode();
                let bytes = std::fs::read(e.path()).expect("read");
                (e.file_name().to_string_lossy().into_owned(), m, bytes)
            })
            .collect();
        all.sort();
        all
    }
}
