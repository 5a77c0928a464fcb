//! Close tracking: follows one stream from its first poll to its close, reported exactly once,
//! and the watchdog that finds a stalled client.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Wake, Waker};

use bytes::Bytes;
use tokio::time::Instant;

use crate::close::{CloseInfo, CloseReason};
use crate::config::Config;
use crate::disconnect::Disconnect;
use crate::event::as_str;
use crate::limit::Permit;
use crate::metrics::{StreamLabel, StreamMetrics};

/// What a stream was admitted with: its place under the stream limits (if any are set) and the
/// label of its metrics.
#[derive(Default)]
pub(crate) struct Admission {
    pub(crate) permit: Option<Permit>,
    pub(crate) label: StreamLabel,
}

/// What a stream has handed to the connection so far.
#[derive(Debug, Clone, Default)]
struct Sent {
    events: u64,
    bytes: u64,
    last_event_id: Option<Bytes>,
}

/// Follows one event stream from its first poll to its close, which it reports exactly once
/// (to the callbacks and as a `tracing` event), whoever sees it first: the body itself, or the
/// stall watchdog.
///
/// The watchdog is the stream's one timer: the body sets it to "write deadline after the last
/// hand-on" with each frame it hands on, and back to the next heartbeat once the connection asks
/// again and the stream is idle. With a watchdog, the timer is registered with the [`Shared`]
/// state's own waker rather than the connection's: a connection that cannot write stops polling
/// the body, so only a wake-up of its own can notice. That wake-up checks for a stall, and
/// wakes the connection for whatever else is due. It costs no task and no second timer.
pub(crate) struct Tracker {
    sent: Sent,
    /// An id written without data, which the next event carries to the client.
    pending_id: Option<Bytes>,
    /// The events already counted in the metrics.
    metered_events: u64,
    /// The connection started reading the body (a HEAD response's body never is).
    polled: bool,
    /// Why the stream is ending, once it knows.
    closing: Option<CloseReason>,
    shared: Arc<Shared>,
    /// The stream has a watchdog: a write deadline, and a runtime to run it on.
    watching: bool,
}

/// The part of a [`Tracker`] its watchdog sees.
struct Shared {
    opened: Instant,
    config: Arc<Config>,
    /// The span current when the response was made (the request's, under a tracing layer).
    span: tracing::Span,
    /// Resolves the request's `Disconnect` handle; cancelled early for a stalled client.
    disconnect: Disconnect,
    reported: AtomicBool,
    /// Written only when a write deadline is set.
    waiting: Mutex<Waiting>,
    /// The stream's place under the stream limits (boxed: most streams run without limits):
    /// given back when the close is reported, or when the stream is dropped unreported (a body
    /// never read).
    permit: Mutex<Option<Box<Permit>>>,
    /// Counted from the stream's first poll: a stream never read is never counted, and its
    /// close is reported only once it was read.
    metrics: StreamMetrics,
}

/// A frame handed on, and the connection not back for the next one: what the watchdog checks.
#[derive(Default)]
struct Waiting {
    since: Option<Instant>,
    sent: Sent,
    /// The connection's waker, woken when the timer fires for something other than a stall.
    connection: Option<Waker>,
}

impl Tracker {
    pub(crate) fn new(config: Arc<Config>, disconnect: Disconnect, admission: Admission) -> Self {
        let watching =
            config.write_deadline.is_some() && tokio::runtime::Handle::try_current().is_ok();
        let shared = Arc::new(Shared {
            opened: Instant::now(),
            config,
            span: tracing::Span::current(),
            disconnect,
            reported: AtomicBool::new(false),
            waiting: Mutex::new(Waiting::default()),
            permit: Mutex::new(admission.permit.map(Box::new)),
            metrics: StreamMetrics::new(admission.label),
        });
        Self {
            sent: Sent::default(),
            pending_id: None,
            metered_events: 0,
            polled: false,
            closing: None,
            shared,
            watching,
        }
    }

    /// The waker to register the watchdog timer with, if the stream has a watchdog (made when
    /// needed: a stream keeps no second handle on its shared state for it).
    pub(crate) fn watchdog(&self) -> Option<Waker> {
        self.watching.then(|| Waker::from(self.shared.clone()))
    }

    /// The connection asks for more (waking `waker` when something is due): it is not stalled.
    pub(crate) fn polled(&mut self, waker: &Waker) {
        if !self.polled {
            self.polled = true;
            tracing::debug!(parent: &self.shared.span, "event stream opened");
            self.shared.metrics.opened();
        }
        if self.watching {
            let mut waiting = self.shared.lock_waiting();
            waiting.since = None;
            match &mut waiting.connection {
                Some(known) if known.will_wake(waker) => {}
                slot => *slot = Some(waker.clone()),
            }
        }
    }

    /// An event was written: counted, and its id taken as the client's, when it `dispatches`
    /// (it has data). The id of one without data joins the next event's block: the client
    /// takes it with that event, unless the event has an id of its own.
    pub(crate) fn event_sent(&mut self, id: Option<Bytes>, dispatches: bool) {
        if !dispatches {
            if id.is_some() {
                self.pending_id = id;
            }
            return;
        }
        self.sent.events += 1;
        if let Some(id) = id.or_else(|| self.pending_id.take()) {
            self.sent.last_event_id = Some(id);
        }
        self.pending_id = None;
    }

    /// A frame was handed to the connection at `now`.
    pub(crate) fn handed_on(&mut self, len: usize, now: Instant) {
        self.sent.bytes += len as u64;
        self.shared
            .metrics
            .sent(self.sent.events - self.metered_events, len as u64);
        self.metered_events = self.sent.events;
        if self.watching {
            let mut waiting = self.shared.lock_waiting();
            waiting.since = Some(now);
            waiting.sent.clone_from(&self.sent);
        }
    }

    /// Whether the stream was closed from outside (the watchdog found the client stalled). After
    /// [`polled`](Self::polled), this cannot change until the next frame is handed on: the
    /// watchdog decides under the same lock.
    pub(crate) fn closed_elsewhere(&self) -> bool {
        self.shared.reported.load(Ordering::Acquire)
    }

    /// The stream is ending for `reason`; the first reason given stands.
    pub(crate) fn closing(&mut self, reason: CloseReason) {
        self.closing.get_or_insert(reason);
    }

    /// The stream is ending with an `error` event.
    pub(crate) fn failed(&mut self, error: &crate::StreamError) {
        let error = crate::error::Chain(error);
        tracing::warn!(parent: &self.shared.span, %error, "event stream failed");
        self.closing(CloseReason::InnerError);
    }

    /// The stream reached its end.
    pub(crate) fn ended(&mut self) {
        let reason = self.closing.unwrap_or(CloseReason::Completed);
        self.shared.report(reason, &self.sent);
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        if self.polled {
            // A no-op when the stream already reported its end. Dropped after its last event
            // but before its end, a closing stream keeps its reason.
            let reason = self.closing.unwrap_or(CloseReason::ClientGone);
            self.shared.report(reason, &self.sent);
        }
    }
}

impl Shared {
    fn lock_waiting(&self) -> std::sync::MutexGuard<'_, Waiting> {
        // Nothing panics while holding the lock, and its data is plain values in any case.
        self.waiting
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Claims the one report of this stream's close: true for the first caller only.
    fn claim(&self) -> bool {
        !self.reported.swap(true, Ordering::AcqRel)
    }

    /// Reports the close, once: later calls do nothing.
    fn report(&self, reason: CloseReason, sent: &Sent) {
        if self.claim() {
            self.announce(reason, sent);
        }
    }

    /// The watchdog timer fired: the client is stalled if the frame handed on last has waited
    /// the whole deadline. Runs in the timer's wake-up, so the report itself is spawned.
    fn check_stall(self: &Arc<Self>) {
        let Some(deadline) = self.config.write_deadline else {
            return;
        };
        let waiting = self.lock_waiting();
        let due = waiting.since.and_then(|since| since.checked_add(deadline));
        // Decided under the lock the body's polls take: a poll either came first (and the
        // stream goes on) or sees the stream closed.
        if !due.is_some_and(|due| Instant::now() >= due) || !self.claim() {
            // Not stalled: the timer fired for a heartbeat or the maximum age, which the body
            // handles when the connection polls it.
            if let Some(connection) = &waiting.connection {
                connection.wake_by_ref();
            }
            return;
        }
        let sent = waiting.sent.clone();
        drop(waiting);
        let shared = self.clone();
        let report = move || {
            shared.announce(CloseReason::Stalled, &sent);
            // The producer stops; the body ends if the connection ever asks again.
            shared.disconnect.fire();
        };
        // Reported on the runtime, not inside the timer's wake-up (where the driver holds its
        // lock); the timer driver runs on the runtime, so there is one, but if not, here.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(async move { report() })),
            Err(_) => report(),
        }
    }

    fn announce(&self, reason: CloseReason, sent: &Sent) {
        // Closed: its place is free before anyone hears of it.
        drop(
            self.permit
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .take(),
        );
        self.metrics.closed(reason);
        let info = CloseInfo {
            reason,
            duration: self.opened.elapsed(),
            events: sent.events,
            bytes: sent.bytes,
            last_event_id: sent
                .last_event_id
                .as_deref()
                .map(|id| as_str(id).to_owned()),
        };
        trace_close(&self.span, &info);
        if let Some(on_close) = &self.config.on_close {
            on_close(&info);
        }
        if let Some(on_disconnect) = &self.config.on_disconnect {
            if reason.is_disconnect() {
                on_disconnect(&info);
            }
        }
    }
}

/// The `tracing` event for a closed stream: `info` for a stalled client (a failed inner body
/// has its own `warn` event), `debug` otherwise.
fn trace_close(span: &tracing::Span, info: &CloseInfo) {
    let CloseInfo {
        reason,
        duration,
        events,
        bytes,
        ..
    } = info;
    let last_event_id = info.last_event_id.as_deref().unwrap_or_default();
    macro_rules! close {
        ($level:ident) => {
            tracing::$level!(
                parent: span,
                ?reason,
                ?duration,
                events,
                bytes,
                last_event_id,
                "event stream closed"
            )
        };
    }
    match reason {
        CloseReason::Stalled => close!(info),
        _ => close!(debug),
    }
}

impl Wake for Shared {
    fn wake(self: Arc<Self>) {
        self.check_stall();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.check_stall();
    }
}
