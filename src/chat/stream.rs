//! The line protocol over a byte stream (TCP, TLS, Unix): splitting input into bounded lines, the
//! pause rule for unterminated input, and the writer task that sends a client's outbox.
//!
//! Data path: socket → [`LineDecoder`] (bounded; telnet answered and stripped) → [`Session`] (rate limit, command or message) →
//! hub/sequencer; and hub → [`Outbox`] (bounded) → writer task → socket, all that is queued sent in
//! one write.

use crate::chat::wire::ReplyKind;
use std::io::IoSlice;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures::StreamExt;
use std::pin::Pin;
use tokio::io::{AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::time::Sleep;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

use super::driver::{self, Input, Link, Transport};
use super::hub::ChatHub;
use super::line::{Input as Decoded, LineDecoder, LineError};
use super::outbox::{Outbox, State};
use super::session::End;
use super::wire::Format;
use super::ChatSettings;
use crate::net::{Conn, Stream};

/// How long a new client has to send a JSON hello before it is treated as a plain client and put
/// in the default room.
const NEGOTIATE: Duration = Duration::from_millis(150);

/// Read buffer of a new connection. It grows up to the line limit for long lines; idle clients
/// keep only this much.
const READ_BUF: usize = 256;

/// Most buffers handed to one `writev` (Linux takes up to 1024; a few dozen cover a burst, and a
/// longer queue is copied into one buffer first).
const MAX_IOVECS: usize = 64;

/// Writes every chunk, in order, with as few system calls as the socket allows. Chunks fully
/// written are dropped from `chunks` as it goes; on return with `Ok` it is empty.
// By hand because tokio has `write_all_buf` for one buffer and `write_vectored` for one call, but no
// "write all of these buffers" loop.
async fn write_all_chunks<W: AsyncWrite + Unpin>(
    writer: &mut W,
    chunks: &mut Vec<Bytes>,
) -> std::io::Result<()> {
    let mut first = 0;
    while first < chunks.len() {
        if chunks[first].is_empty() {
            first += 1;
            continue;
        }
        let mut n = if chunks.len() - first == 1 {
            writer.write(&chunks[first]).await?
        } else {
            // On the heap, not in the future: an array here would make every connection's writer
            // task a kilobyte bigger for as long as it lives.
            let slices: Vec<IoSlice<'_>> = chunks[first..]
                .iter()
                .take(MAX_IOVECS)
                .map(|c| IoSlice::new(c))
                .collect();
            writer.write_vectored(&slices).await?
        };
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while n > 0 {
            let c = &mut chunks[first];
            if n >= c.len() {
                n -= c.len();
                first += 1;
            } else {
                c.advance(n);
                n = 0;
            }
        }
    }
    chunks.clear();
    Ok(())
}

/// Serves one connection until it quits, drops, idles out, falls behind, or the server stops.
pub async fn run(conn: Conn, hub: ChatHub, cfg: Arc<ChatSettings>) {
    let Conn {
        stream,
        peer,
        shutdown,
        idle_timeout,
    } = conn;
    let (reader, writer) = tokio::io::split(stream);
    let mut decoder = LineDecoder::new(cfg.max_line, cfg.flood_cutoff());
    decoder.set_format(cfg.format);
    let lines = Lines {
        lines: FramedRead::with_capacity(reader, decoder, READ_BUF),
        pause: Box::pin(tokio::time::sleep(Duration::ZERO)),
        pause_armed: false,
        cfg: cfg.clone(),
    };
    let link = Link {
        peer,
        shutdown,
        // A TCP connection's task is dropped when the drain ends; nothing else cuts it.
        gone: CancellationToken::new(),
        idle_timeout,
        negotiate: NEGOTIATE,
        format: cfg.format,
    };
    let write_cfg = cfg.clone();
    driver::run(hub, cfg, link, lines, move |outbox| {
        write_loop(writer, outbox, write_cfg)
    })
    .await;
}

/// The line protocol's framing: bounded lines from the socket, telnet's answers, and the pause
/// rule for the tutorial clients that never send a newline.
struct Lines {
    lines: FramedRead<ReadHalf<Stream>, LineDecoder>,
    /// When unterminated input becomes a line (`--line-pause` after it stopped arriving).
    pause: Pin<Box<Sleep>>,
    pause_armed: bool,
    cfg: Arc<ChatSettings>,
}

impl Lines {
    fn too_long(&self) -> Input {
        Input::Refused(format!(
            "line too long (the limit is {} bytes); it was not sent",
            self.cfg.max_line
        ))
    }

    /// The unterminated input, taken as a line once the pause has passed.
    fn paused(&mut self) -> Input {
        self.pause_armed = false;
        let mut buf = std::mem::take(self.lines.read_buffer_mut());
        let partial = self.lines.decoder_mut().take_partial(&mut buf);
        *self.lines.read_buffer_mut() = buf;
        match partial {
            Some(Decoded::Line(line)) => Input::Line(line.into()),
            Some(Decoded::TooLong) => self.too_long(),
            _ => Input::Nothing,
        }
    }
}

impl Transport for Lines {
    async fn next(&mut self) -> Input {
        let input = tokio::select! {
            biased;
            _ = &mut self.pause, if self.pause_armed => return self.paused(),
            input = self.lines.next() => input,
        };
        match input {
            None => Input::End {
                end: End::Closed,
                tell: None,
            },
            Some(Err(LineError::Flood)) => Input::End {
                end: End::Flooded,
                tell: Some(format!(
                    "disconnected: more than {} bytes without a newline",
                    self.cfg.flood_cutoff()
                )),
            },
            Some(Err(LineError::Io(e))) => {
                tracing::debug!(error = %e, "read failed");
                Input::End {
                    end: End::Closed,
                    tell: None,
                }
            }
            Some(Ok(Decoded::TooLong)) => {
                self.pause_armed = false;
                self.too_long()
            }
            Some(Ok(Decoded::Answer(telnet))) => Input::Answer(telnet),
            Some(Ok(Decoded::Partial)) => {
                let at = tokio::time::Instant::now() + self.cfg.line_pause;
                self.pause.as_mut().reset(at);
                self.pause_armed = true;
                Input::Activity
            }
            Some(Ok(Decoded::Line(line))) => {
                self.pause_armed = false;
                Input::Line(line.into())
            }
        }
    }

    fn handled(&mut self, format: Format) {
        // The first line may have switched the client to JSON, where DEL is text.
        self.lines.decoder_mut().set_format(format);
    }
}

/// Sends whatever the outbox holds, all of it in one (vectored) write, until the session ends or
/// the client falls behind.
async fn write_loop(mut writer: WriteHalf<Stream>, outbox: Arc<Outbox>, cfg: Arc<ChatSettings>) {
    let mut items = Vec::new();
    let mut chunks: Vec<Bytes> = Vec::new();
    loop {
        let state = outbox.take(&mut items).await;
        if state == State::Overflowed {
            break;
        }
        let format = outbox.format();
        // Shared bytes, not copies: a room's batch is rendered once for every member.
        chunks.extend(items.drain(..).map(|item| item.bytes(format)));
        chunks.retain(|c| !c.is_empty());
        if chunks.len() > MAX_IOVECS {
            // More pieces than one writev takes (a joiner's long replay): copied into one buffer
            // so that what was queued together still leaves in one write.
            let mut one = BytesMut::with_capacity(chunks.iter().map(Bytes::len).sum());
            for c in chunks.drain(..) {
                one.extend_from_slice(&c);
            }
            chunks.push(one.freeze());
        }
        if items.capacity() > 16 {
            items = Vec::new();
        }
        if !chunks.is_empty() {
            let write = write_all_chunks(&mut writer, &mut chunks);
            let ok = outbox
                .send_batch(write, cfg.write_timeout, cfg.flush_timeout)
                .await;
            if !ok {
                outbox.close();
                break;
            }
            // Keep no buffer between bursts: thousands of idle clients would each hold the
            // largest burst they ever received.
            chunks = Vec::new();
        }
        if state == State::Closing {
            break;
        }
    }
    if outbox.state() == State::Overflowed {
        // The socket is full, so this may never arrive; it is tried without waiting long. It
        // starts on a new line, as a write given up half-way may have left one unfinished.
        let mut msg = BytesMut::from(&b"\r\n"[..]);
        msg.extend_from_slice(&outbox.format().reply(
            ReplyKind::Error,
            &format!(
                "disconnected: you were not reading (more than {} bytes waiting)",
                cfg.sendq
            ),
            None,
        ));
        let _ = tokio::time::timeout(Duration::from_millis(100), writer.write_all(&msg)).await;
    }
    let _ = tokio::time::timeout(cfg.flush_timeout, writer.shutdown()).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn every_chunk_arrives_whole_and_in_order_through_partial_writes() {
        // A pipe that takes at most 7 bytes at a time forces writes to stop mid-chunk.
        let (mut near, mut far) = tokio::io::duplex(7);
        let mut chunks: Vec<Bytes> = (0..100)
            .map(|i| {
                Bytes::from(if i % 10 == 0 {
                    String::new()
                } else {
                    format!("line {i}\n")
                })
            })
            .collect();
        let want: Vec<u8> = chunks.iter().flat_map(|c| c.to_vec()).collect();
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            far.read_to_end(&mut got).await.map(|_| got)
        });
        write_all_chunks(&mut near, &mut chunks).await.unwrap();
        assert!(chunks.is_empty());
        drop(near);
        assert_eq!(reader.await.unwrap().unwrap(), want);
    }
}
