//! The body of a file response: a byte range of an open file, read in chunks with positional
//! reads, each chunk read right on the async thread when the page cache holds it and on the
//! blocking pool when it does not.
//!
//! Why not `tokio::fs::File` and `ReaderStream`: they send every read to the blocking pool (two
//! thread wake-ups per chunk) and copy each chunk once more from their own buffer into the
//! stream's, which together were a quarter of the server's CPU on a 10 MiB file
//! (bench/http.sh). `preadv2(RWF_NOWAIT)` reads what the page cache has without ever waiting for
//! the disk, so a cached file costs one system call per chunk and no hop, and an uncached one
//! still never blocks an async thread on the disk (the same split as nginx's `aio threads`).

use std::fs::File;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use hyper::body::{Body, Frame, SizeHint};
use tokio::task::JoinHandle;

/// Bytes `[pos, end)` of a file.
pub struct FileBody {
    file: Arc<File>,
    pos: u64,
    end: u64,
    chunk: usize,
    /// A read of a chunk the page cache did not hold, on the blocking pool.
    reading: Option<JoinHandle<io::Result<Bytes>>>,
}

impl FileBody {
    /// `len` bytes of `file` from `start`, in reads of at most `chunk` bytes.
    pub fn new(file: Arc<File>, start: u64, len: u64, chunk: usize) -> FileBody {
        FileBody {
            file,
            pos: start,
            end: start.saturating_add(len),
            chunk: chunk.max(1),
            reading: None,
        }
    }

    fn deliver(&mut self, chunk: Bytes) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        if chunk.is_empty() {
            // The file shrank under us: what the head announced cannot be sent.
            self.pos = self.end;
            return Poll::Ready(Some(Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file shrank while it was sent",
            ))));
        }
        self.pos += chunk.len() as u64;
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }
}

impl Body for FileBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        let this = self.get_mut();
        if let Some(task) = &mut this.reading {
            let done = match Pin::new(task).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(done) => done,
            };
            this.reading = None;
            return match done {
                Ok(Ok(chunk)) => this.deliver(chunk),
                Ok(Err(e)) => Poll::Ready(Some(Err(e))),
                Err(e) => Poll::Ready(Some(Err(io::Error::other(e)))),
            };
        }
        if this.pos >= this.end {
            return Poll::Ready(None);
        }
        let want = usize::try_from(this.end - this.pos)
            .unwrap_or(usize::MAX)
            .min(this.chunk);
        match read_cached(&this.file, this.pos, want) {
            Ok(Some(chunk)) => this.deliver(chunk),
            Ok(None) => {
                let (file, pos) = (this.file.clone(), this.pos);
                this.reading = Some(tokio::task::spawn_blocking(move || {
                    read_at(&file, pos, want)
                }));
                // Registers the waker with the task just spawned.
                Pin::new(this).poll_frame(cx)
            }
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.pos >= self.end && self.reading.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.end.saturating_sub(self.pos))
    }
}

/// Reads up to `want` bytes at `pos`, waiting for the disk if need be (on the blocking pool).
fn read_at(file: &File, pos: u64, want: usize) -> io::Result<Bytes> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; want];
    let mut filled = 0;
    while filled < want {
        match file.read_at(&mut buf[filled..], pos + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(filled);
    Ok(Bytes::from(buf))
}

/// Reads up to `want` bytes at `pos` if the page cache holds (the start of) them; `None` if
/// reading would wait for the disk, or this kernel or file system cannot say.
#[cfg(target_os = "linux")]
fn read_cached(file: &File, pos: u64, want: usize) -> io::Result<Option<Bytes>> {
    use std::os::fd::AsRawFd;
    let Ok(offset) = libc::off_t::try_from(pos) else {
        return Ok(None);
    };
    let mut buf = BytesMut::with_capacity(want);
    let spare = buf.spare_capacity_mut();
    let iov = libc::iovec {
        iov_base: spare.as_mut_ptr().cast(),
        iov_len: spare.len().min(want),
    };
    loop {
        // SAFETY: the iovec points into `buf`'s spare capacity, valid for `iov_len` bytes, and
        // the kernel writes at most that many.
        let n = unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, offset, libc::RWF_NOWAIT) };
        if n >= 0 {
            // SAFETY: the kernel initialized the first `n` bytes (n <= iov_len <= capacity).
            unsafe { buf.set_len(n as usize) };
            return Ok(Some(buf.freeze()));
        }
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            // Not in the page cache; or no RWF_NOWAIT here (EOPNOTSUPP, ENOSYS, EINVAL).
            Some(libc::EAGAIN | libc::EOPNOTSUPP | libc::ENOSYS | libc::EINVAL) => Ok(None),
            _ => Err(e),
        };
    }
}

#[cfg(not(target_os = "linux"))]
fn read_cached(_: &File, _: u64, _: usize) -> io::Result<Option<Bytes>> {
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::io::Write;
    use std::path::Path;

    async fn collect(file: &Path, start: u64, len: u64, chunk: usize) -> io::Result<Vec<u8>> {
        let f = Arc::new(File::open(file)?);
        let body = FileBody::new(f, start, len, chunk);
        Ok(body.collect().await?.to_bytes().to_vec())
    }

    #[tokio::test]
    async fn reads_ranges_in_chunks_and_fails_on_a_short_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::File::create(&path)
            .unwrap()
            .write_all(&data)
            .unwrap();
        assert_eq!(collect(&path, 0, 100_000, 4096).await.unwrap(), data);
        assert_eq!(
            collect(&path, 99_000, 1000, 333).await.unwrap(),
            &data[99_000..]
        );
        assert_eq!(collect(&path, 5, 0, 10).await.unwrap(), b"");
        // More than the file holds: an error, not a short body.
        let err = collect(&path, 99_000, 2000, 4096).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        // The blocking-pool path reads the same bytes.
        let f = File::open(&path).unwrap();
        assert_eq!(&read_at(&f, 10, 20).unwrap()[..], &data[10..30]);
    }
}
