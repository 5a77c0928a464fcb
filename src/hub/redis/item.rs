//! [`Item`]: one stream entry as its subscribers send it, and reading entries from Redis
//! replies (`XRANGE`, `XREAD`), whichever protocol version shaped them.
//!
//! An entry holds one field, `e`: the event encoded without its id and its final blank line,
//! so each node appends the id line to it once and every single-topic subscriber shares the
//! result. An entry that is not such an event (written to the key by something else) is
//! skipped with a warning: its id still moves the reader on.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use redis::Value;

use super::entry_id::EntryId;
use crate::hub::queue::Weighed;
use crate::Event;

/// The field that holds the encoded event.
pub(super) const FIELD: &str = "e";

/// One published event, ready for the wire.
#[derive(Debug, Clone)]
pub(super) struct Item {
    pub(super) topic: Arc<str>,
    pub(super) id: EntryId,
    /// The entry id as text, the event's id for single-topic subscribers.
    pub(super) id_text: Bytes,
    /// The whole event: `body`, then its id line and the blank line.
    pub(super) whole: Bytes,
    /// How many bytes of `whole` are the body.
    pub(super) body_len: usize,
}

impl Weighed for Item {
    fn size(&self) -> usize {
        self.whole.len()
    }
}

impl Item {
    /// The body, without the id line.
    pub(super) fn body(&self) -> &[u8] {
        &self.whole[..self.body_len]
    }
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
    let body = field_pairs(fields)
        .find(|(name, _)| *name == FIELD.as_bytes())
        .map(|(_, value)| value)
        .filter(|body| is_body(body));
    let Some(body) = body else {
        tracing::warn!(%topic, %id, "a stream entry that is not a hub event: skipped");
        return Some(Parsed::Foreign(topic.clone(), id));
    };
    let mut whole = BytesMut::with_capacity(body.len() + id_bytes.len() + 6);
    whole.extend_from_slice(body);
    whole.extend_from_slice(b"id: ");
    whole.extend_from_slice(id_bytes);
    whole.extend_from_slice(b"\n\n");
    Some(Parsed::Item(Item {
        topic: topic.clone(),
        id,
        id_text: Bytes::copy_from_slice(id_bytes),
        whole: whole.freeze(),
        body_len: body.len(),
    }))
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
