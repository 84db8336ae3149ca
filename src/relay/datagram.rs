//! UDP relays. `connect -u` sends each chunk of input as a datagram to one peer and prints what
//! comes back; after the end of the input it keeps receiving until the peer has been quiet for the
//! idle time. `listen -u` takes datagrams from its first peer only (as ncat), or with `-k` from
//! any number of peers, sending stdin to the one heard from last; with a command it runs one
//! command per peer, at most `--max-procs` at once, each ended after `--session-idle` of quiet.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::exec::{self, ConnInfo, ExecSpec};
use super::pump::{idle_error, Activity, Sides};
use super::{Attach, Ended, Local, RelayOptions, DATAGRAM_CHUNK, UDP_LINGER};
use crate::net::{AccessList, Endpoint, NetError};

/// Largest datagram that can arrive.
const MAX_DATAGRAM: usize = 65_536;

/// `connect -u`: a connected UDP socket relayed to `attach`.
pub(crate) async fn connect_udp(
    endpoint: &Endpoint,
    source: Option<IpAddr>,
    attach: Attach,
    opts: &RelayOptions,
    stop: &CancellationToken,
) -> Result<Ended, NetError> {
    let target = endpoint.to_string();
    let connect_err = |source| NetError::Connect {
        target: target.clone(),
        source,
    };
    let Endpoint::Inet { .. } = endpoint else {
        return Err(NetError::BadAddress {
            input: target.clone(),
            reason: "UDP needs HOST:PORT, not a Unix path".into(),
        });
    };
    let addr = endpoint.resolve().await?[0];
    let local = match (source, addr) {
        (Some(ip), _) => SocketAddr::new(ip, 0),
        (None, SocketAddr::V4(_)) => SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0),
        (None, SocketAddr::V6(_)) => SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), 0),
    };
    let socket = UdpSocket::bind(local)
        .await
        .map_err(|source| NetError::Bind {
            target: local.to_string(),
            source,
        })?;
    // Connected: only this peer's datagrams arrive, and ICMP errors (port unreachable) are
    // reported on the socket as "connection refused".
    socket.connect(addr).await.map_err(connect_err)?;

    let (sides, guard, flushed, opts) = match attach {
        Attach::Io(Local {
            input,
            output,
            flushed,
        }) => (
            Sides {
                input: input.into(),
                output,
                command: false,
            },
            None,
            Some(flushed),
            opts.clone(),
        ),
        Attach::Exec(spec) => {
            let info = ConnInfo {
                remote: Some(addr),
                local: socket.local_addr().ok(),
                proto: "UDP",
            };
            let session = exec::spawn(&spec, &info)?;
            (
                session.sides,
                Some(session.guard),
                None,
                command_options(opts),
            )
        }
    };
    let activity = Activity::new();
    let result = relay_connected(&socket, sides, &opts, &target, stop, &activity).await;
    activity.log_summary();
    if let Some(guard) = guard {
        guard.finish().await;
    }
    // What was received before a failure is still printed; an interrupted relay does not wait.
    if let (Some(flushed), false) = (flushed, matches!(result, Ok(Ended::Interrupted))) {
        flushed.wait().await;
    }
    result.map_err(|e| match e {
        RelayFault::Io(source) => connect_err(source),
        RelayFault::Net(e) => e,
    })
}

enum RelayFault {
    Io(io::Error),
    Net(NetError),
}

async fn relay_connected(
    socket: &UdpSocket,
    sides: Sides,
    opts: &RelayOptions,
    target: &str,
    stop: &CancellationToken,
    activity: &Activity,
) -> Result<Ended, RelayFault> {
    let Sides {
        mut input,
        output,
        command,
    } = sides;
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut input_done = opts.recv_only;
    let mut deliver = !opts.send_only;
    loop {
        // Before the end of the input only `-i` ends the relay; after it, the linger time does.
        let idle = if input_done && !opts.recv_only {
            Some(
                opts.quit_after_eof
                    .or(opts.idle_timeout)
                    .unwrap_or(UDP_LINGER),
            )
        } else {
            opts.idle_timeout
        };
        tokio::select! {
            chunk = input.recv(), if !input_done => match chunk {
                Some(chunk) => {
                    activity.touch();
                    for piece in chunk.chunks(DATAGRAM_CHUNK) {
                        socket.send(piece).await.map_err(RelayFault::Io)?;
                        activity.add_sent(piece.len());
                    }
                    if let Some(log) = &opts.session_log {
                        log.record(&chunk);
                    }
                }
                None => {
                    input_done = true;
                    activity.touch();
                    if opts.send_only {
                        return Ok(Ended::Finished);
                    }
                }
            },
            r = socket.recv(&mut buf) => {
                let n = r.map_err(RelayFault::Io)?;
                activity.touch();
                activity.add_received(n);
                if let Some(log) = &opts.session_log {
                    log.record(&buf[..n]);
                }
                if deliver && output.send(Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                    if !command {
                        return Ok(Ended::Finished);
                    }
                    deliver = false;
                }
            }
            _ = activity.idle_for(idle) => {
                return if input_done {
                    Ok(Ended::Finished)
                } else {
                    Err(RelayFault::Net(idle_error(target, idle.unwrap_or_default())))
                };
            }
            _ = stop.cancelled() => return Ok(Ended::Interrupted),
        }
    }
}

/// Options for a command's relay: the command decides when it is done, and its output is sent as
/// it is.
pub(crate) fn command_options(opts: &RelayOptions) -> RelayOptions {
    RelayOptions {
        crlf: false,
        peer_eof_ends: false,
        ..opts.clone()
    }
}

/// `listen -u`: serves datagrams until `stop`, or until nothing has arrived for the idle timeout.
/// With stdin/stdout, from its first peer only, or with `many` (`-k`) from any number of peers.
pub(crate) async fn listen_udp(
    socket: UdpSocket,
    access: Arc<AccessList>,
    attach: Attach,
    opts: &RelayOptions,
    many: bool,
    exec: &UdpExecLimits,
    stop: &CancellationToken,
) -> Result<Ended, NetError> {
    match attach {
        Attach::Io(local) => {
            let Local {
                input,
                output,
                flushed,
            } = local;
            listen_stdio(&socket, &access, input, output, opts, many, stop).await;
            flushed.wait().await;
        }
        Attach::Exec(spec) => {
            listen_exec(Arc::new(socket), &access, &spec, opts, exec, stop).await;
        }
    }
    Ok(Ended::Finished)
}

/// Without `many` the first peer is the only one (as ncat locks onto it): a datagram from anyone
/// else could otherwise redirect what the operator types to a stranger. With `many` stdin goes to
/// the peer heard from last.
async fn listen_stdio(
    socket: &UdpSocket,
    access: &AccessList,
    mut input: mpsc::Receiver<Bytes>,
    output: mpsc::Sender<Bytes>,
    opts: &RelayOptions,
    many: bool,
    stop: &CancellationToken,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let activity = Activity::new();
    let mut latest: Option<SocketAddr> = None;
    let mut input_done = opts.recv_only;
    loop {
        tokio::select! {
            // Stdin is read once there is a peer to send it to.
            chunk = input.recv(), if !input_done && latest.is_some() => match (chunk, latest) {
                (Some(chunk), Some(peer)) => {
                    activity.touch();
                    for piece in chunk.chunks(DATAGRAM_CHUNK) {
                        if let Err(e) = socket.send_to(piece, peer).await {
                            tracing::info!(%peer, error = %e, "sending failed");
                        }
                    }
                }
                _ => input_done = true,
            },
            r = socket.recv_from(&mut buf) => match r {
                Ok((n, peer)) => {
                    if !access.permits(peer.ip()) {
                        tracing::info!(%peer, "datagram refused by allow/deny rules");
                        continue;
                    }
                    match latest {
                        Some(first) if !many && first != peer => {
                            tracing::debug!(%peer, %first, "datagram from another peer ignored (-k takes many)");
                            continue;
                        }
                        Some(last) if last == peer => {}
                        _ if many => {
                            tracing::info!(%peer, "datagrams from a new peer; stdin now goes there");
                            latest = Some(peer);
                        }
                        _ => {
                            tracing::info!(%peer, "first peer; datagrams from others are ignored");
                            latest = Some(peer);
                        }
                    }
                    activity.touch();
                    if !opts.send_only && output.send(Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                        break;
                    }
                }
                // ICMP errors about an earlier send show up here; they concern that peer only.
                Err(e) => tracing::debug!(error = %e, "receive failed"),
            },
            _ = activity.idle_for(opts.idle_timeout) => {
                tracing::info!("idle timeout; stopping");
                break;
            }
            _ = stop.cancelled() => break,
        }
    }
}

/// Bounds on `listen -u` with a command: a datagram from a new source address starts a process,
/// so without them a spray of sources would leave a process each running for ever.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UdpExecLimits {
    /// Commands (peers) at once; datagrams from further new peers are dropped.
    pub max_procs: usize,
    /// A peer's command ends after this long without datagrams either way (`-i`, if shorter,
    /// wins). `None`: never.
    pub session_idle: Option<Duration>,
}

/// One command per peer; its output goes back to that peer. A peer's session ends when its command
/// ends, or after the session idle time without datagrams either way.
async fn listen_exec(
    socket: Arc<UdpSocket>,
    access: &AccessList,
    spec: &ExecSpec,
    opts: &RelayOptions,
    limits: &UdpExecLimits,
    stop: &CancellationToken,
) {
    let max_peers = limits.max_procs;
    let idle = match (opts.idle_timeout, limits.session_idle) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let local = socket.local_addr().ok();
    let mut sessions: HashMap<SocketAddr, (mpsc::Sender<Bytes>, Arc<Activity>)> = HashMap::new();
    let (ended_tx, mut ended_rx) = mpsc::unbounded_channel::<SocketAddr>();
    let tracker = TaskTracker::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (n, peer) = tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::debug!(error = %e, "receive failed");
                    continue;
                }
            },
            Some(peer) = ended_rx.recv() => {
                sessions.remove(&peer);
                continue;
            }
            _ = stop.cancelled() => break,
        };
        if !access.permits(peer.ip()) {
            tracing::info!(%peer, "datagram refused by allow/deny rules");
            continue;
        }
        if !sessions.contains_key(&peer) {
            if sessions.len() >= max_peers {
                // Debug only: a spray of new sources would otherwise be a log line each.
                tracing::debug!(%peer, max_peers, "datagram dropped: --max-procs commands running");
                continue;
            }
            let info = ConnInfo {
                remote: Some(peer),
                local,
                proto: "UDP",
            };
            let session = match exec::spawn(spec, &info) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "cannot start the command");
                    continue;
                }
            };
            tracing::info!(%peer, "new peer; command started");
            let activity = Arc::new(Activity::new());
            sessions.insert(peer, (session.sides.output.clone(), activity.clone()));
            tracker.spawn(udp_session(
                socket.clone(),
                peer,
                session,
                activity,
                idle,
                stop.clone(),
                ended_tx.clone(),
            ));
        }
        if let Some((tx, activity)) = sessions.get(&peer) {
            activity.touch();
            // A command that does not keep up loses datagrams, as a slow UDP reader would.
            if tx.try_send(Bytes::copy_from_slice(&buf[..n])).is_err() {
                tracing::debug!(%peer, "command not reading; datagram dropped");
            }
        }
    }
    drop(sessions);
    tracker.close();
    tracker.wait().await;
}

async fn udp_session(
    socket: Arc<UdpSocket>,
    peer: SocketAddr,
    session: exec::Session,
    activity: Arc<Activity>,
    idle: Option<Duration>,
    stop: CancellationToken,
    ended: mpsc::UnboundedSender<SocketAddr>,
) {
    let exec::Session { sides, guard } = session;
    let Sides {
        mut input, output, ..
    } = sides;
    // The listener keeps its own sender; this one is not needed here.
    drop(output);
    loop {
        tokio::select! {
            chunk = input.recv() => match chunk {
                Some(chunk) => {
                    activity.touch();
                    for piece in chunk.chunks(DATAGRAM_CHUNK) {
                        if let Err(e) = socket.send_to(piece, peer).await {
                            tracing::debug!(%peer, error = %e, "sending failed");
                        }
                    }
                }
                None => break,
            },
            _ = activity.idle_for(idle) => {
                tracing::info!(%peer, "peer idle; command stopped");
                break;
            }
            _ = stop.cancelled() => break,
        }
    }
    // Removing the peer drops the listener's sender, which closes the command's stdin.
    let _ = ended.send(peer);
    guard.finish().await;
}
