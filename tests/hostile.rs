//! Slow and hostile clients on every server: each kind is cut off by its own limit (set short
//! here), while a normal client on the same server keeps being served. The normal client's round
//! trips are measured before and during each attack and printed (`--nocapture`), not asserted:
//! timings belong in benchmarks, but the numbers are there for whoever looks.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

mod common;
use common::Server;

const WAIT: Duration = Duration::from_secs(15);
/// How many hostile connections each attack opens.
const ATTACKERS: usize = 40;

/// Waits until the server closes `conn` (EOF or reset), reading and discarding what it says.
/// Returns how long that took; panics after `limit`.
fn closed_within(conn: &mut TcpStream, limit: Duration, what: &str) -> Duration {
    let start = Instant::now();
    conn.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let mut buf = [0u8; 4096];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => return start.elapsed(),
            Ok(_) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return start.elapsed(),
        }
        assert!(
            start.elapsed() < limit,
            "{what}: still open after {limit:?}"
        );
    }
}

/// Round trips of a normal echo-like client (`ask` answered by `answered`): their median and
/// worst, in microseconds.
fn latency(addr: SocketAddr, ask: &[u8], answered: fn(&[u8]) -> bool) -> (u128, u128) {
    let mut conn = TcpStream::connect(addr).expect("connect");
    conn.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut times = Vec::new();
    let mut buf = [0u8; 65536];
    for _ in 0..50 {
        let start = Instant::now();
        conn.write_all(ask).expect("write");
        let mut got = Vec::new();
        while !answered(&got) {
            let n = conn.read(&mut buf).expect("the normal client is answered");
            assert!(n > 0, "the normal client was cut off");
            got.extend_from_slice(&buf[..n]);
        }
        times.push(start.elapsed().as_micros());
    }
    times.sort_unstable();
    (times[times.len() / 2], times[times.len() - 1])
}

fn echoed(got: &[u8]) -> bool {
    got.ends_with(b"ping\n")
}

fn http_ok(got: &[u8]) -> bool {
    let text = String::from_utf8_lossy(got);
    text.starts_with("HTTP/1.1 200") && text.contains("</p>")
}

const ECHO_ASK: &[u8] = b"ping\n";
const HTTP_ASK: &[u8] = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";

/// A request and how to recognise its answer.
type Probe<'a> = (&'a [u8], fn(&[u8]) -> bool);

/// [`ATTACKERS`] connections to `addr`, each running `attack` and then waiting (up to `limit`)
/// for the server to close it, while `meanwhile` runs; `meanwhile`'s result and the longest any
/// attacker waited after its attack.
fn attacked<T>(
    addr: SocketAddr,
    attack: fn(&mut TcpStream),
    limit: Duration,
    what: &'static str,
    meanwhile: impl FnOnce() -> T,
) -> (T, Duration) {
    let attackers: Vec<thread::JoinHandle<Duration>> = (0..ATTACKERS)
        .map(|_| {
            thread::spawn(move || {
                let mut conn = TcpStream::connect(addr).expect("attacker connects");
                attack(&mut conn);
                closed_within(&mut conn, limit, what)
            })
        })
        .collect();
    let got = meanwhile();
    let slowest = attackers
        .into_iter()
        .map(|a| a.join().expect("attacker"))
        .max()
        .unwrap_or_default();
    (got, slowest)
}

/// Runs `attack` with [`ATTACKERS`] connections while a normal client is measured; every hostile
/// connection must be closed by the server within `limit`.
fn under_attack(
    name: &str,
    addr: SocketAddr,
    normal: Probe<'_>,
    limit: Duration,
    attack: fn(&mut TcpStream),
) {
    let before = latency(addr, normal.0, normal.1);
    let (during, slowest) = attacked(addr, attack, limit, "a hostile connection", || {
        thread::sleep(Duration::from_millis(200));
        latency(addr, normal.0, normal.1)
    });
    eprintln!(
        "{name}: normal client p50/max {}/{} us before, {}/{} us during; {ATTACKERS} attackers \
         cut within {slowest:?}",
        before.0, before.1, during.0, during.1
    );
    let after = latency(addr, normal.0, normal.1);
    eprintln!("{name}: after {}/{} us", after.0, after.1);
}

/// Sends a request head a byte at a time, slower than any header timeout allows.
fn slowloris(conn: &mut TcpStream) {
    let head = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-a: b\r\n";
    for b in head.iter().take(12) {
        if conn.write_all(&[*b]).is_err() {
            return;
        }
        thread::sleep(Duration::from_millis(300));
    }
}

/// Starts a TLS handshake (a record header and the start of a ClientHello) and stops.
fn half_handshake(conn: &mut TcpStream) {
    let _ = conn.write_all(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03");
}

/// Connects and says nothing, as a peer that vanished without a FIN looks from the server.
fn silent(_: &mut TcpStream) {}

/// Sends a flood and never reads what comes back.
fn never_reads(conn: &mut TcpStream) {
    conn.set_write_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let chunk = vec![b'x'; 64 * 1024];
    for _ in 0..64 {
        if conn.write_all(&chunk).is_err() {
            return;
        }
    }
}

fn site() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("index.html"), "<p>hello</p>").expect("index");
    dir
}

#[test]
fn slowloris_heads_are_cut_by_the_header_timeout_on_http_and_the_chat_page() {
    let dir = site();
    let http = Server::start(&[
        "http",
        dir.path().to_str().expect("path"),
        "--listen",
        "127.0.0.1:0",
        "--header-timeout",
        "1s",
    ]);
    under_attack(
        "http slowloris",
        http.addr(),
        (HTTP_ASK, http_ok),
        Duration::from_secs(8),
        slowloris,
    );

    let chat = Server::start(&[
        "chat",
        "--no-history",
        "127.0.0.1:0",
        "--web",
        "127.0.0.1:0",
        "--web-header-timeout",
        "1s",
    ]);
    let web: SocketAddr = chat
        .web_page_url()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .expect("web address");
    fn page_ok(got: &[u8]) -> bool {
        let text = String::from_utf8_lossy(got);
        text.starts_with("HTTP/1.1 200") && text.contains("</html>")
    }
    under_attack(
        "chat page slowloris",
        web,
        (HTTP_ASK, page_ok),
        Duration::from_secs(8),
        slowloris,
    );
}

#[test]
fn tls_handshakes_that_stop_halfway_are_cut_by_the_handshake_timeout() {
    for args in [
        vec!["echo", "--tls", "--handshake-timeout", "1s", "127.0.0.1:0"],
        vec![
            "chat",
            "--no-history",
            "--tls",
            "--handshake-timeout",
            "1s",
            "127.0.0.1:0",
        ],
        vec![
            "listen",
            "-k",
            "-e",
            "cat",
            "--tls",
            "--handshake-timeout",
            "1s",
            "127.0.0.1:0",
        ],
    ] {
        let server = Server::start(&args);
        let addr = server.addr();
        // Cut within a few seconds (the timeout is 1 s), never at the default 10 s.
        let ((), slowest) = attacked(
            addr,
            half_handshake,
            Duration::from_secs(8),
            "a half handshake",
            || (),
        );
        eprintln!("{}: half handshakes cut within {slowest:?}", args[0]);
        // The server still completes handshakes for others (openssl, a real TLS peer).
        let out = std::process::Command::new("openssl")
            .args(["s_client", "-connect", &addr.to_string(), "-brief"])
            .stdin(std::process::Stdio::null())
            .output()
            .expect("openssl (.ci/install-deps)");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !err.contains("handshake failure") && !err.contains("connect:errno"),
            "{}: {err}",
            args[0]
        );
    }
}

#[test]
fn silent_and_never_reading_clients_are_cut_by_the_idle_timeout() {
    let echo = Server::start(&["echo", "-i", "1s", "127.0.0.1:0"]);
    under_attack(
        "echo silent",
        echo.addr(),
        (ECHO_ASK, echoed),
        Duration::from_secs(8),
        silent,
    );
    under_attack(
        "echo never reads",
        echo.addr(),
        (ECHO_ASK, echoed),
        Duration::from_secs(10),
        never_reads,
    );
    let listen = Server::start(&["listen", "-k", "-e", "cat", "-i", "1s", "127.0.0.1:0"]);
    under_attack(
        "listen -k silent",
        listen.addr(),
        (ECHO_ASK, echoed),
        Duration::from_secs(8),
        silent,
    );
    let chat = Server::start(&["chat", "--no-history", "-i", "1s", "127.0.0.1:0"]);
    fn chat_said(got: &[u8]) -> bool {
        String::from_utf8_lossy(got).contains("> ping")
    }
    // The normal chat client talks, so it is never idle; the silent ones are cut.
    under_attack(
        "chat silent",
        chat.addr(),
        (b"ping\n", chat_said),
        Duration::from_secs(8),
        silent,
    );
}

/// Sends the transfer protocol's real opening (magic and version) a byte every 300 ms: only the
/// receiver's header timeout can tell it from a slow network.
fn trickles_the_magic(conn: &mut TcpStream) {
    for b in b"SOCKITXF\x01" {
        if conn.write_all(&[*b]).is_err() {
            return;
        }
        thread::sleep(Duration::from_millis(300));
    }
}

/// `recv -k` under silent senders and senders that trickle their opening: each is cut by the
/// header timeout (`--handshake-timeout`), and a normal `sockit send` during the attack is
/// served, verified, in about the time it takes without one (printed, not asserted).
#[test]
fn silent_and_trickling_senders_are_cut_and_recv_keeps_receiving() {
    let dest = tempfile::tempdir().expect("tempdir");
    let src = tempfile::tempdir().expect("tempdir");
    let recv = Server::start(&[
        "recv",
        dest.path().to_str().expect("utf-8 path"),
        "--listen",
        "127.0.0.1:0",
        "-k",
        "--handshake-timeout",
        "1s",
    ]);
    let addr = recv.addr();
    let data: Vec<u8> = (0..1 << 20).map(|i: u32| (i * 7 % 251) as u8).collect();
    let mut round = 0;
    let mut send = || {
        round += 1;
        let name = format!("f{round}.bin");
        std::fs::write(src.path().join(&name), &data).expect("source");
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_sockit"));
        cmd.arg("send")
            .arg(src.path().join(&name))
            .arg(addr.to_string());
        let start = Instant::now();
        let ran = common::run(cmd, b"", WAIT);
        let took = start.elapsed();
        assert_eq!(ran.code(), Some(0), "send {name}: {}", ran.stderr);
        assert!(
            std::fs::read(dest.path().join(&name)).expect("received") == data,
            "{name} differs"
        );
        took
    };
    let before = send();
    for (what, attack) in [
        ("silent", silent as fn(&mut TcpStream)),
        ("trickling", trickles_the_magic),
    ] {
        let (during, slowest) = attacked(
            addr,
            attack,
            Duration::from_secs(8),
            "a hostile sender",
            || {
                thread::sleep(Duration::from_millis(200));
                send()
            },
        );
        eprintln!(
            "recv -k {what}: a 1 MiB send took {before:?} before, {during:?} during; \
             {ATTACKERS} attackers cut within {slowest:?}"
        );
    }
    let after = send();
    eprintln!("recv -k: after {after:?}");
}
