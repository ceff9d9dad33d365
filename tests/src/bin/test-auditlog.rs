//! The `auditlog` CLI as a binary of this package (`env!("CARGO_BIN_EXE_test-auditlog")`),
//! for the reason `test-auditlogd.rs` gives; the shipped CLI's one call
//! (`client/src/main.rs`).

fn main() -> std::process::ExitCode {
    auditlog_client::app::main()
}
