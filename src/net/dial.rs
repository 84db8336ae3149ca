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
}
