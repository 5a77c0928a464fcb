//! [`Subscriber`]: the source of one subscription's stream: its gap event if any, then what an
//! engine replayed from elsewhere (Redis's history), then the events of its topics' rings
//! after its cursors, merged in key order, live ones as they come. In memory, replay and live
//! are one read of the same rings, so the seam between them has nothing to get wrong; on Redis
//! the replay ends where the cursors start.
//!
//! It ends after whole events as [`CloseReason::Lagged`] when it falls behind: a ring trimmed
//! past one of its cursors (what it should send next is gone), or more unread events than its
//! queue bounds allow (it sends as many as they allow first; a filtered subscription is bounded
//! by its rings alone). The client comes back with its last id and resumes from the history, or
//! is told of the gap.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use atomic_waker::AtomicWaker;
use bytes::Bytes;

use super::subscription::Counted;
use super::topic::{Backlog, Entry, Ring, Topic};
use crate::engine::{Output, Source};
use crate::{CloseReason, Event, StreamError};

/// The most events, and about the most bytes, one poll takes from one ring: about one frame.
const BATCH_EVENTS: usize = 1024;
const BATCH_BYTES: usize = 64 * 1024;

/// How far a subscriber may fall behind (see [`HubBuilder::queue`](super::HubBuilder::queue)).
#[derive(Debug, Clone, Copy)]
pub(super) struct Bounds {
    pub(super) events: usize,
    pub(super) bytes: usize,
}

/// What a subscriber needs of its engine.
pub(super) trait Feed: Send + Sync {
    /// The key up to which every ring holds all it will ever hold: an event with a key at or
    /// below it is already appended, so several topics merge in key order.
    fn settled(&self) -> u64;

    /// Whether the hub is closed: the subscriber ends once it has sent what its rings hold.
    fn is_closed(&self) -> bool;

    /// The subscriber numbered `id`, joined with `interest`, leaves `topics`.
    fn leave(&self, topics: &[Joined], id: u64, interest: Option<&[Bytes]>);
}

/// How a subscriber writes an event of its `index`-th topic: as encoded, unless an engine
/// gives its subscriptions ids of their own (a Redis subscription of several topics).
pub(super) trait Stamp: Send + Sync {
    fn write(&mut self, index: usize, entry: &Entry, out: &mut Output<'_>);
}

/// Which events a subscription sends, by their tags ([`Subscribe::filter`](super::Subscribe::filter)).
pub(super) type Filter = Arc<dyn Fn(&[u8]) -> bool + Send + Sync>;

/// Which events a subscription sends, and which wake it.
#[derive(Clone, Default)]
pub(super) struct Selection {
    /// What it sends (its interest included).
    pub(super) filter: Option<Filter>,
    /// The keys an event's tag names for it to be woken by the event
    /// ([`Subscribe::interest`](super::Subscribe::interest)); every event wakes it without.
    pub(super) interest: Option<Arc<[Bytes]>>,
}

/// One topic of a subscription, and the key of the last event sent from it.
pub(super) struct Joined {
    pub(super) name: Arc<str>,
    pub(super) topic: Arc<Topic>,
    pub(super) cursor: u64,
}

/// One subscription's source.
pub(super) struct Subscriber {
    feed: Arc<dyn Feed>,
    /// Sorted by name.
    topics: Vec<Joined>,
    /// Numbers it in its topics' waiter lists.
    id: u64,
    waiter: Arc<AtomicWaker>,
    /// Boxed: few subscriptions start with one, and every subscriber would carry its room.
    gap: Option<Box<Event>>,
    /// Events an engine replayed from elsewhere, each with its topic's index: sent before the
    /// rings, whatever the bounds.
    replay: VecDeque<(usize, Entry)>,
    stamp: Option<Box<dyn Stamp>>,
    /// Sends only the events whose tags it accepts (the others are passed over).
    filter: Option<Filter>,
    /// Woken only by the events whose tags name one of these keys.
    interest: Option<Arc<[Bytes]>>,
    bounds: Bounds,
    /// The newest key when it subscribed: what it replays up to there is not held against its
    /// bounds (a client that comes back may be far behind).
    live_from: u64,
    /// Once it has fallen behind its bounds: how much more it sends before it ends.
    allowance: Option<Backlog>,
    _counted: Counted,
}

impl Subscriber {
    /// A subscriber numbered `id`, joined to `topics` with `waiter` registered in each when
    /// the newest key was `live_from`, that sends `gap` first.
    pub(super) fn new(
        feed: Arc<dyn Feed>,
        topics: Vec<Joined>,
        (id, waiter): (u64, Arc<AtomicWaker>),
        live_from: u64,
        gap: Option<Event>,
        bounds: Bounds,
        selection: Selection,
    ) -> Self {
        Self {
            feed,
            topics,
            id,
            waiter,
            gap: gap.map(Box::new),
            replay: VecDeque::new(),
            stamp: None,
            filter: selection.filter,
            interest: selection.interest,
            bounds,
            live_from,
            allowance: None,
            _counted: Counted::new(),
        }
    }

    /// Sends `replay` (in order, each event with its topic's index) before the rings, and
    /// writes every event through `stamp` (the Redis engine's).
    #[cfg(feature = "redis")]
    pub(super) fn with_replay(
        mut self,
        replay: VecDeque<(usize, Entry)>,
        stamp: Option<Box<dyn Stamp>>,
    ) -> Self {
        self.replay = replay;
        self.stamp = stamp;
        self
    }

    /// Sends what its rings hold after its cursors and up to `settled`, in key order, until
    /// `out` is full: a single topic's straight from its ring (with an interest, from the
    /// ring's index of its keys, once that reaches back to its cursor), several topics' merged
    /// from a batch of each (sent no further than the first batch that stops short reaches, so
    /// the merge never skips what a ring still holds). How many it read (sent, or passed over
    /// by its filter), or `Err` when it must end as lagged.
    fn send(&mut self, settled: u64, out: &mut Output<'_>) -> Result<usize, Lagged> {
        let bounds = self.bounds;
        let live_from = self.live_from;
        let Self {
            topics,
            allowance,
            stamp,
            filter,
            interest,
            ..
        } = self;
        let interest = interest.as_deref();
        let mut sent = 0;
        if let [joined] = topics.as_mut_slice() {
            // One topic: the whole read under one lock.
            let ring = joined.topic.read();
            pass_trimmed(&ring, interest, &mut joined.cursor)?;
            if filter.is_none() {
                note_backlog(
                    allowance,
                    bounds,
                    ring.backlog(joined.cursor.max(live_from)),
                );
            }
            if let Some(keys) = interest {
                // Its own events straight from the ring's index, once it reaches back to the
                // cursor: everyone else's are passed over at once.
                while !out.is_full() {
                    match ring.next_named(keys, joined.cursor, settled) {
                        None => break,
                        Some(None) => {
                            joined.cursor = joined.cursor.max(settled.min(ring.last));
                            return Ok(sent);
                        }
                        Some(Some(key)) => {
                            // Indexed events are retained until trimmed, which the index
                            // follows: one missing would be an event skipped.
                            let entry = ring.get(key).ok_or(Lagged)?;
                            if accepts(filter, entry) {
                                spend(allowance, bounds, live_from, entry)?;
                                write(stamp, 0, entry, out);
                            }
                            joined.cursor = key;
                            sent += 1;
                        }
                    }
                }
                if out.is_full() {
                    return Ok(sent);
                }
            }
            for entry in ring.range(joined.cursor, settled) {
                if out.is_full() {
                    break;
                }
                if accepts(filter, entry) {
                    spend(allowance, bounds, live_from, entry)?;
                    write(stamp, 0, entry, out);
                }
                joined.cursor = entry.key;
                sent += 1;
            }
            return Ok(sent);
        }
        let mut backlog = Backlog::default();
        let mut batch = Vec::new();
        let mut reach = settled;
        for (index, joined) in topics.iter_mut().enumerate() {
            let ring = joined.topic.read();
            pass_trimmed(&ring, interest, &mut joined.cursor)?;
            let unread = ring.backlog(joined.cursor.max(live_from));
            backlog.events += unread.events;
            backlog.bytes += unread.bytes;
            let (mut events, mut bytes) = (0, 0);
            for entry in ring.range(joined.cursor, settled) {
                if events == BATCH_EVENTS || bytes >= BATCH_BYTES {
                    reach = reach.min(entry.key.saturating_sub(1));
                    break;
                }
                events += 1;
                bytes += entry.len();
                batch.push((index, entry.clone()));
            }
        }
        if filter.is_none() {
            note_backlog(allowance, bounds, backlog);
        }
        batch.retain(|(_, entry)| entry.key <= reach);
        batch.sort_unstable_by_key(|(_, entry)| entry.key);
        for (index, entry) in batch {
            if out.is_full() {
                break;
            }
            if accepts(filter, &entry) {
                spend(allowance, bounds, live_from, &entry)?;
                write(stamp, index, &entry, out);
            }
            topics[index].cursor = entry.key;
            sent += 1;
        }
        Ok(sent)
    }
}

/// Checks `cursor` against what `ring` trimmed: when the event it should send next is gone,
/// it has lagged, unless it has an `interest` that none of the events trimmed past it named
/// (it was not woken for them, and moves past them).
fn pass_trimmed(ring: &Ring, interest: Option<&[Bytes]>, cursor: &mut u64) -> Result<(), Lagged> {
    if ring.trimmed <= *cursor {
        return Ok(());
    }
    match interest {
        Some(keys) if !ring.lost_any(keys, *cursor) => {
            *cursor = ring.trimmed;
            Ok(())
        }
        _ => Err(Lagged),
    }
}

/// Writes `entry` of the `index`-th topic, through `stamp` if there is one.
fn write(stamp: &mut Option<Box<dyn Stamp>>, index: usize, entry: &Entry, out: &mut Output<'_>) {
    match stamp {
        Some(stamp) => stamp.write(index, entry, out),
        None => out.encoded(&entry.event),
    }
}

/// Whether the subscription's filter, if any, lets `entry` through.
pub(super) fn accepts(filter: &Option<Filter>, entry: &Entry) -> bool {
    match filter {
        Some(filter) => filter(entry.tag()),
        None => true,
    }
}

/// The subscriber fell behind: it ends as [`CloseReason::Lagged`].
struct Lagged;

/// A subscriber whose unread events (`backlog`, its replay left out) exceed its bounds may
/// send only as many more as the bounds allow (one event always).
fn note_backlog(allowance: &mut Option<Backlog>, bounds: Bounds, backlog: Backlog) {
    let over = backlog.events > bounds.events
        || (backlog.events > 1 && backlog.bytes > bounds.bytes as u64);
    if over && allowance.is_none() {
        *allowance = Some(Backlog {
            events: bounds.events,
            bytes: bounds.bytes as u64,
        });
    }
}

/// Counts `entry` against what a subscriber that fell behind may still send (the first event
/// whatever its size; its replay, up to `live_from`, is not counted); `Err` once it is spent.
fn spend(
    allowance: &mut Option<Backlog>,
    bounds: Bounds,
    live_from: u64,
    entry: &Entry,
) -> Result<(), Lagged> {
    let Some(left) = allowance.as_mut().filter(|_| entry.key > live_from) else {
        return Ok(());
    };
    let size = entry.len() as u64;
    let first = left.events == bounds.events;
    if left.events == 0 || (!first && size > left.bytes) {
        return Err(Lagged);
    }
    left.events -= 1;
    left.bytes = left.bytes.saturating_sub(size);
    Ok(())
}

impl Source for Subscriber {
    fn poll_events(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut Output<'_>,
    ) -> Poll<Result<(), StreamError>> {
        let this = self.get_mut();
        if let Some(gap) = this.gap.take() {
            out.event(*gap);
        }
        // The replay first, whole, before anything can end the stream as lagged.
        while let Some((index, entry)) = this.replay.pop_front() {
            write(&mut this.stamp, index, &entry, out);
            if out.is_full() {
                return Poll::Pending;
            }
        }
        let (mut registered, mut closing) = (false, false);
        loop {
            if out.is_full() {
                return Poll::Pending;
            }
            let sent = match this.send(this.feed.settled(), out) {
                Ok(sent) => sent,
                Err(Lagged) => {
                    out.closing(CloseReason::Lagged);
                    return Poll::Ready(Ok(()));
                }
            };
            if sent > 0 {
                continue;
            }
            if this.allowance.is_some() {
                out.closing(CloseReason::Lagged);
                return Poll::Ready(Ok(()));
            }
            if this.feed.is_closed() {
                // A publish that got in before the close is in the rings once this reads them
                // again (it numbers and appends under the ring's lock, after checking).
                if closing {
                    return Poll::Ready(Ok(()));
                }
                closing = true;
                continue;
            }
            if registered {
                return Poll::Pending;
            }
            // Registered before looking again: a publish after that look wakes it.
            this.waiter.register(cx.waker());
            registered = true;
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.feed
            .leave(&self.topics, self.id, self.interest.as_deref());
    }
}
