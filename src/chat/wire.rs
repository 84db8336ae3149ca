//! How clients speak: plain lines (UTF-8 or GBK, for nc/telnet and the tutorial clients) or JSON
//! lines (sockit's own clients, negotiated by their first line). Decoding input, encoding output, and
//! the replies a session sends only to its own client.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;
use unicode_normalization::char::is_combining_mark;
use unicode_script::{Script, UnicodeScript};
use unicode_segmentation::UnicodeSegmentation;

use super::names::is_invisible;

/// The first line a structured client sends: `{"sockit":"chat","proto":"json", "nick":..,"room":..}`.
#[derive(Debug, Deserialize)]
pub struct Hello {
    pub sockit: String,
    #[serde(default)]
    pub proto: Option<String>,
    #[serde(default)]
    pub nick: Option<String>,
    #[serde(default)]
    pub room: Option<String>,
}

impl Hello {
    /// Parses `line` as a hello, if it is one.
    pub fn parse(line: &[u8]) -> Option<Hello> {
        if line.first() != Some(&b'{') {
            return None;
        }
        let hello: Hello = serde_json::from_slice(line).ok()?;
        (hello.sockit == "chat" && hello.proto.as_deref().unwrap_or("json") == "json")
            .then_some(hello)
    }
}

/// One line from a JSON client: `{"text":"hello"}` (text may be a /command).
#[derive(Debug, Deserialize)]
struct JsonInput {
    text: String,
}

/// A client's wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Plain text lines in UTF-8; invalid input bytes are replaced with U+FFFD.
    Utf8,
    /// Plain text lines in GBK (the tutorials' Chinese terminals).
    Gbk,
    /// One JSON object per line.
    Json,
}

impl Format {
    pub const COUNT: usize = 3;

    pub fn index(self) -> usize {
        self as usize
    }

    pub(crate) fn from_index(i: u8) -> Format {
        match i {
            1 => Format::Gbk,
            2 => Format::Json,
            _ => Format::Utf8,
        }
    }

    /// Decodes one input line into text, or says why it is not acceptable.
    pub fn decode(self, line: &[u8]) -> Result<String, String> {
        let text = match self {
            Format::Utf8 => String::from_utf8_lossy(line).into_owned(),
            Format::Gbk => encoding_rs::GBK.decode(line).0.into_owned(),
            Format::Json => {
                let input: JsonInput = serde_json::from_slice(line).map_err(|e| {
                    format!("not a JSON message ({e}); expected {{\"text\":\"...\"}}")
                })?;
                input.text
            }
        };
        Ok(sanitize(&text))
    }

    /// Encodes a plain line for a plain client (CRLF, which telnet needs and nc shows as a newline).
    pub fn encode_line(self, text: &str) -> Bytes {
        let mut out = match self {
            Format::Gbk => encoding_rs::GBK.encode(text).0.into_owned(),
            _ => text.as_bytes().to_vec(),
        };
        out.extend_from_slice(b"\r\n");
        Bytes::from(out)
    }

    /// A reply only this client sees: `-!- ...` (`-!- error: ...`) for plain clients ([`server_line`]), `{"type":kind,..}`
    /// for JSON ones, where `extra` adds structured fields.
    pub fn reply(self, kind: ReplyKind, text: &str, extra: Option<serde_json::Value>) -> Bytes {
        match self {
            Format::Json => {
                let mut v = json!({ "type": kind, "text": text });
                if let (Some(obj), Some(serde_json::Value::Object(more))) =
                    (v.as_object_mut(), extra)
                {
                    obj.extend(more);
                }
                let mut bytes = serde_json::to_vec(&v).unwrap_or_default();
                bytes.push(b'\n');
                Bytes::from(bytes)
            }
            _ => self.encode_line(&server_line(kind == ReplyKind::Error, text)),
        }
    }
}

/// What a reply to one client is about: its `type` on the JSON wire. One enum for the server,
/// which sends it, and for `chat join`, which reads it ([`crate::chat::client::protocol`]), so a
/// kind cannot be renamed on one side only. Kinds this build does not know read as `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplyKind {
    Welcome,
    Nick,
    Members,
    Rooms,
    History,
    HistoryEnd,
    Error,
    Info,
    Help,
    Motd,
    Bye,
    Notice,
    /// The server delays this client's lines (its rate limit): they will arrive, later.
    Slowed,
    /// A room's topic (`/topic`, and after a join).
    Topic,
    /// `/whois`.
    Whois,
    /// This client's away message was set or cleared.
    Away,
    /// The one this client sent a private message to is away.
    IsAway,
    /// A kind from a newer server (only read, never sent).
    #[serde(other)]
    Other,
}

/// How every line the server itself says to a plain client begins (after the `[HH:MM:SS] ` stamp for
/// events): replies, errors, and join, leave, nick and notice events. No user line can begin so:
/// messages are `<nick> ...`, actions `* nick ...`, private messages `*nick -> nick* ...`, every one
/// of them stamped, and user text cannot start a row of its own (see [`sanitize`]).
pub const SERVER_MARK: &str = "-!- ";

/// A reply or error as a plain client sees it: `-!- text`, `-!- error: text`.
pub fn server_line(error: bool, text: &str) -> String {
    if error {
        format!("{SERVER_MARK}error: {text}")
    } else {
        format!("{SERVER_MARK}{text}")
    }
}

/// Longest run of blanks (spaces, tabs, other Unicode spaces, the blank braille cell) kept as it is
/// typed; a longer one becomes one space, so no run of blanks can push the text after it onto a
/// row of its own, where it would pass for a line of its own (`<ann> hi` + 118 spaces +
/// `[12:00:00] <bob> ...`). Three keeps the double spaces people type.
const MAX_BLANKS: usize = 3;

/// Cleans one line of user input: trims the line ending; replaces with U+FFFD what would act on
/// others' screens rather than show (control characters, so no terminal escape sequences; bidi
/// controls such as U+202E, which reorder the rest of the line; zero-width and other invisible
/// characters such as U+200B and the Hangul fillers, which hide text or make one word look like
/// another; the line and paragraph separators U+2028/U+2029, which break lines in some clients);
/// and collapses long runs of blanks ([`MAX_BLANKS`]), tabs becoming spaces.
///
/// Kept, because text needs them and they join only what is visible: a zero-width joiner inside
/// one grapheme cluster (emoji sequences such as 👩‍💻, Indic conjuncts), a zero-width non-joiner
/// between two letters of a script that uses it (Persian, Indic scripts; not Latin, Greek,
/// Cyrillic, where it only hides), a variation selector right after a visible character (❤️; a
/// second one would carry hidden data), and the tag characters of a flag sequence (🏴 + tags +
/// cancel tag; elsewhere they smuggle invisible ASCII).
pub(crate) fn sanitize(text: &str) -> String {
    let text = text.trim_end_matches(['\r', '\n']);
    // Each character, and whether more of its grapheme cluster follows it.
    // (Only joiners ask; ASCII has none, and most lines are ASCII.)
    let mut chars: Vec<(char, bool)> = Vec::with_capacity(text.len());
    if text.is_ascii() {
        chars.extend(text.chars().map(|c| (c, false)));
    } else {
        for g in text.graphemes(true) {
            let mut it = g.chars().peekable();
            while let Some(c) = it.next() {
                chars.push((c, it.peek().is_some()));
            }
        }
    }
    let mut out = String::with_capacity(text.len());
    let mut blanks = String::new();
    let mut run = 0;
    // Whether the run of tag characters being read is a flag's (decided once per run).
    let mut flag_tags = false;
    for (i, &(c, inside)) in chars.iter().enumerate() {
        if is_blank(c) {
            blanks.push(if c == '\t' { ' ' } else { c });
            run += 1;
            continue;
        }
        if run > 0 {
            if run > MAX_BLANKS {
                out.push(' ');
            } else {
                out.push_str(&blanks);
            }
            blanks.clear();
            run = 0;
        }
        let prev = i.checked_sub(1).map(|p| chars[p].0);
        let next = chars.get(i + 1).map(|n| n.0);
        let keep = match c {
            '\u{2028}' | '\u{2029}' => false,
            ZWJ => inside && next.is_some_and(|n| !is_combining_mark(n) && !is_invisible(n)),
            ZWNJ => joins_letters(&chars[..i], next),
            c if is_variation_selector(c) => {
                prev.is_some_and(|p| !is_invisible(p) && !is_variation_selector(p))
            }
            c if is_tag(c) => {
                if !prev.is_some_and(is_tag) {
                    flag_tags = prev == Some('\u{1F3F4}') && flag_tags_end(&chars[i..]);
                }
                flag_tags
            }
            c => !is_invisible(c),
        };
        out.push(if keep { c } else { '\u{FFFD}' });
    }
    if run > MAX_BLANKS {
        out.push(' ');
    } else {
        out.push_str(&blanks);
    }
    out
}

const ZWJ: char = '\u{200D}';
const ZWNJ: char = '\u{200C}';

/// Whether `c` shows as empty space. Line and paragraph separators are not blanks but breaks.
fn is_blank(c: char) -> bool {
    c == '\t'
        || c == '\u{2800}'
        || (c.is_whitespace() && !c.is_control() && !matches!(c, '\u{2028}' | '\u{2029}'))
}

fn is_variation_selector(c: char) -> bool {
    matches!(c, '\u{FE00}'..='\u{FE0F}' | '\u{E0100}'..='\u{E01EF}' | '\u{180B}'..='\u{180D}' | '\u{180F}')
}

fn is_tag(c: char) -> bool {
    matches!(c, '\u{E0020}'..='\u{E007F}')
}

/// Whether the run of tag characters that `chars` starts with ends with the cancel tag U+E007F, as
/// a flag's does (🏴 + tags + cancel tag).
fn flag_tags_end(chars: &[(char, bool)]) -> bool {
    chars
        .iter()
        .take_while(|(c, _)| is_tag(*c))
        .last()
        .is_some_and(|(c, _)| *c == '\u{E007F}')
}

/// Whether a zero-width non-joiner between `before` (the line so far) and `next` stands between two
/// letters of one script that writes with it: the letter before (skipping its combining marks) and
/// the one after share a script other than Latin, Greek, Cyrillic or the common ones.
fn joins_letters(before: &[(char, bool)], next: Option<char>) -> bool {
    let Some(next) = next else { return false };
    let Some(&(prev, _)) = before.iter().rev().find(|(c, _)| !is_combining_mark(*c)) else {
        return false;
    };
    let script = prev.script();
    prev.is_alphabetic()
        && next.is_alphabetic()
        && next.script() == script
        && !matches!(
            script,
            Script::Latin
                | Script::Greek
                | Script::Cyrillic
                | Script::Common
                | Script::Inherited
                | Script::Unknown
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_and_event_kinds_read_back_as_sent_and_unknown_ones_as_other() {
        use crate::chat::event::Kind;
        for kind in [
            ReplyKind::Welcome,
            ReplyKind::HistoryEnd,
            ReplyKind::IsAway,
            ReplyKind::Slowed,
        ] {
            let sent = Format::Json.reply(kind, "x", None);
            let v: serde_json::Value = serde_json::from_slice(&sent).unwrap();
            let back: ReplyKind = serde_json::from_value(v["type"].clone()).unwrap();
            assert_eq!(back, kind);
        }
        let later: ReplyKind = serde_json::from_str("\"from_a_newer_server\"").unwrap();
        assert_eq!(later, ReplyKind::Other);
        let later: Kind = serde_json::from_str("\"poll\"").unwrap();
        assert_eq!(later, Kind::Other);
        let topic: Kind =
            serde_json::from_str(&serde_json::to_string(&Kind::Topic).unwrap()).unwrap();
        assert_eq!(topic, Kind::Topic);
    }

    #[test]
    fn decodes_each_format() {
        assert_eq!(
            Format::Utf8.decode(b"hi\xffthere").unwrap(),
            "hi\u{FFFD}there"
        );
        assert_eq!(
            Format::Utf8.decode(b"\x1b[2Jboom\r").unwrap(),
            "\u{FFFD}[2Jboom"
        );
        let (gbk, _, _) = encoding_rs::GBK.encode("你好");
        assert_eq!(Format::Gbk.decode(&gbk).unwrap(), "你好");
        assert_eq!(Format::Json.decode(br#"{"text":"/who"}"#).unwrap(), "/who");
        assert!(Format::Json.decode(b"nope").is_err());
    }

    #[test]
    fn sanitize_neutralises_what_acts_instead_of_showing() {
        assert_eq!(
            sanitize("a\u{202e}b\u{200b}c\u{2028}d"),
            "a\u{FFFD}b\u{FFFD}c\u{FFFD}d"
        );
        assert_eq!(sanitize("x\u{3164}y\u{feff}"), "x\u{FFFD}y\u{FFFD}");
        // Joiners that join something visible stay; the others do not.
        assert_eq!(sanitize("👩\u{200d}💻"), "👩\u{200d}💻");
        assert_eq!(sanitize("a\u{200d}b"), "a\u{FFFD}b");
        assert_eq!(sanitize("👩\u{200d}"), "👩\u{FFFD}");
        assert_eq!(sanitize("می\u{200c}خواهم"), "می\u{200c}خواهم");
        assert_eq!(sanitize("a\u{200c}b"), "a\u{FFFD}b");
        assert_eq!(sanitize("❤\u{fe0f}"), "❤\u{fe0f}");
        assert_eq!(sanitize("❤\u{fe0f}\u{fe0f}"), "❤\u{fe0f}\u{FFFD}");
        let flag = "🏴\u{e0067}\u{e0062}\u{e0073}\u{e0063}\u{e0074}\u{e007f}";
        assert_eq!(sanitize(flag), flag);
        assert_eq!(sanitize("a\u{e0041}\u{e007f}"), "a\u{FFFD}\u{FFFD}");
    }

    #[test]
    fn sanitize_collapses_long_runs_of_blanks() {
        assert_eq!(sanitize(&format!("a{}b", " ".repeat(118))), "a b");
        assert_eq!(sanitize("a\tb"), "a b");
        assert_eq!(sanitize("a   b  c"), "a   b  c");
        assert_eq!(sanitize("a \u{3000}\u{a0}\u{2800}b"), "a b");
        assert_eq!(sanitize("    indented"), " indented");
        assert_eq!(sanitize("end    "), "end ");
    }

    #[test]
    fn replies_carry_the_server_mark() {
        assert_eq!(
            &Format::Utf8.reply(ReplyKind::Info, "hi", None)[..],
            b"-!- hi\r\n"
        );
        assert_eq!(
            &Format::Utf8.reply(ReplyKind::Error, "no", None)[..],
            b"-!- error: no\r\n"
        );
    }

    #[test]
    fn hello_is_recognised_only_when_exact() {
        assert!(Hello::parse(br#"{"sockit":"chat","nick":"ann"}"#).is_some());
        assert!(Hello::parse(br#"{"sockit":"other"}"#).is_none());
        assert!(Hello::parse(b"hello").is_none());
    }
}
