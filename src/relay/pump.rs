//! Relays one stream connection (TCP, TLS, Unix) and its local side, both directions at once, with
//! ncat's half-close rules: at the end of the input the socket's write side is shut down (TLS sends
//! `close_notify` first) and reading goes on until the peer closes.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::crlf::Crlf;
use super::session_log::SessionLog;
use super::telnet::Telnet;
use super::{Ended, RelayOptions, CHUNK};
use crate::net::{NetError, SendQueueReader, Stream};

/// The local side of one connection, as the pump sees it.
pub(crate) struct Sides {
    /// Chunks to send; the channel's end is the end of the input.
    pub input: Input,
    /// Where received chunks go.
    pub output: mpsc::Sender<Bytes>,
    /// The local side is a command rather than a person or a pipe: when it stops taking input
    /// (it exited, or closed its stdin) the peer's data is read and dropped while the command's
    /// output still flows. For stdout, a closed output ends the relay, as SIGPIPE ends ncat.
    pub command: bool,
}

/// Where a relay's outgoing chunks come from: a channel (stdin, a command's output) or, for a
/// `listen -k` client, its share of the broadcast.
pub(crate) enum Input {
    Channel(mpsc::Receiver<Bytes>),
    Queue(SendQueueReader),
}

impl Input {
    pub(crate) async fn recv(&mut self) -> Option<Bytes> {
        match self {
            Input::Channel(rx) => rx.recv().await,
            Input::Queue(q) => q.recv().await,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        match self {
            Input::Channel(rx) => rx.is_empty(),
            Input::Queue(q) => q.is_empty(),
        }
    }
}

impl From<SendQueueReader> for Input {
    fn from(q: SendQueueReader) -> Self {
        Input::Queue(q)
    }
}

impl From<mpsc::Receiver<Bytes>> for Input {
    fn from(rx: mpsc::Receiver<Bytes>) -> Self {
        Input::Channel(rx)
    }
}

/// Records when bytes last moved either way, for the idle timeout. Atomic because the two
/// directions are separate futures of one task that must stay `Send`.
#[derive(Debug)]
pub(crate) struct Activity {
    start: Instant,
    last_ms: AtomicU64,
    sent: AtomicU64,
    received: AtomicU64,
}

impl Activity {
    pub(crate) fn new() -> Self {
        Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
        }
    }

    pub(crate) fn add_sent(&self, n: usize) {
        self.sent.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub(crate) fn add_received(&self, n: usize) {
        self.received.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// ncat's closing line at `-v`: `12 bytes sent, 5 bytes received in 0.31 seconds`.
    pub(crate) fn log_summary(&self) {
        tracing::info!(
            "{} bytes sent, {} bytes received in {:.2} seconds",
            self.sent.load(Ordering::Relaxed),
            self.received.load(Ordering::Relaxed),
            self.start.elapsed().as_secs_f64()
        );
    }

    pub(crate) fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    pub(crate) fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    /// Completes once nothing has moved for `timeout`; never with `None`.
    pub(crate) async fn idle_for(&self, timeout: Option<Duration>) {
        let Some(timeout) = timeout else {
            return std::future::pending().await;
        };
        loop {
            let due = self.last() + timeout;
            if Instant::now() >= due {
                return;
            }
            tokio::time::sleep_until(due).await;
        }
    }
}

/// The error for a connection that went quiet for longer than `-i` allows.
pub(crate) fn idle_error(peer: &str, after: Duration) -> NetError {
    NetError::io(
        format!("connection with {peer} idle for {after:?} (-i)"),
        io::Error::from(io::ErrorKind::TimedOut),
    )
}

enum RecvEnd {
    /// The peer closed its write side.
    PeerClosed,
    /// The local output closed (stdout's reader went away).
    LocalClosed,
}

/// Relays `stream` and `sides` until both directions are done (see [`RelayOptions`] for the
/// variations), the connection fails, it idles out, or `stop` is cancelled.
pub(crate) async fn relay_stream(
    stream: Stream,
    sides: Sides,
    opts: &RelayOptions,
    crlf: bool,
    peer: &str,
    stop: &CancellationToken,
) -> Result<Ended, NetError> {
    let tls = matches!(stream, Stream::TlsServer(_) | Stream::TlsClient(_));
    let Sides {
        mut input,
        output,
        command,
    } = sides;
    let (mut rd, mut wr) = tokio::io::split(stream);
    let activity = Activity::new();
    let mut shut = false;
    // `-t`: the receiving half hands its answers to telnet negotiation to the sending half.
    let (replies_tx, mut replies_rx) = if opts.telnet && !command {
        let (tx, rx) = mpsc::channel::<Bytes>(TELNET_REPLIES);
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let log = opts.session_log.as_deref();

    let result = {
        let send = send_half(
            &mut wr,
            &mut input,
            replies_rx.as_mut(),
            SendOpts {
                shutdown: !opts.no_shutdown,
                crlf,
                delay: opts.delay.filter(|d| !d.is_zero()),
                log,
            },
            &activity,
        );
        let recv = recv_half(
            &mut rd,
            output,
            RecvOpts {
                deliver: !opts.send_only,
                command,
                tls,
                telnet: replies_tx,
                log,
            },
            &activity,
        );
        tokio::pin!(send, recv);
        let idle = activity.idle_for(opts.idle_timeout);
        tokio::pin!(idle);
        // `--recv-only` never reads the input and so never half-closes.
        let mut send_done = opts.recv_only;
        let mut recv_done = false;
        let mut peer_closed = false;
        // nc's `-q`: once the input has ended, the peer has this long to finish.
        let quit = tokio::time::sleep(Duration::from_secs(365 * 24 * 3600));
        tokio::pin!(quit);
        let mut quit_armed = false;
        loop {
            if send_done && recv_done {
                break Ok(Ended::Finished);
            }
            tokio::select! {
                r = &mut send, if !send_done => {
                    send_done = true;
                    match r {
                        Ok(()) => {
                            shut = !opts.no_shutdown;
                            if opts.send_only {
                                break Ok(Ended::Finished);
                            }
                            if let Some(after) = opts.quit_after_eof {
                                if after.is_zero() {
                                    break Ok(Ended::Finished);
                                }
                                quit.as_mut().reset(Instant::now() + after);
                                quit_armed = true;
                            }
                        }
                        // The peer closed and then refused more data: it has finished the
                        // conversation, which is not a failure of ours.
                        Err(e) if peer_closed => {
                            tracing::debug!(%peer, error = %e, "peer stopped reading after closing");
                            break Ok(Ended::Finished);
                        }
                        Err(e) => break Err(NetError::io(format!("sending to {peer}"), e)),
                    }
                }
                r = &mut recv, if !recv_done => {
                    recv_done = true;
                    match r {
                        Ok(RecvEnd::PeerClosed) => {
                            peer_closed = true;
                            // The grace time for a command counts from here.
                            activity.touch();
                            tracing::debug!(%peer, "peer closed its side");
                            if opts.recv_only || opts.peer_eof_ends {
                                break Ok(Ended::Finished);
                            }
                        }
                        Ok(RecvEnd::LocalClosed) => break Ok(Ended::Finished),
                        Err(e) => break Err(NetError::io(format!("receiving from {peer}"), e)),
                    }
                }
                _ = &mut idle => {
                    break Err(idle_error(peer, opts.idle_timeout.unwrap_or_default()));
                }
                // A closed client and a half-closed one look the same; a command that has said
                // nothing for the grace time since is not answering it, and must not run for ever
                // for a client that has gone.
                _ = activity.idle_for(opts.eof_grace), if command && peer_closed && opts.eof_grace.is_some() => {
                    tracing::debug!(%peer, grace = ?opts.eof_grace, "peer closed and the command is silent; ending it");
                    break Ok(Ended::Finished);
                }
                _ = &mut quit, if quit_armed => {
                    tracing::debug!(%peer, after = ?opts.quit_after_eof, "input ended a while ago (-q); quitting");
                    break Ok(Ended::Finished);
                }
                _ = stop.cancelled() => break Ok(Ended::Interrupted),
            }
        }
    };

    if !shut {
        // Close politely (TLS close_notify, then FIN) but never wait long on a broken peer.
        let _ = tokio::time::timeout(Duration::from_secs(1), wr.shutdown()).await;
    }
    activity.log_summary();
    result
}

/// Telnet answers waiting to be sent; more than this and further ones are dropped (a peer that
/// negotiates without reading has no right to our memory).
const TELNET_REPLIES: usize = 64;

struct SendOpts<'a> {
    shutdown: bool,
    crlf: bool,
    delay: Option<Duration>,
    log: Option<&'a SessionLog>,
}

struct RecvOpts<'a> {
    deliver: bool,
    command: bool,
    tls: bool,
    telnet: Option<mpsc::Sender<Bytes>>,
    log: Option<&'a SessionLog>,
}

async fn send_half<W: AsyncWrite + Unpin>(
    wr: &mut W,
    input: &mut Input,
    mut replies: Option<&mut mpsc::Receiver<Bytes>>,
    opts: SendOpts<'_>,
    activity: &Activity,
) -> io::Result<()> {
    let mut conv = opts.crlf.then(Crlf::default);
    loop {
        let next = match replies.as_deref_mut() {
            Some(rx) => tokio::select! {
                // Both branches are cancel-safe: nothing is lost when the other one wins.
                reply = rx.recv() => {
                    match reply {
                        Some(reply) => {
                            wr.write_all(&reply).await?;
                            wr.flush().await?;
                        }
                        None => replies = None,
                    }
                    continue;
                }
                chunk = input.recv() => chunk,
            },
            None => input.recv().await,
        };
        let Some(chunk) = next else { break };
        // ncat's `-d`: a pause before each send (each read of the input).
        if let Some(delay) = opts.delay {
            tokio::time::sleep(delay).await;
        }
        activity.touch();
        let chunk = match &mut conv {
            Some(c) => c.apply(&chunk),
            None => chunk,
        };
        wr.write_all(&chunk).await?;
        activity.add_sent(chunk.len());
        if let Some(log) = opts.log {
            log.record(&chunk);
        }
        // TLS holds records until flushed; flush when no more input is waiting to batch with.
        if input.is_empty() {
            wr.flush().await?;
        }
        activity.touch();
    }
    wr.flush().await?;
    if opts.shutdown {
        wr.shutdown().await?;
    }
    Ok(())
}

async fn recv_half<R: AsyncRead + Unpin>(
    rd: &mut R,
    output: mpsc::Sender<Bytes>,
    opts: RecvOpts<'_>,
    activity: &Activity,
) -> io::Result<RecvEnd> {
    let RecvOpts {
        mut deliver,
        command,
        tls,
        telnet,
        log,
    } = opts;
    let mut negotiation = telnet.as_ref().map(|_| Telnet::default());
    let mut buf = BytesMut::with_capacity(CHUNK);
    loop {
        buf.reserve(CHUNK);
        let n = match rd.read_buf(&mut buf).await {
            Ok(0) => return Ok(RecvEnd::PeerClosed),
            Ok(n) => n,
            // A TLS peer that closes without close_notify (many do) has still said it is done.
            Err(e) if tls && e.kind() == io::ErrorKind::UnexpectedEof => {
                tracing::debug!("TLS peer closed without close_notify");
                return Ok(RecvEnd::PeerClosed);
            }
            Err(e) => return Err(e),
        };
        activity.touch();
        activity.add_received(n);
        if let Some(log) = log {
            log.record(&buf);
        }
        if let (Some(t), Some(tx)) = (&mut negotiation, &telnet) {
            let (data, answer) = t.filter(&buf);
            buf.clear();
            buf.extend_from_slice(&data);
            if !answer.is_empty() && tx.try_send(Bytes::from(answer)).is_err() {
                tracing::debug!("telnet answers not taken; dropped");
            }
            if buf.is_empty() {
                continue;
            }
        }
        if !deliver {
            buf.clear();
            continue;
        }
        let n = buf.len();
        // Small reads are copied so the 64 KiB buffer is reused; large ones are handed over whole.
        let chunk = if n < CHUNK / 4 {
            let c = Bytes::copy_from_slice(&buf);
            buf.clear();
            c
        } else {
            buf.split().freeze()
        };
        if output.send(chunk).await.is_err() {
            if !command {
                return Ok(RecvEnd::LocalClosed);
            }
            deliver = false;
        }
    }
}
