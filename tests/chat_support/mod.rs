//! Helpers for the chat integration tests: start `sockit chat` on port 0 and read back the address it
//! announces, and drive real chat clients — std `TcpStream`s, `nc`, `openssl s_client` and python3
//! socket scripts — through one line-oriented [`Peer`] type. Every wait is bounded, so a broken
//! server fails a test instead of hanging the suite.

// Not every test uses every helper.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

/// The longest any single expected event may take (generous: CI machines are slow and busy).
pub const WAIT: Duration = Duration::from_secs(10);

// The process harness is the one the other suites use.
#[path = "../common/mod.rs"]
mod common;
pub use common::Server;

/// Starts `sockit chat ARGS...` on the shared harness ([`Server`], killed when dropped) and waits
/// for its `listening on ADDR (proto)` line.
pub struct Chat;

impl Chat {
    pub fn start(args: &[&str]) -> Server {
        let mut all = vec!["chat"];
        all.extend_from_slice(args);
        Server::start(&all)
    }
}

/// What a peer's reader thread saw.
enum Got {
    Line(Vec<u8>),
    /// The stream ended: `"eof"` or the error.
    Closed(String),
}

/// One chat client of any kind, seen as lines in and lines out. Lines are received on a thread
/// (so a client never blocks the server) and handed over through a channel.
pub struct Peer {
    writer: Option<Box<dyn Write + Send>>,
    rx: Receiver<Got>,
    /// The socket, for a half-close; `None` for process peers.
    tcp: Option<TcpStream>,
    /// The process (nc, openssl, python), killed when dropped.
    child: Option<Child>,
    /// The nick from the welcome line (empty until [`Peer::welcome`] read it).
    pub nick: String,
    /// Every line received so far, for failure messages.
    pub seen: Vec<String>,
    /// How the stream ended, once it has.
    pub closed: Option<String>,
}

impl Peer {
    fn new(
        reader: impl Read + Send + 'static,
        writer: Box<dyn Write + Send>,
        tcp: Option<TcpStream>,
        child: Option<Child>,
    ) -> Peer {
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut reader = BufReader::new(reader);
            loop {
                let mut line = Vec::new();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) => {
                        let _ = tx.send(Got::Closed("eof".into()));
                        break;
                    }
                    Ok(_) => {
                        if line.ends_with(b"\n") {
                            line.pop();
                            if line.ends_with(b"\r") {
                                line.pop();
                            }
                        }
                        if tx.send(Got::Line(line)).is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Got::Closed(format!("{:?}", e.kind())));
                        break;
                    }
                }
            }
        });
        Peer {
            writer: Some(writer),
            rx,
            tcp,
            child,
            nick: String::new(),
            seen: Vec::new(),
            closed: None,
        }
    }

    /// A plain TCP client; reads the welcome.
    pub fn tcp(addr: SocketAddr) -> Peer {
        let mut p = Peer::tcp_raw(addr);
        p.welcome();
        p
    }

    /// A plain TCP client that has joined the default room (its own join notice was seen).
    pub fn joined(addr: SocketAddr) -> Peer {
        let mut p = Peer::tcp(addr);
        p.wait_join("lobby");
        p
    }

    /// A TCP client that has not read anything yet.
    pub fn tcp_raw(addr: SocketAddr) -> Peer {
        let stream = TcpStream::connect_timeout(&addr, WAIT).expect("connect to chat");
        let reader = stream.try_clone().unwrap();
        let writer = stream.try_clone().unwrap();
        Peer::new(reader, Box::new(writer), Some(stream), None)
    }

    /// A client process (nc, openssl, python): its stdin is what it sends, its stdout what it
    /// received.
    pub fn process(mut cmd: Command) -> Peer {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        Peer::new(stdout, Box::new(stdin), None, Some(child))
    }

    /// `nc HOST PORT` (netcat-openbsd), welcome read.
    pub fn nc(addr: SocketAddr) -> Peer {
        let mut cmd = Command::new("nc");
        cmd.arg(addr.ip().to_string()).arg(addr.port().to_string());
        let mut p = Peer::process(cmd);
        p.welcome();
        p
    }

    /// Reads the welcome line and remembers the nick it gives.
    pub fn welcome(&mut self) -> String {
        let line = self.expect("the welcome line", |l| {
            l.starts_with("-!- Welcome to sockit chat, ")
        });
        let nick = line
            .strip_prefix("-!- Welcome to sockit chat, ")
            .and_then(|r| r.split('!').next())
            .unwrap()
            .to_string();
        self.nick = nick;
        line
    }

    /// Waits for this client's own join notice for `room`.
    pub fn wait_join(&mut self, room: &str) {
        let want = format!("-!- {} joined #{room}", self.nick);
        self.expect(&want.clone(), |l| body(l) == want);
    }

    /// Sends `text` and a newline.
    pub fn send(&mut self, text: &str) {
        self.send_raw(format!("{text}\n").as_bytes());
    }

    /// Sends bytes as they are.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        let w = self.writer.as_mut().expect("writer still open");
        w.write_all(bytes).expect("write to chat client");
        w.flush().expect("flush chat client");
    }

    /// Closes the sending side: a half-close for sockets, EOF on stdin for processes.
    pub fn finish(&mut self) {
        self.writer = None;
        if let Some(tcp) = &self.tcp {
            let _ = tcp.shutdown(Shutdown::Write);
        }
    }

    /// The next line within `limit`: `Ok(Some(line))`, `Ok(None)` on timeout, `Err(how)` once the
    /// stream has ended.
    pub fn next_bytes(&mut self, limit: Duration) -> Result<Option<Vec<u8>>, String> {
        if let Some(how) = &self.closed {
            return Err(how.clone());
        }
        match self.rx.recv_timeout(limit) {
            Ok(Got::Line(l)) => {
                self.seen.push(String::from_utf8_lossy(&l).into_owned());
                Ok(Some(l))
            }
            Ok(Got::Closed(how)) => {
                self.closed = Some(how.clone());
                Err(how)
            }
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => {
                self.closed = Some("reader gone".into());
                Err("reader gone".into())
            }
        }
    }

    /// Like [`Peer::next_bytes`], as text (invalid UTF-8 is a test failure).
    pub fn next_line(&mut self, limit: Duration) -> Result<Option<String>, String> {
        Ok(self
            .next_bytes(limit)?
            .map(|b| String::from_utf8(b).expect("the server sent invalid UTF-8")))
    }

    /// Waits up to [`WAIT`] for a line matching `pred`, skipping others; returns it.
    pub fn expect(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        self.expect_within(WAIT, what, pred)
    }

    pub fn expect_within(
        &mut self,
        limit: Duration,
        what: &str,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_bytes(left) {
                Ok(Some(l)) => {
                    let l = String::from_utf8_lossy(&l).into_owned();
                    if pred(&l) {
                        return l;
                    }
                }
                Ok(None) => panic!(
                    "{}: timed out waiting for {what}; saw:\n{}",
                    self.nick,
                    self.seen.join("\n")
                ),
                Err(how) => panic!(
                    "{}: connection ended ({how}) before {what}; saw:\n{}",
                    self.nick,
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Waits up to [`WAIT`] for a line whose bytes match `pred` (for non-UTF-8 clients).
    pub fn expect_bytes(&mut self, what: &str, pred: impl Fn(&[u8]) -> bool) -> Vec<u8> {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_bytes(left) {
                Ok(Some(l)) if pred(&l) => return l,
                Ok(Some(_)) => {}
                other => panic!(
                    "{}: no {what} ({other:?}); saw:\n{}",
                    self.nick,
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// The socket of a TCP peer.
    pub fn socket(&self) -> &TcpStream {
        self.tcp.as_ref().expect("a TCP peer")
    }

    /// Waits for the message `<nick> text`.
    pub fn expect_msg(&mut self, nick: &str, text: &str) -> String {
        let want = format!("<{nick}> {text}");
        self.expect(&want.clone(), |l| body(l) == want)
    }

    /// Lines received during `d` (the stream may end meanwhile).
    pub fn lines_for(&mut self, d: Duration) -> Vec<String> {
        let deadline = Instant::now() + d;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return out;
            }
            match self.next_bytes(left) {
                Ok(Some(l)) => out.push(String::from_utf8_lossy(&l).into_owned()),
                Ok(None) | Err(_) => return out,
            }
        }
    }

    /// Waits up to `limit` for the stream to end; returns the lines received before and how it
    /// ended. Panics if it does not end.
    pub fn expect_closed(&mut self, limit: Duration) -> (Vec<String>, String) {
        let deadline = Instant::now() + limit;
        let mut lines = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_bytes(left) {
                Ok(Some(l)) => lines.push(String::from_utf8_lossy(&l).into_owned()),
                Ok(None) => panic!(
                    "{}: still connected after {limit:?}; saw:\n{}",
                    self.nick,
                    self.seen.join("\n")
                ),
                Err(how) => return (lines, how),
            }
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(tcp) = &self.tcp {
            let _ = tcp.shutdown(Shutdown::Both);
        }
    }
}

/// A line without its `[HH:MM:SS] ` stamp (lines without one are returned as they are).
pub fn body(line: &str) -> &str {
    let b = line.as_bytes();
    if b.len() >= 11 && b[0] == b'[' && b[9] == b']' && b[10] == b' ' {
        &line[11..]
    } else {
        line
    }
}

/// Whether `line` is a stamped `[HH:MM:SS] ...` line.
pub fn is_stamped(line: &str) -> bool {
    let b = line.as_bytes();
    b.len() >= 11
        && b[0] == b'['
        && b[3] == b':'
        && b[6] == b':'
        && b[9] == b']'
        && [1, 2, 4, 5, 7, 8].iter().all(|&i| b[i].is_ascii_digit())
}

/// Whether `line` is a room message (`[..] <nick> text`).
pub fn is_message(line: &str) -> bool {
    is_stamped(line) && body(line).starts_with('<')
}

/// Runs `python3 -c SCRIPT ARGS...` with a time limit, asserts it succeeded and returns stdout.
pub fn python(script: &str, args: &[&str]) -> Vec<u8> {
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn python3");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err = thread::spawn(move || {
        let mut v = String::new();
        let _ = err.read_to_string(&mut v);
        v
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(10));
    };
    let out = out.join().unwrap();
    let err = err.join().unwrap();
    assert!(
        status.is_some_and(|s| s.success()),
        "python failed ({status:?}):\nstdout: {}\nstderr: {err}",
        String::from_utf8_lossy(&out)
    );
    out
}
