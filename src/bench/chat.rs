//! `sockit bench chat`: N clients in R rooms, M of them sending at a given rate, for a given time.
//! Reports delivered messages/s, delivery latency (each message carries its send time) and errors.
//!
//! It speaks plain lines, so it measures any line-based chat server: sockit's, `ncat --chat`, an IRC
//! bouncer's raw port. A message is `BENCH <sender> <seq> <sent-ns>`; receivers find `BENCH ` anywhere
//! in a line (servers prefix nicks and times), so the server's own formatting does not matter.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::report::{format_rate, CpuTime, CpuUsage, Latencies, LatencySummary, Table};
use super::BenchError;
use crate::net::{self, ConnectOptions, Endpoint};

/// The chat server's default address.
pub const DEFAULT_TARGET: &str = "127.0.0.1:9003";

/// Connections opened at once while setting up: enough to be quick, few enough that a server with
/// a short accept backlog (ncat's) does not drop SYNs.
const CONNECT_PARALLEL: usize = 32;

/// A validated chat benchmark.
#[derive(Debug, Clone)]
pub struct ChatBenchConfig {
    pub target: Endpoint,
    /// Clients connected for the whole run.
    pub clients: usize,
    /// Rooms the clients are spread over (client i is in room i mod R). With 1 room nobody
    /// changes room, so servers without rooms (ncat --chat) can be measured.
    pub rooms: usize,
    /// How many of the clients send (spread over the rooms the same way).
    pub senders: usize,
    /// Lines per second per sender; 0 sends as fast as the server takes them.
    pub rate: f64,
    /// Time measured.
    pub duration: Duration,
    /// Sending before the measurement starts, not counted.
    pub warmup: Duration,
    /// Time after all clients connected before anyone sends (joins, welcome floods settle).
    pub settle: Duration,
    /// Time after sending stops for messages still on their way.
    pub grace: Duration,
    pub connect: ConnectOptions,
}

impl ChatBenchConfig {
    /// The reference load: 1000 clients in one room, 10 senders at 10 lines/s.
    pub fn new(target: Endpoint) -> Self {
        ChatBenchConfig {
            target,
            clients: 1000,
            rooms: 1,
            senders: 10,
            rate: 10.0,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(1),
            settle: Duration::from_secs(1),
            grace: Duration::from_secs(2),
            connect: ConnectOptions {
                timeout: Some(Duration::from_secs(10)),
                ..ConnectOptions::default()
            },
        }
    }

    fn validate(&self) -> Result<(), BenchError> {
        if self.clients == 0 || self.rooms == 0 {
            return Err(BenchError::Config(
                "clients and rooms must be at least 1".into(),
            ));
        }
        if self.senders > self.clients {
            return Err(BenchError::Config("more senders than clients".into()));
        }
        if !(self.rate >= 0.0 && self.rate.is_finite()) {
            return Err(BenchError::Config(
                "rate must be 0 or more lines per second".into(),
            ));
        }
        if self.duration.is_zero() {
            return Err(BenchError::Config("duration must be more than 0".into()));
        }
        Ok(())
    }
}

/// What a chat benchmark measured.
#[derive(Debug, Clone, Serialize)]
pub struct ChatReport {
    pub target: String,
    pub clients: usize,
    pub connected: usize,
    pub rooms: usize,
    pub senders: usize,
    pub rate_per_sender: f64,
    pub duration_secs: f64,
    pub threads: usize,
    /// Messages sent during the measured time.
    pub sent: u64,
    /// Deliveries to other members that the sent messages called for.
    pub expected: u64,
    /// Of those, how many arrived (before the grace time ran out).
    pub delivered: u64,
    pub offered_per_sec: f64,
    pub delivered_per_sec: f64,
    /// delivered / expected.
    pub delivery_ratio: f64,
    /// Deliveries of a sender's own messages back to it (sockit does this; ncat does not).
    pub echoed_to_sender: u64,
    /// Send-to-receive latency of every delivery counted.
    pub latency: Option<LatencySummary>,
    pub connect_errors: u64,
    /// Clients the server disconnected during the run.
    pub disconnects: u64,
    /// Lines with `BENCH ` that could not be parsed (a server that splits lines).
    pub garbled: u64,
    pub first_error: Option<String>,
    pub client_cpu: CpuUsage,
}

impl ChatReport {
    /// The report as a table for people.
    pub fn table(&self) -> Table {
        let mut t = Table::new(format!(
            "sockit bench chat {}: {} clients ({} connected) in {} room(s), {} senders at {}, {:.1} s",
            self.target,
            self.clients,
            self.connected,
            self.rooms,
            self.senders,
            if self.rate_per_sender > 0.0 {
                format!("{} lines/s", self.rate_per_sender)
            } else {
                "full speed".into()
            },
            self.duration_secs
        ));
        t.row("messages sent", self.sent.to_string())
            .row("deliveries offered/s", format_rate(self.offered_per_sec))
            .row("deliveries/s", format_rate(self.delivered_per_sec))
            .row(
                "delivered",
                format!(
                    "{} of {} ({:.1} %)",
                    self.delivered,
                    self.expected,
                    self.delivery_ratio * 100.0
                ),
            )
            .row("echoed to sender", self.echoed_to_sender.to_string())
            .latency_rows("latency", self.latency.as_ref())
            .row(
                "errors",
                format!(
                    "{} connect, {} disconnected, {} garbled",
                    self.connect_errors, self.disconnects, self.garbled
                ),
            )
            .row(
                "client CPU",
                format!(
                    "{:.0} % ({:.2} s user, {:.2} s sys)",
                    self.client_cpu.percent, self.client_cpu.user_secs, self.client_cpu.sys_secs
                ),
            );
        if let Some(e) = &self.first_error {
            t.row("first error", e.clone());
        }
        t
    }
}

/// Counters every client task adds to.
#[derive(Debug, Default)]
struct Counters {
    delivered: AtomicU64,
    echoed: AtomicU64,
    disconnects: AtomicU64,
    garbled: AtomicU64,
}

/// The measured window, as nanoseconds since the run's epoch.
#[derive(Debug, Clone, Copy)]
struct Window {
    epoch: Instant,
    from_ns: u64,
    to_ns: u64,
}

impl Window {
    fn contains(&self, ns: u64) -> bool {
        ns >= self.from_ns && ns < self.to_ns
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// Runs the benchmark on this runtime (use [`super::on_own_runtime`] to give it its own threads).
pub async fn run(config: ChatBenchConfig, threads: usize) -> Result<ChatReport, BenchError> {
    config.validate()?;
    let config = Arc::new(config);

    // Connect everyone, a bounded number at a time.
    let gate = Arc::new(Semaphore::new(CONNECT_PARALLEL));
    let mut connecting = JoinSet::new();
    for i in 0..config.clients {
        let gate = gate.clone();
        let config = config.clone();
        connecting.spawn(async move {
            let _slot = gate.acquire().await;
            (i, net::connect(&config.target, &config.connect).await)
        });
    }
    let mut streams = Vec::with_capacity(config.clients);
    let mut connect_errors = 0u64;
    let mut first_error = None;
    // The whole connect phase is bounded too: a server that stops accepting (ncat blocked in a
    // broadcast) must not hold the benchmark for clients × timeout.
    let deadline =
        tokio::time::Instant::now() + config.connect.timeout.unwrap_or(Duration::from_secs(30)) * 3;
    loop {
        let joined = match tokio::time::timeout_at(deadline, connecting.join_next()).await {
            Ok(Some(joined)) => joined,
            Ok(None) => break,
            Err(_) => {
                let left = connecting.len() as u64;
                connecting.abort_all();
                connect_errors += left;
                first_error.get_or_insert_with(|| {
                    format!("{left} clients still not connected when the connect phase ended")
                });
                break;
            }
        };
        match joined {
            Ok((i, Ok(stream))) => streams.push((i, stream)),
            Ok((_, Err(e))) => {
                connect_errors += 1;
                first_error.get_or_insert_with(|| e.to_string());
            }
            Err(e) => {
                connect_errors += 1;
                first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    if streams.is_empty() {
        return Err(BenchError::Config(format!(
            "no client could connect to {}: {}",
            config.target,
            first_error.unwrap_or_default()
        )));
    }
    let connected = streams.len();
    let mut room_size = vec![0u64; config.rooms];
    for (i, _) in &streams {
        room_size[i % config.rooms] += 1;
    }

    let epoch = Instant::now();
    let start = config.settle;
    let from = start + config.warmup;
    let to = from + config.duration;
    let window = Window {
        epoch,
        from_ns: from.as_nanos() as u64,
        to_ns: to.as_nanos() as u64,
    };
    let counters = Arc::new(Counters::default());
    let latencies = Latencies::new();
    let sent_total = Arc::new(AtomicU64::new(0));
    let sent_expected = Arc::new(AtomicU64::new(0));
    let cpu_before = CpuTime::now();

    let mut tasks = JoinSet::new();
    for (i, stream) in streams {
        let room = i % config.rooms;
        let sender = i < config.senders;
        let (reader, mut writer) = tokio::io::split(stream);
        let counters = counters.clone();
        let mut recorder = latencies.recorder();
        let others = room_size[room].saturating_sub(1);
        let config = config.clone();
        let sent_total = sent_total.clone();
        let sent_expected = sent_expected.clone();
        tasks.spawn(async move {
            if config.rooms > 1 {
                let _ = writer
                    .write_all(format!("/join bench-{room}\n").as_bytes())
                    .await;
            }
            let read = async {
                let mut reader = BufReader::new(reader);
                let mut line = Vec::with_capacity(256);
                loop {
                    line.clear();
                    match reader.read_until(b'\n', &mut line).await {
                        Ok(0) | Err(_) => {
                            counters.disconnects.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                        Ok(_) => {}
                    }
                    let Some(at) = find(&line, b"BENCH ") else {
                        continue;
                    };
                    let now = window.now_ns();
                    match parse(&line[at + 6..]) {
                        Some((from_id, sent_ns)) if window.contains(sent_ns) => {
                            if from_id == i as u64 {
                                counters.echoed.fetch_add(1, Ordering::Relaxed);
                            } else {
                                counters.delivered.fetch_add(1, Ordering::Relaxed);
                                recorder.record(Duration::from_nanos(now.saturating_sub(sent_ns)));
                            }
                        }
                        Some(_) => {}
                        None => {
                            counters.garbled.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            };
            let send = async {
                if !sender {
                    return std::future::pending::<()>().await;
                }
                // Senders start spread over one interval, as independent people would be; started
                // together, every tick would be a burst of `senders` messages at once.
                let phase = if config.rate > 0.0 {
                    Duration::from_secs_f64(i as f64 / config.senders as f64 / config.rate)
                } else {
                    Duration::ZERO
                };
                tokio::time::sleep_until((epoch + start + phase).into()).await;
                let mut tick = (config.rate > 0.0).then(|| {
                    let mut t = tokio::time::interval(Duration::from_secs_f64(1.0 / config.rate));
                    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                    t
                });
                let mut seq = 0u64;
                loop {
                    if let Some(t) = tick.as_mut() {
                        t.tick().await;
                    }
                    let now = window.now_ns();
                    if now >= window.to_ns {
                        break;
                    }
                    seq += 1;
                    let msg = format!("BENCH {i} {seq} {now}\n");
                    if writer.write_all(msg.as_bytes()).await.is_err() {
                        break;
                    }
                    if window.contains(now) {
                        sent_total.fetch_add(1, Ordering::Relaxed);
                        sent_expected.fetch_add(others, Ordering::Relaxed);
                    }
                }
                std::future::pending::<()>().await
            };
            tokio::select! {
                _ = read => {}
                _ = send => {}
            }
        });
    }

    tokio::time::sleep_until((epoch + to + config.grace).into()).await;
    let cpu = CpuTime::now().usage_since(&cpu_before, epoch.elapsed(), 0);
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}

    let secs = config.duration.as_secs_f64();
    let sent = sent_total.load(Ordering::Relaxed);
    let expected = sent_expected.load(Ordering::Relaxed);
    let delivered = counters.delivered.load(Ordering::Relaxed);
    Ok(ChatReport {
        target: config.target.to_string(),
        clients: config.clients,
        connected,
        rooms: config.rooms,
        senders: config.senders,
        rate_per_sender: config.rate,
        duration_secs: secs,
        threads,
        sent,
        expected,
        delivered,
        offered_per_sec: expected as f64 / secs,
        delivered_per_sec: delivered as f64 / secs,
        delivery_ratio: if expected > 0 {
            delivered as f64 / expected as f64
        } else {
            0.0
        },
        echoed_to_sender: counters.echoed.load(Ordering::Relaxed),
        latency: latencies.summary(),
        connect_errors,
        disconnects: counters.disconnects.load(Ordering::Relaxed),
        garbled: counters.garbled.load(Ordering::Relaxed),
        first_error,
        client_cpu: cpu,
    })
}

/// Where `BENCH ` starts in a line. The load generator reads millions of lines a second at
/// saturation, so the search is memchr's SIMD one rather than a byte-window scan.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, needle)
}

/// Parses `<sender> <seq> <sent-ns>` at the start of `rest`.
fn parse(rest: &[u8]) -> Option<(u64, u64)> {
    let text = std::str::from_utf8(rest).ok()?;
    let mut fields = text.split_ascii_whitespace();
    let sender = fields.next()?.parse().ok()?;
    let _seq: u64 = fields.next()?.parse().ok()?;
    let sent = fields.next()?.parse().ok()?;
    Some((sender, sent))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_messages_in_any_server_format() {
        let line = b"[12:00:00] <guest1> BENCH 3 17 123456\r\n";
        let at = find(line, b"BENCH ").unwrap();
        assert_eq!(parse(&line[at + 6..]), Some((3, 123456)));
        let ncat = b"<user5> BENCH 9 1 42\n";
        let at = find(ncat, b"BENCH ").unwrap();
        assert_eq!(parse(&ncat[at + 6..]), Some((9, 42)));
        assert_eq!(parse(b"3 x"), None);
    }
}
