//! Upper-casing a byte stream that may split UTF-8 characters across reads.

/// Upper-cases UTF-8 text arriving in arbitrary chunks. A character cut by a chunk boundary is held
/// back until its remaining bytes arrive; bytes that are not UTF-8 pass through unchanged, so the
/// stream stays binary-safe apart from the letters.
#[derive(Debug, Default)]
pub struct Upcaser {
    carry: Vec<u8>,
    out: Vec<u8>,
}

impl Upcaser {
    /// Upper-cases `input`, returning the bytes ready to send.
    pub fn apply(&mut self, input: &[u8]) -> &[u8] {
        self.out.clear();
        let joined;
        let data: &[u8] = if self.carry.is_empty() {
            input
        } else {
            let mut j = std::mem::take(&mut self.carry);
            j.extend_from_slice(input);
            joined = j;
            &joined
        };
        let mut rest = data;
        loop {
            match std::str::from_utf8(rest) {
                Ok(text) => {
                    push_upper(&mut self.out, text);
                    break;
                }
                Err(e) => {
                    let (good, bad) = rest.split_at(e.valid_up_to());
                    // `valid_up_to` guarantees `good` is UTF-8; the default is never used.
                    push_upper(&mut self.out, std::str::from_utf8(good).unwrap_or_default());
                    match e.error_len() {
                        None => {
                            self.carry.extend_from_slice(bad);
                            break;
                        }
                        Some(len) => {
                            self.out.extend_from_slice(&bad[..len]);
                            rest = &bad[len..];
                        }
                    }
                }
            }
        }
        &self.out
    }

    /// Returns bytes held back at the end of the stream (an unfinished character), unchanged.
    pub fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.carry)
    }
}

fn push_upper(out: &mut Vec<u8>, text: &str) {
    if text.is_ascii() {
        out.extend(text.bytes().map(|b| b.to_ascii_uppercase()));
    } else {
        out.extend_from_slice(text.to_uppercase().as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upper_cases_across_split_characters() {
        let mut u = Upcaser::default();
        let text = "héllo straße".as_bytes();
        let mut out = Vec::new();
        for chunk in text.chunks(1) {
            out.extend_from_slice(u.apply(chunk));
        }
        out.extend(u.finish());
        assert_eq!(String::from_utf8(out).unwrap(), "HÉLLO STRASSE");
    }

    #[test]
    fn binary_passes_through() {
        let mut u = Upcaser::default();
        let data = [0xff, b'a', 0x00, 0xfe, b'z'];
        assert_eq!(u.apply(&data), &[0xff, b'A', 0x00, 0xfe, b'Z']);
    }
}
