//! What one chat event is in Redis: a [`Record`] (JSON) in the room's stream under its sequence
//! number, and `EPOCH SEQ RECORD` on the room's pub/sub channel. Written by one node's publisher,
//! read by every node's feed, so both sides share this one type.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::chat::event::{Event, Kind};

/// An event as the cluster carries it; its room is the key it is stored under, its number the
/// stream entry's id.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Record {
    /// The node that published it, and its id there (the dedup key, so a retried publish is
    /// stored once; and how the node finds its own joiner when the join comes back).
    pub node: String,
    pub id: String,
    pub ts: i64,
    pub kind: Kind,
    pub nick: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    pub text: String,
}

impl Record {
    /// The record of `event`, published by `node` as its `id`.
    pub fn of(event: &Event, node: &str, id: String) -> Record {
        Record {
            node: node.to_string(),
            id,
            ts: event.ts,
            kind: event.kind,
            nick: event.nick.to_string(),
            target: event.target.as_ref().map(|t| t.to_string()),
            text: event.text.to_string(),
        }
    }

    /// The event this record is, as number `seq` of `room` (`None`: of a private conversation).
    pub fn event(&self, room: Option<&Arc<str>>, seq: u64) -> Event {
        Event::at(
            seq,
            self.ts,
            self.kind,
            room.cloned(),
            Arc::from(self.nick.as_str()),
            self.target.as_deref().map(Arc::from),
            Arc::from(self.text.as_str()),
        )
    }
}

/// A message as it arrives on a room's channel: `EPOCH SEQ RECORD`.
#[derive(Debug, PartialEq, Eq)]
pub struct Published {
    pub epoch: String,
    pub seq: u64,
    pub record: Record,
}

impl Published {
    /// Parses a channel message; `None` for anything else (it is logged and skipped).
    pub fn parse(payload: &[u8]) -> Option<Published> {
        let text = std::str::from_utf8(payload).ok()?;
        let (epoch, rest) = text.split_once(' ')?;
        let (seq, json) = rest.split_once(' ')?;
        Some(Published {
            epoch: epoch.to_string(),
            seq: seq.parse().ok()?,
            record: serde_json::from_str(json).ok()?,
        })
    }
}

/// The sequence number of a stream entry id (`SEQ-0`).
pub fn seq_of(id: &str) -> Option<u64> {
    id.split_once('-').map_or(id, |(s, _)| s).parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_published_message_reads_back() {
        let ev = Event::new(
            Kind::Message,
            Some(Arc::from("lobby")),
            Arc::from("ann"),
            "hi there",
        );
        let rec = Record::of(&ev, "n1", "n1-7".into());
        let wire = format!("e1 42 {}", serde_json::to_string(&rec).unwrap());
        let p = Published::parse(wire.as_bytes()).unwrap();
        assert_eq!(p.epoch, "e1");
        assert_eq!(p.seq, 42);
        assert_eq!(p.record, rec);
        let back = p.record.event(Some(&Arc::from("lobby")), p.seq);
        assert_eq!(
            (back.seq, &*back.text, back.kind),
            (42, "hi there", Kind::Message)
        );
        assert!(Published::parse(b"e1 x {}").is_none());
        assert!(Published::parse(b"garbage").is_none());
        assert_eq!(seq_of("17-0"), Some(17));
        assert_eq!(seq_of("nope"), None);
    }
}
