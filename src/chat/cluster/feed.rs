//! The feed: what Redis publishes, delivered to this node's members in each room's order.
//!
//! Per room with local members it keeps the epoch and the last number delivered. The next
//! message must be the last plus one: a lower one is a duplicate (dropped), a higher one means
//! messages were missed (a pub/sub blip, a slow reader): they are read from the room's stream
//! first, and what the stream no longer holds is told to the room. A changed epoch (Redis lost
//! its data) is told too, and the room starts over. The subscription is checked by a probe this
//! node publishes to itself every [`PROBE_EVERY`]; silence for [`DEAF_AFTER`] means the
//! subscription went deaf, and it is made again. After every reconnection each room is
//! caught up from its last number before anything new is delivered.
//!
//! Every node subscribes to every room's channel (one pattern): simple, and what a few nodes
//! need; past that, subscribing only to rooms with local members saves each node the others'
//! traffic (SCALEOUT.md §7).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use redis::aio::ConnectionManager;
use tokio_util::sync::CancellationToken;

use super::publish::TOPIC_FIELDS;
use super::record::{Published, Record};
use super::{history, keys, Local, Node, LOCAL_WAIT};
use crate::chat::event::Kind;
use crate::chat::hub::{Pending, Route, Topic};

/// A subscription that has heard nothing, not even its own probe, for this long is taken for
/// deaf. Checked at each probe, so a deaf one is found within this plus [`PROBE_EVERY`] (2.5 s;
/// measured in tests/chat_cluster.rs: the missed line delivered 2.2 s after going deaf).
const DEAF_AFTER: Duration = Duration::from_secs(2);

/// How often the probe is sent: two small PUBLISHes a second per node.
const PROBE_EVERY: Duration = Duration::from_millis(500);

/// Longest wait between attempts to subscribe again.
const RETRY_LAST: Duration = Duration::from_secs(2);

/// Most messages taken off the subscription before they are handed to the hub together.
const MAX_BATCH: usize = 1024;

/// Most events one repair delivers (the newest of the missing); older ones are told as lost. A
/// node that was away long enough to miss more has clients that see a notice, not a flood.
const MAX_REPAIR: u64 = 10_000;

/// Where a room's delivery stands on this node.
#[derive(Debug, Clone)]
struct Position {
    epoch: String,
    last: u64,
}

struct Feed {
    node: Arc<Node>,
    conn: ConnectionManager,
    rooms: HashMap<String, Position>,
    /// Events gathered for the hub, delivered together ([`Feed::flush`]).
    ready: Vec<Pending>,
}

/// Why listening stopped.
enum Ended {
    Stopped,
    Lost(String),
}

/// Delivers what Redis publishes until `stop`.
pub(super) async fn run(node: Arc<Node>, conn: ConnectionManager, stop: CancellationToken) {
    let mut feed = Feed {
        node,
        conn,
        rooms: HashMap::new(),
        ready: Vec::new(),
    };
    let mut degraded = false;
    let mut wait = Duration::from_millis(50);
    loop {
        let subscribed = tokio::select! {
            _ = stop.cancelled() => return,
            r = tokio::time::timeout(Duration::from_secs(2), subscribe(&feed.node)) => {
                r.unwrap_or_else(|_| Err(redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut))))
            }
        };
        let mut pubsub = match subscribed {
            Ok(p) => p,
            Err(e) => {
                if !degraded {
                    degraded = true;
                    tracing::warn!(error = %e, url = %feed.node.url, "chat cluster: cannot subscribe; retrying");
                    feed.tell_all(
                        "the chat is degraded: the cluster's Redis cannot be reached; retrying",
                    );
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
                wait = (wait * 2).min(RETRY_LAST);
                continue;
            }
        };
        wait = Duration::from_millis(50);
        // Subscribed first, then caught up: what is published meanwhile waits in the
        // subscription, and what the catch-up already delivered is dropped there as a duplicate.
        if let Err(e) = feed.catch_up().await {
            tracing::warn!(error = %e, "chat cluster: cannot catch up; retrying");
            degraded = true;
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            wait = (wait * 2).min(RETRY_LAST);
            continue;
        }
        if degraded {
            tracing::info!(url = %feed.node.url, "chat cluster: subscribed again and caught up");
            feed.tell_all("the chat is back: caught up with the cluster");
        }
        match feed.listen(&mut pubsub, &stop).await {
            Ended::Stopped => return,
            Ended::Lost(why) => {
                tracing::warn!(url = %feed.node.url, %why, "chat cluster: subscription lost; subscribing again");
                degraded = true;
                feed.tell_all("the chat is degraded: lost the cluster's feed; reconnecting");
            }
        }
    }
}

/// A subscription to every room's channel and to this node's probe.
async fn subscribe(node: &Node) -> redis::RedisResult<redis::aio::PubSub> {
    let mut pubsub = node.client.get_async_pubsub().await?;
    pubsub.psubscribe(keys::CHANNELS).await?;
    pubsub.subscribe(keys::probe(&node.id)).await?;
    Ok(pubsub)
}

impl Feed {
    /// Delivers from `pubsub` until it ends, goes deaf, a repair fails, or `stop`.
    async fn listen(&mut self, pubsub: &mut redis::aio::PubSub, stop: &CancellationToken) -> Ended {
        let probe_channel = keys::probe(&self.node.id);
        let mut heard = Instant::now();
        let mut tick = tokio::time::interval(PROBE_EVERY);
        let mut messages = pubsub.on_message();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return Ended::Stopped,
                msg = messages.next() => {
                    let Some(mut msg) = msg else {
                        return Ended::Lost("the subscription closed".into());
                    };
                    // Any message shows the subscription is fed.
                    heard = Instant::now();
                    // What has already arrived is taken with it and delivered in one go (one
                    // lock of the hub, one push per member for a room's run of events).
                    for _ in 0..MAX_BATCH {
                        if let Err(e) = self.take(&msg, &probe_channel).await {
                            return Ended::Lost(format!("cannot read missed messages: {e}"));
                        }
                        match messages.next().now_or_never() {
                            Some(Some(next)) => msg = next,
                            Some(None) => {
                                self.flush();
                                return Ended::Lost("the subscription closed".into());
                            }
                            None => break,
                        }
                    }
                    self.flush();
                }
                _ = tick.tick() => {
                    if heard.elapsed() > DEAF_AFTER {
                        return Ended::Lost(format!("no probe back for {DEAF_AFTER:?}"));
                    }
                    let mut conn = self.conn.clone();
                    let channel = probe_channel.clone();
                    // Sent aside: a Redis that is down must not hold up delivery.
                    tokio::spawn(async move {
                        let _: redis::RedisResult<()> = redis::cmd("PUBLISH").arg(channel).arg("probe").query_async(&mut conn).await;
                    });
                    self.forget_stale();
                }
            }
        }
    }

    /// One message off the subscription: a room's event, or this node's probe.
    async fn take(&mut self, msg: &redis::Msg, probe_channel: &str) -> redis::RedisResult<()> {
        let channel = msg.get_channel_name();
        if channel == probe_channel {
            return Ok(());
        }
        let Some(room) = keys::room_of_channel(channel) else {
            return Ok(());
        };
        let Some(p) = Published::parse(msg.get_payload_bytes()) else {
            tracing::warn!(%channel, "unreadable message on the chat cluster's channel");
            return Ok(());
        };
        self.arrived(room, p).await
    }

    /// Hands what has been gathered to the hub, in order.
    fn flush(&mut self) {
        if !self.ready.is_empty() {
            self.node.shared.deliver(self.ready.drain(..));
        }
    }

    /// One message off a room's channel.
    async fn arrived(&mut self, room: &str, p: Published) -> redis::RedisResult<()> {
        let tracked = self.node.shared.has_room(room);
        let from = match self.rooms.get(room) {
            Some(pos) if tracked && pos.epoch == p.epoch => {
                if p.seq <= pos.last {
                    return Ok(());
                }
                pos.last + 1
            }
            Some(pos) if tracked => {
                let last = pos.last;
                self.tell(room, &reset_notice(room));
                self.after_reset(room, last).await?
            }
            _ => p.seq,
        };
        if from < p.seq {
            self.flush();
            self.repair(room, &p.epoch, from, p.seq - 1).await?;
        }
        self.deliver(room, &p.epoch, p.seq, p.record).await;
        Ok(())
    }

    /// Reads every tracked room's entries after its last delivered one (after a reconnection).
    async fn catch_up(&mut self) -> redis::RedisResult<()> {
        let rooms: Vec<(String, Position)> = self
            .rooms
            .iter()
            .map(|(r, p)| (r.clone(), p.clone()))
            .collect();
        for (room, pos) in rooms {
            let (epoch, top): (Option<String>, Option<u64>) = redis::cmd("HMGET")
                .arg(keys::meta(&room))
                .arg("epoch")
                .arg("seq")
                .query_async(&mut self.conn)
                .await?;
            let (Some(epoch), Some(top)) = (epoch, top) else {
                // Nothing numbered since Redis lost its data: the next message's epoch tells.
                continue;
            };
            let from = if epoch != pos.epoch {
                self.tell(&room, &reset_notice(&room));
                self.after_reset(&room, pos.last).await?
            } else if top < pos.last {
                // Same epoch, lower numbers: Redis came back with older data (a restore, or the
                // last second lost under `relaxed`). The numbers above `top` will be given to
                // new events, which must not be taken for duplicates.
                self.tell(&room, &rollback_notice(&room, pos.last - top));
                self.set_position(&room, &epoch, top);
                continue;
            } else {
                pos.last + 1
            };
            if from <= top {
                self.repair(&room, &epoch, from, top).await?;
            }
        }
        self.flush();
        Ok(())
    }

    /// Delivers `room`'s entries `from..=to` from its stream, telling the room of any it no
    /// longer holds.
    async fn repair(
        &mut self,
        room: &str,
        epoch: &str,
        from: u64,
        to: u64,
    ) -> redis::RedisResult<()> {
        let start = from.max(to.saturating_sub(MAX_REPAIR - 1));
        let mut expected = from;
        let got = history::range(&mut self.conn, room, start, to).await?;
        for (seq, rec) in got {
            if seq < expected {
                continue;
            }
            if seq > expected {
                self.tell(room, &lost_notice(room, seq - expected));
            }
            self.deliver(room, epoch, seq, rec).await;
            expected = seq + 1;
        }
        if expected <= to {
            self.tell(room, &lost_notice(room, to + 1 - expected));
            self.set_position(room, epoch, to);
        }
        self.flush();
        Ok(())
    }

    /// Delivers one numbered event of `room` to the members here (its client's join, if this
    /// node's client made it), and moves the room's position to it.
    async fn deliver(&mut self, room: &str, epoch: &str, seq: u64, rec: Record) {
        let name: Arc<str> = Arc::from(room);
        let local = (rec.node == self.node.id)
            .then(|| self.node.waiting().remove(&rec.id))
            .flatten();
        let (route, origin) = match local {
            Some(Local {
                join: Some(join),
                origin,
                ..
            }) => (Route::Join(join), origin),
            Some(Local { origin, .. }) => (Route::Room, origin),
            None => (Route::Room, None),
        };
        if matches!(route, Route::Join(_)) && !self.node.shared.room_loaded(room) {
            // What was gathered goes first: the replay read now must come after it.
            self.flush();
            // The room is new here: its topic as the cluster keeps it, shown with the join.
            match self.topic(room).await {
                Ok(topic) => {
                    self.node.shared.set_topic(room, topic);
                }
                Err(e) => {
                    tracing::warn!(error = %e, %room, "cannot read a room's topic from the chat cluster")
                }
            }
            let max_bytes = usize::MAX;
            match history::recent(&mut self.conn, room, seq, self.node.replay, max_bytes).await {
                Ok(recent) => self.node.shared.preload(&name, recent),
                Err(e) => {
                    tracing::warn!(error = %e, %room, "cannot load room history from the chat cluster")
                }
            }
        }
        // Another node's /topic: this node's copy of the room follows (its own set it already).
        if rec.kind == Kind::Topic && rec.node != self.node.id {
            let topic = (!rec.text.is_empty()).then(|| Topic {
                text: Arc::from(rec.text.as_str()),
                by: Arc::from(rec.nick.as_str()),
                at: rec.ts,
            });
            self.node.shared.set_topic(room, topic);
        }
        let (event, route) = if keys::is_conversation(room) {
            // A private message: to whoever holds its two nicks here.
            let nicks = std::iter::once(rec.nick.as_str())
                .chain(rec.target.as_deref())
                .map(Arc::from)
                .collect();
            (rec.event(None, seq), Route::Nicks(nicks))
        } else {
            (rec.event(Some(&name), seq), route)
        };
        self.ready.push(Pending {
            event,
            route,
            origin,
        });
        // A join makes a member at its place in the order, which the next events' positions
        // (and a later join's replay) count on: delivered at once.
        if matches!(
            self.ready.last(),
            Some(Pending {
                route: Route::Join(_),
                ..
            })
        ) {
            self.flush();
        }
        self.set_position(room, epoch, seq);
    }

    /// Where delivery resumes in `room` after its epoch changed, `last` having been delivered:
    /// after `last` if the new epoch starts above it (Redis kept the stream and numbering went on;
    /// what lies between is old events this node missed), else at the new epoch's first number
    /// (Redis lost everything: the room starts over).
    async fn after_reset(&mut self, room: &str, last: u64) -> redis::RedisResult<u64> {
        let base: Option<u64> = redis::cmd("HGET")
            .arg(keys::meta(room))
            .arg("base")
            .query_async(&mut self.conn)
            .await?;
        Ok(last.min(base.unwrap_or(0)) + 1)
    }

    /// `room`'s topic as the cluster keeps it ([`TOPIC_FIELDS`]).
    async fn topic(&mut self, room: &str) -> redis::RedisResult<Option<Topic>> {
        let (text, by, at): (Option<String>, Option<String>, Option<i64>) = redis::cmd("HMGET")
            .arg(keys::meta(room))
            .arg(&TOPIC_FIELDS[..])
            .query_async(&mut self.conn)
            .await?;
        Ok(text.map(|text| Topic {
            text: Arc::from(text),
            by: Arc::from(by.unwrap_or_default()),
            at: at.unwrap_or(0),
        }))
    }

    /// Records `seq` as `room`'s last delivered; rooms nobody here is in are not tracked.
    fn set_position(&mut self, room: &str, epoch: &str, seq: u64) {
        if self.node.shared.has_room(room) {
            match self.rooms.get_mut(room) {
                Some(pos) => {
                    if pos.epoch != epoch {
                        pos.epoch = epoch.to_string();
                    }
                    pos.last = seq;
                }
                None => {
                    self.rooms.insert(
                        room.to_string(),
                        Position {
                            epoch: epoch.to_string(),
                            last: seq,
                        },
                    );
                }
            }
        } else {
            self.rooms.remove(room);
        }
    }

    /// A server notice to the members of `room` here.
    fn tell(&mut self, room: &str, text: &str) {
        self.ready.push(Pending::notice(Arc::from(room), text));
    }

    /// The same notice to every room with members here.
    fn tell_all(&mut self, text: &str) {
        for room in self.node.shared.room_names() {
            self.tell(&room, text);
        }
        self.flush();
    }

    /// Gives up local events that never came back (their sessions stop waiting for them).
    fn forget_stale(&self) {
        let mut waiting = self.node.waiting();
        let before = waiting.len();
        waiting.retain(|_, l| l.sent.elapsed() < LOCAL_WAIT);
        if waiting.len() < before {
            tracing::warn!(
                events = before - waiting.len(),
                "chat cluster: local events never came back from Redis"
            );
        }
    }
}

fn rollback_notice(room: &str, n: u64) -> String {
    format!("the cluster's Redis came back with older data: up to {n} of #{room}'s latest events are gone from its history")
}

fn reset_notice(room: &str) -> String {
    format!("the cluster's Redis lost its data: the history of #{room} starts over here")
}

fn lost_notice(room: &str, n: u64) -> String {
    format!(
        "{n} events of #{room} could not be recovered: the cluster's history no longer holds them"
    )
}
