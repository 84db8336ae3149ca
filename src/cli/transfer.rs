//! `sockit send` / `sockit recv` flags, and the glue: which side listens, which connects, and
//! how the report is shown (a summary line, or `--json` on stdout) and turned into an exit code.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Args;
use sockit::net::{self, Endpoint, Stream};
use sockit::transfer::{self, RecvOptions, Report, SendOptions};

use super::common::{parse_endpoint, ClientArgs, ServerArgs};
use super::{announce, log, Usage};

pub const SEND_EXAMPLES: &str = "Examples:
  sockit send photos/ notes.txt 127.0.0.1:6000   a folder and a file to `sockit recv`
  sockit send --password s3cret big.iso host:6000   both ends must know the password
  sockit send --listen big.iso                   wait on 127.0.0.1:6000 until `sockit recv HOST:6000` fetches it
  sockit send --md5-legacy file.bin 127.0.0.1:6000   the tutorial's receiver (md5 digest, bytes, close)
Every file arrives whole and verified (blake3) or not at all; run the same command again to
resume a broken transfer.";

pub const RECV_EXAMPLES: &str = "Examples:
  sockit recv                      into the current folder, on 127.0.0.1:6000, one session
  sockit recv downloads -k         into downloads/, one session after another until Ctrl-C
  sockit recv -l 0.0.0.0:6000 --tls --password s3cret   TLS (self-signed, fingerprint printed)
  sockit recv downloads host:6000  fetch from `sockit send --listen`
The tutorial's sender (an md5 hex digest, then the file) is accepted too; its file is stored
as `received` (--legacy-name).";

/// Flags of the side that connects (the side that listens takes ServerArgs' TLS flags).
#[derive(Debug, Args, Clone)]
pub struct DialArgs {
    /// When connecting: give up after this long (10s, 500ms)
    #[arg(short = 'w', long = "wait", value_name = "TIME", value_parser = super::common::parse_duration)]
    pub connect_timeout: Option<std::time::Duration>,

    /// When connecting with --tls: trust the CA certificates in this PEM file
    #[arg(long, visible_alias = "ssl-trustfile", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,

    /// When connecting with --tls: accept only the certificate with this SHA-256 fingerprint
    #[arg(long, value_name = "HEX")]
    pub tls_fingerprint: Option<String>,

    /// When connecting with --tls: the server name to ask for and check
    #[arg(long, visible_alias = "ssl-servername", value_name = "NAME")]
    pub tls_servername: Option<String>,

    /// When connecting with --tls: accept any certificate (encryption without authentication)
    #[arg(long)]
    pub insecure: bool,
}

/// What both sides share.
#[derive(Debug, Args, Clone)]
pub struct CommonArgs {
    /// A secret both ends must know (SPAKE2: it never crosses the wire, not even hashed)
    #[arg(
        long,
        env = "SOCKIT_PASSWORD",
        hide_env_values = true,
        value_name = "SECRET"
    )]
    pub password: Option<String>,

    /// Print the outcome as one JSON document on stdout
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub dial: DialArgs,

    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Args)]
pub struct SendArgs {
    /// Files and folders to send, then the receiver's HOST:PORT (none with --listen)
    #[arg(value_name = "PATH... HOST:PORT", required = true)]
    pub args: Vec<String>,

    /// Wait for the receiver to fetch instead of connecting (on ADDR, default 127.0.0.1:6000):
    /// `--listen` or `--listen=ADDR`
    #[arg(long, value_name = "ADDR", num_args = 0..=1, require_equals = true,
          default_missing_value = transfer::DEFAULT_LISTEN, value_parser = parse_endpoint)]
    pub listen: Option<Endpoint>,

    /// Compress with zstd; chunks that do not shrink go as they are
    #[arg(long)]
    pub compress: bool,

    /// Speak the tutorial's protocol (md5 hex digest, the bytes, close) to its receiver
    #[arg(long)]
    pub md5_legacy: bool,

    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Args)]
pub struct RecvArgs {
    /// The folder to receive into (default: the current one), and HOST:PORT to fetch from a
    /// `sockit send --listen` instead of listening
    #[arg(value_name = "[DIR] [HOST:PORT]", num_args = 0..=2)]
    pub args: Vec<String>,

    /// Listen here
    #[arg(short = 'l', long, value_name = "ADDR", default_value = transfer::DEFAULT_LISTEN, value_parser = parse_endpoint)]
    pub listen: Endpoint,

    /// Serve one session after another until stopped (default: one session, then exit)
    #[arg(short = 'k', long)]
    pub keep_open: bool,

    /// Replace files that are there and differ (default: that file fails, the rest go on)
    #[arg(long)]
    pub overwrite: bool,

    /// Most files and folders one session may offer
    #[arg(long, value_name = "N", default_value_t = transfer::DEFAULT_MAX_FILES)]
    pub max_files: usize,

    /// The name the tutorial sender's file is stored under
    #[arg(long, value_name = "NAME", default_value = transfer::DEFAULT_LEGACY_NAME)]
    pub legacy_name: String,

    #[command(flatten)]
    pub common: CommonArgs,
}

/// Whether `text` reads as HOST:PORT (and is not a path that exists).
fn is_address(text: &str) -> bool {
    let Some((host, port)) = text.rsplit_once(':') else {
        return false;
    };
    !host.is_empty()
        && !port.is_empty()
        && port.bytes().all(|b| b.is_ascii_digit())
        && !std::path::Path::new(text).exists()
}

fn address(text: &str) -> Result<Endpoint> {
    parse_endpoint(text).map_err(|e| Usage(format!("{text}: {e}")).into())
}

impl CommonArgs {
    fn idle(&self) -> std::time::Duration {
        self.server.idle_timeout.unwrap_or(transfer::DEFAULT_IDLE)
    }

    fn progress(&self) -> bool {
        std::io::stderr().is_terminal()
    }

    /// Connects to `to`, with TLS when asked.
    async fn dial(&self, to: &Endpoint) -> Result<Stream> {
        let client = ClientArgs {
            connect_timeout: self.dial.connect_timeout,
            source: None,
            tls: self.server.tls,
            tls_ca: self.dial.tls_ca.clone(),
            tls_fingerprint: self.dial.tls_fingerprint.clone(),
            tls_servername: self.dial.tls_servername.clone(),
            insecure: self.dial.insecure,
        };
        let opts = client.options()?;
        Ok(net::connect(to, &opts).await?)
    }

    /// Binds `at` and announces it.
    async fn bind(&self, tool: &str, at: &Endpoint) -> Result<(net::Listener, net::ServerOptions)> {
        let opts = self.server.options(tool)?;
        let listener = net::Listener::bind(at).await?;
        let what = if opts.tls.is_some() { "tls" } else { "tcp" };
        announce(tool, &listener.local_addr(), what);
        Ok((listener, opts))
    }

    /// Shows the report; an error when anything failed.
    fn finish(&self, tool: &str, report: &Report) -> Result<()> {
        show(self.json, tool, report)
    }
}

/// Prints `report` (a summary line, or JSON on stdout) and each failed file; an error when
/// anything failed.
fn show(json: bool, tool: &str, report: &Report) -> Result<()> {
    if json {
        println!("{}", report.to_json());
    } else {
        log::say(&format!("sockit {tool}: {}", report.summary_line()));
    }
    // A session that ended early says why once (below); otherwise each failed file does.
    if report.error.is_none() {
        for f in &report.files {
            if let Some(e) = &f.error {
                log::error(&format!("sockit {tool}: {}: {e}", f.path.escape_debug()));
            }
        }
    }
    match (&report.error, report.ok()) {
        (Some(e), _) => bail!("{e}"),
        (None, false) => bail!("some files did not arrive"),
        (None, true) => Ok(()),
    }
}

pub async fn send(args: SendArgs) -> Result<()> {
    let common = &args.common;
    let mut paths = args.args.clone();
    let to = if args.listen.is_some() {
        None
    } else {
        match paths.pop() {
            Some(last) if is_address(&last) => Some(address(&last)?),
            Some(last) => {
                return Err(Usage(format!(
                "the last argument must be the receiver's HOST:PORT (or use --listen), not {last}"
            ))
                .into())
            }
            None => return Err(Usage("nothing to send".into()).into()),
        }
    };
    if paths.is_empty() {
        return Err(Usage("nothing to send: give files or folders before HOST:PORT".into()).into());
    }
    let paths: Vec<PathBuf> = paths.into_iter().map(PathBuf::from).collect();
    let opts = SendOptions {
        password: common.password.clone(),
        compress: args.compress,
        idle: common.idle(),
        progress: common.progress(),
    };
    if args.md5_legacy {
        let [path] = paths.as_slice() else {
            return Err(Usage("--md5-legacy sends one file".into()).into());
        };
        let to = to.ok_or_else(|| Usage("--md5-legacy connects; give HOST:PORT".into()))?;
        let mut stream = common.dial(&to).await?;
        let mut report = Report::new(transfer::Role::Send);
        let start = std::time::Instant::now();
        if let Err(e) = transfer::legacy::send(&mut stream, path, &mut report).await {
            report.error = Some(e.to_string());
        }
        report.elapsed = start.elapsed();
        return common.finish("send", &report);
    }
    let sources = transfer::collect(&paths).map_err(|e| match e {
        transfer::TransferError::Usage(m) => anyhow::Error::from(Usage(m)),
        e => anyhow::Error::from(e),
    })?;
    let report = match (to, &args.listen) {
        (Some(to), _) => {
            let stream = common.dial(&to).await?;
            transfer::send(stream, &sources, &opts).await
        }
        (None, Some(at)) => {
            let (listener, server) = common.bind("send", at).await?;
            let shutdown = net::on_signals()?;
            let Some(conn) = net::accept_one(&listener, &server, &shutdown).await else {
                bail!("stopped before anyone fetched");
            };
            drop(listener);
            tracing::info!("fetched by {}", conn.peer);
            transfer::send(conn.stream, &sources, &opts).await
        }
        (None, None) => unreachable!("an address or --listen was required above"),
    };
    common.finish("send", &report)
}

pub async fn recv(args: RecvArgs) -> Result<()> {
    let common = &args.common;
    let mut dir = None;
    let mut from = None;
    for a in &args.args {
        if from.is_none() && is_address(a) {
            from = Some(address(a)?);
        } else if dir.is_none() {
            dir = Some(PathBuf::from(a));
        } else {
            return Err(Usage(format!("unexpected argument {a}: give [DIR] [HOST:PORT]")).into());
        }
    }
    let mut opts = RecvOptions {
        dir: dir.unwrap_or_else(|| PathBuf::from(".")),
        password: common.password.clone(),
        overwrite: args.overwrite,
        idle: common.idle(),
        max_files: args.max_files,
        legacy_name: args.legacy_name.clone(),
        progress: common.progress(),
        ..RecvOptions::default()
    };
    if opts.dir.exists() && !opts.dir.is_dir() {
        return Err(Usage(format!("{} is not a folder", opts.dir.display())).into());
    }
    if let Some(from) = from {
        // Fetching: the sender on the other end is sockit's (the tutorial's never listens).
        opts.legacy = false;
        let stream = common
            .dial(&from)
            .await
            .with_context(|| format!("cannot fetch from {from}"))?;
        let report = transfer::receive(stream, &opts).await;
        return common.finish("recv", &report);
    }
    opts.hello_timeout = common.server.handshake_timeout;
    let (listener, server) = common.bind("recv", &args.listen).await?;
    let shutdown = net::on_signals()?;
    if args.keep_open {
        // Many connections at once, within the server's limits; each must begin within
        // --handshake-timeout, and sessions then take turns (two writing one folder at once
        // could race on the same partial file).
        let opts = Arc::new(opts);
        let turn = Arc::new(tokio::sync::Mutex::new(()));
        let json = common.json;
        net::serve(listener, server, shutdown, move |conn| {
            let (opts, turn) = (opts.clone(), turn.clone());
            async move {
                tracing::info!("session from {}", conn.peer);
                let report = transfer::receive_in_turn(conn.stream, &opts, &turn).await;
                if let (true, Some(e)) = (report.files.is_empty(), &report.error) {
                    // Never began a session (a port scan, a storm): not worth a summary.
                    tracing::info!("{}: {e}", conn.peer);
                    return;
                }
                if let Err(e) = show(json, "recv", &report) {
                    log::error(&format!("sockit recv: {e}"));
                }
            }
        })
        .await;
        return Ok(());
    }
    let Some(conn) = net::accept_one(&listener, &server, &shutdown).await else {
        // Stopped by a signal before anyone came.
        return Ok(());
    };
    // This session is the one: later senders are refused by the kernel.
    drop(listener);
    tracing::info!("session from {}", conn.peer);
    let report = tokio::select! {
        r = transfer::receive(conn.stream, &opts) => r,
        _ = shutdown.cancelled() => bail!("stopped during a session; partial files are kept for resume"),
    };
    common.finish("recv", &report)
}
