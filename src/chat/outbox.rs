//! A client's outbound queue: bounded in bytes, never blocking the hub.
//!
//! The hub pushes and moves on. The client's writer task takes everything queued and sends it in
//! one write. A client that stops reading fills its socket, its writer stalls, and its queue fills;
//! the push that would pass the limit marks the queue overflowed, and the writer tells the client
//! why and disconnects it (Ergo's "SendQ exceeded", ngIRCd's "write buffer space exhausted").
//!
//! The limit counts only while the writer is stalled on a full socket. A burst delivered to
//! everyone at once (one sequencer batch) can pass it before a writer has had a chance to run;
//! that is the server's delay, not the client's, and must not disconnect a whole room of readers.
//! A looser cap ([`UNSTALLED_FACTOR`] times the limit) still bounds the queue in that case.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::event::{Batch, Event};
use super::wire::Format;

/// How many times the limit a queue may hold while its writer is not stalled on the socket.
pub const UNSTALLED_FACTOR: usize = 16;

/// One queued item.
#[derive(Debug, Clone)]
pub enum OutItem {
    /// A shared event, rendered in the client's format by the writer.
    Event(Arc<Event>),
    /// Shared consecutive events of one room (what a busy room's members get).
    Batch(Arc<Batch>),
    /// Bytes already rendered for this client (replies to its commands).
    Raw(Bytes),
}

impl OutItem {
    /// Bytes the item puts on the wire for a client speaking `format`: JSON adds field names, GBK
    /// writes what it cannot encode as `&#NNNN;`, so the UTF-8 text length is not it. Renders the
    /// item if no one has yet (once per event and format; the writer would do it anyway).
    fn weight(&self, format: Format) -> usize {
        match self {
            OutItem::Event(e) => e.render(format).len(),
            OutItem::Batch(b) => b.render(format).len(),
            OutItem::Raw(b) => b.len(),
        }
    }

    /// The item's bytes in `format`, shared rather than copied (for byte streams).
    pub fn bytes(&self, format: Format) -> Bytes {
        match self {
            OutItem::Event(e) => e.render(format).clone(),
            OutItem::Batch(b) => b.render(format).clone(),
            OutItem::Raw(b) => b.clone(),
        }
    }

    /// The item's bytes in `format`, one piece per event (for transports that frame each event
    /// on its own, like WebSocket).
    pub fn pieces(&self, format: Format) -> Vec<Bytes> {
        match self {
            OutItem::Batch(b) => b
                .events()
                .iter()
                .map(|e| e.render(format).clone())
                .collect(),
            _ => vec![self.bytes(format)],
        }
    }
}

/// Where the queue stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Open,
    /// The session ended; the writer sends what is queued and closes.
    Closing,
    /// The client fell too far behind; the writer says so and closes.
    Overflowed,
}

#[derive(Debug)]
struct Queue {
    items: VecDeque<OutItem>,
    bytes: usize,
    state: State,
    /// The writer is waiting for the socket to take a write: the client is not keeping up.
    stalled: bool,
}

/// A client's bounded outbound queue.
#[derive(Debug)]
pub struct Outbox {
    queue: Mutex<Queue>,
    notify: Notify,
    limit: usize,
    format: AtomicU8,
    ended: CancellationToken,
}

impl Outbox {
    pub fn new(limit: usize, format: Format) -> Self {
        Outbox {
            queue: Mutex::new(Queue {
                items: VecDeque::new(),
                bytes: 0,
                state: State::Open,
                stalled: false,
            }),
            notify: Notify::new(),
            limit,
            format: AtomicU8::new(format.index() as u8),
            ended: CancellationToken::new(),
        }
    }

    /// The format this client speaks.
    pub fn format(&self) -> Format {
        Format::from_index(self.format.load(Ordering::Relaxed))
    }

    pub fn set_format(&self, format: Format) {
        self.format.store(format.index() as u8, Ordering::Relaxed);
    }

    /// Queues `item` without waiting. Returns false when the queue is closed or this push overflowed
    /// it (the client is then disconnected by its writer).
    pub fn push(&self, item: OutItem) -> bool {
        self.push_all(std::iter::once(item))
    }

    /// Queues several items under one lock and with at most one wake-up of the writer, taken by
    /// the writer as one unit: the hub delivers a whole sequenced batch to each member this way,
    /// and a joiner's welcome, replay and join notice arrive in one `recv` (which the tutorials'
    /// one-recv-per-send clients need).
    pub fn push_all(&self, items: impl IntoIterator<Item = OutItem>) -> bool {
        let format = self.format();
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        if q.state != State::Open {
            return false;
        }
        let was_empty = q.items.is_empty();
        for item in items {
            let weight = item.weight(format);
            let after = q.bytes + weight;
            if after > self.limit
                && (q.stalled || after > self.limit.saturating_mul(UNSTALLED_FACTOR))
            {
                drop(q);
                self.overflow();
                return false;
            }
            q.bytes += weight;
            q.items.push_back(item);
        }
        let wake = was_empty && !q.items.is_empty();
        drop(q);
        // The writer drains everything on each wake-up, so one notification per batch is enough.
        if wake {
            self.notify.notify_one();
        }
        true
    }

    /// Sends one batch with `write`, under the rules every transport's writer shares: a batch the
    /// socket takes at once is the usual case; one it cannot take means the client is not keeping
    /// up, and only from then on does the `--sendq` limit apply (the queue is marked stalled),
    /// with `write_timeout` for a socket that takes nothing at all (the client is then dropped as
    /// overflowed). When the session ends meanwhile, the batch gets `flush_timeout` to finish.
    /// Returns whether the batch was sent.
    pub async fn send_batch<F, E>(
        &self,
        write: F,
        write_timeout: std::time::Duration,
        flush_timeout: std::time::Duration,
    ) -> bool
    where
        F: std::future::Future<Output = Result<(), E>>,
    {
        tokio::pin!(write);
        if let std::task::Poll::Ready(r) = futures::poll!(write.as_mut()) {
            return r.is_ok();
        }
        self.set_stalled(true);
        let ended = self.ended().clone();
        let ok = tokio::select! {
            r = &mut write => r.is_ok(),
            _ = tokio::time::sleep(write_timeout) => {
                // Nothing was taken for the whole time: the buffer it holds (up to the looser
                // cap) must not stay forever.
                self.overflow();
                false
            }
            _ = ended.cancelled() => {
                if self.state() == State::Overflowed {
                    false
                } else {
                    // Closing: finish this batch, but not forever.
                    let last = tokio::time::timeout(flush_timeout, write);
                    matches!(last.await, Ok(Ok(())))
                }
            }
        };
        self.set_stalled(false);
        ok
    }

    /// Records whether the writer is waiting on a full socket (only then does the limit apply).
    pub fn set_stalled(&self, stalled: bool) {
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).stalled = stalled;
    }

    /// Gives up on the client: its queue is dropped and its writer tells it why and closes. Used
    /// when a push passes the limit, and when its socket has taken nothing for too long.
    pub fn overflow(&self) {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        if q.state == State::Open {
            q.state = State::Overflowed;
            q.items = VecDeque::new();
            q.bytes = 0;
        }
        drop(q);
        self.notify.notify_one();
        self.ended.cancel();
    }

    /// Asks the writer to send what is queued and close.
    pub fn close(&self) {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        if q.state == State::Open {
            q.state = State::Closing;
        }
        drop(q);
        self.notify.notify_one();
        self.ended.cancel();
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).state
    }

    /// Waits until something is queued or the state changes, then moves everything queued into
    /// `out` and returns the state.
    pub async fn take(&self, out: &mut Vec<OutItem>) -> State {
        loop {
            {
                let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
                if !q.items.is_empty() || q.state != State::Open {
                    out.extend(q.items.drain(..));
                    q.bytes = 0;
                    // Give back the memory of a burst once it is taken, so idle clients stay small.
                    if q.items.capacity() > 8 {
                        q.items = VecDeque::new();
                    }
                    return q.state;
                }
            }
            self.notify.notified().await;
        }
    }

    /// Cancelled once the queue has overflowed or closed, for the reader to stop reading.
    pub fn ended(&self) -> &CancellationToken {
        &self.ended
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(n: usize) -> OutItem {
        OutItem::Raw(Bytes::from(vec![b'x'; n]))
    }

    #[test]
    fn limit_applies_only_while_the_writer_is_stalled() {
        let q = Outbox::new(100, Format::Utf8);
        // A burst past the limit before the writer ran: kept, up to the looser cap.
        assert!(q.push_all((0..5).map(|_| raw(60))));
        assert_eq!(q.state(), State::Open);
        assert!(!q.push(raw(100 * UNSTALLED_FACTOR)));
        assert_eq!(q.state(), State::Overflowed);

        let q = Outbox::new(100, Format::Utf8);
        q.set_stalled(true);
        assert!(q.push(raw(60)));
        assert!(!q.push(raw(60)));
        assert_eq!(q.state(), State::Overflowed);
    }

    #[test]
    fn the_limit_counts_the_bytes_of_the_clients_own_encoding() {
        use crate::chat::event::Kind;
        // 20 emoji: 80 bytes of UTF-8, but GBK has no emoji and writes each as `&#128512;`.
        let text = "\u{1F600}".repeat(20);
        let event = || {
            OutItem::Event(Arc::new(Event::new(
                Kind::Message,
                Some("lobby".into()),
                "ann".into(),
                text.as_str(),
            )))
        };
        let utf8 = Outbox::new(150, Format::Utf8);
        utf8.set_stalled(true);
        assert!(utf8.push(event()));
        let gbk = Outbox::new(150, Format::Gbk);
        gbk.set_stalled(true);
        assert!(
            !gbk.push(event()),
            "a GBK client's queue held more than its limit"
        );
        assert_eq!(gbk.state(), State::Overflowed);
    }

    #[tokio::test]
    async fn a_batch_is_one_entry_rendered_once_and_split_for_framed_transports() {
        use crate::chat::event::Kind;
        let say = |t: &str| {
            Arc::new(Event::new(
                Kind::Message,
                Some("lobby".into()),
                "ann".into(),
                t,
            ))
        };
        let batch = Arc::new(Batch::new(vec![say("one"), say("two")]));
        let item = OutItem::Batch(batch.clone());
        let whole = item.bytes(Format::Utf8);
        // Every member shares the one rendering.
        assert_eq!(whole.as_ptr(), batch.render(Format::Utf8).as_ptr());
        let text = String::from_utf8_lossy(&whole);
        assert!(
            text.contains("<ann> one\r\n") && text.contains("<ann> two\r\n"),
            "{text}"
        );
        let pieces = item.pieces(Format::Json);
        assert_eq!(pieces.len(), 2);
        assert!(pieces[1].starts_with(b"{") && pieces[1].ends_with(b"\n"));

        let q = Outbox::new(1000, Format::Utf8);
        assert!(q.push(item));
        let mut out = Vec::new();
        q.take(&mut out).await;
        assert_eq!(out.len(), 1);
    }

    #[tokio::test]
    async fn push_all_is_taken_in_one_piece() {
        let q = Outbox::new(1000, Format::Utf8);
        assert!(q.push_all([raw(1), raw(2), raw(3)]));
        let mut out = Vec::new();
        assert_eq!(q.take(&mut out).await, State::Open);
        assert_eq!(out.len(), 3);
    }
}
