//! [`SubscriberStream`]: one subscriber's stream, the hub subscription it reads, ended when its
//! token expires; what it holds (its subscriptions' announcement) is dropped with it.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use tokio::time::{Instant, Sleep};

use crate::hub::Subscription;
use crate::source::{Output, Source};
use crate::StreamError;

/// A subscriber's stream.
pub(super) struct SubscriberStream {
    subscription: Subscription,
    /// When its token expires.
    expiry: Option<Pin<Box<Sleep>>>,
    /// Dropped with the stream (its connection closed, or the stream ended).
    _held: Option<Box<dyn Send>>,
}

impl SubscriberStream {
    /// Reads `subscription` until `expires` (if it does), holding `held` until it is dropped.
    pub(super) fn new<H: Send + 'static>(
        subscription: Subscription,
        expires: Option<SystemTime>,
        held: Option<H>,
    ) -> Self {
        let expiry = expires.map(|at| {
            let left = at
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO);
            // A deadline past what the timer can hold is none.
            let deadline = Instant::now().checked_add(left);
            Box::pin(tokio::time::sleep_until(
                deadline.unwrap_or_else(far_future),
            ))
        });
        Self {
            subscription,
            expiry,
            _held: held.map(|held| Box::new(held) as Box<dyn Send>),
        }
    }
}

/// About thirty years from now: as good as never.
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365 * 30)
}

impl Source for SubscriberStream {
    fn poll_events(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut Output<'_>,
    ) -> Poll<Result<(), StreamError>> {
        let this = self.get_mut();
        if let Some(expiry) = &mut this.expiry {
            if expiry.as_mut().poll(cx).is_ready() {
                // The token no longer authorizes anything: nothing more is sent.
                return Poll::Ready(Ok(()));
            }
        }
        Pin::new(&mut this.subscription).poll_events(cx, out)
    }
}
