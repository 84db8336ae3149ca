//! Reads of a room's stream: ranges by number (the feed's gap repair and catch-up) and the last
//! messages before a point (a joiner's replay, `/history`). One implementation for the feed's
//! runtime and for the history reader's thread ([`RedisHistory`]), which blocks on its own.

use std::sync::Arc;

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::streams::StreamRangeReply;

use super::keys;
use super::record::{seq_of, Record};
use crate::chat::event::Event;
use crate::chat::store::{HistorySource, StoreError};

/// Entries fetched per command: a page of history stays a small reply.
const PAGE: u64 = 1000;

/// Pages read back at most for one replay or `/history` (the rest of a room's stream is joins,
/// leaves and notices, which are not replayed).
const MAX_PAGES: usize = 20;

/// The entries of `room` numbered `from..=to` that its stream still holds, in order, with their
/// numbers (`to` = `u64::MAX`: up to the newest). Entries that do not parse are skipped (logged).
pub(super) async fn range<C: ConnectionLike + Send>(
    conn: &mut C,
    room: &str,
    from: u64,
    to: u64,
) -> redis::RedisResult<Vec<(u64, Record)>> {
    let mut out = Vec::new();
    let mut next = from;
    let end = if to == u64::MAX {
        "+".to_string()
    } else {
        format!("{to}-0")
    };
    loop {
        let reply: StreamRangeReply = redis::cmd("XRANGE")
            .arg(keys::log(room))
            .arg(format!("{next}-0"))
            .arg(&end)
            .arg("COUNT")
            .arg(PAGE)
            .query_async(conn)
            .await?;
        let n = reply.ids.len() as u64;
        for entry in reply.ids {
            let Some(seq) = seq_of(&entry.id) else {
                continue;
            };
            next = seq + 1;
            match entry
                .get::<String>("r")
                .map(|r| serde_json::from_str::<Record>(&r))
            {
                Some(Ok(rec)) => out.push((seq, rec)),
                _ => {
                    tracing::warn!(%room, id = %entry.id, "unreadable entry in the chat cluster's history")
                }
            }
        }
        if n < PAGE || next > to {
            return Ok(out);
        }
    }
}

/// The last `n` replayed events (messages and actions) of `room` numbered below `before`
/// (`u64::MAX`: all), oldest first; fewer if their texts pass `max_bytes`.
pub(super) async fn recent<C: ConnectionLike + Send>(
    conn: &mut C,
    room: &str,
    before: u64,
    n: usize,
    max_bytes: usize,
) -> redis::RedisResult<Vec<Event>> {
    let room_name: Arc<str> = Arc::from(room);
    let mut out: Vec<Event> = Vec::new();
    let mut bytes = 0usize;
    let mut end = if before == u64::MAX {
        "+".to_string()
    } else if before <= 1 {
        return Ok(out);
    } else {
        format!("{}-0", before - 1)
    };
    'pages: for _ in 0..MAX_PAGES {
        let reply: StreamRangeReply = redis::cmd("XREVRANGE")
            .arg(keys::log(room))
            .arg(&end)
            .arg("-")
            .arg("COUNT")
            .arg(PAGE)
            .query_async(conn)
            .await?;
        let got = reply.ids.len() as u64;
        let mut last = 0;
        for entry in reply.ids {
            let Some(seq) = seq_of(&entry.id) else {
                continue;
            };
            last = seq;
            let Some(Ok(rec)) = entry
                .get::<String>("r")
                .map(|r| serde_json::from_str::<Record>(&r))
            else {
                continue;
            };
            if !rec.kind.is_stored() {
                continue;
            }
            bytes += rec.text.len();
            if out.len() >= n || bytes > max_bytes {
                break 'pages;
            }
            out.push(rec.event(Some(&room_name), seq));
        }
        if got < PAGE || last <= 1 {
            break;
        }
        end = format!("{}-0", last - 1);
    }
    out.reverse();
    Ok(out)
}

/// `/history` beyond what the hub holds, read from the cluster's streams on the history reader's
/// thread (a small runtime of its own to block on; one connection, made at the first read).
pub(super) struct RedisHistory {
    client: redis::Client,
    url: String,
    runtime: Option<tokio::runtime::Runtime>,
    conn: Option<ConnectionManager>,
}

impl RedisHistory {
    pub(super) fn new(client: redis::Client, url: &str) -> Self {
        RedisHistory {
            client,
            url: url.to_string(),
            runtime: None,
            conn: None,
        }
    }

    fn error(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Io {
            path: self.url.clone(),
            source: std::io::Error::other(e.to_string()),
        }
    }
}

impl HistorySource for RedisHistory {
    fn recent(&mut self, room: &str, n: usize, max_bytes: usize) -> Result<Vec<Event>, StoreError> {
        if self.runtime.is_none() {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| self.error(e))?;
            self.runtime = Some(rt);
        }
        let Some(rt) = self.runtime.as_ref() else {
            return Ok(Vec::new());
        };
        let client = self.client.clone();
        let conn = &mut self.conn;
        let result = rt.block_on(async {
            if conn.is_none() {
                *conn = Some(
                    ConnectionManager::new_with_config(client, super::manager_config()).await?,
                );
            }
            match conn.as_mut() {
                Some(c) => recent(c, room, u64::MAX, n, max_bytes).await,
                None => Ok(Vec::new()),
            }
        });
        result.map_err(|e| self.error(e))
    }

    fn name(&self) -> String {
        self.url.clone()
    }
}
