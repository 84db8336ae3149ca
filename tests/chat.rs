//! `sockit chat` against real clients over real sockets: nc, python3 socket scripts (the tutorials'
//! chat client among them), openssl s_client, `nc -U`, and std `TcpStream`s. Ordering, commands,
//! history across restarts and kill -9, slow consumers, floods, limits, encodings, TLS, JSON lines,
//! graceful shutdown.

mod chat_support;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use chat_support::{body, is_message, is_stamped, python, Chat, Peer, WAIT};

/// Every client's own message arrives back stamped, in one order for everyone.
#[test]
fn nc_python_and_tcp_clients_see_one_order() {
    let server = Chat::start(&["--no-history", "--rate", "0", "127.0.0.1:0"]);
    let addr = server.addr();

    // A python client that relays what it receives to stdout and, on "go", sends 20 lines itself.
    const PY: &str = r#"
import socket, sys, threading
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=20)
s.settimeout(None)
def pump():
    while True:
        data = s.recv(65536)
        if not data:
            break
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
threading.Thread(target=pump, daemon=True).start()
for line in sys.stdin:
    if line.strip() == "go":
        for i in range(20):
            s.sendall(b"py-%02d\n" % i)
"#;
    let mut nc = Peer::nc(addr);
    nc.wait_join("lobby");
    let mut cmd = Command::new("python3");
    cmd.arg("-c").arg(PY).arg(addr.port().to_string());
    let mut py = Peer::process(cmd);
    py.welcome();
    py.wait_join("lobby");
    let mut tcp = Peer::joined(addr);

    // All three are members now (joins are ordered); send concurrently.
    py.send("go");
    nc.send_raw(
        (0..20)
            .map(|i| format!("nc-{i:02}\n"))
            .collect::<String>()
            .as_bytes(),
    );
    for i in 0..20 {
        tcp.send(&format!("tcp-{i:02}"));
    }

    let mut orders = Vec::new();
    for peer in [&mut nc, &mut py, &mut tcp] {
        let mut msgs = Vec::new();
        let deadline = Instant::now() + WAIT;
        while msgs.len() < 60 {
            let left = deadline.saturating_duration_since(Instant::now());
            match peer.next_line(left) {
                Ok(Some(l)) if is_message(&l) => msgs.push(body(&l).to_string()),
                Ok(Some(_)) => {}
                _ => panic!(
                    "{} got {} of 60 messages:\n{}",
                    peer.nick,
                    msgs.len(),
                    peer.seen.join("\n")
                ),
            }
        }
        orders.push(msgs);
    }
    assert_eq!(orders[0], orders[1], "nc and python saw different orders");
    assert_eq!(orders[0], orders[2], "nc and tcp saw different orders");
    // Each sender's own lines keep their order, and each line appears once.
    for (nick, prefix) in [(&nc.nick, "nc"), (&py.nick, "py"), (&tcp.nick, "tcp")] {
        let mine: Vec<String> = orders[0]
            .iter()
            .filter(|m| m.starts_with(&format!("<{nick}> ")))
            .cloned()
            .collect();
        let want: Vec<String> = (0..20)
            .map(|i| format!("<{nick}> {prefix}-{i:02}"))
            .collect();
        assert_eq!(mine, want);
    }
}

/// The tutorials' chat client: one recv(1024) for the welcome, then per message a send() without
/// a newline and one recv(1024) that must hold its own stamped message. The first message goes at
/// once, the next ones after a human's typing pause. Prints each recv, then `---`.
const TUTORIAL: &str = r#"
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.settimeout(10)
s.connect(("localhost", int(sys.argv[1])))
enc = sys.argv[2]
sys.stdout.write(s.recv(1024).decode(enc) + "---\n")
for i, msg in enumerate(sys.argv[3:]):
    if i > 0:
        time.sleep(0.4)
    s.send(msg.encode(enc))
    sys.stdout.write(s.recv(1024).decode(enc) + "---\n")
s.close()
"#;

/// Runs [`TUTORIAL`]; returns the nick and what each recv after a send got.
fn tutorial(port: u16, encoding: &str, msgs: &[&str]) -> (String, Vec<String>) {
    let mut args = vec![port.to_string(), encoding.to_string()];
    args.extend(msgs.iter().map(|m| m.to_string()));
    let args: Vec<&str> = args.iter().map(|a| a.as_str()).collect();
    let out = String::from_utf8(python(TUTORIAL, &args)).unwrap();
    let mut recvs: Vec<String> = out.split("---\n").map(str::to_string).collect();
    recvs.pop(); // after the last separator
    assert_eq!(recvs.len(), msgs.len() + 1, "{out}");
    let welcome = recvs.remove(0);
    let nick = welcome
        .strip_prefix("-!- Welcome to sockit chat, ")
        .and_then(|r| r.split('!').next())
        .unwrap_or_else(|| panic!("first recv is not the welcome: {welcome:?}"))
        .to_string();
    (nick, recvs)
}

#[test]
fn tutorial_client_gets_its_message_back() {
    let server = Chat::start(&["--no-history", "127.0.0.1:0"]);
    let msgs = ["hello", "second message", "third"];
    let (nick, recvs) = tutorial(server.port(), "utf-8", &msgs);
    for (msg, got) in msgs.iter().zip(&recvs) {
        let want = format!("<{nick}> {msg}");
        assert!(
            got.lines().any(|l| is_stamped(l) && body(l) == want),
            "the recv after sending {msg:?} did not hold {want:?}: {got:?} (all: {recvs:?})"
        );
    }
}

#[test]
fn commands_private_messages_nicks_rooms_and_leaving() {
    let server = Chat::start(&["--no-history", "--max-nick", "8", "127.0.0.1:0"]);
    let addr = server.addr();
    let mut ann = Peer::joined(addr);
    let mut bob = Peer::joined(addr);
    let mut cat = Peer::joined(addr);

    ann.send("/nick ann");
    let old = ann.nick.clone();
    ann.expect("nick change", |l| {
        body(l) == format!("-!- {old} is now known as ann")
    });
    cat.expect("ann's nick change seen by others", |l| {
        body(l) == format!("-!- {old} is now known as ann")
    });
    ann.nick = "ann".into();
    let old = bob.nick.clone();
    bob.send("/nick bob");
    cat.expect("bob's nick change", |l| {
        body(l) == format!("-!- {old} is now known as bob")
    });
    bob.nick = "bob".into();

    // Nick rules: taken (case-insensitively), too long, bad characters, leading digit.
    for (bad, why) in [
        ("ANN", "is taken"),
        ("abcdefghi", "1 to 8 characters"),
        ("bad!name", "may contain"),
        ("a b", "may contain"),
        ("9lives", "may not start"),
    ] {
        bob.send(&format!("/nick {bad}"));
        let err = bob.expect("a nick error", |l| l.starts_with("-!- error: "));
        assert!(err.contains(why), "/nick {bad}: {err}");
    }
    // Exactly --max-nick characters is fine.
    bob.send("/nick bobbybob");
    cat.expect("8-character nick", |l| {
        body(l) == "-!- bob is now known as bobbybob"
    });
    bob.nick = "bobbybob".into();

    // /msg reaches its target (and the sender's echo), never a third client.
    ann.send("/msg BobbyBob the secret");
    let private = "*ann -> bobbybob* the secret";
    bob.expect("the private message", |l| {
        is_stamped(l) && body(l) == private
    });
    ann.expect("the sender's copy", |l| is_stamped(l) && body(l) == private);
    ann.send("after the secret");
    cat.expect_msg("ann", "after the secret");
    assert!(
        !cat.seen
            .iter()
            .any(|l| l.contains("the secret") && !l.contains("after")),
        "a third client saw a private message: {:?}",
        cat.seen
    );
    ann.send("/msg nobody hi");
    ann.expect("no such nick", |l| {
        l.starts_with("-!- error: ") && l.contains("nobody")
    });

    // /me, /who, /rooms, /help, /history.
    cat.send("/me waves");
    ann.expect("action", |l| {
        is_stamped(l) && body(l) == format!("* {} waves", cat.nick)
    });
    cat.send("/who");
    let who = cat.expect("who", |l| l.starts_with("-!- in #lobby (3): "));
    for n in ["ann", "bobbybob", &cat.nick] {
        assert!(who.contains(n), "{who}");
    }
    cat.send("/help");
    cat.expect("help", |l| l == "-!- Commands:");
    cat.expect("help lists /msg", |l| l.contains("/msg NICK TEXT"));
    cat.send("/history");
    cat.expect("history header", |l| {
        l.starts_with("-!- last ") && l.contains("#lobby")
    });
    cat.expect("history holds ann's message", |l| {
        body(l) == "<ann> after the secret"
    });
    cat.expect("history end", |l| l == "-!- end of history");
    cat.send("/frobnicate");
    cat.expect("unknown command", |l| {
        l.starts_with("-!- error: unknown command")
    });

    // /join moves ann: lobby sees her leave, #dev exists with one member.
    ann.send("/join #dev");
    ann.expect("join #dev", |l| body(l) == "-!- ann joined #dev");
    cat.expect("ann left the lobby", |l| {
        body(l) == "-!- ann left #lobby (went to #dev)"
    });
    cat.send("/rooms");
    cat.expect("rooms", |l| l == "-!- rooms: #lobby (2), #dev (1)");
    cat.send("room talk");
    ann.send("dev talk");
    ann.expect_msg("ann", "dev talk");
    cat.expect_msg(&cat.nick.clone(), "room talk");
    // Ordered after "room talk", so a misdelivered copy would have come first.
    ann.send("dev talk 2");
    ann.expect_msg("ann", "dev talk 2");
    assert!(!ann.seen.iter().any(|l| l.contains("room talk")));

    // /quit: goodbye, then closed at once; the room sees the reason.
    bob.send("/quit bye now");
    bob.expect("goodbye", |l| l == "-!- goodbye");
    let (rest, _) = bob.expect_closed(Duration::from_secs(3));
    assert!(rest.is_empty(), "lines after goodbye: {rest:?}");
    cat.expect("bob's leave", |l| {
        body(l) == "-!- bobbybob left #lobby (bye now)"
    });
    cat.send("/who");
    let who = cat.expect("who after quit", |l| l.starts_with("-!- in #lobby"));
    assert_eq!(who, format!("-!- in #lobby (1): {}", cat.nick));

    // A dropped connection is announced too.
    let dan = Peer::joined(addr);
    let dan_nick = dan.nick.clone();
    cat.expect("dan joined", |l| {
        body(l) == format!("-!- {dan_nick} joined #lobby")
    });
    drop(dan);
    cat.expect("dan's leave", |l| {
        body(l) == format!("-!- {dan_nick} left #lobby")
    });
}

/// History survives a restart and a kill -9: what a client has seen was committed first.
#[test]
fn history_survives_restart_and_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.sqlite3");
    let db = db.to_str().unwrap();
    let args = ["--history", db, "127.0.0.1:0"];

    let mut server = Chat::start(&args);
    let mut a = Peer::joined(server.addr());
    for text in ["first words", "second words"] {
        a.send(text);
        a.expect_msg(&a.nick.clone(), text);
    }
    drop(a);
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit(WAIT).is_some_and(|s| s.success()));

    // A restart on the same file: a new joiner gets the messages replayed before its join notice,
    // and /history lists them.
    let server = Chat::start(&args);
    let mut b = Peer::tcp(server.addr());
    let first = b.expect("replayed first message", |l| {
        body(l).ends_with("> first words")
    });
    assert!(is_stamped(&first));
    b.expect("replayed second message", |l| {
        body(l).ends_with("> second words")
    });
    b.wait_join("lobby");
    b.send("/history 5");
    b.expect("history header", |l| l == "-!- last 2 messages of #lobby:");
    b.expect("history 1", |l| body(l).ends_with("> first words"));
    b.expect("history 2", |l| body(l).ends_with("> second words"));
    b.expect("history end", |l| l == "-!- end of history");

    // kill -9 right after a message reached a client: it must be in history after a restart.
    b.send("said just before the crash");
    b.expect_msg(&b.nick.clone(), "said just before the crash");
    server.signal(libc::SIGKILL);
    drop(server);
    drop(b);

    let server = Chat::start(&args);
    let mut c = Peer::joined(server.addr());
    c.send("/history");
    c.expect("history header", |l| l.starts_with("-!- last 3 messages"));
    c.expect("the message said before the crash", |l| {
        body(l).ends_with("> said just before the crash")
    });
}

/// A client that never reads is disconnected when its queue passes --sendq; the 50 others, who
/// read, get every message and are not slowed down or dropped.
#[test]
fn slow_consumer_is_dropped_and_the_rest_get_everything() {
    let server = Chat::start(&[
        "--no-history",
        "--rate",
        "0",
        "--sendq",
        "16384",
        "127.0.0.1:0",
    ]);
    let addr = server.addr();

    // The slow client reads its welcome, then never reads again. A small receive buffer keeps
    // the kernel from absorbing megabytes on its behalf.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect_timeout(&addr.into(), WAIT).unwrap();
    let mut slow: TcpStream = sock.into();
    slow.set_read_timeout(Some(WAIT)).unwrap();
    let mut first = [0u8; 512];
    let n = slow.read(&mut first).unwrap();
    let welcome = String::from_utf8_lossy(&first[..n]).into_owned();
    let slow_nick = welcome
        .strip_prefix("-!- Welcome to sockit chat, ")
        .and_then(|r| r.split('!').next())
        .unwrap_or_else(|| panic!("no welcome: {welcome:?}"))
        .to_string();

    // Connect all first: each waits ~150 ms for its welcome (the JSON negotiation window).
    let mut peers: Vec<Peer> = (0..50).map(|_| Peer::tcp_raw(addr)).collect();
    for p in peers.iter_mut() {
        p.welcome();
        p.wait_join("lobby");
    }
    let sender = peers[0].nick.clone();
    // The slow client joined before every reader (its join went out with its welcome).
    peers[0].send("/who");
    let who = peers[0].expect("who", |l| l.starts_with("-!- in #lobby (51): "));
    assert!(who.contains(&slow_nick), "{who}");

    // Stream messages in chunks, each chunk sent once the previous one came back to the sender
    // (so no batch outgrows a reader's queue), until the slow client is dropped (bounded). The
    // readers' lines are checked as they come, so the test holds little in memory.
    const CHUNK: usize = 16;
    let pad = "x".repeat(3000);
    let kicked = format!("-!- {slow_nick} left #lobby (");
    let mut sent = 0usize;
    let mut got = vec![0usize; peers.len()];
    let mut reason = None;
    let check = |p: &mut Peer, got: &mut usize, limit: Duration| -> bool {
        // Returns true at END.
        loop {
            let l = match p.next_line(limit) {
                Ok(Some(l)) => l,
                Ok(None) => return false,
                Err(e) => panic!(
                    "{} was disconnected ({e}) after {got} messages: {:?}",
                    p.nick,
                    p.seen
                        .iter()
                        .rev()
                        .take(3)
                        .map(|l| &l[..l.len().min(80)])
                        .collect::<Vec<_>>()
                ),
            };
            let b = body(&l);
            if b == format!("<{sender}> END") {
                return true;
            }
            if let Some(m) = b.strip_prefix(&format!("<{sender}> m")) {
                assert_eq!(&m[..5], format!("{got:05}"), "{} lost a message", p.nick);
                *got += 1;
            }
        }
    };
    while reason.is_none() {
        assert!(
            sent < 4_000,
            "the slow client was not dropped after {sent} messages"
        );
        let chunk: String = (sent..sent + CHUNK)
            .map(|i| format!("m{i:05} {pad}\n"))
            .collect();
        peers[0].send_raw(chunk.as_bytes());
        sent += CHUNK;
        let last = format!("<{sender}> m{:05} {pad}", sent - 1);
        loop {
            let l = peers[0]
                .next_line(WAIT)
                .expect("sender connected")
                .expect("sender got its own chunk back");
            if let Some(r) = body(&l).strip_prefix(&kicked) {
                reason = Some(r.to_string());
            }
            if body(&l) == last {
                break;
            }
        }
        for (p, n) in peers.iter_mut().zip(got.iter_mut()).skip(1) {
            check(p, n, Duration::ZERO);
        }
    }
    eprintln!("slow client dropped after {sent} messages");
    let reason = reason.unwrap();
    assert!(
        reason.contains("could not keep up"),
        "leave reason: {reason}"
    );
    peers[0].send("END");
    peers[0].expect_msg(&sender, "END");

    // Every reader got every message, in order, and is still connected.
    for (p, n) in peers.iter_mut().zip(got.iter_mut()).skip(1) {
        let deadline = Instant::now() + WAIT;
        while !check(p, n, Duration::from_millis(100)) {
            assert!(
                Instant::now() < deadline,
                "{} stalled after {n} messages",
                p.nick
            );
        }
        assert_eq!(*n, sent, "{} got {n} of {sent}", p.nick);
    }

    // The slow client's socket ends once it does read: data, then EOF or a reset.
    let deadline = Instant::now() + WAIT;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        assert!(
            Instant::now() < deadline,
            "the slow client was never closed"
        );
        match slow.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => panic!("slow client read: {e}"),
        }
    }
}

/// 10 MB without a newline: the client is told and cut off after the flood limit, the server's
/// memory stays flat, and everyone else carries on.
#[test]
fn endless_line_is_cut_off_without_memory_growth() {
    let server = Chat::start(&["--no-history", "127.0.0.1:0"]);
    let addr = server.addr();
    let mut other = Peer::joined(addr);
    let mut flooder = Peer::joined(addr);
    let before = server.rss_kib();

    let mut stream = flooder.socket().try_clone().unwrap();
    let writer = thread::spawn(move || {
        let chunk = vec![b'x'; 64 * 1024];
        // 160 × 64 KiB = 10 MiB, or until the server cuts us off.
        for _ in 0..160 {
            if stream.write_all(&chunk).is_err() {
                break;
            }
        }
    });
    flooder.expect("the flood error", |l| {
        l.starts_with("-!- error: disconnected: more than") && l.contains("without a newline")
    });
    let (rest, _) = flooder.expect_closed(WAIT);
    assert!(rest.iter().all(|l| !l.contains("xxxx")), "{rest:?}");
    writer.join().unwrap();
    let after = server.rss_kib();
    eprintln!("server RSS {before} KiB before the flood, {after} KiB after");
    assert!(
        after < before + 4 * 1024,
        "server RSS grew from {before} KiB to {after} KiB"
    );

    other.expect("the flooder's leave", |l| {
        body(l) == format!("-!- {} left #lobby (flooded)", flooder.nick)
    });
    other.send("still here");
    other.expect_msg(&other.nick.clone(), "still here");
}

/// A line over --max-line is refused with an error and not delivered; the connection stays, and a
/// line of exactly --max-line bytes goes through.
#[test]
fn line_too_long_is_refused_and_exact_limit_accepted() {
    let server = Chat::start(&["--no-history", "--max-line", "100", "127.0.0.1:0"]);
    let addr = server.addr();
    let mut a = Peer::joined(addr);
    let mut b = Peer::joined(addr);

    a.send(&"L".repeat(101));
    a.expect("too long", |l| {
        l == "-!- error: line too long (the limit is 100 bytes); it was not sent"
    });
    let exact = "E".repeat(100);
    a.send_raw(format!("{exact}\r\n").as_bytes());
    a.expect_msg(&a.nick.clone(), &exact);
    b.expect_msg(&a.nick.clone(), &exact);
    assert!(
        !b.seen.iter().any(|l| l.contains("LLLL")),
        "the over-long line was delivered: {:?}",
        b.seen
    );
    // Over-long input that arrives in pieces is refused as well, and the next line is intact.
    a.send_raw(&[b'P'; 80]);
    thread::sleep(Duration::from_millis(20));
    a.send_raw(&[b'P'; 80]);
    a.send_raw(b"\nafter\n");
    a.expect("too long in pieces", |l| {
        l.starts_with("-!- error: line too long")
    });
    b.expect_msg(&a.nick.clone(), "after");
    assert!(!b.seen.iter().any(|l| l.contains("PPPP")));
}

/// --rate 2 --burst 3: ten lines at once → the burst goes through at once, the rest are delayed
/// (fakelag), none is lost or reordered, and the client is told once.
#[test]
fn rate_limit_delays_a_burst_and_loses_nothing() {
    let server = Chat::start(&["--no-history", "--rate", "2", "--burst", "3", "127.0.0.1:0"]);
    let mut a = Peer::joined(server.addr());
    let mut b = Peer::joined(server.addr());
    let lines: String = (0..10).map(|i| format!("burst {i}\n")).collect();
    let start = Instant::now();
    a.send_raw(lines.as_bytes());
    for i in 0..10 {
        b.expect_msg(&a.nick.clone(), &format!("burst {i}"));
    }
    // Seven lines past the burst at two a second (bounds loose for a busy machine).
    assert!(
        start.elapsed() >= Duration::from_millis(2500),
        "{:?}",
        start.elapsed()
    );
    for i in 0..10 {
        a.expect_msg(&a.nick.clone(), &format!("burst {i}"));
    }
    let told = a.seen.iter().filter(|l| l.contains("slowing down")).count();
    assert_eq!(told, 1, "{:?}", a.seen);
    assert!(!a.seen.iter().any(|l| l.contains("error:")), "{:?}", a.seen);
}

/// A client held back by fakelag still hears the server stop: its wait for a token runs beside
/// the shutdown, so it gets the goodbye at once instead of when its bucket would have refilled
/// (half a minute here) or being cut without one at the end of the drain.
#[test]
fn a_client_held_by_fakelag_hears_the_shutdown_at_once() {
    let mut server = Chat::start(&[
        "--no-history",
        "--rate",
        "1",
        "--burst",
        "1",
        "--drain",
        "60s",
        "127.0.0.1:0",
    ]);
    let mut a = Peer::joined(server.addr());
    let lines: String = (0..30).map(|i| format!("held {i}\n")).collect();
    a.send_raw(lines.as_bytes());
    a.expect("the slow-down notice", |l| l.contains("slowing down"));
    server.signal(libc::SIGTERM);
    // Well before the 29 s the bucket needs, and before the 60 s drain.
    let (lines, _) = a.expect_closed(Duration::from_secs(15));
    assert!(
        lines.iter().any(|l| l.contains("goodbye")),
        "no goodbye: {lines:?}"
    );
    let status = server
        .wait_exit(Duration::from_secs(15))
        .expect("server exits");
    assert!(status.success(), "{status:?}");
}

/// A paste of 20 lines at the default limits (5/s, bursts of 10) arrives whole, in order.
#[test]
fn a_pasted_block_arrives_whole() {
    let server = Chat::start(&["--no-history", "127.0.0.1:0"]);
    let mut a = Peer::joined(server.addr());
    let mut b = Peer::joined(server.addr());
    let lines: String = (0..20).map(|i| format!("pasted {i}\n")).collect();
    a.send_raw(lines.as_bytes());
    for i in 0..20 {
        b.expect_msg(&a.nick.clone(), &format!("pasted {i}"));
    }
}

/// Invalid UTF-8 becomes U+FFFD, terminal escapes are defused, and the connection carries on.
#[test]
fn invalid_utf8_and_escapes_are_replaced() {
    let server = Chat::start(&["--no-history", "127.0.0.1:0"]);
    let addr = server.addr();
    let mut a = Peer::joined(addr);
    let mut b = Peer::joined(addr);
    // (Not 0xFF: that begins a telnet command.)
    a.send_raw(b"bad \xfe\x80 bytes \xe4\xbd\n");
    b.expect_msg(&a.nick.clone(), "bad \u{FFFD}\u{FFFD} bytes \u{FFFD}");
    a.send_raw(b"\x1b[2J\x1b]0;pwned\x07clear\n");
    let got = b.expect("the escaped line", |l| l.contains("clear"));
    assert!(!got.contains('\x1b') && !got.contains('\x07'), "{got:?}");
    assert_eq!(
        body(&got),
        format!("<{}> \u{FFFD}[2J\u{FFFD}]0;pwned\u{FFFD}clear", a.nick)
    );
    a.send("still fine: é 中文");
    b.expect_msg(&a.nick.clone(), "still fine: é 中文");
}

/// --encoding gbk: the tutorials' GBK client sends Chinese, another GBK client receives it
/// GBK-encoded, and the history holds it as proper UTF-8 text.
#[test]
fn gbk_clients_and_utf8_history() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.sqlite3");
    let server = Chat::start(&[
        "--encoding",
        "gbk",
        "--history",
        db.to_str().unwrap(),
        "127.0.0.1:0",
    ]);
    let mut reader = Peer::joined(server.addr());
    let text = "你好，世界";
    let (nick, recvs) = tutorial(server.port(), "gbk", &[text]);
    let want = format!("<{nick}> {text}");
    assert!(
        recvs[0].lines().any(|l| body(l) == want),
        "the GBK sender's recv: {recvs:?}"
    );
    let (gbk, _, _) = encoding_rs::GBK.encode(&want);
    let got = reader.expect_bytes("the GBK message", |l| l.ends_with(&gbk));
    assert!(is_stamped(&String::from_utf8_lossy(&got)));

    // /history from a GBK client comes back GBK-encoded...
    reader.send("/history");
    reader.expect_bytes("the GBK history line", |l| l.ends_with(&gbk));
    // ...and the file stores UTF-8 text.
    let stored = python(
        "import sqlite3, sys\n\
         c = sqlite3.connect(sys.argv[1])\n\
         for (t,) in c.execute(\"SELECT text FROM messages WHERE kind = 'message'\"):\n\
         \x20   sys.stdout.buffer.write(t.encode('utf-8') + b'\\n')\n",
        &[db.to_str().unwrap()],
    );
    assert_eq!(String::from_utf8(stored).unwrap(), format!("{text}\n"));
}

/// `--tls` with openssl s_client as the client: a line goes in and comes back stamped.
#[test]
fn tls_with_openssl_s_client() {
    let server = Chat::start(&["--no-history", "--tls", "127.0.0.1:0"]);
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-quiet", "-connect", &server.announced]);
    let mut c = Peer::process(cmd);
    c.welcome();
    c.wait_join("lobby");
    c.send("hello over tls");
    c.expect_msg(&c.nick.clone(), "hello over tls");
}

/// --max-conns, --idle-timeout, --motd and --deny.
#[test]
fn connection_limit_idle_timeout_motd_and_deny() {
    let server = Chat::start(&[
        "--no-history",
        "--max-conns",
        "2",
        "--idle-timeout",
        "1s",
        "--motd",
        "be excellent to each other",
        "127.0.0.1:0",
    ]);
    let addr = server.addr();
    let mut a = Peer::tcp_raw(addr);
    let welcome = a.welcome();
    let next = a.next_line(WAIT).unwrap().unwrap();
    assert_eq!(next, "-!- be excellent to each other", "after {welcome:?}");
    a.wait_join("lobby");
    let mut b = Peer::joined(addr);

    let mut c = Peer::tcp_raw(addr);
    let (lines, _) = c.expect_closed(WAIT);
    assert_eq!(lines, ["-!- error: the server is full; try again later"]);

    // Idle clients are told and disconnected; the room hears why. a keeps talking to stay.
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        a.send("keepalive");
        a.expect_msg(&a.nick.clone(), "keepalive");
        if b.closed.is_some() || b.seen.iter().any(|l| l.starts_with("-!- error: ")) {
            break;
        }
        let _ = b.lines_for(Duration::from_millis(300));
    }
    assert!(
        b.seen
            .iter()
            .any(|l| l == "-!- error: disconnected: idle for too long"),
        "{:?}",
        b.seen
    );
    b.expect_closed(WAIT);
    let leave = format!("-!- {} left #lobby (idle timeout)", b.nick);
    if !a.seen.iter().any(|l| body(l) == leave) {
        a.expect("b's leave", |l| body(l) == leave);
    }

    // A slot is free again (once b's session has wound down; retried for a bounded time).
    let deadline = Instant::now() + WAIT;
    loop {
        let mut d = Peer::tcp_raw(addr);
        let first = d.next_line(WAIT).unwrap().expect("a first line");
        if first.starts_with("-!- Welcome to sockit chat, ") {
            d.expect("motd", |l| l == "-!- be excellent to each other");
            break;
        }
        assert_eq!(first, "-!- error: the server is full; try again later");
        assert!(Instant::now() < deadline, "the slot was never freed");
        thread::sleep(Duration::from_millis(50));
    }

    let denied = Chat::start(&["--no-history", "--deny", "127.0.0.0/8", "127.0.0.1:0"]);
    let mut e = Peer::tcp_raw(denied.addr());
    let (lines, _) = e.expect_closed(WAIT);
    assert!(lines.is_empty(), "a denied client got {lines:?}");
}

/// SIGTERM: every client is told, then closed, and the process exits 0 promptly.
#[test]
fn sigterm_says_goodbye_and_exits() {
    let mut server = Chat::start(&["--no-history", "127.0.0.1:0"]);
    let addr = server.addr();
    let mut peers = vec![Peer::joined(addr), Peer::joined(addr)];
    let mut nc = Peer::nc(addr);
    nc.wait_join("lobby");
    peers.push(nc);
    let nc_index = 2;
    let start = Instant::now();
    server.signal(libc::SIGTERM);
    for (i, p) in peers.iter_mut().enumerate() {
        p.expect("the shutdown notice", |l| {
            l == "-!- the server is shutting down; goodbye"
        });
        if i == nc_index {
            // nc exits once both the server and its stdin are done; it stays if the server
            // does not close.
            p.finish();
        }
        let (rest, _) = p.expect_closed(WAIT);
        assert!(
            rest.iter()
                .all(|l| l.contains(" left #lobby (server shutting down)")),
            "{rest:?}"
        );
    }
    let status = server
        .wait_exit(Duration::from_secs(4))
        .expect("the server did not exit within 4 s of SIGTERM");
    assert!(status.success(), "{status:?}");
    assert!(start.elapsed() < Duration::from_secs(4));
}

/// JSON lines: the hello sets nick and room; events are JSON objects with increasing seq.
#[test]
fn json_mode() {
    let server = Chat::start(&["--no-history", "--motd", "hi json", "127.0.0.1:0"]);
    let addr = server.addr();
    let mut plain = Peer::tcp(addr);
    plain.send("/join x");
    plain.wait_join("x");

    let mut j = Peer::tcp_raw(addr);
    j.send(r#"{"sockit":"chat","nick":"ann","room":"x"}"#);
    // Nothing plain comes first: the welcome waits for the hello (or the negotiation window).
    let welcome = loop {
        let v = next_json(&mut j);
        if v["type"] == "welcome" {
            break v;
        }
        assert_eq!(v["type"], "nick", "{v}");
    };
    assert_eq!(welcome["nick"], "ann");
    assert_eq!(welcome["proto"], "json");
    let mut events = Vec::new();
    while events.len() < 3 {
        let v = next_json(&mut j);
        if v["type"] == "join" && v["nick"] == "ann" {
            assert_eq!(v["room"], "x");
        }
        if v["type"] == "motd" {
            assert_eq!(v["text"], "hi json");
        }
        if v["type"] == "message" {
            events.push(v);
        } else if events.is_empty() && v["type"] == "join" {
            j.send(r#"{"text":"one"}"#);
            plain.send("two");
            j.send(r#"{"text":"three"}"#);
        }
    }
    let texts: Vec<&str> = events.iter().map(|v| v["text"].as_str().unwrap()).collect();
    let mut sorted = texts.clone();
    sorted.sort();
    assert_eq!(sorted, ["one", "three", "two"]);
    let seqs: Vec<u64> = events.iter().map(|v| v["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    for v in &events {
        assert_eq!(v["room"], "x");
        assert!(v["ts"].as_i64().unwrap() > 1_600_000_000_000);
    }
    plain.expect_msg("ann", "one");

    j.send(r#"{"text":"/who"}"#);
    let who = loop {
        let v = next_json(&mut j);
        if v["type"] == "members" {
            break v;
        }
    };
    assert_eq!(who["room"], "x");
    let nicks: Vec<&str> = who["nicks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert_eq!(nicks.len(), 2);
    assert!(nicks.contains(&"ann") && nicks.contains(&plain.nick.as_str()));
    j.send("not json");
    let err = loop {
        let v = next_json(&mut j);
        if v["type"] == "error" {
            break v;
        }
    };
    assert!(err["text"].as_str().unwrap().contains("not a JSON message"));
}

/// A Unix socket endpoint with `nc -U` clients.
#[test]
fn unix_socket_with_nc() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chat.sock");
    let server = Chat::start(&["--no-history", &format!("unix:{}", path.display())]);
    assert_eq!(server.announced, format!("unix:{}", path.display()));
    let nc_u = || {
        let mut cmd = Command::new("nc");
        cmd.arg("-U").arg(&path);
        let mut p = Peer::process(cmd);
        p.welcome();
        p.wait_join("lobby");
        p
    };
    let mut a = nc_u();
    let mut b = nc_u();
    a.send("hello over unix");
    b.expect_msg(&a.nick.clone(), "hello over unix");
    a.expect_msg(&a.nick.clone(), "hello over unix");
}

/// The next line of a JSON client, which must be a JSON object.
fn next_json(p: &mut Peer) -> serde_json::Value {
    let l = p.next_line(WAIT).unwrap().expect("a JSON line");
    let v: serde_json::Value =
        serde_json::from_str(&l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}"));
    assert!(v.is_object() && v["type"].is_string(), "{l}");
    v
}

/// `--write-timeout`: a client whose socket takes nothing for that long is disconnected even though
/// its queue never reached `--sendq`.
#[test]
fn write_timeout_drops_a_client_whose_socket_stays_full() {
    let server = Chat::start(&[
        "--no-history",
        "--rate",
        "0",
        "--sendq",
        "100000000",
        "--write-timeout",
        "1s",
        "127.0.0.1:0",
    ]);
    let addr = server.addr();
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect_timeout(&addr.into(), WAIT).unwrap();
    let mut stuck: TcpStream = sock.into();
    stuck.set_read_timeout(Some(WAIT)).unwrap();
    let mut first = [0u8; 512];
    let n = stuck.read(&mut first).unwrap();
    let welcome = String::from_utf8_lossy(&first[..n]).into_owned();
    let stuck_nick = welcome
        .strip_prefix("-!- Welcome to sockit chat, ")
        .and_then(|r| r.split('!').next())
        .unwrap_or_else(|| panic!("no welcome: {welcome:?}"))
        .to_string();

    let mut talker = Peer::tcp_raw(addr);
    talker.welcome();
    talker.wait_join("lobby");
    // About 9 MB: more than the kernel's socket buffers can absorb for the stuck client (their
    // autotuned maximum is 4 MiB here), far less than its --sendq.
    let pad = "y".repeat(3000);
    for i in 0..3000 {
        talker.send(&format!("{i} {pad}"));
    }
    let left = format!("-!- {stuck_nick} left #lobby (");
    let line = talker.expect("the stuck client's leave", |l| l.contains(&left));
    assert!(line.contains("could not keep up"), "{line}");
    // The talker was never harmed.
    talker.send("still here");
    talker.expect("own message", |l| l.ends_with("still here"));
}

/// A client's replies come in the order of its lines: what it types at once is answered after
/// its welcome and join, and after the effects of its earlier lines (nc with piped commands).
#[test]
fn replies_never_overtake_the_welcome_or_earlier_lines() {
    let server = Chat::start(&["--no-history", "--motd", "be nice", "127.0.0.1:0"]);
    let addr = server.addr();
    for _ in 0..5 {
        let mut a = Peer::tcp_raw(addr);
        a.send_raw(b"/nick pp3\n/who\n");
        let who = a.expect("the /who answer", |l| l.contains("in #lobby ("));
        assert!(who.contains("pp3"), "{who}");
        let welcome = a
            .seen
            .iter()
            .position(|l| l.contains("Welcome"))
            .expect("welcome");
        let answer = a
            .seen
            .iter()
            .position(|l| l.contains("in #lobby ("))
            .unwrap();
        assert!(welcome < answer, "{:?}", a.seen);

        let mut b = Peer::tcp_raw(addr);
        b.send_raw(b"/nick qq\n/join rust\n");
        b.expect("the join of #rust", |l| l.contains("joined #rust"));
        assert!(b.seen.iter().any(|l| l.contains("Welcome")), "{:?}", b.seen);
        assert!(b.seen.iter().any(|l| l.contains("be nice")), "{:?}", b.seen);
        drop((a, b));
        thread::sleep(Duration::from_millis(50));
    }
}

/// IRC habits: `/part` leaves the room and stays connected (back in the default room), `/j`,
/// `/names`, `/list`, `/query`, `/w`/`/whois`, `/topic` (kept per room, shown on join, bounded by
/// `--max-topic`, forgotten with the room) and `/away` (in `/whois`, and told to `/msg` senders),
/// all listed in `/help`; JSON clients get each answer typed.
#[test]
fn irc_habits_part_topic_whois_away() {
    let server = Chat::start(&[
        "--no-history",
        "--max-topic",
        "20",
        "--max-away",
        "30",
        "127.0.0.1:0",
    ]);
    let addr = server.addr();
    let mut ann = Peer::joined(addr);
    ann.send("/nick ann");
    ann.expect("nick", |l| body(l).ends_with("is now known as ann"));
    ann.nick = "ann".into();
    let mut bob = Peer::nc(addr);
    bob.wait_join("lobby");
    bob.send("/nick bob");
    bob.expect("nick", |l| body(l).ends_with("is now known as bob"));
    bob.nick = "bob".into();

    ann.send("/help");
    let mut help = Vec::new();
    while !help
        .last()
        .is_some_and(|l: &String| l.contains("Anything else"))
    {
        help.push(ann.expect("help", |l| l.starts_with("-!- ")));
    }
    let help = help.join("\n");
    let words: Vec<&str> = help
        .split(|c: char| c.is_whitespace() || ",;()".contains(c))
        .collect();
    for cmd in [
        "/part", "/topic", "/whois", "/away", "/j", "/names", "/list", "/query", "/w",
    ] {
        assert!(words.contains(&cmd), "/help does not list {cmd}:\n{help}");
    }

    // /j, /topic set and shown, announced to the room.
    ann.send("/j rust");
    ann.expect("join #rust", |l| body(l) == "-!- ann joined #rust");
    ann.send("/topic");
    ann.expect("no topic", |l| l == "-!- #rust has no topic");
    ann.send("/topic this text is far too long");
    ann.expect("topic too long", |l| {
        l.starts_with("-!- error: ") && l.contains("20 characters")
    });
    ann.send("/topic rust talk");
    ann.expect("topic announced", |l| {
        body(l) == "-!- ann set the topic of #rust: rust talk"
    });
    // A joiner sees it after the replay, with its join.
    bob.send("/join rust");
    bob.expect("bob joins", |l| body(l) == "-!- bob joined #rust");
    bob.expect("topic on join", |l| {
        l.starts_with("-!- topic of #rust: rust talk (set by ann")
    });
    bob.send("/topic");
    bob.expect("topic shown", |l| {
        l.starts_with("-!- topic of #rust: rust talk (set by ann")
    });
    bob.send("/names");
    bob.expect("names", |l| l == "-!- in #rust (2): ann, bob");
    bob.send("/list");
    bob.expect("list", |l| l.starts_with("-!- rooms: #rust (2)"));

    // /away: shown in /whois and told to whoever /msgs (or /querys) the away user.
    ann.send("/away this away message is longer than thirty");
    ann.expect("away too long", |l| {
        l.starts_with("-!- error: ") && l.contains("30 characters")
    });
    ann.send("/away lunch, back at 2");
    ann.expect("away set", |l| l == "-!- you are away: lunch, back at 2");
    // As IRC's RPL_AWAY, the sender is told at once, then its message is delivered.
    bob.send("/query ann are you there?");
    bob.expect("away told", |l| l == "-!- ann is away: lunch, back at 2");
    bob.expect("query delivered", |l| {
        is_stamped(l) && body(l) == "*bob -> ann* are you there?"
    });
    bob.send("/whois ann");
    let whois = bob.expect("whois", |l| l.starts_with("-!- ann is in #rust"));
    assert!(
        whois.contains("connected since")
            && whois.contains("idle")
            && whois.contains("away: lunch, back at 2"),
        "{whois}"
    );
    bob.send("/w nobody");
    bob.expect("whois of no one", |l| {
        l.starts_with("-!- error: ") && l.contains("nobody")
    });
    ann.send("/away");
    ann.expect("away cleared", |l| l == "-!- you are back");
    bob.send("/w ann");
    let whois = bob.expect("whois", |l| l.starts_with("-!- ann is in #rust"));
    assert!(!whois.contains("away"), "{whois}");

    // /part: back to the default room, still connected; there already, it says so.
    bob.send("/part");
    bob.expect("bob back in the lobby", |l| {
        body(l) == "-!- bob joined #lobby"
    });
    ann.expect("bob left #rust", |l| {
        body(l).starts_with("-!- bob left #rust")
    });
    bob.send("/part");
    bob.expect("already in the default room", |l| {
        l.starts_with("-!- you are in #lobby") && l.contains("/quit")
    });
    bob.send("still here");
    bob.expect_msg("bob", "still here");

    // The topic goes with the room: once nobody is in #rust, it is forgotten.
    ann.send("/part");
    ann.expect("ann back in the lobby", |l| {
        body(l) == "-!- ann joined #lobby"
    });
    ann.send("/join rust");
    ann.expect("ann joins #rust again", |l| {
        body(l) == "-!- ann joined #rust"
    });
    ann.send("/topic");
    ann.expect("topic forgotten", |l| l == "-!- #rust has no topic");

    // JSON: every new reply is typed, with its fields.
    let mut j = Peer::tcp_raw(addr);
    j.send(r#"{"sockit":"chat","nick":"jay","room":"rust"}"#);
    let want = |j: &mut Peer, kind: &str| loop {
        let v = next_json(j);
        if v["type"] == kind {
            break v;
        }
    };
    want(&mut j, "join");
    j.send(r#"{"text":"/topic json topic"}"#);
    let t = want(&mut j, "topic");
    assert_eq!(
        (t["room"].as_str(), t["nick"].as_str(), t["text"].as_str()),
        (Some("rust"), Some("jay"), Some("json topic")),
        "{t}"
    );
    j.send(r#"{"text":"/topic"}"#);
    let t = want(&mut j, "topic");
    assert_eq!(t["room"], "rust");
    assert_eq!(t["topic"], "json topic");
    assert_eq!(t["by"], "jay");
    assert!(t["at"].as_i64().unwrap() > 1_600_000_000_000, "{t}");
    j.send(r#"{"text":"/away brb"}"#);
    let a = want(&mut j, "away");
    assert_eq!(a["away"], "brb");
    j.send(r#"{"text":"/whois ann"}"#);
    let w = want(&mut j, "whois");
    assert_eq!(w["nick"], "ann");
    assert_eq!(w["room"], "rust");
    assert!(w["since"].as_i64().unwrap() > 1_600_000_000_000, "{w}");
    assert!(w["idle"].as_u64().is_some(), "{w}");
    assert!(w["away"].is_null(), "{w}");
    ann.send("/msg jay hi");
    ann.expect("away told", |l| l == "-!- jay is away: brb");
    j.send(r#"{"text":"/msg ann hi back"}"#);
    want(&mut j, "private");
    ann.send("/away gone");
    ann.expect("away set", |l| l.contains("you are away"));
    j.send(r#"{"text":"/msg ann again"}"#);
    let a = want(&mut j, "is_away");
    assert_eq!(
        (a["nick"].as_str(), a["away"].as_str()),
        (Some("ann"), Some("gone")),
        "{a}"
    );
    j.send(r#"{"text":"/part"}"#);
    let p = want(&mut j, "join");
    assert_eq!(
        (p["room"].as_str(), p["nick"].as_str()),
        (Some("lobby"), Some("jay"))
    );
}
