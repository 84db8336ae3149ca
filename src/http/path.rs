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

use std::fs::Metadata;
use std::path::{Component, Path, PathBuf};

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
}

/// Symlink and dotfile policy of a served folder.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The folder served, canonical.
    pub root: PathBuf,
    pub follow_symlinks: bool,
    pub hidden: bool,
}

impl Policy {
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

/// Finds `rel` under the root (blocking: call it off the async threads).
pub fn resolve(policy: &Policy, rel: &RelPath) -> Result<Found, Refused> {
    if !policy.hidden && rel.has_hidden() {
        return Err(Refused::NotFound);
    }
    let mut path = policy.root.clone();
    path.extend(&rel.segments);
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
    })
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
