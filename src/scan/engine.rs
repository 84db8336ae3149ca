//! The scan: every (host, port) pair is one probe, a TCP connect, run by a few *lanes* (one per
//! CPU) that share one queue.
//!
//! A lane starts a connect with a [`crate::net::Dialer`] and looks at it at once: over loopback,
//! and for any peer whose answer the kernel already has, the outcome is known before `connect(2)`
//! returns, so the probe finishes inline, without a task or a reactor wake-up, and a refused
//! socket is reused for the next port (two `connect` calls a port, no `socket`/`close`). Only a
//! handshake still in flight (or a banner to read) becomes its own task, holding its place in the
//! [`Gate`] until it completes or times out. Results reach the collector in batches. The kernel's
//! cost per port is then nearly the only cost, and the lanes keep every core busy paying it.
//!
//! One collector (the caller's task) sees every outcome and steers:
//! - **Concurrency** starts at [`INITIAL_WINDOW`] and grows by one for every probe that ends (slow
//!   start), up to the ceiling: `--max-concurrency`, and the descriptors the open-file limit
//!   leaves free. As in nmap, a port that did not answer and then answered a retry is a dropped
//!   probe, the one sign of congestion: the window halves. A timeout alone says nothing (a firewall
//!   that drops everything is not congestion), and neither does a self-connect.
//! - **Out of descriptors** (`EMFILE`, `ENFILE`), buffers or ephemeral ports: the probe goes back
//!   to the queue (no port is lost) and the window drops below what is in use, so the next probe
//!   waits for one in flight to end; the ceiling then creeps back up.
//! - **Timeouts** follow the measured round trips per host (RFC 6298: srtt + 4 rttvar, clamped),
//!   and hosts that have not answered yet use the scan's overall estimate.
//! - **Retries**: a port with no answer is tried again, up to `retries` times, before it is
//!   `filtered`.
//! - **Self-connects**: a connect that reaches itself (local address = peer address: the kernel
//!   picked the destination port as the source port, and TCP's simultaneous open joined the two)
//!   is no open port. It is tried again from another source port, without slowing down.

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use super::target::{service_name, Host};
use super::ScanError;
use crate::net::{is_self_connect, Dial, Dialer, TokenBucket};
use crate::work::Gate;

/// The window a scan starts with, before answers widen it.
pub const INITIAL_WINDOW: usize = 256;
/// The window never halves below this.
pub const MIN_WINDOW: usize = 16;
/// How often a self-connecting port is tried again before it is taken as closed (each try picks
/// another source port, so a second self-connect is already rare).
const SELF_CONNECT_TRIES: u8 = 5;
/// With no probe ending for this long (plus the longest a probe may take), something holds every
/// descriptor: the scan stops, saying so.
const STALL: Duration = Duration::from_secs(60);
/// Results a lane collects before it hands them to the collector...
const BATCH: usize = 256;
/// ...or after this long, so results still come as they are found.
const BATCH_AGE: Duration = Duration::from_millis(5);
/// After some of a banner has arrived, how long to wait for more of it.
const BANNER_QUIET: Duration = Duration::from_millis(150);

/// A port's state, as nmap defines it for a connect scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// The handshake completed: something listens.
    Open,
    /// The connection was refused (a RST came back): reachable, nothing listens.
    Closed,
    /// No answer after every try, or an ICMP unreachable: a firewall is in the way.
    Filtered,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Open => "open",
            State::Closed => "closed",
            State::Filtered => "filtered",
        }
    }
}

/// Why a port got its state (nmap's `--reason` words where nmap has one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    SynAck,
    ConnRefused,
    NoResponse,
    HostUnreach,
    NetUnreach,
    AdminProhibited,
    /// Every try reached itself (see the module docs).
    SelfConnect,
    /// Another error from the kernel, in words.
    Error(String),
}

impl Reason {
    pub fn as_str(&self) -> &str {
        match self {
            Reason::SynAck => "syn-ack",
            Reason::ConnRefused => "conn-refused",
            Reason::NoResponse => "no-response",
            Reason::HostUnreach => "host-unreach",
            Reason::NetUnreach => "net-unreach",
            Reason::AdminProhibited => "admin-prohibited",
            Reason::SelfConnect => "self-connect",
            Reason::Error(e) => e,
        }
    }
}

impl Serialize for Reason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// One port's result.
#[derive(Debug, Clone, Serialize)]
pub struct PortResult {
    pub addr: IpAddr,
    /// The name the host was given by, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    pub port: u16,
    pub state: State,
    pub reason: Reason,
    /// The service name from the table.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<&'static str>,
    /// How long the answer took (none for `filtered` without an answer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtt_us: Option<u64>,
    /// Connection attempts made for this port.
    pub tries: u32,
    /// What the port said first (`--banner`), control characters escaped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub banner: Option<String>,
    /// Index of the host in [`ScanReport::hosts`].
    #[serde(skip)]
    pub host_index: usize,
}

/// Per-connection timeouts.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// A fixed timeout instead of the measured one (`--timeout`).
    pub fixed: Option<Duration>,
    /// Before any answer is measured.
    pub initial: Duration,
    /// The measured timeout is never below this (loopback answers in microseconds; a busy peer
    /// may take far longer now and then)...
    pub min: Duration,
    /// ...nor above this.
    pub max: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            fixed: None,
            initial: Duration::from_secs(1),
            min: Duration::from_millis(100),
            max: Duration::from_secs(3),
        }
    }
}

/// `--banner`: what to read from open ports.
#[derive(Debug, Clone, Copy)]
pub struct BannerConfig {
    /// How long to wait for the first bytes.
    pub wait: Duration,
    /// Read at most this many bytes.
    pub max_bytes: usize,
}

impl Default for BannerConfig {
    fn default() -> Self {
        BannerConfig {
            wait: Duration::from_secs(2),
            max_bytes: 256,
        }
    }
}

/// A validated scan.
#[derive(Debug, Clone)]
pub struct ScanConfig {
    pub hosts: Vec<Host>,
    pub ports: Vec<u16>,
    /// The most connections in flight at once (further bounded by the descriptors free).
    pub max_concurrency: usize,
    /// Bound concurrency by the open-file limit (off only to test what happens at `EMFILE`).
    pub respect_fd_limit: bool,
    /// Connection attempts per second, retries included (`None`: no cap).
    pub rate: Option<f64>,
    pub timeouts: Timeouts,
    /// Tries after the first for a port that does not answer.
    pub retries: u32,
    pub banner: Option<BannerConfig>,
    /// Keep closed and filtered results in the report (open ones are always kept).
    pub keep_all: bool,
    /// Lanes (default: one per CPU).
    pub lanes: Option<usize>,
}

impl ScanConfig {
    pub fn new(hosts: Vec<Host>, ports: Vec<u16>) -> Self {
        ScanConfig {
            hosts,
            ports,
            max_concurrency: 5000,
            respect_fd_limit: true,
            rate: None,
            timeouts: Timeouts::default(),
            retries: 2,
            banner: None,
            keep_all: false,
            lanes: None,
        }
    }
}

/// What the collector tells its caller while the scan runs.
#[derive(Debug)]
pub enum Event<'a> {
    /// The scan is starting with these limits.
    Started(&'a Limits),
    /// A port's final result.
    Result(&'a PortResult),
    /// Something worth saying in verbose output (a self-connect, out of descriptors).
    Note(String),
}

/// The limits a scan ran within.
#[derive(Debug, Clone, Serialize)]
pub struct Limits {
    /// The soft open-file limit (after the binary raised it toward the hard one).
    pub fd_limit: Option<u64>,
    /// Connections the descriptors free at the start allow.
    pub fd_budget: Option<usize>,
    /// The concurrency ceiling used: the smaller of `--max-concurrency` and the budget.
    pub max_concurrency: usize,
    pub lanes: usize,
}

/// Counts per state.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Counts {
    pub open: u64,
    pub closed: u64,
    pub filtered: u64,
}

/// The outcome of a scan.
#[derive(Debug, Clone, Serialize)]
pub struct ScanReport {
    pub hosts: Vec<Host>,
    /// Ports probed per host.
    pub ports: usize,
    /// Kept results, by host then port: the open ones, and the rest with `keep_all`.
    pub results: Vec<PortResult>,
    pub counts: Counts,
    /// Counts per host, in the order of `hosts`.
    #[serde(skip)]
    pub host_counts: Vec<Counts>,
    /// Names that did not resolve (filled in by whoever resolved the targets).
    pub unresolved: Vec<super::Unresolved>,
    /// Probes that reached themselves and were tried again.
    pub self_connects: u64,
    /// Times the kernel ran out of descriptors (or buffers, or ports) and a probe was requeued.
    pub out_of_resources: u64,
    /// Probes lost and answered on a retry (each halves the window).
    pub drops: u64,
    /// The widest window reached.
    pub peak_window: usize,
    pub limits: Limits,
    pub elapsed_secs: f64,
    /// Stopped early (Ctrl-C): the results hold what was found so far.
    pub interrupted: bool,
}

#[derive(Debug, Clone, Copy)]
struct Item {
    index: u64,
    tries: u32,
    self_connects: u8,
}

#[derive(Debug)]
enum Outcome {
    Open(Option<Vec<u8>>),
    Refused,
    TimedOut,
    Unreachable(Reason),
    SelfConnect,
    OutOfResources(io::Error),
    Failed(io::Error),
}

#[derive(Debug)]
struct Probed {
    item: Item,
    took: Duration,
    outcome: Outcome,
}

/// What the lanes and the probe tasks share.
struct Shared {
    addrs: Vec<IpAddr>,
    ports: Vec<u16>,
    next: AtomicU64,
    total: u64,
    retry: Mutex<VecDeque<Item>>,
    work: Notify,
    gate: Arc<Gate>,
    pace: Option<Mutex<TokenBucket>>,
    /// Per host, the current timeout in microseconds (0: not measured yet, use `default_timeout`).
    timeouts: Vec<AtomicU64>,
    default_timeout: AtomicU64,
    banner: Option<BannerConfig>,
    done: CancellationToken,
    /// Results, in batches: a message per probe would be a futex wake-up per port.
    tx: mpsc::UnboundedSender<Vec<Probed>>,
}

impl Shared {
    fn addr(&self, item: Item) -> (usize, SocketAddr) {
        let n = self.addrs.len() as u64;
        let host = (item.index % n) as usize;
        let port = self.ports[(item.index / n) as usize];
        (host, SocketAddr::new(self.addrs[host], port))
    }

    fn timeout_for(&self, host: usize) -> Duration {
        let us = match self.timeouts[host].load(Ordering::Relaxed) {
            0 => self.default_timeout.load(Ordering::Relaxed),
            us => us,
        };
        Duration::from_micros(us)
    }

    fn take_item(&self) -> Option<Item> {
        if let Some(item) = self
            .retry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front()
        {
            return Some(item);
        }
        // Hosts vary fastest: a slow or filtering host is spread over the scan, not met in a block.
        let index = self.next.fetch_add(1, Ordering::Relaxed);
        (index < self.total).then_some(Item {
            index,
            tries: 0,
            self_connects: 0,
        })
    }

    fn requeue(&self, item: Item) {
        self.retry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(item);
        self.work.notify_waiters();
    }
}

/// Runs the scan until every port has a result or `cancel` fires, telling `on_event` as it goes.
pub async fn run(
    config: ScanConfig,
    cancel: CancellationToken,
    mut on_event: impl FnMut(Event<'_>),
) -> Result<ScanReport, ScanError> {
    let started = Instant::now();
    if config.hosts.is_empty() || config.ports.is_empty() {
        return Err(ScanError::NoHosts);
    }
    let fd_limit = crate::net::fd_limit();
    // Each probe holds one descriptor; the lanes' own are part of what is open now.
    let fd_budget = crate::net::conn_budget(1);
    let mut ceiling = config.max_concurrency.max(1);
    if config.respect_fd_limit {
        if let Some(budget) = fd_budget {
            ceiling = ceiling.min(budget);
        }
    }
    let lanes = config.lanes.unwrap_or_else(crate::net::cpus).clamp(1, 64);
    let limits = Limits {
        fd_limit,
        fd_budget,
        max_concurrency: ceiling,
        lanes,
    };
    on_event(Event::Started(&limits));

    let nhosts = config.hosts.len();
    let total = nhosts as u64 * config.ports.len() as u64;
    let initial = config.timeouts.fixed.unwrap_or(config.timeouts.initial);
    let window = INITIAL_WINDOW.min(ceiling);
    let gate = Gate::new(window);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        addrs: config.hosts.iter().map(|h| h.addr).collect(),
        ports: config.ports.clone(),
        next: AtomicU64::new(0),
        total,
        retry: Mutex::new(VecDeque::new()),
        work: Notify::new(),
        gate: gate.clone(),
        pace: config.rate.filter(|&r| r > 0.0).map(|r| {
            // A tenth of a second's worth at once, so a low rate is smooth, not bursty.
            let burst = (r / 10.0).clamp(1.0, 1000.0) as u32;
            Mutex::new(TokenBucket::new(r, burst))
        }),
        timeouts: (0..nhosts).map(|_| AtomicU64::new(0)).collect(),
        default_timeout: AtomicU64::new(micros(initial)),
        banner: config.banner,
        done: CancellationToken::new(),
        tx,
    });
    for _ in 0..lanes {
        tokio::spawn(lane(shared.clone()));
    }

    let mut steer = Steering {
        cwnd: window as f64,
        ceiling,
        fd_ceiling: ceiling,
        slow_start: true,
        last_decrease: None,
        peak: window,
        rtt: (0..nhosts).map(|_| Rtt::default()).collect(),
        all: Rtt::default(),
        timeouts: config.timeouts,
        since_fd_cut: 0,
    };
    let mut report = ScanReport {
        hosts: config.hosts.clone(),
        ports: config.ports.len(),
        results: Vec::new(),
        counts: Counts::default(),
        host_counts: vec![Counts::default(); nhosts],
        unresolved: Vec::new(),
        self_connects: 0,
        out_of_resources: 0,
        drops: 0,
        peak_window: window,
        limits: limits.clone(),
        elapsed_secs: 0.0,
        interrupted: false,
    };
    let mut outstanding = total;
    // The longest a probe may take (its tries, its banner), on top of the stall allowance.
    let longest = config.timeouts.fixed.unwrap_or(config.timeouts.max) * (config.retries + 1)
        + config.banner.map_or(Duration::ZERO, |b| b.wait);
    let stall = STALL + longest;
    let mut last_progress = Instant::now();
    let mut last_resource_note: Option<Instant> = None;
    let mut batch = Vec::new().into_iter();
    while outstanding > 0 {
        let probed = match batch.next() {
            Some(p) => p,
            None => tokio::select! {
                biased;
                _ = cancel.cancelled() => {
                    report.interrupted = true;
                    break;
                }
                probed = rx.recv() => match probed {
                    Some(b) => {
                        batch = b.into_iter();
                        continue;
                    }
                    None => break,
                },
                _ = tokio::time::sleep_until((last_progress + stall).into()) => {
                    shared.done.cancel();
                    return Err(ScanError::Stalled(format!(
                        "no port got a result for {stall:?} ({} out of descriptors; is something else holding them?)",
                        report.out_of_resources
                    )));
                }
            },
        };
        let (host, addr) = shared.addr(probed.item);
        let item = probed.item;
        let answered = |reason| (reason, Some(probed.took));
        let (state, (reason, rtt), banner) = match probed.outcome {
            Outcome::Open(banner) => (State::Open, answered(Reason::SynAck), banner),
            Outcome::Refused => (State::Closed, answered(Reason::ConnRefused), None),
            Outcome::Unreachable(r) => (State::Filtered, answered(r), None),
            Outcome::TimedOut if item.tries < config.retries => {
                steer.ended(&gate);
                shared.requeue(Item {
                    tries: item.tries + 1,
                    ..item
                });
                continue;
            }
            Outcome::TimedOut => (State::Filtered, (Reason::NoResponse, None), None),
            Outcome::SelfConnect => {
                report.self_connects += 1;
                let again = item.self_connects + 1 < SELF_CONNECT_TRIES;
                on_event(Event::Note(format!(
                    "{}: the connect reached itself (source port = destination port, no listener); {}",
                    addr,
                    if again { "trying again from another source port" } else { "taken as closed" }
                )));
                if again {
                    shared.requeue(Item {
                        self_connects: item.self_connects + 1,
                        ..item
                    });
                    continue;
                }
                (State::Closed, (Reason::SelfConnect, None), None)
            }
            Outcome::OutOfResources(e) => {
                report.out_of_resources += 1;
                steer.out_of_resources(&gate);
                if last_resource_note.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                    last_resource_note = Some(Instant::now());
                    on_event(Event::Note(format!(
                        "out of resources ({}): at most {} connections at once now; {addr} queued again ({} times so far)",
                        crate::net::NetError::io("connect", e).to_string().trim_start_matches("connect: "),
                        gate.limit(),
                        report.out_of_resources
                    )));
                }
                shared.requeue(item);
                continue;
            }
            Outcome::Failed(e) => (
                State::Filtered,
                (Reason::Error(error_words(&e)), None),
                None,
            ),
        };
        last_progress = Instant::now();
        if let Some(took) = rtt {
            if item.tries > 0 {
                // Lost, then answered: a dropped probe.
                report.drops += 1;
                steer.dropped(&gate, shared.timeout_for(host));
            }
            if config.timeouts.fixed.is_none() {
                steer.sample(host, took, &shared);
            }
        }
        steer.ended(&gate);
        report.peak_window = steer.peak;
        outstanding -= 1;
        let result = PortResult {
            addr: addr.ip(),
            host: config.hosts[host].name.clone(),
            port: addr.port(),
            state,
            reason,
            service: service_name(addr.port()),
            rtt_us: rtt.map(micros),
            tries: item.tries + 1,
            banner: banner.map(|b| escape_banner(&b)),
            host_index: host,
        };
        for counts in [&mut report.counts, &mut report.host_counts[host]] {
            match state {
                State::Open => counts.open += 1,
                State::Closed => counts.closed += 1,
                State::Filtered => counts.filtered += 1,
            }
        }
        on_event(Event::Result(&result));
        if state == State::Open || config.keep_all {
            report.results.push(result);
        }
    }
    shared.done.cancel();
    report.results.sort_by_key(|r| (r.host_index, r.port));
    report.elapsed_secs = started.elapsed().as_secs_f64();
    Ok(report)
}

/// A lane: takes probes off the queue and starts them, finishing inline the ones whose outcome
/// is already known and handing the rest to their own tasks.
async fn lane(shared: Arc<Shared>) {
    let mut dialer = Dialer::new();
    let mut out: Vec<Probed> = Vec::with_capacity(BATCH);
    let mut since_flush = Instant::now();
    let flush = |out: &mut Vec<Probed>, since: &mut Instant| {
        if !out.is_empty() {
            let _ = shared
                .tx
                .send(std::mem::replace(out, Vec::with_capacity(BATCH)));
        }
        *since = Instant::now();
    };
    loop {
        let item = loop {
            let notified = shared.work.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(item) = shared.take_item() {
                break item;
            }
            // Nothing queued now; retries may come back from probes in flight. What this lane
            // holds goes to the collector first: it may be what ends the scan.
            flush(&mut out, &mut since_flush);
            tokio::select! {
                _ = notified => {}
                _ = shared.done.cancelled() => return,
            }
        };
        let slot = match shared.gate.try_acquire() {
            Some(slot) => slot,
            None => {
                flush(&mut out, &mut since_flush);
                tokio::select! {
                    slot = shared.gate.acquire() => slot,
                    _ = shared.done.cancelled() => return,
                }
            }
        };
        if let Some(pace) = &shared.pace {
            loop {
                let wait = {
                    let mut bucket = pace.lock().unwrap_or_else(|p| p.into_inner());
                    if bucket.try_take() {
                        break;
                    }
                    bucket.wait_time()
                };
                flush(&mut out, &mut since_flush);
                tokio::select! {
                    _ = tokio::time::sleep(wait.max(Duration::from_micros(100))) => {}
                    _ = shared.done.cancelled() => return,
                }
            }
        }
        let (host, addr) = shared.addr(item);
        let started = Instant::now();
        match dialer.start(addr) {
            Ok(Dial::Refused) => {
                drop(slot);
                out.push(Probed {
                    item,
                    took: started.elapsed(),
                    outcome: Outcome::Refused,
                });
            }
            Ok(Dial::Connected(stream)) if shared.banner.is_none() || is_self_connect(&stream) => {
                let took = started.elapsed();
                let outcome = opened(stream, None);
                drop(slot);
                out.push(Probed {
                    item,
                    took,
                    outcome,
                });
            }
            Ok(Dial::Connected(stream)) => {
                let shared = shared.clone();
                tokio::spawn(async move {
                    let took = started.elapsed();
                    let outcome = open_with_banner(stream, &shared).await;
                    drop(slot);
                    let _ = shared.tx.send(vec![Probed {
                        item,
                        took,
                        outcome,
                    }]);
                });
            }
            Ok(Dial::Pending(pending)) => {
                let limit = shared.timeout_for(host);
                let shared = shared.clone();
                tokio::spawn(async move {
                    let done = tokio::time::timeout(limit, pending.finish()).await;
                    let took = started.elapsed();
                    let outcome = match done {
                        Err(_) => Outcome::TimedOut,
                        Ok(Err(e)) => classify(e),
                        Ok(Ok(stream)) if is_self_connect(&stream) => opened(stream, None),
                        Ok(Ok(stream)) => open_with_banner(stream, &shared).await,
                    };
                    drop(slot);
                    let _ = shared.tx.send(vec![Probed {
                        item,
                        took,
                        outcome,
                    }]);
                });
            }
            Err(e) => {
                let took = started.elapsed();
                let outcome = classify(e);
                if matches!(outcome, Outcome::OutOfResources(_)) {
                    // Out of descriptors: lower the limit below what is in use, and wait a moment
                    // before the next probe rather than spinning on the same error.
                    shared
                        .gate
                        .set_limit(shared.gate.in_use().saturating_sub(1));
                    flush(&mut out, &mut since_flush);
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(5)) => {}
                        _ = shared.done.cancelled() => return,
                    }
                }
                drop(slot);
                out.push(Probed {
                    item,
                    took,
                    outcome,
                });
            }
        }
        if out.len() >= BATCH || since_flush.elapsed() >= BATCH_AGE {
            flush(&mut out, &mut since_flush);
        }
    }
}

/// The outcome of a completed connect: open, unless it reached itself.
/// An open port's outcome, with what it says first when banners are asked for.
async fn open_with_banner(stream: TcpStream, shared: &Shared) -> Outcome {
    match shared.banner {
        Some(cfg) => Outcome::Open(read_banner(stream, cfg, &shared.done).await),
        None => Outcome::Open(None),
    }
}

fn opened(stream: TcpStream, banner: Option<Vec<u8>>) -> Outcome {
    if is_self_connect(&stream) {
        // Closed with a reset, so the pair of equal ports does not linger in TIME_WAIT and the
        // retry (or the next scan) can have that source port again.
        let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
        Outcome::SelfConnect
    } else {
        Outcome::Open(banner)
    }
}

fn classify(e: io::Error) -> Outcome {
    match e.raw_os_error() {
        Some(libc::ECONNREFUSED) => return Outcome::Refused,
        Some(libc::EHOSTUNREACH) => return Outcome::Unreachable(Reason::HostUnreach),
        Some(libc::ENETUNREACH) => return Outcome::Unreachable(Reason::NetUnreach),
        Some(libc::EACCES | libc::EPERM) => return Outcome::Unreachable(Reason::AdminProhibited),
        Some(libc::ETIMEDOUT) => return Outcome::TimedOut,
        // Descriptors, socket buffers, ephemeral ports: the local machine's limits, not the port's.
        Some(
            libc::EMFILE
            | libc::ENFILE
            | libc::ENOBUFS
            | libc::ENOMEM
            | libc::EADDRNOTAVAIL
            | libc::EAGAIN,
        ) => return Outcome::OutOfResources(e),
        _ => {}
    }
    if e.kind() == io::ErrorKind::TimedOut {
        Outcome::TimedOut
    } else {
        Outcome::Failed(e)
    }
}

fn error_words(e: &io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error") {
        Some(i) => text[..i].to_lowercase(),
        None => text.to_lowercase(),
    }
}

/// Reads what an open port says first: up to `max_bytes`, waiting at most `wait` for the first
/// bytes and [`BANNER_QUIET`] for more after them.
async fn read_banner(
    mut stream: TcpStream,
    cfg: BannerConfig,
    done: &CancellationToken,
) -> Option<Vec<u8>> {
    let deadline = Instant::now() + cfg.wait;
    let mut banner = Vec::new();
    let mut chunk = vec![0u8; cfg.max_bytes.clamp(1, 4096)];
    while banner.len() < cfg.max_bytes {
        let left = deadline.saturating_duration_since(Instant::now());
        let wait = if banner.is_empty() {
            left
        } else {
            left.min(BANNER_QUIET)
        };
        if wait.is_zero() {
            break;
        }
        let want = (cfg.max_bytes - banner.len()).min(chunk.len());
        tokio::select! {
            read = tokio::time::timeout(wait, stream.read(&mut chunk[..want])) => match read {
                Ok(Ok(n)) if n > 0 => banner.extend_from_slice(&chunk[..n]),
                _ => break,
            },
            _ = done.cancelled() => break,
        }
    }
    (!banner.is_empty()).then_some(banner)
}

/// A banner made safe to print: printable ASCII as it is, `\\` doubled, `\r`, `\n`, `\t` as those
/// escapes, every other byte (control characters, escape sequences, non-ASCII) as `\xNN`. Nothing
/// a port sends can move the cursor, change colours or fake a line of output.
pub fn escape_banner(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        match b {
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x20..=0x7e => out.push(char::from(b)),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// A round-trip estimator (RFC 6298), in microseconds.
#[derive(Debug, Default, Clone, Copy)]
struct Rtt {
    srtt: f64,
    rttvar: f64,
    samples: u64,
}

impl Rtt {
    fn add(&mut self, sample: Duration) {
        let r = sample.as_secs_f64() * 1e6;
        if self.samples == 0 {
            self.srtt = r;
            self.rttvar = r / 2.0;
        } else {
            self.rttvar = 0.75 * self.rttvar + 0.25 * (self.srtt - r).abs();
            self.srtt = 0.875 * self.srtt + 0.125 * r;
        }
        self.samples += 1;
    }

    fn timeout(&self, t: &Timeouts) -> Duration {
        let us = (self.srtt + 4.0 * self.rttvar).max(0.0);
        Duration::from_micros(us as u64).clamp(t.min, t.max)
    }
}

/// The collector's congestion control (see the module docs).
struct Steering {
    cwnd: f64,
    ceiling: usize,
    /// Lowered where the descriptors ran out, raised again slowly.
    fd_ceiling: usize,
    slow_start: bool,
    last_decrease: Option<Instant>,
    peak: usize,
    rtt: Vec<Rtt>,
    all: Rtt,
    timeouts: Timeouts,
    since_fd_cut: u64,
}

impl Steering {
    fn apply(&mut self, gate: &Gate) {
        let limit = (self.cwnd as usize).clamp(1, self.ceiling.min(self.fd_ceiling));
        if limit != gate.limit() {
            gate.set_limit(limit);
        }
        self.peak = self.peak.max(limit);
    }

    /// A probe ended (an answer, or a timeout that is retried or final): widen.
    fn ended(&mut self, gate: &Gate) {
        let top = self.ceiling.min(self.fd_ceiling) as f64;
        if self.cwnd < top {
            self.cwnd += if self.slow_start {
                1.0
            } else {
                1.0 / self.cwnd
            };
            self.cwnd = self.cwnd.min(top);
        }
        if self.fd_ceiling < self.ceiling {
            // Creep back toward the configured ceiling: descriptors freed elsewhere are used again.
            self.since_fd_cut += 1;
            if self.since_fd_cut.is_multiple_of(64) {
                self.fd_ceiling += 1;
            }
        }
        self.apply(gate);
    }

    /// A retry was answered where the first try was not: halve, at most once per timeout.
    fn dropped(&mut self, gate: &Gate, timeout: Duration) {
        if self.last_decrease.is_some_and(|t| t.elapsed() < timeout) {
            return;
        }
        self.last_decrease = Some(Instant::now());
        self.slow_start = false;
        self.cwnd = (self.cwnd / 2.0).max(MIN_WINDOW as f64);
        self.apply(gate);
    }

    fn out_of_resources(&mut self, gate: &Gate) {
        // The probe already cut the gate below what was in use; remember it as the ceiling.
        self.fd_ceiling = gate.limit().max(1);
        self.since_fd_cut = 0;
        self.cwnd = self.cwnd.min(self.fd_ceiling as f64);
    }

    fn sample(&mut self, host: usize, took: Duration, shared: &Shared) {
        self.rtt[host].add(took);
        shared.timeouts[host].store(
            micros(self.rtt[host].timeout(&self.timeouts)),
            Ordering::Relaxed,
        );
        self.all.add(took);
        shared
            .default_timeout
            .store(micros(self.all.timeout(&self.timeouts)), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn banners_cannot_reach_the_terminal() {
        assert_eq!(
            escape_banner(b"SSH-2.0-x\r\n\x1b[2J\x07\\\xff"),
            "SSH-2.0-x\\r\\n\\x1b[2J\\x07\\\\\\xff"
        );
    }

    #[test]
    fn timeouts_follow_round_trips_within_bounds() {
        let t = Timeouts::default();
        let mut rtt = Rtt::default();
        rtt.add(Duration::from_micros(50));
        assert_eq!(rtt.timeout(&t), t.min);
        for _ in 0..20 {
            rtt.add(Duration::from_millis(400));
        }
        let mid = rtt.timeout(&t);
        assert!(mid > Duration::from_millis(400) && mid < t.max, "{mid:?}");
        rtt.add(Duration::from_secs(30));
        assert_eq!(rtt.timeout(&t), t.max);
    }
}
