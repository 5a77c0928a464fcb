//! The life of one event stream: the [`Disconnect`] handle, and what is reported when it closes.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Wake, Waker};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::event::as_str;
use crate::layer::Config;

/// A request extension that tells the inner service when its response is over, so the producer
/// can stop its work. Every request through the layer carries one.
///
/// It resolves once the response body is dropped (the client left, or the stream ended), or when
/// the client is found stalled ([`SseLayer::write_deadline`](crate::SseLayer::write_deadline)).
/// Cloning is cheap.
///
/// ```
/// use axum::{body::Body, Extension};
/// use tower_sse::Disconnect;
///
/// async fn ticks(Extension(disconnect): Extension<Disconnect>) -> Body {
///     let (tx, rx) = tokio::sync::mpsc::channel::<Result<String, std::io::Error>>(16);
///     tokio::spawn(async move {
///         for n in 0u64.. {
///             tokio::select! {
///                 _ = disconnect.disconnected() => break, // the client left: stop working
///                 sent = tx.send(Ok(format!("tick {n}"))) => if sent.is_err() { break },
///             }
///         }
///     });
///     Body::from_stream(tokio_stream_from(rx))
/// }
/// # fn tokio_stream_from<T: Send + 'static>(mut rx: tokio::sync::mpsc::Receiver<T>)
/// #     -> impl futures_util::Stream<Item = T> + Send + 'static {
/// #     futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Disconnect {
    token: CancellationToken,
}

impl Disconnect {
    pub(crate) fn new(token: CancellationToken) -> Self {
        Self { token }
    }

    /// Waits until the event stream is over.
    pub fn disconnected(&self) -> impl Future<Output = ()> + Send + '_ {
        self.token.cancelled()
    }

    /// Waits until the event stream is over, owning the handle (for `'static` tasks).
    pub fn into_disconnected(self) -> impl Future<Output = ()> + Send + 'static {
        self.token.cancelled_owned()
    }

    /// Whether the event stream is already over.
    pub fn is_disconnected(&self) -> bool {
        self.token.is_cancelled()
    }
}

/// Why an event stream closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseReason {
    /// The inner body ended: every message was sent.
    Completed,
    /// The response body was dropped before the stream ended: the client went away, or its
    /// connection failed (reset, or aborted by the kernel's TCP user timeout).
    ClientGone,
    /// Events were waiting but the connection took nothing for the
    /// [write deadline](crate::SseLayer::write_deadline): the client stopped reading, or its
    /// packets no longer arrive.
    Stalled,
    /// The inner body failed, or a message could not be sent (too large, refused by the
    /// mapper): the stream ended with an `error` event.
    InnerError,
    /// The layer's [shutdown signal](crate::SseLayer::graceful_shutdown) ended the stream.
    Shutdown,
    /// The stream reached its [maximum age](crate::SseLayer::max_age).
    MaxAge,
}

impl CloseReason {
    /// Whether the client's side ended the stream ([`ClientGone`](Self::ClientGone) or
    /// [`Stalled`](Self::Stalled)), as opposed to the server's.
    pub fn is_disconnect(self) -> bool {
        matches!(self, Self::ClientGone | Self::Stalled)
    }
}

/// What [`SseLayer::on_close`](crate::SseLayer::on_close) and
/// [`SseLayer::on_disconnect`](crate::SseLayer::on_disconnect) are told about a stream that
/// closed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CloseInfo {
    /// Why the stream closed.
    pub reason: CloseReason,
    /// How long the stream was open.
    pub duration: Duration,
    /// Events handed to the connection, a final `error` or shutdown event and id-only blocks of
    /// an inner event stream included (heartbeats and the retry hint not counted).
    pub events: u64,
    /// Bytes handed to the connection, all included.
    pub bytes: u64,
    /// The last `id` sent, if any.
    pub last_event_id: Option<String>,
}

/// A callback told of closed streams.
pub(crate) type OnClose = Arc<dyn Fn(&CloseInfo) + Send + Sync>;

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
/// The watchdog is a timer the body extends to "write deadline after the last hand-on" with each
/// frame it hands on, registered with the [`Shared`] state's own waker rather than the
/// connection's: a connection that cannot write stops polling the body, so only a wake-up of
/// its own can notice. It costs no task, and no timer work beyond extending one deadline.
pub(crate) struct Tracker {
    sent: Sent,
    /// The connection started reading the body (a HEAD response's body never is).
    polled: bool,
    /// Why the stream is ending, once it knows.
    closing: Option<CloseReason>,
    shared: Arc<Shared>,
    /// The waker of the watchdog timer: set when there is a write deadline and a runtime.
    watchdog: Option<Waker>,
}

/// The part of a [`Tracker`] its watchdog sees.
struct Shared {
    opened: Instant,
    config: Arc<Config>,
    /// The span current when the response was made (the request's, under a tracing layer).
    span: tracing::Span,
    /// Resolves the request's `Disconnect` handle; cancelled early for a stalled client.
    disconnect: CancellationToken,
    reported: AtomicBool,
    /// Where a stall is reported (not inside the timer's wake-up).
    runtime: Option<tokio::runtime::Handle>,
    /// Written only when a write deadline is set.
    waiting: Mutex<Waiting>,
}

/// A frame handed on, and the connection not back for the next one: what the watchdog checks.
#[derive(Default)]
struct Waiting {
    since: Option<Instant>,
    sent: Sent,
}

impl Tracker {
    pub(crate) fn new(config: Arc<Config>, disconnect: CancellationToken) -> Self {
        let runtime = config
            .write_deadline
            .and_then(|_| tokio::runtime::Handle::try_current().ok());
        let shared = Arc::new(Shared {
            opened: Instant::now(),
            config,
            span: tracing::Span::current(),
            disconnect,
            reported: AtomicBool::new(false),
            waiting: Mutex::new(Waiting::default()),
            runtime,
        });
        let watchdog = shared
            .runtime
            .is_some()
            .then(|| Waker::from(shared.clone()));
        Self {
            sent: Sent::default(),
            polled: false,
            closing: None,
            shared,
            watchdog,
        }
    }

    /// The waker to register the watchdog timer with, if the stream has a watchdog.
    pub(crate) fn watchdog(&self) -> Option<&Waker> {
        self.watchdog.as_ref()
    }

    /// The connection asks for more: it is not stalled.
    pub(crate) fn polled(&mut self) {
        if !self.polled {
            self.polled = true;
            tracing::debug!(parent: &self.shared.span, "event stream opened");
        }
        if self.watchdog.is_some() {
            self.shared.lock_waiting().since = None;
        }
    }

    pub(crate) fn event_sent(&mut self, id: Option<Bytes>) {
        self.sent.events += 1;
        if id.is_some() {
            self.sent.last_event_id = id;
        }
    }

    /// A frame was handed to the connection at `now`.
    pub(crate) fn handed_on(&mut self, len: usize, now: Instant) {
        self.sent.bytes += len as u64;
        if self.watchdog.is_some() {
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
        let (Some(deadline), Some(runtime)) = (self.config.write_deadline, &self.runtime) else {
            return;
        };
        let waiting = self.lock_waiting();
        let Some(due) = waiting.since.and_then(|since| since.checked_add(deadline)) else {
            return;
        };
        // Decided under the lock the body's polls take: a poll either came first (and the
        // stream goes on) or sees the stream closed.
        if Instant::now() < due || !self.claim() {
            return;
        }
        let sent = waiting.sent.clone();
        drop(waiting);
        let shared = self.clone();
        runtime.spawn(async move {
            shared.announce(CloseReason::Stalled, &sent);
            // The producer stops; the body ends if the connection ever asks again.
            shared.disconnect.cancel();
        });
    }

    fn announce(&self, reason: CloseReason, sent: &Sent) {
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

/// A maximum age spread uniformly over 80–100 % of `max_age`, so that streams opened together
/// do not all end (and reconnect) together.
pub(crate) fn jittered(max_age: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    // `RandomState` is seeded randomly per thread and stepped per instance: enough spread for
    // jitter, without a random number crate.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0);
    let unit = (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64;
    Duration::try_from_secs_f64(max_age.as_secs_f64() * (0.8 + 0.2 * unit)).unwrap_or(max_age)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_spreads_over_the_last_fifth() {
        let age = Duration::from_secs(100);
        let ages: Vec<Duration> = (0..2000).map(|_| jittered(age)).collect();
        assert!(ages.iter().all(|a| *a >= age * 8 / 10 && *a <= age));
        // Uniform enough: every 2 s bucket of the 20 s window is hit.
        let mut buckets = [0u32; 10];
        for a in &ages {
            let bucket = ((a.as_secs_f64() - 80.0) / 2.0) as usize;
            buckets[bucket.min(9)] += 1;
        }
        assert!(buckets.iter().all(|&n| n > 100), "{buckets:?}");
        assert!(jittered(Duration::MAX) >= Duration::MAX / 10 * 8);
    }
}
