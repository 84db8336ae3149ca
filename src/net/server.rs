//! The accept loop every TCP/Unix server shares: allow/deny, the connection limits (overall and per
//! address, see [`super::admit`]), TLS handshakes off the accept path, accept errors survived, and a
//! bounded drain on shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::admit::{AddrLimits, Admitted, ConnSlots, Refusal};
use super::tls::ServerTls;
use super::workers::Workers;
use super::{AccessList, Listener, PeerAddr, Stream, DEFAULT_DRAIN};

/// Limits and policies of a stream server. Every field has a default a public server can live with.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Connections served at once; one more is refused (told `busy_message`, then closed).
    pub max_conns: usize,
    /// Limits per client address: connections at once, connections per second, who is exempt.
    pub per_addr: AddrLimits,
    /// Handlers close a connection after this long without traffic. `None` keeps it forever.
    pub idle_timeout: Option<Duration>,
    /// Which client addresses are admitted.
    pub access: AccessList,
    /// Speak TLS on every accepted connection.
    pub tls: Option<ServerTls>,
    /// How long connections may take to finish after shutdown before they are cut.
    pub drain: Duration,
    /// A TLS handshake that takes longer than this is abandoned (a slowloris on the handshake).
    pub handshake_timeout: Duration,
    /// Sent to a client refused because `max_conns` are in use, for protocols that can say so.
    pub busy_message: Option<Bytes>,
    /// Sent to a client refused by a per-address limit; `None` sends `busy_message`.
    pub addr_limit_message: Option<Bytes>,
    /// Slots shared with other listeners (a chat server's port and its web page count against one
    /// limit, overall and per address); `None` gives this listener slots of its own made from
    /// `max_conns` and `per_addr`.
    pub shared_slots: Option<ConnSlots>,
    /// Descriptors one connection may hold while served (its socket, and a file or a command's
    /// pipes), for the connection budget the open-file limit leaves (see [`ServerOptions::slots`]).
    pub fds_per_conn: u64,
    /// Connections are served on this many worker threads of their own (see [`Workers`]), handed
    /// out in turn; `None` serves them as tasks of the caller's runtime.
    pub workers: Option<usize>,
}

impl ServerOptions {
    /// The slots this server draws from: the shared ones, or its own. Its own are no more than
    /// the open-file limit allows, [`super::rlimit::FD_RESERVE`] kept free, `fds_per_conn` each:
    /// past that a storm of connections would leave the clients already served without the
    /// descriptors their requests need, so it is refused at the door instead (and said at start).
    pub fn slots(&self) -> ConnSlots {
        if let Some(shared) = &self.shared_slots {
            return shared.clone();
        }
        let mut max = self.max_conns;
        if let Some(budget) = super::rlimit::conn_budget(self.fds_per_conn) {
            if budget < max {
                // A cut of a few slots (the default 10,000 under a 20,000-descriptor limit with
                // two per connection) is the reserve doing its job, not news: said only with -v.
                if budget.saturating_mul(10) < max.saturating_mul(9) {
                    tracing::warn!(
                        max_conns = budget,
                        asked = max,
                        fd_limit = super::rlimit::fd_limit(),
                        "the open-file limit (ulimit -n) allows only {budget} connections; \
                         serving at most that many (raise the limit for more)"
                    );
                } else {
                    tracing::debug!(
                        max_conns = budget,
                        asked = max,
                        "connections capped by the open-file limit"
                    );
                }
                max = budget;
            }
        }
        ConnSlots::new(max, self.per_addr.clone())
    }
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            max_conns: 10_000,
            per_addr: AddrLimits::default(),
            idle_timeout: None,
            access: AccessList::default(),
            tls: None,
            drain: DEFAULT_DRAIN,
            handshake_timeout: Duration::from_secs(10),
            busy_message: None,
            addr_limit_message: None,
            shared_slots: None,
            fds_per_conn: 1,
            workers: None,
        }
    }
}

/// One accepted, admitted connection, handed to a tool's handler.
#[derive(Debug)]
pub struct Conn {
    /// The stream, TLS already negotiated when the server speaks TLS.
    pub stream: Stream,
    /// Who connected.
    pub peer: PeerAddr,
    /// Cancelled when the server shuts down: finish the current unit of work, say goodbye, return.
    pub shutdown: CancellationToken,
    /// The server's idle timeout, for the handler's read loop (see [`super::IdleTimer`]).
    pub idle_timeout: Option<Duration>,
}

/// Logs refused connections without letting a flood of them flood the log: the first of each
/// second is logged, and the next line says how many were not.
#[derive(Default)]
struct RefusalLog {
    window: Option<tokio::time::Instant>,
    unlogged: u64,
}

impl RefusalLog {
    fn note(&mut self, peer: &PeerAddr, why: Refusal, max_conns: usize) {
        let now = tokio::time::Instant::now();
        if self
            .window
            .is_some_and(|start| now.duration_since(start) < Duration::from_secs(1))
        {
            self.unlogged += 1;
            return;
        }
        self.window = Some(now);
        let unlogged = std::mem::take(&mut self.unlogged);
        tracing::warn!(%peer, max_conns, also_refused = unlogged, "refused: {}", why.as_str());
    }
}

/// Accepts connections on `listener` until `shutdown` is cancelled, running `handler` for each on its
/// own task; then stops accepting, tells handlers to finish, and waits up to `opts.drain` for them
/// before cutting the rest.
pub async fn serve<H, F>(
    listener: Listener,
    opts: ServerOptions,
    shutdown: CancellationToken,
    handler: H,
) where
    H: Fn(Conn) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let handler = Arc::new(handler);
    let slots = opts.slots();
    let mut refusals = RefusalLog::default();
    let tracker = TaskTracker::new();
    // Handlers see `finish` (say goodbye); `cut` drops whatever is left after the drain time.
    let finish = CancellationToken::new();
    let cut = CancellationToken::new();
    let local = listener.local_addr();
    let workers = match opts.workers {
        None => None,
        Some(n) => match Workers::start(n) {
            Ok(w) => Some(w),
            Err(e) => {
                // Still served, on the caller's runtime: slower, not broken.
                tracing::warn!(error = %e, "cannot start worker threads; serving without them");
                None
            }
        },
    };

    loop {
        let Some((mut stream, peer)) = next_connection(&listener, &shutdown).await else {
            break;
        };
        let Some(permit) = screen(&opts, &slots, &mut refusals, &peer, &mut stream).await else {
            continue;
        };
        tracing::debug!(%peer, "accepted");
        let handler = handler.clone();
        let tls = opts.tls.clone();
        let conn_shutdown = finish.child_token();
        let cut = cut.clone();
        let idle_timeout = opts.idle_timeout;
        let handshake_timeout = opts.handshake_timeout;
        // Counted from now, wherever it runs: the drain waits for it.
        let tracked = tracker.token();
        let serve_conn = move |stream: Stream| async move {
            let _tracked = tracked;
            let _permit = permit;
            let work = async move {
                let Some(stream) = handshake(tls.as_ref(), stream, &peer, handshake_timeout).await
                else {
                    return;
                };
                handler(Conn {
                    stream,
                    peer,
                    shutdown: conn_shutdown,
                    idle_timeout,
                })
                .await;
            };
            tokio::select! {
                _ = work => {}
                _ = cut.cancelled() => {}
            }
        };
        match &workers {
            Some(workers) => workers.spawn(stream, serve_conn),
            None => {
                tokio::spawn(serve_conn(stream));
            }
        }
    }

    drop(listener);
    finish.cancel();
    tracker.close();
    if tokio::time::timeout(opts.drain, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            remaining = tracker.len(),
            "drain time over; closing the rest"
        );
        cut.cancel();
        tracker.wait().await;
    }
    drop(workers);
    tracing::info!(listener = %local, "stopped");
}

/// The next connection `listener` accepts, or `None` once `shutdown` is cancelled. Accept errors
/// are logged and survived: EMFILE/ENFILE/ENOBUFS mean the process or system is out of
/// something, and a pause lets existing connections close and free it, where retrying at once
/// would burn the CPU they need.
async fn next_connection(
    listener: &Listener,
    shutdown: &CancellationToken,
) -> Option<(Stream, PeerAddr)> {
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return None,
            a = listener.accept() => a,
        };
        match accepted {
            Ok(pair) => return Some(pair),
            Err(e) => {
                let local = listener.local_addr();
                tracing::warn!(listener = %local, error = %e, "accept failed; retrying shortly");
                tokio::select! {
                    _ = shutdown.cancelled() => return None,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        }
    }
}

/// Allow/deny and the connection limits for one accepted connection: its slot, or `None` when it
/// is refused (told `busy_message` where the protocol allows; the refusal logged, rate-limited).
async fn screen(
    opts: &ServerOptions,
    slots: &ConnSlots,
    refusals: &mut RefusalLog,
    peer: &PeerAddr,
    stream: &mut Stream,
) -> Option<Admitted> {
    if let PeerAddr::Inet(addr) = peer {
        if !opts.access.permits(addr.ip()) {
            tracing::info!(%peer, "refused by allow/deny rules");
            return None;
        }
    }
    match slots.admit(peer) {
        Ok(permit) => Some(permit),
        Err(why) => {
            refusals.note(peer, why, slots.max());
            let msg = match why {
                Refusal::Full => opts.busy_message.as_ref(),
                _ => opts
                    .addr_limit_message
                    .as_ref()
                    .or(opts.busy_message.as_ref()),
            };
            // Not over TLS: the client expects a handshake, and plain text would be noise to it.
            if let (Some(msg), None) = (msg, &opts.tls) {
                // Best effort and never blocking: the accept loop must not wait on a refused
                // client.
                if let Stream::Tcp(tcp) = &*stream {
                    let _ = tcp.try_write(msg);
                } else {
                    let _ = tokio::time::timeout(Duration::from_millis(50), stream.write_all(msg))
                        .await;
                }
            }
            None
        }
    }
}

/// The TLS handshake when the server speaks TLS (bounded by `timeout`); `None` when it fails.
async fn handshake(
    tls: Option<&ServerTls>,
    stream: Stream,
    peer: &PeerAddr,
    timeout: Duration,
) -> Option<Stream> {
    match (tls, stream) {
        (Some(tls), Stream::Tcp(tcp)) => {
            match tokio::time::timeout(timeout, tls.acceptor().accept(tcp)).await {
                Ok(Ok(s)) => Some(Stream::TlsServer(Box::new(s))),
                Ok(Err(e)) => {
                    tracing::info!(%peer, error = %e, "TLS handshake failed");
                    None
                }
                Err(_) => {
                    tracing::info!(%peer, "TLS handshake timed out");
                    None
                }
            }
        }
        (_, stream) => Some(stream),
    }
}

/// Waits for ONE connection that passes what [`serve`] applies to each (allow/deny, the
/// per-address limits, the TLS handshake within `handshake_timeout`) and returns it; clients
/// refused or failing their handshake meanwhile are dropped and the wait goes on. `None` when
/// `shutdown` is cancelled first. For tools that serve exactly one peer (`listen` without `-k`,
/// `recv`, `send --listen`): the caller drops the listener when it has its connection, so later
/// clients are refused by the kernel, as ncat's are.
///
/// Handshakes run one at a time: a client that stalls its handshake delays the next by at most
/// `handshake_timeout`, and holds nothing after.
pub async fn accept_one(
    listener: &Listener,
    opts: &ServerOptions,
    shutdown: &CancellationToken,
) -> Option<Conn> {
    // One slot, and the per-address limits: a reconnect loop is still slowed down.
    let slots = ConnSlots::new(1, opts.per_addr.clone());
    let mut refusals = RefusalLog::default();
    loop {
        let (mut stream, peer) = next_connection(listener, shutdown).await?;
        let Some(permit) = screen(opts, &slots, &mut refusals, &peer, &mut stream).await else {
            continue;
        };
        let stream = tokio::select! {
            _ = shutdown.cancelled() => return None,
            s = handshake(opts.tls.as_ref(), stream, &peer, opts.handshake_timeout) => s,
        };
        drop(permit);
        let Some(stream) = stream else { continue };
        tracing::debug!(%peer, "accepted");
        return Some(Conn {
            stream,
            peer,
            shutdown: shutdown.clone(),
            idle_timeout: opts.idle_timeout,
        });
    }
}
