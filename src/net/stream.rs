//! One stream type for every transport a tool may be handed (TCP, Unix, TLS either way), and the
//! client side: connecting with a timeout, a source address and optional TLS.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpSocket, TcpStream, UnixStream};

use super::tls::ClientTls;
use super::{Endpoint, NetError};

/// A connected byte stream over any of sockit's transports.
///
/// An enum rather than a boxed trait object: the echo data path dispatches with one `match`, and
/// no allocation per connection.
#[derive(Debug)]
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
    TlsServer(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    TlsClient(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

macro_rules! each {
    ($self:ident, $method:ident($($arg:expr),*)) => {
        match $self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).$method($($arg),*),
            Stream::Unix(s) => Pin::new(s).$method($($arg),*),
            Stream::TlsServer(s) => Pin::new(s.as_mut()).$method($($arg),*),
            Stream::TlsClient(s) => Pin::new(s.as_mut()).$method($($arg),*),
        }
    };
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        each!(self, poll_read(cx, buf))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        each!(self, poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        each!(self, poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Tcp(s) => s.is_write_vectored(),
            Stream::Unix(s) => s.is_write_vectored(),
            Stream::TlsServer(s) => s.is_write_vectored(),
            Stream::TlsClient(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, poll_shutdown(cx))
    }
}

impl Stream {
    /// The TCP socket underneath, if any (for socket options).
    pub fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Stream::Tcp(s) => Some(s),
            Stream::TlsServer(s) => Some(s.get_ref().0),
            Stream::TlsClient(s) => Some(s.get_ref().0),
            Stream::Unix(_) => None,
        }
    }

    /// The local address of an internet stream.
    pub fn local_inet(&self) -> Option<SocketAddr> {
        self.tcp().and_then(|s| s.local_addr().ok())
    }
}

/// How to open an outgoing connection.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// Give up after this long (ncat's `-w`). `None` waits as long as the kernel does.
    pub timeout: Option<Duration>,
    /// Bind the local end to this address first (ncat's `-s`).
    pub source: Option<IpAddr>,
    /// Speak TLS over the TCP connection.
    pub tls: Option<ClientTls>,
}

/// Connects to `endpoint`, trying each resolved address in turn, within `opts.timeout`.
pub async fn connect(endpoint: &Endpoint, opts: &ConnectOptions) -> Result<Stream, NetError> {
    let attempt = connect_inner(endpoint, opts);
    match opts.timeout {
        Some(after) => {
            tokio::time::timeout(after, attempt)
                .await
                .map_err(|_| NetError::ConnectTimeout {
                    target: endpoint.to_string(),
                    after,
                })?
        }
        None => attempt.await,
    }
}

async fn connect_inner(endpoint: &Endpoint, opts: &ConnectOptions) -> Result<Stream, NetError> {
    let connect_err = |source| NetError::Connect {
        target: endpoint.to_string(),
        source,
    };
    let tcp = match endpoint {
        Endpoint::Unix(path) => {
            if opts.tls.is_some() {
                return Err(NetError::TlsConfig(
                    "TLS over Unix sockets is not supported".into(),
                ));
            }
            return UnixStream::connect(path)
                .await
                .map(Stream::Unix)
                .map_err(connect_err);
        }
        Endpoint::Inet { .. } => {
            let mut last_err = None;
            let mut connected = None;
            for addr in endpoint.resolve().await? {
                match connect_tcp(addr, opts.source).await {
                    Ok(s) => {
                        connected = Some(s);
                        break;
                    }
                    Err(e) => last_err = Some(e),
                }
            }
            match connected {
                Some(s) => s,
                None => {
                    return Err(connect_err(last_err.unwrap_or_else(|| {
                        io::Error::new(io::ErrorKind::NotFound, "no addresses")
                    })))
                }
            }
        }
    };
    let _ = tcp.set_nodelay(true);
    match &opts.tls {
        None => Ok(Stream::Tcp(tcp)),
        Some(tls) => {
            let host = endpoint.host().unwrap_or("localhost");
            tls.handshake(tcp, host, &endpoint.to_string())
                .await
                .map(|s| Stream::TlsClient(Box::new(s)))
        }
    }
}

async fn connect_tcp(addr: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    socket.connect(addr).await
}
