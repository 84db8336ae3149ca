//! Load generators that measure an echo (and later chat) server — sockit's own or a peer's — from
//! the client side: throughput, latency percentiles, errors, and what the client itself cost.
//!
//! A generator is an async function from a validated config to a serialisable report.
//! [`on_own_runtime`] runs it on a runtime with as many worker threads as asked, so that the client
//! is not the bottleneck of what it measures. [`report`] holds what every generator shares: the
//! latency histogram, the process CPU clock, and the table and JSON printers.

pub mod chat;
pub mod echo;
pub mod report;

use std::future::Future;

use crate::net::NetError;

/// Why a benchmark could not produce a report.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Not a single connection could be opened (the first failure is kept).
    #[error(transparent)]
    Connect(NetError),

    /// The configuration makes no sense (zero connections, zero-byte messages...).
    #[error("bad benchmark settings: {0}")]
    Config(String),

    /// The benchmark's own runtime or thread could not be started.
    #[error("cannot start the benchmark runtime: {0}")]
    Runtime(std::io::Error),
}

/// Runs the future `make` builds on a fresh multi-threaded runtime with `threads` workers, on its
/// own OS thread, and hands back its output.
///
/// The caller's runtime may be sized for something else (the binary's, or a test's single thread);
/// a load generator needs to decide its own parallelism. A nested runtime cannot be started from
/// inside an async context, hence the separate thread.
pub async fn on_own_runtime<F, Fut, T>(threads: usize, make: F) -> Result<T, BenchError>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("sockit-bench".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads.max(1))
                .thread_name("sockit-bench-worker")
                .enable_all()
                .build();
            let out = runtime.map(|rt| {
                let out = rt.block_on(make());
                // Tasks still blocked (a name lookup that never returns) must not hold the report.
                rt.shutdown_timeout(std::time::Duration::from_secs(1));
                out
            });
            let _ = tx.send(out);
        })
        .map_err(BenchError::Runtime)?;
    match rx.await {
        Ok(out) => out.map_err(BenchError::Runtime),
        Err(_) => Err(BenchError::Runtime(std::io::Error::other(
            "the benchmark thread ended without a result",
        ))),
    }
}

/// The number of worker threads a generator uses unless told otherwise: one per CPU.
pub fn default_threads() -> usize {
    crate::net::cpus()
}
