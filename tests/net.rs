//! The shared net layer as every server exposes it: allow/deny (addresses and CIDRs, from a second
//! loopback source address), `--max-conns`, `--idle-timeout`, the drain on SIGTERM/SIGINT,
//! address usage errors, and surviving a flood that runs the server out of file descriptors.
//! Plus the library's own seams: `serve` with a busy message and a bounded drain, `connect` with a
//! source address and a pinned TLS fingerprint.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{closed_without_data, connect, echo_roundtrip, py_tcp, read_to_close, run, Server};

// ---- allow / deny ----

/// Starts an echo server with `flags` and checks which of `sources` it admits.
fn check_access(flags: &[&str], admitted: &[&str], refused: &[&str]) {
    let mut args = vec!["echo"];
    args.extend_from_slice(flags);
    args.push("127.0.0.1:0");
    let server = Server::start(&args);
    for src in admitted {
        assert_eq!(
            py_tcp(server.addr(), src, "let me in"),
            "DATA b'let me in'",
            "{flags:?}: {src} should be admitted"
        );
    }
    for src in refused {
        let outcome = py_tcp(server.addr(), src, "");
        assert!(
            closed_without_data(&outcome),
            "{flags:?}: {src} should be refused, got {outcome}"
        );
        // The tutorial client, which sends first, must not get anything back either.
        let outcome = py_tcp(server.addr(), src, "hello");
        assert!(
            closed_without_data(&outcome),
            "{flags:?}: {src} should be refused, got {outcome}"
        );
    }
}

#[test]
fn allow_admits_only_listed_clients() {
    check_access(&["--allow", "127.0.0.1"], &["127.0.0.1"], &["127.0.0.2"]);
}

#[test]
fn deny_refuses_listed_clients() {
    check_access(
        &["--deny", "127.0.0.2/32"],
        &["127.0.0.1", "127.0.0.3"],
        &["127.0.0.2"],
    );
}

#[test]
fn cidr_and_list_forms() {
    // 127.0.0.0/31 is .0 and .1.
    check_access(&["--allow", "127.0.0.0/31"], &["127.0.0.1"], &["127.0.0.2"]);
    // Deny wins over allow; /31 covers .2 and .3; a non-canonical CIDR is truncated.
    check_access(
        &["--allow", "127.0.0.0/8", "--deny", "127.0.0.3/31"],
        &["127.0.0.1", "127.0.0.4"],
        &["127.0.0.2", "127.0.0.3"],
    );
    // Comma lists, and several flags adding up.
    check_access(
        &["--allow", "127.0.0.1,127.0.0.3", "--allow", "127.0.0.5"],
        &["127.0.0.1", "127.0.0.3", "127.0.0.5"],
        &["127.0.0.2", "127.0.0.4"],
    );
}

#[test]
fn nc_from_a_second_source_address() {
    let server = Server::start(&["echo", "--deny", "127.0.0.2", "127.0.0.1:0"]);
    let port = server.port().to_string();
    let nc = |source: &str| {
        let mut cmd = Command::new("nc");
        cmd.args(["-N", "-w", "5", "-s", source, "127.0.0.1", &port]);
        run(cmd, b"knock knock\n", Duration::from_secs(10))
    };
    let ok = nc("127.0.0.1");
    assert_eq!(ok.stdout_text(), "knock knock\n", "{}", ok.stderr);
    let refused = nc("127.0.0.2");
    assert!(!refused.timed_out, "refused nc was left hanging");
    assert!(
        refused.stdout.is_empty(),
        "refused client got {:?}",
        refused.stdout_text()
    );
}

#[test]
fn ipv6_allow_and_deny() {
    if !common::ipv6_available() {
        eprintln!("skipped: ::1 is not available on this machine");
        return;
    }
    let allowed = Server::start(&["echo", "--allow", "::1/128", "[::1]:0"]);
    assert_eq!(py_tcp(allowed.addr(), "", "v6"), "DATA b'v6'");
    let denied = Server::start(&["echo", "--deny", "::/64", "[::1]:0"]);
    assert!(closed_without_data(&py_tcp(denied.addr(), "", "")));
}

#[test]
fn udp_deny_gets_no_answer() {
    let server = Server::start(&["echo", "-u", "--deny", "127.0.0.2", "127.0.0.1:0"]);
    let out = common::python(
        r#"
import socket, sys
port = int(sys.argv[1])
for src in ["127.0.0.2", "127.0.0.1"]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1)
    s.bind((src, 0))
    s.sendto(b"ping", ("127.0.0.1", port))
    try:
        print(src, s.recvfrom(100)[0].decode())
    except socket.timeout:
        print(src, "no answer")
"#,
        &[&server.port().to_string()],
    );
    assert_eq!(out, "127.0.0.2 no answer\n127.0.0.1 ping\n");
}

// ---- limits ----

#[test]
fn max_conns_refuses_the_extra_client_cleanly() {
    let mut server = Server::start(&["echo", "--max-conns", "2", "127.0.0.1:0"]);
    let addr = server.addr();
    // A round trip proves each of the first two is being served.
    let mut a = connect(addr);
    assert_eq!(echo_roundtrip(&mut a, b"a"), b"a");
    let mut b = connect(addr);
    assert_eq!(echo_roundtrip(&mut b, b"b"), b"b");

    let mut c = connect(addr);
    match read_to_close(&mut c, Duration::from_secs(5)) {
        Ok(data) => assert!(data.is_empty(), "the third client got {data:?}"),
        Err(kind) => assert_eq!(
            kind,
            std::io::ErrorKind::ConnectionReset,
            "third client: {kind:?}"
        ),
    }
    assert!(server.is_running(), "server died refusing a client");

    // Free a slot; a new client is served (the slot frees once the server sees the close).
    drop(a);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut d = connect(addr);
        let _ = d.write_all(b"d");
        let mut byte = [0u8; 1];
        match d.read(&mut byte) {
            Ok(1) => {
                assert_eq!(&byte, b"d");
                break;
            }
            _ if Instant::now() < deadline => thread::sleep(Duration::from_millis(50)),
            other => panic!("no slot freed after a client left: {other:?}"),
        }
    }
    assert_eq!(echo_roundtrip(&mut b, b"still b"), b"still b");
}

#[test]
fn idle_timeout_closes_idle_clients_only() {
    let server = Server::start(&["echo", "--idle-timeout", "1s", "127.0.0.1:0"]);
    let mut idle = connect(server.addr());
    let mut active = connect(server.addr());
    assert_eq!(echo_roundtrip(&mut idle, b"then quiet"), b"then quiet");
    let start = Instant::now();

    // The active client talks every 200 ms for 2.5 s: well past the timeout, never idle for it.
    let mut i = 0;
    while start.elapsed() < Duration::from_millis(2500) {
        let msg = format!("tick {i}");
        assert_eq!(echo_roundtrip(&mut active, msg.as_bytes()), msg.as_bytes());
        i += 1;
        thread::sleep(Duration::from_millis(200));
    }

    // By now the idle one has been closed (EOF, nothing extra sent).
    match read_to_close(&mut idle, Duration::from_secs(3)) {
        Ok(data) => assert!(data.is_empty(), "idle client got {data:?}"),
        Err(kind) => panic!("idle client was not closed: {kind:?}"),
    }
    assert_eq!(echo_roundtrip(&mut active, b"still here"), b"still here");
}

// ---- shutdown ----

/// Clients that echo 16 KiB chunks in a loop until their connection ends or `stop` is set.
fn streaming_clients(
    addr: SocketAddr,
    n: usize,
    stop: Arc<AtomicBool>,
) -> (Vec<thread::JoinHandle<()>>, Arc<AtomicU64>) {
    let rounds = Arc::new(AtomicU64::new(0));
    let handles = (0..n)
        .map(|_| {
            let (stop, rounds) = (stop.clone(), rounds.clone());
            thread::spawn(move || {
                let mut s = connect(addr);
                s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
                let chunk = vec![b'z'; 16 * 1024];
                let mut back = vec![0u8; chunk.len()];
                let deadline = Instant::now() + Duration::from_secs(30);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    if s.write_all(&chunk).is_err() || s.read_exact(&mut back).is_err() {
                        break;
                    }
                    rounds.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    (handles, rounds)
}

fn signal_during_traffic_exits_zero(sig: i32) {
    let mut server = Server::start(&["echo", "--drain", "2s", "127.0.0.1:0"]);
    let stop = Arc::new(AtomicBool::new(false));
    let (clients, rounds) = streaming_clients(server.addr(), 4, stop.clone());
    let deadline = Instant::now() + Duration::from_secs(10);
    while rounds.load(Ordering::Relaxed) < 40 {
        assert!(Instant::now() < deadline, "clients never got going");
        thread::sleep(Duration::from_millis(10));
    }

    server.signal(sig);
    let status = server
        .wait_exit(Duration::from_secs(2 + 3))
        .unwrap_or_else(|| panic!("still running 5 s after signal {sig} with --drain 2s"));
    assert_eq!(
        status.code(),
        Some(0),
        "signal {sig}: {status:?}\n{}",
        server.stderr()
    );

    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
}

#[test]
fn sigterm_during_traffic_drains_and_exits_zero() {
    signal_during_traffic_exits_zero(libc::SIGTERM);
}

#[test]
fn sigint_during_traffic_drains_and_exits_zero() {
    signal_during_traffic_exits_zero(libc::SIGINT);
}

// ---- usage errors ----

#[test]
fn bad_addresses_are_one_line_usage_errors() {
    for tool in [&["echo"][..], &["echo", "-u"], &["daytime"]] {
        for bad in ["1.2.3.4:99999", "[::1]80", "::1:80"] {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_sockit"));
            cmd.args(tool).arg(bad);
            let ran = run(cmd, b"", Duration::from_secs(10));
            assert!(
                !ran.timed_out,
                "{tool:?} {bad} was accepted and the server ran"
            );
            assert_eq!(ran.code(), Some(2), "{tool:?} {bad}: {}", ran.stderr);
            let msg = ran.stderr.trim_end();
            assert_eq!(
                msg.lines().count(),
                1,
                "{tool:?} {bad}: not one line: {msg:?}"
            );
            assert!(
                msg.contains(bad),
                "{tool:?} {bad}: does not name the input: {msg:?}"
            );
        }
    }
    for entry in ["10.0.0.0/33", "not-an-ip"] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sockit"));
        cmd.args(["echo", "--allow", entry, "127.0.0.1:0"]);
        let ran = run(cmd, b"", Duration::from_secs(10));
        assert_eq!(ran.code(), Some(2), "--allow {entry}: {}", ran.stderr);
        assert_eq!(ran.stderr.trim_end().lines().count(), 1, "{:?}", ran.stderr);
    }
}

// ---- running out of file descriptors ----

#[test]
fn fd_exhaustion_is_survived() {
    const FLOOD: usize = 150;
    let mut cmd = Command::new("prlimit");
    cmd.args(["--nofile=64:64", "--"])
        .arg(env!("CARGO_BIN_EXE_sockit"))
        .args(["echo", "127.0.0.1:0"]);
    let mut server = Server::start_command(cmd);
    let addr = server.addr();
    // An answer shows the accept loop runs, so its connection budget was taken from the limit
    // it started with (lowering the limit before that, under load, gave a budget of one).
    let mut first = connect(addr);
    assert_eq!(echo_roundtrip(&mut first, b"up?"), b"up?");
    drop(first);
    // The server keeps its connections within what the limit allowed at start; lower the limit
    // under it (as another part of the process holding descriptors would) so that accept itself
    // runs out.
    let lowered = Command::new("prlimit")
        .args(["--pid", &server.pid().to_string(), "--nofile=24:24"])
        .status()
        .expect("prlimit");
    assert!(lowered.success());

    // More connections than the server has descriptors. The kernel completes the handshakes; the
    // server accepts until EMFILE.
    let flood: Vec<TcpStream> = (0..FLOOD).map(|_| connect(addr)).collect();
    assert!(
        server.wait_for_log("too many open files", Duration::from_secs(10)),
        "the server never ran out of descriptors (or did not log it):\n{}",
        server.stderr()
    );
    thread::sleep(Duration::from_millis(300));
    assert!(
        server.is_running(),
        "server died of EMFILE:\n{}",
        server.stderr()
    );

    drop(flood);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut s = connect(addr);
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let ok = s.write_all(b"after the flood").is_ok() && {
            let mut got = [0u8; 15];
            s.read_exact(&mut got).is_ok() && &got == b"after the flood"
        };
        if ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not served after the flood:\n{}",
            server.stderr()
        );
    }
    assert!(server.is_running());
}

// ---- the library seams ----

mod library {
    use std::time::{Duration, Instant};

    use bytes::Bytes;
    use sockit::echo::{EchoConfig, EchoServer, Transport};
    use sockit::net::tls::{ClientTls, ServerTls};
    use sockit::net::{
        accept_one, connect, serve, AccessList, ConnectOptions, Endpoint, Listener, ServerOptions,
    };
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_util::sync::CancellationToken;

    fn local() -> Endpoint {
        "127.0.0.1:0".parse().unwrap()
    }

    /// Starts an echo server with `options`, returns its endpoint and shutdown token.
    async fn echo_server(
        options: ServerOptions,
    ) -> (Endpoint, CancellationToken, tokio::task::JoinHandle<()>) {
        let server = EchoServer::bind(EchoConfig {
            endpoint: local(),
            transport: Transport::Stream,
            upper: false,
            server: options,
        })
        .await
        .unwrap();
        let ep = server.local_addr().endpoint();
        let token = CancellationToken::new();
        let task = tokio::spawn(server.run(token.clone()));
        (ep, token, task)
    }

    async fn roundtrip(stream: &mut sockit::net::Stream, msg: &[u8]) -> Vec<u8> {
        stream.write_all(msg).await.unwrap();
        let mut got = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut got))
            .await
            .expect("echo timed out")
            .unwrap();
        got
    }

    #[tokio::test]
    async fn connect_from_a_source_address_meets_the_access_list() {
        let mut access = AccessList::default();
        access.deny("127.0.0.2").unwrap();
        let (ep, token, task) = echo_server(ServerOptions {
            access,
            ..ServerOptions::default()
        })
        .await;
        let from = |ip: &str| ConnectOptions {
            source: Some(ip.parse().unwrap()),
            timeout: Some(Duration::from_secs(5)),
            tls: None,
        };
        let mut ok = connect(&ep, &from("127.0.0.1")).await.unwrap();
        assert_eq!(roundtrip(&mut ok, b"hi").await, b"hi");
        let mut refused = connect(&ep, &from("127.0.0.2")).await.unwrap();
        let mut buf = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(5), refused.read_to_end(&mut buf))
            .await
            .expect("refused client left open");
        assert!(n.is_err() || buf.is_empty(), "refused client got {buf:?}");
        token.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn tls_client_pins_the_server_fingerprint() {
        let tls = ServerTls::self_signed(&[], &[]).unwrap();
        let good = tls.fingerprint().to_string();
        let (ep, token, task) = echo_server(ServerOptions {
            tls: Some(tls),
            ..ServerOptions::default()
        })
        .await;
        let pinned = |fp: &str| ConnectOptions {
            timeout: Some(Duration::from_secs(5)),
            source: None,
            tls: Some(ClientTls {
                fingerprint: Some(fp.to_string()),
                ..ClientTls::default()
            }),
        };
        let mut s = connect(&ep, &pinned(&good)).await.unwrap();
        assert_eq!(roundtrip(&mut s, b"secret").await, b"secret");

        let wrong = good.replace(|c: char| c.is_ascii_hexdigit(), "0");
        let err = connect(&ep, &pinned(&wrong)).await.unwrap_err();
        assert!(err.to_string().contains("fingerprint"), "{err}");
        assert_eq!(err.exit_code(), 1);

        // Without a pin or a CA the self-signed certificate must be rejected.
        let strict = ConnectOptions {
            timeout: Some(Duration::from_secs(5)),
            source: None,
            tls: Some(ClientTls::default()),
        };
        assert!(connect(&ep, &strict).await.is_err());
        token.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn busy_clients_are_told_and_closed() {
        let listener = Listener::bind(&local()).await.unwrap();
        let ep = listener.local_addr().endpoint();
        let token = CancellationToken::new();
        let opts = ServerOptions {
            max_conns: 1,
            busy_message: Some(Bytes::from_static(b"busy, try later\r\n")),
            ..ServerOptions::default()
        };
        let server = tokio::spawn(serve(
            listener,
            opts,
            token.clone(),
            |mut conn| async move {
                let _ = conn.stream.write_all(b"welcome\r\n").await;
                conn.shutdown.cancelled().await;
            },
        ));
        let opts = ConnectOptions::default();
        let mut first = connect(&ep, &opts).await.unwrap();
        let mut line = [0u8; 9];
        first.read_exact(&mut line).await.unwrap();
        assert_eq!(&line, b"welcome\r\n");
        let mut second = connect(&ep, &opts).await.unwrap();
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), second.read_to_end(&mut got))
            .await
            .expect("busy client left open")
            .unwrap();
        assert_eq!(got, b"busy, try later\r\n");
        token.cancel();
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("serve did not stop")
            .unwrap();
    }

    #[tokio::test]
    async fn drain_is_bounded_for_handlers_that_ignore_shutdown() {
        let listener = Listener::bind(&local()).await.unwrap();
        let ep = listener.local_addr().endpoint();
        let token = CancellationToken::new();
        let opts = ServerOptions {
            drain: Duration::from_millis(300),
            ..ServerOptions::default()
        };
        let server = tokio::spawn(serve(
            listener,
            opts,
            token.clone(),
            |mut conn| async move {
                let _ = conn.stream.write_all(b"x").await;
                // A stubborn handler: never looks at the shutdown token.
                tokio::time::sleep(Duration::from_secs(3600)).await;
            },
        ));
        let mut client = connect(&ep, &ConnectOptions::default()).await.unwrap();
        let mut byte = [0u8; 1];
        client.read_exact(&mut byte).await.unwrap();
        let start = Instant::now();
        token.cancel();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("drain did not cut the stubborn handler")
            .unwrap();
        assert!(
            start.elapsed() >= Duration::from_millis(250),
            "drain did not wait"
        );
        // The cut connection is closed.
        let mut rest = Vec::new();
        let r = tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut rest)).await;
        assert!(r.is_ok(), "cut connection left open");
    }

    /// `accept_one` hands over the first client that passes allow/deny and its TLS handshake:
    /// a denied client and one that stalls its handshake are skipped, not returned, and the
    /// next good client gets the connection.
    #[tokio::test]
    async fn accept_one_returns_the_first_admitted_client() {
        let tls = ServerTls::self_signed(&[], &[]).unwrap();
        let fp = tls.fingerprint().to_string();
        let mut access = AccessList::default();
        access.deny("127.0.0.2").unwrap();
        let opts = ServerOptions {
            access,
            tls: Some(tls),
            handshake_timeout: Duration::from_millis(300),
            ..ServerOptions::default()
        };
        let listener = Listener::bind(&local()).await.unwrap();
        let ep = listener.local_addr().endpoint();
        let token = CancellationToken::new();
        let accepting = {
            let token = token.clone();
            tokio::spawn(async move {
                let conn = accept_one(&listener, &opts, &token).await;
                (conn, listener)
            })
        };
        // Denied by address: dropped at once.
        let denied = ConnectOptions {
            source: Some("127.0.0.2".parse().unwrap()),
            timeout: Some(Duration::from_secs(5)),
            tls: None,
        };
        let mut refused = connect(&ep, &denied).await.unwrap();
        let mut buf = Vec::new();
        let r = tokio::time::timeout(Duration::from_secs(5), refused.read_to_end(&mut buf)).await;
        assert!(r.is_ok(), "denied client left open");
        // Allowed, but never starts its handshake: cut after the handshake timeout.
        let mut stalled = connect(&ep, &ConnectOptions::default()).await.unwrap();
        let good = ConnectOptions {
            timeout: Some(Duration::from_secs(5)),
            source: None,
            tls: Some(ClientTls {
                fingerprint: Some(fp),
                ..ClientTls::default()
            }),
        };
        let mut client = connect(&ep, &good).await.unwrap();
        let (conn, listener) = tokio::time::timeout(Duration::from_secs(5), accepting)
            .await
            .expect("accept_one never returned")
            .unwrap();
        let mut conn = conn.expect("no connection");
        assert_eq!(conn.peer.to_string().split(':').next(), Some("127.0.0.1"));
        client.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        conn.stream.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        let r = tokio::time::timeout(Duration::from_secs(5), stalled.read_to_end(&mut buf)).await;
        assert!(r.is_ok(), "stalled handshake left open");
        // Cancelled while waiting: None.
        let token2 = CancellationToken::new();
        token2.cancel();
        let none = accept_one(&listener, &ServerOptions::default(), &token2).await;
        assert!(none.is_none());
        drop(token);
    }
}
