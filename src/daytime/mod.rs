//! `sockit daytime`: the RFC 867 time service. Over TCP the server sends the time and closes; over
//! UDP it answers any datagram with the time, behind the net layer's [`DatagramGuard`] (no answer
//! to sources that could make a loop, and a reply rate per source address).

use std::sync::Arc;

use chrono::{Local, Utc};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use crate::net::{
    self, Conn, DatagramGuard, DatagramStats, Endpoint, LocalAddr, NetError, ReplyLimits,
    ServerOptions, ServerSocket,
};

/// Default address: the tutorials' time server (RFC 867's port 13 needs root).
pub const DEFAULT_ADDR: &str = "127.0.0.1:9999";

/// The default format, `ctime()`'s (what the tutorial's `time.ctime()` sends) plus the zone, so the
/// reader knows which clock it is.
pub const DEFAULT_FORMAT: &str = "%a %b %e %H:%M:%S %Y %z";

/// A validated daytime configuration.
#[derive(Debug, Clone)]
pub struct DaytimeConfig {
    pub endpoint: Endpoint,
    /// Answer UDP datagrams instead of TCP connections.
    pub udp: bool,
    /// strftime-style format of the line sent.
    pub format: String,
    /// Report UTC rather than local time.
    pub utc: bool,
    pub server: ServerOptions,
}

/// A bound daytime server.
#[derive(Debug)]
pub struct DaytimeServer {
    socket: ServerSocket,
    clock: Arc<Clock>,
    server: ServerOptions,
    replies: ReplyLimits,
    datagrams: Arc<DatagramStats>,
}

#[derive(Debug)]
struct Clock {
    format: String,
    utc: bool,
}

impl Clock {
    fn line(&self) -> String {
        let text = if self.utc {
            Utc::now().format(&self.format).to_string()
        } else {
            Local::now().format(&self.format).to_string()
        };
        format!("{text}\r\n")
    }
}

/// Checks a strftime format once, at start, so a bad one is a usage error and not a panic later.
pub fn validate_format(format: &str) -> Result<(), String> {
    use chrono::format::{Item, StrftimeItems};
    if StrftimeItems::new(format).any(|i| matches!(i, Item::Error)) {
        return Err(format!("{format:?} is not a valid strftime format"));
    }
    Ok(())
}

impl DaytimeServer {
    /// Opens the socket.
    pub async fn bind(config: DaytimeConfig) -> Result<Self, NetError> {
        validate_format(&config.format).map_err(|reason| NetError::BadAddress {
            input: config.format.clone(),
            reason,
        })?;
        let socket = ServerSocket::bind(&config.endpoint, config.udp).await?;
        Ok(DaytimeServer {
            socket,
            clock: Arc::new(Clock {
                format: config.format,
                utc: config.utc,
            }),
            server: config.server,
            replies: ReplyLimits::default(),
            datagrams: Arc::default(),
        })
    }

    /// How many replies each source address may get over UDP ([`ReplyLimits::default`] unless
    /// set).
    pub fn with_reply_limits(mut self, limits: ReplyLimits) -> Self {
        self.replies = limits;
        self
    }

    /// The UDP guard's counters (replies sent, sources refused, replies rate-limited).
    pub fn datagram_stats(&self) -> Arc<DatagramStats> {
        self.datagrams.clone()
    }

    /// The bound address.
    pub fn local_addr(&self) -> LocalAddr {
        self.socket.local_addr()
    }

    /// Serves until `shutdown` is cancelled.
    pub async fn run(self, shutdown: CancellationToken) {
        let clock = self.clock;
        match self.socket {
            ServerSocket::Stream(listener) => {
                net::serve(listener, self.server, shutdown, move |conn| {
                    send_time(conn, clock.clone())
                })
                .await
            }
            ServerSocket::Datagram(socket) => {
                let access = self.server.access;
                let local = socket
                    .local_addr()
                    .unwrap_or_else(|_| std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
                let mut guard = DatagramGuard::new(local, self.replies).with_stats(self.datagrams);
                let mut buf = vec![0u8; 2048];
                loop {
                    let peer = tokio::select! {
                        _ = shutdown.cancelled() => break,
                        r = socket.recv_from(&mut buf) => match r {
                            Ok((_, peer)) => peer,
                            Err(e) => {
                                tracing::debug!(error = %e, "recv failed");
                                continue;
                            }
                        },
                    };
                    if !access.permits(peer.ip()) || !guard.admit(peer) {
                        continue;
                    }
                    if let Err(e) = socket.send_to(clock.line().as_bytes(), peer).await {
                        tracing::debug!(%peer, error = %e, "send failed");
                    }
                }
            }
        }
    }
}

async fn send_time(mut conn: Conn, clock: Arc<Clock>) {
    let line = clock.line();
    let write = async {
        conn.stream.write_all(line.as_bytes()).await?;
        conn.stream.shutdown().await
    };
    // A peer that never reads cannot hold the connection: the write is bounded.
    match tokio::time::timeout(std::time::Duration::from_secs(10), write).await {
        Ok(Ok(())) => tracing::debug!(peer = %conn.peer, "sent the time"),
        Ok(Err(e)) => tracing::debug!(peer = %conn.peer, error = %e, "write failed"),
        Err(_) => tracing::debug!(peer = %conn.peer, "write timed out"),
    }
}
