//! sockit: the classic socket tools, built properly.
//!
//! # Layout
//! - [`net`]: what every tool shares — endpoints, listeners with limits, streams, TLS, allow/deny
//!   lists, idle timers, the shutdown signal.
//! - [`chat`]: the group chat server (line protocol for nc/telnet, JSON lines for sockit's
//!   clients, history in SQLite).
//! - [`echo`]: the echo server (TCP, UDP, Unix; optionally upper-casing).
//! - [`daytime`]: the RFC 867 time service.
//! - [`http`]: the static file server (listings, ranges, validators, compression, HTTP/2).
//! - [`relay`]: the netcat (`connect` / `listen`): stdin/stdout bridged to a socket, or a command per
//!   connection.
//! - [`scan`]: the TCP port scanner (connect scan, adaptive concurrency, service names, banners).
//! - [`bench`]: load generators that measure sockit's servers or a peer's.
//! - [`work`]: running many small jobs within an adjustable limit, and a progress bar.
//!
//! Every server is a library type: build it from a validated config, `bind()` (port 0 works), read
//! `local_addr()`, then `run(shutdown)` until the token is cancelled.

pub mod bench;
pub mod chat;
pub mod daytime;
pub mod echo;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod net;
pub mod relay;
pub mod scan;
pub mod transfer;
pub mod work;
