//! Allocations on the hot path, counted exactly by a counting global allocator: no allocation
//! per event beyond the output buffer, and none per heartbeat.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, StreamBody};
use support::alloc_counter::allocations;
use tower::{service_fn, Layer, ServiceExt};
use tower_sse::{SseBody, SseLayer};

const EVENTS: usize = 10_000;

/// An inner body over `frames` that, when `one_at_a_time`, is pending (and wakes itself) before
/// each frame, so the layer never finds two messages ready together.
struct Frames {
    frames: std::vec::IntoIter<Bytes>,
    one_at_a_time: bool,
    ready: bool,
}

impl Body for Frames {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.one_at_a_time && !std::mem::replace(&mut self.ready, false) {
            self.ready = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Poll::Ready(self.frames.next().map(|data| Ok(Frame::data(data))))
    }
}

/// The layer's body over `EVENTS` messages of 64 bytes (made before counting starts).
async fn event_stream(one_at_a_time: bool) -> SseBody<Frames> {
    let payload = Bytes::from(vec![b'x'; 64]);
    let frames: Vec<Bytes> = (0..EVENTS).map(|_| payload.clone()).collect();
    let inner = service_fn(move |_: Request<()>| {
        let body = Frames {
            frames: frames.clone().into_iter(),
            one_at_a_time,
            ready: false,
        };
        std::future::ready(Ok::<_, Infallible>(Response::new(body)))
    });
    let Ok(response) = SseLayer::new()
        .always()
        .layer(inner)
        .oneshot(Request::new(()))
        .await;
    response.into_body()
}

/// Drains the body; returns (allocations while draining, frames, bytes).
async fn drain(body: SseBody<Frames>) -> (u64, u64, usize) {
    let _alone = support::alloc_counter::alone().await;
    let mut body = Box::pin(body);
    let before = allocations();
    let (mut frames, mut bytes) = (0, 0);
    while let Some(Ok(frame)) = body.frame().await {
        if let Ok(data) = frame.into_data() {
            frames += 1;
            bytes += data.len();
        }
    }
    (allocations() - before, frames, bytes)
}

#[tokio::test(flavor = "current_thread")]
async fn ready_events_share_one_buffer_per_frame() {
    let (allocations, frames, bytes) = drain(event_stream(false).await).await;
    assert!(
        bytes >= EVENTS * 72,
        "every event was sent: {bytes} bytes in {frames} frames"
    );
    // Per frame, not per event: the first event's buffer, its growth to the frame's full size
    // when a second event is ready, and the shared handle `Bytes` makes for it.
    assert!(
        allocations <= 3 * frames + 4,
        "{allocations} allocations for {EVENTS} events in {frames} frames"
    );
    assert!(frames <= 16, "{frames} frames for {bytes} bytes");
}

#[tokio::test(flavor = "current_thread")]
async fn a_lone_event_allocates_only_its_output_buffer() {
    let (allocations, frames, bytes) = drain(event_stream(true).await).await;
    assert!(
        bytes >= EVENTS * 72,
        "every event was sent: {bytes} bytes in {frames} frames"
    );
    assert!(frames as usize >= EVENTS, "one frame per event");
    assert!(
        allocations <= EVENTS as u64 + 4,
        "{allocations} allocations for {EVENTS} events sent one at a time"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn heartbeats_allocate_nothing() {
    let inner = service_fn(|_: Request<()>| {
        let never = futures_util::stream::pending::<Result<Frame<Bytes>, Infallible>>();
        std::future::ready(Ok::<_, Infallible>(Response::new(StreamBody::new(never))))
    });
    let Ok(response) = SseLayer::new()
        .heartbeat(Duration::from_secs(1))
        .always()
        .layer(inner)
        .oneshot(Request::new(()))
        .await;
    let mut body = Box::pin(response.into_body());
    // The retry hint, then the timer is armed.
    let first = body.frame().await;
    assert!(first.is_some());
    let before = allocations();
    for _ in 0..100 {
        let frame = body.frame().await;
        let data = frame.and_then(|frame| frame.ok()?.into_data().ok());
        assert_eq!(data.as_deref(), Some(&b":\n"[..]));
    }
    let allocated = allocations() - before;
    assert!(allocated <= 2, "{allocated} allocations for 100 heartbeats");
}
