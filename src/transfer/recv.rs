//! The receiving side of a session: checks the sender's hello (and password), turns the offer
//! into a plan (each name checked; a file already there is skipped, an existing different one
//! refused unless `overwrite`, a partial one resumed), then writes each file under a temporary
//! name while hashing it on a blocking thread, and only when the digest matches the sender's
//! fsyncs, sets its mode and time and renames it into place. Partials of a broken session are
//! kept for the next one; a partial whose data did not verify is removed.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, Mutex};

use super::auth::Exchange;
use super::progress::Progress;
use super::report::{FileReport, FileStatus, Report, Role};
use super::send::unexpected;
use super::session::Session;
use super::wire::{self, Action, Entry, EntryKind, FileResult, Frame, Msg, Planned};
use super::{
    legacy, names, TransferError, DEFAULT_HELLO, DEFAULT_IDLE, DEFAULT_LEGACY_NAME,
    DEFAULT_MAX_FILES,
};

/// How a receiver behaves.
#[derive(Debug, Clone)]
pub struct RecvOptions {
    /// Everything lands below this folder.
    pub dir: PathBuf,
    /// The shared secret the sender must know too.
    pub password: Option<String>,
    /// Replace final files that exist and differ.
    pub overwrite: bool,
    /// Give up when the sender says nothing for this long.
    pub idle: Duration,
    /// A connection must begin its session (the header) within this.
    pub hello_timeout: Duration,
    /// Most entries one offer may hold.
    pub max_files: usize,
    /// Accept the tutorial's md5 protocol (on connections this side accepted).
    pub legacy: bool,
    /// The name a tutorial sender's file is stored under.
    pub legacy_name: String,
    /// Progress bars on stderr.
    pub progress: bool,
}

impl Default for RecvOptions {
    fn default() -> Self {
        RecvOptions {
            dir: PathBuf::from("."),
            password: None,
            overwrite: false,
            idle: DEFAULT_IDLE,
            hello_timeout: DEFAULT_HELLO,
            max_files: DEFAULT_MAX_FILES,
            legacy: true,
            legacy_name: DEFAULT_LEGACY_NAME.into(),
            progress: false,
        }
    }
}

/// Receives one session from `stream` (connected, TLS negotiated) into `opts.dir` and reports.
pub async fn receive<S>(stream: S, opts: &RecvOptions) -> Report
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    receive_inner(stream, opts, None).await
}

/// As [`receive`], for a receiver that takes many connections at once (`recv -k`): each says
/// who it is within `opts.hello_timeout` on its own, and only then waits for `turn`, so sessions
/// write one after another while a crowd of silent connections costs one timeout, not one each.
pub async fn receive_in_turn<S>(stream: S, opts: &RecvOptions, turn: &Mutex<()>) -> Report
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    receive_inner(stream, opts, Some(turn)).await
}

async fn receive_inner<S>(stream: S, opts: &RecvOptions, turn: Option<&Mutex<()>>) -> Report
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let start = Instant::now();
    let mut report = Report::new(Role::Recv);
    let mut io = Session::new(stream, 256 << 10, 64 << 10, opts.idle);
    let hello = opts.hello_timeout;
    let magic = match tokio::time::timeout(hello, wire::read_magic(&mut io.stream)).await {
        Err(_) => Err(TransferError::Idle(hello)),
        Ok(r) => r,
    };
    let _turn = match (&magic, turn) {
        (Ok(_), Some(turn)) => Some(turn.lock().await),
        _ => None,
    };
    let result = match magic {
        Err(e) => Err(e),
        Ok(Err(first)) if opts.legacy => {
            legacy::receive(&mut io.stream, first, opts, &mut report).await
        }
        Ok(Err(_)) => Err(TransferError::Protocol(
            "the other side is not a sockit sender".into(),
        )),
        Ok(Ok(())) => run(&mut io, opts, &mut report).await,
    };
    if let Err(e) = result {
        if !matches!(
            e,
            TransferError::Peer(_) | TransferError::Net(_) | TransferError::Cut(_)
        ) {
            let _ = io
                .say(&Msg::Error {
                    message: e.to_string(),
                })
                .await;
        }
        report.error = Some(e.to_string());
    }
    report.elapsed = start.elapsed();
    report
}

/// What the plan decided for one entry of the offer.
enum Slot {
    Dir { path: PathBuf },
    File { report: usize, target: Target },
    Nothing,
}

/// Where a file being received goes.
struct Target {
    final_path: PathBuf,
    partial: PathBuf,
    offset: u64,
}

async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut Session<S>,
    opts: &RecvOptions,
    report: &mut Report,
) -> Result<(), TransferError> {
    let (auth, spake, version) = match io.hear().await? {
        Msg::Hello {
            version,
            auth,
            spake,
            ..
        } => (auth, spake, version),
        other => return Err(unexpected("hello", &other)),
    };
    if version != wire::VERSION {
        return Err(TransferError::Protocol(format!(
            "the sender speaks version {version}, this receiver {}",
            wire::VERSION
        )));
    }
    match (&opts.password, auth, spake) {
        (None, false, _) => {
            io.say(&Msg::Welcome {
                version: wire::VERSION,
                auth: false,
                spake: None,
            })
            .await?;
        }
        (Some(password), true, Some(theirs)) => {
            let exchange = Exchange::receiver(password);
            let ours = exchange.message();
            let session = exchange.finish(&theirs).map_err(TransferError::Auth)?;
            io.say(&Msg::Welcome {
                version: wire::VERSION,
                auth: true,
                spake: Some(ours),
            })
            .await?;
            match io.hear().await? {
                Msg::Confirm { mac } if session.check(&mac, true) => {}
                Msg::Confirm { .. } => {
                    return Err(TransferError::Auth(
                        "wrong password: the sender does not know it".into(),
                    ))
                }
                other => return Err(unexpected("confirm", &other)),
            }
            io.say(&Msg::Confirm {
                mac: session.receiver_proof(),
            })
            .await?;
        }
        (Some(_), _, _) => {
            return Err(TransferError::Auth(
                "this receiver needs a password (--password or SOCKIT_PASSWORD)".into(),
            ))
        }
        (None, true, _) => {
            return Err(TransferError::Auth(
                "the sender uses a password and this receiver has none".into(),
            ))
        }
    }

    let entries = match io.hear().await? {
        Msg::Offer { entries } => entries,
        other => return Err(unexpected("offer", &other)),
    };
    if entries.len() > opts.max_files {
        return Err(TransferError::Protocol(format!(
            "an offer of {} entries is over the limit of {}",
            entries.len(),
            opts.max_files
        )));
    }
    fs::create_dir_all(&opts.dir).map_err(|e| TransferError::file(&opts.dir, e))?;
    let (slots, plan) = make_plan(&entries, opts, report);
    io.say(&Msg::Plan { files: plan }).await?;

    let total: u64 = slots
        .iter()
        .zip(&entries)
        .filter(|(s, _)| matches!(s, Slot::File { .. }))
        .map(|(_, e)| e.size)
        .sum();
    let mut progress = Progress::new(opts.progress, total);
    let mut results = Vec::new();
    loop {
        match io.hear().await? {
            Msg::File { index, offset } => {
                let Some(Slot::File { report: r, target }) = slots.get(index) else {
                    return Err(TransferError::Protocol(format!(
                        "file data for entry {index}, which the plan did not ask for"
                    )));
                };
                if offset != target.offset {
                    return Err(TransferError::Protocol(format!(
                        "entry {index} sent from {offset}, asked from {}",
                        target.offset
                    )));
                }
                let entry = &entries[index];
                progress.start_file(&entry.path, entry.size, offset);
                let outcome = receive_file(io, entry, target, &opts.dir, &progress).await;
                let file = &mut report.files[*r];
                match outcome {
                    Ok(Received::Verified { digest, moved }) => {
                        file.status = FileStatus::Ok;
                        file.blake3 = Some(digest);
                        file.moved = moved;
                        file.error = None;
                        results.push(FileResult {
                            index,
                            ok: true,
                            error: None,
                        });
                    }
                    Ok(Received::Failed(reason)) => {
                        file.error = Some(reason.clone());
                        results.push(FileResult {
                            index,
                            ok: false,
                            error: Some(reason),
                        });
                    }
                    Err(e) => {
                        file.error = Some(e.to_string());
                        return Err(e);
                    }
                }
            }
            Msg::Done => break,
            other => return Err(unexpected("file or done", &other)),
        }
    }
    progress.finish();
    // Folders last, deepest first: writing inside a folder changes its time.
    for (slot, entry) in slots.iter().zip(&entries).rev() {
        if let Slot::Dir { path } = slot {
            let _ =
                fs::set_permissions(path, fs::Permissions::from_mode(entry.mode & 0o777 | 0o700));
            if let Ok(dir) = File::open(path) {
                let _ = dir.set_modified(mtime_of(entry));
            }
        }
    }
    for f in report.files.iter_mut() {
        if f.status == FileStatus::Failed && f.error.is_none() {
            f.error = Some("not sent".into());
        }
    }
    io.say(&Msg::Result { files: results }).await
}

/// Decides per entry: folders are made now, files get a target (or skip / refuse).
fn make_plan(
    entries: &[Entry],
    opts: &RecvOptions,
    report: &mut Report,
) -> (Vec<Slot>, Vec<Planned>) {
    let mut slots = Vec::with_capacity(entries.len());
    let mut plan = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        let refuse = |report: &mut Report, reason: String| {
            report.files.push(
                FileReport::new(&entry.path, entry.size, FileStatus::Failed)
                    .with_error(format!("refused: {reason}")),
            );
            tracing::warn!(name = %entry.path.escape_debug(), "refused: {reason}");
            reason
        };
        match entry.kind {
            EntryKind::Dir => match names::create_dirs(&opts.dir, &entry.path) {
                Ok(path) => slots.push(Slot::Dir { path }),
                Err(e) => {
                    refuse(report, e.to_string());
                    slots.push(Slot::Nothing);
                }
            },
            EntryKind::File => match plan_file(entry, opts) {
                Ok(Some(target)) => {
                    plan.push(Planned {
                        index,
                        action: Action::Send {
                            offset: target.offset,
                        },
                    });
                    report
                        .files
                        .push(FileReport::new(&entry.path, entry.size, FileStatus::Failed));
                    slots.push(Slot::File {
                        report: report.files.len() - 1,
                        target,
                    });
                }
                Ok(None) => {
                    plan.push(Planned {
                        index,
                        action: Action::Skip,
                    });
                    report.files.push(FileReport::new(
                        &entry.path,
                        entry.size,
                        FileStatus::Skipped,
                    ));
                    slots.push(Slot::Nothing);
                }
                Err(reason) => {
                    let reason = refuse(report, reason);
                    plan.push(Planned {
                        index,
                        action: Action::Refuse { reason },
                    });
                    slots.push(Slot::Nothing);
                }
            },
        }
    }
    (slots, plan)
}

/// Where a file goes and from which byte; `None` when it is already there.
fn plan_file(entry: &Entry, opts: &RecvOptions) -> Result<Option<Target>, String> {
    let final_path = names::target(&opts.dir, &entry.path).map_err(|e| e.to_string())?;
    match fs::symlink_metadata(&final_path) {
        Ok(meta) if meta.is_dir() => return Err("a folder of that name is there".into()),
        Ok(meta) => {
            let same_time = meta.modified().ok() == Some(mtime_of(entry));
            if meta.is_file() && meta.len() == entry.size && same_time {
                return Ok(None);
            }
            if !opts.overwrite {
                return Err(
                    "a different file of that name is there (--overwrite replaces it)".into(),
                );
            }
        }
        Err(_) => {}
    }
    let partial = partial_path(&final_path, entry);
    remove_stale_partials(&final_path, &partial);
    let offset = match fs::symlink_metadata(&partial) {
        Ok(meta) if meta.is_file() && meta.len() <= entry.size => meta.len(),
        Ok(_) => {
            let _ = fs::remove_file(&partial);
            0
        }
        Err(_) => 0,
    };
    Ok(Some(Target {
        final_path,
        partial,
        offset,
    }))
}

/// `.NAME.<fingerprint>.sockit-part` beside the final name; the fingerprint (of the name, size
/// and time offered) changes when the source does, so a changed file starts over instead of
/// being spliced onto an old partial.
fn partial_path(final_path: &Path, entry: &Entry) -> PathBuf {
    let mut h = blake3::Hasher::new();
    h.update(entry.path.as_bytes());
    h.update(&entry.size.to_be_bytes());
    h.update(&entry.mtime.to_be_bytes());
    h.update(&entry.mtime_nsec.to_be_bytes());
    let fp = &h.finalize().to_hex()[..16];
    let name = final_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Room for the dot, the fingerprint and the suffix within NAME_MAX.
    let mut cut = name.len().min(200);
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    final_path.with_file_name(format!(".{}.{fp}.sockit-part", &name[..cut]))
}

fn remove_stale_partials(final_path: &Path, keep: &Path) {
    let (Some(dir), Some(name)) = (final_path.parent(), final_path.file_name()) else {
        return;
    };
    let prefix = format!(".{}.", name.to_string_lossy());
    let Ok(list) = fs::read_dir(dir) else { return };
    for item in list.flatten() {
        let n = item.file_name();
        let n = n.to_string_lossy();
        if n.starts_with(&prefix) && n.ends_with(".sockit-part") && item.path() != keep {
            let _ = fs::remove_file(item.path());
        }
    }
}

fn mtime_of(entry: &Entry) -> SystemTime {
    let nanos = Duration::new(0, entry.mtime_nsec.min(999_999_999));
    if entry.mtime >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs(entry.mtime.unsigned_abs()) + nanos
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_secs(entry.mtime.unsigned_abs()) + nanos
    }
}

enum Received {
    Verified {
        digest: String,
        moved: u64,
    },
    /// This file failed; the session goes on.
    Failed(String),
}

/// What the writing thread is told.
enum ToWriter {
    Data(Bytes),
    /// All data is in; the sender's digest.
    End(blake3::Hash),
}

/// How the writing thread ended.
enum Written {
    Verified(blake3::Hash),
    Mismatch,
}

async fn receive_file<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut Session<S>,
    entry: &Entry,
    target: &Target,
    root: &Path,
    progress: &Progress,
) -> Result<Received, TransferError> {
    // Parent folders of a file in a folder the offer did not list.
    if let Some((parent, _)) = entry.path.rsplit_once('/') {
        names::create_dirs(root, parent)
            .map_err(|e| TransferError::Protocol(format!("{}: {e}", entry.path.escape_debug())))?;
    }
    let (tx, rx) = mpsc::channel(8);
    let partial = target.partial.clone();
    let final_path = target.final_path.clone();
    let (offset, mode, mtime) = (target.offset, entry.mode, mtime_of(entry));
    let writer = tokio::task::spawn_blocking(move || {
        write_file(&partial, &final_path, offset, mode, mtime, rx)
    });
    let expected = entry.size - target.offset;
    let mut moved = 0u64;
    let outcome = loop {
        let frame = match io.frame().await {
            Ok(f) => f,
            Err(e) => break Err(e),
        };
        match frame {
            Frame::Data(bytes) => {
                moved += bytes.len() as u64;
                if moved > expected {
                    break Err(TransferError::Protocol(format!(
                        "more data for {} than the {} bytes announced",
                        entry.path.escape_debug(),
                        entry.size
                    )));
                }
                progress.advance(bytes.len() as u64);
                if tx.send(ToWriter::Data(bytes)).await.is_err() {
                    // The writer failed (disk full?): its error says why.
                    break Ok(Step::WriterGone);
                }
            }
            Frame::Control(Msg::End { blake3: hex, .. }) => {
                if moved < expected {
                    break Err(TransferError::Protocol(format!(
                        "{} ended after {} of the {} bytes announced",
                        entry.path.escape_debug(),
                        target.offset + moved,
                        entry.size
                    )));
                }
                let Ok(digest) = blake3::Hash::from_hex(&hex) else {
                    break Err(TransferError::Protocol("bad digest".into()));
                };
                let _ = tx.send(ToWriter::End(digest)).await;
                break Ok(Step::End);
            }
            Frame::Control(Msg::Abort { reason, .. }) => break Ok(Step::Aborted(reason)),
            Frame::Control(other) => break Err(unexpected("file data or end", &other)),
        }
    };
    drop(tx);
    let written = writer
        .await
        .map_err(|e| TransferError::Protocol(format!("writer thread: {e}")))?;
    match (outcome, written) {
        (Ok(Step::End), Ok(Written::Verified(hash))) => Ok(Received::Verified {
            digest: hash.to_hex().to_string(),
            moved,
        }),
        (Ok(Step::End), Ok(Written::Mismatch)) => {
            let what = format!(
                "{}: the data does not match the sender's digest (damaged in flight); not kept",
                entry.path.escape_debug()
            );
            tracing::error!("{what}");
            Ok(Received::Failed(what))
        }
        // The sender gave up on this file (it changed or could not be read); the partial stays.
        (Ok(Step::Aborted(reason)), _) => Ok(Received::Failed(format!("the sender: {reason}"))),
        (_, Err(e)) | (Err(e), _) => Err(e),
        (Ok(Step::WriterGone), Ok(_)) => Err(TransferError::Protocol("the writer stopped".into())),
    }
}

/// How the data of one file ended on the wire.
enum Step {
    End,
    Aborted(String),
    WriterGone,
}

/// On a blocking thread: hashes what the partial already holds, appends the data handed over
/// while hashing it, and at the end either renames a verified file into place (fsynced, its mode
/// and time set, the folder fsynced) or removes a partial whose digest is wrong. A session that
/// ends without an `End` leaves the partial as it is, for resume.
fn write_file(
    partial: &Path,
    final_path: &Path,
    offset: u64,
    mode: u32,
    mtime: SystemTime,
    mut rx: mpsc::Receiver<ToWriter>,
) -> Result<Written, TransferError> {
    let err = |e| TransferError::file(partial, e);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(partial)
        .map_err(err)?;
    file.set_len(offset).map_err(err)?;
    let mut hasher = blake3::Hasher::new();
    if offset > 0 {
        let mut buf = vec![0u8; 1 << 20];
        let mut left = offset;
        while left > 0 {
            let n = file
                .read(&mut buf[..left.min(1 << 20) as usize])
                .map_err(err)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            left -= n as u64;
        }
    }
    file.seek(SeekFrom::Start(offset)).map_err(err)?;
    let expected = loop {
        match rx.blocking_recv() {
            Some(ToWriter::Data(bytes)) => {
                hasher.update(&bytes);
                if let Err(e) = file.write_all(&bytes) {
                    // What was written stays for resume.
                    let _ = file.sync_data();
                    return Err(space_error(partial, e));
                }
            }
            Some(ToWriter::End(digest)) => break digest,
            None => {
                let _ = file.sync_data();
                return Err(TransferError::Cut(format!(
                    "the transfer stopped; {} keeps what arrived",
                    partial.display()
                )));
            }
        }
    };
    if hasher.finalize() != expected {
        drop(file);
        let _ = fs::remove_file(partial);
        return Ok(Written::Mismatch);
    }
    file.sync_all().map_err(err)?;
    file.set_permissions(fs::Permissions::from_mode(mode & 0o777))
        .map_err(err)?;
    file.set_modified(mtime).map_err(err)?;
    drop(file);
    fs::rename(partial, final_path).map_err(|e| TransferError::file(final_path, e))?;
    if let Some(dir) = final_path.parent() {
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(Written::Verified(expected))
}

/// A write error, said plainly when it is a full disk (the partial is kept).
fn space_error(partial: &Path, e: std::io::Error) -> TransferError {
    if e.raw_os_error() == Some(libc::ENOSPC) || e.raw_os_error() == Some(libc::EDQUOT) {
        TransferError::file(
            partial,
            std::io::Error::new(
                e.kind(),
                "no space left on the device; the partial file is kept for resume",
            ),
        )
    } else {
        TransferError::file(partial, e)
    }
}
