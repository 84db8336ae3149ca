//! `sockit bench` flags: one subcommand per load generator (`echo` now; `chat` to come).

use std::time::Duration;

use anyhow::Result;
use clap::{Args, Subcommand};
use sockit::bench::chat::{self, ChatBenchConfig};
use sockit::bench::echo::{
    self, EchoBenchConfig, Mode, DEFAULT_PINGPONG_SIZE, DEFAULT_STREAM_SIZE,
};
use sockit::bench::{self as lib, BenchError};
use sockit::net::{ConnectOptions, Endpoint};

use super::common::{parse_count, parse_duration, parse_endpoint};

pub const EXAMPLES: &str = "Examples:
  sockit bench echo                          64 connections x 64 B pingpong against 127.0.0.1:9001
  sockit bench echo -c 1 --mode stream       one connection, bulk throughput
  sockit bench echo -d 30s --json 9001       30 s, machine-readable report";

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub kind: BenchKind,
}

#[derive(Debug, Subcommand)]
pub enum BenchKind {
    /// Load an echo server: round trips/s, MB/s, latency percentiles, errors, client CPU
    #[command(after_help = EXAMPLES)]
    Echo(EchoBenchArgs),
    /// Load a line-based chat server (sockit chat, ncat --chat): deliveries/s, delivery latency
    #[command(after_help = CHAT_EXAMPLES)]
    Chat(ChatBenchArgs),
}

pub const CHAT_EXAMPLES: &str = "Examples:
  sockit bench chat                          1000 clients in one room, 10 senders at 10 lines/s, 10 s
  sockit bench chat --senders 1000 --rate 4  everyone talking: 4M deliveries/s offered
  sockit bench chat --rate 0                 10 senders flat out, one stream each
  sockit bench chat --server-pid $(pgrep -o -f 'sockit.* chat')   also the server's CPU per delivery
  sockit bench chat -c 200 --rooms 4 --senders 40 --json
  sockit bench chat -c 10000 --senders 0     hold 10,000 idle clients (measure the server's memory)
  sockit bench chat 127.0.0.1:9200 --connect-parallel 8      ncat --chat (listen backlog 10)
A client counts as connected once the server has sent it a line (--no-greeting: once TCP is up).
Start sockit chat with --rate 0 (or a rate above the load's): its default allows 5 lines/s per client.
bench/chat.sh runs sockit chat, ncat --chat and a Python room side by side and finds each one's
capacity.";

#[derive(Debug, Args)]
pub struct ChatBenchArgs {
    /// The chat server: HOST:PORT, [IPv6]:PORT, unix:PATH or a port; several (the nodes of a
    /// sockit chat cluster) share the clients in turn: client i connects to the i-th mod their count
    #[arg(value_name = "ADDR", value_parser = parse_endpoint, default_value = chat::DEFAULT_TARGET, num_args = 1..)]
    pub targets: Vec<Endpoint>,

    /// Clients connected for the whole run
    #[arg(short = 'c', long, value_name = "N", default_value = "1000", value_parser = parse_count)]
    pub clients: usize,

    /// Rooms the clients are spread over (sockit's /join; leave at 1 for servers without rooms)
    #[arg(long, value_name = "N", default_value = "1", value_parser = parse_count)]
    pub rooms: usize,

    /// How many clients send
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub senders: usize,

    /// Lines per second per sender (0 = as fast as the server takes them)
    #[arg(long, value_name = "N", default_value_t = 10.0)]
    pub rate: f64,

    /// Count a client as connected as soon as TCP is, without waiting for the server's first line
    /// (for servers that greet no one; with a full accept queue, such clients may not be members)
    #[arg(long)]
    pub no_greeting: bool,

    /// Clients connecting at once; keep it under the server's accept backlog (ncat's is 10)
    #[arg(long, value_name = "N", default_value_t = chat::CONNECT_PARALLEL, value_parser = parse_count)]
    pub connect_parallel: usize,

    /// The server's process ID (same machine): report its CPU over the measured window, and per
    /// delivery
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,

    #[command(flatten)]
    pub run: RunArgs,
}

/// How long, on how many threads, and how to report: the same for every load generator.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// How long to measure (10s, 1m)
    #[arg(short = 'd', long, value_name = "TIME", default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Load before measuring, not counted
    #[arg(long, value_name = "TIME", default_value = "1s", value_parser = parse_duration)]
    pub warmup: Duration,

    /// Worker threads of the load generator [default: one per CPU]
    #[arg(long, value_name = "N", value_parser = parse_count)]
    pub threads: Option<usize>,

    /// Give up connecting after this long
    #[arg(short = 'w', long = "wait", value_name = "TIME", default_value = "10s", value_parser = parse_duration)]
    pub connect_timeout: Duration,

    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
}

impl RunArgs {
    fn threads(&self) -> usize {
        self.threads.unwrap_or_else(lib::default_threads)
    }

    fn connect(&self) -> ConnectOptions {
        ConnectOptions {
            timeout: Some(self.connect_timeout).filter(|t| !t.is_zero()),
            ..ConnectOptions::default()
        }
    }
}

#[derive(Debug, Args)]
pub struct EchoBenchArgs {
    /// The echo server: HOST:PORT, [IPv6]:PORT, unix:PATH or a port
    #[arg(value_name = "ADDR", value_parser = parse_endpoint, default_value = echo::DEFAULT_TARGET)]
    pub target: Endpoint,

    /// Connections, all active at once
    #[arg(short = 'c', long, value_name = "N", default_value = "64", value_parser = parse_count)]
    pub connections: usize,

    /// Bytes per message (pingpong) or per write (stream) [default: 64, stream 131072]
    #[arg(short = 's', long, value_name = "BYTES", value_parser = parse_count)]
    pub size: Option<usize>,

    /// pingpong: send, wait for the echo, repeat; stream: write and read at once, flat out
    #[arg(long, value_name = "MODE", default_value = "pingpong")]
    pub mode: Mode,

    /// Stop each connection after N round trips, even before the duration is over
    #[arg(short = 'n', long = "round-trips", value_name = "N", value_parser = parse_count)]
    pub max_round_trips: Option<usize>,

    #[command(flatten)]
    pub run: RunArgs,
}

pub async fn run(args: BenchArgs) -> Result<()> {
    match args.kind {
        BenchKind::Echo(args) => run_echo(args).await,
        BenchKind::Chat(args) => run_chat(args).await,
    }
}

async fn run_echo(args: EchoBenchArgs) -> Result<()> {
    let size = args.size.unwrap_or(match args.mode {
        Mode::Pingpong => DEFAULT_PINGPONG_SIZE,
        Mode::Stream => DEFAULT_STREAM_SIZE,
    });
    let config = EchoBenchConfig {
        target: args.target,
        connections: args.connections,
        size,
        mode: args.mode,
        duration: args.run.duration,
        warmup: args.run.warmup,
        max_round_trips: args.max_round_trips.map(|n| n as u64),
        connect: args.run.connect(),
    };
    let threads = args.run.threads();
    let report = outcome(lib::on_own_runtime(threads, move || echo::run(config, threads)).await)?;
    emit(&report, args.run.json, || report.table())
}

/// The report, or the error as the binary should print it: a connect failure as the bare
/// `NetError`, so its one line and exit code come through.
fn outcome<T>(result: Result<Result<T, BenchError>, BenchError>) -> Result<T> {
    match result {
        Ok(Ok(report)) => Ok(report),
        Ok(Err(BenchError::Connect(e))) => Err(e.into()),
        Ok(Err(e)) | Err(e) => Err(e.into()),
    }
}

/// Prints a report as JSON or as a table for people.
fn emit<R: serde::Serialize, T: std::fmt::Display>(
    report: &R,
    json: bool,
    table: impl FnOnce() -> T,
) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print!("{}", table());
    }
    Ok(())
}

async fn run_chat(args: ChatBenchArgs) -> Result<()> {
    let mut config = ChatBenchConfig::new(args.targets[0].clone());
    config.targets = args.targets;
    config.clients = args.clients;
    config.rooms = args.rooms;
    config.senders = args.senders;
    config.rate = args.rate;
    config.await_greeting = !args.no_greeting;
    config.connect_parallel = args.connect_parallel;
    config.server_pid = args.server_pid;
    config.duration = args.run.duration;
    config.warmup = args.run.warmup;
    config.connect = args.run.connect();
    let threads = args.run.threads();
    let report = outcome(lib::on_own_runtime(threads, move || chat::run(config, threads)).await)?;
    emit(&report, args.run.json, || report.table())
}
