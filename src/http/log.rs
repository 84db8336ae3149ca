//! The access log: one line per request, in the common log format (what Apache, nginx and log
//! analysers read) or as JSON lines. Lines go through a bounded queue to a thread of their own, so
//! a slow or stuck log reader (a full pipe) never slows a request: when the queue is full, lines
//! are dropped and counted, and the count is written once the reader catches up.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;

use serde::Serialize;

/// Default most lines waiting for the writer thread (`--log-queue`).
pub const DEFAULT_QUEUE: usize = 8192;

/// How access log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// `host - user [time] "GET /path HTTP/1.1" status bytes "referer" "agent"` (combined).
    Common,
    /// One JSON object per line.
    Json,
}

/// One request, as logged.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    pub time: String,
    pub remote: String,
    pub user: Option<String>,
    pub method: String,
    pub path: String,
    pub protocol: &'static str,
    pub status: u16,
    /// Body bytes announced (Content-Length); `None` when streamed without one (compression).
    pub bytes: Option<u64>,
    pub referer: Option<String>,
    pub user_agent: Option<String>,
    pub duration_ms: f64,
}

impl Record {
    fn line(&self, format: LogFormat) -> String {
        match format {
            LogFormat::Json => serde_json::to_string(self).unwrap_or_default(),
            LogFormat::Common => {
                let time = chrono::DateTime::parse_from_rfc3339(&self.time)
                    .map(|t| t.format("%d/%b/%Y:%H:%M:%S %z").to_string())
                    .unwrap_or_else(|_| self.time.clone());
                let q = |s: &Option<String>| {
                    s.as_deref()
                        .map(|v| v.replace('\\', "\\\\").replace('"', "\\\""))
                        .unwrap_or_else(|| "-".into())
                };
                format!(
                    "{} - {} [{}] \"{} {} {}\" {} {} \"{}\" \"{}\"",
                    self.remote,
                    self.user.as_deref().unwrap_or("-"),
                    time,
                    self.method,
                    self.path,
                    self.protocol,
                    self.status,
                    self.bytes.map_or("-".to_string(), |b| b.to_string()),
                    q(&self.referer),
                    q(&self.user_agent),
                )
            }
        }
    }
}

/// What the access log's thread is handed: a line, or a request to say once it has written
/// everything handed before.
enum Entry {
    Line(Record),
    Flush(SyncSender<()>),
}

/// Where access log lines go. Cheap to clone.
#[derive(Clone)]
pub struct AccessLog {
    tx: SyncSender<Entry>,
    dropped: Arc<AtomicU64>,
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog").finish_non_exhaustive()
    }
}

impl AccessLog {
    /// Writes lines in `format` to `out` on a thread of its own; at most `queue` lines wait for
    /// it, more are dropped and counted.
    pub fn to_writer(format: LogFormat, mut out: Box<dyn Write + Send>, queue: usize) -> Self {
        let (tx, rx) = sync_channel::<Entry>(queue.max(1));
        let dropped = Arc::new(AtomicU64::new(0));
        let seen = dropped.clone();
        let spawned = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || {
                for entry in rx {
                    let record = match entry {
                        Entry::Line(record) => record,
                        Entry::Flush(done) => {
                            let _ = out.flush();
                            let _ = done.send(());
                            continue;
                        }
                    };
                    let lost = seen.swap(0, Ordering::Relaxed);
                    if lost > 0 {
                        let _ = writeln!(
                            out,
                            "(access log: {lost} lines dropped, the log was not read fast enough)"
                        );
                    }
                    if writeln!(out, "{}", record.line(format)).is_err() {
                        break;
                    }
                    let _ = out.flush();
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the access log thread; no access log");
        }
        AccessLog { tx, dropped }
    }

    /// Hands each line (without its newline) to `sink` on a thread of its own: for a program
    /// that has its own non-blocking log writer (the `sockit` binary's).
    pub fn to_sink(format: LogFormat, sink: impl Fn(&str) + Send + 'static, queue: usize) -> Self {
        struct Sink<F>(F, Vec<u8>);
        impl<F: Fn(&str)> Write for Sink<F> {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.1.extend_from_slice(buf);
                while let Some(end) = self.1.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = self.1.drain(..=end).collect();
                    (self.0)(String::from_utf8_lossy(&line[..end]).as_ref());
                }
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        Self::to_writer(format, Box::new(Sink(sink, Vec::new())), queue)
    }

    /// To standard error, where sockit's servers log.
    pub fn stderr(format: LogFormat) -> Self {
        Self::to_writer(format, Box::new(std::io::stderr()), DEFAULT_QUEUE)
    }

    /// Waits up to `limit` for the lines queued so far to be written (before the program exits:
    /// lines still queued then would be lost without a word). A full queue is a log that is not
    /// being read, which waiting would not help.
    pub fn flush(&self, limit: std::time::Duration) {
        let (done_tx, done_rx) = sync_channel(1);
        if self.tx.try_send(Entry::Flush(done_tx)).is_ok() {
            let _ = done_rx.recv_timeout(limit);
        }
    }

    /// Queues one line; never waits.
    pub fn record(&self, record: Record) {
        match self.tx.try_send(Entry::Line(record)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}
