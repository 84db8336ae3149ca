//! Per-address limits, on every stream server (echo, listen -k, chat and its web page): one address
//! cannot hold every connection slot, a reconnect loop is slowed to `--conn-rate`, a chat client's
//! `--rate` survives reconnecting, loopback is exempt unless `--limit-exempt` says otherwise, and
//! IPv4-mapped addresses match allow/deny rules and are logged as IPv4.
//!
//! Clients come from several loopback source addresses (127.0.0.1, 127.0.0.2, ...): to the server
//! they are different addresses, as strangers on the network would be.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{ipv6_available, Server};
use socket2::{Domain, Socket, Type};

/// Connects to `addr` from the loopback source address `src`.
fn connect_from(src: &str, addr: SocketAddr) -> TcpStream {
    let src: IpAddr = src.parse().unwrap();
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::new(src, 0).into()).unwrap();
    socket
        .connect_timeout(&addr.into(), Duration::from_secs(5))
        .unwrap();
    socket.into()
}

/// Whether the server keeps a fresh connection open (`true`) or closes it at once (`false`, having
/// perhaps said why first). What was read comes back too.
fn kept_open(stream: &mut TcpStream) -> (bool, String) {
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_millis(800);
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => return (false, String::from_utf8_lossy(&got).into_owned()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return (false, String::from_utf8_lossy(&got).into_owned())
            }
            Err(_) => {} // timed out: still open
        }
    }
    (true, String::from_utf8_lossy(&got).into_owned())
}

/// The servers, each as `(name, args)`; the address to connect to is what each announces.
fn servers(extra: &[&str]) -> Vec<(&'static str, Vec<String>)> {
    let with = |base: &[&str]| -> Vec<String> {
        base.iter()
            .chain(extra.iter())
            .map(|s| s.to_string())
            .collect()
    };
    vec![
        ("echo", with(&["echo", "127.0.0.1:0"])),
        (
            "listen -k",
            with(&["listen", "-k", "-c", "cat", "127.0.0.1:0"]),
        ),
        ("chat", with(&["chat", "--no-history", "127.0.0.1:0"])),
    ]
}

fn start(args: &[String]) -> Server {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start(&args)
}

#[test]
fn one_address_cannot_hold_every_slot() {
    let flags = [
        "--max-conns",
        "10",
        "--max-conns-per-addr",
        "3",
        "--limit-exempt",
        "none",
    ];
    for (name, args) in servers(&flags) {
        let server = start(&args);
        let mut held: Vec<TcpStream> = (0..3)
            .map(|_| connect_from("127.0.0.1", server.addr()))
            .collect();
        for s in held.iter_mut() {
            assert!(kept_open(s).0, "{name}: one of the first 3 was refused");
        }
        let mut fourth = connect_from("127.0.0.1", server.addr());
        let (open, said) = kept_open(&mut fourth);
        assert!(
            !open,
            "{name}: a 4th connection from one address was served"
        );
        if name == "chat" {
            assert!(
                said.contains("too many connections from your address"),
                "{said:?}"
            );
        }
        // Others are still served, and so is the first address once it lets one go.
        for src in ["127.0.0.2", "127.0.0.3"] {
            let mut other = connect_from(src, server.addr());
            assert!(kept_open(&mut other).0, "{name}: {src} was refused");
        }
        drop(held.pop());
        std::thread::sleep(Duration::from_millis(200));
        let mut again = connect_from("127.0.0.1", server.addr());
        assert!(
            kept_open(&mut again).0,
            "{name}: a freed slot was not reusable"
        );
        assert!(
            server
                .stderr()
                .contains("too many connections from this address"),
            "{name}: refusal not logged:\n{}",
            server.stderr()
        );
    }
}

#[test]
fn a_reconnect_loop_is_slowed_to_the_connection_rate() {
    let flags = [
        "--conn-rate",
        "1",
        "--conn-burst",
        "5",
        "--limit-exempt",
        "none",
    ];
    for (name, args) in servers(&flags) {
        let server = start(&args);
        let mut served = 0;
        for _ in 0..30 {
            let mut s = connect_from("127.0.0.1", server.addr());
            if kept_open_briefly(&mut s) {
                served += 1;
            }
        }
        // The burst, plus at most a few refilled during the loop.
        assert!(
            (5..=8).contains(&served),
            "{name}: {served} of 30 rapid connections served"
        );
        let mut other = connect_from("127.0.0.2", server.addr());
        assert!(
            kept_open(&mut other).0,
            "{name}: another address was refused"
        );
    }
}

/// A shorter [`kept_open`] for loops: open for 150 ms counts as served.
fn kept_open_briefly(stream: &mut TcpStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_millis(150)))
        .unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return false,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return false,
            Err(_) => return true,
        }
    }
}

#[test]
fn loopback_is_exempt_by_default() {
    for (name, args) in servers(&["--conn-rate", "1", "--conn-burst", "2"]) {
        let server = start(&args);
        let mut held: Vec<TcpStream> = (0..24)
            .map(|_| connect_from("127.0.0.1", server.addr()))
            .collect();
        for (i, s) in held.iter_mut().enumerate() {
            assert!(
                kept_open_briefly(s),
                "{name}: loopback connection {i} refused"
            );
        }
    }
}

#[test]
fn exempt_list_is_settable() {
    // 127.0.0.2 exempt, the rest of loopback not.
    let server = Server::start(&[
        "echo",
        "--max-conns-per-addr",
        "1",
        "--limit-exempt",
        "127.0.0.2",
        "127.0.0.1:0",
    ]);
    let _first = connect_from("127.0.0.1", server.addr());
    let mut second = connect_from("127.0.0.1", server.addr());
    assert!(!kept_open(&mut second).0);
    let _a = connect_from("127.0.0.2", server.addr());
    let mut b = connect_from("127.0.0.2", server.addr());
    assert!(kept_open(&mut b).0, "the exempt address was limited");
}

#[test]
fn bad_limit_flags_are_usage_errors() {
    for args in [
        ["echo", "--limit-exempt", "localhost"],
        ["echo", "--conn-rate", "-1"],
        ["echo", "--conn-burst", "0"],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sockit"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
}

// ---- chat: the line rate belongs to the address ----

/// A chat client from `src`, past the welcome.
fn chat_client(src: &str, addr: SocketAddr) -> (BufReader<TcpStream>, TcpStream) {
    let s = connect_from(src, addr);
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.contains("Welcome"), "{line:?}");
    (reader, s)
}

#[test]
fn a_chat_clients_rate_survives_reconnecting() {
    let server = Server::start(&[
        "chat",
        "--no-history",
        "--rate",
        "0.5",
        "--burst",
        "3",
        "--conn-rate",
        "0",
        "--limit-exempt",
        "none",
        "127.0.0.1:0",
    ]);
    let addr = server.addr();
    let mut round = 0;
    // Sends `n` lines and waits for them all; returns whether the client was told it is being
    // slowed down (its lines then wait for the bucket: 2 s each here).
    let mut slowed = |src: &str, n: usize| -> bool {
        round += 1;
        let (mut reader, mut w) = chat_client(src, addr);
        // Tagged by round: a joiner is shown the room's earlier lines too.
        let tag = format!("round {round} from {src}");
        for i in 0..n {
            writeln!(w, "line {i} {tag}").unwrap();
        }
        let (mut delivered, mut told) = (0, false);
        let mut line = String::new();
        while delivered < n {
            line.clear();
            assert!(reader.read_line(&mut line).unwrap() > 0, "closed");
            told |= line.contains("slowing down");
            if line.contains(&tag) {
                delivered += 1;
            }
        }
        told
    };
    assert!(!slowed("127.0.0.1", 3), "the burst of 3 was slowed");
    // Reconnecting does not refill the bucket: the next line waits, and the client is told.
    assert!(slowed("127.0.0.1", 1), "the reconnect got a fresh bucket");
    // Another address has its own.
    assert!(!slowed("127.0.0.2", 3));
}

// ---- IPv4-mapped addresses on a dual-stack listener ----

#[test]
fn mapped_addresses_match_rules_and_are_logged_as_ipv4() {
    if !ipv6_available() {
        eprintln!("skipped: no IPv6 on this machine");
        return;
    }
    for rule in ["::ffff:127.0.0.1", "::ffff:0:0/96"] {
        let server = Server::start(&["echo", "-v", "--deny", rule, "[::]:0"]);
        let addr: SocketAddr = format!("127.0.0.1:{}", server.port()).parse().unwrap();
        let mut s = connect_from("127.0.0.1", addr);
        assert!(!kept_open(&mut s).0, "--deny {rule} let 127.0.0.1 in");
        let v6: SocketAddr = format!("[::1]:{}", server.port()).parse().unwrap();
        let mut ok = connect_from("::1", v6);
        assert!(kept_open(&mut ok).0, "--deny {rule} refused ::1");
        assert!(
            server.wait_for_log("127.0.0.1:", Duration::from_secs(5)),
            "{}",
            server.stderr()
        );
        assert!(
            !server.stderr().contains("::ffff:"),
            "a mapped address in the log:\n{}",
            server.stderr()
        );
    }
}

#[test]
fn the_chat_port_and_its_web_page_share_the_per_address_count() {
    let server = Server::start(&[
        "chat",
        "--no-history",
        "--web",
        "127.0.0.1:0",
        "--max-conns-per-addr",
        "3",
        "--limit-exempt",
        "none",
        "127.0.0.1:0",
    ]);
    assert!(server.wait_for_log("web page at", Duration::from_secs(10)));
    let web: SocketAddr = server
        .stderr()
        .lines()
        .filter_map(|l| l.split("web page at http://").nth(1))
        .map(|rest| rest.trim_end_matches('/').trim().parse().unwrap())
        .next()
        .unwrap_or_else(|| panic!("no web address announced:\n{}", server.stderr()));
    let mut held: Vec<TcpStream> = (0..3).map(|_| connect_from("127.0.0.1", web)).collect();
    for s in held.iter_mut() {
        assert!(kept_open(s).0, "a web connection was refused");
    }
    let mut chat = connect_from("127.0.0.1", server.addr());
    let (open, said) = kept_open(&mut chat);
    assert!(!open, "a 4th connection, on the chat port, was served");
    assert!(said.contains("too many connections"), "{said:?}");
    let mut page = connect_from("127.0.0.1", web);
    page.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let (open, said) = kept_open(&mut page);
    assert!(!open && said.starts_with("HTTP/1.1 429"), "{said:?}");
    let mut other = connect_from("127.0.0.2", server.addr());
    assert!(kept_open(&mut other).0);
}

/// Sends `line` and reads until a line containing `want` (5 s), returning it.
fn ask(reader: &mut BufReader<TcpStream>, w: &mut TcpStream, line: &str, want: &str) -> String {
    writeln!(w, "{line}").unwrap();
    let mut got = String::new();
    loop {
        got.clear();
        assert!(
            reader.read_line(&mut got).unwrap() > 0,
            "closed waiting for {want:?}"
        );
        if got.contains(want) {
            return got;
        }
    }
}

#[test]
fn an_address_may_make_only_so_many_rooms() {
    let server = Server::start(&[
        "chat",
        "--no-history",
        "--max-rooms-per-addr",
        "3",
        "--rate",
        "0",
        "--limit-exempt",
        "none",
        "127.0.0.1:0",
    ]);
    let (mut r, mut w) = chat_client("127.0.0.1", server.addr());
    // Without history on disk a room with messages outlives its members: each stays made.
    for room in ["r1", "r2", "r3"] {
        ask(
            &mut r,
            &mut w,
            &format!("/join {room}"),
            &format!("joined #{room}"),
        );
        ask(
            &mut r,
            &mut w,
            &format!("said in {room}"),
            &format!("said in {room}"),
        );
    }
    let refused = ask(&mut r, &mut w, "/join r4", "rooms");
    assert!(refused.contains("as many as it may"), "{refused:?}");
    // Rooms that exist, and the default room, may still be joined.
    ask(&mut r, &mut w, "/join r1", "joined #r1");
    ask(&mut r, &mut w, "/join lobby", "joined #lobby");
    // Another address makes its own.
    let (mut r2, mut w2) = chat_client("127.0.0.2", server.addr());
    ask(&mut r2, &mut w2, "/join r4", "joined #r4");
}

#[test]
fn a_rooms_reply_is_bounded_and_searchable() {
    // Loopback is exempt from the room limit by default: one address makes all 12 rooms.
    let server = Server::start(&[
        "chat",
        "--no-history",
        "--rooms-listed",
        "5",
        "--rate",
        "0",
        "127.0.0.1:0",
    ]);
    let mut members = Vec::new();
    for i in 0..12 {
        let (mut r, mut w) = chat_client("127.0.0.1", server.addr());
        ask(&mut r, &mut w, &format!("/join room{i:02}"), "joined #room");
        members.push((r, w));
    }
    let (mut r, mut w) = chat_client("127.0.0.1", server.addr());
    let listed = ask(&mut r, &mut w, "/rooms", "rooms:");
    assert_eq!(listed.matches("#room").count(), 4, "{listed}");
    assert!(listed.contains("#lobby"), "the busiest first: {listed}");
    assert!(listed.contains("and 8 more"), "{listed}");
    let found = ask(&mut r, &mut w, "/rooms ROOM07", "rooms:");
    assert!(
        found.contains("#room07 (1)") && !found.contains("more"),
        "{found}"
    );
    let found = ask(&mut r, &mut w, "/rooms #room1", "rooms:");
    assert_eq!(found.matches("#room1").count(), 2, "{found}");
}

#[test]
fn replayed_messages_are_bounded_in_bytes() {
    let server = Server::start(&[
        "chat",
        "--no-history",
        "--replay-bytes",
        "40000",
        "--rate",
        "0",
        "127.0.0.1:0",
    ]);
    let (mut r, mut w) = chat_client("127.0.0.1", server.addr());
    ask(&mut r, &mut w, "/join big", "joined #big");
    for i in 0..20 {
        ask(
            &mut r,
            &mut w,
            &format!("long{i:02} {}", "y".repeat(4000)),
            &format!("long{i:02}"),
        );
    }
    ask(&mut r, &mut w, "/join small", "joined #small");
    for i in 0..20 {
        ask(
            &mut r,
            &mut w,
            &format!("short{i:02}"),
            &format!("short{i:02}"),
        );
    }
    let replayed = |room: &str, tag: &str| -> usize {
        let (mut r, mut w) = chat_client("127.0.0.1", server.addr());
        writeln!(w, "/join {room}").unwrap();
        // The replay arrives in one piece with the joiner's own join notice, which ends it.
        let mut n = 0;
        let mut line = String::new();
        loop {
            line.clear();
            assert!(r.read_line(&mut line).unwrap() > 0);
            if line.contains(tag) {
                n += 1;
            }
            if line.contains(&format!("joined #{room}")) {
                return n;
            }
        }
    };
    let long = replayed("big", "long");
    assert!((1..=3).contains(&long), "{long} long lines replayed");
    assert_eq!(replayed("small", "short"), 20, "short lines all replayed");
}

#[test]
fn joining_back_and_forth_does_not_buy_the_replay_again_and_again() {
    let server = Server::start(&[
        "chat",
        "--no-history",
        "--rate",
        "0",
        "--reply-burst",
        "16384",
        "--reply-rate",
        "4096",
        "127.0.0.1:0",
    ]);
    let (mut r, mut w) = chat_client("127.0.0.1", server.addr());
    ask(&mut r, &mut w, "/join big", "joined #big");
    for i in 0..10 {
        ask(
            &mut r,
            &mut w,
            &format!("big{i:02} {}", "q".repeat(1000)),
            &format!("big{i:02}"),
        );
    }
    let (mut r, mut w) = chat_client("127.0.0.2", server.addr());
    // Each join waits for its own notice (a join overtaken by the next is dropped unreplayed).
    let start = Instant::now();
    let mut replayed = 0usize;
    let mut line = String::new();
    let mut joins = 0;
    while start.elapsed() < Duration::from_secs(3) {
        writeln!(w, "/join big").unwrap();
        loop {
            line.clear();
            assert!(r.read_line(&mut line).unwrap() > 0, "closed");
            if line.contains("qqqq") {
                replayed += line.len();
            }
            if line.contains("joined #big") {
                break;
            }
        }
        ask(&mut r, &mut w, "/join lobby", "joined #lobby");
        joins += 1;
    }
    // One replay (about 10 KB) is within the burst; after that 4 KB a second buys less than one
    // replay per two seconds. Without the charge, a join is a round trip: hundreds in 3 s.
    let elapsed = start.elapsed().as_secs_f64();
    let bound = 16384 + (4096.0 * elapsed) as usize + 2048;
    assert!(
        replayed <= bound,
        "{replayed} bytes of replay in {joins} joins, {elapsed:.1} s (bound {bound})"
    );
    assert!(replayed >= 10_000, "not even one replay: {replayed}");
}
