//! auditlog-formats: every byte layout and pure algorithm of auditlog. No I/O, no async.
//! The layouts are written down in `FORMATS.md` next to this crate.

pub mod batch;
pub mod cef;
pub mod checkpoint_log;
pub mod columnar;
pub mod cosignature;
pub mod export;
pub mod frame;
pub mod hash;
pub mod keyhistory;
pub mod layout;
pub mod leafindex;
pub mod note;
pub mod record;
pub mod schema;
pub mod search;
pub mod searchindex;
pub mod secret;
pub mod segment;
pub mod syslog;
pub mod tiles;
pub mod time;
pub mod tree;
pub mod varint;

pub use hash::{Hash, TreeHash};

/// The version of the formats in `FORMATS.md` as a whole (record, batch, segment, checkpoint
/// log, key history, frames): raised when any layout changes incompatibly.
pub const FORMATS_VERSION: u32 = 2;
pub use secret::Secret;

/// Big-endian reads for the decoders; callers have checked the length.
pub(crate) fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

pub(crate) fn be_u64(b: &[u8]) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[..8]);
    u64::from_be_bytes(x)
}
