//! What every sockit tool shares: endpoints, listeners with limits, streams, TLS, allow/deny lists,
//! idle timers and the shutdown signal.
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
mod datagram;
mod endpoint;
mod error;
mod idle;
mod listener;
mod rlimit;
mod sendq;
mod server;
mod shutdown;
mod stream;
pub mod tls;
mod udp;

pub use access::AccessList;
pub use datagram::{
    source_problem, DatagramGuard, DatagramStats, ReplyLimits, Verdict, DEFAULT_REPLY_BURST,
    DEFAULT_REPLY_RATE, DEFAULT_REPLY_SOURCES,
};
pub use endpoint::{Endpoint, LocalAddr, PeerAddr};
pub use error::NetError;
pub use idle::IdleTimer;
pub use listener::Listener;
pub use rlimit::raise_fd_limit;
pub use sendq::{send_queue, PushError, SendQueue, SendQueueReader};
pub use server::{serve, Conn, ConnSlots, ServerOptions};
pub use shutdown::{on_signals, DEFAULT_DRAIN};
pub use stream::{connect, ConnectOptions, Stream};
pub use udp::{bind_udp, ServerSocket};
