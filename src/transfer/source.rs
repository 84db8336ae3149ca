//! What the sender offers: its PATH arguments walked into entries. A file is offered under its
//! own name, a folder under its name with everything below it (empty folders included), in a
//! stable order (folders before what they hold, names sorted). Symlinks and special files are
//! left out with a warning: following a link could send what the user did not point at.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::wire::{Entry, EntryKind};
use super::TransferError;

/// One entry of the offer and where its bytes are read from.
#[derive(Debug, Clone)]
pub struct Source {
    pub entry: Entry,
    pub path: PathBuf,
}

/// Walks `paths` into the offer.
pub fn collect(paths: &[PathBuf]) -> Result<Vec<Source>, TransferError> {
    let mut out = Vec::new();
    let mut names = std::collections::HashSet::new();
    for path in paths {
        let meta = fs::symlink_metadata(path).map_err(|e| TransferError::file(path, e))?;
        let name = base_name(path)?;
        if !names.insert(name.clone()) {
            return Err(TransferError::Usage(format!(
                "two of the paths would arrive as {name}; send them in separate runs"
            )));
        }
        walk(path, &name, &meta, &mut out)?;
    }
    Ok(out)
}

/// The name a PATH argument arrives under: its last component (`.` and `..` resolved first).
fn base_name(path: &Path) -> Result<String, TransferError> {
    let full = if path.file_name().is_some() {
        path.to_path_buf()
    } else {
        path.canonicalize()
            .map_err(|e| TransferError::file(path, e))?
    };
    let name = full.file_name().ok_or_else(|| {
        TransferError::Usage(format!("{}: has no name to send it under", path.display()))
    })?;
    name.to_str()
        .map(str::to_string)
        .ok_or_else(|| TransferError::Usage(format!("{}: the name is not UTF-8", path.display())))
}

fn walk(
    path: &Path,
    name: &str,
    meta: &fs::Metadata,
    out: &mut Vec<Source>,
) -> Result<(), TransferError> {
    let kind = if meta.is_file() {
        EntryKind::File
    } else if meta.is_dir() {
        EntryKind::Dir
    } else {
        tracing::warn!(path = %path.display(), "not a file or folder (a symlink?); left out");
        return Ok(());
    };
    out.push(Source {
        entry: Entry {
            path: name.to_string(),
            kind,
            size: if kind == EntryKind::File {
                meta.len()
            } else {
                0
            },
            mode: meta.permissions().mode() & 0o7777,
            mtime: meta.mtime(),
            mtime_nsec: u32::try_from(meta.mtime_nsec()).unwrap_or(0),
        },
        path: path.to_path_buf(),
    });
    if kind == EntryKind::Dir {
        let mut children: Vec<_> = fs::read_dir(path)
            .map_err(|e| TransferError::file(path, e))?
            .collect::<Result<_, _>>()
            .map_err(|e| TransferError::file(path, e))?;
        children.sort_by_key(|c| c.file_name());
        for child in children {
            let child_path = child.path();
            let Some(child_name) = child.file_name().to_str().map(str::to_string) else {
                tracing::warn!(path = %child_path.display(), "name is not UTF-8; left out");
                continue;
            };
            let meta = fs::symlink_metadata(&child_path)
                .map_err(|e| TransferError::file(&child_path, e))?;
            walk(&child_path, &format!("{name}/{child_name}"), &meta, out)?;
        }
    }
    Ok(())
}
