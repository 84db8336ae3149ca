//! `sockit send` / `sockit recv` (issue #16), tested against the contract (CLI and wire) rather
//! than the implementation: real processes on 127.0.0.1 (port 0, the bound address read back from
//! the `listening on` line), temporary folders, and peers written here: a proxy that throttles,
//! counts, captures or flips a byte, a crafted sender that writes the wire frames itself, and
//! python3 programs written like the tutorial's md5 sender and receiver. Every wait is bounded.
//!
//! Readings of the contract these tests rely on (see the report of the branch for the list):
//! a folder `D` sent with `send D` arrives as `OUT/<name of D>/...` (its relative paths start with
//! the folder's own name, as with `scp -r` or croc); a partial's length is what the receiver
//! holds; a one-shot `recv` exits 1 when any offered file was refused or failed.
use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, UNIX_EPOCH};

use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_sockit");

/// For anything small (a few MiB in a debug build, on a shared two-core machine).
const SHORT: Duration = Duration::from_secs(60);
/// For the transfers of 100 MiB and more.
const LONG: Duration = Duration::from_secs(300);

const MIB: u64 = 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// Processes

/// `sockit ARGS...`, with no password inherited from the environment.
fn sockit(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env_remove("SOCKIT_PASSWORD");
    cmd
}

/// A running process whose stdout and stderr are collected in the background; killed on drop.
struct Proc {
    child: Child,
    out: Arc<Mutex<Vec<u8>>>,
    err: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
    what: String,
}

/// How a process ended.
struct Done {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Done {
    fn ok(&self) -> bool {
        self.code == Some(0)
    }

    /// The `--json` document on stdout.
    fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "stdout is not one JSON document ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

impl std::fmt::Display for Done {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout:\n{}\n--- stderr:\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

impl Proc {
    fn spawn(mut cmd: Command) -> Proc {
        let what = format!("{cmd:?}");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        let out = Arc::new(Mutex::new(Vec::new()));
        let err = Arc::new(Mutex::new(String::new()));
        let mut pipe_out = child.stdout.take().unwrap();
        let mut pipe_err = child.stderr.take().unwrap();
        let sink_out = out.clone();
        let sink_err = err.clone();
        let readers = vec![
            thread::spawn(move || {
                let mut buf = [0u8; 8192];
                while let Ok(n) = pipe_out.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    sink_out.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            }),
            thread::spawn(move || {
                let mut buf = [0u8; 8192];
                while let Ok(n) = pipe_err.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    sink_err
                        .lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }),
        ];
        Proc {
            child,
            out,
            err,
            readers,
            what,
        }
    }

    fn sockit(args: &[&str]) -> Proc {
        Proc::spawn(sockit(args))
    }

    fn stderr(&self) -> String {
        self.err.lock().unwrap().clone()
    }

    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().unwrap()).into_owned()
    }

    /// Waits until stderr contains `needle` and returns stderr; fails after `limit` or if the
    /// process exits first.
    fn wait_stderr(&mut self, needle: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let text = self.stderr();
            if text.contains(needle) {
                return text;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                // One more look: the reader may have been behind the exit.
                thread::sleep(Duration::from_millis(50));
                let text = self.stderr();
                if text.contains(needle) {
                    return text;
                }
                panic!(
                    "{} exited ({status}) without {needle:?} on stderr:\n{text}",
                    self.what
                );
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} on stderr of {} after {limit:?}:\n{text}",
                self.what
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// The address of the `... listening on ADDR (...)` line.
    fn listening(&mut self) -> SocketAddr {
        let text = self.wait_stderr("listening on ", SHORT);
        let line = text
            .lines()
            .find(|l| l.contains("listening on "))
            .unwrap()
            .to_string();
        // The line may still be arriving: wait for its end.
        let full = self.wait_stderr(&format!("{line}\n"), SHORT);
        let line = full.lines().find(|l| l.contains("listening on ")).unwrap();
        let rest = line.split("listening on ").nth(1).unwrap();
        let addr = rest.split_whitespace().next().unwrap();
        addr.parse()
            .unwrap_or_else(|_| panic!("not an address in {line:?}"))
    }

    /// A line of stdout (the python peers print their port first).
    fn wait_stdout_line(&mut self, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let text = self.stdout();
            if let Some(line) = text.lines().next().filter(|_| text.contains('\n')) {
                return line.to_string();
            }
            if self.child.try_wait().unwrap().is_some() {
                thread::sleep(Duration::from_millis(50));
                panic!(
                    "{} exited before printing a line:\n{}\n{}",
                    self.what,
                    self.stdout(),
                    self.stderr()
                );
            }
            assert!(Instant::now() < deadline, "no line from {}", self.what);
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// SIGKILL, and wait for it.
    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child touches no memory of ours.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// Waits for the exit (killing it and failing the test after `limit`).
    fn finish(mut self, limit: Duration) -> Done {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "{} still running after {limit:?}; stdout:\n{}\nstderr:\n{}",
                    self.what,
                    self.stdout(),
                    self.stderr()
                );
            }
            thread::sleep(Duration::from_millis(10));
        };
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        Done {
            code: status.code(),
            stdout: self.stdout(),
            stderr: self.stderr(),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `sockit ARGS` to the end within `limit`.
fn run_sockit(args: &[&str], limit: Duration) -> Done {
    Proc::sockit(args).finish(limit)
}

/// `recv DIR --listen 127.0.0.1:0 EXTRA...`, started, with its address.
fn start_recv(dir: &Path, extra: &[&str]) -> (Proc, SocketAddr) {
    let mut args = vec!["recv", dir.to_str().unwrap(), "--listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let mut p = Proc::sockit(&args);
    let addr = p.listening();
    (p, addr)
}

/// `send PATHS... ADDR EXTRA...`, started.
fn start_send(paths: &[&Path], addr: SocketAddr, extra: &[&str]) -> Proc {
    let addr = addr.to_string();
    let mut args = vec!["send"];
    args.extend(paths.iter().map(|p| p.to_str().unwrap()));
    args.push(&addr);
    args.extend_from_slice(extra);
    Proc::sockit(&args)
}

/// The error is exactly one line starting with `sockit`.
fn assert_one_line(err: &str, what: &str) {
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "{what}: expected one line on stderr, got:\n{err}"
    );
    assert!(lines[0].starts_with("sockit"), "{what}: {err}");
}

// ---------------------------------------------------------------------------------------------
// Data and trees

/// xorshift64*: fast, seeded, good enough to make every MiB of a file different.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let last = self.next().to_le_bytes();
        let n = rest.len();
        rest.copy_from_slice(&last[..n]);
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; n];
    Rng::new(seed).fill(&mut v);
    v
}

/// Writes `size` seeded random bytes to `path`, 1 MiB at a time.
fn write_random(path: &Path, size: u64, seed: u64) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    let mut f = std::io::BufWriter::new(fs::File::create(path).unwrap());
    let mut rng = Rng::new(seed);
    let mut buf = vec![0u8; MIB as usize];
    let mut left = size;
    while left > 0 {
        let n = left.min(MIB) as usize;
        rng.fill(&mut buf[..n]);
        f.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
    f.flush().unwrap();
}

fn set_mtime(path: &Path, secs: u64, nsec: u32) {
    let t = UNIX_EPOCH + Duration::new(secs, nsec);
    let f = fs::File::options().write(true).open(path).unwrap();
    f.set_modified(t).unwrap();
}

fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Whether two files hold the same bytes (compared 1 MiB at a time, never whole in memory).
fn same_content(a: &Path, b: &Path) -> Result<(), String> {
    let ma = fs::metadata(a).map_err(|e| format!("{}: {e}", a.display()))?;
    let mb = fs::metadata(b).map_err(|e| format!("{}: {e}", b.display()))?;
    if ma.len() != mb.len() {
        return Err(format!(
            "{} has {} bytes, {} has {}",
            a.display(),
            ma.len(),
            b.display(),
            mb.len()
        ));
    }
    let mut fa = fs::File::open(a).unwrap();
    let mut fb = fs::File::open(b).unwrap();
    let mut ba = vec![0u8; MIB as usize];
    let mut bb = vec![0u8; MIB as usize];
    let mut at = 0u64;
    loop {
        let n = read_full(&mut fa, &mut ba);
        let m = read_full(&mut fb, &mut bb);
        if n != m || ba[..n] != bb[..m] {
            let first = ba[..n.min(m)]
                .iter()
                .zip(&bb[..n.min(m)])
                .position(|(x, y)| x != y)
                .unwrap_or(n.min(m));
            return Err(format!(
                "{} and {} differ at byte {}",
                a.display(),
                b.display(),
                at + first as u64
            ));
        }
        if n == 0 {
            return Ok(());
        }
        at += n as u64;
    }
}

fn read_full(f: &mut fs::File, buf: &mut [u8]) -> usize {
    let mut got = 0;
    while got < buf.len() {
        match f.read(&mut buf[got..]).unwrap() {
            0 => break,
            n => got += n,
        }
    }
    got
}

fn assert_same(a: &Path, b: &Path) {
    if let Err(e) = same_content(a, b) {
        panic!("{e}");
    }
}

fn blake3_file(path: &Path) -> String {
    let mut h = blake3::Hasher::new();
    let mut f = fs::File::open(path).unwrap();
    let mut buf = vec![0u8; MIB as usize];
    loop {
        let n = read_full(&mut f, &mut buf);
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    h.finalize().to_hex().to_string()
}

/// Every entry under `root`, by relative path ('/'-separated), with its metadata (not following
/// symlinks).
fn walk(root: &Path) -> BTreeMap<String, fs::Metadata> {
    fn go(root: &Path, dir: &Path, out: &mut BTreeMap<String, fs::Metadata>) {
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let path = e.path();
            let meta = fs::symlink_metadata(&path).unwrap();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_str()
                .unwrap()
                .to_string();
            if meta.is_dir() {
                go(root, &path, out);
            }
            out.insert(rel, meta);
        }
    }
    let mut out = BTreeMap::new();
    go(root, root, &mut out);
    out
}

/// The partials `DIR/.NAME.<16 hex>.sockit-part` beside `final_path`, with their lengths.
fn partials_of(final_path: &Path) -> Vec<(PathBuf, u64)> {
    let dir = final_path.parent().unwrap();
    let name = final_path.file_name().unwrap().to_str().unwrap();
    let prefix = format!(".{name}.");
    let Ok(rd) = fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok())
        .filter_map(|e| {
            let n = e.file_name().to_str()?.to_string();
            let hex = n.strip_prefix(&prefix)?.strip_suffix(".sockit-part")?;
            if hex.len() == 16 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
                Some((e.path(), e.metadata().ok()?.len()))
            } else {
                None
            }
        })
        .collect()
}

/// Every `*.sockit-part` anywhere under `root`.
fn all_partials(root: &Path) -> Vec<String> {
    walk(root)
        .into_keys()
        .filter(|k| k.ends_with(".sockit-part"))
        .collect()
}

fn mtime_of(meta: &fs::Metadata) -> (i64, i64) {
    (meta.mtime(), meta.mtime_nsec())
}

/// Compares the tree `src` with `dst`: the same entries, byte-identical files, the same modes
/// (files and folders) and file modification times. Returns the differences.
fn tree_differences(src: &Path, dst: &Path) -> Vec<String> {
    let a = walk(src);
    let b = walk(dst);
    let mut diffs = Vec::new();
    for (rel, ma) in &a {
        let Some(mb) = b.get(rel) else {
            diffs.push(format!("{rel}: missing"));
            continue;
        };
        if ma.is_dir() != mb.is_dir() {
            diffs.push(format!("{rel}: file/folder mismatch"));
            continue;
        }
        let (pa, pb) = (ma.mode() & 0o7777, mb.mode() & 0o7777);
        if pa != pb {
            diffs.push(format!("{rel}: mode {pb:o}, sent {pa:o}"));
        }
        if ma.is_file() {
            if let Err(e) = same_content(&src.join(rel), &dst.join(rel)) {
                diffs.push(e);
            }
            if mtime_of(ma) != mtime_of(mb) {
                diffs.push(format!(
                    "{rel}: mtime {:?}, sent {:?}",
                    mtime_of(mb),
                    mtime_of(ma)
                ));
            }
        }
    }
    for rel in b.keys() {
        if !a.contains_key(rel) {
            diffs.push(format!("{rel}: not sent but present"));
        }
    }
    diffs
}

/// A tree of `tree/`: files of random sizes (0 bytes too), nested folders, an empty folder,
/// various modes and nanosecond mtimes, and optionally one file over 100 MiB.
/// Returns the number of files and their total size.
fn make_tree(root: &Path, seed: u64, big: bool) -> (u64, u64) {
    let mut rng = Rng::new(seed);
    let mut files = 0u64;
    let mut bytes = 0u64;
    let mut add = |rel: &str, size: u64, mode: u32, rng: &mut Rng| {
        let p = root.join(rel);
        write_random(&p, size, rng.next());
        set_mode(&p, mode);
        set_mtime(
            &p,
            1_600_000_000 + rng.below(100_000_000),
            rng.below(1_000_000_000) as u32,
        );
        files += 1;
        bytes += size;
    };
    add("empty.txt", 0, 0o644, &mut rng);
    add("one.txt", 1, 0o600, &mut rng);
    add("run.sh", 4000 + rng.below(4000), 0o755, &mut rng);
    for i in 0..12 {
        let size = match i % 4 {
            0 => rng.below(100),
            1 => rng.below(70_000),
            2 => rng.below(3 * MIB),
            _ => MIB - 1 + rng.below(3),
        };
        let rel = match i % 3 {
            0 => format!("f{i}.bin"),
            1 => format!("sub/f{i}.bin"),
            _ => format!("sub/deeper/still/f{i}.bin"),
        };
        add(&rel, size, [0o644, 0o640, 0o600, 0o755][i % 4], &mut rng);
    }
    add("sub/zero-too", 0, 0o644, &mut rng);
    add("sp ace é.txt", 123, 0o644, &mut rng);
    if big {
        add("big.bin", 100 * MIB + 12345, 0o644, &mut rng);
    }
    fs::create_dir_all(root.join("sub/empty-folder")).unwrap();
    fs::create_dir_all(root.join("empty-top")).unwrap();
    set_mode(&root.join("sub/deeper"), 0o750);
    (files, bytes)
}

// ---------------------------------------------------------------------------------------------
// A proxy between the two ends

/// What the proxy does to the bytes from the connecting side (the "upstream").
#[derive(Clone, Copy, PartialEq)]
enum Tamper {
    Nothing,
    /// Flips one byte in the middle of the first file-data frame (kind 1) of the upstream, which
    /// it parses as the contract's frames.
    FlipData,
    /// Forwards this many upstream bytes, then cuts the connection (both ways).
    CutAt(u64),
}

/// A TCP proxy on 127.0.0.1:0 to `target`: counts the upstream bytes of each connection,
/// captures both directions, can throttle the upstream and flip one byte of file data.
struct Proxy {
    addr: SocketAddr,
    /// Upstream bytes, one counter per accepted connection.
    counts: Arc<Mutex<Vec<Arc<AtomicU64>>>>,
    /// Everything that passed, both directions, per connection.
    captured: Arc<Mutex<Vec<u8>>>,
    /// Upstream bytes per second; 0 = as fast as it goes.
    rate: Arc<AtomicU64>,
    flipped: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    fn start(target: SocketAddr, tamper: Tamper) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let proxy = Proxy {
            addr,
            counts: Arc::default(),
            captured: Arc::default(),
            rate: Arc::default(),
            flipped: Arc::default(),
            stop: Arc::default(),
        };
        let (counts, captured, rate, flipped, stop) = (
            proxy.counts.clone(),
            proxy.captured.clone(),
            proxy.rate.clone(),
            proxy.flipped.clone(),
            proxy.stop.clone(),
        );
        thread::spawn(move || {
            // Bounded: no test here needs more than a handful of connections.
            for _ in 0..32 {
                let Ok((client, _)) = listener.accept() else {
                    return;
                };
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                let count = Arc::new(AtomicU64::new(0));
                counts.lock().unwrap().push(count.clone());
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (cap1, cap2) = (captured.clone(), captured.clone());
                let (rate, flipped) = (rate.clone(), flipped.clone());
                thread::spawn(move || {
                    pump(client, server, count, cap1, rate, tamper, flipped);
                });
                thread::spawn(move || {
                    pump(
                        s2,
                        c2,
                        Arc::new(AtomicU64::new(0)),
                        cap2,
                        Arc::new(AtomicU64::new(0)),
                        Tamper::Nothing,
                        Arc::default(),
                    );
                });
            }
        });
        proxy
    }

    /// Upstream bytes of connection `i` (0-based), once it has been accepted.
    fn upstream(&self, i: usize) -> u64 {
        self.counts
            .lock()
            .unwrap()
            .get(i)
            .map_or(0, |c| c.load(Ordering::SeqCst))
    }

    fn captured(&self) -> Vec<u8> {
        self.captured.lock().unwrap().clone()
    }

    fn throttle(&self, bytes_per_sec: u64) {
        self.rate.store(bytes_per_sec, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

/// A parser of the sender's frames, to find file data in the stream.
struct FrameScan {
    /// Bytes of the magic and version still to skip.
    magic_left: usize,
    header: Vec<u8>,
    kind: u8,
    len: u64,
    pos: u64,
}

impl FrameScan {
    fn new() -> FrameScan {
        FrameScan {
            magic_left: 9,
            header: Vec::new(),
            kind: 0,
            len: 0,
            pos: 0,
        }
    }

    /// Walks `buf`; flips the byte in the middle of the first data frame of at least 2 bytes,
    /// once. Returns whether it flipped one.
    fn scan(&mut self, buf: &mut [u8], done: &AtomicBool) -> bool {
        let mut i = 0;
        while i < buf.len() {
            if self.magic_left > 0 {
                let n = self.magic_left.min(buf.len() - i);
                self.magic_left -= n;
                i += n;
            } else if self.header.len() < 5 {
                self.header.push(buf[i]);
                i += 1;
                if self.header.len() == 5 {
                    self.kind = self.header[0];
                    self.len = u32::from_be_bytes(self.header[1..5].try_into().unwrap()) as u64;
                    self.pos = 0;
                    if self.len == 0 {
                        self.header.clear();
                    }
                }
            } else {
                let n = ((self.len - self.pos) as usize).min(buf.len() - i);
                let target = self.len / 2;
                if self.kind == 1
                    && self.len >= 2
                    && !done.load(Ordering::SeqCst)
                    && target >= self.pos
                    && target < self.pos + n as u64
                {
                    buf[i + (target - self.pos) as usize] ^= 0x20;
                    done.store(true, Ordering::SeqCst);
                }
                self.pos += n as u64;
                i += n;
                if self.pos == self.len {
                    self.header.clear();
                }
            }
        }
        done.load(Ordering::SeqCst)
    }
}

fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    count: Arc<AtomicU64>,
    captured: Arc<Mutex<Vec<u8>>>,
    rate: Arc<AtomicU64>,
    tamper: Tamper,
    flipped: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut scan = FrameScan::new();
    let started = Instant::now();
    let mut sent = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => n,
            Err(_) => break,
        };
        if tamper == Tamper::FlipData {
            scan.scan(&mut buf[..n], &flipped);
        }
        let mut n = n;
        let mut cut = false;
        if let Tamper::CutAt(at) = tamper {
            if sent + n as u64 >= at {
                n = (at - sent) as usize;
                cut = true;
            }
        }
        {
            let mut cap = captured.lock().unwrap();
            // Bounded capture: the handshake and the start of the data are what matter.
            if cap.len() < 64 * MIB as usize {
                cap.extend_from_slice(&buf[..n]);
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        sent += n as u64;
        count.fetch_add(n as u64, Ordering::SeqCst);
        if cut {
            break;
        }
        // Throttling (not synchronisation): keep the upstream at or under the rate.
        let r = rate.load(Ordering::SeqCst);
        if r > 0 {
            let due = Duration::from_secs_f64(sent as f64 / r as f64);
            let elapsed = started.elapsed();
            if due > elapsed {
                thread::sleep((due - elapsed).min(Duration::from_millis(200)));
            }
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

// ---------------------------------------------------------------------------------------------
// A crafted sender speaking the wire protocol itself

struct Wire {
    s: TcpStream,
}

impl Wire {
    fn connect(addr: SocketAddr) -> Wire {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.set_nodelay(true).unwrap();
        Wire { s }
    }

    fn raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.s.write_all(bytes)
    }

    fn frame(&mut self, kind: u8, payload: &[u8]) -> std::io::Result<()> {
        let mut f = Vec::with_capacity(5 + payload.len());
        f.push(kind);
        f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        f.extend_from_slice(payload);
        self.s.write_all(&f)
    }

    fn control(&mut self, v: &Value) -> std::io::Result<()> {
        self.frame(0, v.to_string().as_bytes())
    }

    /// File data in frames of at most 1 MiB.
    fn data(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        for chunk in bytes.chunks(MIB as usize) {
            self.frame(1, chunk)?;
        }
        Ok(())
    }

    fn read_frame(&mut self) -> std::io::Result<(u8, Vec<u8>)> {
        let mut h = [0u8; 5];
        self.s.read_exact(&mut h)?;
        let len = u32::from_be_bytes(h[1..5].try_into().unwrap()) as usize;
        assert!(len <= 16 * MIB as usize, "frame of {len} bytes from recv");
        let mut p = vec![0u8; len];
        self.s.read_exact(&mut p)?;
        Ok((h[0], p))
    }

    /// The next control message (panics on anything else).
    fn read_control(&mut self) -> std::io::Result<Value> {
        let (kind, p) = self.read_frame()?;
        assert_eq!(kind, 0, "recv sent a frame of kind {kind}");
        Ok(serde_json::from_slice(&p).expect("recv's control message is JSON"))
    }

    /// Magic, version, hello without auth; returns the welcome.
    fn hello(&mut self) -> Value {
        self.raw(b"SOCKITXF\x01").unwrap();
        self.control(
            &json!({"type":"hello","version":1,"auth":false,"spake":null,"compress":false}),
        )
        .unwrap();
        let welcome = self.read_control().expect("welcome");
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        welcome
    }
}

fn file_entry(path: &str, size: u64) -> Value {
    json!({"path": path, "kind": "file", "size": size, "mode": 420, "mtime": 1_700_000_000u64, "mtime_nsec": 0})
}

/// The plan's line for entry `index`.
fn plan_for(plan: &Value, index: usize) -> Option<Value> {
    plan["files"]
        .as_array()?
        .iter()
        .find(|f| f["index"].as_u64() == Some(index as u64))
        .cloned()
}

// ---------------------------------------------------------------------------------------------
// 1. A tree arrives byte-identical, with modes, times and empty folders

#[test]
fn tree_with_a_big_file_arrives_identical_with_modes_and_times() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("tree");
    let out = tmp.path().join("out");
    fs::create_dir_all(&out).unwrap();
    let (files, bytes) = make_tree(&src, 1, true);

    let (recv, addr) = start_recv(&out, &["--json"]);
    let send = start_send(&[&src], addr, &["--json"]);
    let s = send.finish(LONG);
    let r = recv.finish(LONG);
    assert!(s.ok(), "send: {s}");
    assert!(r.ok(), "recv: {r}");

    let got = out.join("tree");
    assert!(
        got.is_dir(),
        "the folder does not arrive as OUT/tree: {:?}",
        walk(&out).keys().collect::<Vec<_>>()
    );
    let diffs = tree_differences(&src, &got);
    assert!(diffs.is_empty(), "differences:\n{}", diffs.join("\n"));
    assert!(got.join("sub/empty-folder").is_dir());
    assert!(got.join("empty-top").is_dir());
    assert!(all_partials(&out).is_empty(), "{:?}", all_partials(&out));

    for (role, done) in [("send", &s), ("recv", &r)] {
        let j = done.json();
        assert_eq!(j["role"], role, "{j}");
        assert_eq!(j["ok"], true, "{j}");
        assert_eq!(j["files"].as_u64(), Some(files), "{role} files: {j}");
        assert_eq!(j["bytes"].as_u64(), Some(bytes), "{role} bytes: {j}");
        assert_eq!(j["skipped"].as_u64(), Some(0), "{j}");
        assert_eq!(j["failed"].as_u64(), Some(0), "{j}");
        assert!(j["seconds"].is_number() && j["mb_per_s"].is_number(), "{j}");
        let digest = j["digest"].as_str().unwrap_or_default();
        assert!(
            !digest.is_empty() && digest.chars().all(|c| c.is_ascii_hexdigit()),
            "{j}"
        );
        let entries = j["entries"].as_array().expect("entries");
        for (rel, meta) in walk(&src) {
            if !meta.is_file() {
                continue;
            }
            let path = format!("tree/{rel}");
            let e = entries
                .iter()
                .find(|e| e["path"] == path.as_str())
                .unwrap_or_else(|| panic!("{role}: no entry {path} in {j}"));
            assert_eq!(e["status"], "ok", "{role}: {e}");
            assert_eq!(e["bytes"].as_u64(), Some(meta.len()), "{role}: {e}");
            if meta.len() < 8 * MIB {
                assert_eq!(
                    e["blake3"].as_str(),
                    Some(blake3_file(&src.join(&rel)).as_str()),
                    "{role}: {e}"
                );
            }
        }
    }
    assert_eq!(
        s.json()["digest"],
        r.json()["digest"],
        "the two ends' session digests differ"
    );
    // The big one's digest too (hashed last: it is the slow one in a debug build).
    let big = blake3_file(&src.join("big.bin"));
    let entry = r.json()["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"] == "tree/big.bin")
        .cloned()
        .unwrap();
    assert_eq!(entry["blake3"].as_str(), Some(big.as_str()), "{entry}");
}

// ---------------------------------------------------------------------------------------------
// 2. Several paths in one session; recv -k serves sessions one after another

#[test]
fn several_paths_in_one_session_and_keep_serving_sessions() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let out = tmp.path().join("out");
    fs::create_dir_all(&out).unwrap();
    write_random(&src.join("a.txt"), 1000, 1);
    write_random(&src.join("b.bin"), 2 * MIB + 3, 2);
    write_random(&src.join("dir1/x.bin"), 5000, 3);
    write_random(&src.join("dir1/inner/y.bin"), 0, 4);
    fs::create_dir_all(src.join("dir1/hollow")).unwrap();
    write_random(&src.join("later/c.txt"), 777, 5);
    for (i, f) in ["a.txt", "b.bin", "dir1/x.bin", "later/c.txt"]
        .iter()
        .enumerate()
    {
        set_mtime(&src.join(f), 1_650_000_000 + i as u64, 5000 * i as u32);
    }

    let (mut recv, addr) = start_recv(&out, &["-k"]);
    let s1 = start_send(
        &[&src.join("a.txt"), &src.join("dir1"), &src.join("b.bin")],
        addr,
        &["--json"],
    )
    .finish(SHORT);
    assert!(s1.ok(), "first session: {s1}");
    assert_eq!(s1.json()["files"].as_u64(), Some(4), "{s1}");
    assert_same(&src.join("a.txt"), &out.join("a.txt"));
    assert_same(&src.join("b.bin"), &out.join("b.bin"));
    assert!(
        tree_differences(&src.join("dir1"), &out.join("dir1")).is_empty(),
        "{:?}",
        tree_differences(&src.join("dir1"), &out.join("dir1"))
    );
    assert!(recv.running(), "recv -k ended after one session");

    // The second session: a new file, and a.txt again (same size and mtime: "skipped").
    let s2 = start_send(
        &[&src.join("later/c.txt"), &src.join("a.txt")],
        addr,
        &["--json"],
    )
    .finish(SHORT);
    assert!(s2.ok(), "second session: {s2}");
    assert_same(&src.join("later/c.txt"), &out.join("c.txt"));
    let j = s2.json();
    assert_eq!(j["skipped"].as_u64(), Some(1), "a.txt not skipped: {j}");
    let a = j["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"] == "a.txt")
        .cloned()
        .unwrap_or_else(|| panic!("no a.txt entry: {j}"));
    assert_eq!(a["status"], "skipped", "{a}");
    assert!(recv.running(), "recv -k ended after two sessions");

    recv.signal(libc::SIGTERM);
    let r = recv.finish(SHORT);
    assert!(r.code.is_some(), "recv -k did not exit on SIGTERM: {r}");
}

// ---------------------------------------------------------------------------------------------
// 3. The other direction: send --listen, recv HOST:PORT

#[test]
fn reverse_direction_send_listens_recv_fetches() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("tree");
    let out = tmp.path().join("out");
    fs::create_dir_all(&out).unwrap();
    make_tree(&src, 3, false);
    write_random(&tmp.path().join("single.bin"), 300_000, 9);

    let mut send = Proc::sockit(&[
        "send",
        "--listen=127.0.0.1:0",
        src.to_str().unwrap(),
        tmp.path().join("single.bin").to_str().unwrap(),
    ]);
    let addr = send.listening();
    let r = run_sockit(
        &["recv", out.to_str().unwrap(), &addr.to_string(), "--json"],
        SHORT,
    );
    let s = send.finish(SHORT);
    assert!(r.ok(), "recv: {r}");
    assert!(s.ok(), "send --listen: {s}");
    let diffs = tree_differences(&src, &out.join("tree"));
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
    assert_same(&tmp.path().join("single.bin"), &out.join("single.bin"));
    assert_eq!(r.json()["role"], "recv");
    assert_eq!(r.json()["ok"], true);
}

/// `recv HOST:PORT` with no folder stores in the current one.
#[test]
fn reverse_direction_default_folder_is_the_current_one() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    fs::create_dir_all(&out).unwrap();
    let file = tmp.path().join("f.bin");
    write_random(&file, 4321, 11);
    let mut send = Proc::sockit(&["send", "--listen=127.0.0.1:0", file.to_str().unwrap()]);
    let addr = send.listening();
    let mut cmd = sockit(&["recv", &addr.to_string()]);
    cmd.current_dir(&out);
    let r = Proc::spawn(cmd).finish(SHORT);
    let s = send.finish(SHORT);
    assert!(r.ok(), "recv: {r}");
    assert!(s.ok(), "send: {s}");
    assert_same(&file, &out.join("f.bin"));
}

// ---------------------------------------------------------------------------------------------
// 4. Resume after a kill at either end; a changed source restarts the file

const RESUME_SIZE: u64 = 64 * MIB + 4097;
/// Kill once the partial holds at least this much.
const RESUME_AT: u64 = 6 * MIB;
/// What the sender may send again on top of what the receiver is missing (frame headers,
/// control messages, a receiver that rewinds to a checkpoint).
const RESUME_SLACK: u64 = 4 * MIB;

/// Waits until the partial of `final_path` holds at least `at` bytes; returns its length.
fn wait_partial(final_path: &Path, at: u64, sender: &mut Proc) -> u64 {
    let deadline = Instant::now() + LONG;
    loop {
        if let Some((_, len)) = partials_of(final_path).into_iter().max_by_key(|p| p.1) {
            if len >= at {
                return len;
            }
        }
        assert!(
            sender.running(),
            "the sender ended before the partial reached {at} bytes:\n{}",
            sender.stderr()
        );
        assert!(
            Instant::now() < deadline,
            "no partial of {} with {at} bytes; folder: {:?}",
            final_path.display(),
            walk(final_path.parent().unwrap())
                .keys()
                .collect::<Vec<_>>()
        );
        thread::sleep(Duration::from_millis(5));
    }
}

fn held(final_path: &Path) -> u64 {
    partials_of(final_path)
        .into_iter()
        .map(|p| p.1)
        .max()
        .unwrap_or(0)
}

#[test]
fn resume_after_the_sender_is_killed() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("big.bin");
    let out = tmp.path().join("out");
    fs::create_dir_all(&out).unwrap();
    write_random(&src, RESUME_SIZE, 41);
    set_mtime(&src, 1_690_000_000, 123);

    let (mut recv, raddr) = start_recv(&out, &["-k"]);
    let proxy = Proxy::start(raddr, Tamper::Nothing);
    proxy.throttle(16 * MIB);
    let mut send = start_send(&[&src], proxy.addr, &[]);
    wait_partial(&out.join("big.bin"), RESUME_AT, &mut send);
    send.kill9();
    assert!(!out.join("big.bin").exists(), "a final file after the kill");
    let first = proxy.upstream(0);
    let kept = held(&out.join("big.bin")).min(first);
    assert!(kept >= RESUME_AT, "partial gone after the kill: {kept}");
    assert!(recv.running(), "recv -k ended with the cut session");

    proxy.throttle(0);
    let s = start_send(&[&src], proxy.addr, &["--json"]).finish(LONG);
    assert!(s.ok(), "the rerun: {s}");
    assert_same(&src, &out.join("big.bin"));
    assert!(partials_of(&out.join("big.bin")).is_empty());
    let again = proxy.upstream(1);
    eprintln!("resume (sender killed): held {kept}, the rerun sent {again} of {RESUME_SIZE}");
    assert!(
        again <= RESUME_SIZE - kept + RESUME_SLACK,
        "the rerun sent {again} bytes for a {RESUME_SIZE}-byte file of which the receiver held {kept}: not resumed"
    );
    assert_eq!(
        fs::metadata(out.join("big.bin")).unwrap().mtime(),
        1_690_000_000
    );
}

#[test]
fn resume_after_the_receiver_is_killed() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("big.bin");
    let out = tmp.path().join("out");
    fs::create_dir_all(&out).unwrap();
    write_random(&src, RESUME_SIZE, 42);

    let (mut recv, raddr) = start_recv(&out, &[]);
    let proxy = Proxy::start(raddr, Tamper::Nothing);
    proxy.throttle(16 * MIB);
    let mut send = start_send(&[&src], proxy.addr, &[]);
    wait_partial(&out.join("big.bin"), RESUME_AT, &mut send);
    recv.kill9();
    let s = send.finish(SHORT);
    assert!(
        !s.ok(),
        "the sender did not notice the receiver's death: {s}"
    );
    assert!(!out.join("big.bin").exists());
    let kept = held(&out.join("big.bin")).min(proxy.upstream(0));
    assert!(kept >= RESUME_AT, "partial gone after the kill: {kept}");

    // A new receiver on the same folder, a new path to it.
    let (recv, raddr) = start_recv(&out, &[]);
    let proxy2 = Proxy::start(raddr, Tamper::Nothing);
    let s = start_send(&[&src], proxy2.addr, &[]).finish(LONG);
    let r = recv.finish(SHORT);
    assert!(s.ok(), "the rerun: {s}");
    assert!(r.ok(), "the new receiver: {r}");
    assert_same(&src, &out.join("big.bin"));
    let again = proxy2.upstream(0);
    eprintln!("resume (receiver killed): held {kept}, the rerun sent {again} of {RESUME_SIZE}");
    assert!(
        again <= RESUME_SIZE - kept + RESUME_SLACK,
        "the rerun sent {again} bytes, the receiver held {kept} of {RESUME_SIZE}: not resumed"
    );
}

#[test]
fn a_changed_source_restarts_the_file_instead_of_splicing() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("big.bin");
    let out = tmp.path().join("out");
    fs::create_dir_all(&out).unwrap();
    write_random(&src, RESUME_SIZE, 43);
    set_mtime(&src, 1_690_000_000, 0);

    let (mut recv, raddr) = start_recv(&out, &["-k"]);
    let proxy = Proxy::start(raddr, Tamper::Nothing);
    proxy.throttle(16 * MIB);
    let mut send = start_send(&[&src], proxy.addr, &[]);
    wait_partial(&out.join("big.bin"), RESUME_AT, &mut send);
    send.kill9();
    assert!(recv.running());

    // The same size, other bytes everywhere (the part the receiver holds too), another mtime.
    write_random(&src, RESUME_SIZE, 4343);
    set_mtime(&src, 1_690_000_500, 0);
    proxy.throttle(0);
    let s = start_send(&[&src], proxy.addr, &[]).finish(LONG);
    assert!(s.ok(), "the rerun: {s}");
    assert_same(&src, &out.join("big.bin"));
    let again = proxy.upstream(1);
    assert!(
        again >= RESUME_SIZE,
        "the rerun sent only {again} bytes of the changed {RESUME_SIZE}-byte file"
    );
}

// ---------------------------------------------------------------------------------------------
// 5. A byte flipped in flight

#[test]
fn a_flipped_byte_in_flight_leaves_no_final_file_and_fails_both_ends() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("data.bin");
    let out = tmp.path().join("out");
    fs::create_dir_all(&out).unwrap();
    write_random(&src, 4 * MIB + 99, 5);

    let (recv, raddr) = start_recv(&out, &["--json"]);
    let proxy = Proxy::start(raddr, Tamper::FlipData);
    let s = start_send(&[&src], proxy.addr, &["--json"]).finish(SHORT);
    let r = recv.finish(SHORT);
    assert!(
        proxy.flipped.load(Ordering::SeqCst),
        "the proxy found no file-data frame to flip a byte in (is the stream framed as the contract says?)"
    );
    assert!(
        !out.join("data.bin").exists(),
        "a final file from corrupt data"
    );
    assert!(!s.ok() && s.code.is_some(), "send: {s}");
    assert!(!r.ok() && r.code.is_some(), "recv: {r}");
    assert_eq!(r.json()["ok"], false, "{r}");
    assert_eq!(s.json()["ok"], false, "{s}");
    assert_eq!(r.json()["failed"].as_u64(), Some(1), "{r}");
}

// ---------------------------------------------------------------------------------------------
// 6. Hostile input from a crafted sender

/// One session from the crafted sender: a good file first, then `hostile` (a file of 5 bytes, or
/// a folder). Returns what went wrong, if anything.
fn hostile_session(hostile: &str, kind: &str) -> Vec<String> {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let dir = root.join("dest");
    let outside = root.join("outside");
    fs::create_dir_all(&dir).unwrap();
    fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, dir.join("link")).unwrap();
    let hostile = hostile.replace("{ROOT}", root.to_str().unwrap());

    let (recv, addr) = start_recv(&dir, &[]);
    let mut w = Wire::connect(addr);
    w.hello();
    let bad = if kind == "dir" {
        json!({"path": hostile, "kind": "dir", "size": 0, "mode": 493, "mtime": 1_700_000_000u64, "mtime_nsec": 0})
    } else {
        file_entry(&hostile, 5)
    };
    w.control(&json!({"type":"offer","entries":[file_entry("good.txt", 4), bad]}))
        .unwrap();
    let mut problems = Vec::new();
    let plan = w.read_control().expect("plan");
    assert_eq!(plan["type"], "plan", "{plan}");
    let good = plan_for(&plan, 0).unwrap_or_else(|| panic!("no plan for good.txt: {plan}"));
    assert_eq!(good["action"], "send", "{plan}");
    match plan_for(&plan, 1) {
        Some(p) if p["action"] == "refuse" => {}
        None if kind == "dir" => {}
        other => problems.push(format!("{hostile:?}: planned {other:?}, not refused")),
    }
    let mut sends = vec![(0, b"good".to_vec())];
    if kind == "file" && plan_for(&plan, 1).is_some_and(|p| p["action"] == "send") {
        sends.push((1, b"EVIL!".to_vec()));
    }
    for (i, data) in sends {
        w.control(&json!({"type":"file","index":i,"offset":0}))
            .unwrap();
        w.data(&data).unwrap();
        w.control(
            &json!({"type":"end","index":i,"blake3":blake3::hash(&data).to_hex().to_string()}),
        )
        .unwrap();
    }
    w.control(&json!({"type":"done"})).unwrap();
    let result = w.read_control();
    let r = recv.finish(SHORT);
    if r.ok() {
        problems.push(format!("{hostile:?}: recv exit 0 after a refusal"));
    }
    match result {
        Ok(v) if v["type"] == "result" => {}
        other => problems.push(format!("{hostile:?}: no result message: {other:?}")),
    }
    if fs::read(dir.join("good.txt")).ok().as_deref() != Some(b"good") {
        problems.push(format!(
            "{hostile:?}: the good file beside it did not arrive ({r})"
        ));
    }
    let outside_now: Vec<String> = walk(&outside).into_keys().collect();
    if !outside_now.is_empty() {
        problems.push(format!(
            "{hostile:?}: written through the symlink: {outside_now:?}"
        ));
    }
    let root_now: Vec<String> = fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "dest" && n != "outside")
        .collect();
    if !root_now.is_empty() {
        problems.push(format!("{hostile:?}: written outside DIR: {root_now:?}"));
    }
    problems
}

#[test]
fn hostile_names_are_refused_and_nothing_is_written_outside() {
    let etc_x = Path::new("/etc/x");
    let etc_x_before = etc_x.exists();
    let mut problems = Vec::new();
    for name in [
        "../x",
        "{ROOT}/x",
        "/etc/x",
        "a/../../x",
        "a\\b",
        "..\\x",
        "C:x",
        "C:/x",
        "a\0b",
        "link/x",
        "link/../../x",
        "",
        "./../x",
    ] {
        problems.extend(hostile_session(name, "file"));
    }
    for name in ["../evil-dir", "{ROOT}/evil-dir", "link/evil-dir"] {
        problems.extend(hostile_session(name, "dir"));
    }
    if !etc_x_before && etc_x.exists() {
        let _ = fs::remove_file(etc_x);
        problems.push("/etc/x was written".into());
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Sends one file (index 0) of announced `size` by the closure's frames, then `done`; returns
/// recv's end and the final/partial state.
fn lying_session(
    size: u64,
    write: impl FnOnce(&mut Wire) -> std::io::Result<()>,
) -> (Done, PathBuf, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dest");
    fs::create_dir_all(&dir).unwrap();
    let (recv, addr) = start_recv(&dir, &[]);
    let mut w = Wire::connect(addr);
    w.hello();
    w.control(&json!({"type":"offer","entries":[file_entry("f.bin", size)]}))
        .unwrap();
    let plan = w.read_control().expect("plan");
    let p = plan_for(&plan, 0).unwrap_or_else(|| panic!("{plan}"));
    assert_eq!(p["action"], "send", "{plan}");
    assert_eq!(p["offset"].as_u64(), Some(0), "{plan}");
    w.control(&json!({"type":"file","index":0,"offset":0}))
        .unwrap();
    // The receiver may stop reading and close on a lie: write errors are expected then.
    let _ = write(&mut w);
    drop(w);
    let r = recv.finish(SHORT);
    (r, dir.join("f.bin"), tmp)
}

#[test]
fn more_data_than_announced_is_refused() {
    let data = random_bytes(2000, 61);
    let (r, f, _tmp) = lying_session(1000, |w| {
        w.data(&data)?;
        w.control(
            &json!({"type":"end","index":0,"blake3":blake3::hash(&data).to_hex().to_string()}),
        )?;
        w.control(&json!({"type":"done"}))?;
        let _ = w.read_control();
        Ok(())
    });
    assert!(!r.ok() && r.code.is_some(), "{r}");
    assert!(!f.exists(), "a final file from a lying size");
    for (p, len) in partials_of(&f) {
        assert!(
            len <= 1000,
            "{} holds {len} bytes of a 1000-byte file",
            p.display()
        );
    }
}

#[test]
fn fewer_bytes_than_announced_then_end_is_refused_and_the_partial_kept() {
    let data = random_bytes(MIB as usize, 62);
    let (r, f, _tmp) = lying_session(3 * MIB, |w| {
        w.data(&data)?;
        w.control(
            &json!({"type":"end","index":0,"blake3":blake3::hash(&data).to_hex().to_string()}),
        )?;
        w.control(&json!({"type":"done"}))?;
        let _ = w.read_control();
        Ok(())
    });
    assert!(!r.ok() && r.code.is_some(), "{r}");
    assert!(!f.exists(), "a final file shorter than announced");
    let parts = partials_of(&f);
    assert_eq!(parts.len(), 1, "the partial is not kept: {parts:?}\n{r}");
    assert!(parts[0].1 <= MIB, "{parts:?}");
}

#[test]
fn a_stream_cut_mid_file_keeps_the_partial() {
    let data = random_bytes(3 * MIB as usize, 63);
    let (r, f, _tmp) = lying_session(8 * MIB, |w| {
        w.data(&data)?;
        // Half a frame: a header announcing 1 MiB, then 100 KiB, then the connection ends.
        let mut h = vec![1u8];
        h.extend_from_slice(&(MIB as u32).to_be_bytes());
        w.raw(&h)?;
        w.raw(&random_bytes(100 * 1024, 64))?;
        w.s.shutdown(Shutdown::Both)
    });
    assert!(!r.ok() && r.code.is_some(), "{r}");
    assert!(!f.exists());
    let parts = partials_of(&f);
    assert_eq!(parts.len(), 1, "the partial is not kept: {parts:?}\n{r}");
    let len = parts[0].1;
    assert!(
        (MIB..=3 * MIB + 100 * 1024).contains(&len),
        "the partial holds {len} bytes of the {} received",
        3 * MIB
    );
}

/// Cuts at a few points before any data (inside the magic, the hello, the offer): recv ends with
/// a failure and writes nothing.
#[test]
fn a_stream_cut_before_the_data_fails_cleanly() {
    let mut session = b"SOCKITXF\x01".to_vec();
    for v in [
        json!({"type":"hello","version":1,"auth":false,"spake":null,"compress":false}),
        json!({"type":"offer","entries":[file_entry("f.bin", 10)]}),
    ] {
        let p = v.to_string();
        session.push(0);
        session.extend_from_slice(&(p.len() as u32).to_be_bytes());
        session.extend_from_slice(p.as_bytes());
    }
    let offer_at = session.len() - 20;
    for cut in [3usize, 9, 12, 30, offer_at] {
        let tmp = tempfile::tempdir().unwrap();
        let (recv, addr) = start_recv(tmp.path(), &[]);
        let mut w = Wire::connect(addr);
        w.raw(&session[..cut]).unwrap();
        w.s.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        let _ = w.s.read_to_end(&mut rest);
        let r = recv.finish(SHORT);
        assert!(!r.ok() && r.code.is_some(), "cut at {cut}: {r}");
        assert!(
            walk(tmp.path()).is_empty(),
            "cut at {cut}: {:?}",
            walk(tmp.path()).keys().collect::<Vec<_>>()
        );
    }
}

/// A data frame over 1 MiB is a protocol error: recv refuses it without buffering it.
#[test]
fn an_oversized_frame_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (recv, addr) = start_recv(tmp.path(), &[]);
    let mut w = Wire::connect(addr);
    w.hello();
    w.control(&json!({"type":"offer","entries":[file_entry("f.bin", 4 * MIB)]}))
        .unwrap();
    let _plan = w.read_control().expect("plan");
    w.control(&json!({"type":"file","index":0,"offset":0}))
        .unwrap();
    let mut h = vec![1u8];
    h.extend_from_slice(&(3 * MIB as u32).to_be_bytes());
    let _ = w.raw(&h);
    let _ = w.raw(&vec![7u8; 3 * MIB as usize]);
    drop(w);
    let r = recv.finish(SHORT);
    assert!(!r.ok() && r.code.is_some(), "{r}");
    assert!(!tmp.path().join("f.bin").exists());
}

// ---------------------------------------------------------------------------------------------
// 7. Existing files and --overwrite

#[test]
fn an_existing_file_is_kept_unless_overwrite() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let out = tmp.path().join("out");
    fs::create_dir_all(&out).unwrap();
    write_random(&src.join("f.txt"), 1000, 71);
    write_random(&src.join("g.txt"), 2000, 72);
    fs::write(out.join("f.txt"), b"old content").unwrap();

    let (recv, addr) = start_recv(&out, &["--json"]);
    let s = start_send(&[&src.join("f.txt"), &src.join("g.txt")], addr, &[]).finish(SHORT);
    let r = recv.finish(SHORT);
    assert_eq!(fs::read(out.join("f.txt")).unwrap(), b"old content");
    assert!(!r.ok() && r.code.is_some(), "recv: {r}");
    assert!(!s.ok() && s.code.is_some(), "send: {s}");
    assert_same(&src.join("g.txt"), &out.join("g.txt"));
    let j = r.json();
    let f = j["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"] == "f.txt")
        .cloned()
        .unwrap_or_else(|| panic!("{j}"));
    assert_eq!(f["status"], "failed", "{f}");

    let (recv, addr) = start_recv(&out, &["--overwrite"]);
    let s = start_send(&[&src.join("f.txt")], addr, &[]).finish(SHORT);
    let r = recv.finish(SHORT);
    assert!(s.ok(), "send: {s}");
    assert!(r.ok(), "recv --overwrite: {r}");
    assert_same(&src.join("f.txt"), &out.join("f.txt"));
}

// ---------------------------------------------------------------------------------------------
// 8. Disk full

#[test]
fn a_full_disk_is_a_clear_error_and_the_partial_is_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    let probe = Command::new("unshare")
        .args([
            "-rm",
            "sh",
            "-c",
            "mount -t tmpfs -o size=1m tmpfs \"$1\"",
            "sh",
        ])
        .arg(&mnt)
        .stderr(Stdio::piped())
        .output();
    match probe {
        Ok(o) if o.status.success() => {}
        other => {
            let why = match other {
                Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
                Err(e) => e.to_string(),
            };
            assert!(
                std::env::var("CI").map_or(true, |v| v.is_empty() || v == "false"),
                "a tmpfs in a mount namespace is needed under CI: {why}"
            );
            eprintln!("SKIPPED a_full_disk...: `unshare -rm` + tmpfs not permitted here ({why})");
            return;
        }
    }
    let src = tmp.path().join("big.bin");
    write_random(&src, 6 * MIB, 81);
    let listing = tmp.path().join("listing");
    // The tmpfs lives only in recv's namespace: the shell lists it after recv is gone.
    let script = r#"mount -t tmpfs -o size=2m tmpfs "$1" || exit 97
"$2" recv "$1" --listen 127.0.0.1:0
rc=$?
for f in "$1"/* "$1"/.[!.]*; do [ -e "$f" ] && stat -c '%s %n' "$f"; done > "$3"
exit $rc"#;
    let mut cmd = Command::new("unshare");
    cmd.args(["-rm", "sh", "-c", script, "sh"])
        .arg(&mnt)
        .arg(BIN)
        .arg(&listing)
        .env_remove("SOCKIT_PASSWORD");
    let mut recv = Proc::spawn(cmd);
    let addr = recv.listening();
    let s = start_send(&[&src], addr, &[]).finish(SHORT);
    let r = recv.finish(SHORT);
    assert_ne!(r.code, Some(97), "mount failed: {r}");
    assert!(!r.ok() && r.code.is_some(), "recv on a full disk: {r}");
    assert!(!s.ok() && s.code.is_some(), "send to a full disk: {s}");
    assert!(
        r.stderr.to_lowercase().contains("space"),
        "the error does not mention space: {r}"
    );
    let listed = fs::read_to_string(&listing).unwrap();
    eprintln!(
        "full disk: recv said {:?}; the tmpfs held:\n{listed}",
        r.stderr.trim()
    );
    let mut partial = None;
    for line in listed.lines() {
        let (size, name) = line.split_once(' ').unwrap();
        let name = Path::new(name).file_name().unwrap().to_str().unwrap();
        assert_ne!(name, "big.bin", "a final file on a full disk: {listed}");
        if name.starts_with(".big.bin.") && name.ends_with(".sockit-part") {
            partial = Some(size.parse::<u64>().unwrap());
        }
    }
    let len = partial.unwrap_or_else(|| panic!("no partial kept: {listed:?}\n{r}"));
    assert!(len > 0, "the partial is empty: {listed}");
}

// ---------------------------------------------------------------------------------------------
// 9. The tutorial's md5 protocol

const PY_LEGACY_SENDER: &str = r#"
import hashlib, socket, sys
host, port, path, wrong = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4] == "1"
data = open(path, "rb").read()
digest = hashlib.md5(data).hexdigest()
if wrong:
    digest = ("1" if digest[0] == "0" else "0") + digest[1:]
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.connect((host, port))
s.sendall(digest.encode())
s.sendall(data)
s.close()
"#;

const PY_LEGACY_RECEIVER: &str = r#"
import hashlib, socket, sys
out = sys.argv[1]
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.bind(("127.0.0.1", 0))
s.listen(1)
print(s.getsockname()[1], flush=True)
conn, _ = s.accept()
digest = conn.recv(32).decode()
data = b""
while True:
    chunk = conn.recv(65536)
    if not chunk:
        break
    data += chunk
conn.close()
open(out, "wb").write(data)
print("MATCH" if hashlib.md5(data).hexdigest() == digest else "MISMATCH", len(data), flush=True)
"#;

fn py_legacy_send(addr: SocketAddr, file: &Path, wrong: bool) {
    let mut cmd = Command::new("python3");
    cmd.arg("-c")
        .arg(PY_LEGACY_SENDER)
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string())
        .arg(file)
        .arg(if wrong { "1" } else { "0" });
    let d = Proc::spawn(cmd).finish(SHORT);
    assert!(d.ok(), "the python sender: {d}");
}

#[test]
fn legacy_md5_sender_to_recv() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    fs::create_dir_all(&out).unwrap();
    let file = tmp.path().join("photo.jpg");
    write_random(&file, 3 * MIB + 5, 91);

    let (recv, addr) = start_recv(&out, &[]);
    py_legacy_send(addr, &file, false);
    let r = recv.finish(SHORT);
    assert!(r.ok(), "recv: {r}");
    assert_same(&file, &out.join("received"));

    // --legacy-name, and a file that starts like nothing in particular (no magic either way).
    let (recv, addr) = start_recv(&out, &["--legacy-name", "photo.jpg"]);
    py_legacy_send(addr, &file, false);
    let r = recv.finish(SHORT);
    assert!(r.ok(), "recv --legacy-name: {r}");
    assert_same(&file, &out.join("photo.jpg"));

    // DIR/received is there now: another legacy file does not replace it without --overwrite.
    let other = tmp.path().join("other.bin");
    write_random(&other, 1000, 94);
    let (recv, addr) = start_recv(&out, &[]);
    py_legacy_send(addr, &other, false);
    let r = recv.finish(SHORT);
    assert_eq!(r.code, Some(1), "legacy onto an existing file: {r}");
    assert_same(&file, &out.join("received"));
    let (recv, addr) = start_recv(&out, &["--overwrite"]);
    py_legacy_send(addr, &other, false);
    let r = recv.finish(SHORT);
    assert!(r.ok(), "legacy --overwrite: {r}");
    assert_same(&other, &out.join("received"));
}

#[test]
fn legacy_md5_mismatch_stores_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    fs::create_dir_all(&out).unwrap();
    let file = tmp.path().join("f.bin");
    write_random(&file, 200_000, 92);
    let (recv, addr) = start_recv(&out, &[]);
    py_legacy_send(addr, &file, true);
    let r = recv.finish(SHORT);
    assert_eq!(r.code, Some(1), "recv on a wrong md5: {r}");
    assert!(!out.join("received").exists(), "stored despite a wrong md5");
    let finals: Vec<String> = walk(&out)
        .into_keys()
        .filter(|k| !k.ends_with(".sockit-part"))
        .collect();
    assert!(finals.is_empty(), "{finals:?}");
}

#[test]
fn legacy_md5_send_to_the_tutorial_receiver() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("f.bin");
    let got = tmp.path().join("got.bin");
    write_random(&file, 2 * MIB + 31, 93);
    let mut cmd = Command::new("python3");
    cmd.arg("-c").arg(PY_LEGACY_RECEIVER).arg(&got);
    let mut py = Proc::spawn(cmd);
    let port = py.wait_stdout_line(SHORT);
    let s = run_sockit(
        &[
            "send",
            "--md5-legacy",
            file.to_str().unwrap(),
            &format!("127.0.0.1:{port}"),
        ],
        SHORT,
    );
    let p = py.finish(SHORT);
    assert!(s.ok(), "send --md5-legacy: {s}");
    assert!(p.ok(), "python receiver: {p}");
    assert!(
        p.stdout.contains(&format!("MATCH {}", 2 * MIB + 31)),
        "the tutorial receiver says: {}",
        p.stdout
    );
    assert_same(&file, &got);
}

// ---------------------------------------------------------------------------------------------
// 10. Password

const PASSWORD: &str = "Correct-Horse-7f3a-Battery";

fn password_run(recv_pw: Option<&str>, send_pw: Option<&str>, env: bool) -> (Done, Done, Vec<u8>) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    fs::create_dir_all(&out).unwrap();
    let file = tmp.path().join("secret.bin");
    write_random(&file, 500_000, 101);
    let mut rargs = vec![
        "recv".to_string(),
        out.to_str().unwrap().to_string(),
        "--listen".into(),
        "127.0.0.1:0".into(),
    ];
    let mut rcmd_env = None;
    if let Some(pw) = recv_pw {
        if env {
            rcmd_env = Some(pw);
        } else {
            rargs.push("--password".into());
            rargs.push(pw.into());
        }
    }
    let rargs: Vec<&str> = rargs.iter().map(|s| s.as_str()).collect();
    let mut rcmd = sockit(&rargs);
    if let Some(pw) = rcmd_env {
        rcmd.env("SOCKIT_PASSWORD", pw);
    }
    let mut recv = Proc::spawn(rcmd);
    let raddr = recv.listening();
    let proxy = Proxy::start(raddr, Tamper::Nothing);
    let paddr = proxy.addr.to_string();
    let mut sargs = vec!["send", file.to_str().unwrap(), paddr.as_str()];
    if let (Some(pw), false) = (send_pw, env) {
        sargs.push("--password");
        sargs.push(pw);
    }
    let mut scmd = sockit(&sargs);
    if let (Some(pw), true) = (send_pw, env) {
        scmd.env("SOCKIT_PASSWORD", pw);
    }
    let s = Proc::spawn(scmd).finish(SHORT);
    let r = recv.finish(SHORT);
    let ok = same_content(&file, &out.join("secret.bin")).is_ok();
    let arrived = out.join("secret.bin").exists();
    assert!(!arrived || ok, "a final file that differs from the source");
    if !(s.ok() && r.ok()) {
        assert!(!arrived, "a final file although a side failed:\n{s}\n{r}");
    } else {
        assert!(ok, "both sides ok but no file");
    }
    let cap = proxy.captured();
    (s, r, cap)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn the_same_password_at_both_ends_works_and_never_crosses_the_wire() {
    let (s, r, cap) = password_run(Some(PASSWORD), Some(PASSWORD), false);
    assert!(s.ok(), "send: {s}");
    assert!(r.ok(), "recv: {r}");
    assert!(
        cap.len() > 500_000,
        "the proxy saw only {} bytes",
        cap.len()
    );
    assert!(
        !contains(&cap, PASSWORD.as_bytes()),
        "the password is on the wire"
    );
    assert!(
        !contains(&cap, hex::encode(PASSWORD).as_bytes()),
        "the password is on the wire, in hex"
    );
}

#[test]
fn a_wrong_password_is_refused_at_both_ends() {
    let other = "Tr0ub4dor&3-not-the-same";
    let (s, r, cap) = password_run(Some(PASSWORD), Some(other), false);
    assert!(
        !s.ok() && s.code.is_some(),
        "send with a wrong password: {s}"
    );
    assert!(
        !r.ok() && r.code.is_some(),
        "recv with a wrong password: {r}"
    );
    assert!(!cap.is_empty(), "nothing went through the proxy");
    assert!(
        !contains(&cap, PASSWORD.as_bytes()),
        "recv's password on the wire"
    );
    assert!(
        !contains(&cap, other.as_bytes()),
        "send's password on the wire"
    );
}

#[test]
fn a_missing_password_is_refused() {
    let (s, r, _) = password_run(Some(PASSWORD), None, false);
    assert!(
        !s.ok() && s.code.is_some(),
        "send without the password: {s}"
    );
    assert!(!r.ok() && r.code.is_some(), "recv: {r}");
    let (s, r, _) = password_run(None, Some(PASSWORD), false);
    assert!(
        !s.ok() && s.code.is_some(),
        "send with a password to a recv without: {s}"
    );
    assert!(!r.ok() && r.code.is_some(), "recv: {r}");
}

#[test]
fn the_password_from_the_environment_works() {
    let (s, r, cap) = password_run(Some(PASSWORD), Some(PASSWORD), true);
    assert!(s.ok(), "send: {s}");
    assert!(r.ok(), "recv: {r}");
    assert!(!contains(&cap, PASSWORD.as_bytes()));
    let (s, r, _) = password_run(Some(PASSWORD), Some("another one"), true);
    assert!(
        !s.ok() && !r.ok(),
        "a wrong password from the environment:\n{s}\n{r}"
    );
}

// ---------------------------------------------------------------------------------------------
// 11. TLS

fn fingerprint(stderr: &str) -> String {
    stderr
        .split("fingerprint ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no fingerprint printed:\n{stderr}"))
        .to_string()
}

#[test]
fn tls_with_the_printed_fingerprint_and_with_insecure() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    fs::create_dir_all(&out).unwrap();
    let file = tmp.path().join("f.bin");
    write_random(&file, 3 * MIB + 7, 111);

    let (mut recv, raddr) = start_recv(&out, &["--tls"]);
    let fp = fingerprint(&recv.wait_stderr("fingerprint ", SHORT));
    let proxy = Proxy::start(raddr, Tamper::Nothing);
    let s = start_send(&[&file], proxy.addr, &["--tls", "--tls-fingerprint", &fp]).finish(SHORT);
    let r = recv.finish(SHORT);
    assert!(s.ok(), "send --tls-fingerprint: {s}");
    assert!(r.ok(), "recv --tls: {r}");
    assert_same(&file, &out.join("f.bin"));
    let cap = proxy.captured();
    assert!(cap.len() > 3 * MIB as usize, "{}", cap.len());
    assert!(
        !contains(&cap, b"SOCKITXF"),
        "the magic is in the clear: not TLS"
    );

    fs::remove_file(out.join("f.bin")).unwrap();
    let (recv, raddr) = start_recv(&out, &["--tls"]);
    let s = start_send(&[&file], raddr, &["--tls", "--insecure"]).finish(SHORT);
    let r = recv.finish(SHORT);
    assert!(s.ok(), "send --insecure: {s}");
    assert!(r.ok(), "recv --tls: {r}");
    assert_same(&file, &out.join("f.bin"));
}

#[test]
fn tls_with_a_wrong_fingerprint_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("f.bin");
    write_random(&file, 1000, 112);
    let out = tmp.path().join("out");
    fs::create_dir_all(&out).unwrap();
    let (recv, raddr) = start_recv(&out, &["--tls"]);
    let wrong = vec!["AB"; 32].join(":");
    let s = start_send(&[&file], raddr, &["--tls", "--tls-fingerprint", &wrong]).finish(SHORT);
    drop(recv);
    assert_eq!(s.code, Some(1), "{s}");
    assert!(!out.join("f.bin").exists());
}

// ---------------------------------------------------------------------------------------------
// 12. Bad usage

#[test]
fn bad_usage_is_one_line_and_a_meaningful_exit() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("f.txt");
    fs::write(&file, "x").unwrap();

    let d = run_sockit(&["send"], SHORT);
    assert_eq!(d.code, Some(2), "send with nothing: {d}");
    assert_one_line(&d.stderr, "send with nothing");

    let d = run_sockit(&["send", file.to_str().unwrap()], SHORT);
    assert_eq!(d.code, Some(2), "send with no address: {d}");
    assert_one_line(&d.stderr, "send with no address");

    // A missing path, with a receiver listening (so the path is the only thing wrong).
    let out = tmp.path().join("out");
    fs::create_dir_all(&out).unwrap();
    let (_recv, addr) = start_recv(&out, &[]);
    let missing = tmp.path().join("no-such-file.bin");
    let d = run_sockit(
        &["send", missing.to_str().unwrap(), &addr.to_string()],
        SHORT,
    );
    assert!(matches!(d.code, Some(1) | Some(2)), "missing path: {d}");
    assert_one_line(&d.stderr, "missing path");
    assert!(d.stderr.contains("no-such-file.bin"), "{d}");
    assert!(walk(&out).is_empty());

    let d = run_sockit(
        &["recv", out.to_str().unwrap(), "--listen", "nonsense"],
        SHORT,
    );
    assert_eq!(d.code, Some(2), "recv --listen nonsense: {d}");
    assert_one_line(&d.stderr, "recv --listen nonsense");

    // Nothing listens there.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let d = run_sockit(
        &["send", file.to_str().unwrap(), &format!("127.0.0.1:{port}")],
        SHORT,
    );
    assert_eq!(d.code, Some(1), "send to a closed port: {d}");
    assert_one_line(&d.stderr, "send to a closed port");
}

/// recv's allow/deny come from the net layer: a denied sender gets nothing stored.
#[test]
fn recv_deny_refuses_the_sender() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("f.bin");
    write_random(&file, 1000, 121);
    let out = tmp.path().join("out");
    fs::create_dir_all(&out).unwrap();
    let (recv, addr) = start_recv(&out, &["--deny", "127.0.0.1"]);
    let s = start_send(&[&file], addr, &[]).finish(SHORT);
    drop(recv);
    assert!(!s.ok() && s.code.is_some(), "{s}");
    assert!(!out.join("f.bin").exists());
}

// ---------------------------------------------------------------------------------------------
// More from the issue: a cut at any byte, compression, the summary line, bounded memory

/// The real sender's stream cut at many points (in the handshake, the offer, the data, between
/// files): recv fails, and every final file there is is whole (the same as its source).
#[test]
fn a_stream_cut_at_any_byte_never_leaves_a_bad_final_file() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("tree");
    write_random(&src.join("a.bin"), 300_000, 131);
    write_random(&src.join("b/c.bin"), 2 * MIB + 1, 132);
    write_random(&src.join("b/d.bin"), 10, 133);
    let total = 300_000 + 2 * MIB + 11;
    let mut rng = Rng::new(134);
    let mut cuts = vec![1u64, 8, 9, 10, 14, 60, 200, 400, 1000, 300_400, total - 10];
    cuts.extend((0..6).map(|_| rng.below(total)));
    let mut problems = Vec::new();
    for cut in cuts {
        let out = tmp.path().join(format!("out-{cut}"));
        fs::create_dir_all(&out).unwrap();
        let (recv, raddr) = start_recv(&out, &[]);
        let proxy = Proxy::start(raddr, Tamper::CutAt(cut));
        let s = start_send(&[&src], proxy.addr, &[]).finish(SHORT);
        let r = recv.finish(SHORT);
        if s.ok() || r.ok() || r.code.is_none() || s.code.is_none() {
            problems.push(format!(
                "cut at {cut}: send {:?}, recv {:?}",
                s.code, r.code
            ));
        }
        for (rel, meta) in walk(&out) {
            if meta.is_file() && !rel.ends_with(".sockit-part") {
                if let Err(e) = same_content(
                    &src.join(rel.strip_prefix("tree/").unwrap_or(&rel)),
                    &out.join(&rel),
                ) {
                    problems.push(format!("cut at {cut}: a bad final file: {e}"));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// --compress: text shrinks on the wire; random data is not made bigger (sent raw).
#[test]
fn compress_pays_for_itself_and_is_skipped_for_random_data() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    fs::create_dir_all(&out).unwrap();
    let text = tmp.path().join("log.txt");
    let lines: String = (0..200_000)
        .map(|i| format!("2026-12-03 line {i}: GET /index.html 200\n"))
        .collect();
    fs::write(&text, &lines).unwrap();
    let noise = tmp.path().join("noise.bin");
    write_random(&noise, 4 * MIB, 141);

    for (file, shrinks) in [(&text, true), (&noise, false)] {
        let (recv, raddr) = start_recv(&out, &[]);
        let proxy = Proxy::start(raddr, Tamper::Nothing);
        let s = start_send(&[file], proxy.addr, &["--compress"]).finish(SHORT);
        let r = recv.finish(SHORT);
        assert!(s.ok(), "send --compress: {s}");
        assert!(r.ok(), "recv: {r}");
        assert_same(file, &out.join(file.file_name().unwrap()));
        let size = fs::metadata(file).unwrap().len();
        let wire = proxy.upstream(0);
        if shrinks {
            assert!(
                wire < size / 4,
                "{} bytes of text took {wire} bytes on the wire with --compress",
                size
            );
        } else {
            assert!(
                wire < size + size / 50 + 64 * 1024,
                "{size} random bytes took {wire} on the wire with --compress"
            );
        }
    }
}

/// Without --json: nothing on stdout and one summary line (with MB/s) on stderr.
#[test]
fn the_summary_is_one_line_without_json() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    fs::create_dir_all(&out).unwrap();
    let file = tmp.path().join("f.bin");
    write_random(&file, 100_000, 151);
    let (recv, addr) = start_recv(&out, &[]);
    let s = start_send(&[&file], addr, &[]).finish(SHORT);
    let r = recv.finish(SHORT);
    assert!(s.ok() && r.ok(), "{s}\n{r}");
    for (who, d) in [("send", &s), ("recv", &r)] {
        assert!(d.stdout.is_empty(), "{who} wrote to stdout: {d}");
        let summaries = d.stderr.lines().filter(|l| l.contains("MB/s")).count();
        assert_eq!(summaries, 1, "{who}: {d}");
    }
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Bounded memory: neither end holds the file in RAM (a 160 MiB file, both ends well under it).
#[test]
fn memory_stays_bounded_whatever_the_file_size() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    fs::create_dir_all(&out).unwrap();
    let file = tmp.path().join("big.bin");
    write_random(&file, 160 * MIB, 161);
    let (mut recv, raddr) = start_recv(&out, &[]);
    let proxy = Proxy::start(raddr, Tamper::Nothing);
    // Slow enough to sample: about two seconds.
    proxy.throttle(80 * MIB);
    let mut send = start_send(&[&file], proxy.addr, &[]);
    let (mut max_send, mut max_recv) = (0, 0);
    let deadline = Instant::now() + LONG;
    while send.running() || recv.running() {
        assert!(Instant::now() < deadline, "the transfer took too long");
        max_send = max_send.max(rss_kib(send.child.id()).unwrap_or(0));
        max_recv = max_recv.max(rss_kib(recv.child.id()).unwrap_or(0));
        thread::sleep(Duration::from_millis(10));
    }
    let s = send.finish(SHORT);
    let r = recv.finish(SHORT);
    assert!(s.ok() && r.ok(), "{s}\n{r}");
    assert_same(&file, &out.join("big.bin"));
    eprintln!("memory: send at most {max_send} KiB, recv at most {max_recv} KiB resident");
    assert!(
        max_send < 64 * 1024,
        "send held {max_send} KiB for a 160 MiB file"
    );
    assert!(
        max_recv < 64 * 1024,
        "recv held {max_recv} KiB for a 160 MiB file"
    );
}

/// Compressed data frames (kind 2) from the crafted sender: a good chunk is taken; a chunk that
/// decompresses to more than 1 MiB (a zstd bomb) is refused, and no final file is left.
#[test]
fn compressed_frames_are_bounded() {
    for bomb in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("dest");
        fs::create_dir_all(&dir).unwrap();
        let (recv, addr) = start_recv(&dir, &[]);
        let mut w = Wire::connect(addr);
        w.raw(b"SOCKITXF\x01").unwrap();
        w.control(&json!({"type":"hello","version":1,"auth":false,"spake":null,"compress":true}))
            .unwrap();
        let welcome = w.read_control().expect("welcome");
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        let data = if bomb {
            vec![0u8; 64 * MIB as usize]
        } else {
            b"compressible ".repeat(50_000)
        };
        w.control(&json!({"type":"offer","entries":[file_entry("z.bin", data.len() as u64)]}))
            .unwrap();
        let plan = w.read_control().expect("plan");
        assert_eq!(plan_for(&plan, 0).unwrap()["action"], "send", "{plan}");
        w.control(&json!({"type":"file","index":0,"offset":0}))
            .unwrap();
        let packed = zstd::bulk::compress(&data, 3).unwrap();
        let _ = w.frame(2, &packed);
        let _ = w.control(
            &json!({"type":"end","index":0,"blake3":blake3::hash(&data).to_hex().to_string()}),
        );
        let _ = w.control(&json!({"type":"done"}));
        let _ = w.read_control();
        drop(w);
        let r = recv.finish(SHORT);
        if bomb {
            assert!(!r.ok() && r.code.is_some(), "a zstd bomb: {r}");
            assert!(!dir.join("z.bin").exists(), "a final file from a zstd bomb");
        } else {
            assert!(r.ok(), "a good compressed chunk: {r}");
            assert_eq!(fs::read(dir.join("z.bin")).unwrap(), data);
        }
    }
}

/// `--max-files N`: an offer of more entries is refused before anything is planned or written.
#[test]
fn an_offer_over_max_files_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dest");
    fs::create_dir_all(&dir).unwrap();
    let (recv, addr) = start_recv(&dir, &["--max-files", "2"]);
    let mut w = Wire::connect(addr);
    w.hello();
    let entries: Vec<Value> = (0..3).map(|i| file_entry(&format!("f{i}"), 1)).collect();
    w.control(&json!({"type":"offer","entries":entries}))
        .unwrap();
    let answer = w.read_control().expect("an answer to the offer");
    assert_eq!(answer["type"], "error", "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap_or("")
            .contains("limit of 2"),
        "{answer}"
    );
    drop(w);
    let r = recv.finish(SHORT);
    assert!(!r.ok(), "{r}");
    assert_eq!(
        fs::read_dir(&dir).unwrap().count(),
        0,
        "something was written"
    );
}

/// A sender that stops in the middle of a file (its connection open, nothing more said) is cut
/// by the receiver's idle limit (`-i`), and the bytes it did send are kept for a resume.
#[test]
fn a_sender_that_stalls_mid_file_is_cut_by_the_idle_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dest");
    fs::create_dir_all(&dir).unwrap();
    let (recv, addr) = start_recv(&dir, &["-i", "1s"]);
    let mut w = Wire::connect(addr);
    w.raw(b"SOCKITXF\x01").unwrap();
    w.control(&json!({"type":"hello","version":1,"auth":false,"spake":null,"compress":false}))
        .unwrap();
    let welcome = w.read_control().expect("welcome");
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    w.control(&json!({"type":"offer","entries":[file_entry("s.bin", 4 * MIB)]}))
        .unwrap();
    let plan = w.read_control().expect("plan");
    assert_eq!(plan_for(&plan, 0).unwrap()["action"], "send", "{plan}");
    w.control(&json!({"type":"file","index":0,"offset":0}))
        .unwrap();
    w.frame(1, &vec![b'x'; 300_000]).unwrap();
    let stalled = Instant::now();
    // Nothing more, and the connection stays open: only the idle limit can end this.
    let r = recv.finish(Duration::from_secs(20));
    let took = stalled.elapsed();
    assert!(!r.ok(), "a stalled sender completed: {r}");
    assert!(
        took < Duration::from_secs(10),
        "the receiver waited {took:?} on a sender idle for longer than -i 1s"
    );
    assert!(
        !dir.join("s.bin").exists(),
        "a final file from a cut transfer"
    );
    let kept = partials_of(&dir.join("s.bin"));
    assert_eq!(kept.len(), 1, "the partial is kept: {kept:?}");
    assert_eq!(kept[0].1, 300_000, "{kept:?}");
    drop(w);
}
