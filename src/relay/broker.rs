//! `listen -k` without a command: stdin is broadcast to every connected client.
//!
//! Each client has its own send queue ([`net::SendQueue`](crate::net::SendQueue)), bounded in
//! bytes (`--sendq`, [`DEFAULT_SENDQ`]); a chunk of stdin is pushed to every queue without waiting
//! on any. Stdin is read at the pace of the clients that keep up: a chunk is read once at least one
//! client's queue is below a low-water mark. So one client that does not read never slows the
//! others: its queue fills while theirs drain, and once it is full it is disconnected — at once if
//! it has taken nothing for [`PROGRESS_WINDOW`], else as soon as it goes that long without taking
//! anything. A client that is full but still reading (slower than the others, or briefly starved
//! of CPU) is waited for, so a piped file reaches every reader whole; a non-reader costs the
//! others at most that window, once. A client that has data waiting and takes none of it for the
//! stall limit (`--stall-timeout`,
//! [`DEFAULT_STALL_LIMIT`]) is disconnected too — which is what ends a lone client that stopped
//! reading, or one still holding the end of a stream after stdin ended. The chunks are shared, so
//! the queues together hold about one `--sendq` however many clients there are. The accept loop
//! and the other clients' reads never wait on a slow client (ncat's broadcast blocks all of them).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::net::{send_queue, PushError, SendQueue, SendQueueReader};

/// How long one client may keep data waiting without taking any before it is disconnected, by
/// default.
pub const DEFAULT_STALL_LIMIT: Duration = Duration::from_secs(10);

/// A client whose queue is full is disconnected once it has taken nothing for this long (or the
/// stall limit, if shorter); until then the broadcast waits for it.
pub const PROGRESS_WINDOW: Duration = Duration::from_millis(250);

/// How far (in bytes queued) one client may fall behind before it is disconnected, by default.
/// With 64 KiB stdin chunks that is 256 of them; on top of it the socket buffers hold a few MiB.
pub const DEFAULT_SENDQ: usize = 16 * 1024 * 1024;

struct Client {
    queue: SendQueue,
    kick: CancellationToken,
    peer: String,
    /// Progress as last seen by the stall check, and since when it has not moved.
    taken: u64,
    since: Instant,
}

#[derive(Default)]
struct State {
    clients: HashMap<u64, Client>,
    /// Stdin has ended: new clients get an empty input (and so a half-close).
    input_ended: bool,
}

/// The clients stdin is broadcast to.
pub(crate) struct Broker {
    state: Mutex<State>,
    /// A client joined, left, or drained below the low-water mark: worth looking again.
    progress: Arc<Notify>,
    next_id: AtomicU64,
    stall_limit: Duration,
    sendq: usize,
}

/// A client's membership; leaves the broker when dropped.
pub(crate) struct Member {
    broker: Arc<Broker>,
    id: u64,
}

impl Drop for Member {
    fn drop(&mut self) {
        if let Ok(mut state) = self.broker.state.lock() {
            state.clients.remove(&self.id);
        }
        self.broker.progress.notify_one();
    }
}

impl Broker {
    /// A broker that disconnects a client more than `sendq` bytes behind, or one that takes
    /// nothing of what waits for it for `stall_limit`.
    pub(crate) fn new(stall_limit: Duration, sendq: usize) -> Self {
        Broker {
            state: Mutex::default(),
            progress: Arc::new(Notify::new()),
            next_id: AtomicU64::new(0),
            stall_limit,
            sendq: sendq.max(1),
        }
    }

    /// Stdin is read while some client's queue holds less than this.
    fn low_water(&self) -> usize {
        (self.sendq / 16).clamp(1, 1024 * 1024)
    }

    /// Adds a client, returning its share of stdin. `kick` is cancelled if the client falls too
    /// far behind.
    pub(crate) fn join(
        self: &Arc<Self>,
        peer: String,
        kick: CancellationToken,
    ) -> (SendQueueReader, Member) {
        let (queue, input) = send_queue(self.sendq, self.low_water(), Some(self.progress.clone()));
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut state) = self.state.lock() {
            if !state.input_ended {
                state.clients.insert(
                    id,
                    Client {
                        queue,
                        kick,
                        peer,
                        taken: 0,
                        since: Instant::now(),
                    },
                );
            }
            // Otherwise `queue` is dropped here, which ends the input at once.
        }
        self.progress.notify_one();
        let member = Member {
            broker: self.clone(),
            id,
        };
        (input, member)
    }

    /// Reads `stdin` while at least one client keeps up, and pushes each chunk to every client.
    /// At the end of stdin every client's input ends once it has taken what is queued for it.
    pub(crate) async fn run(self: Arc<Self>, mut stdin: mpsc::Receiver<Bytes>) {
        let period =
            (self.stall_limit / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stdin_open = true;
        // The last chunk, still to be pushed to these full-but-reading clients.
        let mut pending: Option<(Bytes, Vec<u64>)> = None;
        loop {
            if let Some((chunk, ids)) = &mut pending {
                self.retry(chunk, ids);
                if ids.is_empty() {
                    pending = None;
                }
            }
            // Read stdin only when someone is there to get it (what is piped in before the first
            // client connects goes to that client rather than nowhere) and keeps up.
            let (ready, empty) = self.look();
            if !stdin_open && empty {
                break;
            }
            let waiting = pending.is_some();
            tokio::select! {
                // Cancel-safe: a chunk is never lost by a wake-up of another branch.
                chunk = stdin.recv(), if stdin_open && ready && !waiting => match chunk {
                    Some(chunk) => {
                        let full = self.offer(&chunk);
                        if !full.is_empty() {
                            pending = Some((chunk, full));
                        }
                    }
                    None => {
                        stdin_open = false;
                        self.end_input();
                    }
                },
                _ = self.progress.notified() => {}
                _ = tokio::time::sleep(self.window() / 5), if waiting => {}
                _ = tick.tick() => self.kick_stalled(),
            }
        }
        tracing::debug!("broadcast over");
    }

    /// (some client is below its low-water mark, no clients at all)
    fn look(&self) -> (bool, bool) {
        match self.state.lock() {
            Ok(state) => (
                state.clients.values().any(|c| c.queue.is_below_low_water()),
                state.clients.is_empty(),
            ),
            Err(_) => (false, true),
        }
    }

    fn window(&self) -> Duration {
        PROGRESS_WINDOW.min(self.stall_limit)
    }

    /// Pushes `chunk` to every client; returns the full ones that are still reading (to wait
    /// for), having disconnected the full ones that are not.
    fn offer(&self, chunk: &Bytes) -> Vec<u64> {
        let mut full = Vec::new();
        let Ok(mut state) = self.state.lock() else {
            return full;
        };
        let (sendq, window) = (self.sendq, self.window());
        state.clients.retain(|id, c| match c.queue.push(chunk.clone()) {
            Ok(()) => true,
            Err(PushError::Full) if c.queue.last_take().elapsed() < window => {
                full.push(*id);
                true
            }
            Err(PushError::Full) => {
                tracing::warn!(peer = %c.peer, sendq, "client fell too far behind (--sendq) and is not reading; disconnected");
                c.kick.cancel();
                false
            }
            Err(PushError::Closed) => false,
        });
        full
    }

    /// Pushes `chunk` again to the clients in `ids`, keeping in `ids` those still full and
    /// reading.
    fn retry(&self, chunk: &Bytes, ids: &mut Vec<u64>) {
        let Ok(mut state) = self.state.lock() else {
            ids.clear();
            return;
        };
        let (sendq, window) = (self.sendq, self.window());
        ids.retain(|id| {
            let Some(c) = state.clients.get(id) else {
                return false;
            };
            match c.queue.push(chunk.clone()) {
                Ok(()) => false,
                Err(PushError::Full) if c.queue.last_take().elapsed() < window => true,
                Err(PushError::Full) => {
                    tracing::warn!(peer = %c.peer, sendq, "client fell too far behind (--sendq) and is not reading; disconnected");
                    c.kick.cancel();
                    state.clients.remove(id);
                    false
                }
                Err(PushError::Closed) => {
                    state.clients.remove(id);
                    false
                }
            }
        });
    }

    fn kick_stalled(&self) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let now = Instant::now();
        let limit = self.stall_limit;
        state.clients.retain(|_, c| {
            let taken = c.queue.taken();
            if taken != c.taken || c.queue.queued() == 0 {
                c.taken = taken;
                c.since = now;
                return !c.queue.is_closed();
            }
            if now.duration_since(c.since) >= limit {
                tracing::warn!(peer = %c.peer, ?limit, "client is not reading; disconnected");
                c.kick.cancel();
                return false;
            }
            true
        });
    }

    fn end_input(&self) {
        tracing::debug!("stdin ended; half-closing the clients once they have their data");
        if let Ok(mut state) = self.state.lock() {
            state.input_ended = true;
            for c in state.clients.values() {
                c.queue.end();
            }
        }
    }
}
