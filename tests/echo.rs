//! The echo server against real peers: nc, socat, openssl s_client and the tutorials' python
//! clients, over TCP, UDP, Unix sockets, IPv6 and TLS; `--upper`; a thousand concurrent clients;
//! a 100 MiB stream compared by SHA-256.

mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{python, run, Server};
use sha2::{Digest, Sha256};

const LIMIT: Duration = Duration::from_secs(15);

fn nc_tcp(host: &str, port: u16, input: &[u8]) -> Vec<u8> {
    let mut cmd = Command::new("nc");
    cmd.args(["-N", "-w", "5", host, &port.to_string()]);
    let ran = run(cmd, input, LIMIT);
    assert!(!ran.timed_out, "nc did not finish; stderr: {}", ran.stderr);
    assert_eq!(ran.code(), Some(0), "nc failed: {}", ran.stderr);
    ran.stdout
}

#[test]
fn tcp_echo_with_nc() {
    let server = Server::start(&["echo", "127.0.0.1:0"]);
    let input = b"hello from nc\nsecond line\n\0binary\xff\xfe bytes\n";
    assert_eq!(nc_tcp("127.0.0.1", server.port(), input), input);
}

#[test]
fn tcp_echo_with_socat() {
    let server = Server::start(&["echo", "127.0.0.1:0"]);
    // 256 KiB of every byte value: more than one read buffer, arbitrary binary.
    let input: Vec<u8> = (0..256 * 1024).map(|i| (i * 7 + i / 251) as u8).collect();
    let mut cmd = Command::new("socat");
    cmd.args(["-t", "5", "-", &format!("TCP:{}", server.addr())]);
    let ran = run(cmd, &input, LIMIT);
    assert!(
        !ran.timed_out,
        "socat did not finish; stderr: {}",
        ran.stderr
    );
    assert_eq!(ran.code(), Some(0), "socat failed: {}", ran.stderr);
    assert_eq!(ran.stdout.len(), input.len());
    assert!(ran.stdout == input, "socat got different bytes back");
}

/// The tutorial TCP echo client, verbatim in spirit: send without a newline, one recv(1024).
const TUTORIAL_TCP: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.settimeout(5)
s.connect(("127.0.0.1", int(sys.argv[1])))
for msg in [b"hello", b"second message", "\u00e9t\u00e9".encode()]:
    s.send(msg)
    data = s.recv(1024)
    assert data == msg, (msg, data)
    print(data.decode())
s.close()
"#;

#[test]
fn tutorial_python_tcp_client() {
    let server = Server::start(&["echo", "127.0.0.1:0"]);
    let out = python(TUTORIAL_TCP, &[&server.port().to_string()]);
    assert_eq!(out, "hello\nsecond message\nété\n");
}

/// The tutorial UDP client: one datagram per line, waits for one datagram back.
const TUTORIAL_UDP: &str = r#"
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
for line in sys.argv[3:]:
    s.sendto(line.encode(), (host, port))
    data, peer = s.recvfrom(65535)
    assert peer == (host, port), peer
    print(data.decode())
big = b"0123456789-" * 5400  # 59400 bytes, near the datagram limit; no letters, so --upper keeps it
s.sendto(big, (host, port))
data, _ = s.recvfrom(65535)
assert data == big, len(data)
print("big ok")
"#;

#[test]
fn udp_echo_with_python() {
    let server = Server::start(&["echo", "-u", "127.0.0.1:0"]);
    let out = python(
        TUTORIAL_UDP,
        &[
            "127.0.0.1",
            &server.port().to_string(),
            "one",
            "two words",
            "straße",
        ],
    );
    assert_eq!(out, "one\ntwo words\nstraße\nbig ok\n");
}

#[test]
fn udp_echo_with_nc() {
    let server = Server::start(&["echo", "-u", "127.0.0.1:0"]);
    let mut cmd = Command::new("nc");
    cmd.args(["-u", "-w", "1", "127.0.0.1", &server.port().to_string()]);
    let ran = run(cmd, b"hi over udp\n", LIMIT);
    assert!(!ran.timed_out, "nc -u did not finish");
    assert_eq!(ran.stdout_text(), "hi over udp\n");
}

#[test]
fn unix_socket_echo_with_socat_and_python() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("echo.sock");
    let server = Server::start(&["echo", &format!("unix:{}", path.display())]);
    assert_eq!(server.unix_path(), path.display().to_string());

    let mut cmd = Command::new("socat");
    cmd.args(["-t", "5", "-", &format!("UNIX-CONNECT:{}", path.display())]);
    let ran = run(cmd, b"over a unix socket\n", LIMIT);
    assert_eq!(ran.code(), Some(0), "socat failed: {}", ran.stderr);
    assert_eq!(ran.stdout_text(), "over a unix socket\n");

    let out = python(
        r#"
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(5)
s.connect(sys.argv[1])
s.send(b"hello")
print(s.recv(1024).decode())
"#,
        &[&path.display().to_string()],
    );
    assert_eq!(out, "hello\n");
}

#[test]
fn upper_cases_ascii_and_utf8() {
    let server = Server::start(&["echo", "--upper", "127.0.0.1:0"]);
    let got = nc_tcp(
        "127.0.0.1",
        server.port(),
        "hello world\nstraße ünïcödé\n".as_bytes(),
    );
    assert_eq!(
        String::from_utf8(got).unwrap(),
        "HELLO WORLD\nSTRASSE ÜNÏCÖDÉ\n"
    );

    // The tutorial client's pattern: no newline, one recv.
    let out = python(
        r#"
import socket, sys
s = socket.socket(); s.settimeout(5)
s.connect(("127.0.0.1", int(sys.argv[1])))
s.send("straße".encode())
print(s.recv(1024).decode())
"#,
        &[&server.port().to_string()],
    );
    assert_eq!(out, "STRASSE\n");

    let udp = Server::start(&["echo", "-u", "--upper", "127.0.0.1:0"]);
    let out = python(
        TUTORIAL_UDP,
        &["127.0.0.1", &udp.port().to_string(), "hi", "straße"],
    );
    assert_eq!(out, "HI\nSTRASSE\nbig ok\n");
}

#[test]
fn ipv6_loopback() {
    if !common::ipv6_available() {
        eprintln!("skipped: ::1 is not available on this machine");
        return;
    }
    let server = Server::start(&["echo", "[::1]:0"]);
    assert!(
        server.announced.starts_with("[::1]:"),
        "{}",
        server.announced
    );
    assert_eq!(nc_tcp("::1", server.port(), b"over ipv6\n"), b"over ipv6\n");
    assert_eq!(
        common::py_tcp(server.addr(), "", "hello6"),
        "DATA b'hello6'"
    );
}

/// A thousand clients connected at once, each checking that it gets its own bytes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_clients() {
    use sockit::echo::{EchoConfig, EchoServer, Transport};
    use sockit::net::ServerOptions;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::Barrier;

    const CLIENTS: usize = 1000;
    // Client and server ends both live in this process.
    let limit = common::raise_nofile(4 * CLIENTS as u64);
    assert!(
        limit >= 2 * CLIENTS as u64 + 100,
        "RLIMIT_NOFILE hard limit too low: {limit}"
    );

    let server = EchoServer::bind(EchoConfig {
        endpoint: "127.0.0.1:0".parse().unwrap(),
        transport: Transport::Stream,
        upper: false,
        server: ServerOptions::default(),
    })
    .await
    .unwrap();
    let addr = server.local_addr().inet().unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(server.run(shutdown.clone()));

    let connected = Arc::new(Barrier::new(CLIENTS));
    let answered = Arc::new(Barrier::new(CLIENTS));
    let mut clients = tokio::task::JoinSet::new();
    for i in 0..CLIENTS {
        let (connected, answered) = (connected.clone(), answered.clone());
        clients.spawn(async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
            connected.wait().await;
            let payload = format!("client {i} {}\n", "x".repeat(i % 300)).into_bytes();
            s.write_all(&payload).await.expect("write");
            let mut got = vec![0u8; payload.len()];
            s.read_exact(&mut got).await.expect("read");
            assert_eq!(got, payload, "client {i} got someone else's bytes");
            // Hold the connection until everyone has been answered: all 1000 are open at once.
            answered.wait().await;
            i
        });
    }
    let all = tokio::time::timeout(Duration::from_secs(60), async {
        let mut done = Vec::new();
        while let Some(r) = clients.join_next().await {
            done.push(r.expect("client task"));
        }
        done
    })
    .await
    .expect("clients did not finish in 60 s");
    assert_eq!(all.len(), CLIENTS);

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("server did not stop after shutdown")
        .unwrap();
}

/// Fills `buf` with a reproducible pseudo-random stream (xorshift64).
fn fill(buf: &mut [u8], state: &mut u64) {
    for chunk in buf.chunks_mut(8) {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
}

#[test]
fn hundred_mib_stream_is_echoed_byte_exact() {
    const TOTAL: usize = 100 << 20;
    let server = Server::start(&["echo", "127.0.0.1:0"]);
    let mut sender = common::connect(server.addr());
    let mut receiver = sender.try_clone().unwrap();
    receiver
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    sender
        .set_write_timeout(Some(Duration::from_secs(30)))
        .unwrap();

    let send = thread::spawn(move || {
        let mut hash = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut sent = 0;
        while sent < TOTAL {
            fill(&mut buf, &mut state);
            sender.write_all(&buf).expect("send");
            hash.update(&buf);
            sent += buf.len();
        }
        common::finish_writing(&sender);
        hash.finalize()
    });

    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut received = 0usize;
    loop {
        let n = receiver.read(&mut buf).expect("receive");
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        received += n;
        assert!(received <= TOTAL, "more bytes came back than were sent");
    }
    let sent_digest = send.join().unwrap();
    assert_eq!(received, TOTAL);
    assert_eq!(hex::encode(hash.finalize()), hex::encode(sent_digest));
}

// ---- TLS ----

/// Starts `openssl s_client ... -quiet ARGS`, writes `input`, and returns what came back once it
/// contains `input` (or whatever arrived before the time limit), plus s_client's stderr.
/// `-quiet` implies `-ign_eof`, so s_client never exits by itself; it is killed here.
fn s_client_echo(port: u16, extra: &[&str], input: &[u8]) -> (Vec<u8>, String, bool) {
    let mut child = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-quiet",
        ])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn openssl");
    child.stdin.as_mut().unwrap().write_all(input).unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let mut out = child.stdout.take().unwrap();
    let sink = got.clone();
    thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    let mut err = child.stderr.take().unwrap();
    let errs = thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut exited_early = false;
    while Instant::now() < deadline {
        if got.lock().unwrap().len() >= input.len() {
            break;
        }
        if child.try_wait().unwrap().is_some() {
            exited_early = true;
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    let stderr = errs.join().unwrap();
    let bytes = got.lock().unwrap().clone();
    (bytes, stderr, exited_early)
}

/// The SHA-256 fingerprint (upper-case hex with colons) of the certificate the server presents,
/// as openssl computes it.
fn served_fingerprint(port: u16) -> String {
    let mut cmd = Command::new("openssl");
    cmd.args([
        "s_client",
        "-connect",
        &format!("127.0.0.1:{port}"),
        "-showcerts",
    ]);
    let ran = run(cmd, b"", LIMIT);
    let text = ran.stdout_text();
    let start = text
        .find("-----BEGIN CERTIFICATE-----")
        .expect("no certificate shown");
    let end = text.find("-----END CERTIFICATE-----").unwrap() + "-----END CERTIFICATE-----".len();
    let pem = format!("{}\n", &text[start..end]);
    pem_fingerprint(pem.as_bytes())
}

fn pem_fingerprint(pem: &[u8]) -> String {
    let mut cmd = Command::new("openssl");
    cmd.args(["x509", "-noout", "-fingerprint", "-sha256"]);
    let ran = run(cmd, pem, LIMIT);
    assert_eq!(ran.code(), Some(0), "openssl x509: {}", ran.stderr);
    // "sha256 Fingerprint=AB:CD:..."
    ran.stdout_text()
        .trim()
        .split('=')
        .nth(1)
        .expect("fingerprint line")
        .to_uppercase()
}

/// The fingerprint the server printed on stderr, if any.
fn printed_fingerprint(server: &Server) -> Option<String> {
    let stderr = server.stderr();
    let at = stderr.find("SHA-256 fingerprint ")?;
    let rest = &stderr[at + "SHA-256 fingerprint ".len()..];
    Some(rest.split_whitespace().next()?.to_uppercase())
}

#[test]
fn tls_self_signed_with_s_client() {
    let server = Server::start(&["echo", "--tls", "127.0.0.1:0"]);
    let printed = printed_fingerprint(&server).expect("no SHA-256 fingerprint line on stderr");
    assert_eq!(printed.len(), 32 * 3 - 1, "{printed}");

    let input = b"hello over tls\nstra\xc3\x9fe\n";
    let (got, stderr, _) = s_client_echo(server.port(), &[], input);
    assert_eq!(got, input, "s_client stderr: {stderr}");

    assert_eq!(served_fingerprint(server.port()), printed);
}

#[test]
fn tls_with_cert_files_verified_by_s_client() {
    let dir = tempfile::tempdir().unwrap();
    let make = |name: &str| {
        let (cert, key) = (
            dir.path().join(format!("{name}.crt")),
            dir.path().join(format!("{name}.key")),
        );
        let mut cmd = Command::new("openssl");
        cmd.args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert);
        let ran = run(cmd, b"", LIMIT);
        assert_eq!(ran.code(), Some(0), "openssl req: {}", ran.stderr);
        (cert.display().to_string(), key.display().to_string())
    };
    let (cert, key) = make("server");
    let (other_ca, _) = make("other");

    let server = Server::start(&[
        "echo",
        "--tls",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "127.0.0.1:0",
    ]);
    let verify = ["-verify_return_error", "-verify_ip", "127.0.0.1", "-CAfile"];

    let input = b"verified echo\n";
    let args: Vec<&str> = verify.iter().copied().chain([cert.as_str()]).collect();
    let (got, stderr, _) = s_client_echo(server.port(), &args, input);
    assert_eq!(got, input, "s_client stderr: {stderr}");
    assert!(!stderr.contains("verify error"), "{stderr}");

    // The control: against a CA that did not sign the certificate, verification must fail.
    let args: Vec<&str> = verify.iter().copied().chain([other_ca.as_str()]).collect();
    let (got, stderr, _) = s_client_echo(server.port(), &args, input);
    assert!(got.is_empty(), "unverified server answered: {got:?}");
    assert!(stderr.contains("verify error"), "{stderr}");

    let file_fp = pem_fingerprint(&std::fs::read(&cert).unwrap());
    assert_eq!(served_fingerprint(server.port()), file_fp);
    if let Some(printed) = printed_fingerprint(&server) {
        assert_eq!(
            printed, file_fp,
            "printed fingerprint is not the served certificate's"
        );
    }
}

// ---- UDP: forged sources and reply limits ----

#[path = "relay_util/forge.rs"]
mod forge;

use std::net::{SocketAddr, SocketAddrV4, UdpSocket};

async fn udp_echo(limits: sockit::net::ReplyLimits) -> (SocketAddrV4, sockit::echo::EchoStats) {
    use sockit::echo::{EchoConfig, EchoServer, Transport};
    let server = EchoServer::bind(EchoConfig {
        endpoint: "127.0.0.1:0".parse().unwrap(),
        transport: Transport::Datagram,
        upper: false,
        server: sockit::net::ServerOptions::default(),
    })
    .await
    .unwrap()
    .with_reply_limits(limits);
    let addr = match server.local_addr().inet().unwrap() {
        SocketAddr::V4(a) => a,
        other => panic!("not IPv4: {other}"),
    };
    let stats = server.stats();
    // Runs for the rest of the test (the runtime ends with it).
    tokio::spawn(server.run(tokio_util::sync::CancellationToken::new()));
    (addr, stats)
}

/// Waits until `count` has not moved for `still`, within a bound; returns its value.
async fn settled(count: impl Fn() -> u64, still: Duration) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = count();
    loop {
        tokio::time::sleep(still).await;
        let now = count();
        if now == last {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "still counting after 20 s: {now} (a loop)"
        );
        last = now;
    }
}

/// One forged datagram whose source is the server's own address must not start it answering
/// itself for ever: it is not answered at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_forged_own_source_is_not_answered() {
    if !forge::can_forge() {
        eprintln!("skipped: forging a source address needs a raw socket (root)");
        return;
    }
    let (addr, stats) = udp_echo(Default::default()).await;
    tokio::task::spawn_blocking(move || forge::forge_udp(addr, addr, "loop?"))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while stats.datagrams().refused() + stats.datagrams().replied() == 0 {
        assert!(
            Instant::now() < deadline,
            "the forged datagram never arrived"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let replied = settled(|| stats.datagrams().replied(), Duration::from_millis(300)).await;
    assert_eq!(replied, 0, "the server answered itself");
}

/// One forged datagram from daytime -u's address to echo -u's: the two would ping-pong for ever.
/// Neither port is on the refused list (both are ephemeral), so what ends it is the per-source
/// reply limit: echo answers at most a burst, then drops one, and with one datagram in flight
/// that is the end of the loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_forged_loop_between_daytime_and_echo_dies() {
    use sockit::daytime::{DaytimeConfig, DaytimeServer, DEFAULT_FORMAT};
    if !forge::can_forge() {
        eprintln!("skipped: forging a source address needs a raw socket (root)");
        return;
    }
    let limits = sockit::net::ReplyLimits::default();
    let (echo, echo_stats) = udp_echo(limits).await;
    let daytime = DaytimeServer::bind(DaytimeConfig {
        endpoint: "127.0.0.1:0".parse().unwrap(),
        udp: true,
        format: DEFAULT_FORMAT.into(),
        utc: true,
        server: sockit::net::ServerOptions::default(),
    })
    .await
    .unwrap()
    .with_reply_limits(limits);
    let day_stats = daytime.datagram_stats();
    let day = match daytime.local_addr().inet().unwrap() {
        SocketAddr::V4(a) => a,
        other => panic!("not IPv4: {other}"),
    };
    tokio::spawn(daytime.run(tokio_util::sync::CancellationToken::new()));

    tokio::task::spawn_blocking(move || forge::forge_udp(day, echo, "what time is it?"))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while echo_stats.datagrams().replied() == 0 {
        assert!(
            Instant::now() < deadline,
            "the forged datagram never arrived"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let echoed = settled(
        || echo_stats.datagrams().replied(),
        Duration::from_millis(500),
    )
    .await;
    let timed = day_stats.replied();
    let bound = u64::from(limits.burst) + 10;
    assert!(
        echoed <= bound,
        "echo answered {echoed} times (bound {bound})"
    );
    assert!(
        timed <= bound,
        "daytime answered {timed} times (bound {bound})"
    );
    assert!(
        echo_stats.datagrams().limited() + day_stats.limited() >= 1,
        "the loop ended without the limiter"
    );
}

/// A client sending 1000 datagrams as fast as it can gets no more back than its bucket allows
/// (`--reply-burst` plus `--reply-rate` per second of the exchange), and a client from another
/// address is still answered meanwhile.
#[test]
fn udp_replies_are_rate_limited_per_source() {
    let server = Server::start(&[
        "echo",
        "-u",
        "--reply-rate",
        "20",
        "--reply-burst",
        "10",
        "127.0.0.1:0",
    ]);
    let flood = UdpSocket::bind("127.0.0.1:0").unwrap();
    flood
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let started = Instant::now();
    for i in 0..1000 {
        flood
            .send_to(format!("{i}").as_bytes(), server.addr())
            .unwrap();
    }
    let mut got = 0u64;
    let mut buf = [0u8; 64];
    while flood.recv(&mut buf).is_ok() {
        got += 1;
        assert!(got <= 1000, "more replies than datagrams");
    }
    let secs = started.elapsed().as_secs_f64();
    let bound = 10 + (20.0 * secs).ceil() as u64 + 1;
    assert!(got >= 1, "no reply at all");
    assert!(got <= bound, "{got} replies in {secs:.2} s (bound {bound})");

    // Another address (127.0.0.2 is loopback too) has its own bucket.
    let other = UdpSocket::bind("127.0.0.2:0").unwrap();
    other.set_read_timeout(Some(LIMIT)).unwrap();
    other.send_to(b"me too", server.addr()).unwrap();
    let n = other
        .recv(&mut buf)
        .expect("the other client was not answered");
    assert_eq!(&buf[..n], b"me too");
}

/// After a bulk transfer a connection's read buffer has grown to 1 MiB; once the connection is
/// quiet it goes back to the small first buffer (else 10,000 idle connections would hold 10 GB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_buffer_shrinks_when_the_connection_goes_quiet() {
    use sockit::echo::{EchoConfig, EchoServer, Transport};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const CLIENTS: usize = 4;
    const BULK: usize = 8 << 20;
    let server = EchoServer::bind(EchoConfig {
        endpoint: "127.0.0.1:0".parse().unwrap(),
        transport: Transport::Stream,
        upper: false,
        server: sockit::net::ServerOptions::default(),
    })
    .await
    .unwrap();
    let addr = server.local_addr().inet().unwrap();
    let stats = server.stats();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(server.run(shutdown.clone()));

    let peak = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let sampler = {
        let (stats, peak) = (stats.clone(), peak.clone());
        tokio::spawn(async move {
            loop {
                peak.fetch_max(stats.buffer_bytes(), std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let mut conns = Vec::new();
    for _ in 0..CLIENTS {
        let s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut rd, mut wr) = s.into_split();
        let writer = tokio::spawn(async move {
            let chunk = vec![7u8; 256 * 1024];
            for _ in 0..BULK / chunk.len() {
                wr.write_all(&chunk).await.unwrap();
            }
            wr // kept open: the connection stays, quiet
        });
        let mut got = 0;
        let mut buf = vec![0u8; 256 * 1024];
        let reading = async {
            while got < BULK {
                let n = rd.read(&mut buf).await.unwrap();
                assert!(n > 0, "server closed early");
                got += n;
            }
        };
        tokio::time::timeout(Duration::from_secs(60), reading)
            .await
            .expect("bulk echo did not finish");
        conns.push((rd, writer.await.unwrap()));
    }
    sampler.abort();
    let peak = peak.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        peak >= 1 << 20,
        "the buffers never grew (peak {peak} bytes)"
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let held = stats.buffer_bytes();
        if held <= CLIENTS * 4096 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{CLIENTS} quiet connections still hold {held} bytes of buffer"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Still working after the shrink (and the buffer can grow again).
    let (rd, wr) = &mut conns[0];
    wr.write_all(b"still there").await.unwrap();
    let mut buf = [0u8; 11];
    rd.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"still there");
    drop(conns);
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("server did not stop")
        .unwrap();
}
