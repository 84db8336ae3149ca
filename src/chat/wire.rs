//! How clients speak: plain lines (UTF-8 or GBK, for nc/telnet and the tutorial clients) or JSON
//! lines (sockit's own clients, negotiated by their first line). Decoding input, encoding output, and
//! the replies a session sends only to its own client.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;

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

    /// A reply only this client sees: informational (`* ...`) for plain clients, `{"type":kind,..}`
    /// for JSON ones, where `extra` adds structured fields.
    pub fn reply(self, kind: &str, text: &str, extra: Option<serde_json::Value>) -> Bytes {
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
            _ => {
                let prefix = if kind == "error" { "! " } else { "* " };
                self.encode_line(&format!("{prefix}{text}"))
            }
        }
    }
}

/// Replaces control characters (other than tab) so one client cannot send terminal escape sequences
/// to everyone else's terminal, and trims the line ending.
pub(crate) fn sanitize(text: &str) -> String {
    text.trim_end_matches(['\r', '\n'])
        .chars()
        .map(|c| {
            if c.is_control() && c != '\t' {
                '\u{FFFD}'
            } else {
                c
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn hello_is_recognised_only_when_exact() {
        assert!(Hello::parse(br#"{"sockit":"chat","nick":"ann"}"#).is_some());
        assert!(Hello::parse(br#"{"sockit":"other"}"#).is_none());
        assert!(Hello::parse(b"hello").is_none());
    }
}
