//! Allow/deny lists of addresses and CIDR blocks, with ncat's semantics: a host that matches the deny
//! list is refused even if it is also allowed, and a non-empty allow list admits only its members.

use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;

use super::NetError;

/// Which client addresses a server admits.
#[derive(Debug, Clone, Default)]
pub struct AccessList {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
}

impl AccessList {
    /// Adds the entries of a comma-separated list (`127.0.0.1,10.0.0.0/8,::1`) to the allow list.
    pub fn allow(&mut self, list: &str) -> Result<&mut Self, NetError> {
        self.allow.extend(parse_list(list)?);
        Ok(self)
    }

    /// Adds the entries of a comma-separated list to the deny list.
    pub fn deny(&mut self, list: &str) -> Result<&mut Self, NetError> {
        self.deny.extend(parse_list(list)?);
        Ok(self)
    }

    /// Adds every entry of a file (one or more per line, `#` starts a comment) to the allow list.
    pub fn allow_file(&mut self, path: &Path) -> Result<&mut Self, NetError> {
        self.allow.extend(parse_file(path)?);
        Ok(self)
    }

    /// Adds every entry of a file to the deny list.
    pub fn deny_file(&mut self, path: &Path) -> Result<&mut Self, NetError> {
        self.deny.extend(parse_file(path)?);
        Ok(self)
    }

    /// True when no rule is set, so every client is admitted without a lookup.
    pub fn is_open(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }

    /// Whether a client at `ip` may connect.
    pub fn permits(&self, ip: IpAddr) -> bool {
        // A v4 client on a dual-stack socket shows up as ::ffff:a.b.c.d; rules are written in v4.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        if self.deny.iter().any(|net| net.contains(&ip)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|net| net.contains(&ip))
    }
}

fn parse_list(list: &str) -> Result<Vec<IpNet>, NetError> {
    list.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(parse_entry)
        .collect()
}

fn parse_file(path: &Path) -> Result<Vec<IpNet>, NetError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| NetError::io(format!("cannot read {}", path.display()), e))?;
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        out.extend(parse_list(line)?);
    }
    Ok(out)
}

fn parse_entry(entry: &str) -> Result<IpNet, NetError> {
    if let Ok(net) = entry.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    entry
        .parse::<IpAddr>()
        .map(IpNet::from)
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
    fn bad_entries_are_usage_errors() {
        let err = AccessList::default().allow("10.0.0.0/33").unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(AccessList::default().deny("example").is_err());
    }
}
