//! The heap an idle event stream holds: the layer's body over an inner body that never yields,
//! opened (polled once) and waiting, against axum's `Sse` with a keep-alive over a stream that
//! never yields, both boxed once as a server holds a response body. Measured as the bytes this
//! thread holds after making and opening 1 000 of each (so one-off allocations, such as the
//! layer's configuration, do not count, nor do other tests' allocations).

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::response::sse::{Event as AxumEvent, KeepAlive, Sse};
use axum::response::IntoResponse;
use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, StreamBody};
use tower::{service_fn, Layer, ServiceExt};
use tower_sse::SseLayer;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Boxed = UnsyncBoxBody<Bytes, BoxError>;

const STREAMS: usize = 1_000;
const HEARTBEAT: Duration = Duration::from_secs(15);

/// Polls `body` once, as a connection does when it starts to write it; it must be waiting.
fn open(body: &mut Boxed) {
    let waker = futures_util::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    // The preamble (tower-sse) comes first; then the stream waits.
    while let Poll::Ready(Some(Ok(_))) = Pin::new(&mut *body).poll_frame(&mut cx) {}
    assert!(Pin::new(&mut *body).poll_frame(&mut cx).is_pending());
}

/// The bytes each of `STREAMS` bodies made by `make` holds once open.
async fn heap_per_stream<F, Fut>(make: F) -> usize
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Boxed>,
{
    // One first, so lazily made shared state (the runtime's timer wheel) is not counted.
    let mut first = make().await;
    open(&mut first);
    let before = support::alloc_counter::thread_bytes();
    let mut bodies = Vec::with_capacity(STREAMS);
    let vec_bytes = STREAMS * std::mem::size_of::<Boxed>();
    for _ in 0..STREAMS {
        let mut body = make().await;
        open(&mut body);
        bodies.push(body);
    }
    let held = support::alloc_counter::thread_bytes() - before;
    drop(bodies);
    usize::try_from(held).unwrap_or(0).saturating_sub(vec_bytes) / STREAMS
}

async fn tower_sse_stream(layer: &SseLayer) -> Boxed {
    let inner = service_fn(|_: Request<()>| {
        let never = futures_util::stream::pending::<Result<Frame<Bytes>, Infallible>>();
        std::future::ready(Ok::<_, Infallible>(Response::new(StreamBody::new(never))))
    });
    let Ok(response) = layer.clone().layer(inner).oneshot(Request::new(())).await;
    response.into_body().map_err(BoxError::from).boxed_unsync()
}

async fn axum_stream() -> Boxed {
    let never = futures_util::stream::pending::<Result<AxumEvent, Infallible>>();
    Sse::new(never)
        .keep_alive(KeepAlive::new().interval(HEARTBEAT))
        .into_response()
        .into_body()
        .map_err(BoxError::from)
        .boxed_unsync()
}

#[cfg(feature = "hub")]
async fn hub_subscriber(layer: &SseLayer, hub: &tower_sse::hub::Hub) -> Boxed {
    let inner = service_fn(|_: Request<()>| async {
        match hub.subscribe(["idle"], None).await {
            Ok(subscription) => Ok::<_, Infallible>(subscription.into_http()),
            Err(error) => panic!("{error}"), // ok: test
        }
    });
    let Ok(response) = layer.clone().layer(inner).oneshot(Request::new(())).await;
    response.into_body().map_err(BoxError::from).boxed_unsync()
}

#[cfg(feature = "hub")]
#[tokio::test(flavor = "current_thread")]
async fn an_idle_hub_subscriber_holds_little_more_heap_than_a_plain_stream() {
    let _alone = support::alloc_counter::alone().await;
    let layer = SseLayer::new().heartbeat(HEARTBEAT).always();
    let hub = tower_sse::hub::Hub::memory();
    let plain = heap_per_stream(|| tower_sse_stream(&layer)).await;
    let subscriber = heap_per_stream(|| hub_subscriber(&layer, &hub)).await;
    println!("heap per idle stream: hub subscriber {subscriber} B, plain stream {plain} B");
    assert!(
        subscriber <= plain + SUBSCRIBER_BUDGET,
        "hub subscriber {subscriber} B, plain stream {plain} B"
    );
}

/// What a hub subscriber may hold beyond a plain stream (measured: 338 B): its source (its
/// topics and cursors, its bounds, its filter) and its waker in the topic's list.
#[cfg(feature = "hub")]
const SUBSCRIBER_BUDGET: usize = 384;

#[tokio::test(flavor = "current_thread")]
async fn an_idle_stream_holds_little_more_heap_than_axums() {
    let _alone = support::alloc_counter::alone().await;
    // The defaults, with a heartbeat as axum's (the write deadline's watchdog on).
    let layer = SseLayer::new().heartbeat(HEARTBEAT).always();
    let ours = heap_per_stream(|| tower_sse_stream(&layer)).await;
    let axum = heap_per_stream(axum_stream).await;
    println!("heap per idle stream: tower-sse {ours} B, axum Sse {axum} B");
    assert!(ours <= axum + BUDGET, "tower-sse {ours} B, axum {axum} B");
}

/// What an idle stream may hold beyond axum's (measured with every feature: 720 B against
/// 192 B). Axum's is its timer and its stream, boxed once; tower-sse's adds the close tracking
/// its watchdog shares (what was sent, the connection's waker, the span, the metrics handles,
/// the place under the limits: 272 B), the body's state besides its timer, the body's own
/// handle to its boxed engine, and the `Disconnect` signal (56 B).
const BUDGET: usize = 544;
