//! `sockit daytime` flags.

use anyhow::Result;
use clap::Args;
use sockit::daytime::{
    validate_format, DaytimeConfig, DaytimeServer, DEFAULT_ADDR, DEFAULT_FORMAT,
};
use sockit::net::{self, Endpoint};

use super::common::{parse_endpoint, ServerArgs};
use super::echo::ReplyArgs;

pub const EXAMPLES: &str = "Examples:
  sockit daytime                   TCP on 127.0.0.1:9999
  sockit daytime -u                UDP: answers any datagram with the time
  sockit daytime --utc --format '%Y-%m-%dT%H:%M:%SZ'
Try it: nc 127.0.0.1 9999";

#[derive(Debug, Args)]
pub struct DaytimeArgs {
    /// Address to listen on [default: 127.0.0.1:9999]
    #[arg(value_name = "ADDR", value_parser = parse_endpoint)]
    pub addr: Option<Endpoint>,

    /// UDP instead of TCP
    #[arg(short, long)]
    pub udp: bool,

    /// Report UTC instead of local time
    #[arg(long)]
    pub utc: bool,

    /// strftime format of the time line
    #[arg(long, default_value = DEFAULT_FORMAT, value_parser = check_format)]
    pub format: String,

    #[command(flatten)]
    pub replies: ReplyArgs,

    #[command(flatten)]
    pub server: ServerArgs,
}

fn check_format(text: &str) -> Result<String, String> {
    validate_format(text).map(|()| text.to_string())
}

pub async fn run(args: DaytimeArgs) -> Result<()> {
    let endpoint = match args.addr {
        Some(ep) => ep,
        None => DEFAULT_ADDR.parse()?,
    };
    let config = DaytimeConfig {
        endpoint,
        udp: args.udp,
        format: args.format,
        utc: args.utc,
        server: args.server.options("daytime")?,
    };
    let what = if config.udp { "udp" } else { "tcp" };
    let shutdown = net::on_signals()?;
    let server = DaytimeServer::bind(config)
        .await?
        .with_reply_limits(args.replies.limits());
    super::announce("daytime", &server.local_addr(), what);
    server.run(shutdown).await;
    Ok(())
}
