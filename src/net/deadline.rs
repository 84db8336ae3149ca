//! A write deadline for any stream: a write (or flush, or shutdown) that makes no progress for the
//! write timeout fails with `TimedOut`, as nginx's `send_timeout` cuts a response nobody reads.
//!
//! Servers whose handlers do not drive every write themselves need it: an HTTP connection is run
//! by hyper, which waits on a full socket for as long as it takes, so a client that pipelines
//! requests and never reads the answers would hold its connection slot for ever (the idle timeout
//! does not apply either, since there is always a response "in progress"). Wrapping the stream
//! puts the limit under hyper, and under whatever the connection is upgraded to.
//!
//! The clock only runs while a write is waiting on the socket: the usual write, which the socket
//! takes at once, costs one flag update and no timer. A timeout is final: the peer is treated as
//! gone, and every later write fails at once (reads still pass through).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The write timeout of a [`WriteDeadline`] stream, shared: whoever holds it may change the limit
/// while the stream is in use (e.g. once a connection is upgraded to a protocol with its own,
/// more informative, timer). `None` means no limit.
#[derive(Debug, Clone)]
pub struct WriteTimeout(Arc<AtomicU64>);

/// Stored for "no limit": a duration of zero is never a useful timeout.
const NONE: u64 = 0;

impl WriteTimeout {
    pub fn new(timeout: Option<Duration>) -> Self {
        let t = WriteTimeout(Arc::new(AtomicU64::new(NONE)));
        t.set(timeout);
        t
    }

    /// Changes the limit; a write already waiting keeps the moment it started to wait.
    pub fn set(&self, timeout: Option<Duration>) {
        let nanos = match timeout {
            None => NONE,
            // At least 1 ns, so that a zero timeout is not mistaken for none; saturated rather
            // than wrapped for absurd values (u64 nanoseconds is 584 years).
            Some(d) => u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1),
        };
        self.0.store(nanos, Ordering::Relaxed);
    }

    pub fn get(&self) -> Option<Duration> {
        match self.0.load(Ordering::Relaxed) {
            NONE => None,
            n => Some(Duration::from_nanos(n)),
        }
    }
}

/// A stream whose writes fail once the peer has taken nothing for the write timeout.
#[derive(Debug)]
pub struct WriteDeadline<S> {
    inner: S,
    timeout: WriteTimeout,
    /// When the current wait began, if a write is waiting on the socket.
    waiting_since: Option<Instant>,
    /// The timer of the current wait; kept between waits so a stall costs no allocation.
    timer: Option<Pin<Box<Sleep>>>,
    /// The deadline passed: the peer is gone for writing.
    expired: bool,
}

impl<S> WriteDeadline<S> {
    /// Wraps `inner`; `timeout` `None` passes everything through unchanged.
    pub fn new(inner: S, timeout: Option<Duration>) -> Self {
        WriteDeadline {
            inner,
            timeout: WriteTimeout::new(timeout),
            waiting_since: None,
            timer: None,
            expired: false,
        }
    }

    /// The limit of this stream, to change it later.
    pub fn timeout(&self) -> WriteTimeout {
        self.timeout.clone()
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    pub fn into_inner(self) -> S {
        self.inner
    }

    fn timed_out(&self) -> io::Error {
        let after = self.timeout.get().unwrap_or_default();
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("write timed out: the peer took nothing for {after:?}"),
        )
    }

    /// Runs one write-side poll under the deadline: progress ends the wait, a pending poll starts
    /// (or continues) it, and a wait past the limit fails.
    pub(crate) fn guard<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: impl FnOnce(Pin<&mut S>, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>>
    where
        S: Unpin,
    {
        if self.expired {
            return Poll::Ready(Err(self.timed_out()));
        }
        match poll(Pin::new(&mut self.inner), cx) {
            Poll::Ready(r) => {
                self.waiting_since = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let Some(limit) = self.timeout.get() else {
                    self.waiting_since = None;
                    return Poll::Pending;
                };
                let since = *self.waiting_since.get_or_insert_with(Instant::now);
                let due = since + limit;
                // The timer wakes this task at the deadline, so the write is polled again and
                // fails here even if the socket never becomes writable.
                let timer = self
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
                if timer.deadline() != due {
                    timer.as_mut().reset(due);
                }
                if timer.as_mut().poll(cx).is_ready() {
                    self.expired = true;
                    self.waiting_since = None;
                    return Poll::Ready(Err(self.timed_out()));
                }
                Poll::Pending
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteDeadline<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().guard(cx, |s, cx| s.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .guard(cx, |s, cx| s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    // A TLS stream's flush writes its pending records, so it can stall like a write.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().guard(cx, |s, cx| s.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().guard(cx, |s, cx| s.poll_shutdown(cx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_write_the_peer_does_not_take_fails_after_the_timeout() {
        // A pipe of 64 bytes that nobody reads: the second write waits for ever without the
        // deadline.
        let (near, mut far) = tokio::io::duplex(64);
        let mut s = WriteDeadline::new(near, Some(Duration::from_millis(100)));
        s.write_all(&[0; 64]).await.unwrap();
        let err = tokio::time::timeout(Duration::from_secs(10), s.write_all(&[0; 64]))
            .await
            .expect("the deadline fired")
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        // Final: later writes fail at once, even with room in the pipe.
        let mut buf = [0; 64];
        far.read_exact(&mut buf).await.unwrap();
        assert_eq!(
            s.write(&[1]).await.unwrap_err().kind(),
            io::ErrorKind::TimedOut
        );
    }

    #[tokio::test]
    async fn progress_restarts_the_clock() {
        // A reader that takes 16 bytes every 60 ms: each wait is shorter than the 200 ms limit,
        // although the whole write takes far longer.
        let (near, mut far) = tokio::io::duplex(16);
        let mut s = WriteDeadline::new(near, Some(Duration::from_millis(200)));
        let reader = tokio::spawn(async move {
            let mut got = 0;
            let mut buf = [0; 16];
            while got < 16 * 12 {
                tokio::time::sleep(Duration::from_millis(60)).await;
                got += far.read(&mut buf).await.unwrap();
            }
            got
        });
        s.write_all(&[7; 16 * 12]).await.unwrap();
        assert_eq!(reader.await.unwrap(), 16 * 12);
    }

    #[tokio::test]
    async fn no_timeout_waits_and_the_limit_can_change() {
        let (near, _far) = tokio::io::duplex(8);
        let mut s = WriteDeadline::new(near, None);
        s.write_all(&[0; 8]).await.unwrap();
        let waited = tokio::time::timeout(Duration::from_millis(200), s.write_all(&[0; 8])).await;
        assert!(waited.is_err(), "a write with no limit failed: {waited:?}");
        s.timeout().set(Some(Duration::from_millis(50)));
        let err = tokio::time::timeout(Duration::from_secs(10), s.write_all(&[0; 8]))
            .await
            .expect("the new limit applies")
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }
}
