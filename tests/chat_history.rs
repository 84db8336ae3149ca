//! `sockit chat`'s history against real clients over loopback: retention by rows per room and by
//! age, compact storage of what clients sent, a disk that fills up (a real tmpfs, root only), the
//! per-client budget for `/history` replies, and numbering that never repeats across restarts.

mod chat_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use chat_support::{body, python, Chat, Peer, Server, WAIT};

/// Runs one SQL query on the history file (with python3's sqlite3, a reader beside the server)
/// and returns its rows, one line each, columns separated by `|`.
fn query(db: &Path, sql: &str) -> Vec<String> {
    let out = python(
        "import sqlite3, sys\n\
         c = sqlite3.connect(sys.argv[1], timeout=10)\n\
         for row in c.execute(sys.argv[2]):\n\
         \x20   print('|'.join(str(v) for v in row))\n",
        &[db.to_str().unwrap(), sql],
    );
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Polls `query` until `done` accepts its rows (up to `limit`); returns the last rows.
fn wait_rows(
    db: &Path,
    sql: &str,
    limit: Duration,
    done: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + limit;
    loop {
        let rows = query(db, sql);
        if done(&rows) || Instant::now() >= deadline {
            return rows;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

fn stop(mut server: Server) {
    server.signal(libc::SIGTERM);
    assert!(
        server.wait_exit(WAIT).is_some_and(|s| s.success()),
        "the server did not stop cleanly; stderr:\n{}",
        server.stderr()
    );
}

/// `--history-max-rows`: each room keeps about its newest N messages on disk (pruned in batches,
/// so at most a tenth more for a moment); a quiet room next to it keeps all of its own.
#[test]
fn each_room_keeps_at_most_max_rows() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.sqlite3");
    let server = Chat::start(&[
        "--history",
        db.to_str().unwrap(),
        "--history-max-rows",
        "20",
        "--rate",
        "0",
        "127.0.0.1:0",
    ]);
    let mut a = Peer::joined(server.addr());
    let nick = a.nick.clone();
    for i in 0..100 {
        a.send(&format!("m{i}"));
    }
    a.expect_msg(&nick, "m99");
    a.send("/join quiet");
    a.wait_join("quiet");
    for i in 0..3 {
        a.send(&format!("q{i}"));
    }
    a.expect_msg(&nick, "q2");

    let sql =
        "SELECT room, COUNT(*), MIN(text), MAX(seq) FROM messages GROUP BY room ORDER BY room";
    let rows = wait_rows(&db, sql, WAIT, |rows| {
        rows.first()
            .and_then(|r| r.split('|').nth(1))
            .and_then(|n| n.parse::<usize>().ok())
            .is_some_and(|n| n <= 22)
    });
    assert_eq!(rows.len(), 2, "{rows:?}");
    let lobby: Vec<&str> = rows[0].split('|').collect();
    assert_eq!(lobby[0], "lobby");
    let kept: usize = lobby[1].parse().unwrap();
    assert!(
        (20..=22).contains(&kept),
        "lobby keeps {kept} rows: {rows:?}"
    );
    // What is kept is the newest: m99 is there, m0 long gone.
    let texts = query(
        &db,
        "SELECT text FROM messages WHERE room = 'lobby' ORDER BY seq",
    );
    assert_eq!(texts.last().map(String::as_str), Some("m99"), "{texts:?}");
    assert!(!texts.iter().any(|t| t == "m0"), "{texts:?}");
    assert!(rows[1].starts_with("quiet|3|"), "{rows:?}");

    // /history shows what is kept, newest last.
    a.send("/join lobby");
    a.wait_join("lobby");
    a.send("/history 1000");
    let header = a.expect("history header", |l| l.starts_with("-!- last "));
    let shown: usize = header
        .trim_start_matches("-!- last ")
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!((20..=22).contains(&shown), "{header}");
    a.expect_msg(&nick, "m99");
}

/// `--history-max-age`: messages older than that are deleted from disk and from the memory joiners
/// are replayed from, even while the server has nothing else to do.
#[test]
fn messages_older_than_max_age_are_deleted_even_when_idle() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.sqlite3");
    let server = Chat::start(&[
        "--history",
        db.to_str().unwrap(),
        "--history-max-age",
        "2s",
        "127.0.0.1:0",
    ]);
    let mut a = Peer::joined(server.addr());
    a.send("soon forgotten");
    a.expect_msg(&a.nick.clone(), "soon forgotten");
    assert_eq!(query(&db, "SELECT COUNT(*) FROM messages"), ["1"]);
    // No one says anything more: the server deletes it on its own.
    let rows = wait_rows(&db, "SELECT COUNT(*) FROM messages", WAIT, |r| r == ["0"]);
    assert_eq!(rows, ["0"], "the old message is still on disk");
    // The room is still loaded (a is in it); a joiner is not replayed the expired message.
    let mut b = Peer::tcp(server.addr());
    b.wait_join("lobby");
    assert!(
        !b.seen.iter().any(|l| l.contains("soon forgotten")),
        "{:?}",
        b.seen
    );
    b.send("/history");
    b.expect("empty history", |l| l == "-!- last 0 messages of #lobby:");
}

/// A message of 1000 bytes that are not UTF-8 is stored in about 1000 bytes, not as 3000 bytes of
/// U+FFFD; what the room sees, live and from history after a restart, is unchanged.
#[test]
fn invalid_utf8_is_stored_compactly_and_shown_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.sqlite3");
    let args = ["--history", db.to_str().unwrap(), "127.0.0.1:0"];
    let server = Chat::start(&args);
    let mut a = Peer::joined(server.addr());
    let mut b = Peer::joined(server.addr());
    // 0xFE, not 0xFF: that begins a telnet command.
    let mut line = vec![0xfeu8; 1000];
    line.push(b'\n');
    a.send_raw(&line);
    let shown = "\u{FFFD}".repeat(1000);
    b.expect_msg(&a.nick.clone(), &shown);
    // A control character (replaced too) and text around it.
    a.send_raw(b"bell\x07 and \xc3\xa9\xfe\n");
    b.expect_msg(&a.nick.clone(), "bell\u{FFFD} and \u{e9}\u{FFFD}");

    let sizes = query(
        &db,
        "SELECT length(CAST(text AS BLOB)) FROM messages WHERE kind = 'message' ORDER BY seq",
    );
    let first: usize = sizes[0].parse().unwrap();
    assert!(
        first <= 1100,
        "1000 bad bytes take {first} bytes on disk (3x is 3000)"
    );
    drop((a, b));
    stop(server);

    let server = Chat::start(&args);
    let mut c = Peer::tcp(server.addr());
    let replayed = c.expect("the replayed message", |l| body(l).ends_with(&shown));
    assert!(body(&replayed).starts_with('<'), "{replayed}");
    c.expect("the second message replayed", |l| {
        body(l).ends_with("> bell\u{FFFD} and \u{e9}\u{FFFD}")
    });
    c.wait_join("lobby");
    c.send("/history 2");
    c.expect("history header", |l| l == "-!- last 2 messages of #lobby:");
    c.expect("history 1", |l| body(l).ends_with(&shown));
}

/// Sequence numbers go on after a restart, past every one clients were shown (joins and leaves
/// are not stored, yet a client may have seen their numbers).
#[test]
fn numbering_never_repeats_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.sqlite3");
    let args = ["--history", db.to_str().unwrap(), "127.0.0.1:0"];
    let json_join_seq = |server: &Server| {
        let mut j = Peer::tcp_raw(server.addr());
        j.send(r#"{"sockit":"chat","nick":"ann"}"#);
        let line = j.expect("ann's join event", |l| {
            l.contains(r#""type":"join""#) && l.contains(r#""nick":"ann""#)
        });
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        v["seq"].as_u64().unwrap()
    };
    let server = Chat::start(&args);
    let mut a = Peer::joined(server.addr());
    a.send("one stored message");
    a.expect_msg(&a.nick.clone(), "one stored message");
    let first = json_join_seq(&server);
    drop(a);
    stop(server);

    let server = Chat::start(&args);
    let second = json_join_seq(&server);
    assert!(
        second > first,
        "a join after the restart got seq {second}, already shown as {first}"
    );
}

/// `sockit chat --help` lists the history limits with their defaults.
#[test]
fn help_lists_the_history_limits() {
    let out = Command::new(env!("CARGO_BIN_EXE_sockit"))
        .args(["chat", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for want in [
        "--history-max-age",
        "30d",
        "--history-max-rows",
        "10000",
        "--reply-rate",
        "--reply-burst",
    ] {
        assert!(help.contains(want), "no {want} in:\n{help}");
    }
    let bad = Command::new(env!("CARGO_BIN_EXE_sockit"))
        .args(["chat", "--reply-rate", "10", "--no-history"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2), "a reply rate below 1 KiB/s");
}

/// Counts the bytes a raw TCP client receives, on a thread, and when it last got any.
struct Counter {
    bytes: Arc<AtomicUsize>,
    last: Arc<Mutex<Instant>>,
    text: Arc<Mutex<Vec<u8>>>,
    closed: Arc<AtomicBool>,
}

impl Counter {
    fn start(stream: TcpStream) -> Counter {
        let c = Counter {
            bytes: Arc::new(AtomicUsize::new(0)),
            last: Arc::new(Mutex::new(Instant::now())),
            text: Arc::new(Mutex::new(Vec::new())),
            closed: Arc::new(AtomicBool::new(false)),
        };
        let (bytes, last, text, closed) = (
            c.bytes.clone(),
            c.last.clone(),
            c.text.clone(),
            c.closed.clone(),
        );
        let mut stream = stream;
        thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        bytes.fetch_add(n, Ordering::SeqCst);
                        *last.lock().unwrap() = Instant::now();
                        let mut t = text.lock().unwrap();
                        // Keep the tail only: enough to find the last replies.
                        t.extend_from_slice(&buf[..n]);
                        if t.len() > 1 << 20 {
                            let cut = t.len() - (1 << 19);
                            t.drain(..cut);
                        }
                    }
                }
            }
            closed.store(true, Ordering::SeqCst);
        });
        c
    }

    /// Waits until nothing has arrived for `quiet` (at most `limit`).
    fn wait_quiet(&self, quiet: Duration, limit: Duration) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.last.lock().unwrap().elapsed() >= quiet {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// `/history` replies are charged to the asker's byte budget (`--reply-burst`, `--reply-rate`): a
/// client asking for `/history 1000` over and over in a room of long messages receives at most
/// burst + rate x time bytes, and is not disconnected; another client is served as usual.
#[test]
fn history_replies_never_exceed_the_askers_budget() {
    const BURST: usize = 65536;
    const RATE: usize = 16384;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.sqlite3");
    let server = Chat::start(&[
        "--history",
        db.to_str().unwrap(),
        "--rate",
        "0",
        "--reply-burst",
        &BURST.to_string(),
        "--reply-rate",
        &RATE.to_string(),
        "127.0.0.1:0",
    ]);
    let addr = server.addr();
    // 300 messages of 3000 bytes: /history 1000 would be 900 kB.
    let mut filler = Peer::joined(addr);
    let long = "x".repeat(3000);
    for i in 0..300 {
        filler.send(&format!("{i} {long}"));
    }
    filler.expect_msg(&filler.nick.clone(), &format!("299 {long}"));
    drop(filler);

    // The asker is a raw socket whose every byte is counted, from after its join.
    let stream = TcpStream::connect_timeout(&addr, WAIT).unwrap();
    let counter = Counter::start(stream.try_clone().unwrap());
    let deadline = Instant::now() + WAIT;
    while !String::from_utf8_lossy(&counter.text.lock().unwrap()).contains(" joined #lobby") {
        assert!(Instant::now() < deadline, "the asker never joined");
        thread::sleep(Duration::from_millis(20));
    }
    counter.wait_quiet(Duration::from_millis(200), WAIT);
    let before = counter.bytes.load(Ordering::SeqCst);
    let start = Instant::now();
    let mut w = stream;
    let requests = 60;
    for _ in 0..requests {
        w.write_all(b"/history 1000\n").unwrap();
        thread::sleep(Duration::from_millis(40));
    }
    // Meanwhile another client gets normal service.
    let mut other = Peer::joined(addr);
    other.send("/history 3");
    other.expect("other's history", |l| l == "-!- last 3 messages of #lobby:");
    other.send("still served");
    other.expect_msg(&other.nick.clone(), "still served");

    counter.wait_quiet(Duration::from_millis(1500), Duration::from_secs(30));
    let got = counter.bytes.load(Ordering::SeqCst) - before;
    let elapsed = counter
        .last
        .lock()
        .unwrap()
        .saturating_duration_since(start)
        .as_secs_f64();
    // Other's join and message reached the asker too: a few hundred bytes not charged.
    let bound = BURST as f64 + RATE as f64 * elapsed + 1024.0;
    assert!(
        (got as f64) <= bound,
        "the asker got {got} bytes in {elapsed:.1} s; the budget allows {bound:.0}"
    );
    assert!(got >= BURST / 2, "the asker got only {got} bytes");
    assert!(
        !counter.closed.load(Ordering::SeqCst),
        "the asker was disconnected"
    );
    // The last reply says why it was short.
    let tail = String::from_utf8_lossy(&counter.text.lock().unwrap()).into_owned();
    assert!(
        tail.contains("reply budget"),
        "{}",
        &tail[tail.len().saturating_sub(2000)..]
    );
}

/// A tmpfs mounted by the test, unmounted when dropped (also when the test fails).
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(Tmpfs {
            dir: dir.to_path_buf(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Something still holds it open (a server being killed): detach it now, freed later.
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// Fills the filesystem holding `path` with one file, until a write fails for want of space.
fn fill(path: &Path) {
    let mut f = std::fs::File::create(path).unwrap();
    for chunk in [64 * 1024, 4096, 512] {
        let buf = vec![0u8; chunk];
        // Bounded: the filesystem is a few MiB.
        for _ in 0..(16 << 20) / chunk {
            match f.write_all(&buf) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling {}: {e}", path.display()),
            }
        }
    }
    let _ = f.sync_all();
}

/// The history's disk fills up: messages still reach the room (unsaved), the room and the log are
/// told once, not per message; when space returns, saving resumes by itself (the room is told),
/// what was said meanwhile is saved too, and it is all there after a restart.
#[test]
fn a_full_disk_keeps_the_chat_going_and_saving_resumes() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: mounting a small tmpfs needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    let tmpfs = match Tmpfs::mount(&mnt, "2m") {
        Ok(t) => t,
        Err(e) => {
            eprintln!("skipped: cannot mount a tmpfs: {e}");
            return;
        }
    };
    let db = mnt.join("chat.sqlite3");
    let args = [
        "--history",
        db.to_str().unwrap(),
        "--rate",
        "0",
        "127.0.0.1:0",
    ];
    let server = Chat::start(&args);
    let mut a = Peer::joined(server.addr());
    let mut b = Peer::joined(server.addr());
    let (an, bn) = (a.nick.clone(), b.nick.clone());
    a.send("saved before");
    b.expect_msg(&an, "saved before");

    let filler = mnt.join("filler");
    fill(&filler);
    for i in 0..5 {
        a.send(&format!("while full {i}"));
        b.expect_msg(&an, &format!("while full {i}"));
    }
    b.send("a bystander too");
    a.expect_msg(&bn, "a bystander too");
    b.expect_msg(&bn, "a bystander too");
    b.lines_for(Duration::from_millis(500));
    let notices = b
        .seen
        .iter()
        .filter(|l| l.contains("not being saved"))
        .count();
    assert_eq!(notices, 1, "{:?}", b.seen);
    assert!(
        !a.seen.iter().any(|l| l.contains("was not sent")),
        "{:?}",
        a.seen
    );
    let logged = server
        .stderr()
        .lines()
        .filter(|l| l.contains("history is not being saved"))
        .count();
    assert_eq!(logged, 1, "log:\n{}", server.stderr());

    std::fs::remove_file(&filler).unwrap();
    b.expect("the notice that history is saved again", |l| {
        l.contains("saved again")
    });
    assert!(
        server.wait_for_log("saved again", WAIT),
        "{}",
        server.stderr()
    );
    a.send("after recovery");
    b.expect_msg(&an, "after recovery");
    drop((a, b));
    stop(server);

    let server = Chat::start(&args);
    let mut c = Peer::joined(server.addr());
    c.send("/history 50");
    c.expect("history header", |l| l.starts_with("-!- last "));
    let mut texts = Vec::new();
    loop {
        let l = c.expect("history lines", |_| true);
        if l == "-!- end of history" {
            break;
        }
        texts.push(body(&l).to_string());
    }
    let want: Vec<String> = std::iter::once(format!("<{an}> saved before"))
        .chain((0..5).map(|i| format!("<{an}> while full {i}")))
        .chain([
            format!("<{bn}> a bystander too"),
            format!("<{an}> after recovery"),
        ])
        .collect();
    assert_eq!(texts, want);
    drop(c);
    drop(server);
    drop(tmpfs);
}

/// `/history` reads through one connection opened at start: a server whose file descriptors are
/// all taken by clients (so it can open no file) still answers `/history` from disk.
#[test]
fn history_is_read_when_the_server_cannot_open_files() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.sqlite3");
    let mut cmd = Command::new("prlimit");
    cmd.args(["--nofile=64:64", env!("CARGO_BIN_EXE_sockit"), "chat"])
        .args([
            "--history",
            db.to_str().unwrap(),
            "--rate",
            "0",
            "127.0.0.1:0",
        ]);
    let server = Server::start_command(cmd);
    let mut a = Peer::joined(server.addr());
    let nick = a.nick.clone();
    // More than the 20 kept in memory, so /history 30 reads the file.
    for i in 0..30 {
        a.send(&format!("m{i}"));
    }
    a.expect_msg(&nick, "m29");
    // The server keeps its connections within what the limit allowed at start; lower the limit
    // under it (as another part of the process holding descriptors would) so that it can open
    // nothing more.
    let lowered = Command::new("prlimit")
        .args(["--pid", &server.pid().to_string(), "--nofile=24:24"])
        .status()
        .expect("prlimit");
    assert!(lowered.success());
    // Clients take every descriptor left (the rest wait in the listen backlog).
    let crowd: Vec<TcpStream> = (0..100)
        .filter_map(|_| TcpStream::connect_timeout(&server.addr(), WAIT).ok())
        .collect();
    assert!(
        server.wait_for_log("accept", WAIT),
        "the server never ran out of descriptors; stderr:\n{}",
        server.stderr()
    );
    a.send("/history 30");
    let header = a.expect("the history reply", |l| {
        l.starts_with("-!- last ") || l.contains("not available")
    });
    assert_eq!(header, "-!- last 30 messages of #lobby:", "{:?}", a.seen);
    a.expect_msg(&nick, "m0");
    drop(crowd);
}
