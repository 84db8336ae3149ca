//! Splitting client input into lines without ever buffering more than the line limit.
//!
//! tokio-util's `LinesCodec` cannot be used as is: it decodes UTF-8 (GBK clients send other bytes),
//! and the session needs the partial line to turn unterminated input into a message after a pause.

use bytes::{Buf, BytesMut};
use tokio_util::codec::Decoder;

/// What the decoder found in the input.
#[derive(Debug, PartialEq, Eq)]
pub enum Input {
    /// A complete line, without its `\n` or `\r\n`.
    Line(BytesMut),
    /// A line longer than the limit began; its bytes up to the next newline are being discarded.
    TooLong,
    /// New bytes arrived but no newline yet (the session starts its pause timer).
    Partial,
}

/// Why a client's input ended the session.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    #[error("too much input without a newline")]
    Flood,
    #[error(transparent)]
    Io(#[from] std::io::Error),
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
}

impl LineDecoder {
    pub fn new(max: usize, cutoff: usize) -> Self {
        LineDecoder {
            max,
            cutoff,
            discarded: None,
            scanned: 0,
            reported: 0,
        }
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
        strip_cr(&mut line);
        if line.len() > self.max {
            return Some(Input::TooLong);
        }
        Some(Input::Line(line))
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
        if let Some(discarded) = self.discarded {
            return match buf.iter().position(|b| *b == b'\n') {
                Some(i) => {
                    buf.advance(i + 1);
                    self.discarded = None;
                    self.decode(buf)
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
                    Some(rel) => buf.advance(limit + rel + 1),
                    None => {
                        self.discarded = Some(buf.len());
                        buf.clear();
                    }
                }
                Ok(Some(Input::TooLong))
            }
            None => {
                self.scanned = limit;
                if !buf.is_empty() && buf.len() != self.reported {
                    self.reported = buf.len();
                    return Ok(Some(Input::Partial));
                }
                Ok(None)
            }
        }
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

    #[test]
    fn exactly_max_is_fine() {
        assert_eq!(lines(4, &[b"1234\r\n"]), vec![line("1234")]);
    }
}
