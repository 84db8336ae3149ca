//! Every way `connect`/`listen` can fail gives one clear line on stderr and a meaningful exit code:
//! 1 for failures at run time (refused, unreachable, timed out, address in use, permission denied,
//! a TLS peer that is not trusted), 2 for addresses sockit cannot understand.

#[path = "relay_util/mod.rs"]
mod util;

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use util::*;

/// Runs sockit with no input and returns (exit code, stderr).
fn fails(args: &[&str]) -> (i32, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    let (status, _, err) = run(cmd, b"", PATIENCE);
    (code(status), err)
}

fn code(status: ExitStatus) -> i32 {
    status
        .code()
        .unwrap_or_else(|| panic!("killed by a signal: {status:?}"))
}

/// The error is exactly one line starting with `sockit: `.
fn assert_one_line(err: &str) {
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got:\n{err}");
    assert!(lines[0].starts_with("sockit: "), "{err}");
}

#[test]
fn connection_refused() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (code, err) = fails(&["connect", &format!("127.0.0.1:{port}")]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!(
            "cannot connect to 127.0.0.1:{port}: connection refused"
        )),
        "{err}"
    );
    assert_one_line(&err);
}

#[test]
fn udp_port_unreachable_is_refused() {
    let port = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().port()
    };
    let mut cmd = Command::new(BIN);
    cmd.args(["connect", "-u", &format!("127.0.0.1:{port}")]);
    let (status, _, err) = run(cmd, b"anyone?\n", PATIENCE);
    assert_eq!(code(status), 1, "{err}");
    assert!(err.contains("connection refused"), "{err}");
    assert_one_line(&err);
}

/// A fresh network namespace has only `lo`, and it is down: nothing is reachable.
#[test]
fn network_unreachable() {
    let probe = Command::new("unshare")
        .args(["-n", "true"])
        .stderr(Stdio::piped())
        .output();
    match probe {
        Ok(out) if out.status.success() => {}
        Ok(out) => {
            eprintln!(
                "SKIPPED network_unreachable: `unshare -n` is not permitted here ({})",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return;
        }
        Err(e) => {
            eprintln!("SKIPPED network_unreachable: cannot run unshare ({e})");
            return;
        }
    }
    let mut cmd = Command::new("unshare");
    cmd.args(["-n", BIN, "connect", "127.0.0.1:9"]);
    let (status, _, err) = run(cmd, b"", PATIENCE);
    assert_eq!(code(status), 1, "{err}");
    assert!(
        err.contains("cannot connect to 127.0.0.1:9: network unreachable"),
        "{err}"
    );
    assert_one_line(&err);
}

/// A listener that never accepts and whose backlog is full drops new SYNs: `-w` must give up.
#[test]
fn connect_timeout() {
    let (_py, port) = python(
        r#"
import socket, time
l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen(0)
print(l.getsockname()[1], flush=True)
time.sleep(60)
"#,
    );
    // Fill the accept queue (backlog 0 holds one) with connections nobody accepts.
    let mut fillers = Vec::new();
    for _ in 0..4 {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.set_nonblocking(true).unwrap();
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let _ = s.connect(&addr.into());
        fillers.push(s);
    }
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let (code, err) = fails(&["connect", "-w", "1s", &format!("127.0.0.1:{port}")]);
    let took = started.elapsed();
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!(
            "cannot connect to 127.0.0.1:{port}: timed out after 1s"
        )),
        "{err}"
    );
    assert!(
        took >= Duration::from_millis(900),
        "gave up after {took:?}, before -w"
    );
    assert_one_line(&err);
}

#[test]
fn address_in_use() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let (code, err) = fails(&["listen", &format!("127.0.0.1:{port}")]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!(
            "cannot listen on 127.0.0.1:{port}: address already in use"
        )),
        "{err}"
    );
    assert_one_line(&err);

    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = udp.local_addr().unwrap().port();
    let (code, err) = fails(&["listen", "-u", &format!("127.0.0.1:{port}")]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("address already in use"), "{err}");
}

/// Whether user `nobody` can run `path` (every directory above it searchable by others).
fn others_can_run(path: &Path) -> bool {
    let mode = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.permissions().mode())
            .unwrap_or(0)
    };
    if mode(path) & 0o005 != 0o005 {
        return false;
    }
    path.ancestors()
        .skip(1)
        .all(|dir| dir.as_os_str().is_empty() || mode(dir) & 0o001 != 0)
}

/// Ports below 1024 need privileges: run as `nobody` (uid 65534) and bind port 80.
#[test]
fn permission_denied() {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        eprintln!("SKIPPED permission_denied: needs root to switch to an unprivileged user");
        return;
    }
    let start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(1024);
    if start <= 80 {
        eprintln!("SKIPPED permission_denied: unprivileged users may bind port 80 here");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bin: PathBuf = if others_can_run(Path::new(BIN)) {
        BIN.into()
    } else {
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let copy = dir.path().join("sockit");
        std::fs::copy(BIN, &copy).unwrap();
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(
            others_can_run(&copy),
            "{} is not reachable by others",
            copy.display()
        );
        copy
    };
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&bin)
        .args(["listen", "127.0.0.1:80"])
        .current_dir("/");
    let (status, _, err) = run(cmd, b"", PATIENCE);
    assert_eq!(code(status), 1, "{err}");
    assert!(
        err.contains("cannot listen on 127.0.0.1:80: permission denied"),
        "{err}"
    );
    assert_one_line(&err);
}

#[test]
fn bad_address_syntax_is_a_usage_error() {
    for args in [
        &["connect", "nohost"][..],
        &["connect", "::1:80"],
        &["connect", "127.0.0.1:99999"],
        &["connect", "[::1]80"],
        // A service name is a port (`host:http`); an unknown one is not.
        &["connect", "example.com", "no-such-service"],
        &["listen", "99999"],
        &["listen", "unix:"],
    ] {
        let (code, err) = fails(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains("bad address"), "{args:?}: {err}");
        assert_one_line(&err);
    }
}

/// The listener's self-signed certificate is not trusted by the system roots.
#[test]
fn tls_unknown_issuer_is_refused() {
    let (_server, addr) = listen(&["-k", "--tls"], "127.0.0.1:0");
    let (code, err) = fails(&["connect", "--tls", &addr]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!(
            "TLS with {addr} failed: the server's certificate is not signed by an authority this client trusts"
        )),
        "{err}"
    );
    assert!(err.contains("--tls-fingerprint"), "no hint: {err}");
    assert!(!err.contains("UnknownIssuer"), "an enum name: {err}");
    assert_one_line(&err);
}

/// A certificate for other names: the names are listed as people write them, not as
/// `DnsName("localhost")`.
#[test]
fn tls_wrong_name_is_worded_for_people() {
    let (_server, addr) = listen(&["-k", "--tls"], "127.0.0.1:0");
    // The listener's own certificate, fetched with openssl, trusted as the CA.
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect {addr} </dev/null 2>/dev/null | openssl x509"
        ))
        .output()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("self.pem");
    std::fs::write(&ca, &out.stdout).unwrap();
    let ca = ca.to_str().unwrap();
    let (code, err) = fails(&[
        "connect",
        "--tls-ca",
        ca,
        "--tls-servername",
        "other.example",
        &addr,
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(
            "the server's certificate is for localhost, 127.0.0.1, ::1, not other.example"
        ),
        "{err}"
    );
    assert!(err.contains("--tls-servername"), "no hint: {err}");
    assert!(!err.contains("DnsName"), "an enum name: {err}");
    assert!(!err.contains("NotValidForName"), "an enum name: {err}");
    assert_one_line(&err);
}

/// Each thing is said once: the OS's own phrasing of a cause already described is left out.
#[test]
fn one_error_line_says_each_thing_once() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let target = format!("127.0.0.1:{port}");
    for args in [
        vec!["listen", target.as_str()],
        vec!["echo", target.as_str()],
        vec!["chat", "--no-history", target.as_str()],
    ] {
        let (code, err) = fails(&args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert_eq!(
            err.to_lowercase().matches("already in use").count(),
            1,
            "{args:?}: {err}"
        );
        assert!(!err.contains("os error"), "{args:?}: {err}");
        assert_one_line(&err);
    }
    // A history file that is not a database (the chat's store reports it; the line says it once).
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("not-a-db.sqlite3");
    std::fs::write(&bad, vec![0x5au8; 8192]).unwrap();
    let (code, err) = fails(&["chat", "--history", bad.to_str().unwrap(), "127.0.0.1:0"]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(err.matches("not a database").count(), 1, "{err}");
    assert_one_line(&err);
}

/// A pinned fingerprint that does not match is refused.
#[test]
fn tls_wrong_fingerprint_is_refused() {
    let (_server, addr) = listen(&["-k", "--tls"], "127.0.0.1:0");
    let wrong = "AB".repeat(32);
    let (code, err) = fails(&["connect", "--tls-fingerprint", &wrong, &addr]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("does not match the pinned one"), "{err}");
    assert_one_line(&err);
}

/// A TLS client talking to a plain TCP server fails cleanly rather than hanging.
#[test]
fn tls_to_a_plain_server_fails() {
    let (_server, addr) = listen(&["-k", "-e", "cat"], "127.0.0.1:0");
    let (code, err) = fails(&["connect", "--tls", "-w", "5s", &addr]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!("TLS with {addr} failed")) || err.contains("timed out"),
        "{err}"
    );
}

/// `-i` ends a silent connection as a failure.
#[test]
fn idle_timeout_ends_a_silent_connection() {
    let (_server, addr) = listen(&["-k", "--recv-only"], "127.0.0.1:0");
    let mut cmd = util::sockit(&["connect", "-i", "500ms", &addr]);
    cmd.stdin(Stdio::piped());
    let mut p = Proc::spawn(cmd);
    // stdin stays open: only the idle timeout can end this.
    let status = p.wait_exit(PATIENCE);
    let err = p.stderr();
    assert_eq!(code(status), 1, "{err}");
    assert!(err.contains("idle for 500ms"), "{err}");
    assert_one_line(&err);
}

#[test]
fn missing_command_is_reported_at_start() {
    let (code, err) = fails(&["listen", "-e", "no-such-program-for-sockit", "127.0.0.1:0"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("cannot run \"no-such-program-for-sockit\""),
        "{err}"
    );
    assert_one_line(&err);
}

/// A connection that is reset mid-transfer is a failure (exit 1), not a quiet success.
#[test]
fn reset_by_peer_is_a_failure() {
    let (_py, port) = python(
        r#"
import socket, struct
l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen(1)
print(l.getsockname()[1], flush=True)
c, _ = l.accept()
c.recv(10)
c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
c.close()
"#,
    );
    let mut cmd = util::sockit(&["connect", &format!("127.0.0.1:{port}")]);
    cmd.stdin(Stdio::piped());
    let mut p = Proc::spawn(cmd);
    let mut sin = p.child.stdin.take().unwrap();
    std::io::Write::write_all(&mut sin, b"x").unwrap();
    let status = p.wait_exit(PATIENCE);
    let err = p.stderr();
    assert_eq!(code(status), 1, "{err}");
    assert!(err.contains("connection reset by peer"), "{err}");
    assert_one_line(&err);
    drop(sin);
}

/// `--history PATH` in a folder that does not exist is an error (a typo must not make folders);
/// only the default location's folders are made.
#[test]
fn history_in_a_missing_folder_is_an_error_but_the_default_folder_is_made() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir").join("chat.sqlite3");
    let (code, err) = fails(&[
        "chat",
        "--history",
        missing.to_str().unwrap(),
        "127.0.0.1:0",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no such folder"), "{err}");
    assert_one_line(&err);
    assert!(
        !dir.path().join("no-such-dir").exists(),
        "the folder was made"
    );

    // The default location ($XDG_DATA_HOME/sockit/chat.sqlite3) is made as needed.
    let data = dir.path().join("data");
    let mut child = Command::new(BIN)
        .env("XDG_DATA_HOME", &data)
        .args(["chat", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let db = data.join("sockit").join("chat.sqlite3");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !db.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(db.exists(), "the default history was not made");
}
