//! [`Topic`]: one topic's ring of recent events, which is at once its history (what a client
//! that comes back replays) and every subscriber's live queue (each subscriber keeps a cursor
//! in it, as `tokio::sync::broadcast` keeps one per receiver), and the wakers of its
//! subscribers.
//!
//! A publish holds the ring's lock only to append (and trim); subscribers read it under a
//! shared lock, and each topic has its own, so topics never contend. Wakers are taken under a
//! shared lock and woken after it is released.
//!
//! A subscriber with an [interest](super::Subscribe::interest) is woken only by the events
//! whose tag names one of its keys: a topic shared by many subscribers of distinct interests
//! (a Mercure hub's one topic, each subscriber after its own resources) costs a publish only
//! the subscribers it concerns. One that is not woken keeps its cursor behind; the ring keeps,
//! for each key of interest, the retained events that name it (read straight from there, not
//! one by one among everyone else's) and the last one trimmed, so that such a subscriber moves
//! past a trim of events it never wanted, and ends as lagged at the trim of one it did.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::task::Waker;

use crate::source::EncodedEvent;
use atomic_waker::AtomicWaker;
use bytes::Bytes;

/// One published event, encoded once (its id line included); subscribers share its bytes.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    /// Its place in the hub's order: increasing within a topic, and comparable across topics.
    pub(super) key: u64,
    /// The whole event on the wire, with its id.
    pub(super) event: EncodedEvent,
    /// What some publishers add ([`Publish`](super::Publish)'s options); boxed, so that the
    /// entry of a plain event stays small in every ring.
    marks: Option<Box<Marks>>,
    /// The bytes of every event of the topic up to and including this one: how far apart two
    /// entries are, in bytes.
    end: u64,
}

/// What a publisher's options added to an entry.
#[derive(Debug, Clone)]
struct Marks {
    /// What subscribers' filters read ([`Publish::tag`](super::Publish::tag)); never sent.
    tag: Bytes,
    /// The event's id is the publisher's ([`Publish::keep_id`](super::Publish::keep_id)).
    kept: bool,
    /// The engine's own id of the event, when the event's id is not (a kept id on Redis).
    position: Option<Bytes>,
}

impl Entry {
    pub(super) fn new(key: u64, event: EncodedEvent) -> Self {
        Self {
            key,
            event,
            marks: None,
            end: 0,
        }
    }

    /// The entry with `tag`, its id the publisher's if `kept`, and `position` as its engine's
    /// id if the event's id is not.
    pub(super) fn marked(mut self, tag: Bytes, kept: bool, position: Option<Bytes>) -> Self {
        self.marks = (!tag.is_empty() || kept || position.is_some()).then(|| {
            Box::new(Marks {
                tag,
                kept,
                position,
            })
        });
        self
    }

    /// What subscribers' filters read (empty without a tag).
    pub(super) fn tag(&self) -> &[u8] {
        self.marks.as_ref().map_or(&[], |marks| &marks.tag)
    }

    /// Its tag, if it has one (shared, not copied).
    #[cfg(feature = "redis")]
    pub(super) fn tag_bytes(&self) -> Option<Bytes> {
        self.marks
            .as_ref()
            .map(|marks| marks.tag.clone())
            .filter(|tag| !tag.is_empty())
    }

    /// Whether its id is the one its publisher kept.
    pub(super) fn is_kept(&self) -> bool {
        self.marks.as_ref().is_some_and(|marks| marks.kept)
    }

    /// The engine's own id of the event, when the event's id is not.
    pub(super) fn position(&self) -> Option<&Bytes> {
        self.marks
            .as_ref()
            .and_then(|marks| marks.position.as_ref())
    }

    /// Its size on the wire.
    pub(super) fn len(&self) -> usize {
        self.event.as_bytes().len()
    }

    /// What it holds in memory besides its bookkeeping: its bytes on the wire, its tag and its
    /// engine's id (what a history's byte bound counts).
    pub(super) fn weight(&self) -> usize {
        self.len() + self.tag().len() + self.position().map_or(0, Bytes::len)
    }
}

/// The bounds of one topic's ring.
#[derive(Debug, Clone, Copy)]
pub(super) struct RingBounds {
    pub(super) events: usize,
    pub(super) bytes: usize,
}

/// One topic.
pub(super) struct Topic {
    ring: RwLock<Ring>,
    waiters: RwLock<Waiters>,
}

/// The wakers of a topic's subscribers, by subscriber number.
#[derive(Default)]
struct Waiters {
    /// Woken by every event.
    all: HashMap<u64, Arc<AtomicWaker>>,
    /// Woken only by the events whose tag names the key ([`names_any`]).
    by_key: HashMap<Bytes, HashMap<u64, Arc<AtomicWaker>>>,
}

impl Waiters {
    fn is_empty(&self) -> bool {
        self.all.is_empty() && self.by_key.is_empty()
    }
}

/// Whether `tag` names one of `keys`: one of its lines (split at line feeds) is a key.
pub(super) fn names_any(tag: &[u8], keys: &[Bytes]) -> bool {
    tag.split(|&byte| byte == b'\n')
        .any(|line| keys.iter().any(|key| key == line))
}

/// A topic's ring, locked while a subscriber joins it.
pub(super) enum LockedRing<'a> {
    Shared(RwLockReadGuard<'a, Ring>),
    Exclusive(RwLockWriteGuard<'a, Ring>),
}

impl std::ops::Deref for LockedRing<'_> {
    type Target = Ring;

    fn deref(&self) -> &Ring {
        match self {
            Self::Shared(ring) => ring,
            Self::Exclusive(ring) => ring,
        }
    }
}

/// A key some subscribers of a ring are interested in.
#[derive(Debug)]
struct Interest {
    subscribers: usize,
    /// The key of the last event trimmed that named it (or, for a key registered since,
    /// the ring's `trimmed` then: what was trimmed before is not known).
    lost: u64,
    /// The ring's `last` when the key was registered: every retained event after it that
    /// names the key is in `named`.
    since: u64,
    /// The keys of the retained events after `since` that name it, in order: what its
    /// subscribers read, without passing over everyone else's events one by one.
    named: VecDeque<u64>,
}

/// A topic's retained events, in key order.
pub(super) struct Ring {
    entries: VecDeque<Entry>,
    /// The weight of `entries` ([`Entry::weight`]).
    bytes: usize,
    /// Every event after this key that the topic ever had is in `entries`: the key of the last
    /// one removed (or of the last the hub may have forgotten, for a topic made anew).
    pub(super) trimmed: u64,
    /// The key of the last event published here (or `trimmed`, before any).
    pub(super) last: u64,
    /// The bytes of every event ever appended.
    total: u64,
    /// Taken out of the hub's map: a publisher or subscriber holding it looks it up again.
    pub(super) removed: bool,
    /// The keys its subscribers are interested in.
    interest: HashMap<Bytes, Interest>,
}

/// A subscriber's unread events in one ring: how many, and how many bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Backlog {
    pub(super) events: usize,
    pub(super) bytes: u64,
}

impl Topic {
    /// A topic with nothing retained: the hub may have forgotten events up to `forgotten`.
    pub(super) fn new(forgotten: u64) -> Self {
        Self {
            ring: RwLock::new(Ring {
                entries: VecDeque::new(),
                bytes: 0,
                trimmed: forgotten,
                last: forgotten,
                total: 0,
                removed: false,
                interest: HashMap::new(),
            }),
            waiters: RwLock::new(Waiters::default()),
        }
    }

    pub(super) fn read(&self) -> RwLockReadGuard<'_, Ring> {
        // Nothing panics while holding the lock; the ring stays consistent in any case.
        self.ring
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(super) fn write(&self) -> RwLockWriteGuard<'_, Ring> {
        self.ring
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn lock_waiters(&self) -> RwLockWriteGuard<'_, Waiters> {
        self.waiters
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn read_waiters(&self) -> RwLockReadGuard<'_, Waiters> {
        self.waiters
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers the waker of the subscriber numbered `id` under the ring's lock, unless the
    /// topic was removed (`None`: look it up again): woken by every event, or, with an
    /// `interest`, by those that name one of its keys. The ring, still locked: shared, or
    /// exclusive for an interest (which the ring's index counts from here).
    pub(super) fn join(
        &self,
        id: u64,
        waiter: Arc<AtomicWaker>,
        interest: Option<&[Bytes]>,
    ) -> Option<LockedRing<'_>> {
        // An empty interest wants nothing, but must be woken at a close all the same.
        let Some(keys) = interest.filter(|keys| !keys.is_empty()) else {
            let ring = self.read();
            if ring.removed {
                return None;
            }
            self.lock_waiters().all.insert(id, waiter);
            return Some(LockedRing::Shared(ring));
        };
        let mut ring = self.write();
        if ring.removed {
            return None;
        }
        let mut waiters = self.lock_waiters();
        let (trimmed, last) = (ring.trimmed, ring.last);
        for key in keys {
            ring.interest
                .entry(key.clone())
                .or_insert(Interest {
                    subscribers: 0,
                    lost: trimmed,
                    since: last,
                    named: VecDeque::new(),
                })
                .subscribers += 1;
            waiters
                .by_key
                .entry(key.clone())
                .or_default()
                .insert(id, waiter.clone());
        }
        drop(waiters);
        Some(LockedRing::Exclusive(ring))
    }

    /// Removes the subscriber numbered `id`, registered with `interest`; whether any
    /// subscriber is left.
    pub(super) fn remove_waiter(&self, id: u64, interest: Option<&[Bytes]>) -> bool {
        let Some(keys) = interest.filter(|keys| !keys.is_empty()) else {
            let mut waiters = self.lock_waiters();
            waiters.all.remove(&id);
            return !waiters.is_empty();
        };
        let mut ring = self.write();
        let mut waiters = self.lock_waiters();
        for key in keys {
            if let Some(interest) = ring.interest.get_mut(key) {
                interest.subscribers -= 1;
                if interest.subscribers == 0 {
                    ring.interest.remove(key);
                }
            }
            if let Some(interested) = waiters.by_key.get_mut(key) {
                interested.remove(&id);
                if interested.is_empty() {
                    waiters.by_key.remove(key);
                }
            }
        }
        !waiters.is_empty()
    }

    /// Whether the topic has subscribers.
    pub(super) fn has_waiters(&self) -> bool {
        !self.read_waiters().is_empty()
    }

    /// Wakes every subscriber waiting for an event (the hub closes, the ring was cut).
    pub(super) fn wake_all(&self) {
        self.wake(|waiters, wakers| {
            wakers.reserve(waiters.all.len());
            wakers.extend(waiters.all.values().filter_map(|waiter| waiter.take()));
            for interested in waiters.by_key.values() {
                wakers.extend(interested.values().filter_map(|waiter| waiter.take()));
            }
        });
    }

    /// Wakes the subscribers of the events tagged `tags`, just appended: every subscriber
    /// without an interest, and those whose interest one of the tags names.
    pub(super) fn wake_for<'a>(&self, tags: impl Iterator<Item = &'a [u8]> + Clone) {
        self.wake(|waiters, wakers| {
            // Room for all at once: the buffer keeps it for the next publish.
            wakers.reserve(waiters.all.len());
            wakers.extend(waiters.all.values().filter_map(|waiter| waiter.take()));
            if waiters.by_key.is_empty() {
                return;
            }
            for line in tags
                .clone()
                .flat_map(|tag| tag.split(|&byte| byte == b'\n'))
            {
                if let Some(interested) = waiters.by_key.get(line) {
                    wakers.extend(interested.values().filter_map(|waiter| waiter.take()));
                }
            }
        });
    }

    /// Takes the wakers `take` picks under the shared lock and wakes them once it is
    /// released, from a buffer each thread keeps.
    fn wake(&self, take: impl Fn(&Waiters, &mut Vec<Waker>)) {
        thread_local! {
            static WAKERS: RefCell<Vec<Waker>> = const { RefCell::new(Vec::new()) };
        }
        WAKERS.with(|wakers| {
            // A waker that wakes a task publishing on this thread would find the buffer
            // borrowed: it then takes a buffer of its own.
            let Ok(mut wakers) = wakers.try_borrow_mut() else {
                let mut own = Vec::new();
                take(&self.read_waiters(), &mut own);
                own.into_iter().for_each(Waker::wake);
                return;
            };
            take(&self.read_waiters(), &mut wakers);
            // The buffer keeps its capacity: the topic's next publish wakes as many.
            for waker in wakers.drain(..) {
                waker.wake();
            }
        });
    }
}

impl Ring {
    /// Appends `entry` (its key above every key here), then trims to `bounds` (one event is
    /// kept whatever its size); the change in retained bytes.
    pub(super) fn push(&mut self, mut entry: Entry, bounds: RingBounds) -> isize {
        let before = self.bytes;
        self.total += entry.len() as u64;
        entry.end = self.total;
        self.last = entry.key;
        self.bytes += entry.weight();
        if self.entries.capacity() == 0 {
            // Room for one: many topics only ever retain their newest event (past it, the
            // ring grows as a `VecDeque` does: to four, then by doubling).
            self.entries.reserve_exact(1);
        }
        if !self.interest.is_empty() {
            for line in entry.tag().split(|&byte| byte == b'\n') {
                if let Some(interest) = self.interest.get_mut(line) {
                    // Once, however many of its lines name the key.
                    if interest.named.back() != Some(&entry.key) {
                        interest.named.push_back(entry.key);
                    }
                }
            }
        }
        self.entries.push_back(entry);
        while self.entries.len() > bounds.events
            || (self.bytes > bounds.bytes && self.entries.len() > 1)
        {
            let Some(removed) = self.entries.pop_front() else {
                break;
            };
            self.bytes -= removed.weight();
            self.trimmed = removed.key;
            if !self.interest.is_empty() {
                for line in removed.tag().split(|&byte| byte == b'\n') {
                    if let Some(interest) = self.interest.get_mut(line) {
                        interest.lost = removed.key;
                        if interest.named.front() == Some(&removed.key) {
                            interest.named.pop_front();
                        }
                    }
                }
            }
        }
        self.bytes as isize - before as isize
    }

    /// Whether a subscriber interested in `keys` (registered with this ring), whose cursor is
    /// `cursor`, lost an event it wanted to a trim: if not, it moves past what was trimmed.
    pub(super) fn lost_any(&self, keys: &[Bytes], cursor: u64) -> bool {
        keys.iter().any(|key| {
            self.interest
                .get(key)
                .map_or(self.trimmed, |interest| interest.lost)
                > cursor
        })
    }

    /// Drops everything retained and moves the ring on to `key` (above every key here): every
    /// subscriber of the topic finds its cursor trimmed and ends as lagged, one joining now
    /// starts after it. An engine does this when the events that follow are gone at their
    /// source.
    #[cfg(feature = "redis")]
    pub(super) fn cut(&mut self, key: u64) {
        self.entries.clear();
        self.bytes = 0;
        self.trimmed = key;
        self.last = key;
        for interest in self.interest.values_mut() {
            interest.lost = key;
            interest.named.clear();
        }
    }

    /// The key of the first retained event after `cursor`, up to `until`, that names one of
    /// `keys` (registered with this ring), from their index: `Some(None)` when there is none,
    /// `None` when the index does not reach back to `cursor` (the events must be read one by
    /// one up to there).
    pub(super) fn next_named(
        &self,
        keys: &[Bytes],
        cursor: u64,
        until: u64,
    ) -> Option<Option<u64>> {
        let mut next: Option<u64> = None;
        for key in keys {
            let interest = self
                .interest
                .get(key)
                .filter(|interest| interest.since <= cursor)?;
            let at = interest.named.partition_point(|&named| named <= cursor);
            if let Some(&named) = interest.named.get(at).filter(|&&named| named <= until) {
                next = Some(next.map_or(named, |next| next.min(named)));
            }
        }
        Some(next)
    }

    /// The retained entry with `key`.
    pub(super) fn get(&self, key: u64) -> Option<&Entry> {
        self.entries
            .get(self.after(key.saturating_sub(1)))
            .filter(|entry| entry.key == key)
    }

    /// Whether nothing is retained.
    pub(super) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The bytes retained.
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    /// The index of the first entry after `key`.
    fn after(&self, key: u64) -> usize {
        self.entries.partition_point(|entry| entry.key <= key)
    }

    /// What is retained after `key`: how many events, and their bytes.
    pub(super) fn backlog(&self, key: u64) -> Backlog {
        let start = self.after(key);
        match self.entries.get(start) {
            None => Backlog::default(),
            Some(first) => Backlog {
                events: self.entries.len() - start,
                bytes: self.total - (first.end - first.len() as u64),
            },
        }
    }

    /// The oldest retained entry whose publisher kept `id` as its id (an id the hub gave is
    /// never matched: it is a position, read as one).
    pub(super) fn find_kept(&self, id: &str) -> Option<&Entry> {
        self.entries
            .iter()
            .find(|entry| entry.is_kept() && entry.event.id() == Some(id))
    }

    /// The id of the newest retained event.
    pub(super) fn newest_id(&self) -> Option<&str> {
        self.entries.back().and_then(|entry| entry.event.id())
    }

    /// The entries after `key` up to `until` (inclusive), in order.
    pub(super) fn range(&self, key: u64, until: u64) -> impl Iterator<Item = &Entry> {
        self.entries
            .range(self.after(key)..)
            .take_while(move |entry| entry.key <= until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: u64, len: usize) -> Entry {
        let bytes = bytes::Bytes::from(vec![b'x'; len]);
        Entry::new(key, EncodedEvent::from_encoded(bytes, None, true))
    }

    #[test]
    fn the_ring_trims_to_its_bounds_and_measures_backlogs() {
        let topic = Topic::new(3);
        let bounds = RingBounds {
            events: 3,
            bytes: 100,
        };
        let mut ring = topic.write();
        assert_eq!(ring.trimmed, 3);
        for key in 4..=8 {
            ring.push(entry(key, 10), bounds);
        }
        assert_eq!(ring.trimmed, 5, "two trimmed for the event bound");
        assert_eq!(
            ring.backlog(5),
            Backlog {
                events: 3,
                bytes: 30
            }
        );
        assert_eq!(
            ring.backlog(7),
            Backlog {
                events: 1,
                bytes: 10
            }
        );
        assert_eq!(ring.backlog(8), Backlog::default());
        let keys: Vec<u64> = ring.range(6, 7).map(|e| e.key).collect();
        assert_eq!(keys, [7]);
        // A tag weighs in the byte bound as the event does.
        let tagged = entry(100, 10).marked(Bytes::from(vec![b'g'; 95]), false, None);
        assert_eq!(tagged.weight(), 105);
        let mut heavy = Topic::new(0);
        let mut heavy_ring = heavy.write();
        heavy_ring.push(entry(1, 10), bounds);
        heavy_ring.push(tagged, bounds);
        assert_eq!(
            (heavy_ring.trimmed, heavy_ring.bytes()),
            (1, 105),
            "over 100: one trimmed"
        );
        drop(heavy_ring);
        let _ = &mut heavy;
        // A large event is kept alone.
        ring.push(entry(9, 500), bounds);
        assert_eq!((ring.trimmed, ring.bytes()), (8, 500));
        assert_eq!(
            ring.backlog(0),
            Backlog {
                events: 1,
                bytes: 500
            }
        );
    }

    #[test]
    fn the_index_of_a_key_follows_the_ring_and_its_trims() {
        let topic = Topic::new(0);
        let bounds = RingBounds {
            events: 4,
            bytes: usize::MAX,
        };
        let keys = [Bytes::from_static(b"a")];
        topic.write().push(
            entry(1, 10).marked(Bytes::from_static(b"a"), false, None),
            bounds,
        );
        drop(topic.join(7, Arc::default(), Some(&keys)));
        let mut ring = topic.write();
        assert_eq!(
            ring.next_named(&keys, 0, 100),
            None,
            "not indexed before it"
        );
        assert_eq!(ring.next_named(&keys, 1, 100), Some(None));
        for key in 2..=100 {
            let tag = if key % 2 == 0 { &b"a\na"[..] } else { b"b" };
            ring.push(entry(key, 10).marked(Bytes::from(tag), false, None), bounds);
        }
        // Only what the ring retains, once each: memory stays bounded.
        let named: Vec<u64> = ring.interest[&keys[0]].named.iter().copied().collect();
        assert_eq!(named, [98, 100]);
        assert_eq!(ring.next_named(&keys, 97, 100), Some(Some(98)));
        assert_eq!(ring.next_named(&keys, 98, 99), Some(None));
        assert!(ring.get(98).is_some_and(|entry| entry.key == 98));
        // 96 was the last of its events trimmed: lost to a cursor before it only.
        assert!(ring.lost_any(&keys, 95));
        assert!(!ring.lost_any(&keys, 96));
        drop(ring);
        assert!(!topic.remove_waiter(7, Some(&keys)));
        assert!(topic.read().interest.is_empty());
    }
}
