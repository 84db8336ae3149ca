//! A client's outbound queue for fan-out: chunks of shared bytes, bounded in bytes, that the
//! producer fills without ever waiting (a push that would pass the bound fails, and the producer
//! drops that client), and one reader drains.
//!
//! Made for `listen -k`'s stdin broadcast, where one slow client must not hold the others back;
//! any tool that sends the same bytes to many clients can use it. The chunks are [`Bytes`], so a
//! chunk queued for a thousand clients is stored once: what the queues cost together is about
//! how far the slowest client is behind the fastest, not the number of clients.
//!
//! The producer sees how much is queued and how much the reader has taken so far, which is what
//! it needs to pace itself on the clients that keep up and to spot one that has stopped reading.
//! The reader can wake the producer when its queue drains below a low-water mark.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Why a push failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// The chunk would take the queue past its bound: the reader has fallen too far behind.
    #[error("send queue full")]
    Full,
    /// The reader is gone.
    #[error("send queue reader gone")]
    Closed,
}

#[derive(Debug)]
struct State {
    chunks: VecDeque<Bytes>,
    queued: usize,
    taken: u64,
    /// When the reader last took a chunk (or the queue was made).
    last_take: Instant,
    /// No more chunks will come: the reader ends once it has taken what is queued.
    ended: bool,
    reader_gone: bool,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    readable: Notify,
    limit: usize,
    low_water: usize,
    drained: Option<Arc<Notify>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves plain counters behind, still consistent enough
        // to go on with.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The producer's end of a send queue. Dropping it ends the queue (the reader gets what is left,
/// then `None`).
#[derive(Debug)]
pub struct SendQueue {
    shared: Arc<Shared>,
}

/// The reader's end.
#[derive(Debug)]
pub struct SendQueueReader {
    shared: Arc<Shared>,
}

/// A queue that holds at most `limit` bytes (a single chunk bigger than that is still accepted
/// into an empty queue, so nothing is unsendable). When `drained` is given, the reader notifies it
/// each time its queue goes from `low_water` bytes or more to less.
pub fn send_queue(
    limit: usize,
    low_water: usize,
    drained: Option<Arc<Notify>>,
) -> (SendQueue, SendQueueReader) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            chunks: VecDeque::new(),
            queued: 0,
            taken: 0,
            last_take: Instant::now(),
            ended: false,
            reader_gone: false,
        }),
        readable: Notify::new(),
        limit,
        low_water,
        drained,
    });
    (
        SendQueue {
            shared: shared.clone(),
        },
        SendQueueReader { shared },
    )
}

impl SendQueue {
    /// Queues `chunk` without waiting.
    pub fn push(&self, chunk: Bytes) -> Result<(), PushError> {
        let mut st = self.shared.lock();
        if st.reader_gone {
            return Err(PushError::Closed);
        }
        if st.queued > 0 && st.queued + chunk.len() > self.shared.limit {
            return Err(PushError::Full);
        }
        st.queued += chunk.len();
        st.chunks.push_back(chunk);
        drop(st);
        self.shared.readable.notify_one();
        Ok(())
    }

    /// No more chunks: the reader ends once it has taken what is queued.
    pub fn end(&self) {
        self.shared.lock().ended = true;
        self.shared.readable.notify_one();
    }

    /// Bytes queued now.
    pub fn queued(&self) -> usize {
        self.shared.lock().queued
    }

    /// Bytes the reader has taken since the queue was made: it has made progress when this moved.
    pub fn taken(&self) -> u64 {
        self.shared.lock().taken
    }

    /// When the reader last took a chunk (the queue's creation if it never has).
    pub fn last_take(&self) -> Instant {
        self.shared.lock().last_take
    }

    /// Whether the queue holds less than its low-water mark (the reader is keeping up).
    pub fn is_below_low_water(&self) -> bool {
        self.shared.lock().queued < self.shared.low_water
    }

    /// Whether the reader is gone.
    pub fn is_closed(&self) -> bool {
        self.shared.lock().reader_gone
    }
}

impl Drop for SendQueue {
    fn drop(&mut self) {
        self.end();
    }
}

impl SendQueueReader {
    /// The next chunk; `None` once the queue has ended and is empty.
    pub async fn recv(&mut self) -> Option<Bytes> {
        loop {
            // Registered before looking, so a push in between is not missed.
            let readable = self.shared.readable.notified();
            {
                let mut st = self.shared.lock();
                if let Some(chunk) = st.chunks.pop_front() {
                    let before = st.queued;
                    st.queued -= chunk.len();
                    st.taken += chunk.len() as u64;
                    st.last_take = Instant::now();
                    let crossed =
                        before >= self.shared.low_water && st.queued < self.shared.low_water;
                    drop(st);
                    if let (true, Some(n)) = (crossed, &self.shared.drained) {
                        n.notify_one();
                    }
                    return Some(chunk);
                }
                if st.ended {
                    return None;
                }
            }
            readable.await;
        }
    }

    /// Whether nothing is queued now.
    pub fn is_empty(&self) -> bool {
        self.shared.lock().chunks.is_empty()
    }
}

impl Drop for SendQueueReader {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.reader_gone = true;
        st.chunks.clear();
        st.queued = 0;
        drop(st);
        if let Some(n) = &self.shared.drained {
            n.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bounded_in_bytes_and_ends_after_draining() {
        let drained = Arc::new(Notify::new());
        let (q, mut r) = send_queue(10, 5, Some(drained.clone()));
        q.push(Bytes::from_static(b"0123456")).unwrap();
        assert_eq!(q.push(Bytes::from_static(b"7890")), Err(PushError::Full));
        q.push(Bytes::from_static(b"789")).unwrap();
        assert_eq!(q.queued(), 10);
        assert!(!q.is_below_low_water());
        assert_eq!(&r.recv().await.unwrap()[..], b"0123456");
        // 10 -> 3 crossed the low-water mark: the producer was told.
        tokio::time::timeout(std::time::Duration::from_secs(1), drained.notified())
            .await
            .unwrap();
        assert!(q.is_below_low_water());
        assert_eq!(q.taken(), 7);
        q.end();
        assert_eq!(&r.recv().await.unwrap()[..], b"789");
        assert_eq!(r.recv().await, None);
    }

    #[tokio::test]
    async fn a_big_chunk_fits_an_empty_queue_and_a_gone_reader_refuses() {
        let (q, r) = send_queue(4, 1, None);
        q.push(Bytes::from_static(b"much more than four")).unwrap();
        assert_eq!(q.push(Bytes::from_static(b"x")), Err(PushError::Full));
        drop(r);
        assert!(q.is_closed());
        assert_eq!(q.push(Bytes::from_static(b"x")), Err(PushError::Closed));
    }
}
