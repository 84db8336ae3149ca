//! `sockit bench chat`: N clients in R rooms, M of them sending at a given rate, for a given time.
//! Reports delivered messages/s, delivery latency (each message carries its send time) and errors.
//!
//! It speaks plain lines, so it measures any line-based chat server: sockit's, `ncat --chat`, an IRC
//! bouncer's raw port. A message is `BENCH <sender> <seq> <sent-ns>`; receivers find `BENCH ` anywhere
//! in a line (servers prefix nicks and times), so the server's own formatting does not matter.
//!
//! A client counts as connected once the server has greeted it, and reads from that moment on (a
//! server that announces every arrival to everyone must never find full sockets). With
//! `--server-pid` the server's CPU over the measured window is read from `/proc`, and divided by the
//! deliveries: CPU per delivery is what one core of the server can do, whichever side is the
//! bottleneck on a small machine.

use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, WriteHalf};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use super::report::{
    format_rate, CpuTime, CpuUsage, Latencies, LatencyRecorder, LatencySummary, Table,
};
use super::BenchError;
use crate::net::{self, ConnectOptions, Endpoint, Stream};

/// The chat server's default address.
pub const DEFAULT_TARGET: &str = "127.0.0.1:9003";

/// Clients joining at once while setting up (each holds its place until the server greets it):
/// enough to be quick against a server that greets after a pause (sockit waits 150 ms for a JSON
/// hello). A server with a short accept backlog (ncat's is 10) needs fewer: see
/// [`ChatBenchConfig::connect_parallel`].
pub const CONNECT_PARALLEL: usize = 64;

/// Receive buffer per client. At saturation a client reads hundreds of lines per call; a large
/// buffer means fewer reads, and the load generator must stay cheaper than the server it measures.
const READ_CHUNK: usize = 64 * 1024;

/// Longest line the load generator keeps looking for a newline in; anything longer is counted as
/// garbled and dropped.
const MAX_LINE: usize = 64 * 1024;

/// A validated chat benchmark.
#[derive(Debug, Clone)]
pub struct ChatBenchConfig {
    /// The server, or the nodes of a cluster: client i connects to `targets[i % len]`.
    pub targets: Vec<Endpoint>,
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
    /// Count a client as connected only once the server has sent it something (its welcome). A
    /// server with a full accept queue can leave a client connected in the kernel that it never
    /// accepted; without this such clients count as members that receive nothing.
    pub await_greeting: bool,
    /// Clients connecting at once. More than the server's accept backlog and SYNs are dropped and
    /// retried after seconds; a client that then gives up makes ncat --chat quit ("getpeername
    /// failed ... QUITTING"), so against ncat keep this under its backlog of 10.
    pub connect_parallel: usize,
    /// The server's process, if it runs on this machine: its CPU time over the measured window is
    /// reported (and per delivery, which says what one core of it can do whatever the load).
    pub server_pid: Option<u32>,
    pub connect: ConnectOptions,
}

impl ChatBenchConfig {
    /// The reference load: 1000 clients in one room, 10 senders at 10 lines/s.
    pub fn new(target: Endpoint) -> Self {
        ChatBenchConfig {
            targets: vec![target],
            clients: 1000,
            rooms: 1,
            senders: 10,
            rate: 10.0,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(1),
            settle: Duration::from_secs(1),
            grace: Duration::from_secs(2),
            await_greeting: true,
            connect_parallel: CONNECT_PARALLEL,
            server_pid: None,
            connect: ConnectOptions {
                timeout: Some(Duration::from_secs(10)),
                ..ConnectOptions::default()
            },
        }
    }

    /// The servers, as the report names them (comma separated).
    fn target_list(&self) -> String {
        let names: Vec<String> = self.targets.iter().map(|t| t.to_string()).collect();
        names.join(",")
    }

    fn validate(&self) -> Result<(), BenchError> {
        if self.targets.is_empty() {
            return Err(BenchError::Config("no server to load".into()));
        }
        if self.clients == 0 || self.rooms == 0 || self.connect_parallel == 0 {
            return Err(BenchError::Config(
                "clients, rooms and connections at once must be at least 1".into(),
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
    /// The server's CPU from the start of the measured window to the end of the grace time, per
    /// delivery in `us_per_op` (with `--server-pid`; missing if the process could not be read at
    /// both ends).
    pub server_cpu: Option<CpuUsage>,
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
        if let Some(c) = &self.server_cpu {
            t.row(
                "server CPU",
                match c.us_per_op {
                    Some(us) => format!("{:.0} % ({us:.3} µs per delivery)", c.percent),
                    None => format!("{:.0} % (nothing delivered)", c.percent),
                },
            );
        }
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

impl Counters {
    fn add(&self, t: &Tally) {
        for (counter, n) in [
            (&self.delivered, t.delivered),
            (&self.echoed, t.echoed),
            (&self.garbled, t.garbled),
        ] {
            if n > 0 {
                counter.fetch_add(n, Ordering::Relaxed);
            }
        }
    }
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

/// What every client learns once all have connected: when the run starts and how big its room is.
#[derive(Debug)]
struct Go {
    window: Window,
    start: Duration,
    room_size: Vec<u64>,
}

/// Runs the benchmark on this runtime (use [`super::on_own_runtime`] to give it its own threads).
pub async fn run(config: ChatBenchConfig, threads: usize) -> Result<ChatReport, BenchError> {
    config.validate()?;
    let config = Arc::new(config);
    let counters = Arc::new(Counters::default());
    let latencies = Latencies::new();
    let sent_total = Arc::new(AtomicU64::new(0));
    let sent_expected = Arc::new(AtomicU64::new(0));
    let (go_tx, go_rx) = watch::channel(None::<Arc<Go>>);

    // Connect everyone, a bounded number at a time. Each client starts reading as soon as it is
    // in: a server that broadcasts every arrival (ncat) must not find a thousand full sockets.
    let gate = Arc::new(Semaphore::new(config.connect_parallel));
    let mut connecting = JoinSet::new();
    for i in 0..config.clients {
        let gate = gate.clone();
        let config = config.clone();
        connecting.spawn(async move {
            let _slot = gate.acquire().await;
            (i, open(&config, i).await)
        });
    }
    let mut tasks = JoinSet::new();
    let mut members = Vec::with_capacity(config.clients);
    let mut connect_errors = 0u64;
    let mut first_error = None;
    // The connect phase ends when no client has got in for a while: a server that stops accepting
    // (ncat blocked in a broadcast) must not hold the benchmark for clients × timeout, and a large
    // load that keeps making progress (10,000 clients) must not be cut short by a fixed cap.
    let stall = config.connect.timeout.unwrap_or(Duration::from_secs(30)) * 2;
    let mut deadline = tokio::time::Instant::now() + stall;
    loop {
        let joined = match tokio::time::timeout_at(deadline, connecting.join_next()).await {
            Ok(Some(joined)) => joined,
            Ok(None) => break,
            Err(_) => {
                let left = connecting.len() as u64;
                connecting.abort_all();
                connect_errors += left;
                first_error.get_or_insert_with(|| {
                    format!("{left} clients still not connected after {stall:?} without progress")
                });
                break;
            }
        };
        match joined {
            Ok((i, Ok((stream, greeting)))) => {
                deadline = tokio::time::Instant::now() + stall;
                members.push(i);
                let client = Client {
                    id: i,
                    room: i % config.rooms,
                    sender: i < config.senders,
                    config: config.clone(),
                    counters: counters.clone(),
                    sent_total: sent_total.clone(),
                    sent_expected: sent_expected.clone(),
                };
                let recorder = latencies.recorder();
                tasks.spawn(client.run(stream, greeting, go_rx.clone(), recorder));
            }
            Ok((_, Err(e))) => {
                connect_errors += 1;
                first_error.get_or_insert(e);
            }
            Err(e) => {
                connect_errors += 1;
                first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    if members.is_empty() {
        return Err(BenchError::Config(format!(
            "no client could connect to {}: {}",
            config.target_list(),
            first_error.unwrap_or_default()
        )));
    }
    let connected = members.len();
    let mut room_size = vec![0u64; config.rooms];
    for i in &members {
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
    let cpu_before = CpuTime::now();
    let _ = go_tx.send(Some(Arc::new(Go {
        window,
        start,
        room_size,
    })));

    let server_pid = config.server_pid;
    let server_cpu = |at: Duration| async move {
        tokio::time::sleep_until((epoch + at).into()).await;
        server_pid.and_then(CpuTime::of_process)
    };
    // From the start of the window to the end of the grace time: the work of delivering the
    // window's messages, even those still queued when sending stops, is charged to them.
    let server_from = server_cpu(from).await;
    let server_to = server_cpu(to + config.grace).await;
    let cpu = CpuTime::now().usage_since(&cpu_before, epoch.elapsed(), 0);
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}

    let secs = config.duration.as_secs_f64();
    let sent = sent_total.load(Ordering::Relaxed);
    let expected = sent_expected.load(Ordering::Relaxed);
    let delivered = counters.delivered.load(Ordering::Relaxed);
    Ok(ChatReport {
        target: config.target_list(),
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
        server_cpu: match (server_from, server_to) {
            (Some(a), Some(b)) => {
                Some(b.usage_since(&a, config.duration + config.grace, delivered))
            }
            _ => None,
        },
    })
}

/// One connected client of the load: reads from the moment it is in, sends (if it is a sender)
/// once the run starts.
struct Client {
    id: usize,
    room: usize,
    sender: bool,
    config: Arc<ChatBenchConfig>,
    counters: Arc<Counters>,
    sent_total: Arc<AtomicU64>,
    sent_expected: Arc<AtomicU64>,
}

impl Client {
    async fn run(
        self,
        stream: Stream,
        greeting: Vec<u8>,
        go: watch::Receiver<Option<Arc<Go>>>,
        recorder: LatencyRecorder,
    ) {
        let (reader, writer) = tokio::io::split(stream);
        let read = receive(
            reader,
            greeting,
            self.id as u64,
            go.clone(),
            recorder,
            &self.counters,
        );
        tokio::select! {
            _ = read => {}
            _ = self.send(writer, go) => {}
        }
    }

    /// Joins its room and, if a sender, sends until the window closes; then waits forever (the
    /// reader decides when the client is done).
    async fn send(&self, mut writer: WriteHalf<Stream>, mut go: watch::Receiver<Option<Arc<Go>>>) {
        let go = go
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|g| g.clone());
        let Some(go) = go else {
            return std::future::pending().await;
        };
        let config = &self.config;
        if config.rooms > 1 {
            let join = format!("/join bench-{}\n", self.room);
            let _ = writer.write_all(join.as_bytes()).await;
        }
        if !self.sender {
            return std::future::pending().await;
        }
        let window = go.window;
        let others = go.room_size[self.room].saturating_sub(1);
        // Senders start spread over one interval, as independent people would be; started
        // together, every tick would be a burst of `senders` messages at once.
        let phase = if config.rate > 0.0 {
            Duration::from_secs_f64(self.id as f64 / config.senders as f64 / config.rate)
        } else {
            Duration::ZERO
        };
        tokio::time::sleep_until((window.epoch + go.start + phase).into()).await;
        let mut tick = (config.rate > 0.0).then(|| {
            let mut t = tokio::time::interval(Duration::from_secs_f64(1.0 / config.rate));
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            t
        });
        let mut seq = 0u64;
        let mut msg = Vec::with_capacity(64);
        loop {
            if let Some(t) = tick.as_mut() {
                t.tick().await;
            }
            let now = window.now_ns();
            if now >= window.to_ns {
                break;
            }
            seq += 1;
            msg.clear();
            let _ = writeln!(msg, "BENCH {} {seq} {now}", self.id);
            // Counted before the write: a write still waiting on a full socket when the run ends
            // may already have been partly delivered.
            if window.contains(now) {
                self.sent_total.fetch_add(1, Ordering::Relaxed);
                self.sent_expected.fetch_add(others, Ordering::Relaxed);
            }
            if writer.write_all(&msg).await.is_err() {
                break;
            }
        }
        std::future::pending().await
    }
}

/// Connects one client and, when the config asks for it, waits for the server's first line.
/// Returns the stream and whatever was read meanwhile (the receive loop starts from it).
async fn open(config: &ChatBenchConfig, i: usize) -> Result<(Stream, Vec<u8>), String> {
    let target = &config.targets[i % config.targets.len()];
    let attempt = async {
        let mut stream = net::connect(
            target,
            &ConnectOptions {
                timeout: None,
                ..config.connect.clone()
            },
        )
        .await
        .map_err(|e| e.to_string())?;
        let mut got = Vec::with_capacity(if config.await_greeting { 1024 } else { 0 });
        while config.await_greeting && memchr::memchr(b'\n', &got).is_none() {
            got.reserve(1024);
            match stream.read_buf(&mut got).await {
                Ok(0) => return Err("the server closed the connection before greeting".into()),
                Ok(_) => {}
                Err(e) => return Err(format!("reading the greeting: {e}")),
            }
        }
        Ok((stream, got))
    };
    match config.connect.timeout {
        Some(after) => tokio::time::timeout(after, attempt)
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "{}: no {} within {after:?}",
                    target,
                    if config.await_greeting {
                        "connection and greeting"
                    } else {
                        "connection"
                    }
                ))
            }),
        None => attempt.await,
    }
}

/// What one client saw, added to the shared [`Counters`] after each read.
#[derive(Debug, Default)]
struct Tally {
    delivered: u64,
    echoed: u64,
    garbled: u64,
}

/// Reads one client's socket until it closes, counting and timing every `BENCH` line. Works on
/// whole reads: one clock reading per read (lines that arrived together arrived at the same time)
/// and one update of the shared counters, so that at millions of lines a second the load generator
/// spends its time in the kernel, not in bookkeeping.
async fn receive(
    mut reader: impl AsyncRead + Unpin,
    mut buf: Vec<u8>,
    me: u64,
    go: watch::Receiver<Option<Arc<Go>>>,
    mut recorder: LatencyRecorder,
    counters: &Counters,
) {
    let finder = memchr::memmem::Finder::new(b"BENCH ");
    let mut window = None;
    loop {
        if window.is_none() {
            window = go.borrow().as_ref().map(|g| g.window);
        }
        let now = window.map_or(0, |w| w.now_ns());
        let mut tally = Tally::default();
        let mut start = 0;
        while let Some(n) = memchr::memchr(b'\n', &buf[start..]) {
            let line = &buf[start..start + n];
            start += n + 1;
            // Before the run starts there is nothing to count (welcomes, join notices).
            let Some(window) = window else {
                continue;
            };
            let Some(at) = finder.find(line) else {
                continue;
            };
            match parse(&line[at + 6..]) {
                Some((from, sent_ns)) if window.contains(sent_ns) => {
                    if from == me {
                        tally.echoed += 1;
                    } else {
                        tally.delivered += 1;
                        recorder.record(Duration::from_nanos(now.saturating_sub(sent_ns)));
                    }
                }
                Some(_) => {}
                None => tally.garbled += 1,
            }
        }
        buf.drain(..start);
        if buf.len() > MAX_LINE {
            buf.clear();
            tally.garbled += 1;
        }
        counters.add(&tally);
        buf.reserve(READ_CHUNK);
        match reader.read_buf(&mut buf).await {
            Ok(0) | Err(_) => {
                counters.disconnects.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Ok(_) => {}
        }
    }
}

/// Parses `<sender> <seq> <sent-ns>` at the start of `rest` (by hand: it runs for every line).
fn parse(rest: &[u8]) -> Option<(u64, u64)> {
    let mut fields = rest
        .split(|b| b.is_ascii_whitespace())
        .filter(|f| !f.is_empty());
    let sender = number(fields.next()?)?;
    number(fields.next()?)?;
    let sent = number(fields.next()?)?;
    Some((sender, sent))
}

/// A decimal u64 made only of digits.
fn number(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        d.is_ascii_digit().then(|| n * 10 + u64::from(d - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_messages_in_any_server_format() {
        let line = b"[12:00:00] <guest1> BENCH 3 17 123456\r\n";
        let at = memchr::memmem::find(line, b"BENCH ").unwrap();
        assert_eq!(parse(&line[at + 6..]), Some((3, 123456)));
        let ncat = b"<user5> BENCH 9 1 42\n";
        let at = memchr::memmem::find(ncat, b"BENCH ").unwrap();
        assert_eq!(parse(&ncat[at + 6..]), Some((9, 42)));
        assert_eq!(parse(b"3 x"), None);
        assert_eq!(parse(b"3 4"), None);
        assert_eq!(parse(b"3 4 5<user7> 6"), None);
        assert_eq!(number(b"99999999999999999999"), None);
    }

    #[tokio::test]
    async fn counts_lines_split_across_reads_and_across_the_window() {
        let window = Window {
            epoch: Instant::now(),
            from_ns: 100,
            to_ns: 1_000,
        };
        let latencies = Latencies::new();
        let counters = Counters::default();
        let (_go_tx, go) = watch::channel(Some(Arc::new(Go {
            window,
            start: Duration::ZERO,
            room_size: vec![3],
        })));
        // The greeting read while connecting holds the start of a line; the rest follows.
        let greeting = b"* welcome\n<b> BENCH 2 1 ".to_vec();
        let rest: &[u8] = b"150\n<a> BENCH 1 2 200\n<b> BENCH 2 3 50\n<b> BENCH 2 x 300\nnoise\n";
        receive(rest, greeting, 1, go, latencies.recorder(), &counters).await;
        assert_eq!(counters.delivered.load(Ordering::Relaxed), 1);
        assert_eq!(counters.echoed.load(Ordering::Relaxed), 1);
        assert_eq!(counters.garbled.load(Ordering::Relaxed), 1);
        assert_eq!(counters.disconnects.load(Ordering::Relaxed), 1);
        assert_eq!(latencies.summary().map(|s| s.count), Some(1));
    }
}
