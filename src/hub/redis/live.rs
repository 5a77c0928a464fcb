//! The topics live on this node (those with subscribers here), one map per shard, each topic
//! with its ring: the readers append what Redis holds after each topic's tail, the subscribers
//! read the rings exactly as they do in memory.
//!
//! [`Node`] numbers what every reader appends, under one lock, so that keys follow the order
//! the readers hand entries on and several topics merge in that order; `settled` is published
//! after each batch.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use atomic_waker::AtomicWaker;
use bytes::Bytes;

use super::entry_id::EntryId;
use super::item::Parsed;
use crate::hub::topic::{RingBounds, Topic};
use crate::hub::HubError;

/// What every shard of a node shares.
pub(super) struct Node {
    /// The last key given; held while a batch is appended, so keys follow delivery order.
    keys: Mutex<u64>,
    /// Every ring holds all it will ever hold up to this key.
    settled: AtomicU64,
    closed: AtomicBool,
    bounds: RingBounds,
}

impl Node {
    pub(super) fn new(bounds: RingBounds) -> Self {
        Self {
            keys: Mutex::new(0),
            settled: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            bounds,
        }
    }

    pub(super) fn settled(&self) -> u64 {
        self.settled.load(Ordering::Acquire)
    }

    pub(super) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    fn keys(&self) -> MutexGuard<'_, u64> {
        // Nothing panics while holding the lock; the count stays valid in any case.
        self.keys
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Appends each entry of `batch` after its topic's tail to the topic's ring, in order (an
    /// entry at or before the tail was handed on already; a foreign one only moves the tail
    /// on), then wakes the topics' subscribers.
    pub(super) fn deliver(&self, batch: Vec<(Arc<Live>, Parsed)>) {
        if batch.is_empty() {
            return;
        }
        // Each topic appended to, with the tags of what was appended.
        let mut woken: Vec<(Arc<Topic>, Vec<Bytes>)> = Vec::new();
        {
            let mut key = self.keys();
            for (live, parsed) in batch {
                let mut tail = live.tail();
                let id = parsed.id();
                if tail.last.is_some_and(|last| id <= last) {
                    continue;
                }
                tail.last = Some(id);
                let Parsed::Item(item) = parsed else {
                    continue;
                };
                let mut ring = live.topic.write();
                if ring.removed {
                    continue;
                }
                *key += 1;
                let entry = item.into_entry(*key);
                let tag = entry.tag_bytes();
                ring.push(entry, self.bounds);
                drop(ring);
                match woken.last_mut() {
                    Some((last, tags)) if Arc::ptr_eq(last, &live.topic) => tags.extend(tag),
                    _ => woken.push((live.topic.clone(), tag.into_iter().collect())),
                }
            }
            self.settled.store(*key, Ordering::Release);
        }
        woken.sort_by_key(|(topic, _)| Arc::as_ptr(topic));
        woken.dedup_by(|later, first| {
            let same = Arc::ptr_eq(&later.0, &first.0);
            if same {
                first.1.append(&mut later.1);
            }
            same
        });
        for (topic, tags) in woken {
            topic.wake_for(tags.iter().map(|tag| &tag[..]));
        }
    }

    /// Ends every subscriber of `live` as lagged (what follows its tail is gone from Redis),
    /// and moves its tail on to `newest`: a subscriber joining now starts after it.
    pub(super) fn cut(&self, live: &Live, newest: EntryId) {
        {
            let mut key = self.keys();
            let mut tail = live.tail();
            *key += 1;
            live.topic.write().cut(*key);
            tail.last = Some(tail.last.map_or(newest, |last| last.max(newest)));
            tail.known = true;
            self.settled.store(*key, Ordering::Release);
        }
        live.topic.wake_all();
    }
}

/// A topic with subscribers on this node.
pub(super) struct Live {
    pub(super) topic: Arc<Topic>,
    /// Its stream's key.
    pub(super) key: String,
    tail: Mutex<Tail>,
}

/// Where a live topic's ring stands in its stream.
#[derive(Default)]
struct Tail {
    /// The newest entry handed on (appended, or skipped as foreign) or known to be before the
    /// ring: one at or before it is not appended again.
    last: Option<EntryId>,
    /// Whether the ring holds every entry after `last` that the stream will hold. Not yet for
    /// a topic just made live, until a subscriber has read its stream's newest id (the ring
    /// meanwhile takes every entry a reader hands on, from wherever the reader is).
    known: bool,
}

impl Live {
    fn tail(&self) -> MutexGuard<'_, Tail> {
        self.tail
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Its tail, once known: the ring holds every entry of its stream after it.
    pub(super) fn tail_id(&self) -> Option<EntryId> {
        let tail = self.tail();
        tail.last.filter(|_| tail.known)
    }

    /// Where a subscriber joining now starts, if the tail is known: after the ring's last key,
    /// which holds everything up to the returned entry id.
    pub(super) fn position(&self) -> Option<(u64, EntryId)> {
        let tail = self.tail();
        let id = tail.last.filter(|_| tail.known)?;
        Some((self.topic.read().last, id))
    }

    /// [`position`](Self::position) for a topic whose stream's newest id was `newest` after it
    /// was made live: every entry after it (or after what the ring holds, if later) is appended
    /// from now on. A tail already known stays where it is (someone settled it meanwhile, and
    /// its subscribers count on the ring holding everything after it).
    pub(super) fn settle(&self, newest: EntryId) -> (u64, EntryId) {
        let mut tail = self.tail();
        let id = match tail.last {
            Some(last) if tail.known => last,
            last => last.map_or(newest, |last| last.max(newest)),
        };
        tail.last = Some(id);
        tail.known = true;
        (self.topic.read().last, id)
    }
}

/// The topics of one shard live on this node.
#[derive(Default)]
pub(super) struct LiveTopics {
    map: RwLock<HashMap<Arc<str>, Arc<Live>>>,
}

impl LiveTopics {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Arc<str>, Arc<Live>>> {
        // Nothing panics while holding the lock; the map stays consistent in any case.
        self.map
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<Arc<str>, Arc<Live>>> {
        self.map
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The live topic named `name`.
    pub(super) fn get(&self, name: &str) -> Option<Arc<Live>> {
        self.read().get(name).cloned()
    }

    /// The live topic named `name`, with the map's copy of its name.
    pub(super) fn get_named(&self, name: &str) -> Option<(Arc<str>, Arc<Live>)> {
        let map = self.read();
        let (name, live) = map.get_key_value(name)?;
        Some((name.clone(), live.clone()))
    }

    /// Every live topic.
    pub(super) fn all(&self) -> Vec<(Arc<str>, Arc<Live>)> {
        self.read()
            .iter()
            .map(|(name, live)| (name.clone(), live.clone()))
            .collect()
    }

    /// Registers the waker of the subscriber numbered `id` (with its `interest`) on `name`
    /// (stream `key`), made live if it is not.
    pub(super) fn enter(
        &self,
        node: &Node,
        (name, key): (&Arc<str>, &str),
        id: u64,
        waiter: Arc<AtomicWaker>,
        interest: Option<&[Bytes]>,
    ) -> Result<Arc<Live>, HubError> {
        loop {
            if node.is_closed() {
                return Err(HubError::Closed);
            }
            let live = match self.get(name) {
                Some(live) => live,
                None => self
                    .write()
                    .entry(name.clone())
                    .or_insert_with(|| {
                        Arc::new(Live {
                            topic: Arc::new(Topic::new(0)),
                            key: key.to_owned(),
                            tail: Mutex::default(),
                        })
                    })
                    .clone(),
            };
            // Registered under the ring's lock: the topic is not removed meanwhile.
            if live.topic.join(id, waiter.clone(), interest).is_none() {
                continue;
            }
            return Ok(live);
        }
    }

    /// The subscriber numbered `id` leaves `topic`; a topic left without subscribers is no
    /// longer live here.
    pub(super) fn leave(
        &self,
        name: &str,
        topic: &Arc<Topic>,
        id: u64,
        interest: Option<&[Bytes]>,
    ) {
        if topic.remove_waiter(id, interest) {
            return;
        }
        let mut map = self.write();
        if !map
            .get(name)
            .is_some_and(|live| Arc::ptr_eq(&live.topic, topic))
        {
            return;
        }
        let mut ring = topic.write();
        if topic.has_waiters() {
            return;
        }
        ring.removed = true;
        drop(ring);
        map.remove(name);
    }

    /// Lets every subscriber see that the hub is closed (after what its ring holds).
    pub(super) fn close(&self) {
        for (_, live) in self.all() {
            drop(live.topic.write());
            live.topic.wake_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::redis::item::parse_entry;
    use redis::Value;

    fn entry(topic: &Arc<str>, id: &str) -> Parsed {
        let value = Value::Array(vec![
            Value::BulkString(id.into()),
            Value::Array(vec![
                Value::BulkString(b"e".to_vec()),
                Value::BulkString(format!("data: {id}\n").into_bytes()),
            ]),
        ]);
        parse_entry(topic, &value).unwrap_or_else(|| panic!("an entry")) // ok: test
    }

    fn id(text: &str) -> EntryId {
        EntryId::parse(text.as_bytes()).unwrap_or_else(|| panic!("an id")) // ok: test
    }

    #[test]
    fn a_known_tail_is_not_moved_by_a_later_settle_so_the_ring_misses_nothing() {
        let node = Node::new(RingBounds {
            events: 100,
            bytes: 1 << 20,
        });
        let live = Arc::new(Live {
            topic: Arc::new(Topic::new(0)),
            key: "k".into(),
            tail: Mutex::default(),
        });
        let topic: Arc<str> = Arc::from("t");
        // Made live: the reader hands on what it reads, before anyone knows where the ring
        // starts.
        node.deliver(vec![(live.clone(), entry(&topic, "5-0"))]);
        assert_eq!(live.position(), None);
        // The first subscriber read the newest id 10-0 after the topic was made live.
        let (cursor, seam) = live.settle(id("10-0"));
        assert_eq!(seam, id("10-0"));
        // A second read 20-0 (an entry published since), settled later: the tail stays, or
        // the first subscriber would never get 15-0 and 20-0.
        assert_eq!(live.settle(id("20-0")).1, id("10-0"));
        node.deliver(vec![
            (live.clone(), entry(&topic, "8-0")),
            (live.clone(), entry(&topic, "15-0")),
            (live.clone(), entry(&topic, "20-0")),
        ]);
        let ring = live.topic.read();
        let after: Vec<Option<&str>> = ring
            .range(cursor, u64::MAX)
            .map(|entry| entry.event.id())
            .collect();
        assert_eq!(after, [Some("15-0"), Some("20-0")]);
        drop(ring);
        // A cut moves it on: everything before is gone for its subscribers.
        node.cut(&live, id("30-0"));
        assert_eq!(live.position().map(|(_, seam)| seam), Some(id("30-0")));
        assert!(live.topic.read().trimmed > cursor);
    }
}
