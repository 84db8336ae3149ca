//! `sockit chat join`: sockit's own chat client.
//!
//! On a terminal it is a full-screen UI ([`tui`]): a scrolling message pane, the room's members,
//! a status line and an input line that incoming messages never disturb. Without a terminal
//! ([`plain`]) it sends one message (`--send`) or the lines of its input, waits until the server
//! has delivered each, and prints what the room says as plain lines.
//!
//! Both speak the server's JSON lines ([`protocol`]) through a [`link::Link`], which keeps the
//! connection up: when the server goes away it reconnects with backoff ([`backoff`]) and asks for
//! the same nick and room again.

pub mod backoff;
pub mod link;
pub mod plain;
pub mod protocol;
pub mod tui;

use std::time::Duration;

use crate::net::{ConnectOptions, Endpoint, NetError};

/// Where to connect and as whom.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub endpoint: Endpoint,
    /// More servers (the other nodes of a chat cluster): when a connection fails or drops, the
    /// next attempt goes to the next address, in turn.
    pub others: Vec<Endpoint>,
    pub connect: ConnectOptions,
    /// The nick to ask for; the server hands out a guest nick without one (or if it is taken).
    pub nick: Option<String>,
    /// The room to join; the server's default room without one.
    pub room: Option<String>,
}

impl ClientConfig {
    fn link(&self) -> link::LinkConfig {
        link::LinkConfig {
            endpoints: std::iter::once(self.endpoint.clone())
                .chain(self.others.iter().cloned())
                .collect(),
            connect: self.connect.clone(),
            identity: protocol::Identity::new(self.nick.clone(), self.room.clone()),
        }
    }
}

/// Why the client stopped, or why a connection attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Net(#[from] NetError),
    #[error("connection lost: {0}")]
    Lost(String),
    #[error("{0} did not answer the chat hello (is it a sockit chat server?)")]
    NoHello(String),
    #[error("cannot use the terminal: {0}")]
    Terminal(std::io::Error),
    #[error("cannot read input: {0}")]
    Input(std::io::Error),
    #[error("gave up: no connection to {target} for {}s", .after.as_secs())]
    GaveUp { target: String, after: Duration },
    #[error("the server did not deliver a line within {}s: {line:?}", .after.as_secs())]
    NoEcho { line: String, after: Duration },
    #[error("nick {0:?} is taken; pick another with --nick")]
    NickTaken(String),
    #[error("the server refused {0} line(s); its reasons are above")]
    Refused(usize),
}
