//! `--exec` / `--sh-exec`: a command per connection, its stdin and stdout bridged to the socket
//! through pipes.
//!
//! Unlike ncat, which hands the socket itself to the command, the command here never holds the
//! socket (sockets are close-on-exec and the command gets pipes), so nothing it leaves behind can
//! keep a client waiting (ncat issue #2843). The command runs in its own process group; when the
//! connection ends the group is killed and the command reaped, so no child outlives its connection.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{ChildStdin, ChildStdout, Command};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::local::QUEUE;
use super::pump::Sides;
use super::CHUNK;
use crate::net::{NetError, PeerAddr, Stream};

/// After the command exits, output still in the pipe is relayed; once the pipe has been quiet this
/// long it counts as closed, even if something the command started in the background holds it.
const DRAIN_QUIET: Duration = Duration::from_millis(200);

/// When the connection is over, how long the command may take to exit by itself before its
/// process group is killed.
const EXIT_GRACE: Duration = Duration::from_millis(500);

/// A command to run per connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecSpec {
    program: String,
    args: Vec<String>,
}

impl ExecSpec {
    /// ncat's `--exec`: the command line split on whitespace, no shell. `None` if it is blank.
    pub fn split(command: &str) -> Option<Self> {
        let mut words = command.split_whitespace().map(str::to_string);
        let program = words.next()?;
        Some(ExecSpec {
            program,
            args: words.collect(),
        })
    }

    /// ncat's `--sh-exec`: the command line run by `/bin/sh -c`.
    pub fn shell(command: &str) -> Self {
        ExecSpec {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), command.into()],
        }
    }

    /// The program that will be run.
    pub fn program(&self) -> &str {
        &self.program
    }

    /// Checks that the program can be found and run, so a typo fails at start rather than at the
    /// first connection.
    pub fn check(&self) -> Result<(), NetError> {
        let runnable = |p: &Path| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(p)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        };
        let found = if self.program.contains('/') {
            runnable(Path::new(&self.program))
        } else {
            std::env::var_os("PATH")
                .map(|paths| {
                    std::env::split_paths(&paths).any(|dir| runnable(&dir.join(&self.program)))
                })
                .unwrap_or(false)
        };
        if found {
            Ok(())
        } else {
            Err(NetError::io(
                format!(
                    "cannot run {:?} (is it installed, on $PATH and executable?)",
                    self.program
                ),
                io::Error::from(io::ErrorKind::NotFound),
            ))
        }
    }
}

/// What the command is told about its connection, in ncat's environment variables.
#[derive(Debug, Clone)]
pub(crate) struct ConnInfo {
    pub remote: Option<SocketAddr>,
    pub local: Option<SocketAddr>,
    /// `TCP` (also under TLS), `UDP` or `UNIX`.
    pub proto: &'static str,
}

impl ConnInfo {
    pub(crate) fn of_stream(stream: &Stream, peer: &PeerAddr) -> Self {
        let remote = match peer {
            PeerAddr::Inet(a) => Some(*a),
            PeerAddr::Unix => None,
        };
        ConnInfo {
            remote,
            local: stream.local_inet(),
            proto: if matches!(stream, Stream::Unix(_)) {
                "UNIX"
            } else {
                "TCP"
            },
        }
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        let mut vars = vec![("NCAT_PROTO", self.proto.to_string())];
        if let Some(a) = self.remote {
            vars.push(("NCAT_REMOTE_ADDR", a.ip().to_string()));
            vars.push(("NCAT_REMOTE_PORT", a.port().to_string()));
        }
        if let Some(a) = self.local {
            vars.push(("NCAT_LOCAL_ADDR", a.ip().to_string()));
            vars.push(("NCAT_LOCAL_PORT", a.port().to_string()));
        }
        vars
    }
}

/// A running command: its output and input as channels, and the guard that ends it.
pub(crate) struct Session {
    pub sides: Sides,
    pub guard: ChildGuard,
}

/// Starts `spec` for one connection.
pub(crate) fn spawn(spec: &ExecSpec, info: &ConnInfo) -> Result<Session, NetError> {
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        .envs(info.env())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        // Its own group, so that everything it starts can be ended with it.
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| NetError::io(format!("cannot run {:?}", spec.program), e))?;
    let (Some(stdin), Some(stdout), Some(pid)) =
        (child.stdin.take(), child.stdout.take(), child.id())
    else {
        return Err(NetError::io(
            format!("cannot run {:?}", spec.program),
            io::Error::other("the command has no pipes"),
        ));
    };
    let pgid = pid as libc::pid_t;
    tracing::debug!(program = %spec.program, pid, "command started");

    let (exited_tx, exited) = watch::channel(false);
    let reaper = tokio::spawn(async move {
        match child.wait().await {
            Ok(status) => tracing::debug!(pid, %status, "command ended"),
            Err(e) => tracing::debug!(pid, error = %e, "waiting for the command failed"),
        }
        let _ = exited_tx.send(true);
    });

    let (in_tx, in_rx) = mpsc::channel(QUEUE);
    let (out_tx, out_rx) = mpsc::channel(QUEUE);
    tokio::spawn(read_output(stdout, out_tx, exited.clone()));
    tokio::spawn(write_input(stdin, in_rx));
    Ok(Session {
        sides: Sides {
            input: out_rx.into(),
            output: in_tx,
            command: true,
        },
        guard: ChildGuard {
            pgid,
            exited,
            reaper: Some(reaper),
        },
    })
}

/// The command's stdout, in chunks, until EOF, or until it has exited and the pipe went quiet.
async fn read_output(
    mut stdout: ChildStdout,
    tx: mpsc::Sender<Bytes>,
    mut exited: watch::Receiver<bool>,
) {
    let mut buf = BytesMut::with_capacity(CHUNK);
    let mut draining = *exited.borrow();
    loop {
        buf.reserve(CHUNK);
        let read = if draining {
            match tokio::time::timeout(DRAIN_QUIET, stdout.read_buf(&mut buf)).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::debug!("command exited; treating its quiet output as closed");
                    break;
                }
            }
        } else {
            tokio::select! {
                r = stdout.read_buf(&mut buf) => r,
                // Reads of a pipe are cancel-safe: nothing is lost by switching to draining.
                _ = exited.changed() => {
                    draining = true;
                    continue;
                }
            }
        };
        match read {
            Ok(0) => break,
            Ok(_) => {
                if tx.send(buf.split().freeze()).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "reading the command's output failed");
                break;
            }
        }
    }
}

/// Chunks to the command's stdin; the end of the channel closes the pipe (EOF for the command).
/// If the command stops reading, the channel's receiver is dropped, which the pump notices.
async fn write_input(mut stdin: ChildStdin, mut rx: mpsc::Receiver<Bytes>) {
    while let Some(chunk) = rx.recv().await {
        if let Err(e) = stdin.write_all(&chunk).await {
            tracing::debug!(error = %e, "the command stopped reading its input");
            return;
        }
    }
}

/// Ends a command's process group: gracefully with [`ChildGuard::finish`], or at once when
/// dropped (a connection task cut short).
pub(crate) struct ChildGuard {
    pgid: libc::pid_t,
    exited: watch::Receiver<bool>,
    reaper: Option<JoinHandle<()>>,
}

impl ChildGuard {
    /// Gives the command a moment to exit on its own (its stdin is closed by now), then kills
    /// whatever is left of its process group and reaps it.
    pub(crate) async fn finish(mut self) {
        let mut exited = self.exited.clone();
        let _ = tokio::time::timeout(EXIT_GRACE, exited.wait_for(|done| *done)).await;
        kill_group(self.pgid);
        if let Some(reaper) = self.reaper.take() {
            let _ = reaper.await;
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.reaper.is_some() {
            // Not finished: kill now; the reaper task (or kill_on_drop) collects the exit status.
            kill_group(self.pgid);
        }
    }
}

fn kill_group(pgid: libc::pid_t) {
    // SAFETY: killpg only sends a signal; it touches no memory of ours. The group id is the
    // command's pid, which the kernel does not reuse while the group has members. (If the group is
    // already empty the call fails with ESRCH, which is fine.)
    let rc = unsafe { libc::killpg(pgid, libc::SIGKILL) };
    if rc == 0 {
        tracing::debug!(pgid, "killed what was left of the command's process group");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_whitespace() {
        let spec = ExecSpec::split("  tr  a-z A-Z ").unwrap();
        assert_eq!(spec.program(), "tr");
        assert_eq!(spec.args, ["a-z", "A-Z"]);
        assert!(ExecSpec::split("   ").is_none());
        assert_eq!(ExecSpec::shell("echo $X").args, ["-c", "echo $X"]);
    }

    #[test]
    fn check_finds_programs() {
        assert!(ExecSpec::split("sh").unwrap().check().is_ok());
        assert!(ExecSpec::split("/bin/sh -c true").unwrap().check().is_ok());
        let err = ExecSpec::split("no-such-program-sockit")
            .unwrap()
            .check()
            .unwrap_err();
        assert!(err.to_string().contains("no-such-program-sockit"), "{err}");
    }
}
