//! `-t/--telnet`: answers a telnet server's option negotiation, as ncat does, so servers that wait
//! for an answer before they talk (many telnet daemons and MUDs) go on. Every option is refused
//! (`DO x` gets `WONT x`, `WILL x` gets `DONT x`); `WONT`/`DONT` need no answer (we are already in
//! that state, and answering them is how negotiation loops start, RFC 854). Unlike ncat, the
//! negotiation bytes are kept out of what is printed, anywhere in the stream and split across
//! reads; an escaped `IAC IAC` is the data byte 255.

use crate::net::telnet::{DO, DONT, IAC, SB, SE, WILL, WONT};

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    #[default]
    Data,
    /// After IAC.
    Command,
    /// After IAC WILL/WONT/DO/DONT: the option byte comes next.
    Option(u8),
    /// Inside IAC SB ... IAC SE.
    Sub,
    /// An IAC inside a subnegotiation.
    SubIac,
}

/// The negotiation state of one connection.
#[derive(Debug, Default)]
pub(crate) struct Telnet {
    state: State,
}

impl Telnet {
    /// Splits a chunk into (data to print, answers to send).
    pub(crate) fn filter(&mut self, chunk: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let mut data = Vec::with_capacity(chunk.len());
        let mut answers = Vec::new();
        for &b in chunk {
            self.state = match (self.state, b) {
                (State::Data, IAC) => State::Command,
                (State::Data, _) => {
                    data.push(b);
                    State::Data
                }
                (State::Command, IAC) => {
                    data.push(IAC);
                    State::Data
                }
                (State::Command, WILL | WONT | DO | DONT) => State::Option(b),
                (State::Command, SB) => State::Sub,
                // NOP, GA, AYT...: nothing to print or answer.
                (State::Command, _) => State::Data,
                (State::Option(verb), opt) => {
                    match verb {
                        DO => answers.extend_from_slice(&[IAC, WONT, opt]),
                        WILL => answers.extend_from_slice(&[IAC, DONT, opt]),
                        _ => {}
                    }
                    State::Data
                }
                (State::Sub, IAC) => State::SubIac,
                (State::Sub, _) => State::Sub,
                (State::SubIac, SE) => State::Data,
                (State::SubIac, _) => State::Sub,
            };
        }
        (data, answers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_options_and_keeps_them_out_of_the_data() {
        let mut t = Telnet::default();
        let (data, answers) = t.filter(&[IAC, DO, 1, b'h', b'i', IAC, WILL, 3, IAC, IAC, IAC]);
        assert_eq!(data, b"hi\xff");
        assert_eq!(answers, [IAC, WONT, 1, IAC, DONT, 3]);
        // The IAC at the end of the last chunk goes on in this one; a subnegotiation is dropped.
        let (data, answers) = t.filter(&[WONT, 5, IAC, SB, 24, 1, IAC, SE, b'!']);
        assert_eq!(data, b"!");
        assert!(answers.is_empty());
    }
}
