//! The command line: one subcommand per tool, each a thin layer that validates flags into a tool's
//! config, binds, announces the address and runs until a signal.

mod bench;
mod chat;
pub mod common;
mod daytime;
mod docs;
mod echo;
mod http;
pub mod log;
mod relay;
pub mod scan;
mod transfer;

use std::sync::atomic::AtomicU8;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// sockit: the classic socket tools, built properly.
#[derive(Debug, Parser)]
#[command(name = "sockit", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// More log output (-v debug, -vv trace; connect/listen: -v ncat's lines, -vv debug); RUST_LOG
    /// overrides
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Only errors in the log (after the tool's name only as --quiet: there -q is nc's)
    #[arg(long, global = true)]
    pub quiet: bool,

    /// -q before the tool's name is --quiet (`sockit -q echo`); after `connect`/`listen` it is
    /// nc's quit-after-EOF
    #[arg(short = 'q', hide = true)]
    pub quiet_short: bool,

    /// Log as JSON lines (for log collectors)
    #[arg(long, global = true)]
    pub log_json: bool,

    /// Log lines that may wait for a slow stderr (and, in http, access log lines); past it lines
    /// are dropped and counted, never waited for
    #[arg(long, global = true, value_name = "N", default_value_t = log::QUEUE_LINES, value_parser = clap::builder::TypedValueParser::map(clap::value_parser!(u32).range(1..=1_000_000), |n| n as usize))]
    pub log_queue: usize,

    #[command(subcommand)]
    pub tool: Tool,
}

#[derive(Debug, Subcommand)]
pub enum Tool {
    /// Group chat server for nc/telnet and sockit's clients: nicks, rooms, history; `chat join`
    /// is the client
    #[command(after_help = chat::EXAMPLES, args_conflicts_with_subcommands = true)]
    Chat(chat::ChatArgs),
    /// Echo server: sends every byte back (TCP, UDP, Unix, TLS)
    #[command(after_help = echo::EXAMPLES)]
    Echo(echo::EchoArgs),
    /// Time server (RFC 867): sends the time and closes (TCP) or answers each datagram (UDP)
    #[command(after_help = daytime::EXAMPLES)]
    Daytime(daytime::DaytimeArgs),
    /// Static file server: a folder over HTTP/1.1 and HTTP/2 (TLS), listings, ranges, ETags
    #[command(after_help = http::EXAMPLES)]
    Http(http::HttpArgs),
    /// Netcat client: stdin to a TCP/UDP/Unix/TLS socket and the socket to stdout, or a command
    #[command(after_help = relay::CONNECT_EXAMPLES)]
    Connect(relay::ConnectArgs),
    /// Netcat server: one connection (or many with -k) to stdin/stdout, or a command per connection
    #[command(after_help = relay::LISTEN_EXAMPLES)]
    Listen(relay::ListenArgs),
    /// Send files and folders to `sockit recv` (or serve them with --listen), verified, resumable
    #[command(after_help = transfer::SEND_EXAMPLES)]
    Send(transfer::SendArgs),
    /// Receive files and folders from `sockit send` (or the tutorial's md5 sender) into a folder
    #[command(after_help = transfer::RECV_EXAMPLES)]
    Recv(transfer::RecvArgs),
    /// TCP port scanner: connect scan of many hosts and ports, service names, banners, JSON
    #[command(after_help = scan::EXAMPLES)]
    Scan(scan::ScanArgs),
    /// Load generators: measure a server's throughput, latency and CPU cost
    Bench(bench::BenchArgs),
    /// Shell completions: `source <(sockit completions bash)`
    Completions(docs::CompletionsArgs),
    /// Man pages: `sockit man listen | man -l -`, or all of them with --dir DIR
    Man(docs::ManArgs),
}

impl Tool {
    /// Runs the chosen tool to completion.
    pub async fn run(self) -> Result<()> {
        match self {
            Tool::Chat(args) => chat::run(args).await,
            Tool::Echo(args) => echo::run(args).await,
            Tool::Daytime(args) => daytime::run(args).await,
            Tool::Http(args) => http::run(args).await,
            Tool::Connect(args) => relay::connect(args).await,
            Tool::Listen(args) => relay::listen(args).await,
            Tool::Send(args) => transfer::send(args).await,
            Tool::Recv(args) => transfer::recv(args).await,
            Tool::Scan(args) => scan::run(args).await,
            Tool::Bench(args) => bench::run(args).await,
            Tool::Completions(args) => docs::completions(args),
            Tool::Man(args) => docs::man(args),
        }
    }

    /// Servers log their life cycle at info level by default; clients keep quiet unless asked.
    pub fn is_server(&self) -> bool {
        match self {
            Tool::Chat(args) => args.action.is_none(),
            Tool::Echo(_) | Tool::Daytime(_) | Tool::Http(_) | Tool::Listen(_) | Tool::Recv(_) => {
                true
            }
            Tool::Send(args) => args.listen.is_some(),
            Tool::Connect(_)
            | Tool::Scan(_)
            | Tool::Bench(_)
            | Tool::Completions(_)
            | Tool::Man(_) => false,
        }
    }

    /// `connect` / `listen`: the netcat, whose log lines look like ncat's.
    pub fn netcat_name(&self) -> Option<&'static str> {
        match self {
            Tool::Connect(_) => Some("connect"),
            Tool::Listen(_) => Some("listen"),
            _ => None,
        }
    }

    /// Whether the tool takes over the terminal, where log lines would garble the screen.
    pub fn is_fullscreen(&self) -> bool {
        matches!(self, Tool::Chat(chat::ChatArgs { action: Some(chat::ChatAction::Join(join)), .. }) if join.is_tui())
    }
}

/// `-v` as counted on the command line, for tools whose output (not only their log) it changes.
pub static VERBOSE: AtomicU8 = AtomicU8::new(0);

/// A usage error found after parsing (exit 2), said in one line.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

/// Prints the line tests and users read the bound address from (JSON with `--log-json`, the
/// text in `message`).
pub fn announce(tool: &str, addr: &sockit::net::LocalAddr, what: &str) {
    log::say(&format!("sockit {tool}: listening on {addr} ({what})"));
}
