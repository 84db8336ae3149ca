//! The JSON lines sockit's chat server speaks with its own clients: the hello and messages this
//! client sends, the events and replies it receives, and [`Identity`], which follows who and where
//! this client is so a reconnect can ask for the same nick and room.

use serde::Deserialize;
use serde_json::{json, Value};

use crate::chat::event;

/// What kind of chat event the server delivered (the server's own type).
pub use crate::chat::event::Kind as EventKind;

/// One ordered chat event: `{seq, ts, type, room, nick, target, text}`.
#[derive(Debug, Clone, Deserialize)]
pub struct ChatEvent {
    pub seq: u64,
    /// Milliseconds since the Unix epoch, server clock.
    pub ts: i64,
    #[serde(rename = "type")]
    pub kind: EventKind,
    #[serde(default)]
    pub room: Option<String>,
    #[serde(default)]
    pub nick: String,
    /// The recipient of a private message, or the new nick of a nick change.
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default)]
    pub text: String,
}

impl ChatEvent {
    /// `HH:MM:SS` of the event, in this machine's local time.
    pub fn clock(&self) -> String {
        event::clock(self.ts)
    }

    /// What the event says, without the time: `<ann> hi`, `* ann waves`, `-!- bob joined #lobby`.
    pub fn describe(&self) -> String {
        event::describe(
            self.kind,
            &self.nick,
            self.room.as_deref().unwrap_or(""),
            self.target.as_deref().unwrap_or(""),
            &self.text,
        )
    }

    /// The line a plain (non-terminal) client prints: `[12:00:01] <ann> hi`.
    pub fn plain(&self) -> String {
        format!("[{}] {}", self.clock(), self.describe())
    }

    /// Whether the event is a stored message (kept in history and replayed on join).
    pub fn is_stored(&self) -> bool {
        matches!(self.kind, EventKind::Message | EventKind::Action)
    }
}

pub use crate::chat::wire::ReplyKind;

/// One room in a `rooms` reply.
#[derive(Debug, Clone, Deserialize)]
pub struct RoomInfo {
    pub name: String,
    pub members: usize,
}

/// A reply only this client sees: `{type, text, ...}` with fields that depend on the type.
#[derive(Debug, Clone, Deserialize)]
pub struct Reply {
    #[serde(rename = "type")]
    pub kind: ReplyKind,
    #[serde(default)]
    pub text: String,
    /// `welcome` and `nick`: this client's nick.
    #[serde(default)]
    pub nick: Option<String>,
    /// `welcome` after a hello: the protocol agreed on.
    #[serde(default)]
    pub proto: Option<String>,
    /// `members`, `history`, `history_end`: which room.
    #[serde(default)]
    pub room: Option<String>,
    /// `members`: who is in the room.
    #[serde(default)]
    pub nicks: Option<Vec<String>>,
    /// `rooms`: every room and its size.
    #[serde(default)]
    pub rooms: Option<Vec<RoomInfo>>,
    /// `error`: what went wrong, for errors a client acts on (`nick_taken`).
    #[serde(default)]
    pub code: Option<String>,
    /// `error` with code `nick_taken`: the nick that was asked for.
    #[serde(default)]
    pub wanted: Option<String>,
    /// `topic`: the topic (none: the room has none), who set it and when (ms since the epoch).
    #[serde(default)]
    pub topic: Option<String>,
    #[serde(default)]
    pub by: Option<String>,
    /// `away`, `is_away`, `whois`: the away message (none: not away).
    #[serde(default)]
    pub away: Option<String>,
}

impl Reply {
    /// The server's answer to the hello: from here on the connection speaks JSON.
    pub fn is_json_welcome(&self) -> bool {
        self.kind == ReplyKind::Welcome && self.proto.as_deref() == Some("json")
    }

    /// The nick this client asked for, if this is the server saying it is taken.
    pub fn nick_taken(&self) -> Option<&str> {
        (self.kind == ReplyKind::Error && self.code.as_deref() == Some("nick_taken"))
            .then_some(self.wanted.as_deref().unwrap_or(""))
    }

    /// The server refused a line because of its rate limit; it may be sent again shortly.
    pub fn is_rate_limited(&self) -> bool {
        self.kind == ReplyKind::Error && self.text.starts_with("slow down")
    }

    /// The line a plain client prints, as the server shows it to plain clients: `-!- text`, or
    /// `-!- error: text`.
    pub fn plain(&self) -> String {
        crate::chat::wire::server_line(self.kind == ReplyKind::Error, &self.text)
    }
}

/// One line from the server, understood.
#[derive(Debug, Clone)]
pub enum Incoming {
    Event(ChatEvent),
    Reply(Reply),
}

impl Incoming {
    /// Parses a server line. Lines that are not JSON objects (the plain welcome every client gets
    /// before its hello is read) and objects of no known shape give `None`.
    pub fn parse(line: &[u8]) -> Option<Incoming> {
        let value: Value = serde_json::from_slice(line).ok()?;
        let obj = value.as_object()?;
        obj.get("type")?.as_str()?;
        // Events carry a sequence number; replies do not (both may be of type "notice").
        if obj.contains_key("seq") {
            serde_json::from_value(value).ok().map(Incoming::Event)
        } else {
            serde_json::from_value(value).ok().map(Incoming::Reply)
        }
    }
}

/// A line of text for the server (a message or a /command), as a JSON line.
pub fn text_line(text: &str) -> String {
    let mut line = json!({ "text": text }).to_string();
    line.push('\n');
    line
}

/// Cleans a line the way the server will (line ending trimmed, control characters replaced), so the
/// echo of a message can be recognised.
pub fn clean(text: &str) -> String {
    crate::chat::wire::sanitize(text)
}

/// Who this client is and where it is, as far as the server has said, and what to ask for on the
/// next (re)connect.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    /// The nick to ask for in the hello: the user's choice, then any nick the server confirmed
    /// after a /nick. Not a guest nick handed out because the wanted one was taken.
    pub wanted_nick: Option<String>,
    /// The nick the server says this client has now.
    pub nick: Option<String>,
    /// The room to ask for in the hello, and (once joined) the room this client is in.
    pub room: Option<String>,
    /// Whether the server has confirmed the room (this client's join event arrived).
    pub in_room: bool,
}

/// What an incoming line changed about this client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The hello was answered; the nick is now known.
    Welcomed,
    /// This client's nick changed.
    Renamed { old: String, new: String },
    /// This client entered a room.
    Joined(String),
    /// The nick asked for (in the hello or by `/nick`) is someone else's: the person must be told
    /// and pick another.
    NickTaken(String),
}

impl Identity {
    pub fn new(nick: Option<String>, room: Option<String>) -> Self {
        Identity {
            wanted_nick: nick,
            room,
            ..Identity::default()
        }
    }

    /// The first line to send on a new connection.
    pub fn hello(&self) -> String {
        let mut hello = json!({ "sockit": "chat", "proto": "json" });
        if let Some(obj) = hello.as_object_mut() {
            if let Some(nick) = &self.wanted_nick {
                obj.insert("nick".into(), json!(nick));
            }
            if let Some(room) = &self.room {
                obj.insert("room".into(), json!(room));
            }
        }
        let mut line = hello.to_string();
        line.push('\n');
        line
    }

    /// Whether `nick` is this client.
    pub fn is_me(&self, nick: &str) -> bool {
        self.nick.as_deref() == Some(nick)
    }

    /// A new connection starts: nothing is confirmed until the server answers the hello.
    pub fn reset(&mut self) {
        self.nick = None;
        self.in_room = false;
    }

    /// Follows what the server says about this client.
    pub fn observe(&mut self, msg: &Incoming) -> Option<Change> {
        match msg {
            Incoming::Reply(r) if r.is_json_welcome() => {
                let nick = r.nick.clone()?;
                if self.wanted_nick.is_none() {
                    // A guest keeps its guest nick across reconnects.
                    self.wanted_nick = Some(nick.clone());
                }
                self.nick = Some(nick);
                Some(Change::Welcomed)
            }
            Incoming::Reply(r) if r.nick_taken().is_some() => {
                Some(Change::NickTaken(r.nick_taken()?.to_string()))
            }
            Incoming::Reply(r) if r.kind == ReplyKind::Nick => {
                let new = r.nick.clone()?;
                self.rename(new)
            }
            Incoming::Event(e) if e.kind == EventKind::Nick && self.is_me(&e.nick) => {
                let new = e.target.clone()?;
                self.rename(new)
            }
            Incoming::Event(e) if e.kind == EventKind::Join && self.is_me(&e.nick) => {
                let room = e.room.clone()?;
                self.room = Some(room.clone());
                self.in_room = true;
                Some(Change::Joined(room))
            }
            _ => None,
        }
    }

    fn rename(&mut self, new: String) -> Option<Change> {
        let old = self.nick.replace(new.clone()).unwrap_or_default();
        self.wanted_nick = Some(new.clone());
        Some(Change::Renamed { old, new })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_events_replies_and_ignores_plain_lines() {
        assert!(Incoming::parse(b"Welcome to sockit chat, guest1!").is_none());
        assert!(Incoming::parse(b"[1,2]").is_none());
        let ev = br#"{"seq":3,"ts":0,"type":"message","room":"lobby","nick":"ann","text":"hi"}"#;
        match Incoming::parse(ev) {
            Some(Incoming::Event(e)) => {
                assert_eq!(e.kind, EventKind::Message);
                assert!(e.plain().ends_with("] <ann> hi"));
            }
            other => panic!("{other:?}"),
        }
        let members = br#"{"type":"members","text":"x","room":"lobby","nicks":["a","b"]}"#;
        match Incoming::parse(members) {
            Some(Incoming::Reply(r)) => {
                assert_eq!(r.kind, ReplyKind::Members);
                assert_eq!(r.nicks.as_deref(), Some(&["a".to_string(), "b".into()][..]));
            }
            other => panic!("{other:?}"),
        }
        let taken = br#"{"type":"error","text":"x","code":"nick_taken","wanted":"ann"}"#;
        match Incoming::parse(taken) {
            Some(Incoming::Reply(r)) => assert_eq!(r.nick_taken(), Some("ann")),
            other => panic!("{other:?}"),
        }
        let topic = br#"{"seq":4,"ts":0,"type":"topic","room":"r","nick":"ann","text":"t"}"#;
        match Incoming::parse(topic) {
            Some(Incoming::Event(e)) => assert_eq!(e.describe(), "-!- ann set the topic of #r: t"),
            other => panic!("{other:?}"),
        }
        let future = br#"{"type":"typing","text":""}"#;
        assert!(matches!(
            Incoming::parse(future),
            Some(Incoming::Reply(Reply {
                kind: ReplyKind::Other,
                ..
            }))
        ));
    }

    #[test]
    fn identity_follows_the_server() {
        let mut id = Identity::new(Some("ann".into()), None);
        assert_eq!(
            id.hello(),
            "{\"nick\":\"ann\",\"proto\":\"json\",\"sockit\":\"chat\"}\n"
        );
        let welcome =
            Incoming::parse(br#"{"type":"welcome","text":"","nick":"guest1","proto":"json"}"#);
        // The wanted nick was taken: the guest nick is current, but the next hello asks again.
        assert_eq!(id.observe(&welcome.unwrap()), Some(Change::Welcomed));
        assert!(id.is_me("guest1"));
        assert_eq!(id.wanted_nick.as_deref(), Some("ann"));
        let join = br#"{"seq":1,"ts":0,"type":"join","room":"rust","nick":"guest1","text":""}"#;
        assert_eq!(
            id.observe(&Incoming::parse(join).unwrap()),
            Some(Change::Joined("rust".into()))
        );
        let nick = br#"{"seq":2,"ts":0,"type":"nick","room":"rust","nick":"guest1","target":"bob","text":""}"#;
        id.observe(&Incoming::parse(nick).unwrap());
        assert!(id.is_me("bob"));
        assert!(
            id.hello().contains("\"nick\":\"bob\"") && id.hello().contains("\"room\":\"rust\"")
        );
    }
}
