//! `raftkv`: for now only `raftkv node`, enough to run real-process tests. The full
//! command-line interface (client commands, repl, bench) replaces this file.

use std::{path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand};
use raftkv::{protocol::DEFAULT_MAX_CLIENT_LINE, server};

#[derive(Parser)]
#[command(name = "raftkv", version, about = "A Raft-replicated key-value store")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one cluster member in the foreground until Ctrl-C / SIGTERM.
    Node(NodeArgs),
}

#[derive(Args)]
struct NodeArgs {
    /// This node's id in the cluster file.
    #[arg(long)]
    id: u64,
    /// The cluster file (used only when the data directory is new).
    #[arg(long)]
    cluster: PathBuf,
    /// The node's data directory.
    #[arg(long)]
    data_dir: PathBuf,
    /// error, warn, info or debug.
    #[arg(long, default_value = "info")]
    log_level: String,
    /// Milliseconds per Raft tick (elections time out after 30-60 ticks).
    #[arg(long, default_value_t = 10)]
    tick_ms: u64,
    /// Longest client request line accepted, in bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_CLIENT_LINE)]
    max_line_bytes: usize,
}

fn main() -> ExitCode {
    let Command::Node(a) = Cli::parse().command;
    let options = server::NodeOptions {
        id: a.id,
        cluster: a.cluster,
        data_dir: a.data_dir,
        log_level: a.log_level,
        tick_ms: a.tick_ms,
        max_line_bytes: a.max_line_bytes,
    };
    match server::run(options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("raftkv: error: {e}");
            ExitCode::FAILURE
        }
    }
}
