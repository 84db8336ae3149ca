//! Where chat history is kept: the seam between ordering and storage. Today SQLite (WAL, group
//! commit) or nothing; a shared store (Redis streams) would implement the same trait.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::{params, Connection, OpenFlags};

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

/// Durable, ordered history. Called only from the sequencer thread, so implementations may block.
pub trait Store: Send {
    /// The highest sequence number stored, so numbering continues after a restart.
    fn last_seq(&mut self) -> Result<u64, StoreError>;
    /// Stores a batch in one transaction (group commit). When this returns Ok the events survive a
    /// crash of the process.
    fn append(&mut self, batch: &[&Event]) -> Result<(), StoreError>;
    /// The last `n` stored events of `room`, oldest first.
    fn recent(&mut self, room: &str, n: usize) -> Result<Vec<Event>, StoreError>;
}

/// Keeps nothing (`--no-history`): replay comes from memory only and ends with the process.
#[derive(Debug, Default)]
pub struct NoStore;

impl Store for NoStore {
    fn last_seq(&mut self) -> Result<u64, StoreError> {
        Ok(0)
    }
    fn append(&mut self, _batch: &[&Event]) -> Result<(), StoreError> {
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
}

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
";

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path, full_sync: bool) -> Result<Self, StoreError> {
        let err = |source| StoreError::Sqlite {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
                    path: dir.display().to_string(),
                    source,
                })?;
            }
        }
        let conn = Connection::open(path).map_err(err)?;
        let sync = if full_sync { "FULL" } else { "NORMAL" };
        conn.execute_batch(&format!(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous={sync}; PRAGMA busy_timeout=5000; {SCHEMA}"
        ))
        .map_err(err)?;
        Ok(SqliteStore {
            conn,
            path: path.to_path_buf(),
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
    fn last_seq(&mut self) -> Result<u64, StoreError> {
        self.conn
            .query_row("SELECT COALESCE(MAX(seq), 0) FROM messages", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|v| v as u64)
            .map_err(|e| self.err(e))
    }

    fn append(&mut self, batch: &[&Event]) -> Result<(), StoreError> {
        if batch.is_empty() {
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
                insert
                    .execute(params![
                        e.seq as i64,
                        e.ts,
                        e.room.as_deref().unwrap_or(""),
                        e.kind.as_str(),
                        &*e.nick,
                        &*e.text
                    ])
                    .map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }

    fn recent(&mut self, room: &str, n: usize) -> Result<Vec<Event>, StoreError> {
        read_recent(&self.conn, room, n).map_err(|e| self.err(e))
    }
}

fn read_recent(conn: &Connection, room: &str, n: usize) -> Result<Vec<Event>, rusqlite::Error> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, ts, kind, nick, text FROM messages WHERE room = ?1 ORDER BY seq DESC LIMIT ?2",
    )?;
    let room: Arc<str> = Arc::from(room);
    let rows = stmt.query_map(params![&*room, n as i64], |r| {
        let kind: String = r.get(2)?;
        let nick: String = r.get(3)?;
        let text: String = r.get(4)?;
        Ok(Event::at(
            r.get::<_, i64>(0)? as u64,
            r.get(1)?,
            Kind::parse(&kind).unwrap_or(Kind::Message),
            Some(room.clone()),
            Arc::from(nick),
            None,
            Arc::from(text),
        ))
    })?;
    let mut events = rows.collect::<Result<Vec<_>, _>>()?;
    events.reverse();
    Ok(events)
}

/// Reads a room's history from a separate read-only connection (WAL lets readers run beside the
/// writer), for `/history` requests larger than what the hub keeps in memory.
pub fn read_history(path: &Path, room: &str, n: usize) -> Result<Vec<Event>, StoreError> {
    let err = |source| StoreError::Sqlite {
        path: path.display().to_string(),
        source,
    };
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(err)?;
    read_recent(&conn, room, n).map_err(err)
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
