//! The command line as its daily users expect: signals stop every server whatever its output is
//! connected to, the netcat is quiet unless asked, `--log-json` makes every stderr line JSON,
//! nc/ncat's spellings work, ncat's extras (session logs, proxies, telnet), half-close at a
//! terminal (tmux), shell completions and man pages. Real peers only: nc, ncat, socat, python3,
//! tmux, bash.

#[path = "relay_util/mod.rs"]
mod util;

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use util::*;

// ---------------------------------------------------------------------------------------------
// Signals and output

fn pipe() -> (File, File) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fds we then own.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2");
    // SAFETY: both fds were just created and are owned by nobody else.
    unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) }
}

/// Reads `r` until a whole line containing `listening on ` arrived; returns the address.
fn read_announcement(r: &mut File) -> String {
    let deadline = Instant::now() + PATIENCE;
    let mut got = Vec::new();
    let mut buf = [0u8; 1];
    loop {
        let mut pfd = libc::pollfd {
            fd: r.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd we own.
        let n = unsafe { libc::poll(&mut pfd, 1, 100) };
        assert!(
            Instant::now() < deadline,
            "no announcement; got {:?}",
            String::from_utf8_lossy(&got)
        );
        if n <= 0 {
            continue;
        }
        match r.read(&mut buf) {
            Ok(0) => panic!(
                "output closed before the announcement: {:?}",
                String::from_utf8_lossy(&got)
            ),
            Ok(_) => got.push(buf[0]),
            Err(e) => panic!("read: {e}"),
        }
        if buf[0] == b'\n' {
            let text = String::from_utf8_lossy(&got).into_owned();
            if let Some(line) = text.lines().rev().find(|l| l.contains("listening on ")) {
                let rest = line.split("listening on ").nth(1).unwrap();
                return rest.split(" (").next().unwrap().to_string();
            }
        }
    }
}

/// Fills the pipe behind `read_end` without blocking: a second open file description of it with
/// O_NONBLOCK of its own (setting the flag on a shared one would change the server's writes).
fn fill_pipe(read_end: &File, write_end_fd: i32) -> File {
    let path = format!("/proc/self/fd/{write_end_fd}");
    let mut filler = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags_nonblock()
        .open(&path)
        .expect("reopen the pipe");
    let block = [b'x'; 4096];
    loop {
        match filler.write(&block) {
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("filling the pipe: {e}"),
        }
    }
    let _ = read_end;
    filler
}

trait NonBlock {
    fn custom_flags_nonblock(&mut self) -> &mut Self;
}

impl NonBlock for std::fs::OpenOptions {
    fn custom_flags_nonblock(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(libc::O_NONBLOCK)
    }
}

#[derive(Clone, Copy, Debug)]
enum Output {
    /// `| head -1`: the reader is gone.
    Closed,
    /// A pipe nobody reads, full.
    Full,
}

/// Runs `sockit ARGS` with stdout and stderr one pipe (as `2>&1 |`), reads its announcement, then
/// makes the pipe closed or full, runs `traffic` against the address, sends `sig` and checks the
/// server exits within its drain time (1 s) and a margin.
fn stops_on_signal(args: &[&str], output: Output, sig: i32, traffic: &dyn Fn(&str)) {
    let (mut r, w) = pipe();
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .args(["--drain", "1s"])
        .stdin(Stdio::null())
        .stdout(Stdio::from(OwnedFd::from(w.try_clone().unwrap())))
        .stderr(Stdio::from(OwnedFd::from(w.try_clone().unwrap())));
    let mut child = cmd.spawn().expect("spawn sockit");
    let addr = read_announcement(&mut r);
    let _filler = match output {
        Output::Closed => {
            drop(r);
            drop(w);
            None
        }
        Output::Full => {
            let f = fill_pipe(&r, w.as_raw_fd());
            Some((f, r, w))
        }
    };
    traffic(&addr);
    unsafe_kill(child.id() as i32, sig);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let _ = status;
            return;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("sockit {args:?} ({output:?} output) still running 10 s after signal {sig}");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// A few connections that send something and leave, so the server has lines to log.
fn some_clients(addr: &str) {
    for _ in 0..3 {
        if let Ok(mut s) = TcpStream::connect(addr) {
            let _ = s.set_read_timeout(Some(Duration::from_millis(300)));
            let _ = s.write_all(b"hello\n");
            let mut buf = [0u8; 64];
            let _ = s.read(&mut buf);
        }
    }
}

/// A client that stays and sends a lot (stdout of `listen` fills up), then a few more.
fn bulk_client(addr: &str) {
    let addr = addr.to_string();
    thread::spawn(move || {
        if let Ok(mut s) = TcpStream::connect(&addr) {
            let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
            let block = vec![b'y'; 64 * 1024];
            for _ in 0..64 {
                if s.write_all(&block).is_err() {
                    break;
                }
            }
            thread::sleep(Duration::from_secs(15));
        }
    });
    thread::sleep(Duration::from_millis(300));
}

fn each_output(args: &[&str], traffic: &dyn Fn(&str)) {
    stops_on_signal(args, Output::Closed, libc::SIGTERM, traffic);
    stops_on_signal(args, Output::Full, libc::SIGINT, traffic);
    stops_on_signal(args, Output::Closed, libc::SIGINT, traffic);
    stops_on_signal(args, Output::Full, libc::SIGTERM, traffic);
}

#[test]
fn echo_stops_whatever_its_output_is() {
    each_output(&["echo", "127.0.0.1:0"], &some_clients);
}

#[test]
fn daytime_stops_whatever_its_output_is() {
    each_output(&["daytime", "127.0.0.1:0"], &some_clients);
}

#[test]
fn listen_stops_whatever_its_output_is() {
    each_output(&["listen", "127.0.0.1:0"], &bulk_client);
}

#[test]
fn listen_keep_open_stops_whatever_its_output_is() {
    each_output(&["listen", "-k", "127.0.0.1:0"], &|a| {
        some_clients(a);
        bulk_client(a);
    });
}

#[test]
fn chat_stops_whatever_its_output_is() {
    each_output(&["chat", "--no-history", "127.0.0.1:0"], &some_clients);
}

#[test]
fn chat_web_stops_whatever_its_output_is() {
    each_output(
        &[
            "chat",
            "--no-history",
            "--web",
            "127.0.0.1:0",
            "127.0.0.1:0",
        ],
        &some_clients,
    );
}

// ---------------------------------------------------------------------------------------------
// Quiet by default, ncat's lines with -v, JSON

/// A python server: accepts one client, reads until EOF, answers `pong\n` and closes.
const PY_PONG: &str = r#"
import socket, sys
l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen(1)
print(l.getsockname()[1], flush=True)
l.settimeout(20)
c, _ = l.accept(); c.settimeout(20)
got = b""
while True:
    d = c.recv(65536)
    if not d: break
    got += d
c.sendall(b"pong\n"); c.close()
print(repr(got), flush=True)
"#;

/// Starts a python script that prints its port first; returns it and the port.
fn py_server(script: &str) -> (Proc, u16) {
    let mut cmd = Command::new("python3");
    cmd.arg("-c").arg(script).stdout(Stdio::piped());
    let mut p = Proc::spawn(cmd);
    let mut out = p.child.stdout.take().unwrap();
    let line = read_until(&mut out, b"\n");
    let port = String::from_utf8_lossy(&line)
        .trim()
        .parse()
        .expect("a port");
    p.child.stdout = Some(out);
    (p, port)
}

#[test]
fn connect_is_quiet_by_default_and_says_what_ncat_says_with_v() {
    let (_py, port) = py_server(PY_PONG);
    let (status, out, err) = run(
        sockit(&["connect", &format!("127.0.0.1:{port}")]),
        b"hello\n",
        PATIENCE,
    );
    assert!(status.success(), "{err}");
    assert_eq!(out, b"pong\n");
    assert_eq!(err, "", "connect logged without -v");

    let (_py, port) = py_server(PY_PONG);
    let (status, out, err) = run(
        sockit(&["connect", "-v", &format!("127.0.0.1:{port}")]),
        b"hello\n",
        PATIENCE,
    );
    assert!(status.success(), "{err}");
    assert_eq!(out, b"pong\n");
    assert!(
        err.contains(&format!("sockit connect: connected to 127.0.0.1:{port}\n")),
        "{err}"
    );
    assert!(
        err.contains("sockit connect: 6 bytes sent, 5 bytes received in "),
        "{err}"
    );
    assert!(
        err.lines().all(|l| l.starts_with("sockit connect: ")),
        "{err}"
    );
}

#[test]
fn listen_is_quiet_by_default_and_says_what_ncat_says_with_v() {
    for verbose in [false, true] {
        let mut args = vec!["listen"];
        if verbose {
            args.push("-v");
        }
        args.push("127.0.0.1:0");
        let mut p = Proc::spawn(sockit(&args));
        let addr = p.listening_addr();
        let out = p.collect_stdout();
        drop(p.child.stdin.take());
        let mut c = TcpStream::connect(&addr).unwrap();
        c.write_all(b"from the client\n").unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        c.set_read_timeout(Some(PATIENCE)).unwrap();
        let _ = c.read_to_end(&mut rest);
        let status = p.wait_exit(PATIENCE);
        assert!(status.success(), "{}", p.stderr());
        assert_eq!(out.join().unwrap(), b"from the client\n");
        let err = p.stderr();
        let lines: Vec<&str> = err.lines().collect();
        if verbose {
            assert!(
                err.contains("sockit listen: connection from 127.0.0.1:"),
                "{err}"
            );
            assert!(
                err.contains("sockit listen: 0 bytes sent, 16 bytes received in "),
                "{err}"
            );
        } else {
            assert_eq!(lines.len(), 1, "only the announcement without -v:\n{err}");
            assert!(
                lines[0].starts_with("sockit listen: listening on "),
                "{err}"
            );
        }
    }
}

fn assert_all_json(err: &str) -> Vec<serde_json::Value> {
    let mut all = Vec::new();
    for line in err.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line}\nin:\n{err}"));
        assert!(v["message"].is_string(), "no message: {line}");
        assert!(v["level"].is_string(), "no level: {line}");
        all.push(v);
    }
    all
}

#[test]
fn log_json_makes_every_stderr_line_json() {
    // Start-up announcements (the certificate's fingerprint, the address), log lines, shutdown.
    let mut p = Proc::spawn(sockit(&["--log-json", "echo", "--tls", "127.0.0.1:0"]));
    let addr = p.listening_addr();
    let _ = TcpStream::connect(&addr).map(|mut s| s.write_all(b"not tls\n"));
    thread::sleep(Duration::from_millis(300));
    p.terminate();
    p.wait_exit(PATIENCE);
    let lines = assert_all_json(&p.stderr());
    let messages: Vec<&str> = lines
        .iter()
        .map(|v| v["message"].as_str().unwrap())
        .collect();
    assert!(
        messages.iter().any(|m| m.contains("SHA-256 fingerprint")),
        "{messages:?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("sockit echo: listening on ")),
        "{messages:?}"
    );

    // The chat's announcements too.
    let mut p = Proc::spawn(sockit(&[
        "--log-json",
        "chat",
        "--no-history",
        "127.0.0.1:0",
    ]));
    p.listening_addr();
    p.wait_stderr("join with");
    p.terminate();
    p.wait_exit(PATIENCE);
    assert_all_json(&p.stderr());

    // The netcat's -v lines, and the final error line.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (status, _, err) = run(
        sockit(&["--log-json", "connect", "-v", &format!("127.0.0.1:{port}")]),
        b"",
        PATIENCE,
    );
    assert_eq!(status.code(), Some(1));
    let lines = assert_all_json(&err);
    let last = lines.last().unwrap();
    assert_eq!(last["level"], "ERROR");
    assert!(
        last["message"]
            .as_str()
            .unwrap()
            .contains("connection refused"),
        "{err}"
    );

    // A usage error.
    let (status, _, err) = run(sockit(&["--log-json", "connect"]), b"", PATIENCE);
    assert_eq!(status.code(), Some(2));
    assert_all_json(&err);
}

// ---------------------------------------------------------------------------------------------
// Netcat habits

/// Sends `payload` to a listening sockit and half-closes; returns what `listen` printed.
fn listen_receives(args: &[&str], payload: &[u8]) -> (String, Vec<u8>) {
    let mut p = Proc::spawn(sockit(args));
    let addr = p.listening_addr();
    let out = p.collect_stdout();
    drop(p.child.stdin.take());
    let mut c = TcpStream::connect(&addr).unwrap();
    c.write_all(payload).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    c.set_read_timeout(Some(PATIENCE)).unwrap();
    let _ = c.read_to_end(&mut rest);
    let status = p.wait_exit(PATIENCE);
    assert!(status.success(), "{args:?}: {}", p.stderr());
    (addr, out.join().unwrap())
}

#[test]
fn listen_takes_the_forms_nc_and_ncat_users_type() {
    // ncat -l -p PORT, nc -l PORT, ncat -l HOST PORT, and -4.
    for args in [
        vec!["listen", "-l", "-p", "0"],
        vec!["listen", "-l", "0"],
        vec!["listen", "127.0.0.1", "0"],
        vec!["listen", "-l", "127.0.0.1", "-p", "0"],
        vec!["listen", "-4", "localhost", "0"],
    ] {
        let (addr, got) = listen_receives(&args, b"nc habits\n");
        assert!(addr.starts_with("127.0.0.1:"), "{args:?}: {addr}");
        assert_eq!(got, b"nc habits\n", "{args:?}");
    }
    if ipv6_available() {
        let (addr, got) = listen_receives(&["listen", "-6", "-p", "0"], b"six\n");
        assert!(addr.starts_with("[::1]:"), "{addr}");
        assert_eq!(got, b"six\n");
    }
    // The port twice is refused with the forms that work.
    let (status, _, err) = run(sockit(&["listen", "127.0.0.1:0", "-p", "0"]), b"", PATIENCE);
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("sockit listen -p PORT"), "{err}");
}

fn ipv6_available() -> bool {
    std::net::TcpListener::bind("[::1]:0").is_ok()
}

#[test]
fn connect_takes_the_forms_nc_and_ncat_users_type() {
    // -N is accepted (half-close is the default), HOST PORT, -4 with a name.
    let (_l, addr) = listen(&["-k", "-c", "tr a-z A-Z"], "127.0.0.1:0");
    let port = addr.rsplit(':').next().unwrap().to_string();
    for args in [
        vec!["connect", "-N", "127.0.0.1", port.as_str()],
        vec!["connect", "-4", "localhost", port.as_str()],
        vec!["connect", "-n", "127.0.0.1", port.as_str()],
    ] {
        let (status, out, err) = run(sockit(&args), b"shout\n", PATIENCE);
        assert!(status.success(), "{args:?}: {err}");
        assert_eq!(out, b"SHOUT\n", "{args:?}");
    }
    // What does not fit is a usage error that names the right form.
    for (args, says) in [
        (
            vec!["connect", "-n", "localhost", port.as_str()],
            "-n means no DNS",
        ),
        (
            vec!["connect", "-6", "127.0.0.1", port.as_str()],
            "not an IPv6 address",
        ),
        (vec!["connect", "-l", "9000"], "sockit listen PORT"),
        (
            vec!["connect", "-p", "9000", "localhost"],
            "sockit connect HOST PORT",
        ),
        (vec!["connect", "127.0.0.1:no-such-service"], "service name"),
    ] {
        let (status, _, err) = run(sockit(&args), b"", PATIENCE);
        assert_eq!(status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}

#[test]
fn service_names_work_as_ports() {
    // The lookup itself is unit-tested in the library; here a name reaches the net layer: with
    // -z against `localhost:tcpmux` (port 1, nothing listens there) the answer is "closed", not a
    // parse error.
    let (status, _, err) = run(
        sockit(&["connect", "-z", "127.0.0.1:tcpmux"]),
        b"",
        PATIENCE,
    );
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("cannot connect to 127.0.0.1:1"), "{err}");
}

#[test]
fn zero_io_tells_whether_the_port_is_open() {
    let open = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = open.local_addr().unwrap().port().to_string();
    let (status, out, err) = run(
        sockit(&["connect", "-z", "127.0.0.1", &port]),
        b"",
        PATIENCE,
    );
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(out.is_empty() && err.is_empty(), "quiet without -v: {err}");
    let (status, _, err) = run(
        sockit(&["connect", "-z", "-v", "127.0.0.1", &port]),
        b"",
        PATIENCE,
    );
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(err.contains("open"), "{err}");
    drop(open);
    let (status, _, err) = run(
        sockit(&["connect", "-z", "127.0.0.1", &port]),
        b"",
        PATIENCE,
    );
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("connection refused"), "{err}");
}

/// A python server that takes one client and never closes (until killed).
const PY_SILENT: &str = r#"
import socket, time
l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen(1)
print(l.getsockname()[1], flush=True)
c, _ = l.accept()
time.sleep(60)
"#;

#[test]
fn quit_after_eof_ends_connect_and_listen() {
    // Without -q connect waits for the peer's close; with -q 1 it ends a second after stdin.
    let (_py, port) = py_server(PY_SILENT);
    let started = Instant::now();
    let (status, _, err) = run(
        sockit(&["connect", "-q", "1", "127.0.0.1", &port.to_string()]),
        b"bye\n",
        PATIENCE,
    );
    assert!(status.success(), "{err}");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "quit before -q was over"
    );

    // listen -q 0: stdin ended, the client never closes; listen ends anyway.
    let mut p = Proc::spawn(sockit(&["listen", "-q", "0", "127.0.0.1:0"]));
    let addr = p.listening_addr();
    p.child
        .stdin
        .take()
        .unwrap()
        .write_all(b"to the client\n")
        .unwrap();
    let mut c = TcpStream::connect(&addr).unwrap();
    let status = p.wait_exit(PATIENCE);
    assert!(status.success(), "{}", p.stderr());
    c.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut got = Vec::new();
    let _ = c.read_to_end(&mut got);
    assert_eq!(got, b"to the client\n");
}

#[test]
fn hex_dump_and_output_log_the_session_as_ncat_does() {
    let dir = tempfile::tempdir().unwrap();
    let request = b"hello, hex dump world\n";
    let dump = |tool: &str, file: &std::path::Path| {
        let (_py, port) = py_server(PY_PONG);
        let port = port.to_string();
        let f = file.to_str().unwrap();
        let cmd = if tool == "ncat" {
            let mut c = Command::new("ncat");
            c.args(["-x", f, "127.0.0.1", &port]);
            c.stdin(Stdio::piped()).stdout(Stdio::piped());
            c
        } else {
            sockit(&["connect", "-x", f, "127.0.0.1", &port])
        };
        let (status, out, err) = run(cmd, request, PATIENCE);
        assert!(status.success(), "{tool}: {err}");
        assert_eq!(out, b"pong\n", "{tool}");
    };
    let ours = dir.path().join("sockit.hex");
    let theirs = dir.path().join("ncat.hex");
    dump("sockit", &ours);
    dump("ncat", &theirs);
    let ours = std::fs::read_to_string(&ours).unwrap();
    let theirs = std::fs::read_to_string(&theirs).unwrap();
    assert_eq!(ours, theirs, "sockit's -x differs from ncat's");
    assert!(ours.starts_with("0000   68 65 6c 6c 6f"), "{ours}");

    // -o: the raw bytes both ways; --append-output adds the next session.
    let raw = dir.path().join("session.txt");
    for append in [false, true] {
        let (_py, port) = py_server(PY_PONG);
        let mut args = vec!["connect", "-o", raw.to_str().unwrap()];
        if append {
            args.push("--append-output");
        }
        let port = port.to_string();
        args.extend(["127.0.0.1", port.as_str()]);
        let (status, _, err) = run(sockit(&args), request, PATIENCE);
        assert!(status.success(), "{err}");
    }
    let mut once = request.to_vec();
    once.extend_from_slice(b"pong\n");
    let twice = [once.clone(), once].concat();
    assert_eq!(std::fs::read(&raw).unwrap(), twice);
}

#[test]
fn delay_waits_before_each_send() {
    let (_py, port) = py_server(PY_PONG);
    let started = Instant::now();
    let (status, out, err) = run(
        sockit(&["connect", "-d", "700ms", "127.0.0.1", &port.to_string()]),
        b"slowly\n",
        PATIENCE,
    );
    assert!(status.success(), "{err}");
    assert_eq!(out, b"pong\n");
    assert!(started.elapsed() >= Duration::from_millis(700), "no delay");
}

/// An HTTP CONNECT proxy (one client) that checks the credentials and prints the request line.
const PY_HTTP_PROXY: &str = r#"
import socket, sys, threading
want = sys.argv[1]
l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen(4)
print(l.getsockname()[1], flush=True)
l.settimeout(20)
c, _ = l.accept(); c.settimeout(20)
head = b""
while b"\r\n\r\n" not in head:
    d = c.recv(1)
    if not d: sys.exit(1)
    head += d
lines = head.decode().split("\r\n")
print(lines[0], flush=True)
auth = [x for x in lines if x.lower().startswith("proxy-authorization:")]
if want and (not auth or auth[0].split(":", 1)[1].strip() != "Basic " + want):
    c.sendall(b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\n\r\n")
    c.close(); sys.exit(0)
host, port = lines[0].split()[1].rsplit(":", 1)
t = socket.create_connection((host.strip("[]"), int(port)))
c.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
def pipe(a, b):
    while True:
        d = a.recv(65536)
        if not d:
            try: b.shutdown(socket.SHUT_WR)
            except OSError: pass
            return
        b.sendall(d)
th = threading.Thread(target=pipe, args=(t, c)); th.start()
pipe(c, t); th.join()
"#;

/// A SOCKS5 proxy (one client) with username/password; prints what it was asked for.
const PY_SOCKS5: &str = r#"
import socket, struct, sys, threading
user, pw = sys.argv[1], sys.argv[2]
l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen(4)
print(l.getsockname()[1], flush=True)
l.settimeout(20)
c, _ = l.accept(); c.settimeout(20)
def need(n):
    b = b""
    while len(b) < n:
        d = c.recv(n - len(b))
        if not d: sys.exit(1)
        b += d
    return b
ver, n = need(2); methods = need(n)
assert ver == 5 and 2 in methods, methods
c.sendall(b"\x05\x02")
_, ul = need(2); u = need(ul).decode(); pl = need(1)[0]; p = need(pl).decode()
if (u, p) != (user, pw):
    c.sendall(b"\x01\x01"); c.close(); sys.exit(0)
c.sendall(b"\x01\x00")
ver, cmd, _, atyp = need(4)
if atyp == 1: host = socket.inet_ntoa(need(4))
elif atyp == 3: host = need(need(1)[0]).decode()
else: host = socket.inet_ntop(socket.AF_INET6, need(16))
port = struct.unpack(">H", need(2))[0]
print("CONNECT", host, port, flush=True)
t = socket.create_connection((host, port))
c.sendall(b"\x05\x00\x00\x01" + socket.inet_aton("127.0.0.1") + struct.pack(">H", 0))
def pipe(a, b):
    while True:
        d = a.recv(65536)
        if not d:
            try: b.shutdown(socket.SHUT_WR)
            except OSError: pass
            return
        b.sendall(d)
th = threading.Thread(target=pipe, args=(t, c)); th.start()
pipe(c, t); th.join()
"#;

fn py_server_args(script: &str, args: &[&str]) -> (Proc, u16) {
    let mut cmd = Command::new("python3");
    cmd.arg("-c").arg(script).args(args).stdout(Stdio::piped());
    let mut p = Proc::spawn(cmd);
    let mut out = p.child.stdout.take().unwrap();
    let line = read_until(&mut out, b"\n");
    let port = String::from_utf8_lossy(&line)
        .trim()
        .parse()
        .expect("a port");
    p.child.stdout = Some(out);
    (p, port)
}

#[test]
fn connect_through_an_http_proxy() {
    let (_target, addr) = listen(&["-k", "-c", "tr a-z A-Z"], "127.0.0.1:0");
    // "user:pass" in base64.
    let (mut proxy, pport) = py_server_args(PY_HTTP_PROXY, &["dXNlcjpwYXNz"]);
    let (status, out, err) = run(
        sockit(&[
            "connect",
            "--proxy",
            &format!("127.0.0.1:{pport}"),
            "--proxy-type",
            "http",
            "--proxy-auth",
            "user:pass",
            &addr,
        ]),
        b"through the proxy\n",
        PATIENCE,
    );
    assert!(status.success(), "{err}");
    assert_eq!(out, b"THROUGH THE PROXY\n");
    let mut pout = proxy.child.stdout.take().unwrap();
    let seen = read_until(&mut pout, b"\n");
    assert_eq!(
        String::from_utf8_lossy(&seen).trim(),
        format!("CONNECT {addr} HTTP/1.1")
    );

    // Wrong credentials: one line that says what to try.
    let (_proxy, pport) = py_server_args(PY_HTTP_PROXY, &["dXNlcjpwYXNz"]);
    let (status, _, err) = run(
        sockit(&[
            "connect",
            "--proxy",
            &format!("127.0.0.1:{pport}"),
            "--proxy-auth",
            "user:wrong",
            &addr,
        ]),
        b"",
        PATIENCE,
    );
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("through the proxy") && err.contains("407"),
        "{err}"
    );
    assert!(err.contains("--proxy-auth"), "{err}");
}

#[test]
fn connect_through_a_socks5_proxy() {
    let (_target, addr) = listen(&["-k", "-c", "tr a-z A-Z"], "127.0.0.1:0");
    let port = addr.rsplit(':').next().unwrap();
    let (mut proxy, pport) = py_server_args(PY_SOCKS5, &["ann", "secret"]);
    // The name goes to the proxy, which resolves it.
    let (status, out, err) = run(
        sockit(&[
            "connect",
            "--proxy",
            &format!("127.0.0.1:{pport}"),
            "--proxy-type",
            "socks5",
            "--proxy-auth",
            "ann:secret",
            "localhost",
            port,
        ]),
        b"socks five\n",
        PATIENCE,
    );
    assert!(status.success(), "{err}");
    assert_eq!(out, b"SOCKS FIVE\n");
    let mut pout = proxy.child.stdout.take().unwrap();
    let seen = read_until(&mut pout, b"\n");
    assert_eq!(
        String::from_utf8_lossy(&seen).trim(),
        format!("CONNECT localhost {port}")
    );

    let (_proxy, pport) = py_server_args(PY_SOCKS5, &["ann", "secret"]);
    let (status, _, err) = run(
        sockit(&[
            "connect",
            "--proxy",
            &format!("127.0.0.1:{pport}"),
            "--proxy-type",
            "socks5",
            "--proxy-auth",
            "ann:nope",
            &addr,
        ]),
        b"",
        PATIENCE,
    );
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("refused the user name or password"), "{err}");
}

/// A telnet-ish server: asks DO ECHO and WILL SUPPRESS-GO-AHEAD, greets, and waits for the two
/// answers before going on; prints the answers it got.
const PY_TELNETD: &str = r#"
import socket
l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen(1)
print(l.getsockname()[1], flush=True)
l.settimeout(20)
c, _ = l.accept(); c.settimeout(20)
c.sendall(bytes([255, 253, 1, 255, 251, 3]) + b"login: ")
got = b""
while len(got) < 6:
    d = c.recv(6 - len(got))
    if not d: break
    got += d
print(list(got), flush=True)
c.sendall(b"ok\n"); c.close()
"#;

#[test]
fn telnet_negotiation_is_answered_and_kept_out_of_the_output() {
    let (mut server, port) = py_server(PY_TELNETD);
    let mut p = Proc::spawn(sockit(&["connect", "-t", "127.0.0.1", &port.to_string()]));
    let out = p.collect_stdout();
    // Stdin stays open until the answer is in: the negotiation must not wait for it.
    let stdin = p.child.stdin.take();
    let mut sout = server.child.stdout.take().unwrap();
    let answers = read_until(&mut sout, b"\n");
    drop(stdin);
    let status = p.wait_exit(PATIENCE);
    assert!(status.success(), "{}", p.stderr());
    assert_eq!(out.join().unwrap(), b"login: ok\n");
    // IAC WONT ECHO, IAC DONT SGA.
    assert_eq!(
        String::from_utf8_lossy(&answers).trim(),
        "[255, 252, 1, 255, 254, 3]"
    );
}

// ---------------------------------------------------------------------------------------------
// Half-close at a terminal (tmux)

/// A tmux server of its own (`-L`), killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(name: &str, command: &str) -> Tmux {
        let socket = format!("sockit-{name}-{}", std::process::id());
        let t = Tmux { socket };
        let ok = t.cmd(&[
            "new-session",
            "-d",
            "-s",
            "t",
            "-x",
            "120",
            "-y",
            "30",
            command,
        ]);
        assert!(ok, "tmux new-session failed");
        t
    }

    fn cmd(&self, args: &[&str]) -> bool {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "t"];
        args.extend_from_slice(keys);
        assert!(self.cmd(&args), "tmux send-keys {keys:?}");
    }

    fn screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket, "capture-pane", "-p", "-t", "t"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn wait_screen(&self, needle: &str) {
        let deadline = Instant::now() + PATIENCE;
        while !self.screen().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "{needle:?} never on screen:\n{}",
                self.screen()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        self.cmd(&["kill-server"]);
    }
}

fn wait_file(path: &std::path::Path, needle: &str) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{needle:?} never in {}: {text}",
            path.display()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

fn read_stream_until(c: &mut TcpStream, needle: &[u8]) -> Vec<u8> {
    c.set_read_timeout(Some(PATIENCE)).unwrap();
    read_until(c, needle)
}

fn tmux_available() -> bool {
    Command::new("tmux").arg("-V").output().is_ok()
}

#[test]
fn listen_at_a_terminal_keeps_sending_after_the_peer_half_closes() {
    if !tmux_available() {
        eprintln!("skipped: no tmux");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let err = dir.path().join("err");
    let done = dir.path().join("done");
    let tmux = Tmux::start(
        "listen",
        &format!(
            "{BIN} listen 127.0.0.1:0 2>{}; echo exited $? > {}; sleep 30",
            err.display(),
            done.display()
        ),
    );
    let text = wait_file(&err, " (tcp)");
    let addr = text
        .split("listening on ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap();
    let mut c = TcpStream::connect(addr).unwrap();
    c.write_all(b"question\n").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    tmux.wait_screen("question");
    tmux.keys(&["typed after the half-close", "Enter"]);
    let got = read_stream_until(&mut c, b"typed after the half-close\n");
    assert!(
        String::from_utf8_lossy(&got).contains("typed after the half-close"),
        "got {:?}; screen:\n{}",
        String::from_utf8_lossy(&got),
        tmux.screen()
    );
    // Ctrl-D ends stdin: listen half-closes and, both sides done, exits 0.
    tmux.keys(&["C-d"]);
    let mut rest = Vec::new();
    let _ = c.read_to_end(&mut rest);
    assert!(wait_file(&done, "exited").contains("exited 0"));
}

#[test]
fn connect_at_a_terminal_keeps_sending_after_the_peer_half_closes() {
    if !tmux_available() {
        eprintln!("skipped: no tmux");
        return;
    }
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let done = dir.path().join("done");
    let tmux = Tmux::start(
        "connect",
        &format!(
            "{BIN} connect {addr}; echo exited $? > {}; sleep 30",
            done.display()
        ),
    );
    let (mut c, _) = server.accept().unwrap();
    c.write_all(b"greeting from the server\n").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    tmux.wait_screen("greeting from the server");
    tmux.keys(&["an answer typed later", "Enter"]);
    let got = read_stream_until(&mut c, b"an answer typed later\n");
    assert!(
        String::from_utf8_lossy(&got).contains("an answer typed later"),
        "got {:?}; screen:\n{}",
        String::from_utf8_lossy(&got),
        tmux.screen()
    );
    tmux.keys(&["C-d"]);
    let mut rest = Vec::new();
    let _ = c.read_to_end(&mut rest);
    assert!(wait_file(&done, "exited").contains("exited 0"));
}

// ---------------------------------------------------------------------------------------------
// Completions and man pages

/// What bash's completion of `words` (the last one being completed) offers.
fn bash_complete(script: &std::path::Path, words: &[&str]) -> Vec<String> {
    let words_q: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let line = words.join(" ");
    let program = format!(
        "source '{}' || exit 3
COMP_WORDS=({}); COMP_CWORD={}; COMP_LINE='{line}'; COMP_POINT=${{#COMP_LINE}}
_sockit sockit '{}' '{}'
printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script.display(),
        words_q.join(" "),
        words.len() - 1,
        words[words.len() - 1],
        words[words.len().saturating_sub(2)],
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&program)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bash: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn bash_completion_loads_and_completes_tools_and_flags() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("sockit.bash");
    let (status, out, err) = run(sockit(&["completions", "bash"]), b"", PATIENCE);
    assert!(status.success(), "{err}");
    std::fs::write(&script, &out).unwrap();
    let tools = bash_complete(&script, &["sockit", "lis"]);
    assert_eq!(tools, ["listen"], "{tools:?}");
    let flags = bash_complete(&script, &["sockit", "listen", "--keep"]);
    assert_eq!(flags, ["--keep-open"], "{flags:?}");
    let flags = bash_complete(&script, &["sockit", "connect", "--proxy-t"]);
    assert_eq!(flags, ["--proxy-type"], "{flags:?}");
    for shell in ["zsh", "fish", "powershell"] {
        let (status, out, err) = run(sockit(&["completions", shell]), b"", PATIENCE);
        assert!(status.success() && out.len() > 1000, "{shell}: {err}");
        assert!(
            String::from_utf8_lossy(&out).contains("keep-open"),
            "{shell}"
        );
    }
}

#[test]
fn man_pages_for_every_tool() {
    let (status, out, err) = run(sockit(&["man", "listen"]), b"", PATIENCE);
    assert!(status.success(), "{err}");
    let page = String::from_utf8_lossy(&out);
    assert!(page.contains(".TH sockit-listen 1"), "{page}");
    assert!(page.contains("keep\\-open"), "{page}");
    // man itself can render it.
    let dir = tempfile::tempdir().unwrap();
    let (status, _, err) = run(
        sockit(&["man", "--dir", dir.path().to_str().unwrap()]),
        b"",
        PATIENCE,
    );
    assert!(status.success(), "{err}");
    for tool in [
        "sockit",
        "sockit-echo",
        "sockit-daytime",
        "sockit-chat",
        "sockit-connect",
        "sockit-listen",
        "sockit-bench",
    ] {
        let path = dir.path().join(format!("{tool}.1"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{tool}.1: {e}"));
        assert!(text.contains(&format!(".TH {tool} 1")), "{tool}: {text}");
    }
    let (status, _, err) = run(sockit(&["man", "nope"]), b"", PATIENCE);
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("connect"), "{err}");
}

/// HTTP clients: each request is an access log line, so the log fills as they come.
fn http_clients(addr: &str) {
    for _ in 0..50 {
        if let Ok(mut s) = TcpStream::connect(addr) {
            let _ = s.set_read_timeout(Some(Duration::from_millis(300)));
            let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
            let mut buf = [0u8; 4096];
            while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
        }
    }
}

#[test]
fn http_stops_whatever_its_output_is() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("index.html"), "hi").unwrap();
    let dir = dir.path().to_str().unwrap().to_string();
    each_output(&["http", &dir, "-l", "127.0.0.1:0"], &http_clients);
}
