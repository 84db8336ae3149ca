//! The shared secret both ends of a transfer must know, proven without sending it: SPAKE2 (a
//! password-authenticated key exchange), then a key confirmation in both directions.
//!
//! Why a PAKE and not an HMAC challenge: with a challenge, anyone who records one exchange can
//! try passwords offline against it as fast as they can hash; with SPAKE2 each guess needs a
//! live exchange with one of the ends, so a short password (a croc or magic-wormhole style code)
//! stays safe. The key confirms the handshake only: without `--tls` the data itself is not
//! encrypted, and the digests are still checked end to end.

use spake2::{Ed25519Group, Identity, Password, Spake2};

const SENDER: &[u8] = b"sockit-transfer-sender";
const RECEIVER: &[u8] = b"sockit-transfer-receiver";

/// One side's half of the exchange, waiting for the other's message.
pub struct Exchange {
    state: Spake2<Ed25519Group>,
    ours: Vec<u8>,
}

/// The key both sides derived.
pub struct Session {
    key: [u8; 32],
}

impl Exchange {
    /// The sender's side.
    pub fn sender(password: &str) -> Self {
        let (state, ours) = Spake2::<Ed25519Group>::start_a(
            &Password::new(password.as_bytes()),
            &Identity::new(SENDER),
            &Identity::new(RECEIVER),
        );
        Exchange { state, ours }
    }

    /// The receiver's side.
    pub fn receiver(password: &str) -> Self {
        let (state, ours) = Spake2::<Ed25519Group>::start_b(
            &Password::new(password.as_bytes()),
            &Identity::new(SENDER),
            &Identity::new(RECEIVER),
        );
        Exchange { state, ours }
    }

    /// The message to send to the other side, hex.
    pub fn message(&self) -> String {
        hex::encode(&self.ours)
    }

    /// Completes the exchange with the other side's message. A malformed message is an error; a
    /// wrong password is not found here but by [`Session::check`].
    pub fn finish(self, theirs_hex: &str) -> Result<Session, String> {
        let theirs = hex::decode(theirs_hex).map_err(|_| "bad key exchange message".to_string())?;
        let key = self
            .state
            .finish(&theirs)
            .map_err(|e| format!("key exchange failed: {e:?}"))?;
        let key = blake3::derive_key("sockit transfer v1 session key", &key);
        Ok(Session { key })
    }
}

impl Session {
    /// The sender's proof (hex).
    pub fn sender_proof(&self) -> String {
        self.proof(SENDER)
    }

    /// The receiver's proof (hex).
    pub fn receiver_proof(&self) -> String {
        self.proof(RECEIVER)
    }

    fn proof(&self, role: &[u8]) -> String {
        blake3::keyed_hash(&self.key, role).to_hex().to_string()
    }

    /// Whether `mac` is what the other side (sender when `from_sender`) derives with the same
    /// password. Compared in constant time (blake3's Hash equality).
    pub fn check(&self, mac_hex: &str, from_sender: bool) -> bool {
        let role = if from_sender { SENDER } else { RECEIVER };
        let want = blake3::keyed_hash(&self.key, role);
        blake3::Hash::from_hex(mac_hex).is_ok_and(|got| got == want)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(a: &str, b: &str) -> (Session, Session) {
        let s = Exchange::sender(a);
        let r = Exchange::receiver(b);
        let (sm, rm) = (s.message(), r.message());
        (s.finish(&rm).unwrap(), r.finish(&sm).unwrap())
    }

    #[test]
    fn same_password_confirms_both_ways() {
        let (s, r) = pair("correct horse", "correct horse");
        assert!(r.check(&s.sender_proof(), true));
        assert!(s.check(&r.receiver_proof(), false));
        // A proof is not valid in the other direction (no reflection).
        assert!(!s.check(&s.sender_proof(), false));
    }

    #[test]
    fn wrong_password_fails_both_ways() {
        let (s, r) = pair("correct horse", "battery staple");
        assert!(!r.check(&s.sender_proof(), true));
        assert!(!s.check(&r.receiver_proof(), false));
        // The message is a curve point, not the password in any form (a long one, so that its
        // hex cannot turn up in random hex by chance).
        let pw = "a password long enough to never appear by chance";
        let msg = Exchange::sender(pw).message();
        assert!(!msg.contains(&hex::encode(pw)) && !msg.contains(pw));
    }
}
