//! The guard in front of every datagram server's replies (echo -u, daytime -u, and any later UDP
//! tool that answers what it receives).
//!
//! A UDP source address is whatever the sender wrote in the packet. Two services that answer
//! every datagram can therefore be set talking to each other by one forged packet (the "echo /
//! chargen loop" of CERT CA-1996-01), and a server can be made to talk to itself. inetd's built-in
//! services refuse such sources; this guard does the same, and also limits how many replies any
//! one source address gets, so a forged loop between two services that pass the source check dies
//! as soon as a bucket runs dry (a ping-pong has one datagram in flight: the first one not
//! answered ends it), and a forged flood cannot turn the server into a reflector at line rate.
//!
//! [`DatagramGuard::check`] answers "may I reply to this source now?": refused sources
//! ([`source_problem`]) never get an answer; admitted ones take a token from their address's
//! bucket. The table of buckets is bounded ([`ReplyLimits::max_sources`]): when it is full, buckets
//! that have refilled (and so say nothing) are forgotten; if it is still full, every source not
//! in the table shares one overflow bucket, so spraying many forged addresses buys no more
//! replies than one address gets.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{AddrKey, TokenBucket};

/// Replies per second one source address may get, by default.
pub const DEFAULT_REPLY_RATE: u32 = 50;
/// Replies a source address may get at once (after a quiet time) before the rate applies.
pub const DEFAULT_REPLY_BURST: u32 = 100;
/// Source addresses with a bucket of their own, by default.
pub const DEFAULT_REPLY_SOURCES: usize = 10_000;

/// Source ports never answered besides the server's own and the privileged ones: the defaults of
/// sockit's own datagram services (echo -u 9002, daytime -u 9999), so two of them left on their
/// default ports cannot be set talking to each other.
const SIBLING_PORTS: &[u16] = &[9002, 9999];

/// How many replies each source address may get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyLimits {
    /// Replies per second per source address; 0 means no limit.
    pub rate: u32,
    /// Replies one source may get at once (at least 1).
    pub burst: u32,
    /// Source addresses tracked one by one; the rest share one bucket.
    pub max_sources: usize,
}

impl Default for ReplyLimits {
    fn default() -> Self {
        ReplyLimits {
            rate: DEFAULT_REPLY_RATE,
            burst: DEFAULT_REPLY_BURST,
            max_sources: DEFAULT_REPLY_SOURCES,
        }
    }
}

/// What to do with a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Answer it.
    Reply,
    /// Never answer this source; the reason, for the log.
    Refused(&'static str),
    /// The source has had its share of replies for now.
    Limited,
}

/// Counters of a guard's decisions, readable while the server runs (logs, tests, embedders).
#[derive(Debug, Default)]
pub struct DatagramStats {
    replied: AtomicU64,
    refused: AtomicU64,
    limited: AtomicU64,
}

impl DatagramStats {
    /// Datagrams the guard let the server answer.
    pub fn replied(&self) -> u64 {
        self.replied.load(Ordering::Relaxed)
    }
    /// Datagrams not answered because of their source address.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
    /// Datagrams not answered because their source had used up its replies.
    pub fn limited(&self) -> u64 {
        self.limited.load(Ordering::Relaxed)
    }
}

/// Why a source address must never be answered, or `None` if it may be. `local` is the server's
/// own bound address.
///
/// Refused: port 0; every port below 1024 (inetd lists the services it knows — echo 7, daytime 13,
/// chargen 19, time 37, DNS 53, NTP 123… — but any privileged port is a system service that may
/// answer back, and ordinary clients send from ephemeral ports, so refusing them all costs
/// nothing and needs no list); the server's own port, on any address (as FreeBSD inetd does: a
/// twin of this server elsewhere on the same port would answer back); the default ports of
/// sockit's other datagram services; and addresses that no single host sends from: unspecified,
/// broadcast, multicast.
pub fn source_problem(peer: SocketAddr, local: SocketAddr) -> Option<&'static str> {
    let port = peer.port();
    if port == 0 {
        return Some("source port 0");
    }
    if port < 1024 {
        return Some("privileged source port (a system service that may answer back)");
    }
    if port == local.port() {
        return Some("source port is this server's own (a loop)");
    }
    if SIBLING_PORTS.contains(&port) {
        return Some("source port of another datagram service (a loop)");
    }
    match peer.ip().to_canonical() {
        IpAddr::V4(ip) => {
            if ip.is_unspecified() || ip.octets()[0] == 0 {
                return Some("unspecified source address");
            }
            if ip.is_broadcast() {
                return Some("broadcast source address");
            }
            if ip.is_multicast() {
                return Some("multicast source address");
            }
        }
        IpAddr::V6(ip) => {
            if ip.is_unspecified() {
                return Some("unspecified source address");
            }
            if ip.is_multicast() {
                return Some("multicast source address");
            }
        }
    }
    None
}

/// The source check and the per-source reply limiter of one datagram socket.
#[derive(Debug)]
pub struct DatagramGuard {
    local: SocketAddr,
    limits: ReplyLimits,
    buckets: HashMap<AddrKey, TokenBucket>,
    /// Shared by the sources that found the table full.
    overflow: TokenBucket,
    last_purge: Instant,
    stats: Arc<DatagramStats>,
}

impl DatagramGuard {
    /// A guard for a socket bound to `local`.
    pub fn new(local: SocketAddr, limits: ReplyLimits) -> Self {
        let limits = ReplyLimits {
            burst: limits.burst.max(1),
            max_sources: limits.max_sources.max(1),
            ..limits
        };
        let now = Instant::now();
        DatagramGuard {
            local,
            limits,
            buckets: HashMap::new(),
            overflow: TokenBucket::new_at(f64::from(limits.rate), limits.burst, now),
            last_purge: now,
            stats: Arc::default(),
        }
    }

    /// The guard's counters.
    pub fn stats(&self) -> Arc<DatagramStats> {
        self.stats.clone()
    }

    /// Shares counters made beforehand (a server hands them out before its socket's guard exists).
    pub fn with_stats(mut self, stats: Arc<DatagramStats>) -> Self {
        self.stats = stats;
        self
    }

    /// Decides whether to answer a datagram from `peer` now, and counts the decision.
    pub fn check(&mut self, peer: SocketAddr) -> Verdict {
        self.check_at(peer, Instant::now())
    }

    /// [`check`](Self::check) as a yes or no, logging why not. At debug level only: the datagrams
    /// refused are the ones an attacker sends, and an info line each would let them fill the log at
    /// line rate (the counters are in [`stats`](Self::stats)).
    pub fn admit(&mut self, peer: SocketAddr) -> bool {
        match self.check(peer) {
            Verdict::Reply => true,
            Verdict::Refused(why) => {
                tracing::debug!(%peer, why, "datagram not answered: refused source");
                false
            }
            Verdict::Limited => {
                tracing::debug!(%peer, "datagram not answered: source over its reply rate");
                false
            }
        }
    }

    fn check_at(&mut self, peer: SocketAddr, now: Instant) -> Verdict {
        let verdict = self.decide(peer, now);
        let counter = match verdict {
            Verdict::Reply => &self.stats.replied,
            Verdict::Refused(_) => &self.stats.refused,
            Verdict::Limited => &self.stats.limited,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        verdict
    }

    fn decide(&mut self, peer: SocketAddr, now: Instant) -> Verdict {
        if let Some(why) = source_problem(peer, self.local) {
            return Verdict::Refused(why);
        }
        if self.limits.rate == 0 {
            return Verdict::Reply;
        }
        let limits = self.limits;
        // Counted as the stream servers count addresses: IPv4, or an IPv6 /64.
        let key = AddrKey::of(peer.ip());
        if !self.buckets.contains_key(&key) && self.buckets.len() >= limits.max_sources {
            // At most once a second: a full table under a spray of new sources must not cost a
            // scan per datagram.
            if now.saturating_duration_since(self.last_purge) >= Duration::from_secs(1) {
                self.last_purge = now;
                self.buckets.retain(|_, b| !b.is_full_at(now));
            }
            if self.buckets.len() >= limits.max_sources {
                return if self.overflow.try_take_at(now) {
                    Verdict::Reply
                } else {
                    Verdict::Limited
                };
            }
        }
        let bucket = self
            .buckets
            .entry(key)
            .or_insert_with(|| TokenBucket::new_at(f64::from(limits.rate), limits.burst, now));
        if bucket.try_take_at(now) {
            Verdict::Reply
        } else {
            Verdict::Limited
        }
    }

    /// Source addresses with a bucket of their own now.
    pub fn tracked_sources(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> SocketAddr {
        "127.0.0.1:40000".parse().unwrap()
    }

    #[test]
    fn refuses_loop_sources() {
        let l = local();
        let bad = [
            "127.0.0.1:40000", // itself
            "10.1.2.3:40000",  // its port elsewhere: a twin would answer back
            "127.0.0.1:7",     // echo
            "127.0.0.1:13",    // daytime
            "127.0.0.1:19",    // chargen
            "127.0.0.1:37",    // time
            "127.0.0.1:53",
            "127.0.0.1:123",
            "127.0.0.1:1023",
            "127.0.0.1:0",
            "127.0.0.1:9002", // sockit echo -u's default
            "127.0.0.1:9999", // sockit daytime -u's default
            "0.0.0.0:5000",
            "255.255.255.255:5000",
            "224.0.0.1:5000",
            "[::]:5000",
            "[ff02::1]:5000",
            "[::ffff:255.255.255.255]:5000",
        ];
        for a in bad {
            assert!(
                source_problem(a.parse().unwrap(), l).is_some(),
                "{a} passed"
            );
        }
        for a in [
            "127.0.0.1:1024",
            "127.0.0.1:54321",
            "[::1]:40001",
            "10.0.0.1:33000",
        ] {
            assert_eq!(source_problem(a.parse().unwrap(), l), None, "{a} refused");
        }
    }

    #[test]
    fn limits_each_source_and_refills() {
        let limits = ReplyLimits {
            rate: 10,
            burst: 5,
            max_sources: 100,
        };
        let mut g = DatagramGuard::new(local(), limits);
        let t0 = Instant::now();
        let a: SocketAddr = "127.0.0.2:5000".parse().unwrap();
        let b: SocketAddr = "127.0.0.3:5000".parse().unwrap();
        let replies = (0..100)
            .filter(|_| g.check_at(a, t0) == Verdict::Reply)
            .count();
        assert_eq!(replies, 5);
        // Another port of the same address shares the bucket; another address has its own.
        assert_eq!(
            g.check_at("127.0.0.2:5001".parse().unwrap(), t0),
            Verdict::Limited
        );
        assert_eq!(g.check_at(b, t0), Verdict::Reply);
        // 10/s: after 300 ms three more.
        let t1 = t0 + Duration::from_millis(300);
        let replies = (0..100)
            .filter(|_| g.check_at(a, t1) == Verdict::Reply)
            .count();
        assert_eq!(replies, 3);
        let s = g.stats();
        assert_eq!(s.replied(), 9);
        assert_eq!(s.limited(), 95 + 1 + 97);
    }

    #[test]
    fn table_is_bounded_and_overflow_is_shared() {
        let limits = ReplyLimits {
            rate: 1,
            burst: 2,
            max_sources: 3,
        };
        let mut g = DatagramGuard::new(local(), limits);
        let t0 = Instant::now();
        for i in 0..3 {
            let a = SocketAddr::from(([10, 0, 0, i], 5000));
            assert_eq!(g.check_at(a, t0), Verdict::Reply);
        }
        assert_eq!(g.tracked_sources(), 3);
        // The table is full and nobody has refilled: 100 new sources share one bucket of 2.
        let replies = (0..100u8)
            .filter(|i| g.check_at(SocketAddr::from(([10, 1, 0, *i], 5000)), t0) == Verdict::Reply)
            .count();
        assert_eq!(replies, 2);
        assert_eq!(g.tracked_sources(), 3);
        // Once the tracked buckets have refilled they are forgotten, and newcomers get their own.
        let later = t0 + Duration::from_secs(5);
        let a = SocketAddr::from(([10, 2, 0, 1], 5000));
        assert_eq!(g.check_at(a, later), Verdict::Reply);
        assert_eq!(g.tracked_sources(), 1);
    }

    #[test]
    fn rate_zero_means_unlimited() {
        let mut g = DatagramGuard::new(
            local(),
            ReplyLimits {
                rate: 0,
                ..ReplyLimits::default()
            },
        );
        let a: SocketAddr = "127.0.0.2:5000".parse().unwrap();
        assert!((0..1000).all(|_| g.check(a) == Verdict::Reply));
        assert_eq!(
            g.check("127.0.0.2:40000".parse().unwrap()),
            Verdict::Refused("source port is this server's own (a loop)")
        );
    }
}
