//! [`Item`]: one stream entry as its subscribers send it, and reading entries from Redis
//! replies (`XRANGE`, `XREAD`), whichever protocol version shaped them.
//!
//! A topic's entry holds one field, `e`: the event encoded without its id and its final blank
//! line, so each node appends the id line to it once and every single-topic subscriber shares
//! the result. An entry that is not such an event (written to the key by something else) is
//! skipped with a warning: its id still moves the reader on.
//!
//! A shard's log entry ([`Logged`]) repeats a publish for the readers: the topic (`t`), its
//! entry's id (`i`), the id of the topic's entry before it (`p`) and the same `e`.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use redis::Value;

use super::entry_id::EntryId;
use crate::Event;

/// The field that holds the encoded event.
pub(super) const FIELD: &str = "e";
/// A log entry's fields besides [`FIELD`]: the topic, its entry's id, the entry before it.
pub(super) const LOG_TOPIC: &str = "t";
pub(super) const LOG_ID: &str = "i";
pub(super) const LOG_PREVIOUS: &str = "p";

/// One published event, ready for the wire.
#[derive(Debug, Clone)]
pub(super) struct Item {
    pub(super) topic: Arc<str>,
    pub(super) id: EntryId,
    /// The entry id as text, the event's id for single-topic subscribers.
    pub(super) id_text: Bytes,
    /// The whole event: its fields, then its id line and the blank line.
    pub(super) whole: Bytes,
}

impl Item {
    /// `body` (checked) of `topic`'s entry `id`, as it is sent: with its id line.
    fn new(topic: &Arc<str>, id: EntryId, id_bytes: &[u8], body: &[u8]) -> Option<Self> {
        if !is_body(body) {
            return None;
        }
        let mut whole = BytesMut::with_capacity(body.len() + id_bytes.len() + 6);
        whole.extend_from_slice(body);
        whole.extend_from_slice(b"id: ");
        whole.extend_from_slice(id_bytes);
        whole.extend_from_slice(b"\n\n");
        Some(Self {
            topic: topic.clone(),
            id,
            id_text: Bytes::copy_from_slice(id_bytes),
            whole: whole.freeze(),
        })
    }

    /// The body, without the id line.
    #[cfg(test)]
    pub(super) fn body(&self) -> &[u8] {
        &self.whole[..self.whole.len() - self.id_text.len() - "id: \n\n".len()]
    }
}

/// One publish as a shard's log repeats it, for a topic live on this node (`L` says how the
/// reader knows it).
pub(super) struct Logged<L> {
    pub(super) live: L,
    /// The id of the topic's entry before this one (`0-0` for its first).
    pub(super) previous: EntryId,
    pub(super) parsed: Parsed,
}

/// Reads a log's entries (`[id, [field, value, ...]]` each): the id of the last readable one,
/// and the publishes of the topics `live` knows (it returns `None` for the others, whose
/// entries are not even copied). An entry that is not a hub's log entry is skipped with a
/// warning.
pub(super) fn parse_log<L>(
    entries: &Value,
    mut live: impl FnMut(&str) -> Option<(Arc<str>, L)>,
) -> (Option<EntryId>, Vec<Logged<L>>) {
    let mut last = None;
    let mut logged = Vec::new();
    let Value::Array(entries) = entries else {
        return (last, logged);
    };
    for entry in entries {
        let Value::Array(parts) = entry else {
            continue;
        };
        let [log_id, fields] = parts.as_slice() else {
            continue;
        };
        let Some(log_id) = bytes_of(log_id).and_then(EntryId::parse) else {
            tracing::warn!("a log entry without a readable id: skipped");
            continue;
        };
        last = Some(log_id);
        let (mut topic, mut id, mut previous, mut body) = (None, None, None, None);
        for (name, value) in field_pairs(fields) {
            match std::str::from_utf8(name) {
                Ok(LOG_TOPIC) => topic = std::str::from_utf8(value).ok(),
                Ok(LOG_ID) => id = Some(value),
                Ok(LOG_PREVIOUS) => previous = EntryId::parse(value),
                Ok(FIELD) => body = Some(value),
                _ => {}
            }
        }
        let (Some(topic), Some(id_bytes), Some(previous), Some(body)) = (topic, id, previous, body)
        else {
            tracing::warn!(%log_id, "a log entry that is not a hub's: skipped");
            continue;
        };
        let Some((topic, live)) = live(topic) else {
            continue;
        };
        let Some(id) = EntryId::parse(id_bytes) else {
            tracing::warn!(%log_id, "a log entry with an unreadable entry id: skipped");
            continue;
        };
        let parsed = match Item::new(&topic, id, id_bytes, body) {
            Some(item) => Parsed::Item(item),
            None => {
                tracing::warn!(%topic, %id, "a logged entry that is not a hub event: skipped");
                Parsed::Foreign(topic, id)
            }
        };
        logged.push(Logged {
            live,
            previous,
            parsed,
        });
    }
    (last, logged)
}

/// What an entry of a reply was.
pub(super) enum Parsed {
    /// An event of this hub.
    Item(Item),
    /// Something else, with a valid id (of this topic): skipped, but read past.
    Foreign(Arc<str>, EntryId),
}

impl Parsed {
    /// The entry's id.
    pub(super) fn id(&self) -> EntryId {
        match self {
            Self::Item(item) => item.id,
            Self::Foreign(_, id) => *id,
        }
    }

    /// The entry's topic.
    pub(super) fn topic(&self) -> &Arc<str> {
        match self {
            Self::Item(item) => &item.topic,
            Self::Foreign(topic, _) => topic,
        }
    }
}

/// The body stored for `event` (its id already taken).
pub(super) fn body_of(event: &Event) -> Bytes {
    let mut encoded = BytesMut::new();
    event.encode_into(&mut encoded);
    // An event with data (the hub publishes no other) ends with its blank line.
    if encoded.ends_with(b"\n\n") {
        encoded.truncate(encoded.len() - 1);
    }
    encoded.freeze()
}

/// Whether `body` is one event's fields, as [`body_of`] makes them: whole lines, UTF-8, with
/// no blank line and no carriage return, so the id line appended to it stays in the event, and
/// a `data` line, so that the blank line after the id dispatches an event (a block without
/// data would be dispatched as an empty event by lenient parsers, and by no WHATWG client).
fn is_body(body: &[u8]) -> bool {
    let has_data = body.starts_with(b"data:") || memchr::memmem::find(body, b"\ndata:").is_some();
    has_data
        && body.ends_with(b"\n")
        && body[0] != b'\n'
        && memchr::memmem::find(body, b"\n\n").is_none()
        && memchr::memchr(b'\r', body).is_none()
        && std::str::from_utf8(body).is_ok()
}

/// Reads one entry (`[id, [field, value, ...]]`) of `topic`; `None` when not even its id is
/// readable.
pub(super) fn parse_entry(topic: &Arc<str>, entry: &Value) -> Option<Parsed> {
    let Value::Array(parts) = entry else {
        return None;
    };
    let [id, fields] = parts.as_slice() else {
        return None;
    };
    let id_bytes = bytes_of(id)?;
    let id = EntryId::parse(id_bytes)?;
    let item = field_pairs(fields)
        .find(|(name, _)| *name == FIELD.as_bytes())
        .and_then(|(_, body)| Item::new(topic, id, id_bytes, body));
    let Some(item) = item else {
        tracing::warn!(%topic, %id, "a stream entry that is not a hub event: skipped");
        return Some(Parsed::Foreign(topic.clone(), id));
    };
    Some(Parsed::Item(item))
}

/// Reads a list of entries of `topic`, in order; unreadable ones are skipped with a warning.
pub(super) fn parse_entries(topic: &Arc<str>, entries: &Value) -> Vec<Parsed> {
    let Value::Array(entries) = entries else {
        if !matches!(entries, Value::Nil) {
            tracing::warn!(%topic, "a stream reply that is not a list of entries: skipped");
        }
        return Vec::new();
    };
    entries
        .iter()
        .filter_map(|entry| {
            let parsed = parse_entry(topic, entry);
            if parsed.is_none() {
                tracing::warn!(%topic, "a stream entry without a readable id: skipped");
            }
            parsed
        })
        .collect()
}

/// The bytes of a string reply.
pub(super) fn bytes_of(value: &Value) -> Option<&[u8]> {
    match value {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(text) => Some(text.as_bytes()),
        Value::VerbatimString { text, .. } => Some(text.as_bytes()),
        _ => None,
    }
}

/// The field-value pairs of an entry, as a flat list (RESP2) or a map (RESP3).
fn field_pairs(fields: &Value) -> Box<dyn Iterator<Item = (&[u8], &[u8])> + '_> {
    match fields {
        Value::Array(flat) => Box::new(
            flat.chunks_exact(2)
                .filter_map(|pair| Some((bytes_of(&pair[0])?, bytes_of(&pair[1])?))),
        ),
        Value::Map(pairs) => Box::new(
            pairs
                .iter()
                .filter_map(|(name, value)| Some((bytes_of(name)?, bytes_of(value)?))),
        ),
        _ => Box::new(std::iter::empty()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, fields: &[&[u8]]) -> Value {
        Value::Array(vec![
            Value::BulkString(id.into()),
            Value::Array(
                fields
                    .iter()
                    .map(|field| Value::BulkString(field.to_vec()))
                    .collect(),
            ),
        ])
    }

    #[test]
    fn entries_become_whole_events_and_anything_else_is_skipped() {
        let topic: Arc<str> = Arc::from("t");
        let event = Event::default().event("e").unwrap().data("a\nb"); // ok: test
        let body = body_of(&event);
        assert_eq!(&body[..], b"event: e\ndata: a\ndata: b\n");
        assert_eq!(&body_of(&Event::default())[..], b"");

        let Some(Parsed::Item(item)) = parse_entry(&topic, &entry("5-1", &[b"e", &body])) else {
            panic!("an event entry"); // ok: test
        };
        assert_eq!(&item.whole[..], b"event: e\ndata: a\ndata: b\nid: 5-1\n\n");
        assert_eq!(item.body(), &body[..]);
        assert_eq!(&item.id_text[..], b"5-1");

        for bad in [
            &b"data: x"[..],
            b"data: x\n\ndata: y\n",
            b"\ndata: x\n",
            b"data: x\r\n",
            b"data: \xff\n",
        ] {
            assert!(
                matches!(parse_entry(&topic, &entry("5-2", &[b"e", bad])), Some(Parsed::Foreign(_, id)) if id.to_string() == "5-2"),
                "{bad:?}"
            );
        }
        assert!(matches!(
            parse_entry(&topic, &entry("5-3", &[b"other", b"data: x\n"])),
            Some(Parsed::Foreign(..))
        ));
        assert!(parse_entry(&topic, &entry("x", &[b"e", b""])).is_none());
        // Fields without data (an older node's data-less event): not a hub event.
        for without_data in [&b""[..], b"id: 1\n", b"event: e\nretry: 5\n"] {
            assert!(matches!(
                parse_entry(&topic, &entry("5-4", &[b"e", without_data])),
                Some(Parsed::Foreign(..))
            ));
        }
        assert!(parse_entry(&topic, &Value::Int(1)).is_none());
        assert_eq!(parse_entries(&topic, &Value::Int(1)).len(), 0);
        let map = Value::Array(vec![
            Value::BulkString(b"6-0".to_vec()),
            Value::Map(vec![(
                Value::BulkString(b"e".to_vec()),
                Value::BulkString(b"data: m\n".to_vec()),
            )]),
        ]);
        assert!(matches!(parse_entry(&topic, &map), Some(Parsed::Item(_))));
    }
}
