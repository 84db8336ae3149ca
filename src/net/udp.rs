//! UDP sockets for the datagram servers (echo, daytime) and clients.

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

use super::{Endpoint, NetError};

/// Binds a UDP socket on `endpoint` (port 0 picks one).
pub async fn bind_udp(endpoint: &Endpoint) -> Result<UdpSocket, NetError> {
    let addr = match endpoint {
        Endpoint::Inet { .. } => endpoint.resolve().await?[0],
        Endpoint::Unix(_) => {
            return Err(NetError::BadAddress {
                input: endpoint.to_string(),
                reason: "UDP needs HOST:PORT, not a Unix path".into(),
            })
        }
    };
    let bind_err = |source| NetError::Bind {
        target: endpoint.to_string(),
        source,
    };
    let make = || -> std::io::Result<UdpSocket> {
        let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        if addr.is_ipv6() {
            let _ = socket.set_only_v6(false);
        }
        socket.bind(&addr.into())?;
        socket.set_nonblocking(true)?;
        UdpSocket::from_std(socket.into())
    };
    make().map_err(bind_err)
}

/// A server's socket: a stream listener or a datagram socket, for tools that offer both.
#[derive(Debug)]
pub enum ServerSocket {
    Stream(super::Listener),
    Datagram(UdpSocket),
}

impl ServerSocket {
    /// Binds a datagram socket when `udp`, else a stream listener.
    pub async fn bind(endpoint: &Endpoint, udp: bool) -> Result<Self, NetError> {
        Ok(if udp {
            ServerSocket::Datagram(bind_udp(endpoint).await?)
        } else {
            ServerSocket::Stream(super::Listener::bind(endpoint).await?)
        })
    }

    /// The bound address (port 0 resolved).
    pub fn local_addr(&self) -> super::LocalAddr {
        match self {
            ServerSocket::Stream(l) => l.local_addr(),
            ServerSocket::Datagram(u) => super::LocalAddr::Inet(
                u.local_addr()
                    .unwrap_or_else(|_| std::net::SocketAddr::from(([0, 0, 0, 0], 0))),
            ),
        }
    }
}
