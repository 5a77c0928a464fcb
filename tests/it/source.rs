//! Sources of one's own, through the public seam: a `tokio::sync::mpsc` receiver served as an
//! event stream behind the layer, with the layer's settings, to a client that asked and to one
//! that did not; the senders see the stream go when its client leaves.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use tokio::sync::mpsc;
use tower_sse::source::{self, EncodedEvent, Output, Source};
use tower_sse::{CloseReason, Event, SseLayer, StreamError};

/// Events from a channel, ending when every sender is gone.
struct Channel(mpsc::Receiver<Event>);

impl Source for Channel {
    fn poll_events(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut Output<'_>,
    ) -> Poll<Result<(), StreamError>> {
        while !out.is_full() {
            match self.0.poll_recv(cx) {
                Poll::Ready(Some(event)) => out.event(event),
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Pending
    }
}

#[tokio::test]
async fn a_channel_source_is_served_with_the_layers_settings_to_any_client() {
    let senders: Arc<Mutex<Vec<mpsc::Sender<Event>>>> = Arc::default();
    let closes = Arc::new(Mutex::new(Vec::new()));
    let (registry, recorded) = (senders.clone(), closes.clone());
    let app = Router::new()
        .route(
            "/events",
            get(move || {
                let (tx, rx) = mpsc::channel(16);
                registry.lock().expect("lock").push(tx);
                async move { source::response(Channel(rx)) }
            }),
        )
        .layer(
            SseLayer::new()
                .retry(Duration::from_millis(1234))
                .heartbeat(Duration::from_millis(50))
                .on_close(move |info| recorded.lock().expect("lock").push(info.reason)),
        );
    let addr = support::serve_axum(app).await;
    for accept in ["text/event-stream", "*/*"] {
        let (mut tcp, mut seen) =
            support::get_raw(addr, "/events", &[("accept", accept)], "retry: 1234\n").await;
        let tx = senders.lock().expect("lock").pop().expect("a sender");
        tx.send(Event::default().id("1").expect("id").data("one"))
            .await
            .expect("open");
        support::read_raw_until(&mut tcp, &mut seen, "the event and a heartbeat", |s| {
            s.contains("data: one\nid: 1\n\n") && s.contains(":\n")
        })
        .await;
        // The client leaves: the stream is dropped, and the senders see it.
        drop(tcp);
        tokio::time::timeout(Duration::from_secs(5), tx.closed())
            .await
            .expect("the receiver is dropped with the stream");
    }
    for _ in 0..100 {
        if closes.lock().expect("lock").len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        *closes.lock().expect("lock"),
        [CloseReason::ClientGone, CloseReason::ClientGone]
    );
}

#[test]
fn an_encoded_event_is_the_encoders_bytes() {
    let event = Event::default().event("e").expect("name").data("a\nb");
    let encoded = EncodedEvent::new(&event);
    assert_eq!(encoded.as_bytes(), &event.encode().into_bytes()[..]);
    assert!(encoded.dispatches());
    assert_eq!(encoded.id(), None);
    let control = EncodedEvent::from(Event::default().retry(Duration::from_secs(1)));
    assert!(!control.dispatches(), "no data: nothing to dispatch");
}
