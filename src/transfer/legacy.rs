//! The tutorial's file transfer, for its programs: the sender writes the file's md5 as 32 hex
//! ASCII bytes, then the file, then closes; the receiver reads the 32 bytes and then everything
//! until the close. No name, no size, no resume: the file is stored under one fixed name, and
//! kept only if its md5 matches (written to a temporary name first, fsynced and renamed, as in
//! sockit's own protocol).

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use md5::{Digest, Md5};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::recv::RecvOptions;
use super::report::{FileReport, FileStatus, Report};
use super::{names, TransferError};

/// Receives the tutorial's protocol; `first` are the 8 bytes already read.
pub async fn receive<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    first: [u8; 8],
    opts: &RecvOptions,
    report: &mut Report,
) -> Result<(), TransferError> {
    let mut digest = [0u8; 32];
    digest[..8].copy_from_slice(&first);
    let read = tokio::time::timeout(opts.idle, stream.read_exact(&mut digest[8..])).await;
    if !matches!(read, Ok(Ok(_))) || !digest.iter().all(u8::is_ascii_hexdigit) {
        return Err(TransferError::Protocol(
            "not a sockit sender, nor the tutorial's (an md5 hex digest, then the file)".into(),
        ));
    }
    let want = String::from_utf8_lossy(&digest).to_ascii_lowercase();
    let name = &opts.legacy_name;
    let final_path =
        names::target(&opts.dir, name).map_err(|e| TransferError::Usage(format!("{name}: {e}")))?;
    if fs::symlink_metadata(&final_path).is_ok() && !opts.overwrite {
        return Err(TransferError::Usage(format!(
            "{} is there (--overwrite replaces it)",
            final_path.display()
        )));
    }
    fs::create_dir_all(&opts.dir).map_err(|e| TransferError::file(&opts.dir, e))?;
    let partial = final_path.with_file_name(format!(".{name}.md5.sockit-part"));
    let err = |e| TransferError::file(&partial, e);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&partial)
        .map_err(err)?;
    let mut md5 = Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = match tokio::time::timeout(opts.idle, stream.read(&mut buf)).await {
            Err(_) => return Err(TransferError::Idle(opts.idle)),
            Ok(Err(e)) => return Err(TransferError::Net(e)),
            Ok(Ok(n)) => n,
        };
        if n == 0 {
            break;
        }
        md5.update(&buf[..n]);
        // Small writes to a local file; a blocking thread per chunk would cost more than it saves
        // on this protocol, whose senders are tutorial scripts.
        tokio::task::block_in_place(|| file.write_all(&buf[..n])).map_err(err)?;
        total += n as u64;
    }
    let got = hex::encode(md5.finalize());
    let mut entry = FileReport {
        moved: total,
        ..FileReport::new(name.clone(), total, FileStatus::Failed)
    };
    if got != want {
        drop(file);
        let _ = fs::remove_file(&partial);
        let what = format!("md5 mismatch: the sender said {want}, the data is {got}; not kept");
        tracing::error!("{what}");
        entry.error = Some(what);
        report.files.push(entry);
        return Ok(());
    }
    tokio::task::block_in_place(|| {
        file.sync_all()?;
        drop(file);
        fs::rename(&partial, &final_path)?;
        if let Some(dir) = final_path.parent() {
            fs::File::open(dir)?.sync_all()?;
        }
        Ok::<_, std::io::Error>(())
    })
    .map_err(|e| TransferError::file(&final_path, e))?;
    entry.status = FileStatus::Ok;
    report.files.push(entry);
    Ok(())
}

/// Sends `path` the tutorial's way to a tutorial receiver on `stream`.
pub async fn send<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    path: &Path,
    report: &mut Report,
) -> Result<(), TransferError> {
    let err = |e| TransferError::file(path, e);
    // md5 first: the digest goes before the data, so the file is read twice.
    let data_len = fs::metadata(path).map_err(err)?.len();
    let owned = path.to_path_buf();
    let digest = tokio::task::spawn_blocking(move || {
        let mut f = fs::File::open(&owned)?;
        let mut md5 = Md5::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = std::io::Read::read(&mut f, &mut buf)?;
            if n == 0 {
                break;
            }
            md5.update(&buf[..n]);
        }
        Ok::<_, std::io::Error>(hex::encode(md5.finalize()))
    })
    .await
    .map_err(|e| TransferError::Protocol(e.to_string()))?
    .map_err(err)?;
    stream
        .write_all(digest.as_bytes())
        .await
        .map_err(TransferError::Net)?;
    let mut file = tokio::fs::File::open(path).await.map_err(err)?;
    let sent = tokio::io::copy(&mut file, stream)
        .await
        .map_err(TransferError::Net)?;
    stream.shutdown().await.map_err(TransferError::Net)?;
    report.files.push(FileReport {
        moved: sent,
        ..FileReport::new(path.display().to_string(), data_len, FileStatus::Ok)
    });
    Ok(())
}
