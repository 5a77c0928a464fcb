//! The embedded engine: topics and their rings in this process's memory.
//!
//! No publish holds a lock across topics. A publish encodes the event outside any lock, finds its
//! topic in one of the map's shards (a shared lock, released at once), then holds only that
//! topic's ring lock to take the next sequence number, append and trim, and wakes the topic's
//! subscribers after releasing it. Because the number is taken under the ring's lock, a
//! reader that holds a ring's lock sees every event of that ring numbered up to the counter's
//! value it read before: the `settled` mark a subscription of several topics merges up to, so
//! they arrive in sequence order.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use atomic_waker::AtomicWaker;
use bytes::{Bytes, BytesMut};

use super::id::{self, Position};
use super::subscriber::{accepts, Feed, Filter, Joined, Subscriber};
use super::topic::{Entry, Topic};
use super::{GapReason, HubConfig, HubError, Publish, Resume, Start, Subscribe};
use crate::engine::BoxSource;
use crate::source::EncodedEvent;
use crate::Event;

/// The map of topics is split this many ways, so that finding a topic contends with nothing
/// but the creation and removal of topics of the same shard.
const SHARDS: usize = 32;

type Shard = RwLock<HashMap<Arc<str>, Arc<Topic>>>;

/// The embedded engine.
pub(super) struct Memory {
    epoch: u64,
    pub(super) config: HubConfig,
    /// The last sequence number given.
    seq: AtomicU64,
    closed: AtomicBool,
    /// Events up to this number may be gone from a topic no longer kept (dropped when it had
    /// neither subscribers nor history, or evicted over `max_topics`): a topic made anew counts
    /// them as trimmed.
    forgotten: AtomicU64,
    shards: Box<[Shard]>,
    hasher: std::collections::hash_map::RandomState,
    topic_count: AtomicUsize,
    /// The bytes of every topic's ring together.
    history_bytes: AtomicUsize,
    eviction: Mutex<Eviction>,
    /// The last scan could not get under the bounds (its thresholds stand until they are met).
    scan_failed: AtomicBool,
    /// Numbers the subscribers.
    next_subscriber: AtomicU64,
}

/// When to scan for topics to evict again: a scan that could not get under the bounds (too
/// many topics have subscribers) waits until they grow by another sixteenth.
#[derive(Default)]
struct Eviction {
    topics_at: usize,
    bytes_at: usize,
}

impl Memory {
    pub(super) fn new(config: HubConfig) -> Self {
        Self {
            epoch: id::new_epoch(),
            config,
            seq: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            forgotten: AtomicU64::new(0),
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            hasher: Default::default(),
            topic_count: AtomicUsize::new(0),
            history_bytes: AtomicUsize::new(0),
            eviction: Mutex::default(),
            scan_failed: AtomicBool::new(false),
            next_subscriber: AtomicU64::new(0),
        }
    }

    fn shard(&self, name: &str) -> &Shard {
        &self.shards[self.hasher.hash_one(name) as usize % SHARDS]
    }

    /// The topic named `name`, made if it is not kept.
    fn topic(&self, name: &str) -> Arc<Topic> {
        let shard = self.shard(name);
        if let Some(topic) = read(shard).get(name) {
            return topic.clone();
        }
        write(shard)
            .entry(Arc::from(name))
            .or_insert_with(|| {
                self.topic_count.fetch_add(1, Ordering::Relaxed);
                Arc::new(Topic::new(self.forgotten.load(Ordering::Acquire)))
            })
            .clone()
    }

    /// Publishes `event` on `topic` (already validated, with data): gives it the next id, keeps
    /// it in the topic's ring, and wakes its subscribers. Never waits on a subscriber.
    pub(super) fn publish(
        &self,
        name: &str,
        mut event: Event,
        options: Publish,
    ) -> Result<String, HubError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(HubError::Closed);
        }
        let kept = event
            .get_id()
            .filter(|id| options.keep_id && !id.is_empty());
        if let Some(kept) = kept.map(str::to_owned) {
            // Whole as it is: the id is the publisher's.
            let event = EncodedEvent::new(&event);
            let entry =
                |seq| Entry::new(seq, event.clone()).marked(options.tag.clone(), true, None);
            self.append(name, &options.tag, entry)?;
            return Ok(kept);
        }
        let _replaced = event.take_id();
        // Encoded outside any lock, with room for the id line: 16 hex digits, a dash and up
        // to 20 decimal digits.
        let mut encoded = BytesMut::with_capacity(event.encoded_len() + 4 + 16 + 1 + 20 + 2);
        event.encode_into(&mut encoded);
        // An event with data ends with its blank line, which goes after the id.
        encoded.truncate(encoded.len().saturating_sub(1));
        let epoch = self.epoch;
        let mut id = String::new();
        self.append(name, &options.tag, |seq| {
            id = id::format(epoch, seq);
            encoded.extend_from_slice(b"id: ");
            let start = encoded.len();
            encoded.extend_from_slice(id.as_bytes());
            let end = encoded.len();
            encoded.extend_from_slice(b"\n\n");
            let encoded = std::mem::take(&mut encoded).freeze();
            let id_bytes = encoded.slice(start..end);
            let event = EncodedEvent::from_encoded(encoded, Some(id_bytes), true);
            Entry::new(seq, event).marked(options.tag.clone(), false, None)
        })?;
        Ok(id)
    }

    /// Appends the entry `make` builds with the next sequence number (tagged `tag`) to `name`'s
    /// ring (made if it is not kept), and wakes its subscribers.
    fn append(
        &self,
        name: &str,
        tag: &[u8],
        mut make: impl FnMut(u64) -> Entry,
    ) -> Result<(), HubError> {
        loop {
            let topic = self.topic(name);
            let mut ring = topic.write();
            if ring.removed {
                continue;
            }
            // Checked under the ring's lock: `close` passes every ring's lock after setting the
            // flag, so a publish either lands before its subscribers end, or is refused.
            if self.closed.load(Ordering::Acquire) {
                return Err(HubError::Closed);
            }
            let seq = self.seq.fetch_add(1, Ordering::AcqRel) + 1;
            let grown = ring.push(make(seq), self.config.ring_bounds());
            // Counted under the ring's lock, as `remove` uncounts it: the sum never goes below
            // what the rings hold.
            if grown >= 0 {
                self.history_bytes
                    .fetch_add(grown.unsigned_abs(), Ordering::Relaxed);
            } else {
                self.history_bytes
                    .fetch_sub(grown.unsigned_abs(), Ordering::Relaxed);
            }
            drop(ring);
            topic.wake_for(std::iter::once(tag));
            self.evict();
            return Ok(());
        }
    }

    /// The id of the newest event `name` retains.
    pub(super) fn last_id(&self, name: &str) -> Result<Option<String>, HubError> {
        self.ready()?;
        let topic = read(self.shard(name)).get(name).cloned();
        Ok(topic.and_then(|topic| topic.read().newest_id().map(str::to_owned)))
    }

    /// Subscribes to `topics` (validated, sorted, without duplicates) after `last_event_id`.
    pub(super) fn subscribe(
        self: &Arc<Self>,
        names: Vec<Arc<str>>,
        options: &Subscribe,
    ) -> Result<(BoxSource, Resume), HubError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(HubError::Closed);
        }
        let selection = options.selection();
        let position = match &options.start {
            Start::After(id) => Some(match id::parse(self.epoch, id.as_str()) {
                Position::After(seq) => Position::After(seq),
                // Not one of the hub's ids: perhaps one a publisher kept.
                other => self
                    .find_kept(&names, id.as_str(), &selection.filter)
                    .map_or(other, Position::After),
            }),
            Start::AfterKept(id) => Some(
                self.find_kept(&names, id.as_str(), &selection.filter)
                    .map_or(Position::OtherEpoch, Position::After),
            ),
            Start::Live | Start::Earliest => None,
        };
        let newest = self.seq.load(Ordering::Acquire);
        let (after, mut gap) = match position {
            None if matches!(options.start, Start::Earliest) => (Some(0), None),
            None => (None, None),
            // An id of this hub's epoch past its newest event was never given out.
            Some(Position::After(seq)) if seq > newest => (Some(0), Some(GapReason::Unknown)),
            Some(Position::After(seq)) => (Some(seq), None),
            Some(Position::OtherEpoch) => (Some(0), Some(GapReason::Unknown)),
            Some(Position::Malformed) => (Some(0), Some(GapReason::Malformed)),
        };
        // From the earliest retained: what is gone is not asked for.
        let checked = position.is_some();
        let id = self.next_subscriber.fetch_add(1, Ordering::Relaxed);
        let waiter = Arc::new(AtomicWaker::new());
        let mut topics = Vec::with_capacity(names.len());
        let mut replayed = 0;
        for name in names {
            loop {
                let topic = self.topic(&name);
                // Registered under the ring's lock: the topic is not removed meanwhile.
                let Some(ring) = topic.join(id, waiter.clone(), selection.interest.as_deref())
                else {
                    continue;
                };
                let cursor = match after {
                    // Live from now: every event numbered up to `newest` is in the ring (a topic
                    // made anew may count more as forgotten).
                    None => newest.max(ring.trimmed),
                    Some(after) => {
                        if checked && gap.is_none() && ring.trimmed > after {
                            gap = Some(GapReason::Trimmed);
                        }
                        // After a gap, what the topic retains after the position; what it no
                        // longer has of it is what the gap event tells of.
                        after.max(ring.trimmed)
                    }
                };
                replayed += ring
                    .range(cursor, newest)
                    .filter(|entry| accepts(&selection.filter, entry))
                    .count();
                drop(ring);
                topics.push(Joined {
                    name,
                    topic,
                    cursor,
                });
                break;
            }
        }
        let resume = Resume::of(gap, after.is_some(), replayed);
        let gap = options.gap_event(&self.config, gap);
        let feed: Arc<dyn Feed> = self.clone();
        let bounds = self.config.queue_bounds();
        let source = Subscriber::new(feed, topics, (id, waiter), newest, gap, bounds, selection);
        Ok((Box::pin(source), resume))
    }

    /// The sequence number of the oldest event of `names` retained with the publisher's `id`,
    /// if the subscription's filter lets it through (a subscriber learns nothing of an event it
    /// may not read: not even that its id is retained).
    fn find_kept(&self, names: &[Arc<str>], id: &str, filter: &Option<Filter>) -> Option<u64> {
        let (key, readable) = names
            .iter()
            .filter_map(|name| read(self.shard(name)).get(name).cloned())
            .filter_map(|topic| {
                let ring = topic.read();
                let entry = ring.find_kept(id)?;
                Some((entry.key, accepts(filter, entry)))
            })
            .min_by_key(|(key, _)| *key)?;
        readable.then_some(key)
    }

    /// Takes `topic` out of the map if it has neither subscribers nor (unless `evicting`)
    /// history; the bytes it held.
    fn remove(&self, name: &str, topic: &Arc<Topic>, evicting: bool) -> Option<usize> {
        let shard = self.shard(name);
        let mut map = write(shard);
        if !map.get(name).is_some_and(|kept| Arc::ptr_eq(kept, topic)) {
            return None;
        }
        let mut ring = topic.write();
        if topic.has_waiters() || (!evicting && !ring.is_empty()) {
            return None;
        }
        ring.removed = true;
        // Before the topic can be made anew: it then counts what this one had as trimmed.
        self.forgotten
            .fetch_max(ring.last.max(ring.trimmed), Ordering::AcqRel);
        map.remove(name);
        self.topic_count.fetch_sub(1, Ordering::Relaxed);
        let bytes = ring.bytes();
        self.history_bytes.fetch_sub(bytes, Ordering::Relaxed);
        Some(bytes)
    }

    /// Over `max_topics` or `max_history_bytes`, drops the topics without subscribers published
    /// to longest ago, with their history; their events count as forgotten. One scan frees a
    /// sixteenth of the bounds; one that cannot (subscribers hold the topics) is not repeated
    /// before the hub grows by another sixteenth. One publisher scans at a time.
    fn evict(&self) {
        let config = &self.config;
        let topics = self.topic_count.load(Ordering::Relaxed);
        let bytes = self.history_bytes.load(Ordering::Relaxed);
        if topics <= config.max_topics && bytes <= config.max_history_bytes {
            // Under the bounds again: a later excess is scanned at once.
            if self.scan_failed.load(Ordering::Relaxed) {
                if let Ok(mut eviction) = self.eviction.try_lock() {
                    *eviction = Eviction::default();
                    self.scan_failed.store(false, Ordering::Relaxed);
                }
            }
            return;
        }
        let Ok(mut eviction) = self.eviction.try_lock() else {
            return;
        };
        if topics < eviction.topics_at && bytes < eviction.bytes_at {
            return;
        }
        let mut idle: Vec<(u64, Arc<str>, Arc<Topic>)> = Vec::new();
        for shard in self.shards.iter() {
            for (name, topic) in read(shard).iter() {
                if !topic.has_waiters() {
                    idle.push((topic.read().last, name.clone(), topic.clone()));
                }
            }
        }
        idle.sort_unstable_by_key(|(last, _, _)| *last);
        let topics_to = config.max_topics - config.max_topics / 16;
        let bytes_to = config.max_history_bytes - config.max_history_bytes / 16;
        for (_, name, topic) in idle {
            if self.topic_count.load(Ordering::Relaxed) <= topics_to
                && self.history_bytes.load(Ordering::Relaxed) <= bytes_to
            {
                break;
            }
            self.remove(&name, &topic, true);
        }
        let (topics, bytes) = (
            self.topic_count.load(Ordering::Relaxed),
            self.history_bytes.load(Ordering::Relaxed),
        );
        let failed = topics > config.max_topics || bytes > config.max_history_bytes;
        *eviction = if failed {
            Eviction {
                topics_at: topics.saturating_add(config.max_topics / 16 + 1),
                bytes_at: bytes.saturating_add(config.max_history_bytes / 16 + 1),
            }
        } else {
            Eviction::default()
        };
        self.scan_failed.store(failed, Ordering::Relaxed);
    }

    /// Ready unless closed.
    pub(super) fn ready(&self) -> Result<(), HubError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(HubError::Closed);
        }
        Ok(())
    }

    /// Refuses further publishes and subscribes; open subscriptions end after what their
    /// topics hold for them.
    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let topics: Vec<Arc<Topic>> = self
            .shards
            .iter()
            .flat_map(|shard| read(shard).values().cloned().collect::<Vec<_>>())
            .collect();
        for topic in topics {
            // A publish that checked the flag before it was set has appended once this lock is
            // free; its subscribers, woken now, read it before they end.
            drop(topic.write());
            topic.wake_all();
        }
    }

    /// How many topics are kept (for tests bounding memory).
    #[cfg(test)]
    pub(super) fn topic_count(&self) -> usize {
        self.shards.iter().map(|shard| read(shard).len()).sum()
    }
}

impl Feed for Memory {
    fn settled(&self) -> u64 {
        self.seq.load(Ordering::Acquire)
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn leave(&self, topics: &[Joined], id: u64, interest: Option<&[Bytes]>) {
        for joined in topics {
            if !joined.topic.remove_waiter(id, interest) {
                self.remove(&joined.name, &joined.topic, false);
            }
        }
        // A topic left idle with its history may now be evicted, if the hub is over its bounds.
        self.evict();
    }
}

fn read(shard: &Shard) -> RwLockReadGuard<'_, HashMap<Arc<str>, Arc<Topic>>> {
    // Nothing panics while holding the lock; the map stays consistent in any case.
    shard
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write(shard: &Shard) -> RwLockWriteGuard<'_, HashMap<Arc<str>, Arc<Topic>>> {
    shard
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
