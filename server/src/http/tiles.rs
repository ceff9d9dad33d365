//! The C2SP tlog-tiles read API (FORMATS.md §5.8): `GET /checkpoint`, `GET /tile/<L>/<N>
//! [.p/<W>]` (hash tiles) and `GET /tile/entries/<N>[.p/<W>]` (entry bundles), so a
//! standard transparency client or witness can follow and verify the log knowing only its
//! origin and verifier key. Served by writers and read replicas alike (both answer from
//! their engine, up to the newest checkpoint each has).
//!
//! Auth is that of the routes serving the same data: the checkpoint and hash tiles as
//! proofs (auditor), entry bundles as event reads (reader, auditor); `server.tiles_public`
//! serves all of it without credentials. Full tiles never change: cached for a year
//! (`public` only when the API is public, else `private`, so a shared cache never hands an
//! authenticated answer to someone else); the checkpoint and partial tiles for 2 s.

use auditlog_engine::TileError;
use auditlog_formats::tiles::{Tile, TileKind};

use super::*;
use crate::auth::Access;

const OCTETS: &str = "application/octet-stream";
const IMMUTABLE: (&str, &str) = (
    "public, max-age=31536000, immutable",
    "private, max-age=31536000, immutable",
);
const SHORT: (&str, &str) = ("public, max-age=2", "private, max-age=2");

/// Checks the caller, unless the API is public (then true). Also who the caller is for
/// the per-principal limits: its principal, or when public, its source address.
async fn allow(st: &AppState, caller: &Caller, access: Access) -> ApiResult<(bool, String)> {
    if st.cfg.tiles_public {
        let from = caller.addr.map_or("unknown".into(), |a| a.to_string());
        return Ok((true, format!("public:{from}")));
    }
    let (_, who) = authorize_submitter(st, caller, access).await?;
    Ok((false, who.as_str().to_string()))
}

fn cache(mut r: Response, public: bool, policy: (&'static str, &'static str)) -> Response {
    let value = if public { policy.0 } else { policy.1 };
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static(value));
    r
}

pub(super) async fn get_checkpoint(State(st): State<St>, caller: Caller) -> ApiResult {
    let (public, _) = allow(&st, &caller, Access::Audit).await?;
    let alg = st.engine.tree_hash();
    if alg != TreeHash::Sha256 {
        return Err(tile_error(TileError::NotSha256(alg.name())));
    }
    let cp = st.engine.latest_checkpoint().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "checkpoint_pending",
            "no checkpoint is signed yet",
        )
    })?;
    let r = with_type(cp.note.clone(), "text/plain; charset=utf-8");
    Ok(cache(r, public, SHORT))
}

pub(super) async fn get_tile(
    State(st): State<St>,
    caller: Caller,
    Path(rest): Path<String>,
) -> ApiResult {
    let path = format!("tile/{rest}");
    let tile = Tile::parse(&path).map_err(|e| ApiError::bad(e.to_string()))?;
    let access = match tile.kind {
        TileKind::Hashes { .. } => Access::Audit,
        TileKind::Entries => Access::ReadEvents,
    };
    let (public, who) = allow(&st, &caller, access).await?;
    // A bundle reads up to 256 records (16 MiB), maybe from the object store: it takes a
    // streamed-read slot, per principal or, when public, per source address.
    let _slot = match tile.kind {
        TileKind::Entries => Some(st.streamed_reads.take_key(&who)?),
        TileKind::Hashes { .. } => None,
    };
    let engine = st.engine.clone();
    let bytes = match tokio::task::spawn_blocking(move || engine.read_tile(tile)).await {
        Ok(r) => r.map_err(tile_error)?,
        Err(e) => return Err(ApiError::internal(format!("tile task failed: {e}"))),
    };
    let policy = if tile.is_full() { IMMUTABLE } else { SHORT };
    Ok(cache(with_type(bytes, OCTETS), public, policy))
}

fn tile_error(e: TileError) -> ApiError {
    match e {
        TileError::NotSha256(_) | TileError::Beyond { .. } => {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", e.to_string())
        }
        TileError::EntryTooLarge { .. } => {
            ApiError::new(StatusCode::NOT_FOUND, "entry_too_large", e.to_string())
        }
        TileError::Engine(e) => e.into(),
    }
}
