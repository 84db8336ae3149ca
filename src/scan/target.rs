//! What to scan: targets as the user writes them (host names, IPv4 and IPv6 addresses, CIDR
//! ranges, address ranges) and ports (lists, ranges, `-` for all, service names, nmap's top N),
//! checked before any packet is sent, and turned into the addresses to probe.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use ipnet::IpNet;

use super::services::TOP_TCP;
use super::ScanError;

/// The most addresses a scan takes even with its confirming flag: a /8 of IPv4. Anything larger
/// (an IPv6 /64) would be memory for its host table before a single probe.
pub const HARD_MAX_HOSTS: u64 = 1 << 24;

/// How long one name may take to resolve before it is reported as unresolvable.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

/// One target as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An address.
    Addr(IpAddr),
    /// Every address of a network, its network and broadcast addresses included (as nmap does).
    Net(IpNet),
    /// Every address from the first to the last, both included.
    Range(IpAddr, IpAddr),
    /// A host name, resolved before the scan.
    Name(String),
}

impl Target {
    /// Parses `127.0.0.1`, `::1`, `[::1]`, `127.0.0.0/29`, `127.0.0.1-9`, `127.0.0.1-127.0.1.5` or a
    /// host name.
    pub fn parse(text: &str) -> Result<Target, ScanError> {
        let bad = |reason: &str| ScanError::BadTarget {
            target: text.to_string(),
            reason: reason.to_string(),
        };
        let t = text.trim();
        if t.is_empty() {
            return Err(bad("empty target"));
        }
        let unbracketed = t
            .strip_prefix('[')
            .and_then(|r| r.strip_suffix(']'))
            .unwrap_or(t);
        if let Ok(ip) = unbracketed.parse::<IpAddr>() {
            return Ok(Target::Addr(ip));
        }
        if t.contains('/') {
            return t
                .parse::<IpNet>()
                .map(Target::Net)
                .map_err(|_| bad("not a CIDR range (try 192.0.2.0/24 or 2001:db8::/120)"));
        }
        if let Some((first, last)) = t.split_once('-') {
            if let Ok(first) = first.parse::<IpAddr>() {
                let last = match (first, last.parse::<IpAddr>(), last.parse::<u8>()) {
                    (_, Ok(last), _) => last,
                    // `127.0.0.1-9`: the last octet's range.
                    (IpAddr::V4(a), Err(_), Ok(octet)) => {
                        let o = a.octets();
                        IpAddr::V4(Ipv4Addr::new(o[0], o[1], o[2], octet))
                    }
                    _ => return Err(bad("not an address range (try 10.0.0.1-20 or A-B)")),
                };
                if first.is_ipv4() != last.is_ipv4() {
                    return Err(bad("a range cannot mix IPv4 and IPv6"));
                }
                if ip_to_u128(last) < ip_to_u128(first) {
                    return Err(bad("the range ends before it begins"));
                }
                return Ok(Target::Range(first, last));
            }
        }
        // RFC 1123 labels: a name cannot begin or end a label with a hyphen (a leading one is
        // more likely a mistyped flag).
        let labels_ok = t
            .trim_end_matches('.')
            .split('.')
            .all(|l| !l.is_empty() && !l.starts_with('-') && !l.ends_with('-'));
        if !labels_ok {
            return Err(bad("not a host name, address, CIDR range or address range"));
        }
        crate::net::parse_host_name(t)
            .map(Target::Name)
            .map_err(|_| bad("not a host name, address, CIDR range or address range"))
    }

    /// How many addresses this target stands for (a name counts as one).
    pub fn count(&self) -> u128 {
        match self {
            Target::Addr(_) | Target::Name(_) => 1,
            // ::/0 holds 2^128 addresses, one more than a u128 counts: saturate (the fuzzer's
            // find; it is far over any --max-hosts either way).
            Target::Net(net) => 1u128
                .checked_shl(u32::from(net.max_prefix_len() - net.prefix_len()))
                .unwrap_or(u128::MAX),
            Target::Range(a, b) => (ip_to_u128(*b) - ip_to_u128(*a)).saturating_add(1),
        }
    }

    /// The addresses of a literal target, in order; `None` for a name.
    fn addrs(&self) -> Option<Box<dyn Iterator<Item = IpAddr> + '_>> {
        let span = |first: IpAddr, count: u128| -> Box<dyn Iterator<Item = IpAddr>> {
            let start = ip_to_u128(first);
            let v4 = first.is_ipv4();
            Box::new((0..count).map(move |i| u128_to_ip(start + i, v4)))
        };
        match self {
            Target::Addr(ip) => Some(Box::new(std::iter::once(*ip))),
            Target::Net(net) => Some(span(net.network(), self.count())),
            Target::Range(a, _) => Some(span(*a, self.count())),
            Target::Name(_) => None,
        }
    }
}

fn ip_to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

fn u128_to_ip(n: u128, v4: bool) -> IpAddr {
    if v4 {
        IpAddr::V4(Ipv4Addr::from(n as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(n))
    }
}

/// One address to scan, with the name it was given by, if any.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Host {
    pub addr: IpAddr,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A name that did not resolve, and why.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Unresolved {
    pub name: String,
    pub error: String,
}

/// Checks the size of the targets against `max_hosts` before anything is resolved or expanded.
/// `confirmed` lifts `max_hosts` (not [`HARD_MAX_HOSTS`]).
pub fn check_size(targets: &[Target], max_hosts: u64, confirmed: bool) -> Result<u64, ScanError> {
    let total: u128 = targets.iter().map(Target::count).sum();
    let biggest = targets.iter().max_by_key(|t| t.count());
    let describe = || match biggest {
        Some(Target::Net(n)) => n.to_string(),
        Some(Target::Range(a, b)) => format!("{a}-{b}"),
        _ => "the targets".to_string(),
    };
    if total > u128::from(HARD_MAX_HOSTS) {
        return Err(ScanError::TooManyHosts {
            what: describe(),
            count: total,
            max: HARD_MAX_HOSTS,
            hint: "split it into smaller ranges".into(),
        });
    }
    if total > u128::from(max_hosts) && !confirmed {
        return Err(ScanError::TooManyHosts {
            what: describe(),
            count: total,
            max: max_hosts,
            hint: "add --confirm-large to scan them all, or raise --max-hosts".into(),
        });
    }
    Ok(total as u64)
}

/// Turns targets into hosts: literal addresses expanded, names resolved (at most
/// [`RESOLVE_TIMEOUT`] each, all at once). A name's first address is scanned, as nmap does; a
/// name that does not resolve is returned apart, so the others are still scanned. The same address
/// given twice is scanned once.
pub async fn resolve(targets: &[Target]) -> (Vec<Host>, Vec<Unresolved>) {
    let lookups = targets.iter().filter_map(|t| match t {
        Target::Name(name) => Some(async move {
            let found =
                tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((name.as_str(), 0)))
                    .await;
            let result = match found {
                Ok(Ok(mut addrs)) => addrs
                    .next()
                    .map(|a| a.ip())
                    .ok_or_else(|| "no address".to_string()),
                Ok(Err(e)) => Err(crate::net::NetError::Resolve {
                    target: name.clone(),
                    source: e,
                }
                .to_string()),
                Err(_) => Err(format!("no answer within {RESOLVE_TIMEOUT:?}")),
            };
            (name.clone(), result)
        }),
        _ => None,
    });
    let mut resolved = futures::future::join_all(lookups).await.into_iter();
    let mut hosts = Vec::new();
    let mut unresolved = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for target in targets {
        match target.addrs() {
            Some(addrs) => {
                for addr in addrs {
                    if seen.insert(addr) {
                        hosts.push(Host { addr, name: None });
                    }
                }
            }
            None => match resolved.next() {
                Some((name, Ok(addr))) if seen.insert(addr) => hosts.push(Host {
                    addr,
                    name: Some(name),
                }),
                Some((_, Ok(_))) => {}
                Some((name, Err(error))) => unresolved.push(Unresolved {
                    error: error
                        .strip_prefix(&format!("cannot resolve {name}: "))
                        .unwrap_or(&error)
                        .to_string(),
                    name,
                }),
                None => {}
            },
        }
    }
    (hosts, unresolved)
}

/// Parses a port list: `22`, `22,80,443`, `8000-8100`, `-` (1-65535), `1024-` (to 65535), `-1023`
/// (from 1), service names from the table (`http,ssh`), any mix. Duplicates are kept once, in the
/// order first given.
pub fn parse_ports(spec: &str) -> Result<Vec<u16>, ScanError> {
    let bad = |reason: String| ScanError::BadPorts {
        spec: spec.to_string(),
        reason,
    };
    let number = |s: &str| -> Result<u16, ScanError> {
        match s.trim().parse::<u32>() {
            Ok(0) => Err(bad(
                "port 0 cannot be connected to; ports are 1-65535".into()
            )),
            Ok(n) if n <= 65535 => Ok(n as u16),
            Ok(n) => Err(bad(format!("{n} is not a port (1-65535)"))),
            Err(_) => match service_port(s.trim()) {
                Some(p) => Ok(p),
                None => Err(bad(format!(
                    "{:?} is not a port number, range or known service name",
                    s.trim()
                ))),
            },
        }
    };
    // The first port not yet listed at or after each port (path-compressed), so overlapping
    // ranges (`-p 1-,1-,...`) cost each port once in all, not once per range: the walk over a
    // range jumps past what earlier items took.
    let mut untaken: Vec<u32> = (0..=65536).collect();
    let mut ports = Vec::new();
    if spec.trim().is_empty() {
        return Err(bad("no ports given".into()));
    }
    for part in spec.split(',') {
        let part = part.trim();
        if part.is_empty() {
            return Err(bad("an empty item in the list".into()));
        }
        let (first, last) = match part.split_once('-') {
            Some((a, b)) => {
                let a = if a.trim().is_empty() { 1 } else { number(a)? };
                let b = if b.trim().is_empty() {
                    65535
                } else {
                    number(b)?
                };
                if b < a {
                    return Err(bad(format!("the range {part} ends before it begins")));
                }
                (a, b)
            }
            None => {
                let p = number(part)?;
                (p, p)
            }
        };
        let mut p = first_untaken(&mut untaken, u32::from(first));
        while p <= u32::from(last) {
            // p <= last <= 65535.
            ports.push(p as u16);
            untaken[p as usize] = p + 1;
            p = first_untaken(&mut untaken, p + 1);
        }
    }
    Ok(ports)
}

/// The first port at or after `p` that is not yet listed (65536 when none is), shortening the
/// chain it follows so later walks jump straight there.
fn first_untaken(untaken: &mut [u32], p: u32) -> u32 {
    let mut root = p;
    while untaken[root as usize] != root {
        root = untaken[root as usize];
    }
    let mut at = p;
    while untaken[at as usize] != root {
        let next = untaken[at as usize];
        untaken[at as usize] = root;
        at = next;
    }
    root
}

/// The `n` ports most often found open (nmap's frequency order), `n` from 1 to the table's size.
pub fn top_ports(n: usize) -> Result<Vec<u16>, ScanError> {
    if n == 0 || n > TOP_TCP.len() {
        return Err(ScanError::BadPorts {
            spec: format!("--top-ports {n}"),
            reason: format!("the service table has the top 1 to {} ports", TOP_TCP.len()),
        });
    }
    Ok(TOP_TCP[..n].iter().map(|&(p, _)| p).collect())
}

/// The service name of a port, from the table (`None` where it has none, or says `unknown`).
pub fn service_name(port: u16) -> Option<&'static str> {
    // Asked once per port scanned: an index by port, built once, rather than a walk of the table.
    static BY_PORT: std::sync::OnceLock<Vec<u16>> = std::sync::OnceLock::new();
    let index = BY_PORT.get_or_init(|| {
        let mut index = vec![u16::MAX; 65536];
        for (i, &(p, _)) in TOP_TCP.iter().enumerate() {
            index[usize::from(p)] = i as u16;
        }
        index
    });
    TOP_TCP
        .get(usize::from(index[usize::from(port)]))
        .map(|&(_, name)| name)
        .filter(|&name| name != "unknown")
}

/// The port of a service name from the table (the most frequent port where a name has several,
/// as the table is in frequency order). A map built once: a list of a thousand names would
/// otherwise scan the table a thousand times.
fn service_port(name: &str) -> Option<u16> {
    static BY_NAME: std::sync::OnceLock<std::collections::HashMap<String, u16>> =
        std::sync::OnceLock::new();
    let map = BY_NAME.get_or_init(|| {
        let mut map = std::collections::HashMap::new();
        for &(port, n) in TOP_TCP.iter().filter(|&&(_, n)| n != "unknown") {
            map.entry(n.to_ascii_lowercase()).or_insert(port);
        }
        map
    });
    map.get(&name.to_ascii_lowercase()).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_or_say_why_not() {
        assert_eq!(
            Target::parse("127.0.0.1").unwrap(),
            Target::Addr("127.0.0.1".parse().unwrap())
        );
        assert_eq!(
            Target::parse("[::1]").unwrap(),
            Target::Addr("::1".parse().unwrap())
        );
        assert_eq!(Target::parse("127.0.0.0/29").unwrap().count(), 8);
        assert_eq!(Target::parse("127.0.0.1-9").unwrap().count(), 9);
        assert_eq!(Target::parse("127.0.0.250-127.0.1.4").unwrap().count(), 11);
        assert_eq!(
            Target::parse("localhost").unwrap(),
            Target::Name("localhost".into())
        );
        for bad in ["", "10.0.0.0/33", "10.0.0.9-3", "a b", "1.2.3.4-::1", "-x-"] {
            assert!(Target::parse(bad).is_err(), "{bad:?}");
        }
        let net = Target::parse("127.0.0.0/30").unwrap();
        let addrs: Vec<IpAddr> = net.addrs().unwrap().collect();
        assert_eq!(addrs.len(), 4);
        assert_eq!(addrs[0], "127.0.0.0".parse::<IpAddr>().unwrap());
        assert_eq!(addrs[3], "127.0.0.3".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn sizes_need_confirmation_past_the_limit() {
        let t = vec![Target::parse("10.0.0.0/15").unwrap()];
        assert!(check_size(&t, 65536, false).is_err());
        assert_eq!(check_size(&t, 65536, true).unwrap(), 131072);
        let huge = vec![Target::parse("2001:db8::/64").unwrap()];
        assert!(check_size(&huge, 65536, true).is_err());
    }

    #[test]
    fn ports_parse_or_say_why_not() {
        assert_eq!(
            parse_ports("22,80,8000-8002").unwrap(),
            [22, 80, 8000, 8001, 8002]
        );
        assert_eq!(parse_ports("-").unwrap().len(), 65535);
        assert_eq!(parse_ports("65530-").unwrap().len(), 6);
        assert_eq!(parse_ports("-3").unwrap(), [1, 2, 3]);
        assert_eq!(parse_ports("http,ssh,80").unwrap(), [80, 22]);
        assert_eq!(parse_ports("HTTPS,Ssh").unwrap(), [443, 22]);
        assert!(parse_ports("unknown").is_err());
        for bad in ["", "0", "70000", "9-3", "1,,2", "nosuchservice", "1-x"] {
            assert!(parse_ports(bad).is_err(), "{bad:?}");
        }
        assert_eq!(top_ports(3).unwrap(), [80, 23, 443]);
        assert!(top_ports(0).is_err());
        assert!(top_ports(1001).is_err());
        assert_eq!(service_name(22), Some("ssh"));
    }

    /// Overlapping items list each port once, where it first appears, as a plain walk of every
    /// item would; and a list of thousands of whole ranges is still every port once.
    #[test]
    fn overlapping_ports_are_listed_once_in_first_order() {
        fn plain(spec: &str) -> Vec<u16> {
            let mut seen = vec![false; 65536];
            let mut out = Vec::new();
            for part in spec.split(',') {
                let (a, b) = part.split_once('-').unwrap_or((part, part));
                let a: u16 = if a.is_empty() { 1 } else { a.parse().unwrap() };
                let b: u16 = if b.is_empty() {
                    65535
                } else {
                    b.parse().unwrap()
                };
                for p in a..=b {
                    if !std::mem::replace(&mut seen[usize::from(p)], true) {
                        out.push(p);
                    }
                }
            }
            out
        }
        for spec in [
            "5-10,1-7,9,3-12,65535,65530-",
            "100-200,150-250,1-120,199,201",
            "65535,1-,2-3",
            "7,7,7-7,6-8,1-5,4-9",
        ] {
            assert_eq!(parse_ports(spec).unwrap(), plain(spec), "{spec}");
        }
        let many = vec!["1-"; 2000].join(",");
        let all = parse_ports(&many).unwrap();
        assert_eq!(all.len(), 65535);
        assert!(all.windows(2).all(|w| w[1] == w[0] + 1));
    }
}
