//! How long to wait before reconnecting: exponential backoff with jitter, so a restarted server
//! is not hit by every client at the same instant.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// Delays that start at `first`, double on each failure up to `max`, and vary by ±25%.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Self {
        Backoff {
            first,
            max,
            next: first,
        }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        base.mul_f64(0.75 + 0.5 * unit_random())
    }

    /// A connection worked: the next failure starts from the first delay again.
    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

impl Default for Backoff {
    /// 0.5 s doubling to 10 s.
    fn default() -> Self {
        Backoff::new(Duration::from_millis(500), Duration::from_secs(10))
    }
}

/// A number in [0, 1). Jitter needs no strong randomness; std's randomly keyed hasher is enough
/// and saves a dependency.
fn unit_random() -> f64 {
    let bits = RandomState::new().build_hasher().finish();
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_with_jitter_and_resets() {
        let mut b = Backoff::default();
        let delays: Vec<Duration> = (0..8).map(|_| b.next_delay()).collect();
        let bases = [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0];
        for (d, base) in delays.iter().zip(bases) {
            let s = d.as_secs_f64();
            assert!(s >= base * 0.75 && s <= base * 1.25, "{s} vs {base}");
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(625));
    }
}
