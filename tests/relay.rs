//! `sockit connect` / `sockit listen` against real peers on loopback: itself, nc, ncat, socat,
//! openssl and python3 sockets. Every server binds port 0 and is found by what it prints (sockit)
//! or by `ss` (the other tools).

#[path = "relay_util/mod.rs"]
mod util;

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Shutdown, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use util::*;

/// A few MiB of binary data through `connect` -> `listen` arrive byte for byte.
#[test]
fn file_through_connect_and_listen_is_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(4 * 1024 * 1024 + 17, 0x5eed);
    let src = dir.path().join("in.bin");
    let dst = dir.path().join("out.bin");
    std::fs::write(&src, &data).unwrap();

    let mut cmd = sockit(&["listen", "127.0.0.1:0"]);
    cmd.stdin(Stdio::null()).stdout(File::create(&dst).unwrap());
    let mut server = Proc::spawn(cmd);
    let addr = server.listening_addr();

    let mut cmd = sockit(&["connect", &addr]);
    cmd.stdin(File::open(&src).unwrap()).stdout(Stdio::null());
    let mut client = Proc::spawn(cmd);
    assert!(client.wait_exit(PATIENCE).success(), "{}", client.stderr());
    assert!(server.wait_exit(PATIENCE).success(), "{}", server.stderr());
    let got = std::fs::read(&dst).unwrap();
    assert_eq!(got.len(), data.len());
    assert_eq!(sha256(&got), sha256(&data));
}

/// The other direction too: what `listen` reads from stdin reaches `connect`'s stdout unchanged,
/// while the client's upload flows at the same time.
#[test]
fn both_directions_at_once_are_byte_identical() {
    let up = random_bytes(2 * 1024 * 1024, 1);
    let down = random_bytes(3 * 1024 * 1024 + 5, 2);
    let mut server = Proc::spawn(sockit(&["listen", "127.0.0.1:0"]));
    let addr = server.listening_addr();
    let mut sin = server.child.stdin.take().unwrap();
    let down2 = down.clone();
    let feeder = thread::spawn(move || {
        sin.write_all(&down2).unwrap();
    });
    let server_out = server.collect_stdout();
    let (status, client_out, err) = run(sockit(&["connect", &addr]), &up, PATIENCE);
    assert!(status.success(), "{err}");
    feeder.join().unwrap();
    assert!(server.wait_exit(PATIENCE).success(), "{}", server.stderr());
    assert_eq!(sha256(&client_out), sha256(&down));
    assert_eq!(sha256(&server_out.join().unwrap()), sha256(&up));
}

/// ncat issue #1229: a request piped in, to a server that answers only after the request ends.
/// The half-close must reach the server and its answer must still arrive.
#[test]
fn half_close_lets_the_reply_arrive() {
    let (_py, port) = python(
        r#"
import socket
l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen(1)
print(l.getsockname()[1], flush=True)
c, _ = l.accept()
data = b""
while True:
    chunk = c.recv(65536)
    if not chunk:
        break
    data += chunk
c.sendall(b"reply to " + data)
c.close()
"#,
    );
    let (status, out, err) = run(
        sockit(&["connect", &format!("127.0.0.1:{port}")]),
        b"req",
        PATIENCE,
    );
    assert!(status.success(), "{err}");
    assert_eq!(out, b"reply to req");
}

/// `-C` turns typed LF into CRLF (and leaves CRLF alone).
#[test]
fn crlf_option_converts_line_ends() {
    let (_py, port) = python(
        r#"
import socket
l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen(1)
print(l.getsockname()[1], flush=True)
c, _ = l.accept()
data = b""
while True:
    chunk = c.recv(65536)
    if not chunk:
        break
    data += chunk
c.sendall(repr(data).encode())
c.close()
"#,
    );
    let (status, out, err) = run(
        sockit(&["connect", "-C", &format!("127.0.0.1:{port}")]),
        b"a\nb\r\nc",
        PATIENCE,
    );
    assert!(status.success(), "{err}");
    assert_eq!(String::from_utf8_lossy(&out), r"b'a\r\nb\r\nc'");
}

/// `--recv-only` does not wait for stdin: the peer's close ends it.
#[test]
fn recv_only_ends_when_the_peer_closes() {
    let (_py, port) = python(
        r#"
import socket
l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen(1)
print(l.getsockname()[1], flush=True)
c, _ = l.accept()
c.sendall(b"data")
c.close()
"#,
    );
    let mut p = Proc::spawn(sockit(&[
        "connect",
        "--recv-only",
        &format!("127.0.0.1:{port}"),
    ]));
    // stdin stays open (piped, never closed): only the peer ends this relay.
    let out = p.collect_stdout();
    assert!(p.wait_exit(PATIENCE).success(), "{}", p.stderr());
    assert_eq!(out.join().unwrap(), b"data");
}

/// `--send-only` ends with stdin even though the peer never closes.
#[test]
fn send_only_ends_with_stdin() {
    let (_py, port) = python(
        r#"
import socket, time
l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen(1)
print(l.getsockname()[1], flush=True)
c, _ = l.accept()
c.sendall(b"ignored")
time.sleep(30)
"#,
    );
    let (status, out, err) = run(
        sockit(&["connect", "--send-only", &format!("127.0.0.1:{port}")]),
        b"x",
        PATIENCE,
    );
    assert!(status.success(), "{err}");
    assert!(out.is_empty(), "{out:?}");
}

/// One-shot `listen` serves exactly one client; the listening socket closes once it is in.
#[test]
fn listen_without_keep_open_serves_one_connection() {
    let (mut server, addr) = listen(&[], "127.0.0.1:0");
    let mut first = client(&addr);
    first.write_all(b"one").unwrap();
    // The listener is closed as soon as the first client is accepted.
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        match std::net::TcpStream::connect(&addr) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => break,
            _ => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "second client still accepted"
                );
                thread::sleep(Duration::from_millis(20));
            }
        }
    }
    drop(server.child.stdin.take());
    let out = server.collect_stdout();
    first.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    first.read_to_end(&mut rest).unwrap();
    assert!(server.wait_exit(PATIENCE).success(), "{}", server.stderr());
    assert_eq!(out.join().unwrap(), b"one");
}

/// `-k`: several clients at once; each one's data reaches stdout, and stdin reaches all of them.
/// Data piped in before anyone connects goes to the first client rather than nowhere.
#[test]
fn keep_open_broadcasts_stdin_and_collects_every_client() {
    let (mut server, addr) = listen(&["-k"], "127.0.0.1:0");
    let mut sin = server.child.stdin.take().unwrap();
    sin.write_all(b"early\n").unwrap();
    let out = server.collect_stdout();

    let mut a = client(&addr);
    assert_eq!(read_until(&mut a, b"early\n"), b"early\n");
    let mut b = client(&addr);
    a.write_all(b"from-a\n").unwrap();
    b.write_all(b"from-b\n").unwrap();
    // Both are connected (b's bytes were read); now a broadcast reaches both.
    thread::sleep(Duration::from_millis(200));
    sin.write_all(b"to-all\n").unwrap();
    assert!(contains(&read_until(&mut a, b"to-all\n"), b"to-all\n"));
    assert_eq!(read_until(&mut b, b"to-all\n"), b"to-all\n");

    // One leaves; the other still gets broadcasts.
    drop(a);
    thread::sleep(Duration::from_millis(100));
    sin.write_all(b"again\n").unwrap();
    assert_eq!(read_until(&mut b, b"again\n"), b"again\n");

    // The end of stdin half-closes the clients; the server keeps running until stopped.
    drop(sin);
    let mut rest = Vec::new();
    b.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "{rest:?}");
    let mut c = client(&addr);
    c.write_all(b"late\n").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    c.read_to_end(&mut rest).unwrap();
    drop((b, c));
    thread::sleep(Duration::from_millis(200));
    server.terminate();
    assert!(server.wait_exit(PATIENCE).success(), "{}", server.stderr());
    let text = String::from_utf8(out.join().unwrap()).unwrap();
    for needle in ["from-a\n", "from-b\n", "late\n"] {
        assert!(text.contains(needle), "{needle:?} missing from {text:?}");
    }
}

/// `-k`: a client that stops reading is disconnected once it has taken nothing of what waits for
/// it for `--stall-timeout`; the other client receives every byte, in order.
#[test]
fn keep_open_disconnects_a_client_that_stops_reading() {
    let (mut server, addr) = listen(&["-k", "--stall-timeout", "1500ms", "-v"], "127.0.0.1:0");
    let mut sin = server.child.stdin.take().unwrap();
    let stalled = client(&addr);
    let mut fast = client(&addr);
    // Both are members before the data flows: each one's first byte has reached stdout.
    let mut out = server.child.stdout.take().unwrap();
    (&stalled).write_all(b"s").unwrap();
    fast.write_all(b"f").unwrap();
    let mut seen = Vec::new();
    while !(contains(&seen, b"s") && contains(&seen, b"f")) {
        let mut buf = [0u8; 16];
        let n = out.read(&mut buf).unwrap();
        assert!(n > 0, "server stdout closed");
        seen.extend_from_slice(&buf[..n]);
    }
    let data = random_bytes(8 * 1024 * 1024, 11);
    let feed = data.clone();
    let feeder = thread::spawn(move || {
        sin.write_all(&feed).unwrap();
        // The end of stdin half-closes the remaining client, which ends its read below.
    });
    let mut got = Vec::new();
    fast.read_to_end(&mut got).unwrap();
    feeder.join().unwrap();
    assert_eq!(got.len(), data.len());
    assert_eq!(sha256(&got), sha256(&data));
    // The stalled client, with data waiting that it takes none of, is cut off after the stall
    // limit (the fast one did not wait for it meanwhile); what it can still read ends (EOF or
    // reset), well short of everything.
    server.wait_stderr("not reading; disconnected");
    stalled.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut rest = Vec::new();
    let _ = (&stalled).read_to_end(&mut rest);
    assert!(rest.len() < data.len(), "the stalled client got everything");
    let log = server.stderr();
    assert!(log.contains("not reading; disconnected"), "{log}");
    assert!(
        log.contains("limit=1.5s"),
        "the flag's limit was not the one used: {log}"
    );
    server.terminate();
    assert!(server.wait_exit(PATIENCE).success(), "{}", server.stderr());
}

/// `--sh-exec` per connection, driven by nc: the command's output is the reply, and the end of
/// the client's data is the end of the command's input.
#[test]
fn sh_exec_bridges_a_command_for_nc() {
    let (mut server, addr) = listen(&["-c", "tr a-z A-Z"], "127.0.0.1:0");
    let (host, port) = addr.rsplit_once(':').unwrap();
    let mut cmd = Command::new("nc");
    cmd.args(["-N", host, port]);
    let (status, out, err) = run(cmd, b"hello, world\n", PATIENCE);
    assert!(status.success(), "{err}");
    assert_eq!(out, b"HELLO, WORLD\n");
    assert!(server.wait_exit(PATIENCE).success(), "{}", server.stderr());
}

/// `-k --exec cat`: two clients at once, each with its own command, and the ncat environment.
#[test]
fn exec_keep_open_serves_concurrent_clients() {
    let (mut server, addr) = listen(&["-k", "-e", "cat"], "127.0.0.1:0");
    let mut a = client(&addr);
    let mut b = client(&addr);
    a.write_all(b"alpha\n").unwrap();
    b.write_all(b"bravo\n").unwrap();
    // Both answer while both are open: they really run at the same time.
    assert_eq!(read_until(&mut b, b"bravo\n"), b"bravo\n");
    assert_eq!(read_until(&mut a, b"alpha\n"), b"alpha\n");
    let blob = random_bytes(300_000, 9);
    let mut a2 = a.try_clone().unwrap();
    let blob2 = blob.clone();
    let w = thread::spawn(move || {
        a2.write_all(&blob2).unwrap();
        a2.shutdown(Shutdown::Write).unwrap();
    });
    let mut echoed = Vec::new();
    a.read_to_end(&mut echoed).unwrap();
    w.join().unwrap();
    assert_eq!(sha256(&echoed), sha256(&blob));
    b.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    b.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    server.terminate();
    assert!(server.wait_exit(PATIENCE).success(), "{}", server.stderr());
}

/// The command gets ncat's environment variables describing its connection.
#[test]
fn exec_sets_ncat_environment() {
    let (mut server, addr) = listen(
        &["-c", "echo $NCAT_REMOTE_ADDR $NCAT_REMOTE_PORT $NCAT_LOCAL_ADDR $NCAT_LOCAL_PORT $NCAT_PROTO"],
        "127.0.0.1:0",
    );
    let mut c = client(&addr);
    let me = c.local_addr().unwrap();
    let line = read_line(&mut c);
    let port = addr.rsplit(':').next().unwrap();
    assert_eq!(
        line,
        format!("127.0.0.1 {} 127.0.0.1 {port} TCP\n", me.port())
    );
    drop(c);
    assert!(server.wait_exit(PATIENCE).success(), "{}", server.stderr());
}

/// `-s` picks the source address (seen by the listener's command as NCAT_REMOTE_ADDR).
#[test]
fn connect_source_address() {
    let (mut server, addr) = listen(&["-c", "echo $NCAT_REMOTE_ADDR"], "127.0.0.1:0");
    let (status, out, err) = run(
        sockit(&["connect", "-s", "127.0.0.2", &addr]),
        b"",
        PATIENCE,
    );
    assert!(status.success(), "{err}");
    assert_eq!(out, b"127.0.0.2\n");
    assert!(server.wait_exit(PATIENCE).success(), "{}", server.stderr());
}

/// The command never holds a socket (so it can never keep a client waiting, nor take the
/// listener with it): its open files are pipes and the inherited stderr only.
#[test]
fn exec_child_inherits_no_socket() {
    let (mut server, addr) = listen(&["-k", "-e", "ls -l /proc/self/fd"], "127.0.0.1:0");
    let mut c = client(&addr);
    let mut out = Vec::new();
    c.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("pipe:"), "{text}");
    assert!(
        !text.contains("socket:"),
        "the command holds a socket:\n{text}"
    );
    server.terminate();
    assert!(server.wait_exit(PATIENCE).success(), "{}", server.stderr());
}

/// ncat issue #2843: something the command leaves running must not keep the client waiting,
/// and is killed with the command's process group when the connection ends.
#[test]
fn exec_leftover_background_process_neither_blocks_nor_survives() {
    let (mut server, addr) = listen(&["-c", "echo hi; sleep 30 & echo $!"], "127.0.0.1:0");
    let mut c = client(&addr);
    let started = std::time::Instant::now();
    let mut out = Vec::new();
    c.read_to_end(&mut out).unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the client waited for the background sleep"
    );
    let text = String::from_utf8_lossy(&out);
    let sleep_pid: i32 = text
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .expect(&text);
    drop(c);
    assert!(server.wait_exit(PATIENCE).success(), "{}", server.stderr());
    wait_dead(sleep_pid, Duration::from_secs(5));
}

/// When the connection ends (here: the idle timeout, then a reset) the command is killed and
/// reaped, even though it never ends on its own.
#[test]
fn exec_child_is_killed_when_its_connection_ends() {
    let (mut server, addr) = listen(
        &["-k", "-i", "1s", "-c", "echo $$; exec sleep 30"],
        "127.0.0.1:0",
    );
    // Idle timeout.
    let mut c = client(&addr);
    let pid: i32 = read_line(&mut c).trim().parse().unwrap();
    wait_dead(pid, Duration::from_secs(10));
    let mut rest = Vec::new();
    let _ = c.read_to_end(&mut rest);
    // Reset by the client.
    let c = client(&addr);
    let mut reader = c.try_clone().unwrap();
    let pid: i32 = read_line(&mut reader).trim().parse().unwrap();
    socket2::SockRef::from(&c)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop((c, reader));
    wait_dead(pid, Duration::from_secs(5));
    // The server itself lives on (-k) and its children are gone with SIGTERM too.
    let mut c = client(&addr);
    let pid: i32 = read_line(&mut c).trim().parse().unwrap();
    server.terminate();
    assert!(server.wait_exit(PATIENCE).success(), "{}", server.stderr());
    wait_dead(pid, Duration::from_secs(5));
}

/// `connect --exec`: the command talks to the server (ncat's reverse-shell shape).
#[test]
fn connect_exec_runs_the_command_against_the_server() {
    let (mut server, addr) = listen(&[], "127.0.0.1:0");
    let mut sin = server.child.stdin.take().unwrap();
    let out = server.collect_stdout();
    let mut client = Proc::spawn(sockit(&["connect", "-c", "read x; echo got $x", &addr]));
    sin.write_all(b"ping\n").unwrap();
    drop(sin);
    assert!(client.wait_exit(PATIENCE).success(), "{}", client.stderr());
    assert!(server.wait_exit(PATIENCE).success(), "{}", server.stderr());
    assert_eq!(out.join().unwrap(), b"got ping\n");
}

/// sockit connect <-> `ncat -l`, both directions.
#[test]
fn connect_interoperates_with_ncat() {
    let mut cmd = Command::new("ncat");
    cmd.args(["-l", "127.0.0.1", "0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut ncat = Proc::spawn(cmd);
    let port = port_of(ncat.pid(), false);
    let ncat_out = ncat.collect_stdout();
    let mut nin = ncat.child.stdin.take().unwrap();
    nin.write_all(b"from ncat\n").unwrap();
    drop(nin);
    let (status, out, err) = run(
        sockit(&["connect", &format!("127.0.0.1:{port}")]),
        b"from sockit\n",
        PATIENCE,
    );
    assert!(status.success(), "{err}");
    assert_eq!(out, b"from ncat\n");
    assert!(ncat.wait_exit(PATIENCE).success(), "{}", ncat.stderr());
    assert_eq!(ncat_out.join().unwrap(), b"from sockit\n");
}

/// sockit connect <-> socat running a command: the half-close tells socat's `cat` to finish.
#[test]
fn connect_interoperates_with_socat() {
    let mut cmd = Command::new("socat");
    cmd.args(["TCP-LISTEN:0,bind=127.0.0.1", "EXEC:cat"])
        .stdin(Stdio::null());
    let mut socat = Proc::spawn(cmd);
    let port = port_of(socat.pid(), false);
    let data = random_bytes(200_000, 3);
    let (status, out, err) = run(
        sockit(&["connect", &format!("127.0.0.1:{port}")]),
        &data,
        PATIENCE,
    );
    assert!(status.success(), "{err}");
    assert_eq!(sha256(&out), sha256(&data));
    socat.wait_exit(PATIENCE);
}

/// nc (OpenBSD) -> sockit listen, both directions.
#[test]
fn listen_interoperates_with_nc() {
    let (mut server, addr) = listen(&[], "127.0.0.1:0");
    let mut sin = server.child.stdin.take().unwrap();
    sin.write_all(b"from sockit\n").unwrap();
    drop(sin);
    let out = server.collect_stdout();
    let (host, port) = addr.rsplit_once(':').unwrap();
    let mut cmd = Command::new("nc");
    cmd.args(["-N", host, port]);
    let (status, nc_out, err) = run(cmd, b"from nc\n", PATIENCE);
    assert!(status.success(), "{err}");
    assert_eq!(nc_out, b"from sockit\n");
    assert!(server.wait_exit(PATIENCE).success(), "{}", server.stderr());
    assert_eq!(out.join().unwrap(), b"from nc\n");
}

/// UDP connect: each stdin read is a datagram; the replies are printed; after the end of stdin
/// it keeps receiving until the peer is quiet for the linger time, then exits 0.
#[test]
fn udp_connect_sends_datagrams_and_prints_replies() {
    let (_py, port) = python(
        r#"
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0))
print(s.getsockname()[1], flush=True)
while True:
    data, peer = s.recvfrom(65536)
    s.sendto(data.upper(), peer)
"#,
    );
    let (status, out, err) = run(
        sockit(&["connect", "-u", "-i", "500ms", &format!("127.0.0.1:{port}")]),
        b"hello udp\n",
        PATIENCE,
    );
    assert!(status.success(), "{err}");
    assert_eq!(out, b"HELLO UDP\n");
}

/// UDP connect <-> `nc -u -l`, both ways.
#[test]
fn udp_connect_interoperates_with_nc() {
    let mut cmd = Command::new("nc");
    cmd.args(["-u", "-l", "127.0.0.1", "0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut nc = Proc::spawn(cmd);
    let port = port_of(nc.pid(), true);
    let mut nc_out = nc.child.stdout.take().unwrap();
    let mut client = Proc::spawn(sockit(&[
        "connect",
        "-u",
        "-i",
        "1s",
        &format!("127.0.0.1:{port}"),
    ]));
    let mut cin = client.child.stdin.take().unwrap();
    cin.write_all(b"to nc\n").unwrap();
    assert_eq!(read_until(&mut nc_out, b"to nc\n"), b"to nc\n");
    let mut nin = nc.child.stdin.take().unwrap();
    nin.write_all(b"to sockit\n").unwrap();
    let mut cout = client.child.stdout.take().unwrap();
    assert_eq!(read_until(&mut cout, b"to sockit\n"), b"to sockit\n");
    drop(cin);
    assert!(client.wait_exit(PATIENCE).success(), "{}", client.stderr());
}

/// UDP listen -k: datagrams from several peers are printed; stdin goes to the latest peer.
#[test]
fn udp_listen_takes_many_peers_and_answers_the_latest() {
    let (mut server, addr) = listen(&["-u", "-k"], "127.0.0.1:0");
    let mut sin = server.child.stdin.take().unwrap();
    let mut sout = server.child.stdout.take().unwrap();
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    for s in [&a, &b] {
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
    }
    a.send_to(b"from a\n", &addr).unwrap();
    assert_eq!(read_until(&mut sout, b"from a\n"), b"from a\n");
    b.send_to(b"from b\n", &addr).unwrap();
    assert_eq!(read_until(&mut sout, b"from b\n"), b"from b\n");
    // nc as a third peer.
    let (host, port) = addr.rsplit_once(':').unwrap();
    let mut cmd = Command::new("nc");
    cmd.args(["-u", "-w", "1", host, port]);
    let (_, _, _) = run(cmd, b"from nc\n", PATIENCE);
    assert_eq!(read_until(&mut sout, b"from nc\n"), b"from nc\n");
    b.send_to(b"b again\n", &addr).unwrap();
    assert_eq!(read_until(&mut sout, b"b again\n"), b"b again\n");
    sin.write_all(b"reply\n").unwrap();
    let mut buf = [0u8; 100];
    let n = b.recv(&mut buf).expect("latest peer gets stdin");
    assert_eq!(&buf[..n], b"reply\n");
    assert!(a.recv(&mut buf).is_err(), "an earlier peer got the reply");
    server.terminate();
    assert!(server.wait_exit(PATIENCE).success(), "{}", server.stderr());
}

/// UDP listen with a command: one command per peer, each answering its own peer.
#[test]
fn udp_listen_runs_a_command_per_peer() {
    let (mut server, addr) = listen(&["-u", "-e", "cat"], "127.0.0.1:0");
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut buf = [0u8; 100];
    for (s, msg) in [
        (&a, &b"one\n"[..]),
        (&b, &b"two\n"[..]),
        (&a, &b"three\n"[..]),
    ] {
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        s.send_to(msg, &addr).unwrap();
        let n = s.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], msg);
    }
    server.terminate();
    assert!(server.wait_exit(PATIENCE).success(), "{}", server.stderr());
}

/// Unix sockets: sockit listen with `nc -U`, and sockit connect -U to socat.
#[test]
fn unix_sockets_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.sock");
    let ep = format!("unix:{}", path.display());
    let (mut server, addr) = listen(&[], &ep);
    assert_eq!(addr, ep);
    let mut sin = server.child.stdin.take().unwrap();
    sin.write_all(b"hi nc\n").unwrap();
    drop(sin);
    let out = server.collect_stdout();
    let mut cmd = Command::new("nc");
    cmd.args(["-N", "-U"]).arg(&path);
    let (status, nc_out, err) = run(cmd, b"hi sockit\n", PATIENCE);
    assert!(status.success(), "{err}");
    assert_eq!(nc_out, b"hi nc\n");
    assert!(server.wait_exit(PATIENCE).success(), "{}", server.stderr());
    assert_eq!(out.join().unwrap(), b"hi sockit\n");

    let path2 = dir.path().join("socat.sock");
    let mut cmd = Command::new("socat");
    cmd.arg(format!("UNIX-LISTEN:{}", path2.display()))
        .arg("EXEC:tr a-z A-Z")
        .stdin(Stdio::null());
    let mut socat = Proc::spawn(cmd);
    let deadline = std::time::Instant::now() + PATIENCE;
    while !path2.exists() {
        assert!(std::time::Instant::now() < deadline, "socat never listened");
        thread::sleep(Duration::from_millis(20));
    }
    let (status, out, err) = run(
        sockit(&["connect", "-U", path2.to_str().unwrap()]),
        b"unix\n",
        PATIENCE,
    );
    assert!(status.success(), "{err}");
    assert_eq!(out, b"UNIX\n");
    socat.wait_exit(PATIENCE);
}

/// Makes a CA and a server certificate it signs (for localhost and 127.0.0.1) with openssl.
/// Returns (CA certificate, server certificate, server key, SHA-256 fingerprint of the server's).
struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    fingerprint: String,
}

fn openssl(args: &[&str], dir: &Path) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn make_pki(dir: &Path) -> Pki {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut ca_args = vec!["req", "-x509"];
    ca_args.extend(ec);
    ca_args.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=sockit test CA",
    ]);
    openssl(&ca_args, dir);
    let mut csr_args = vec!["req"];
    csr_args.extend(ec);
    csr_args.extend([
        "-keyout",
        "key.pem",
        "-out",
        "req.csr",
        "-subj",
        "/CN=localhost",
    ]);
    openssl(&csr_args, dir);
    std::fs::write(
        dir.join("ext.cnf"),
        "basicConstraints=CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            "req.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "cert.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
        dir,
    );
    let out = Command::new("openssl")
        .args([
            "x509",
            "-noout",
            "-fingerprint",
            "-sha256",
            "-in",
            "cert.pem",
        ])
        .current_dir(dir)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    Pki {
        ca: dir.join("ca.pem"),
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
        fingerprint: text.trim().split('=').nth(1).unwrap().to_string(),
    }
}

/// Starts `openssl s_server` on a free port; returns it and the port.
fn s_server(cert: &Path, key: &Path) -> (Proc, u16) {
    let mut cmd = Command::new("openssl");
    cmd.args([
        "s_server",
        "-accept",
        "127.0.0.1:0",
        "-naccept",
        "1",
        "-quiet",
        "-cert",
    ])
    .arg(cert)
    .arg("-key")
    .arg(key)
    .stdin(Stdio::piped())
    .stdout(Stdio::piped());
    let p = Proc::spawn(cmd);
    let port = port_of(p.pid(), false);
    (p, port)
}

/// sockit connect --tls --tls-ca to openssl s_server, both directions, then a clean close.
#[test]
fn tls_connect_to_openssl_server_with_ca() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path());
    let (mut server, port) = s_server(&pki.cert, &pki.key);
    let mut sout = server.child.stdout.take().unwrap();
    let mut sin = server.child.stdin.take().unwrap();
    let mut client = Proc::spawn(sockit(&[
        "connect",
        "--tls",
        "--tls-ca",
        pki.ca.to_str().unwrap(),
        &format!("127.0.0.1:{port}"),
    ]));
    let mut cin = client.child.stdin.take().unwrap();
    let mut cout = client.child.stdout.take().unwrap();
    cin.write_all(b"hello server\n").unwrap();
    assert!(contains(
        &read_until(&mut sout, b"hello server\n"),
        b"hello server\n"
    ));
    sin.write_all(b"hello client\n").unwrap();
    assert_eq!(read_until(&mut cout, b"hello client\n"), b"hello client\n");
    drop(cin);
    assert!(client.wait_exit(PATIENCE).success(), "{}", client.stderr());
}

/// The half-close over TLS: close_notify ends the request, and the server's answer (sent after
/// it, then closed without a close_notify of its own, as many servers do) still arrives.
#[test]
fn tls_half_close_lets_the_reply_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path());
    let script = format!(
        r#"
import socket, ssl
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain("{cert}", "{key}")
l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen(1)
print(l.getsockname()[1], flush=True)
c, _ = l.accept()
s = ctx.wrap_socket(c, server_side=True)
data = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
s.sendall(b"tls reply to " + data)
s.close()
"#,
        cert = pki.cert.display(),
        key = pki.key.display()
    );
    let (_py, port) = python(&script);
    let ca = pki.ca.to_str().unwrap();
    let (status, out, err) = run(
        sockit(&[
            "connect",
            "--tls-ca",
            ca,
            "--tls-servername",
            "localhost",
            &format!("127.0.0.1:{port}"),
        ]),
        b"req",
        PATIENCE,
    );
    assert!(status.success(), "{err}");
    assert_eq!(out, b"tls reply to req");
}

/// A pinned fingerprint is accepted when it matches (and the CA is not needed then).
#[test]
fn tls_connect_with_pinned_fingerprint() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path());
    let (mut server, port) = s_server(&pki.cert, &pki.key);
    let mut sout = server.child.stdout.take().unwrap();
    let mut client = Proc::spawn(sockit(&[
        "connect",
        "--tls-fingerprint",
        &pki.fingerprint,
        &format!("127.0.0.1:{port}"),
    ]));
    let mut cin = client.child.stdin.take().unwrap();
    cin.write_all(b"pinned\n").unwrap();
    assert!(contains(&read_until(&mut sout, b"pinned\n"), b"pinned\n"));
    drop(cin);
    assert!(client.wait_exit(PATIENCE).success(), "{}", client.stderr());
}

/// sockit listen --tls (self-signed, fingerprint printed) with openssl s_client, both ways.
#[test]
fn tls_listen_with_openssl_client() {
    let (mut server, addr) = listen(&["--tls"], "127.0.0.1:0");
    assert!(
        server.stderr().contains("SHA-256 fingerprint"),
        "{}",
        server.stderr()
    );
    let mut sin = server.child.stdin.take().unwrap();
    let mut sout = server.child.stdout.take().unwrap();
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-connect", &addr, "-servername", "localhost"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut sc = Proc::spawn(cmd);
    let mut sc_in = sc.child.stdin.take().unwrap();
    let mut sc_out = sc.child.stdout.take().unwrap();
    sc_in.write_all(b"hello sockit\n").unwrap();
    assert_eq!(read_until(&mut sout, b"hello sockit\n"), b"hello sockit\n");
    sin.write_all(b"hello openssl\n").unwrap();
    assert!(contains(
        &read_until(&mut sc_out, b"hello openssl\n"),
        b"hello openssl\n"
    ));
    // sockit's end of input sends close_notify; s_client then closes, and sockit exits cleanly.
    drop(sin);
    drop(sc_in);
    assert!(server.wait_exit(PATIENCE).success(), "{}", server.stderr());
    sc.wait_exit(PATIENCE);
}

/// sockit to sockit over TLS, trusting the listener's printed fingerprint; binary-safe.
#[test]
fn tls_connect_to_listen_with_printed_fingerprint() {
    let (mut server, addr) = listen(&["--tls"], "127.0.0.1:0");
    let text = server.stderr();
    let fp = text
        .split("SHA-256 fingerprint ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("fingerprint line")
        .to_string();
    drop(server.child.stdin.take());
    let out = server.collect_stdout();
    let data = random_bytes(1024 * 1024, 77);
    let (status, _, err) = run(
        sockit(&["connect", "--tls-fingerprint", &fp, &addr]),
        &data,
        PATIENCE,
    );
    assert!(status.success(), "{err}");
    assert!(server.wait_exit(PATIENCE).success(), "{}", server.stderr());
    assert_eq!(sha256(&out.join().unwrap()), sha256(&data));
}

/// The library API: a listener and a client embedded in one program, any reader/writer as the
/// local side.
#[tokio::test]
async fn library_relays_between_listen_and_connect() {
    use sockit::net::{ConnectOptions, ServerOptions};
    use sockit::relay::{
        self, Attach, ConnectConfig, Ended, ListenConfig, Local, RelayOptions, RelayServer,
    };
    use tokio::io::AsyncReadExt;
    use tokio_util::sync::CancellationToken;

    let server = RelayServer::bind(ListenConfig {
        endpoint: "127.0.0.1:0".parse().unwrap(),
        udp: false,
        keep_open: false,
        stall_limit: relay::DEFAULT_STALL_LIMIT,
        sendq: relay::DEFAULT_SENDQ,
        max_procs: relay::DEFAULT_MAX_PROCS,
        session_idle: Some(relay::DEFAULT_SESSION_IDLE),
        eof_grace: relay::DEFAULT_EOF_GRACE,
        server: ServerOptions::default(),
        relay: RelayOptions::default(),
    })
    .await
    .unwrap();
    let addr = server.local_addr().endpoint();
    let (server_out, mut server_read) = tokio::io::duplex(1 << 16);
    let server_in: &'static [u8] = b"from the server";
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(server.run(
        Attach::Io(Local::from_io(server_in, server_out)),
        shutdown.clone(),
    ));

    let (client_out, mut client_read) = tokio::io::duplex(1 << 16);
    let config = ConnectConfig {
        endpoint: addr,
        udp: false,
        connect: ConnectOptions::default(),
        proxy: None,
        relay: RelayOptions::default(),
    };
    let client_in: &'static [u8] = b"from the client";
    let ended = relay::connect(
        &config,
        Attach::Io(Local::from_io(client_in, client_out)),
        shutdown.clone(),
    )
    .await
    .unwrap();
    assert_eq!(ended, Ended::Finished);
    assert_eq!(running.await.unwrap().unwrap(), Ended::Finished);
    let mut got = Vec::new();
    client_read.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"from the server");
    got.clear();
    server_read.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"from the client");
}

/// `listen -u` without -k locks onto its first peer (as ncat does): a stranger's datagrams are
/// not printed and do not redirect stdin to the stranger; they are logged at -v.
#[test]
fn udp_listen_locks_onto_its_first_peer() {
    let (mut server, addr) = listen(&["-u", "-v"], "127.0.0.1:0");
    let mut sin = server.child.stdin.take().unwrap();
    let mut sout = server.child.stdout.take().unwrap();
    let first = UdpSocket::bind("127.0.0.1:0").unwrap();
    let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
    for s in [&first, &stranger] {
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
    }
    first.send_to(b"from first\n", &addr).unwrap();
    assert_eq!(read_until(&mut sout, b"from first\n"), b"from first\n");
    stranger.send_to(b"from stranger\n", &addr).unwrap();
    server.wait_stderr("ignored");
    first.send_to(b"first again\n", &addr).unwrap();
    // Only the first peer's bytes reach stdout.
    assert_eq!(read_until(&mut sout, b"first again\n"), b"first again\n");
    sin.write_all(b"reply\n").unwrap();
    let mut buf = [0u8; 100];
    first.set_read_timeout(Some(PATIENCE)).unwrap();
    let n = first.recv(&mut buf).expect("the first peer gets stdin");
    assert_eq!(&buf[..n], b"reply\n");
    assert!(stranger.recv(&mut buf).is_err(), "the stranger got stdin");
    server.terminate();
    assert!(server.wait_exit(PATIENCE).success(), "{}", server.stderr());
}

/// `listen -u -e cat`: 200 source addresses would start 200 processes; by default at most 100
/// (`--max-procs`) run at once, and the others' datagrams are dropped.
#[test]
fn udp_listen_exec_caps_processes() {
    let (server, addr) = listen(&["-u", "-e", "cat"], "127.0.0.1:0");
    let peers: Vec<UdpSocket> = (0..200)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    for p in &peers {
        p.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        p.send_to(b"hi\n", &addr).unwrap();
    }
    // Wait until the number of commands stops changing (bounded), then count.
    let deadline = std::time::Instant::now() + PATIENCE;
    let mut last = usize::MAX;
    let alive = loop {
        thread::sleep(Duration::from_millis(500));
        let now = descendants(server.pid()).len();
        if now == last || std::time::Instant::now() > deadline {
            break now;
        }
        last = now;
    };
    assert!(alive <= 100, "{alive} commands running (cap 100)");
    assert!(alive >= 90, "only {alive} commands started");
    let mut buf = [0u8; 16];
    let answered = peers
        .iter()
        .filter(|p| p.recv(&mut buf).is_ok())
        .take(5)
        .count();
    assert_eq!(answered, 5, "the peers within the cap were not answered");
}

/// `listen -u -c CMD`: a peer that goes quiet has its command ended after `--session-idle`, and
/// the process is gone.
#[test]
fn udp_listen_exec_session_ends_when_idle() {
    let (server, addr) = listen(
        &["-u", "--session-idle", "1s", "-c", "echo $$; exec cat"],
        "127.0.0.1:0",
    );
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(PATIENCE)).unwrap();
    peer.send_to(b"x", &addr).unwrap();
    let mut buf = [0u8; 64];
    let n = peer.recv(&mut buf).unwrap();
    let text = String::from_utf8_lossy(&buf[..n]).to_string();
    let pid: i32 = text
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no pid in {text:?}"));
    assert!(!is_dead(pid));
    wait_dead(pid, Duration::from_secs(10));
    assert!(descendants(server.pid()).is_empty());
    // The server lives on: a new datagram starts a new command.
    peer.send_to(b"y", &addr).unwrap();
    let n = peer.recv(&mut buf).unwrap();
    assert!(n > 0);
}

/// `listen -k -e`: one connection is one process, so `--max-procs` caps connections too; the
/// client beyond it is refused (closed at once) and the others are served.
#[test]
fn keep_open_exec_caps_processes() {
    let (_server, addr) = listen(&["-k", "-e", "cat", "--max-procs", "3"], "127.0.0.1:0");
    let mut served: Vec<_> = (0..3).map(|_| client(&addr)).collect();
    for (i, c) in served.iter_mut().enumerate() {
        let msg = format!("client {i}\n");
        c.write_all(msg.as_bytes()).unwrap();
        assert_eq!(read_until(c, msg.as_bytes()), msg.as_bytes());
    }
    let mut extra = client(&addr);
    let _ = extra.write_all(b"one too many\n");
    let mut rest = Vec::new();
    let _ = extra.read_to_end(&mut rest);
    assert!(rest.is_empty(), "the fourth client was served: {rest:?}");
}

/// `listen -k -c 'sleep 600'`: a client that connects and closes leaves nothing running once the
/// command has been silent for `--eof-grace` after the close.
#[test]
fn keep_open_exec_ends_commands_of_clients_that_left() {
    let (server, addr) = listen(
        &["-k", "--eof-grace", "300ms", "-c", "sleep 600"],
        "127.0.0.1:0",
    );
    for _ in 0..20 {
        let c = client(&addr);
        drop(c);
    }
    wait_descendants_at_most(server.pid(), 0, Duration::from_secs(15));
    // Half-close still works: a command that answers after the end of its input does so.
    let mut c = client(&addr);
    c.write_all(b"x").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
}

/// The grace time counts silence, not time: a command that answers well after its client's
/// half-close (longer than the grace) still gets its answer through, as long as it keeps talking.
#[test]
fn keep_open_exec_half_close_answer_after_a_pause() {
    let (_server, addr) = listen(
        &[
            "-k",
            "--eof-grace",
            "1s",
            "-c",
            "cat >/dev/null; for i in 1 2 3 4; do sleep 0.4; echo $i; done",
        ],
        "127.0.0.1:0",
    );
    let mut c = client(&addr);
    c.write_all(b"request").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let mut out = Vec::new();
    c.read_to_end(&mut out).unwrap();
    assert_eq!(out, b"1\n2\n3\n4\n");
}

/// `-k` broadcast: one client that never reads must not hold the others back. With a stall limit
/// of an hour only its own queue bound (`--sendq`) can cut it; three readers receive every byte of
/// a 20 MB stream, and the non-reader is disconnected, not waited for.
#[test]
fn keep_open_non_reader_is_dropped_without_holding_back_the_readers() {
    let (mut server, addr) = listen(
        &["-k", "--stall-timeout", "1h", "--sendq", "1M"],
        "127.0.0.1:0",
    );
    let mut sin = server.child.stdin.take().unwrap();
    let mut out = server.child.stdout.take().unwrap();
    let idle = client(&addr);
    let readers: Vec<_> = (0..3).map(|_| client(&addr)).collect();
    // All four are members before the data flows: each one's first byte has reached stdout.
    (&idle).write_all(b"n").unwrap();
    for (i, r) in readers.iter().enumerate() {
        let mut w = r;
        w.write_all(format!("{i}").as_bytes()).unwrap();
    }
    let mut seen = Vec::new();
    while !(contains(&seen, b"n") && [b"0", b"1", b"2"].iter().all(|d| contains(&seen, *d))) {
        let mut buf = [0u8; 16];
        let n = out.read(&mut buf).unwrap();
        assert!(n > 0, "server stdout closed");
        seen.extend_from_slice(&buf[..n]);
    }
    let data = random_bytes(20 * 1024 * 1024, 21);
    let feed = data.clone();
    let feeder = thread::spawn(move || {
        sin.write_all(&feed).unwrap();
        // The end of stdin half-closes the readers once they have everything.
    });
    let handles: Vec<_> = readers
        .into_iter()
        .map(|mut r| {
            thread::spawn(move || {
                let mut got = Vec::new();
                r.read_to_end(&mut got)
                    .expect("a reader was held back (or cut)");
                got
            })
        })
        .collect();
    for h in handles {
        let got = h.join().unwrap();
        assert_eq!(got.len(), data.len());
        assert_eq!(sha256(&got), sha256(&data));
    }
    feeder.join().unwrap();
    // The non-reader was cut: what it can still read ends (EOF or reset) short of everything.
    let mut rest = Vec::new();
    let _ = (&idle).read_to_end(&mut rest);
    assert!(rest.len() < data.len(), "the non-reader got everything");
    let log = server.stderr();
    assert!(log.contains("fell too far behind"), "{log}");
    server.terminate();
    assert!(server.wait_exit(PATIENCE).success(), "{}", server.stderr());
}
