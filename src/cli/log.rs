//! Everything the program writes to stderr: log events, start-up announcements and the final error
//! line, all through one writer thread behind a bounded queue.
//!
//! Why not `eprintln!` and tracing's plain stderr writer: `eprintln!` panics when stderr is a
//! closed pipe (`sockit echo 2>&1 | head -1`), and a panic in the signal task meant the server
//! never saw its SIGTERM; and a write to a full pipe nobody reads blocks the writer, so a server
//! whose log is not read would stop at its next log line. Here the callers only queue the line
//! (never waiting: when the queue is full the line is dropped and counted), and the thread does
//! the writing; once stderr is a closed pipe every line is dropped. The queue keeps the order of
//! announcements and log lines. With `--log-json` every line is a JSON object, the announcements
//! and errors included, with the text in its `message` field.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::OnceLock;
use std::time::Duration;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields};
use tracing_subscriber::fmt::{FmtContext, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

/// Default lines that may wait for stderr (`--log-queue`). Past this the program goes on and the
/// lines are lost (and counted, and the count written once stderr takes lines again).
pub const QUEUE_LINES: usize = 1024;

enum Msg {
    Line(Vec<u8>),
    Flush(SyncSender<()>),
}

static QUEUE: OnceLock<SyncSender<Msg>> = OnceLock::new();
static JSON: AtomicBool = AtomicBool::new(false);
static QUEUE_SIZE: AtomicUsize = AtomicUsize::new(QUEUE_LINES);
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// The size of the stderr queue, for other queues that feed it (the access log's).
pub fn queue_lines() -> usize {
    QUEUE_SIZE.load(Ordering::Relaxed)
}

/// Starts the writer thread with room for `queue` waiting lines. Called once, first thing in
/// `main`.
pub fn init(json: bool, queue: usize) {
    JSON.store(json, Ordering::Relaxed);
    let queue = queue.max(1);
    QUEUE_SIZE.store(queue, Ordering::Relaxed);
    let Ok(fd) = io::stderr().as_fd().try_clone_to_owned() else {
        return; // no stderr at all: every line is dropped
    };
    let (tx, rx) = sync_channel::<Msg>(queue);
    let spawned = std::thread::Builder::new()
        .name("sockit-log".into())
        .spawn(move || {
            let mut file = File::from(fd);
            let mut closed = false;
            while let Ok(msg) = rx.recv() {
                match msg {
                    Msg::Line(line) if !closed => {
                        let lost = DROPPED.swap(0, Ordering::Relaxed);
                        if lost > 0 {
                            let note = render(
                                Level::WARN,
                                &format!(
                                    "sockit: {lost} log lines lost (stderr was not keeping up)"
                                ),
                            );
                            let _ = file.write_all(note.as_bytes());
                        }
                        if let Err(e) = file.write_all(&line) {
                            // A closed pipe will not open again; other errors may pass.
                            closed = e.kind() == io::ErrorKind::BrokenPipe;
                        }
                    }
                    Msg::Line(_) => {}
                    Msg::Flush(done) => {
                        let _ = done.send(());
                    }
                }
            }
        });
    if spawned.is_ok() {
        let _ = QUEUE.set(tx);
    }
}

/// Whether lines are JSON (`--log-json`).
pub fn is_json() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// Queues `bytes` (one or more whole lines) without ever waiting.
fn queue(bytes: Vec<u8>) {
    if bytes.is_empty() {
        return;
    }
    match QUEUE.get() {
        Some(tx) => match tx.try_send(Msg::Line(bytes)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                DROPPED.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => {}
        },
        // Before `init` (or without a thread): a direct write, errors ignored.
        None => {
            let _ = io::stderr().write_all(&bytes);
        }
    }
}

/// A line as written: the text itself, or with `--log-json` a JSON object shaped like the log
/// events' (`timestamp`, `level`, `message`, `target`).
fn render(level: Level, text: &str) -> String {
    if is_json() {
        let obj = serde_json::json!({
            "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "level": level.as_str(),
            "message": text,
            "target": "sockit",
        });
        format!("{obj}\n")
    } else {
        format!("{text}\n")
    }
}

/// A start-up announcement (`sockit echo: listening on ...`): shown whatever the log level.
pub fn say(text: &str) {
    queue(render(Level::INFO, text).into_bytes());
}

/// A line already in its final form (an access log line, JSON or not), queued as it is.
pub fn raw(text: &str) {
    queue(format!("{text}\n").into_bytes());
}

/// The final error line.
pub fn error(text: &str) {
    queue(render(Level::ERROR, text).into_bytes());
}

/// How long the exit waits for the last lines to reach stderr.
pub const EXIT_FLUSH: Duration = Duration::from_millis(500);

/// Waits up to `limit` for the queued lines to be written (before the process exits). A stderr
/// that is not being read does not hold the exit up for longer than that.
pub fn flush(limit: Duration) {
    let Some(tx) = QUEUE.get() else { return };
    let (done_tx, done_rx) = sync_channel(1);
    // A full queue is a stderr that is not being read: waiting would not help.
    if tx.try_send(Msg::Flush(done_tx)).is_ok() {
        let _ = done_rx.recv_timeout(limit);
    }
}

/// tracing's writer: collects one event and queues it when dropped (tracing-subscriber writes
/// each event with one `write_all` and then drops its writer).
pub struct Stderr;

pub struct EventWriter(Vec<u8>);

impl Write for EventWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        queue(std::mem::take(&mut self.0));
    }
}

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = EventWriter;

    fn make_writer(&'a self) -> Self::Writer {
        EventWriter(Vec::with_capacity(256))
    }
}

/// The netcat's log lines, as ncat writes them: `sockit connect: connected to 127.0.0.1:9000`,
/// with `warning: ` / `error: ` in front of what went wrong, and no timestamp or module path.
pub struct NetcatStyle {
    pub tool: &'static str,
}

impl<S, N> FormatEvent<S, N> for NetcatStyle
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: format::Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        write!(writer, "sockit {}: ", self.tool)?;
        match *event.metadata().level() {
            Level::ERROR => write!(writer, "error: ")?,
            Level::WARN => write!(writer, "warning: ")?,
            _ => {}
        }
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}
