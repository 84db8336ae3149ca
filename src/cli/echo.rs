//! `sockit echo` flags.

use anyhow::Result;
use clap::Args;
use sockit::echo::{EchoConfig, EchoServer, Transport, DEFAULT_TCP, DEFAULT_UDP};
use sockit::net::{self, Endpoint};

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
    pub server: ServerArgs,
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
    let server = EchoServer::bind(config).await?;
    super::announce("echo", &server.local_addr(), what);
    server.run(shutdown).await;
    Ok(())
}
