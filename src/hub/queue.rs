//! [`Queue`]: one subscriber's queue of live events, filled by its engine and drained by its
//! stream, bounded by events and bytes. A subscriber that falls behind it is marked lagged: its
//! stream ends after what is queued, and the engine stops filling it. (The Redis engine's
//! subscribers; the embedded engine's read their topics' rings.)

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

pub(super) use super::subscriber::Bounds;
use crate::engine::Output;
use crate::{CloseReason, StreamError};

/// What a queue holds: something with a size in bytes, counted against the queue's bound.
pub(super) trait Weighed {
    /// The bytes it takes on the wire.
    fn size(&self) -> usize;
}

/// One subscriber's queue.
pub(super) struct Queue<T> {
    /// Numbers the subscriber, so a topic finds its queue without a scan.
    pub(super) id: u64,
    bounds: Bounds,
    state: Mutex<State<T>>,
}

struct State<T> {
    items: VecDeque<T>,
    bytes: usize,
    lagged: bool,
    closed: bool,
    waker: Option<Waker>,
}

/// What a subscriber's queue had.
pub(super) enum Drained {
    /// Items were taken (or the taker had room for no more).
    Some,
    /// Nothing now; the waker is registered.
    Empty,
    /// Nothing left, and no more will come: the subscriber lagged.
    Lagged,
    /// Nothing left, and no more will come: the hub closed.
    Closed,
}

impl<T: Weighed + Clone> Queue<T> {
    pub(super) fn new(id: u64, bounds: Bounds) -> Self {
        Self {
            id,
            bounds,
            state: Mutex::new(State {
                items: VecDeque::new(),
                bytes: 0,
                lagged: false,
                closed: false,
                waker: None,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // Nothing panics while holding the lock; the state stays consistent in any case.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues `item`; false when the subscriber is lagged (or gone) and should be dropped from
    /// the topic. A single item larger than the byte bound is still queued when it is alone.
    pub(super) fn push(&self, item: &T) -> bool {
        let mut state = self.lock();
        if state.lagged || state.closed {
            return false;
        }
        let size = item.size();
        let full = state.items.len() >= self.bounds.events
            || (!state.items.is_empty() && state.bytes + size > self.bounds.bytes);
        if full {
            state.lagged = true;
        } else {
            state.bytes += size;
            state.items.push_back(item.clone());
        }
        if let Some(waker) = state.waker.take() {
            waker.wake();
        }
        !full
    }

    /// Marks the subscriber lagged although its queue has room: what it should have received
    /// next is gone (the Redis reader fell behind a trimmed stream). Its stream ends after what
    /// is queued, as [`CloseReason::Lagged`](crate::CloseReason::Lagged).
    #[cfg(feature = "redis")]
    pub(super) fn lag(&self) {
        let mut state = self.lock();
        state.lagged = true;
        if let Some(waker) = state.waker.take() {
            waker.wake();
        }
    }

    /// Ends the queue: its stream ends after what is queued.
    pub(super) fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        if let Some(waker) = state.waker.take() {
            waker.wake();
        }
    }

    /// Hands queued items to `take` while it returns true (it has room for more), or registers
    /// `waker` when there are none.
    pub(super) fn drain(&self, waker: &Waker, mut take: impl FnMut(T) -> bool) -> Drained {
        let mut state = self.lock();
        if state.items.is_empty() {
            if state.lagged {
                return Drained::Lagged;
            }
            if state.closed {
                return Drained::Closed;
            }
            match &mut state.waker {
                Some(known) if known.will_wake(waker) => {}
                slot => *slot = Some(waker.clone()),
            }
            return Drained::Empty;
        }
        while let Some(item) = state.items.pop_front() {
            state.bytes -= item.size();
            if !take(item) {
                break;
            }
        }
        Drained::Some
    }
}

/// The live part of a subscriber's source: hands what `queue` holds to `write` until the frame
/// is full, and ends the stream when the subscriber lagged (with
/// [`CloseReason::Lagged`]) or the hub closed.
pub(super) fn poll_live<T: Weighed + Clone>(
    queue: &Queue<T>,
    cx: &mut Context<'_>,
    out: &mut Output<'_>,
    mut write: impl FnMut(&mut Output<'_>, T),
) -> Poll<Result<(), StreamError>> {
    loop {
        if out.is_full() {
            return Poll::Pending;
        }
        let drained = queue.drain(cx.waker(), |item| {
            write(out, item);
            !out.is_full()
        });
        match drained {
            Drained::Some => {}
            Drained::Empty => return Poll::Pending,
            Drained::Lagged => {
                out.closing(CloseReason::Lagged);
                return Poll::Ready(Ok(()));
            }
            Drained::Closed => return Poll::Ready(Ok(())),
        }
    }
}
