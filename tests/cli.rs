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
