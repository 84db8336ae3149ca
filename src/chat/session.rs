//! One client's session: reading its lines, running its commands, and its writer task.
//!
//! Data path: socket → [`LineDecoder`] (bounded) → rate limit → command or message → hub/sequencer;
//! and hub → [`Outbox`] (bounded) → writer task → socket, everything queued sent in one write.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures::StreamExt;
use serde_json::json;
use tokio::io::{AsyncWriteExt, WriteHalf};
use tokio_util::codec::FramedRead;

use super::command::{check_nick, room_name, Command, HELP};
use super::event::{Event, Kind};
use super::hub::{ChatHub, ClientId, HubClosed, NickError, Pending, Route};
use super::line::{Input, LineDecoder, LineError};
use super::outbox::{OutItem, Outbox, State};
use super::rate::TokenBucket;
use super::wire::{Format, Hello};
use super::ChatSettings;
use crate::net::{Conn, IdleTimer, Stream};

/// How long a new client has to send a JSON hello before it is treated as a plain client and put
/// in the default room.
const NEGOTIATE: Duration = Duration::from_millis(150);

/// Read buffer of a new connection. It grows up to the line limit for long lines; idle clients
/// keep only this much.
const READ_BUF: usize = 256;

/// Why a session ended, as told to the room.
#[derive(Debug)]
enum End {
    Quit(String),
    Closed,
    Error(&'static str),
    Shutdown,
}

struct Session {
    id: ClientId,
    nick: Arc<str>,
    room: Option<Arc<str>>,
    /// Whether the first line (which may be a JSON hello) has been seen.
    negotiated: bool,
    hub: ChatHub,
    cfg: Arc<ChatSettings>,
    outbox: Arc<Outbox>,
    bucket: TokenBucket,
}

/// Serves one connection until it quits, drops, idles out, falls behind, or the server stops.
pub async fn run(conn: Conn, hub: ChatHub, cfg: Arc<ChatSettings>) {
    let Conn {
        stream,
        peer,
        shutdown,
        idle_timeout,
    } = conn;
    let (reader, writer) = tokio::io::split(stream);
    let outbox = Arc::new(Outbox::new(cfg.sendq, cfg.format));
    let (id, nick) = hub.register(outbox.clone());
    tracing::debug!(%peer, %nick, "chat client connected");
    let writer = tokio::spawn(write_loop(writer, outbox.clone(), cfg.clone()));
    let mut s = Session {
        id,
        nick: nick.clone(),
        room: None,
        negotiated: false,
        hub,
        bucket: TokenBucket::new(cfg.rate, cfg.burst),
        cfg: cfg.clone(),
        outbox: outbox.clone(),
    };
    s.reply(
        "welcome",
        &format!(
            "Welcome to sockit chat, {nick}! You will be in #{}; type /help for commands.",
            cfg.room
        ),
        Some(json!({ "nick": &*nick, "room": &cfg.room })),
    );
    if let Some(motd) = &cfg.motd {
        s.reply("motd", motd, None);
    }

    let mut lines = FramedRead::with_capacity(
        reader,
        LineDecoder::new(cfg.max_line, cfg.flood_cutoff()),
        READ_BUF,
    );
    let mut idle = IdleTimer::new(idle_timeout);
    let stopped = shutdown.cancelled();
    let ended = outbox.ended().clone();
    let kicked = ended.cancelled();
    let negotiate = tokio::time::sleep(NEGOTIATE);
    let pause = tokio::time::sleep(Duration::from_secs(86_400));
    tokio::pin!(stopped, kicked, negotiate, pause);
    let mut pause_armed = false;

    let end = loop {
        let line = tokio::select! {
            biased;
            _ = &mut stopped => break End::Shutdown,
            _ = &mut kicked => break End::Error("could not keep up (send queue full)"),
            _ = &mut negotiate, if s.room.is_none() => {
                if s.enter(None).await.is_err() {
                    break End::Shutdown;
                }
                continue;
            }
            _ = &mut pause, if pause_armed => {
                pause_armed = false;
                let mut buf = std::mem::take(lines.read_buffer_mut());
                let partial = lines.decoder_mut().take_partial(&mut buf);
                *lines.read_buffer_mut() = buf;
                match partial {
                    Some(line) => line,
                    None => continue,
                }
            }
            _ = &mut idle => {
                s.error("disconnected: idle for too long");
                break End::Error("idle timeout");
            }
            input = lines.next() => match input {
                None => break End::Closed,
                Some(Err(LineError::Flood)) => {
                    s.error(&format!(
                        "disconnected: more than {} bytes without a newline",
                        cfg.flood_cutoff()
                    ));
                    break End::Error("flooded");
                }
                Some(Err(LineError::Io(e))) => {
                    tracing::debug!(%peer, error = %e, "read failed");
                    break End::Closed;
                }
                Some(Ok(Input::TooLong)) => {
                    idle.touch();
                    pause_armed = false;
                    s.error(&format!("line too long (the limit is {} bytes); it was not sent", cfg.max_line));
                    continue;
                }
                Some(Ok(Input::Partial)) => {
                    idle.touch();
                    pause.as_mut().reset(tokio::time::Instant::now() + cfg.line_pause);
                    pause_armed = true;
                    continue;
                }
                Some(Ok(Input::Line(line))) => {
                    idle.touch();
                    pause_armed = false;
                    line
                }
            },
        };
        match s.handle(line).await {
            Ok(None) => {}
            Ok(Some(end)) => break end,
            Err(_) => break End::Shutdown,
        }
    };

    if let End::Shutdown = end {
        s.reply("notice", "the server is shutting down; goodbye", None);
    }
    let reason = match &end {
        End::Quit(r) => r.clone(),
        End::Closed => String::new(),
        End::Error(r) => (*r).to_string(),
        End::Shutdown => "server shutting down".into(),
    };
    if let Some((nick, Some(room))) = s.hub.remove(s.id) {
        let leave = Event::new(Kind::Leave, Some(room), nick, reason);
        let _ = s
            .hub
            .post(Pending {
                event: leave,
                route: Route::Room,
                origin: None,
            })
            .await;
    }
    outbox.close();
    let _ = writer.await;
    tracing::debug!(%peer, nick = %s.nick, ?end, "chat client left");
}

impl Session {
    fn format(&self) -> Format {
        self.outbox.format()
    }

    fn reply(&self, kind: &str, text: &str, extra: Option<serde_json::Value>) {
        self.outbox
            .push(OutItem::Raw(self.format().reply(kind, text, extra)));
    }

    fn error(&self, text: &str) {
        self.reply("error", text, None);
    }

    /// Enters the first room: the one a JSON hello asked for, else the default.
    async fn enter(&mut self, room: Option<String>) -> Result<(), HubClosed> {
        let room = room.unwrap_or_else(|| self.cfg.room.clone());
        self.join(&room).await
    }

    async fn post(&self, event: Event, route: Route) -> Result<(), HubClosed> {
        self.hub
            .post(Pending {
                event,
                route,
                origin: Some(self.outbox.clone()),
            })
            .await
    }

    async fn join(&mut self, room: &str) -> Result<(), HubClosed> {
        let room: Arc<str> = Arc::from(room);
        if self.room.as_deref() == Some(&*room) {
            self.reply("info", &format!("you are already in #{room}"), None);
            return Ok(());
        }
        let old = self.hub.move_to(self.id, room.clone());
        if let Some(old) = old {
            let leave = Event::new(
                Kind::Leave,
                Some(old),
                self.nick.clone(),
                format!("went to #{room}"),
            );
            self.post(leave, Route::Room).await?;
        }
        self.room = Some(room.clone());
        let join = Event::new(Kind::Join, Some(room), self.nick.clone(), "");
        self.post(join, Route::Join(self.id, self.outbox.clone()))
            .await
    }

    /// Handles one line. `Ok(Some(end))` ends the session.
    async fn handle(&mut self, line: BytesMut) -> Result<Option<End>, HubClosed> {
        if !self.negotiated {
            // The first line decides the protocol: a JSON hello, or plain text from the start. A
            // hello that comes after the client was already put in the default room still counts.
            self.negotiated = true;
            if let Some(hello) = Hello::parse(&line) {
                self.outbox.set_format(Format::Json);
                if let Some(nick) = hello.nick.as_deref() {
                    self.set_nick(nick).await?;
                }
                self.reply(
                    "welcome",
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
                    (Some(r), _) => self.join(&r).await?,
                    (None, false) => self.enter(None).await?,
                    (None, true) => {}
                }
                return Ok(None);
            }
        }
        if self.room.is_none() {
            self.enter(None).await?;
        }
        let text = match self.format().decode(&line) {
            Ok(t) => t,
            Err(e) => {
                self.error(&e);
                return Ok(None);
            }
        };
        if text.trim().is_empty() {
            return Ok(None);
        }
        if !self.bucket.try_take() {
            self.error(&format!(
                "slow down: at most {} lines per second (bursts of {}); that line was not sent",
                self.cfg.rate, self.cfg.burst
            ));
            return Ok(None);
        }
        match Command::parse(&text) {
            Command::Say(t) => self.say(Kind::Message, t).await?,
            Command::Me(t) => self.say(Kind::Action, t).await?,
            Command::Nick(n) => self.set_nick(n).await?,
            Command::Join(r) => match room_name(r) {
                Ok(r) => self.join(&r).await?,
                Err(e) => self.error(&e),
            },
            Command::Rooms => {
                let rooms = self.hub.rooms();
                let list: Vec<String> = rooms.iter().map(|(n, c)| format!("#{n} ({c})")).collect();
                let data = json!({ "rooms": rooms.iter().map(|(n, c)| json!({"name": n, "members": c})).collect::<Vec<_>>() });
                self.reply("rooms", &format!("rooms: {}", list.join(", ")), Some(data));
            }
            Command::Who(room) => {
                let room = match room.map(room_name) {
                    Some(Ok(r)) => r,
                    Some(Err(e)) => {
                        self.error(&e);
                        return Ok(None);
                    }
                    None => self.room.as_deref().unwrap_or_default().to_string(),
                };
                let nicks = self.hub.who(&room);
                self.reply(
                    "members",
                    &format!("in #{room} ({}): {}", nicks.len(), nicks.join(", ")),
                    Some(json!({ "room": room, "nicks": nicks })),
                );
            }
            Command::Msg(to, text) => self.private(to, text).await?,
            Command::History(n) => self.history(n.unwrap_or(self.cfg.replay.max(1))).await,
            Command::Help => {
                for line in HELP {
                    self.reply("help", line, None);
                }
            }
            Command::Quit(reason) => {
                self.reply("bye", "goodbye", None);
                return Ok(Some(End::Quit(reason.to_string())));
            }
            Command::Bad(msg) => self.error(&msg),
        }
        Ok(None)
    }

    async fn say(&self, kind: Kind, text: &str) -> Result<(), HubClosed> {
        let Some(room) = self.room.clone() else {
            self.error("you are not in a room; /join one");
            return Ok(());
        };
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
        match self.hub.rename(self.id, nick) {
            Ok((old, room)) => {
                self.nick = Arc::from(nick);
                match room {
                    Some(room) if self.room.is_some() => {
                        let ev = Event::new(Kind::Nick, Some(room), old, "")
                            .with_target(self.nick.clone());
                        self.post(ev, Route::Room).await?;
                    }
                    _ => self.reply(
                        "nick",
                        &format!("you are now {nick}"),
                        Some(json!({ "nick": nick })),
                    ),
                }
            }
            Err(NickError::Taken(n)) => self.error(&format!("nick {n:?} is taken; pick another")),
            Err(NickError::Invalid(e)) => self.error(&e),
        }
        Ok(())
    }

    async fn private(&self, to: &str, text: &str) -> Result<(), HubClosed> {
        let Some((target, their_outbox)) = self.hub.lookup(to) else {
            self.error(&format!("no one called {to:?} is here"));
            return Ok(());
        };
        let mut route = vec![their_outbox];
        if !Arc::ptr_eq(&route[0], &self.outbox) {
            route.push(self.outbox.clone());
        }
        let event = Event::new(Kind::Private, None, self.nick.clone(), text).with_target(target);
        self.post(event, Route::Direct(route)).await
    }

    async fn history(&self, n: usize) {
        let Some(room) = self.room.clone() else {
            return;
        };
        let n = n.min(self.cfg.max_history);
        match self.hub.history(&room, n).await {
            Ok(events) => {
                self.reply(
                    "history",
                    &format!("last {} messages of #{room}:", events.len()),
                    Some(json!({ "room": &*room, "count": events.len() })),
                );
                for e in events {
                    self.outbox.push(OutItem::Event(e));
                }
                self.reply(
                    "history_end",
                    "end of history",
                    Some(json!({ "room": &*room })),
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, "history read failed");
                self.error("history is not available right now");
            }
        }
    }
}

/// Sends whatever the outbox holds, batched into one write, until the session ends or the client
/// falls behind.
async fn write_loop(mut writer: WriteHalf<Stream>, outbox: Arc<Outbox>, cfg: Arc<ChatSettings>) {
    let mut items = Vec::new();
    let mut buf = BytesMut::new();
    let ended = outbox.ended().clone();
    loop {
        let state = outbox.take(&mut items).await;
        let format = outbox.format();
        if state == State::Overflowed {
            // The socket is full, so this may never arrive; it is tried without waiting long.
            let msg = format.reply(
                "error",
                &format!(
                    "disconnected: you were not reading (more than {} bytes waiting)",
                    cfg.sendq
                ),
                None,
            );
            let _ = tokio::time::timeout(Duration::from_millis(100), writer.write_all(&msg)).await;
            break;
        }
        for item in items.drain(..) {
            match item {
                OutItem::Event(e) => buf.extend_from_slice(e.render(format)),
                OutItem::Raw(b) => buf.extend_from_slice(&b),
            }
        }
        if items.capacity() > 16 {
            items = Vec::new();
        }
        if !buf.is_empty() {
            let write = writer.write_all(&buf);
            tokio::pin!(write);
            let ok = tokio::select! {
                r = &mut write => r.is_ok(),
                _ = ended.cancelled() => {
                    if outbox.state() == State::Overflowed {
                        false
                    } else {
                        // Closing: finish this write, but not forever.
                        matches!(tokio::time::timeout(cfg.flush_timeout, write).await, Ok(Ok(())))
                    }
                }
            };
            if !ok {
                outbox.close();
                break;
            }
            // Keep no buffer between bursts: thousands of idle clients would each hold the
            // largest burst they ever received.
            buf = BytesMut::new();
        }
        if state == State::Closing {
            break;
        }
    }
    let _ = tokio::time::timeout(cfg.flush_timeout, writer.shutdown()).await;
}
