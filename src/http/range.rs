//! `Range: bytes=...` (RFC 9110 §14) and the validators: ETag, Last-Modified and the conditional
//! request headers (RFC 9110 §13), evaluated in the RFC's order.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hyper::header::{self, HeaderMap};

/// Default most ranges in one request (`--max-ranges`); more are ignored (the whole file is
/// sent), as are ranges that add up to more than the file: many small or overlapping ranges would
/// make a multipart answer far larger than the file (Apache's CVE-2011-3192).
pub const DEFAULT_MAX_RANGES: usize = 16;

/// What a Range header asks for, given the representation's length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ranges {
    /// No Range, or one to ignore (malformed, not bytes, too many): the whole representation.
    Whole,
    /// Inclusive `(first, last)` byte positions, in the order asked.
    Some(Vec<(u64, u64)>),
    /// None of the ranges overlaps the representation: 416.
    Unsatisfiable,
}

/// Parses a Range header value for a representation of `len` bytes, honouring at most
/// `max_ranges` ranges (0 turns ranges off).
pub fn parse_ranges(value: &str, len: u64, max_ranges: usize) -> Ranges {
    let Some(specs) = value.trim().strip_prefix("bytes=") else {
        return Ranges::Whole;
    };
    let mut out = Vec::new();
    let mut count = 0;
    for spec in specs.split(',') {
        let spec = spec.trim();
        if spec.is_empty() {
            continue;
        }
        count += 1;
        if count > max_ranges {
            return Ranges::Whole;
        }
        let Some((a, b)) = spec.split_once('-') else {
            return Ranges::Whole;
        };
        let (a, b) = (a.trim(), b.trim());
        let range = if a.is_empty() {
            // Suffix: the last b bytes.
            let Ok(n) = b.parse::<u64>() else {
                return Ranges::Whole;
            };
            if n == 0 || len == 0 {
                None
            } else {
                Some((len.saturating_sub(n), len - 1))
            }
        } else {
            let Ok(first) = a.parse::<u64>() else {
                return Ranges::Whole;
            };
            let last = if b.is_empty() {
                u64::MAX
            } else {
                match b.parse::<u64>() {
                    Ok(l) if l >= first => l,
                    _ => return Ranges::Whole,
                }
            };
            (first < len).then(|| (first, last.min(len - 1)))
        };
        out.extend(range);
    }
    if count == 0 {
        return Ranges::Whole;
    }
    if out.is_empty() {
        return Ranges::Unsatisfiable;
    }
    let total: u64 = out.iter().map(|(a, b)| b - a + 1).sum();
    if out.len() > 1 && total > len {
        return Ranges::Whole;
    }
    Ranges::Some(out)
}

/// The validators of one representation.
#[derive(Debug, Clone)]
pub struct Validators {
    /// Strong ETag, quoted.
    pub etag: String,
    /// Modification time, truncated to whole seconds (HTTP dates have no more).
    pub modified: SystemTime,
}

impl Validators {
    /// nginx's form (`"mtime-length"` in hex), with the mtime in nanoseconds so two writes in the
    /// same second differ; `variant` tells encodings of the same file apart.
    pub fn new(modified: SystemTime, len: u64, variant: &str) -> Self {
        let since = modified.duration_since(UNIX_EPOCH).unwrap_or_default();
        let etag = if variant.is_empty() {
            format!("\"{:x}-{:x}\"", since.as_nanos(), len)
        } else {
            format!("\"{:x}-{:x}-{variant}\"", since.as_nanos(), len)
        };
        Validators {
            etag,
            modified: UNIX_EPOCH + Duration::from_secs(since.as_secs()),
        }
    }

    pub fn last_modified(&self) -> String {
        httpdate::fmt_http_date(self.modified)
    }
}

/// The outcome of the conditional headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    Proceed,
    NotModified,
    PreconditionFailed,
}

fn etag_list_matches(list: &str, etag: &str, weak: bool) -> bool {
    list.split(',').map(str::trim).any(|tag| {
        if tag == "*" {
            return true;
        }
        match tag.strip_prefix("W/") {
            Some(t) => weak && t == etag,
            None => tag == etag,
        }
    })
}

fn date(h: &HeaderMap, name: header::HeaderName) -> Option<SystemTime> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| httpdate::parse_http_date(s).ok())
}

fn text(h: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// Evaluates If-Match, If-Unmodified-Since, If-None-Match and If-Modified-Since for a GET/HEAD
/// (RFC 9110 §13.2.2).
pub fn evaluate(h: &HeaderMap, v: &Validators) -> Condition {
    if let Some(list) = text(h, header::IF_MATCH) {
        if !etag_list_matches(list, &v.etag, false) {
            return Condition::PreconditionFailed;
        }
    } else if let Some(since) = date(h, header::IF_UNMODIFIED_SINCE) {
        if v.modified > since {
            return Condition::PreconditionFailed;
        }
    }
    if let Some(list) = text(h, header::IF_NONE_MATCH) {
        if etag_list_matches(list, &v.etag, true) {
            return Condition::NotModified;
        }
    } else if let Some(since) = date(h, header::IF_MODIFIED_SINCE) {
        if v.modified <= since {
            return Condition::NotModified;
        }
    }
    Condition::Proceed
}

/// Whether a Range may be honoured under If-Range: an ETag must match strongly, a date exactly.
pub fn if_range_holds(h: &HeaderMap, v: &Validators) -> bool {
    let Some(value) = text(h, header::IF_RANGE) else {
        return h.get(header::IF_RANGE).is_none();
    };
    let value = value.trim();
    if value.starts_with('"') || value.starts_with("W/") {
        return value == v.etag;
    }
    httpdate::parse_http_date(value).is_ok_and(|d| d == v.modified)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        use Ranges::*;
        assert_eq!(
            parse_ranges("bytes=0-9", 100, DEFAULT_MAX_RANGES),
            Some(vec![(0, 9)])
        );
        assert_eq!(
            parse_ranges("bytes=90-", 100, DEFAULT_MAX_RANGES),
            Some(vec![(90, 99)])
        );
        assert_eq!(
            parse_ranges("bytes=-10", 100, DEFAULT_MAX_RANGES),
            Some(vec![(90, 99)])
        );
        assert_eq!(
            parse_ranges("bytes=-1000", 100, DEFAULT_MAX_RANGES),
            Some(vec![(0, 99)])
        );
        assert_eq!(
            parse_ranges("bytes=95-200", 100, DEFAULT_MAX_RANGES),
            Some(vec![(95, 99)])
        );
        assert_eq!(
            parse_ranges("bytes=0-1, 5-6", 100, DEFAULT_MAX_RANGES),
            Some(vec![(0, 1), (5, 6)])
        );
        assert_eq!(
            parse_ranges("bytes=100-", 100, DEFAULT_MAX_RANGES),
            Unsatisfiable
        );
        assert_eq!(
            parse_ranges("bytes=-0", 100, DEFAULT_MAX_RANGES),
            Unsatisfiable
        );
        assert_eq!(
            parse_ranges("bytes=0-0", 0, DEFAULT_MAX_RANGES),
            Unsatisfiable
        );
        assert_eq!(parse_ranges("bytes=5-1", 100, DEFAULT_MAX_RANGES), Whole);
        assert_eq!(parse_ranges("items=0-1", 100, DEFAULT_MAX_RANGES), Whole);
        assert_eq!(parse_ranges("bytes=x-1", 100, DEFAULT_MAX_RANGES), Whole);
        assert_eq!(
            parse_ranges("bytes=0-99,0-99", 100, DEFAULT_MAX_RANGES),
            Whole
        );
        let many = (0..20).map(|i| format!("{i}-{i}")).collect::<Vec<_>>();
        assert_eq!(
            parse_ranges(
                &format!("bytes={}", many.join(",")),
                100,
                DEFAULT_MAX_RANGES
            ),
            Whole
        );
    }
}
