//! `sockit chat --cluster`: several nodes on loopback sharing one real redis-server (started by
//! each test on a free loopback port, with its own folder; .ci/install-deps installs it). Plain
//! TCP and nc clients on different nodes: cross-node delivery, one order per room, history that
//! is the cluster's, a Redis restart under traffic with nothing a client saw lost or repeated, a
//! killed subscription caught up from the stream, and the durability check at start.

mod chat_support;

use std::collections::HashSet;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use chat_support::{body, is_message, Chat, Peer, Server, WAIT};

/// A redis-server of the test's own, on a free loopback port, killed when dropped.
struct Redis {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    args: Vec<String>,
}

impl Redis {
    /// Redis with AOF and `appendfsync always`: what `--cluster-durability fsync` asks for.
    fn durable() -> Redis {
        Redis::start(&["--appendonly", "yes", "--appendfsync", "always"])
    }

    fn start(extra: &[&str]) -> Redis {
        let dir = tempfile::tempdir().unwrap();
        let mut redis = Redis {
            child: None,
            port: 0,
            dir,
            args: extra.iter().map(|s| s.to_string()).collect(),
        };
        // The port is found free, then given to redis-server: another test may take it in
        // between, so a start that does not come up is tried again on another port.
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            redis.port = port;
            if redis.launch() {
                return redis;
            }
        }
        panic!("redis-server did not start (is it installed? .ci/install-deps installs it)");
    }

    /// Starts redis-server on `self.port` and waits until it answers PING.
    fn launch(&mut self) -> bool {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--dir"])
            .arg(self.dir.path())
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd
            .spawn()
            .expect("redis-server (installed by .ci/install-deps)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.cli(&["PING"]).trim() == "PONG" {
                return true;
            }
            if let Some(c) = self.child.as_mut() {
                if c.try_wait().ok().flatten().is_some() {
                    return false;
                }
            }
            thread::sleep(Duration::from_millis(50));
        }
        false
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Runs redis-cli against this server; returns its output.
    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// kill -9, then a start on the same port with the same data folder (its AOF).
    fn crash_and_restart(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        assert!(self.launch(), "redis-server did not come back");
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A chat node on a free port, in the cluster on `redis`.
fn node(redis: &Redis, extra: &[&str]) -> Server {
    let url = redis.url();
    let mut args = vec!["127.0.0.1:0", "--cluster", url.as_str(), "--rate", "0"];
    args.extend_from_slice(extra);
    Chat::start(&args)
}

/// A durable Redis and two nodes on it.
fn two_nodes() -> (Redis, Server, Server) {
    let redis = Redis::durable();
    let a = node(&redis, &[]);
    let b = node(&redis, &[]);
    (redis, a, b)
}

/// The texts of the messages among `lines`, as `nick: text`.
fn messages(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .filter(|l| is_message(l))
        .map(|l| {
            let b = body(l);
            let (nick, text) = b
                .strip_prefix('<')
                .and_then(|r| r.split_once("> "))
                .unwrap_or(("?", b));
            format!("{nick}: {text}")
        })
        .collect()
}

/// Reads `peer`'s lines until `want` messages have arrived (or [`WAIT`] passes without one).
fn collect_messages(peer: &mut Peer, want: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut last = Instant::now();
    while messages(&lines).len() < want && last.elapsed() < WAIT {
        match peer.next_line(Duration::from_millis(200)) {
            Ok(Some(l)) => {
                lines.push(l);
                last = Instant::now();
            }
            Ok(None) => {}
            Err(_) => break,
        }
    }
    messages(&lines)
}

/// Asks `/who ROOM` until it lists `nicks` (presence is written beside delivery, so it settles
/// within moments).
fn wait_who(peer: &mut Peer, room: &str, nicks: &str) {
    let want = format!("in #{room} ({}): {nicks}", nicks.split(", ").count());
    let deadline = Instant::now() + WAIT;
    loop {
        peer.send(&format!("/who {room}"));
        let line = peer.expect("the member list", |l| l.contains(&format!("in #{room} (")));
        if line.contains(&want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "/who said {line:?}, not {want:?}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// A client of `server` under `nick`, in the default room.
fn member(server: &Server, nick: &str) -> Peer {
    let mut p = Peer::joined(server.addr());
    p.send(&format!("/nick {nick}"));
    p.expect(&format!("{nick}'s nick change"), |l| {
        l.contains(&format!("is now known as {nick}"))
    });
    p
}

#[test]
fn a_line_said_on_one_node_reaches_the_room_on_another() {
    let (_redis, a, b) = two_nodes();
    let mut ann = member(&a, "ann");
    let mut bob = Peer::nc(b.addr());
    bob.wait_join("lobby");
    bob.send("/nick bob");
    // Bob's nick change comes from node B through Redis, to node A's member too.
    ann.expect("bob's nick change, seen on the other node", |l| {
        l.contains("is now known as bob")
    });
    ann.send("hello from node A");
    bob.expect_msg("ann", "hello from node A");
    bob.send("and hello from node B");
    ann.expect_msg("bob", "and hello from node B");
    // Each node's own sender sees its line once, as it came back from Redis, in its place.
    let _ = ann.lines_for(Duration::from_millis(500));
    assert_eq!(
        messages(&ann.seen),
        ["ann: hello from node A", "bob: and hello from node B"],
        "node A's member saw {:?}",
        ann.seen
    );
}

#[test]
fn every_member_on_every_node_sees_one_order() {
    let redis = Redis::durable();
    let nodes = [node(&redis, &[]), node(&redis, &[])];
    let mut watchers: Vec<Peer> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| member(n, &format!("watch{i}")))
        .collect();
    // Two senders per node, all sending at once.
    let senders: Vec<_> = (0..4)
        .map(|i| {
            let addr = nodes[i % 2].addr();
            thread::spawn(move || {
                let mut p = Peer::joined(addr);
                p.send(&format!("/nick s{i}"));
                p.expect("nick", |l| l.contains(&format!("is now known as s{i}")));
                for n in 0..50 {
                    p.send(&format!("line {n} from s{i}"));
                }
                // Stays until its last line has come back (so it is not cut off by leaving).
                p.expect_msg(&format!("s{i}"), &format!("line 49 from s{i}"));
                p
            })
        })
        .collect();
    let seen: Vec<Vec<String>> = watchers
        .iter_mut()
        .map(|w| collect_messages(w, 200))
        .collect();
    for s in senders {
        let _ = s.join().unwrap();
    }
    assert_eq!(seen[0].len(), 200, "node A's watcher saw {:?}", seen[0]);
    assert_eq!(
        seen[0], seen[1],
        "the two nodes' members saw different orders"
    );
    // Each sender's lines are in the order it sent them.
    for i in 0..4 {
        let mine: Vec<&String> = seen[0]
            .iter()
            .filter(|m| m.starts_with(&format!("s{i}: ")))
            .collect();
        let want: Vec<String> = (0..50)
            .map(|n| format!("s{i}: line {n} from s{i}"))
            .collect();
        assert_eq!(mine, want.iter().collect::<Vec<_>>());
    }
}

#[test]
fn history_is_the_clusters_and_outlives_every_node() {
    let redis = Redis::durable();
    let a = node(&redis, &[]);
    let mut ann = member(&a, "ann");
    for n in 0..5 {
        ann.send(&format!("said on A {n}"));
    }
    ann.expect_msg("ann", "said on A 4");
    // A node started later replays it to its joiner (before the join notice, which `joined`
    // waits for), and /history reads it from Redis.
    let b = node(&redis, &[]);
    let mut bob = Peer::joined(b.addr());
    let said: Vec<String> = (0..5).map(|n| format!("ann: said on A {n}")).collect();
    assert_eq!(
        messages(&bob.seen),
        said,
        "node B's joiner got {:?}",
        bob.seen
    );
    drop(ann);
    drop(a);
    bob.send("/history 5");
    assert_eq!(collect_messages(&mut bob, 5), said);
    drop(bob);
    drop(b);
    // With every node gone, a new one still has it.
    let c = node(&redis, &[]);
    let cat = Peer::joined(c.addr());
    assert_eq!(
        messages(&cat.seen),
        said,
        "a new node's joiner got {:?}",
        cat.seen
    );
}

#[test]
fn a_killed_subscription_is_caught_up_from_the_stream() {
    let (redis, a, b) = two_nodes();
    let mut watcher = member(&a, "watcher");
    let mut talker = member(&b, "talker");
    watcher.expect("the talker's nick change", |l| {
        l.contains("is now known as talker")
    });
    let sender = thread::spawn(move || {
        for n in 0..300 {
            talker.send(&format!("n{n}"));
            if n % 30 == 0 {
                thread::sleep(Duration::from_millis(30));
            }
        }
        talker
    });
    // Cut every node's subscription a few times while the lines flow: what was published
    // meanwhile is read back from the room's stream.
    for _ in 0..4 {
        thread::sleep(Duration::from_millis(60));
        redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    }
    let got = collect_messages(&mut watcher, 300);
    let _talker = sender.join().unwrap();
    assert!(
        a.wait_for_log("subscription lost", WAIT),
        "node A never lost its subscription: {}",
        a.stderr()
    );
    let want: Vec<String> = (0..300).map(|n| format!("talker: n{n}")).collect();
    assert_eq!(got.len(), 300, "got {} of 300: {got:?}", got.len());
    assert_eq!(got, want, "lines missing, repeated or out of order");
}

#[test]
fn a_redis_restart_loses_nothing_a_client_saw_and_repeats_nothing() {
    let mut redis = Redis::durable();
    let a = node(&redis, &[]);
    let b = node(&redis, &[]);
    let mut watcher = member(&a, "watcher");
    let mut talker = member(&b, "talker");
    for n in 0..20 {
        talker.send(&format!("before {n}"));
    }
    watcher.expect_msg("talker", "before 19");
    redis.crash_and_restart();
    // The nodes notice, tell their rooms, and come back.
    watcher.expect_within(Duration::from_secs(10), "the degraded notice", |l| {
        l.contains("degraded")
    });
    watcher.expect_within(Duration::from_secs(15), "the back notice", |l| {
        l.contains("the chat is back")
    });
    for n in 0..20 {
        talker.send(&format!("after {n}"));
    }
    watcher.expect_msg("talker", "after 19");
    let _ = watcher.lines_for(Duration::from_millis(300));
    let seen = messages(&watcher.seen);
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(
        unique.len(),
        seen.len(),
        "something was delivered twice: {seen:?}"
    );
    // Everything the watcher saw is in the cluster's history (AOF always), in order.
    let c = node(&redis, &["--replay", "100"]);
    let late = Peer::joined(c.addr());
    let replay = messages(&late.seen);
    let watched: Vec<&String> = seen.iter().filter(|m| m.starts_with("talker: ")).collect();
    let kept: Vec<&String> = replay
        .iter()
        .filter(|m| m.starts_with("talker: "))
        .collect();
    assert_eq!(
        kept, watched,
        "history after the restart differs from what was seen"
    );
    assert_eq!(watched.len(), 40);
}

#[test]
fn a_redis_that_would_lose_seen_messages_is_refused_unless_relaxed() {
    let redis = Redis::start(&["--appendonly", "no"]);
    let url = redis.url();
    let out = Command::new(env!("CARGO_BIN_EXE_sockit"))
        .args(["chat", "127.0.0.1:0", "--cluster", &url])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started on a Redis without AOF");
    assert!(
        err.contains("appendonly no") && err.contains("--cluster-durability relaxed"),
        "unclear refusal: {err}"
    );
    // Relaxed: it runs, and says where.
    let relaxed = node(&redis, &["--cluster-durability", "relaxed"]);
    assert!(relaxed.stderr().contains("chat cluster"));
    let mut p = member(&relaxed, "ann");
    p.send("still works");
    p.expect_msg("ann", "still works");
}

#[test]
fn a_nick_is_one_clients_across_the_cluster() {
    let (_redis, a, b) = two_nodes();
    // Guests of different nodes get different nicks (one counter for the cluster).
    let guests: Vec<Peer> = (0..3)
        .flat_map(|_| [Peer::joined(a.addr()), Peer::joined(b.addr())])
        .collect();
    let nicks: HashSet<&str> = guests.iter().map(|p| p.nick.as_str()).collect();
    assert_eq!(nicks.len(), 6, "guest nicks repeat across nodes: {nicks:?}");
    let mut ann = member(&a, "ann");
    let mut other = Peer::joined(b.addr());
    for asked in ["ann", "ANN", "ａｎｎ"] {
        other.send(&format!("/nick {asked}"));
        other.expect(&format!("{asked} refused as taken"), |l| {
            l.contains("is taken")
        });
    }
    // Let go on one node, free on the other.
    ann.send("/nick ann2");
    ann.expect("ann's rename", |l| l.contains("is now known as ann2"));
    other.send("/nick ann");
    other.expect("ann, free again", |l| l.contains("is now known as ann"));
    drop(ann);
    // A client that leaves frees its nick at once.
    let mut third = Peer::joined(a.addr());
    thread::sleep(Duration::from_millis(200));
    third.send("/nick ann2");
    third.expect("ann2, freed by leaving", |l| {
        l.contains("is now known as ann2")
    });
}

#[test]
fn two_nodes_racing_for_a_nick_get_one_winner_every_time() {
    let (_redis, a, b) = two_nodes();
    let mut racers = [Peer::joined(a.addr()), Peer::joined(b.addr())];
    let started = Instant::now();
    let mut rounds = 0;
    // 1000 races, or as many as 60 s allow on a slow machine (at least 200).
    while rounds < 1000 && (started.elapsed() < Duration::from_secs(60) || rounds < 200) {
        let want = format!("race{rounds}");
        for r in racers.iter_mut() {
            r.send(&format!("/nick {want}"));
        }
        let mut winners = 0;
        for r in racers.iter_mut() {
            let mine = format!("{} is now known as {want}", r.nick);
            let taken = format!("nick \"{want}\" is taken");
            let line = r.expect(&format!("the outcome of {want}"), |l| {
                l.contains(&mine) || l.contains(&taken)
            });
            if line.contains(&mine) {
                winners += 1;
                r.nick = want.clone();
            }
        }
        assert_eq!(winners, 1, "race for {want} had {winners} winners");
        rounds += 1;
    }
    assert!(rounds >= 200, "only {rounds} races ran");
}

#[test]
fn a_killed_nodes_nicks_are_free_within_its_lease() {
    let (_redis, a, b) = two_nodes();
    let _ann = member(&a, "ann");
    let mut bob = member(&b, "bob");
    a.signal(libc::SIGKILL);
    let killed = Instant::now();
    let mut tries = 0;
    loop {
        tries += 1;
        bob.send("/nick ann");
        let line = bob.expect("an answer to /nick ann", |l| {
            l.contains("is taken") || l.contains("is now known as ann")
        });
        if line.contains("is now known as ann") {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(6),
            "ann still taken {:?} after its node was killed",
            killed.elapsed()
        );
        thread::sleep(Duration::from_millis(200));
    }
    // It was held while the lease ran (the first try came well within it).
    assert!(
        tries > 1,
        "the dead node's nick was free before its lease ended"
    );
}

#[test]
fn a_private_message_reaches_another_node_and_is_kept_like_a_room_line() {
    let (redis, a, b) = two_nodes();
    let mut ann = member(&a, "ann");
    let mut bob = member(&b, "bob");
    ann.send("/msg bob psst, from node A");
    bob.expect("ann's private message", |l| {
        l.contains("*ann -> bob*") && l.ends_with("psst, from node A")
    });
    ann.expect("ann's own copy", |l| {
        l.contains("*ann -> bob*") && l.ends_with("psst, from node A")
    });
    bob.send("/msg ann and back");
    ann.expect("bob's answer", |l| {
        l.contains("*bob -> ann*") && l.ends_with("and back")
    });
    ann.send("/msg nobody hello?");
    ann.expect("no such nick", |l| l.contains("no one called \"nobody\""));
    // Stored in Redis like a room's lines: the conversation's stream holds both.
    let log = redis.cli(&["XRANGE", "sockit:{@ann:bob}:log", "-", "+"]);
    assert!(
        log.contains("psst, from node A") && log.contains("and back"),
        "the conversation's stream: {log}"
    );
    // Nobody else saw them.
    let mut cat = member(&a, "cat");
    let seen = cat.lines_for(Duration::from_millis(300));
    assert!(!seen.iter().any(|l| l.contains("psst")), "{seen:?}");
}

#[test]
fn who_lists_the_members_on_every_node() {
    let (_redis, a, b) = two_nodes();
    let mut ann = member(&a, "ann");
    let _bob = member(&b, "bob");
    let mut cat = member(&b, "cat");
    cat.send("/join side");
    cat.expect("cat in #side", |l| l.contains("cat joined #side"));
    wait_who(&mut ann, "lobby", "ann, bob");
    ann.send("/who side");
    ann.expect("#side's members", |l| l.contains("in #side (1): cat"));
}

#[test]
fn a_killed_nodes_members_leave_everywhere_within_five_seconds() {
    let (_redis, a, b) = two_nodes();
    let _ann = member(&a, "ann");
    let mut bob = member(&b, "bob");
    wait_who(&mut bob, "lobby", "ann, bob");
    a.signal(libc::SIGKILL);
    let killed = Instant::now();
    bob.expect_within(Duration::from_secs(8), "ann's leave notice", |l| {
        l.contains("ann left #lobby")
    });
    let took = killed.elapsed();
    assert!(took < Duration::from_secs(5), "ann left after {took:?}");
    bob.send("/who");
    bob.expect("the member list without ann", |l| {
        l.contains("in #lobby (1): bob")
    });
    // Told once, however many nodes are left to notice.
    let more = bob.lines_for(Duration::from_secs(2));
    assert!(
        !more.iter().any(|l| l.contains("ann left")),
        "told twice: {more:?}"
    );
}

#[test]
fn a_killed_nodes_clients_chat_again_on_another_node() {
    let (_redis, a, b) = two_nodes();
    let mut watcher = member(&b, "watcher");
    // sockit's own client, given both nodes: it starts on A, and each reconnection tries the next.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sockit"));
    cmd.args(["chat", "join", &a.announced, &b.announced, "--nick", "ann"]);
    let mut ann = Peer::process(cmd);
    ann.expect("ann in the room", |l| l.contains("ann joined #lobby"));
    ann.send("said before the crash");
    watcher.expect_msg("ann", "said before the crash");
    ann.expect_msg("ann", "said before the crash");
    a.signal(libc::SIGKILL);
    let killed = Instant::now();
    ann.send("said after the crash");
    // Its nick is still held by the dead node's lease for a few seconds, so it may come back as a
    // guest; what it says reaches the room through node B.
    let line = watcher.expect("ann's line through node B", |l| {
        is_message(l) && l.ends_with("said after the crash")
    });
    eprintln!(
        "chatting again {:?} after the kill: {line}",
        killed.elapsed()
    );
    ann.expect("its own line, back through node B", |l| {
        is_message(l) && l.ends_with("said after the crash")
    });
    // Nothing it had seen is lost: node B's join replays it from the cluster's history.
    let replay_at = ann
        .seen
        .iter()
        .rposition(|l| l.contains("joined #lobby"))
        .expect("a second join");
    let before: Vec<String> = messages(&ann.seen[..replay_at]);
    assert!(
        before
            .iter()
            .filter(|m| m.ends_with("said before the crash"))
            .count()
            >= 2,
        "the reconnected client was not replayed what it had seen: {:?}",
        ann.seen
    );
}

#[test]
fn a_redis_that_lost_its_data_is_told_and_the_chat_goes_on() {
    let (redis, a, b) = two_nodes();
    let mut watcher = member(&a, "watcher");
    let mut talker = member(&b, "talker");
    talker.send("before the loss");
    watcher.expect_msg("talker", "before the loss");
    // As a Redis restarted without its data: the rooms' numbering starts again.
    assert_eq!(redis.cli(&["FLUSHALL"]).trim(), "OK");
    talker.send("after the loss");
    watcher.expect("the reset notice", |l| {
        l.contains("lost its data: the history of #lobby starts over")
    });
    watcher.expect_msg("talker", "after the loss");
    talker.send("and on");
    watcher.expect_msg("talker", "and on");
}

#[test]
fn a_client_that_stops_reading_on_one_node_slows_no_one_anywhere() {
    let redis = Redis::durable();
    let a = node(&redis, &["--sendq", "65536"]);
    let b = node(&redis, &[]);
    // Joins, then never reads again; its receive buffer is small so the server's queue fills.
    let stalled = {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.set_recv_buffer_size(4096).unwrap();
        s.connect(&a.addr().into()).unwrap();
        std::net::TcpStream::from(s)
    };
    let mut on_a = member(&a, "on_a");
    let mut on_b = member(&b, "on_b");
    let mut talker = member(&b, "talker");
    // 6 MB in all: more than the kernel buffers (autotuned up to 4 MiB) and --sendq together.
    let long = "x".repeat(3000);
    let sender = thread::spawn(move || {
        for n in 0..2000 {
            talker.send(&format!("{n} {long}"));
        }
        talker
    });
    let got_a = collect_messages(&mut on_a, 2000);
    let got_b = collect_messages(&mut on_b, 2000);
    let _talker = sender.join().unwrap();
    for (node, got) in [("A", &got_a), ("B", &got_b)] {
        let talked = got.iter().filter(|m| m.starts_with("talker: ")).count();
        assert_eq!(talked, 2000, "node {node}'s member got {talked} of 2000");
    }
    // The stalled client was cut off by its node (its queue passed --sendq): reading now finds
    // what was buffered for it, then the end.
    let mut stalled = stalled;
    stalled.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = vec![0u8; 65536];
    let ended = loop {
        match std::io::Read::read(&mut stalled, &mut buf) {
            Ok(0) => break "eof".to_string(),
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break "reset".into(),
            Err(e) => break format!("still open ({e})"),
        }
    };
    assert!(
        ended == "eof" || ended == "reset",
        "the stalled client was {ended}"
    );
}

/// A TCP proxy in front of Redis (python3) that, once `trigger` exists, stops passing Redis's
/// bytes to the subscriptions made before then (connections that sent PSUBSCRIBE), keeping them
/// open: a subscription that goes deaf without any error, as after some failovers.
const DEAFENING_PROXY: &str = r#"
import os, socket, sys, threading, time
upstream, trigger = int(sys.argv[1]), sys.argv[2]
ls = socket.socket(); ls.bind(("127.0.0.1", 0)); ls.listen(64)
print(ls.getsockname()[1], flush=True)
def pump(src, dst, state, upward):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            if upward and b"PSUBSCRIBE" in data.upper() and not os.path.exists(trigger):
                state["sub"] = True
            if not upward and state.get("sub") and os.path.exists(trigger):
                continue  # swallowed: the subscriber hears nothing
            dst.sendall(data)
    except OSError:
        pass
    for s in (src, dst):
        try: s.shutdown(socket.SHUT_RDWR)
        except OSError: pass
while True:
    c, _ = ls.accept()
    u = socket.create_connection(("127.0.0.1", upstream))
    state = {}
    threading.Thread(target=pump, args=(c, u, state, True), daemon=True).start()
    threading.Thread(target=pump, args=(u, c, state, False), daemon=True).start()
"#;

#[test]
fn a_deaf_subscription_is_found_by_its_probe_and_caught_up() {
    let redis = Redis::durable();
    let trigger = redis.dir.path().join("deafen");
    let mut proxy = Command::new("python3")
        .args(["-c", DEAFENING_PROXY, &redis.port.to_string()])
        .arg(&trigger)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut port = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(proxy.stdout.take().unwrap()),
        &mut port,
    )
    .unwrap();
    let via_proxy = format!("redis://127.0.0.1:{}", port.trim());
    let a = Chat::start(&["127.0.0.1:0", "--cluster", &via_proxy, "--rate", "0"]);
    let b = node(&redis, &[]);
    let mut watcher = member(&a, "watcher");
    let mut talker = member(&b, "talker");
    talker.send("heard");
    watcher.expect_msg("talker", "heard");
    std::fs::write(&trigger, b"").unwrap();
    let deafened = Instant::now();
    talker.send("said while node A was deaf");
    watcher.expect_msg("talker", "said while node A was deaf");
    eprintln!(
        "delivered {:?} after the subscription went deaf",
        deafened.elapsed()
    );
    assert!(
        a.wait_for_log("no probe back", WAIT),
        "node A did not find its subscription deaf: {}",
        a.stderr()
    );
    // Once: the catch-up and the new subscription do not repeat it.
    talker.send("and after");
    watcher.expect_msg("talker", "and after");
    let again = messages(&watcher.seen)
        .iter()
        .filter(|m| m.ends_with("said while node A was deaf"))
        .count();
    assert_eq!(again, 1);
    let _ = proxy.kill();
    let _ = proxy.wait();
}

#[test]
fn a_rooms_topic_is_the_same_on_every_node() {
    let (redis, a, b) = two_nodes();
    let mut ann = member(&a, "ann");
    let mut bob = member(&b, "bob");
    ann.send("/topic release on friday");
    bob.expect("the topic change, on node B", |l| {
        l.contains("ann") && l.contains("release on friday")
    });
    bob.send("/topic");
    bob.expect("node B's /topic", |l| {
        l.contains("topic of #lobby: release on friday (set by ann")
    });
    // A room entered later on a node that never had it: the join shows the cluster's topic.
    let c = node(&redis, &[]);
    let mut cat = Peer::joined(c.addr());
    cat.expect("the topic with the join", |l| {
        l.contains("topic of #lobby: release on friday")
    });
    // Cleared on one node, cleared everywhere.
    bob.send("/topic -delete");
    ann.expect("the topic cleared, on node A", |l| {
        l.contains("bob") && l.contains("topic")
    });
    ann.send("/topic");
    ann.expect("node A's /topic", |l| l.contains("#lobby has no topic"));
}

#[test]
fn a_redis_back_with_older_data_is_told_and_new_lines_are_not_taken_for_old() {
    // No AOF: a restart loads the last snapshot, older than what the nodes delivered.
    let mut redis = Redis::start(&["--appendonly", "no"]);
    let relaxed = ["--cluster-durability", "relaxed"];
    let a = node(&redis, &relaxed);
    let b = node(&redis, &relaxed);
    let mut watcher = member(&a, "watcher");
    let mut talker = member(&b, "talker");
    talker.send("kept");
    watcher.expect_msg("talker", "kept");
    assert_eq!(redis.cli(&["SAVE"]).trim(), "OK");
    for n in 0..5 {
        talker.send(&format!("lost {n}"));
    }
    watcher.expect_msg("talker", "lost 4");
    redis.crash_and_restart();
    watcher.expect_within(Duration::from_secs(15), "the rollback notice", |l| {
        l.contains("came back with older data")
    });
    // The numbers after the snapshot are given again, to new lines: delivered, not dropped.
    talker.send("after the restart");
    watcher.expect_msg("talker", "after the restart");
}

#[test]
fn a_node_swept_while_paused_writes_its_members_again() {
    let (_redis, a, b) = two_nodes();
    let _ann = member(&a, "ann");
    let mut bob = member(&b, "bob");
    wait_who(&mut bob, "lobby", "ann, bob");
    // Paused past its lease: node B takes it for dead and sweeps its members.
    a.signal(libc::SIGSTOP);
    bob.expect_within(Duration::from_secs(8), "ann swept", |l| {
        l.contains("ann left #lobby")
    });
    a.signal(libc::SIGCONT);
    // Back, node A finds itself swept and writes its members again.
    assert!(
        a.wait_for_log("its members are written again", WAIT),
        "node A did not notice it was swept: {}",
        a.stderr()
    );
    wait_who(&mut bob, "lobby", "ann, bob");
    bob.send("/nick ann");
    bob.expect("ann's nick, held again", |l| l.contains("is taken"));
}
