//! Which web pages may open a WebSocket to the chat: the Origin check.
//!
//! Browsers let any page open a WebSocket to any server, sending the page's origin along; unlike
//! `fetch`, no CORS preflight protects the server. Without this check a hostile page a user visits
//! could join the chat as that user (cross-site WebSocket hijacking). By default only the chat's
//! own page is admitted (its Origin names the host and port the request was sent to);
//! `--web-origin` admits others, e.g. the public name behind a reverse proxy.
//!
//! Clients that are not browsers (scripts, `websocat`) send no Origin at all; they are admitted,
//! as they could forge any Origin anyway.

/// An origin, normalised: lower-case scheme and host, the port always explicit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl Origin {
    /// Parses `scheme://host[:port]` (a trailing `/` is tolerated; a path is not).
    pub fn parse(text: &str) -> Option<Origin> {
        let (scheme, rest) = text.trim().split_once("://")?;
        let scheme = scheme.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" | "ws" => 80,
            "https" | "wss" => 443,
            _ => return None,
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
            return None;
        }
        let (host, port) = split_host_port(authority, default_port)?;
        // A page's origin uses http(s); ws(s) in a flag means the same site.
        let scheme = match scheme.as_str() {
            "ws" => "http".to_string(),
            "wss" => "https".to_string(),
            _ => scheme,
        };
        Some(Origin { scheme, host, port })
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
    }
}

/// Splits `host[:port]` or `[v6]:port`, lower-casing the host.
fn split_host_port(authority: &str, default_port: u16) -> Option<(String, u16)> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (format!("[{}]", v6.to_ascii_lowercase()), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_ascii_lowercase(), Some(p)),
            None => (authority.to_ascii_lowercase(), None),
        }
    };
    if host.is_empty() {
        return None;
    }
    let port = match port {
        None | Some("") => default_port,
        Some(p) => p.parse().ok()?,
    };
    Some((host, port))
}

/// The origins admitted besides the page's own.
#[derive(Debug, Clone, Default)]
pub struct OriginPolicy {
    extra: Vec<Origin>,
}

/// Why an Origin was refused, for the log and the 403 body.
#[derive(Debug, PartialEq, Eq)]
pub struct Refused(pub String);

impl OriginPolicy {
    /// A policy admitting the page's own origin and `extra` (each `scheme://host[:port]`).
    pub fn new<S: AsRef<str>>(extra: &[S]) -> Result<Self, String> {
        let extra = extra
            .iter()
            .map(|s| {
                let s = s.as_ref();
                Origin::parse(s).ok_or_else(|| {
                    format!("--web-origin {s:?} is not an origin (try https://chat.example.org)")
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(OriginPolicy { extra })
    }

    /// The hosts of the extra origins: a page served under such a name asks for it in `Host`.
    pub fn hosts(&self) -> impl Iterator<Item = &str> {
        self.extra.iter().map(|o| o.host.as_str())
    }

    /// Checks a handshake's `Origin` against its `Host` header. `tls` says which scheme the page
    /// itself was served over.
    pub fn check(
        &self,
        origin: Option<&str>,
        host: Option<&str>,
        tls: bool,
    ) -> Result<(), Refused> {
        let Some(origin) = origin else {
            return Ok(());
        };
        let Some(parsed) = Origin::parse(origin) else {
            return Err(Refused(format!("origin {origin:?} is not allowed")));
        };
        if self.extra.contains(&parsed) {
            return Ok(());
        }
        let scheme = if tls { "https" } else { "http" };
        let own = host.and_then(|h| {
            let (host, port) = split_host_port(h.trim(), if tls { 443 } else { 80 })?;
            Some(Origin {
                scheme: scheme.to_string(),
                host,
                port,
            })
        });
        if own.as_ref() == Some(&parsed) {
            return Ok(());
        }
        Err(Refused(format!(
            "origin {origin:?} is not allowed (only this server's own page, or --web-origin)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_normalises() {
        let o = Origin::parse("HTTPS://Chat.Example.org").unwrap();
        assert_eq!(o.to_string(), "https://chat.example.org:443");
        assert_eq!(
            Origin::parse("http://[::1]:9080/").unwrap().to_string(),
            "http://[::1]:9080"
        );
        assert_eq!(
            Origin::parse("wss://a.example").unwrap().to_string(),
            "https://a.example:443"
        );
        assert!(Origin::parse("null").is_none());
        assert!(Origin::parse("file:///x").is_none());
        assert!(Origin::parse("http://a.example/path").is_none());
        assert!(Origin::parse("http://a.example:99999").is_none());
    }

    #[test]
    fn same_origin_only_by_default() {
        let p = OriginPolicy::default();
        assert!(p
            .check(Some("http://127.0.0.1:9080"), Some("127.0.0.1:9080"), false)
            .is_ok());
        assert!(p
            .check(Some("http://localhost"), Some("LOCALHOST:80"), false)
            .is_ok());
        assert!(p
            .check(Some("https://[::1]:9080"), Some("[::1]:9080"), true)
            .is_ok());
        // No Origin: not a browser.
        assert!(p.check(None, Some("127.0.0.1:9080"), false).is_ok());
        // Another site, another port, another scheme, or no Host to compare with.
        assert!(p
            .check(Some("http://evil.example"), Some("127.0.0.1:9080"), false)
            .is_err());
        assert!(p
            .check(Some("http://127.0.0.1:9081"), Some("127.0.0.1:9080"), false)
            .is_err());
        assert!(p
            .check(Some("http://127.0.0.1:9080"), Some("127.0.0.1:9080"), true)
            .is_err());
        assert!(p.check(Some("http://127.0.0.1:9080"), None, false).is_err());
        assert!(p
            .check(Some("null"), Some("127.0.0.1:9080"), false)
            .is_err());
    }

    #[test]
    fn extra_origins_are_admitted() {
        let p = OriginPolicy::new(&["https://chat.example.org"]).unwrap();
        assert!(p
            .check(
                Some("https://chat.example.org"),
                Some("127.0.0.1:9080"),
                false
            )
            .is_ok());
        assert!(p
            .check(
                Some("http://chat.example.org"),
                Some("127.0.0.1:9080"),
                false
            )
            .is_err());
        assert!(OriginPolicy::new(&["chat.example.org"]).is_err());
    }
}
