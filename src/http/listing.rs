//! Directory listings: an HTML page (names, sizes, dates; sorted by `?sort=name|size|date` and
//! `&order=asc|desc`; a parent link; readable on a phone; no script) and the same entries as JSON
//! in nginx's `autoindex_format json` shape, for clients that ask for `application/json`.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use serde::Serialize;

use super::path::Policy;

/// One entry of a listing.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// HTTP date of the last modification.
    pub mtime: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(skip)]
    modified: SystemTime,
}

impl Entry {
    pub fn is_dir(&self) -> bool {
        self.kind == "directory"
    }
}

/// The sort order asked for by the query string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    Name,
    Size,
    Date,
}

#[derive(Debug, Clone, Copy)]
pub struct Sort {
    pub key: SortKey,
    pub descending: bool,
}

impl Sort {
    pub fn from_query(query: Option<&str>) -> Sort {
        let mut sort = Sort {
            key: SortKey::Name,
            descending: false,
        };
        for pair in query.unwrap_or("").split('&') {
            match pair.split_once('=') {
                Some(("sort", "size")) => sort.key = SortKey::Size,
                Some(("sort", "date")) => sort.key = SortKey::Date,
                Some(("sort", "name")) => sort.key = SortKey::Name,
                Some(("order", "desc")) => sort.descending = true,
                Some(("order", "asc")) => sort.descending = false,
                _ => {}
            }
        }
        sort
    }
}

/// Reads the visible entries of `dir` (blocking). Dotfiles are left out unless `--hidden`,
/// symlinks that lead out of the root unless `--follow-symlinks`, names that are not UTF-8
/// always (no request could name them). At most `max` entries are kept, the first ones the
/// folder yields; the flag says whether any were left out.
pub fn read(dir: &Path, policy: &Policy, max: usize) -> std::io::Result<(Vec<Entry>, bool)> {
    let mut out = Vec::new();
    for item in std::fs::read_dir(dir)? {
        if out.len() >= max {
            return Ok((out, true));
        }
        let Ok(item) = item else { continue };
        let Ok(name) = item.file_name().into_string() else {
            continue;
        };
        if !policy.hidden && name.starts_with('.') {
            continue;
        }
        let path = item.path();
        let Ok(ft) = item.file_type() else { continue };
        if ft.is_symlink() {
            match std::fs::canonicalize(&path) {
                Ok(target) if policy.admits(&target).is_ok() => {}
                _ => continue,
            }
        }
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        let modified = meta.modified().unwrap_or(UNIX_EPOCH);
        let (kind, size) = if meta.is_dir() {
            ("directory", None)
        } else if meta.is_file() {
            ("file", Some(meta.len()))
        } else {
            continue;
        };
        out.push(Entry {
            name,
            kind,
            mtime: httpdate::fmt_http_date(modified),
            size,
            modified,
        });
    }
    Ok((out, false))
}

/// Sorts entries: folders first, then by the key (names break ties).
pub fn sort(entries: &mut [Entry], sort: Sort) {
    entries.sort_by(|a, b| {
        let by_key = match sort.key {
            SortKey::Name => a.name.cmp(&b.name),
            SortKey::Size => a.size.cmp(&b.size).then_with(|| a.name.cmp(&b.name)),
            SortKey::Date => a
                .modified
                .cmp(&b.modified)
                .then_with(|| a.name.cmp(&b.name)),
        };
        let by_key = if sort.descending {
            by_key.reverse()
        } else {
            by_key
        };
        b.is_dir().cmp(&a.is_dir()).then(by_key)
    });
}

/// The listing as JSON.
pub fn json(entries: &[Entry]) -> Vec<u8> {
    serde_json::to_vec(entries).unwrap_or_else(|_| b"[]".to_vec())
}

/// Characters escaped in a link to an entry: everything that is not safe in a path segment.
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'\'')
    .add(b'&')
    .add(b'\\')
    .add(b'^')
    .add(b'|')
    .add(b'[')
    .add(b']')
    .add(b';')
    .add(b'=')
    .add(b'+');

/// Escapes text for HTML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// `1.5 KiB`-style sizes.
pub fn human_size(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;padding:1rem;color:#222;background:#fff}\
h1{font-size:1.1rem;word-break:break-all;margin:0 0 1rem}\
table{border-collapse:collapse;width:100%}\
th,td{text-align:left;padding:.45rem .4rem;border-bottom:1px solid #eee;vertical-align:top}\
th a{color:#555;text-decoration:none}td.n{word-break:break-all}\
td.s,td.d,th.s,th.d{white-space:nowrap;color:#555;font-size:.9rem}td.s,th.s{text-align:right}\
a{color:#0645ad}a.dir{font-weight:600}\
@media (max-width:600px){td.d,th.d{display:none}body{padding:.6rem}}\
@media (prefers-color-scheme:dark){body{background:#111;color:#ddd}a{color:#8ab4f8}th,td{border-color:#333}}";

/// The policy of the listing page: no script at all, its inline style only.
pub const LISTING_CSP: &str =
    "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The listing as an HTML page. `shown_path` is the decoded request path (for the title); `cut`
/// says the folder holds more than the entries shown (`--max-listing`).
pub fn html(shown_path: &str, entries: &[Entry], current: Sort, cut: bool) -> String {
    let title = escape(shown_path);
    let mut page = String::with_capacity(1024 + entries.len() * 160);
    let _ = write!(
        page,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<title>Index of {title}</title><style>{STYLE}</style></head><body>\
<h1>Index of {title}</h1><table><thead><tr>"
    );
    for (key, label, class) in [
        (SortKey::Name, "Name", "n"),
        (SortKey::Size, "Size", "s"),
        (SortKey::Date, "Modified", "d"),
    ] {
        let descending = current.key == key && !current.descending;
        let query = match key {
            SortKey::Name => "name",
            SortKey::Size => "size",
            SortKey::Date => "date",
        };
        let order = if descending { "desc" } else { "asc" };
        let arrow = match (current.key == key, current.descending) {
            (true, false) => " ↑",
            (true, true) => " ↓",
            _ => "",
        };
        let _ = write!(
            page,
            "<th class=\"{class}\"><a href=\"?sort={query}&amp;order={order}\">{label}{arrow}</a></th>"
        );
    }
    page.push_str("</tr></thead><tbody>");
    if shown_path != "/" {
        page.push_str(
            "<tr><td class=\"n\"><a class=\"dir\" href=\"../\">../</a></td><td class=\"s\"></td><td class=\"d\"></td></tr>",
        );
    }
    for e in entries {
        let href = utf8_percent_encode(&e.name, SEGMENT).to_string();
        let name = escape(&e.name);
        let (slash, class) = if e.is_dir() {
            ("/", " class=\"dir\"")
        } else {
            ("", "")
        };
        let size = e
            .size
            .map(|s| format!("<span title=\"{s} bytes\">{}</span>", human_size(s)))
            .unwrap_or_default();
        let date = chrono::DateTime::<chrono::Utc>::from(e.modified).format("%Y-%m-%d %H:%M");
        let _ = write!(
            page,
            "<tr><td class=\"n\"><a{class} href=\"./{href}{slash}\">{name}{slash}</a></td>\
<td class=\"s\">{size}</td><td class=\"d\">{date}</td></tr>"
        );
    }
    page.push_str("</tbody></table>");
    if cut {
        let _ = write!(
            page,
            "<p class=\"cut\">This folder holds more than {} entries; only those are shown (the server's --max-listing).</p>",
            entries.len()
        );
    }
    page.push_str("</body></html>\n");
    page
}
