//! The one error type of the net layer: every variant names what failed, on what, and what to try,
//! so that the binary can print it as one line and pick a meaningful exit code.

use std::io;
use std::time::Duration;

/// A failure of the net layer, carrying the context a user needs to act on it.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The text given as an address could not be understood.
    #[error("bad address {input:?}: {reason}")]
    BadAddress { input: String, reason: String },

    /// A name did not resolve to any address.
    #[error("cannot resolve {target}: {}", describe(.source))]
    Resolve { target: String, source: io::Error },

    /// A listening socket could not be opened.
    #[error("cannot listen on {target}: {}", describe(.source))]
    Bind { target: String, source: io::Error },

    /// An outgoing connection failed.
    #[error("cannot connect to {target}: {}", describe(.source))]
    Connect { target: String, source: io::Error },

    /// An outgoing connection did not complete within the connect timeout (`-w`).
    #[error("cannot connect to {target}: timed out after {after:?} (is a firewall dropping packets? try a longer -w)")]
    ConnectTimeout { target: String, after: Duration },

    /// The TLS handshake with a peer failed (bad certificate, wrong fingerprint, not TLS at all).
    #[error("TLS with {target} failed: {reason}")]
    Tls { target: String, reason: String },

    /// A proxy would not (or could not) open the tunnel to the target.
    #[error("cannot connect to {target} through the proxy {proxy}: {reason}")]
    Proxy {
        proxy: String,
        target: String,
        reason: String,
    },

    /// TLS could not be set up locally (unreadable certificate or key files).
    #[error("TLS setup failed: {0}")]
    TlsConfig(String),

    /// An access list entry could not be parsed.
    #[error("bad allow/deny entry {entry:?}: {reason}")]
    BadAccessEntry { entry: String, reason: String },

    /// Any other I/O failure, with what was being done.
    #[error("{context}: {}", describe(.source))]
    Io { context: String, source: io::Error },
}

impl NetError {
    /// The process exit code this error should produce: 2 for usage errors (the user typed something
    /// sockit cannot understand), 1 for everything that failed at run time.
    pub fn exit_code(&self) -> i32 {
        match self {
            NetError::BadAddress { .. } | NetError::BadAccessEntry { .. } => 2,
            _ => 1,
        }
    }

    /// Wraps an I/O error with a description of what was being done.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        NetError::Io {
            context: context.into(),
            source,
        }
    }
}

/// Turns an I/O error into a short lower-case phrase with a hint where one helps.
pub(crate) fn describe(err: &io::Error) -> String {
    use io::ErrorKind as K;
    let hint = match err.kind() {
        K::ConnectionRefused => "connection refused (is a server listening?)",
        K::AddrInUse => "address already in use (is another server running? pick another port)",
        K::PermissionDenied => {
            "permission denied (ports below 1024 and some paths need privileges; try a port above 1024)"
        }
        K::AddrNotAvailable => "address not available (is that address on this machine?)",
        K::NetworkUnreachable => "network unreachable (check the address and your routes)",
        K::HostUnreachable => "host unreachable (check the address)",
        K::TimedOut => "timed out",
        K::ConnectionReset => "connection reset by peer",
        K::NotFound => "not found",
        _ => "",
    };
    if !hint.is_empty() {
        return hint.to_string();
    }
    match err.raw_os_error() {
        Some(libc::ENETUNREACH) => "network unreachable (check the address and your routes)".into(),
        Some(libc::EHOSTUNREACH) => "host unreachable (check the address)".into(),
        _ => {
            // Strip the " (os error N)" suffix std adds: the phrase is what users read.
            let text = err.to_string();
            match text.find(" (os error") {
                Some(i) => text[..i].to_lowercase(),
                None => text.to_lowercase(),
            }
        }
    }
}
