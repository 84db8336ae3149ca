//! `sockit chat --cluster redis://HOST:PORT`: one chat on many nodes, with Redis as its log. It
//! takes the sequencer's place ([`super::sequencer`]): the hub hands it the events to order, and
//! it hands ordered events to the hub's fan-out ([`Shared::deliver`]), whichever node wrote them.
//!
//! - Order: one Lua script per event (`publish.rs`) numbers it in its room (a dense per-room
//!   counter), appends it to the room's stream under that number and publishes it on the room's
//!   channel, atomically, with a dedup key so a retried publish is stored once.
//! - Delivery: every node delivers only what comes back from Redis (`feed.rs`), its own senders'
//!   lines included, in each room's order, so a line is in history before anyone sees it. Gaps are
//!   found by counting (the next number of a room must be the last one plus one) and filled from
//!   the stream; what the stream no longer holds is told to the room, never skipped silently. A
//!   changed epoch (Redis lost its data) is told too.
//! - Faults: a lost or deaf subscription (found by a probe that does not come back) is
//!   reconnected with backoff, each room with local members caught up from its last number, and the
//!   rooms told the chat was degraded; publishes are retried with the same ids meanwhile.
//!
//! - Nicks: claimed in Redis under node leases ([`nicks`]), so a nick is unique across the
//!   cluster, and a dead node's nicks are free again within its lease.
//!
//! - Private messages: published like a room's lines into their conversation's log (the pair of
//!   nicks), and delivered by each node to whoever holds the two nicks there.
//!
//! - Presence: each room's members on every node ([`presence`], for `/who`); a dead node's are
//!   swept by another node, with leave notices, once its lease is gone.
//!
//! - Topics: published like any event, and kept beside the room's numbering for the nodes that
//!   enter the room later.
//!
//! What is still each node's own (not yet the cluster's): `/rooms`, `/whois` and away messages.
//!
//! Runs on a thread of its own with a small runtime, as the sequencer does, so the server's
//! runtime shutting down cannot cut a publish in half.

mod feed;
mod history;
pub mod keys;
pub mod nicks;
pub mod presence;
mod publish;
pub mod record;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::hub::{ClientId, Join, Pending, Shared};
use super::store::HistoryReader;

/// How sure the cluster is that a message anyone saw survives a crash of Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Redis must run with `appendonly yes` and `appendfsync always`: each write is on disk before
    /// any node hears of it, so no message a client saw is lost to a Redis crash. Checked at start.
    Fsync,
    /// Whatever Redis is set to; with `appendfsync everysec` a Redis crash may lose the last
    /// second or two of messages, some of which clients may have seen.
    Relaxed,
}

/// Where the cluster's Redis is and what it promises.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// `redis://HOST:PORT[/DB]`, `rediss://` for TLS, or `redis+unix:///path`.
    pub url: String,
    pub durability: Durability,
    /// Events kept per room in its stream (approximately: Redis trims whole blocks); `None` keeps
    /// them all. Joins, leaves and notices count, as they are numbered too.
    pub max_rows: Option<u64>,
}

/// Why the cluster could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("chat cluster {url}: {source}")]
    Redis {
        url: String,
        #[source]
        source: redis::RedisError,
    },
    #[error("chat cluster {url}: {why}")]
    Config { url: String, why: String },
    #[error("cannot start the chat cluster's thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// A started cluster log: its thread (it ends once every hub handle is gone and what they sent
/// is published) and the reader of the cluster's history.
#[derive(Debug)]
pub struct Running {
    pub thread: std::thread::JoinHandle<()>,
    pub reader: HistoryReader,
    /// The sessions' side of nicks and presence (on the caller's runtime).
    pub directory: ClusterDirectory,
}

/// What the hub asks of the cluster about clients: nick claims ([`nicks`]) and who is where
/// ([`presence`]).
#[derive(Debug, Clone)]
pub struct ClusterDirectory {
    pub claims: nicks::NickClaims,
    presence: mpsc::Sender<presence::Change>,
    conn: ConnectionManager,
}

impl ClusterDirectory {
    /// Records a change of where a client is, without waiting (dropped, and logged, when a
    /// Redis that is away has let [`presence::QUEUE`] changes pile up).
    pub fn moved(&self, change: presence::Change) {
        if self.presence.try_send(change).is_err() {
            tracing::warn!("chat cluster: presence changes are piling up; one was dropped");
        }
    }

    /// The nicks in `room` on every node.
    pub async fn who(&self, room: &str) -> redis::RedisResult<Vec<String>> {
        presence::who(&mut self.conn.clone(), room).await
    }
}

/// How long a dedup key outlives its event: longer than any retry goes on.
const DEDUP_SECONDS: u64 = 300;

/// A command that takes longer than this counts as failed (and is retried): the redis crate's
/// own default of 500 ms is too short for a pipeline of a thousand fsynced publishes.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// A local event gone to Redis whose delivery here needs more than its record: a join (its
/// client becomes a member when it comes back) or an event whose cause must hear of it.
struct Local {
    join: Option<Join>,
    origin: Option<ClientId>,
    sent: Instant,
}

/// Local events not back from Redis yet longer than this are given up (their sessions stop
/// waiting): longer than the publisher retries a batch (its `GIVE_UP`, 60 s), and by then the
/// subscription has been found deaf and caught up many times over.
const LOCAL_WAIT: Duration = Duration::from_secs(90);

/// What the publisher and the feed share: this node and its events on their way round.
struct Node {
    /// This node's id: random per start, so ids of a restarted node never clash with the old.
    id: String,
    url: String,
    client: redis::Client,
    shared: Arc<Shared>,
    replay: usize,
    max_rows: Option<u64>,
    waiting: Mutex<HashMap<String, Local>>,
    /// Whether this node has written members to the cluster's presence (so being missing from
    /// it means it was swept).
    listed: std::sync::atomic::AtomicBool,
}

impl Node {
    fn waiting(&self) -> MutexGuard<'_, HashMap<String, Local>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn redis_error(&self, source: redis::RedisError) -> ClusterError {
        ClusterError::Redis {
            url: self.url.clone(),
            source,
        }
    }
}

/// A fresh id for this node: 16 hex digits hashed from the clock, the process and a count of the
/// nodes this process started (tests run several in one).
fn node_id() -> String {
    static STARTED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let seed = format!(
        "{:?} {} {n}",
        std::time::SystemTime::now(),
        std::process::id()
    );
    blake3::hash(seed.as_bytes()).to_hex()[..16].to_string()
}

/// Connects to Redis, checks it keeps what `cfg` promises, and starts the cluster log: events
/// from `rx` are published, and what Redis publishes is delivered through `shared`.
pub async fn start(
    shared: Arc<Shared>,
    rx: mpsc::Receiver<Pending>,
    hub: mpsc::WeakSender<Pending>,
    cfg: ClusterConfig,
    replay: usize,
) -> Result<Running, ClusterError> {
    let client = redis::Client::open(cfg.url.as_str()).map_err(|source| ClusterError::Redis {
        url: cfg.url.clone(),
        source,
    })?;
    let node = Arc::new(Node {
        id: node_id(),
        url: cfg.url.clone(),
        client,
        shared,
        replay,
        max_rows: cfg.max_rows,
        waiting: Mutex::new(HashMap::new()),
        listed: std::sync::atomic::AtomicBool::new(false),
    });
    let (ready_tx, ready) = oneshot::channel();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ClusterError::Thread)?;
    let on_thread = node.clone();
    let durability = cfg.durability;
    let (presence_tx, presence_rx) = mpsc::channel(presence::QUEUE);
    let queues = Queues {
        events: rx,
        hub,
        presence: presence_rx,
    };
    let thread = std::thread::Builder::new()
        .name("chat-cluster".into())
        .spawn(move || runtime.block_on(run(on_thread, queues, durability, ready_tx)))
        .map_err(ClusterError::Thread)?;
    match ready.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            let _ = thread.join();
            return Err(e);
        }
        Err(_) => {
            let _ = thread.join();
            return Err(ClusterError::Thread(std::io::Error::other(
                "the cluster thread ended at start",
            )));
        }
    }
    let reader = HistoryReader::start(Box::new(history::RedisHistory::new(
        node.client.clone(),
        &node.url,
    )))
    .map_err(|e| ClusterError::Thread(std::io::Error::other(e.to_string())))?;
    // Made here, on the sessions' runtime, which its connection's task must run on.
    let conn = ConnectionManager::new_with_config(node.client.clone(), manager_config())
        .await
        .map_err(|e| node.redis_error(e))?;
    let directory = ClusterDirectory {
        claims: nicks::NickClaims::new(node.id.clone(), conn.clone()),
        presence: presence_tx,
        conn,
    };
    tracing::info!(node = %node.id, url = %node.url, "joined the chat cluster");
    Ok(Running {
        thread,
        reader,
        directory,
    })
}

/// What the cluster thread is fed: the hub's events, a way to post more (the sweeper's leave
/// notices; weak, so the hub's end still ends the thread), and presence changes.
struct Queues {
    events: mpsc::Receiver<Pending>,
    hub: mpsc::WeakSender<Pending>,
    presence: mpsc::Receiver<presence::Change>,
}

/// The cluster thread: connects, says whether it could, then publishes until the hub is gone.
async fn run(
    node: Arc<Node>,
    queues: Queues,
    durability: Durability,
    ready: oneshot::Sender<Result<(), ClusterError>>,
) {
    let mut conn = match connect(&node, durability).await {
        Ok(c) => c,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let stop = CancellationToken::new();
    let lease_stop = CancellationToken::new();
    // The lease is taken before any claim can be made under it.
    let lease = tokio::spawn(nicks::hold_lease(
        conn.clone(),
        node.id.clone(),
        lease_stop.clone(),
    ));
    let _ = ready.send(Ok(()));
    let feed = tokio::spawn(feed::run(node.clone(), conn.clone(), stop.clone()));
    let writer = tokio::spawn(presence::write(node.clone(), conn.clone(), queues.presence));
    let sweeper = tokio::spawn(presence::sweep(
        node.clone(),
        conn.clone(),
        queues.hub,
        stop.clone(),
    ));
    publish::run(&node, conn.clone(), queues.events).await;
    // What was just published comes back within milliseconds; give it the time to be delivered
    // to whoever is still here, then stop listening.
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.cancel();
    let _ = tokio::join!(feed, sweeper, writer);
    // A clean stop: this node's members are gone, then its lease, so no one sweeps it.
    presence::withdraw(&node, &mut conn).await;
    lease_stop.cancel();
    let _ = lease.await;
}

/// How the cluster's command connections behave: the redis crate reconnects them after a
/// failure; a command waits at most [`RESPONSE_TIMEOUT`].
fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_number_of_retries(2)
}

/// The command connection (reconnected by the redis crate after a failure), once Redis has been
/// found to keep what `durability` promises.
async fn connect(node: &Node, durability: Durability) -> Result<ConnectionManager, ClusterError> {
    let mut conn = ConnectionManager::new_with_config(node.client.clone(), manager_config())
        .await
        .map_err(|e| node.redis_error(e))?;
    let setting = |name: &'static str| {
        let mut conn = conn.clone();
        async move {
            let got: Vec<String> = redis::cmd("CONFIG")
                .arg("GET")
                .arg(name)
                .query_async(&mut conn)
                .await?;
            Ok::<_, redis::RedisError>(got.get(1).cloned().unwrap_or_default())
        }
    };
    if durability == Durability::Fsync {
        let (aof, fsync) = match (setting("appendonly").await, setting("appendfsync").await) {
            (Ok(a), Ok(f)) => (a, f),
            (Err(e), _) | (_, Err(e)) => {
                return Err(ClusterError::Config {
                    url: node.url.clone(),
                    why: format!(
                        "cannot read Redis's persistence settings ({e}); \
                         --cluster-durability relaxed starts without checking"
                    ),
                })
            }
        };
        if aof != "yes" || fsync != "always" {
            return Err(ClusterError::Config {
                url: node.url.clone(),
                why: format!(
                    "Redis runs with appendonly {aof}, appendfsync {fsync}: a Redis crash could \
                     lose messages clients saw. Start it with --appendonly yes --appendfsync \
                     always, or accept that with --cluster-durability relaxed"
                ),
            });
        }
    }
    // Evicted keys would be lost history and numbering; say so, but run (it is Redis's setting).
    if let Ok(policy) = setting("maxmemory-policy").await {
        if policy != "noeviction" {
            tracing::warn!(url = %node.url, %policy, "Redis may evict keys (maxmemory-policy); history and numbering could be lost: set it to noeviction");
        }
    }
    let _: () = redis::cmd("PING")
        .query_async(&mut conn)
        .await
        .map_err(|e| node.redis_error(e))?;
    Ok(conn)
}
