//! `-C/--crlf`: turns bare LF into CRLF in what is typed, for line protocols (SMTP, HTTP by hand)
//! that insist on CRLF. Existing CRLF pairs stay as they are, also when split across reads.

use bytes::{BufMut, Bytes, BytesMut};

/// Stateful LF → CRLF conversion over a stream cut into arbitrary chunks.
#[derive(Debug, Default)]
pub(crate) struct Crlf {
    last_was_cr: bool,
}

impl Crlf {
    pub(crate) fn apply(&mut self, chunk: &[u8]) -> Bytes {
        let mut out = BytesMut::with_capacity(chunk.len() + chunk.len() / 16 + 1);
        for &b in chunk {
            if b == b'\n' && !self.last_was_cr {
                out.put_u8(b'\r');
            }
            out.put_u8(b);
            self.last_was_cr = b == b'\r';
        }
        out.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_cr_only_where_missing() {
        let mut c = Crlf::default();
        assert_eq!(&c.apply(b"a\nb\r\nc")[..], b"a\r\nb\r\nc");
        // A CR at the end of one chunk and its LF at the start of the next stay one pair.
        assert_eq!(&c.apply(b"d\r")[..], b"d\r");
        assert_eq!(&c.apply(b"\ne\n")[..], b"\ne\r\n");
        assert_eq!(&c.apply(b"")[..], b"");
    }
}
