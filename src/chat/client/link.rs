//! The connection to the server, kept up: connect, send the hello, exchange JSON lines, and when
//! the connection fails or drops, reconnect with backoff asking for the same nick and room.
//!
//! The link runs as its own task. The front end (terminal UI or plain mode) hands it lines to send
//! and receives [`Update`]s: connection state changes and every line from the server.

use std::time::Duration;

use futures::StreamExt;
use tokio::io::{AsyncWriteExt, WriteHalf};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::codec::{AnyDelimiterCodec, FramedRead};
use tokio_util::sync::CancellationToken;

use super::backoff::Backoff;
use super::protocol::{text_line, Change, Identity, Incoming, ReplyKind};
use super::ClientError;
use crate::net::{self, ConnectOptions, Endpoint, Stream};

/// Longest line accepted from the server. Its own limit on a message is a few KiB; JSON escaping
/// can multiply that, but never to this.
const MAX_LINE: usize = 1024 * 1024;

/// How long the server has to answer the hello before the connection is given up as not a sockit
/// chat server (or a stuck one).
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection that lasted this long resets the backoff; one that drops sooner (a server that
/// accepts and closes at once) keeps backing off.
const STABLE: Duration = Duration::from_secs(2);

/// Updates queued for a front end that is busy drawing.
const UPDATES: usize = 1024;

/// Lines queued for sending.
const OUTGOING: usize = 64;

/// Where and as whom to connect.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// Where to connect: the first, and after each failed or dropped connection the next, in turn.
    pub endpoints: Vec<Endpoint>,
    pub connect: ConnectOptions,
    pub identity: Identity,
}

/// What the link tells its front end.
#[derive(Debug)]
pub enum Update {
    /// Connecting; `attempt` counts attempts since the last working connection.
    Connecting { attempt: u32 },
    /// The server answered the hello; lines can be sent.
    Connected { nick: String },
    /// A line from the server.
    Incoming(Incoming),
    /// The connection failed or dropped; the next attempt starts after `retry_in`.
    Disconnected {
        error: ClientError,
        retry_in: Duration,
    },
    /// A line that could not be sent because the connection was down, handed back.
    NotSent(String),
}

/// A running link.
#[derive(Debug)]
pub struct Link {
    out: mpsc::Sender<String>,
    updates: mpsc::Receiver<Update>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Link {
    /// Starts connecting in the background.
    pub fn start(config: LinkConfig) -> Link {
        let (out, out_rx) = mpsc::channel(OUTGOING);
        let (updates_tx, updates) = mpsc::channel(UPDATES);
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(config, out_rx, updates_tx, stop.clone()));
        Link {
            out,
            updates,
            stop,
            task,
        }
    }

    /// Queues a line (a message or a /command) for the server. A full queue hands the line back.
    pub fn send(&self, text: String) -> Result<(), String> {
        self.out.try_send(text).map_err(|e| match e {
            mpsc::error::TrySendError::Full(t) | mpsc::error::TrySendError::Closed(t) => t,
        })
    }

    /// The next update; `None` once the link has ended (the server said goodbye to a /quit).
    pub async fn next(&mut self) -> Option<Update> {
        self.updates.recv().await
    }

    /// An update that is already waiting, if any.
    pub fn try_next(&mut self) -> Option<Update> {
        self.updates.try_recv().ok()
    }

    /// Closes the connection. Lines already handed to the socket have been written and flushed.
    pub async fn close(self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(1), self.task).await;
    }
}

/// How one connection ended.
enum End {
    /// The server said goodbye to a /quit and closed: do not reconnect.
    Bye,
    /// The front end is gone.
    Gone,
    /// Failed or dropped: reconnect.
    Failed(ClientError),
}

async fn run(
    config: LinkConfig,
    mut out: mpsc::Receiver<String>,
    updates: mpsc::Sender<Update>,
    stop: CancellationToken,
) {
    let mut identity = config.identity.clone();
    let mut backoff = Backoff::default();
    let mut attempt = 0;
    // Which of the endpoints the next attempt goes to.
    let mut at = 0usize;
    loop {
        attempt += 1;
        if updates.send(Update::Connecting { attempt }).await.is_err() {
            return;
        }
        identity.reset();
        let started = Instant::now();
        let mut welcomed = false;
        let end = tokio::select! {
            _ = stop.cancelled() => return,
            end = session(&config, at, &mut identity, &mut out, &updates, &mut welcomed) => end,
        };
        let error = match end {
            End::Bye | End::Gone => return,
            End::Failed(e) => e,
        };
        at = (at + 1) % config.endpoints.len().max(1);
        if welcomed {
            attempt = 0;
            if started.elapsed() >= STABLE {
                backoff.reset();
            }
        }
        let retry_in = backoff.next_delay();
        if updates
            .send(Update::Disconnected { error, retry_in })
            .await
            .is_err()
        {
            return;
        }
        let wait = tokio::time::sleep(retry_in);
        tokio::pin!(wait);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = &mut wait => break,
                line = out.recv() => match line {
                    Some(text) => {
                        if updates.send(Update::NotSent(text)).await.is_err() {
                            return;
                        }
                    }
                    None => return,
                },
            }
        }
    }
}

/// One connection, from connect to its end.
async fn session(
    config: &LinkConfig,
    at: usize,
    identity: &mut Identity,
    out: &mut mpsc::Receiver<String>,
    updates: &mpsc::Sender<Update>,
    welcomed: &mut bool,
) -> End {
    let Some(endpoint) = config.endpoints.get(at) else {
        return End::Gone;
    };
    let stream = match net::connect(endpoint, &config.connect).await {
        Ok(s) => s,
        Err(e) => return End::Failed(e.into()),
    };
    let (reader, mut writer) = tokio::io::split(stream);
    let codec = AnyDelimiterCodec::new_with_max_length(b"\n".to_vec(), Vec::new(), MAX_LINE);
    let mut lines = FramedRead::new(reader, codec);
    // The hello goes first; the server's plain welcome line is read (and ignored) below.
    if let Err(e) = write_line(&mut writer, &identity.hello()).await {
        return End::Failed(ClientError::Lost(e.to_string()));
    }
    let hello_deadline = tokio::time::sleep(HELLO_TIMEOUT);
    tokio::pin!(hello_deadline);
    let mut said_bye = false;
    loop {
        tokio::select! {
            _ = &mut hello_deadline, if !*welcomed => {
                return End::Failed(ClientError::NoHello(endpoint.to_string()));
            }
            line = lines.next() => match line {
                None if said_bye => return End::Bye,
                None => return End::Failed(ClientError::Lost("the server closed the connection".into())),
                Some(Err(e)) => return End::Failed(ClientError::Lost(e.to_string())),
                Some(Ok(bytes)) => {
                    let Some(msg) = Incoming::parse(&bytes) else {
                        continue;
                    };
                    if identity.observe(&msg) == Some(Change::Welcomed) && !*welcomed {
                        *welcomed = true;
                        let nick = identity.nick.clone().unwrap_or_default();
                        if updates.send(Update::Connected { nick }).await.is_err() {
                            return End::Gone;
                        }
                    }
                    if matches!(&msg, Incoming::Reply(r) if r.kind == ReplyKind::Bye) {
                        said_bye = true;
                    }
                    if updates.send(Update::Incoming(msg)).await.is_err() {
                        return End::Gone;
                    }
                }
            },
            text = out.recv(), if *welcomed => match text {
                None => {
                    let _ = writer.shutdown().await;
                    return End::Gone;
                }
                Some(text) => {
                    if let Err(e) = write_line(&mut writer, &text_line(&text)).await {
                        let _ = updates.send(Update::NotSent(text)).await;
                        return End::Failed(ClientError::Lost(e.to_string()));
                    }
                }
            },
        }
    }
}

async fn write_line(writer: &mut WriteHalf<Stream>, line: &str) -> std::io::Result<()> {
    writer.write_all(line.as_bytes()).await?;
    // TLS buffers inside the stream; flush so the line leaves now.
    writer.flush().await
}
