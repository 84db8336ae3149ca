//! The sequencer: the one place where chat events get their order. It takes everything waiting,
//! numbers it, commits the history entries in one transaction (group commit), and only then hands
//! the batch to the hub for delivery. Runs on its own thread because the store is synchronous.
//!
//! It also keeps history within its retention (rows per room, after appends; age, on a timer),
//! and rides out a store that cannot commit (a full disk): the chat goes on unsaved, each room
//! concerned and the log are told once, what is said meanwhile is kept (bounded) and committed
//! when a retry succeeds, and the rooms are told that saving resumed.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::{self, error::TryRecvError};

use super::event::{now_ms, Event};
use super::hub::{Pending, Route, Shared};
use super::store::{Retention, Store, StoreError};

/// Most events taken into one transaction: bounds the latency of the first event of a burst.
const MAX_BATCH: usize = 1024;

/// Most rows one retention step deletes: a step stays a few milliseconds however much is due
/// (say, after a restart with a lower limit); what is left is taken at the next step.
const PRUNE_BATCH: usize = 2000;

/// Retention steps by age in one maintenance pass, before new events get their turn again.
const EXPIRE_STEPS: usize = 8;

/// Rooms whose appends are counted for the row limit; past this the counts start over (every
/// room is then checked at its next append), so creating rooms cannot grow the map.
const MAX_COUNTED_ROOMS: usize = 10_000;

/// How often commits are retried while the store is failing.
const RETRY: Duration = Duration::from_secs(1);

/// Bytes of unsaved messages kept for the retry (their texts and what holds them); older ones are
/// let go past this.
const MAX_UNSAVED_BYTES: usize = 8 << 20;

/// What an unsaved message costs to keep.
fn weight(e: &Event) -> usize {
    std::mem::size_of::<Event>() + e.text.len() + e.nick.len()
}

/// What the sequencer is given at start.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Events kept in memory per room (the joiners' replay).
    pub replay: usize,
    pub retention: Retention,
    /// Numbering continues after this (see [`Store::last_seq`]).
    pub last_seq: u64,
}

/// Runs until every hub handle is dropped. `timer` (a current-thread runtime with time enabled)
/// only serves to wait for the next event or the next maintenance, whichever comes first.
pub fn run(
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<Pending>,
    store: Box<dyn Store>,
    cfg: Config,
    timer: tokio::runtime::Runtime,
) {
    let mut s = Sequencer::new(shared, store, cfg);
    let mut batch: Vec<Pending> = Vec::with_capacity(64);
    loop {
        let first = match rx.try_recv() {
            Ok(p) => Some(p),
            Err(TryRecvError::Disconnected) => break,
            Err(TryRecvError::Empty) => match s.next_deadline() {
                None => match rx.blocking_recv() {
                    Some(p) => Some(p),
                    None => break,
                },
                Some(at) => {
                    // The timeout is made inside the runtime, whose timer it registers with.
                    let wait = async {
                        tokio::time::timeout_at(tokio::time::Instant::from_std(at), rx.recv()).await
                    };
                    match timer.block_on(wait) {
                        Ok(Some(p)) => Some(p),
                        Ok(None) => break,
                        Err(_) => None,
                    }
                }
            },
        };
        if let Some(first) = first {
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(p) => batch.push(p),
                    Err(_) => break,
                }
            }
            s.sequence(&mut batch);
        }
        s.maintain(Instant::now());
    }
    s.finish();
    tracing::debug!("sequencer stopped");
}

/// The store is failing: what is being said meanwhile, and who was told.
struct Outage {
    /// Copies of the unsaved messages, oldest first, to commit when the store works again.
    unsaved: VecDeque<Event>,
    unsaved_bytes: usize,
    /// Unsaved messages let go because `unsaved` was full.
    lost: u64,
    /// Rooms told that their history is not being saved.
    told: HashSet<Arc<str>>,
    retry_at: Instant,
    /// What is wrong, as the rooms are told.
    why: &'static str,
}

struct Sequencer {
    shared: Arc<Shared>,
    store: Box<dyn Store>,
    replay: usize,
    retention: Retention,
    /// The last number handed out.
    seq: u64,
    /// Per room, messages appended since its row count was last checked.
    appended: HashMap<Arc<str>, u64>,
    /// Appends between two checks of a room's row count.
    slack: u64,
    /// When the next deletion by age is due.
    expire_at: Option<Instant>,
    outage: Option<Outage>,
}

impl Sequencer {
    fn new(shared: Arc<Shared>, store: Box<dyn Store>, cfg: Config) -> Self {
        Sequencer {
            shared,
            store,
            replay: cfg.replay,
            retention: cfg.retention,
            seq: cfg.last_seq,
            appended: HashMap::new(),
            // A tenth over the limit at most: one check per that many appends keeps the check's
            // index walk (the limit's worth of entries) cheap per message.
            slack: cfg
                .retention
                .max_rows
                .map_or(u64::MAX, |n| (n / 10).clamp(1, 1000)),
            // Due at once: what aged while the server was down goes first.
            expire_at: cfg.retention.max_age.map(|_| Instant::now()),
            outage: None,
        }
    }

    /// When the timer must wake the loop, if nothing arrives before.
    fn next_deadline(&self) -> Option<Instant> {
        match &self.outage {
            Some(o) => Some(o.retry_at),
            None => self.expire_at,
        }
    }

    /// Numbers, stores and delivers one batch.
    fn sequence(&mut self, batch: &mut Vec<Pending>) {
        let base = self.seq;
        for p in batch.iter_mut() {
            self.seq += 1;
            p.event.seq = self.seq;
            if let (Route::Join(..), Some(room)) = (&p.route, &p.event.room) {
                if !self.shared.room_loaded(room) {
                    let recent = self.store.recent(room, self.replay).unwrap_or_else(|e| {
                        tracing::error!(error = %e, %room, "cannot load room history");
                        Vec::new()
                    });
                    self.shared.preload(room, recent);
                }
            }
        }
        let mut due: Vec<Arc<str>> = Vec::new();
        if self.outage.is_none() {
            let stored: Vec<&Event> = batch
                .iter()
                .filter(|p| p.event.kind.is_stored())
                .map(|p| &p.event)
                .collect();
            match self.store.append(&stored, self.seq) {
                Ok(()) => due = self.count_appends(stored.iter().copied()),
                Err(e) => self.begin_outage(&e),
            }
        }
        if self.outage.is_some() {
            self.keep_unsaved(batch, base);
        }
        // Everything goes out: committed, or (while the store fails) unsaved, which the rooms
        // concerned have been told.
        self.shared.deliver(batch.drain(..));
        for room in due {
            self.trim(&room);
        }
    }

    /// Counts appends per room for the row limit; returns the rooms due for a check.
    fn count_appends<'a>(&mut self, stored: impl Iterator<Item = &'a Event>) -> Vec<Arc<str>> {
        let mut due = Vec::new();
        if self.retention.max_rows.is_none() {
            return due;
        }
        for e in stored {
            let Some(room) = &e.room else { continue };
            if self.appended.len() >= MAX_COUNTED_ROOMS && !self.appended.contains_key(room) {
                self.appended.clear();
            }
            // A room not counted yet is checked at once: its count on disk is not known.
            let n = self
                .appended
                .entry(room.clone())
                .or_insert(self.slack.saturating_sub(1));
            *n += 1;
            if *n >= self.slack && !due.contains(room) {
                due.push(room.clone());
            }
        }
        due
    }

    /// Deletes a room's rows beyond the limit (one batch of them).
    fn trim(&mut self, room: &Arc<str>) {
        let Some(keep) = self.retention.max_rows else {
            return;
        };
        match self.store.trim_room(room, keep, PRUNE_BATCH) {
            // A full batch: there may be more, so check again at the room's next append.
            Ok(n) if n == PRUNE_BATCH => {}
            Ok(_) => {
                if let Some(count) = self.appended.get_mut(room) {
                    *count = 0;
                }
            }
            Err(e) => tracing::warn!(error = %e, %room, "cannot trim the room's history"),
        }
    }

    /// Deletes what is older than the retention allows, on disk and in the rooms' memory.
    fn maintain(&mut self, now: Instant) {
        if self.outage.as_ref().is_some_and(|o| now >= o.retry_at) {
            self.retry(now);
            return;
        }
        let (Some(max_age), Some(at)) = (self.retention.max_age, self.expire_at) else {
            return;
        };
        if self.outage.is_some() || now < at {
            return;
        }
        let cutoff = now_ms().saturating_sub(max_age.as_millis().min(i64::MAX as u128) as i64);
        let mut more = false;
        for _ in 0..EXPIRE_STEPS {
            match self.store.expire(cutoff, PRUNE_BATCH) {
                Ok(n) if n == PRUNE_BATCH => more = true,
                Ok(_) => {
                    more = false;
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot delete expired history");
                    more = false;
                    break;
                }
            }
        }
        self.shared.expire(cutoff);
        // A backlog is worked off between batches of new events; otherwise check a few times per
        // max-age (a message outlives it by at most that much), at most every minute.
        let every = (max_age / 10).clamp(Duration::from_millis(200), Duration::from_secs(60));
        self.expire_at = Some(if more { now } else { now + every });
    }

    /// The store failed to commit: say so once, to the log, and carry on unsaved.
    fn begin_outage(&mut self, e: &StoreError) {
        let why = if e.is_disk_full() {
            "the disk is full"
        } else {
            "the history file cannot be written"
        };
        tracing::error!(
            error = %e,
            "history is not being saved ({why}); messages are still delivered, and saving is \
             retried every {}s",
            RETRY.as_secs()
        );
        self.outage = Some(Outage {
            unsaved: VecDeque::new(),
            unsaved_bytes: 0,
            lost: 0,
            told: HashSet::new(),
            retry_at: Instant::now() + RETRY,
            why,
        });
    }

    /// During an outage: tells each room, before its first unsaved message, that history is not
    /// being saved (renumbering the batch, which no one has seen yet), and keeps copies of the
    /// unsaved messages for the retry.
    fn keep_unsaved(&mut self, batch: &mut Vec<Pending>, base: u64) {
        let Some(outage) = self.outage.as_mut() else {
            return;
        };
        let mut notices = Vec::new();
        for (i, p) in batch.iter().enumerate() {
            if let (true, Some(room)) = (p.event.kind.is_stored(), &p.event.room) {
                if outage.told.insert(room.clone()) {
                    notices.push((i, room.clone()));
                }
            }
        }
        if !notices.is_empty() {
            let text = format!(
                "history is not being saved ({}); messages are still delivered, and kept to be \
                 saved when it can be",
                outage.why
            );
            for (i, room) in notices.into_iter().rev() {
                batch.insert(i, Pending::notice(room, &text));
            }
            self.seq = base;
            for p in batch.iter_mut() {
                self.seq += 1;
                p.event.seq = self.seq;
            }
        }
        for p in batch.iter().filter(|p| p.event.kind.is_stored()) {
            let e = &p.event;
            outage.unsaved_bytes += weight(e);
            outage.unsaved.push_back(Event::at(
                e.seq,
                e.ts,
                e.kind,
                e.room.clone(),
                e.nick.clone(),
                e.target.clone(),
                e.text.clone(),
            ));
            while outage.unsaved_bytes > MAX_UNSAVED_BYTES {
                let Some(old) = outage.unsaved.pop_front() else {
                    break;
                };
                outage.unsaved_bytes -= weight(&old);
                outage.lost += 1;
            }
        }
    }

    /// Tries to commit what was said during the outage; on success, saving resumes and the rooms
    /// told are told again.
    fn retry(&mut self, now: Instant) {
        let Some(outage) = self.outage.as_mut() else {
            return;
        };
        let unsaved: Vec<&Event> = outage.unsaved.iter().collect();
        if let Err(e) = self.store.append(&unsaved, self.seq) {
            tracing::debug!(error = %e, "history still cannot be saved");
            outage.retry_at = now + RETRY;
            return;
        }
        let Some(outage) = self.outage.take() else {
            return;
        };
        let kept = outage.unsaved.len();
        let text = if outage.lost == 0 {
            "history is being saved again, with what was said meanwhile".to_string()
        } else {
            format!(
                "history is being saved again; {} earlier messages said meanwhile could not be \
                 kept",
                outage.lost
            )
        };
        tracing::warn!(
            kept,
            lost = outage.lost,
            "history is being saved again ({kept} messages said meanwhile saved, {} lost)",
            outage.lost
        );
        let due = self.count_appends(outage.unsaved.iter());
        let mut told: Vec<Pending> = outage
            .told
            .into_iter()
            .map(|room| Pending::notice(room, &text))
            .collect();
        for p in told.iter_mut() {
            self.seq += 1;
            p.event.seq = self.seq;
        }
        // Their numbers must be claimed like any others (an empty append only records that).
        if let Err(e) = self.store.append(&[], self.seq) {
            tracing::debug!(error = %e, "cannot record the sequence number");
        }
        self.shared.deliver(told.into_iter());
        for room in due {
            self.trim(&room);
        }
    }

    /// The hub is gone: a last try to save what an outage kept.
    fn finish(&mut self) {
        let Some(outage) = self.outage.take() else {
            return;
        };
        let unsaved: Vec<&Event> = outage.unsaved.iter().collect();
        match self.store.append(&unsaved, self.seq) {
            Ok(()) => tracing::warn!(
                "history is saved again: the {} messages said while it was not are saved",
                unsaved.len()
            ),
            Err(e) => tracing::error!(
                error = %e,
                "{} messages said while history could not be saved are lost",
                unsaved.len() as u64 + outage.lost
            ),
        }
    }
}

/// The ordering the chat promises, where it is made: one number per event across all rooms,
/// history committed in that order, every member seeing the same order, and a join delivered
/// after everything posted before it.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::event::Kind;
    use crate::chat::hub::{AddrPolicy, ChatHub, ClientId, Join, MemoryLimits};
    use crate::chat::outbox::{OutItem, Outbox};
    use crate::chat::store::SqliteStore;
    use crate::chat::wire::Format;
    use crate::net::{AddrBuckets, IpList, PeerAddr};

    /// A hub with its sequencer thread on `store`; the thread ends when the hub is dropped.
    fn start(store: Box<dyn Store>, last_seq: u64) -> (ChatHub, std::thread::JoinHandle<()>) {
        let limits = MemoryLimits {
            replay: 20,
            room: 1 << 20,
            total: 8 << 20,
        };
        let shared = Shared::new(limits, 500, true);
        let (tx, rx) = mpsc::channel(4096);
        let cfg = Config {
            replay: 20,
            retention: Retention::default(),
            last_seq,
        };
        let timer = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("timer runtime");
        let seq_shared = shared.clone();
        let thread = std::thread::spawn(move || run(seq_shared, rx, store, cfg, timer));
        let policy = AddrPolicy {
            line_rates: AddrBuckets::new(1000.0, 1000, IpList::default()),
            exempt: IpList::default(),
            max_rooms: 0,
        };
        (ChatHub::new(shared, tx, None, policy), thread)
    }

    struct Client {
        id: ClientId,
        nick: Arc<str>,
        outbox: Arc<Outbox>,
    }

    fn connect(hub: &ChatHub) -> Client {
        let outbox = Arc::new(Outbox::new(1 << 24, Format::Utf8));
        let peer = PeerAddr::Inet("127.0.0.1:1".parse().expect("address"));
        let (id, nick) = hub.register(outbox.clone(), &peer);
        Client { id, nick, outbox }
    }

    /// Joins `room` the way a session does, and waits until the join has been delivered.
    async fn join(hub: &ChatHub, c: &Client, room: &str, greeting: &str) {
        let room: Arc<str> = Arc::from(room);
        let (_, ticket) = hub.move_to(c.id, room.clone(), true).expect("room");
        let (done, delivered) = tokio::sync::oneshot::channel();
        let pending = Pending {
            event: Event::new(Kind::Join, Some(room), c.nick.clone(), ""),
            route: Route::Join(Join {
                id: c.id,
                greeting: vec![bytes::Bytes::from(greeting.to_string())],
                ticket,
                done,
            }),
            origin: None,
        };
        hub.post(pending).await.expect("hub");
        let _ = delivered.await;
    }

    async fn say(hub: &ChatHub, c: &Client, room: &str, text: &str) {
        let pending = Pending {
            event: Event::new(Kind::Message, Some(Arc::from(room)), c.nick.clone(), text),
            route: Route::Room,
            origin: Some(c.id),
        };
        hub.post(pending).await.expect("hub");
    }

    /// What a client has been sent: raw replies as text, events as (seq, kind, text).
    #[derive(Debug, Clone, PartialEq)]
    enum Seen {
        Raw(String),
        Event(u64, Kind, String),
    }

    /// Everything queued for `c` until `until` says it has enough (bounded in time).
    async fn seen(c: &Client, until: impl Fn(&[Seen]) -> bool) -> Vec<Seen> {
        let mut all = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !until(&all) {
            let mut items = Vec::new();
            let took = tokio::time::timeout_at(deadline, c.outbox.take(&mut items)).await;
            assert!(took.is_ok(), "timed out; seen so far: {all:?}");
            for item in items {
                match item {
                    OutItem::Raw(b) => all.push(Seen::Raw(String::from_utf8_lossy(&b).into())),
                    OutItem::Event(e) => all.push(Seen::Event(e.seq, e.kind, e.text.to_string())),
                    OutItem::Batch(b) => all.extend(
                        b.events()
                            .iter()
                            .map(|e| Seen::Event(e.seq, e.kind, e.text.to_string())),
                    ),
                }
            }
        }
        all
    }

    fn messages(seen: &[Seen]) -> Vec<(u64, String)> {
        seen.iter()
            .filter_map(|s| match s {
                Seen::Event(seq, Kind::Message, text) => Some((*seq, text.clone())),
                _ => None,
            })
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_member_sees_one_order_and_history_holds_the_same() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("history.db");
        let store = SqliteStore::open(&path, false).expect("store");
        let (hub, thread) = start(Box::new(store), 0);
        let (ann, bob, cat) = (connect(&hub), connect(&hub), connect(&hub));
        for c in [&ann, &bob, &cat] {
            join(&hub, c, "lobby", "welcome").await;
        }
        // Two senders at once, each with its own numbered lines.
        const N: usize = 300;
        let (h1, h2) = (hub.clone(), hub.clone());
        let a = tokio::spawn(async move {
            for i in 0..N {
                say(&h1, &ann, "lobby", &format!("ann {i}")).await;
            }
            ann
        });
        let b = tokio::spawn(async move {
            for i in 0..N {
                say(&h2, &bob, "lobby", &format!("bob {i}")).await;
            }
            bob
        });
        let (ann, bob) = (a.await.expect("ann"), b.await.expect("bob"));
        let all = |s: &[Seen]| messages(s).len() >= 2 * N;
        let views = [
            messages(&seen(&ann, all).await),
            messages(&seen(&bob, all).await),
            messages(&seen(&cat, all).await),
        ];
        assert_eq!(views[0], views[1], "ann and bob saw different orders");
        assert_eq!(views[0], views[2], "ann and cat saw different orders");
        let order = &views[0];
        assert!(
            order.windows(2).all(|w| w[0].0 < w[1].0),
            "numbers not increasing"
        );
        for who in ["ann", "bob"] {
            let own: Vec<String> = order
                .iter()
                .filter(|(_, t)| t.starts_with(who))
                .map(|(_, t)| t.clone())
                .collect();
            let sent: Vec<String> = (0..N).map(|i| format!("{who} {i}")).collect();
            assert_eq!(own, sent, "{who}'s lines reordered or lost");
        }
        drop(hub);
        thread.join().expect("sequencer");
        // History holds what was delivered, in the same order and with the same numbers.
        let mut store = SqliteStore::open(&path, false).expect("reopen");
        let stored: Vec<(u64, String)> = store
            .recent("lobby", 2 * N)
            .expect("recent")
            .into_iter()
            .map(|e| (e.seq, e.text.to_string()))
            .collect();
        assert_eq!(&stored, order);
        // Numbering continues above everything handed out, joins included.
        let last = store.last_seq().expect("last_seq");
        assert!(last >= order[order.len() - 1].0, "{last}");
        let (hub, thread) = start(Box::new(store), last);
        let dan = connect(&hub);
        join(&hub, &dan, "lobby", "welcome").await;
        say(&hub, &dan, "lobby", "after the restart").await;
        let got = seen(&dan, |s| {
            messages(s).iter().any(|(_, t)| t == "after the restart")
        })
        .await;
        let (seq, _) = messages(&got).pop().expect("message");
        assert!(seq > last, "number {seq} reused (last was {last})");
        drop(hub);
        thread.join().expect("sequencer");
    }

    #[tokio::test]
    async fn a_join_gets_greeting_then_replay_then_itself_before_its_done_fires() {
        let (hub, thread) = start(Box::new(super::super::store::NoStore), 0);
        let ann = connect(&hub);
        join(&hub, &ann, "rust", "hi ann").await;
        for i in 0..5 {
            say(&hub, &ann, "rust", &format!("line {i}")).await;
        }
        let bob = connect(&hub);
        // No waiting between the lines and the join: the join still comes after them.
        join(&hub, &bob, "rust", "hi bob").await;
        // Delivered by the time `done` fired: everything is already queued.
        let mut items = Vec::new();
        let took = tokio::time::timeout(Duration::from_secs(5), bob.outbox.take(&mut items)).await;
        assert!(took.is_ok(), "nothing queued when the join was done");
        let got: Vec<Seen> = items
            .into_iter()
            .map(|item| match item {
                OutItem::Raw(b) => Seen::Raw(String::from_utf8_lossy(&b).into()),
                OutItem::Event(e) => Seen::Event(e.seq, e.kind, e.text.to_string()),
                OutItem::Batch(_) => panic!("a join's items are not batched"),
            })
            .collect();
        assert_eq!(
            got[0],
            Seen::Raw("hi bob".into()),
            "greeting first: {got:?}"
        );
        let replay: Vec<String> = messages(&got).into_iter().map(|(_, t)| t).collect();
        assert_eq!(
            replay,
            (0..5).map(|i| format!("line {i}")).collect::<Vec<_>>()
        );
        assert!(
            matches!(got.last(), Some(Seen::Event(_, Kind::Join, _))),
            "the join notice last: {got:?}"
        );
        // Ann hears of bob's join after her own lines.
        let ann_seen = seen(&ann, |s| {
            s.iter()
                .filter(|x| matches!(x, Seen::Event(_, Kind::Join, _)))
                .count()
                >= 2
        })
        .await;
        let last_line = ann_seen
            .iter()
            .rposition(|s| matches!(s, Seen::Event(_, Kind::Message, _)));
        let bob_join = ann_seen
            .iter()
            .rposition(|s| matches!(s, Seen::Event(_, Kind::Join, _)));
        assert!(last_line < bob_join, "{ann_seen:?}");
        drop(hub);
        thread.join().expect("sequencer");
    }

    #[tokio::test]
    async fn a_join_overtaken_by_a_later_one_is_dropped() {
        let (hub, thread) = start(Box::new(super::super::store::NoStore), 0);
        let ann = connect(&hub);
        // Two joins queued before either is delivered: only the second takes effect.
        let (_, first) = hub.move_to(ann.id, Arc::from("a"), true).expect("room");
        let (_, second) = hub.move_to(ann.id, Arc::from("b"), true).expect("room");
        let mut waits = Vec::new();
        for (room, ticket) in [("a", first), ("b", second)] {
            let (done, delivered) = tokio::sync::oneshot::channel();
            waits.push(delivered);
            let pending = Pending {
                event: Event::new(Kind::Join, Some(Arc::from(room)), ann.nick.clone(), ""),
                route: Route::Join(Join {
                    id: ann.id,
                    greeting: vec![bytes::Bytes::from(format!("into {room}"))],
                    ticket,
                    done,
                }),
                origin: None,
            };
            hub.post(pending).await.expect("hub");
        }
        for w in waits {
            let _ = w.await;
        }
        assert_eq!(hub.who("a"), Vec::<String>::new());
        assert_eq!(hub.who("b"), vec![ann.nick.to_string()]);
        let got = seen(&ann, |s| !s.is_empty()).await;
        assert_eq!(got[0], Seen::Raw("into b".into()), "{got:?}");
        assert!(!got.contains(&Seen::Raw("into a".into())), "{got:?}");
        drop(hub);
        thread.join().expect("sequencer");
    }
}
