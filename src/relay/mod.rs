//! `sockit connect` / `sockit listen`: the netcat. Bytes from a local side (stdin/stdout, or a
//! command run per connection) are relayed to and from a socket (TCP, TLS, Unix or UDP), unchanged.
//!
//! The semantics follow ncat where ncat is right and fix it where it is not:
//! - both directions run at once; at the end of the local input the socket's write side is
//!   half-closed (TLS: `close_notify`) and the relay keeps reading until the peer closes, so a
//!   request piped in still gets its answer (ncat issue #1229);
//! - a command run with `--exec`/`--sh-exec` talks to the socket through pipes, never holds the
//!   socket itself, and is killed and reaped with its process group when the connection ends
//!   (ncat issue #2843);
//! - `listen -k` serves many clients at once, prints what each sends and broadcasts stdin to all of
//!   them, each through its own bounded queue, so a client that does not read is dropped instead of
//!   stalling the others or the accept loop;
//! - with a command, at most `--max-procs` run at once, and a command whose client has closed is
//!   ended once it has been silent for `--eof-grace`;
//! - `listen -u` locks onto its first peer, as ncat does (`-k`: any number of peers).
//!
//! Layout: [`Local`] is the local side as two channels of byte chunks (`local`), `pump` relays one
//! stream, `datagram` relays UDP, `exec` runs commands, `broker` fans stdin out to many clients,
//! [`connect`] and [`RelayServer`] tie them together.

mod broker;
mod connect;
mod crlf;
mod datagram;
mod exec;
mod listen;
mod local;
mod pump;
mod session_log;
mod telnet;

use std::sync::Arc;
use std::time::Duration;

pub use broker::{DEFAULT_SENDQ, DEFAULT_STALL_LIMIT};
pub use connect::{connect, ConnectConfig};
pub use exec::ExecSpec;
pub use listen::{ListenConfig, RelayServer, DEFAULT_LISTEN};
pub use local::Local;
pub use session_log::{hex_dump, LogFormat, SessionLog};

/// Largest chunk read from the local side or a stream socket at once. Large reads keep bulk
/// transfers cheap; interactive input still goes out as soon as a read returns.
pub const CHUNK: usize = 64 * 1024;

/// Largest datagram sent: a local chunk bigger than this goes out as several datagrams.
pub const DATAGRAM_CHUNK: usize = 8 * 1024;

/// How long a UDP relay keeps receiving after the end of its input when no idle timeout is set.
pub const UDP_LINGER: Duration = Duration::from_secs(2);

/// `listen` with `-e`/`-c`: commands running at once, by default (ncat's default `--max-conns`
/// when it runs a command).
pub const DEFAULT_MAX_PROCS: usize = 100;

/// `listen -u` with a command: a peer's command ends after this long without datagrams either way,
/// by default. UDP has no close, so without it every peer ever heard from would keep a process.
pub const DEFAULT_SESSION_IDLE: Duration = Duration::from_secs(60);

/// `listen` with a command: once the client has closed its side, how long the command may stay
/// silent before it is ended, by default. A client's close and its half-close look the same
/// (a FIN), so a command that answers after the end of its input (`tr`, `sort`) must get the
/// chance to; one that never will (`sleep 600`) must not outlive its client.
pub const DEFAULT_EOF_GRACE: Duration = Duration::from_secs(10);

/// How the bytes of one connection flow; the flags are ncat's.
#[derive(Debug, Clone, Default)]
pub struct RelayOptions {
    /// Only send: what the peer sends is read and dropped, and the relay ends with the input.
    pub send_only: bool,
    /// Only receive: the local input is not read.
    pub recv_only: bool,
    /// Do not half-close the socket at the end of the input.
    pub no_shutdown: bool,
    /// End the connection (as a failure) after this long without traffic either way. Over UDP it
    /// is also how long to keep receiving after the input ends (default [`UDP_LINGER`]).
    pub idle_timeout: Option<Duration>,
    /// Turn LF into CRLF in what is sent from the local input (not from a command's output).
    pub crlf: bool,
    /// End as soon as the peer closes, without waiting for the end of the input. The CLI sets this
    /// when stdin is a terminal: a person is typing, and nothing is left to deliver.
    pub peer_eof_ends: bool,
    /// With a command: once the peer has closed its side, end the relay (and so the command) when
    /// the command has sent nothing for this long. `None` waits for the command however long it
    /// takes. `listen` sets it ([`DEFAULT_EOF_GRACE`]).
    pub eof_grace: Option<Duration>,
    /// nc's `-q`: once the input has ended, end the relay this long later even if the peer has
    /// not closed (zero: at once). `None` waits for the peer.
    pub quit_after_eof: Option<Duration>,
    /// ncat's `-d`: wait this long before each send.
    pub delay: Option<Duration>,
    /// ncat's `-o`/`-x`: a copy of the session's bytes, both directions.
    pub session_log: Option<Arc<SessionLog>>,
    /// ncat's `-t`: answer telnet option negotiation (refusing every option) and keep it out of
    /// the output. Not with a command, which gets the bytes as they are.
    pub telnet: bool,
}

/// What a connection is attached to on this side.
pub enum Attach {
    /// Local input and output (usually stdin and stdout).
    Io(Local),
    /// A command, started afresh for every connection (for every peer, over UDP).
    Exec(ExecSpec),
}

impl std::fmt::Debug for Attach {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Attach::Io(_) => f.write_str("Attach::Io"),
            Attach::Exec(spec) => f.debug_tuple("Attach::Exec").field(spec).finish(),
        }
    }
}

/// How a relay ended without failing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Every byte was relayed and both sides closed (or the server was stopped while idle).
    Finished,
    /// Stopped by the shutdown signal in the middle of a relay.
    Interrupted,
}
