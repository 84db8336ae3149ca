//! The chat over one WebSocket: each text message from the browser is one line of the JSON
//! protocol (`{"sockit":"chat",..}` hello first, then `{"text":..}`), fed to a [`Session`]; each
//! event or reply queued for the client is sent as one text message. The WebSocket twin of
//! [`crate::chat::stream`], with the same limits: message size, rate (the session's), the bounded
//! outbox (`--sendq`, applied once the socket stops taking what is sent, as for a TCP client), the
//! write timeout, the idle timeout, and a goodbye on shutdown.

use crate::chat::wire::ReplyKind;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use bytes::Bytes;
use futures::stream::SplitSink;
use futures::{SinkExt, StreamExt};
use tokio_util::sync::CancellationToken;

use crate::chat::hub::ChatHub;
use crate::chat::outbox::{Outbox, State};
use crate::chat::session::{End, Session};
use crate::chat::wire::Format;
use crate::chat::ChatSettings;
use crate::net::{IdleTimer, PeerAddr};

/// A browser sends its hello as soon as the socket opens; a client that says nothing for this
/// long is put in the default room as a guest, as a plain TCP client would be.
const NEGOTIATE: Duration = Duration::from_secs(2);

/// How long to wait for the browser's answer to our close frame before dropping the connection.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// Close codes the page acts on: it reconnects after 1001 (server stopping) and after 1008/1009,
/// but not after a normal close (the user quit) or an idle timeout.
const CLOSE_NORMAL: u16 = 1000;
const CLOSE_GOING_AWAY: u16 = 1001;
const CLOSE_PROTOCOL: u16 = 1002;
const CLOSE_BAD_DATA: u16 = 1007;
const CLOSE_POLICY: u16 = 1008;
const CLOSE_TOO_BIG: u16 = 1009;
const CLOSE_UNAVAILABLE: u16 = 1011;
const CLOSE_IDLE: u16 = 4000;

/// The connection a session runs on.
pub struct Link {
    pub peer: PeerAddr,
    /// Cancelled when the server stops.
    pub shutdown: CancellationToken,
    /// Cancelled when the connection's handler was cut after the drain time.
    pub gone: CancellationToken,
    pub idle_timeout: Option<Duration>,
}

fn close_frame(code: u16, reason: &str) -> CloseFrame {
    CloseFrame {
        code,
        reason: Utf8Bytes::from(reason),
    }
}

/// Runs one browser's chat session until it quits, drops, idles out, falls behind, or the server
/// stops.
pub async fn run(socket: WebSocket, hub: ChatHub, cfg: Arc<ChatSettings>, link: Link) {
    let (sink, mut stream) = socket.split();
    let (mut s, outbox) = Session::open(hub, cfg.clone(), Format::Json, &link.peer);
    tracing::debug!(peer = %link.peer, nick = s.nick(), "web chat client connected");
    // The close frame the writer ends with, decided by whatever ends the session.
    let close = Arc::new(Mutex::new(None));
    let writer = tokio::spawn(write_loop(sink, outbox.clone(), cfg.clone(), close.clone()));

    let mut idle = IdleTimer::new(link.idle_timeout);
    let ended = outbox.ended().clone();
    let stopped = link.shutdown.cancelled();
    let gone = link.gone.cancelled();
    let kicked = ended.cancelled();
    let negotiate = tokio::time::sleep(NEGOTIATE);
    tokio::pin!(stopped, gone, kicked, negotiate);

    let (end, frame) = loop {
        let text = tokio::select! {
            biased;
            _ = &mut stopped => {
                break (End::Shutdown, close_frame(CLOSE_GOING_AWAY, "server shutting down"))
            }
            _ = &mut gone => {
                break (End::Shutdown, close_frame(CLOSE_GOING_AWAY, "server shutting down"))
            }
            _ = &mut kicked => match outbox.state() {
                State::Overflowed => break (
                    End::Error("could not keep up (send queue full)"),
                    close_frame(CLOSE_POLICY, "send queue full"),
                ),
                _ => break (End::Closed, close_frame(CLOSE_NORMAL, "")),
            },
            _ = &mut negotiate, if !s.in_room() => {
                if s.enter_default().await.is_err() {
                    break hub_gone(&link);
                }
                continue;
            }
            _ = &mut idle => {
                s.error("disconnected: idle for too long");
                break (End::Error("idle timeout"), close_frame(CLOSE_IDLE, "idle timeout"));
            }
            msg = stream.next() => match msg {
                None | Some(Ok(Message::Close(_))) => break (End::Closed, close_frame(CLOSE_NORMAL, "")),
                Some(Err(e)) => match ws_error(e) {
                    WsError::TooBig => {
                        s.error(&format!(
                            "disconnected: a message of more than {} bytes",
                            cfg.flood_cutoff()
                        ));
                        break (End::Error("flooded"), close_frame(CLOSE_TOO_BIG, "message too big"));
                    }
                    WsError::BadUtf8 => {
                        break (End::Error("invalid UTF-8"), close_frame(CLOSE_BAD_DATA, "invalid UTF-8 in a text message"));
                    }
                    WsError::Protocol => {
                        break (End::Error("protocol error"), close_frame(CLOSE_PROTOCOL, "WebSocket protocol error"));
                    }
                    WsError::Gone => break (End::Closed, close_frame(CLOSE_NORMAL, "")),
                },
                Some(Ok(Message::Text(text))) => {
                    idle.touch();
                    if text.len() > cfg.max_line {
                        // As for a long line over TCP: refused, but the client stays.
                        s.error(&format!(
                            "message too long (the limit is {} bytes); it was not sent",
                            cfg.max_line
                        ));
                        continue;
                    }
                    text
                }
                Some(Ok(Message::Binary(_))) => {
                    idle.touch();
                    s.error("send text messages (JSON), not binary ones");
                    continue;
                }
                // tungstenite answers pings itself; neither counts as activity, as an open tab
                // that nobody reads should still time out.
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            },
        };
        match s.handle(text.as_bytes()).await {
            Ok(None) => {}
            Ok(Some(end)) => break (end, close_frame(CLOSE_NORMAL, "goodbye")),
            Err(_) => break hub_gone(&link),
        }
    };

    let nick = s.nick().to_string();
    *close.lock().unwrap_or_else(|p| p.into_inner()) = Some(frame);
    s.close(end).await;
    let _ = writer.await;
    // Read the browser's answering close frame (so it sees a clean close), but not for long.
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        while let Some(Ok(_)) = stream.next().await {}
    })
    .await;
    tracing::debug!(peer = %link.peer, %nick, "web chat client left");
}

/// Whether a read failed because a message passed the size limit.
/// What a failed WebSocket read means for the close code.
enum WsError {
    /// A message past the size limit (1009).
    TooBig,
    /// A text message that is not UTF-8 (1007).
    BadUtf8,
    /// Frames that break the protocol (1002).
    Protocol,
    /// The connection is gone; no close frame can be read.
    Gone,
}

fn ws_error(e: axum::Error) -> WsError {
    match e.into_inner().downcast_ref::<tungstenite::Error>() {
        Some(tungstenite::Error::Capacity(_)) => WsError::TooBig,
        Some(tungstenite::Error::Utf8(_)) => WsError::BadUtf8,
        Some(tungstenite::Error::Protocol(_)) => WsError::Protocol,
        _ => WsError::Gone,
    }
}

/// The end when the hub is gone: the server stopping (1001), or its sequencer dead (1011, which
/// the page retries like a restart) — a browser must not be told a failure is a shutdown.
fn hub_gone(link: &Link) -> (End, CloseFrame) {
    match Session::hub_gone(link.shutdown.is_cancelled()) {
        End::Shutdown => (
            End::Shutdown,
            close_frame(CLOSE_GOING_AWAY, "server shutting down"),
        ),
        end => (
            end,
            close_frame(CLOSE_UNAVAILABLE, "the chat service is unavailable"),
        ),
    }
}

/// One JSON line as one text message (without its newline).
fn message(mut line: Bytes) -> Option<Message> {
    if line.last() == Some(&b'\n') {
        line.truncate(line.len() - 1);
    }
    Utf8Bytes::try_from(line).ok().map(Message::Text)
}

/// Sends whatever the outbox holds, one message per item and one flush per batch, until the
/// session ends or the client falls behind; then the close frame.
async fn write_loop(
    mut sink: SplitSink<WebSocket, Message>,
    outbox: Arc<Outbox>,
    cfg: Arc<ChatSettings>,
    close: Arc<Mutex<Option<CloseFrame>>>,
) {
    let mut items = Vec::new();
    loop {
        let state = outbox.take(&mut items).await;
        if state == State::Overflowed {
            break;
        }
        let batch = std::mem::take(&mut items);
        let ok = {
            let send = async {
                for line in batch.iter().flat_map(|item| item.pieces(Format::Json)) {
                    if let Some(m) = message(line) {
                        sink.feed(m).await?;
                    }
                }
                sink.flush().await
            };
            // As over TCP: the shared stall rules (--sendq from the first write the socket
            // cannot take, --write-timeout for one that takes nothing).
            outbox
                .send_batch(send, cfg.write_timeout, cfg.flush_timeout)
                .await
        };
        if !ok {
            if outbox.state() == State::Overflowed {
                // Stuck behind a client that does not read: the usual way to overflow.
                break;
            }
            outbox.close();
            return;
        }
        if state == State::Closing {
            let frame = close
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
                .unwrap_or_else(|| close_frame(CLOSE_NORMAL, ""));
            let _ = tokio::time::timeout(cfg.flush_timeout, sink.send(Message::Close(Some(frame))))
                .await;
            return;
        }
    }
    // The client fell behind. What it was sent stays whole (a frame is queued in one piece and
    // an interrupted flush resumes), so the reason and a close frame can follow. The socket is
    // full, so they may never arrive; they are tried for as long as a closing client's last
    // output may take (a slow reader gets them, a dead one costs that much time).
    let why = Format::Json.reply(
        ReplyKind::Error,
        &format!(
            "disconnected: you were not reading (more than {} bytes waiting)",
            cfg.sendq
        ),
        None,
    );
    let _ = tokio::time::timeout(cfg.flush_timeout, async {
        if let Some(m) = message(why) {
            sink.feed(m).await?;
        }
        sink.send(Message::Close(Some(close_frame(
            CLOSE_POLICY,
            "send queue full",
        ))))
        .await
    })
    .await;
}
