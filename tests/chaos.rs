//! kill -9 chaos: the chat server is killed and restarted on the same history file, under
//! traffic, again and again. After each kill every message a client saw is in the history (the
//! sequencer commits before it delivers), the file passes SQLite's `PRAGMA integrity_check`
//! (read by python3's sqlite3, a reader that is not sockit), and after each restart numbering
//! continues above every number handed out before. `CHAOS_ROUNDS` sets the rounds (default 20).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

mod common;
use common::Server;

const WAIT: Duration = Duration::from_secs(15);

/// A JSON client that records every message it is sent, by number, until its connection ends.
/// Returns once the client is in the room (its own join event has arrived): a message sequenced
/// before the join is not delivered to it live, and a sender flat out can send all its lines
/// within the time a loaded machine takes to get to the join (a flake once: "only 191 seen", the
/// replay of what came before).
fn watcher(addr: std::net::SocketAddr, nick: &str) -> mpsc::Receiver<(u64, String)> {
    let mut conn = TcpStream::connect(addr).expect("connect watcher");
    let hello = format!("{{\"sockit\":\"chat\",\"proto\":\"json\",\"nick\":\"{nick}\"}}\n");
    conn.write_all(hello.as_bytes()).expect("hello");
    let (tx, rx) = mpsc::channel();
    let (joined_tx, joined) = mpsc::channel();
    let me = nick.to_string();
    thread::spawn(move || {
        let reader = BufReader::new(conn);
        for line in reader.lines() {
            let Ok(line) = line else { break };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if v["type"] == "join" && v["nick"] == me {
                let _ = joined_tx.send(());
            }
            if v["type"] == "message" {
                let seq = v["seq"].as_u64().expect("seq");
                let text = v["text"].as_str().unwrap_or_default().to_string();
                if tx.send((seq, text)).is_err() {
                    break;
                }
            }
        }
    });
    joined
        .recv_timeout(WAIT)
        .expect("the watcher joins within the wait");
    rx
}

/// What python3's sqlite3 reads from the history file: the integrity check's answer and every
/// stored message by number.
fn read_history(db: &std::path::Path) -> (String, BTreeMap<u64, String>) {
    let script = r#"
import sqlite3, sys, json
c = sqlite3.connect(sys.argv[1])
print(c.execute("PRAGMA integrity_check").fetchone()[0])
for seq, text in c.execute("SELECT seq, CAST(text AS TEXT) FROM messages"):
    print(json.dumps([seq, text]))
"#;
    let out = Command::new("python3")
        .args(["-c", script, db.to_str().expect("path")])
        .output()
        .expect("python3 (.ci/install-deps)");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let mut lines = text.lines();
    let check = lines.next().unwrap_or_default().to_string();
    let rows = lines
        .map(|l| {
            let (seq, text): (u64, String) = serde_json::from_str(l).expect("row");
            (seq, text)
        })
        .collect();
    (check, rows)
}

#[test]
fn kill_9_under_traffic_loses_nothing_seen_and_never_reuses_a_number() {
    let rounds: usize = std::env::var("CHAOS_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("chat.sqlite3");
    let mut highest_seen = 0u64;
    let mut seen_total = 0usize;
    for round in 0..rounds {
        let server = Server::start(&[
            "chat",
            "--history",
            db.to_str().expect("path"),
            "--rate",
            "0",
            "127.0.0.1:0",
        ]);
        let addr = server.addr();
        let seen = watcher(addr, &format!("watch{round}"));
        // A sender flat out (bounded in count), from its own thread, until the kill cuts it.
        let sender = thread::spawn(move || {
            let Ok(mut conn) = TcpStream::connect(addr) else {
                return;
            };
            for i in 0..100_000 {
                if conn
                    .write_all(format!("round {round} line {i}\n").as_bytes())
                    .is_err()
                {
                    return;
                }
            }
        });
        // Let some traffic be delivered, then kill the server mid-stream.
        // (The join's replay of earlier rounds is not this round's traffic.)
        let mine = format!("round {round} ");
        let mut got: Vec<(u64, String)> = Vec::new();
        let deadline = Instant::now() + WAIT;
        while got.len() < 200 {
            assert!(
                Instant::now() < deadline,
                "round {round}: only {} seen",
                got.len()
            );
            if let Ok(m) = seen.recv_timeout(Duration::from_millis(100)) {
                if m.1.starts_with(&mine) {
                    got.push(m);
                }
            }
        }
        server.signal(libc::SIGKILL);
        drop(server);
        // What was delivered before the kill.
        while let Ok(m) = seen.recv_timeout(Duration::from_millis(500)) {
            if m.1.starts_with(&mine) {
                got.push(m);
            }
        }
        let _ = sender.join();

        let (check, stored) = read_history(&db);
        assert_eq!(check, "ok", "round {round}: integrity check");
        for (seq, text) in &got {
            assert_eq!(
                stored.get(seq),
                Some(text),
                "round {round}: message {seq} ({text:?}) was seen but is not in history"
            );
        }
        // Numbering continues: everything seen this round is above everything seen before.
        let lowest = got.iter().map(|(s, _)| *s).min().expect("some seen");
        assert!(
            lowest > highest_seen,
            "round {round}: number {lowest} handed out again (had reached {highest_seen})"
        );
        let numbers: Vec<u64> = got.iter().map(|(s, _)| *s).collect();
        assert!(
            numbers.windows(2).all(|w| w[0] < w[1]),
            "round {round}: out of order"
        );
        highest_seen = numbers.iter().copied().max().unwrap_or(highest_seen);
        seen_total += got.len();
    }
    assert!(seen_total >= rounds * 200);
}
