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
use crate::hub::topic::Entry;
use crate::source::EncodedEvent;
use crate::Event;

/// The field that holds the encoded event.
pub(super) const FIELD: &str = "e";
/// The event's own id, when its publisher kept it ([`Publish::keep_id`](crate::hub::Publish::keep_id)).
pub(super) const KEPT_ID: &str = "k";
/// The event's tag ([`Publish::tag`](crate::hub::Publish::tag)), when it has one.
pub(super) const TAG: &str = "g";
/// A log entry's fields besides [`FIELD`]: the topic, its entry's id, the entry before it.
pub(super) const LOG_TOPIC: &str = "t";
pub(super) const LOG_ID: &str = "i";
pub(super) const LOG_PREVIOUS: &str = "p";

/// One published event, ready for the wire.
#[derive(Debug, Clone)]
pub(super) struct Item {
    pub(super) topic: Arc<str>,
    pub(super) id: EntryId,
    /// The entry id as text, the event's id for single-topic subscribers unless its publisher
    /// kept its own.
    pub(super) id_text: Bytes,
    /// The id it is sent with: its kept id, else `id_text`.
    pub(super) wire_id: Bytes,
    /// The whole event: its fields, then its id line and the blank line.
    pub(super) whole: Bytes,
    pub(super) tag: Bytes,
}

/// An entry's fields, as stored.
#[derive(Default)]
struct Fields<'a> {
    body: Option<&'a [u8]>,
    kept_id: Option<&'a [u8]>,
    tag: Option<&'a [u8]>,
}

impl<'a> Fields<'a> {
    /// Takes the field `name` if it is one of an event's; whether it was.
    fn take(&mut self, name: &[u8], value: &'a [u8]) -> bool {
        let slot = match name {
            name if name == FIELD.as_bytes() => &mut self.body,
            name if name == KEPT_ID.as_bytes() => &mut self.kept_id,
            name if name == TAG.as_bytes() => &mut self.tag,
            _ => return false,
        };
        *slot = Some(value);
        true
    }
}

impl Item {
    /// The event `fields` (checked) of `topic`'s entry `id` hold, as it is sent: with its id
    /// line.
    fn new(topic: &Arc<str>, id: EntryId, id_bytes: &[u8], fields: &Fields<'_>) -> Option<Self> {
        let body = fields.body.filter(|body| is_body(body))?;
        let kept = match fields.kept_id {
            Some(kept) if is_id(kept) => Some(kept),
            Some(_) => return None,
            None => None,
        };
        let wire_id = kept.unwrap_or(id_bytes);
        let mut whole = BytesMut::with_capacity(body.len() + wire_id.len() + 6);
        whole.extend_from_slice(body);
        whole.extend_from_slice(b"id: ");
        whole.extend_from_slice(wire_id);
        whole.extend_from_slice(b"\n\n");
        let whole = whole.freeze();
        let id_text = Bytes::copy_from_slice(id_bytes);
        let wire_id = match kept {
            Some(_) => whole.slice(body.len() + 4..whole.len() - 2),
            None => id_text.clone(),
        };
        Some(Self {
            topic: topic.clone(),
            id,
            id_text,
            wire_id,
            whole,
            tag: fields.tag.map(Bytes::copy_from_slice).unwrap_or_default(),
        })
    }

    /// What it holds in memory: its bytes on the wire and its tag.
    pub(super) fn weight(&self) -> usize {
        self.whole.len() + self.tag.len()
    }

    /// The item as a ring's entry, keyed `key`.
    pub(super) fn into_entry(self, key: u64) -> Entry {
        let kept = self.wire_id != self.id_text;
        let event = EncodedEvent::from_encoded(self.whole, Some(self.wire_id), true);
        Entry::new(key, event).marked(self.tag, kept, kept.then_some(self.id_text))
    }

    /// The body, without the id line.
    #[cfg(test)]
    pub(super) fn body(&self) -> &[u8] {
        &self.whole[..self.whole.len() - self.wire_id.len() - "id: \n\n".len()]
    }
}

/// Whether a kept id can follow `id: ` on a line of its own: UTF-8, without line breaks or
/// NUL (as [`Event::id`] allows), not empty.
fn is_id(id: &[u8]) -> bool {
    !id.is_empty()
        && memchr::memchr3(b'\n', b'\r', 0, id).is_none()
        && std::str::from_utf8(id).is_ok()
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
        let (mut topic, mut id, mut previous) = (None, None, None);
        let mut event = Fields::default();
        for (name, value) in field_pairs(fields) {
            if event.take(name, value) {
                continue;
            }
            match std::str::from_utf8(name) {
                Ok(LOG_TOPIC) => topic = std::str::from_utf8(value).ok(),
                Ok(LOG_ID) => id = Some(value),
                Ok(LOG_PREVIOUS) => previous = EntryId::parse(value),
                _ => {}
            }
        }
        let (Some(topic), Some(id_bytes), Some(previous), Some(_)) =
            (topic, id, previous, event.body)
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
        let parsed = match Item::new(&topic, id, id_bytes, &event) {
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
    let mut event = Fields::default();
    for (name, value) in field_pairs(fields) {
        event.take(name, value);
    }
    let Some(item) = Item::new(topic, id, id_bytes, &event) else {
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
