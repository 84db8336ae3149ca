//! The names of the cluster's keys and channels in Redis. Every key of a room carries the room
//! in a hash tag (`{room}`), so one script touches one slot of a Redis Cluster; room names are
//! letters, digits and `_-.` only ([`crate::chat::room_name`]), never a brace.

/// The room's `{epoch, seq}` hash: its numbering, and which life of Redis's data it belongs to.
pub fn meta(room: &str) -> String {
    format!("sockit:{{{room}}}:meta")
}

/// The room's stream: every event under its number (`SEQ-0`), the history and the gap repair.
pub fn log(room: &str) -> String {
    format!("sockit:{{{room}}}:log")
}

/// The dedup key of event `id` in `room`: holds its number while a retry may come.
pub fn dup(room: &str, id: &str) -> String {
    format!("sockit:{{{room}}}:dup:{id}")
}

/// The room's pub/sub channel.
pub fn channel(room: &str) -> String {
    format!("sockit:{{{room}}}:ch")
}

/// The log name of the private conversation between two nicks (case-folded): `@A:B`, the two in
/// order. Room names and nicks have no `@` or `:`, so it is no room's and no other pair's.
pub fn conversation(a: &str, b: &str) -> String {
    let (a, b) = if a <= b { (a, b) } else { (b, a) };
    format!("@{a}:{b}")
}

/// Whether a log name is a private conversation's ([`conversation`]) rather than a room's.
pub fn is_conversation(name: &str) -> bool {
    name.starts_with('@')
}

/// The pattern of every room's channel.
pub const CHANNELS: &str = "sockit:{*}:ch";

/// The room a channel belongs to.
pub fn room_of_channel(channel: &str) -> Option<&str> {
    channel.strip_prefix("sockit:{")?.strip_suffix("}:ch")
}

/// The channel a node publishes its liveness probe to and listens on: a subscription that has
/// gone deaf (alive to TCP, but no longer fed) shows as a probe that does not come back.
pub fn probe(node: &str) -> String {
    format!("sockit:probe:{node}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rooms_keys_share_its_hash_tag() {
        assert_eq!(meta("rust"), "sockit:{rust}:meta");
        assert_eq!(log("rust"), "sockit:{rust}:log");
        assert_eq!(dup("rust", "n-1"), "sockit:{rust}:dup:n-1");
        assert_eq!(room_of_channel(&channel("rust")), Some("rust"));
        assert_eq!(room_of_channel("sockit:probe:n"), None);
        assert_eq!(conversation("bob", "ann"), "@ann:bob");
        assert_eq!(conversation("ann", "bob"), "@ann:bob");
        assert!(is_conversation("@ann:bob") && !is_conversation("lobby"));
    }
}
