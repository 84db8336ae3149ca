//! `sockit bench echo` against real servers on loopback: sockit's own echo server (as a library, in
//! the test), a server that echoes the wrong bytes, and a port nobody listens on.

use std::process::Output;
use std::time::Duration;

use serde_json::Value;
use sockit::echo::{EchoConfig, EchoServer, Transport};
use sockit::net::ServerOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Starts sockit's echo server on a free port; returns its address and the token that stops it.
async fn echo_server() -> (String, CancellationToken) {
    let server = EchoServer::bind(EchoConfig {
        endpoint: "127.0.0.1:0".parse().unwrap(),
        transport: Transport::Stream,
        upper: false,
        server: ServerOptions::default(),
    })
    .await
    .unwrap();
    let addr = server.local_addr().to_string();
    let stop = CancellationToken::new();
    tokio::spawn(server.run(stop.clone()));
    (addr, stop)
}

/// Runs the binary with `args` (off the runtime, which keeps serving meanwhile), bounded in time.
async fn sockit(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let run = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_sockit"))
            .args(&args)
            .output()
            .unwrap()
    });
    tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("sockit bench did not finish within 30 s")
        .unwrap()
}

fn report(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "exit {:?}, stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pingpong_against_sockit_echo_reports_round_trips_and_no_errors() {
    let (addr, stop) = echo_server().await;
    let out = sockit(&[
        "bench",
        "echo",
        &addr,
        "-c",
        "2",
        "-d",
        "1s",
        "--warmup",
        "0.2s",
        "--threads",
        "1",
        "--json",
    ])
    .await;
    stop.cancel();
    let r = report(&out);
    assert_eq!(r["mode"], "pingpong");
    assert_eq!(r["connected"], 2);
    assert_eq!(r["errors"], 0, "{r}");
    assert_eq!(r["connect_errors"], 0, "{r}");
    let round_trips = r["round_trips"].as_u64().unwrap();
    assert!(round_trips > 0, "{r}");
    assert_eq!(r["bytes"].as_u64().unwrap(), round_trips * 64, "{r}");
    let lat = &r["latency"];
    assert_eq!(lat["count"].as_u64().unwrap(), round_trips, "{r}");
    assert!(
        lat["p50_us"].as_f64().unwrap() <= lat["max_us"].as_f64().unwrap(),
        "{r}"
    );
    assert!(r["client_cpu"]["percent"].as_f64().unwrap() >= 0.0, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_mode_counts_echoed_bytes() {
    let (addr, stop) = echo_server().await;
    let out = sockit(&[
        "bench", "echo", &addr, "-c", "1", "--mode", "stream", "-d", "0.5s", "--warmup", "0",
        "--json",
    ])
    .await;
    stop.cancel();
    let r = report(&out);
    assert_eq!(r["mode"], "stream");
    assert_eq!(r["size"], 131072);
    assert_eq!(r["errors"], 0, "{r}");
    assert!(r["bytes"].as_u64().unwrap() > 0, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_echoing_wrong_bytes_is_counted_as_errors() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = s.read(&mut buf).await {
                    buf[..n].iter_mut().for_each(|b| *b ^= 0xff);
                    if s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let out = sockit(&[
        "bench", "echo", &addr, "-c", "2", "-d", "0.5s", "--warmup", "0", "--json",
    ])
    .await;
    let r = report(&out);
    assert_eq!(r["errors"], 2, "{r}");
    assert_eq!(r["round_trips"], 0, "{r}");
    assert!(
        r["first_error"]
            .as_str()
            .unwrap()
            .contains("different bytes"),
        "{r}"
    );
}

#[tokio::test]
async fn nobody_listening_is_a_one_line_error_with_exit_1() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let out = sockit(&[
        "bench",
        "echo",
        &format!("127.0.0.1:{port}"),
        "-c",
        "2",
        "-d",
        "1s",
    ])
    .await;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot connect to 127.0.0.1:") && err.contains("refused"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(out.stdout.is_empty());
}

#[tokio::test]
async fn bad_flags_are_usage_errors() {
    let out = sockit(&["bench", "echo", "-c", "0"]).await;
    assert_eq!(out.status.code(), Some(2));
    let out = sockit(&["bench", "echo", "--mode", "sideways"]).await;
    assert_eq!(out.status.code(), Some(2));
}

/// Starts sockit's chat server (no history, no rate limit) on a free port.
async fn chat_server() -> (String, CancellationToken) {
    use sockit::chat::{ChatConfig, ChatServer, ChatSettings, History};
    let server = ChatServer::bind(ChatConfig {
        endpoint: "127.0.0.1:0".parse().unwrap(),
        settings: ChatSettings {
            rate: 0.0,
            ..ChatSettings::default()
        },
        history: History::None,
        server: ServerOptions::default(),
        web: None,
    })
    .await
    .unwrap();
    let addr = server.local_addr().to_string();
    let stop = CancellationToken::new();
    tokio::spawn(server.run(stop.clone()));
    (addr, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_bench_counts_every_delivery_to_sockit_chat() {
    let (addr, stop) = chat_server().await;
    let out = sockit(&[
        "bench",
        "chat",
        &addr,
        "-c",
        "12",
        "--rooms",
        "2",
        "--senders",
        "4",
        "--rate",
        "20",
        "-d",
        "1s",
        "--warmup",
        "0.2s",
        "--server-pid",
        &std::process::id().to_string(),
        "--json",
    ])
    .await;
    let r = report(&out);
    assert_eq!(r["connected"], 12);
    // The server runs in this test process: its CPU over the window was read from /proc.
    let cpu = &r["server_cpu"];
    assert!(
        cpu["user_secs"].as_f64().unwrap() + cpu["sys_secs"].as_f64().unwrap() > 0.0,
        "{r}"
    );
    assert!(cpu["us_per_op"].as_f64().unwrap() > 0.0, "{r}");
    let sent = r["sent"].as_u64().unwrap();
    assert!(sent >= 40, "4 senders at 20/s for 1 s sent only {sent}");
    // Two rooms of 6: each message is due to the 5 others in its room, and sockit delivers all.
    assert_eq!(r["expected"].as_u64().unwrap(), sent * 5);
    assert_eq!(r["delivered"], r["expected"], "{r}");
    assert_eq!(r["echoed_to_sender"].as_u64().unwrap(), sent);
    assert!(r["latency"]["p99_us"].as_f64().unwrap() > 0.0);
    assert_eq!(r["disconnects"], 0);
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_bench_measures_ncat_chat_too() {
    if std::process::Command::new("ncat")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(std::env::var_os("CI").is_none(), "ncat is missing in CI");
        eprintln!("skipping: ncat is not installed");
        return;
    }
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut ncat = std::process::Command::new("ncat")
        .args(["-l", "--chat", "127.0.0.1", &port.to_string()])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let addr = format!("127.0.0.1:{port}");
    for _ in 0..100 {
        if std::net::TcpStream::connect(&addr).is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = sockit(&[
        "bench",
        "chat",
        &addr,
        "-c",
        "6",
        "--senders",
        "2",
        "--rate",
        "5",
        "-d",
        "1s",
        "--warmup",
        "0.2s",
        "--json",
    ])
    .await;
    let _ = ncat.kill();
    let _ = ncat.wait();
    let r = report(&out);
    // ncat --chat does not send a message back to its sender, and prefixes `<userN> `.
    assert_eq!(r["echoed_to_sender"], 0);
    assert!(r["delivered"].as_u64().unwrap() > 0, "{r}");
}

/// A server that accepts connections and never says a word: a client it has not greeted is not
/// counted as a member (a full accept queue leaves clients "connected" that no server ever saw),
/// unless told to with --no-greeting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_bench_counts_only_greeted_clients_as_connected() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let strict = [
        "bench",
        "chat",
        &addr,
        "-c",
        "3",
        "--senders",
        "0",
        "-d",
        "0.5s",
        "--warmup",
        "0s",
        "-w",
        "1s",
        "--json",
    ];
    let out = sockit(&strict).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("greeting"), "{err}");

    let loose = [&strict[..], &["--no-greeting"]].concat();
    let r = report(&sockit(&loose).await);
    assert_eq!(r["connected"], 3, "{r}");
    silent.abort();
}
