//! A token bucket: `rate` tokens a second, holding at most `burst`. Used for every rate limit a
//! server keeps (connections per address, a chat client's lines, replies per datagram source).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::peer::{AddrEntry, AddrKey, AddrTable};
use super::{IpList, PeerAddr};

/// `rate` tokens per second, holding at most `burst`; each action costs one token (or `n`).
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket. A `rate` of 0 disables the limit.
    pub fn new(rate: f64, burst: u32) -> Self {
        Self::new_at(rate, burst, Instant::now())
    }

    /// A full bucket holding at most `burst` tokens (at least one): for buckets counted in bytes.
    pub fn with_burst(rate: f64, burst: f64) -> Self {
        let mut b = Self::new_at(rate, 1, Instant::now());
        b.burst = burst.max(1.0);
        b.tokens = b.burst;
        b
    }

    /// Tokens available now (infinite without a limit).
    pub fn available(&mut self) -> f64 {
        if self.rate <= 0.0 {
            return f64::INFINITY;
        }
        self.refill(Instant::now());
        self.tokens
    }

    /// Takes `n` tokens, or what is left if fewer (for costs known only afterwards).
    pub fn spend(&mut self, n: f64) {
        if self.rate > 0.0 {
            // Refilled first: what accrued while the caller waited is spent, not credited later.
            self.refill(Instant::now());
            self.tokens = (self.tokens - n).max(0.0);
        }
    }

    /// How long until `n` tokens (at most the burst) are available; zero if they are now.
    pub fn time_until(&mut self, n: f64) -> std::time::Duration {
        let missing = n.min(self.burst) - self.available();
        if missing <= 0.0 {
            return std::time::Duration::ZERO;
        }
        std::time::Duration::from_secs_f64(missing / self.rate)
    }

    /// [`new`](Self::new) with the clock read by the caller (one reading for many buckets, or a
    /// clock a test moves).
    pub fn new_at(rate: f64, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let refill = now.saturating_duration_since(self.last).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.burst);
        self.last = now;
    }

    /// Takes a token if one is available.
    pub fn try_take(&mut self) -> bool {
        self.try_take_n(1.0)
    }

    /// [`try_take`](Self::try_take) at `now`.
    pub fn try_take_at(&mut self, now: Instant) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Takes `n` tokens if that many are available.
    pub fn try_take_n(&mut self, n: f64) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        self.refill(Instant::now());
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }

    /// How long until a token is available (zero if one is now).
    pub fn wait_time(&mut self) -> std::time::Duration {
        self.time_until(1.0)
    }

    /// Whether the bucket has refilled completely (or has no limit): forgetting it then loses
    /// nothing, since a new bucket would start the same.
    pub fn is_full(&mut self) -> bool {
        self.is_full_at(Instant::now())
    }

    /// [`is_full`](Self::is_full) at `now`.
    pub fn is_full_at(&mut self, now: Instant) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        self.refill(now);
        self.tokens >= self.burst
    }
}

/// Token buckets kept per client address (an IPv4 address or an IPv6 /64): every connection from
/// one address draws from the same bucket, and the bucket outlives them, so reconnecting does not
/// refill it. Exempt addresses get a bucket of their own per connection.
#[derive(Debug)]
pub struct AddrBuckets {
    rate: f64,
    burst: u32,
    exempt: IpList,
    table: Mutex<AddrTable<SharedBucket>>,
}

/// One address's bucket, shared by its connections.
#[derive(Debug, Clone)]
pub struct SharedBucket(Arc<Mutex<TokenBucket>>);

impl AddrEntry for SharedBucket {
    fn forgettable(&mut self) -> bool {
        !self.in_use() && self.lock().is_full()
    }
    fn in_use(&self) -> bool {
        Arc::strong_count(&self.0) > 1
    }
}

impl SharedBucket {
    fn lock(&self) -> std::sync::MutexGuard<'_, TokenBucket> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A connection's rate limit: its address's shared bucket, or its own.
#[derive(Debug)]
pub enum RateLimit {
    Own(TokenBucket),
    Shared(SharedBucket),
}

impl RateLimit {
    /// Takes a token if one is available.
    pub fn try_take(&mut self) -> bool {
        self.with(TokenBucket::try_take)
    }

    /// Takes a token, waiting for one if need be (the caller stops reading meanwhile, so the
    /// client is slowed by TCP's own backpressure and nothing it sent is lost).
    pub async fn take(&mut self) {
        loop {
            let wait = self.with(|b| {
                if b.try_take() {
                    std::time::Duration::ZERO
                } else {
                    b.wait_time()
                }
            });
            if wait.is_zero() {
                return;
            }
            // Connections of one address race for its tokens: sleep, then try again.
            tokio::time::sleep(wait).await;
        }
    }

    fn with<T>(&mut self, f: impl FnOnce(&mut TokenBucket) -> T) -> T {
        match self {
            RateLimit::Own(b) => f(b),
            RateLimit::Shared(b) => f(&mut b.lock()),
        }
    }
}

/// Addresses remembered for their rate at most (beyond those with live connections).
const MAX_TRACKED: usize = 65_536;

impl AddrBuckets {
    /// `rate` per second and `burst` per address; `exempt` addresses are limited per connection.
    pub fn new(rate: f64, burst: u32, exempt: IpList) -> Self {
        AddrBuckets {
            rate,
            burst,
            exempt,
            table: Mutex::new(AddrTable::new(MAX_TRACKED)),
        }
    }

    /// The limit a new connection from `peer` is under.
    pub fn limit_for(&self, peer: &PeerAddr) -> RateLimit {
        let ip = match peer {
            PeerAddr::Inet(a) if self.rate > 0.0 && !self.exempt.contains(a.ip()) => a.ip(),
            _ => return RateLimit::Own(TokenBucket::new(self.rate, self.burst)),
        };
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let (rate, burst) = (self.rate, self.burst);
        let bucket = table.entry(AddrKey::of(ip), || {
            SharedBucket(Arc::new(Mutex::new(TokenBucket::new(rate, burst))))
        });
        RateLimit::Shared(bucket.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refused_then_refilled() {
        let mut b = TokenBucket::new(1000.0, 3);
        assert!(b.try_take() && b.try_take() && b.try_take());
        assert!(!b.try_take() && !b.is_full());
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert!(b.try_take());
        std::thread::sleep(std::time::Duration::from_millis(10));
        assert!(b.is_full());
        let mut off = TokenBucket::new(0.0, 1);
        assert!((0..100).all(|_| off.try_take()));
    }

    #[tokio::test]
    async fn take_waits_for_the_next_token() {
        let mut limit = RateLimit::Own(TokenBucket::new(20.0, 1));
        limit.take().await;
        let start = Instant::now();
        limit.take().await;
        let waited = start.elapsed();
        // One token every 50 ms: the second take waited for it (bounds loose for busy machines).
        assert!(waited >= std::time::Duration::from_millis(40), "{waited:?}");
    }

    fn peer(s: &str) -> PeerAddr {
        PeerAddr::Inet(s.parse().unwrap())
    }

    #[test]
    fn an_address_keeps_its_bucket_across_connections() {
        let buckets = AddrBuckets::new(0.001, 2, IpList::loopback());
        let mut first = buckets.limit_for(&peer("10.0.0.1:1000"));
        assert!(first.try_take() && first.try_take() && !first.try_take());
        drop(first);
        // A new connection from the same address (another port) finds the bucket empty.
        let mut again = buckets.limit_for(&peer("10.0.0.1:1001"));
        assert!(!again.try_take());
        // Concurrent connections share it too; another address does not.
        let mut other = buckets.limit_for(&peer("10.0.0.2:1000"));
        assert!(other.try_take());
        // Loopback is exempt: each connection has its own full bucket.
        for _ in 0..3 {
            let mut local = buckets.limit_for(&peer("127.0.0.1:1"));
            assert!(local.try_take() && local.try_take());
        }
    }
}
