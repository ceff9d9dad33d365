//! auditlog-worm: write-once object storage for sealed segments, tiles, checkpoints and the
//! key history.
//!
//! One narrow trait, [`WormTarget`], with four implementations: a local directory (the
//! embedded default), S3 and S3-compatible stores (Object Lock), Azure Blob (version-level
//! immutability policies) and Google Cloud Storage (object retention). Every write is
//! create-only and carries a checksum the store checks; a write that finds the object
//! already there is answered with what is there, so a caller that resumes after a crash can
//! tell "already shipped" from "someone else's bytes".
//!
//! The clouds are spoken to with a small synchronous HTTP client and hand-written request
//! signing (SigV4, Azure SharedKey), because per-object retention is a per-request header
//! that `object_store` cannot set (its headers are fixed per store instance), and because the
//! engine's replicator is one plain thread that has no use for an async runtime.

pub mod aws_creds;
mod azure;
mod gcs;
pub mod http;
mod local;
pub mod policy;
mod s3;
pub mod sigv4;
pub mod time;
mod xml;

use auditlog_formats::tiles::{Tile, TileKind, TILE_WIDTH};
use std::fmt;

pub use auditlog_formats::Secret;

pub use policy::{RetentionPolicy, LEGAL_FLOOR_DAYS};

#[derive(Debug, thiserror::Error)]
pub enum WormError {
    /// The store could not be reached or the connection broke: worth retrying.
    #[error("{target}: {what}: {reason}")]
    Transport {
        target: String,
        what: String,
        reason: String,
    },
    /// The store answered with an error status.
    #[error("{target}: {what}: HTTP {status}: {body}")]
    Status {
        target: String,
        what: String,
        status: u16,
        body: String,
    },
    /// The store accepted an upload but what it reports does not match what was sent.
    #[error("{target}: {key}: checksum mismatch: {what}")]
    Checksum {
        target: String,
        key: String,
        what: String,
    },
    #[error("{target}: {key}: object of {bytes} bytes is over the {max}-byte limit")]
    TooLarge {
        target: String,
        key: String,
        bytes: u64,
        max: u64,
    },
    #[error("{path}: {what}: {source}")]
    Io {
        path: String,
        what: String,
        source: std::io::Error,
    },
    #[error("target configuration: {0}")]
    Config(String),
    #[error("{target}: unexpected answer to {what}: {reason}")]
    Protocol {
        target: String,
        what: String,
        reason: String,
    },
}

impl WormError {
    /// Errors a later attempt may not repeat (the network, throttling, a server fault).
    pub fn is_transient(&self) -> bool {
        match self {
            WormError::Transport { .. } | WormError::Io { .. } => true,
            WormError::Status { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }
}

pub type Result<T, E = WormError> = std::result::Result<T, E>;

/// Retention asked for one object: until when it may not be changed or deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lock {
    pub retain_until_unix_s: u64,
    pub legal_hold: bool,
}

/// Retention an object has, as the store reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retention {
    /// The store's word for the mode: `COMPLIANCE` (S3), `Locked` (Azure, GCS), `local`.
    pub mode: String,
    pub retain_until_unix_s: u64,
    pub legal_hold: bool,
}

impl Retention {
    /// Whether the store forbids shortening or removing this retention.
    pub fn is_locked(&self) -> bool {
        matches!(self.mode.as_str(), "COMPLIANCE" | "Locked" | "locked")
    }
}

/// One object of a `put_create_many` group.
#[derive(Clone, Copy, Debug)]
pub struct NewObject<'a> {
    pub key: &'a str,
    pub bytes: &'a [u8],
    pub lock: Option<Lock>,
}

/// What a create-only upload found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PutOutcome {
    Created,
    /// The key was taken and holds these same bytes (a retry of an earlier upload).
    AlreadyThere,
}

/// A mutable object and its version tag: the S3 or Azure ETag (as the store sends it,
/// quotes included), the GCS generation, or for a local directory the BLAKE3 hex of its
/// bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tagged {
    pub bytes: Vec<u8>,
    pub tag: String,
}

/// What a conditional write found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SwapOutcome {
    /// Written; the object's new tag.
    Stored { tag: String },
    /// The precondition failed: the object changed since `expected` was read (or, for a
    /// create, it exists). Nothing was written.
    Conflict,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Relative to the target's prefix.
    pub key: String,
    pub bytes: u64,
}

/// What a target can promise about immutability, checked at start.
#[derive(Clone, Debug)]
pub struct WormCheck {
    /// The store itself refuses deletes and overwrites before retention ends.
    pub enforced: bool,
    pub detail: String,
}

/// An object store that keeps what it is given. Keys are relative to the target's prefix,
/// `/`-separated, ASCII.
pub trait WormTarget: Send + Sync {
    /// `s3://bucket/prefix` and the like, for messages.
    fn describe(&self) -> String;

    /// Asks the store whether it enforces retention (S3: Object Lock enabled on the bucket).
    fn check_worm(&self) -> Result<WormCheck>;

    /// Writes `bytes` at `key` unless the key exists, with `lock` as the object's retention,
    /// sending a checksum the store verifies and checking the one it reports back. An
    /// existing object with the same bytes is `AlreadyThere` (its retention is raised to
    /// `lock` if it is shorter); with other bytes it is a `Checksum` error.
    fn put_create(&self, key: &str, bytes: &[u8], lock: Option<Lock>) -> Result<PutOutcome>;

    /// `put_create` for a group of objects, in order, with one outcome each; the
    /// replicator records a group with one manifest sync. A store that can store a group
    /// faster than one by one (parallel requests) may override it. An error may leave the
    /// first objects stored; a retry finds them `AlreadyThere`.
    fn put_create_many(&self, objects: &[NewObject<'_>]) -> Result<Vec<PutOutcome>> {
        objects
            .iter()
            .map(|o| self.put_create(o.key, o.bytes, o.lock))
            .collect()
    }

    /// Writes or replaces `key` without retention (the newest-checkpoint pointer).
    fn put_mutable(&self, key: &str, bytes: &[u8]) -> Result<()>;

    /// The object's bytes, or `None` if absent.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>>;

    /// The object's bytes and version tag, or `None` if absent (a mutable object: the lease).
    /// The bytes are those of the version the tag names.
    fn get_tagged(&self, key: &str) -> Result<Option<Tagged>>;

    /// Writes `key` without retention only if its current tag is `expected` (`If-Match`),
    /// or, with `expected = None`, only if it does not exist (`If-None-Match: *`). A store
    /// that does not support the precondition must not silently write: return an error.
    ///
    /// A key written this way must be written only this way (`put_mutable` ignores the
    /// precondition). Where the tag is a digest of the bytes (S3's ETag is their MD5, the
    /// local tag their BLAKE3), writing the same bytes again leaves the tag unchanged, so a
    /// writer that needs every write to be seen as a change must put something new in each
    /// (a counter, a time).
    fn put_if(&self, key: &str, bytes: &[u8], expected: Option<&str>) -> Result<SwapOutcome>;

    /// Bytes `[offset, offset + len)` of the object (`len` ≥ 1, within the object), or
    /// `None` if absent: how a verifier reads a segment without holding all of it.
    fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Option<Vec<u8>>>;

    /// The object's retention (`None`: the object has none, or is absent).
    fn retention(&self, key: &str) -> Result<Option<Retention>>;

    /// Every object whose key starts with `prefix`, sorted by key.
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>>;
}

/// How to reach a target besides its URL. Absent credentials are read from the usual
/// environment variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
/// `AWS_REGION`, `AWS_ENDPOINT_URL`; `AZURE_STORAGE_ACCOUNT`, `AZURE_STORAGE_KEY`;
/// `GOOGLE_OAUTH_ACCESS_TOKEN`).
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TargetOptions {
    /// Base URL of the service (`http://127.0.0.1:9000`, or for Azure the account's blob
    /// endpoint, `http://127.0.0.1:10000/devstoreaccount1`). Default: the cloud's own.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    /// Secrets print as `<redacted>` in `Debug` (this struct is part of logged configs).
    pub secret_access_key: Option<Secret>,
    pub session_token: Option<Secret>,
    pub account: Option<String>,
    pub account_key: Option<Secret>,
    pub bearer_token: Option<Secret>,
    /// Connecting to the store.
    pub connect_timeout_ms: Option<u64>,
    /// One request, start to end of the answer.
    pub request_timeout_ms: Option<u64>,
    /// Largest object read back or answer body accepted.
    pub object_bytes_max: Option<u64>,
}

pub const CONNECT_TIMEOUT_MS_DEFAULT: u64 = 5_000;
pub const REQUEST_TIMEOUT_MS_DEFAULT: u64 = 300_000;
pub const OBJECT_BYTES_MAX_DEFAULT: u64 = 1 << 30;

impl TargetOptions {
    fn env_or(v: &Option<String>, names: &[&str]) -> Option<String> {
        v.clone()
            .or_else(|| names.iter().find_map(|n| std::env::var(n).ok()))
            .filter(|s| !s.is_empty())
    }

    fn secret_env_or(v: &Option<Secret>, names: &[&str]) -> Option<String> {
        let configured = v.as_ref().map(|s| s.expose().to_string());
        Self::env_or(&configured, names)
    }
}

/// Where a URL points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    Local(std::path::PathBuf),
    S3 { bucket: String, prefix: String },
    Azure { container: String, prefix: String },
    Gcs { bucket: String, prefix: String },
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Local(p) => write!(f, "file://{}", p.display()),
            Location::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
            Location::Azure { container, prefix } => write!(f, "azure://{container}/{prefix}"),
            Location::Gcs { bucket, prefix } => write!(f, "gs://{bucket}/{prefix}"),
        }
    }
}

/// True for `s3://`, `azure://`, `gs://` and `file://` URLs (not for plain paths).
pub fn is_url(s: &str) -> bool {
    ["s3://", "azure://", "az://", "gs://", "file://"]
        .iter()
        .any(|p| s.starts_with(p))
}

pub fn parse_location(url: &str) -> Result<Location> {
    fn split(rest: &str, url: &str) -> Result<(String, String)> {
        let (b, p) = rest.split_once('/').unwrap_or((rest, ""));
        if b.is_empty() {
            return Err(WormError::Config(format!("{url}: no bucket or container")));
        }
        let p = p.trim_matches('/');
        let prefix = if p.is_empty() {
            String::new()
        } else {
            format!("{p}/")
        };
        Ok((b.to_string(), prefix))
    }
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = split(rest, url)?;
        Ok(Location::S3 { bucket, prefix })
    } else if let Some(rest) = url
        .strip_prefix("azure://")
        .or_else(|| url.strip_prefix("az://"))
    {
        let (container, prefix) = split(rest, url)?;
        Ok(Location::Azure { container, prefix })
    } else if let Some(rest) = url.strip_prefix("gs://") {
        let (bucket, prefix) = split(rest, url)?;
        Ok(Location::Gcs { bucket, prefix })
    } else if let Some(path) = url.strip_prefix("file://") {
        if path.is_empty() {
            return Err(WormError::Config(format!("{url}: empty path")));
        }
        Ok(Location::Local(path.into()))
    } else if url.contains("://") {
        Err(WormError::Config(format!(
            "{url}: unknown scheme (s3://, azure://, gs://, file:// or a path)"
        )))
    } else {
        Ok(Location::Local(url.into()))
    }
}

/// Opens the target a URL names.
pub fn open(url: &str, opts: &TargetOptions) -> Result<Box<dyn WormTarget>> {
    Ok(match parse_location(url)? {
        Location::Local(path) => Box::new(local::LocalTarget::open(&path)?),
        Location::S3 { bucket, prefix } => Box::new(s3::S3Target::new(&bucket, &prefix, opts)?),
        Location::Azure { container, prefix } => {
            Box::new(azure::AzureTarget::new(&container, &prefix, opts)?)
        }
        Location::Gcs { bucket, prefix } => Box::new(gcs::GcsTarget::new(&bucket, &prefix, opts)?),
    })
}

/// Creates the bucket (S3, with Object Lock if `object_lock`) or container (Azure) a URL
/// names: for setting up test servers and new deployments. Local directories are created
/// by [`open`]; GCS buckets with retention are made with Google's own tools.
pub fn create_bucket(url: &str, opts: &TargetOptions, object_lock: bool) -> Result<()> {
    match parse_location(url)? {
        Location::Local(path) => local::LocalTarget::open(&path).map(drop),
        Location::S3 { bucket, prefix } => {
            s3::S3Target::new(&bucket, &prefix, opts)?.create_bucket(object_lock)
        }
        Location::Azure { container, prefix } => {
            azure::AzureTarget::new(&container, &prefix, opts)?.create_container()
        }
        Location::Gcs { .. } => Err(WormError::Config(
            "creating GCS buckets is not supported here".into(),
        )),
    }
}

/// Refuses a tag `put_if` cannot send as `If-Match`: empty (moto ignores an empty
/// `If-Match` and writes unconditionally), `*` (matches any version, not the one read) or
/// anything but visible ASCII. Such a tag never reaches the store.
pub(crate) fn check_if_match(target: &str, key: &str, tag: &str) -> Result<()> {
    if tag.is_empty() || tag == "*" || !tag.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(WormError::Config(format!(
            "{target}: {key}: {tag:?} is not a version tag"
        )));
    }
    Ok(())
}

/// MD5 of `bytes`, as the stores want it in `Content-MD5` (base64).
pub fn content_md5(bytes: &[u8]) -> [u8; 16] {
    use md5::Digest;
    md5::Md5::digest(bytes).into()
}

/// The tlog-tiles path of tile `n` at tile level `level`: `tile/<L>/x001/x234/067`
/// (the grammar is `auditlog_formats::tiles`, which the HTTP tiles API serves too).
pub fn tile_key(level: u8, n: u64) -> String {
    Tile::full(TileKind::Hashes { level }, n).path()
}

/// A bundle of `count` consecutive full level-0 tiles from tile `first`, their bytes
/// concatenated: `tile/bundle/{first:020}-{count:03}`. Level-0 tiles fill at ~2,000 a
/// second at 500k events/s: one object each was more than a store (or the local
/// directory) could take, so they travel 256 at a time by default.
pub fn tile_bundle_key(first: u64, count: u64) -> String {
    format!("tile/bundle/{first:020}-{count:03}")
}

/// Inverse of [`tile_bundle_key`]: `(first, count)`.
pub fn parse_tile_bundle_key(key: &str) -> Option<(u64, u64)> {
    let (first, count) = key.strip_prefix("tile/bundle/")?.split_once('-')?;
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(first, 20) || !digits(count, 3) {
        return None;
    }
    let count: u64 = count.parse().ok()?;
    (count > 0).then_some((first.parse().ok()?, count))
}

/// The folder of the tail objects of the open segment starting at leaf `segment_first`:
/// `tail/{segment_first:020}/`. A reader lists one segment's tails at a time, so a listing
/// never grows with the log's age.
pub fn tail_prefix(segment_first: u64) -> String {
    format!("tail/{segment_first:020}/")
}

/// A tail object: the open segment's batches from leaf `first` on, byte for byte
/// (FORMATS.md §15.1). Keyed by its first leaf only, so that two writers can never both
/// store a tail from the same leaf: create-only lets exactly one of them win.
pub fn tail_key(segment_first: u64, first: u64) -> String {
    format!("{}{first:020}", tail_prefix(segment_first))
}

/// Inverse of [`tail_key`]: `(segment_first, first)`.
pub fn parse_tail_key(key: &str) -> Option<(u64, u64)> {
    let (seg, first) = key.strip_prefix("tail/")?.split_once('/')?;
    let digits = |s: &str| s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(seg) || !digits(first) {
        return None;
    }
    let (seg, first): (u64, u64) = (seg.parse().ok()?, first.parse().ok()?);
    (first >= seg).then_some((seg, first))
}

/// Inverse of [`tile_key`]: a full hash tile's level and index.
pub fn parse_tile_key(key: &str) -> Option<(u8, u64)> {
    match Tile::parse(key).ok()? {
        Tile {
            kind: TileKind::Hashes { level },
            n,
            width: TILE_WIDTH,
        } => Some((level, n)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_options_debug_redacts_every_secret() {
        let opts: TargetOptions = serde_json::from_str(
            r#"{"access_key_id":"AKIDPUBLIC","secret_access_key":"s3-secret-x",
                "session_token":"sts-token-x","account_key":"YXp1cmUta2V5LXg=",
                "bearer_token":"gcs-bearer-x"}"#,
        )
        .expect("options");
        let shown = format!("{opts:?}");
        for secret in [
            "s3-secret-x",
            "sts-token-x",
            "YXp1cmUta2V5LXg=",
            "gcs-bearer-x",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        // Identifiers are not secrets and stay visible for the operator.
        assert!(shown.contains("AKIDPUBLIC"));
        assert_eq!(
            opts.secret_access_key.as_ref().map(Secret::expose),
            Some("s3-secret-x")
        );
    }

    #[test]
    fn tile_keys_follow_tlog_tiles() {
        assert_eq!(tile_key(0, 0), "tile/0/000");
        assert_eq!(tile_key(0, 1234067), "tile/0/x001/x234/067");
        assert_eq!(tile_key(1, 999), "tile/1/999");
        for n in [0, 1, 999, 1000, 1_234_067, u64::MAX / 3] {
            assert_eq!(parse_tile_key(&tile_key(2, n)), Some((2, n)));
        }
        assert_eq!(parse_tile_key("tile/0/x001"), None);
        assert_eq!(
            tile_bundle_key(512, 256),
            "tile/bundle/00000000000000000512-256"
        );
        assert_eq!(
            parse_tile_bundle_key(&tile_bundle_key(512, 256)),
            Some((512, 256))
        );
        assert_eq!(parse_tile_bundle_key(&tile_bundle_key(7, 4)), Some((7, 4)));
        assert_eq!(parse_tile_key(&tile_bundle_key(0, 4)), None);
        assert_eq!(
            tail_key(5, 7),
            "tail/00000000000000000005/00000000000000000007"
        );
        assert_eq!(parse_tail_key(&tail_key(5, 7)), Some((5, 7)));
        assert_eq!(
            parse_tail_key(&tail_key(5, 4)),
            None,
            "a tail before its segment"
        );
        assert_eq!(parse_tail_key("tail/5/7"), None);
        assert_eq!(parse_tail_key(&tile_bundle_key(0, 4)), None);
        assert_eq!(
            parse_tile_bundle_key("tile/bundle/00000000000000000512-000"),
            None
        );
        assert_eq!(parse_tile_bundle_key("tile/bundle/512-256"), None);
        assert_eq!(parse_tile_bundle_key("tile/0/000"), None);
        assert_eq!(parse_tile_key("tile/0/001/002"), None);
    }

    #[test]
    fn urls() {
        assert_eq!(
            parse_location("s3://b/a/b/").expect("s3"),
            Location::S3 {
                bucket: "b".into(),
                prefix: "a/b/".into()
            }
        );
        assert_eq!(
            parse_location("gs://b").expect("gs"),
            Location::Gcs {
                bucket: "b".into(),
                prefix: String::new()
            }
        );
        assert!(matches!(
            parse_location("./data/worm"),
            Ok(Location::Local(_))
        ));
        assert!(parse_location("ftp://x").is_err());
        assert!(parse_location("s3:///x").is_err());
    }
}
