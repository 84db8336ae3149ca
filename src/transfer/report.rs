//! What a transfer did, for the summary line, `--json` and the exit code: per file its size,
//! digest and outcome, and the totals.

use std::time::Duration;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Send,
    Recv,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileStatus {
    /// Arrived whole and verified.
    Ok,
    /// Already there with the same size and time.
    Skipped,
    Failed,
}

/// One file's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct FileReport {
    pub path: String,
    /// The file's size.
    pub bytes: u64,
    /// Bytes that crossed the wire for it this time (less than `bytes` when resumed).
    pub moved: u64,
    pub blake3: Option<String>,
    pub status: FileStatus,
    pub error: Option<String>,
}

impl FileReport {
    /// A file of `bytes` at `path` in `status`: nothing moved yet, no digest, no error.
    pub fn new(path: impl Into<String>, bytes: u64, status: FileStatus) -> Self {
        FileReport {
            path: path.into(),
            bytes,
            moved: 0,
            blake3: None,
            status,
            error: None,
        }
    }

    /// The same, with `error` said.
    pub fn with_error(self, error: impl Into<String>) -> Self {
        FileReport {
            error: Some(error.into()),
            ..self
        }
    }
}

/// A whole session's outcome.
#[derive(Debug, Clone)]
pub struct Report {
    pub role: Role,
    pub files: Vec<FileReport>,
    pub elapsed: Duration,
    /// What ended the session early, if anything did.
    pub error: Option<String>,
}

impl Report {
    pub fn new(role: Role) -> Self {
        Report {
            role,
            files: Vec::new(),
            elapsed: Duration::ZERO,
            error: None,
        }
    }

    /// Every file arrived (or was there) and nothing ended the session early.
    pub fn ok(&self) -> bool {
        self.error.is_none() && self.files.iter().all(|f| f.status != FileStatus::Failed)
    }

    fn count(&self, status: FileStatus) -> usize {
        self.files.iter().filter(|f| f.status == status).count()
    }

    /// Bytes moved over the wire.
    pub fn moved(&self) -> u64 {
        self.files.iter().map(|f| f.moved).sum()
    }

    /// One digest for the session: the file's own for one file, else blake3 over each file's
    /// name and digest, in order.
    pub fn digest(&self) -> Option<String> {
        let done: Vec<&FileReport> = self.files.iter().filter(|f| f.blake3.is_some()).collect();
        match done.as_slice() {
            [] => None,
            [one] => one.blake3.clone(),
            many => {
                let mut h = blake3::Hasher::new();
                for f in many {
                    h.update(f.path.as_bytes());
                    h.update(b"\0");
                    h.update(f.blake3.as_deref().unwrap_or("").as_bytes());
                    h.update(b"\n");
                }
                Some(h.finalize().to_hex().to_string())
            }
        }
    }

    fn rate(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.moved() as f64 / secs / 1e6
        } else {
            0.0
        }
    }

    /// The one line a human reads at the end.
    pub fn summary_line(&self) -> String {
        let verb = match self.role {
            Role::Send => "sent",
            Role::Recv => "received",
        };
        let mut line = format!(
            "{verb} {} file(s), {} bytes in {:.2} s ({:.1} MB/s)",
            self.count(FileStatus::Ok),
            self.moved(),
            self.elapsed.as_secs_f64(),
            self.rate()
        );
        let skipped = self.count(FileStatus::Skipped);
        if skipped > 0 {
            line.push_str(&format!(", {skipped} already there"));
        }
        let failed = self.count(FileStatus::Failed);
        if failed > 0 {
            line.push_str(&format!(", {failed} FAILED"));
        }
        if let Some(d) = self.digest() {
            line.push_str(&format!(", blake3 {d}"));
        }
        line
    }

    /// The `--json` document.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "role": self.role,
            "ok": self.ok(),
            "files": self.count(FileStatus::Ok),
            "bytes": self.moved(),
            "skipped": self.count(FileStatus::Skipped),
            "failed": self.count(FileStatus::Failed),
            "seconds": self.elapsed.as_secs_f64(),
            "mb_per_s": self.rate(),
            "digest": self.digest(),
            "error": self.error,
            "entries": self.files,
        })
    }
}
