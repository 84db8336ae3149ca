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
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use tokio_util::sync::CancellationToken;

use crate::chat::driver::{self, Input, Transport};
use crate::chat::hub::ChatHub;
use crate::chat::outbox::{Outbox, State};
use crate::chat::session::End;
use crate::chat::wire::Format;
use crate::chat::ChatSettings;
use crate::net::PeerAddr;

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
    let (sink, stream) = socket.split();
    // The close frame the writer ends with, decided by whatever ends the session.
    let close = Arc::new(Mutex::new(None));
    let messages = Messages {
        stream,
        close: close.clone(),
        cfg: cfg.clone(),
    };
    let link = driver::Link {
        peer: link.peer,
        shutdown: link.shutdown,
        gone: link.gone,
        idle_timeout: link.idle_timeout,
        negotiate: NEGOTIATE,
        format: Format::Json,
    };
    let write_cfg = cfg.clone();
    driver::run(hub, cfg, link, messages, move |outbox| {
        write_loop(sink, outbox, write_cfg, close)
    })
    .await;
}

/// WebSocket framing: each text message is one line of the JSON protocol.
struct Messages {
    stream: SplitStream<WebSocket>,
    close: Arc<Mutex<Option<CloseFrame>>>,
    cfg: Arc<ChatSettings>,
}

/// Input that ends the session, told nothing.
fn over(end: End) -> Input {
    Input::End { end, tell: None }
}

impl Transport for Messages {
    async fn next(&mut self) -> Input {
        match self.stream.next().await {
            None | Some(Ok(Message::Close(_))) => over(End::Closed),
            Some(Err(e)) => match ws_error(e) {
                WsError::TooBig => Input::End {
                    end: End::Flooded,
                    tell: Some(format!(
                        "disconnected: a message of more than {} bytes",
                        self.cfg.flood_cutoff()
                    )),
                },
                WsError::BadUtf8 => over(End::BadUtf8),
                WsError::Protocol => over(End::Protocol),
                WsError::Gone => over(End::Closed),
            },
            // As for a long line over TCP: refused, but the client stays.
            Some(Ok(Message::Text(text))) if text.len() > self.cfg.max_line => {
                Input::Refused(format!(
                    "message too long (the limit is {} bytes); it was not sent",
                    self.cfg.max_line
                ))
            }
            Some(Ok(Message::Text(text))) => Input::Line(Bytes::from(text)),
            Some(Ok(Message::Binary(_))) => {
                Input::Refused("send text messages (JSON), not binary ones".into())
            }
            // tungstenite answers pings itself; neither counts as activity, as an open tab that
            // nobody reads should still time out.
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => Input::Nothing,
        }
    }

    fn ending(&mut self, end: &End) {
        *self.close.lock().unwrap_or_else(|p| p.into_inner()) = Some(close_for(end));
    }

    async fn finish(mut self) {
        // Read the browser's answering close frame (so it sees a clean close), but not for long.
        let _ = tokio::time::timeout(CLOSE_WAIT, async {
            while let Some(Ok(_)) = self.stream.next().await {}
        })
        .await;
    }
}

/// The close frame for each way a session ends. The page reconnects after 1001 (server stopping),
/// 1011 (the service failed, retried like a restart) and 1008/1009, but not after a normal close
/// (the user quit) or an idle timeout.
fn close_for(end: &End) -> CloseFrame {
    match end {
        End::Quit(_) => close_frame(CLOSE_NORMAL, "goodbye"),
        End::Closed => close_frame(CLOSE_NORMAL, ""),
        End::Shutdown => close_frame(CLOSE_GOING_AWAY, "server shutting down"),
        End::Idle => close_frame(CLOSE_IDLE, "idle timeout"),
        End::Overflowed => close_frame(CLOSE_POLICY, "send queue full"),
        End::Flooded => close_frame(CLOSE_TOO_BIG, "message too big"),
        End::BadUtf8 => close_frame(CLOSE_BAD_DATA, "invalid UTF-8 in a text message"),
        End::Protocol => close_frame(CLOSE_PROTOCOL, "WebSocket protocol error"),
        End::Unavailable => close_frame(CLOSE_UNAVAILABLE, "the chat service is unavailable"),
    }
}

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
