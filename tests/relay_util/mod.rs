//! Helpers for the relay tests: spawning sockit and real peers, reading the bound address back,
//! bounded waits. Every wait has a deadline, so a hang fails the test instead of the CI job.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_sockit");

/// A generous bound for anything that should take well under a second.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// A spawned process, killed on drop, whose stderr is collected in the background.
pub struct Proc {
    pub child: Child,
    stderr: Arc<Mutex<String>>,
}

impl Proc {
    /// Spawns `cmd` with stderr captured (stdin/stdout as the caller set them).
    pub fn spawn(mut cmd: Command) -> Proc {
        cmd.stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Proc { child, stderr }
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until stderr contains `needle`, returning the stderr so far.
    pub fn wait_stderr(&self, needle: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let text = self.stderr();
            if text.contains(needle) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} on stderr; got:\n{text}"
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// The address from sockit's `listening on ADDR (proto)` line.
    pub fn listening_addr(&self) -> String {
        let text = self.wait_stderr(" (");
        let line = text
            .lines()
            .find(|l| l.contains("listening on "))
            .unwrap_or_else(|| panic!("no listening line in:\n{text}"));
        let rest = line.split("listening on ").nth(1).unwrap();
        rest.split(" (").next().unwrap().to_string()
    }

    /// Waits for the exit, killing the process and failing if it takes longer than `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the stderr reader catch up with the last lines.
                thread::sleep(Duration::from_millis(50));
                return status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "process still running after {limit:?}; stderr:\n{}",
                    self.stderr()
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends SIGTERM (graceful stop).
    pub fn terminate(&self) {
        unsafe_kill(self.child.id() as i32, libc::SIGTERM);
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Takes stdout and collects it on a thread; join the handle for the bytes.
    pub fn collect_stdout(&mut self) -> thread::JoinHandle<Vec<u8>> {
        let mut out = self.child.stdout.take().expect("stdout piped");
        thread::spawn(move || {
            let mut v = Vec::new();
            let _ = out.read_to_end(&mut v);
            v
        })
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn unsafe_kill(pid: i32, sig: i32) {
    // SAFETY: sending a signal touches no memory of ours.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// `sockit ARGS` with stdin, stdout piped.
pub fn sockit(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args).stdin(Stdio::piped()).stdout(Stdio::piped());
    cmd
}

/// Starts `sockit listen ARGS ADDR` and returns it with its bound address.
pub fn listen(args: &[&str], addr: &str) -> (Proc, String) {
    let mut all = vec!["listen"];
    all.extend_from_slice(args);
    all.push(addr);
    let p = Proc::spawn(sockit(&all));
    let a = p.listening_addr();
    (p, a)
}

/// Runs a command to completion with `input` on stdin, within `limit`.
pub fn run(mut cmd: Command, input: &[u8], limit: Duration) -> (ExitStatus, Vec<u8>, String) {
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
    let mut p = Proc::spawn(cmd);
    let mut stdin = p.child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = p.collect_stdout();
    let status = p.wait_exit(limit);
    writer.join().unwrap();
    let stdout = out.join().unwrap();
    (status, stdout, p.stderr())
}

/// The TCP (or UDP with `udp`) port a process listens on, found with `ss` by its pid: no race of
/// picking a free port first.
pub fn port_of(pid: u32, udp: bool) -> u16 {
    let deadline = Instant::now() + PATIENCE;
    let flag = if udp { "-lunpH" } else { "-ltnpH" };
    let needle = format!("pid={pid},");
    loop {
        let out = Command::new("ss")
            .arg(flag)
            .output()
            .expect("ss (iproute2) is needed");
        let text = String::from_utf8_lossy(&out.stdout);
        for line in text.lines().filter(|l| l.contains(&needle)) {
            // Local address is the 4th column: 127.0.0.1:PORT
            if let Some(local) = line.split_whitespace().nth(3) {
                if let Some(port) = local.rsplit(':').next().and_then(|p| p.parse().ok()) {
                    return port;
                }
            }
        }
        assert!(Instant::now() < deadline, "process {pid} never listened");
        thread::sleep(Duration::from_millis(20));
    }
}

/// Reads from `r` until `needle` has been seen (or EOF / deadline), returning everything read.
pub fn read_until(r: &mut impl Read, needle: &[u8]) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !contains(&got, needle) {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => panic!("read failed after {:?}: {e}", String::from_utf8_lossy(&got)),
        }
    }
    got
}

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

/// A TCP client with read timeouts.
pub fn client(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s
}

/// Reads a whole line from a stream with a timeout.
pub fn read_line(s: &mut impl Read) -> String {
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).expect("read line");
    line
}

/// Deterministic pseudo-random bytes (xorshift64*), for binary-safety tests.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn sha256(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(data))
}

/// Starts a python3 script that prints its port on the first line of stdout.
pub fn python(script: &str) -> (Proc, u16) {
    let mut cmd = Command::new("python3");
    cmd.arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    let mut p = Proc::spawn(cmd);
    let mut out = BufReader::new(p.child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).expect("python port line");
    let port = line
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("python printed {line:?}; stderr: {}", p.stderr()));
    // Keep draining its stdout so it never blocks on a full pipe.
    thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = out.read_to_end(&mut sink);
    });
    (p, port)
}

/// Whether a process is gone (or a zombie no one has reaped yet).
pub fn is_dead(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().next())
            .map(|state| state == "Z" || state == "X")
            .unwrap_or(true),
    }
}

/// Waits until `pid` is dead, failing after `limit`.
pub fn wait_dead(pid: i32, limit: Duration) {
    let deadline = Instant::now() + limit;
    while !is_dead(pid) {
        assert!(
            Instant::now() < deadline,
            "process {pid} still alive after {limit:?}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Every live (not zombie) descendant of `pid`, from /proc.
pub fn descendants(pid: u32) -> Vec<i32> {
    let mut parent = std::collections::HashMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(p) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok())
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
                continue;
            };
            // "pid (comm) state ppid ...": comm may hold spaces, so split after the last ')'.
            let mut rest = stat.rsplit(')').next().unwrap_or("").split_whitespace();
            let state = rest.next().unwrap_or("");
            let ppid = rest.next().and_then(|s| s.parse::<i32>().ok()).unwrap_or(0);
            if state != "Z" && state != "X" {
                parent.insert(p, ppid);
            }
        }
    }
    let mut found = vec![pid as i32];
    let mut i = 0;
    while i < found.len() {
        let me = found[i];
        found.extend(parent.iter().filter(|(_, pp)| **pp == me).map(|(p, _)| *p));
        i += 1;
    }
    found.remove(0);
    found
}

/// Waits until `pid` has no more than `max` live descendants, failing after `limit` with how many.
pub fn wait_descendants_at_most(pid: u32, max: usize, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let n = descendants(pid).len();
        if n <= max {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{n} processes under {pid} after {limit:?} (at most {max} expected)"
        );
        thread::sleep(Duration::from_millis(50));
    }
}
