//! The receiver's guard on names from the network: a sender's path becomes a place below the
//! destination folder, or a refusal. Names are relative, `/`-separated, never absolute, never
//! `..`, `.` or empty components, never NUL, backslashes or drive letters; and no component may
//! be (or pass through) a symlink that already exists in the destination, so nothing is ever
//! written outside it. The receiver never creates symlinks itself, so checking the components
//! it walks (lstat, one at a time) is enough against the remote side.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Most bytes in a name, and in one component (Linux's PATH_MAX and NAME_MAX).
pub const MAX_NAME: usize = 4096;
pub const MAX_COMPONENT: usize = 255;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadName {
    #[error("empty name")]
    Empty,
    #[error("name too long")]
    TooLong,
    #[error("absolute name")]
    Absolute,
    #[error("name with a `..`, `.` or empty component")]
    Dots,
    #[error("name with a NUL, a backslash or a control character")]
    BadChar,
    #[error("name with a drive letter")]
    Drive,
    #[error("name through a symlink")]
    Symlink,
    #[error("name through something that is not a folder")]
    NotDir,
}

/// The components of a sender's `name`, checked.
pub fn components(name: &str) -> Result<Vec<&str>, BadName> {
    if name.is_empty() {
        return Err(BadName::Empty);
    }
    if name.len() > MAX_NAME {
        return Err(BadName::TooLong);
    }
    if name.starts_with('/') {
        return Err(BadName::Absolute);
    }
    if name
        .chars()
        .any(|c| c == '\0' || c == '\\' || c.is_control())
    {
        return Err(BadName::BadChar);
    }
    let parts: Vec<&str> = name.split('/').collect();
    if let Some(first) = parts.first() {
        // `C:`, `C:x`: a Windows drive, meaningless here and dangerous where it is not.
        let b = first.as_bytes();
        if b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':' {
            return Err(BadName::Drive);
        }
    }
    for part in &parts {
        if part.is_empty() || *part == "." || *part == ".." {
            return Err(BadName::Dots);
        }
        if part.len() > MAX_COMPONENT {
            return Err(BadName::TooLong);
        }
    }
    Ok(parts)
}

/// Where `name` lands below `root`, after checking that every folder on the way that already
/// exists is a real folder (not a symlink), and that the last component is not a symlink or a
/// folder. Nothing is created.
pub fn target(root: &Path, name: &str) -> Result<PathBuf, NameError> {
    let parts = components(name)?;
    let mut path = root.to_path_buf();
    let last = parts.len() - 1;
    for (i, part) in parts.iter().enumerate() {
        path.push(part);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_symlink() => return Err(BadName::Symlink.into()),
            Ok(meta) if i < last && !meta.is_dir() => return Err(BadName::NotDir.into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(NameError::Io(e)),
        }
    }
    Ok(path)
}

/// Creates the folders of `name` below `root` (refusing symlinks on the way, as [`target`]),
/// with `0700` until their own modes are set at the end.
pub fn create_dirs(root: &Path, name: &str) -> Result<PathBuf, NameError> {
    let parts = components(name)?;
    let mut path = root.to_path_buf();
    for part in parts {
        path.push(part);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_symlink() => return Err(BadName::Symlink.into()),
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Err(BadName::NotDir.into()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                use std::os::unix::fs::DirBuilderExt;
                match fs::DirBuilder::new().mode(0o700).create(&path) {
                    Ok(()) => {}
                    // Made meanwhile by another session: checked again on the next component.
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(NameError::Io(e)),
                }
            }
            Err(e) => return Err(NameError::Io(e)),
        }
    }
    Ok(path)
}

/// A refused name or a file system error on the way.
#[derive(Debug, thiserror::Error)]
pub enum NameError {
    #[error(transparent)]
    Bad(#[from] BadName),
    #[error("{0}")]
    Io(io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_are_refused() {
        for bad in [
            "",
            "/etc/passwd",
            "..",
            "../x",
            "a/../../x",
            "a/./b",
            "a//b",
            "a/",
            "a\\b",
            "C:x",
            "c:",
            "a\0b",
            "a\nb",
        ] {
            assert!(components(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            components("a/b c/d.txt").unwrap(),
            vec!["a", "b c", "d.txt"]
        );
        assert!(components(&"x".repeat(256)).is_err());
        assert!(components("..a/b..").is_ok());
    }

    #[test]
    fn symlinks_in_the_destination_are_not_followed() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("link")).unwrap();
        std::fs::write(root.path().join("file"), b"x").unwrap();
        assert!(matches!(
            target(root.path(), "link/x"),
            Err(NameError::Bad(BadName::Symlink))
        ));
        assert!(matches!(
            create_dirs(root.path(), "link/sub"),
            Err(NameError::Bad(BadName::Symlink))
        ));
        assert!(matches!(
            target(root.path(), "file/x"),
            Err(NameError::Bad(BadName::NotDir))
        ));
        assert_eq!(
            target(root.path(), "new/x").unwrap(),
            root.path().join("new/x")
        );
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    }
}
