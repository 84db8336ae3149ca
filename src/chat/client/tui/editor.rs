//! The input line: a one-line editor with cursor movement, word deletion and a history of sent
//! lines, and the part of it that fits the screen. The cursor moves over whole grapheme clusters
//! (an emoji ZWJ family, a flag, a letter and its accents), which are measured as one.

use unicode_segmentation::UnicodeSegmentation;
use unicode_width::UnicodeWidthStr;

/// Most sent lines remembered for Up/Down.
const HISTORY: usize = 500;

/// The line being typed.
#[derive(Debug, Default)]
pub struct Editor {
    chars: Vec<char>,
    /// Cursor position, in chars (0..=len).
    cursor: usize,
    history: Vec<String>,
    /// Which history entry is shown while browsing with Up/Down; `None` when editing a new line.
    browsing: Option<usize>,
    /// The new line being typed when browsing started, restored by Down past the newest entry.
    draft: Vec<char>,
}

impl Editor {
    pub fn text(&self) -> String {
        self.chars.iter().collect()
    }

    pub fn is_empty(&self) -> bool {
        self.chars.is_empty()
    }

    /// Replaces the line (a line handed back unsent), cursor at the end.
    pub fn set(&mut self, text: &str) {
        self.chars = text.chars().collect();
        self.cursor = self.chars.len();
        self.browsing = None;
    }

    /// Takes the line to send: it is remembered in the history and the input is cleared.
    pub fn take(&mut self) -> String {
        let text = self.text();
        if !text.trim().is_empty() && self.history.last() != Some(&text) {
            if self.history.len() == HISTORY {
                self.history.remove(0);
            }
            self.history.push(text.clone());
        }
        self.chars.clear();
        self.cursor = 0;
        self.browsing = None;
        text
    }

    pub fn insert(&mut self, c: char) {
        self.chars.insert(self.cursor, c);
        self.cursor += 1;
    }

    /// Inserts one line of pasted text (tabs become spaces, other control characters are dropped).
    pub fn insert_str(&mut self, text: &str) {
        for c in text.chars() {
            match c {
                '\t' => self.insert(' '),
                c if c.is_control() => {}
                c => self.insert(c),
            }
        }
    }

    /// Where the grapheme clusters of the line start, in chars, and the line's end.
    fn boundaries(&self) -> Vec<usize> {
        let text = self.text();
        let mut at = 0;
        let mut bounds = vec![0];
        for g in text.graphemes(true) {
            at += g.chars().count();
            bounds.push(at);
        }
        bounds
    }

    /// The start of the cluster before the cursor.
    fn prev_boundary(&self) -> usize {
        self.boundaries()
            .into_iter()
            .rev()
            .find(|&b| b < self.cursor)
            .unwrap_or(0)
    }

    /// The end of the cluster after the cursor.
    fn next_boundary(&self) -> usize {
        self.boundaries()
            .into_iter()
            .find(|&b| b > self.cursor)
            .unwrap_or(self.chars.len())
    }

    pub fn backspace(&mut self) {
        let start = self.prev_boundary();
        self.chars.drain(start..self.cursor);
        self.cursor = start;
    }

    pub fn delete(&mut self) {
        let end = self.next_boundary();
        self.chars.drain(self.cursor..end);
    }

    pub fn left(&mut self) {
        self.cursor = self.prev_boundary();
    }

    pub fn right(&mut self) {
        self.cursor = self.next_boundary();
    }

    /// The cursor position, in chars.
    pub fn cursor(&self) -> usize {
        self.cursor
    }

    /// The word that ends at the cursor (for Tab completion): its start, in chars, and its text.
    pub fn word_before_cursor(&self) -> (usize, String) {
        let mut i = self.cursor;
        while i > 0 && !self.chars[i - 1].is_whitespace() {
            i -= 1;
        }
        (i, self.chars[i..self.cursor].iter().collect())
    }

    /// Replaces the chars from `start` to the cursor with `text`, cursor after it.
    pub fn replace_before_cursor(&mut self, start: usize, text: &str) {
        let start = start.min(self.cursor);
        let new: Vec<char> = text.chars().collect();
        let len = new.len();
        self.chars.splice(start..self.cursor, new);
        self.cursor = start + len;
    }

    pub fn home(&mut self) {
        self.cursor = 0;
    }

    pub fn end(&mut self) {
        self.cursor = self.chars.len();
    }

    /// Start of the word before the cursor.
    fn word_start(&self) -> usize {
        let mut i = self.cursor;
        while i > 0 && self.chars[i - 1].is_whitespace() {
            i -= 1;
        }
        while i > 0 && !self.chars[i - 1].is_whitespace() {
            i -= 1;
        }
        i
    }

    pub fn word_left(&mut self) {
        self.cursor = self.word_start();
    }

    pub fn word_right(&mut self) {
        let n = self.chars.len();
        let mut i = self.cursor;
        while i < n && self.chars[i].is_whitespace() {
            i += 1;
        }
        while i < n && !self.chars[i].is_whitespace() {
            i += 1;
        }
        self.cursor = i;
    }

    /// Ctrl-W: deletes the word before the cursor.
    pub fn delete_word(&mut self) {
        let start = self.word_start();
        self.chars.drain(start..self.cursor);
        self.cursor = start;
    }

    /// Ctrl-U: deletes everything before the cursor.
    pub fn delete_to_start(&mut self) {
        self.chars.drain(..self.cursor);
        self.cursor = 0;
    }

    /// Ctrl-K: deletes everything from the cursor on.
    pub fn delete_to_end(&mut self) {
        self.chars.truncate(self.cursor);
    }

    /// Up: the previous sent line.
    pub fn history_up(&mut self) {
        let next = match self.browsing {
            None if self.history.is_empty() => return,
            None => {
                self.draft = std::mem::take(&mut self.chars);
                self.history.len() - 1
            }
            Some(0) => return,
            Some(i) => i - 1,
        };
        self.browsing = Some(next);
        self.chars = self.history[next].chars().collect();
        self.cursor = self.chars.len();
    }

    /// Down: the next sent line, then back to the line being typed.
    pub fn history_down(&mut self) {
        let Some(i) = self.browsing else {
            return;
        };
        if i + 1 < self.history.len() {
            self.browsing = Some(i + 1);
            self.chars = self.history[i + 1].chars().collect();
        } else {
            self.browsing = None;
            self.chars = std::mem::take(&mut self.draft);
        }
        self.cursor = self.chars.len();
    }

    /// The part of the line to show in `width` columns, and the cursor's column within it: the
    /// line scrolls left when the cursor would leave the screen.
    pub fn view(&self, width: usize) -> (String, usize) {
        let width = width.max(1);
        let text = self.text();
        // (chars, columns) of each cluster, measured whole so a ZWJ sequence or a flag takes the
        // two columns it is drawn in, not the sum of its parts.
        let clusters: Vec<(&str, usize)> = text
            .graphemes(true)
            .map(|g| (g, g.chars().count()))
            .collect();
        let mut at = 0;
        let at_cursor = clusters
            .iter()
            .take_while(|(_, n)| {
                let before = at < self.cursor;
                at += n;
                before
            })
            .count();
        let mut start = 0;
        let mut before: usize = clusters[..at_cursor].iter().map(|(g, _)| g.width()).sum();
        // Keep one column for the cursor itself.
        while before >= width && start < at_cursor {
            before -= clusters[start].0.width();
            start += 1;
        }
        let mut shown = String::new();
        let mut used = 0;
        for (g, _) in &clusters[start..] {
            let gw = g.width();
            if used + gw > width {
                break;
            }
            used += gw;
            shown.push_str(g);
        }
        (shown, before)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(text: &str) -> Editor {
        let mut e = Editor::default();
        text.chars().for_each(|c| e.insert(c));
        e
    }

    #[test]
    fn edits_at_the_cursor() {
        let mut e = typed("helo world");
        e.home();
        e.right();
        e.right();
        e.right();
        e.insert('l');
        assert_eq!(e.text(), "hello world");
        e.end();
        e.delete_word();
        assert_eq!(e.text(), "hello ");
        e.backspace();
        e.home();
        e.delete();
        assert_eq!(e.text(), "ello");
        e.word_right();
        e.delete_to_start();
        assert_eq!(e.text(), "");
    }

    #[test]
    fn history_keeps_the_draft() {
        let mut e = typed("one");
        e.take();
        "two".chars().for_each(|c| e.insert(c));
        e.take();
        "draft".chars().for_each(|c| e.insert(c));
        e.history_up();
        assert_eq!(e.text(), "two");
        e.history_up();
        e.history_up();
        assert_eq!(e.text(), "one");
        e.history_down();
        e.history_down();
        assert_eq!(e.text(), "draft");
    }

    #[test]
    fn view_scrolls_to_the_cursor() {
        let e = typed("abcdefghij");
        assert_eq!(e.view(20), ("abcdefghij".to_string(), 10));
        let (shown, col) = e.view(5);
        assert_eq!((shown.as_str(), col), ("ghij", 4));
        let wide = typed("你好世界");
        assert_eq!(wide.view(20).1, 8);
    }

    #[test]
    fn clusters_move_and_measure_as_one() {
        // A ZWJ family (5 chars), a flag (2 regional indicators), e and a combining acute.
        let mut e = typed("a\u{1F468}\u{200D}\u{1F469}\u{200D}\u{1F467}\u{1F1EB}\u{1F1F7}e\u{301}");
        assert_eq!(e.view(20).1, 1 + 2 + 2 + 1);
        e.left();
        assert_eq!(e.view(20).1, 5);
        e.left();
        assert_eq!(e.view(20).1, 3);
        e.backspace();
        assert_eq!(e.text(), "a\u{1F1EB}\u{1F1F7}e\u{301}");
        e.delete();
        assert_eq!(e.text(), "ae\u{301}");
        // Scrolled to fit: never half a cluster.
        let flags = typed(&"\u{1F1EB}\u{1F1F7}".repeat(10));
        let (shown, col) = flags.view(7);
        assert_eq!((shown.chars().count(), col), (6, 6));
    }

    #[test]
    fn replaces_the_word_before_the_cursor() {
        let mut e = typed("hi bo");
        assert_eq!(e.word_before_cursor(), (3, "bo".to_string()));
        e.replace_before_cursor(3, "bobby ");
        assert_eq!(e.text(), "hi bobby ");
        assert_eq!(e.cursor(), 9);
        assert_eq!(e.word_before_cursor(), (9, String::new()));
    }
}
