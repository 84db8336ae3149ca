//! Endpoints as users type them (`HOST:PORT`, `[IPv6]:PORT`, `unix:PATH`) and the addresses sockets
//! report back.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::OnceLock;

use super::NetError;

/// Where to listen or connect: an internet host and port, or a Unix socket path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A host name or IP literal and a port. Names are resolved when the socket is opened.
    Inet { host: String, port: u16 },
    /// A Unix stream socket at this path.
    Unix(PathBuf),
}

impl Endpoint {
    /// Parses `s`, also accepting a bare port (`9001`) or `:PORT`, which mean `default_host:PORT`.
    pub fn parse_with_default_host(s: &str, default_host: &str) -> Result<Self, NetError> {
        let port_only = s.strip_prefix(':').unwrap_or(s);
        // `:http`: a service name on the default host (a bare `http` is a host name).
        let service = s.starts_with(':') && !port_only.is_empty() && !port_only.contains(':');
        if service || !port_only.is_empty() && port_only.bytes().all(|b| b.is_ascii_digit()) {
            return Ok(Endpoint::Inet {
                host: default_host.to_string(),
                port: parse_port(s, port_only)?,
            });
        }
        s.parse()
    }

    /// Resolves the endpoint to socket addresses (a name may give several). Unix endpoints give none.
    pub async fn resolve(&self) -> Result<Vec<SocketAddr>, NetError> {
        let Endpoint::Inet { host, port } = self else {
            return Ok(Vec::new());
        };
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), *port))
            .await
            .map_err(|source| NetError::Resolve {
                target: self.to_string(),
                source,
            })?
            .collect();
        if addrs.is_empty() {
            return Err(NetError::Resolve {
                target: self.to_string(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no addresses"),
            });
        }
        Ok(addrs)
    }

    /// The host name, for TLS server-name checks; `None` for Unix sockets.
    pub fn host(&self) -> Option<&str> {
        match self {
            Endpoint::Inet { host, .. } => Some(host),
            Endpoint::Unix(_) => None,
        }
    }
}

fn parse_port(input: &str, text: &str) -> Result<u16, NetError> {
    if let Ok(port) = text.parse::<u16>() {
        return Ok(port);
    }
    let is_name = !text.is_empty()
        && text.bytes().any(|b| b.is_ascii_alphabetic())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if is_name {
        if let Some(port) = service_port(text) {
            return Ok(port);
        }
        return Err(NetError::BadAddress {
            input: input.to_string(),
            reason: format!(
                "{text:?} is neither a port number nor a service name in /etc/services"
            ),
        });
    }
    Err(NetError::BadAddress {
        input: input.to_string(),
        reason: format!("port {text:?} is not a number from 0 to 65535"),
    })
}

/// Where /etc/services is missing (minimal containers), the names people type most.
const WELL_KNOWN: &[(&str, u16)] = &[
    ("ftp", 21),
    ("ssh", 22),
    ("telnet", 23),
    ("smtp", 25),
    ("domain", 53),
    ("http", 80),
    ("www", 80),
    ("pop3", 110),
    ("imap", 143),
    ("https", 443),
    ("submission", 587),
    ("imaps", 993),
    ("pop3s", 995),
];

/// A service name's port (`http` -> 80), from /etc/services (names and aliases, TCP or UDP) as
/// getservbyname(3) reads it, else the small built-in table.
pub fn service_port(name: &str) -> Option<u16> {
    let wanted = name.to_ascii_lowercase();
    services().get(wanted.as_str()).copied().or_else(|| {
        WELL_KNOWN
            .iter()
            .find(|(n, _)| *n == wanted)
            .map(|(_, p)| *p)
    })
}

/// /etc/services as a map from lower-cased name or alias to port, read once per process: a
/// scan list or a fuzzer may look up thousands of names, and the file does not change under us.
/// The first line that names a service wins, as in getservbyname(3).
fn services() -> &'static HashMap<String, u16> {
    static SERVICES: OnceLock<HashMap<String, u16>> = OnceLock::new();
    SERVICES.get_or_init(|| {
        let mut map = HashMap::new();
        let text = std::fs::read_to_string("/etc/services").unwrap_or_default();
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("");
            let mut fields = line.split_whitespace();
            let (Some(service), Some(port_proto)) = (fields.next(), fields.next()) else {
                continue;
            };
            let Some(port) = port_proto.split('/').next().and_then(|p| p.parse().ok()) else {
                continue;
            };
            for name in std::iter::once(service).chain(fields) {
                map.entry(name.to_ascii_lowercase()).or_insert(port);
            }
        }
        map
    })
}

impl FromStr for Endpoint {
    type Err = NetError;

    fn from_str(s: &str) -> Result<Self, NetError> {
        let bad = |reason: &str| NetError::BadAddress {
            input: s.to_string(),
            reason: reason.to_string(),
        };
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(bad("unix: needs a path, as in unix:/tmp/sockit.sock"));
            }
            return Ok(Endpoint::Unix(PathBuf::from(path)));
        }
        if let Some(rest) = s.strip_prefix('[') {
            let (host, port) = rest
                .split_once("]:")
                .ok_or_else(|| bad("expected [IPv6]:PORT, as in [::1]:9001"))?;
            host.parse::<std::net::Ipv6Addr>()
                .map_err(|_| bad("the part in brackets is not an IPv6 address"))?;
            return Ok(Endpoint::Inet {
                host: host.to_string(),
                port: parse_port(s, port)?,
            });
        }
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| bad("expected HOST:PORT, [IPv6]:PORT or unix:PATH"))?;
        if host.contains(':') {
            return Err(bad("IPv6 addresses need brackets, as in [::1]:9001"));
        }
        if host.is_empty() {
            return Err(bad("missing host, as in 127.0.0.1:9001"));
        }
        Ok(Endpoint::Inet {
            host: host.to_string(),
            port: parse_port(s, port)?,
        })
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Inet { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Endpoint::Inet { host, port } => write!(f, "{host}:{port}"),
            Endpoint::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// The address a listener is bound to, as the kernel reports it (port 0 resolved to the real port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalAddr {
    Inet(SocketAddr),
    Unix(PathBuf),
}

impl LocalAddr {
    /// The socket address, for internet listeners.
    pub fn inet(&self) -> Option<SocketAddr> {
        match self {
            LocalAddr::Inet(a) => Some(*a),
            LocalAddr::Unix(_) => None,
        }
    }

    /// The same address as an [`Endpoint`], ready to connect to.
    pub fn endpoint(&self) -> Endpoint {
        match self {
            LocalAddr::Inet(a) => Endpoint::Inet {
                host: a.ip().to_string(),
                port: a.port(),
            },
            LocalAddr::Unix(p) => Endpoint::Unix(p.clone()),
        }
    }
}

impl fmt::Display for LocalAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LocalAddr::Inet(a) => write!(f, "{a}"),
            LocalAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// Who is on the other end of an accepted connection. Unix peers are usually unnamed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerAddr {
    Inet(SocketAddr),
    Unix,
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerAddr::Inet(a) => write!(f, "{a}"),
            PeerAddr::Unix => write!(f, "unix-peer"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        let ep: Endpoint = "127.0.0.1:9001".parse().unwrap();
        assert_eq!(ep.to_string(), "127.0.0.1:9001");
        let ep: Endpoint = "[::1]:80".parse().unwrap();
        assert_eq!(ep.host(), Some("::1"));
        assert_eq!(ep.to_string(), "[::1]:80");
        let ep: Endpoint = "unix:/tmp/x.sock".parse().unwrap();
        assert_eq!(ep, Endpoint::Unix("/tmp/x.sock".into()));
        let ep = Endpoint::parse_with_default_host("9001", "127.0.0.1").unwrap();
        assert_eq!(ep.to_string(), "127.0.0.1:9001");
        let ep: Endpoint = "localhost:0".parse().unwrap();
        assert_eq!(ep.host(), Some("localhost"));
    }

    #[test]
    fn service_names_are_ports() {
        let ep: Endpoint = "localhost:http".parse().unwrap();
        assert_eq!(ep.to_string(), "localhost:80");
        let ep = Endpoint::parse_with_default_host(":https", "127.0.0.1").unwrap();
        assert_eq!(ep.to_string(), "127.0.0.1:443");
        let err = "localhost:no-such-service".parse::<Endpoint>().unwrap_err();
        assert!(err.to_string().contains("service name"), "{err}");
    }

    #[test]
    fn rejects_bad_forms() {
        for bad in [
            "",
            "nohost",
            "::1:80",
            "1.2.3.4:99999",
            "[::1]80",
            "[zz]:1",
            "unix:",
            ":x",
        ] {
            let err = bad.parse::<Endpoint>().unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad}: {err}");
        }
    }
}
