//! The node's view of every node's subscriptions: a task that reads the hub's subscription
//! events (each node publishes its own through the shared hub) and keeps the registry the
//! subscriptions API lists, so that any node answers for all of them.
//!
//! It starts from the earliest event the hub retains, then follows live; when its stream ends
//! (the hub's bounds, a Redis outage), it resumes after the last event it read, or from the
//! earliest again. A subscription whose node died without announcing its end stays listed
//! (nothing announces it); one whose start left the history before this node began is not.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::presence::{Registry, Subscription};
use super::tag;
use crate::hub::{Hub, HubError, Subscribe};
use crate::read::EventReader;
use crate::LastEventId;

/// The first and the longest wait before subscribing again after a failure.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

/// Follows the hub's own subscription events on `topic` (those whose topic is under `prefix`)
/// into `registry` until `cancel`.
pub(super) async fn follow(
    hub: Hub,
    topic: String,
    prefix: String,
    registry: Arc<Registry>,
    cancel: CancellationToken,
) {
    let mut last: Option<LastEventId> = None;
    let mut backoff = BACKOFF.0;
    loop {
        let options = match &last {
            None => Subscribe::new().earliest(),
            Some(id) => Subscribe::new().after_kept(Some(id.clone())),
        }
        .without_gap_event()
        .filter(tag::is_subscription_event);
        let subscribed = tokio::select! {
            subscribed = hub.subscribe_with([&topic], options) => subscribed,
            () = cancel.cancelled() => return,
        };
        let mut read = false;
        let round = tokio::time::Instant::now();
        match subscribed {
            Ok(subscription) => {
                let mut reader = EventReader::new(Box::pin(subscription.into_http().into_body()));
                loop {
                    let next = tokio::select! {
                        next = reader.next_event() => next,
                        () = cancel.cancelled() => return,
                    };
                    match next {
                        Some(Ok(message)) => {
                            read = true;
                            apply(&registry, &prefix, &message.text());
                        }
                        Some(Err(_)) | None => break,
                    }
                }
                // A round that read nothing keeps the position it had.
                if let Some(id) = LastEventId::new(reader.last_event_id()) {
                    last = Some(id);
                }
            }
            Err(HubError::Closed) => return,
            Err(error @ (HubError::InvalidTopic(_) | HubError::Config(_))) => {
                // Not a passing failure: following again cannot succeed.
                tracing::error!(%error, "mercure: subscription events cannot be followed");
                return;
            }
            Err(error) => {
                tracing::warn!(%error, retry_in = ?backoff, "mercure: subscription events cannot be followed now");
            }
        }
        // A round that read something, or that stood for a while, was not a failing loop.
        if read || round.elapsed() > BACKOFF.1 {
            backoff = BACKOFF.0;
            continue;
        }
        // Failed, or ended before reading anything: wait before the next round, longer each
        // time, so that a stream that keeps ending at once does not spin.
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = cancel.cancelled() => return,
        }
        backoff = (backoff * 2).min(BACKOFF.1);
    }
}

/// Lists or unlists the subscription a document describes (its topic under `prefix`);
/// anything else is passed over.
fn apply(registry: &Registry, prefix: &str, document: &str) {
    let Ok(document) = serde_json::from_str::<Value>(document) else {
        return;
    };
    let Some(subscription) = Subscription::from_document(&document) else {
        return;
    };
    if !subscription.topic.starts_with(prefix) {
        return;
    }
    if subscription.active {
        registry.add(&subscription);
    } else {
        registry.remove(&subscription);
    }
}
