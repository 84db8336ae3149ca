//! From a request target to a file under the served folder, and never outside it.
//!
//! Two steps, each enough on its own against `..`:
//! 1. [`decode`] turns the percent-encoded path into segments, decoding exactly once (so `%252e`
//!    is a file literally named `%2e`, never `.`), and refuses what has no business in a name:
//!    `..` segments, invalid UTF-8 (overlong encodings of `.` and `/` such as `%c0%ae` are
//!    invalid UTF-8), NUL and control characters, backslashes (a separator on Windows) and
//!    Windows drive letters. Empty and `.` segments are dropped, so `//etc/passwd` is
//!    `etc/passwd` under the root.
//! 2. [`resolve`] joins the segments to the root and canonicalizes the result: with symlinks
//!    resolved, it must still lie under the (canonical) root, unless `--follow-symlinks` says
//!    symlinks may lead anywhere. Dotfiles are refused here too unless `--hidden`, both as asked
//!    for and as reached through a symlink.
//!
//! The common case takes a shortcut ([`Policy::open_direct`]): one `openat2(2)` below the root's
//! descriptor with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS` opens the file if no symlink is on the
//! way, and then the path asked for *is* the canonical path, so the checks of step 2 hold
//! without `realpath(3)` (one `readlink` per component of the root and the path). Any symlink on
//! the way, an old kernel or anything unexpected falls back to step 2.

use std::fs::{File, Metadata};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use percent_encoding::percent_decode_str;

/// Why a path is not served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The path is malformed or tries to climb out: 400.
    Bad(&'static str),
    /// Nothing (visible) is there: 404.
    NotFound,
    /// A symlink leads out of the folder: 403.
    Outside,
}

/// A request path decoded into safe segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelPath {
    pub segments: Vec<String>,
    /// The request ended with `/` (a directory was asked for).
    pub trailing_slash: bool,
}

impl RelPath {
    /// Whether any segment is a dotfile name.
    pub fn has_hidden(&self) -> bool {
        self.segments.iter().any(|s| s.starts_with('.'))
    }
}

/// Decodes the raw (percent-encoded) path of a request.
pub fn decode(raw: &str) -> Result<RelPath, Refused> {
    if raw.contains('\\') {
        return Err(Refused::Bad("backslash in path"));
    }
    let bytes: Vec<u8> = percent_decode_str(raw).collect();
    let text = String::from_utf8(bytes).map_err(|_| Refused::Bad("path is not UTF-8"))?;
    if text.chars().any(|c| c == '\0' || c.is_control()) {
        return Err(Refused::Bad("control character in path"));
    }
    if text.contains('\\') {
        return Err(Refused::Bad("backslash in path"));
    }
    let mut segments = Vec::new();
    for seg in text.split('/') {
        match seg {
            "" | "." => continue,
            ".." => return Err(Refused::Bad("'..' in path")),
            _ => {}
        }
        let b = seg.as_bytes();
        if b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':' {
            return Err(Refused::Bad("drive letter in path"));
        }
        segments.push(seg.to_string());
    }
    Ok(RelPath {
        trailing_slash: text.ends_with('/') && !segments.is_empty(),
        segments,
    })
}

/// What a path leads to.
#[derive(Debug)]
pub struct Found {
    /// The path to open (the canonical one).
    pub path: PathBuf,
    pub meta: Metadata,
    /// The file, already open, when [`Policy::open_direct`] found it.
    pub file: Option<File>,
}

/// What [`Policy::open_direct`] found.
#[derive(Debug)]
pub enum Direct {
    /// Opened, with no symlink on the way: the path asked for is canonical.
    Opened(File, Metadata),
    /// Nothing there.
    NotFound,
    /// A symlink on the way, or the shortcut is not available: resolve the slow way.
    Fallback,
}

/// Symlink and dotfile policy of a served folder.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The folder served, canonical.
    pub root: PathBuf,
    pub follow_symlinks: bool,
    pub hidden: bool,
    /// The root, opened (`O_PATH`), for [`Policy::open_direct`]; `None` where `openat2(2)` does
    /// not work (not Linux, a kernel before 5.6, a seccomp filter that refuses it).
    root_dir: Option<Arc<File>>,
}

impl Policy {
    /// The policy for the (canonical) folder `root`; probes whether the `openat2(2)` shortcut
    /// works here.
    pub fn new(root: PathBuf, follow_symlinks: bool, hidden: bool) -> Policy {
        let root_dir = sys::open_root(&root)
            .filter(|dir| sys::open_beneath(dir, ".").is_ok())
            .map(Arc::new);
        Policy {
            root,
            follow_symlinks,
            hidden,
            root_dir,
        }
    }

    /// Opens `rel` (a `/`-separated path below the root, already decoded and checked: no `..`,
    /// no empty or `.` segments) if no symlink lies on the way. Opened non-blocking, so that a
    /// FIFO does not wait for a writer (it is refused by its type right after); regular files
    /// and folders ignore the flag.
    pub fn open_direct(&self, rel: &str) -> Direct {
        let Some(dir) = &self.root_dir else {
            return Direct::Fallback;
        };
        let rel = if rel.is_empty() { "." } else { rel };
        match sys::open_beneath(dir, rel) {
            Ok(file) => match file.metadata() {
                Ok(meta) => Direct::Opened(file, meta),
                Err(_) => Direct::Fallback,
            },
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {
                Direct::NotFound
            }
            // ELOOP: a symlink on the way (RESOLVE_NO_SYMLINKS); EACCES and the rest: let the
            // slow path decide, and say it in its own words.
            Err(_) => Direct::Fallback,
        }
    }

    /// Whether `canonical` (a path with symlinks resolved) may be served.
    pub fn admits(&self, canonical: &Path) -> Result<(), Refused> {
        match canonical.strip_prefix(&self.root) {
            Ok(rel) => {
                if !self.hidden && rel.components().any(is_hidden) {
                    return Err(Refused::NotFound);
                }
                Ok(())
            }
            Err(_) if self.follow_symlinks => Ok(()),
            Err(_) => Err(Refused::Outside),
        }
    }
}

fn is_hidden(c: Component<'_>) -> bool {
    matches!(c, Component::Normal(n) if n.as_encoded_bytes().first() == Some(&b'.'))
}

/// Finds `rel` under the root (file system calls: a few microseconds for what is cached, but
/// they block).
pub fn resolve(policy: &Policy, rel: &RelPath) -> Result<Found, Refused> {
    if !policy.hidden && rel.has_hidden() {
        return Err(Refused::NotFound);
    }
    let mut path = policy.root.clone();
    path.extend(&rel.segments);
    match policy.open_direct(&rel.segments.join("/")) {
        Direct::Opened(file, meta) => {
            if !meta.is_file() && !meta.is_dir() {
                return Err(Refused::NotFound);
            }
            return Ok(Found {
                path,
                meta,
                file: Some(file),
            });
        }
        Direct::NotFound => return Err(Refused::NotFound),
        Direct::Fallback => {}
    }
    let canonical = std::fs::canonicalize(&path).map_err(|_| Refused::NotFound)?;
    policy.admits(&canonical)?;
    let meta = std::fs::metadata(&canonical).map_err(|_| Refused::NotFound)?;
    if !meta.is_file() && !meta.is_dir() {
        // Devices, FIFOs and sockets: reading a FIFO would block a thread for ever.
        return Err(Refused::NotFound);
    }
    Ok(Found {
        path: canonical,
        meta,
        file: None,
    })
}

/// `openat2(2)`, where there is one.
#[cfg(target_os = "linux")]
mod sys {
    use std::ffi::CString;
    use std::fs::File;
    use std::os::fd::{AsRawFd, FromRawFd};
    use std::os::unix::ffi::OsStrExt;
    use std::path::Path;

    /// The root as an `O_PATH` descriptor: good for lookups below it, not for reading.
    pub fn open_root(root: &Path) -> Option<File> {
        let path = CString::new(root.as_os_str().as_bytes()).ok()?;
        // SAFETY: `path` is a valid NUL-terminated string; the descriptor returned, if any, is
        // owned by nobody else.
        let fd = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        // SAFETY: a fresh descriptor that this File alone owns.
        (fd >= 0).then(|| unsafe { File::from_raw_fd(fd) })
    }

    /// Opens `rel` below `dir` for reading, refusing to leave `dir` and to follow any symlink.
    pub fn open_beneath(dir: &File, rel: &str) -> std::io::Result<File> {
        let path =
            CString::new(rel).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: open_how is plain data (three integers); all zeroes is a valid value.
        let mut how: libc::open_how = unsafe { std::mem::zeroed() };
        how.flags = (libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK) as u64;
        how.resolve =
            libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
        // SAFETY: every pointer is valid for the call, and the size is that of the struct.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir.as_raw_fd(),
                path.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let fd = i32::try_from(fd).map_err(|_| std::io::Error::from_raw_os_error(libc::EBADF))?;
        // SAFETY: a fresh descriptor that this File alone owns.
        Ok(unsafe { File::from_raw_fd(fd) })
    }
}

#[cfg(not(target_os = "linux"))]
mod sys {
    use std::fs::File;
    use std::path::Path;

    pub fn open_root(_: &Path) -> Option<File> {
        None
    }

    pub fn open_beneath(_: &File, _: &str) -> std::io::Result<File> {
        Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_once_and_refuses_climbing() {
        assert_eq!(decode("/a/b%20c/").unwrap().segments, ["a", "b c"]);
        assert!(decode("/a/b/").unwrap().trailing_slash);
        assert!(!decode("/").unwrap().trailing_slash);
        assert_eq!(
            decode("//etc/./passwd").unwrap().segments,
            ["etc", "passwd"]
        );
        // Double-encoded: one decode leaves a literal name, not a dot.
        assert_eq!(decode("/%252e%252e/x").unwrap().segments, ["%2e%2e", "x"]);
        for bad in [
            "/../x",
            "/a/%2e%2e/x",
            "/a/%2E%2E",
            "/%c0%ae%c0%ae/x",
            "/a%00b",
            "/a\\..\\b",
            "/a%5c..%5cb",
            "/C:/Windows",
            "/c%3a/x",
            "/a%0d%0ab",
        ] {
            assert!(
                matches!(decode(bad), Err(Refused::Bad(_))),
                "{bad} was accepted"
            );
        }
    }
}
