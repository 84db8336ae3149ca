//! The terminal client's state and what changes it: server lines, connection changes and keys.
//! Nothing here draws; [`super::draw`] shows this state.
//!
//! Each room this client has been in keeps its own scrollback ([`Buffer`]). The server puts a
//! client in one room at a time, so showing another room's buffer (Alt-Left/Right) joins that room;
//! `/join` shows the room's buffer once the server confirms the join.

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

/// The scrollback of one room.
pub struct Buffer {
    /// The room, without `#`; empty until the server has said which room this client is in.
    pub room: String,
    /// The lines, oldest first.
    pub entries: VecDeque<Line<'static>>,
    /// Rows scrolled up from the bottom.
    pub scroll: usize,
    /// Messages that arrived while another buffer was shown.
    pub unread: usize,
    /// Whether one of those mentioned this client's nick.
    pub mentioned: bool,
    /// Stored messages shown, by (seq, ts), so a replay on a rejoin or a reconnect does not repeat
    /// them.
    seen: HashSet<(u64, i64)>,
    seen_order: VecDeque<(u64, i64)>,
}

impl Buffer {
    fn new(room: String) -> Self {
        Buffer {
            room,
            entries: VecDeque::new(),
            scroll: 0,
            unread: 0,
            mentioned: false,
            seen: HashSet::new(),
            seen_order: VecDeque::new(),
        }
    }

    /// Whether the stored event is new to this buffer (and remembers it).
    fn first_sight(&mut self, key: (u64, i64)) -> bool {
        if !self.seen.insert(key) {
            return false;
        }
        self.seen_order.push_back(key);
        if self.seen_order.len() > MAX_ENTRIES {
            if let Some(old) = self.seen_order.pop_front() {
                self.seen.remove(&old);
            }
        }
        true
    }

    fn push(&mut self, line: Line<'static>, pane_width: usize) {
        if self.scroll > 0 {
            // Scrolled up: keep the same lines in view.
            self.scroll += super::draw::rows(&line, pane_width);
        }
        if self.entries.len() == MAX_ENTRIES {
            self.entries.pop_front();
        }
        self.entries.push_back(line);
    }
}

/// A Tab completion in progress: Tab again replaces it with the next match.
#[derive(Debug, Clone)]
struct Completion {
    /// Where the completed word starts, in chars.
    start: usize,
    /// The cursor after the last completion (any other edit ends the completion).
    end: usize,
    matches: Vec<String>,
    index: usize,
    /// The completed word started the line (a nick there gets `: `).
    at_start: bool,
}

/// The terminal client's state.
pub struct App {
    /// The server, as shown on the status line.
    pub server: String,
    pub me: Identity,
    pub conn: Conn,
    /// One scrollback per room, in the order they were first entered.
    pub buffers: Vec<Buffer>,
    /// The buffer shown.
    pub current: usize,
    /// Members of the room this client is in, sorted.
    pub members: Vec<String>,
    pub input: Editor,
    /// Rows of the message pane at the last draw (a page for PageUp/PageDown).
    pub page: usize,
    /// Width of the message pane at the last draw (to keep the view still while scrolled up).
    pub pane_width: usize,
    pub quit: Quit,
    /// `/who` requests this client sent by itself, whose answers update the list silently.
    auto_who: usize,
    /// The room of a `/history` reply being received: its events are shown even if seen before.
    history_of: Option<String>,
    /// Lines of a multi-line paste not yet handed to the link (its queue was full), in order.
    pending: VecDeque<String>,
    completion: Option<Completion>,
    /// A nick asked for that someone else has: shown on the status line until this client gets
    /// it or picks another, so the error cannot scroll away unseen.
    pub nick_taken: Option<String>,
}

impl App {
    pub fn new(server: String, me: Identity) -> Self {
        App {
            server,
            conn: Conn::Connecting { attempt: 1 },
            buffers: vec![Buffer::new(me.room.clone().unwrap_or_default())],
            current: 0,
            members: Vec::new(),
            input: Editor::default(),
            page: 10,
            pane_width: 80,
            quit: Quit::No,
            auto_who: 0,
            history_of: None,
            pending: VecDeque::new(),
            completion: None,
            nick_taken: None,
            me,
        }
    }

    /// The buffer shown.
    pub fn buf(&self) -> &Buffer {
        &self.buffers[self.current]
    }

    pub fn buf_mut(&mut self) -> &mut Buffer {
        &mut self.buffers[self.current]
    }

    /// The buffer of `room` (created if new); the shown one when the room is not known.
    fn buffer_of(&mut self, room: Option<&str>) -> usize {
        let Some(room) = room.filter(|r| !r.is_empty()) else {
            return self.current;
        };
        if let Some(i) = self.buffers.iter().position(|b| b.room == room) {
            return i;
        }
        // The first buffer waits for the server to name its room.
        if let Some(i) = self.buffers.iter().position(|b| b.room.is_empty()) {
            self.buffers[i].room = room.to_string();
            return i;
        }
        self.buffers.push(Buffer::new(room.to_string()));
        self.buffers.len() - 1
    }

    fn push_to(&mut self, i: usize, line: Line<'static>) {
        let width = self.pane_width;
        self.buffers[i].push(line, width);
    }

    pub fn is_connected(&self) -> bool {
        matches!(self.conn, Conn::Connected)
    }

    fn push(&mut self, line: Line<'static>) {
        self.push_to(self.current, line);
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
                self.history_of = None;
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
        let change = self.me.observe(&msg);
        match &change {
            Some(Change::NickTaken(nick)) => self.nick_taken = Some(nick.clone()),
            Some(Change::Renamed { .. }) => self.nick_taken = None,
            // A reconnect that got the nick after all.
            Some(Change::Welcomed)
                if self.nick_taken.is_some() && self.me.nick == self.nick_taken =>
            {
                self.nick_taken = None;
            }
            _ => {}
        }
        if let Some(Change::Joined(room)) = change {
            // The room joined is the room shown (after /join, or a buffer switched to).
            let i = self.buffer_of(Some(&room));
            self.show(i);
            // The room's list is fetched once per join and then kept from join/leave/nick events:
            // the server's rate limit would not allow asking often.
            self.members = self.me.nick.clone().into_iter().collect();
            if link.send("/who".into()).is_ok() {
                self.auto_who += 1;
            }
        }
    }

    fn on_event(&mut self, e: &ChatEvent) {
        let i = self.buffer_of(e.room.as_deref());
        if e.is_stored() {
            let asked = self.history_of.is_some() && self.history_of == e.room;
            // What /history was asked for is shown again; replays show only what is new.
            if !self.buffers[i].first_sight((e.seq, e.ts)) && !asked {
                return;
            }
        }
        let me = self.me.nick.as_deref();
        let mention = me.is_none_or(|m| m != e.nick)
            && matches!(
                e.kind,
                EventKind::Message | EventKind::Action | EventKind::Private
            )
            && me.is_some_and(|m| mentions(&e.text, m));
        let line = event_line(e, me, mention);
        if i != self.current && e.is_stored() {
            let b = &mut self.buffers[i];
            b.unread += 1;
            b.mentioned |= mention;
        }
        self.push_to(i, line);
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
            ReplyKind::History => self.history_of = r.room.clone(),
            ReplyKind::HistoryEnd => self.history_of = None,
            ReplyKind::Bye => self.quit = Quit::Now,
            _ => {}
        }
        let i = self.buffer_of(r.room.as_deref());
        self.push_to(i, reply_line(r));
    }

    /// Shows buffer `i`.
    fn show(&mut self, i: usize) {
        self.current = i;
        let b = &mut self.buffers[i];
        b.unread = 0;
        b.mentioned = false;
    }

    /// Alt-Left/Right: shows the previous or next room's buffer and joins that room.
    fn switch(&mut self, forward: bool, link: &Link) {
        let n = self.buffers.len();
        if n < 2 {
            return;
        }
        let i = if forward {
            (self.current + 1) % n
        } else {
            (self.current + n - 1) % n
        };
        self.show(i);
        let room = self.buffers[i].room.clone();
        let here = self.me.in_room && self.me.room.as_deref() == Some(room.as_str());
        if room.is_empty() || here {
            return;
        }
        if !self.is_connected() {
            self.local(
                format!("not connected: #{room} is joined once connected"),
                Color::Yellow,
            );
            return;
        }
        if link.send(format!("/join {room}")).is_err() {
            self.local("too many lines waiting; try again", Color::Yellow);
        }
    }

    /// Tab: completes the nick before the cursor from the room's members; Tab again cycles.
    fn complete(&mut self, forward: bool) {
        let cursor = self.input.cursor();
        let going = self
            .completion
            .take()
            .filter(|c| c.end == cursor && !c.matches.is_empty());
        let mut c = match going {
            Some(mut c) => {
                let n = c.matches.len();
                c.index = if forward {
                    (c.index + 1) % n
                } else {
                    (c.index + n - 1) % n
                };
                c
            }
            None => {
                let (start, word) = self.input.word_before_cursor();
                if word.is_empty() {
                    return;
                }
                let word = word.to_lowercase();
                let matches: Vec<String> = self
                    .members
                    .iter()
                    .filter(|n| !self.me.is_me(n) && n.to_lowercase().starts_with(&word))
                    .cloned()
                    .collect();
                if matches.is_empty() {
                    return;
                }
                Completion {
                    start,
                    end: cursor,
                    index: if forward { 0 } else { matches.len() - 1 },
                    matches,
                    at_start: self
                        .input
                        .text()
                        .chars()
                        .take(start)
                        .all(char::is_whitespace),
                }
            }
        };
        let suffix = if c.at_start { ": " } else { " " };
        let text = format!("{}{suffix}", c.matches[c.index]);
        self.input.replace_before_cursor(c.start, &text);
        c.end = self.input.cursor();
        self.completion = Some(c);
    }

    /// A bracketed paste: one line goes into the input; several are sent as lines of their own,
    /// in order (the first after what was already typed), as text even if one starts with `/`.
    fn paste(&mut self, text: &str, link: &Link) {
        let text = text.replace("\r\n", "\n").replace('\r', "\n");
        let lines: Vec<&str> = text.split('\n').collect();
        if lines.len() < 2 {
            self.input.insert_str(&text);
            return;
        }
        self.input.end();
        let typed = self.input.take();
        let mut first = true;
        for line in lines {
            let line = if first {
                first = false;
                format!("{typed}{line}")
            } else {
                line.to_string()
            };
            if line.trim().is_empty() {
                continue;
            }
            let mut cleaned = Editor::default();
            cleaned.insert_str(&line);
            let line = cleaned.text();
            // `//x` is the server's way to say a literal `/x`.
            let line = if line.starts_with('/') {
                format!("/{line}")
            } else {
                line
            };
            self.pending.push_back(line);
        }
        self.buf_mut().scroll = 0;
        self.flush(link);
    }

    /// Hands pasted lines to the link while its queue takes them (called again after each event).
    pub fn flush(&mut self, link: &Link) {
        if !self.is_connected() {
            return;
        }
        while let Some(line) = self.pending.pop_front() {
            if let Err(line) = link.send(line) {
                self.pending.push_front(line);
                break;
            }
        }
    }

    /// Applies a terminal event.
    pub fn on_terminal(&mut self, event: Event, link: &Link) {
        match event {
            Event::Key(key) if key.kind != KeyEventKind::Release => self.on_key(key, link),
            Event::Paste(text) => {
                self.completion = None;
                self.paste(&text, link);
            }
            _ => {}
        }
    }

    fn on_key(&mut self, key: KeyEvent, link: &Link) {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        let alt = key.modifiers.contains(KeyModifiers::ALT);
        match key.code {
            KeyCode::Tab => return self.complete(true),
            KeyCode::BackTab => return self.complete(false),
            KeyCode::Left if alt && !ctrl => return self.switch(false, link),
            KeyCode::Right if alt && !ctrl => return self.switch(true, link),
            _ => {}
        }
        self.completion = None;
        let page = self.page.saturating_sub(1).max(1);
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
            KeyCode::Left if ctrl => e.word_left(),
            KeyCode::Right if ctrl => e.word_right(),
            KeyCode::Left => e.left(),
            KeyCode::Right => e.right(),
            KeyCode::Home => e.home(),
            KeyCode::End => e.end(),
            KeyCode::Up => e.history_up(),
            KeyCode::Down => e.history_down(),
            KeyCode::PageUp => self.buf_mut().scroll += page,
            KeyCode::PageDown => {
                let b = self.buf_mut();
                b.scroll = b.scroll.saturating_sub(page);
            }
            KeyCode::Esc => self.buf_mut().scroll = 0,
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
            Some("quit" | "exit") => {
                let text = self.input.take();
                self.quit = if self.is_connected() && link.send(text).is_ok() {
                    Quit::After(Instant::now() + QUIT_WAIT)
                } else {
                    Quit::Now
                };
            }
            Some("clear") => {
                self.input.take();
                let b = self.buf_mut();
                b.entries.clear();
                b.scroll = 0;
            }
            _ if !self.is_connected() => self.local(
                "not connected: the line is kept; press Enter again once connected",
                Color::Yellow,
            ),
            // After the rest of a paste, never before it.
            _ if !self.pending.is_empty() => {
                let text = self.input.take();
                self.pending.push_back(text.trim_end().to_string());
                self.buf_mut().scroll = 0;
                self.flush(link);
            }
            _ => {
                let text = text.to_string();
                match link.send(text) {
                    Ok(()) => {
                        self.input.take();
                        self.buf_mut().scroll = 0;
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

/// Whether `text` names `nick` as a word of its own (case-insensitive): `ann:`, `hi ANN!`, not
/// `annie` or `joann`.
pub fn mentions(text: &str, nick: &str) -> bool {
    let fold = |s: &str| -> Vec<char> { s.chars().flat_map(char::to_lowercase).collect() };
    let text = fold(text);
    let nick = fold(nick);
    if nick.is_empty() || nick.len() > text.len() {
        return false;
    }
    let word = |c: &char| c.is_alphanumeric() || *c == '_';
    (0..=text.len() - nick.len()).any(|i| {
        text[i..i + nick.len()] == nick[..]
            && !(i > 0 && word(&text[i - 1]))
            && !text.get(i + nick.len()).is_some_and(word)
    })
}

/// How a line that mentions this client's nick is marked.
pub const MENTION: Style = Style::new()
    .fg(Color::Black)
    .bg(Color::Yellow)
    .add_modifier(Modifier::BOLD);

pub fn event_line(e: &ChatEvent, me: Option<&str>, mention: bool) -> Line<'static> {
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
    if mention {
        // The whole line after the time stands out, so a mention is seen while scrolling by.
        let spans = spans
            .into_iter()
            .enumerate()
            .map(|(i, s)| if i == 0 { s } else { s.patch_style(MENTION) })
            .collect::<Vec<_>>();
        return Line::from(spans);
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::backend::TestBackend;
    use ratatui::buffer::Buffer as Cells;
    use ratatui::Terminal;

    fn app_in_lobby() -> App {
        let mut app = App::new("test".into(), Identity::new(Some("ann".into()), None));
        app.me.nick = Some("ann".into());
        app.me.room = Some("lobby".into());
        app.me.in_room = true;
        app.conn = Conn::Connected;
        app.members = vec!["ann".into(), "bob".into()];
        app
    }

    fn said(seq: u64, nick: &str, text: &str) -> ChatEvent {
        ChatEvent {
            seq,
            ts: 1_700_000_000_000 + seq as i64,
            kind: EventKind::Message,
            room: Some("lobby".into()),
            nick: nick.into(),
            target: None,
            text: text.into(),
        }
    }

    fn render(app: &mut App, width: u16, height: u16) -> Cells {
        let mut term = Terminal::new(TestBackend::new(width, height)).unwrap();
        term.draw(|f| super::super::draw::draw(f, app)).unwrap();
        term.backend().buffer().clone()
    }

    /// The row whose text contains `text`.
    fn row_of(cells: &Cells, text: &str) -> Option<u16> {
        (0..cells.area.height).find(|&y| {
            let row: String = (0..cells.area.width)
                .map(|x| cells[(x, y)].symbol())
                .collect();
            row.contains(text)
        })
    }

    #[test]
    fn finds_a_nick_as_a_word() {
        assert!(mentions("ann: look", "ann"));
        assert!(mentions("hey ANN!", "ann"));
        assert!(mentions("@Ann, hi", "aNN"));
        assert!(!mentions("annie is here", "ann"));
        assert!(!mentions("joann", "ann"));
        assert!(!mentions("ann_2 is here", "ann_"));
        assert!(mentions("ann_2 is not ann_", "ann_2"));
    }

    #[test]
    fn a_line_that_mentions_me_is_highlighted() {
        let mut app = app_in_lobby();
        app.on_event(&said(1, "bob", "quiet line"));
        app.on_event(&said(2, "bob", "hey ANN, look"));
        app.on_event(&said(3, "bob", "annie is someone else"));
        app.on_event(&said(4, "ann", "ann talks about ann"));
        let cells = render(&mut app, 100, 12);
        let highlighted = |text: &str| {
            let y = row_of(&cells, text).unwrap_or_else(|| panic!("no {text:?}"));
            // The text itself (past the time and nick), not just the nick, carries the style.
            (12..30).any(|x| cells[(x, y)].bg == Color::Yellow)
        };
        assert!(highlighted("hey ANN, look"));
        assert!(!highlighted("quiet line"));
        assert!(!highlighted("annie is someone else"));
        assert!(!highlighted("ann talks about ann"));
    }

    #[test]
    fn wide_and_combined_emoji_take_their_real_width() {
        let family = "\u{1F468}\u{200D}\u{1F469}\u{200D}\u{1F467}";
        let flag = "\u{1F1EB}\u{1F1F7}";
        let mut app = app_in_lobby();
        // 15 columns of `HH:MM:SS <bob> `, then 20 clusters of 2 columns: 55 of the pane's 58.
        let text = format!("{}end", format!("{family}{flag}").repeat(10));
        app.on_event(&said(1, "bob", &text));
        app.on_event(&said(2, "bob", "next"));
        let cells = render(&mut app, 80, 8);
        let pane = 80 - super::super::draw::SIDE;
        let y = row_of(&cells, "<bob>").unwrap();
        // One row: measured whole, the clusters fit; nothing spills past the pane.
        assert_eq!(row_of(&cells, "next"), Some(y + 1));
        assert_eq!(cells[(15, y)].symbol(), family);
        assert_eq!(cells[(17, y)].symbol(), flag);
        assert_eq!(cells[(15 + 40, y)].symbol(), "e");
        // The side pane's border stays in its column on every row above the status line.
        for row in 0..6 {
            assert_eq!(cells[(pane, row)].symbol(), "│", "row {row}");
        }
        // A line too long wraps between clusters, never inside one, and no row overflows.
        let mut app = app_in_lobby();
        app.on_event(&said(1, "bob", &family.repeat(40)));
        let cells = render(&mut app, 80, 8);
        for row in 0..6 {
            assert_eq!(cells[(pane, row)].symbol(), "│", "row {row}");
        }
        let shown: usize = (0..6)
            .flat_map(|y| (0..pane).map(move |x| (x, y)))
            .filter(|&(x, y)| cells[(x, y)].symbol() == family)
            .count();
        assert_eq!(shown, 40);
    }
}
