//! The publisher: takes the hub's events in batches, as the sequencer does, and puts each in its
//! room's order through the Lua script (`publish.lua`), a whole batch in one pipeline (with AOF
//! `always`, Redis fsyncs once per pipeline it reads at once: the cluster's group commit). It
//! delivers nothing of a room itself: that is the feed's, from what Redis publishes.
//!
//! A batch that fails (Redis down, a timeout) is sent again with the same event ids until it
//! goes through, so the dedup keys store each event once; meanwhile the hub's queue fills and
//! the senders wait, as they do for a slow disk.

use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use redis::{ErrorKind, ServerErrorKind};
use tokio::sync::mpsc;

use super::keys;
use super::record::Record;
use super::{Local, Node, DEDUP_SECONDS};
use crate::chat::event::Kind;
use crate::chat::hub::{Pending, Route};
use crate::chat::names::fold;

/// The publish script (see its comments).
pub(super) static SCRIPT: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("publish.lua")));

/// Most events in one pipeline, as the sequencer's batch.
const MAX_BATCH: usize = 1024;

// One pipeline at a time: a second sent before the first is answered could, across a
// reconnection (the first failing, the second going out on the new connection), be numbered
// before the first's retry, reordering a sender's lines. Tried with 8 in flight: no measurable
// gain once the feed delivered in batches.

/// Waits between retries of a failing batch: doubling from the first to the last.
const RETRY_FIRST: Duration = Duration::from_millis(50);
const RETRY_LAST: Duration = Duration::from_secs(2);

/// How long a batch is retried before its events are given up (logged): long enough to ride
/// out a Redis restart, short enough that a server stopping while Redis is gone does stop.
const GIVE_UP: Duration = Duration::from_secs(60);

/// One event ready to go: its room and id, and its record as JSON.
struct Outgoing {
    room: Arc<str>,
    record: Record,
    /// `record` as JSON.
    json: String,
}

/// Publishes what the hub sends until every hub handle is gone.
pub(super) async fn run(node: &Node, mut conn: ConnectionManager, mut rx: mpsc::Receiver<Pending>) {
    // Used only for a room Redis has no numbering for (new, or its data lost).
    let epoch = format!("{}.{}", &node.id[..8], super::super::event::now_ms());
    let mut count = 0u64;
    let mut batch: Vec<Pending> = Vec::with_capacity(64);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let mut here = Vec::new();
        let mut out = Vec::with_capacity(batch.len());
        for p in batch.drain(..) {
            let room: Arc<str> = match (&p.route, &p.event.room, &p.event.target) {
                // A private message goes into its conversation's log, in the same order and
                // with the same durability as a room's lines.
                (Route::Nicks(_), _, Some(to)) => {
                    Arc::from(keys::conversation(&fold(&p.event.nick), &fold(to)))
                }
                // Anything else without a room names only clients here: delivered here.
                (Route::Nicks(_), _, None) | (_, None, _) => {
                    here.push(p);
                    continue;
                }
                (_, Some(room), _) => room.clone(),
            };
            count += 1;
            let id = format!("{}-{count}", node.id);
            let record = Record::of(&p.event, &node.id, id.clone());
            let join = match p.route {
                Route::Join(j) => Some(j),
                _ => None,
            };
            if join.is_some() || p.origin.is_some() {
                node.waiting().insert(
                    id.clone(),
                    Local {
                        join,
                        origin: p.origin,
                        sent: Instant::now(),
                    },
                );
            }
            match serde_json::to_string(&record) {
                Ok(json) => out.push(Outgoing { room, record, json }),
                Err(e) => tracing::error!(error = %e, "cannot encode a chat event"),
            }
        }
        if !here.is_empty() {
            node.shared.deliver(here.into_iter());
        }
        if !out.is_empty() {
            publish(node, &mut conn, &out, &epoch).await;
        }
    }
}

/// One pipeline of the publish script for each event of `out`.
fn pipeline(node: &Node, out: &[Outgoing], epoch: &str) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    let max_rows = node.max_rows.unwrap_or(0);
    for o in out {
        pipe.cmd("EVALSHA")
            .arg(SCRIPT.get_hash())
            .arg(3)
            .arg(keys::meta(&o.room))
            .arg(keys::log(&o.room))
            .arg(keys::dup(&o.room, &o.record.id))
            .arg(keys::channel(&o.room))
            .arg(&o.json)
            .arg(max_rows)
            .arg(epoch)
            .arg(DEDUP_SECONDS)
            .ignore();
        // A room's topic outlives the stream's trimming: kept beside its numbering, for the
        // nodes where the room is entered later.
        if o.record.kind == Kind::Topic {
            let meta = keys::meta(&o.room);
            if o.record.text.is_empty() {
                pipe.hdel(meta, &TOPIC_FIELDS[..]).ignore();
            } else {
                pipe.hset_multiple(
                    meta,
                    &[
                        (TOPIC_FIELDS[0], o.record.text.clone()),
                        (TOPIC_FIELDS[1], o.record.nick.clone()),
                        (TOPIC_FIELDS[2], o.record.ts.to_string()),
                    ],
                )
                .ignore();
            }
        }
    }
    pipe
}

/// The fields of a room's meta hash that hold its topic: text, who set it, when (ms).
pub(super) const TOPIC_FIELDS: [&str; 3] = ["topic", "topic_by", "topic_at"];

/// Sends `out` through the script until Redis has taken all of it (or [`GIVE_UP`] has passed).
async fn publish(node: &Node, conn: &mut ConnectionManager, out: &[Outgoing], epoch: &str) {
    let pipe = pipeline(node, out, epoch);
    let started = Instant::now();
    let mut wait = RETRY_FIRST;
    loop {
        let err = match pipe.query_async::<()>(conn).await {
            Ok(()) => return,
            Err(e) => e,
        };
        if err.kind() == ErrorKind::Server(ServerErrorKind::NoScript) {
            // A restarted Redis has forgotten the script: load it and send again at once.
            match SCRIPT.prepare_invoke().load_async(conn).await {
                Ok(_) => continue,
                Err(e) => tracing::warn!(error = %e, "cannot load the publish script"),
            }
        } else {
            tracing::warn!(error = %err, url = %node.url, events = out.len(), "cannot publish to the chat cluster; retrying");
        }
        if started.elapsed() >= GIVE_UP {
            tracing::error!(url = %node.url, events = out.len(), "gave up publishing events to the chat cluster (nobody had seen them)");
            let mut waiting = node.waiting();
            for o in out {
                waiting.remove(&o.record.id);
            }
            return;
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(RETRY_LAST);
    }
}
