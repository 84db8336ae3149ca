//! Token buckets: how many lines a client may send per second, and how many bytes of replies
//! (`/history`) it may be sent, so that a short request cannot buy a long answer over and over.

use std::time::{Duration, Instant};

/// `rate` tokens per second, holding at most `burst`; each line costs one token.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket. A `rate` of 0 disables the limit.
    pub fn new(rate: f64, burst: u32) -> Self {
        Self::with_burst(rate, f64::from(burst.max(1)))
    }

    /// A full bucket holding at most `burst` tokens (at least one).
    pub fn with_burst(rate: f64, burst: f64) -> Self {
        let burst = burst.max(1.0);
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            last: Instant::now(),
        }
    }

    fn unlimited(&self) -> bool {
        self.rate <= 0.0
    }

    /// Tokens available now (infinite without a limit).
    pub fn available(&mut self) -> f64 {
        if self.unlimited() {
            return f64::INFINITY;
        }
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.burst);
        self.last = now;
        self.tokens
    }

    /// Takes `n` tokens, or what is left if fewer (call [`TokenBucket::available`] first).
    pub fn take(&mut self, n: f64) {
        if !self.unlimited() {
            self.tokens = (self.tokens - n).max(0.0);
        }
    }

    /// How long until `n` tokens are available (zero without a limit, or if they are).
    pub fn time_until(&mut self, n: f64) -> Duration {
        let missing = n.min(self.burst) - self.available();
        if missing <= 0.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64(missing / self.rate)
    }

    /// Takes a token if one is available.
    pub fn try_take(&mut self) -> bool {
        if self.available() >= 1.0 {
            self.take(1.0);
            true
        } else {
            false
        }
    }
}

/// The smallest reply worth sending: a header, a line or two and the end line. A client with less
/// left waits until it has this much rather than being sent a refusal it did not pay for.
pub const MIN_REPLY: usize = 1024;

/// How many bytes of replies a client may be sent: `rate` bytes per second, holding at most
/// `burst` (a token bucket in bytes). A reply is cut to what is available and charged what it
/// weighs on the wire, so what one client is sent in replies over `t` seconds never passes
/// `burst + rate * t`, however it asks.
#[derive(Debug)]
pub struct ReplyBudget {
    bucket: TokenBucket,
}

impl ReplyBudget {
    /// A full budget. A `rate` of 0 disables it.
    pub fn new(rate: f64, burst: usize) -> Self {
        ReplyBudget {
            bucket: TokenBucket::with_burst(rate, burst.max(MIN_REPLY) as f64),
        }
    }

    /// Bytes that may be sent now (`usize::MAX` without a limit).
    pub fn available(&mut self) -> usize {
        let a = self.bucket.available();
        if a.is_infinite() {
            usize::MAX
        } else {
            a as usize
        }
    }

    /// How long until at least [`MIN_REPLY`] bytes may be sent.
    pub fn wait(&mut self) -> Duration {
        self.bucket.time_until(MIN_REPLY as f64)
    }

    /// Charges a reply of `bytes`.
    pub fn spend(&mut self, bytes: usize) {
        self.bucket.take(bytes as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refused_then_refilled() {
        let mut b = TokenBucket::new(1000.0, 3);
        assert!(b.try_take() && b.try_take() && b.try_take());
        assert!(!b.try_take());
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert!(b.try_take());
        let mut off = TokenBucket::new(0.0, 1);
        assert!((0..100).all(|_| off.try_take()));
    }

    #[test]
    fn reply_budget_refills_in_bytes_up_to_its_burst() {
        let mut b = ReplyBudget::new(1_000_000.0, 4096);
        assert_eq!(b.available(), 4096);
        b.spend(4000);
        assert!(b.available() < 4096);
        std::thread::sleep(std::time::Duration::from_millis(10));
        assert_eq!(b.available(), 4096, "refilled, but not past the burst");
        b.spend(1 << 20);
        assert!(
            b.available() < MIN_REPLY,
            "spending more than there is empties it"
        );
        assert!(b.wait() > Duration::ZERO && b.wait() <= Duration::from_millis(2));

        let mut slow = ReplyBudget::new(1024.0, 0);
        assert_eq!(
            slow.available(),
            MIN_REPLY,
            "the burst is at least one reply"
        );
        slow.spend(MIN_REPLY);
        let w = slow.wait();
        assert!(
            w > Duration::from_millis(900) && w <= Duration::from_secs(1),
            "{w:?}"
        );

        let mut off = ReplyBudget::new(0.0, 10);
        off.spend(1 << 30);
        assert_eq!(off.available(), usize::MAX);
        assert_eq!(off.wait(), Duration::ZERO);
    }
}
