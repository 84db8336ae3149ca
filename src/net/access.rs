//! Allow/deny lists of addresses and CIDR blocks, with ncat's semantics: a host that matches the deny
//! list is refused even if it is also allowed, and a non-empty allow list admits only its members.
//!
//! IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, what a dual-stack `[::]` listener reports for an
//! IPv4 client) are the IPv4 address they carry, whichever way a rule or a client writes them.

use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;

use super::peer::canonical_ip;
use super::NetError;

/// A list of addresses and CIDR blocks (IPv4 and IPv6), as users type them in flags and files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpList {
    nets: Vec<IpNet>,
}

impl IpList {
    /// Parses a comma- or space-separated list (`127.0.0.1,10.0.0.0/8,::1`), or `none` for the
    /// empty list (what an empty list prints as).
    pub fn parse(list: &str) -> Result<Self, NetError> {
        let mut out = IpList::default();
        if list.trim().eq_ignore_ascii_case("none") {
            return Ok(out);
        }
        out.extend(list)?;
        Ok(out)
    }

    /// Adds the entries of a comma-separated list.
    pub fn extend(&mut self, list: &str) -> Result<(), NetError> {
        for entry in list
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
        {
            self.nets.push(parse_entry(entry)?);
        }
        Ok(())
    }

    /// Adds every entry of a file (one or more per line, `#` starts a comment).
    pub fn extend_from_file(&mut self, path: &Path) -> Result<(), NetError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| NetError::io(format!("cannot read {}", path.display()), e))?;
        for line in text.lines() {
            self.extend(line.split('#').next().unwrap_or(""))?;
        }
        Ok(())
    }

    /// The loopback networks, 127.0.0.0/8 and ::1.
    pub fn loopback() -> Self {
        IpList {
            nets: vec![
                IpNet::V4("127.0.0.0/8".parse().expect("a valid CIDR")),
                IpNet::V6("::1/128".parse().expect("a valid CIDR")),
            ],
        }
    }

    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    /// Whether `ip` is in one of the blocks. An IPv4 client matches its own IPv4 rules and any
    /// IPv6 rule that contains its mapped form (`::ffff:0:0/96` is every IPv4 client).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical_ip(ip);
        let mapped = match ip {
            IpAddr::V4(v4) => Some(IpAddr::V6(v4.to_ipv6_mapped())),
            IpAddr::V6(_) => None,
        };
        self.nets
            .iter()
            .any(|net| net.contains(&ip) || mapped.is_some_and(|m| net.contains(&m)))
    }
}

impl std::fmt::Display for IpList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.nets.is_empty() {
            return f.write_str("none");
        }
        let parts: Vec<String> = self.nets.iter().map(|n| n.to_string()).collect();
        f.write_str(&parts.join(","))
    }
}

/// Which client addresses a server admits.
#[derive(Debug, Clone, Default)]
pub struct AccessList {
    allow: IpList,
    deny: IpList,
}

impl AccessList {
    /// Adds the entries of a comma-separated list (`127.0.0.1,10.0.0.0/8,::1`) to the allow list.
    pub fn allow(&mut self, list: &str) -> Result<&mut Self, NetError> {
        self.allow.extend(list)?;
        Ok(self)
    }

    /// Adds the entries of a comma-separated list to the deny list.
    pub fn deny(&mut self, list: &str) -> Result<&mut Self, NetError> {
        self.deny.extend(list)?;
        Ok(self)
    }

    /// Adds every entry of a file (one or more per line, `#` starts a comment) to the allow list.
    pub fn allow_file(&mut self, path: &Path) -> Result<&mut Self, NetError> {
        self.allow.extend_from_file(path)?;
        Ok(self)
    }

    /// Adds every entry of a file to the deny list.
    pub fn deny_file(&mut self, path: &Path) -> Result<&mut Self, NetError> {
        self.deny.extend_from_file(path)?;
        Ok(self)
    }

    /// True when no rule is set, so every client is admitted without a lookup.
    pub fn is_open(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }

    /// Whether a client at `ip` may connect.
    pub fn permits(&self, ip: IpAddr) -> bool {
        if self.deny.contains(ip) {
            return false;
        }
        self.allow.is_empty() || self.allow.contains(ip)
    }
}

fn parse_entry(entry: &str) -> Result<IpNet, NetError> {
    if let Ok(net) = entry.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    entry
        .parse::<IpAddr>()
        .map(|ip| IpNet::from(canonical_ip(ip)))
        .map_err(|_| NetError::BadAccessEntry {
            entry: entry.to_string(),
            reason: "expected an IP address or a CIDR block such as 10.0.0.0/8 or fd00::/8".into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn allow_and_deny_follow_ncat() {
        let mut acl = AccessList::default();
        assert!(acl.is_open() && acl.permits(ip("8.8.8.8")));
        acl.allow("127.0.0.0/8, ::1").unwrap();
        acl.deny("127.0.0.2").unwrap();
        assert!(acl.permits(ip("127.0.0.1")));
        assert!(acl.permits(ip("::ffff:127.0.0.1")));
        assert!(acl.permits(ip("::1")));
        assert!(!acl.permits(ip("127.0.0.2")), "deny wins over allow");
        assert!(
            !acl.permits(ip("10.1.2.3")),
            "not in a non-empty allow list"
        );
        let mut v6 = AccessList::default();
        v6.deny("fd00::/8").unwrap();
        assert!(!v6.permits(ip("fd12::1")) && v6.permits(ip("::1")));
    }

    #[test]
    fn mapped_addresses_match_either_way() {
        // What a `[::]` listener reports for an IPv4 client, against rules written both ways.
        let mapped_client = ip("::ffff:127.0.0.1");
        for rule in [
            "::ffff:127.0.0.1",
            "::ffff:0:0/96",
            "::ffff:127.0.0.0/104",
            "127.0.0.1",
        ] {
            let mut acl = AccessList::default();
            acl.deny(rule).unwrap();
            assert!(
                !acl.permits(mapped_client),
                "deny {rule} missed {mapped_client}"
            );
            assert!(
                !acl.permits(ip("127.0.0.1")),
                "deny {rule} missed 127.0.0.1"
            );
            assert!(acl.permits(ip("::1")), "deny {rule} caught ::1");
        }
        let mut acl = AccessList::default();
        acl.allow("::ffff:10.0.0.0/104").unwrap();
        assert!(acl.permits(ip("10.9.9.9")) && !acl.permits(ip("11.0.0.1")));
    }

    #[test]
    fn lists_print_back_and_none_is_empty() {
        assert_eq!(IpList::loopback().to_string(), "127.0.0.0/8,::1/128");
        assert!(IpList::parse("").unwrap().is_empty());
        assert!(IpList::parse(" None ").unwrap().is_empty());
        assert_eq!(
            IpList::parse("::ffff:1.2.3.4").unwrap().to_string(),
            "1.2.3.4/32"
        );
    }

    #[test]
    fn bad_entries_are_usage_errors() {
        let err = AccessList::default().allow("10.0.0.0/33").unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(AccessList::default().deny("example").is_err());
    }
}
