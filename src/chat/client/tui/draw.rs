//! Drawing the terminal client: the room labels, the message pane (wrapped, scrollable), the member
//! list, the status line and the input line. Text is measured per grapheme cluster, so an emoji ZWJ
//! sequence or a flag takes the two columns the terminal draws it in and is never split.

use ratatui::layout::{Constraint, Layout, Position, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph};
use ratatui::Frame;
use tokio::time::Instant;
use unicode_segmentation::UnicodeSegmentation;
use unicode_width::UnicodeWidthStr;

use super::app::{nick_color, App, Conn, MENTION};

/// Width of the member list, border included.
pub(super) const SIDE: u16 = 22;

/// Narrower terminals show no member list.
const SIDE_MIN_WIDTH: u16 = 60;

const PROMPT: &str = "> ";

pub fn draw(f: &mut Frame, app: &mut App) {
    let [main, status, input] = Layout::vertical([
        Constraint::Min(1),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(f.area());
    let pane = if main.width >= SIDE_MIN_WIDTH {
        let [pane, side] =
            Layout::horizontal([Constraint::Min(10), Constraint::Length(SIDE)]).areas(main);
        members(f, app, side);
        pane
    } else {
        main
    };
    let [labels, pane] = Layout::vertical([Constraint::Length(1), Constraint::Min(1)]).areas(pane);
    tabs(f, app, labels);
    messages(f, app, pane);
    status_line(f, app, status);
    input_line(f, app, input);
}

/// Splits a line into rows of at most `width` columns.
pub fn wrap(line: &Line<'static>, width: usize) -> Vec<Line<'static>> {
    let width = width.max(1);
    let mut rows = Vec::new();
    let mut row: Vec<Span<'static>> = Vec::new();
    let mut used = 0;
    for span in &line.spans {
        let mut piece = String::new();
        for g in span.content.graphemes(true) {
            let gw = g.width();
            if used + gw > width && used > 0 {
                if !piece.is_empty() {
                    row.push(Span::styled(std::mem::take(&mut piece), span.style));
                }
                rows.push(Line::from(std::mem::take(&mut row)));
                used = 0;
            }
            piece.push_str(g);
            used += gw;
        }
        if !piece.is_empty() {
            row.push(Span::styled(piece, span.style));
        }
    }
    rows.push(Line::from(row));
    rows
}

/// How many rows a line takes at `width`.
pub fn rows(line: &Line<'static>, width: usize) -> usize {
    wrap(line, width).len()
}

fn messages(f: &mut Frame, app: &mut App, area: Rect) {
    let height = usize::from(area.height);
    let width = usize::from(area.width);
    app.page = height.max(1);
    app.pane_width = width.max(1);
    let buf = app.buf_mut();
    // Wrap only from the bottom up, as far as the view reaches.
    let want = height + buf.scroll;
    let mut rows: Vec<Line<'static>> = Vec::new();
    let mut complete = true;
    for entry in buf.entries.iter().rev() {
        if rows.len() >= want {
            complete = false;
            break;
        }
        let mut wrapped = wrap(entry, width);
        wrapped.reverse();
        rows.extend(wrapped);
    }
    rows.reverse();
    if complete {
        // Everything fits: cannot scroll further up than the top.
        buf.scroll = buf.scroll.min(rows.len().saturating_sub(height));
    }
    let end = rows.len().saturating_sub(buf.scroll);
    let start = end.saturating_sub(height);
    let visible: Vec<Line<'static>> = rows.drain(start..end).collect();
    f.render_widget(Paragraph::new(visible), area);
}

/// The room labels: the shown one highlighted, others with their unread count (a mention in
/// the mention style).
fn tabs(f: &mut Frame, app: &App, area: Rect) {
    let mut spans = Vec::new();
    for (i, b) in app.buffers.iter().enumerate() {
        let name = if b.room.is_empty() {
            "…".to_string()
        } else {
            format!("#{}", b.room)
        };
        let (label, style) = if i == app.current {
            (
                format!(" {name} "),
                Style::new()
                    .fg(Color::Black)
                    .bg(Color::Cyan)
                    .add_modifier(Modifier::BOLD),
            )
        } else if b.unread > 0 {
            let style = if b.mentioned {
                MENTION
            } else {
                Style::new().fg(Color::White).add_modifier(Modifier::BOLD)
            };
            (format!(" {name} ({}) ", b.unread), style)
        } else {
            (format!(" {name} "), Style::new().fg(Color::Gray))
        };
        spans.push(Span::styled(label, style));
        spans.push(Span::raw(" "));
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn members(f: &mut Frame, app: &App, area: Rect) {
    let title = match (&app.me.room, app.is_connected() && app.me.in_room) {
        (Some(room), true) => format!(" #{room} ({}) ", app.members.len()),
        _ => " offline ".to_string(),
    };
    let lines: Vec<Line> = app
        .members
        .iter()
        .map(|n| {
            let style = if app.me.is_me(n) {
                Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD)
            } else {
                Style::new().fg(nick_color(n))
            };
            Line::from(Span::styled(n.clone(), style))
        })
        .collect();
    let block = Block::new()
        .borders(Borders::LEFT)
        .border_style(Style::new().fg(Color::DarkGray))
        .title(title);
    f.render_widget(Paragraph::new(lines).block(block), area);
}

fn status_line(f: &mut Frame, app: &App, area: Rect) {
    let bar = Style::new().bg(Color::Blue).fg(Color::White);
    // Offline, the nick shown is the one the next connection asks for.
    let nick = app
        .me
        .nick
        .as_deref()
        .or(app.me.wanted_nick.as_deref())
        .unwrap_or("-");
    let room = match &app.me.room {
        Some(r) => format!("#{r}"),
        None => "-".into(),
    };
    let (state, color) = match &app.conn {
        Conn::Connected => ("● connected".to_string(), Color::LightGreen),
        Conn::Connecting { attempt } if *attempt <= 1 => ("○ connecting".into(), Color::Yellow),
        Conn::Connecting { attempt } => (format!("○ reconnecting (try {attempt})"), Color::Yellow),
        Conn::Waiting { until, reason } => {
            let secs = until
                .saturating_duration_since(Instant::now())
                .as_secs_f64()
                .ceil();
            (
                format!("○ offline, retrying in {secs}s: {reason}"),
                Color::LightRed,
            )
        }
    };
    let mut spans = vec![
        Span::raw(format!(" {} │ {nick} │ {room} │ ", app.server)),
        Span::styled(state, Style::new().fg(color).add_modifier(Modifier::BOLD)),
    ];
    if let Some(taken) = &app.nick_taken {
        spans.push(Span::raw(" │ "));
        spans.push(Span::styled(
            format!("nick {taken} is taken: /nick NAME picks another"),
            Style::new()
                .fg(Color::LightRed)
                .add_modifier(Modifier::BOLD),
        ));
    }
    let scroll = app.buf().scroll;
    if scroll > 0 {
        spans.push(Span::raw(format!(" │ scrolled up {scroll} (PgDn/Esc)")));
    }
    if app.buffers.len() > 1 {
        spans.push(Span::raw(" │ Alt-←/→ rooms"));
    }
    spans.push(Span::raw(" │ Tab nicks"));
    f.render_widget(Paragraph::new(Line::from(spans)).style(bar), area);
}

fn input_line(f: &mut Frame, app: &App, area: Rect) {
    let prompt_w = PROMPT.len() as u16;
    let (shown, col) = app
        .input
        .view(usize::from(area.width.saturating_sub(prompt_w)));
    let line = Line::from(vec![
        Span::styled(PROMPT, Style::new().fg(Color::DarkGray)),
        Span::raw(shown),
    ]);
    f.render_widget(Paragraph::new(line), area);
    let x = area.x + prompt_w + col as u16;
    f.set_cursor_position(Position::new(x.min(area.right().saturating_sub(1)), area.y));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_by_display_width_and_keeps_styles() {
        let line = Line::from(vec![
            Span::styled("12:00 ", Style::new().fg(Color::DarkGray)),
            Span::raw("abcdefgh"),
        ]);
        let rows = wrap(&line, 5);
        let text: Vec<String> = rows.iter().map(|l| l.to_string()).collect();
        assert_eq!(text, ["12:00", " abcd", "efgh"]);
        assert_eq!(rows[1].spans[0].style.fg, Some(Color::DarkGray));
        assert_eq!(wrap(&Line::from("你好世界"), 5).len(), 2);
        assert_eq!(rows_of_empty(), 1);
    }

    fn rows_of_empty() -> usize {
        rows(&Line::from(""), 10)
    }
}
