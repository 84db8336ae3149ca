//! Listening sockets for TCP (IPv4, IPv6, dual-stack) and Unix streams.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, UnixListener};

use super::{Endpoint, LocalAddr, NetError, PeerAddr, Stream};

/// How many not-yet-accepted connections the kernel may hold. Bursts of thousands of clients
/// (the echo and chat benchmarks) would otherwise see SYNs dropped and 1 s retransmit stalls.
const BACKLOG: i32 = 4096;

/// A bound listening socket.
#[derive(Debug)]
pub enum Listener {
    Tcp(TcpListener),
    Unix {
        listener: UnixListener,
        /// Removed when the listener is dropped, so a restart finds the path free.
        path: PathBuf,
    },
}

impl Listener {
    /// Binds `endpoint`. Port 0 picks a free port; read it back with [`Listener::local_addr`].
    pub async fn bind(endpoint: &Endpoint) -> Result<Self, NetError> {
        let bind_err = |source| NetError::Bind {
            target: endpoint.to_string(),
            source,
        };
        match endpoint {
            Endpoint::Unix(path) => {
                remove_stale_socket(path).map_err(bind_err)?;
                let listener = UnixListener::bind(path).map_err(bind_err)?;
                Ok(Listener::Unix {
                    listener,
                    path: path.clone(),
                })
            }
            Endpoint::Inet { .. } => {
                let addr = endpoint.resolve().await?[0];
                bind_tcp(addr).map(Listener::Tcp).map_err(bind_err)
            }
        }
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> LocalAddr {
        match self {
            Listener::Tcp(l) => l
                .local_addr()
                .map(LocalAddr::Inet)
                .unwrap_or(LocalAddr::Inet(SocketAddr::from(([0, 0, 0, 0], 0)))),
            Listener::Unix { path, .. } => LocalAddr::Unix(path.clone()),
        }
    }

    /// Accepts one connection. TCP streams get `TCP_NODELAY`: every sockit protocol is
    /// request/response or interactive, where Nagle's delay only adds latency. An IPv4 client of a
    /// dual-stack listener is reported as its IPv4 address, not `::ffff:a.b.c.d`, so rules, limits
    /// and logs see one name for it.
    pub async fn accept(&self) -> io::Result<(Stream, PeerAddr)> {
        match self {
            Listener::Tcp(l) => {
                let (s, peer) = l.accept().await?;
                let _ = s.set_nodelay(true);
                Ok((Stream::Tcp(s), PeerAddr::Inet(super::canonical_addr(peer))))
            }
            Listener::Unix { listener, .. } => {
                let (s, _) = listener.accept().await?;
                Ok((Stream::Unix(s), PeerAddr::Unix))
            }
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix { path, .. } = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn bind_tcp(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // A restarted server must not fail on connections of its previous life in TIME_WAIT.
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        // `[::]` serves IPv4 clients too, as ncat does by default.
        let _ = socket.set_only_v6(false);
    }
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    socket.set_nonblocking(true)?;
    TcpListener::from_std(socket.into())
}

/// A Unix socket file left by a server that died is removed; one that a live server answers on is
/// reported as in use rather than stolen.
fn remove_stale_socket(path: &std::path::Path) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "a file that is not a socket is in the way",
        ));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(io::Error::from(io::ErrorKind::AddrInUse)),
        Err(_) => std::fs::remove_file(path),
    }
}
