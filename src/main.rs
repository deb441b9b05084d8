//! The `raftkv` binary: see `raftkv --help` and docs/protocol.md §1.

fn main() {
    std::process::exit(raftkv::cli::run(std::env::args_os()));
}
