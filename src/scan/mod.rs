//! The TCP port scanner (`sockit scan`): a connect scan of many ports on many hosts, as fast as the
//! kernel takes connections, within the open-file limit.
//!
//! - [`target`]: targets and ports as the user writes them, checked and expanded.
//! - [`engine`]: the scan itself: adaptive concurrency, timeouts from measured round trips,
//!   retries, self-connect detection, banners.
//! - [`output`]: the table, JSON, JSON lines and nmap's greppable format.
//! - [`services`]: the embedded table of service names in nmap's frequency order.
//!
//! States are nmap's: `open` (the handshake completed), `closed` (refused: a RST came back) and
//! `filtered` (no answer after every retry, or an ICMP unreachable).

pub mod engine;
pub mod output;
pub mod services;
pub mod target;

pub use engine::{
    escape_banner, run, BannerConfig, Counts, Event, Limits, PortResult, Reason, ScanConfig,
    ScanReport, State, Timeouts,
};
pub use target::{parse_ports, service_name, top_ports, Host, Target, Unresolved};

/// Why a scan could not start (or had to stop).
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// A target that is no address, range or host name.
    #[error("bad target {target:?}: {reason}")]
    BadTarget { target: String, reason: String },

    /// A port list that does not parse.
    #[error("bad port list {spec:?}: {reason}")]
    BadPorts { spec: String, reason: String },

    /// More addresses than allowed without confirmation.
    #[error("{what} holds {count} addresses, more than {max} ({hint})")]
    TooManyHosts {
        what: String,
        count: u128,
        max: u64,
        hint: String,
    },

    /// Nothing left to scan (every name failed to resolve).
    #[error("no host to scan")]
    NoHosts,

    /// The scan made no progress for a long time (no descriptor could be had at all).
    #[error("the scan stalled: {0}")]
    Stalled(String),

    /// Reading a target list or another local failure.
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

impl ScanError {
    /// Whether the error is the user's input (exit code 2) rather than a run-time failure.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            ScanError::BadTarget { .. }
                | ScanError::BadPorts { .. }
                | ScanError::TooManyHosts { .. }
        )
    }
}
