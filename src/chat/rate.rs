//! Reply budgets: how many bytes of replies (`/history`) a client may be sent, so that a short
//! request cannot buy a long answer over and over. The token bucket underneath is the net layer's,
//! shared with every other limit a server keeps.

use std::time::Duration;

use crate::net::TokenBucket;

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

    /// How long until `bytes` (at most the burst) may be sent.
    pub fn wait_for(&mut self, bytes: usize) -> Duration {
        self.bucket.time_until(bytes as f64)
    }

    /// Charges a reply of `bytes`.
    pub fn spend(&mut self, bytes: usize) {
        self.bucket.spend(bytes as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
