//! [`Positions`]: where a Redis subscription stands in each of its topics' streams (the last
//! entry sent from it), for what a ring may hand it twice and for the ids of several topics.
//!
//! - A client that resumes after an entry this node's reader has not handed on yet starts from
//!   a ring that reaches that entry later: what comes up to it is skipped.
//! - Each topic's entries have ids of their own stream, so the events of a subscription of
//!   several topics carry every topic's position, joined by commas in the topics' sorted
//!   order: a client that comes back with it resumes each topic exactly.

use bytes::{Bytes, BytesMut};

use super::entry_id::EntryId;
use crate::engine::Output;
use crate::hub::subscriber::Stamp;
use crate::hub::topic::Entry;
use crate::source::EncodedEvent;

/// The positions of one subscription.
pub(super) struct Positions {
    /// Per topic, the last entry sent (or where it started), and its id as text.
    positions: Vec<(EntryId, Bytes)>,
}

impl Positions {
    /// Starting at `positions`, one per topic in sorted topic order.
    pub(super) fn new(positions: &[EntryId]) -> Self {
        let positions = positions
            .iter()
            .map(|id| (*id, Bytes::from(id.to_string())))
            .collect();
        Self { positions }
    }

    /// The id of the subscription's next event.
    fn compound(&self) -> Bytes {
        let len = self.positions.iter().map(|(_, id)| id.len() + 1).sum();
        let mut id = BytesMut::with_capacity(len);
        for (index, (_, text)) in self.positions.iter().enumerate() {
            if index > 0 {
                id.extend_from_slice(b",");
            }
            id.extend_from_slice(text);
        }
        id.freeze()
    }
}

impl Stamp for Positions {
    /// Skips `event` if its topic's position is at or past it; else writes it, with the
    /// subscription's id in place of the entry's if it has several topics.
    fn write(&mut self, index: usize, entry: &Entry, out: &mut Output<'_>) {
        let several = self.positions.len() > 1;
        let event = &entry.event;
        let bytes = event.as_bytes();
        // A topic's entry as the engine made it: its fields, `id: {its id}` and the blank line;
        // its entry id is its id, unless the publisher kept an id of its own.
        let wire_id = event.id_bytes();
        let parsed = wire_id.and_then(|wire_id| {
            let text = entry.position().cloned().unwrap_or_else(|| wire_id.clone());
            let id = EntryId::parse(&text)?;
            let fields = bytes.get(..bytes.len().checked_sub(4 + wire_id.len() + 2)?)?;
            Some((id, text, fields))
        });
        let (Some((id, text, fields)), Some(position)) = (parsed, self.positions.get_mut(index))
        else {
            out.encoded(event);
            return;
        };
        if id <= position.0 {
            return;
        }
        *position = (id, text);
        if !several {
            out.encoded(event);
            return;
        }
        let compound = self.compound();
        let mut whole = BytesMut::with_capacity(fields.len() + compound.len() + 6);
        whole.extend_from_slice(fields);
        whole.extend_from_slice(b"id: ");
        whole.extend_from_slice(&compound);
        whole.extend_from_slice(b"\n\n");
        out.encoded(&EncodedEvent::from_encoded(
            whole.freeze(),
            Some(compound),
            true,
        ));
    }
}
