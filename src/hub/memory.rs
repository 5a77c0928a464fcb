//! The embedded engine: topics, their bounded history, and the subscribers' queues, in this
//! process's memory.
//!
//! One lock orders everything: a publish takes the next sequence number, appends the event to
//! its topic's history and hands it to every subscriber's queue under it, and a subscribe takes
//! the history it replays and registers its queue under it. So every subscriber gets the events
//! of its topics in sequence order, and the seam between history and live has neither a gap nor
//! a duplicate, whatever publishers do meanwhile.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};

use super::id::{self, Position};
use super::queue::{Queue, Weighed};
use super::subscription::{poll_live, Counted};
use super::{GapReason, HubConfig, HubError, Resume};
use crate::engine::{BoxSource, Output, Source};
use crate::{Event, StreamError};

/// One published event, encoded once; subscribers share its bytes.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub(super) seq: u64,
    /// The whole event on the wire, its id line included.
    pub(super) encoded: Bytes,
    pub(super) id: Bytes,
}

impl Weighed for Entry {
    fn size(&self) -> usize {
        self.encoded.len()
    }
}

/// The embedded engine.
pub(super) struct Memory {
    epoch: u64,
    pub(super) config: HubConfig,
    state: Mutex<State>,
    /// Numbers the subscribers' queues, so a topic finds one without a scan.
    next_queue: AtomicU64,
}

struct State {
    closed: bool,
    /// The last sequence number given.
    seq: u64,
    /// Events up to this number may be gone from a topic no longer kept (dropped when it had
    /// neither subscribers nor history, or evicted over `max_topics`): a topic made anew
    /// counts them as trimmed.
    forgotten: u64,
    topics: HashMap<Arc<str>, Topic>,
    /// The bytes of every topic's history together.
    history_bytes: usize,
}

struct Topic {
    history: VecDeque<Entry>,
    history_bytes: usize,
    /// The highest sequence number removed from the history (0: none).
    trimmed: u64,
    /// The last sequence number published here.
    last: u64,
    subscribers: HashMap<u64, Arc<Queue<Entry>>>,
}

/// What a subscribe found, under the lock.
struct Joined {
    /// The retained events to send first, in sequence order.
    replay: VecDeque<Entry>,
    gap: Option<GapReason>,
}

impl Memory {
    pub(super) fn new(config: HubConfig) -> Self {
        Self {
            epoch: id::new_epoch(),
            config,
            state: Mutex::new(State {
                closed: false,
                seq: 0,
                forgotten: 0,
                topics: HashMap::new(),
                history_bytes: 0,
            }),
            next_queue: AtomicU64::new(0),
        }
    }

    /// Subscribes to `topics` (validated, sorted, without duplicates) after `last_event_id`.
    pub(super) fn subscribe(
        self: &Arc<Self>,
        topics: Vec<Arc<str>>,
        last_event_id: Option<&str>,
    ) -> Result<(BoxSource, Resume), HubError> {
        let position = last_event_id.map(|id| id::parse(self.epoch, id));
        let queue = Arc::new(Queue::new(
            self.next_queue.fetch_add(1, Ordering::Relaxed),
            self.config.queue_bounds(),
        ));
        let joined = self.join(&topics, position, &queue)?;
        let resume = Resume::of(joined.gap, position.is_some(), joined.replay.len());
        let source = Subscriber {
            memory: self.clone(),
            gap: joined
                .gap
                .and_then(|reason| (self.config.gap_event)(reason)),
            topics,
            queue,
            replay: joined.replay,
            _counted: Counted::new(),
        };
        Ok((Box::pin(source), resume))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; the state stays consistent in any case.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Publishes `event` on `topic` (already validated): gives it the next id, keeps it in the
    /// topic's history, and queues it for every subscriber. Never waits on a subscriber.
    pub(super) fn publish(&self, topic: &str, mut event: Event) -> Result<String, HubError> {
        let mut state = self.lock();
        if state.closed {
            return Err(HubError::Closed);
        }
        let seq = state.seq + 1;
        let id = id::format(self.epoch, seq);
        let _replaced = event.take_id();
        // The id is hex digits, a dash and decimal digits: never a line break or NUL.
        let event = event.id(id.clone()).map_err(HubError::Event)?;
        let mut encoded = BytesMut::new();
        event.encode_into(&mut encoded);
        let entry = Entry {
            seq,
            encoded: encoded.freeze(),
            id: Bytes::from(id.clone()),
        };
        state.seq = seq;
        let forgotten = state.forgotten;
        let topic = match state.topics.get_mut(topic) {
            Some(topic) => topic,
            None => state
                .topics
                .entry(Arc::from(topic))
                .or_insert_with(|| Topic::new(forgotten)),
        };
        topic.last = seq;
        let before = topic.history_bytes;
        topic.keep(entry.clone(), &self.config);
        let after = topic.history_bytes;
        topic.subscribers.retain(|_, queue| queue.push(&entry));
        state.history_bytes = state.history_bytes - before + after;
        state.evict(&self.config);
        Ok(id)
    }

    /// Registers `queue` on `topics` (validated, without duplicates) and takes what it must
    /// replay: after `position`, or everything retained after a gap.
    fn join(
        &self,
        topics: &[Arc<str>],
        position: Option<Position>,
        queue: &Arc<Queue<Entry>>,
    ) -> Result<Joined, HubError> {
        let mut state = self.lock();
        if state.closed {
            return Err(HubError::Closed);
        }
        let newest = state.seq;
        let (after, mut gap) = match position {
            None => (None, None),
            // An id of this hub's epoch past its newest event was never given out.
            Some(Position::After(seq)) if seq > newest => (Some(0), Some(GapReason::Unknown)),
            Some(Position::After(seq)) => (Some(seq), None),
            Some(Position::OtherEpoch) => (Some(0), Some(GapReason::Unknown)),
            Some(Position::Malformed) => (Some(0), Some(GapReason::Malformed)),
        };
        let forgotten = state.forgotten;
        let mut replay = Vec::new();
        for name in topics {
            let topic = state
                .topics
                .entry(name.clone())
                .or_insert_with(|| Topic::new(forgotten));
            if let Some(after) = after.filter(|_| gap.is_none()) {
                if topic.trimmed > after {
                    gap = Some(GapReason::Trimmed);
                }
            }
            if let Some(after) = after {
                replay.extend(topic.history.iter().filter(|e| e.seq > after).cloned());
            }
            topic.subscribers.insert(queue.id, queue.clone());
        }
        // After a trimmed history, each topic still replays only what follows the client's
        // position: what it kept of the others, the client has.
        replay.sort_unstable_by_key(|entry| entry.seq);
        Ok(Joined {
            replay: replay.into(),
            gap,
        })
    }

    /// Removes `queue` from `topics`; a topic left with neither subscribers nor history is
    /// dropped.
    fn leave(&self, topics: &[Arc<str>], queue: &Arc<Queue<Entry>>) {
        let mut state = self.lock();
        for name in topics {
            let Some(topic) = state.topics.get_mut(name) else {
                continue;
            };
            topic.subscribers.remove(&queue.id);
            if topic.subscribers.is_empty() && topic.history.is_empty() {
                let last = topic.last.max(topic.trimmed);
                state.topics.remove(name);
                state.forgotten = state.forgotten.max(last);
            }
        }
    }

    /// Ready unless closed.
    pub(super) fn ready(&self) -> Result<(), HubError> {
        if self.lock().closed {
            return Err(HubError::Closed);
        }
        Ok(())
    }

    /// Refuses further publishes and subscribes; open subscriptions end after what is queued.
    pub(super) fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        for topic in state.topics.values_mut() {
            for (_, queue) in topic.subscribers.drain() {
                queue.close();
            }
        }
    }

    /// How many topics are kept (for tests bounding memory).
    #[cfg(test)]
    pub(super) fn topic_count(&self) -> usize {
        self.lock().topics.len()
    }
}

impl State {
    /// Over `max_topics` or `max_history_bytes`, drops the topics without subscribers published
    /// to longest ago, with their history; their events count as forgotten. One scan frees a
    /// sixteenth of the bounds, so publishes at the limit do not scan every time.
    fn evict(&mut self, config: &HubConfig) {
        if self.topics.len() <= config.max_topics && self.history_bytes <= config.max_history_bytes
        {
            return;
        }
        let mut idle: Vec<(u64, Arc<str>)> = self
            .topics
            .iter()
            .filter(|(_, topic)| topic.subscribers.is_empty())
            .map(|(name, topic)| (topic.last, name.clone()))
            .collect();
        idle.sort_unstable_by_key(|(last, _)| *last);
        let topics = config.max_topics - config.max_topics / 16;
        let bytes = config.max_history_bytes - config.max_history_bytes / 16;
        for (_, name) in idle {
            if self.topics.len() <= topics && self.history_bytes <= bytes {
                break;
            }
            if let Some(topic) = self.topics.remove(&name) {
                self.forgotten = self.forgotten.max(topic.last);
                self.history_bytes -= topic.history_bytes;
            }
        }
    }
}

impl Topic {
    fn new(forgotten: u64) -> Self {
        Self {
            history: VecDeque::new(),
            history_bytes: 0,
            trimmed: forgotten,
            last: forgotten,
            subscribers: HashMap::new(),
        }
    }

    /// Appends `entry` to the history, then trims it to the configured count and bytes.
    fn keep(&mut self, entry: Entry, config: &HubConfig) {
        self.history_bytes += entry.encoded.len();
        self.history.push_back(entry);
        while self.history.len() > config.history_events
            || (self.history_bytes > config.history_bytes && !self.history.is_empty())
        {
            let Some(removed) = self.history.pop_front() else {
                break;
            };
            self.history_bytes -= removed.encoded.len();
            self.trimmed = removed.seq;
        }
    }
}

/// The source of a subscriber's stream: the gap event, the replay, then its live queue. It
/// leaves its topics when dropped.
struct Subscriber {
    memory: Arc<Memory>,
    topics: Vec<Arc<str>>,
    queue: Arc<Queue<Entry>>,
    gap: Option<Event>,
    replay: VecDeque<Entry>,
    _counted: Counted,
}

impl Source for Subscriber {
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
            let Some(entry) = this.replay.pop_front() else {
                break;
            };
            out.encoded(&entry.encoded, Some(entry.id));
        }
        poll_live(&this.queue, cx, out, |out, entry| {
            out.encoded(&entry.encoded, Some(entry.id));
        })
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.memory.leave(&self.topics, &self.queue);
    }
}
