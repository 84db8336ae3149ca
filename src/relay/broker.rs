//! `listen -k` without a command: stdin is broadcast to every connected client.
//!
//! Each client has a bounded queue; a chunk of stdin is offered to all queues at once. A client
//! that is slow holds stdin back (so a piped file reaches everyone whole), but only for the stall
//! limit (`--stall-timeout`, [`DEFAULT_STALL_LIMIT`]): then it is disconnected, so it cannot stall the others for long. The accept
//! loop and the other clients' reads never wait on it (ncat's broadcast blocks all of them).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc::error::SendTimeoutError;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use super::local::QUEUE;

/// How long one client may keep a chunk of stdin waiting before it is disconnected, by default.
pub const DEFAULT_STALL_LIMIT: Duration = Duration::from_secs(10);

struct Client {
    tx: mpsc::Sender<Bytes>,
    kick: CancellationToken,
    peer: String,
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
    joined: Notify,
    next_id: AtomicU64,
    stall_limit: Duration,
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
    }
}

impl Broker {
    /// A broker that disconnects a client keeping stdin waiting for longer than `stall_limit`.
    pub(crate) fn new(stall_limit: Duration) -> Self {
        Broker {
            state: Mutex::default(),
            joined: Notify::new(),
            next_id: AtomicU64::new(0),
            stall_limit,
        }
    }

    /// Adds a client, returning its share of stdin. `kick` is cancelled if the client falls too
    /// far behind.
    pub(crate) fn join(
        self: &Arc<Self>,
        peer: String,
        kick: CancellationToken,
    ) -> (mpsc::Receiver<Bytes>, Member) {
        let (tx, input) = mpsc::channel(QUEUE);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut state) = self.state.lock() {
            if !state.input_ended {
                state.clients.insert(id, Client { tx, kick, peer });
            }
        }
        self.joined.notify_one();
        let member = Member {
            broker: self.clone(),
            id,
        };
        (input, member)
    }

    /// Reads `stdin` while at least one client is connected, and offers each chunk to every
    /// client. At the end of stdin every client's input ends.
    pub(crate) async fn run(self: Arc<Self>, mut stdin: mpsc::Receiver<Bytes>) {
        loop {
            // Read stdin only when someone is there to get it: what is piped in before the first
            // client connects goes to that client rather than nowhere.
            while self.is_empty() {
                self.joined.notified().await;
            }
            let Some(chunk) = stdin.recv().await else {
                break;
            };
            let targets: Vec<(u64, mpsc::Sender<Bytes>, CancellationToken, String)> =
                match self.state.lock() {
                    Ok(state) => state
                        .clients
                        .iter()
                        .map(|(id, c)| (*id, c.tx.clone(), c.kick.clone(), c.peer.clone()))
                        .collect(),
                    Err(_) => break,
                };
            let limit = self.stall_limit;
            let offers = targets.into_iter().map(|(id, tx, kick, peer)| {
                let chunk = chunk.clone();
                async move {
                    match tx.send_timeout(chunk, limit).await {
                        Ok(()) => None,
                        Err(SendTimeoutError::Timeout(_)) => {
                            tracing::warn!(%peer, ?limit, "client is not reading; disconnected");
                            kick.cancel();
                            Some(id)
                        }
                        Err(SendTimeoutError::Closed(_)) => Some(id),
                    }
                }
            });
            let gone: Vec<u64> = futures::future::join_all(offers)
                .await
                .into_iter()
                .flatten()
                .collect();
            if !gone.is_empty() {
                if let Ok(mut state) = self.state.lock() {
                    for id in gone {
                        state.clients.remove(&id);
                    }
                }
            }
        }
        tracing::debug!("stdin ended; half-closing the clients");
        if let Ok(mut state) = self.state.lock() {
            state.input_ended = true;
            state.clients.clear();
        }
    }

    fn is_empty(&self) -> bool {
        self.state
            .lock()
            .map(|s| s.clients.is_empty())
            .unwrap_or(true)
    }
}
