//! `auditlogd`: the daemon is the library's one entry (see `lib.rs` for why it is a library).

fn main() -> anyhow::Result<()> {
    auditlog_server::main()
}
