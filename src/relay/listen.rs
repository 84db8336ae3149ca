//! `sockit listen`: waits for connections (or datagrams) and relays them to stdin/stdout or a
//! command per connection. Without `keep_open` it serves one connection and returns; with it, it
//! serves many at once until stopped. The accept loop is the net layer's [`net::serve`], so
//! allow/deny, the connection limit and TLS work as in every sockit server.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::broker::Broker;
use super::datagram::{command_options, listen_udp, UdpExecLimits};
use super::exec::{self, ConnInfo, ExecSpec};
use super::pump::{relay_stream, Input, Sides};
use super::{Attach, Ended, Local, RelayOptions};
use crate::net::{self, Conn, Endpoint, LocalAddr, NetError, ServerOptions, ServerSocket};

/// Where `sockit listen` listens when given no address: loopback and ncat's default port.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:31337";

/// A validated `listen` configuration.
#[derive(Debug, Clone)]
pub struct ListenConfig {
    pub endpoint: Endpoint,
    /// UDP: datagrams from the first peer (from any number with `keep_open`).
    pub udp: bool,
    /// Serve connections until stopped, several at once (`-k`); otherwise serve one and return.
    /// Over UDP: take datagrams from any number of peers, not only the first.
    pub keep_open: bool,
    /// `-k` broadcasting stdin: how long one client that is not reading may hold it back before
    /// it is disconnected ([`super::DEFAULT_STALL_LIMIT`]).
    pub stall_limit: Duration,
    /// With a command: most commands running at once ([`super::DEFAULT_MAX_PROCS`]); further
    /// connections are refused, further UDP peers' datagrams dropped.
    pub max_procs: usize,
    /// `-u` with a command: a peer's command ends after this long without datagrams
    /// ([`super::DEFAULT_SESSION_IDLE`]); `None`: never.
    pub session_idle: Option<Duration>,
    /// With a command: after the client has closed its side, the command is ended once it has
    /// been silent this long ([`super::DEFAULT_EOF_GRACE`]).
    pub eof_grace: Duration,
    /// `-k` broadcasting stdin: how many bytes may wait for one client before it is disconnected
    /// for falling behind the others ([`super::DEFAULT_SENDQ`]).
    pub sendq: usize,
    /// Limits, allow/deny and TLS. `idle_timeout` here also ends idle relays.
    pub server: ServerOptions,
    pub relay: RelayOptions,
}

/// A bound listener, ready to run.
#[derive(Debug)]
pub struct RelayServer {
    socket: ServerSocket,
    config: ListenConfig,
}

impl RelayServer {
    /// Opens the socket; clients may connect from now on (the kernel queues them).
    pub async fn bind(config: ListenConfig) -> Result<Self, NetError> {
        if config.udp && config.server.tls.is_some() {
            return Err(NetError::TlsConfig(
                "TLS over UDP (DTLS) is not supported".into(),
            ));
        }
        let socket = ServerSocket::bind(&config.endpoint, config.udp).await?;
        Ok(RelayServer { socket, config })
    }

    /// The bound address (port 0 resolved).
    pub fn local_addr(&self) -> LocalAddr {
        self.socket.local_addr()
    }

    /// Serves until done (one connection without `keep_open`) or until `shutdown` is cancelled.
    pub async fn run(self, attach: Attach, shutdown: CancellationToken) -> Result<Ended, NetError> {
        let RelayServer { socket, config } = self;
        let mut relay = config.relay.clone();
        relay.idle_timeout = relay.idle_timeout.or(config.server.idle_timeout);
        relay.eof_grace = Some(config.eof_grace);
        match socket {
            ServerSocket::Datagram(udp) => {
                let access = Arc::new(config.server.access.clone());
                let limits = UdpExecLimits {
                    max_procs: config.max_procs.min(config.server.max_conns),
                    session_idle: config.session_idle,
                };
                let many = config.keep_open;
                listen_udp(udp, access, attach, &relay, many, &limits, &shutdown).await
            }
            ServerSocket::Stream(listener) if config.keep_open => {
                let limit = (config.stall_limit, config.sendq);
                let mut server = config.server;
                if matches!(attach, Attach::Exec(_)) {
                    // A connection is a process here: the connection limit is the process limit.
                    server.max_conns = server.max_conns.min(config.max_procs.max(1));
                }
                serve_many(listener, server, relay, limit, attach, shutdown).await;
                Ok(Ended::Finished)
            }
            ServerSocket::Stream(listener) => {
                serve_one(listener, config.server, relay, attach, shutdown).await
            }
        }
    }
}

/// One connection: the first admitted client (allowed, TLS handshake done) gets the relay; the
/// listener closes once it is accepted, as ncat's does.
async fn serve_one(
    listener: net::Listener,
    server: ServerOptions,
    relay: RelayOptions,
    attach: Attach,
    shutdown: CancellationToken,
) -> Result<Ended, NetError> {
    let Some(conn) = net::accept_one(&listener, &server, &shutdown).await else {
        return Ok(Ended::Interrupted);
    };
    // This connection is the one: later clients are refused by the kernel.
    drop(listener);
    let peer = conn.peer.to_string();
    tracing::info!("connection from {peer}");
    match attach {
        Attach::Io(Local {
            input,
            output,
            flushed,
        }) => {
            let sides = Sides {
                input: input.into(),
                output,
                command: false,
            };
            let result =
                relay_stream(conn.stream, sides, &relay, relay.crlf, &peer, &shutdown).await;
            // What was received before a failure is still printed; an interrupted relay does
            // not wait.
            if !matches!(result, Ok(Ended::Interrupted)) {
                flushed.wait().await;
            }
            result
        }
        Attach::Exec(spec) => exec_conn(conn, &spec, &relay, &shutdown).await,
    }
}

/// Many connections at once until `shutdown`: with a command, one per connection; otherwise every
/// client's data goes to the local output and the local input is broadcast to all of them.
async fn serve_many(
    listener: net::Listener,
    server: ServerOptions,
    relay: RelayOptions,
    (stall_limit, sendq): (Duration, usize),
    attach: Attach,
    shutdown: CancellationToken,
) {
    let relay = Arc::new(relay);
    let drain = server.drain;
    match attach {
        Attach::Exec(spec) => {
            let spec = Arc::new(spec);
            // A command's connection holds its socket and the command's stdin, stdout and
            // stderr pipes.
            let server = ServerOptions {
                fds_per_conn: 4,
                ..server
            };
            net::serve(listener, server, shutdown, move |conn| {
                let spec = spec.clone();
                let relay = relay.clone();
                async move {
                    let peer = conn.peer.to_string();
                    tracing::info!("connection from {peer}");
                    let stop = conn.shutdown.clone();
                    log_end(&peer, exec_conn(conn, &spec, &relay, &stop).await);
                }
            })
            .await
        }
        Attach::Io(Local {
            input,
            output,
            flushed,
        }) => {
            let broker = Arc::new(Broker::new(stall_limit, sendq));
            if !relay.recv_only {
                tokio::spawn(broker.clone().run(input));
            }
            {
                let output = output.clone();
                net::serve(listener, server, shutdown, move |conn| {
                    let broker = broker.clone();
                    let relay = relay.clone();
                    let output = output.clone();
                    async move { broker_conn(conn, &broker, output, &relay).await }
                })
                .await;
            }
            drop(output);
            // Stopped by a signal: what clients sent is written out, but a stdout nobody reads
            // must not keep the process for longer than the drain time.
            let _ = tokio::time::timeout(drain, flushed.wait()).await;
        }
    }
}

async fn broker_conn(
    conn: Conn,
    broker: &Arc<Broker>,
    output: mpsc::Sender<bytes::Bytes>,
    relay: &RelayOptions,
) {
    let peer = conn.peer.to_string();
    tracing::info!("connection from {peer}");
    // Cancelled by the server's shutdown, or by the broker when this client stops reading.
    let stop = conn.shutdown.child_token();
    let (input, _member): (Input, _) = if relay.recv_only {
        // Never read; not a member, so stdin is not held back for it.
        (mpsc::channel(1).1.into(), None)
    } else {
        let (input, member) = broker.join(peer.clone(), stop.clone());
        (input.into(), Some(member))
    };
    let sides = Sides {
        input,
        output,
        command: false,
    };
    // Several clients share one terminal: a person typing must not end everybody's session when
    // one client leaves, so the per-connection "peer EOF ends" rule does not apply here.
    let opts = RelayOptions {
        peer_eof_ends: false,
        ..relay.clone()
    };
    let result = relay_stream(conn.stream, sides, &opts, opts.crlf, &peer, &stop).await;
    log_end(&peer, result);
}

/// Runs the command for one accepted connection.
async fn exec_conn(
    conn: Conn,
    spec: &ExecSpec,
    relay: &RelayOptions,
    stop: &CancellationToken,
) -> Result<Ended, NetError> {
    let peer = conn.peer.to_string();
    let info = ConnInfo::of_stream(&conn.stream, &conn.peer);
    let session = exec::spawn(spec, &info)?;
    let opts = command_options(relay);
    let result = relay_stream(conn.stream, session.sides, &opts, false, &peer, stop).await;
    session.guard.finish().await;
    result
}

fn log_end(peer: &str, result: Result<Ended, NetError>) {
    match result {
        Ok(_) => tracing::info!("connection from {peer} closed"),
        // One client of many going wrong is news at -v, not a warning of the server's.
        Err(e) => tracing::info!("connection from {peer} failed: {e}"),
    }
}
