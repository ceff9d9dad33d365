//! `auditlog`: the command-line client (`auditlog_client::app`).

fn main() -> std::process::ExitCode {
    auditlog_client::app::main()
}
