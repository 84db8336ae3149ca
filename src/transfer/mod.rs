//! `sockit send` / `sockit recv`: files and folders over one connection, with a framed protocol
//! that never leaves a corrupt file. Each file is written under a temporary name beside its
//! final one, its blake3 digest checked against the sender's, fsynced and renamed: a final file
//! exists only when it is whole and verified. What a broken session leaves behind is resumed by
//! the next one (the whole file is still verified).
//!
//! Who connects and who sends are separate: `recv` listens and `send` connects (the usual way),
//! or `send --listen` waits and `recv HOST:PORT` fetches (for the side behind a firewall). The
//! sender always speaks first. `recv` also takes the tutorial sender's protocol (an md5 hex
//! digest, the bytes, close), told apart by the magic header ([`legacy`]).
//!
//! The data path: [`source`] lists what to send; [`send`] reads and hashes each file on a blocking
//! thread and writes frames ([`wire`]); [`recv`] checks names ([`names`]), plans (skip, resume,
//! refuse), writes and hashes on a blocking thread, verifies and renames; both report
//! ([`report`]).

pub mod auth;
pub mod legacy;
pub mod names;
pub mod progress;
pub mod recv;
pub mod report;
pub mod send;
mod session;
pub mod source;
pub mod wire;

use std::path::PathBuf;
use std::time::Duration;

pub use recv::{receive, receive_in_turn, RecvOptions};
pub use report::{FileReport, FileStatus, Report, Role};
pub use send::{send, SendOptions};
pub use source::{collect, Source};

/// Where `recv` (and `send --listen`) listen when given no address: the tutorial receiver's port.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:6000";
/// How long either side waits for the other to say or send anything before giving up.
pub const DEFAULT_IDLE: Duration = Duration::from_secs(60);
/// How soon a connection must begin its session (send the header) on a receiver.
pub const DEFAULT_HELLO: Duration = Duration::from_secs(10);
/// Most entries one offer may hold (files and folders).
pub const DEFAULT_MAX_FILES: usize = 1_000_000;
/// The name the tutorial sender's one file is stored under.
pub const DEFAULT_LEGACY_NAME: &str = "received";

/// A connection a session runs over. On plain TCP the sender hands file data to the kernel with
/// sendfile(2) instead of writing it from user space.
pub trait Link: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin {
    /// The TCP socket, when the bytes go straight onto one (no TLS).
    fn tcp(&self) -> Option<&tokio::net::TcpStream> {
        None
    }
}

impl Link for crate::net::Stream {
    fn tcp(&self) -> Option<&tokio::net::TcpStream> {
        match self {
            crate::net::Stream::Tcp(t) => Some(t),
            _ => None,
        }
    }
}

impl Link for tokio::net::TcpStream {
    fn tcp(&self) -> Option<&tokio::net::TcpStream> {
        Some(self)
    }
}

impl Link for tokio::io::DuplexStream {}

/// Why a transfer (or one file of it) failed.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("connection: {0}")]
    Net(std::io::Error),
    #[error("{0}")]
    Cut(String),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("the other side said: {0}")]
    Peer(String),
    #[error("{0}")]
    Auth(String),
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("nothing said for {0:?}; giving up")]
    Idle(Duration),
    #[error("{0}")]
    Usage(String),
}

impl TransferError {
    pub(crate) fn file(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        TransferError::File {
            path: path.into(),
            source,
        }
    }
}
