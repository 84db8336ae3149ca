//! `sockit echo` flags.

use anyhow::Result;
use clap::Args;
use sockit::echo::{EchoConfig, EchoServer, Transport, DEFAULT_TCP, DEFAULT_UDP};
use sockit::net::{self, Endpoint, ReplyLimits, DEFAULT_REPLY_SOURCES};

use super::common::{parse_endpoint, ServerArgs};

pub const EXAMPLES: &str = "Examples:
  sockit echo                      TCP on 127.0.0.1:9001
  sockit echo -u                   UDP on 127.0.0.1:9002
  sockit echo --upper 0.0.0.0:7    every interface, answers upper-cased
  sockit echo unix:/tmp/echo.sock  a Unix socket
  sockit echo --tls                TLS with a self-signed certificate (fingerprint printed)
Try it: echo hello | nc -N 127.0.0.1 9001";

#[derive(Debug, Args)]
pub struct EchoArgs {
    /// Address to listen on: HOST:PORT, [IPv6]:PORT, unix:PATH or a port
    /// [default: 127.0.0.1:9001, or 127.0.0.1:9002 with -u]
    #[arg(value_name = "ADDR", value_parser = parse_endpoint)]
    pub addr: Option<Endpoint>,

    /// UDP: answer each datagram to its sender
    #[arg(short, long)]
    pub udp: bool,

    /// Send the data back upper-cased
    #[arg(long)]
    pub upper: bool,

    #[command(flatten)]
    pub replies: ReplyArgs,

    #[command(flatten)]
    pub server: ServerArgs,
}

/// How many UDP replies a source address gets (echo -u, daytime -u). Datagrams from sources that
/// could make a loop (this server's own port, ports below 1024, broadcast/multicast) are never
/// answered, whatever these say.
#[derive(Debug, Args, Clone)]
pub struct ReplyArgs {
    /// UDP: replies per second to one source address, so a forged source cannot turn the server
    /// into a loop or a reflector (0 = no limit); datagrams from this server's own port, ports
    /// below 1024, broadcast or multicast sources are never answered
    #[arg(long, value_name = "N", default_value_t = net::DEFAULT_REPLY_RATE)]
    pub reply_rate: u32,

    /// UDP: replies one source address may get at once before --reply-rate applies
    #[arg(long, value_name = "N", default_value_t = net::DEFAULT_REPLY_BURST, value_parser = clap::value_parser!(u32).range(1..))]
    pub reply_burst: u32,
}

impl ReplyArgs {
    pub fn limits(&self) -> ReplyLimits {
        ReplyLimits {
            rate: self.reply_rate,
            burst: self.reply_burst,
            max_sources: DEFAULT_REPLY_SOURCES,
        }
    }
}

pub async fn run(args: EchoArgs) -> Result<()> {
    let transport = if args.udp {
        Transport::Datagram
    } else {
        Transport::Stream
    };
    let default = if args.udp { DEFAULT_UDP } else { DEFAULT_TCP };
    let endpoint = match args.addr {
        Some(ep) => ep,
        None => default.parse()?,
    };
    let config = EchoConfig {
        endpoint,
        transport,
        upper: args.upper,
        server: args.server.options("echo")?,
    };
    let what = match (&config.endpoint, transport, config.server.tls.is_some()) {
        (Endpoint::Unix(_), _, _) => "unix",
        (_, Transport::Datagram, _) => "udp",
        (_, _, true) => "tls",
        _ => "tcp",
    };
    let shutdown = net::on_signals()?;
    let server = EchoServer::bind(config)
        .await?
        .with_reply_limits(args.replies.limits());
    super::announce("echo", &server.local_addr(), what);
    server.run(shutdown).await;
    Ok(())
}
