//! Connecting to an address that is already resolved: the client side a port scanner needs, with
//! no name lookup per connection and no time lost waiting on the reactor for an answer that is
//! already there.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpStream;

/// Opens a TCP connection to `addr` (no name lookup), optionally from the local address `source`.
///
/// The connect is non-blocking, and its outcome is looked at before the socket is handed to the
/// reactor: over loopback (and to any peer whose reply the kernel has already processed when
/// `connect(2)` returns) the handshake or the refusal is complete by then, and such a connection
/// costs `socket`, `connect`, `getsockopt` and `close` alone, without registering with epoll and
/// waiting for a wake-up that would only say what is already known. Only a handshake still in
/// flight is awaited through the reactor.
///
/// Errors are the kernel's (`ConnectionRefused` for a closed port, `EHOSTUNREACH` for an ICMP
/// unreachable, `EMFILE` when out of descriptors...). There is no timeout here: wrap the future in
/// [`tokio::time::timeout`] or use [`connect_addr_timeout`].
pub async fn connect_addr(addr: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking().cloexec(),
        Some(Protocol::TCP),
    )?;
    if let Some(ip) = source {
        socket.bind(&SocketAddr::new(ip, 0).into())?;
    }
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {
            if let Some(e) = socket.take_error()? {
                return Err(e);
            }
            if socket.peer_addr().is_err() {
                // Still in flight: let the reactor say when it is done.
                let stream = TcpStream::from_std(std::net::TcpStream::from(socket))?;
                stream.writable().await?;
                if let Some(e) = stream.take_error()? {
                    return Err(e);
                }
                return Ok(stream);
            }
        }
        Err(e) => return Err(e),
    }
    TcpStream::from_std(std::net::TcpStream::from(socket))
}

/// [`connect_addr`] within `limit`; a connection not made by then fails with
/// [`io::ErrorKind::TimedOut`].
pub async fn connect_addr_timeout(
    addr: SocketAddr,
    source: Option<IpAddr>,
    limit: Duration,
) -> io::Result<TcpStream> {
    match tokio::time::timeout(limit, connect_addr(addr, source)).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no answer from {addr} within {limit:?}"),
        )),
    }
}

/// Whether a connection reached itself: a connect from an ephemeral port to the same port of a
/// local address with no listener can meet itself (TCP simultaneous open), which looks like an
/// open port but is none.
pub fn is_self_connect(stream: &TcpStream) -> bool {
    match (stream.local_addr(), stream.peer_addr()) {
        (Ok(local), Ok(peer)) => local == peer,
        _ => false,
    }
}

/// Starts connects to resolved addresses, many in a row, as cheaply as the kernel allows: the
/// socket of a refused connect is kept and used for the next one, since Linux lets a TCP socket
/// whose connect failed connect again. A port scanner meets mostly refusals, and this saves a
/// `socket(2)` and a `close(2)` (and the kernel's allocation of a socket) for each.
///
/// The outcome of a connect is asked of the kernel by calling `connect(2)` a second time on the
/// same socket, which answers with the pending error (`ECONNREFUSED`), `EISCONN` (connected) or
/// `EALREADY` (still in flight), and resets a refused socket for reuse: one call where
/// `getsockopt(SO_ERROR)` and `getpeername` would be two.
#[derive(Debug, Default)]
pub struct Dialer {
    spare_v4: Option<Socket>,
    spare_v6: Option<Socket>,
}

/// How a connect started by [`Dialer::start`] went, as far as is known when it returns.
#[derive(Debug)]
pub enum Dial {
    /// Refused (a RST came back): nothing listens there.
    Refused,
    /// Connected already.
    Connected(TcpStream),
    /// Still in flight: [`PendingConnect::finish`] waits for the outcome.
    Pending(PendingConnect),
}

/// A connect still in flight, registered with the reactor.
#[derive(Debug)]
pub struct PendingConnect {
    stream: TcpStream,
}

impl PendingConnect {
    /// Waits until the connect completes or fails (no timeout: wrap it in one).
    pub async fn finish(self) -> io::Result<TcpStream> {
        self.stream.writable().await?;
        if let Some(e) = self.stream.take_error()? {
            return Err(e);
        }
        Ok(self.stream)
    }
}

impl Dialer {
    pub fn new() -> Self {
        Dialer::default()
    }

    /// Starts a connect to `addr` and says how it went so far. Errors other than a refusal are
    /// returned as they are (`EHOSTUNREACH`, `EMFILE`...).
    pub fn start(&mut self, addr: SocketAddr) -> io::Result<Dial> {
        let spare = if addr.is_ipv4() {
            &mut self.spare_v4
        } else {
            &mut self.spare_v6
        };
        let socket = match spare.take() {
            Some(socket) => socket,
            None => Socket::new(
                Domain::for_address(addr),
                Type::STREAM.nonblocking().cloexec(),
                Some(Protocol::TCP),
            )?,
        };
        let target = addr.into();
        let outcome = match socket.connect(&target) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => socket.connect(&target),
            Err(e) => Err(e),
        };
        match outcome {
            Ok(()) => Ok(Dial::Connected(into_tokio(socket)?)),
            Err(e) => match e.raw_os_error() {
                Some(libc::EISCONN) => Ok(Dial::Connected(into_tokio(socket)?)),
                Some(libc::EALREADY | libc::EINPROGRESS) => Ok(Dial::Pending(PendingConnect {
                    stream: into_tokio(socket)?,
                })),
                Some(libc::ECONNREFUSED) => {
                    *spare = Some(socket);
                    Ok(Dial::Refused)
                }
                _ => Err(e),
            },
        }
    }
}

fn into_tokio(socket: Socket) -> io::Result<TcpStream> {
    TcpStream::from_std(std::net::TcpStream::from(socket))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connects_refuses_and_reads_back_the_peer() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let open = listener.local_addr().expect("addr");
        let stream = connect_addr(open, None).await.expect("connect");
        assert_eq!(stream.peer_addr().expect("peer"), open);
        assert!(!is_self_connect(&stream));
        drop(listener);
        let err = connect_addr(open, None).await.expect_err("closed now");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    }

    #[tokio::test]
    async fn a_dialer_reuses_refused_sockets_and_still_connects() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let open = listener.local_addr().expect("addr");
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr")
        };
        let mut dialer = Dialer::new();
        for _ in 0..3 {
            assert!(matches!(dialer.start(closed), Ok(Dial::Refused)));
        }
        let stream = match dialer.start(open).expect("start") {
            Dial::Connected(s) => s,
            Dial::Pending(p) => p.finish().await.expect("finish"),
            Dial::Refused => panic!("{open} refused"),
        };
        assert_eq!(stream.peer_addr().expect("peer"), open);
        assert!(matches!(dialer.start(closed), Ok(Dial::Refused)));
    }
}
