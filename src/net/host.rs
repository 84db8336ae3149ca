//! Which `Host` names a web port answers to: the defence against DNS rebinding, shared by every
//! HTTP server of sockit (the chat page, `sockit http`).
//!
//! A hostile page at `http://evil.example:9080/` can make its own name resolve to 127.0.0.1 once
//! the page has loaded. The browser then sends the page's requests, and its WebSocket, to the
//! chat on loopback, as a same-origin request: the Origin check passes (Origin and Host both say
//! `evil.example:9080`), and `--allow` sees a local client. What such a request cannot change is
//! the `Host` header, which names the attacker's domain. So, as Jupyter and Vite do, every route
//! is served only for a `Host` that names this listener:
//!
//! - an IP literal: the listener's own address, or any address when it is bound to `0.0.0.0` or
//!   `[::]` (no one can rebind an IP literal, and which of the machine's addresses a client used
//!   is not worth tracking);
//! - `localhost`, when the listener takes loopback connections;
//! - the names given with `--web-host`, and the hosts of `--web-origin` (a reverse proxy's public
//!   name).
//!
//! The port is not compared: a port-forward (`ssh -L`, a container's published port) changes it,
//! and a rebinding attack is stopped by the name alone. A request without a `Host` (HTTP/1.0
//! scripts) is served: browsers always send one, so it cannot be a rebinding attack. A listener on
//! a Unix socket sits behind a reverse proxy, which passes on whatever Host its clients sent; it
//! answers to IP literals, `localhost`, and the names given.

use std::net::IpAddr;

use super::LocalAddr;

/// A host, as named in a `Host` header or on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Host {
    Ip(IpAddr),
    /// Lower case, without a trailing dot.
    Name(String),
}

impl Host {
    /// Parses a host without a port: a name, an IPv4 literal, or an IPv6 literal with or without
    /// brackets.
    fn parse(text: &str) -> Option<Host> {
        if let Some(v6) = text.strip_prefix('[') {
            let v6 = v6.strip_suffix(']')?;
            return v6
                .parse::<std::net::Ipv6Addr>()
                .ok()
                .map(|ip| Host::Ip(IpAddr::V6(ip).to_canonical()));
        }
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Some(Host::Ip(ip.to_canonical()));
        }
        // One trailing dot is the same name in DNS (`localhost.`).
        let name = text.strip_suffix('.').unwrap_or(text);
        let valid = !name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        valid.then(|| Host::Name(name.to_ascii_lowercase()))
    }

    /// Parses a `Host` header (or a request target's authority): `host[:port]` or `[v6][:port]`.
    fn parse_header(text: &str) -> Option<Host> {
        let host = match text.rfind([':', ']']) {
            // A port follows the last colon unless it is inside an IPv6 literal.
            Some(i) if text.as_bytes()[i] == b':' => {
                let port = &text[i + 1..];
                if !port.is_empty() && port.parse::<u16>().is_err() {
                    return None;
                }
                &text[..i]
            }
            _ => text,
        };
        // A bare IPv6 literal is no valid Host (it needs brackets).
        if !host.starts_with('[') && host.contains(':') {
            return None;
        }
        Host::parse(host)
    }
}

/// Checks a `--web-host` value; returns it normalised (lower case, no trailing dot).
pub fn parse_host_name(text: &str) -> Result<String, String> {
    match Host::parse(text.trim()) {
        Some(Host::Name(n)) => Ok(n),
        Some(Host::Ip(ip)) => Ok(ip.to_string()),
        None => Err(format!(
            "{text:?} is not a host name or IP address (give the name alone, without a port)"
        )),
    }
}

/// The `Host` values one web listener answers to.
#[derive(Debug, Clone)]
pub struct HostPolicy {
    /// Any IP literal names this listener (bound to every address, or a Unix socket).
    any_ip: bool,
    /// IP literals that name it.
    ips: Vec<IpAddr>,
    /// `localhost` names it (it takes loopback connections).
    localhost: bool,
    /// Names from `--web-host` and `--web-origin`.
    names: Vec<String>,
}

/// Why a request's Host was refused, for the log and the 421 body.
#[derive(Debug, PartialEq, Eq)]
pub struct Refused(pub String);

impl HostPolicy {
    /// The policy of a listener bound to `local`, also answering to `names` (host names or IP
    /// literals; invalid ones are ignored, as the command line has checked them already).
    pub fn new<S: AsRef<str>>(local: &LocalAddr, names: impl IntoIterator<Item = S>) -> Self {
        let mut policy = HostPolicy {
            any_ip: false,
            ips: Vec::new(),
            localhost: false,
            names: Vec::new(),
        };
        match local {
            LocalAddr::Inet(addr) => {
                let ip = addr.ip().to_canonical();
                if ip.is_unspecified() {
                    // 0.0.0.0 and [::] take loopback connections too.
                    policy.any_ip = true;
                    policy.localhost = true;
                } else {
                    policy.ips.push(ip);
                    policy.localhost = ip.is_loopback();
                }
            }
            LocalAddr::Unix(_) => {
                policy.any_ip = true;
                policy.localhost = true;
            }
        }
        for name in names {
            match Host::parse(name.as_ref().trim()) {
                Some(Host::Ip(ip)) => policy.ips.push(ip),
                Some(Host::Name(n)) => policy.names.push(n),
                None => {}
            }
        }
        policy
    }

    /// Checks a request's `Host` (the authority of an absolute-form target, if it had one, which
    /// takes precedence). `None`: no Host at all.
    pub fn check(&self, host: Option<&str>) -> Result<(), Refused> {
        let Some(text) = host else {
            return Ok(());
        };
        let admitted = match Host::parse_header(text.trim()) {
            None => false,
            Some(Host::Ip(ip)) => self.any_ip || self.ips.contains(&ip),
            Some(Host::Name(n)) => (self.localhost && n == "localhost") || self.names.contains(&n),
        };
        if admitted {
            Ok(())
        } else {
            Err(Refused(format!(
                "this server does not answer to the host {text:?}; start it with --web-host NAME \
                 to serve a name of your own"
            )))
        }
    }
}

impl HostPolicy {
    /// Checks a request head: more than one `Host` is refused, and an absolute-form target
    /// (`GET http://host/ HTTP/1.1`, and HTTP/2's `:authority`) names the host itself, when the
    /// Host header is to be ignored (RFC 9112, 3.2.2).
    pub fn check_request(
        &self,
        uri: &hyper::Uri,
        headers: &hyper::HeaderMap,
    ) -> Result<(), Refused> {
        let mut values = headers.get_all(hyper::header::HOST).iter();
        let (first, second) = (values.next(), values.next());
        if second.is_some() {
            return Err(Refused("more than one Host header".into()));
        }
        let host = match uri.authority() {
            Some(authority) => Some(authority.as_str()),
            None => first.map(|v| v.to_str().unwrap_or("\u{FFFD}")),
        };
        self.check(host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inet(addr: &str) -> LocalAddr {
        LocalAddr::Inet(addr.parse().unwrap())
    }

    #[test]
    fn a_loopback_listener_answers_to_its_address_and_localhost() {
        let p = HostPolicy::new(&inet("127.0.0.1:9080"), ["chat.example.org"]);
        for ok in [
            "127.0.0.1:9080",
            "127.0.0.1",
            "127.0.0.1:",
            "localhost:9080",
            "LOCALHOST",
            "localhost.:9080",
            "chat.example.org",
            "Chat.Example.Org.:443",
            "[::ffff:127.0.0.1]:9080",
        ] {
            assert!(p.check(Some(ok)).is_ok(), "{ok}");
        }
        assert!(p.check(None).is_ok(), "no Host");
        for bad in [
            "evil.example",
            "evil.example:9080",
            "127.0.0.2:9080",
            "[::1]:9080",
            "127.0.0.1.nip.io",
            "localhost.evil.example",
            "chat.example.org.evil.example",
            "sub.chat.example.org",
            "",
            ":9080",
            "127.0.0.1:99999",
            "127.0.0.1:x",
            "local host",
            "::1",
            "[::1",
            "user@127.0.0.1",
        ] {
            assert!(p.check(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn ipv6_listeners() {
        let p = HostPolicy::new(&inet("[::1]:9080"), Vec::<String>::new());
        assert!(p.check(Some("[::1]:9080")).is_ok());
        assert!(p.check(Some("[0:0:0:0:0:0:0:1]")).is_ok());
        assert!(p.check(Some("localhost:9080")).is_ok());
        assert!(p.check(Some("127.0.0.1:9080")).is_err());

        let p = HostPolicy::new(&inet("[2001:db8::5]:9080"), Vec::<String>::new());
        assert!(p.check(Some("[2001:DB8::5]:9080")).is_ok());
        assert!(p.check(Some("localhost:9080")).is_err(), "not on loopback");
        assert!(p.check(Some("[2001:db8::6]:9080")).is_err());
    }

    #[test]
    fn a_listener_on_every_address_answers_to_any_ip_literal() {
        for any in ["0.0.0.0:9080", "[::]:9080"] {
            let p = HostPolicy::new(&inet(any), ["chat.example.org"]);
            for ok in [
                "192.0.2.7:9080",
                "[2001:db8::1]",
                "127.0.0.1",
                "localhost",
                "chat.example.org",
            ] {
                assert!(p.check(Some(ok)).is_ok(), "{any} {ok}");
            }
            assert!(p.check(Some("evil.example")).is_err(), "{any}");
        }
    }

    #[test]
    fn a_specific_address_answers_only_to_itself_and_the_names_given() {
        let p = HostPolicy::new(&inet("192.0.2.7:9080"), ["198.51.100.1", "[2001:db8::9]"]);
        assert!(p.check(Some("192.0.2.7:9080")).is_ok());
        assert!(
            p.check(Some("198.51.100.1")).is_ok(),
            "a NAT's address given"
        );
        assert!(p.check(Some("[2001:db8::9]:80")).is_ok());
        assert!(p.check(Some("192.0.2.8")).is_err());
        assert!(p.check(Some("localhost")).is_err(), "not on loopback");
    }

    #[test]
    fn unix_listeners_answer_to_ip_literals_localhost_and_names() {
        let p = HostPolicy::new(
            &LocalAddr::Unix("/run/chat.sock".into()),
            ["chat.example.org"],
        );
        assert!(p.check(Some("127.0.0.1")).is_ok());
        assert!(p.check(Some("localhost")).is_ok());
        assert!(p.check(Some("chat.example.org")).is_ok());
        assert!(p.check(Some("evil.example")).is_err());
    }

    #[test]
    fn names_on_the_command_line() {
        assert_eq!(
            parse_host_name("Chat.Example.org.").unwrap(),
            "chat.example.org"
        );
        assert_eq!(parse_host_name("[::1]").unwrap(), "::1");
        assert_eq!(parse_host_name("::1").unwrap(), "::1");
        assert!(parse_host_name("chat.example.org:443").is_err());
        assert!(parse_host_name("https://chat.example.org").is_err());
        assert!(parse_host_name("*.example.org").is_err());
        assert!(parse_host_name("").is_err());
    }
}
