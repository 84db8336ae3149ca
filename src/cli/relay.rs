//! `sockit connect` and `sockit listen` flags (ncat's), turned into the relay library's configs.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use sockit::net::{self, Endpoint, NetError};
use sockit::relay::{
    self, Attach, ConnectConfig, Ended, ExecSpec, ListenConfig, Local, RelayOptions, RelayServer,
    DEFAULT_LISTEN,
};

use super::common::{parse_count, parse_duration, ClientArgs, ServerArgs};

pub const CONNECT_EXAMPLES: &str = "Examples:
  sockit connect example.com:80              talk to a server (stdin -> socket -> stdout)
  printf 'GET / HTTP/1.0\\r\\n\\r\\n' | sockit connect example.com 80
  sockit connect --tls example.com:443       TLS, verified against the system roots
  sockit connect --tls --tls-fingerprint HEX 127.0.0.1:9000
  sockit connect -u 127.0.0.1:9002          UDP: each read of stdin is one datagram
  sockit connect unix:/tmp/app.sock          a Unix socket (or -U /tmp/app.sock)
  sockit connect -c 'tr a-z A-Z' host:9000   a command talks to the server instead of you";

pub const LISTEN_EXAMPLES: &str = "Examples:
  sockit listen 9000 > file                  receive one connection's bytes into a file
  sockit listen -k 9000                      many clients; stdin goes to all of them
  sockit listen -k -e cat 9000               a `cat` per connection: an echo server
  sockit listen -c 'echo hi from $NCAT_REMOTE_ADDR' 9000
  sockit listen -u 9002                      UDP from the first peer only
  sockit listen -k -u 9002                   UDP from any number of peers; stdin to the latest
  sockit listen --tls 9443                   TLS with a self-signed certificate (fingerprint printed)
Default address: 127.0.0.1:31337 (ncat's port); a bare port listens on 127.0.0.1.";

/// Flags `connect` and `listen` share.
#[derive(Debug, Args)]
pub struct RelayFlags {
    /// UDP instead of TCP
    #[arg(short, long, conflicts_with = "tls")]
    pub udp: bool,

    /// The address is a Unix socket path (as with unix:PATH)
    #[arg(short = 'U', long, conflicts_with = "udp")]
    pub unixsock: bool,

    /// Run CMD for each connection, its stdin and stdout bridged to the socket (split on
    /// whitespace, no shell); sets NCAT_REMOTE_ADDR/PORT, NCAT_LOCAL_ADDR/PORT, NCAT_PROTO
    #[arg(short = 'e', long, value_name = "CMD", value_parser = parse_exec, conflicts_with = "sh_exec")]
    pub exec: Option<ExecSpec>,

    /// Like --exec, but CMD is run by /bin/sh -c
    #[arg(short = 'c', long, value_name = "CMD")]
    pub sh_exec: Option<String>,

    /// Only send; what the peer sends is dropped, and the end of stdin ends the connection
    #[arg(long, conflicts_with = "recv_only")]
    pub send_only: bool,

    /// Only receive; stdin is not read
    #[arg(long)]
    pub recv_only: bool,

    /// Do not half-close the connection at the end of stdin
    #[arg(long)]
    pub no_shutdown: bool,

    /// Send CRLF for every LF of stdin (for line protocols such as SMTP)
    #[arg(short = 'C', long)]
    pub crlf: bool,
}

/// Parses `65536`, `64K`, `16M`, `1G` (powers of 1024), at least 1.
fn parse_size(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let (digits, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => t.split_at(i),
        None => (t, ""),
    };
    let scale: usize = match unit.to_ascii_uppercase().trim_end_matches(['B', 'I']) {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        _ => return Err(format!("{text:?} is not a size (try 65536, 64K, 16M)")),
    };
    match digits
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
    {
        Some(n) if n >= 1 => Ok(n),
        _ => Err(format!(
            "{text:?} is not a size of at least 1 byte (try 64K, 16M)"
        )),
    }
}

fn parse_exec(text: &str) -> Result<ExecSpec, String> {
    ExecSpec::split(text).ok_or_else(|| "the command is empty".to_string())
}

impl RelayFlags {
    /// The command to run per connection, checked to exist.
    fn command(&self) -> Result<Option<ExecSpec>, NetError> {
        let spec = match (&self.exec, &self.sh_exec) {
            (Some(spec), _) => Some(spec.clone()),
            (None, Some(cmd)) => Some(ExecSpec::shell(cmd)),
            (None, None) => None,
        };
        if let Some(spec) = &spec {
            spec.check()?;
        }
        Ok(spec)
    }

    fn options(&self, idle_timeout: Option<Duration>, command: bool) -> RelayOptions {
        RelayOptions {
            send_only: self.send_only,
            recv_only: self.recv_only,
            no_shutdown: self.no_shutdown,
            idle_timeout,
            crlf: self.crlf,
            // A person at a terminal has nothing left to send once the peer is gone.
            peer_eof_ends: !command && std::io::stdin().is_terminal(),
            // `listen` sets its own (--eof-grace); `connect` waits for its command.
            eof_grace: None,
        }
    }

    fn attach(&self, command: Option<ExecSpec>) -> Attach {
        match command {
            Some(spec) => Attach::Exec(spec),
            None => Attach::Io(Local::stdio(!self.recv_only)),
        }
    }

    /// Parses an address as given on the command line; `-U` makes it a path.
    fn endpoint(&self, text: &str) -> Result<Endpoint, NetError> {
        if self.unixsock {
            let path = text.strip_prefix("unix:").unwrap_or(text);
            if path.is_empty() {
                return Err(NetError::BadAddress {
                    input: text.into(),
                    reason: "-U needs a socket path".into(),
                });
            }
            return Ok(Endpoint::Unix(PathBuf::from(path)));
        }
        Endpoint::parse_with_default_host(text, "127.0.0.1")
    }

    fn proto(&self, endpoint: &Endpoint, tls: bool) -> &'static str {
        match (endpoint, self.udp, tls) {
            (Endpoint::Unix(_), _, _) => "unix",
            (_, true, _) => "udp",
            (_, _, true) => "tls",
            _ => "tcp",
        }
    }
}

#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// Where to connect: HOST:PORT, [IPv6]:PORT, unix:PATH, a port on 127.0.0.1, or HOST PORT
    #[arg(value_name = "ADDR")]
    pub target: String,

    /// The port, when given separately as in ncat (`sockit connect example.com 80`)
    #[arg(value_name = "PORT")]
    pub port: Option<String>,

    #[command(flatten)]
    pub flags: RelayFlags,

    /// End (as a failure) after this long without traffic; over UDP, how long to keep receiving
    /// after the end of stdin [UDP default: 2s]
    #[arg(short = 'i', long, value_name = "TIME", value_parser = parse_duration)]
    pub idle_timeout: Option<Duration>,

    #[command(flatten)]
    pub client: ClientArgs,
}

pub async fn connect(args: ConnectArgs) -> Result<()> {
    let target = match &args.port {
        None => args.target.clone(),
        Some(port) if args.target.contains(':') && !args.target.starts_with('[') => {
            format!("[{}]:{port}", args.target)
        }
        Some(port) => format!("{}:{port}", args.target),
    };
    let endpoint = args.flags.endpoint(&target)?;
    let command = args.flags.command()?;
    let config = ConnectConfig {
        endpoint,
        udp: args.flags.udp,
        connect: args.client.options()?,
        relay: args.flags.options(
            args.idle_timeout.filter(|d| !d.is_zero()),
            command.is_some(),
        ),
    };
    let shutdown = net::on_signals()?;
    let attach = args.flags.attach(command);
    finish(relay::connect(&config, attach, shutdown).await?)
}

#[derive(Debug, Args)]
pub struct ListenArgs {
    /// Address to listen on: HOST:PORT, [IPv6]:PORT, unix:PATH (or a path with -U), or a port
    /// on 127.0.0.1 [default: 127.0.0.1:31337]
    #[arg(value_name = "ADDR")]
    pub addr: Option<String>,

    /// Keep listening after the first connection and serve many at once; stdin is broadcast to
    /// every client. With -u: take datagrams from any number of peers, stdin going to the one
    /// heard from last (without -k only the first peer is heard; others are ignored, logged at -v)
    #[arg(short = 'k', long)]
    pub keep_open: bool,

    /// With -e/-c: most commands running at once (ncat's default); one more connection is
    /// refused, one more UDP peer's datagrams are dropped
    #[arg(long, value_name = "N", default_value_t = relay::DEFAULT_MAX_PROCS, value_parser = parse_count)]
    pub max_procs: usize,

    /// With -u and -e/-c: end a peer's command after this long without datagrams either way
    /// (0 = never)
    #[arg(long, value_name = "TIME", default_value = "60s", value_parser = parse_duration)]
    pub session_idle: Duration,

    /// With -e/-c: once the client has closed its side (its command's stdin then closes), end the
    /// command if it sends nothing for this long; a command that answers keeps going
    #[arg(long, value_name = "TIME", default_value = "10s", value_parser = parse_duration)]
    pub eof_grace: Duration,

    /// With -k and stdin broadcast: disconnect a client that has data waiting and takes none of
    /// it for this long (also a lone client that stopped reading)
    #[arg(long, value_name = "TIME", default_value = "10s", value_parser = parse_duration)]
    pub stall_timeout: Duration,

    /// With -k and stdin broadcast: how much of stdin may wait for one client while the others go
    /// on; once that is full the client is disconnected if it is not reading (took nothing for
    /// 250ms), and waited for while it still reads. Bytes, or with K/M/G
    #[arg(long, value_name = "SIZE", default_value = "16M", value_parser = parse_size)]
    pub sendq: usize,

    #[command(flatten)]
    pub flags: RelayFlags,

    #[command(flatten)]
    pub server: ServerArgs,
}

pub async fn listen(args: ListenArgs) -> Result<()> {
    let endpoint = match &args.addr {
        Some(text) => args.flags.endpoint(text)?,
        None if args.flags.unixsock => {
            return Err(NetError::BadAddress {
                input: String::new(),
                reason: "-U needs a socket path".into(),
            }
            .into())
        }
        None => DEFAULT_LISTEN.parse()?,
    };
    let command = args.flags.command()?;
    let server = args.server.options("listen")?;
    let what = args.flags.proto(&endpoint, server.tls.is_some());
    let config = ListenConfig {
        endpoint,
        udp: args.flags.udp,
        keep_open: args.keep_open,
        stall_limit: args.stall_timeout,
        sendq: args.sendq,
        max_procs: args.max_procs,
        session_idle: Some(args.session_idle).filter(|d| !d.is_zero()),
        eof_grace: args.eof_grace,
        relay: args.flags.options(server.idle_timeout, command.is_some()),
        server,
    };
    let shutdown = net::on_signals()?;
    let listener = RelayServer::bind(config).await?;
    super::announce("listen", &listener.local_addr(), what);
    let attach = args.flags.attach(command);
    finish(listener.run(attach, shutdown).await?)
}

/// Interrupted relays exit 130, as a shell reports a process ended by SIGINT; scripts must not
/// mistake a cut transfer for a finished one.
fn finish(ended: Ended) -> Result<()> {
    match ended {
        Ended::Finished => Ok(()),
        Ended::Interrupted => {
            super::log::flush(std::time::Duration::from_millis(500));
            std::process::exit(130)
        }
    }
}
