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

/// Follows the subscription events of `topic` (those under `prefix`) into `registry` until
/// `cancel`.
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
        let prefix = prefix.clone();
        let options = match &last {
            None => Subscribe::new().earliest(),
            Some(id) => Subscribe::new().after_kept(Some(id.clone())),
        }
        .without_gap_event()
        .filter(move |tag| tag::names_under(tag, &prefix));
        let subscribed = tokio::select! {
            subscribed = hub.subscribe_with([&topic], options) => subscribed,
            () = cancel.cancelled() => return,
        };
        let subscription = match subscribed {
            Ok(subscription) => subscription,
            Err(HubError::Closed) => return,
            Err(error) => {
                tracing::warn!(%error, retry_in = ?backoff, "mercure: subscription events cannot be followed now");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = cancel.cancelled() => return,
                }
                backoff = (backoff * 2).min(BACKOFF.1);
                continue;
            }
        };
        backoff = BACKOFF.0;
        let mut reader = EventReader::new(Box::pin(subscription.into_http().into_body()));
        loop {
            let next = tokio::select! {
                next = reader.next_event() => next,
                () = cancel.cancelled() => return,
            };
            match next {
                Some(Ok(message)) => apply(&registry, &message.text()),
                Some(Err(_)) | None => break,
            }
        }
        // A round that read nothing keeps the position it had.
        if let Some(id) = LastEventId::new(reader.last_event_id()) {
            last = Some(id);
        }
    }
}

/// Lists or unlists the subscription a document describes; anything else is passed over.
fn apply(registry: &Registry, document: &str) {
    let Ok(document) = serde_json::from_str::<Value>(document) else {
        return;
    };
    let Some(subscription) = Subscription::from_document(&document) else {
        return;
    };
    if subscription.active {
        registry.add(&subscription);
    } else {
        registry.remove(&subscription);
    }
}
