//! Splitting client input into lines without ever buffering more than the line limit, with what
//! telnet sends understood on the way: its option negotiation is answered (every option refused but
//! the timing mark that Ctrl-C asks to be acknowledged) and stripped, and its editing — backspace,
//! DEL, erase character, erase line, interrupt — applied to the line being typed.
//!
//! tokio-util's `LinesCodec` cannot be used as is: it decodes UTF-8 (GBK clients send other bytes),
//! and the session needs the partial line to turn unterminated input into a message after a pause.
//!
//! Telnet commands are recognised for every client, whatever its encoding: they begin with 0xFF
//! (IAC), a byte that neither UTF-8 nor GBK text ever holds, and JSON lines are UTF-8.

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::Decoder;

use super::wire::Format;

/// What the decoder found in the input.
#[derive(Debug, PartialEq, Eq)]
pub enum Input {
    /// A complete line, without its `\n` or `\r\n`.
    Line(BytesMut),
    /// A line longer than the limit began; its bytes up to the next newline are being discarded.
    TooLong,
    /// New bytes arrived but no newline yet, from a client that has never sent one (the session
    /// starts its pause timer).
    Partial,
    /// Telnet negotiation to send back to the client, as is.
    Answer(Bytes),
}

/// Why a client's input ended the session.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    #[error("too much input without a newline")]
    Flood,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

// Telnet's bytes. TIMING-MARK: telnet sends `IAC IP IAC DO TIMING-MARK` for Ctrl-C and shows
// nothing more until it is answered.
use crate::net::telnet::{DO, DONT, EC, EL, IAC, IP, SB, SE, TIMING_MARK, WILL, WONT};

const BS: u8 = 0x08;
const DEL: u8 = 0x7f;

/// How far back [`LineDecoder`] looks for the start of the GBK character before a backspace: the
/// length of a run of high bytes decides it, and the look is bounded so that backspaces cost the
/// same on any line; a run longer than this (128 Chinese characters without an ASCII one) is taken
/// to start on a character.
const GBK_LOOK_BACK: usize = 256;

/// Where the telnet command parser is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Telnet {
    Data,
    /// After IAC.
    Iac,
    /// After IAC WILL/WONT/DO/DONT: the option byte comes next.
    Option(u8),
    /// Inside IAC SB ... IAC SE (skipped).
    Sub,
    /// After IAC inside a subnegotiation.
    SubIac,
}

/// Splits bytes into lines of at most `max` bytes. Over-long input is discarded up to the next
/// newline; more than `cutoff` discarded bytes without one is a [`LineError::Flood`].
#[derive(Debug)]
pub struct LineDecoder {
    max: usize,
    cutoff: usize,
    /// Bytes of an over-long line thrown away so far; `None` when not discarding.
    discarded: Option<usize>,
    /// Where to resume the newline search, so a line arriving in pieces is scanned once.
    scanned: usize,
    /// Buffer length when `Partial` was last reported, so it is reported once per arrival.
    reported: usize,
    /// Whether the client is known to end its lines — it has ended one, or spoken telnet, which
    /// always does (and may send a key at a time): then unterminated input is only a line still
    /// arriving, and the pause rule is not for it.
    terminated: bool,
    /// How much of the buffer has been through [`LineDecoder::cook`] (telnet and editing).
    cooked: usize,
    /// Where the line being typed begins in the buffer (what erasing stops at).
    line_start: usize,
    telnet: Telnet,
    /// Bytes of the current subnegotiation, bounded by `cutoff` like a line without a newline.
    sub_len: usize,
    /// Negotiation answers not yet handed out.
    answers: Vec<u8>,
    /// How backspace finds the character before it: `None` applies no editing (JSON lines, where
    /// a DEL is text and a backspace is escaped).
    editing: Option<Format>,
}

impl LineDecoder {
    pub fn new(max: usize, cutoff: usize) -> Self {
        LineDecoder {
            max,
            cutoff,
            discarded: None,
            scanned: 0,
            reported: 0,
            terminated: false,
            cooked: 0,
            line_start: 0,
            telnet: Telnet::Data,
            sub_len: 0,
            answers: Vec::new(),
            editing: Some(Format::Utf8),
        }
    }

    /// Sets the client's wire format, which says what a character is for backspace (UTF-8 or GBK),
    /// or that there is no editing (JSON).
    pub fn set_format(&mut self, format: Format) {
        self.editing = (format != Format::Json).then_some(format);
    }

    /// Takes whatever partial line is buffered (the pause rule), unless it is being discarded:
    /// a line, or [`Input::TooLong`] when the unterminated input is over the limit.
    pub fn take_partial(&mut self, buf: &mut BytesMut) -> Option<Input> {
        self.scanned = 0;
        self.reported = 0;
        if buf.is_empty() || self.discarded.is_some() {
            return None;
        }
        let mut line = buf.split();
        self.cooked = 0;
        self.line_start = 0;
        strip_cr(&mut line);
        if line.len() > self.max {
            return Some(Input::TooLong);
        }
        Some(Input::Line(line))
    }

    /// Runs the bytes that arrived since the last call through the telnet parser and the line
    /// editor, compacting them in place: what is left is the text typed.
    fn cook(&mut self, buf: &mut BytesMut) -> Result<(), LineError> {
        let mut w = self.cooked;
        // The lowest position rewritten: the newline search must look again from there.
        let mut low = w;
        for r in self.cooked..buf.len() {
            low = low.min(w);
            let b = buf[r];
            match self.telnet {
                Telnet::Data => match b {
                    IAC => {
                        self.telnet = Telnet::Iac;
                        self.terminated = true;
                    }
                    BS | DEL if self.editing.is_some() => w = self.erase_char(buf, w),
                    // Telnet's bare carriage return (CR NUL) ends a line as CR LF does.
                    0 if w > self.line_start && buf[w - 1] == b'\r' => {
                        low = low.min(w - 1);
                        buf[w - 1] = b'\n';
                        self.line_start = w;
                    }
                    _ => {
                        buf[w] = b;
                        w += 1;
                        if b == b'\n' {
                            self.line_start = w;
                        }
                    }
                },
                Telnet::Iac => {
                    self.telnet = Telnet::Data;
                    match b {
                        WILL | WONT | DO | DONT => self.telnet = Telnet::Option(b),
                        SB => {
                            self.telnet = Telnet::Sub;
                            self.sub_len = 0;
                        }
                        // Interrupt (Ctrl-C) and erase line drop what was typed of the line.
                        IP | EL => w = self.line_start,
                        EC if self.editing.is_some() => w = self.erase_char(buf, w),
                        // IAC IAC is a 0xFF data byte, which is no text in any encoding here
                        // (it would only show as U+FFFD); NOP, data mark, go ahead and the rest
                        // ask for nothing a line-at-a-time chat has to do.
                        _ => {}
                    }
                }
                Telnet::Option(verb) => {
                    self.telnet = Telnet::Data;
                    self.answer(verb, b);
                }
                Telnet::Sub => {
                    if b == IAC {
                        self.telnet = Telnet::SubIac;
                    } else {
                        self.sub_len += 1;
                        if self.sub_len > self.cutoff {
                            return Err(LineError::Flood);
                        }
                    }
                }
                Telnet::SubIac => {
                    self.telnet = if b == SE { Telnet::Data } else { Telnet::Sub };
                }
            }
        }
        buf.truncate(w);
        self.cooked = w;
        self.scanned = self.scanned.min(low.min(w));
        Ok(())
    }

    /// Answers one option request. Every option is refused (RFC 1143: a request to enable what
    /// is not enabled gets a refusal; one to disable it, nothing), so the client stays in the
    /// line-at-a-time mode it starts in and nothing can loop. The exception is a timing mark,
    /// which is acknowledged: telnet waits for that before it shows the room again after Ctrl-C.
    fn answer(&mut self, verb: u8, option: u8) {
        let reply = match verb {
            DO if option == TIMING_MARK => WILL,
            DO => WONT,
            WILL => DONT,
            _ => return,
        };
        // Bounded by what the client sent (three bytes for three), and then by its send queue.
        self.answers.extend_from_slice(&[IAC, reply, option]);
    }

    /// Erases the last character of the line being typed in `buf[..w]`; returns the new end.
    fn erase_char(&self, buf: &[u8], w: usize) -> usize {
        let start = self.line_start;
        if w <= start {
            return w;
        }
        match self.editing {
            Some(Format::Gbk) => w - gbk_last_char_len(&buf[start..w]),
            _ => {
                // UTF-8: back over at most three continuation bytes to the lead byte.
                let mut i = w - 1;
                while i > start && w - i < 4 && buf[i] & 0xC0 == 0x80 {
                    i -= 1;
                }
                i
            }
        }
    }

    fn split_line(&mut self, buf: &mut BytesMut) -> Result<Option<Input>, LineError> {
        if let Some(discarded) = self.discarded {
            return match buf.iter().position(|b| *b == b'\n') {
                Some(i) => {
                    buf.advance(i + 1);
                    self.discarded = None;
                    self.terminated = true;
                    self.split_line(buf)
                }
                None => {
                    let total = discarded + buf.len();
                    buf.clear();
                    if total > self.cutoff {
                        return Err(LineError::Flood);
                    }
                    self.discarded = Some(total);
                    Ok(None)
                }
            };
        }
        let limit = buf.len().min(self.max + 2);
        match buf[self.scanned..limit].iter().position(|b| *b == b'\n') {
            Some(rel) => {
                let i = self.scanned + rel;
                self.scanned = 0;
                self.reported = 0;
                self.terminated = true;
                let mut line = buf.split_to(i + 1);
                line.truncate(i);
                strip_cr(&mut line);
                if line.len() > self.max {
                    return Ok(Some(Input::TooLong));
                }
                Ok(Some(Input::Line(line)))
            }
            None if buf.len() > self.max + 1 => {
                self.scanned = 0;
                self.reported = 0;
                // The line is too long: drop it through its newline if that has arrived, else
                // drop everything and keep dropping until one does.
                match buf[limit..].iter().position(|b| *b == b'\n') {
                    Some(rel) => {
                        buf.advance(limit + rel + 1);
                        self.terminated = true;
                    }
                    None => {
                        self.discarded = Some(buf.len());
                        buf.clear();
                    }
                }
                Ok(Some(Input::TooLong))
            }
            None => {
                self.scanned = limit;
                if !self.terminated && !buf.is_empty() && buf.len() != self.reported {
                    self.reported = buf.len();
                    return Ok(Some(Input::Partial));
                }
                Ok(None)
            }
        }
    }
}

/// The length of the last GBK character of `line` (1 or 2 bytes). A lead byte is 0x81-0xFE and a
/// trail byte 0x40-0xFE but 0x7F, so which byte a character starts at is told by the parity of
/// the run of high bytes before the end: the line is characters end to end, and a run of high
/// bytes starts on one. (GB18030's four-byte characters are no GBK; they are erased a byte at a
/// time.)
fn gbk_last_char_len(line: &[u8]) -> usize {
    let high = |b: u8| (0x81..=0xFE).contains(&b);
    let run_before = |end: usize| {
        line[..end]
            .iter()
            .rev()
            .take(GBK_LOOK_BACK)
            .take_while(|b| high(**b))
            .count()
    };
    let n = line.len();
    let last = line[n - 1];
    let pair = if high(last) {
        // `last` is a trail byte if the high run it ends has even length.
        run_before(n) % 2 == 0
    } else if (0x40..=0x80).contains(&last) {
        // A low trail byte if the run before it ends in a lead byte (odd length).
        run_before(n - 1) % 2 == 1
    } else {
        false
    };
    if pair && n >= 2 {
        2
    } else {
        1
    }
}

fn strip_cr(line: &mut BytesMut) {
    if line.last() == Some(&b'\r') {
        line.truncate(line.len() - 1);
    }
}

impl Decoder for LineDecoder {
    type Item = Input;
    type Error = LineError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Input>, LineError> {
        self.cook(buf)?;
        if !self.answers.is_empty() {
            return Ok(Some(Input::Answer(Bytes::from(std::mem::take(
                &mut self.answers,
            )))));
        }
        let before = buf.len();
        let found = self.split_line(buf);
        // Only whole lines leave the buffer, from its front: what remains was cooked.
        let gone = before - buf.len();
        self.line_start = self.line_start.saturating_sub(gone);
        self.cooked = buf.len();
        found
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Input>, LineError> {
        match self.decode(buf)? {
            Some(Input::Partial) | None => Ok(self.take_partial(buf)),
            Some(input) => Ok(Some(input)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(max: usize, chunks: &[&[u8]]) -> Vec<Result<Input, String>> {
        let mut d = LineDecoder::new(max, 100);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for c in chunks {
            buf.extend_from_slice(c);
            loop {
                match d.decode(&mut buf) {
                    Ok(Some(Input::Partial)) => {}
                    Ok(Some(i)) => out.push(Ok(i)),
                    Ok(None) => break,
                    Err(e) => {
                        out.push(Err(e.to_string()));
                        return out;
                    }
                }
            }
        }
        out
    }

    fn line(s: &str) -> Result<Input, String> {
        Ok(Input::Line(BytesMut::from(s)))
    }

    #[test]
    fn splits_lines_across_chunks() {
        assert_eq!(
            lines(10, &[b"ab", b"c\r\nde\n", b"f\n"]),
            vec![line("abc"), line("de"), line("f")]
        );
    }

    #[test]
    fn long_lines_are_refused_and_floods_cut_off() {
        let out = lines(4, &[b"123456789\nok\n"]);
        assert_eq!(out, vec![Ok(Input::TooLong), line("ok")]);
        let out = lines(4, &[b"12345", b"6789", b"abc\nok\n"]);
        assert_eq!(out, vec![Ok(Input::TooLong), line("ok")]);
        let flood = vec![&[b'x'; 60][..]; 3];
        let out = lines(4, &flood);
        assert_eq!(
            out.last().unwrap().as_ref().unwrap_err(),
            "too much input without a newline"
        );
    }

    #[test]
    fn a_paused_partial_over_the_limit_is_refused() {
        let mut d = LineDecoder::new(4, 100);
        let mut buf = BytesMut::from(&b"12345"[..]);
        assert_eq!(d.decode(&mut buf).unwrap(), Some(Input::Partial));
        assert_eq!(d.take_partial(&mut buf), Some(Input::TooLong));
        let mut buf = BytesMut::from(&b"1234"[..]);
        assert_eq!(
            d.take_partial(&mut buf),
            Some(Input::Line(BytesMut::from("1234")))
        );
    }

    /// Feeds `chunks` to a decoder for `format`: the lines and the telnet answers.
    fn telnet(format: Format, chunks: &[&[u8]]) -> (Vec<String>, Vec<u8>) {
        let mut d = LineDecoder::new(100, 1000);
        d.set_format(format);
        let mut buf = BytesMut::new();
        let (mut lines, mut answers) = (Vec::new(), Vec::new());
        for c in chunks {
            buf.extend_from_slice(c);
            while let Some(input) = d.decode(&mut buf).unwrap() {
                match input {
                    Input::Line(l) => lines.push(String::from_utf8_lossy(&l).into_owned()),
                    Input::Answer(a) => answers.extend_from_slice(&a),
                    _ => {}
                }
            }
        }
        (lines, answers)
    }

    #[test]
    fn telnet_commands_are_answered_and_stripped() {
        let (lines, answers) = telnet(
            Format::Utf8,
            &[
                b"\xff\xfd\x03\xff\xfb\x01\xff\xfa\x18\x00xterm\xff\xf0hi\r\n",
                b"typing\xff\xf4\xff\xfd\x06ok\r\n",
                b"ab\xff",
                b"\xf7c\xff\xffd\xff\xf8e\r\0",
            ],
        );
        assert_eq!(lines, ["hi", "ok", "e"]);
        assert_eq!(answers, b"\xff\xfc\x03\xff\xfe\x01\xff\xfb\x06");
    }

    #[test]
    fn backspace_erases_one_character_of_the_line_being_typed() {
        let (lines, _) = telnet(
            Format::Utf8,
            &[b"ab\x08c\n\x08x", "é\x7f中\x7f\x7fy\n".as_bytes()],
        );
        assert_eq!(lines, ["ac", "y"]);
        let gbk = |s: &str| encoding_rs::GBK.encode(s).0.into_owned();
        let mut input = gbk("a你丂");
        input.extend_from_slice(b"\x08");
        input.extend_from_slice(&gbk("你@\x08\x08"));
        input.extend_from_slice(b"\n");
        let (lines, _) = telnet(Format::Gbk, &[&input]);
        assert_eq!(lines.len(), 1);
        let want = String::from_utf8_lossy(&gbk("a你")).into_owned();
        assert_eq!(lines[0], want);
        // JSON clients: DEL is text.
        let (lines, _) = telnet(Format::Json, &[b"{\"text\":\"a\x7f\"}\n"]);
        assert_eq!(lines, ["{\"text\":\"a\x7f\"}"]);
    }

    #[test]
    fn no_partial_once_a_line_was_ended() {
        let mut d = LineDecoder::new(10, 100);
        let mut buf = BytesMut::from(&b"hel"[..]);
        assert_eq!(d.decode(&mut buf).unwrap(), Some(Input::Partial));
        buf.extend_from_slice(b"lo\nwor");
        assert_eq!(
            d.decode(&mut buf).unwrap(),
            Some(Input::Line(BytesMut::from("hello")))
        );
        assert_eq!(d.decode(&mut buf).unwrap(), None);
        // Telnet ends its lines, even when it sends a key at a time.
        let mut d = LineDecoder::new(10, 100);
        let mut buf = BytesMut::from(&b"\xff\xfb\x1fh"[..]);
        assert!(matches!(
            d.decode(&mut buf).unwrap(),
            Some(Input::Answer(_))
        ));
        assert_eq!(d.decode(&mut buf).unwrap(), None);
    }

    #[test]
    fn an_endless_subnegotiation_is_a_flood() {
        let mut d = LineDecoder::new(10, 100);
        let mut buf = BytesMut::from(&b"\xff\xfa\x18"[..]);
        buf.extend_from_slice(&[b'x'; 200]);
        assert!(matches!(d.decode(&mut buf), Err(LineError::Flood)));
    }

    #[test]
    fn exactly_max_is_fine() {
        assert_eq!(lines(4, &[b"1234\r\n"]), vec![line("1234")]);
    }
}
