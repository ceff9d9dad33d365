//! auditlog-client: the `auditlog` CLI's library side. `verify` checks a data directory
//! with `auditlog-formats` alone, so an auditor's tool shares nothing with the write path.

pub mod http;
pub mod export;
pub mod tcp;
pub mod verify;
