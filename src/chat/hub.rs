//! The chat hub: who is connected, under which nick, in which room — and delivery of ordered
//! events to the members of a room (fan-out).
//!
//! Sessions change membership and nicks directly (under a short `std::sync::Mutex`: no `.await`
//! is ever held inside it, as in mini-redis's `Db`). Events to deliver go through the sequencer
//! ([`super::sequencer`]), which orders and stores them and then calls [`Shared::deliver`], so every
//! member sees a room's events in one order, and nothing is shown before it is committed (while
//! the store cannot commit at all, on a full disk say, the sequencer delivers unsaved and says so).

use crate::chat::wire::ReplyKind;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::cluster::presence::Change;
use super::directory::Directory;
use super::event::{Batch, Event};
use super::outbox::{OutItem, Outbox};
use super::store::{HistoryReader, StoreError};
use super::wire::Format;
use crate::net::{AddrBuckets, AddrKey, IpList, PeerAddr, RateLimit};

/// A connected client's id (never reused during a run).
pub type ClientId = u64;

/// Where a sequenced event goes. Routes name rooms and clients, never a client's queue: they are
/// resolved against the members present at delivery, so the same event can be delivered by a node
/// that did not sequence it (a cluster), and a client gone meanwhile is simply not there.
#[derive(Debug)]
pub enum Route {
    /// To every member of the event's room.
    Room,
    /// A join: the client becomes a member of the event's room at this point in the order, gets the
    /// greeting (its welcome, at its first join), the room's recent history and the join notice in
    /// one piece, and everyone else gets the join notice.
    Join(Join),
    /// To the clients holding these nicks when it is delivered (private messages: the recipient
    /// and the sender's own copy), wherever it was sent from.
    Nicks(Vec<Arc<str>>),
}

/// Who joins, and what it is sent.
#[derive(Debug)]
pub struct Join {
    pub id: ClientId,
    pub greeting: Vec<Bytes>,
    /// The client's join ticket: a join overtaken by a later one is dropped.
    pub ticket: u64,
    /// Dropped once the join has been delivered (or dropped as overtaken), so the session can
    /// wait for it: nothing it answers afterwards can overtake the welcome and the join.
    pub done: tokio::sync::oneshot::Sender<()>,
}

/// An event waiting for its place in the order.
#[derive(Debug)]
pub struct Pending {
    pub event: Event,
    pub route: Route,
    /// Who caused it: told of a presence change even where the room is too big to announce it.
    pub origin: Option<ClientId>,
}

/// The nick server notices are sent under.
pub const SERVER_NICK: &str = "server";

impl Pending {
    /// A server notice to the members of `room`, delivered in order with the room's events.
    pub fn notice(room: Arc<str>, text: &str) -> Pending {
        Pending {
            event: Event::new(
                super::event::Kind::Notice,
                Some(room),
                Arc::from(SERVER_NICK),
                text,
            ),
            route: Route::Room,
            origin: None,
        }
    }
}

/// The hub closed (the server is stopping).
#[derive(Debug, thiserror::Error)]
#[error("the chat hub has stopped")]
pub struct HubClosed;

/// A nick that cannot be had.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NickError {
    #[error("nick {0:?} is taken; pick another")]
    Taken(String),
    #[error("{0}")]
    Invalid(String),
}

#[derive(Debug)]
struct Member {
    nick: Arc<str>,
    room: Option<Arc<str>>,
    outbox: Arc<Outbox>,
    /// The client's address, where per-address limits apply to it.
    addr: Option<AddrKey>,
    /// Counts the client's joins; a sequenced join carries the value it was made with.
    joins: u64,
    /// When it connected, and when it last said something (ms since the epoch), for `/whois`.
    since: i64,
    active: i64,
    /// Its `/away` message, told to whoever sends it a private message.
    away: Option<Arc<str>>,
}

/// A room's topic: what, who set it, when (ms since the epoch). It lives as long as its room.
#[derive(Debug, Clone)]
pub struct Topic {
    pub text: Arc<str>,
    pub by: Arc<str>,
    pub at: i64,
}

/// What `/whois` tells about a client.
#[derive(Debug, Clone)]
pub struct Whois {
    pub nick: Arc<str>,
    pub room: Option<Arc<str>>,
    pub since: i64,
    pub active: i64,
    pub away: Option<Arc<str>>,
}

/// The reply that shows `topic` of `room` to a client speaking `format` (on `/topic`, and with a
/// join, after the replay).
pub fn topic_reply(format: Format, room: &str, topic: Option<&Topic>) -> Bytes {
    match topic {
        Some(t) => format.reply(
            ReplyKind::Topic,
            &format!(
                "topic of #{room}: {} (set by {} at {})",
                t.text,
                t.by,
                super::event::clock(t.at)
            ),
            Some(serde_json::json!({ "room": room, "topic": &*t.text, "by": &*t.by, "at": t.at })),
        ),
        None => format.reply(
            ReplyKind::Topic,
            &format!("#{room} has no topic"),
            Some(serde_json::json!({ "room": room, "topic": null })),
        ),
    }
}

#[derive(Debug, Default)]
struct Room {
    members: HashMap<ClientId, Arc<Outbox>>,
    /// The last `replay` stored events, for joiners and short `/history` requests.
    recent: VecDeque<Arc<Event>>,
    /// What `recent` pins ([`Event::pinned_bytes`]).
    recent_bytes: usize,
    /// Whether `recent` has been filled from the store.
    loaded: bool,
    /// Whether events left `recent` to keep it within its bytes: it then holds fewer than
    /// `replay` while more exist.
    trimmed: bool,
    /// The address that made the room, counted against its `--max-rooms-per-addr`.
    creator: Option<AddrKey>,
    /// Set by `/topic`; forgotten with the room.
    topic: Option<Topic>,
}

#[derive(Debug, Default)]
struct State {
    next_id: ClientId,
    clients: HashMap<ClientId, Member>,
    /// Case-folded nick → client, so "Ann" and "ann" cannot both exist.
    nicks: HashMap<String, ClientId>,
    rooms: HashMap<Arc<str>, Room>,
    /// What all rooms' `recent` pin together.
    recent_bytes: usize,
    /// Rooms each address has made that still exist.
    rooms_made: HashMap<AddrKey, usize>,
}

impl State {
    /// Appends a stored event to `room`'s recent messages, within `replay` events and the bytes
    /// each room may pin (its own limit, or its share of the overall one when memory is tight).
    fn remember(&mut self, name: &str, event: &Arc<Event>, limits: &MemoryLimits) {
        let rooms = self.rooms.len();
        let Some(room) = self.rooms.get_mut(name) else {
            return;
        };
        let cost = event.pinned_bytes();
        if room.recent.len() == limits.replay {
            if let Some(old) = room.recent.pop_front() {
                room.recent_bytes -= old.pinned_bytes();
                self.recent_bytes -= old.pinned_bytes();
            }
        }
        room.recent.push_back(event.clone());
        room.recent_bytes += cost;
        self.recent_bytes += cost;
        let share = limits.room_share(rooms);
        self.recent_bytes -= room.trim(share);
        // Rooms filled when there were fewer of them may hold more than today's share: when the
        // total runs over, every room is brought to its share (rare: after 25 % growth).
        if self.recent_bytes > limits.total + limits.total / 4 {
            let mut freed = 0;
            for r in self.rooms.values_mut() {
                freed += r.trim(share);
            }
            self.recent_bytes -= freed;
        }
    }

    /// Forgets `name`, and with it what it pinned and its maker's count.
    fn drop_room(&mut self, name: &str) {
        let Some(room) = self.rooms.remove(name) else {
            return;
        };
        self.recent_bytes -= room.recent_bytes;
        if let Some(addr) = room.creator {
            if let Some(n) = self.rooms_made.get_mut(&addr) {
                *n -= 1;
                if *n == 0 {
                    self.rooms_made.remove(&addr);
                }
            }
        }
    }
}

impl Room {
    /// Drops the oldest recent events until the room pins at most `cap` bytes; returns the bytes
    /// freed.
    fn trim(&mut self, cap: usize) -> usize {
        let mut freed = 0;
        while self.recent_bytes > cap {
            let Some(old) = self.recent.pop_front() else {
                break;
            };
            let cost = old.pinned_bytes();
            self.recent_bytes -= cost;
            freed += cost;
            self.trimmed = true;
        }
        freed
    }
}

/// How much the rooms' recent messages may hold in memory.
#[derive(Debug, Clone, Copy)]
pub struct MemoryLimits {
    /// Events per room (`--replay`).
    pub replay: usize,
    /// Bytes per room (`--replay-bytes`).
    pub room: usize,
    /// Bytes for all rooms together (`--replay-memory`).
    pub total: usize,
}

impl MemoryLimits {
    /// What one room may pin when there are `rooms`: its own limit, or an equal share of the
    /// total, whichever is smaller.
    fn room_share(&self, rooms: usize) -> usize {
        self.room.min(self.total / rooms.max(1))
    }
}

/// State shared by the hub handle and the sequencer thread.
#[derive(Debug)]
pub struct Shared {
    state: Mutex<State>,
    /// Events kept in memory per room (`--replay`), and the bytes they may pin.
    replay: usize,
    memory: MemoryLimits,
    /// Rooms with more members than this get no join/leave/nick notices: announcing every arrival
    /// to everyone costs O(members²) when a crowd connects at once (IRC's "auditorium" problem).
    announce_max: usize,
    /// History is on disk, so rooms nobody is in need not be kept in memory.
    forget_empty: bool,
}

/// Rooms kept in memory without members (only without a history store).
const MAX_ROOMS_IN_MEMORY: usize = 1000;

/// A handle to the hub. Cloning is cheap; the sequencer stops when the last handle is dropped.
#[derive(Debug, Clone)]
pub struct ChatHub {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Pending>,
    history: Option<HistoryReader>,
    /// What is limited per client address.
    policy: Arc<AddrPolicy>,
    /// Who holds which nick beyond this node (a cluster's claims).
    directory: Directory,
}

/// What the hub limits per client address (an IPv4 address or an IPv6 /64), for addresses not in
/// `exempt`.
#[derive(Debug)]
pub struct AddrPolicy {
    /// `--rate`/`--burst`, kept across reconnects.
    pub line_rates: AddrBuckets,
    /// Addresses none of these limits apply to.
    pub exempt: IpList,
    /// Rooms an address may have made that still exist (`--max-rooms-per-addr`; 0 = no limit).
    pub max_rooms: usize,
}

/// A room that cannot be made: its maker's address has made as many as it may.
#[derive(Debug, thiserror::Error)]
#[error("your address has made {0} rooms, as many as it may; join an existing room (/rooms)")]
pub struct TooManyRooms(pub usize);

fn fold(nick: &str) -> String {
    super::names::fold(nick)
}

impl Shared {
    pub fn new(memory: MemoryLimits, announce_max: usize, forget_empty: bool) -> Arc<Self> {
        Arc::new(Shared {
            state: Mutex::new(State::default()),
            replay: memory.replay,
            memory,
            announce_max,
            forget_empty,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock must not take the whole server down with it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets (or with `None` clears) `room`'s topic; false if the room does not exist.
    pub fn set_topic(&self, room: &str, topic: Option<Topic>) -> bool {
        match self.lock().rooms.get_mut(room) {
            Some(r) => {
                r.topic = topic;
                true
            }
            None => false,
        }
    }

    /// Whether `room` exists here (it has members, or one on its way in).
    pub fn has_room(&self, room: &str) -> bool {
        self.lock().rooms.contains_key(room)
    }

    /// Every client here that is in a room: its room, id and nick.
    pub fn local_members(&self) -> Vec<(Arc<str>, ClientId, Arc<str>)> {
        let st = self.lock();
        st.clients
            .iter()
            .filter_map(|(id, m)| Some((m.room.clone()?, *id, m.nick.clone())))
            .collect()
    }

    /// The names of the rooms that exist here.
    pub fn room_names(&self) -> Vec<Arc<str>> {
        self.lock().rooms.keys().cloned().collect()
    }

    /// Whether `room`'s recent history is in memory.
    pub fn room_loaded(&self, room: &str) -> bool {
        self.lock().rooms.get(room).is_some_and(|r| r.loaded)
    }

    /// Fills `room`'s recent history (from the store, at its first join since start).
    pub fn preload(&self, room: &Arc<str>, events: Vec<Event>) {
        let mut st = self.lock();
        let rooms = st.rooms.len().max(1);
        let r = st.rooms.entry(room.clone()).or_default();
        if !r.loaded {
            let recent: VecDeque<Arc<Event>> = events.into_iter().map(Arc::new).collect();
            let bytes: usize = recent.iter().map(|e| e.pinned_bytes()).sum();
            let old = std::mem::replace(&mut r.recent_bytes, bytes);
            r.recent = recent;
            r.loaded = true;
            let freed = r.trim(self.memory.room_share(rooms));
            st.recent_bytes = st.recent_bytes + bytes - old - freed;
        }
    }

    /// Forgets events stamped before `cutoff` (ms since the epoch) from every room's memory, as
    /// retention deletes them from disk (`--history-max-age`).
    pub fn expire(&self, cutoff: i64) {
        let mut st = self.lock();
        for r in st.rooms.values_mut() {
            while r.recent.front().is_some_and(|e| e.ts < cutoff) {
                r.recent.pop_front();
            }
        }
    }

    /// Hands a sequenced batch to its recipients, in order. The sequencer has committed its
    /// history entries, or (disk full) told the rooms they are not being saved.
    pub fn deliver(&self, batch: impl Iterator<Item = Pending>) {
        let mut st = self.lock();
        // Consecutive events for one room go to each member in one push (one lock, one wake-up).
        let mut run = Run::default();
        for p in batch {
            let event = Arc::new(p.event);
            match p.route {
                Route::Nicks(nicks) => {
                    run.flush(&st);
                    let mut ids: Vec<ClientId> = nicks
                        .iter()
                        .filter_map(|n| st.nicks.get(&fold(n)).copied())
                        .collect();
                    // To oneself: one copy.
                    ids.dedup();
                    for m in ids.iter().filter_map(|id| st.clients.get(id)) {
                        m.outbox.push(OutItem::Event(event.clone()));
                    }
                }
                Route::Room => {
                    let Some(name) = event.room.clone() else {
                        continue;
                    };
                    if run.room.as_deref() != Some(&*name) {
                        run.flush(&st);
                        run.room = Some(name.clone());
                    }
                    // Rooms come into being with a join; a notice for a room everyone has left
                    // (or a message whose sender left meanwhile) reaches no one and is not kept.
                    if !st.rooms.contains_key(&*name) {
                        continue;
                    }
                    if event.kind.is_stored() && self.replay > 0 {
                        st.remember(&name, &event, &self.memory);
                    }
                    let Some(room) = st.rooms.get(&*name) else {
                        continue;
                    };
                    if event.kind.is_presence() && room.members.len() > self.announce_max {
                        // Only whoever caused it hears of it (a nick change needs confirming).
                        run.flush(&st);
                        if let Some(m) = p.origin.and_then(|id| st.clients.get(&id)) {
                            m.outbox.push(OutItem::Event(event));
                        }
                        continue;
                    }
                    run.events.push(event);
                }
                Route::Join(Join {
                    id,
                    greeting,
                    ticket,
                    done: _done,
                }) => {
                    run.flush(&st);
                    let Some(name) = event.room.clone() else {
                        continue;
                    };
                    // The client may have left or moved on while the join waited for its turn.
                    let joiner = st
                        .clients
                        .get(&id)
                        .filter(|m| m.room.as_deref() == Some(&*name) && m.joins == ticket);
                    let Some(outbox) = joiner.map(|m| m.outbox.clone()) else {
                        continue;
                    };
                    let room = st.rooms.entry(name.clone()).or_default();
                    // IRC's order: the join, then the topic (if there is one).
                    let topic = room
                        .topic
                        .as_ref()
                        .map(|t| OutItem::Raw(topic_reply(outbox.format(), &name, Some(t))));
                    let mine = greeting
                        .into_iter()
                        .map(OutItem::Raw)
                        .chain(room.recent.iter().cloned().map(OutItem::Event))
                        .chain(std::iter::once(OutItem::Event(event.clone())))
                        .chain(topic);
                    outbox.push_all(mine);
                    if room.members.len() < self.announce_max {
                        for o in room.members.values() {
                            o.push(OutItem::Event(event.clone()));
                        }
                    }
                    room.members.insert(id, outbox);
                }
            }
        }
        run.flush(&st);
    }
}

/// Consecutive events for one room, delivered together.
#[derive(Default)]
struct Run {
    room: Option<Arc<str>>,
    events: Vec<Arc<Event>>,
}

impl Run {
    fn flush(&mut self, st: &State) {
        if self.events.is_empty() {
            return;
        }
        let item = if self.events.len() == 1 {
            OutItem::Event(self.events[0].clone())
        } else {
            OutItem::Batch(Arc::new(Batch::new(std::mem::take(&mut self.events))))
        };
        self.events.clear();
        if let Some(room) = self.room.as_ref().and_then(|n| st.rooms.get(n)) {
            for o in room.members.values() {
                o.push(item.clone());
            }
        }
    }
}

impl ChatHub {
    /// A hub whose events go through `tx` to the sequencer. `history` reads the SQLite file, for
    /// `/history` requests beyond what is in memory. `policy` is what clients may do per address.
    pub fn new(
        shared: Arc<Shared>,
        tx: mpsc::Sender<Pending>,
        history: Option<HistoryReader>,
        policy: AddrPolicy,
    ) -> Self {
        ChatHub {
            shared,
            tx,
            history,
            policy: Arc::new(policy),
            directory: Directory::Local,
        }
    }

    /// The same hub, with nicks claimed in `directory` as well (a cluster's).
    pub fn with_directory(mut self, directory: Directory) -> Self {
        self.directory = directory;
        self
    }

    /// The line rate limit of a new client at `peer`: its address's, unless it is exempt.
    pub fn line_limit(&self, peer: &PeerAddr) -> RateLimit {
        self.policy.line_rates.limit_for(peer)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.lock()
    }

    /// Queues an event for ordering, storage and delivery. Waits only if the sequencer is
    /// thousands of events behind, which slows the sender, never the room.
    pub async fn post(&self, pending: Pending) -> Result<(), HubClosed> {
        self.tx.send(pending).await.map_err(|_| HubClosed)
    }

    /// Whether the sequencer is gone (it failed): nothing can be ordered any more. While the
    /// server stops normally it runs until the last hub handle is dropped.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Queues an event without waiting; fails if the sequencer is far behind or gone. For places
    /// that cannot wait (a session being dropped).
    pub fn try_post(&self, pending: Pending) -> Result<(), HubClosed> {
        self.tx.try_send(pending).map_err(|_| HubClosed)
    }

    /// Adds a client at `peer` with a fresh guest nick. It joins a room later, through
    /// [`Route::Join`].
    pub fn register(&self, outbox: Arc<Outbox>, peer: &PeerAddr) -> (ClientId, Arc<str>) {
        let addr = match peer {
            PeerAddr::Inet(a) if !self.policy.exempt.contains(a.ip()) => Some(AddrKey::of(a.ip())),
            _ => None,
        };
        let mut st = self.lock();
        st.next_id += 1;
        let id = st.next_id;
        let mut n = id;
        let nick: Arc<str> = loop {
            let candidate = format!("guest{n}");
            if !st.nicks.contains_key(&fold(&candidate)) {
                break Arc::from(candidate);
            }
            n += 1;
        };
        st.nicks.insert(fold(&nick), id);
        let now = super::event::now_ms();
        st.clients.insert(
            id,
            Member {
                nick: nick.clone(),
                room: None,
                outbox,
                addr,
                joins: 0,
                since: now,
                active: now,
                away: None,
            },
        );
        (id, nick)
    }

    /// Renames a client. Returns the old nick and the client's room.
    pub fn rename(
        &self,
        id: ClientId,
        new: &str,
    ) -> Result<(Arc<str>, Option<Arc<str>>), NickError> {
        let mut st = self.lock();
        let key = fold(new);
        if let Some(owner) = st.nicks.get(&key) {
            if *owner != id {
                return Err(NickError::Taken(new.to_string()));
            }
        }
        let Some(member) = st.clients.get_mut(&id) else {
            return Err(NickError::Invalid("not connected".into()));
        };
        let old = std::mem::replace(&mut member.nick, Arc::from(new));
        let room = member.room.clone();
        st.nicks.remove(&fold(&old));
        st.nicks.insert(key, id);
        Ok((old, room))
    }

    /// Renames a client to `new` once the chat's directory has granted it the nick (on one node
    /// that is the same check as [`ChatHub::rename`]; in a cluster, a claim in Redis). Lets go of
    /// the old nick's claim.
    pub async fn claim_nick(
        &self,
        id: ClientId,
        new: &str,
    ) -> Result<(Arc<str>, Option<Arc<str>>), NickError> {
        let key = fold(new);
        // Most clashes are with someone here: no need to ask further.
        if self
            .lock()
            .nicks
            .get(&key)
            .is_some_and(|owner| *owner != id)
        {
            return Err(NickError::Taken(new.to_string()));
        }
        self.directory.claim(&key, new, id).await?;
        match self.rename(id, new) {
            Ok((old, room)) => {
                let old_key = fold(&old);
                if old_key != key {
                    self.directory.release_now(&old_key, id).await;
                }
                if let Some(room) = &room {
                    self.directory.moved(|| Change::Enter {
                        room: room.clone(),
                        client: id,
                        nick: Arc::from(new),
                    });
                }
                Ok((old, room))
            }
            Err(e) => {
                self.directory.release_now(&key, id).await;
                Err(e)
            }
        }
    }

    /// Whether `nick` is held by a live client of another node (a cluster's directory knows).
    pub async fn is_elsewhere(&self, nick: &str) -> bool {
        self.directory.is_held(&fold(nick)).await
    }

    /// Gives a new client a guest nick no one else in the chat has, where its own (numbered by
    /// this node) might not be unique (a cluster); returns the nick it then has.
    pub async fn claim_guest(&self, id: ClientId) -> Result<Option<Arc<str>>, NickError> {
        for _ in 0..10 {
            let Some(n) = self.directory.guest_number().await else {
                return Ok(None);
            };
            let nick = format!("guest{}", n?);
            match self.claim_nick(id, &nick).await {
                Ok(_) => return Ok(Some(Arc::from(nick))),
                // Someone chose that guest's nick for themselves: take the next number.
                Err(NickError::Taken(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(NickError::Invalid(
            "no guest nick is free; try again".into(),
        ))
    }

    /// Moves a client out of its room and records `room` as where it is going; membership of the
    /// new room starts when its join is delivered. Returns the room it left.
    /// Also returns the join ticket to send with the join.
    /// A room that does not exist yet is made, and counts against its maker's address unless
    /// `free` (the server's default room is nobody's).
    pub fn move_to(
        &self,
        id: ClientId,
        room: Arc<str>,
        free: bool,
    ) -> Result<(Option<Arc<str>>, u64), TooManyRooms> {
        let mut st = self.lock();
        let Some(addr) = st.clients.get(&id).map(|m| m.addr) else {
            return Ok((None, 0));
        };
        if !st.rooms.contains_key(&room) {
            let creator = addr.filter(|_| !free);
            if let Some(addr) = creator {
                let made = st.rooms_made.get(&addr).copied().unwrap_or(0);
                if self.policy.max_rooms > 0 && made >= self.policy.max_rooms {
                    return Err(TooManyRooms(made));
                }
                *st.rooms_made.entry(addr).or_default() += 1;
            }
            st.rooms.insert(
                room.clone(),
                Room {
                    creator,
                    ..Room::default()
                },
            );
        }
        let Some(member) = st.clients.get_mut(&id) else {
            return Ok((None, 0));
        };
        member.joins += 1;
        let ticket = member.joins;
        let nick = member.nick.clone();
        let old = member.room.replace(room.clone());
        if let Some(old) = &old {
            leave_room(&mut st, id, old, self.shared.forget_empty);
        }
        drop(st);
        if let Some(old) = &old {
            self.directory.moved(|| Change::Leave {
                room: old.clone(),
                client: id,
            });
        }
        self.directory.moved(|| Change::Enter {
            room,
            client: id,
            nick,
        });
        Ok((old, ticket))
    }

    /// Removes a client entirely. Returns its nick and room, for the leave notice.
    pub fn remove(&self, id: ClientId) -> Option<(Arc<str>, Option<Arc<str>>)> {
        let mut st = self.lock();
        let member = st.clients.remove(&id)?;
        let key = fold(&member.nick);
        self.directory.release(&key, id);
        st.nicks.remove(&key);
        if let Some(room) = &member.room {
            leave_room(&mut st, id, room, self.shared.forget_empty);
            self.directory.moved(|| Change::Leave {
                room: room.clone(),
                client: id,
            });
        }
        Some((member.nick, member.room))
    }

    /// Nicks of the members of `room` wherever they are (every node of a cluster), sorted.
    pub async fn who_everywhere(&self, room: &str) -> Vec<String> {
        match self.directory.who(room).await {
            Some(nicks) => nicks,
            None => self.who(room),
        }
    }

    /// Nicks of the members of `room` here, sorted.
    pub fn who(&self, room: &str) -> Vec<String> {
        let st = self.lock();
        let mut nicks: Vec<String> = st
            .rooms
            .get(room)
            .map(|r| {
                r.members
                    .keys()
                    .filter_map(|id| st.clients.get(id).map(|m| m.nick.to_string()))
                    .collect()
            })
            .unwrap_or_default();
        nicks.sort_by_key(|n| fold(n));
        nicks
    }

    /// Rooms with members whose name contains `search` (case-insensitive; all if `None`), the
    /// busiest first: at most `limit` of them, and how many matched in all.
    pub fn rooms(&self, search: Option<&str>, limit: usize) -> (Vec<(String, usize)>, usize) {
        let search = search.map(fold);
        let st = self.lock();
        let mut rooms: Vec<(&str, usize)> = st
            .rooms
            .iter()
            .filter(|(_, r)| !r.members.is_empty())
            .filter(|(name, _)| search.as_ref().is_none_or(|s| fold(name).contains(s)))
            .map(|(name, r)| (&**name, r.members.len()))
            .collect();
        let total = rooms.len();
        rooms.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        let shown = rooms
            .into_iter()
            .take(limit)
            .map(|(name, n)| (name.to_string(), n))
            .collect();
        (shown, total)
    }

    /// About how many bytes a joiner of `room` is sent as its replay (the recent messages'
    /// fields and their stamps), to charge to the joiner's reply budget.
    pub fn replay_size(&self, room: &str) -> usize {
        let st = self.lock();
        st.rooms.get(room).map_or(0, |r| {
            r.recent
                .iter()
                .map(|e| e.text.len() + e.nick.len() + 24)
                .sum()
        })
    }

    /// Finds a client by nick (case-insensitive): its exact nick and id.
    pub fn lookup(&self, nick: &str) -> Option<(Arc<str>, ClientId)> {
        let st = self.lock();
        let id = *st.nicks.get(&fold(nick))?;
        st.clients.get(&id).map(|m| (m.nick.clone(), id))
    }

    /// `room`'s topic, if it has one.
    pub fn topic(&self, room: &str) -> Option<Topic> {
        self.lock().rooms.get(room).and_then(|r| r.topic.clone())
    }

    /// Sets (or with `None` clears) `room`'s topic; false if the room does not exist.
    pub fn set_topic(&self, room: &str, topic: Option<Topic>) -> bool {
        self.shared.set_topic(room, topic)
    }

    /// Sets (or with `None` clears) a client's away message.
    pub fn set_away(&self, id: ClientId, away: Option<Arc<str>>) {
        if let Some(m) = self.lock().clients.get_mut(&id) {
            m.away = away;
        }
    }

    /// Notes that a client said something now (its idle time starts over).
    pub fn touch(&self, id: ClientId) {
        if let Some(m) = self.lock().clients.get_mut(&id) {
            m.active = super::event::now_ms();
        }
    }

    /// What `/whois` tells about `nick` (case-insensitive), if it is connected.
    pub fn whois(&self, nick: &str) -> Option<Whois> {
        let st = self.lock();
        let m = st.clients.get(st.nicks.get(&fold(nick))?)?;
        Some(Whois {
            nick: m.nick.clone(),
            room: m.room.clone(),
            since: m.since,
            active: m.active,
            away: m.away.clone(),
        })
    }

    /// How many clients are connected.
    pub fn client_count(&self) -> usize {
        self.lock().clients.len()
    }

    /// The last `n` stored events of `room`: from memory when it holds enough, else from the
    /// history file (by its reader, beside the writer), whose read stops once the texts pass
    /// `max_bytes` (the most the reply may carry).
    pub async fn history(
        &self,
        room: &str,
        n: usize,
        max_bytes: usize,
    ) -> Result<Vec<Arc<Event>>, StoreError> {
        let (in_memory, loaded): (Vec<Arc<Event>>, bool) = {
            let st = self.lock();
            st.rooms
                .get(room)
                .map(|r| (r.recent.iter().cloned().collect(), r.loaded && !r.trimmed))
                .unwrap_or_default()
        };
        let Some(reader) = &self.history else {
            return Ok(tail(in_memory, n));
        };
        if in_memory.len() >= n || (loaded && in_memory.len() < self.shared.replay) {
            // Memory has all that was asked, or all there is (it holds fewer than it could).
            return Ok(tail(in_memory, n));
        }
        let events = reader.recent(room, n, max_bytes).await?;
        Ok(events.into_iter().map(Arc::new).collect())
    }
}

fn tail(mut events: Vec<Arc<Event>>, n: usize) -> Vec<Arc<Event>> {
    let skip = events.len().saturating_sub(n);
    events.drain(..skip);
    events
}

fn leave_room(st: &mut State, id: ClientId, room: &str, forget_empty: bool) {
    let Some(r) = st.rooms.get_mut(room) else {
        return;
    };
    r.members.remove(&id);
    if !r.members.is_empty() {
        return;
    }
    // An empty room is forgotten when its history is on disk (the next join reloads it) or it has
    // none. Without a store its recent messages are all the history there is, so empty rooms are
    // kept, up to a bound, so that creating rooms cannot grow the server without limit.
    if forget_empty || r.recent.is_empty() || st.rooms.len() > MAX_ROOMS_IN_MEMORY {
        st.drop_room(room);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::event::Kind;

    fn say(shared: &Shared, room: &str, text: &str) {
        let room: Arc<str> = Arc::from(room);
        let event = Event::new(Kind::Message, Some(room), Arc::from("ann"), text);
        let pending = Pending {
            event,
            route: Route::Room,
            origin: None,
        };
        shared.deliver(std::iter::once(pending));
    }

    fn open_room(shared: &Shared, room: &str) {
        shared.lock().rooms.insert(Arc::from(room), Room::default());
    }

    #[test]
    fn recent_messages_are_bounded_in_bytes_per_room_and_overall() {
        let limits = MemoryLimits {
            replay: 20,
            room: 64 * 1024,
            total: 1024 * 1024,
        };
        let shared = Shared::new(limits, 500, false);
        let long = "x".repeat(4000);
        // One room alone: 20 lines of 4 KB would pin far more than 64 KiB.
        open_room(&shared, "solo");
        for _ in 0..20 {
            say(&shared, "solo", &long);
        }
        {
            let st = shared.lock();
            let room = &st.rooms["solo"];
            assert!(room.recent_bytes <= limits.room, "{}", room.recent_bytes);
            assert!(room.recent.len() < 20 && room.trimmed);
            assert_eq!(st.recent_bytes, room.recent_bytes);
        }
        // Short lines: all 20 kept.
        open_room(&shared, "chatty");
        for i in 0..30 {
            say(&shared, "chatty", &format!("hello {i}"));
        }
        assert_eq!(shared.lock().rooms["chatty"].recent.len(), 20);
        // A thousand rooms each filled with long lines stay within the total (plus its slack).
        for r in 0..1000 {
            let name = format!("room{r}");
            open_room(&shared, &name);
            for _ in 0..20 {
                say(&shared, &name, &long);
            }
        }
        let st = shared.lock();
        let counted: usize = st.rooms.values().map(|r| r.recent_bytes).sum();
        let actual: usize = st
            .rooms
            .values()
            .flat_map(|r| r.recent.iter())
            .map(|e| e.pinned_bytes())
            .sum();
        assert_eq!(counted, actual, "the per-room counts are exact");
        assert_eq!(st.recent_bytes, counted, "the total is exact");
        assert!(
            st.recent_bytes <= limits.total + limits.total / 4,
            "{} bytes pinned",
            st.recent_bytes
        );
    }
}
