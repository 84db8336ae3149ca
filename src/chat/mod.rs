//! `sockit chat`: a group chat server that `nc` and `telnet` can use as they are, with nicks, rooms,
//! private messages, history in SQLite, and limits that keep one client from hurting the others.
//!
//! The hub has three seams, so a shared store or another protocol slots in without touching the
//! rest: where events are ordered and stored ([`sequencer`] + [`store::Store`]), how they reach
//! local members ([`hub`]'s fan-out into each client's bounded [`outbox`]), and how clients speak
//! ([`wire`]: plain UTF-8/GBK lines, or JSON lines negotiated on the first line; [`web`] carries
//! the JSON lines over WebSocket for the browser page).

pub mod client;
pub mod cluster;
pub(crate) mod command;
pub mod directory;
mod driver;
pub mod event;
pub mod hub;
pub(crate) mod line;
pub(crate) mod names;
pub mod outbox;
mod rate;
pub mod sequencer;
pub mod session;
pub mod store;
mod stream;
pub mod web;
pub mod wire;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use command::{check_nick, room_name};
pub use hub::ChatHub;
pub use rate::MIN_REPLY;
pub use store::Retention;
use store::{HistoryReader, NoStore, SqliteStore, Store, StoreError};
pub use wire::Format;

use crate::net::{self, Endpoint, Listener, LocalAddr, NetError, ServerOptions};

/// Default address: the tutorials' chat room.
pub const DEFAULT_ADDR: &str = "127.0.0.1:9003";

/// Events waiting for the sequencer before senders are made to wait. Small on purpose: under
/// overload a deep queue only adds latency (16k here gave 1.7 s p99 at saturation, 1024 gives 1.1 s
/// with more throughput); the wait pushes back on the senders' TCP instead.
const SEQUENCER_QUEUE: usize = 1024;

/// Per-client behaviour and limits, validated.
#[derive(Debug, Clone)]
pub struct ChatSettings {
    /// Longest line accepted, in bytes.
    pub max_line: usize,
    /// Lines per second a client may send (0 = no limit), and the burst allowed.
    pub rate: f64,
    pub burst: u32,
    /// Bytes queued for a client that is not reading before it is disconnected.
    pub sendq: usize,
    /// Longest nick, in characters.
    pub max_nick: usize,
    /// Longest `/topic` and `/away` message, in characters (IRC's TOPICLEN and AWAYLEN).
    pub max_topic: usize,
    pub max_away: usize,
    /// Input without a newline becomes a line after this pause.
    pub line_pause: Duration,
    /// Messages replayed to a joiner (and kept in memory per room).
    pub replay: usize,
    /// Bytes those messages may pin in memory, per room and for all rooms together.
    pub replay_bytes: usize,
    pub replay_memory: usize,
    /// Rooms one address may have made that still exist (0 = no limit).
    pub max_rooms_per_addr: usize,
    /// Most rooms one `/rooms` reply lists.
    pub rooms_listed: usize,
    /// Most messages one `/history` returns.
    pub max_history: usize,
    /// Bytes per second of `/history` replies a client may be sent (0 = no limit), and the burst
    /// allowed: a request of a few bytes must not buy a large answer over and over.
    pub reply_rate: f64,
    pub reply_burst: usize,
    /// Shown to every client after the welcome.
    pub motd: Option<String>,
    /// What plain clients speak.
    pub format: Format,
    /// Where clients start.
    pub room: String,
    /// Rooms larger than this get no join/leave/nick notices.
    pub announce_max: usize,
    /// How long a closing client's last output may take.
    pub flush_timeout: Duration,
    /// A client whose socket takes none of its output for this long is disconnected.
    pub write_timeout: Duration,
}

impl ChatSettings {
    /// Bytes without a newline after which a client is cut off: a long line is refused, but
    /// input that never ends is an attack.
    pub fn flood_cutoff(&self) -> usize {
        (self.max_line * 16).max(64 * 1024)
    }
}

impl Default for ChatSettings {
    fn default() -> Self {
        ChatSettings {
            max_line: 4096,
            rate: 5.0,
            burst: 10,
            sendq: 128 * 1024,
            max_nick: 24,
            max_topic: 390,
            max_away: 390,
            line_pause: Duration::from_millis(250),
            replay: 20,
            replay_bytes: 64 * 1024,
            replay_memory: 64 * 1024 * 1024,
            max_rooms_per_addr: 10,
            rooms_listed: 100,
            max_history: 1000,
            // Bursts of 256 KiB: two full replies at the default --sendq (a reply is cut at half
            // of it), so a client catching up is served at once; then 32 KiB/s, a full reply
            // every two seconds, which is more than a person reads and keeps 1000 askers to
            // 32 MB/s, not the gigabytes that unlimited answers to 14-byte requests allowed.
            reply_rate: 32.0 * 1024.0,
            reply_burst: 256 * 1024,
            motd: None,
            format: Format::Utf8,
            room: "lobby".into(),
            announce_max: 500,
            flush_timeout: Duration::from_secs(2),
            write_timeout: Duration::from_secs(60),
        }
    }
}

/// Where history is kept.
#[derive(Debug, Clone)]
pub enum History {
    /// Nothing survives the process.
    None,
    /// An SQLite file; `full_sync` fsyncs every group commit (power-loss safe); `retention`
    /// bounds what it keeps.
    Sqlite {
        path: PathBuf,
        full_sync: bool,
        retention: Retention,
    },
    /// The cluster's Redis, shared with the other nodes ([`cluster`]).
    Cluster(cluster::ClusterConfig),
}

/// A validated chat server configuration.
#[derive(Debug, Clone)]
pub struct ChatConfig {
    pub endpoint: Endpoint,
    pub settings: ChatSettings,
    pub history: History,
    pub server: ServerOptions,
    /// Also serve the chat to browsers (`--web`), with `server`'s limits and TLS.
    pub web: Option<web::WebConfig>,
}

/// Why a chat server could not start, or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error(transparent)]
    Net(#[from] NetError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Cluster(#[from] cluster::ClusterError),
    /// The sequencer thread died (a bug): nothing could be ordered or delivered any more, so the
    /// server told its clients and stopped rather than run on as an empty shell.
    #[error("the chat sequencer failed (see the panic message above); the server stopped")]
    SequencerFailed,
}

/// A bound chat server.
pub struct ChatServer {
    listener: Listener,
    hub: ChatHub,
    settings: Arc<ChatSettings>,
    server: ServerOptions,
    sequencer: std::thread::JoinHandle<()>,
    /// Cancelled if the sequencer thread panics.
    sequencer_failed: CancellationToken,
    web: Option<web::WebGateway>,
}

impl std::fmt::Debug for ChatServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatServer")
            .field("addr", &self.listener.local_addr())
            .finish()
    }
}

/// What orders, keeps and hands back the events: this process's sequencer and store, or the
/// cluster's Redis.
enum Engine {
    Local {
        store: Box<dyn Store>,
        reader: Option<HistoryReader>,
        retention: Retention,
    },
    Cluster(cluster::ClusterConfig),
}

/// Starts the sequencer's thread; `failed` is cancelled if it panics.
fn start_sequencer(
    shared: Arc<hub::Shared>,
    rx: mpsc::Receiver<hub::Pending>,
    store: Box<dyn Store>,
    config: sequencer::Config,
    failed: CancellationToken,
) -> Result<std::thread::JoinHandle<()>, NetError> {
    // The sequencer's own small runtime, for its timer only (retention, commit retries).
    let timer = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| NetError::io("cannot start the chat sequencer's timer", e))?;
    std::thread::Builder::new()
        .name("chat-sequencer".into())
        .spawn(move || {
            let run = || sequencer::run(shared, rx, store, config, timer);
            // The panic hook has printed the message; what is left is to stop the server.
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)).is_err() {
                tracing::error!("the chat sequencer failed; stopping the server");
                failed.cancel();
            }
        })
        .map_err(|e| NetError::io("cannot start the chat sequencer thread", e))
}

impl ChatServer {
    /// Opens the history and the listening socket, and starts the sequencer (or joins the
    /// cluster, whose Redis then orders and keeps the events).
    pub async fn bind(config: ChatConfig) -> Result<Self, ChatError> {
        let (store, retention): (Box<dyn Store>, _) = match &config.history {
            History::None => (Box::new(NoStore), Retention::default()),
            History::Sqlite {
                path,
                full_sync,
                retention,
            } => (Box::new(SqliteStore::open(path, *full_sync)?), *retention),
            History::Cluster(cluster) => {
                let engine = Engine::Cluster(cluster.clone());
                return Self::bind_with(config, engine).await;
            }
        };
        // History reads go through the store, as its writes do.
        let reader = HistoryReader::of(store.as_ref())?;
        let engine = Engine::Local {
            store,
            reader,
            retention,
        };
        Self::bind_with(config, engine).await
    }

    async fn bind_with(config: ChatConfig, mut engine: Engine) -> Result<Self, ChatError> {
        // Read now so an unreadable history stops the start, rather than numbering clash later.
        let last_seq = match &mut engine {
            Engine::Local { store, .. } => store.last_seq()?,
            Engine::Cluster(_) => 0,
        };
        let listener = Listener::bind(&config.endpoint).await?;
        let mut server = config.server;
        // --max-conns counts every client, whichever door it came in by.
        if config.web.is_some() && server.shared_slots.is_none() {
            server.shared_slots = Some(server.slots());
        }
        let web = match config.web {
            Some(w) => Some(web::WebGateway::bind(w, &server).await?),
            None => None,
        };
        let settings = Arc::new(config.settings);
        // Reconnecting must not refill a client's line budget: it is kept per address, with the
        // same exemptions as the connection limits.
        let exempt = server.per_addr.exempt.clone();
        let policy = hub::AddrPolicy {
            line_rates: net::AddrBuckets::new(settings.rate, settings.burst, exempt.clone()),
            exempt,
            max_rooms: settings.max_rooms_per_addr,
        };
        let memory = hub::MemoryLimits {
            replay: settings.replay,
            room: settings.replay_bytes,
            total: settings.replay_memory,
        };
        // History is kept outside memory (a file, the cluster), so rooms nobody is in are let go.
        let kept = matches!(
            &engine,
            Engine::Cluster(_)
                | Engine::Local {
                    reader: Some(_),
                    ..
                }
        );
        let shared = hub::Shared::new(memory, settings.announce_max, kept);
        let (tx, rx) = mpsc::channel(SEQUENCER_QUEUE);
        let sequencer_failed = CancellationToken::new();
        let mut directory = directory::Directory::Local;
        let (sequencer, reader) = match engine {
            Engine::Local {
                store,
                reader,
                retention,
            } => {
                let seq_config = sequencer::Config {
                    replay: settings.replay,
                    retention,
                    last_seq,
                };
                let thread = start_sequencer(
                    shared.clone(),
                    rx,
                    store,
                    seq_config,
                    sequencer_failed.clone(),
                )?;
                (thread, reader)
            }
            Engine::Cluster(cfg) => {
                let running =
                    cluster::start(shared.clone(), rx, tx.downgrade(), cfg, settings.replay)
                        .await?;
                directory = directory::Directory::Cluster(running.directory);
                (running.thread, Some(running.reader))
            }
        };
        Ok(ChatServer {
            listener,
            hub: ChatHub::new(shared, tx, reader, policy).with_directory(directory),
            settings,
            server,
            sequencer,
            sequencer_failed,
            web,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> LocalAddr {
        self.listener.local_addr()
    }

    /// The bound address of the web page (`--web`), if any.
    pub fn web_addr(&self) -> Option<LocalAddr> {
        self.web.as_ref().map(|w| w.local_addr())
    }

    /// A handle to the hub, for other front doors (a WebSocket gateway) to join the same rooms.
    pub fn hub(&self) -> ChatHub {
        self.hub.clone()
    }

    /// Serves until `shutdown`; every client is told the server is stopping, and history is
    /// flushed before this returns. Stops by itself, with an error, if the sequencer fails.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ChatError> {
        let failed = self.sequencer_failed;
        let shutdown = shutdown.child_token();
        let on_failure = {
            let (failed, shutdown) = (failed.clone(), shutdown.clone());
            tokio::spawn(async move {
                failed.cancelled().await;
                shutdown.cancel();
            })
        };
        let hub = self.hub;
        let settings = self.settings;
        let web = self
            .web
            .map(|w| w.run(hub.clone(), settings.clone(), shutdown.clone()));
        let session_hub = hub.clone();
        let tcp = net::serve(self.listener, self.server, shutdown, move |conn| {
            stream::run(conn, session_hub.clone(), settings.clone())
        });
        match web {
            Some(web) => {
                tokio::join!(tcp, web);
            }
            None => tcp.await,
        }
        // The sequencer ends when the last hub handle is gone; wait so history is complete.
        drop(hub);
        on_failure.abort();
        let sequencer = self.sequencer;
        let _ = tokio::task::spawn_blocking(move || sequencer.join()).await;
        if failed.is_cancelled() {
            return Err(ChatError::SequencerFailed);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    /// A history that works until the first message is appended, then panics: the sequencer
    /// thread dies as it would on a bug.
    struct PanickingStore;

    impl Store for PanickingStore {
        fn last_seq(&mut self) -> Result<u64, StoreError> {
            Ok(0)
        }
        fn append(&mut self, batch: &[&event::Event], _numbered: u64) -> Result<(), StoreError> {
            if batch.is_empty() {
                return Ok(());
            }
            panic!("test: the store blew up");
        }
        fn recent(&mut self, _room: &str, _n: usize) -> Result<Vec<event::Event>, StoreError> {
            Ok(Vec::new())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_sequencer_stops_the_server_with_an_error_and_tells_the_clients() {
        use futures::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
        use tokio_tungstenite::tungstenite::Message;

        let config = ChatConfig {
            endpoint: "127.0.0.1:0".parse().unwrap(),
            settings: ChatSettings::default(),
            history: History::None,
            server: ServerOptions::default(),
            web: Some(web::WebConfig {
                endpoint: "127.0.0.1:0".parse().unwrap(),
                origins: web::OriginPolicy::default(),
                hosts: Vec::new(),
                header_timeout: Duration::from_secs(10),
            }),
        };
        let engine = Engine::Local {
            store: Box::new(PanickingStore),
            reader: None,
            retention: Retention::default(),
        };
        let server = ChatServer::bind_with(config, engine).await.unwrap();
        let addr = server.local_addr().to_string();
        let web_addr = server.web_addr().unwrap().to_string();
        let running = tokio::spawn(server.run(CancellationToken::new()));

        // A browser's connection, in a room (joins are not stored, so nothing panics yet).
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{web_addr}/ws"))
            .await
            .unwrap();
        ws.send(Message::text(
            r#"{"sockit":"chat","proto":"json","nick":"wendy"}"#,
        ))
        .await
        .unwrap();
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(10), ws.next()).await;
            match msg.expect("the join").expect("open").unwrap() {
                Message::Text(t) if t.contains(r#""type":"join""#) => break,
                _ => {}
            }
        }

        let stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let (reader, mut writer) = stream.into_split();
        let mut lines = BufReader::new(reader).lines();
        // Past the welcome, then a message: its commit panics the sequencer.
        let welcome = lines.next_line().await.unwrap().unwrap();
        assert!(welcome.contains("Welcome"), "{welcome}");
        writer.write_all(b"hello\n").await.unwrap();

        // Nobody cancelled the server: it stops on its own, with the error, and the clients hear
        // why (not that the server is shutting down) before their connections close.
        let outcome = tokio::time::timeout(Duration::from_secs(10), running)
            .await
            .expect("the server kept running without its sequencer")
            .unwrap();
        assert!(
            matches!(outcome, Err(ChatError::SequencerFailed)),
            "{outcome:?}"
        );
        let mut rest = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            rest.push(line);
        }
        assert!(rest.iter().any(|l| l.contains("unavailable")), "{rest:?}");
        assert!(
            !rest.iter().any(|l| l.contains("shutting down")),
            "{rest:?}"
        );
        let mut close = None;
        while let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_secs(10), ws.next()).await
        {
            if let Message::Close(frame) = msg {
                close = frame;
                break;
            }
        }
        let close = close.expect("a close frame");
        assert_eq!(close.code, CloseCode::Error, "{close:?}");
    }
}
