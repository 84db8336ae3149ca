//! Helpers shared by the integration tests: start the `sockit` binary on port 0 and read back the
//! address it announces, run real peers (nc, socat, openssl, python3) with a time limit, and talk
//! to servers with plain std sockets. Every wait here is bounded, so a broken server fails a test
//! instead of hanging the suite.

// Each test file uses a different subset of these helpers.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Upper bound for a server to announce its address.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// A `sockit` server process, killed when dropped.
pub struct Server {
    child: Child,
    /// What the server announced: `127.0.0.1:PORT`, `[::1]:PORT` or `unix:/path`.
    pub announced: String,
    /// Everything the server wrote to stderr so far (filled by a reader thread).
    stderr: Arc<Mutex<String>>,
}

impl Server {
    /// Runs `sockit ARGS...` and waits for its `listening on ADDR (proto)` line.
    pub fn start(args: &[&str]) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sockit"));
        cmd.args(args);
        Server::start_command(cmd)
    }

    /// Like [`Server::start`] for a prepared command (a wrapper such as `prlimit`, extra env).
    pub fn start_command(mut cmd: Command) -> Server {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn sockit");
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let pipe = child.stderr.take().expect("stderr piped");
        let sink = stderr.clone();
        thread::spawn(move || {
            let mut reader = BufReader::new(pipe);
            let mut line = String::new();
            loop {
                line.clear();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        sink.lock().unwrap().push_str(&line);
                        if let Some(rest) = line.split(": listening on ").nth(1) {
                            let addr = rest.split(" (").next().unwrap_or("").trim().to_string();
                            let _ = tx.send(addr);
                        }
                    }
                }
            }
        });
        let announced = match rx.recv_timeout(START_TIMEOUT) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "server did not announce its address; stderr:\n{}",
                    stderr.lock().unwrap()
                );
            }
        };
        Server {
            child,
            announced,
            stderr,
        }
    }

    /// The announced internet address.
    pub fn addr(&self) -> SocketAddr {
        self.announced
            .parse()
            .unwrap_or_else(|_| panic!("not an internet address: {}", self.announced))
    }

    pub fn port(&self) -> u16 {
        self.addr().port()
    }

    /// The socket path of a Unix server.
    pub fn unix_path(&self) -> String {
        self.announced
            .strip_prefix("unix:")
            .expect("a unix: address")
            .to_string()
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The server's stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Sends a signal (libc::SIGTERM, SIGINT...).
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid has no memory-safety concerns.
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(rc, 0, "kill({}, {sig}) failed", self.pid());
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// Waits up to `limit` for the process to exit; `None` if it is still running.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until stderr contains `needle` (case-insensitive), up to `limit`.
    pub fn wait_for_log(&self, needle: &str, limit: Duration) -> bool {
        let needle = needle.to_lowercase();
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.stderr().to_lowercase().contains(&needle) {
                return true;
            }
            thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// The URL of the chat's web page (`--web`), once the server has announced it.
    pub fn web_page_url(&self) -> String {
        assert!(
            self.wait_for_log("web page at ", START_TIMEOUT),
            "no web page announced:\n{}",
            self.stderr()
        );
        self.stderr()
            .lines()
            .find_map(|l| l.split("web page at ").nth(1).map(|u| u.trim().to_string()))
            .expect("web page line")
    }

    /// The process's resident set size in KiB, from /proc/PID/status.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a command with `input` on stdin and a time limit; the process is killed at the limit
/// (then `timed_out` is true and the output is what it wrote so far).
pub struct Ran {
    pub status: Option<ExitStatus>,
    pub stdout: Vec<u8>,
    pub stderr: String,
    pub timed_out: bool,
}

impl Ran {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }
}

pub fn run(mut cmd: Command, input: &[u8], limit: Duration) -> Ran {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    // Feeding stdin on its own thread: a peer that echoes while we write must not deadlock us.
    let writer = thread::spawn(move || {
        let _ = stdin.write_all(&input);
        // Dropping stdin sends EOF.
    });
    let out = collect(child.stdout.take().unwrap());
    let err = collect(child.stderr.take().unwrap());
    let deadline = Instant::now() + limit;
    let mut timed_out = false;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() >= deadline {
            timed_out = true;
            let _ = child.kill();
            break child.wait().ok();
        }
        thread::sleep(Duration::from_millis(10));
    };
    let _ = writer.join();
    Ran {
        status,
        stdout: out.join().unwrap(),
        stderr: String::from_utf8_lossy(&err.join().unwrap()).into_owned(),
        timed_out,
    }
}

fn collect(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}

/// Runs `python3 -c SCRIPT ARGS...` with a time limit and asserts it succeeded; returns stdout.
pub fn python(script: &str, args: &[&str]) -> String {
    let mut cmd = Command::new("python3");
    cmd.arg("-c").arg(script).args(args);
    let ran = run(cmd, b"", Duration::from_secs(20));
    assert!(
        !ran.timed_out && ran.code() == Some(0),
        "python failed (timed out: {}): {:?}\nstdout: {}\nstderr: {}",
        ran.timed_out,
        ran.status,
        ran.stdout_text(),
        ran.stderr
    );
    ran.stdout_text()
}

/// A python TCP client: optionally binds SOURCE first, connects, sends PAYLOAD (if not empty),
/// then reads until EOF or until it has as many bytes as it sent. Prints `DATA <repr>`, or
/// `EOF <repr>` if the server closed first, or `RESET`.
pub const PY_TCP_CLIENT: &str = r#"
import socket, sys
host, port, source, payload = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4].encode()
fam = socket.AF_INET6 if ":" in host else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM)
s.settimeout(5)
if source:
    s.bind((source, 0))
s.connect((host, port))
got = b""
try:
    if payload:
        s.sendall(payload)
    while len(got) < max(len(payload), 1):
        chunk = s.recv(65536)
        if not chunk:
            print("EOF", repr(got))
            sys.exit(0)
        got += chunk
        if not payload:
            break
except ConnectionResetError:
    print("RESET")
    sys.exit(0)
print("DATA", repr(got))
"#;

/// Runs [`PY_TCP_CLIENT`]; `source` may be empty.
pub fn py_tcp(addr: SocketAddr, source: &str, payload: &str) -> String {
    python(
        PY_TCP_CLIENT,
        &[
            &addr.ip().to_string(),
            &addr.port().to_string(),
            source,
            payload,
        ],
    )
    .trim()
    .to_string()
}

/// True if a refused client's view (`EOF b''` or `RESET`): closed without any data.
pub fn closed_without_data(outcome: &str) -> bool {
    outcome == "EOF b''" || outcome == "RESET"
}

/// Connects with std, sends `payload`, reads the same number of bytes back (5 s limit).
pub fn echo_roundtrip(stream: &mut TcpStream, payload: &[u8]) -> Vec<u8> {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(payload).unwrap();
    let mut got = vec![0u8; payload.len()];
    stream.read_exact(&mut got).unwrap();
    got
}

/// Connects to `addr` with a 5 s limit.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// What the server does to a connection we do not write on: `Ok(bytes)` read before EOF,
/// `Err(kind)` on reset or timeout.
pub fn read_to_close(
    stream: &mut TcpStream,
    limit: Duration,
) -> Result<Vec<u8>, std::io::ErrorKind> {
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut got = Vec::new();
    match stream.read_to_end(&mut got) {
        Ok(_) => Ok(got),
        Err(e) => Err(e.kind()),
    }
}

/// Half-closes the write side, as `nc -N` does.
pub fn finish_writing(stream: &TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
}

/// Whether this machine can bind an IPv6 loopback socket.
pub fn ipv6_available() -> bool {
    std::net::TcpListener::bind("[::1]:0").is_ok()
}

/// Raises this process's soft RLIMIT_NOFILE to at least `want` (up to the hard limit) and
/// returns the new soft limit.
pub fn raise_nofile(want: libc::rlim_t) -> libc::rlim_t {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write/read a plain struct we own.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        if lim.rlim_cur < want {
            lim.rlim_cur = std::cmp::min(want, lim.rlim_max);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        }
    }
    lim.rlim_cur
}

/// The folder of the browser tests (tests/web, with playwright-core installed) if Chromium, node
/// and the driver are all here; otherwise says why and returns `None`, or fails under CI, which
/// installs them (.ci/install-deps).
pub fn browser_e2e_dir() -> Option<std::path::PathBuf> {
    let why = || -> Result<std::path::PathBuf, String> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/web");
        let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        if !std::path::Path::new(&chromium).exists() {
            return Err(format!("{chromium} is missing (apt-get install chromium)"));
        }
        let node = Command::new("node")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !node {
            return Err("node is missing".into());
        }
        if !dir.join("node_modules/playwright-core").exists() {
            return Err("playwright-core is missing (cd tests/web && npm ci)".into());
        }
        Ok(dir)
    };
    match why() {
        Ok(dir) => Some(dir),
        Err(why) => {
            let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false");
            assert!(!ci, "the browser test cannot run under CI: {why}");
            eprintln!("skipping the browser test: {why}");
            None
        }
    }
}
