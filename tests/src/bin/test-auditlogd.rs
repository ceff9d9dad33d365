//! `auditlogd` as a binary of this package, so the system tests get it from
//! `env!("CARGO_BIN_EXE_test-auditlogd")`: cargo builds it before the tests, with the
//! workspace's features, and no test runs a `cargo build` of its own. It is the shipped
//! daemon's one call (`server/src/main.rs`), under a name that cannot collide with it.

fn main() -> anyhow::Result<()> {
    auditlog_server::main()
}
