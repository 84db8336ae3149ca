//! `sockit chat join` against a real `sockit chat` server: the plain mode (`--send`, lines from a
//! pipe) with nc as the other member, and the terminal client driven in tmux with a python member.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_sockit");

/// A `sockit chat` server process, killed on drop.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    /// Starts a server without history on `addr` (port 0 for any free port).
    fn start(addr: &str) -> Server {
        let mut child = Command::new(BIN)
            .args(["chat", "--no-history", addr])
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        let addr = loop {
            line.clear();
            assert!(
                stderr.read_line(&mut line).unwrap() > 0,
                "server exited early"
            );
            if let Some(rest) = line.strip_prefix("sockit chat: listening on ") {
                break rest.split_whitespace().next().unwrap().to_string();
            }
        };
        // Keep draining stderr so the server never blocks on a full pipe.
        thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = stderr.read_to_end(&mut sink);
        });
        Server { child, addr }
    }

    fn port(&self) -> u16 {
        self.addr.rsplit(':').next().unwrap().parse().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child process whose stdout lines are collected by a thread.
struct Lines {
    rx: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Lines {
    fn of(out: impl Read + Send + 'static) -> Lines {
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines {
            rx,
            seen: Vec::new(),
        }
    }

    /// Waits for a line containing `text`; panics with everything seen after `within`.
    fn expect(&mut self, text: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        if let Some(found) = self.seen.iter().find(|l| l.contains(text)) {
            return found.clone();
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(text) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no line with {text:?} within {within:?}; saw {:#?}",
                    self.seen
                ),
            }
        }
    }
}

/// Another member of the room: nc (netcat-openbsd) or a python3 socket client, fed through its
/// stdin, its output collected.
struct Peer {
    child: Child,
    stdin: Option<ChildStdin>,
    out: Lines,
}

const PY_CLIENT: &str = r#"
import socket, sys, threading, os
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
def pump():
    while True:
        data = s.recv(65536)
        if not data:
            break
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    os._exit(0)
threading.Thread(target=pump, daemon=True).start()
for line in sys.stdin.buffer:
    s.sendall(line)
s.shutdown(socket.SHUT_WR)
threading.Event().wait(5)
"#;

impl Peer {
    fn nc(port: u16) -> Peer {
        Peer::spawn(Command::new("nc").args(["127.0.0.1", &port.to_string()]))
    }

    fn python(port: u16) -> Peer {
        Peer::spawn(Command::new("python3").args([
            "-u",
            "-c",
            PY_CLIENT,
            "127.0.0.1",
            &port.to_string(),
        ]))
    }

    fn spawn(cmd: &mut Command) -> Peer {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = Lines::of(child.stdout.take().unwrap());
        Peer {
            stdin: child.stdin.take(),
            child,
            out,
        }
    }

    /// Joins as `nick` and waits until the server confirms it.
    fn named(mut self, nick: &str) -> Peer {
        self.out
            .expect("Welcome to sockit chat", Duration::from_secs(10));
        self.say(&format!("/nick {nick}"));
        self.out
            .expect(&format!("is now known as {nick}"), Duration::from_secs(10));
        self
    }

    fn say(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(format!("{line}\n").as_bytes()).unwrap();
        stdin.flush().unwrap();
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `sockit chat join ...` without a terminal.
fn client(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["chat", "join"]).args(args).env_remove("RUST_LOG");
    cmd
}

/// Runs a child to its end, failing the test if it takes longer than `within`.
fn finish(mut child: Child, within: Duration) -> (std::process::ExitStatus, String, String) {
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("client still running after {within:?}");
        }
        thread::sleep(Duration::from_millis(20));
    };
    (status, out.join().unwrap(), err.join().unwrap())
}

/// Whether `line` is `[HH:MM:SS] ` followed by `rest`.
fn is_stamped(line: &str, rest: &str) -> bool {
    let b = line.as_bytes();
    b.len() > 11
        && b[0] == b'['
        && b[3] == b':'
        && b[6] == b':'
        && b[9] == b']'
        && b[1..9].iter().all(|c| c.is_ascii_digit() || *c == b':')
        && &line[11..] == rest
}

#[test]
fn send_delivers_one_message_and_exits() {
    let server = Server::start("127.0.0.1:0");
    let mut bob = Peer::nc(server.port()).named("bob");
    let child = client(&[&server.addr, "--nick", "ann", "--send", "hello from ann"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (status, out, err) = finish(child, Duration::from_secs(20));
    assert!(status.success(), "exit {status:?}, stderr {err}");
    // Success is quiet: no replay, no echo (a script's output is its own).
    assert_eq!(out, "", "stdout of a successful --send");
    assert_eq!(err, "", "stderr of a successful --send");
    bob.out
        .expect("<ann> hello from ann", Duration::from_secs(10));
    // With -v it shows what the server said, its own message among it.
    bob.say("before the second");
    bob.out
        .expect("<bob> before the second", Duration::from_secs(10));
    let child = client(&[&server.addr, "-v", "--nick", "ann", "--send", "again"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (status, out, err) = finish(child, Duration::from_secs(20));
    assert!(status.success(), "exit {status:?}, stderr {err}");
    assert!(
        out.lines()
            .any(|l| is_stamped(l, "<bob> before the second")),
        "the replay with -v: {out}"
    );
    assert!(
        out.lines().any(|l| is_stamped(l, "<ann> again")),
        "stdout: {out}"
    );
}

#[test]
fn send_with_a_taken_nick_fails_and_posts_nothing() {
    let server = Server::start("127.0.0.1:0");
    let mut ann = Peer::nc(server.port()).named("ann");
    let child = client(&[&server.addr, "--nick", "ANN", "--send", "posted as a guest"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (status, out, err) = finish(child, Duration::from_secs(20));
    assert_eq!(status.code(), Some(1), "stdout {out}, stderr {err}");
    assert_eq!(err.lines().count(), 1, "stderr: {err}");
    assert!(err.contains("\"ANN\"") && err.contains("taken"), "{err}");
    // Nothing was said: a line said after the client left arrives with nothing before it.
    ann.say("marker");
    ann.out.expect("<ann> marker", Duration::from_secs(10));
    assert!(
        !ann.out.seen.iter().any(|l| l.contains("posted as a guest")),
        "{:#?}",
        ann.out.seen
    );
    // A pipe of lines does not post as a guest either.
    let mut child = client(&[&server.addr, "--nick", "ann"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let _ = stdin.write_all(b"piped as a guest\n");
    let (status, _, err) = finish(child, Duration::from_secs(20));
    drop(stdin);
    assert_eq!(status.code(), Some(1), "stderr {err}");
    assert!(err.contains("\"ann\"") && err.contains("taken"), "{err}");
    ann.say("marker 2");
    ann.out.expect("<ann> marker 2", Duration::from_secs(10));
    assert!(!ann.out.seen.iter().any(|l| l.contains("as a guest")));
}

#[test]
fn send_without_a_server_fails_with_one_line() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = client(&[&format!("127.0.0.1:{port}"), "--send", "hi"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (status, _, err) = finish(child, Duration::from_secs(20));
    assert_eq!(status.code(), Some(1));
    assert_eq!(err.lines().count(), 1, "stderr: {err}");
    assert!(
        err.contains("cannot connect") && err.contains("refused"),
        "{err}"
    );
}

#[test]
fn pipe_sends_each_line_and_prints_what_others_say() {
    let server = Server::start("127.0.0.1:0");
    let mut bob = Peer::nc(server.port()).named("bob");
    let mut child = client(&[&server.addr, "--nick", "ann", "--room", "lobby"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut out = Lines::of(child.stdout.take().unwrap());
    stdin.write_all(b"first line\n/me waves\n").unwrap();
    stdin.flush().unwrap();
    bob.out.expect("<ann> first line", Duration::from_secs(10));
    bob.out.expect("* ann waves", Duration::from_secs(10));
    // While its input is still open, the client prints what the room says.
    bob.say("hi ann");
    let line = out.expect("<bob> hi ann", Duration::from_secs(10));
    assert!(is_stamped(&line, "<bob> hi ann"), "{line:?}");
    stdin.write_all(b"last line\n").unwrap();
    drop(stdin);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "client did not exit after EOF");
        thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit {status:?}");
    // Delivered before the exit: the client waited for the server.
    bob.out.expect("<ann> last line", Duration::from_secs(10));
}

#[test]
fn pipe_of_more_lines_than_the_rate_limit_allows_delivers_all_in_order() {
    // The server's default is 5 lines/s with bursts of 10: 15 lines must wait and be retried.
    let server = Server::start("127.0.0.1:0");
    let mut bob = Peer::nc(server.port()).named("bob");
    let input: String = (1..=15).map(|i| format!("line {i}\n")).collect();
    let mut child = client(&[&server.addr, "--nick", "ann"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let (status, _, err) = finish(child, Duration::from_secs(30));
    assert!(status.success(), "exit {status:?}, stderr {err}");
    bob.out.expect("<ann> line 15", Duration::from_secs(10));
    let said: Vec<&String> = bob
        .out
        .seen
        .iter()
        .filter(|l| l.contains("<ann> line "))
        .collect();
    let expected: Vec<String> = (1..=15).map(|i| format!("<ann> line {i}")).collect();
    assert_eq!(said.len(), 15, "{said:#?}");
    for (line, want) in said.iter().zip(&expected) {
        assert!(line.ends_with(want.as_str()), "{line} vs {want}");
    }
}

/// A tmux server of its own (`tmux -L`), so tests run in parallel; killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    /// Starts `command` in a detached 120x30 session.
    fn start(command: &str) -> Tmux {
        static N: AtomicUsize = AtomicUsize::new(0);
        let socket = format!(
            "sockit-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let tmux = Tmux { socket };
        tmux.run(&[
            "new-session",
            "-d",
            "-s",
            "t",
            "-x",
            "120",
            "-y",
            "30",
            command,
        ]);
        tmux
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(["-u", "-L", &self.socket])
            .args(args)
            .env_remove("TMUX")
            .output()
            .expect("tmux is installed (.ci/install-deps)");
        assert!(out.status.success(), "tmux {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Types `keys` (tmux key names such as `Enter`, `C-c`, or literal text).
    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "t"];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    /// Types literal text.
    fn type_text(&self, text: &str) {
        self.run(&["send-keys", "-t", "t", "-l", text]);
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "t"])
    }

    /// Waits until the screen satisfies `ok`; panics with the last screen after `within`.
    fn wait_for(&self, what: &str, within: Duration, ok: impl Fn(&Screen) -> bool) -> Screen {
        let deadline = Instant::now() + within;
        loop {
            let screen = Screen(self.screen());
            if ok(&screen) {
                return screen;
            }
            if Instant::now() > deadline {
                panic!("waited {within:?} for {what}; screen:\n{}", screen.0);
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

/// A captured screen of the terminal client.
struct Screen(String);

impl Screen {
    fn lines(&self) -> Vec<&str> {
        self.0.lines().collect()
    }

    /// The rows above the status line.
    fn pane(&self) -> String {
        let lines = self.lines();
        lines[..lines.len().saturating_sub(2)].join("\n")
    }

    fn status(&self) -> &str {
        let lines = self.lines();
        lines
            .get(lines.len().wrapping_sub(2))
            .copied()
            .unwrap_or("")
    }

    fn input(&self) -> &str {
        self.lines().last().copied().unwrap_or("").trim_end()
    }

    fn connected(&self) -> bool {
        self.status().contains("connected")
    }

    /// The member list: the right-hand column after the last `│`, below its title row.
    fn members(&self) -> Vec<String> {
        let lines = self.lines();
        lines[..lines.len().saturating_sub(2)]
            .iter()
            .skip(1)
            .filter_map(|l| l.rsplit_once('│').map(|(_, m)| m.trim().to_string()))
            .filter(|m| !m.is_empty())
            .collect()
    }
}

fn terminal_client(addr: &str, nick: &str) -> Tmux {
    Tmux::start(&format!(
        "env -u RUST_LOG {BIN} chat join {addr} --nick {nick}; echo client exited rc=$?; sleep 60"
    ))
}

const WAIT: Duration = Duration::from_secs(15);

#[test]
fn terminal_client_shows_the_room_and_keeps_the_input_line() {
    let server = Server::start("127.0.0.1:0");
    // History on join: a message said before the terminal client arrives.
    let mut bob = Peer::python(server.port()).named("bob");
    bob.say("said before ann came");
    bob.out
        .expect("<bob> said before ann came", Duration::from_secs(10));

    let tmux = terminal_client(&server.addr, "ann");
    let screen = tmux.wait_for("the client to connect", WAIT, |s| {
        s.connected() && s.pane().contains("<bob> said before ann came")
    });
    assert!(screen.status().contains("ann") && screen.status().contains("#lobby"));

    tmux.type_text("hello");
    tmux.keys(&["Enter"]);
    tmux.wait_for("ann's message", WAIT, |s| s.pane().contains("<ann> hello"));
    bob.out.expect("<ann> hello", Duration::from_secs(10));

    // The member list holds both, kept from the join events.
    tmux.wait_for("both members", WAIT, |s| {
        let m = s.members();
        m.iter().any(|n| n == "ann") && m.iter().any(|n| n == "bob")
    });

    // Half a line typed and edited (cursor moved left, a letter inserted) while bob talks.
    tmux.type_text("half-typd");
    tmux.keys(&["Left", "e", "End"]);
    tmux.wait_for("the typing", WAIT, |s| s.input() == "> half-typed");
    bob.say("bob talks over it");
    let screen = tmux.wait_for("bob's message", WAIT, |s| {
        s.pane().contains("<bob> bob talks over it")
    });
    assert_eq!(screen.input(), "> half-typed", "{}", screen.0);

    // A third member appears in the list and goes again.
    let carol = Peer::nc(server.port()).named("carol");
    tmux.wait_for("carol in the list", WAIT, |s| {
        s.members().iter().any(|n| n == "carol")
    });
    drop(carol);
    tmux.wait_for("carol gone from the list", WAIT, |s| {
        !s.members().iter().any(|n| n == "carol") && s.members().iter().any(|n| n == "bob")
    });

    // The typed line is finally sent, intact.
    tmux.keys(&["Enter"]);
    bob.out.expect("<ann> half-typed", Duration::from_secs(10));

    // Ctrl-C leaves, and the shell's screen is back (the alternate screen is gone).
    tmux.keys(&["C-c"]);
    let screen = tmux.wait_for("the client to exit", WAIT, |s| {
        s.0.contains("client exited rc=0")
    });
    assert!(!screen.0.contains("<bob>"), "{}", screen.0);
    bob.out
        .expect("-!- ann left #lobby", Duration::from_secs(10));
}

#[test]
fn terminal_client_reconnects_after_the_server_restarts() {
    let server = Server::start("127.0.0.1:0");
    let addr = server.addr.clone();
    let tmux = terminal_client(&addr, "ann");
    tmux.wait_for("the client to connect", WAIT, |s| s.connected());
    tmux.type_text("before restart");
    tmux.keys(&["Enter"]);
    tmux.wait_for("the first message", WAIT, |s| {
        s.pane().contains("<ann> before restart")
    });

    drop(server);
    let screen = tmux.wait_for("the client to notice", WAIT, |s| {
        !s.connected() && s.status().contains("offline")
    });
    assert!(screen.members().is_empty(), "{}", screen.0);
    // Typing goes on while offline; Enter keeps the line rather than losing it.
    tmux.type_text("typed while down");
    tmux.keys(&["Enter"]);
    tmux.wait_for("the not-connected notice", WAIT, |s| {
        s.pane().contains("not connected") && s.input() == "> typed while down"
    });

    let server = Server::start(&addr);
    let mut bob = Peer::python(server.port()).named("bob");
    let screen = tmux.wait_for("the client to reconnect", WAIT, |s| {
        s.connected() && s.members().iter().any(|n| n == "bob")
    });
    assert_eq!(screen.input(), "> typed while down");
    // Same nick after the reconnect.
    assert!(screen.members().iter().any(|n| n == "ann"), "{}", screen.0);

    tmux.keys(&["Enter"]);
    bob.out
        .expect("<ann> typed while down", Duration::from_secs(10));
    tmux.wait_for("the message in the pane", WAIT, |s| {
        s.pane().contains("<ann> typed while down") && s.input() == ">"
    });

    // /quit says goodbye to the server and exits.
    tmux.type_text("/quit bye all");
    tmux.keys(&["Enter"]);
    tmux.wait_for("the client to exit", WAIT, |s| {
        s.0.contains("client exited rc=0")
    });
    bob.out
        .expect("-!- ann left #lobby (bye all)", Duration::from_secs(10));
}

impl Tmux {
    /// Pastes `text` as the terminal would: in bracketed-paste markers when the client asked for
    /// them (`paste-buffer -p`).
    fn paste(&self, text: &str) {
        self.run(&["set-buffer", "-b", "paste", text]);
        self.run(&["paste-buffer", "-p", "-d", "-b", "paste", "-t", "t"]);
    }
}

impl Screen {
    /// The message pane's first row: the room labels.
    fn tabs(&self) -> String {
        let first = self.lines().first().copied().unwrap_or("");
        first
            .rsplit_once('│')
            .map_or(first, |(left, _)| left)
            .to_string()
    }
}

#[test]
fn terminal_client_keeps_one_scrollback_per_room() {
    let server = Server::start("127.0.0.1:0");
    let tmux = terminal_client(&server.addr, "ann");
    tmux.wait_for("the client to connect", WAIT, |s| {
        s.connected() && s.status().contains("#lobby")
    });
    let mut bob = Peer::python(server.port()).named("bob");
    bob.say("said in lobby");
    tmux.wait_for("bob's line", WAIT, |s| s.pane().contains("said in lobby"));

    let mut carol = Peer::nc(server.port()).named("carol");
    carol.say("/join rust");
    carol
        .out
        .expect("carol joined #rust", Duration::from_secs(10));
    tmux.type_text("/join rust");
    tmux.keys(&["Enter"]);
    carol
        .out
        .expect("ann joined #rust", Duration::from_secs(10));
    carol.say("said in rust");
    // The rust room has a scrollback of its own, and both rooms are labelled.
    let screen = tmux.wait_for("the rust scrollback", WAIT, |s| {
        s.pane().contains("said in rust") && s.status().contains("#rust")
    });
    assert!(!screen.pane().contains("said in lobby"), "{}", screen.0);
    assert!(
        screen.tabs().contains("#lobby") && screen.tabs().contains("#rust"),
        "{}",
        screen.0
    );
    assert!(screen.status().contains("Alt-←/→"), "{}", screen.status());

    // Alt-Left shows the lobby's scrollback again and joins it.
    tmux.keys(&["M-Left"]);
    let screen = tmux.wait_for("back in the lobby", WAIT, |s| {
        s.pane().contains("said in lobby") && s.status().contains("#lobby")
    });
    assert!(!screen.pane().contains("said in rust"), "{}", screen.0);
    bob.out.expect("ann joined #lobby", Duration::from_secs(10));
    carol.out.expect("ann left #rust", Duration::from_secs(10));

    // And Alt-Right goes back: the replay does not repeat what the buffer already shows.
    tmux.keys(&["M-Right"]);
    let screen = tmux.wait_for("back in rust", WAIT, |s| {
        s.pane().contains("said in rust") && s.status().contains("#rust")
    });
    assert_eq!(
        screen.pane().matches("said in rust").count(),
        1,
        "{}",
        screen.0
    );
}

#[test]
fn terminal_client_sends_a_pasted_block_as_separate_lines() {
    let server = Server::start("127.0.0.1:0");
    let mut bob = Peer::python(server.port()).named("bob");
    let tmux = terminal_client(&server.addr, "ann");
    tmux.wait_for("the client to connect", WAIT, |s| {
        s.connected() && s.members().iter().any(|n| n == "bob")
    });
    // More lines than the server's burst (10): it delays them, none is lost.
    let block: Vec<String> = (1..=12).map(|i| format!("pasted {i}")).collect();
    tmux.paste(&block.join("\n"));
    bob.out.expect("<ann> pasted 12", Duration::from_secs(20));
    let said: Vec<&String> = bob
        .out
        .seen
        .iter()
        .filter(|l| l.contains("<ann> pasted"))
        .collect();
    assert_eq!(said.len(), 12, "{said:#?}");
    for (line, want) in said.iter().zip(&block) {
        assert!(line.ends_with(&format!("<ann> {want}")), "{line} vs {want}");
    }
    let screen = tmux.wait_for("the paste in the pane", WAIT, |s| {
        s.pane().contains("<ann> pasted 12")
    });
    assert_eq!(screen.input(), ">", "{}", screen.0);
}

#[test]
fn terminal_client_completes_nicks_with_tab() {
    let server = Server::start("127.0.0.1:0");
    let mut bobby = Peer::python(server.port()).named("bobby");
    let _boris = Peer::nc(server.port()).named("boris");
    let tmux = terminal_client(&server.addr, "ann");
    tmux.wait_for("both in the list", WAIT, |s| {
        let m = s.members();
        m.iter().any(|n| n == "bobby") && m.iter().any(|n| n == "boris")
    });
    // At the start of the line a nick gets a colon; Tab again cycles through the matches.
    tmux.type_text("bo");
    tmux.keys(&["Tab"]);
    tmux.wait_for("the first match", WAIT, |s| s.input() == "> bobby:");
    tmux.keys(&["Tab"]);
    tmux.wait_for("the second match", WAIT, |s| s.input() == "> boris:");
    tmux.keys(&["Tab"]);
    tmux.wait_for("back to the first", WAIT, |s| s.input() == "> bobby:");
    // Within the line, the word at the cursor is completed, case-insensitively.
    tmux.type_text("hi BOR");
    tmux.keys(&["Tab"]);
    tmux.wait_for("a completion mid-line", WAIT, |s| {
        s.input() == "> bobby: hi boris"
    });
    tmux.keys(&["Enter"]);
    bobby
        .out
        .expect("<ann> bobby: hi boris", Duration::from_secs(10));
}

#[test]
fn terminal_client_shows_the_lines_of_history_n() {
    let server = Server::start("127.0.0.1:0");
    let mut bob = Peer::python(server.port()).named("bob");
    for i in 1..=3 {
        bob.say(&format!("old line {i}"));
    }
    bob.out.expect("<bob> old line 3", Duration::from_secs(10));
    let tmux = terminal_client(&server.addr, "ann");
    tmux.wait_for("the replay", WAIT, |s| {
        s.connected() && s.pane().contains("<bob> old line 3")
    });
    tmux.type_text("/clear");
    tmux.keys(&["Enter"]);
    tmux.wait_for("an empty pane", WAIT, |s| !s.pane().contains("old line"));
    tmux.type_text("/history 2");
    tmux.keys(&["Enter"]);
    let screen = tmux.wait_for("the history reply", WAIT, |s| {
        s.pane().contains("end of history")
    });
    let pane = screen.pane();
    assert!(
        pane.contains("last 2 messages of #lobby")
            && pane.contains("<bob> old line 2")
            && pane.contains("<bob> old line 3")
            && !pane.contains("old line 1"),
        "{}",
        screen.0
    );
}

#[test]
fn terminal_client_keeps_a_taken_nick_on_the_status_line_until_another_is_picked() {
    let server = Server::start("127.0.0.1:0");
    let mut other = Peer::python(server.port()).named("ann");
    let tmux = terminal_client(&server.addr, "ann");
    tmux.wait_for("the taken nick on the status line", WAIT, |s| {
        s.connected() && s.status().contains("nick ann is taken")
    });
    // Enough talk to push the error out of the pane: the status line still says it.
    for i in 0..30 {
        other.say(&format!("talk {i}"));
    }
    other.out.expect("<ann> talk 29", Duration::from_secs(20));
    let screen = tmux.wait_for("the talk", WAIT, |s| s.pane().contains("talk 29"));
    assert!(
        screen.status().contains("nick ann is taken"),
        "{}",
        screen.0
    );
    tmux.type_text("/nick ann2");
    tmux.keys(&["Enter"]);
    let screen = tmux.wait_for("the new nick", WAIT, |s| s.status().contains("ann2"));
    assert!(!screen.status().contains("taken"), "{}", screen.0);
    other
        .out
        .expect("is now known as ann2", Duration::from_secs(10));
}

#[test]
fn terminal_client_stays_connected_after_part() {
    let server = Server::start("127.0.0.1:0");
    let mut bob = Peer::python(server.port()).named("bob");
    let tmux = terminal_client(&server.addr, "ann");
    tmux.wait_for("the client to connect", WAIT, |s| {
        s.connected() && s.status().contains("#lobby")
    });
    bob.out.expect("ann joined #lobby", Duration::from_secs(10));
    tmux.type_text("/join rust");
    tmux.keys(&["Enter"]);
    bob.out.expect("ann left #lobby", Duration::from_secs(10));
    tmux.wait_for("the new room", WAIT, |s| s.status().contains("#rust"));
    // /part leaves #rust for the default room, as IRC's does, and the client stays.
    tmux.type_text("/part");
    tmux.keys(&["Enter"]);
    bob.out.expect("ann joined #lobby", Duration::from_secs(10));
    let screen = tmux.wait_for("the default room again", WAIT, |s| {
        s.connected() && s.status().contains("#lobby")
    });
    assert!(!screen.0.contains("client exited"), "{}", screen.0);
    tmux.type_text("still here");
    tmux.keys(&["Enter"]);
    bob.out.expect("<ann> still here", Duration::from_secs(10));
}
