//! `sockit http` flags.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use sockit::http::{AccessLog, HttpConfig, HttpServer, LogFormat, DEFAULT_ADDR};
use sockit::net::{self, http as nethttp, Endpoint, HttpOptions};

use super::common::{parse_duration, parse_endpoint, ServerArgs};
use super::log;

pub const EXAMPLES: &str = "Examples:
  sockit http                       the current folder on http://127.0.0.1:8080/
  sockit http ~/site -l 0.0.0.0:8080 --compress
  sockit http . --tls               https (and HTTP/2) with a self-signed certificate
  sockit http . --auth ann:s3cret --tls
Try it: curl -i http://127.0.0.1:8080/";

#[derive(Debug, Args)]
pub struct HttpArgs {
    /// Folder to serve [default: the current folder]
    #[arg(value_name = "DIR", default_value = ".")]
    pub dir: PathBuf,

    /// Address to listen on: HOST:PORT, [IPv6]:PORT, unix:PATH or a port
    #[arg(short = 'l', long = "listen", value_name = "ADDR", default_value = DEFAULT_ADDR, value_parser = parse_endpoint)]
    pub addr: Endpoint,

    /// Do not list folders that have no index.html (403 instead)
    #[arg(long)]
    pub no_listing: bool,

    /// Serve and list dotfiles (.git, .env, ...); hidden by default
    #[arg(long)]
    pub hidden: bool,

    /// Let symlinks lead out of DIR; by default a symlink to a place outside DIR gets 403
    #[arg(long)]
    pub follow_symlinks: bool,

    /// Compress text files on the fly (br, zstd, gzip) for clients that accept it; .br/.zst/.gz
    /// siblings are served without it
    #[arg(long)]
    pub compress: bool,

    /// Smallest file compressed with --compress, in bytes
    #[arg(long, value_name = "BYTES", default_value_t = sockit::http::DEFAULT_COMPRESS_MIN)]
    pub compress_min: u64,

    /// Most entries one folder listing shows; a bigger folder shows the first ones it yields
    /// and says so
    #[arg(long, value_name = "N", default_value_t = sockit::http::DEFAULT_MAX_LISTING, value_parser = clap::value_parser!(usize))]
    pub max_listing: usize,

    /// Most byte ranges one request may ask for (more get the whole file; 0 = no ranges)
    #[arg(long, value_name = "N", default_value_t = sockit::http::range::DEFAULT_MAX_RANGES)]
    pub max_ranges: usize,

    /// Ask for a user name and password (HTTP basic auth); use with --tls, or they cross the
    /// network in the clear
    #[arg(
        long,
        value_name = "USER:PASS",
        env = "SOCKIT_HTTP_AUTH",
        hide_env_values = true
    )]
    pub auth: Option<String>,

    /// Also answer to this host name (repeatable, or a comma list). Only a Host naming the
    /// listener is served (its IP address, any IP when bound to 0.0.0.0 or [::], localhost on
    /// loopback, and these names); any other gets 421, so a web page whose name is made to resolve
    /// to this machine (DNS rebinding) cannot read the folder
    #[arg(long, value_name = "NAME", value_delimiter = ',', value_parser = sockit::net::parse_host_name)]
    pub web_host: Vec<String>,

    /// A request head must arrive within this (slowloris); also how long an idle keep-alive
    /// connection is kept
    #[arg(long, value_name = "TIME", default_value = "10s", value_parser = parse_duration)]
    pub header_timeout: Duration,

    /// Largest request head (request line and headers) in bytes; larger gets 431
    #[arg(long, value_name = "BYTES", default_value_t = nethttp::DEFAULT_MAX_HEAD, value_parser = parse_head)]
    pub max_header_size: usize,

    /// Cut a response the client takes nothing of for this long (nginx's send_timeout; 0 = never)
    #[arg(long, value_name = "TIME", default_value = "30s", value_parser = parse_duration)]
    pub write_timeout: Duration,

    /// HTTP/2: most requests in flight on one connection
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub max_streams: u32,

    /// Speak only HTTP/1.1, also over TLS (HTTP/2 is offered by ALPN with --tls otherwise)
    #[arg(long)]
    pub no_http2: bool,

    /// Send file bodies from user space instead of with sendfile(2) (which plain-TCP HTTP/1.1
    /// uses by default; TLS and HTTP/2 always copy)
    #[arg(long)]
    pub no_sendfile: bool,

    /// Serve connections on this many worker threads, each with its own event loop (nginx's
    /// worker_processes; 0 = one per CPU; at most 256)
    #[arg(long, value_name = "N", default_value_t = 0,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(0..=256))]
    pub workers: usize,

    /// No access log (one line per request on stderr, common log format, JSON with --log-json)
    #[arg(long)]
    pub no_access_log: bool,

    #[command(flatten)]
    pub server: ServerArgs,
}

/// hyper needs at least 8 KiB of read buffer.
fn parse_head(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if n >= 8192 => Ok(n),
        _ => Err(format!(
            "{text:?} is not a head size of at least 8192 bytes"
        )),
    }
}

pub async fn run(args: HttpArgs) -> Result<()> {
    let server = args.server.options("http")?;
    if args.auth.is_some() && server.tls.is_none() {
        log::say(
            "sockit http: warning: --auth without --tls sends the password in the clear (base64) \
             with every request",
        );
    }
    let format = if log::is_json() {
        LogFormat::Json
    } else {
        LogFormat::Common
    };
    let mut config = HttpConfig::new(args.addr, args.dir.clone());
    config.listing = !args.no_listing;
    config.hidden = args.hidden;
    config.follow_symlinks = args.follow_symlinks;
    config.compress = args.compress;
    config.compress_min = args.compress_min;
    config.max_listing = args.max_listing;
    config.max_ranges = args.max_ranges;
    config.auth = args.auth;
    config.hosts = args.web_host;
    // Through the binary's one stderr writer, which never blocks on a pipe nobody reads.
    let access_log =
        (!args.no_access_log).then(|| AccessLog::to_sink(format, log::raw, log::queue_lines()));
    config.access_log = access_log.clone();
    config.http = HttpOptions {
        header_timeout: args.header_timeout,
        max_head: args.max_header_size,
        write_timeout: Some(args.write_timeout).filter(|d| !d.is_zero()),
        http2: !args.no_http2,
        max_streams: args.max_streams,
        sendfile: !args.no_sendfile,
        ..HttpOptions::default()
    };
    let tls = server.tls.is_some();
    config.server = server;
    config.server.workers = Some(match args.workers {
        0 => net::cpus(),
        n => n,
    });
    let shutdown = net::on_signals()?;
    let server = HttpServer::bind(config).await?;
    let what = match (&server.local_addr(), tls) {
        (net::LocalAddr::Unix(_), _) => "http over unix".to_string(),
        (_, true) => format!("https, {}", server.root().display()),
        (_, false) => format!("http, {}", server.root().display()),
    };
    super::announce("http", &server.local_addr(), &what);
    server.run(shutdown).await;
    // The last requests' lines may still wait in the access log's queue: into stderr's queue
    // before main flushes that.
    if let Some(log) = access_log {
        log.flush(log::EXIT_FLUSH);
    }
    Ok(())
}
