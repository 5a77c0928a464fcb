//! [`Disconnect`]: the request extension that tells the inner service its stream is over.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

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
#[derive(Clone)]
pub struct Disconnect {
    signal: Arc<Signal>,
}

/// A one-way flag with waiters: lighter than a `CancellationToken` (which also keeps a tree of
/// children), since every request through the layer carries one.
struct Signal {
    over: AtomicBool,
    waiters: Notify,
}

impl Disconnect {
    pub(crate) fn new() -> Self {
        Self {
            signal: Arc::new(Signal {
                over: AtomicBool::new(false),
                waiters: Notify::new(),
            }),
        }
    }

    /// Marks the stream over and wakes every waiter; later calls do nothing.
    pub(crate) fn fire(&self) {
        if !self.signal.over.swap(true, Ordering::AcqRel) {
            self.signal.waiters.notify_waiters();
        }
    }

    /// A guard that fires the signal when dropped.
    pub(crate) fn guard(self) -> DisconnectGuard {
        DisconnectGuard(Some(self))
    }

    /// Waits until the event stream is over.
    pub fn disconnected(&self) -> impl Future<Output = ()> + Send + '_ {
        self.signal.wait()
    }

    /// Waits until the event stream is over, owning the handle (for `'static` tasks).
    pub async fn into_disconnected(self) {
        self.signal.wait().await;
    }

    /// Whether the event stream is already over.
    pub fn is_disconnected(&self) -> bool {
        self.signal.over.load(Ordering::Acquire)
    }
}

impl Signal {
    async fn wait(&self) {
        loop {
            // A `Notified` hears every `notify_waiters` from its creation on, polled or not: made
            // before the flag is read, it cannot miss the one that sets it.
            let notified = self.waiters.notified();
            if self.over.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }
}

impl std::fmt::Debug for Disconnect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Disconnect")
            .field("disconnected", &self.is_disconnected())
            .finish()
    }
}

/// Fires its [`Disconnect`] when dropped, unless disarmed.
pub(crate) struct DisconnectGuard(Option<Disconnect>);

impl DisconnectGuard {
    /// Takes the signal back without firing it.
    pub(crate) fn disarm(mut self) -> Disconnect {
        self.0.take().unwrap_or_else(Disconnect::new)
    }
}

impl Drop for DisconnectGuard {
    fn drop(&mut self) {
        if let Some(disconnect) = self.0.take() {
            disconnect.fire();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiters_before_and_after_the_signal_all_return() {
        let disconnect = Disconnect::new();
        let early = tokio::spawn(disconnect.clone().into_disconnected());
        tokio::task::yield_now().await;
        assert!(!disconnect.is_disconnected());
        let guard = disconnect.clone().guard();
        drop(guard);
        assert!(disconnect.is_disconnected());
        assert!(early.await.is_ok());
        disconnect.disconnected().await;
        let kept = Disconnect::new();
        let guard = kept.clone().guard();
        let again = guard.disarm();
        assert!(!again.is_disconnected() && !kept.is_disconnected());
    }
}
