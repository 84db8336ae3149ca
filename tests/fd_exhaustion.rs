//! File-descriptor exhaustion: every TCP server, run with a soft and hard limit of 64 descriptors
//! (`prlimit`), gets a storm of connections far past it. Accept errors are logged and survived,
//! the client that was connected before keeps being served throughout, and once the storm ends a
//! new client is served again: a stranger who can open sockets cannot take a server down.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

mod common;
use common::Server;

const BIN: &str = env!("CARGO_BIN_EXE_sockit");
/// The server's descriptor limit, and how many connections the storm opens past it.
const LIMIT: u32 = 64;
const STORM: usize = 300;
const WAIT: Duration = Duration::from_secs(15);

/// A service as a client sees it: how to ask it something on an open connection and recognise
/// the answer.
struct Service {
    /// Bytes to send for one round trip.
    ask: &'static [u8],
    /// Whether the bytes received so far hold the answer.
    answered: fn(&[u8]) -> bool,
    /// Whether the server talks first on a new connection (chat's welcome), read before asking.
    greets: bool,
}

fn echoed(got: &[u8]) -> bool {
    got.windows(5).any(|w| w == b"ping\n")
}

fn chat_said(got: &[u8]) -> bool {
    String::from_utf8_lossy(got).contains("> ping")
}

fn http_ok(got: &[u8]) -> bool {
    let text = String::from_utf8_lossy(got);
    text.starts_with("HTTP/1.1 200") && text.contains("\r\n\r\n")
}

const ECHO: Service = Service {
    ask: b"ping\n",
    answered: echoed,
    greets: false,
};
const CHAT: Service = Service {
    ask: b"ping\n",
    answered: chat_said,
    greets: true,
};
const HTTP: Service = Service {
    ask: b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    answered: http_ok,
    greets: false,
};

/// One round trip on `conn`; panics if the answer does not come within [`WAIT`].
fn round_trip(conn: &mut TcpStream, service: &Service, what: &str) {
    conn.write_all(service.ask)
        .unwrap_or_else(|e| panic!("{what}: write: {e}"));
    let mut got = Vec::new();
    let deadline = Instant::now() + WAIT;
    let mut buf = [0u8; 4096];
    while !(service.answered)(&got) {
        assert!(Instant::now() < deadline, "{what}: no answer; got {got:?}");
        match conn.read(&mut buf) {
            Ok(0) => panic!("{what}: closed; got {:?}", String::from_utf8_lossy(&got)),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("{what}: read: {e}"),
        }
    }
}

/// A connection that is being served: connected, greeted if the service greets.
fn client(addr: SocketAddr, service: &Service) -> TcpStream {
    let conn = TcpStream::connect(addr).expect("connect");
    conn.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    if service.greets {
        let mut reader = BufReader::new(conn.try_clone().expect("clone"));
        let mut line = String::new();
        reader.read_line(&mut line).ok();
    }
    conn
}

/// Starts `sockit ARGS` with at most [`LIMIT`] descriptors (soft and hard: it cannot raise them).
fn start_limited(args: &[&str]) -> Server {
    let mut cmd = Command::new("prlimit");
    cmd.arg(format!("--nofile={LIMIT}:{LIMIT}"))
        .arg("--")
        .arg(BIN)
        .args(args);
    Server::start_command(cmd)
}

/// The storm against `addr` while a client connected before it keeps being served, then a new
/// client after it.
fn survive_storm(server: &mut Server, addr: SocketAddr, service: &Service) {
    // Told at start that the limit, not --max-conns, bounds the connections.
    assert!(
        server.wait_for_log("open-file limit", WAIT),
        "no warning about the descriptor limit:\n{}",
        server.stderr()
    );
    let mut before = client(addr, service);
    round_trip(
        &mut before,
        service,
        "the client connected before the storm",
    );

    let storm: Vec<TcpStream> = (0..STORM)
        .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok())
        .collect();
    assert!(
        storm.len() > LIMIT as usize * 2,
        "only {} connected",
        storm.len()
    );
    // The server is at its limit now: it refuses the storm at the door (or, were its budget
    // wrong, fails to accept), says so, and goes on serving its client.
    let deadline = Instant::now() + WAIT;
    while !server.stderr().contains("refused") && !server.stderr().contains("accept failed") {
        assert!(
            Instant::now() < deadline,
            "neither refusals nor accept errors logged:\n{}",
            server.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for i in 0..3 {
        round_trip(
            &mut before,
            service,
            &format!("the old client during the storm ({i})"),
        );
    }
    drop(storm);

    // Recovered: a new client is served (the storm's connections drain out of the backlog).
    let deadline = Instant::now() + WAIT;
    loop {
        let mut after = client(addr, service);
        after.write_all(service.ask).ok();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let until = Instant::now() + Duration::from_secs(2);
        while Instant::now() < until && !(service.answered)(&got) {
            match after.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(_) => {}
            }
        }
        if (service.answered)(&got) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no new client served after the storm:\n{}",
            server.stderr()
        );
    }
    round_trip(&mut before, service, "the old client after the storm");
    assert!(
        server.wait_exit(Duration::from_millis(10)).is_none(),
        "the server exited:\n{}",
        server.stderr()
    );
}

#[test]
fn echo_survives_a_connection_storm_past_its_descriptor_limit() {
    let mut server = start_limited(&["echo", "127.0.0.1:0"]);
    let addr = server.addr();
    survive_storm(&mut server, addr, &ECHO);
}

#[test]
fn chat_survives_a_connection_storm_past_its_descriptor_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("chat.sqlite3");
    let mut server = start_limited(&[
        "chat",
        "--history",
        db.to_str().expect("path"),
        "--rate",
        "0",
        "127.0.0.1:0",
    ]);
    let addr = server.addr();
    survive_storm(&mut server, addr, &CHAT);
}

#[test]
fn chat_web_survives_a_connection_storm_past_its_descriptor_limit() {
    let mut server = start_limited(&[
        "chat",
        "--no-history",
        "127.0.0.1:0",
        "--web",
        "127.0.0.1:0",
    ]);
    let addr: SocketAddr = server
        .web_page_url()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .expect("web address");
    survive_storm(&mut server, addr, &HTTP);
}

#[test]
fn http_survives_a_connection_storm_past_its_descriptor_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("index.html"), "<p>hello</p>").expect("index");
    let mut server = start_limited(&[
        "http",
        dir.path().to_str().expect("path"),
        "--listen",
        "127.0.0.1:0",
    ]);
    let addr = server.addr();
    survive_storm(&mut server, addr, &HTTP);
}

#[test]
fn listen_keep_open_survives_a_connection_storm_past_its_descriptor_limit() {
    let mut server = start_limited(&["listen", "-k", "-e", "cat", "127.0.0.1:0"]);
    let addr = server.addr();
    survive_storm(&mut server, addr, &ECHO);
}

/// `recv -k` under the same limit: a send that started before the storm completes verified, the
/// storm's silent connections are refused at the door or cut after --handshake-timeout (all at
/// once, not one after another), and a send after the storm is served.
#[test]
fn recv_keep_open_survives_a_connection_storm_past_its_descriptor_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (src, out) = (dir.path().join("src"), dir.path().join("out"));
    std::fs::create_dir(&src).expect("src");
    // Big enough that the transfer is still running while the storm arrives.
    let big: Vec<u8> = (0..64u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(src.join("big.bin"), &big).expect("big");
    std::fs::write(src.join("after.txt"), b"after the storm\n").expect("after");
    let server = start_limited(&[
        "recv",
        out.to_str().expect("path"),
        "-k",
        "--handshake-timeout",
        "2s",
        "-l",
        "127.0.0.1:0",
    ]);
    let addr = server.addr().to_string();
    let send = |name: &str| {
        Command::new(BIN)
            .args(["send", src.join(name).to_str().expect("path"), &addr])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("send")
    };
    let before = send("big.bin");
    // The storm begins once that session is writing (its partial file is there).
    let start = Instant::now();
    while !std::fs::read_dir(&out).is_ok_and(|d| {
        d.flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".sockit-part"))
    }) {
        assert!(start.elapsed() < WAIT, "the first send never began writing");
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut storm = Vec::new();
    for _ in 0..STORM {
        if let Ok(c) = TcpStream::connect_timeout(&server.addr(), Duration::from_secs(2)) {
            storm.push(c);
        }
    }
    let out_before = before.wait_with_output().expect("send finished");
    assert!(
        out_before.status.success(),
        "the send in flight failed during the storm: {}",
        String::from_utf8_lossy(&out_before.stderr)
    );
    assert!(
        std::fs::read(out.join("big.bin")).expect("big arrived") == big,
        "big.bin differs"
    );
    drop(storm);
    let start = Instant::now();
    loop {
        let after = send("after.txt").wait_with_output().expect("send");
        if after.status.success() {
            break;
        }
        assert!(
            start.elapsed() < WAIT,
            "no send served after the storm: {}\nserver: {}",
            String::from_utf8_lossy(&after.stderr),
            server.stderr()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        std::fs::read(out.join("after.txt")).expect("after arrived"),
        b"after the storm\n"
    );
}
