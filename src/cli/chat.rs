//! `sockit chat` flags: the server's limits and storage.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use sockit::chat::client::{self, ClientConfig, ClientError};
use sockit::chat::cluster::{ClusterConfig, Durability};
use sockit::chat::web::{parse_host_name, Origin, OriginPolicy, WebConfig, DEFAULT_WEB_ADDR};
use sockit::chat::{
    store, ChatConfig, ChatServer, ChatSettings, Format, History, Retention, DEFAULT_ADDR,
};
use sockit::net::{self, Endpoint, LocalAddr};

use super::common::{parse_count, parse_duration, parse_endpoint, ClientArgs, ServerArgs};

pub const EXAMPLES: &str = "Examples:
  sockit chat                          127.0.0.1:9003, history in ~/.local/share/sockit/chat.sqlite3
  sockit chat 0.0.0.0:9003 --motd 'be nice'
  sockit chat --no-history --rate 2 --max-line 512
  sockit chat --encoding gbk           for terminals that speak GBK
  sockit chat --tls                    TLS (self-signed; fingerprint printed)
  sockit chat --web                    and the page on http://127.0.0.1:9080/ for browsers
Join with: sockit chat join 127.0.0.1:9003 --nick ann   (or nc 127.0.0.1 9003)";

pub const JOIN_EXAMPLES: &str = "Examples:
  sockit chat join                                   127.0.0.1:9003, a guest nick, the default room
  sockit chat join chat.example:9003 --nick ann --room rust
  sockit chat join 127.0.0.1:9003 --send 'build is green'
  make 2>&1 | tail -3 | sockit chat join --nick ci   one message per line, then exit
  sockit chat join host:9003 --tls --tls-fingerprint AB:CD:...
Keys: Enter send, Up/Down history, PageUp/PageDown scroll, Ctrl-C or /quit leave.
Without a terminal, what the room says is printed as [HH:MM:SS] <nick> text.";

/// The character set plain clients use.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Encoding {
    #[value(name = "utf-8", alias = "utf8")]
    Utf8,
    #[value(alias = "gb18030")]
    Gbk,
}

/// What a cluster requires of its Redis (`--cluster-durability`).
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ClusterDurability {
    Fsync,
    Relaxed,
}

#[derive(Debug, Args)]
pub struct ChatArgs {
    #[command(subcommand)]
    pub action: Option<ChatAction>,

    /// Address to listen on: HOST:PORT, [IPv6]:PORT, unix:PATH or a port [default: 127.0.0.1:9003]
    #[arg(value_name = "ADDR", value_parser = parse_endpoint)]
    pub addr: Option<Endpoint>,

    /// History database (SQLite) [default: $XDG_DATA_HOME/sockit/chat.sqlite3]
    #[arg(long, value_name = "PATH", conflicts_with = "no_history")]
    pub history: Option<PathBuf>,

    /// Keep no history on disk (replay from memory only)
    #[arg(long)]
    pub no_history: bool,

    /// fsync every history commit (survives power loss, not only crashes; slower)
    #[arg(long)]
    pub fsync: bool,

    /// Be one node of a chat cluster on this Redis (redis://HOST:PORT, rediss:// for TLS): rooms,
    /// messages, their order, history, nicks, /msg and /who are shared by every node on it.
    /// History is kept in Redis (--history-max-rows events per room)
    #[arg(long, value_name = "URL", conflicts_with_all = ["history", "no_history", "fsync"])]
    pub cluster: Option<String>,

    /// What --cluster asks of Redis: fsync (appendonly yes and appendfsync always, checked at
    /// start: no message a client saw is lost to a Redis crash) or relaxed (any setting; with
    /// appendfsync everysec a Redis crash may lose the last second or two of messages)
    #[arg(long, value_enum, value_name = "MODE", default_value = "fsync")]
    pub cluster_durability: ClusterDurability,

    /// Delete messages older than this from history (30d, 12h; 0 or none = keep them all)
    #[arg(long, value_name = "TIME", value_parser = parse_max_age, default_value = "30d")]
    pub history_max_age: Duration,

    /// Keep at most this many messages per room in history, the newest (0 or none = no limit)
    #[arg(long, value_name = "N", value_parser = parse_max_rows, default_value = "10000")]
    pub history_max_rows: u64,

    /// Bytes per second of /history replies each client may be sent, at least 1024 (0 =
    /// unlimited); a reply over it is cut, and a client that keeps asking waits its turn
    #[arg(long, value_name = "BYTES", value_parser = parse_reply_bytes, default_value = "32768")]
    pub reply_rate: u64,

    /// Bytes of /history replies a client may be sent at once before --reply-rate applies
    #[arg(long, value_name = "BYTES", value_parser = parse_reply_burst, default_value = "262144")]
    pub reply_burst: u64,

    /// Messages replayed to whoever joins a room
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub replay: usize,

    /// Bytes of memory one room's replayed messages may pin (fewer, longer messages are kept)
    #[arg(long, value_name = "BYTES", default_value = "65536", value_parser = parse_count)]
    pub replay_bytes: usize,

    /// Bytes of memory all rooms' replayed messages may pin together; with many rooms each gets
    /// an equal share
    #[arg(long, value_name = "BYTES", default_value = "67108864", value_parser = parse_count)]
    pub replay_memory: usize,

    /// Rooms one client address may have made that still exist (0 = no limit; --limit-exempt
    /// addresses and the default room are not counted)
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub max_rooms_per_addr: usize,

    /// Most rooms one /rooms reply lists (the busiest; /rooms WORD finds the others)
    #[arg(long, value_name = "N", default_value = "100", value_parser = parse_count)]
    pub rooms_listed: usize,

    /// Most messages one /history returns
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub max_history: usize,

    /// Message of the day, shown after the welcome
    #[arg(long, value_name = "TEXT")]
    pub motd: Option<String>,

    /// Character set of plain clients
    #[arg(long, value_enum, default_value = "utf-8")]
    pub encoding: Encoding,

    /// The room clients start in
    #[arg(long, value_name = "NAME", default_value = "lobby")]
    pub room: String,

    /// Longest line accepted, in bytes; longer lines are refused, and 16x this (at least 64 KiB)
    /// without a newline disconnects the client
    #[arg(long, value_name = "BYTES", default_value = "4096", value_parser = parse_count)]
    pub max_line: usize,

    /// Lines per second each client address may send: its connections share the budget and
    /// reconnecting does not refill it (--limit-exempt addresses: per connection; 0 = unlimited)
    #[arg(long, value_name = "N", default_value_t = 5.0)]
    pub rate: f64,

    /// Lines a client may send in a burst before --rate applies
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub burst: u32,

    /// Bytes waiting for a client that is not reading before it is disconnected
    #[arg(long, value_name = "BYTES", default_value = "131072", value_parser = parse_count)]
    pub sendq: usize,

    /// Longest nick, in characters
    #[arg(long, value_name = "N", default_value = "24", value_parser = parse_count)]
    pub max_nick: usize,

    /// Longest room topic (/topic), in characters, as IRC's TOPICLEN
    #[arg(long, value_name = "N", default_value = "390", value_parser = parse_count)]
    pub max_topic: usize,

    /// Longest away message (/away), in characters, as IRC's AWAYLEN
    #[arg(long, value_name = "N", default_value = "390", value_parser = parse_count)]
    pub max_away: usize,

    /// Disconnect a client whose socket takes none of its output for this long
    #[arg(long, value_name = "TIME", value_parser = parse_duration, default_value = "60s")]
    pub write_timeout: Duration,

    /// Rooms with more members than this get no join/leave/nick notices (a crowd arriving at once
    /// would otherwise cost every member a notice per arrival)
    #[arg(long, value_name = "N", default_value_t = 500)]
    pub announce_max: usize,

    /// Input without a newline becomes a message after this pause, for clients that have never
    /// ended a line (those that send() a message with no newline and wait); for the others it is
    /// a line still arriving
    #[arg(long, value_name = "TIME", value_parser = parse_duration, default_value = "250ms")]
    pub line_pause: Duration,

    /// Also serve the chat to browsers: the page at http://ADDR/ and its WebSocket at /ws
    /// (https and wss with --tls) [ADDR default: 127.0.0.1:9080]. --sendq, --write-timeout and
    /// --idle-timeout apply to browsers too; an HTTP response nobody reads is cut off after
    /// --write-timeout
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = DEFAULT_WEB_ADDR,
          value_parser = parse_endpoint)]
    pub web: Option<Endpoint>,

    /// Let pages from this origin (https://host[:port]) use the chat's WebSocket too; the chat's
    /// own page always may (repeatable)
    #[arg(long, value_name = "URL", requires = "web", value_parser = parse_origin)]
    pub web_origin: Vec<String>,

    /// Also serve the page to requests for this host name (repeatable, or a comma list), such as
    /// a reverse proxy's public name. Against DNS rebinding, only a Host that names the listener
    /// is served: its IP address (any IP address when bound to 0.0.0.0 or [::]), localhost when
    /// it listens on loopback, the hosts of --web-origin, and these; others get 421
    #[arg(long, value_name = "NAME", requires = "web", value_delimiter = ',',
          value_parser = parse_host_name)]
    pub web_host: Vec<String>,

    /// The web port: a request head must arrive within this (slowloris), and an idle keep-alive
    /// connection is kept this long
    #[arg(long, value_name = "TIME", requires = "web", default_value = "10s",
          value_parser = parse_duration)]
    pub web_header_timeout: Duration,

    #[command(flatten)]
    pub server: ServerArgs,
}

/// What `sockit chat` does besides serving.
#[derive(Debug, Subcommand)]
pub enum ChatAction {
    /// Join a chat server: a terminal UI, or without a terminal, send lines and print the room
    #[command(after_help = JOIN_EXAMPLES)]
    Join(Box<JoinArgs>),
}

#[derive(Debug, Args)]
pub struct JoinArgs {
    /// The server: HOST:PORT, [IPv6]:PORT, unix:PATH or a port [default: 127.0.0.1:9003]; give
    /// several (the nodes of a chat cluster) and each reconnection tries the next
    #[arg(value_name = "ADDR", value_parser = parse_endpoint, num_args = 0..)]
    pub addrs: Vec<Endpoint>,

    /// Nick to ask for (kept across reconnects); without it the server gives a guest nick
    #[arg(short, long, value_name = "NAME", value_parser = parse_nick)]
    pub nick: Option<String>,

    /// Room to join [default: the server's]
    #[arg(short, long, value_name = "ROOM", value_parser = parse_room)]
    pub room: Option<String>,

    /// Send this one message, wait until the server has delivered it, and exit; prints nothing
    /// on success unless -v (then what the server said); a taken --nick is an error
    #[arg(long, value_name = "TEXT")]
    pub send: Option<String>,

    #[command(flatten)]
    pub client: ClientArgs,
}

/// `--history-max-age`: a duration, where 0 or `none` keeps everything.
fn parse_max_age(text: &str) -> Result<Duration, String> {
    if text.eq_ignore_ascii_case("none") {
        return Ok(Duration::ZERO);
    }
    parse_duration(text)
}

/// `--history-max-rows`: a count, where 0 or `none` is no limit.
fn parse_max_rows(text: &str) -> Result<u64, String> {
    if text.eq_ignore_ascii_case("none") {
        return Ok(0);
    }
    text.parse()
        .map_err(|_| format!("{text:?} is not a number of messages (or none)"))
}

/// Below this a reply budget would make a client wait more than a second for the smallest reply.
const MIN_REPLY_BYTES: u64 = sockit::chat::MIN_REPLY as u64;

/// `--reply-rate`: 0 (unlimited) or at least one small reply a second.
fn parse_reply_bytes(text: &str) -> Result<u64, String> {
    match text.parse::<u64>() {
        Ok(n) if n == 0 || n >= MIN_REPLY_BYTES => Ok(n),
        _ => Err(format!(
            "{text:?}: give 0 (unlimited) or a number of bytes of at least {MIN_REPLY_BYTES}"
        )),
    }
}

/// `--reply-burst`: at least one small reply.
fn parse_reply_burst(text: &str) -> Result<u64, String> {
    match text.parse::<u64>() {
        Ok(n) if n >= MIN_REPLY_BYTES => Ok(n),
        _ => Err(format!(
            "{text:?}: give a number of bytes of at least {MIN_REPLY_BYTES}"
        )),
    }
}

fn parse_nick(text: &str) -> Result<String, String> {
    // The server decides the length; the characters are checked here for a usage error now
    // rather than a refusal later.
    sockit::chat::check_nick(text, 256).map(|_| text.to_string())
}

fn parse_room(text: &str) -> Result<String, String> {
    sockit::chat::room_name(text)
}

/// `sockit chat join`: the terminal client on a terminal, the plain line mode otherwise.
pub async fn join(args: JoinArgs) -> Result<()> {
    let mut addrs = args.addrs.into_iter();
    let config = ClientConfig {
        endpoint: match addrs.next() {
            Some(ep) => ep,
            None => DEFAULT_ADDR.parse()?,
        },
        others: addrs.collect(),
        connect: args.client.options()?,
        nick: args.nick,
        room: args.room,
    };
    let result = if let Some(text) = &args.send {
        // Quiet on success unless -v (the global flag, seen here as the log level it set).
        let echo = tracing::enabled!(tracing::Level::DEBUG);
        client::plain::run(
            config,
            client::plain::lines_of(text),
            std::io::stdout(),
            echo,
        )
        .await
    } else if is_terminal() {
        client::tui::run(config).await
    } else {
        client::plain::run(
            config,
            client::plain::stdin_lines(),
            std::io::stdout(),
            true,
        )
        .await
    };
    // The net layer's errors go up as themselves, so the binary prints them as one line and
    // picks their exit code.
    result.map_err(|e| match e {
        ClientError::Net(net) => anyhow::Error::from(net),
        other => anyhow::Error::from(other),
    })
}

/// Whether the full-screen client can run: both input and output are a terminal.
pub fn is_terminal() -> bool {
    use std::io::IsTerminal;
    std::io::stdin().is_terminal() && std::io::stdout().is_terminal()
}

impl JoinArgs {
    /// The full-screen client writes over the whole terminal, where log lines would garble it.
    pub fn is_tui(&self) -> bool {
        self.send.is_none() && is_terminal()
    }
}

impl ChatArgs {
    /// Validates everything into a server configuration.
    pub fn config(&self) -> Result<ChatConfig> {
        let endpoint = match &self.addr {
            Some(ep) => ep.clone(),
            None => DEFAULT_ADDR.parse()?,
        };
        let room = sockit::chat::room_name(&self.room).map_err(anyhow::Error::msg)?;
        if !(self.rate >= 0.0 && self.rate.is_finite()) {
            anyhow::bail!("--rate must be a number of lines per second, 0 or more");
        }
        let mut server = self.server.options("chat")?;
        if self.server.idle_timeout.is_none() {
            server.idle_timeout = Some(Duration::from_secs(3600));
        }
        // Said before any session exists, in the form of the server's other errors.
        let refusal = |text: &str| -> bytes::Bytes {
            format!("{}\r\n", sockit::chat::wire::server_line(true, text)).into()
        };
        server.busy_message = Some(refusal("the server is full; try again later"));
        server.addr_limit_message = Some(refusal(
            "too many connections from your address; try again later",
        ));
        let settings = ChatSettings {
            max_line: self.max_line,
            rate: self.rate,
            burst: self.burst,
            sendq: self.sendq,
            max_nick: self.max_nick,
            max_topic: self.max_topic,
            max_away: self.max_away,
            line_pause: self.line_pause,
            replay: self.replay,
            replay_bytes: self.replay_bytes,
            replay_memory: self.replay_memory,
            max_rooms_per_addr: self.max_rooms_per_addr,
            rooms_listed: self.rooms_listed,
            max_history: self.max_history,
            reply_rate: self.reply_rate as f64,
            reply_burst: usize::try_from(self.reply_burst).unwrap_or(usize::MAX),
            motd: self.motd.clone(),
            format: match self.encoding {
                Encoding::Utf8 => Format::Utf8,
                Encoding::Gbk => Format::Gbk,
            },
            room,
            announce_max: self.announce_max,
            write_timeout: self.write_timeout,
            ..ChatSettings::default()
        };
        let history = if let Some(url) = &self.cluster {
            History::Cluster(ClusterConfig {
                url: url.clone(),
                durability: match self.cluster_durability {
                    ClusterDurability::Fsync => Durability::Fsync,
                    ClusterDurability::Relaxed => Durability::Relaxed,
                },
                max_rows: (self.history_max_rows > 0).then_some(self.history_max_rows),
            })
        } else if self.no_history {
            History::None
        } else {
            History::Sqlite {
                path: match &self.history {
                    Some(path) => path.clone(),
                    None => {
                        // Only the default location's folders are made; a given path's must exist.
                        let path = store::default_path();
                        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                            std::fs::create_dir_all(dir).with_context(|| {
                                format!("cannot make the history folder {}", dir.display())
                            })?;
                        }
                        path
                    }
                },
                full_sync: self.fsync,
                retention: Retention {
                    max_age: (!self.history_max_age.is_zero()).then_some(self.history_max_age),
                    max_rows: (self.history_max_rows > 0).then_some(self.history_max_rows),
                },
            }
        };
        let web = match &self.web {
            Some(endpoint) => Some(WebConfig {
                endpoint: endpoint.clone(),
                origins: OriginPolicy::new(&self.web_origin).map_err(anyhow::Error::msg)?,
                hosts: self.web_host.clone(),
                header_timeout: self.web_header_timeout,
            }),
            None => None,
        };
        Ok(ChatConfig {
            endpoint,
            settings,
            history,
            server,
            web,
        })
    }
}

pub async fn run(args: ChatArgs) -> Result<()> {
    if let Some(ChatAction::Join(join_args)) = args.action {
        return join(*join_args).await;
    }
    let config = args.config()?;
    let what = match (&config.endpoint, config.server.tls.is_some()) {
        (Endpoint::Unix(_), _) => "unix",
        (_, true) => "tls",
        _ => "tcp",
    };
    let history = match &config.history {
        History::None => "no history".to_string(),
        History::Sqlite {
            path, retention, ..
        } => {
            let age = match retention.max_age {
                Some(age) => format!("for {}", humantime::format_duration(age)),
                None => "forever".into(),
            };
            let rows = match retention.max_rows {
                Some(n) => format!("at most {n} messages per room"),
                None => "all messages".into(),
            };
            format!("history in {} (kept {age}, {rows})", path.display())
        }
        History::Cluster(c) => format!("a node of the chat cluster on {}", c.url),
    };
    let tls = config.server.tls.is_some();
    let shutdown = net::on_signals()?;
    let server = ChatServer::bind(config).await?;
    let addr = server.local_addr();
    super::announce("chat", &addr, what);
    super::log::say(&format!("sockit chat: {history}"));
    if let Some(inet) = addr.inet() {
        super::log::say(&format!(
            "sockit chat: join with: nc {} {}",
            inet.ip(),
            inet.port()
        ));
    }
    if let Some(web) = server.web_addr() {
        super::log::say(&format!("sockit chat: web page at {}", page_url(&web, tls)));
    }
    server.run(shutdown).await?;
    Ok(())
}

/// Checks a `--web-origin` while parsing, so a bad one is a usage error.
fn parse_origin(text: &str) -> Result<String, String> {
    match Origin::parse(text) {
        Some(_) => Ok(text.to_string()),
        None => Err(format!(
            "{text:?} is not an origin (try https://chat.example.org)"
        )),
    }
}

/// Where a browser finds the page.
fn page_url(addr: &LocalAddr, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    match addr {
        LocalAddr::Inet(a) => format!("{scheme}://{a}/"),
        // Browsers cannot open Unix sockets; a reverse proxy in front can.
        LocalAddr::Unix(path) => format!("{scheme} on unix:{}", path.display()),
    }
}
