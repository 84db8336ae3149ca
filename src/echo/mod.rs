//! `sockit echo`: sends every byte back, over TCP, TLS, Unix streams or UDP datagrams, optionally
//! upper-cased (as the tutorials' asyncio echo server does). Datagrams are answered behind the net
//! layer's [`DatagramGuard`]: no answer to sources that could make a loop, and a reply rate per
//! source address.

mod upper;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use crate::net::{
    self, Conn, DatagramGuard, DatagramStats, Endpoint, IdleTimer, LocalAddr, NetError,
    ReplyLimits, ServerOptions, ServerSocket,
};
pub use upper::Upcaser;

/// Default TCP address, the tutorials' echo server.
pub const DEFAULT_TCP: &str = "127.0.0.1:9001";
/// Default UDP address, the tutorials' UDP echo server.
pub const DEFAULT_UDP: &str = "127.0.0.1:9002";

/// The first read buffer of a stream connection. It doubles when a read fills it, up to
/// [`MAX_BUF`], so thousands of idle chatty clients cost little while a bulk stream gets big reads.
const FIRST_BUF: usize = 4 * 1024;
/// 1 MiB: on one loopback stream (bench/echo.sh) it echoes ~17 % more than 256 KiB did (median of
/// 8 runs: 2.8 vs 2.4 GB/s, 0.62 vs 0.53 of iperf3 one-way) with ~20 % less server CPU per byte.
/// The price is the worst case: a connection that keeps filling its buffer holds 1 MiB, so a
/// buffer that grew is given back once the connection has been quiet for [`BUF_QUIET`].
const MAX_BUF: usize = 1024 * 1024;

/// How long a connection with a grown buffer may sit without data before the buffer shrinks back
/// to [`FIRST_BUF`]. Not at the first read that would block: a bulk stream often waits a moment
/// for its sender, and regrowing to 1 MiB costs eight full reads. Without this, 10,000 connections
/// idle after a bulk transfer each would hold 1 MiB (10 GB).
const BUF_QUIET: Duration = Duration::from_secs(1);

/// Largest UDP payload (IPv4 limit); a bigger buffer would never fill.
const MAX_DATAGRAM: usize = 65_507;

/// Transport of an echo server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// TCP, TLS or a Unix stream, depending on the endpoint and options.
    Stream,
    /// UDP: every datagram is answered to its sender.
    Datagram,
}

/// A validated echo server configuration.
#[derive(Debug, Clone)]
pub struct EchoConfig {
    pub endpoint: Endpoint,
    pub transport: Transport,
    /// Send the data back upper-cased.
    pub upper: bool,
    /// Limits, TLS, allow/deny (stream); allow/deny also applies to datagrams.
    pub server: ServerOptions,
}

/// A bound echo server, ready to run.
#[derive(Debug)]
pub struct EchoServer {
    socket: ServerSocket,
    upper: bool,
    server: ServerOptions,
    replies: ReplyLimits,
    stats: EchoStats,
}

/// What a running echo server holds and has decided, readable from outside (tests, embedders).
#[derive(Debug, Clone, Default)]
pub struct EchoStats {
    inner: Arc<StatsInner>,
}

#[derive(Debug, Default)]
struct StatsInner {
    buffered: AtomicUsize,
    datagrams: Arc<DatagramStats>,
}

impl EchoStats {
    /// Bytes of read buffer held by the stream connections now.
    pub fn buffer_bytes(&self) -> usize {
        self.inner.buffered.load(Ordering::Relaxed)
    }

    /// The datagram guard's counters (replies sent, sources refused, replies rate-limited).
    pub fn datagrams(&self) -> &DatagramStats {
        &self.inner.datagrams
    }
}

/// A stream connection's read buffer, counted in [`EchoStats::buffer_bytes`].
struct ConnBuf {
    buf: Vec<u8>,
    stats: EchoStats,
}

impl ConnBuf {
    fn new(stats: EchoStats) -> Self {
        stats.inner.buffered.fetch_add(FIRST_BUF, Ordering::Relaxed);
        ConnBuf {
            buf: vec![0u8; FIRST_BUF],
            stats,
        }
    }

    fn resize(&mut self, len: usize) {
        let old = self.buf.capacity();
        self.buf.resize(len, 0);
        self.buf.shrink_to_fit();
        let new = self.buf.capacity();
        let gauge = &self.stats.inner.buffered;
        if new >= old {
            gauge.fetch_add(new - old, Ordering::Relaxed);
        } else {
            gauge.fetch_sub(old - new, Ordering::Relaxed);
        }
    }

    fn is_grown(&self) -> bool {
        self.buf.len() > FIRST_BUF
    }
}

impl Drop for ConnBuf {
    fn drop(&mut self) {
        let held = self.buf.capacity();
        self.stats.inner.buffered.fetch_sub(held, Ordering::Relaxed);
    }
}

impl EchoServer {
    /// Opens the socket. After this returns, clients can connect (the kernel queues them).
    pub async fn bind(config: EchoConfig) -> Result<Self, NetError> {
        let socket =
            ServerSocket::bind(&config.endpoint, config.transport == Transport::Datagram).await?;
        Ok(EchoServer {
            socket,
            upper: config.upper,
            server: config.server,
            replies: ReplyLimits::default(),
            stats: EchoStats::default(),
        })
    }

    /// How many replies each source address may get over UDP ([`ReplyLimits::default`] unless
    /// set).
    pub fn with_reply_limits(mut self, limits: ReplyLimits) -> Self {
        self.replies = limits;
        self
    }

    /// The server's counters; valid before and while it runs.
    pub fn stats(&self) -> EchoStats {
        self.stats.clone()
    }

    /// The bound address (port 0 resolved).
    pub fn local_addr(&self) -> LocalAddr {
        self.socket.local_addr()
    }

    /// Serves until `shutdown` is cancelled, then drains.
    pub async fn run(self, shutdown: CancellationToken) {
        let upper = self.upper;
        let stats = self.stats;
        match self.socket {
            ServerSocket::Stream(listener) => {
                net::serve(listener, self.server, shutdown, move |conn| {
                    echo_stream(conn, upper, stats.clone())
                })
                .await
            }
            ServerSocket::Datagram(socket) => {
                let local = socket
                    .local_addr()
                    .unwrap_or_else(|_| std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
                let guard = DatagramGuard::new(local, self.replies)
                    .with_stats(stats.inner.datagrams.clone());
                echo_datagrams(socket, upper, &self.server.access, guard, shutdown).await
            }
        }
    }
}

/// The stream data path: read what is there, write it back, until EOF, idle, or shutdown.
async fn echo_stream(mut conn: Conn, upper: bool, stats: EchoStats) {
    let mut buf = ConnBuf::new(stats);
    let mut idle = IdleTimer::new(conn.idle_timeout);
    // Armed only while the buffer is grown; re-armed lazily, so a bulk stream pays a timestamp per
    // read, not a timer update.
    let mut quiet = IdleTimer::new(Some(BUF_QUIET));
    let mut upcaser = upper.then(Upcaser::default);
    // Pinned once: a fresh `cancelled()` future per read would take the token's lock every time.
    let stop = conn.shutdown.clone();
    let stopped = stop.cancelled();
    tokio::pin!(stopped);
    enum Step {
        Read(std::io::Result<usize>),
        Quiet,
        Stop,
    }
    loop {
        let grown = buf.is_grown();
        let step = tokio::select! {
            biased;
            r = conn.stream.read(&mut buf.buf) => Step::Read(r),
            // Reads are cancel-safe: nothing is lost by giving up this one to shrink the buffer.
            _ = &mut quiet, if grown => Step::Quiet,
            _ = &mut idle => {
                tracing::debug!(peer = %conn.peer, "idle timeout");
                Step::Stop
            }
            _ = &mut stopped => Step::Stop,
        };
        let n = match step {
            Step::Read(Ok(0)) | Step::Stop => break,
            Step::Read(Ok(n)) => n,
            Step::Read(Err(e)) => {
                tracing::debug!(peer = %conn.peer, error = %e, "read failed");
                break;
            }
            Step::Quiet => {
                buf.resize(FIRST_BUF);
                continue;
            }
        };
        idle.touch();
        if grown {
            quiet.touch();
        }
        let out: &[u8] = match &mut upcaser {
            Some(u) => u.apply(&buf.buf[..n]),
            None => &buf.buf[..n],
        };
        // A client that sends but never reads would block this write forever; the idle timer and
        // the shutdown signal bound it.
        let written = tokio::select! {
            biased;
            r = conn.stream.write_all(out) => r.is_ok(),
            _ = &mut idle => false,
            _ = &mut stopped => false,
        };
        if !written {
            break;
        }
        if n == buf.buf.len() && buf.buf.len() < MAX_BUF {
            let len = buf.buf.len() * 2;
            buf.resize(len);
            quiet.touch();
        }
    }
    if let Some(u) = &mut upcaser {
        let rest = u.finish();
        if !rest.is_empty() {
            let _ = conn.stream.write_all(&rest).await;
        }
    }
    let _ = conn.stream.shutdown().await;
}

/// The datagram path: answer every datagram to its sender, as the guard allows. One socket serves
/// any number of peers.
async fn echo_datagrams(
    socket: UdpSocket,
    upper: bool,
    access: &net::AccessList,
    mut guard: DatagramGuard,
    shutdown: CancellationToken,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (n, peer) = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            r = socket.recv_from(&mut buf) => match r {
                Ok(pair) => pair,
                Err(e) => {
                    // ICMP port-unreachable from an earlier reply shows up here on Linux; it is
                    // about that peer, not about this socket.
                    tracing::debug!(error = %e, "recv failed");
                    continue;
                }
            },
        };
        if !access.permits(peer.ip()) {
            tracing::info!(%peer, "datagram refused by allow/deny rules");
            continue;
        }
        if !guard.admit(peer) {
            continue;
        }
        let reply: std::borrow::Cow<'_, [u8]> = if upper {
            let mut u = Upcaser::default();
            let mut out = u.apply(&buf[..n]).to_vec();
            out.extend_from_slice(&u.finish());
            out.into()
        } else {
            (&buf[..n]).into()
        };
        if let Err(e) = socket.send_to(&reply, peer).await {
            tracing::debug!(%peer, error = %e, "send failed");
        }
    }
    tracing::info!("udp echo stopped");
}
