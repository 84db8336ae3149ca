//! Where chat history is kept: the seam between ordering and storage. Today SQLite (WAL, group
//! commit) or nothing; a shared store (Redis streams) would implement the same trait.
//!
//! Also what keeps it bounded: retention (rows per room, age), applied by the sequencer through
//! [`Store::trim_room`] and [`Store::expire`], and a compact form for the replacement characters
//! that undecodable input becomes (one byte each on disk instead of three).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::types::ValueRef;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, ToSql};
use tokio::sync::{mpsc, oneshot};

use super::event::{Event, Kind};

/// A failure of the history store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("chat history {path}: {source}")]
    Sqlite {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("chat history {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl StoreError {
    /// Whether the failure is a full disk (SQLITE_FULL, ENOSPC), which goes away by itself when
    /// space is freed, rather than a broken file.
    pub fn is_disk_full(&self) -> bool {
        match self {
            StoreError::Sqlite { source, .. } => {
                source.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull)
            }
            StoreError::Io { source, .. } => source.raw_os_error() == Some(libc::ENOSPC),
        }
    }
}

/// How much history is kept: at most `max_rows` messages per room (the newest) and none older
/// than `max_age`. `None` keeps everything in that dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub max_age: Option<Duration>,
    pub max_rows: Option<u64>,
}

impl Default for Retention {
    /// 30 days and 10,000 messages per room: a month of a busy room, a few MB per room at most.
    fn default() -> Self {
        Retention {
            max_age: Some(Duration::from_secs(30 * 86_400)),
            max_rows: Some(10_000),
        }
    }
}

/// Durable, ordered history. Called only from the sequencer thread, so implementations may block.
pub trait Store: Send {
    /// Where numbering starts after a restart: above every number stored or handed out before.
    fn last_seq(&mut self) -> Result<u64, StoreError>;
    /// Stores a batch in one transaction (group commit). When this returns Ok the events survive a
    /// crash of the process. `numbered` is the highest sequence number handed out so far, stored
    /// or not (joins are not): a later [`Store::last_seq`] must not return less.
    fn append(&mut self, batch: &[&Event], numbered: u64) -> Result<(), StoreError>;
    /// The last `n` stored events of `room`, oldest first.
    fn recent(&mut self, room: &str, n: usize) -> Result<Vec<Event>, StoreError>;
    /// Deletes the oldest messages of `room` beyond its newest `keep`, at most `limit` of them;
    /// returns how many it deleted.
    fn trim_room(&mut self, _room: &str, _keep: u64, _limit: usize) -> Result<usize, StoreError> {
        Ok(0)
    }
    /// Deletes messages stamped before `before` (ms since the epoch), oldest-numbered first and
    /// stopping at the first younger one, at most `limit` of them; returns how many it deleted.
    fn expire(&mut self, _before: i64, _limit: usize) -> Result<usize, StoreError> {
        Ok(0)
    }
    /// A second way into the same history for reads (`/history` beyond what memory holds), used
    /// beside the writer from the reader's own thread. `None`: only memory has history.
    fn reader(&self) -> Result<Option<Box<dyn HistorySource>>, StoreError> {
        Ok(None)
    }
}

/// Reads of a store's history, made from the [`HistoryReader`]'s thread (so they may block).
pub trait HistorySource: Send + 'static {
    /// The last `n` stored events of `room`, oldest first; fewer if their texts pass `max_bytes`.
    fn recent(&mut self, room: &str, n: usize, max_bytes: usize) -> Result<Vec<Event>, StoreError>;
    /// The store, as errors name it.
    fn name(&self) -> String;
}

/// Keeps nothing (`--no-history`): replay comes from memory only and ends with the process.
#[derive(Debug, Default)]
pub struct NoStore;

impl Store for NoStore {
    fn last_seq(&mut self) -> Result<u64, StoreError> {
        Ok(0)
    }
    fn append(&mut self, _batch: &[&Event], _numbered: u64) -> Result<(), StoreError> {
        Ok(())
    }
    fn recent(&mut self, _room: &str, _n: usize) -> Result<Vec<Event>, StoreError> {
        Ok(Vec::new())
    }
}

/// History in an embedded SQLite database in WAL mode.
///
/// `synchronous=NORMAL`: in WAL mode a committed transaction survives a crash or kill -9 of the
/// process (it is in the WAL, in the OS page cache); only a power loss can lose the last commits.
/// `--history-sync full` fsyncs every group commit for that case too.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
    /// Numbers up to this one may have been handed out (recorded in `meta`); see [`RESERVE`].
    reserved: u64,
}

/// Sequence numbers are claimed in blocks, recorded in the same transaction as the messages: a
/// restart numbers from above the last claim, so no number a client saw (a join is numbered but
/// not stored) is given twice, at the cost of a gap after each restart. A new block is claimed
/// when less than half of the current one is left, so a full disk that blocks the claim has half a
/// block (half a million events) of room before a restart could repeat numbers.
const RESERVE: u64 = 1 << 20;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS messages (
    seq  INTEGER PRIMARY KEY,
    ts   INTEGER NOT NULL,
    room TEXT NOT NULL,
    kind TEXT NOT NULL,
    nick TEXT NOT NULL,
    text TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_room ON messages (room, seq);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
";

/// What a U+FFFD (an undecodable input byte or a control character, as the wire decoder
/// replaced them) is stored as: 0xFF never occurs in UTF-8, and decoding the stored bytes lossily
/// turns each one back into exactly one U+FFFD, so the text read back is the text stored.
const PACKED_REPLACEMENT: u8 = 0xFF;

/// The stored form of a text with replacement characters: the same bytes with each U+FFFD (3
/// bytes) as one byte, stored as a BLOB. `None` for other texts, stored as TEXT as before.
fn pack(text: &str) -> Option<Vec<u8>> {
    if !text.contains(char::REPLACEMENT_CHARACTER) {
        return None;
    }
    let mut out = Vec::with_capacity(text.len());
    let mut buf = [0u8; 4];
    for c in text.chars() {
        if c == char::REPLACEMENT_CHARACTER {
            out.push(PACKED_REPLACEMENT);
        } else {
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        }
    }
    Some(out)
}

/// The text of a stored value (TEXT as is, a packed BLOB unpacked).
fn unpack(value: ValueRef<'_>) -> String {
    match value {
        ValueRef::Text(b) | ValueRef::Blob(b) => String::from_utf8_lossy(b).into_owned(),
        _ => String::new(),
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`. Its folder must exist: a typo in a
    /// path must not quietly make folders somewhere (the binary makes the default location's).
    pub fn open(path: &Path, full_sync: bool) -> Result<Self, StoreError> {
        let err = |source| StoreError::Sqlite {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.is_dir() {
                return Err(StoreError::Io {
                    path: dir.display().to_string(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "no such folder (create it first, or leave out --history for the default)",
                    ),
                });
            }
        }
        let conn = Connection::open(path).map_err(err)?;
        let sync = if full_sync { "FULL" } else { "NORMAL" };
        conn.execute_batch(&format!(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous={sync}; PRAGMA busy_timeout=5000; {SCHEMA}"
        ))
        .map_err(err)?;
        let reserved = conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'seq_reserved'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .optional()
            .map_err(err)?
            .unwrap_or(0)
            .max(0) as u64;
        Ok(SqliteStore {
            conn,
            path: path.to_path_buf(),
            reserved,
        })
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.display().to_string(),
            source,
        }
    }
}

impl Store for SqliteStore {
    fn reader(&self) -> Result<Option<Box<dyn HistorySource>>, StoreError> {
        Ok(Some(Box::new(SqliteReader::open(&self.path)?)))
    }

    fn last_seq(&mut self) -> Result<u64, StoreError> {
        let stored = self
            .conn
            .query_row("SELECT COALESCE(MAX(seq), 0) FROM messages", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|v| v as u64)
            .map_err(|e| self.err(e))?;
        Ok(stored.max(self.reserved))
    }

    fn append(&mut self, batch: &[&Event], numbered: u64) -> Result<(), StoreError> {
        let claim = (numbered + RESERVE / 2 > self.reserved).then_some(numbered + RESERVE);
        if batch.is_empty() && claim.is_none() {
            return Ok(());
        }
        let path = self.path.display().to_string();
        let err = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO messages (seq, ts, room, kind, nick, text) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(err)?;
            for e in batch {
                let packed = pack(&e.text);
                let plain: &str = &e.text;
                let text: &dyn ToSql = match &packed {
                    Some(bytes) => bytes,
                    None => &plain,
                };
                insert
                    .execute(params![
                        e.seq as i64,
                        e.ts,
                        e.room.as_deref().unwrap_or(""),
                        e.kind.as_str(),
                        &*e.nick,
                        text
                    ])
                    .map_err(err)?;
            }
        }
        if let Some(claim) = claim {
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('seq_reserved', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![claim as i64],
            )
            .map_err(err)?;
        }
        tx.commit().map_err(err)?;
        if let Some(claim) = claim {
            self.reserved = claim;
        }
        Ok(())
    }

    fn recent(&mut self, room: &str, n: usize) -> Result<Vec<Event>, StoreError> {
        read_recent(&self.conn, room, n, usize::MAX).map_err(|e| self.err(e))
    }

    fn trim_room(&mut self, room: &str, keep: u64, limit: usize) -> Result<usize, StoreError> {
        // Both look-ups walk the (room, seq) index: the newest row to delete, then the end of
        // this batch of the oldest ones.
        let run = || -> Result<usize, rusqlite::Error> {
            let newest_old: Option<i64> = self
                .conn
                .prepare_cached(
                    "SELECT seq FROM messages WHERE room = ?1 ORDER BY seq DESC LIMIT 1 OFFSET ?2",
                )?
                .query_row(params![room, keep as i64], |r| r.get(0))
                .optional()?;
            let Some(newest_old) = newest_old else {
                return Ok(0);
            };
            let batch_end: Option<i64> = self
                .conn
                .prepare_cached(
                    "SELECT seq FROM messages WHERE room = ?1 AND seq <= ?2 ORDER BY seq LIMIT 1 OFFSET ?3",
                )?
                .query_row(
                    params![room, newest_old, limit.saturating_sub(1) as i64],
                    |r| r.get(0),
                )
                .optional()?;
            self.conn
                .prepare_cached("DELETE FROM messages WHERE room = ?1 AND seq <= ?2")?
                .execute(params![room, batch_end.unwrap_or(newest_old)])
        };
        run().map_err(|e| self.err(e))
    }

    fn expire(&mut self, before: i64, limit: usize) -> Result<usize, StoreError> {
        // Oldest-numbered first, stopping at the first young row: the scan costs what it deletes
        // (plus one row), however big the table, where `WHERE ts < ?` would read all of it.
        let run = || -> Result<usize, rusqlite::Error> {
            let mut last_old: Option<i64> = None;
            {
                let mut stmt = self
                    .conn
                    .prepare_cached("SELECT seq, ts FROM messages ORDER BY seq LIMIT ?1")?;
                let mut rows = stmt.query(params![limit as i64])?;
                while let Some(row) = rows.next()? {
                    if row.get::<_, i64>(1)? >= before {
                        break;
                    }
                    last_old = Some(row.get(0)?);
                }
            }
            match last_old {
                Some(seq) => self
                    .conn
                    .prepare_cached("DELETE FROM messages WHERE seq <= ?1")?
                    .execute(params![seq]),
                None => Ok(0),
            }
        };
        run().map_err(|e| self.err(e))
    }
}

/// The last `n` stored events of `room`, oldest first, reading newest first and stopping once the
/// texts read pass `max_bytes` (a reply that large would be cut anyway).
fn read_recent(
    conn: &Connection,
    room: &str,
    n: usize,
    max_bytes: usize,
) -> Result<Vec<Event>, rusqlite::Error> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, ts, kind, nick, text FROM messages WHERE room = ?1 ORDER BY seq DESC LIMIT ?2",
    )?;
    let room: Arc<str> = Arc::from(room);
    let mut rows = stmt.query(params![&*room, n.min(i64::MAX as usize) as i64])?;
    let mut events = Vec::new();
    let mut bytes = 0usize;
    while let Some(r) = rows.next()? {
        let kind: String = r.get(2)?;
        let nick: String = r.get(3)?;
        let text = unpack(r.get_ref(4)?);
        bytes = bytes.saturating_add(text.len() + nick.len());
        events.push(Event::at(
            r.get::<_, i64>(0)? as u64,
            r.get(1)?,
            Kind::parse(&kind).unwrap_or(Kind::Message),
            Some(room.clone()),
            Arc::from(nick),
            None,
            Arc::from(text),
        ));
        if bytes > max_bytes {
            break;
        }
    }
    events.reverse();
    Ok(events)
}

/// A request to the history reader.
struct ReadRequest {
    room: String,
    n: usize,
    max_bytes: usize,
    reply: oneshot::Sender<Result<Vec<Event>, StoreError>>,
}

/// Requests waiting for the reader before askers wait their turn.
const READ_QUEUE: usize = 64;

/// A read-only connection to a history file: WAL lets it read beside the writer.
struct SqliteReader {
    conn: Connection,
    path: String,
}

impl SqliteReader {
    /// Opens the read connection on the database at `path` (which must exist).
    fn open(path: &Path) -> Result<Self, StoreError> {
        let name = path.display().to_string();
        let err = |source| StoreError::Sqlite {
            path: name.clone(),
            source,
        };
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(err)?;
        // One read now: SQLite opens the WAL and its index at a connection's first read and keeps
        // them, so later reads need no file opened (a server out of descriptors still reads).
        read_recent(&conn, "", 1, 0).map_err(err)?;
        Ok(SqliteReader { conn, path: name })
    }
}

impl HistorySource for SqliteReader {
    fn recent(&mut self, room: &str, n: usize, max_bytes: usize) -> Result<Vec<Event>, StoreError> {
        read_recent(&self.conn, room, n, max_bytes).map_err(|source| StoreError::Sqlite {
            path: self.path.clone(),
            source,
        })
    }

    fn name(&self) -> String {
        self.path.clone()
    }
}

/// Reads history for `/history` requests larger than what the hub keeps in memory: one
/// [`HistorySource`] from the store (for SQLite, one read-only connection, opened once), on its
/// own thread, fed through a bounded queue, so a crowd of askers costs neither a connection each
/// nor the async runtime's threads. Cloning is cheap; the thread ends with the last clone.
#[derive(Debug, Clone)]
pub struct HistoryReader {
    tx: mpsc::Sender<ReadRequest>,
    path: Arc<str>,
}

impl HistoryReader {
    /// The reader of `store`'s history, if it keeps any beyond memory.
    pub fn of(store: &dyn Store) -> Result<Option<Self>, StoreError> {
        store.reader()?.map(Self::start).transpose()
    }

    /// Starts the reader's thread on `source`.
    pub fn start(mut source: Box<dyn HistorySource>) -> Result<Self, StoreError> {
        let name: Arc<str> = Arc::from(source.name());
        let (tx, mut rx) = mpsc::channel::<ReadRequest>(READ_QUEUE);
        std::thread::Builder::new()
            .name("chat-history".into())
            .spawn(move || {
                while let Some(req) = rx.blocking_recv() {
                    let result = source.recent(&req.room, req.n, req.max_bytes);
                    // The asker may have gone meanwhile.
                    let _ = req.reply.send(result);
                }
            })
            .map_err(|source| StoreError::Io {
                path: name.to_string(),
                source,
            })?;
        Ok(HistoryReader { tx, path: name })
    }

    /// The last `n` stored events of `room`, oldest first; fewer if their texts pass `max_bytes`.
    pub async fn recent(
        &self,
        room: &str,
        n: usize,
        max_bytes: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let gone = || StoreError::Io {
            path: self.path.to_string(),
            source: std::io::Error::other("the history reader has stopped"),
        };
        let (reply, answer) = oneshot::channel();
        let req = ReadRequest {
            room: room.to_string(),
            n,
            max_bytes,
            reply,
        };
        self.tx.send(req).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

/// The default history file: `$XDG_DATA_HOME/sockit/chat.sqlite3`, else
/// `~/.local/share/sockit/chat.sqlite3`, else `./sockit-chat.sqlite3`.
pub fn default_path() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("sockit").join("chat.sqlite3");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(home)
            .join(".local/share/sockit")
            .join("chat.sqlite3");
    }
    PathBuf::from("sockit-chat.sqlite3")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(seq: u64, ts: i64, room: &str, text: &str) -> Event {
        Event::at(
            seq,
            ts,
            Kind::Message,
            Some(Arc::from(room)),
            Arc::from("ann"),
            None,
            Arc::from(text),
        )
    }

    fn append(store: &mut SqliteStore, events: &[Event]) {
        let refs: Vec<&Event> = events.iter().collect();
        let numbered = events.iter().map(|e| e.seq).max().unwrap_or(0);
        store.append(&refs, numbered).unwrap();
    }

    fn texts(store: &mut SqliteStore, room: &str) -> Vec<String> {
        let events = store.recent(room, 1000).unwrap();
        events.iter().map(|e| e.text.to_string()).collect()
    }

    #[test]
    fn replacement_characters_are_packed_one_byte_each_and_read_back_exactly() {
        for text in [
            "\u{FFFD}",
            "a\u{FFFD}\u{FFFD}b",
            "é\u{FFFD}中\u{FFFD}😀\u{FFFD}",
            "\u{FFFD}\u{FFFD}\u{FFFD}",
        ] {
            let packed = pack(text).unwrap();
            assert_eq!(
                packed.len(),
                text.len() - 2 * text.matches('\u{FFFD}').count()
            );
            assert_eq!(unpack(ValueRef::Blob(&packed)), text);
        }
        assert!(pack("plain é 中").is_none());
    }

    #[test]
    fn trim_room_keeps_the_newest_in_batches_and_leaves_other_rooms() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(&dir.path().join("h.sqlite3"), false).unwrap();
        let events: Vec<Event> = (1..=30)
            .map(|i| msg(i, 0, if i % 3 == 0 { "b" } else { "a" }, &format!("m{i}")))
            .collect();
        append(&mut store, &events);
        // Room a has 20 rows; keep 5, at most 10 per call.
        assert_eq!(store.trim_room("a", 5, 10).unwrap(), 10);
        assert_eq!(store.trim_room("a", 5, 10).unwrap(), 5);
        assert_eq!(store.trim_room("a", 5, 10).unwrap(), 0);
        assert_eq!(texts(&mut store, "a"), ["m23", "m25", "m26", "m28", "m29"]);
        assert_eq!(texts(&mut store, "b").len(), 10);
        assert_eq!(store.trim_room("nowhere", 5, 10).unwrap(), 0);
    }

    #[test]
    fn expire_deletes_the_old_oldest_first_in_batches() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(&dir.path().join("h.sqlite3"), false).unwrap();
        let events: Vec<Event> = (1..=10).map(|i| msg(i, i as i64 * 100, "a", "x")).collect();
        append(&mut store, &events);
        // Stamped before 750: seqs 1..=7, taken 4 at a time.
        assert_eq!(store.expire(750, 4).unwrap(), 4);
        assert_eq!(store.expire(750, 4).unwrap(), 3);
        assert_eq!(store.expire(750, 4).unwrap(), 0);
        let left: Vec<u64> = store
            .recent("a", 100)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(left, [8, 9, 10]);
    }

    #[test]
    fn numbering_restarts_above_every_number_handed_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.sqlite3");
        let mut store = SqliteStore::open(&path, false).unwrap();
        assert_eq!(store.last_seq().unwrap(), 0);
        // Numbers up to 7 were handed out, only 3 stored (the rest were joins and leaves).
        store.append(&[&msg(3, 0, "a", "x")], 7).unwrap();
        drop(store);
        let mut store = SqliteStore::open(&path, false).unwrap();
        let start = store.last_seq().unwrap();
        assert!(start >= 7, "{start}");
        // A claim is written once per half block, not per batch.
        store.append(&[], start + 1).unwrap();
        assert_eq!(store.reserved, start + RESERVE + 1);
        store.append(&[], start + 2).unwrap();
        assert_eq!(store.reserved, start + RESERVE + 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_reader_serves_many_askers_on_its_one_connection() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.sqlite3");
        let mut store = SqliteStore::open(&path, false).unwrap();
        append(&mut store, &[msg(1, 0, "a", "one"), msg(2, 0, "a", "two")]);
        let reader = HistoryReader::of(&store).unwrap().expect("a reader");
        // More askers at once than the queue holds: they wait their turn, all are answered.
        let askers: Vec<_> = (0..READ_QUEUE * 2)
            .map(|_| {
                let reader = reader.clone();
                tokio::spawn(async move { reader.recent("a", 10, usize::MAX).await })
            })
            .collect();
        for a in askers {
            let got = a.await.unwrap().unwrap();
            let texts: Vec<&str> = got.iter().map(|e| &*e.text).collect();
            assert_eq!(texts, ["one", "two"]);
        }
        // What was committed after the reader opened is seen (no snapshot is held between reads).
        append(&mut store, &[msg(3, 0, "a", "three")]);
        // The byte cap stops the read early, newest first.
        let got = reader.recent("a", 10, 1).await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(&*got[0].text, "three");
    }
}
