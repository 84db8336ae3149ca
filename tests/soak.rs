//! The soak's two-minute version (bench/soak.sh runs it for an hour): sockit chat with its
//! default storage, TCP and web clients, churn, stalled readers (bench/soak.py, python3's
//! sockets), and the server's RSS and descriptors sampled every 10 s: memory flat after warm-up,
//! every descriptor given back once the clients have gone. `SOAK_SECONDS` sets the length.

use std::process::Command;

mod common;
use common::Server;

#[test]
fn two_minutes_of_mixed_chat_load_leave_memory_flat_and_descriptors_given_back() {
    let seconds = std::env::var("SOAK_SECONDS").unwrap_or_else(|_| "120".into());
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("chat.sqlite3");
    let mut server = Server::start(&[
        "chat",
        "--history",
        db.to_str().expect("path"),
        "--web",
        "127.0.0.1:0",
        "127.0.0.1:0",
    ]);
    let web = server.web_page_url();
    let web = web.trim_start_matches("http://").trim_end_matches('/');
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/soak.py");
    let out = Command::new("python3")
        .arg(script)
        .args(["--tcp", &server.addr().to_string(), "--web", web])
        .args(["--pid", &server.pid().to_string()])
        .args(["--duration", &seconds, "--sample", "10"])
        .args(["--residents", "40", "--churners", "12", "--stallers", "3"])
        .output()
        .expect("python3 (.ci/install-deps)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "soak failed:\n{stdout}\n{stderr}\nserver:\n{}",
        server.stderr()
    );
    let summary: serde_json::Value = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .expect("a JSON summary");
    // The load really ran: lines went out and came back, clients came and went.
    let counts = &summary["counts"];
    assert!(counts["sent"].as_u64() > Some(1000), "{summary}");
    assert!(
        counts["received_lines"].as_u64() > Some(10_000),
        "{summary}"
    );
    assert!(counts["web_connects"].as_u64() > Some(10), "{summary}");
    assert!(server.is_running(), "{}", server.stderr());
}
