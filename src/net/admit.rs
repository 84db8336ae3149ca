//! Admission: whether one more connection may be served. Three limits, checked in this order for
//! every accepted connection that passed allow/deny: the connection rate of its address, the
//! connections its address already holds, and the server's connection slots. Addresses in the
//! exempt list (loopback by default, as in Ergo's default configuration) skip the per-address
//! limits. Several listeners may share one [`ConnSlots`] (a chat server's port and its web page).

use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::peer::{AddrEntry, AddrKey, AddrTable};
use super::{IpList, PeerAddr, TokenBucket};

/// Limits per client address (an IPv4 address, or an IPv6 /64).
#[derive(Debug, Clone, PartialEq)]
pub struct AddrLimits {
    /// Connections one address may hold at once (0 = no limit).
    pub max_conns: usize,
    /// New connections per second one address may open (0 = no limit), and the burst allowed.
    pub rate: f64,
    pub burst: u32,
    /// Addresses the per-address limits do not apply to.
    pub exempt: IpList,
}

impl Default for AddrLimits {
    fn default() -> Self {
        AddrLimits {
            // Ergo's default max-concurrent-connections.
            max_conns: 16,
            // A page load with its assets and a few reloads fit in the burst; a connect/close
            // loop gets two a second.
            rate: 2.0,
            burst: 20,
            exempt: IpList::loopback(),
        }
    }
}

impl AddrLimits {
    /// No per-address limit at all.
    pub fn unlimited() -> Self {
        AddrLimits {
            max_conns: 0,
            rate: 0.0,
            burst: 1,
            exempt: IpList::default(),
        }
    }

    /// The key `peer` is limited under, or `None` if the per-address limits do not apply to it
    /// (exempt, a Unix socket peer, or no limit set).
    pub fn key(&self, peer: &PeerAddr) -> Option<AddrKey> {
        match peer {
            PeerAddr::Inet(a) if !self.exempt.contains(a.ip()) => Some(AddrKey::of(a.ip())),
            _ => None,
        }
    }
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Every connection slot of the server is in use.
    Full,
    /// The client's address holds as many connections as it may.
    AddrBusy,
    /// The client's address opens connections faster than it may.
    AddrRate,
}

impl Refusal {
    /// A short phrase for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Full => "connection limit reached",
            Refusal::AddrBusy => "too many connections from this address",
            Refusal::AddrRate => "this address connects too fast",
        }
    }
}

#[derive(Debug)]
struct AddrState {
    conns: usize,
    bucket: TokenBucket,
}

impl AddrEntry for AddrState {
    fn forgettable(&mut self) -> bool {
        self.conns == 0 && self.bucket.is_full()
    }
    fn in_use(&self) -> bool {
        self.conns > 0
    }
}

/// The connection slots of one server, or of several listeners that share them; cloning shares.
#[derive(Debug, Clone)]
pub struct ConnSlots {
    slots: Arc<Semaphore>,
    max: usize,
    limits: Arc<AddrLimits>,
    table: Arc<Mutex<AddrTable<AddrState>>>,
}

/// A connection's place, held for as long as it is served.
#[derive(Debug)]
pub struct Admitted {
    _slot: OwnedSemaphorePermit,
    addr: Option<(AddrKey, Arc<Mutex<AddrTable<AddrState>>>)>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Some((key, table)) = self.addr.take() {
            let mut table = table.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(state) = table.get_mut(key) {
                state.conns = state.conns.saturating_sub(1);
            }
            table.release(key);
        }
    }
}

impl ConnSlots {
    /// `max` connections in all, and `limits` per address.
    pub fn new(max: usize, limits: AddrLimits) -> Self {
        // Addresses remembered only for their connection rate are bounded; those with live
        // connections are bounded by `max`.
        let cap = 65_536usize.max(max.saturating_mul(2));
        ConnSlots {
            slots: Arc::new(Semaphore::new(max)),
            max,
            limits: Arc::new(limits),
            table: Arc::new(Mutex::new(AddrTable::new(cap))),
        }
    }

    /// The server's connection limit.
    pub fn max(&self) -> usize {
        self.max
    }

    /// The per-address limits.
    pub fn limits(&self) -> &AddrLimits {
        &self.limits
    }

    /// Admits a connection from `peer`, or says why not. Never waits.
    pub fn admit(&self, peer: &PeerAddr) -> Result<Admitted, Refusal> {
        let Some(key) = self.limits.key(peer) else {
            let slot = self
                .slots
                .clone()
                .try_acquire_owned()
                .map_err(|_| Refusal::Full)?;
            return Ok(Admitted {
                _slot: slot,
                addr: None,
            });
        };
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let limits = &self.limits;
        let state = table.entry(key, || AddrState {
            conns: 0,
            bucket: TokenBucket::new(limits.rate, limits.burst),
        });
        // Every attempt costs a token, refused ones too: a reconnect loop is what this limits.
        if !state.bucket.try_take() {
            return Err(Refusal::AddrRate);
        }
        if limits.max_conns > 0 && state.conns >= limits.max_conns {
            return Err(Refusal::AddrBusy);
        }
        let slot = self
            .slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::Full)?;
        state.conns += 1;
        drop(table);
        Ok(Admitted {
            _slot: slot,
            addr: Some((key, self.table.clone())),
        })
    }

    /// Addresses currently tracked (for tests and diagnostics).
    pub fn tracked_addresses(&self) -> usize {
        self.table.lock().map(|t| t.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(s: &str) -> PeerAddr {
        PeerAddr::Inet(s.parse().unwrap())
    }

    fn limits(max_conns: usize, rate: f64, burst: u32) -> AddrLimits {
        AddrLimits {
            max_conns,
            rate,
            burst,
            exempt: IpList::default(),
        }
    }

    #[test]
    fn one_address_cannot_take_every_slot() {
        let slots = ConnSlots::new(10, limits(3, 0.0, 1));
        let mine: Vec<_> = (0..3)
            .map(|i| {
                slots
                    .admit(&peer(&format!("10.0.0.1:{}", 1000 + i)))
                    .unwrap()
            })
            .collect();
        assert_eq!(
            slots.admit(&peer("10.0.0.1:2000")).unwrap_err(),
            Refusal::AddrBusy
        );
        // Another address is still served, and a freed connection can be used again.
        let other = slots.admit(&peer("10.0.0.2:1000")).unwrap();
        drop(mine);
        let again = slots.admit(&peer("10.0.0.1:3000")).unwrap();
        drop((other, again));
        assert_eq!(slots.tracked_addresses(), 0, "nothing left to remember");
    }

    #[test]
    fn ipv6_addresses_of_one_64_share_a_limit_and_mapped_is_ipv4() {
        let slots = ConnSlots::new(10, limits(2, 0.0, 1));
        let _a = slots.admit(&peer("[2001:db8::1]:1")).unwrap();
        let _b = slots.admit(&peer("[2001:db8::ffff:2]:1")).unwrap();
        assert_eq!(
            slots.admit(&peer("[2001:db8::3]:1")).unwrap_err(),
            Refusal::AddrBusy
        );
        assert!(
            slots.admit(&peer("[2001:db8:0:1::3]:1")).is_ok(),
            "another /64"
        );
        let _c = slots.admit(&peer("10.0.0.9:1")).unwrap();
        let _d = slots.admit(&peer("[::ffff:10.0.0.9]:2")).unwrap();
        assert_eq!(
            slots.admit(&peer("10.0.0.9:3")).unwrap_err(),
            Refusal::AddrBusy
        );
    }

    #[test]
    fn the_rate_survives_closing_and_exempt_addresses_skip_it() {
        let slots = ConnSlots::new(
            100,
            AddrLimits {
                exempt: IpList::parse("127.0.0.0/8").unwrap(),
                ..limits(0, 0.001, 3)
            },
        );
        for _ in 0..3 {
            drop(slots.admit(&peer("10.0.0.1:1")).unwrap());
        }
        assert_eq!(
            slots.admit(&peer("10.0.0.1:1")).unwrap_err(),
            Refusal::AddrRate
        );
        assert!(slots.admit(&peer("10.0.0.2:1")).is_ok());
        for _ in 0..50 {
            drop(slots.admit(&peer("127.0.0.1:1")).unwrap());
        }
    }

    #[test]
    fn the_server_limit_still_holds() {
        let slots = ConnSlots::new(2, AddrLimits::default());
        let _a = slots.admit(&peer("127.0.0.1:1")).unwrap();
        let _b = slots.admit(&peer("10.0.0.1:1")).unwrap();
        assert_eq!(slots.admit(&peer("10.0.0.2:1")).unwrap_err(), Refusal::Full);
        assert_eq!(slots.admit(&PeerAddr::Unix).unwrap_err(), Refusal::Full);
    }
}
