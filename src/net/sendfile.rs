//! Sending file bytes to a TCP socket with `sendfile(2)`: from the page cache to the socket,
//! without a copy through user space. Written by hand: tokio has no sendfile, and the call is
//! one libc function.
//!
//! Two users: [`send_file_range`] for a tool that writes its own protocol (transfer), and
//! [`FileSpans`] for bodies that go through hyper, which only writes `Bytes`. hyper cannot be
//! handed a file descriptor, so an HTTP/1 body that stands for a file region is a run of
//! *placeholder* chunks (slices of one private static buffer, never sent): the body registers its
//! region with the connection's [`FileSpans`] before its first chunk, and the connection's stream
//! (the HTTP glue's, by [`front`] and [`FileSpans::poll_send`]) sends the region's bytes with sendfile wherever hyper hands it placeholder
//! bytes. hyper writes bytes in order and (with vectored writes, which the HTTP glue forces)
//! never copies a body chunk, so placeholder bytes met in order are the registered regions in
//! order. Everything else hyper does stays: the head, keep-alive, pipelining, the write
//! deadline, HTTP/2 and TLS (which keep the ordinary body).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::Interest;
use tokio::net::TcpStream;

/// One `sendfile` call: up to `len` bytes of `file` from `*offset` onto the socket `out`,
/// advancing `offset`. Non-blocking sockets give `WouldBlock` when full.
fn sendfile_once(out: RawFd, file: &File, offset: &mut u64, len: usize) -> io::Result<usize> {
    let mut off = libc::off_t::try_from(*offset)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file offset too large"))?;
    // SAFETY: both descriptors stay open for the call (borrowed from live owners), and `off` is
    // a valid off_t that the kernel advances.
    let n = unsafe { libc::sendfile(out, file.as_raw_fd(), &mut off, len) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    *offset = u64::try_from(off).unwrap_or(*offset);
    Ok(n as usize)
}

fn shrank() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the file ended early while being sent (it shrank?)",
    )
}

/// `len` bytes of `file` from `at` onto `tcp`, waiting for the socket to take them.
pub async fn send_file_range(tcp: &TcpStream, file: &File, at: u64, len: u64) -> io::Result<()> {
    let out = tcp.as_raw_fd();
    let (mut off, end) = (at, at.saturating_add(len));
    while off < end {
        let want = usize::try_from(end - off).unwrap_or(usize::MAX);
        let n = tcp
            .async_io(Interest::WRITABLE, || {
                sendfile_once(out, file, &mut off, want)
            })
            .await?;
        if n == 0 {
            return Err(shrank());
        }
    }
    Ok(())
}

/// One poll of a sendfile on a tokio socket: registers for writability when the socket is full.
fn poll_send_file(
    tcp: &TcpStream,
    cx: &mut Context<'_>,
    file: &File,
    offset: &mut u64,
    len: usize,
) -> Poll<io::Result<usize>> {
    loop {
        if let Err(e) = std::task::ready!(tcp.poll_write_ready(cx)) {
            return Poll::Ready(Err(e));
        }
        match tcp.try_io(Interest::WRITABLE, || {
            sendfile_once(tcp.as_raw_fd(), file, offset, len)
        }) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Ok(0) if len > 0 => return Poll::Ready(Err(shrank())),
            r => return Poll::Ready(r),
        }
    }
}

/// The placeholder bytes: what a [`SpanBody`] hands hyper. Private, so no other buffer can point
/// into it, and never sent.
static PLACEHOLDER: [u8; 256 * 1024] = [0; 256 * 1024];

fn is_placeholder(b: &[u8]) -> bool {
    let start = PLACEHOLDER.as_ptr() as usize;
    let p = b.as_ptr() as usize;
    !b.is_empty() && p >= start && p < start + PLACEHOLDER.len()
}

/// A region of a file to send.
struct Span {
    file: Arc<File>,
    offset: u64,
    left: u64,
}

/// The file regions of one connection's bodies, in the order their bytes are to be sent.
#[derive(Default)]
pub struct FileSpans {
    queue: Mutex<VecDeque<Span>>,
}

impl std::fmt::Debug for FileSpans {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSpans").finish_non_exhaustive()
    }
}

impl FileSpans {
    /// A body for `len` bytes of `file` from `start`, sent by this connection's [`SpanWriter`].
    pub fn body(self: &Arc<Self>, file: Arc<File>, start: u64, len: u64) -> SpanBody {
        SpanBody {
            spans: self.clone(),
            span: Some(Span {
                file,
                offset: start,
                left: len,
            }),
            left: len,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Span>> {
        // A panic while holding this lock leaves a queue that is still well formed.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends up to `want` bytes of the first region onto `tcp`; the number sent.
    pub fn poll_send(
        &self,
        tcp: &TcpStream,
        cx: &mut Context<'_>,
        want: usize,
    ) -> Poll<io::Result<usize>> {
        let mut q = self.lock();
        let Some(span) = q.front_mut() else {
            return Poll::Ready(Err(io::Error::other(
                "placeholder bytes with no file region registered",
            )));
        };
        let want = want.min(usize::try_from(span.left).unwrap_or(usize::MAX));
        let file = span.file.clone();
        let n = std::task::ready!(poll_send_file(tcp, cx, &file, &mut span.offset, want))?;
        span.left -= n as u64;
        if span.left == 0 {
            q.pop_front();
        }
        Poll::Ready(Ok(n))
    }
}

/// An HTTP body of placeholder chunks standing for a file region (see the module's doc).
pub struct SpanBody {
    spans: Arc<FileSpans>,
    /// Registered with the connection at the first poll, before any chunk reaches hyper.
    span: Option<Span>,
    left: u64,
}

impl Body for SpanBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if let Some(span) = self.span.take() {
            if span.left > 0 {
                self.spans.lock().push_back(span);
            }
        }
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = usize::try_from(self.left)
            .unwrap_or(usize::MAX)
            .min(PLACEHOLDER.len());
        self.left -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&PLACEHOLDER[..n])))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

/// What the front of a vectored write is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Front {
    /// This many ordinary slices before the first placeholder (or the end): written as they are.
    Ordinary(usize),
    /// This many placeholder bytes: sent from the registered regions with [`FileSpans::poll_send`].
    Placeholder(usize),
}

/// Splits a write into what goes out as written and what is a file region.
pub fn front(bufs: &[IoSlice<'_>]) -> Front {
    let ordinary = bufs.iter().take_while(|b| !is_placeholder(b)).count();
    if ordinary > 0 || bufs.is_empty() {
        return Front::Ordinary(ordinary);
    }
    Front::Placeholder(
        bufs.iter()
            .take_while(|b| is_placeholder(b))
            .map(|b| b.len())
            .sum(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_told_apart() {
        assert!(is_placeholder(&PLACEHOLDER[..10]));
        assert!(is_placeholder(&PLACEHOLDER[PLACEHOLDER.len() - 1..]));
        assert!(!is_placeholder(&PLACEHOLDER[..0]));
        assert!(!is_placeholder(&[0u8; 16]));
        assert!(!is_placeholder(b"GET / HTTP/1.1"));
        let head = b"HTTP/1.1 200 OK\r\n\r\n";
        let (p1, p2) = (&PLACEHOLDER[..100], &PLACEHOLDER[..50]);
        let bufs = [IoSlice::new(head), IoSlice::new(p1), IoSlice::new(p2)];
        assert_eq!(front(&bufs), Front::Ordinary(1));
        assert_eq!(front(&bufs[1..]), Front::Placeholder(150));
        let mixed = [IoSlice::new(p1), IoSlice::new(head), IoSlice::new(p2)];
        assert_eq!(front(&mixed), Front::Placeholder(100));
        assert_eq!(front(&[]), Front::Ordinary(0));
    }
}
