//! What every load generator reports, and how: a latency histogram fed from many connection tasks,
//! the process's own CPU clock, and the human table / JSON printers.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency the histogram tells apart (anything slower is recorded as this).
const MAX_LATENCY_NS: u64 = 60_000_000_000;
/// Values a connection task collects before it takes the shared histogram's lock: with 64 tasks at
/// 100k round trips/s that is a few hundred lock takings a second, against 100k without batching.
const BATCH: usize = 256;

/// A latency histogram (nanoseconds, 3 significant digits — HDR style, so p99.9 of a million
/// samples costs the same few hundred kilobytes as p50 of ten) shared by many tasks.
#[derive(Debug)]
pub struct Latencies {
    hist: Mutex<Histogram<u64>>,
}

impl Latencies {
    /// An empty histogram, shared.
    pub fn new() -> Arc<Self> {
        let hist = Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3)
            .expect("constant histogram bounds are valid");
        Arc::new(Latencies {
            hist: Mutex::new(hist),
        })
    }

    /// A per-task recorder that batches values into this histogram.
    pub fn recorder(self: &Arc<Self>) -> LatencyRecorder {
        LatencyRecorder {
            shared: self.clone(),
            batch: Vec::with_capacity(BATCH),
        }
    }

    /// Percentiles of everything recorded so far (recorders flush when dropped); `None` if empty.
    pub fn summary(&self) -> Option<LatencySummary> {
        let hist = self.hist.lock().unwrap_or_else(|p| p.into_inner());
        LatencySummary::of(&hist)
    }

    fn add(&self, values: &[u64]) {
        let mut hist = self.hist.lock().unwrap_or_else(|p| p.into_inner());
        for &v in values {
            hist.saturating_record(v.max(1));
        }
    }
}

/// One task's handle on a [`Latencies`]: cheap to record into, flushed in batches and on drop.
#[derive(Debug)]
pub struct LatencyRecorder {
    shared: Arc<Latencies>,
    batch: Vec<u64>,
}

impl LatencyRecorder {
    /// Records one latency.
    pub fn record(&mut self, latency: Duration) {
        self.batch
            .push(u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX));
        if self.batch.len() == BATCH {
            self.flush();
        }
    }

    /// Moves the batched values into the shared histogram.
    pub fn flush(&mut self) {
        if !self.batch.is_empty() {
            self.shared.add(&self.batch);
            self.batch.clear();
        }
    }
}

impl Drop for LatencyRecorder {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub min_us: f64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

impl LatencySummary {
    /// The summary of a histogram of nanosecond values; `None` if it is empty.
    pub fn of(hist: &Histogram<u64>) -> Option<Self> {
        if hist.is_empty() {
            return None;
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Some(LatencySummary {
            count: hist.len(),
            min_us: us(hist.min()),
            mean_us: hist.mean() / 1000.0,
            p50_us: us(hist.value_at_quantile(0.50)),
            p90_us: us(hist.value_at_quantile(0.90)),
            p99_us: us(hist.value_at_quantile(0.99)),
            p999_us: us(hist.value_at_quantile(0.999)),
            max_us: us(hist.max()),
        })
    }
}

/// CPU time this process has used so far (all threads), from `getrusage(RUSAGE_SELF)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuTime {
    pub user: Duration,
    pub sys: Duration,
}

impl CpuTime {
    /// The process's CPU time now; zero if the kernel will not say (it always does on Linux).
    pub fn now() -> Self {
        let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
        // SAFETY: getrusage fills the struct it is given; RUSAGE_SELF is always a valid target.
        let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
        if rc != 0 {
            return CpuTime::default();
        }
        // SAFETY: rc == 0 means the kernel filled the struct (and it started zeroed anyway).
        let usage = unsafe { usage.assume_init() };
        let tv = |t: libc::timeval| {
            Duration::from_secs(t.tv_sec.max(0) as u64)
                + Duration::from_micros(t.tv_usec.max(0) as u64)
        };
        CpuTime {
            user: tv(usage.ru_utime),
            sys: tv(usage.ru_stime),
        }
    }

    /// CPU time another process has used so far (all its threads), from `/proc/PID/stat`; `None`
    /// once it has exited or if it is not ours to read. Lets a benchmark measure the server it
    /// loads over exactly the measured window.
    pub fn of_process(pid: u32) -> Option<Self> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name (field 2) is in parentheses and may hold spaces: fields are counted
        // from the last ")". utime and stime are fields 14 and 15 of the file.
        let rest = &stat[stat.rfind(')')? + 1..];
        let mut fields = rest.split_ascii_whitespace().skip(11);
        let utime: u64 = fields.next()?.parse().ok()?;
        let stime: u64 = fields.next()?.parse().ok()?;
        // SAFETY: sysconf only reads a configuration value.
        let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let tck = u64::try_from(tck).ok().filter(|&t| t > 0)?;
        let ticks = |t: u64| Duration::from_secs_f64(t as f64 / tck as f64);
        Some(CpuTime {
            user: ticks(utime),
            sys: ticks(stime),
        })
    }

    /// What was used between `earlier` and `self`, over `wall` of elapsed time and `ops` operations.
    pub fn usage_since(&self, earlier: &CpuTime, wall: Duration, ops: u64) -> CpuUsage {
        let user = self.user.saturating_sub(earlier.user).as_secs_f64();
        let sys = self.sys.saturating_sub(earlier.sys).as_secs_f64();
        let wall = wall.as_secs_f64();
        CpuUsage {
            user_secs: user,
            sys_secs: sys,
            percent: if wall > 0.0 {
                (user + sys) / wall * 100.0
            } else {
                0.0
            },
            us_per_op: (ops > 0).then(|| (user + sys) * 1e6 / ops as f64),
        }
    }
}

/// CPU used over a measurement: 100 % is one core busy the whole time.
#[derive(Debug, Clone, Serialize)]
pub struct CpuUsage {
    pub user_secs: f64,
    pub sys_secs: f64,
    pub percent: f64,
    /// CPU microseconds per operation (per round trip for the echo benchmark).
    pub us_per_op: Option<f64>,
}

/// A two-column table of labelled values, printed for people.
#[derive(Debug, Default)]
pub struct Table {
    title: String,
    rows: Vec<(String, String)>,
}

impl Table {
    pub fn new(title: impl Into<String>) -> Self {
        Table {
            title: title.into(),
            rows: Vec::new(),
        }
    }

    /// Adds a row.
    pub fn row(&mut self, label: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.rows.push((label.into(), value.into()));
        self
    }

    /// Adds p50/p90/p99/max latency rows, or one "n/a" row when nothing was measured.
    pub fn latency_rows(&mut self, what: &str, latency: Option<&LatencySummary>) -> &mut Self {
        match latency {
            Some(l) => {
                self.row(format!("{what} p50"), format_us(l.p50_us));
                self.row(format!("{what} p90"), format_us(l.p90_us));
                self.row(format!("{what} p99"), format_us(l.p99_us));
                self.row(format!("{what} max"), format_us(l.max_us))
            }
            None => self.row(what, "n/a"),
        }
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.title)?;
        let width = self
            .rows
            .iter()
            .map(|(l, _)| l.chars().count())
            .max()
            .unwrap_or(0);
        for (label, value) in &self.rows {
            writeln!(f, "  {label:<width$}  {value}")?;
        }
        Ok(())
    }
}

/// A latency for people: `850 µs`, `12.3 ms`, `1.50 s`.
pub fn format_us(us: f64) -> String {
    if us < 1_000.0 {
        format!("{us:.0} µs")
    } else if us < 1_000_000.0 {
        format!("{:.2} ms", us / 1_000.0)
    } else {
        format!("{:.2} s", us / 1_000_000.0)
    }
}

/// A rate for people, with thousands separators: `123,456`.
pub fn format_rate(per_sec: f64) -> String {
    let n = per_sec.round() as u64;
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_known_values() {
        let lat = Latencies::new();
        {
            let mut r = lat.recorder();
            for us in 1..=1000u64 {
                r.record(Duration::from_micros(us));
            }
        }
        let s = lat.summary().unwrap();
        assert_eq!(s.count, 1000);
        assert!((s.p50_us - 500.0).abs() < 1.0, "{s:?}");
        assert!((s.p99_us - 990.0).abs() < 1.0, "{s:?}");
        assert!((s.max_us - 1000.0).abs() < 1.0, "{s:?}");
        assert!(Latencies::new().summary().is_none());
    }

    #[test]
    fn formats() {
        assert_eq!(format_rate(1234567.4), "1,234,567");
        assert_eq!(format_rate(12.0), "12");
        assert_eq!(format_us(850.2), "850 µs");
        assert_eq!(format_us(12_345.0), "12.35 ms");
    }

    #[test]
    fn cpu_clock_moves() {
        let before = CpuTime::now();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let usage = CpuTime::now().usage_since(&before, Duration::from_secs(1), 10);
        assert!(usage.user_secs + usage.sys_secs > 0.0, "{usage:?}");
    }
}
