//! `sockit chat` against text meant to deceive, and against telnet, with real peers (std
//! `TcpStream`s, nc, python3 sockets, the `telnet` binary in tmux): nicks and room names that look
//! like others or like nothing, user lines that imitate the server's, direction overrides and
//! invisible characters, lines that arrive in pieces, and telnet's negotiation, backspace and
//! Ctrl-C.

mod chat_support;

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use chat_support::{body, is_message, is_stamped, python, Chat, Peer, WAIT};

/// An error reply: the server's own form, which no user line can take.
fn is_error(line: &str) -> bool {
    line.starts_with("-!- error: ")
}

/// Sends `/nick NICK` and returns the server's answer: an error reply, or the nick change.
fn try_nick(p: &mut Peer, nick: &str) -> String {
    p.send(&format!("/nick {nick}"));
    p.expect(&format!("an answer to /nick {nick:?}"), |l| {
        is_error(l) || body(l).ends_with(&format!(" is now known as {nick}"))
    })
}

/// Nicks that look like another's (another script's letters, fullwidth and mathematical forms,
/// case), made of invisible characters, or mixing scripts are refused; real names in any one
/// script, combining marks included, are not.
#[test]
fn lookalike_invisible_and_mixed_script_nicks_are_refused() {
    let server = Chat::start(&["--no-history", "--rate", "0", "127.0.0.1:0"]);
    let addr = server.addr();
    let mut ann = Peer::joined(addr);
    let got = try_nick(&mut ann, "ann");
    assert!(!is_error(&got), "{got}");
    let mut eve = Peer::nc(addr);
    eve.wait_join("lobby");
    for fake in [
        "\u{430}nn",                // Cyrillic а, Latin nn
        "\u{430}\u{3c0}\u{3c0}",    // Cyrillic а, Greek ππ: no script in common
        "ａｎｎ",                   // fullwidth
        "𝔞𝔫𝔫",                      // mathematical fraktur
        "ANN",                      // case
        "a\u{363}nn",               // a combining mark drawn as a tiny letter
        "ann\u{3164}",              // a Hangul filler: invisible
        "\u{3164}",                 // nothing but one
        "\u{115f}\u{1160}\u{ffa0}", // the other fillers
    ] {
        let got = try_nick(&mut eve, fake);
        assert!(
            is_error(&got),
            "/nick {fake:?} ({:?}) was accepted: {got}",
            fake.escape_unicode().to_string()
        );
    }
    // A single-script lookalike of a nick that is free is fine; the real one is then taken.
    let mut cyr = Peer::joined(addr);
    let got = try_nick(&mut cyr, "\u{440}\u{43e}\u{440}"); // Cyrillic рор, free
    assert!(!is_error(&got), "{got}");
    let got = try_nick(&mut eve, "pop");
    assert!(is_error(&got) && got.contains("taken"), "{got}");
    // /msg to a lookalike reaches the one it looks like.
    eve.send("/msg \u{430}nn hello there");
    ann.expect("the private message", |l| body(l).ends_with("hello there"));
    // Real names, with the combining marks their scripts need.
    for real in [
        "Мария",
        "张伟",
        "Zoë",
        "Zoe\u{308}y",
        "田中さん",
        "김민준",
        "น้ำ",
        "अक्षय",
    ] {
        let got = try_nick(&mut eve, real);
        assert!(!is_error(&got), "/nick {real:?} refused: {got}");
    }
}

/// Room names: fullwidth and mathematical forms and case are the same room, a name written only
/// in another script's letters that look like Latin ones is the Latin room, and mixed-script or
/// invisible names are refused.
#[test]
fn lookalike_rooms_are_one_room_and_mixed_or_invisible_names_refused() {
    let server = Chat::start(&["--no-history", "--rate", "0", "127.0.0.1:0"]);
    let addr = server.addr();
    let mut a = Peer::joined(addr);
    let mut b = Peer::joined(addr);
    a.send("/join #rust");
    a.wait_join("rust");
    for same in ["#ｒｕｓｔ", "#𝔯𝔲𝔰𝔱", "#RUST"] {
        b.send(&format!("/join {same}"));
        b.expect(&format!("{same} is #rust"), |l| {
            is_error(l) || body(l).contains(" joined #") || l.contains("already in #")
        });
        b.send("/who");
        let who = b.expect("who", |l| l.contains(" in #"));
        assert!(
            who.contains("in #rust (2)"),
            "after /join {same}: {who}; saw {:?}",
            b.seen
        );
    }
    // Cyrillic рор, all lookalikes of Latin letters: the room #pop.
    b.send("/join #\u{440}\u{43e}\u{440}");
    let got = b.expect("the join", |l| is_error(l) || body(l).contains(" joined #"));
    assert!(body(&got).ends_with(" joined #pop"), "{got}");
    // A real word of that script stays as it is.
    b.send("/join #Москва");
    let got = b.expect("the join", |l| is_error(l) || body(l).contains(" joined #"));
    assert!(body(&got).ends_with(" joined #москва"), "{got}");
    for bad in ["#\u{440}ust", "#\u{3164}", "#ru\u{3164}st", "#rus\u{363}t"] {
        b.send(&format!("/join {bad}"));
        let got = b.expect(&format!("an answer to /join {bad}"), |l| {
            is_error(l) || body(l).contains(" joined #")
        });
        assert!(is_error(&got), "/join {bad:?} was accepted: {got}");
    }
}

/// `/me` cannot produce a server notice, every server line has a form no user line has, and runs
/// of whitespace cannot push forged text onto a row of its own.
#[test]
fn user_lines_cannot_pass_for_server_lines() {
    let server = Chat::start(&["--no-history", "--rate", "0", "127.0.0.1:0"]);
    let addr = server.addr();
    let mut bob = Peer::nc(addr);
    bob.wait_join("lobby");
    let mut carol = Peer::joined(addr);
    let join = bob.expect("carol's join", |l| {
        body(l).ends_with(&format!("{} joined #lobby", carol.nick))
    });
    carol.send("/me joined #lobby");
    let action = bob
        .next_line(WAIT)
        .expect("still connected")
        .expect("carol's action");
    assert_ne!(body(&action), body(&join));
    assert!(body(&join).starts_with("-!- "), "{join}");
    assert_eq!(body(&action), format!("* {} joined #lobby", carol.nick));

    let forged = format!(
        "hi{}[12:00:00] <{}> I owe carol $100",
        " ".repeat(118),
        bob.nick
    );
    carol.send(&forged);
    carol.send("tabs\t\t\t\t\t\t\t\t\t\t\t\tand\u{3000}\u{3000}\u{3000}\u{3000}\u{3000}ideographic\u{a0}\u{a0}\u{2003}\u{2003}spaces\u{2800}\u{2800}\u{2800}\u{2800}braille");
    carol.send("a  b   c");
    let got = bob.expect("the forged line", |l| l.contains("I owe carol"));
    assert_eq!(
        body(&got),
        format!(
            "<{}> hi [12:00:00] <{}> I owe carol $100",
            carol.nick, bob.nick
        )
    );
    bob.expect_msg(&carol.nick.clone(), "tabs and ideographic spaces braille");
    // Short runs are kept as typed.
    bob.expect_msg(&carol.nick.clone(), "a  b   c");

    // Everything bob saw: user lines are stamped and start with `<`, `* ` or `*nick ->`; server
    // lines start with `-!- `, after a stamp for events.
    bob.send("/who");
    bob.send("/nosuchcommand");
    bob.expect("the error", is_error);
    for l in &bob.seen {
        if !is_stamped(l) {
            assert!(
                l.starts_with("-!- "),
                "an unstamped line not from the server: {l:?}"
            );
        }
    }
    drop(bob);
}

/// Direction overrides, zero-width and other invisible characters, and line separators reach
/// nobody as they were sent; joiners that emoji sequences and scripts need are kept.
#[test]
fn bidi_controls_and_invisible_characters_are_neutralised() {
    let server = Chat::start(&["--no-history", "--rate", "0", "127.0.0.1:0"]);
    let addr = server.addr();
    let mut a = Peer::joined(addr);
    let mut b = Peer::joined(addr);
    let bad = [
        '\u{202a}', '\u{202b}', '\u{202c}', '\u{202d}', '\u{202e}', '\u{2066}', '\u{2067}',
        '\u{2068}', '\u{2069}', '\u{200e}', '\u{200f}', '\u{61c}', '\u{200b}', '\u{2028}',
        '\u{2029}', '\u{feff}', '\u{2060}', '\u{3164}', '\u{115f}', '\u{1160}', '\u{ffa0}',
        '\u{ad}', '\u{180e}',
    ];
    let sent: String = bad.iter().map(|c| format!("{c}x")).collect();
    a.send(&format!("{sent}end"));
    let want: String = bad.iter().map(|_| "\u{FFFD}x").collect();
    b.expect_msg(&a.nick.clone(), &format!("{want}end"));
    // Joiners with nothing to join, and tag characters smuggling text after a letter.
    a.send("a\u{200d}b a\u{200c}b hi\u{e0041}\u{e0042}");
    b.expect_msg(&a.nick.clone(), "a\u{FFFD}b a\u{FFFD}b hi\u{FFFD}\u{FFFD}");
    // Kept: an emoji ZWJ sequence, a Persian ZWNJ, a Devanagari ZWJ, a subdivision flag, VS16.
    let kept = "👩\u{200d}💻 می\u{200c}خواهم क्\u{200d}ष 🏴\u{e0067}\u{e0062}\u{e0073}\u{e0063}\u{e0074}\u{e007f} ❤\u{fe0f}";
    a.send(kept);
    b.expect_msg(&a.nick.clone(), kept);
}

/// Python: connect, read the welcome, then for each argument send it (no newline unless it has
/// one) and wait the given seconds; print everything received meanwhile.
const PIECES: &str = r#"
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
s.settimeout(0.05)
got = b""
def pump(secs):
    global got
    end = time.time() + secs
    while time.time() < end:
        try:
            d = s.recv(65536)
        except socket.timeout:
            continue
        if not d:
            break
        got += d
pump(0.5)
args = sys.argv[2:]
for piece, wait in zip(args[::2], args[1::2]):
    s.sendall(piece.encode().decode("unicode_escape").encode("latin-1"))
    pump(float(wait))
sys.stdout.buffer.write(got)
"#;

/// Runs [`PIECES`] against `port` with (piece, seconds to wait after it) pairs; pieces are given
/// with Python escapes (`\n`, `\xff`) and sent as those bytes.
fn pieces(port: u16, steps: &[(&str, f64)]) -> Vec<u8> {
    let mut args = vec![port.to_string()];
    for (piece, wait) in steps {
        args.push(piece.to_string());
        args.push(wait.to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    python(PIECES, &args)
}

/// What a plain client received without the server's telnet answers (`IAC verb option`), which
/// come between lines.
fn without_telnet(received: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(received.len());
    let mut i = 0;
    while i < received.len() {
        if received[i] == 0xff {
            i += 3;
        } else {
            out.push(received[i]);
            i += 1;
        }
    }
    out
}

/// The messages of `nick` in what a plain client received.
fn said_by(received: &[u8], nick: &str) -> Vec<String> {
    let want = format!("<{nick}> ");
    String::from_utf8_lossy(&without_telnet(received))
        .split("\r\n")
        .filter(|l| is_message(l))
        .filter_map(|l| body(l).strip_prefix(&want).map(str::to_string))
        .collect()
}

/// The pause rule turns unterminated input into a line only for clients that have never ended a
/// line: one that has sees a line that arrives in two pieces 600 ms apart as one message, while
/// the tutorials' client, which never sends a newline, still gets each message back.
#[test]
fn the_pause_rule_is_only_for_clients_that_never_sent_a_newline() {
    let server = Chat::start(&["--no-history", "--line-pause", "250ms", "127.0.0.1:0"]);
    let got = pieces(
        server.port(),
        &[("/nick piece\\n", 0.3), ("hel", 0.6), ("lo\\n", 0.5)],
    );
    assert_eq!(
        said_by(&got, "piece"),
        ["hello"],
        "{}",
        String::from_utf8_lossy(&got)
    );

    // A telnet client, which may send a key at a time, from its first line on.
    let got = pieces(
        server.port(),
        &[("\\xff\\xfb\\x1fhel", 0.6), ("lo\\r\\n", 0.5)],
    );
    assert_eq!(said_by(&got, &welcome_nick(&got)), ["hello"]);

    // The tutorial client: send() without a newline, then recv().
    let got = pieces(server.port(), &[("first message", 1.0), ("second", 1.0)]);
    assert_eq!(
        said_by(&got, &welcome_nick(&got)),
        ["first message", "second"],
        "{}",
        String::from_utf8_lossy(&got)
    );
}

/// The nick the welcome in `received` gives.
fn welcome_nick(received: &[u8]) -> String {
    let received = without_telnet(received);
    let text = String::from_utf8_lossy(&received);
    text.lines()
        .find_map(|l| l.strip_prefix("-!- Welcome to sockit chat, "))
        .and_then(|r| r.split('!').next())
        .unwrap_or_else(|| panic!("no welcome: {text}"))
        .to_string()
}

/// What telnet sends, as bytes: option negotiation (answered with refusals, and the timing mark
/// that Ctrl-C asks for with its acknowledgement), subnegotiation (skipped), backspace and DEL
/// (which erase the last character typed, a whole UTF-8 character), erase character and erase
/// line, interrupt (Ctrl-C: the line typed so far is dropped), and commands split across reads.
#[test]
fn telnet_negotiation_and_editing_bytes_are_understood() {
    let server = Chat::start(&["--no-history", "--rate", "0", "127.0.0.1:0"]);
    let mut other = Peer::joined(server.addr());
    let got = pieces(
        server.port(),
        &[
            // DO SUPPRESS-GO-AHEAD, WILL ECHO, SB TERMINAL-TYPE IS "xterm" SE.
            (
                "\\xff\\xfd\\x03\\xff\\xfb\\x01\\xff\\xfa\\x18\\x00xterm\\xff\\xf0/nick tel\\r\\n",
                0.3,
            ),
            ("helo\\x08lo\\r\\n", 0.1),
            ("na\\xc3\\xaf\\x7fi\\xc3\\xafve\\x7f\\x7f\\x7f\\r\\n", 0.1),
            // Ctrl-C: IAC IP, IAC DO TIMING-MARK.
            ("typing\\xff\\xf4\\xff\\xfd\\x06", 0.2),
            ("ok\\r\\n", 0.1),
            ("abc\\xff\\xf7d\\r\\n", 0.1),
            ("junk\\xff\\xf8fine\\r\\n", 0.1),
            ("x\\xff\\xffy\\r\\n", 0.1),
            ("spl\\xff", 0.1),
            ("\\xf7it\\r\\n", 0.1),
            ("\\xff\\xfd", 0.1),
            ("\\x18\\xff\\xfb\\x1fbare cr\\r\\x00", 0.1),
            ("end\\r\\n", 1.0),
        ],
    );
    let said = said_by(&got, "tel");
    assert_eq!(
        said,
        ["hello", "nai", "ok", "abd", "fine", "xy", "spit", "bare cr", "end"],
        "{}",
        String::from_utf8_lossy(&got)
    );
    let has = |needle: &[u8]| got.windows(needle.len()).any(|w| w == needle);
    assert!(has(b"\xff\xfc\x03"), "WONT SUPPRESS-GO-AHEAD");
    assert!(has(b"\xff\xfe\x01"), "DONT ECHO");
    assert!(has(b"\xff\xfb\x06"), "WILL TIMING-MARK");
    assert!(has(b"\xff\xfc\x18"), "WONT TERMINAL-TYPE");
    assert!(has(b"\xff\xfe\x1f"), "DONT NAWS");
    // The room saw the same, and nothing of the telnet commands.
    for text in said {
        other.expect_msg("tel", &text);
    }
    assert!(
        !other
            .seen
            .iter()
            .any(|l| l.contains('\u{FFFD}') || l.contains("typing")),
        "{:?}",
        other.seen
    );
}

/// Backspace erases a whole GBK character for `--encoding gbk` clients, and telnet commands are
/// stripped for them too (0xFF is no GBK byte).
#[test]
fn backspace_and_telnet_commands_for_gbk_clients() {
    let server = Chat::start(&["--no-history", "--encoding", "gbk", "127.0.0.1:0"]);
    let gbk = |s: &str| {
        encoding_rs::GBK
            .encode(s)
            .0
            .iter()
            .map(|b| format!("\\x{b:02x}"))
            .collect::<String>()
    };
    let got = pieces(
        server.port(),
        &[
            ("/nick gb\\r\\n", 0.3),
            (&format!("{}\\x08\\r\\n", gbk("你好")), 0.1),
            (&format!("{}\\x7f\\x7fz\\r\\n", gbk("a你好")), 0.1),
            (
                &format!(
                    "{}\\xff\\xf4\\xff\\xfd\\x06{}\\r\\n",
                    gbk("不要"),
                    gbk("世界")
                ),
                1.0,
            ),
        ],
    );
    let got = without_telnet(&got);
    let (text, _, _) = encoding_rs::GBK.decode(&got);
    let said: Vec<String> = text
        .split("\r\n")
        .filter(|l| is_message(l))
        .filter_map(|l| body(l).strip_prefix("<gb> ").map(str::to_string))
        .collect();
    assert_eq!(said, ["你", "az", "世界"], "{text}");
}

/// The `telnet` binary itself, in a terminal: what it sends for Enter and Ctrl-C, and that it
/// keeps showing the room after Ctrl-C (it waits for the answer to its timing mark).
#[test]
fn telnet_in_a_terminal() {
    let server = Chat::start(&["--no-history", "--rate", "0", "127.0.0.1:0"]);
    let mut other = Peer::joined(server.addr());
    static N: AtomicUsize = AtomicUsize::new(0);
    let socket = format!(
        "sockit-telnet-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    );
    let tmux = |args: &[&str]| {
        let out = Command::new("tmux")
            .args(["-u", "-L", &socket])
            .args(args)
            .env_remove("TMUX")
            .output()
            .expect("tmux is installed (.ci/install-deps)");
        assert!(out.status.success(), "tmux {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    struct Kill<'a>(&'a str);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = Command::new("tmux")
                .args(["-L", self.0, "kill-server"])
                .output();
        }
    }
    let _kill = Kill(&socket);
    let telnet = format!("telnet 127.0.0.1 {}", server.port());
    tmux(&[
        "new-session",
        "-d",
        "-s",
        "t",
        "-x",
        "120",
        "-y",
        "30",
        &telnet,
    ]);
    let screen_has = |what: &str| {
        let deadline = Instant::now() + WAIT;
        loop {
            let screen = tmux(&["capture-pane", "-p", "-t", "t"]);
            if screen.contains(what) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "no {what:?} on the telnet screen:\n{screen}"
            );
            thread::sleep(Duration::from_millis(50));
        }
    };
    screen_has("Welcome to sockit chat");
    tmux(&["send-keys", "-t", "t", "-l", "/nick tel"]);
    tmux(&["send-keys", "-t", "t", "Enter"]);
    screen_has("is now known as tel");
    tmux(&["send-keys", "-t", "t", "-l", "helo"]);
    tmux(&["send-keys", "-t", "t", "BSpace"]);
    tmux(&["send-keys", "-t", "t", "-l", "lo"]);
    tmux(&["send-keys", "-t", "t", "Enter"]);
    other.expect_msg("tel", "hello");
    tmux(&["send-keys", "-t", "t", "-l", "never sent"]);
    tmux(&["send-keys", "-t", "t", "C-c"]);
    thread::sleep(Duration::from_millis(300));
    tmux(&["send-keys", "-t", "t", "-l", "ok"]);
    tmux(&["send-keys", "-t", "t", "Enter"]);
    other.expect_msg("tel", "ok");
    other.send("still there?");
    screen_has(&format!("<{}> still there?", other.nick));
    assert!(
        !other
            .seen
            .iter()
            .any(|l| l.contains('\u{FFFD}') || l.contains("never sent")),
        "{:?}",
        other.seen
    );
}
