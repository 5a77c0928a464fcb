//! The source of a subscriber's stream on Redis: the gap event, the replay, then the live
//! entries its shards' readers queue. It keeps each topic's position (the last entry sent) and
//! skips what it already sent, so the seam between replay and live has neither a gap nor a
//! duplicate. It leaves its topics when dropped.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};

use super::entry_id::{format_positions, EntryId};
use super::item::Item;
use super::RedisBackend;
use crate::engine::{Output, Source};
use crate::hub::queue::poll_live;
use crate::hub::queue::Queue;
use crate::hub::subscription::Counted;
use crate::source::EncodedEvent;
use crate::{Event, StreamError};

/// One subscriber's stream.
pub(super) struct RedisSubscriber {
    engine: Arc<RedisBackend>,
    /// Sorted: the order of the positions in a compound id.
    topics: Vec<Arc<str>>,
    /// Per topic, the last entry sent (or the point it started from).
    positions: Vec<EntryId>,
    queue: Arc<Queue<Item>>,
    gap: Option<Event>,
    replay: VecDeque<Item>,
    _counted: Counted,
}

impl RedisSubscriber {
    /// A subscriber of `topics`, whose queue is (or is about to be) registered on them: it
    /// leaves them when dropped.
    pub(super) fn new(
        engine: Arc<RedisBackend>,
        topics: Vec<Arc<str>>,
        queue: Arc<Queue<Item>>,
    ) -> Self {
        Self {
            engine,
            positions: vec![EntryId::ZERO; topics.len()],
            topics,
            queue,
            gap: None,
            replay: VecDeque::new(),
            _counted: Counted::new(),
        }
    }

    /// Starts each topic after `positions`, with `gap` first and `replay` (in order) next.
    pub(super) fn start(&mut self, positions: Vec<EntryId>, gap: Option<Event>, replay: Vec<Item>) {
        self.positions = positions;
        self.gap = gap;
        self.replay = replay.into();
    }
}

/// Writes `item` unless its topic's position is already past it. A single topic's subscriber
/// hands on the shared bytes; one of several topics writes the body with its compound id.
fn write(topics: &[Arc<str>], positions: &mut [EntryId], out: &mut Output<'_>, item: Item) {
    let Ok(index) = topics.binary_search(&item.topic) else {
        return;
    };
    if item.id <= positions[index] {
        return;
    }
    positions[index] = item.id;
    let event = if topics.len() == 1 {
        EncodedEvent::from_encoded(item.whole, Some(item.id_text), true)
    } else {
        // One id for every topic: the body (fields with data, whole lines) and that id.
        let id = format_positions(positions);
        let body = item.body();
        let mut whole = BytesMut::with_capacity(body.len() + id.len() + 6);
        whole.extend_from_slice(body);
        whole.extend_from_slice(b"id: ");
        whole.extend_from_slice(id.as_bytes());
        whole.extend_from_slice(b"\n\n");
        EncodedEvent::from_encoded(whole.freeze(), Some(Bytes::from(id)), true)
    };
    out.encoded(&event);
}

impl Source for RedisSubscriber {
    fn poll_events(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut Output<'_>,
    ) -> Poll<Result<(), StreamError>> {
        let this = self.get_mut();
        if let Some(gap) = this.gap.take() {
            out.event(gap);
        }
        while !out.is_full() {
            let Some(item) = this.replay.pop_front() else {
                break;
            };
            write(&this.topics, &mut this.positions, out, item);
        }
        let (topics, positions) = (&this.topics, &mut this.positions);
        poll_live(&this.queue, cx, out, |out, item| {
            write(topics, positions, out, item);
        })
    }
}

impl Drop for RedisSubscriber {
    fn drop(&mut self) {
        self.engine.leave(&self.topics, self.queue.id);
    }
}
