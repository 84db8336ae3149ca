//! The command line: one subcommand per tool, each a thin layer that validates flags into a tool's
//! config, binds, announces the address and runs until a signal.

mod bench;
pub mod common;
mod daytime;
mod echo;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// sockit: the classic socket tools, built properly.
#[derive(Debug, Parser)]
#[command(name = "sockit", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// More log output (-v debug, -vv trace); RUST_LOG overrides
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Only errors in the log
    #[arg(short, long, global = true)]
    pub quiet: bool,

    /// Log as JSON lines (for log collectors)
    #[arg(long, global = true)]
    pub log_json: bool,

    #[command(subcommand)]
    pub tool: Tool,
}

#[derive(Debug, Subcommand)]
pub enum Tool {
    /// Echo server: sends every byte back (TCP, UDP, Unix, TLS)
    #[command(after_help = echo::EXAMPLES)]
    Echo(echo::EchoArgs),
    /// Time server (RFC 867): sends the time and closes (TCP) or answers each datagram (UDP)
    #[command(after_help = daytime::EXAMPLES)]
    Daytime(daytime::DaytimeArgs),
    /// Load generators: measure a server's throughput, latency and CPU cost
    Bench(bench::BenchArgs),
}

impl Tool {
    /// Runs the chosen tool to completion.
    pub async fn run(self) -> Result<()> {
        match self {
            Tool::Echo(args) => echo::run(args).await,
            Tool::Daytime(args) => daytime::run(args).await,
            Tool::Bench(args) => bench::run(args).await,
        }
    }

    /// Servers log their life cycle at info level by default; clients keep quiet unless asked.
    pub fn is_server(&self) -> bool {
        matches!(self, Tool::Echo(_) | Tool::Daytime(_))
    }
}

/// Prints the line tests and users read the bound address from.
pub fn announce(tool: &str, addr: &sockit::net::LocalAddr, what: &str) {
    eprintln!("sockit {tool}: listening on {addr} ({what})");
}
