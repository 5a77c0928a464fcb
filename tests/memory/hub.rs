//! Encode once: one publish to 1 000 subscribers, each of whose streams then hands the event on,
//! costs a fixed number of allocations, none per subscriber.

use std::pin::Pin;
use std::task::{Context, Poll};

use http_body::Body;
use support::alloc_counter::allocations;
use tower_sse::hub::Hub;
use tower_sse::Event;

const SUBSCRIBERS: usize = 1_000;

/// Polls every body until it has nothing more now; returns the bytes they handed on.
fn drain<B: Body<Data = bytes::Bytes> + Unpin>(bodies: &mut [B]) -> usize {
    let waker = futures_util::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    let mut bytes = 0;
    for body in bodies {
        while let Poll::Ready(Some(Ok(frame))) = Pin::new(&mut *body).poll_frame(&mut cx) {
            bytes += frame.into_data().map_or(0, |data| data.len());
        }
    }
    bytes
}

#[tokio::test(flavor = "current_thread")]
async fn one_publish_to_a_thousand_subscribers_allocates_nothing_per_subscriber() {
    let _alone = support::alloc_counter::alone().await;
    let hub = Hub::memory();
    let mut bodies = Vec::with_capacity(SUBSCRIBERS);
    for _ in 0..SUBSCRIBERS {
        match hub.subscribe(["board"], None).await {
            Ok(subscription) => bodies.push(Box::pin(subscription.into_http().into_body())),
            Err(error) => panic!("subscribe: {error}"), // ok: test
        }
    }
    // The first event sizes every queue and timer; what follows is the steady state.
    let _ = hub.publish("board", Event::default().data("warm")).await;
    drain(&mut bodies);
    let event = Event::default().data("x".repeat(64));
    let before = allocations();
    let published = hub.publish("board", event).await;
    let handed_on = drain(&mut bodies);
    let allocated = allocations() - before;
    assert!(published.is_ok());
    assert!(
        handed_on >= SUBSCRIBERS * 64,
        "every subscriber got it: {handed_on} bytes"
    );
    println!("one publish to {SUBSCRIBERS} subscribers: {allocated} allocations");
    assert!(allocated <= 8, "{allocated} allocations");
}
