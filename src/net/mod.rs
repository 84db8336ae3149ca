//! What every sockit tool shares: endpoints, listeners with limits (overall and per address), streams,
//! TLS, allow/deny lists, rate limits, idle timers and the shutdown signal.
//!
//! A server built on this layer looks like this:
//!
//! ```no_run
//! # async fn demo() -> Result<(), sockit::net::NetError> {
//! use sockit::net::{serve, Endpoint, Listener, ServerOptions};
//! use tokio_util::sync::CancellationToken;
//!
//! let listener = Listener::bind(&"127.0.0.1:0".parse::<Endpoint>()?).await?;
//! println!("listening on {}", listener.local_addr());
//! let shutdown = CancellationToken::new();
//! serve(listener, ServerOptions::default(), shutdown, |conn| async move {
//!     drop(conn); // a tool's handler reads and writes `conn.stream`
//! })
//! .await;
//! # Ok(()) }
//! ```

mod access;
mod admit;
mod datagram;
mod deadline;
mod dial;
mod endpoint;
mod error;
mod host;
pub mod http;
mod idle;
mod listener;
mod peer;
mod proxy;
mod rate;
mod rlimit;
pub mod sendfile;
mod sendq;
mod server;
mod shutdown;
mod stream;
pub mod telnet;
pub mod tls;
mod udp;
mod workers;

pub use access::{AccessList, IpList};
pub use admit::{AddrLimits, Admitted, ConnSlots, Refusal};
pub use datagram::{
    source_problem, DatagramGuard, DatagramStats, ReplyLimits, Verdict, DEFAULT_REPLY_BURST,
    DEFAULT_REPLY_RATE, DEFAULT_REPLY_SOURCES,
};
pub use deadline::{WriteDeadline, WriteTimeout};
pub use dial::{connect_addr, connect_addr_timeout, is_self_connect, Dial, Dialer, PendingConnect};
pub use endpoint::{Endpoint, LocalAddr, PeerAddr};
pub use error::NetError;
pub use host::{parse_host_name, HostPolicy, Refused as HostRefused};
pub use http::{serve_http, HttpConn, HttpOptions, HttpVersion};
pub use idle::IdleTimer;
pub use listener::Listener;
pub use peer::{canonical_addr, canonical_ip, AddrEntry, AddrKey, AddrTable};
pub use proxy::{connect_via, Proxy, ProxyKind};
pub use rate::{AddrBuckets, RateLimit, TokenBucket};
pub use rlimit::{conn_budget, fd_limit, raise_fd_limit};
pub use sendq::{send_queue, PushError, SendQueue, SendQueueReader};
pub use server::{accept_one, serve, Conn, ServerOptions};
pub use shutdown::{on_signals, DEFAULT_DRAIN};
pub use stream::{connect, ConnectOptions, Stream};
pub use udp::{bind_udp, ServerSocket};
pub use workers::{cpus, Workers};
