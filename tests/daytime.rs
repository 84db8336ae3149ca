//! The daytime server (RFC 867) against nc and the tutorial's python clients: over TCP one line
//! ending in CRLF then EOF, over UDP an answer to any datagram; `--utc --format`; a bad format is a
//! usage error.

mod common;

use std::process::Command;
use std::time::Duration;

use chrono::{DateTime, Datelike, FixedOffset, NaiveDateTime, Utc};
use common::{python, run, Server};

/// The default line: `ctime()` plus the zone, e.g. `Tue Nov 24 05:19:38 2026 +0000`.
const DEFAULT_FORMAT: &str = "%a %b %e %H:%M:%S %Y %z";

/// Parses a default-format line and checks it is within two minutes of now.
fn assert_close_to_now(line: &str) -> DateTime<FixedOffset> {
    let text = line.strip_suffix("\r\n").expect("line ends with CRLF");
    let t = DateTime::parse_from_str(text, DEFAULT_FORMAT)
        .unwrap_or_else(|e| panic!("{text:?} is not a date: {e}"));
    let now = Utc::now();
    assert!(
        (now.year() - t.year()).abs() <= 1 && text.contains(&t.year().to_string()),
        "{text:?}: wrong year"
    );
    let skew = (now - t.with_timezone(&Utc)).num_seconds().abs();
    assert!(skew < 120, "{text:?} is {skew} s away from now");
    t
}

/// Exactly one line, ending in CRLF.
fn assert_one_crlf_line(text: &str) {
    assert!(text.ends_with("\r\n"), "{text:?} does not end in CRLF");
    assert_eq!(text.matches('\n').count(), 1, "{text:?} is not one line");
}

#[test]
fn tcp_line_then_eof_with_nc() {
    let server = Server::start(&["daytime", "127.0.0.1:0"]);
    let mut cmd = Command::new("nc");
    // No -N and nothing on stdin: nc reads until the server closes, so finishing proves the EOF.
    cmd.args(["-d", "127.0.0.1", &server.port().to_string()]);
    let ran = run(cmd, b"", Duration::from_secs(10));
    assert!(!ran.timed_out, "the server did not close the connection");
    let text = ran.stdout_text();
    assert_one_crlf_line(&text);
    assert_close_to_now(&text);
}

#[test]
fn tcp_tutorial_python_client() {
    let server = Server::start(&["daytime", "127.0.0.1:0"]);
    let out = python(
        r#"
import socket, sys
s = socket.socket(); s.settimeout(5)
s.connect(("127.0.0.1", int(sys.argv[1])))
data = b""
while True:
    chunk = s.recv(1024)
    if not chunk:
        break
    data += chunk
sys.stdout.write(data.decode())
"#,
        &[&server.port().to_string()],
    );
    assert_one_crlf_line(&out);
    assert_close_to_now(&out);
}

#[test]
fn udp_answers_any_datagram() {
    let server = Server::start(&["daytime", "-u", "127.0.0.1:0"]);
    let out = python(
        r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(5)
addr = ("127.0.0.1", int(sys.argv[1]))
for q in [b"what time is it?\n", b"", b"\x00\xff" * 100]:
    s.sendto(q, addr)
    data, peer = s.recvfrom(2048)
    assert peer == addr
    sys.stdout.write(data.decode())
"#,
        &[&server.port().to_string()],
    );
    let lines: Vec<String> = out.split_inclusive("\r\n").map(str::to_string).collect();
    assert_eq!(lines.len(), 3, "{out:?}");
    for line in &lines {
        assert_close_to_now(line);
    }
}

#[test]
fn utc_with_custom_format() {
    // A local zone far from UTC, so reporting local time instead of UTC would be caught.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sockit"));
    cmd.env("TZ", "XYZ-5:30").args([
        "daytime",
        "--utc",
        "--format",
        "%Y-%m-%dT%H:%M:%SZ",
        "127.0.0.1:0",
    ]);
    let server = Server::start_command(cmd);
    let out = common::py_tcp(server.addr(), "", "");
    let text = out
        .strip_prefix("DATA b'")
        .and_then(|s| s.strip_suffix("\\r\\n'"))
        .unwrap_or_else(|| panic!("unexpected answer {out}"));
    let t = NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%SZ")
        .unwrap_or_else(|e| panic!("{text:?}: {e}"))
        .and_utc();
    let skew = (Utc::now() - t).num_seconds().abs();
    assert!(skew < 120, "{text:?} is not UTC now (off by {skew} s)");

    // The control: without --utc the same zone shows up as +0530.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sockit"));
    cmd.env("TZ", "XYZ-5:30").args(["daytime", "127.0.0.1:0"]);
    let local = Server::start_command(cmd);
    let mut nc = Command::new("nc");
    nc.args(["-d", "127.0.0.1", &local.port().to_string()]);
    let line = run(nc, b"", Duration::from_secs(10)).stdout_text();
    let t = assert_close_to_now(&line);
    assert_eq!(t.offset().local_minus_utc(), 5 * 3600 + 30 * 60, "{line:?}");
}

#[test]
fn bad_format_is_a_usage_error() {
    for bad in ["%Q", "%", "%Y-%"] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sockit"));
        cmd.args(["daytime", "--format", bad, "127.0.0.1:0"]);
        let ran = run(cmd, b"", Duration::from_secs(10));
        assert!(
            !ran.timed_out,
            "--format {bad:?} was accepted and the server ran"
        );
        assert_eq!(ran.code(), Some(2), "--format {bad:?}: {}", ran.stderr);
        let msg = ran.stderr.trim_end();
        assert_eq!(msg.lines().count(), 1, "not one line: {msg:?}");
        assert!(msg.contains(bad), "does not name the format: {msg:?}");
    }
}

#[path = "relay_util/forge.rs"]
mod forge;

/// A forged datagram whose source is daytime -u's own address is not answered (answering it
/// would send the time to itself, which it would answer again, for ever), and a source port below
/// 1024 (here 37, the time service, which would answer back) is refused too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_forged_loop_sources_are_not_answered() {
    use sockit::daytime::{DaytimeConfig, DaytimeServer};
    use std::net::{SocketAddr, SocketAddrV4};
    use std::time::Instant;
    if !forge::can_forge() {
        eprintln!("skipped: forging a source address needs a raw socket (root)");
        return;
    }
    let server = DaytimeServer::bind(DaytimeConfig {
        endpoint: "127.0.0.1:0".parse().unwrap(),
        udp: true,
        format: DEFAULT_FORMAT.into(),
        utc: true,
        server: sockit::net::ServerOptions::default(),
    })
    .await
    .unwrap();
    let stats = server.datagram_stats();
    let addr = match server.local_addr().inet().unwrap() {
        SocketAddr::V4(a) => a,
        other => panic!("not IPv4: {other}"),
    };
    tokio::spawn(server.run(tokio_util::sync::CancellationToken::new()));
    let time_service = SocketAddrV4::new(*addr.ip(), 37);
    tokio::task::spawn_blocking(move || {
        forge::forge_udp(addr, addr, "loop?");
        forge::forge_udp(time_service, addr, "loop?");
    })
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while stats.refused() + stats.replied() < 2 {
        assert!(
            Instant::now() < deadline,
            "the forged datagrams never arrived"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(stats.replied(), 0, "a loop source was answered");
    assert_eq!(stats.refused(), 2);
}
