//! The terminal client's state and what changes it: server lines, connection changes and keys.
//! Nothing here draws; [`super::draw`] shows this state.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use crossterm::event::{Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use tokio::time::Instant;

use super::editor::Editor;
use crate::chat::client::link::{Link, Update};
use crate::chat::client::protocol::{
    Change, ChatEvent, EventKind, Identity, Incoming, Reply, ReplyKind,
};

/// Lines kept in the message pane.
const MAX_ENTRIES: usize = 5000;

/// How long `/quit` waits for the server's goodbye.
const QUIT_WAIT: Duration = Duration::from_secs(1);

/// Where the connection stands, for the status line.
#[derive(Debug, Clone)]
pub enum Conn {
    Connecting { attempt: u32 },
    Connected,
    Waiting { until: Instant, reason: String },
}

/// Whether and when to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quit {
    No,
    /// `/quit` was sent; stop at the goodbye or at this time.
    After(Instant),
    Now,
}

/// The terminal client's state.
pub struct App {
    /// The server, as shown on the status line.
    pub server: String,
    pub me: Identity,
    pub conn: Conn,
    /// The message pane, oldest first.
    pub entries: VecDeque<Line<'static>>,
    /// Members of the current room, sorted.
    pub members: Vec<String>,
    pub input: Editor,
    /// Rows scrolled up from the bottom of the message pane.
    pub scroll: usize,
    /// Rows of the message pane at the last draw (a page for PageUp/PageDown).
    pub page: usize,
    /// Width of the message pane at the last draw (to keep the view still while scrolled up).
    pub pane_width: usize,
    pub quit: Quit,
    /// Stored messages shown, by (seq, ts), so a replay after a reconnect does not repeat them.
    seen: HashSet<(u64, i64)>,
    seen_order: VecDeque<(u64, i64)>,
    /// `/who` requests this client sent by itself, whose answers update the list silently.
    auto_who: usize,
}

impl App {
    pub fn new(server: String, me: Identity) -> Self {
        App {
            server,
            me,
            conn: Conn::Connecting { attempt: 1 },
            entries: VecDeque::new(),
            members: Vec::new(),
            input: Editor::default(),
            scroll: 0,
            page: 10,
            pane_width: 80,
            quit: Quit::No,
            seen: HashSet::new(),
            seen_order: VecDeque::new(),
            auto_who: 0,
        }
    }

    pub fn is_connected(&self) -> bool {
        matches!(self.conn, Conn::Connected)
    }

    fn push(&mut self, line: Line<'static>) {
        if self.scroll > 0 {
            // Scrolled up: keep the same lines in view.
            self.scroll += super::draw::rows(&line, self.pane_width);
        }
        if self.entries.len() == MAX_ENTRIES {
            self.entries.pop_front();
        }
        self.entries.push_back(line);
    }

    /// A line from this client itself (connection changes, local errors).
    fn local(&mut self, text: impl Into<String>, color: Color) {
        let line = Line::from(vec![
            Span::styled(
                format!("{} ", now_clock()),
                Style::new().fg(Color::DarkGray),
            ),
            Span::styled(format!("-- {}", text.into()), Style::new().fg(color)),
        ]);
        self.push(line);
    }

    /// Applies what the link reports.
    pub fn on_update(&mut self, update: Update, link: &Link) {
        match update {
            Update::Connecting { attempt } => self.conn = Conn::Connecting { attempt },
            Update::Connected { nick } => {
                self.conn = Conn::Connected;
                self.me.reset();
                self.auto_who = 0;
                self.local(
                    format!("connected to {} as {nick}", self.server),
                    Color::Green,
                );
            }
            Update::Disconnected { error, retry_in } => {
                // The first failure of an outage goes in the pane; the retries only change the
                // status line.
                if matches!(self.conn, Conn::Connected | Conn::Connecting { attempt: 1 }) {
                    self.local(format!("{error}; will retry"), Color::Yellow);
                }
                self.members.clear();
                // Nothing about this client holds until the next server says so.
                self.me.reset();
                self.conn = Conn::Waiting {
                    until: Instant::now() + retry_in,
                    reason: error.to_string(),
                };
            }
            Update::NotSent(text) => {
                if self.input.is_empty() {
                    self.input.set(&text);
                }
                self.local(
                    "not connected: the line was not sent and is back in the input",
                    Color::Yellow,
                );
            }
            Update::Incoming(msg) => self.on_incoming(msg, link),
        }
    }

    fn on_incoming(&mut self, msg: Incoming, link: &Link) {
        match &msg {
            Incoming::Event(e) => self.on_event(e),
            Incoming::Reply(r) => self.on_reply(r),
        }
        if let Some(Change::Joined(_)) = self.me.observe(&msg) {
            // The room's list is fetched once per join and then kept from join/leave/nick events:
            // the server's rate limit would not allow asking often.
            self.members = self.me.nick.clone().into_iter().collect();
            if link.send("/who".into()).is_ok() {
                self.auto_who += 1;
            }
        }
    }

    fn on_event(&mut self, e: &ChatEvent) {
        if e.is_stored() {
            let key = (e.seq, e.ts);
            if !self.seen.insert(key) {
                return;
            }
            self.seen_order.push_back(key);
            if self.seen_order.len() > MAX_ENTRIES {
                if let Some(old) = self.seen_order.pop_front() {
                    self.seen.remove(&old);
                }
            }
        }
        let line = event_line(e, self.me.nick.as_deref());
        self.push(line);
        let here = e.room.is_some() && e.room == self.me.room && self.me.in_room;
        match e.kind {
            EventKind::Join if here && !self.me.is_me(&e.nick) => self.add_member(&e.nick),
            EventKind::Leave if here => self.members.retain(|n| *n != e.nick),
            EventKind::Nick if here => {
                if let Some(new) = &e.target {
                    self.members.retain(|n| *n != e.nick);
                    self.add_member(new);
                }
            }
            _ => {}
        }
    }

    fn add_member(&mut self, nick: &str) {
        if !self.members.iter().any(|n| n == nick) {
            self.members.push(nick.to_string());
            sort_nicks(&mut self.members);
        }
    }

    fn on_reply(&mut self, r: &Reply) {
        match r.kind {
            // Answers to the hello: the "connected" line says it already.
            ReplyKind::Welcome => return,
            ReplyKind::Nick if !self.me.in_room => return,
            ReplyKind::Members => {
                let mine = r.room.is_some() && r.room == self.me.room;
                if mine {
                    self.members = r.nicks.clone().unwrap_or_default();
                    sort_nicks(&mut self.members);
                }
                if mine && self.auto_who > 0 {
                    self.auto_who -= 1;
                    return;
                }
            }
            ReplyKind::Bye => self.quit = Quit::Now,
            _ => {}
        }
        self.push(reply_line(r));
    }

    /// Applies a terminal event.
    pub fn on_terminal(&mut self, event: Event, link: &Link) {
        match event {
            Event::Key(key) if key.kind != KeyEventKind::Release => self.on_key(key, link),
            Event::Paste(text) => self.input.insert_str(&text),
            _ => {}
        }
    }

    fn on_key(&mut self, key: KeyEvent, link: &Link) {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        let alt = key.modifiers.contains(KeyModifiers::ALT);
        let e = &mut self.input;
        match key.code {
            KeyCode::Char('c') if ctrl => self.quit = Quit::Now,
            KeyCode::Char('d') if ctrl && e.is_empty() => self.quit = Quit::Now,
            KeyCode::Char('d') if ctrl => e.delete(),
            KeyCode::Char('a') if ctrl => e.home(),
            KeyCode::Char('e') if ctrl => e.end(),
            KeyCode::Char('b') if ctrl => e.left(),
            KeyCode::Char('f') if ctrl => e.right(),
            KeyCode::Char('u') if ctrl => e.delete_to_start(),
            KeyCode::Char('k') if ctrl => e.delete_to_end(),
            KeyCode::Char('w') if ctrl => e.delete_word(),
            KeyCode::Char('h') if ctrl => e.backspace(),
            KeyCode::Char('p') if ctrl => e.history_up(),
            KeyCode::Char('n') if ctrl => e.history_down(),
            KeyCode::Char('b') if alt => e.word_left(),
            KeyCode::Char('f') if alt => e.word_right(),
            KeyCode::Char(_) if ctrl || alt => {}
            KeyCode::Char(c) => e.insert(c),
            KeyCode::Backspace if alt || ctrl => e.delete_word(),
            KeyCode::Backspace => e.backspace(),
            KeyCode::Delete => e.delete(),
            KeyCode::Left if ctrl || alt => e.word_left(),
            KeyCode::Right if ctrl || alt => e.word_right(),
            KeyCode::Left => e.left(),
            KeyCode::Right => e.right(),
            KeyCode::Home => e.home(),
            KeyCode::End => e.end(),
            KeyCode::Up => e.history_up(),
            KeyCode::Down => e.history_down(),
            KeyCode::PageUp => self.scroll += self.page.saturating_sub(1).max(1),
            KeyCode::PageDown => {
                self.scroll = self
                    .scroll
                    .saturating_sub(self.page.saturating_sub(1).max(1))
            }
            KeyCode::Esc => self.scroll = 0,
            KeyCode::Enter => self.submit(link),
            _ => {}
        }
    }

    fn submit(&mut self, link: &Link) {
        let text = self.input.text();
        let text = text.trim_end();
        if text.trim().is_empty() {
            return;
        }
        let command = text
            .strip_prefix('/')
            .filter(|rest| !rest.starts_with('/'))
            .map(|rest| rest.split_whitespace().next().unwrap_or("").to_lowercase());
        match command.as_deref() {
            Some("quit" | "exit" | "part") => {
                let text = self.input.take();
                self.quit = if self.is_connected() && link.send(text).is_ok() {
                    Quit::After(Instant::now() + QUIT_WAIT)
                } else {
                    Quit::Now
                };
            }
            Some("clear") => {
                self.input.take();
                self.entries.clear();
                self.scroll = 0;
            }
            _ if !self.is_connected() => self.local(
                "not connected: the line is kept; press Enter again once connected",
                Color::Yellow,
            ),
            _ => {
                let text = text.to_string();
                match link.send(text) {
                    Ok(()) => {
                        self.input.take();
                        self.scroll = 0;
                    }
                    Err(_) => self.local("too many lines waiting; try again", Color::Yellow),
                }
            }
        }
    }
}

/// Sorts nicks case-insensitively.
fn sort_nicks(nicks: &mut [String]) {
    nicks.sort_by_key(|n| n.to_lowercase());
}

fn now_clock() -> String {
    chrono::Local::now().format("%H:%M:%S").to_string()
}

/// A stable colour per nick, so a speaker is recognised at a glance.
pub fn nick_color(nick: &str) -> Color {
    const COLORS: [Color; 6] = [
        Color::Cyan,
        Color::Green,
        Color::Magenta,
        Color::Blue,
        Color::LightRed,
        Color::LightCyan,
    ];
    let h = nick
        .bytes()
        .fold(5381u32, |h, b| h.wrapping_mul(33) ^ u32::from(b));
    COLORS[h as usize % COLORS.len()]
}

fn event_line(e: &ChatEvent, me: Option<&str>) -> Line<'static> {
    let time = Span::styled(format!("{} ", e.clock()), Style::new().fg(Color::DarkGray));
    let own = me == Some(e.nick.as_str());
    let nick_style = if own {
        Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD)
    } else {
        Style::new().fg(nick_color(&e.nick))
    };
    let spans = match e.kind {
        EventKind::Message => vec![
            time,
            Span::styled(format!("<{}>", e.nick), nick_style),
            Span::raw(format!(" {}", e.text)),
        ],
        EventKind::Action => vec![
            time,
            Span::styled(
                format!("* {} {}", e.nick, e.text),
                nick_style.add_modifier(Modifier::ITALIC),
            ),
        ],
        EventKind::Private => vec![
            time,
            Span::styled(e.describe(), Style::new().fg(Color::LightMagenta)),
        ],
        _ => vec![
            time,
            Span::styled(e.describe(), Style::new().fg(Color::Gray)),
        ],
    };
    Line::from(spans)
}

fn reply_line(r: &Reply) -> Line<'static> {
    let time = Span::styled(
        format!("{} ", now_clock()),
        Style::new().fg(Color::DarkGray),
    );
    let style = match r.kind {
        ReplyKind::Error => Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        ReplyKind::Notice => Style::new().fg(Color::Yellow),
        _ => Style::new().fg(Color::LightBlue),
    };
    Line::from(vec![time, Span::styled(r.plain(), style)])
}
