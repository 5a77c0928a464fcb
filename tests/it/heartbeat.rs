//! The preamble, heartbeats on idle streams (with paused tokio time), and coalescing.

use std::convert::Infallible;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use support::{channel, BoxError, TestBody};
use tokio::sync::mpsc::Sender;
use tokio::time::Instant;
use tower::{service_fn, Layer, ServiceExt};
use tower_sse::{SseBody, SseLayer};

type Stream = Pin<Box<SseBody<TestBody>>>;

/// Opens a stream through `layer` over a channel-fed inner body.
async fn open(layer: SseLayer) -> (Sender<Result<Bytes, BoxError>>, Stream) {
    let (tx, body) = channel();
    (tx, open_with(layer, body).await)
}

async fn open_with(layer: SseLayer, body: TestBody) -> Stream {
    let mut body = Some(body);
    let inner = service_fn(move |_: Request<()>| {
        let body = body.take().expect("one call");
        async move { Ok::<_, Infallible>(Response::new(body)) }
    });
    let response = layer
        .always()
        .layer(inner)
        .oneshot(Request::new(()))
        .await
        .expect("infallible");
    Box::pin(response.into_body())
}

/// The next frame's text if one comes within `limit` (time auto-advances while paused).
async fn next(body: &mut Stream, limit: Duration) -> Option<String> {
    match tokio::time::timeout(limit, support::next_data(body)).await {
        Ok(Some(data)) => Some(String::from_utf8(data.to_vec()).expect("utf-8")),
        Ok(None) => Some("<end>".into()),
        Err(_) => None,
    }
}

const SECOND: Duration = Duration::from_secs(1);

#[tokio::test(start_paused = true)]
async fn preamble_goes_out_at_once_before_any_message() {
    let (_tx, mut body) = open(SseLayer::new()).await;
    let start = Instant::now();
    assert_eq!(
        next(&mut body, SECOND).await.as_deref(),
        Some("retry: 3000\n")
    );
    assert_eq!(start.elapsed(), Duration::ZERO);
    let (_tx, mut body) = open(SseLayer::new().no_retry().heartbeat_comment("hi")).await;
    assert_eq!(next(&mut body, SECOND).await.as_deref(), Some(": hi\n"));
}

#[tokio::test(start_paused = true)]
async fn heartbeat_after_each_idle_interval_and_not_before() {
    let (_tx, mut body) = open(SseLayer::new()).await;
    let start = Instant::now();
    next(&mut body, SECOND).await;
    for n in 1..=3u32 {
        assert_eq!(next(&mut body, Duration::from_millis(14_999)).await, None);
        assert_eq!(next(&mut body, SECOND).await.as_deref(), Some(":\n"));
        assert_eq!(start.elapsed(), 15 * SECOND * n);
    }
}

#[tokio::test(start_paused = true)]
async fn every_write_resets_the_interval_and_no_burst_follows_a_busy_period() {
    let (tx, mut body) = open(SseLayer::new().heartbeat(Duration::from_secs(5))).await;
    let start = Instant::now();
    next(&mut body, SECOND).await;
    // Busy for a minute: an event every 2 s, so no heartbeat is ever due.
    for n in 0..30 {
        tokio::time::sleep(2 * SECOND).await;
        tx.send(Ok(Bytes::from(format!("{n}"))))
            .await
            .expect("send");
        assert_eq!(
            next(&mut body, SECOND).await,
            Some(format!("data: {n}\n\n"))
        );
    }
    let last_event = start.elapsed();
    assert_eq!(last_event, 60 * SECOND);
    // Then idle: one heartbeat per interval, counted from the last event.
    for n in 1..=3u32 {
        assert_eq!(next(&mut body, 5 * SECOND).await.as_deref(), Some(":\n"));
        assert_eq!(start.elapsed(), last_event + 5 * SECOND * n);
    }
}

#[tokio::test(start_paused = true)]
async fn no_heartbeat_means_silence() {
    let (tx, mut body) = open(SseLayer::new().no_heartbeat()).await;
    next(&mut body, SECOND).await;
    assert_eq!(next(&mut body, Duration::from_secs(3600)).await, None);
    drop(tx);
    assert_eq!(next(&mut body, SECOND).await.as_deref(), Some("<end>"));
    let (_tx, mut body) = open(SseLayer::new().heartbeat(Duration::ZERO)).await;
    next(&mut body, SECOND).await;
    assert_eq!(next(&mut body, Duration::from_secs(3600)).await, None);
}

#[tokio::test(start_paused = true)]
async fn an_interval_too_long_for_the_clock_means_never() {
    let (_tx, mut body) = open(SseLayer::new().heartbeat(Duration::MAX)).await;
    next(&mut body, SECOND).await;
    assert_eq!(next(&mut body, Duration::from_secs(3600)).await, None);
}

/// An inner body that is always ready but never yields anything to send must not hold the
/// thread: the body yields, other tasks run, and heartbeats still go out.
#[tokio::test(flavor = "current_thread")]
async fn an_always_ready_inner_body_cannot_starve_the_runtime() {
    let empty = futures_util::stream::repeat_with(|| Ok(http_body::Frame::data(Bytes::new())));
    let mut body = open_with(
        SseLayer::new().heartbeat(Duration::from_millis(50)),
        support::from_stream(empty),
    )
    .await;
    next(&mut body, SECOND).await;
    let ticker = tokio::spawn(tokio::time::sleep(Duration::from_millis(10)));
    assert_eq!(next(&mut body, 5 * SECOND).await.as_deref(), Some(":\n"));
    assert!(ticker.is_finished(), "another task ran meanwhile");
}

#[tokio::test(start_paused = true)]
async fn a_lone_event_is_not_held_back() {
    let (tx, mut body) = open(SseLayer::new()).await;
    next(&mut body, SECOND).await;
    tokio::time::sleep(3 * SECOND).await;
    let sent = Instant::now();
    tx.send(Ok(Bytes::from("now"))).await.expect("send");
    assert_eq!(
        next(&mut body, SECOND).await.as_deref(),
        Some("data: now\n\n")
    );
    assert_eq!(sent.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn ready_events_are_coalesced_into_bounded_frames_of_whole_events() {
    // An inner body with every frame ready (a channel would yield to tokio's budget now and
    // then, which also flushes: coalescing never waits).
    let ready = support::chunks((0..1000).map(|n| format!("{n:0>200}")));
    let mut body = open_with(SseLayer::new(), ready).await;
    let mut frames = Vec::new();
    while let Some(frame) = next(&mut body, SECOND).await {
        if frame == "<end>" {
            break;
        }
        assert!(frame.ends_with("\n\n"), "a frame ends after a whole event");
        frames.push(frame);
    }
    // 1000 events of 208 bytes: about 203 KiB, so four frames of at most 64 KiB plus one event.
    assert!(frames.len() <= 5, "{} frames", frames.len());
    assert!(frames.iter().all(|frame| frame.len() <= 64 * 1024 + 208));
    let all = frames.concat();
    let parsed = support::whatwg::parse(all.as_bytes());
    assert_eq!(parsed.events.len(), 1000);
    assert_eq!(parsed.events[999].data, format!("{:0>200}", 999));
}

#[tokio::test(start_paused = true)]
async fn the_stream_ends_after_the_inner_body_and_never_mid_event() {
    let (tx, mut body) = open(SseLayer::new().no_retry()).await;
    tx.send(Ok(Bytes::from("last"))).await.expect("send");
    drop(tx);
    assert_eq!(
        next(&mut body, SECOND).await.as_deref(),
        Some(":\ndata: last\n\n")
    );
    assert_eq!(next(&mut body, SECOND).await.as_deref(), Some("<end>"));
    assert!(http_body::Body::is_end_stream(&*body));
}
