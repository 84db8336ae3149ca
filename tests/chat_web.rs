//! `sockit chat --web`: the page and its WebSocket, tested against the real binary. A real browser
//! (headless Chromium, driven by tests/web/chat.e2e.mjs) chats with a raw TCP client and survives
//! a server restart; WebSocket clients (tokio-tungstenite) check the limits: the Origin check,
//! message sizes, the idle timeout and the goodbye on shutdown.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::Server;
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(10);

/// Starts `sockit chat ARGS` and returns it with the page's URL.
fn start(args: &[&str]) -> (Server, String) {
    let mut all = vec!["chat", "--no-history"];
    all.extend_from_slice(args);
    let server = Server::start(&all);
    let url = server.web_page_url();
    (server, url)
}

fn web_addr(url: &str) -> String {
    url.trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string()
}

/// A free port now (bound to port 0, then released), for a server that must come back on the same
/// port after a restart.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The status line a raw WebSocket handshake to `/ws` gets with these headers.
fn handshake_status(addr: &str, origin: Option<&str>, host: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let origin = origin
        .map(|o| format!("Origin: {o}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{origin}\r\n"
    )
    .unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    line.trim().to_string()
}

#[test]
fn origin_check_refuses_foreign_pages() {
    let (server, url) = start(&["127.0.0.1:0", "--web", "127.0.0.1:0"]);
    let addr = web_addr(&url);
    let own = format!("http://{addr}");
    assert!(handshake_status(&addr, Some("http://evil.example"), &addr).contains(" 403 "));
    assert!(handshake_status(&addr, Some("https://evil.example"), &addr).contains(" 403 "));
    // Same host, other port: another origin.
    let other_port = format!("http://127.0.0.1:{}", free_port());
    assert!(handshake_status(&addr, Some(&other_port), &addr).contains(" 403 "));
    assert!(handshake_status(&addr, Some(&own), &addr).contains(" 101 "));
    // Not a browser: no Origin at all.
    assert!(handshake_status(&addr, None, &addr).contains(" 101 "));
    assert!(server.wait_for_log("websocket refused", WAIT));
}

#[test]
fn web_origin_admits_named_pages() {
    let (_server, url) = start(&[
        "127.0.0.1:0",
        "--web",
        "127.0.0.1:0",
        "--web-origin",
        "https://chat.example.org",
    ]);
    let addr = web_addr(&url);
    assert!(handshake_status(&addr, Some("https://chat.example.org"), &addr).contains(" 101 "));
    assert!(handshake_status(&addr, Some("http://evil.example"), &addr).contains(" 403 "));
    // Behind a proxy that passes its public name on as Host, the page and socket are served.
    let public = "chat.example.org";
    assert!(handshake_status(&addr, Some("https://chat.example.org"), public).contains(" 101 "));
    assert!(get_status(&addr, "/", Some(public), "1.1").contains(" 200 "));
}

#[test]
fn serves_the_page_with_its_assets() {
    let (_server, url) = start(&["127.0.0.1:0", "--web", "127.0.0.1:0"]);
    let addr = web_addr(&url);
    let get = |path: &str| {
        let mut s = TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    let index = get("/");
    assert!(index.starts_with("HTTP/1.1 200"), "{index}");
    assert!(index.contains("content-security-policy: default-src 'none'"));
    assert!(index.contains("<script src=\"/app.js\""));
    let js = get("/app.js");
    assert!(js.contains("text/javascript") && js.contains("new WebSocket"));
    assert!(
        !js.contains("innerHTML"),
        "the page must not build HTML from text"
    );
    assert!(get("/style.css").contains("text/css"));
    assert!(get("/nope").starts_with("HTTP/1.1 404"));
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws_connect(addr: &str) -> Ws {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .unwrap();
    ws
}

/// Reads text messages until one contains `needle`; returns it. Panics on close or timeout.
async fn ws_until(ws: &mut Ws, needle: &str) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {needle:?}"))
            .unwrap_or_else(|| panic!("closed while waiting for {needle:?}"))
            .unwrap();
        if let Message::Text(t) = msg {
            if t.contains(needle) {
                return serde_json::from_str(&t).unwrap();
            }
        }
    }
}

/// Reads until the close frame; returns its code and reason.
async fn ws_close(ws: &mut Ws) -> (CloseCode, String, Vec<String>) {
    let mut texts = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("timed out waiting for a close frame")
        {
            Some(Ok(Message::Text(t))) => texts.push(t.to_string()),
            Some(Ok(Message::Close(Some(f)))) => return (f.code, f.reason.to_string(), texts),
            other => panic!("expected a close frame, got {other:?} after {texts:?}"),
        }
    }
}

async fn hello(ws: &mut Ws, nick: &str) {
    let hello = format!(r#"{{"sockit":"chat","proto":"json","nick":"{nick}"}}"#);
    ws.send(Message::text(hello)).await.unwrap();
    ws_until(ws, r#""type":"join""#).await;
}

#[tokio::test]
async fn websocket_and_tcp_clients_share_rooms() {
    let (server, url) = start(&["127.0.0.1:0", "--web", "127.0.0.1:0"]);
    let tcp_addr = server.addr();
    let mut ws = ws_connect(&web_addr(&url)).await;
    // A JSON client is greeted in reply to its hello (nothing is sent before it).
    let hello_msg = r#"{"sockit":"chat","proto":"json","nick":"wendy"}"#;
    ws.send(Message::text(hello_msg)).await.unwrap();
    let welcome = ws_until(&mut ws, r#""type":"welcome""#).await;
    assert_eq!(welcome["nick"], "wendy");
    ws_until(&mut ws, r#""type":"join""#).await;

    let mut tcp = tokio::net::TcpStream::connect(tcp_addr).await.unwrap();
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    tcp.write_all(b"/nick tom\nhi from tcp\n").await.unwrap();
    let m = ws_until(&mut ws, "hi from tcp").await;
    assert_eq!(m["type"], "message");
    assert_eq!(m["nick"], "tom");
    assert_eq!(m["room"], "lobby");

    ws.send(Message::text(r#"{"text":"hi from the web"}"#))
        .await
        .unwrap();
    let mut lines = tokio::io::BufReader::new(tcp).lines();
    let line = tokio::time::timeout(WAIT, async {
        loop {
            let l = lines.next_line().await.unwrap().unwrap();
            if l.contains("hi from the web") {
                return l;
            }
        }
    })
    .await
    .unwrap();
    assert!(line.ends_with("<wendy> hi from the web"), "{line}");

    // Commands work over the socket, with structured replies.
    ws.send(Message::text(r#"{"text":"/who"}"#)).await.unwrap();
    let who = ws_until(&mut ws, r#""type":"members""#).await;
    assert_eq!(who["nicks"], serde_json::json!(["tom", "wendy"]));
}

#[tokio::test]
async fn message_size_limits() {
    let (_server, url) = start(&["127.0.0.1:0", "--web", "127.0.0.1:0", "--max-line", "100"]);
    let mut ws = ws_connect(&web_addr(&url)).await;
    hello(&mut ws, "wendy").await;
    // Over --max-line: refused, but the client stays.
    let long = format!(r#"{{"text":"{}"}}"#, "x".repeat(200));
    ws.send(Message::text(long)).await.unwrap();
    let e = ws_until(&mut ws, "too long").await;
    assert_eq!(e["type"], "error");
    ws.send(Message::text(r#"{"text":"still here"}"#))
        .await
        .unwrap();
    ws_until(&mut ws, "still here").await;
    // Over the flood cutoff (16x the line, at least 64 KiB): disconnected with 1009.
    let huge = format!(r#"{{"text":"{}"}}"#, "x".repeat(70 * 1024));
    let _ = ws.send(Message::text(huge)).await;
    let (code, _, texts) = ws_close(&mut ws).await;
    assert_eq!(code, CloseCode::Size, "{texts:?}");
}

#[tokio::test]
async fn idle_clients_are_told_and_closed() {
    let (_server, url) = start(&[
        "127.0.0.1:0",
        "--web",
        "127.0.0.1:0",
        "--idle-timeout",
        "1s",
    ]);
    let mut ws = ws_connect(&web_addr(&url)).await;
    hello(&mut ws, "wendy").await;
    let (code, reason, texts) = ws_close(&mut ws).await;
    assert_eq!(code, CloseCode::from(4000));
    assert_eq!(reason, "idle timeout");
    assert!(
        texts.iter().any(|t| t.contains("idle for too long")),
        "{texts:?}"
    );
}

#[tokio::test]
async fn shutdown_says_goodbye_then_closes() {
    let (mut server, url) = start(&["127.0.0.1:0", "--web", "127.0.0.1:0"]);
    let mut ws = ws_connect(&web_addr(&url)).await;
    hello(&mut ws, "wendy").await;
    server.signal(libc::SIGTERM);
    let (code, reason, texts) = ws_close(&mut ws).await;
    assert_eq!(code, CloseCode::Away);
    assert_eq!(reason, "server shutting down");
    assert!(texts.iter().any(|t| t.contains("goodbye")), "{texts:?}");
    let status = server
        .wait_exit(Duration::from_secs(10))
        .expect("server exits");
    assert!(status.success());
}

#[tokio::test]
async fn clients_that_do_not_read_are_disconnected() {
    // A small send queue and no rate limit: a WebSocket client that never reads falls behind once
    // the kernel's buffers are full, and is dropped instead of growing the server's memory.
    let (server, url) = start(&[
        "127.0.0.1:0",
        "--web",
        "127.0.0.1:0",
        "--sendq",
        "32768",
        "--rate",
        "0",
    ]);
    let mut ws = ws_connect(&web_addr(&url)).await;
    hello(&mut ws, "sleepy").await;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let (tcp_in, mut tcp) = tokio::net::TcpStream::connect(server.addr())
        .await
        .unwrap()
        .into_split();
    let mut lines = tokio::io::BufReader::new(tcp_in).lines();
    let text = "y".repeat(1000);
    let line = format!("{text}\n");
    // The talker sends 16 lines, then reads its own 16 back, so only the sleeper falls behind.
    // Bounded: at most 64 MiB of chat, or 60 s.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut dropped = None;
    'talk: for _ in 0..4096 {
        for _ in 0..16 {
            tcp.write_all(line.as_bytes()).await.unwrap();
        }
        let mut echoed = 0;
        while echoed < 16 {
            let l = tokio::time::timeout(WAIT, lines.next_line())
                .await
                .expect("the talker's own lines come back")
                .unwrap()
                .expect("the talker stays connected");
            if l.contains("sleepy left") {
                dropped = Some(l);
                break 'talk;
            }
            if l.ends_with(&text) {
                echoed += 1;
            }
        }
        assert!(Instant::now() < deadline, "the sleeper was never dropped");
    }
    let dropped = dropped.expect("the sleeper was never dropped");
    assert!(dropped.contains("send queue full"), "{dropped}");
    // The sleeper, reading at last, finds what the kernel held, the reason, and a close frame.
    let (code, told) = read_to_close_frame(&mut ws).await;
    assert!(told, "the sleeper was not told why");
    assert_eq!(code, Some(CloseCode::Policy));
}

/// Reads a client that was not reading: whether it was told why, and the close frame's code.
async fn read_to_close_frame(ws: &mut Ws) -> (Option<CloseCode>, bool) {
    let mut code = None;
    let mut told = false;
    let stop = tokio::time::Instant::now() + Duration::from_secs(30);
    while let Ok(Some(msg)) = tokio::time::timeout_at(stop, ws.next()).await {
        match msg {
            Ok(Message::Text(t)) => told |= t.contains("you were not reading"),
            Ok(Message::Close(f)) => {
                code = f.map(|f| f.code);
                break;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    (code, told)
}

#[tokio::test]
async fn page_and_socket_over_tls() {
    let (server, url) = start(&["127.0.0.1:0", "--web", "127.0.0.1:0", "--tls"]);
    assert!(url.starts_with("https://"), "{url}");
    let addr = url
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_string();
    let fingerprint = server
        .stderr()
        .lines()
        .find_map(|l| l.split("SHA-256 fingerprint ").nth(1).map(str::to_string))
        .expect("fingerprint printed");

    // The page, fetched by openssl s_client.
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-connect", &addr, "-quiet"]);
    let request = format!("GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let ran = common::run(cmd, request.as_bytes(), WAIT);
    let page = ran.stdout_text();
    assert!(page.starts_with("HTTP/1.1 200"), "{page}\n{}", ran.stderr);
    assert!(page.contains("<title>sockit chat</title>"));

    // The socket (wss), through sockit's own TLS client pinned to the printed fingerprint, with
    // the page's https origin.
    let endpoint: sockit::net::Endpoint = addr.parse().unwrap();
    let opts = sockit::net::ConnectOptions {
        timeout: Some(WAIT),
        tls: Some(sockit::net::tls::ClientTls {
            fingerprint: Some(fingerprint.trim().to_string()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let stream = sockit::net::connect(&endpoint, &opts).await.unwrap();
    let request = tokio_tungstenite::tungstenite::http::Request::builder()
        .uri(format!("wss://{addr}/ws"))
        .header("Host", &addr)
        .header("Origin", format!("https://{addr}"))
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header(
            "Sec-WebSocket-Key",
            tokio_tungstenite::tungstenite::handshake::client::generate_key(),
        )
        .body(())
        .unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(request, stream)
        .await
        .unwrap();
    ws.send(Message::text(
        r#"{"sockit":"chat","proto":"json","nick":"tess"}"#,
    ))
    .await
    .unwrap();
    while let Some(msg) = tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
        if let Message::Text(t) = msg.unwrap() {
            if t.contains(r#""type":"join""#) {
                assert!(t.contains(r#""nick":"tess""#), "{t}");
                return;
            }
        }
    }
    panic!("no join over wss");
}

#[test]
fn chat_in_a_real_browser() {
    let Some(dir) = common::browser_e2e_dir() else {
        return;
    };
    let tcp = format!("127.0.0.1:{}", free_port());
    let web = format!("127.0.0.1:{}", free_port());
    let args = [tcp.as_str(), "--web", web.as_str()];
    let (mut server, url) = start(&args);
    assert_eq!(url, format!("http://{web}/"));
    // Screenshots beside the build: target/chat-web.png and target/chat-web-phone.png.
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    for f in ["chat-web.png", "chat-web-phone.png", "chat-web-failure.png"] {
        let _ = std::fs::remove_file(shots.join(f));
    }

    let mut node = Command::new("node")
        .arg(dir.join("chat.e2e.mjs"))
        .args([url.as_str(), tcp.as_str()])
        .arg(&shots)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn node");
    let mut to_node = node.stdin.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let out = node.stdout.take().unwrap();
    thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let err = node.stderr.take().unwrap();
    let err_text = thread::spawn(move || {
        let mut s = String::new();
        let _ = BufReader::new(err).read_to_string(&mut s);
        s
    });

    // Bounded: the whole browser session gets two minutes.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut transcript = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                println!("{line}");
                if line == "RESTART" {
                    server.signal(libc::SIGTERM);
                    let status = server.wait_exit(Duration::from_secs(15));
                    assert!(
                        status.is_some_and(|s| s.success()),
                        "server did not stop cleanly:\n{}",
                        server.stderr()
                    );
                    // Down for a moment, as in a real restart; the pages must notice.
                    thread::sleep(Duration::from_millis(1000));
                    let (again, _) = start(&args);
                    server = again;
                    writeln!(to_node, "RESTARTED").unwrap();
                }
                transcript.push(line);
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = node.kill();
                panic!(
                    "the browser test took over two minutes:\n{}",
                    transcript.join("\n")
                );
            }
        }
    }
    let status = node.wait().unwrap();
    let stderr = err_text.join().unwrap();
    assert!(
        status.success(),
        "browser test failed ({status}):\n{}\n{stderr}\nserver:\n{}",
        transcript.join("\n"),
        server.stderr()
    );
    assert!(transcript.iter().any(|l| l.contains("all checks passed")));
    for f in ["chat-web.png", "chat-web-phone.png"] {
        let png = std::fs::read(shots.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert!(png.starts_with(b"\x89PNG"), "{f} is not a PNG");
    }
}

/// `--max-conns` counts every client of the chat, whichever door it came in by: with a limit of
/// 2, one WebSocket and one TCP client fill the server, and a third of either kind is refused.
#[tokio::test]
async fn max_conns_counts_web_and_tcp_clients_together() {
    use tokio::io::AsyncReadExt;
    let (server, url) = start(&["127.0.0.1:0", "--web", "127.0.0.1:0", "--max-conns", "2"]);
    let mut ws = ws_connect(&web_addr(&url)).await;
    hello(&mut ws, "wendy").await;
    let mut tcp = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    let mut first = [0u8; 256];
    let n = tokio::time::timeout(WAIT, tcp.read(&mut first))
        .await
        .unwrap()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&first[..n]).contains("Welcome"),
        "{:?}",
        String::from_utf8_lossy(&first[..n])
    );

    // What a refused client is told before the server closes: connect, read to the end.
    async fn refusal(addr: String) -> String {
        use tokio::io::AsyncReadExt;
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut said = Vec::new();
        tokio::time::timeout(WAIT, s.read_to_end(&mut said))
            .await
            .unwrap()
            .unwrap();
        String::from_utf8_lossy(&said).into_owned()
    }
    // A third client over TCP: told the server is full, then closed.
    let said = refusal(server.addr().to_string()).await;
    assert!(said.contains("the server is full"), "{said:?}");
    // ...and over the web: the page's port answers 503 at once, before any request.
    let said = refusal(web_addr(&url)).await;
    assert!(said.starts_with("HTTP/1.1 503"), "{said:?}");

    // One leaves; a new client gets in again.
    drop(tcp);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut again = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
        let mut got = [0u8; 256];
        let n = tokio::time::timeout(WAIT, again.read(&mut got))
            .await
            .unwrap()
            .unwrap_or(0);
        if String::from_utf8_lossy(&got[..n]).contains("Welcome") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no slot was freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether a chat TCP client is welcomed now (rather than told the server is full).
async fn tcp_admitted(addr: std::net::SocketAddr) -> bool {
    use tokio::io::AsyncReadExt;
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
        return false;
    };
    let mut got = [0u8; 512];
    let n = tokio::time::timeout(WAIT, s.read(&mut got))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(0);
    String::from_utf8_lossy(&got[..n]).contains("Welcome")
}

/// Clients that pipeline requests and never read the answers must not keep their slots: a
/// response nobody reads is cut off after `--write-timeout`, as nginx's `send_timeout` does. With
/// `--max-conns 3` and three such clients, a chat client is refused at first and admitted again
/// once the write timeout has cut them.
#[tokio::test]
async fn pipelining_clients_that_never_read_lose_their_slots_after_the_write_timeout() {
    let (server, url) = start(&[
        "127.0.0.1:0",
        "--web",
        "127.0.0.1:0",
        "--max-conns",
        "3",
        "--write-timeout",
        "2s",
    ]);
    let addr = web_addr(&url);
    let request = format!("GET /app.js HTTP/1.1\r\nHost: {addr}\r\n\r\n").repeat(64);
    // All three at once, so that the first is not cut before the last has filled its socket.
    let hogs: Vec<TcpStream> = (0..3)
        .map(|_| {
            let addr = addr.clone();
            let request = request.clone();
            thread::spawn(move || {
                let mut s = TcpStream::connect(&addr).unwrap();
                // The server stops reading requests once it cannot send the answers: the writes
                // block, and the client stops writing. Bounded: 4096 batches of 64 requests, or
                // 5 seconds.
                s.set_write_timeout(Some(Duration::from_millis(200)))
                    .unwrap();
                let stop = Instant::now() + Duration::from_secs(5);
                for _ in 0..4096 {
                    if s.write_all(request.as_bytes()).is_err() || Instant::now() > stop {
                        break;
                    }
                }
                s
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    assert!(
        !tcp_admitted(server.addr()).await,
        "the three web clients should fill --max-conns 3"
    );
    // Bounded: the write timeout is 2 s; give it ten.
    let deadline = Instant::now() + WAIT;
    while !tcp_admitted(server.addr()).await {
        assert!(
            Instant::now() < deadline,
            "clients that never read kept their slots:\n{}",
            server.stderr()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(hogs);
}

/// A TCP connection whose receive buffer is small, so that a client that stops reading fills
/// the path quickly and the server's own queue is what is measured.
async fn connect_small_window(addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    socket.connect(addr).await.unwrap()
}

/// A WebSocket client over [`connect_small_window`], greeted and in the room.
async fn ws_small_window(addr: &str, nick: &str) -> Ws {
    let stream = connect_small_window(addr.parse().unwrap()).await;
    let (mut ws, _) = tokio_tungstenite::client_async(
        format!("ws://{addr}/ws"),
        tokio_tungstenite::MaybeTlsStream::Plain(stream),
    )
    .await
    .unwrap();
    hello(&mut ws, nick).await;
    ws
}

/// A WebSocket member that reads everything; returns how many messages it got once it sees
/// `last`.
fn ws_reader(mut ws: Ws, last: &'static str) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let mut n = 0;
        // Bounded: two minutes at most, whatever the test does.
        let stop = tokio::time::Instant::now() + Duration::from_secs(120);
        while let Ok(Some(Ok(msg))) = tokio::time::timeout_at(stop, ws.next()).await {
            if let Message::Text(t) = msg {
                n += 1;
                if t.contains(last) {
                    return n;
                }
            }
        }
        panic!("the reading member stopped receiving after {n} messages");
    })
}

/// The chat's talker: a TCP client that says `rounds` batches of 16 lines of 1000 bytes, reading
/// its own lines back (so it keeps up), and notes how many bytes it had sent when each of
/// `watch` was announced as having left. Stops early once all of them have.
struct Talker {
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::net::tcp::OwnedReadHalf>>,
    out: tokio::net::tcp::OwnedWriteHalf,
    sent: usize,
}

impl Talker {
    async fn join(addr: std::net::SocketAddr) -> Talker {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
        let (tcp_in, mut out) = tokio::net::TcpStream::connect(addr)
            .await
            .unwrap()
            .into_split();
        out.write_all(b"/nick talker\n").await.unwrap();
        let mut lines = tokio::io::BufReader::new(tcp_in).lines();
        loop {
            let l = tokio::time::timeout(WAIT, lines.next_line())
                .await
                .expect("the talker is greeted")
                .unwrap()
                .expect("the talker stays connected");
            if l.contains("now known as talker") || l.contains("you are now talker") {
                break;
            }
        }
        Talker {
            lines,
            out,
            sent: 0,
        }
    }

    /// Reads lines until one contains `needle` (bounded by WAIT).
    async fn until(&mut self, needle: &str) -> String {
        loop {
            let l = tokio::time::timeout(WAIT, self.lines.next_line())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {needle:?}"))
                .unwrap()
                .expect("the talker stays connected");
            if l.contains(needle) {
                return l;
            }
        }
    }

    /// Talks until every nick in `watch` has left, or `max_bytes` are sent; returns each one's
    /// leave line and the bytes sent when it came.
    async fn talk(&mut self, watch: &[&str], max_bytes: usize) -> Vec<Option<(usize, String)>> {
        use tokio::io::AsyncWriteExt;
        let text = "y".repeat(1000);
        let line = format!("{text}\n");
        let mut left: Vec<Option<(usize, String)>> = vec![None; watch.len()];
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.sent < max_bytes && left.iter().any(Option::is_none) {
            for _ in 0..16 {
                self.out.write_all(line.as_bytes()).await.unwrap();
                self.sent += line.len();
            }
            let mut echoed = 0;
            while echoed < 16 {
                let l = tokio::time::timeout(WAIT, self.lines.next_line())
                    .await
                    .expect("the talker's own lines come back")
                    .unwrap()
                    .expect("the talker stays connected");
                for (i, nick) in watch.iter().enumerate() {
                    if left[i].is_none() && l.contains(&format!("{nick} left")) {
                        left[i] = Some((self.sent, l.clone()));
                    }
                }
                if l.ends_with(&text) {
                    echoed += 1;
                }
            }
            assert!(Instant::now() < deadline, "the talk took over a minute");
        }
        left
    }
}

/// A browser that stops reading while the room is busy is held to the same `--sendq` as a TCP
/// client (not 16 times it): both stop reading in the same room, and the WebSocket one must be
/// dropped about when the TCP one is. The other members keep receiving.
#[tokio::test]
async fn a_websocket_that_stops_reading_gets_the_same_sendq_as_tcp() {
    const SENDQ: usize = 64 * 1024;
    let sendq = SENDQ.to_string();
    let (server, url) = start(&[
        "127.0.0.1:0",
        "--web",
        "127.0.0.1:0",
        "--sendq",
        &sendq,
        "--rate",
        "0",
    ]);
    let addr = web_addr(&url);
    let mut talker = Talker::join(server.addr()).await;
    let mut member = ws_connect(&addr).await;
    hello(&mut member, "reader").await;
    let reader = ws_reader(member, "after the drop");
    let _ws_sleeper = ws_small_window(&addr, "wssleepy").await;
    let mut tcp_sleeper = connect_small_window(server.addr()).await;
    {
        use tokio::io::AsyncWriteExt;
        tcp_sleeper.write_all(b"/nick tcpsleepy\n").await.unwrap();
    }
    talker.until("now known as tcpsleepy").await;

    // Bounded: 64 MiB of chat at most.
    let left = talker.talk(&["tcpsleepy", "wssleepy"], 64 << 20).await;
    let (tcp_at, tcp_line) = left[0].clone().expect("the TCP sleeper was never dropped");
    let (ws_at, ws_line) = left[1]
        .clone()
        .expect("the WebSocket sleeper was never dropped");
    assert!(tcp_line.contains("send queue full"), "{tcp_line}");
    assert!(ws_line.contains("send queue full"), "{ws_line}");
    eprintln!("dropped after {tcp_at} bytes (TCP) and {ws_at} bytes (WebSocket)");
    assert!(
        ws_at <= tcp_at + 4 * SENDQ,
        "the WebSocket sleeper was dropped {} bytes after the TCP one (--sendq {SENDQ})",
        ws_at - tcp_at
    );
    {
        use tokio::io::AsyncWriteExt;
        talker.out.write_all(b"after the drop\n").await.unwrap();
    }
    let got = tokio::time::timeout(WAIT, reader)
        .await
        .expect("the reading member got everything")
        .unwrap();
    assert!(got > 16, "{got}");
}

/// A browser whose socket takes nothing for `--write-timeout` is dropped, even when the room is
/// too quiet to fill its send queue.
#[tokio::test]
async fn a_websocket_whose_socket_takes_nothing_is_cut_after_the_write_timeout() {
    let (server, url) = start(&[
        "127.0.0.1:0",
        "--web",
        "127.0.0.1:0",
        // Far more than the talk below: only the write timeout can drop the sleeper.
        "--sendq",
        "67108864",
        "--rate",
        "0",
        "--write-timeout",
        "1s",
    ]);
    let addr = web_addr(&url);
    let mut talker = Talker::join(server.addr()).await;
    let mut member = ws_connect(&addr).await;
    hello(&mut member, "reader").await;
    let reader = ws_reader(member, "after the drop");
    let mut ws_sleeper = ws_small_window(&addr, "wssleepy").await;
    // Enough to fill the sleeper's socket buffers (a small window), far less than its queue.
    let left = talker.talk(&["wssleepy"], 8 << 20).await;
    let line = match left[0].clone() {
        Some((_, line)) => line,
        None => talker.until("wssleepy left").await,
    };
    assert!(line.contains("send queue full"), "{line}");
    // The sleeper, reading at last, finds what the kernel held, the reason, and a close frame.
    let (code, told) = read_to_close_frame(&mut ws_sleeper).await;
    assert!(told, "the sleeper was not told why");
    assert_eq!(code, Some(CloseCode::Policy));
    {
        use tokio::io::AsyncWriteExt;
        talker.out.write_all(b"after the drop\n").await.unwrap();
    }
    tokio::time::timeout(WAIT, reader)
        .await
        .expect("the reading member got everything")
        .unwrap();
}

/// What a plain HTTP request with this `Host` (none if `None`) gets: the status line.
fn get_status(addr: &str, path: &str, host: Option<&str>, version: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let host = host.map(|h| format!("Host: {h}\r\n")).unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/{version}\r\n{host}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    line.trim().to_string()
}

/// DNS rebinding: a remote page whose name is made to resolve to 127.0.0.1 reaches the chat with
/// its own name in `Host` (and, for the socket, a matching Origin). Only names of this listener
/// are served: its address, `localhost` for a loopback one, and `--web-host` names.
#[test]
fn only_the_listeners_own_host_names_are_served() {
    let (_server, url) = start(&[
        "127.0.0.1:0",
        "--web",
        "127.0.0.1:0",
        "--web-host",
        "chat.example.org,Other.Example",
    ]);
    let addr = web_addr(&url);
    let port = addr.rsplit(':').next().unwrap();
    for host in [
        "evil.example".to_string(),
        format!("evil.example:{port}"),
        format!("127.0.0.1.nip.io:{port}"),
        format!("[::1]:{port}"),
        "127.0.0.2".to_string(),
        format!("chat.example.org.evil.example:{port}"),
    ] {
        for path in ["/", "/app.js", "/nope"] {
            let got = get_status(&addr, path, Some(&host), "1.1");
            assert!(got.contains(" 421 "), "{path} with Host {host}: {got}");
        }
        let origin = format!("http://{host}");
        let got = handshake_status(&addr, Some(&origin), &host);
        assert!(got.contains(" 421 "), "/ws with Host {host}: {got}");
        let got = handshake_status(&addr, None, &host);
        assert!(
            got.contains(" 421 "),
            "/ws with Host {host}, no Origin: {got}"
        );
    }
    for host in [
        addr.clone(),
        "127.0.0.1".to_string(),
        format!("localhost:{port}"),
        format!("LocalHost:{port}"),
        "localhost.".to_string(),
        "chat.example.org".to_string(),
        format!("CHAT.example.org:{port}"),
        "other.example".to_string(),
    ] {
        let got = get_status(&addr, "/", Some(&host), "1.1");
        assert!(got.contains(" 200 "), "/ with Host {host}: {got}");
        let origin = format!("http://{host}");
        let got = handshake_status(&addr, Some(&origin), &host);
        assert!(got.contains(" 101 "), "/ws with Host {host}: {got}");
    }
    // HTTP/1.0 without a Host: not a browser (browsers always send one), so not a rebinding.
    let got = get_status(&addr, "/", None, "1.0");
    assert!(got.contains(" 200 "), "no Host: {got}");
}

/// The same over IPv6: `[::1]` and `localhost` name a listener on ::1; 127.0.0.1 does not.
#[test]
fn host_names_of_an_ipv6_listener() {
    if !common::ipv6_available() {
        eprintln!("skipping: no IPv6 loopback");
        return;
    }
    let (_server, url) = start(&["127.0.0.1:0", "--web", "[::1]:0"]);
    let addr = web_addr(&url);
    let port = addr.rsplit(':').next().unwrap();
    for (host, want) in [
        (addr.clone(), " 200 "),
        ("[::1]".to_string(), " 200 "),
        (format!("[0:0::1]:{port}"), " 200 "),
        (format!("localhost:{port}"), " 200 "),
        (format!("127.0.0.1:{port}"), " 421 "),
        (format!("evil.example:{port}"), " 421 "),
        // Not a valid Host at all.
        (format!("[::1:{port}"), " 421 "),
    ] {
        let got = get_status(&addr, "/", Some(&host), "1.1");
        assert!(got.contains(want), "Host {host}: {got}");
    }
}

#[test]
fn web_host_takes_names_not_urls_or_ports() {
    for bad in [
        "chat.example.org:443",
        "https://chat.example.org",
        "*.example.org",
    ] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sockit"));
        cmd.args([
            "chat",
            "--no-history",
            "--web",
            "127.0.0.1:0",
            "--web-host",
            bad,
        ]);
        let ran = common::run(cmd, b"", WAIT);
        assert_eq!(ran.code(), Some(2), "--web-host {bad}: {}", ran.stderr);
        assert!(ran.stderr.contains("not a host name"), "{}", ran.stderr);
    }
}

/// Over the rate limit a browser's messages are delayed like a TCP client's (fakelag), never
/// dropped: ten at once with --rate 4 --burst 3 all arrive, in order, after one "slowed" notice.
#[tokio::test]
async fn a_browser_over_the_rate_is_slowed_not_dropped() {
    let (_server, url) = start(&[
        "127.0.0.1:0",
        "--web",
        "127.0.0.1:0",
        "--rate",
        "4",
        "--burst",
        "3",
    ]);
    let mut ws = ws_connect(&web_addr(&url)).await;
    hello(&mut ws, "paste").await;
    for i in 0..10 {
        let msg = format!(r#"{{"text":"pasted {i}"}}"#);
        ws.send(Message::text(msg)).await.unwrap();
    }
    let mut slowed = 0;
    let mut next = 0;
    let deadline = tokio::time::Instant::now() + WAIT;
    while next < 10 {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .unwrap_or_else(|_| panic!("only {next} of 10 arrived"))
            .expect("closed")
            .unwrap();
        let Message::Text(t) = msg else { continue };
        let v: serde_json::Value = serde_json::from_str(&t).unwrap();
        match v["type"].as_str() {
            Some("slowed") => slowed += 1,
            Some("error") => panic!("refused: {t}"),
            Some("message") => {
                assert_eq!(v["text"], format!("pasted {next}"), "out of order");
                next += 1;
            }
            _ => {}
        }
    }
    assert_eq!(slowed, 1, "told once");
}

/// A text message that is not UTF-8 closes the socket with 1007, a protocol error with 1002 (not
/// 1000, which the page takes for a normal goodbye).
#[tokio::test]
async fn bad_frames_get_the_close_codes_they_call_for() {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    let (_server, url) = start(&["127.0.0.1:0", "--web", "127.0.0.1:0"]);
    let mut ws = ws_connect(&web_addr(&url)).await;
    hello(&mut ws, "bytes").await;
    let bad = Frame::message(vec![b'{', 0xff, 0xfe, b'}'], OpCode::Data(Data::Text), true);
    ws.send(Message::Frame(bad)).await.unwrap();
    let (code, reason, _) = ws_close(&mut ws).await;
    assert_eq!(code, CloseCode::Invalid, "{reason}");

    let mut ws = ws_connect(&web_addr(&url)).await;
    hello(&mut ws, "frames").await;
    // A continuation frame with no message begun is a protocol error.
    let stray = Frame::message(b"x".to_vec(), OpCode::Data(Data::Continue), true);
    ws.send(Message::Frame(stray)).await.unwrap();
    let (code, reason, _) = ws_close(&mut ws).await;
    assert_eq!(code, CloseCode::Protocol, "{reason}");
}
