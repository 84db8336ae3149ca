//! `sockit connect` and `sockit listen` flags (ncat's), turned into the relay library's configs.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use sockit::net::{self, Endpoint, NetError, Proxy, ProxyKind};
use sockit::relay::{
    self, Attach, ConnectConfig, Ended, ExecSpec, ListenConfig, Local, LogFormat, RelayOptions,
    RelayServer, SessionLog, DEFAULT_LISTEN,
};

use super::common::{parse_count, parse_duration, ClientArgs, ServerArgs};
use super::Usage;

pub const CONNECT_EXAMPLES: &str = "Examples:
  sockit connect example.com:80              talk to a server (stdin -> socket -> stdout)
  printf 'GET / HTTP/1.0\\r\\n\\r\\n' | sockit connect example.com 80
  sockit connect --tls example.com:443       TLS, verified against the system roots
  sockit connect --tls --tls-fingerprint HEX 127.0.0.1:9000
  sockit connect -u 127.0.0.1:9002          UDP: each read of stdin is one datagram
  sockit connect unix:/tmp/app.sock          a Unix socket (or -U /tmp/app.sock)
  sockit connect -c 'tr a-z A-Z' host:9000   a command talks to the server instead of you
  sockit connect -z -v host 22               is the port open? (exit 0 or 1)
  sockit connect --proxy 127.0.0.1:1080 --proxy-type socks5 example.com:http
  sockit connect -x session.hex host 25      a hex dump of both directions, as ncat's";

pub const LISTEN_EXAMPLES: &str = "Examples:
  sockit listen 9000 > file                  receive one connection's bytes into a file
  sockit listen -k 9000                      many clients; stdin goes to all of them
  sockit listen -k -e cat 9000               a `cat` per connection: an echo server
  sockit listen -c 'echo hi from $NCAT_REMOTE_ADDR' 9000
  sockit listen -u 9002                      UDP from the first peer only
  sockit listen -k -u 9002                   UDP from any number of peers; stdin to the latest
  sockit listen --tls 9443                   TLS with a self-signed certificate (fingerprint printed)
  sockit listen -l -p 9000                   nc/ncat's spelling works too (also: listen 0.0.0.0 9000)
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

    /// IPv4 only: names resolve to IPv4 addresses, and the default listen address is 127.0.0.1
    #[arg(short = '4', conflicts_with = "ipv6")]
    pub ipv4: bool,

    /// IPv6 only: names resolve to IPv6 addresses, and the default listen address is ::1
    #[arg(short = '6')]
    pub ipv6: bool,

    /// No DNS lookups: hosts must be IP addresses
    #[arg(short = 'n', long)]
    pub nodns: bool,

    /// After the end of stdin, quit this long later even if the peer has not closed (nc's -q;
    /// 0 = at once, a negative number = wait for the peer, the default)
    #[arg(short = 'q', value_name = "SECS", value_parser = parse_quit, allow_negative_numbers = true)]
    pub quit_after: Option<QuitAfter>,

    /// Wait this long before each send (ncat's --delay: 500ms, 1s)
    #[arg(short = 'd', long, value_name = "TIME", value_parser = parse_duration)]
    pub delay: Option<Duration>,

    /// Write a copy of the session (both directions) to FILE
    #[arg(short = 'o', long, value_name = "FILE", conflicts_with = "hex_dump")]
    pub output: Option<PathBuf>,

    /// Write the session (both directions) to FILE as a hex dump, as ncat's -x does
    #[arg(short = 'x', long, value_name = "FILE")]
    pub hex_dump: Option<PathBuf>,

    /// Append to the -o/-x file instead of starting it afresh
    #[arg(long)]
    pub append_output: bool,

    /// Answer telnet negotiation (refuse every option) and keep it out of the output
    #[arg(short = 't', long)]
    pub telnet: bool,
}

/// nc's `-q`: `Some(d)` quits `d` after the end of stdin; `None` (a negative number) waits.
#[derive(Debug, Clone, Copy)]
pub struct QuitAfter(Option<Duration>);

fn parse_quit(text: &str) -> Result<QuitAfter, String> {
    if text.trim().starts_with('-') {
        return match text.trim().parse::<f64>() {
            Ok(n) if n < 0.0 => Ok(QuitAfter(None)),
            _ => Err(format!("{text:?} is not a number of seconds")),
        };
    }
    parse_duration(text).map(|d| QuitAfter(Some(d)))
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

#[derive(Debug, Clone, Copy)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn matches(self, ip: IpAddr) -> bool {
        matches!(
            (self, ip),
            (Family::V4, IpAddr::V4(_)) | (Family::V6, IpAddr::V6(_))
        )
    }

    fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }

    fn flag(self) -> &'static str {
        match self {
            Family::V4 => "-4",
            Family::V6 => "-6",
        }
    }
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

    fn options(&self, idle_timeout: Option<Duration>) -> Result<RelayOptions, NetError> {
        let session_log = match (&self.output, &self.hex_dump) {
            (Some(path), _) => Some(SessionLog::create(
                path,
                LogFormat::Raw,
                self.append_output,
            )?),
            (None, Some(path)) => Some(SessionLog::create(
                path,
                LogFormat::Hex,
                self.append_output,
            )?),
            (None, None) => None,
        };
        Ok(RelayOptions {
            send_only: self.send_only,
            recv_only: self.recv_only,
            no_shutdown: self.no_shutdown,
            idle_timeout,
            crlf: self.crlf,
            // A peer's half-close is not the end of what a person types: as with piped input,
            // stdin is sent until it ends (Ctrl-D), and the relay ends when both sides are done.
            peer_eof_ends: false,
            // `listen` sets its own (--eof-grace); `connect` waits for its command.
            eof_grace: None,
            quit_after_eof: self.quit_after.and_then(|q| q.0),
            delay: self.delay,
            session_log: session_log.map(Arc::new),
            telnet: self.telnet,
        })
    }

    /// The address family -4/-6 ask for.
    fn family(&self) -> Option<Family> {
        match (self.ipv4, self.ipv6) {
            (true, _) => Some(Family::V4),
            (_, true) => Some(Family::V6),
            _ => None,
        }
    }

    /// Applies -4/-6 and -n to an endpoint: the host becomes one IP address of the right family
    /// (a name is resolved here, with -n it must already be an address). Returns the endpoint and
    /// the host name it replaced, which TLS still checks the certificate against.
    async fn pin_host(&self, endpoint: Endpoint) -> Result<(Endpoint, Option<String>), NetError> {
        let family = self.family();
        let Endpoint::Inet { host, port } = &endpoint else {
            return Ok((endpoint, None));
        };
        let (host, port) = (host.clone(), *port);
        if let Ok(ip) = host.parse::<IpAddr>() {
            if let Some(f) = family {
                if !f.matches(ip) {
                    return Err(NetError::BadAddress {
                        input: endpoint.to_string(),
                        reason: format!("{ip} is not an {} address ({})", f.name(), f.flag()),
                    });
                }
            }
            return Ok((endpoint, None));
        }
        if self.nodns {
            return Err(NetError::BadAddress {
                input: endpoint.to_string(),
                reason: format!(
                    "{host:?} is a name, and -n means no DNS lookups (give an IP address)"
                ),
            });
        }
        let Some(f) = family else {
            return Ok((endpoint, None));
        };
        let found = endpoint
            .resolve()
            .await?
            .into_iter()
            .find(|a| f.matches(a.ip()));
        match found {
            Some(addr) => Ok((
                Endpoint::Inet {
                    host: addr.ip().to_string(),
                    port,
                },
                Some(host),
            )),
            None => Err(NetError::Resolve {
                target: endpoint.to_string(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("no {} address ({})", f.name(), f.flag()),
                ),
            }),
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
    /// Where to connect: HOST:PORT, [IPv6]:PORT, unix:PATH, a port on 127.0.0.1, or HOST PORT;
    /// the port may be a service name (host:http)
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

    /// Zero-I/O: only tell whether the port is open (exit 0) or not (exit 1); -v says which
    #[arg(short = 'z', long = "zero-io", conflicts_with_all = ["udp", "exec", "sh_exec"])]
    pub zero_io: bool,

    /// Accepted for nc: half-closing at the end of stdin is already what connect does
    #[arg(short = 'N', hide = true)]
    pub nc_shutdown: bool,

    /// Connect through this proxy (HOST:PORT; the port defaults to 3128 for http, 1080 for socks5)
    #[arg(long, value_name = "HOST:PORT")]
    pub proxy: Option<String>,

    /// The proxy's protocol: http (CONNECT) or socks5
    #[arg(long, value_name = "TYPE", default_value = "http", requires = "proxy", value_parser = parse_proxy_type)]
    pub proxy_type: ProxyKind,

    /// USER:PASSWORD for the proxy (HTTP Basic, or SOCKS5 username/password)
    #[arg(long, value_name = "USER:PASS", requires = "proxy")]
    pub proxy_auth: Option<String>,

    /// nc's -l: listening is `sockit listen` (this flag only says so)
    #[arg(short = 'l', hide = true)]
    pub listen: bool,

    /// nc's -p (source port): the port goes after the host here (this flag only says so)
    #[arg(short = 'p', hide = true, value_name = "PORT")]
    pub source_port: Option<String>,

    #[command(flatten)]
    pub client: ClientArgs,
}

fn parse_proxy_type(text: &str) -> Result<ProxyKind, String> {
    match text.to_ascii_lowercase().as_str() {
        "http" => Ok(ProxyKind::Http),
        "socks5" | "socks" => Ok(ProxyKind::Socks5),
        "socks4" => Err("socks4 is not supported (try --proxy-type socks5 or http)".into()),
        _ => Err(format!("{text:?} is not a proxy type (http or socks5)")),
    }
}

pub async fn connect(args: ConnectArgs) -> Result<()> {
    if args.listen {
        return Err(anyhow::anyhow!(Usage(
            "to listen, use `sockit listen PORT` (or `sockit listen HOST PORT`)".into()
        )));
    }
    if args.source_port.is_some() {
        return Err(anyhow::anyhow!(Usage(
            "the port goes after the host: `sockit connect HOST PORT` (a source port is not supported)".into()
        )));
    }
    let target = match &args.port {
        None => args.target.clone(),
        Some(port) if args.target.contains(':') && !args.target.starts_with('[') => {
            format!("[{}]:{port}", args.target)
        }
        Some(port) => format!("{}:{port}", args.target),
    };
    let endpoint = args.flags.endpoint(&target)?;
    let mut client = args.client.clone();
    let proxy = match &args.proxy {
        Some(text) => {
            let default_port = match args.proxy_type {
                ProxyKind::Http => 3128,
                ProxyKind::Socks5 => 1080,
            };
            let at = if text.contains(':') && !text.ends_with(']') {
                text.clone()
            } else {
                format!("{text}:{default_port}")
            };
            let (at, _) = args
                .flags
                .pin_host(Endpoint::parse_with_default_host(&at, "127.0.0.1")?)
                .await?;
            Some(Proxy {
                at,
                kind: args.proxy_type,
                auth: args.proxy_auth.clone(),
            })
        }
        None => None,
    };
    // Through a proxy the proxy resolves the target (as ncat's default), unless -4/-6/-n apply.
    let endpoint = if proxy.is_some() && args.flags.family().is_none() && !args.flags.nodns {
        endpoint
    } else {
        let (endpoint, name) = args.flags.pin_host(endpoint).await?;
        if client.tls_servername.is_none() {
            client.tls_servername = name;
        }
        endpoint
    };
    let connect = client.options()?;
    if args.zero_io {
        return zero_io(&endpoint, proxy.as_ref(), &connect).await;
    }
    let command = args.flags.command()?;
    let config = ConnectConfig {
        endpoint,
        udp: args.flags.udp,
        connect,
        proxy,
        relay: args
            .flags
            .options(args.idle_timeout.filter(|d| !d.is_zero()))?,
    };
    let shutdown = net::on_signals()?;
    let attach = args.flags.attach(command);
    finish(relay::connect(&config, attach, shutdown).await?)
}

/// `-z`: connect (TCP only, no TLS handshake) and close; the exit code is the answer.
async fn zero_io(
    endpoint: &Endpoint,
    proxy: Option<&Proxy>,
    opts: &net::ConnectOptions,
) -> Result<()> {
    let plain = net::ConnectOptions {
        tls: None,
        ..opts.clone()
    };
    let stream = match proxy {
        Some(p) => net::connect_via(p, endpoint, &plain).await?,
        None => net::connect(endpoint, &plain).await?,
    };
    let shown = match stream.tcp().and_then(|s| s.peer_addr().ok()) {
        Some(addr) => addr.to_string(),
        None => endpoint.to_string(),
    };
    tracing::info!("connected to {shown}: the port is open");
    Ok(())
}

#[derive(Debug, Args)]
pub struct ListenArgs {
    /// Address to listen on: HOST:PORT, [IPv6]:PORT, unix:PATH (or a path with -U), or a port
    /// on 127.0.0.1 [default: 127.0.0.1:31337]
    #[arg(value_name = "ADDR")]
    pub addr: Option<String>,

    /// The port, when given separately as in ncat (`sockit listen 0.0.0.0 9000`)
    #[arg(value_name = "PORT")]
    pub port_arg: Option<String>,

    /// The port to listen on, as nc/ncat's -p (`sockit listen -p 9000`, `sockit listen HOST -p 9000`)
    #[arg(short = 'p', long = "port", value_name = "PORT")]
    pub port: Option<String>,

    /// Accepted for nc/ncat (`sockit listen -l 9000`): listen already listens
    #[arg(short = 'l', long = "listen")]
    pub nc_listen: bool,

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

/// The address `listen` was given, in any of the forms nc and ncat users type.
fn listen_address(args: &ListenArgs) -> Result<Option<String>> {
    let default_host = if args.flags.ipv6 { "::1" } else { "127.0.0.1" };
    let join = |host: &str, port: &str| {
        if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        }
    };
    let is_port = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    Ok(match (&args.addr, &args.port_arg, &args.port) {
        (None, _, None) => None,
        (Some(a), None, None) if args.flags.ipv6 && is_port(a) => Some(join(default_host, a)),
        (Some(a), None, None) => Some(a.clone()),
        (Some(host), Some(port), None) => Some(join(host, port)),
        (None, _, Some(port)) => Some(join(default_host, port)),
        (Some(host), None, Some(port)) if !is_port(host) && !host.contains(':') || host.parse::<IpAddr>().is_ok() => {
            Some(join(host, port))
        }
        (Some(_), _, Some(_)) => {
            return Err(anyhow::anyhow!(Usage(
                "the port is given twice: use `sockit listen PORT`, `sockit listen HOST PORT` or `sockit listen -p PORT`".into()
            )))
        }
    })
}

pub async fn listen(args: ListenArgs) -> Result<()> {
    let endpoint = match listen_address(&args)? {
        Some(text) => args.flags.endpoint(&text)?,
        None if args.flags.unixsock => {
            return Err(NetError::BadAddress {
                input: String::new(),
                reason: "-U needs a socket path".into(),
            }
            .into())
        }
        None if args.flags.ipv6 => "[::1]:31337".parse()?,
        None => DEFAULT_LISTEN.parse()?,
    };
    let (endpoint, _) = args.flags.pin_host(endpoint).await?;
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
        relay: args.flags.options(server.idle_timeout)?,
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
