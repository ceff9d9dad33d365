//! auditlog-formats: every byte layout and pure algorithm of auditlog. No I/O, no async.
//! The layouts are written down in `FORMATS.md` next to this crate.

pub mod batch;
pub mod checkpoint_log;
pub mod hash;
pub mod note;
pub mod record;
pub mod schema;
pub mod segment;
pub mod tree;

pub use hash::{Hash, TreeHash};
