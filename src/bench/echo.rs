//! `sockit bench echo`: drives an echo server with many connections and measures what comes back.
//!
//! - **pingpong**: each connection sends `size` bytes, reads exactly `size` back, checks them, and
//!   repeats; every round trip's latency goes into the histogram.
//! - **stream**: each connection writes continuously while a second task reads the echo back and
//!   checks it; the figure is bytes echoed per second.
//!
//! Connections are opened first; then a warm-up (not counted), then the measured window. A round
//! trip or read counts if it completes inside the window. The run is bounded in time (each
//! connection stops at the window's end; one stuck in a read is abandoned after a grace period) and
//! optionally in count (`max_round_trips` per connection).

use std::sync::Arc;
use std::time::Duration;

use futures::stream::{self, StreamExt};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::task::AbortOnDropHandle;

use super::report::{
    format_rate, format_us, CpuTime, CpuUsage, Latencies, LatencyRecorder, LatencySummary, Table,
};
use super::BenchError;
use crate::net::{self, ConnectOptions, Endpoint, Stream};

/// The echo server the benchmark targets unless told otherwise (`sockit echo`'s default).
pub const DEFAULT_TARGET: &str = "127.0.0.1:9001";
/// Message size in pingpong mode: a small request, where per-message cost dominates.
pub const DEFAULT_PINGPONG_SIZE: usize = 64;
/// Write size in stream mode: big writes, where copying and the kernel dominate (iperf3's default).
pub const DEFAULT_STREAM_SIZE: usize = 128 * 1024;
/// How long connections still in flight at the end get to finish before they are abandoned.
const GRACE: Duration = Duration::from_secs(2);
/// Connections opened at once, so ten thousand do not all hit the listen backlog in one instant.
const CONNECT_CONCURRENCY: usize = 256;
/// Period of the byte pattern sent: a prime, so that it never lines up with buffer sizes and a
/// server that repeats or drops a buffer is caught.
const PATTERN_PERIOD: usize = 251;
/// Read buffer of the stream-mode reader (as big as iperf3's).
const STREAM_READ_BUF: usize = 128 * 1024;

/// How the connections use the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Request/response: send, wait for the echo, repeat.
    Pingpong,
    /// Both directions at once, as fast as they go.
    Stream,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "pingpong" | "ping-pong" | "pp" => Ok(Mode::Pingpong),
            "stream" => Ok(Mode::Stream),
            _ => Err(format!("{s:?} is not a mode (pingpong or stream)")),
        }
    }
}

/// A validated echo benchmark.
#[derive(Debug, Clone)]
pub struct EchoBenchConfig {
    pub target: Endpoint,
    pub connections: usize,
    /// Bytes per message (pingpong) or per write (stream).
    pub size: usize,
    pub mode: Mode,
    /// The measured window.
    pub duration: Duration,
    /// Load before the window opens, not counted (lets the server and caches settle).
    pub warmup: Duration,
    /// Stop each connection after this many round trips (pingpong), counted from the start.
    pub max_round_trips: Option<u64>,
    pub connect: ConnectOptions,
}

impl EchoBenchConfig {
    /// A pingpong benchmark of `target` with the defaults of `sockit bench echo`.
    pub fn new(target: Endpoint) -> Self {
        EchoBenchConfig {
            target,
            connections: 64,
            size: DEFAULT_PINGPONG_SIZE,
            mode: Mode::Pingpong,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(1),
            max_round_trips: None,
            connect: ConnectOptions {
                timeout: Some(Duration::from_secs(10)),
                ..ConnectOptions::default()
            },
        }
    }

    fn validate(&self) -> Result<(), BenchError> {
        if self.connections == 0 {
            return Err(BenchError::Config(
                "at least one connection is needed".into(),
            ));
        }
        if self.size == 0 {
            return Err(BenchError::Config(
                "messages must be at least one byte".into(),
            ));
        }
        if self.duration.is_zero() {
            return Err(BenchError::Config("the duration must be above zero".into()));
        }
        Ok(())
    }
}

/// What an echo benchmark measured.
#[derive(Debug, Clone, Serialize)]
pub struct EchoReport {
    pub target: String,
    pub mode: Mode,
    pub connections: usize,
    /// Connections that were opened (the rest failed; see `connect_errors`).
    pub connected: usize,
    pub size: usize,
    /// The measured window in seconds (warm-up excluded).
    pub duration_secs: f64,
    pub warmup_secs: f64,
    pub threads: usize,
    /// Completed round trips in the window (pingpong; 0 in stream mode).
    pub round_trips: u64,
    pub round_trips_per_sec: f64,
    /// Echoed bytes received in the window.
    pub bytes: u64,
    /// Echoed bytes received per second, in MB (10^6 bytes).
    pub mb_per_sec: f64,
    /// Round-trip latency (pingpong only).
    pub latency: Option<LatencySummary>,
    pub connect_errors: u64,
    /// Connections that failed after opening: reset, closed early, wrong bytes echoed, stuck.
    pub errors: u64,
    /// The first failure, in words.
    pub first_error: Option<String>,
    /// This process's CPU use over the window (per round trip in pingpong mode).
    pub client_cpu: CpuUsage,
}

impl EchoReport {
    /// The report as a table for people.
    pub fn table(&self) -> Table {
        let what = match self.mode {
            Mode::Pingpong => "pingpong",
            Mode::Stream => "stream",
        };
        let mut t = Table::new(format!(
            "sockit bench echo: {} {what}, {} connections x {} B, {:.1} s after {:.1} s warm-up, {} threads",
            self.target, self.connections, self.size, self.duration_secs, self.warmup_secs, self.threads
        ));
        if self.mode == Mode::Pingpong {
            t.row("round trips/s", format_rate(self.round_trips_per_sec));
        }
        t.row("MB/s echoed", format!("{:.2}", self.mb_per_sec));
        if self.mode == Mode::Pingpong {
            t.latency_rows("latency", self.latency.as_ref());
        }
        let mut errors = format!("{} (connect {})", self.errors, self.connect_errors);
        if let Some(first) = &self.first_error {
            errors.push_str(&format!(", first: {first}"));
        }
        t.row("errors", errors);
        let mut cpu = format!("{:.1} %", self.client_cpu.percent);
        if let Some(per) = self.client_cpu.us_per_op {
            cpu.push_str(&format!(" ({} per round trip)", format_us_fine(per)));
        }
        t.row("client CPU", cpu);
        t
    }
}

fn format_us_fine(us: f64) -> String {
    if us < 100.0 {
        format!("{us:.2} µs")
    } else {
        format_us(us)
    }
}

/// The measured window, shared by every connection task.
#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    end: Instant,
}

impl Window {
    fn contains(&self, t: Instant) -> bool {
        t >= self.start && t < self.end
    }
}

/// What one connection did.
#[derive(Debug, Default)]
struct ConnStats {
    round_trips: u64,
    bytes: u64,
    error: Option<String>,
}

/// Runs the benchmark on the current runtime (see [`super::on_own_runtime`] to pick the threads).
/// Connection failures are counted in the report; only "no connection at all" is an error.
pub async fn run(config: EchoBenchConfig, threads: usize) -> Result<EchoReport, BenchError> {
    config.validate()?;
    let config = Arc::new(config);
    let pattern: Arc<[u8]> = (0..PATTERN_PERIOD + config.size.max(STREAM_READ_BUF))
        .map(|i| (i % PATTERN_PERIOD) as u8)
        .collect();

    let (streams, connect_errors, first_connect_error) = open_all(&config).await;
    if streams.is_empty() {
        return Err(BenchError::Connect(first_connect_error.unwrap_or_else(
            || net::NetError::io("connecting", std::io::Error::other("no connection")),
        )));
    }
    let connected = streams.len();

    let begin = Instant::now();
    let window = Window {
        start: begin + config.warmup,
        end: begin + config.warmup + config.duration,
    };
    let latencies = Latencies::new();
    let mut tasks = JoinSet::new();
    for stream in streams {
        match config.mode {
            Mode::Pingpong => {
                let payload = pattern.clone();
                let recorder = latencies.recorder();
                let (size, max) = (config.size, config.max_round_trips);
                tasks.spawn(pingpong(stream, payload, size, window, max, recorder));
            }
            Mode::Stream => {
                tasks.spawn(stream_both_ways(
                    stream,
                    pattern.clone(),
                    config.size,
                    window,
                ));
            }
        }
    }

    tokio::time::sleep_until(window.start).await;
    let cpu_before = CpuTime::now();
    tokio::time::sleep_until(window.end).await;
    let cpu_after = CpuTime::now();

    let mut total = ConnStats::default();
    let mut errors = 0u64;
    let mut first_error = first_connect_error.as_ref().map(|e| e.to_string());
    let mut note = |total: &mut ConnStats, stats: ConnStats| {
        total.round_trips += stats.round_trips;
        total.bytes += stats.bytes;
        if let Some(e) = stats.error {
            errors += 1;
            first_error.get_or_insert(e);
        }
    };
    let deadline = window.end + GRACE;
    loop {
        match tokio::time::timeout_at(deadline, tasks.join_next()).await {
            Ok(Some(Ok(stats))) => note(&mut total, stats),
            Ok(Some(Err(e))) => note(
                &mut total,
                ConnStats {
                    error: Some(format!("connection task failed: {e}")),
                    ..ConnStats::default()
                },
            ),
            Ok(None) => break,
            Err(_) => {
                let stuck = tasks.len();
                tasks.abort_all();
                for _ in 0..stuck {
                    note(
                        &mut total,
                        ConnStats {
                            error: Some(format!("no answer within {GRACE:?} after the end")),
                            ..ConnStats::default()
                        },
                    );
                }
                break;
            }
        }
    }
    // Aborted tasks drop their recorders, which flushes them.
    while tasks.join_next().await.is_some() {}

    let secs = config.duration.as_secs_f64();
    let ops = match config.mode {
        Mode::Pingpong => total.round_trips,
        Mode::Stream => 0,
    };
    Ok(EchoReport {
        target: config.target.to_string(),
        mode: config.mode,
        connections: config.connections,
        connected,
        size: config.size,
        duration_secs: secs,
        warmup_secs: config.warmup.as_secs_f64(),
        threads,
        round_trips: total.round_trips,
        round_trips_per_sec: total.round_trips as f64 / secs,
        bytes: total.bytes,
        mb_per_sec: total.bytes as f64 / secs / 1e6,
        latency: latencies.summary(),
        connect_errors,
        errors,
        first_error,
        client_cpu: cpu_after.usage_since(&cpu_before, config.duration, ops),
    })
}

/// Opens every connection, a bounded number at a time. Returns the streams, the number of
/// failures and the first failure.
async fn open_all(config: &EchoBenchConfig) -> (Vec<Stream>, u64, Option<net::NetError>) {
    let mut attempts = stream::iter(0..config.connections)
        .map(|_| net::connect(&config.target, &config.connect))
        .buffer_unordered(CONNECT_CONCURRENCY);
    let mut streams = Vec::with_capacity(config.connections);
    let mut failures = 0u64;
    let mut first = None;
    while let Some(result) = attempts.next().await {
        match result {
            Ok(s) => streams.push(s),
            Err(e) => {
                failures += 1;
                first.get_or_insert(e);
            }
        }
    }
    (streams, failures, first)
}

/// Send `size` bytes, read exactly `size` back, check them, repeat until the window ends.
async fn pingpong(
    mut stream: Stream,
    pattern: Arc<[u8]>,
    size: usize,
    window: Window,
    max_round_trips: Option<u64>,
    mut latencies: LatencyRecorder,
) -> ConnStats {
    let payload = &pattern[..size];
    let mut buf = vec![0u8; size];
    let mut stats = ConnStats::default();
    let mut done = 0u64;
    let limit = max_round_trips.unwrap_or(u64::MAX);
    while done < limit {
        let sent = Instant::now();
        if sent >= window.end {
            break;
        }
        if let Err(e) = stream.write_all(payload).await {
            stats.error = Some(format!("write failed: {e}"));
            break;
        }
        if let Err(e) = stream.read_exact(&mut buf).await {
            stats.error = Some(if e.kind() == std::io::ErrorKind::UnexpectedEof {
                "the server closed the connection".to_string()
            } else {
                format!("read failed: {e}")
            });
            break;
        }
        let back = Instant::now();
        if buf != payload {
            stats.error = Some("the server echoed different bytes".into());
            break;
        }
        done += 1;
        if window.contains(back) {
            stats.round_trips += 1;
            stats.bytes += size as u64;
            latencies.record(back - sent);
        }
    }
    let _ = stream.shutdown().await;
    stats
}

/// Writes continuously on one task and reads the echo on another until the window ends; then
/// half-closes and drains the echo to EOF.
async fn stream_both_ways(
    stream: Stream,
    pattern: Arc<[u8]>,
    size: usize,
    window: Window,
) -> ConnStats {
    // Owned TCP halves need no lock between the two tasks; other transports share one.
    let (stats, write_err) = match stream {
        Stream::Tcp(tcp) => {
            let (r, w) = tcp.into_split();
            two_tasks(r, w, pattern, size, window).await
        }
        other => {
            let (r, w) = tokio::io::split(other);
            two_tasks(r, w, pattern, size, window).await
        }
    };
    let mut stats = stats;
    if stats.error.is_none() {
        stats.error = write_err;
    }
    stats
}

async fn two_tasks<R, W>(
    reader: R,
    writer: W,
    pattern: Arc<[u8]>,
    size: usize,
    window: Window,
) -> (ConnStats, Option<String>)
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    // Aborted with this task if the connection is abandoned, so no writer outlives the benchmark.
    let writing = AbortOnDropHandle::new(tokio::spawn(write_until(
        writer,
        pattern.clone(),
        size,
        window,
    )));
    let stats = read_checking(reader, pattern, window).await;
    // The reader ends at EOF, which the server sends after the writer's half-close, or on an
    // error, which also fails the writer's next write.
    let write_err = match writing.await {
        Ok(r) => r.err(),
        Err(e) => Some(format!("writer task failed: {e}")),
    };
    (stats, write_err)
}

async fn write_until<W: AsyncWrite + Unpin>(
    mut writer: W,
    pattern: Arc<[u8]>,
    size: usize,
    window: Window,
) -> Result<(), String> {
    let mut offset = 0usize;
    while Instant::now() < window.end {
        let start = offset % PATTERN_PERIOD;
        writer
            .write_all(&pattern[start..start + size])
            .await
            .map_err(|e| format!("write failed: {e}"))?;
        offset += size;
    }
    writer
        .shutdown()
        .await
        .map_err(|e| format!("half-close failed: {e}"))
}

async fn read_checking<R: AsyncRead + Unpin>(
    mut reader: R,
    pattern: Arc<[u8]>,
    window: Window,
) -> ConnStats {
    let mut buf = vec![0u8; STREAM_READ_BUF];
    let mut stats = ConnStats::default();
    let mut offset = 0usize;
    loop {
        let n = match reader.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                stats.error = Some(format!("read failed: {e}"));
                break;
            }
        };
        let start = offset % PATTERN_PERIOD;
        if buf[..n] != pattern[start..start + n] {
            stats.error = Some("the server echoed different bytes".into());
            break;
        }
        offset += n;
        if window.contains(Instant::now()) {
            stats.bytes += n as u64;
        }
    }
    stats
}
