//! One client's session, whatever carries it: greeting, protocol negotiation, the rate limit, and
//! running its messages and commands against the hub. Transports (the line protocol over streams
//! in [`super::stream`]) feed it lines and drain its outbox.

use crate::chat::wire::ReplyKind;
use std::sync::Arc;

use bytes::Bytes;

use serde_json::json;

use super::command::{check_nick, room_name, Command, HELP};
use super::event::{clock, now_ms};
use super::event::{Event, Kind};
use super::hub::{
    topic_reply, ChatHub, ClientId, HubClosed, Join, NickError, Pending, Route, Topic,
};
use super::outbox::{OutItem, Outbox};
use super::rate::ReplyBudget;
use super::wire::{Format, Hello};
use super::ChatSettings;
use crate::net::{PeerAddr, RateLimit};
/// Why a session ended. The room is told [`End::reason`]; a WebSocket picks its close code
/// from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The client said `/quit`, with this reason.
    Quit(String),
    /// The client went away (or its writer failed).
    Closed,
    /// The server is stopping.
    Shutdown,
    /// Nothing from the client for `--idle-timeout`.
    Idle,
    /// Its send queue overflowed: it did not read what it was sent.
    Overflowed,
    /// More than the flood cutoff without a line end (or in one message).
    Flooded,
    /// A text message that is not UTF-8.
    BadUtf8,
    /// Framing that breaks the transport's protocol.
    Protocol,
    /// The hub's sequencer failed while the server was not stopping.
    Unavailable,
}

impl End {
    /// What the client's room is told (in its leave notice).
    pub fn reason(&self) -> String {
        match self {
            End::Quit(r) => r.clone(),
            End::Closed => String::new(),
            End::Shutdown => "server shutting down".into(),
            End::Idle => "idle timeout".into(),
            End::Overflowed => "could not keep up (send queue full)".into(),
            End::Flooded => "flooded".into(),
            End::BadUtf8 => "invalid UTF-8".into(),
            End::Protocol => "protocol error".into(),
            End::Unavailable => "the chat service is unavailable".into(),
        }
    }
}

/// One client of the hub, whatever its transport: its nick, room, rate limit, and commands.
pub struct Session {
    id: ClientId,
    nick: Arc<str>,
    room: Option<Arc<str>>,
    /// Whether the first line (which may be a JSON hello) has been seen.
    negotiated: bool,
    /// Whether the welcome and motd have gone out (with the first join).
    greeted: bool,
    /// Whether its nick is its own across the chat: chosen by it, or a guest nick the directory
    /// granted (a cluster's nodes each number their guests, so theirs must be claimed first).
    claimed: bool,
    hub: ChatHub,
    cfg: Arc<ChatSettings>,
    outbox: Arc<Outbox>,
    /// `--rate`/`--burst`, shared with the other connections of the client's address.
    bucket: RateLimit,
    /// Whether the client has been told it is being slowed down (once per episode).
    slowed: bool,
    /// Bytes of `/history` replies this client may still be sent.
    replies: ReplyBudget,
}

/// A session dropped without [`Session::close`] (its task cut at the end of a drain, or a panic)
/// still leaves the hub: its nick is freed, its room told (if the sequencer has room for it), and
/// its writer let go.
impl Drop for Session {
    fn drop(&mut self) {
        if let Some((nick, Some(room))) = self.hub.remove(self.id) {
            let leave = Event::new(Kind::Leave, Some(room), nick, "connection closed");
            let _ = self.hub.try_post(Pending {
                event: leave,
                route: Route::Room,
                origin: None,
            });
        }
        self.outbox.close();
    }
}

impl Session {
    /// Registers a new client at `peer` with the hub (it is greeted when it first joins a room).
    /// The caller runs a writer that drains the returned outbox to the client.
    pub fn open(
        hub: ChatHub,
        cfg: Arc<ChatSettings>,
        format: Format,
        peer: &PeerAddr,
    ) -> (Session, Arc<Outbox>) {
        let outbox = Arc::new(Outbox::new(cfg.sendq, format));
        let (id, nick) = hub.register(outbox.clone(), peer);
        let s = Session {
            id,
            nick,
            room: None,
            negotiated: false,
            greeted: false,
            claimed: false,
            bucket: hub.line_limit(peer),
            slowed: false,
            hub,
            replies: ReplyBudget::new(cfg.reply_rate, cfg.reply_burst),
            cfg: cfg.clone(),
            outbox: outbox.clone(),
        };
        // Nothing is sent before the first join: the welcome travels with it (see `greeting`).
        (s, outbox)
    }

    /// The client's current nick.
    pub fn nick(&self) -> &str {
        &self.nick
    }

    /// Whether the client is in a room yet.
    pub fn in_room(&self) -> bool {
        self.room.is_some()
    }

    /// Puts a client that has not said anything yet into the default room.
    pub async fn enter_default(&mut self) -> Result<(), HubClosed> {
        if self.room.is_none() {
            self.enter(None).await?;
        }
        Ok(())
    }

    /// Ends the session: says goodbye on shutdown, removes the client, tells its room why, and
    /// asks the writer to send what is left and close.
    pub async fn close(self, end: End) {
        match end {
            End::Shutdown => self.reply(
                ReplyKind::Notice,
                "the server is shutting down; goodbye",
                None,
            ),
            End::Unavailable => {
                self.error("the chat service is unavailable (an internal failure); goodbye")
            }
            _ => {}
        }
        let reason = end.reason();
        if let Some((nick, Some(room))) = self.hub.remove(self.id) {
            let leave = Event::new(Kind::Leave, Some(room), nick, reason);
            let _ = self
                .hub
                .post(Pending {
                    event: leave,
                    route: Route::Room,
                    origin: None,
                })
                .await;
        }
        self.outbox.close();
    }

    fn format(&self) -> Format {
        self.outbox.format()
    }

    /// Why the session ends when the server stops or the hub refuses a post: the hub is gone
    /// only when its sequencer has died — which clients must not be told is a shutdown, even
    /// though the server then stops too.
    pub fn stopping(&self) -> End {
        if self.hub.is_closed() {
            End::Unavailable
        } else {
            End::Shutdown
        }
    }

    pub fn reply(&self, kind: ReplyKind, text: &str, extra: Option<serde_json::Value>) {
        self.outbox
            .push(OutItem::Raw(self.format().reply(kind, text, extra)));
    }

    pub fn error(&self, text: &str) {
        self.reply(ReplyKind::Error, text, None);
    }

    /// Enters the first room: the one a JSON hello asked for, else the default.
    async fn enter(&mut self, room: Option<String>) -> Result<(), HubClosed> {
        if !std::mem::replace(&mut self.claimed, true) {
            match self.hub.claim_guest(self.id).await {
                Ok(Some(nick)) => self.nick = nick,
                Ok(None) => {}
                // It goes on with the guest nick this node gave it, which is unique here.
                Err(e) => tracing::warn!(error = %e, "cannot claim a guest nick"),
            }
        }
        let room = room.unwrap_or_else(|| self.cfg.room.clone());
        self.join(&room, None).await
    }

    async fn post(&self, event: Event, route: Route) -> Result<(), HubClosed> {
        self.hub
            .post(Pending {
                event,
                route,
                origin: Some(self.id),
            })
            .await
    }

    /// Moves the client to `room`; the room it leaves is told `why` (else where it went).
    ///
    /// It waits (for reply budget, for its delivery): the session driver runs it beside the
    /// server stopping and the client being dropped.
    async fn join(&mut self, room: &str, why: Option<String>) -> Result<(), HubClosed> {
        let room: Arc<str> = Arc::from(room);
        if self.room.as_deref() == Some(&*room) {
            self.reply(
                ReplyKind::Info,
                &format!("you are already in #{room}"),
                None,
            );
            return Ok(());
        }
        // The replay is a reply too: joining back and forth must not buy it over and over, so it is
        // charged to the reply budget, and a client out of budget waits before it is sent.
        let replay = self.hub.replay_size(&room);
        let wait = self.replies.wait_for(replay);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        self.replies.spend(replay);
        let free = *room == *self.cfg.room;
        let (old, ticket) = match self.hub.move_to(self.id, room.clone(), free) {
            Ok(moved) => moved,
            Err(refused) => {
                self.error(&refused.to_string());
                return Ok(());
            }
        };
        if let Some(old) = old {
            let leave = Event::new(
                Kind::Leave,
                Some(old),
                self.nick.clone(),
                why.unwrap_or_else(|| format!("went to #{room}")),
            );
            // No origin: the leaver is no longer in that room, even where only origins are told.
            self.hub
                .post(Pending {
                    event: leave,
                    route: Route::Room,
                    origin: None,
                })
                .await?;
        }
        self.room = Some(room.clone());
        let join = Event::new(Kind::Join, Some(room), self.nick.clone(), "");
        let greeting = self.greeting();
        let (done, delivered) = tokio::sync::oneshot::channel();
        let route = Route::Join(Join {
            id: self.id,
            greeting,
            ticket,
            done,
        });
        self.post(join, route).await?;
        // Wait until the join is delivered (one trip through the sequencer): what this client is
        // told next, and what its next lines do, then comes after its welcome, its replay and its
        // membership, as the lines it typed came after the join.
        let _ = delivered.await;
        Ok(())
    }

    /// The welcome and motd, once. They are delivered with the first join rather than at connect,
    /// so the tutorials' client, which reads one unprompted `recv(1024)` and then expects each
    /// `send` to be answered by the next `recv`, finds its own join notice inside that first read
    /// instead of mistaking it, later, for the answer to its first message. A JSON client got its
    /// own welcome after its hello, so it only gets the motd.
    fn greeting(&mut self) -> Vec<Bytes> {
        if std::mem::replace(&mut self.greeted, true) {
            return Vec::new();
        }
        let format = self.format();
        let mut greeting = Vec::new();
        if format != Format::Json {
            greeting.push(format.reply(
                ReplyKind::Welcome,
                &format!(
                    "Welcome to sockit chat, {}! You will be in #{}; type /help for commands.",
                    self.nick, self.cfg.room
                ),
                Some(json!({ "nick": &*self.nick, "room": &self.cfg.room })),
            ));
        }
        if let Some(motd) = &self.cfg.motd {
            greeting.push(format.reply(ReplyKind::Motd, motd, None));
        }
        greeting
    }

    /// Handles one line. `Ok(Some(end))` ends the session.
    pub async fn handle(&mut self, line: &[u8]) -> Result<Option<End>, HubClosed> {
        if !self.negotiated {
            // The first line decides the protocol: a JSON hello, or plain text from the start. A
            // hello that comes after the client was already put in the default room still counts.
            self.negotiated = true;
            if let Some(hello) = Hello::parse(line) {
                self.outbox.set_format(Format::Json);
                if let Some(nick) = hello.nick.as_deref() {
                    self.set_nick(nick).await?;
                }
                self.reply(
                    ReplyKind::Welcome,
                    &format!("you are {}", self.nick),
                    Some(json!({ "nick": &*self.nick, "proto": "json", "version": 1 })),
                );
                let room = match hello.room.as_deref().map(room_name) {
                    Some(Ok(r)) => Some(r),
                    Some(Err(e)) => {
                        self.error(&e);
                        None
                    }
                    None => None,
                };
                match (room, self.room.is_some()) {
                    (Some(r), _) => self.join(&r, None).await?,
                    (None, false) => self.enter(None).await?,
                    (None, true) => {}
                }
                return Ok(None);
            }
        }
        if self.room.is_none() {
            self.enter(None).await?;
        }
        let text = match self.format().decode(line) {
            Ok(t) => t,
            Err(e) => {
                self.error(&e);
                return Ok(None);
            }
        };
        if text.trim().is_empty() {
            return Ok(None);
        }
        if self.bucket.try_take() {
            self.slowed = false;
        } else {
            // IRC's fakelag: the line waits for its token, and so does the reader behind it, so
            // nothing the client sent is lost and nothing more is read meanwhile.
            if !std::mem::replace(&mut self.slowed, true) {
                self.reply(
                    ReplyKind::Slowed,
                    &format!(
                        "slowing down: at most {} lines per second (bursts of {}); your lines are delayed, not lost",
                        self.cfg.rate, self.cfg.burst
                    ),
                    None,
                );
            }
            // The driver drops this wait if the client is dropped or the server stops meanwhile.
            self.bucket.take().await;
        }
        match Command::parse(&text) {
            Command::Say(t) => self.say(Kind::Message, t).await?,
            Command::Me(t) => self.say(Kind::Action, t).await?,
            Command::Nick(n) => self.set_nick(n).await?,
            Command::Join(r) => match room_name(r) {
                Ok(r) => self.join(&r, None).await?,
                Err(e) => self.error(&e),
            },
            Command::Part(reason) => self.part(reason).await?,
            Command::Topic(text) => self.topic(text).await?,
            Command::Whois(nick) => self.whois(nick),
            Command::Away(text) => self.away(text),
            Command::Rooms(search) => self.rooms(search.map(|s| s.trim_start_matches('#'))),
            Command::Who(room) => {
                let room = match room.map(room_name) {
                    Some(Ok(r)) => r,
                    Some(Err(e)) => {
                        self.error(&e);
                        return Ok(None);
                    }
                    None => self.room.as_deref().unwrap_or_default().to_string(),
                };
                let nicks = self.hub.who_everywhere(&room).await;
                self.reply(
                    ReplyKind::Members,
                    &format!("in #{room} ({}): {}", nicks.len(), nicks.join(", ")),
                    Some(json!({ "room": room, "nicks": nicks })),
                );
            }
            Command::Msg(to, text) => self.private(to, text).await?,
            Command::History(n) => {
                let n = n.unwrap_or(self.cfg.replay.max(1));
                self.history(n).await
            }
            Command::Help => {
                for line in HELP {
                    self.reply(ReplyKind::Help, line, None);
                }
            }
            Command::Quit(reason) => {
                self.reply(ReplyKind::Bye, "goodbye", None);
                return Ok(Some(End::Quit(reason.to_string())));
            }
            Command::Bad(msg) => self.error(&msg),
        }
        Ok(None)
    }

    /// `/rooms [WORD]`: at most `--rooms-listed` rooms, so the reply to seven bytes stays small
    /// however many rooms there are; the rest are counted and found by name.
    fn rooms(&self, search: Option<&str>) {
        let (rooms, total) = self.hub.rooms(search, self.cfg.rooms_listed);
        let list: Vec<String> = rooms.iter().map(|(n, c)| format!("#{n} ({c})")).collect();
        let mut text = format!("rooms: {}", list.join(", "));
        if total > rooms.len() {
            text.push_str(&format!(
                " ... and {} more; /rooms WORD lists those named WORD",
                total - rooms.len()
            ));
        }
        let data = json!({
            "rooms": rooms.iter().map(|(n, c)| json!({"name": n, "members": c})).collect::<Vec<_>>(),
            "total": total,
        });
        self.reply(ReplyKind::Rooms, &text, Some(data));
    }

    /// `/part`: IRC's part leaves a channel and stays connected. Here every client is in exactly
    /// one room (what it says goes somewhere, and it is on some `/who`), so leaving a room is
    /// going back to the default room, the one everybody starts in; there already, it is told so
    /// rather than bounced out and back in.
    async fn part(&mut self, reason: &str) -> Result<(), HubClosed> {
        let home = self.cfg.room.clone();
        if self.room.as_deref() == Some(home.as_str()) {
            self.reply(
                ReplyKind::Info,
                &format!("you are in #{home}, the default room; /join ROOM goes elsewhere, /quit leaves the server"),
                Some(json!({ "room": home })),
            );
            return Ok(());
        }
        let why = (!reason.is_empty()).then(|| reason.to_string());
        self.join(&home, why).await
    }

    /// `/topic [TEXT]`: shows the room's topic, or sets it (any member may) and tells the room.
    async fn topic(&mut self, text: Option<&str>) -> Result<(), HubClosed> {
        let Some(room) = self.room.clone() else {
            self.error("you are not in a room; /join one");
            return Ok(());
        };
        let Some(text) = text else {
            let topic = self.hub.topic(&room);
            self.outbox.push(OutItem::Raw(topic_reply(
                self.format(),
                &room,
                topic.as_ref(),
            )));
            return Ok(());
        };
        let max = self.cfg.max_topic;
        if text.chars().count() > max {
            self.error(&format!(
                "a topic is at most {max} characters (--max-topic)"
            ));
            return Ok(());
        }
        let topic = (text != "-delete").then(|| Topic {
            text: Arc::from(text),
            by: self.nick.clone(),
            at: now_ms(),
        });
        let shown = topic.as_ref().map(|t| t.text.clone()).unwrap_or_default();
        if !self.hub.set_topic(&room, topic) {
            return Ok(());
        }
        self.post(
            Event::new(Kind::Topic, Some(room), self.nick.clone(), shown),
            Route::Room,
        )
        .await
    }

    /// `/whois NICK`: nick, room, connected since, idle time (since it last said something),
    /// away message.
    fn whois(&self, nick: &str) {
        let Some(w) = self.hub.whois(nick) else {
            self.error(&format!("no one called {nick:?} is here"));
            return;
        };
        let now = now_ms();
        let idle = u64::try_from((now - w.active) / 1000).unwrap_or(0);
        let online = u64::try_from((now - w.since) / 1000).unwrap_or(0);
        let room = w.room.as_deref().unwrap_or("");
        let mut text = format!(
            "{} is in #{room}, connected since {} ({} ago), idle {}",
            w.nick,
            clock(w.since),
            span(online),
            span(idle)
        );
        if let Some(away) = &w.away {
            text.push_str(&format!("; away: {away}"));
        }
        self.reply(
            ReplyKind::Whois,
            &text,
            Some(json!({
                "nick": &*w.nick,
                "room": room,
                "since": w.since,
                "idle": idle,
                "away": w.away.as_deref(),
            })),
        );
    }

    /// `/away [TEXT]`: sets or clears this client's away message.
    fn away(&self, text: Option<&str>) {
        let max = self.cfg.max_away;
        if text.is_some_and(|t| t.chars().count() > max) {
            self.error(&format!(
                "an away message is at most {max} characters (--max-away)"
            ));
            return;
        }
        self.hub.set_away(self.id, text.map(Arc::from));
        let shown = match text {
            Some(t) => format!("you are away: {t}"),
            None => "you are back".to_string(),
        };
        self.reply(ReplyKind::Away, &shown, Some(json!({ "away": text })));
    }

    async fn say(&self, kind: Kind, text: &str) -> Result<(), HubClosed> {
        let Some(room) = self.room.clone() else {
            self.error("you are not in a room; /join one");
            return Ok(());
        };
        self.hub.touch(self.id);
        self.post(
            Event::new(kind, Some(room), self.nick.clone(), text),
            Route::Room,
        )
        .await
    }

    async fn set_nick(&mut self, nick: &str) -> Result<(), HubClosed> {
        if let Err(e) = check_nick(nick, self.cfg.max_nick) {
            self.error(&e);
            return Ok(());
        }
        match self.hub.claim_nick(self.id, nick).await {
            Ok((old, room)) => {
                self.claimed = true;
                self.nick = Arc::from(nick);
                match room {
                    Some(room) if self.room.is_some() => {
                        let ev = Event::new(Kind::Nick, Some(room), old, "")
                            .with_target(self.nick.clone());
                        self.post(ev, Route::Room).await?;
                    }
                    _ => self.reply(
                        ReplyKind::Nick,
                        &format!("you are now {nick}"),
                        Some(json!({ "nick": nick })),
                    ),
                }
            }
            // Typed, so a client that asked for this nick can tell the person and let them pick
            // another (instead of going on silently as a guest).
            Err(NickError::Taken(n)) => self.reply(
                ReplyKind::Error,
                &format!("nick {n:?} is taken; pick another"),
                Some(json!({ "code": "nick_taken", "wanted": n })),
            ),
            Err(NickError::Invalid(e)) => self.error(&e),
        }
        Ok(())
    }

    async fn private(&self, to: &str, text: &str) -> Result<(), HubClosed> {
        let target = match self.hub.lookup(to) {
            Some((target, their_id)) => {
                // As IRC's RPL_AWAY: the sender learns at once that the message waits for
                // someone away.
                if let Some(away) = self.hub.whois(&target).and_then(|w| w.away) {
                    if their_id != self.id {
                        self.reply(
                            ReplyKind::IsAway,
                            &format!("{target} is away: {away}"),
                            Some(json!({ "nick": &*target, "away": &*away })),
                        );
                    }
                }
                target
            }
            // A client of another node of the cluster.
            None if self.hub.is_elsewhere(to).await => Arc::from(to),
            None => {
                self.error(&format!("no one called {to:?} is here"));
                return Ok(());
            }
        };
        self.hub.touch(self.id);
        let event =
            Event::new(Kind::Private, None, self.nick.clone(), text).with_target(target.clone());
        // The recipient, and the sender's own copy.
        self.post(event, Route::Nicks(vec![target, self.nick.clone()]))
            .await
    }

    async fn history(&mut self, n: usize) {
        let Some(room) = self.room.clone() else {
            return;
        };
        let n = n.min(self.cfg.max_history);
        // Replies are charged to the client's reply budget. One that has run out waits for
        // enough to be answered (a second at most: the rate is at least MIN_REPLY a second), so
        // asking again and again is answered at the budget's rate, never faster, and costs no
        // notice it did not pay for.
        let wait = self.replies.wait();
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        // A reply is queued at once; keep it well inside the send queue so asking for history
        // never looks like not reading.
        let queue_share = self.cfg.sendq / 2;
        let allowed = self.replies.available();
        let by_budget = allowed < queue_share;
        let limit = queue_share.min(allowed);
        // The header, the end line and a note on what was left out fit in this.
        const FRAME: usize = 512;
        // Texts can render smaller than they are stored (GBK), so read up to twice the limit.
        match self.hub.history(&room, n, limit.saturating_mul(2)).await {
            Ok(mut events) => {
                let format = self.format();
                let room_limit = limit.saturating_sub(FRAME);
                let mut used = 0;
                let keep = events
                    .iter()
                    .rev()
                    .take_while(|e| {
                        used += e.render(format).len();
                        used <= room_limit
                    })
                    .count();
                let dropped = events.len() - keep;
                events.drain(..dropped);
                let mut lines = Vec::with_capacity(events.len() + 3);
                if dropped > 0 {
                    let why = if by_budget {
                        format!(
                            "over your reply budget ({} bytes a second, bursts of {}); ask again \
                             later",
                            self.cfg.reply_rate, self.cfg.reply_burst
                        )
                    } else {
                        "more would not fit the send queue (--sendq)".to_string()
                    };
                    lines.push(OutItem::Raw(format.reply(
                        ReplyKind::Info,
                        &format!("{dropped} older messages left out: {why}"),
                        None,
                    )));
                }
                lines.push(OutItem::Raw(format.reply(
                    ReplyKind::History,
                    &format!("last {} messages of #{room}:", events.len()),
                    Some(json!({ "room": &*room, "count": events.len() })),
                )));
                lines.extend(events.into_iter().map(OutItem::Event));
                lines.push(OutItem::Raw(format.reply(
                    ReplyKind::HistoryEnd,
                    "end of history",
                    Some(json!({ "room": &*room })),
                )));
                let weight: usize = lines.iter().map(|l| l.bytes(format).len()).sum();
                self.replies.spend(weight);
                self.outbox.push_all(lines);
            }
            Err(e) => {
                tracing::warn!(error = %e, "history read failed");
                self.error("history is not available right now");
            }
        }
    }
}

/// A duration in seconds as people read it: `42s`, `5m 02s`, `3h 07m`, `2d 04h`.
fn span(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {:02}s", s / 60, s % 60),
        s if s < 86400 => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
        s => format!("{}d {:02}h", s / 86400, s % 86400 / 3600),
    }
}
