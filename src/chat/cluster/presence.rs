//! Who is in which room, across the cluster: each room's members in a Redis hash
//! (`sockit:{room}:members`, `NODE:CLIENT` → nick), written by the node that has the client, and
//! read by `/who` on any node. Each node records the rooms it has written to
//! (`sockit:node:NODE:rooms`), so that when its lease is gone (the node died) another node can
//! remove its members and tell their rooms they left: one sweeper per dead node, by a lock, so
//! each leave is told once.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::nicks::lease_key;
use super::Node;
use crate::chat::event::{Event, Kind};
use crate::chat::hub::{ClientId, Pending, Route};

/// A change of where a client of this node is.
#[derive(Debug)]
pub enum Change {
    /// In `room` (on its way in, or there under a new nick).
    Enter {
        room: Arc<str>,
        client: ClientId,
        nick: Arc<str>,
    },
    /// No longer in `room`.
    Leave { room: Arc<str>, client: ClientId },
}

/// Changes waiting to be written before new ones are dropped (logged): a Redis that is away
/// must not grow the node. `/who` is then stale until the clients concerned move again.
pub const QUEUE: usize = 10_000;

/// How often nodes look for dead nodes to sweep.
const SWEEP_EVERY: Duration = Duration::from_millis(500);

/// The set of every node that has written members.
const NODES: &str = "sockit:nodes";

fn members_key(room: &str) -> String {
    format!("sockit:{{{room}}}:members")
}

fn node_rooms(node: &str) -> String {
    format!("sockit:node:{node}:rooms")
}

fn field(node: &str, client: ClientId) -> String {
    format!("{node}:{client}")
}

/// Writes this node's changes in the order they were made, until every sender is gone.
pub(super) async fn write(
    node: Arc<Node>,
    mut conn: ConnectionManager,
    mut rx: mpsc::Receiver<Change>,
) {
    while let Some(change) = rx.recv().await {
        let mut pipe = redis::pipe();
        match &change {
            Change::Enter { room, client, nick } => {
                pipe.sadd(NODES, &node.id)
                    .ignore()
                    .sadd(node_rooms(&node.id), &**room)
                    .ignore()
                    .hset(members_key(room), field(&node.id, *client), &**nick)
                    .ignore();
            }
            Change::Leave { room, client } => {
                pipe.hdel(members_key(room), field(&node.id, *client))
                    .ignore();
            }
        }
        match pipe.query_async::<()>(&mut conn).await {
            Ok(()) => {
                if matches!(change, Change::Enter { .. }) {
                    node.listed
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, ?change, "cannot record presence in the chat cluster")
            }
        }
    }
}

/// The nicks in `room` on every node, sorted as `/who` shows them.
pub async fn who(conn: &mut ConnectionManager, room: &str) -> redis::RedisResult<Vec<String>> {
    let mut nicks: Vec<String> = redis::cmd("HVALS")
        .arg(members_key(room))
        .query_async(conn)
        .await?;
    nicks.sort_by_key(|n| crate::chat::names::fold(n));
    nicks.dedup();
    Ok(nicks)
}

/// Looks for nodes whose lease is gone, and sweeps each (see the module's comment) until
/// `stop`. Leave notices go to the hub's queue, to be published like any other. Also checks that
/// this node is still listed: one that is not but has written members was swept (its lease
/// lapsed: Redis stalled, or the process was paused) or Redis lost its data, and writes its
/// members and nick claims again, so `/who` and nicks are right once more (the leave notices
/// already told stay told).
pub(super) async fn sweep(
    node: Arc<Node>,
    mut conn: ConnectionManager,
    hub: mpsc::WeakSender<Pending>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {
                if let Err(e) = sweep_once(&node, &mut conn, &hub).await {
                    tracing::debug!(error = %e, "cannot look for dead chat nodes");
                }
                if let Err(e) = reassert_once(&node, &mut conn).await {
                    tracing::debug!(error = %e, "cannot check this node's presence in the chat cluster");
                }
            }
        }
    }
}

async fn sweep_once(
    node: &Node,
    conn: &mut ConnectionManager,
    hub: &mpsc::WeakSender<Pending>,
) -> redis::RedisResult<()> {
    let nodes: Vec<String> = redis::cmd("SMEMBERS").arg(NODES).query_async(conn).await?;
    for other in nodes.iter().filter(|n| **n != node.id) {
        let alive: bool = redis::cmd("EXISTS")
            .arg(lease_key(other))
            .query_async(conn)
            .await?;
        if alive {
            continue;
        }
        // One sweeper per dead node: the others leave it alone.
        let locked: Option<String> = redis::cmd("SET")
            .arg(format!("sockit:sweep:{other}"))
            .arg(&node.id)
            .arg("NX")
            .arg("PX")
            .arg(10_000)
            .query_async(conn)
            .await?;
        if locked.is_none() {
            continue;
        }
        let left = remove_node(conn, other).await?;
        tracing::info!(node = %other, members = left.len(), "chat cluster: swept a node whose lease ended");
        let Some(hub) = hub.upgrade() else {
            return Ok(());
        };
        for (room, nick) in left {
            let leave = Event::new(
                Kind::Leave,
                Some(Arc::from(room.as_str())),
                Arc::from(nick.as_str()),
                "their server went away",
            );
            let pending = Pending {
                event: leave,
                route: Route::Room,
                origin: None,
            };
            if hub.send(pending).await.is_err() {
                break;
            }
        }
    }
    Ok(())
}

/// Removes every member `gone` wrote, and `gone` itself; returns who was where.
async fn remove_node(
    conn: &mut ConnectionManager,
    gone: &str,
) -> redis::RedisResult<Vec<(String, String)>> {
    let rooms: Vec<String> = redis::cmd("SMEMBERS")
        .arg(node_rooms(gone))
        .query_async(conn)
        .await?;
    let prefix = format!("{gone}:");
    let mut left = Vec::new();
    for room in rooms {
        let all: Vec<(String, String)> = redis::cmd("HGETALL")
            .arg(members_key(&room))
            .query_async(conn)
            .await?;
        for (f, nick) in all.into_iter().filter(|(f, _)| f.starts_with(&prefix)) {
            let removed: i64 = redis::cmd("HDEL")
                .arg(members_key(&room))
                .arg(&f)
                .query_async(conn)
                .await?;
            if removed == 1 {
                left.push((room.clone(), nick));
            }
        }
    }
    let _: () = redis::pipe()
        .del(node_rooms(gone))
        .ignore()
        .srem(NODES, gone)
        .ignore()
        .query_async(conn)
        .await?;
    Ok(left)
}

/// Writes this node's members again if it has written members before (`Node::listed`) and is
/// no longer listed.
async fn reassert_once(node: &Node, conn: &mut ConnectionManager) -> redis::RedisResult<()> {
    if !node.listed.load(std::sync::atomic::Ordering::Relaxed) {
        return Ok(());
    }
    let listed: bool = redis::cmd("SISMEMBER")
        .arg(NODES)
        .arg(&node.id)
        .query_async(conn)
        .await?;
    if listed {
        return Ok(());
    }
    let members = node.shared.local_members();
    if members.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    pipe.sadd(NODES, &node.id).ignore();
    for (room, client, nick) in &members {
        pipe.sadd(node_rooms(&node.id), &**room)
            .ignore()
            .hset(members_key(room), field(&node.id, *client), &**nick)
            .ignore();
    }
    pipe.query_async::<()>(conn).await?;
    let mut lost = 0;
    for (_, client, nick) in &members {
        let folded = crate::chat::names::fold(nick);
        if !super::nicks::reclaim(conn, &node.id, *client, &folded).await? {
            lost += 1;
        }
    }
    tracing::warn!(
        members = members.len(),
        nicks_taken_meanwhile = lost,
        "chat cluster: this node had been swept; its members are written again"
    );
    Ok(())
}

/// At a clean stop: this node's members are gone (their sessions said so), and so is the node.
pub(super) async fn withdraw(node: &Node, conn: &mut ConnectionManager) {
    if let Err(e) = remove_node(conn, &node.id).await {
        tracing::debug!(error = %e, "cannot withdraw from the chat cluster's presence");
    }
}
