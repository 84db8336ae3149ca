//! ncat's `-o/--output FILE` and `-x/--hex-dump FILE`: a copy of every byte of the session, both
//! directions in the order they moved, raw or as ncat's hex dump (one line per 16 bytes:
//! `0000   68 65 6c 6c 6f 0a ...  hello.`, offsets counted from the start of each read or
//! write), byte for byte what Ncat 7.9x writes. `--append-output` appends instead of starting the file afresh.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use crate::net::NetError;

/// How the session is written down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// The bytes as they are (`-o`).
    Raw,
    /// ncat's hex dump (`-x`).
    Hex,
}

/// An open session log, shared by the two directions (and by every client of `listen -k`).
#[derive(Debug)]
pub struct SessionLog {
    file: Mutex<File>,
    format: LogFormat,
}

impl SessionLog {
    /// Opens (creates, truncates or with `append` appends to) the log file.
    pub fn create(path: &Path, format: LogFormat, append: bool) -> Result<Self, NetError> {
        let mut open = OpenOptions::new();
        open.create(true);
        if append {
            open.append(true);
        } else {
            open.write(true).truncate(true);
        }
        let file = open.open(path).map_err(|e| {
            NetError::io(format!("cannot open the session log {}", path.display()), e)
        })?;
        Ok(SessionLog {
            file: Mutex::new(file),
            format,
        })
    }

    /// Writes down one read or write. A failing log (disk full) does not stop the session.
    pub fn record(&self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let Ok(mut file) = self.file.lock() else {
            return;
        };
        let result = match self.format {
            LogFormat::Raw => file.write_all(data),
            LogFormat::Hex => file.write_all(hex_dump(data).as_bytes()),
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, "writing the session log failed");
        }
    }
}

/// ncat's hex dump of one chunk (as Ncat 7.9x writes it): the offset, 16 bytes in lower-case
/// hex with a gap after the eighth, and the bytes that are visible characters (others as `.`).
pub fn hex_dump(data: &[u8]) -> String {
    let mut out = String::new();
    for (line_no, line) in data.chunks(16).enumerate() {
        let mut hex = String::with_capacity(49);
        let mut text = String::with_capacity(16);
        for (i, &b) in line.iter().enumerate() {
            if i == 8 {
                hex.push(' ');
            }
            hex.push_str(&format!("{b:02x} "));
            text.push(if b.is_ascii_graphic() { b as char } else { '.' });
        }
        out.push_str(&format!("{:04x}   {hex:<49} {text:<16}\n", line_no * 16));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dumps_like_ncat() {
        let dump = hex_dump(b"hello, world of hex dumps\n");
        let lines: Vec<&str> = dump.lines().collect();
        assert_eq!(
            lines[0],
            "0000   68 65 6c 6c 6f 2c 20 77  6f 72 6c 64 20 6f 66 20  hello,.world.of."
        );
        assert!(lines[1].starts_with("0010   68 65 78 20"), "{dump}");
        assert!(lines[1].ends_with("hex.dumps.      "), "{dump}");
    }
}
