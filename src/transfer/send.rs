//! The sending side of a session: hello (and the password exchange), the offer, the receiver's
//! plan, then each file's bytes from where the receiver's copy ends, and the receiver's verdict.
//! A file is read and hashed on a blocking thread that runs ahead of the socket by a few chunks,
//! so disk, hash and network overlap; memory stays at a few chunks whatever the file's size.

use std::fs::File;
use std::io::Read;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::auth::Exchange;
use super::progress::Progress;
use super::report::{FileReport, FileStatus, Report, Role};
use super::session::Session;
use super::source::Source;
use super::wire::{self, Action, EntryKind, Msg, MAX_CHUNK};
use super::{Link, TransferError, DEFAULT_IDLE};

/// How a sender behaves.
#[derive(Debug, Clone)]
pub struct SendOptions {
    /// The shared secret the receiver must know too.
    pub password: Option<String>,
    /// zstd each chunk, sending it raw where it does not shrink.
    pub compress: bool,
    /// Give up when the receiver neither reads nor says anything for this long.
    pub idle: Duration,
    /// Progress bars on stderr.
    pub progress: bool,
}

impl Default for SendOptions {
    fn default() -> Self {
        SendOptions {
            password: None,
            compress: false,
            idle: DEFAULT_IDLE,
            progress: false,
        }
    }
}

/// Sends `sources` over `stream` (already connected, TLS already negotiated) and reports.
pub async fn send<S: Link>(stream: S, sources: &[Source], opts: &SendOptions) -> Report {
    let start = Instant::now();
    let mut report = Report::new(Role::Send);
    report.files = sources
        .iter()
        .filter(|s| s.entry.kind == EntryKind::File)
        .map(|s| {
            FileReport::new(&s.entry.path, s.entry.size, FileStatus::Failed).with_error("not sent")
        })
        .collect();
    let mut io = Session::new(stream, 64 << 10, 64 << 10, opts.idle);
    if let Err(e) = run(&mut io, sources, opts, &mut report).await {
        // The receiver may have said why before closing: that is the better message.
        let e = match e {
            TransferError::Net(_) | TransferError::Cut(_) => io.last_word().await.unwrap_or(e),
            e => {
                let _ = io
                    .say(&Msg::Error {
                        message: e.to_string(),
                    })
                    .await;
                e
            }
        };
        report.error = Some(e.to_string());
    }
    report.elapsed = start.elapsed();
    report
}

async fn run<S: Link>(
    io: &mut Session<S>,
    sources: &[Source],
    opts: &SendOptions,
    report: &mut Report,
) -> Result<(), TransferError> {
    wire::write_magic(&mut io.stream).await?;
    let exchange = opts.password.as_deref().map(Exchange::sender);
    io.say(&Msg::Hello {
        version: wire::VERSION,
        auth: exchange.is_some(),
        spake: exchange.as_ref().map(Exchange::message),
        compress: opts.compress,
    })
    .await?;
    let theirs = match io.hear().await? {
        Msg::Welcome { auth, spake, .. } => (auth, spake),
        other => return Err(unexpected("welcome", &other)),
    };
    match (exchange, theirs) {
        (None, (false, _)) => {}
        (Some(exchange), (true, Some(spake))) => {
            let session = exchange.finish(&spake).map_err(TransferError::Auth)?;
            io.say(&Msg::Confirm {
                mac: session.sender_proof(),
            })
            .await?;
            match io.hear().await? {
                Msg::Confirm { mac } if session.check(&mac, false) => {}
                Msg::Confirm { .. } => {
                    return Err(TransferError::Auth(
                        "the receiver does not know the password".into(),
                    ))
                }
                other => return Err(unexpected("confirm", &other)),
            }
        }
        (None, (true, _)) => {
            return Err(TransferError::Auth(
                "the receiver wants a password (--password or SOCKIT_PASSWORD)".into(),
            ))
        }
        (Some(_), _) => {
            return Err(TransferError::Auth(
                "the receiver has no password set; both ends need the same one".into(),
            ))
        }
    }

    io.say(&Msg::Offer {
        entries: sources.iter().map(|s| s.entry.clone()).collect(),
    })
    .await?;
    let plan = match io.hear().await? {
        Msg::Plan { files } => files,
        other => return Err(unexpected("plan", &other)),
    };
    // Index of each file entry among the reports (reports hold files only).
    let report_of: Vec<Option<usize>> = {
        let mut n = 0;
        sources
            .iter()
            .map(|s| {
                (s.entry.kind == EntryKind::File).then(|| {
                    n += 1;
                    n - 1
                })
            })
            .collect()
    };
    let total: u64 = sources.iter().map(|s| s.entry.size).sum();
    let mut progress = Progress::new(opts.progress, total);
    let mut sending = Vec::new();
    for p in &plan {
        let Some(Some(r)) = report_of.get(p.index).copied() else {
            return Err(TransferError::Protocol(format!(
                "the plan names entry {} which is not a file of the offer",
                p.index
            )));
        };
        let file = &mut report.files[r];
        match &p.action {
            Action::Send { offset } => {
                if *offset > sources[p.index].entry.size {
                    return Err(TransferError::Protocol(format!(
                        "resume offset {offset} is past the end of {}",
                        file.path
                    )));
                }
                sending.push((p.index, r, *offset));
            }
            Action::Skip => {
                file.status = FileStatus::Skipped;
                file.error = None;
                progress.skip(file.bytes);
            }
            Action::Refuse { reason } => {
                file.error = Some(format!("refused by the receiver: {reason}"));
            }
        }
    }

    for (index, r, offset) in sending {
        let source = &sources[index];
        progress.start_file(&source.entry.path, source.entry.size, offset);
        io.say(&Msg::File { index, offset }).await?;
        match send_file(io, source, offset, opts.compress, &progress).await? {
            Ok((digest, moved)) => {
                let file = &mut report.files[r];
                file.blake3 = Some(digest.clone());
                file.moved = moved;
                io.say(&Msg::End {
                    index,
                    blake3: digest,
                })
                .await?;
            }
            Err(reason) => {
                report.files[r].error = Some(reason.clone());
                io.say(&Msg::Abort { index, reason }).await?;
            }
        }
    }
    progress.finish();
    io.say(&Msg::Done).await?;
    let results = match io.hear().await? {
        Msg::Result { files } => files,
        other => return Err(unexpected("result", &other)),
    };
    for res in results {
        let Some(Some(r)) = report_of.get(res.index).copied() else {
            continue;
        };
        let file = &mut report.files[r];
        if file.status == FileStatus::Skipped {
            continue;
        }
        if res.ok {
            file.status = FileStatus::Ok;
            file.error = None;
        } else {
            file.status = FileStatus::Failed;
            file.error = res.error.or(file.error.take());
        }
    }
    Ok(())
}

/// One chunk from the reading thread.
enum Chunk {
    /// `at`: where in the file the chunk begins.
    Data {
        bytes: Bytes,
        zstd: bool,
        raw: usize,
        at: u64,
    },
    /// The whole file's digest, after the last chunk.
    End(blake3::Hash),
    /// The file cannot be sent as offered.
    Fail(String),
}

/// Streams one file from `offset`. `Ok(Err(reason))`: the file failed (and was not all sent),
/// the session goes on; `Err`: the session is over.
async fn send_file<S: Link>(
    io: &mut Session<S>,
    source: &Source,
    offset: u64,
    compress: bool,
    progress: &Progress,
) -> Result<Result<(String, u64), String>, TransferError> {
    let (tx, mut rx) = mpsc::channel(4);
    let path = source.path.clone();
    let size = source.entry.size;
    let reader = tokio::task::spawn_blocking(move || read_file(&path, size, offset, compress, &tx));
    let mut moved = 0u64;
    let idle = io.idle;
    // On plain TCP the bytes go from the page cache to the socket (sendfile); the reading thread
    // still reads them, for the digest. A file changed meanwhile fails the receiver's check.
    let direct = match io.stream.get_ref().tcp() {
        Some(_) if !compress => File::open(&source.path).ok(),
        _ => None,
    };
    let outcome = loop {
        match rx.recv().await {
            Some(Chunk::Data {
                bytes,
                zstd,
                raw,
                at,
            }) => {
                let write = async {
                    match &direct {
                        Some(file) if !zstd => {
                            wire::write_data_head(&mut io.stream, raw).await?;
                            io.stream.flush().await.map_err(TransferError::Net)?;
                            let tcp = io.stream.get_ref().tcp().ok_or_else(|| {
                                TransferError::Protocol("no TCP socket for sendfile".into())
                            })?;
                            crate::net::sendfile::send_file_range(tcp, file, at, raw as u64)
                                .await
                                .map_err(|e| match e.kind() {
                                    std::io::ErrorKind::UnexpectedEof => {
                                        TransferError::Protocol(e.to_string())
                                    }
                                    _ => TransferError::Net(e),
                                })?;
                        }
                        _ => wire::write_data(&mut io.stream, &bytes, zstd).await?,
                    }
                    Ok::<_, TransferError>(())
                };
                tokio::time::timeout(idle, write)
                    .await
                    .map_err(|_| TransferError::Idle(idle))??;
                moved += raw as u64;
                progress.advance(raw as u64);
            }
            Some(Chunk::End(hash)) => break Ok((hash.to_hex().to_string(), moved)),
            Some(Chunk::Fail(reason)) => break Err(reason),
            None => break Err("the reading thread stopped".to_string()),
        }
    };
    drop(rx);
    let _ = reader.await;
    Ok(outcome)
}

/// Reads `size` bytes of `path`, hashing all of them and handing on those from `offset`
/// (compressed where that shrinks them; after eight chunks in a row that do not shrink, the
/// file is sent raw).
fn read_file(
    path: &std::path::Path,
    size: u64,
    offset: u64,
    compress: bool,
    tx: &mpsc::Sender<Chunk>,
) {
    let fail = |reason: String| {
        let _ = tx.blocking_send(Chunk::Fail(reason));
    };
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) => return fail(format!("{}: {e}", path.display())),
    };
    let mut hasher = blake3::Hasher::new();
    let mut pos = 0u64;
    let mut misses = 0;
    let mut compress = compress;
    while pos < size {
        // Chunks line up with `offset`, so none is larger than a frame.
        let boundary = if pos < offset { offset } else { size };
        let want = (boundary - pos).min(MAX_CHUNK as u64) as usize;
        // Into spare capacity (read_to_end does not zero it first).
        let mut buf = Vec::with_capacity(want);
        match (&mut file).take(want as u64).read_to_end(&mut buf) {
            Ok(n) if n == want => {}
            Ok(_) => {
                return fail(format!(
                    "{} shrank while it was being sent; send it again",
                    path.display()
                ))
            }
            Err(e) => return fail(format!("{}: {e}", path.display())),
        }
        hasher.update(&buf);
        let start = pos;
        pos += want as u64;
        if start < offset {
            continue;
        }
        let raw = Bytes::from(buf);
        let mut chunk = Chunk::Data {
            bytes: raw.clone(),
            zstd: false,
            raw: want,
            at: start,
        };
        if compress {
            match zstd::bulk::compress(&raw, 1) {
                Ok(z) if z.len() < want - want / 16 => {
                    misses = 0;
                    chunk = Chunk::Data {
                        bytes: Bytes::from(z),
                        zstd: true,
                        raw: want,
                        at: start,
                    };
                }
                _ => {
                    misses += 1;
                    compress = misses < 8;
                }
            }
        }
        if tx.blocking_send(chunk).is_err() {
            return;
        }
    }
    let _ = tx.blocking_send(Chunk::End(hasher.finalize()));
}

pub(crate) fn unexpected(wanted: &str, got: &Msg) -> TransferError {
    TransferError::Protocol(format!("expected {wanted}, got {got:?}"))
}
