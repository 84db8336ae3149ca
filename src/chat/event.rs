//! What the hub orders and delivers: chat events, and their rendering into each wire format.
//!
//! An event is rendered at most once per format however many members receive it; members share the
//! resulting `Bytes` (the tokio chat example instead clones a `String` per peer).

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use chrono::{Local, TimeZone};
use serde::Serialize;

use super::wire::{Format, SERVER_MARK};

/// What kind of thing happened: an event's `type` on the JSON wire. One enum for the server and
/// for `chat join` ([`crate::chat::client::protocol::EventKind`]), so a kind cannot be renamed on
/// one side only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A line said in a room.
    Message,
    /// `/me` in a room.
    Action,
    /// `/msg` to one member.
    Private,
    /// Someone entered a room.
    Join,
    /// Someone left a room (or disconnected).
    Leave,
    /// Someone changed nick; `target` is the new nick.
    Nick,
    /// A server notice to a room or a client.
    Notice,
    /// Someone set the room's topic (`text`; empty: cleared it).
    Topic,
    /// A kind from a newer server (only read by clients, never made here); shown as a notice.
    #[serde(other)]
    Other,
}

impl Kind {
    /// Kinds kept in history and replayed to joiners.
    pub fn is_stored(self) -> bool {
        matches!(self, Kind::Message | Kind::Action)
    }

    /// Kinds that only announce who is where (not announced in very large rooms).
    pub fn is_presence(self) -> bool {
        matches!(self, Kind::Join | Kind::Leave | Kind::Nick)
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::Message => "message",
            Kind::Action => "action",
            Kind::Private => "private",
            Kind::Join => "join",
            Kind::Leave => "leave",
            Kind::Nick => "nick",
            Kind::Notice => "notice",
            Kind::Topic => "topic",
            Kind::Other => "other",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "message" => Kind::Message,
            "action" => Kind::Action,
            "private" => Kind::Private,
            "join" => Kind::Join,
            "leave" => Kind::Leave,
            "nick" => Kind::Nick,
            "notice" => Kind::Notice,
            "topic" => Kind::Topic,
            _ => return None,
        })
    }
}

/// One ordered chat event. `seq` is assigned by the sequencer and is the message id in history.
#[derive(Debug, Serialize)]
pub struct Event {
    pub seq: u64,
    /// Milliseconds since the Unix epoch, server clock.
    pub ts: i64,
    #[serde(rename = "type")]
    pub kind: Kind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub room: Option<Arc<str>>,
    pub nick: Arc<str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<Arc<str>>,
    pub text: Arc<str>,
    #[serde(skip)]
    rendered: [OnceLock<Bytes>; Format::COUNT],
}

impl Event {
    /// A new event stamped now; the sequencer gives it its `seq`.
    pub fn new(
        kind: Kind,
        room: Option<Arc<str>>,
        nick: Arc<str>,
        text: impl Into<Arc<str>>,
    ) -> Self {
        Event::at(0, now_ms(), kind, room, nick, None, text.into())
    }

    /// The most memory this event can pin once rendered in every wire format: what limits on
    /// memory held for joiners (the rooms' recent messages) count.
    pub fn pinned_bytes(&self) -> usize {
        let fields =
            self.text.len() + self.nick.len() + self.target.as_ref().map_or(0, |t| t.len());
        // Each rendering holds the fields again plus a stamp and markup (JSON's names: ~96 bytes).
        std::mem::size_of::<Event>() + fields + Format::COUNT * (fields + 96)
    }

    /// An event with every field given (history loading, tests).
    pub fn at(
        seq: u64,
        ts: i64,
        kind: Kind,
        room: Option<Arc<str>>,
        nick: Arc<str>,
        target: Option<Arc<str>>,
        text: Arc<str>,
    ) -> Self {
        Event {
            seq,
            ts,
            kind,
            room,
            nick,
            target,
            text,
            rendered: Default::default(),
        }
    }

    /// Sets the recipient (private messages) or new nick (nick changes).
    pub fn with_target(mut self, target: Arc<str>) -> Self {
        self.target = Some(target);
        self
    }

    /// The bytes to send to a client speaking `format`, rendered on first use.
    pub fn render(&self, format: Format) -> &Bytes {
        self.rendered[format.index()].get_or_init(|| self.render_fresh(format))
    }

    /// Appends the bytes for `format` to `out`, without keeping a rendering that is not already
    /// kept (a [`Batch`] keeps its own, joined one).
    fn render_into(&self, format: Format, out: &mut Vec<u8>) {
        match self.rendered[format.index()].get() {
            Some(kept) => out.extend_from_slice(kept),
            None => out.extend_from_slice(&self.render_fresh(format)),
        }
    }

    fn render_fresh(&self, format: Format) -> Bytes {
        match format {
            Format::Json => {
                let mut v = serde_json::to_vec(self).unwrap_or_default();
                v.push(b'\n');
                Bytes::from(v)
            }
            _ => format.encode_line(&self.plain_text()),
        }
    }

    /// The line a plain-text client sees, without the line ending.
    pub fn plain_text(&self) -> String {
        format!(
            "[{}] {}",
            clock(self.ts),
            describe(
                self.kind,
                &self.nick,
                self.room.as_deref().unwrap_or(""),
                self.target.as_deref().unwrap_or(""),
                &self.text
            )
        )
    }
}

/// Consecutive events of one room, queued to every member as one item: each member's queue takes
/// one entry per sequenced run rather than one per event, and the run is rendered once per format
/// for the whole room, so a member's writer sends shared bytes without copying them.
#[derive(Debug)]
pub struct Batch {
    events: Vec<Arc<Event>>,
    rendered: [OnceLock<Bytes>; Format::COUNT],
}

impl Batch {
    pub fn new(events: Vec<Arc<Event>>) -> Self {
        Batch {
            events,
            rendered: Default::default(),
        }
    }

    pub fn events(&self) -> &[Arc<Event>] {
        &self.events
    }

    /// Every event rendered for `format`, back to back, rendered on first use.
    pub fn render(&self, format: Format) -> &Bytes {
        self.rendered[format.index()].get_or_init(|| {
            let mut all = Vec::new();
            for e in &self.events {
                e.render_into(format, &mut all);
            }
            Bytes::from(all)
        })
    }
}

/// What an event says, without the time: `<ann> hi`, `* ann waves`, `-!- bob joined #lobby`. Shared
/// by the server's plain rendering and sockit's own clients, so both show events the same way. What
/// the server says (joins, leaves, nick changes, notices) begins with [`SERVER_MARK`], which no
/// user's message or action can.
pub fn describe(kind: Kind, nick: &str, room: &str, target: &str, text: &str) -> String {
    let m = SERVER_MARK;
    match kind {
        Kind::Message => format!("<{nick}> {text}"),
        Kind::Action => format!("* {nick} {text}"),
        Kind::Private => format!("*{nick} -> {target}* {text}"),
        Kind::Join => format!("{m}{nick} joined #{room}"),
        Kind::Leave if text.is_empty() => format!("{m}{nick} left #{room}"),
        Kind::Leave => format!("{m}{nick} left #{room} ({text})"),
        Kind::Nick => format!("{m}{nick} is now known as {target}"),
        Kind::Notice | Kind::Other => format!("{m}{text}"),
        Kind::Topic if text.is_empty() => format!("{m}{nick} cleared the topic of #{room}"),
        Kind::Topic => format!("{m}{nick} set the topic of #{room}: {text}"),
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// `HH:MM:SS` of a millisecond timestamp, in this machine's local time.
pub fn clock(ts: i64) -> String {
    match Local.timestamp_millis_opt(ts).single() {
        Some(t) => t.format("%H:%M:%S").to_string(),
        None => "--:--:--".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_keeps_one_joined_rendering_not_one_per_event_too() {
        let say = |t: &str| Arc::new(Event::new(Kind::Message, Some("r".into()), "ann".into(), t));
        let (one, two) = (say("one"), say("two"));
        // An event already rendered (replayed to a joiner, say) lends its bytes.
        let first = one.render(Format::Utf8).clone();
        let batch = Batch::new(vec![one.clone(), two.clone()]);
        let all = batch.render(Format::Utf8);
        assert!(all.starts_with(&first));
        assert_eq!(
            all.len(),
            first.len() + two.render_fresh(Format::Utf8).len()
        );
        assert!(two.rendered[Format::Utf8.index()].get().is_none());
    }
}
