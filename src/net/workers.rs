//! Worker threads for a server's connections: N single-threaded runtimes that accepted
//! connections are handed to in turn (nginx's worker processes, as threads in one process).
//!
//! Why not the process's multi-threaded runtime: for many short requests its work stealing and
//! cross-thread wake-ups cost more than the requests (measured with `sockit http` under wrk: a
//! connection's task hops between threads, and idle workers spin looking for work on cores the
//! client also needs). A connection handed to one worker stays there: its socket is registered
//! with that worker's reactor, its timers are that worker's, and its task never moves. The price
//! is that one worker's busy connections do not spread to an idle one; round robin over
//! connections keeps the load even when they are alike (keep-alive HTTP clients).

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use super::Stream;

/// How many CPUs this process may run on (two when the system cannot say): the default count of
/// worker threads, here and in the load generators.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// A running pool of worker threads; dropping it stops them (their tasks are dropped with them,
/// so a server drains its connections before it lets go of its pool).
#[derive(Debug)]
pub struct Workers {
    handles: Vec<Handle>,
    next: AtomicUsize,
    stop: CancellationToken,
}

impl Workers {
    /// Starts `n` worker threads (at least one), each with its own runtime (I/O and timers on).
    pub fn start(n: usize) -> io::Result<Workers> {
        let stop = CancellationToken::new();
        let mut handles = Vec::with_capacity(n.max(1));
        for i in 0..n.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(runtime.handle().clone());
            let stop = stop.clone();
            std::thread::Builder::new()
                .name(format!("sockit-worker-{i}"))
                .spawn(move || runtime.block_on(stop.cancelled()))?;
        }
        Ok(Workers {
            handles,
            next: AtomicUsize::new(0),
            stop,
        })
    }

    /// How many worker threads run.
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// Always false: a pool has at least one worker.
    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// Runs `serve(stream)` on the next worker, `stream` moved to that worker's reactor first. A
    /// stream that cannot be moved (the descriptor cannot be registered there) is dropped, which
    /// closes the connection; the error is logged.
    pub fn spawn<S, F>(&self, stream: Stream, serve: S)
    where
        S: FnOnce(Stream) -> F + Send + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let moving = match Moving::detach(stream) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "cannot hand a connection to a worker");
                return;
            }
        };
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        self.handles[i].spawn(async move {
            match moving.attach() {
                Ok(stream) => serve(stream).await,
                Err(e) => tracing::warn!(error = %e, "a worker cannot take a connection"),
            }
        });
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A stream between reactors: its descriptor, out of the runtime that accepted it.
enum Moving {
    Tcp(std::net::TcpStream),
    Unix(std::os::unix::net::UnixStream),
    /// Already wrapped in TLS (not what a listener accepts): moved as it is, still driven by the
    /// reactor it was registered with.
    Other(Stream),
}

impl Moving {
    fn detach(stream: Stream) -> io::Result<Moving> {
        Ok(match stream {
            Stream::Tcp(s) => Moving::Tcp(s.into_std()?),
            Stream::Unix(s) => Moving::Unix(s.into_std()?),
            other => Moving::Other(other),
        })
    }

    /// Registers the descriptor with the reactor of the runtime this runs on.
    fn attach(self) -> io::Result<Stream> {
        Ok(match self {
            Moving::Tcp(s) => Stream::Tcp(tokio::net::TcpStream::from_std(s)?),
            Moving::Unix(s) => Stream::Unix(tokio::net::UnixStream::from_std(s)?),
            Moving::Other(s) => s,
        })
    }
}
