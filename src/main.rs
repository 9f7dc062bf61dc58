//! The `songfs` command line: parse, dispatch, map errors to exit codes.

use std::process::ExitCode;

fn main() -> ExitCode {
    songfs::cli::main()
}
