//! sockit: the classic socket tools, built properly.
//!
//! # Layout
//! - [`net`]: what every tool shares — endpoints, listeners with limits, streams, TLS, allow/deny
//!   lists, idle timers, the shutdown signal.
//! - [`echo`]: the echo server (TCP, UDP, Unix; optionally upper-casing).
//! - [`daytime`]: the RFC 867 time service.
//! - [`relay`]: the netcat (`connect` / `listen`): stdin/stdout bridged to a socket, or a command per
//!   connection.
//! - [`bench`]: load generators that measure sockit's servers or a peer's.
//!
//! Every server is a library type: build it from a validated config, `bind()` (port 0 works), read
//! `local_addr()`, then `run(shutdown)` until the token is cancelled.

pub mod bench;
pub mod daytime;
pub mod echo;
pub mod net;
