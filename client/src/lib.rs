//! auditlog-client: the `auditlog` CLI's library side. `verify` checks a data directory, or
//! the objects shipped to a WORM bucket, with `auditlog-formats` alone (plus
//! `auditlog-worm` to read buckets), so an auditor's tool shares nothing with the write path.

pub mod bucket;
pub mod export;
pub mod http;
pub mod search;
pub mod source;
pub mod tcp;
pub mod verify;

#[doc(hidden)]
pub mod app;
pub mod cli;
mod prove;
mod verify_cmd;
pub mod witness;
