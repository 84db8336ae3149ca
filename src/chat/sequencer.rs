//! The sequencer: the one place where chat events get their order. It takes everything waiting,
//! numbers it, commits the history entries in one transaction (group commit), and only then hands
//! the batch to the hub for delivery. Runs on its own thread because the store is synchronous.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::hub::{Pending, Route, Shared};
use super::store::Store;

/// Most events taken into one transaction: bounds the latency of the first event of a burst.
const MAX_BATCH: usize = 1024;

/// Runs until every hub handle is dropped. `last_seq` is the highest sequence number already
/// stored; numbering continues after it.
pub fn run(
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<Pending>,
    mut store: Box<dyn Store>,
    replay: usize,
    last_seq: u64,
) {
    let mut seq = last_seq;
    let mut batch: Vec<Pending> = Vec::with_capacity(64);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        for p in batch.iter_mut() {
            seq += 1;
            p.event.seq = seq;
            if let (Route::Join(..), Some(room)) = (&p.route, &p.event.room) {
                if !shared.room_loaded(room) {
                    let recent = store.recent(room, replay).unwrap_or_else(|e| {
                        tracing::error!(error = %e, %room, "cannot load room history");
                        Vec::new()
                    });
                    shared.preload(room, recent);
                }
            }
        }
        let stored: Vec<_> = batch
            .iter()
            .filter(|p| p.event.kind.is_stored())
            .map(|p| &p.event)
            .collect();
        let ok = match store.append(&stored) {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, events = stored.len(), "history commit failed");
                false
            }
        };
        shared.deliver(batch.drain(..), ok);
    }
    tracing::debug!("sequencer stopped");
}
