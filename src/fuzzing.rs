//! Entry points for fuzzing every parser that reads bytes from the network or from a user: one
//! function per target, each taking arbitrary bytes, driving the parser the way sockit does and
//! checking what its output promises (not only that it does not panic). `fuzz/` wraps each one in
//! a libFuzzer target (`cargo +nightly fuzz run NAME`); `tests/fuzz.rs` runs each over its
//! committed corpus and a fixed number of mutated inputs on the stable toolchain, so CI runs
//! every target without nightly, and every crash found is kept there as a regression input.
//!
//! Not part of sockit's API: hidden from the documentation, and free to change with the parsers.

use std::str::FromStr;

use bytes::BytesMut;
use tokio_util::codec::Decoder;

use crate::chat::line::{Input, LineDecoder};
use crate::chat::Format;

/// A fuzz target: takes any bytes; panics if the parser breaks a promise.
pub type Target = fn(&[u8]);

/// Every target, by name (the names of `fuzz/fuzz_targets/*.rs` and `fuzz/corpus/*`).
pub const TARGETS: &[(&str, Target)] = &[
    ("endpoint", endpoint),
    ("ip_list", ip_list),
    ("host_name", host_name),
    ("chat_lines", chat_lines),
    ("chat_hello", chat_hello),
    ("chat_command", chat_command),
    ("chat_text", chat_text),
    ("chat_client_incoming", chat_client_incoming),
    ("chat_websocket", chat_websocket),
    ("http_path", http_path),
    ("http_range", http_range),
    ("transfer_frames", transfer_frames),
    ("transfer_names", transfer_names),
    ("scan_ports", scan_ports),
    ("scan_target", scan_target),
];

/// Endpoint syntax (`HOST:PORT`, `[v6]:PORT`, `unix:PATH`, ...): what parses prints as something
/// that parses again to the same endpoint.
pub fn endpoint(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(e) = crate::net::Endpoint::from_str(text) {
        let shown = e.to_string();
        let again = crate::net::Endpoint::from_str(&shown)
            .unwrap_or_else(|err| panic!("{text:?} printed as {shown:?}, which fails: {err}"));
        assert_eq!(again.to_string(), shown, "{text:?}");
    }
    let _ = crate::net::Endpoint::parse_with_default_host(text, "127.0.0.1");
}

/// Allow/deny lists (`--allow`, `--deny`, `--limit-exempt`): a parsed list prints as one that
/// parses to the same list.
pub fn ip_list(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(list) = crate::net::IpList::parse(text) {
        let shown = list.to_string();
        let again = crate::net::IpList::parse(&shown)
            .unwrap_or_else(|err| panic!("{text:?} printed as {shown:?}, which fails: {err}"));
        assert_eq!(again.to_string(), shown, "{text:?}");
    }
}

/// Host names from `Host` headers and `--web-host`: an accepted name is lower case and has no
/// character that could end a header or a URL authority.
pub fn host_name(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(name) = crate::net::parse_host_name(text) {
        assert!(
            !name
                .chars()
                .any(|c| c.is_control() || c.is_whitespace() || "/?#@\\".contains(c)),
            "{text:?} accepted as {name:?}"
        );
    }
}

/// The chat's line decoder, as a client's bytes reach it: in pieces (the first bytes of the input
/// choose the limit, the format and where it is cut), with telnet commands and editing, and the
/// pause rule taking what is left. No line is longer than the limit, and the decoder stops at a
/// flood without growing past its cutoff.
pub fn chat_lines(data: &[u8]) {
    let [a, b, rest @ ..] = data else {
        return;
    };
    let max = 1 + usize::from(*a % 64);
    let cutoff = max * 4;
    let format = match b % 3 {
        0 => Format::Utf8,
        1 => Format::Gbk,
        _ => Format::Json,
    };
    let piece = 1 + usize::from(b / 3) % 17;
    let mut decoder = LineDecoder::new(max, cutoff);
    decoder.set_format(format);
    let mut buf = BytesMut::new();
    let check = |input: &Input| {
        if let Input::Line(line) = input {
            assert!(
                line.len() <= max,
                "a line of {} bytes past {max}",
                line.len()
            );
        }
    };
    for chunk in rest.chunks(piece) {
        buf.extend_from_slice(chunk);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(Input::Partial)) => {
                    // Sometimes the pause elapses now.
                    if chunk[0] & 1 == 1 {
                        if let Some(input) = decoder.take_partial(&mut buf) {
                            check(&input);
                        }
                    }
                    break;
                }
                Ok(Some(input)) => check(&input),
                Ok(None) => break,
                Err(_) => return,
            }
        }
        assert!(
            buf.len() <= cutoff + max + piece + 8,
            "the buffer grew to {} bytes (limit {max}, cutoff {cutoff})",
            buf.len()
        );
    }
    if let Ok(Some(input)) = decoder.decode_eof(&mut buf) {
        check(&input);
    }
}

/// The first line of a chat connection, which may be a JSON hello.
pub fn chat_hello(data: &[u8]) {
    if let Some(hello) = crate::chat::wire::Hello::parse(data) {
        // What it asks for is checked like any nick and room.
        if let Some(nick) = &hello.nick {
            let _ = crate::chat::check_nick(nick, 32);
        }
        if let Some(room) = &hello.room {
            let _ = crate::chat::room_name(room);
        }
    }
}

/// A chat line as a command (`/nick`, `/msg`, `/join`, ...), and the names commands carry: a nick
/// or room accepted is non-empty, bounded, and free of what could forge another line.
pub fn chat_command(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = crate::chat::command::Command::parse(text);
    let name = text.trim_start_matches('#');
    if crate::chat::check_nick(name, 32).is_ok() {
        assert!(
            !name.is_empty() && name.chars().count() <= 32 && !name.chars().any(char::is_control),
            "nick {name:?} accepted"
        );
    }
    if let Ok(room) = crate::chat::room_name(name) {
        assert!(
            !room.is_empty() && !room.chars().any(char::is_control),
            "{room:?}"
        );
    }
}

/// A line's bytes decoded in each wire format, then cleaned for the room: nothing that reaches
/// other clients can move their cursor, reorder text or start a new row.
pub fn chat_text(data: &[u8]) {
    for format in [Format::Utf8, Format::Gbk, Format::Json] {
        let Ok(text) = format.decode(data) else {
            continue;
        };
        let clean = crate::chat::wire::sanitize(&text);
        for c in clean.chars() {
            assert!(
                !c.is_control()
                    && !matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
                    && !matches!(c, '\u{2028}' | '\u{2029}' | '\u{200B}'),
                "{c:?} left in {clean:?} (from {text:?})"
            );
        }
    }
}

/// What `chat join` reads from a server (it may be anyone's): JSON events and replies.
pub fn chat_client_incoming(data: &[u8]) {
    let _ = crate::chat::client::protocol::Incoming::parse(data);
}

/// A request path for the static file server: an accepted path is only plain segments, never a
/// way up, a drive, a NUL or a separator inside a segment.
pub fn http_path(data: &[u8]) {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(rel) = crate::http::path::decode(raw) {
        for seg in &rel.segments {
            assert!(
                !seg.is_empty()
                    && seg != "."
                    && seg != ".."
                    && !seg.contains(['/', '\\', '\0'])
                    && !seg.chars().any(char::is_control)
                    && !(seg.len() >= 2
                        && seg.as_bytes()[0].is_ascii_alphabetic()
                        && seg.as_bytes()[1] == b':'),
                "{raw:?} gave segment {seg:?}"
            );
        }
    }
}

/// A Range header against a representation whose length the first 8 bytes give: ranges served
/// lie inside it, and there are never more than the limit.
pub fn http_range(data: &[u8]) {
    if data.len() < 8 {
        return;
    }
    let (len, value) = data.split_at(8);
    let len = u64::from_le_bytes(len.try_into().unwrap_or_default()) % (1 << 40);
    let Ok(value) = std::str::from_utf8(value) else {
        return;
    };
    if let crate::http::range::Ranges::Some(ranges) =
        crate::http::range::parse_ranges(value, len, crate::http::range::DEFAULT_MAX_RANGES)
    {
        assert!(
            ranges.len() <= crate::http::range::DEFAULT_MAX_RANGES,
            "{value:?}"
        );
        for (first, last) in ranges {
            assert!(
                first <= last && last < len,
                "{value:?} ({len}): {first}-{last}"
            );
        }
    }
}

/// The transfer protocol's frames, as a receiver reads them from a hostile sender: headers over
/// their limit are refused before allocation, a zstd chunk never inflates past the chunk limit,
/// and every control message that parses encodes back to one that parses the same.
pub fn transfer_frames(data: &[u8]) {
    use crate::transfer::wire::{self, Frame};
    let mut rest = data;
    while rest.len() >= 5 {
        let head = [rest[0], rest[1], rest[2], rest[3], rest[4]];
        rest = &rest[5..];
        let Ok((kind, len)) = wire::parse_head(head) else {
            return;
        };
        let take = len.min(rest.len());
        let body = bytes::Bytes::copy_from_slice(&rest[..take]);
        rest = &rest[take..];
        match wire::parse_body(kind, body) {
            Ok(Frame::Data(d)) => assert!(d.len() <= wire::MAX_CHUNK, "chunk of {}", d.len()),
            Ok(Frame::Control(msg)) => {
                let again = serde_json::to_vec(&msg).expect("a parsed message encodes");
                let back: wire::Msg = serde_json::from_slice(&again).expect("and parses again");
                assert_eq!(back, msg);
            }
            Err(_) => {}
        }
    }
}

/// Names from a sender: whatever is accepted is relative, has no `.`/`..`/empty component, no
/// NUL, backslash or control character, no drive letter, and fits the length limits.
pub fn transfer_names(data: &[u8]) {
    use crate::transfer::names;
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(parts) = names::components(text) {
        assert!(!text.starts_with('/'), "{text:?}");
        assert!(text.len() <= names::MAX_NAME);
        for p in &parts {
            assert!(!p.is_empty() && *p != "." && *p != "..", "{text:?}");
            assert!(!p.contains(['\0', '\\', '/']), "{text:?}");
            assert!(!p.chars().any(char::is_control), "{text:?}");
            assert!(p.len() <= names::MAX_COMPONENT);
        }
        let first = parts[0].as_bytes();
        assert!(!(first.len() >= 2 && first[1] == b':' && first[0].is_ascii_alphabetic()));
        assert_eq!(parts.join("/"), text);
    }
}

/// `scan -p` port lists: what parses is a list of distinct ports from 1 to 65535, and printing it
/// back as a comma list parses to the same list.
pub fn scan_ports(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(ports) = crate::scan::target::parse_ports(text) {
        assert!(!ports.is_empty() && ports.len() <= 65535, "{text:?}");
        let mut seen = vec![false; 65536];
        assert!(
            ports
                .iter()
                .all(|&p| p != 0 && !std::mem::replace(&mut seen[usize::from(p)], true)),
            "{text:?}"
        );
        // Printed back as runs (`a-b`) of consecutive ports in the list's order: the same check
        // as a comma list of every port, without a 400 KB string for `-p-`.
        let mut shown = Vec::new();
        let mut i = 0;
        while i < ports.len() {
            let mut j = i;
            while j + 1 < ports.len() && ports[j + 1] == ports[j].wrapping_add(1) {
                j += 1;
            }
            shown.push(if i == j {
                ports[i].to_string()
            } else {
                format!("{}-{}", ports[i], ports[j])
            });
            i = j + 1;
        }
        let again = crate::scan::target::parse_ports(&shown.join(","))
            .unwrap_or_else(|e| panic!("{text:?} gave ports that do not parse again: {e}"));
        assert_eq!(again, ports, "{text:?}");
    }
}

/// `scan` targets: a parsed target counts at least one address, ranges never end before they
/// begin, and a name is a valid host name.
pub fn scan_target(data: &[u8]) {
    use crate::scan::target::Target;
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(t) = Target::parse(text) {
        assert!(t.count() >= 1, "{text:?}");
        if let Target::Name(name) = &t {
            assert!(crate::net::parse_host_name(name).is_ok(), "{text:?}");
        }
    }
}

/// WebSocket frames from a browser, read as the chat page reads them: tungstenite (what axum's
/// WebSocket runs on) with a message and frame size limit, as `chat --web` sets its
/// `--max-line` cutoff. No message over the limit gets through, and every text message goes on
/// to the hello parser, as the gateway's first message does. The input is the client's byte
/// stream (masked frames); what the server would answer (pongs, close) is discarded.
pub fn chat_websocket(data: &[u8]) {
    use std::io::{Cursor, Read, Write};
    use tungstenite::protocol::{Role, WebSocket, WebSocketConfig};
    use tungstenite::Message;

    /// The client's bytes in, the server's answers out (bounded, then dropped).
    struct Pipe {
        input: Cursor<Vec<u8>>,
        written: usize,
    }
    impl Read for Pipe {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.input.read(buf)
        }
    }
    impl Write for Pipe {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.written += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    const LIMIT: usize = 4096;
    let config = WebSocketConfig::default()
        .max_message_size(Some(LIMIT))
        .max_frame_size(Some(LIMIT));
    let pipe = Pipe {
        input: Cursor::new(data.to_vec()),
        written: 0,
    };
    let mut ws = WebSocket::from_raw_socket(pipe, Role::Server, Some(config));
    // Every message consumes at least two bytes of input, so this ends; the bound is belt and
    // braces.
    for _ in 0..=data.len() {
        match ws.read() {
            Ok(Message::Text(text)) => {
                assert!(
                    text.len() <= LIMIT,
                    "a text message of {} bytes",
                    text.len()
                );
                chat_hello(text.as_bytes());
            }
            Ok(Message::Binary(b)) => assert!(b.len() <= LIMIT, "binary of {} bytes", b.len()),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    // Answers (pongs, a close) are bounded by what came in.
    assert!(
        ws.get_ref().written <= data.len() + 1024,
        "answered more than was sent"
    );
}
