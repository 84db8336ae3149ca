//! Client addresses as limits see them: IPv4-mapped IPv6 addresses turned back into IPv4, and the
//! key per-address limits count under (an IPv4 address, or an IPv6 /64: one subscriber's network,
//! the block an attacker gets for free, as Ergo and InspIRCd count them).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// `::ffff:a.b.c.d` is the IPv4 client `a.b.c.d` (what a dual-stack `[::]` socket reports); every
/// other address is itself.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// [`canonical_ip`] for a socket address, so logs name an IPv4 client as `127.0.0.1:5000`.
pub fn canonical_addr(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(canonical_ip(addr.ip()), addr.port())
}

/// The unit a per-address limit counts: an IPv4 address, or the /64 an IPv6 address is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AddrKey(IpAddr);

impl AddrKey {
    pub fn of(ip: IpAddr) -> Self {
        match canonical_ip(ip) {
            IpAddr::V6(v6) => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                AddrKey(IpAddr::V6(Ipv6Addr::from(bits)))
            }
            v4 => AddrKey(v4),
        }
    }
}

impl std::fmt::Display for AddrKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
            v4 => write!(f, "{v4}"),
        }
    }
}

/// Per-address state kept for a bounded number of addresses. An entry that can be forgotten
/// without losing anything (no connection open, its rate bucket full again) is dropped when the
/// table fills; if that is not enough, entries only remembered for their rate go too, so the
/// table never grows past `cap` plus the addresses that hold live connections.
#[derive(Debug)]
pub struct AddrTable<T> {
    map: HashMap<AddrKey, T>,
    cap: usize,
}

/// What an [`AddrTable`] asks of its entries when it must make room.
pub trait AddrEntry {
    /// Nothing would be lost by forgetting this entry.
    fn forgettable(&mut self) -> bool;
    /// The entry stands for something still open (a connection), so it must stay.
    fn in_use(&self) -> bool;
}

impl<T: AddrEntry> AddrTable<T> {
    pub fn new(cap: usize) -> Self {
        AddrTable {
            map: HashMap::new(),
            cap: cap.max(1),
        }
    }

    /// The entry for `key`, made with `make` if there is none.
    pub fn entry(&mut self, key: AddrKey, make: impl FnOnce() -> T) -> &mut T {
        if !self.map.contains_key(&key) && self.map.len() >= self.cap {
            self.map.retain(|_, e| !e.forgettable());
            if self.map.len() >= self.cap {
                tracing::warn!(
                    tracked = self.map.len(),
                    "per-address table full; forgetting the rate history of idle addresses"
                );
                self.map.retain(|_, e| e.in_use());
            }
        }
        self.map.entry(key).or_insert_with(make)
    }

    /// The entry for `key`, if there is one.
    pub fn get_mut(&mut self, key: AddrKey) -> Option<&mut T> {
        self.map.get_mut(&key)
    }

    /// Drops `key`'s entry if it can be forgotten.
    pub fn release(&mut self, key: AddrKey) {
        if let Some(e) = self.map.get_mut(&key) {
            if e.forgettable() {
                self.map.remove(&key);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn mapped_addresses_are_ipv4() {
        assert_eq!(canonical_ip(ip("::ffff:127.0.0.1")), ip("127.0.0.1"));
        assert_eq!(canonical_ip(ip("::1")), ip("::1"));
        let a: SocketAddr = "[::ffff:10.1.2.3]:80".parse().unwrap();
        assert_eq!(canonical_addr(a).to_string(), "10.1.2.3:80");
    }

    #[test]
    fn ipv6_counts_per_64() {
        assert_eq!(
            AddrKey::of(ip("2001:db8:1:2::1")),
            AddrKey::of(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(
            AddrKey::of(ip("2001:db8:1:2::1")),
            AddrKey::of(ip("2001:db8:1:3::1"))
        );
        assert_eq!(
            AddrKey::of(ip("2001:db8:1:2::1")).to_string(),
            "2001:db8:1:2::/64"
        );
        assert_eq!(
            AddrKey::of(ip("::ffff:1.2.3.4")),
            AddrKey::of(ip("1.2.3.4"))
        );
        assert_ne!(AddrKey::of(ip("1.2.3.4")), AddrKey::of(ip("1.2.3.5")));
    }
}
