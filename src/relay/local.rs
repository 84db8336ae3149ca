//! The local side of a relay as two bounded channels of byte chunks: `input` (what to send, ends at
//! the input's EOF) and `output` (what was received). Channels let one stdin feed many clients (the
//! broker) and many clients share one stdout, and bound memory: a slow stdout slows the socket
//! reads, which slows the peer (TCP flow control) instead of growing a buffer.
//!
//! Stdin and stdout are served by two plain threads rather than tokio's blocking pool: a read of a
//! terminal that never returns would otherwise keep the runtime, and so the process, from exiting.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use super::CHUNK;

/// Chunks queued between the local side and the socket, each direction. With [`CHUNK`]-sized
/// chunks this is at most 1 MiB in flight.
pub(crate) const QUEUE: usize = 16;

/// Where a relay's outgoing bytes come from and its incoming bytes go.
#[derive(Debug)]
pub struct Local {
    pub(crate) input: mpsc::Receiver<Bytes>,
    pub(crate) output: mpsc::Sender<Bytes>,
    pub(crate) flushed: Flushed,
}

/// Completes when everything sent to a [`Local`]'s output has been written out (or the output
/// failed) and every sender is gone.
#[derive(Debug)]
pub(crate) struct Flushed(oneshot::Receiver<()>);

impl Flushed {
    pub(crate) async fn wait(self) {
        // An error means the writer stopped early (its output closed): nothing more to wait for.
        let _ = self.0.await;
    }
}

impl Local {
    /// This process's stdin and stdout. With `read_input` false stdin is left alone (ncat's
    /// `--recv-only`), and the input is empty.
    pub fn stdio(read_input: bool) -> Local {
        let (in_tx, input) = mpsc::channel(QUEUE);
        let (output, out_rx) = mpsc::channel::<Bytes>(QUEUE);
        let (done_tx, done_rx) = oneshot::channel();
        if read_input {
            // A duplicate of fd 0 read directly: no userspace buffering, any file type works.
            match std::io::stdin().as_fd().try_clone_to_owned() {
                Ok(fd) => spawn_thread("sockit-stdin", move || read_file(File::from(fd), in_tx)),
                Err(e) => tracing::debug!(error = %e, "no stdin; input is empty"),
            }
        }
        let stdout = std::io::stdout()
            .as_fd()
            .try_clone_to_owned()
            .map(File::from);
        spawn_thread("sockit-stdout", move || match stdout {
            Ok(file) => write_file(file, out_rx, done_tx),
            Err(e) => {
                tracing::debug!(error = %e, "no stdout; output is dropped");
                discard(out_rx, done_tx)
            }
        });
        Local {
            input,
            output,
            flushed: Flushed(done_rx),
        }
    }

    /// Any reader and writer, for embedding and tests. Must be called within a tokio runtime.
    pub fn from_io<R, W>(reader: R, writer: W) -> Local
    where
        R: AsyncRead + Send + Unpin + 'static,
        W: AsyncWrite + Send + Unpin + 'static,
    {
        let (in_tx, input) = mpsc::channel(QUEUE);
        let (output, out_rx) = mpsc::channel(QUEUE);
        let (done_tx, done_rx) = oneshot::channel();
        tokio::spawn(read_async(reader, in_tx));
        tokio::spawn(write_async(writer, out_rx, done_tx));
        Local {
            input,
            output,
            flushed: Flushed(done_rx),
        }
    }
}

fn spawn_thread(name: &str, f: impl FnOnce() + Send + 'static) {
    if let Err(e) = std::thread::Builder::new().name(name.into()).spawn(f) {
        tracing::warn!(error = %e, thread = name, "cannot start thread");
    }
}

/// Reads `file` in large chunks until EOF or a read error (reported, then treated as EOF).
fn read_file(mut file: File, tx: mpsc::Sender<Bytes>) {
    let mut buf = BytesMut::new();
    loop {
        buf.resize(CHUNK, 0);
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::warn!(error = %e, "reading stdin failed; treating it as the end of input");
                break;
            }
        };
        buf.truncate(n);
        if tx.blocking_send(buf.split().freeze()).is_err() {
            break;
        }
    }
}

/// Writes chunks to `file` until every sender is gone, flushing whenever the queue runs dry.
fn write_file(mut file: File, mut rx: mpsc::Receiver<Bytes>, done: oneshot::Sender<()>) {
    while let Some(chunk) = rx.blocking_recv() {
        if let Err(e) = file.write_all(&chunk) {
            // EPIPE (`| head`) is the reader saying it has enough; anything else is worth a line.
            if e.kind() != std::io::ErrorKind::BrokenPipe {
                tracing::warn!(error = %e, "writing stdout failed; dropping the rest");
            }
            return;
        }
        if rx.is_empty() {
            let _ = file.flush();
        }
    }
    let _ = file.flush();
    let _ = done.send(());
}

fn discard(mut rx: mpsc::Receiver<Bytes>, done: oneshot::Sender<()>) {
    while rx.blocking_recv().is_some() {}
    let _ = done.send(());
}

async fn read_async<R: AsyncRead + Unpin>(mut reader: R, tx: mpsc::Sender<Bytes>) {
    let mut buf = BytesMut::with_capacity(CHUNK);
    loop {
        buf.reserve(CHUNK);
        match reader.read_buf(&mut buf).await {
            Ok(0) => break,
            Ok(_) => {
                if tx.send(buf.split().freeze()).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading local input failed; treating it as the end");
                break;
            }
        }
    }
}

async fn write_async<W: AsyncWrite + Unpin>(
    mut writer: W,
    mut rx: mpsc::Receiver<Bytes>,
    done: oneshot::Sender<()>,
) {
    while let Some(chunk) = rx.recv().await {
        if writer.write_all(&chunk).await.is_err() {
            return;
        }
        if rx.is_empty() && writer.flush().await.is_err() {
            return;
        }
    }
    let _ = writer.shutdown().await;
    let _ = done.send(());
}
