//! The engine's seam with a second kind of source: events already encoded, from a channel,
//! handed to the layer in a response extension. They get every lifecycle behaviour of the
//! engine (preamble, coalescing, heartbeats, shutdown, close reports) without being decoded.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::BodyExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tower::{service_fn, Layer, ServiceExt};

use super::{BoxSource, Handoff, HandoffSlot, Output, Source};
use crate::source::EncodedEvent;
use crate::{CloseReason, Event, SseBody, SseLayer, StreamError};

/// Pre-encoded events and their ids, from a channel; ends when the sender is dropped.
struct Channel(Events);

impl Source for Channel {
    fn poll_events(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut Output<'_>,
    ) -> Poll<Result<(), StreamError>> {
        while !out.is_full() {
            match self.0.poll_recv(cx) {
                Poll::Ready(Some((event, id))) => {
                    let dispatches = event.ends_with(b"\n\n");
                    out.encoded(&EncodedEvent::from_encoded(event, id, dispatches));
                }
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Pending
    }
}

/// An event encoded by hand, its `id` before its `data` (the crate's encoder writes `data`
/// first): if it came out re-encoded, the order would show it.
fn encoded(id: u32) -> (Bytes, Option<Bytes>) {
    let text = format!("id: {id}\ndata: x\n\n");
    (Bytes::from(text), Some(Bytes::from(id.to_string())))
}

/// Pre-encoded events with their ids.
type Events = mpsc::UnboundedReceiver<(Bytes, Option<Bytes>)>;
/// The response of [`handing_off`].
type HandedOff = Response<SseBody<http_body_util::Empty<Bytes>>>;

/// An inner service answering with a handed-off stream from `rx`: the response's own body is
/// the stream written with default settings, and its extension carries the source.
fn handing_off(
    rx: Events,
) -> impl tower::Service<Request<()>, Response = HandedOff, Error = Infallible> {
    let mut rx = Some(rx);
    service_fn(move |_: Request<()>| {
        let events = rx.take().unwrap_or_else(|| mpsc::unbounded_channel().1);
        let source: BoxSource = Box::pin(Channel(events));
        let slot = HandoffSlot::new(source);
        let body = SseBody::handoff(
            Handoff::Waiting(slot.clone()),
            Arc::default(),
            None,
            Default::default(),
        );
        let mut response = Response::new(body);
        response.extensions_mut().insert(slot);
        crate::headers::set_event_stream_headers(response.headers_mut(), false);
        std::future::ready(Ok(response))
    })
}

async fn next_text<B: Body<Data = Bytes> + Unpin>(body: &mut B) -> String
where
    B::Error: std::fmt::Debug,
{
    match body.frame().await {
        Some(Ok(frame)) => {
            let data = frame.into_data().unwrap_or_default();
            String::from_utf8_lossy(&data).into_owned()
        }
        Some(Err(error)) => panic!("body failed: {error:?}"), // ok: test
        None => String::new(),
    }
}

#[tokio::test(start_paused = true)]
async fn encoded_events_get_the_layers_lifecycle_without_being_decoded() {
    let (tx, rx) = mpsc::unbounded_channel();
    let closes = Arc::new(Mutex::new(Vec::new()));
    let shutdown = CancellationToken::new();
    let layer = SseLayer::new()
        .retry(Duration::from_millis(1234))
        .heartbeat(Duration::from_secs(5))
        .graceful_shutdown(shutdown.clone())
        .shutdown_event(Event::default().data("bye"))
        .on_close({
            let closes = closes.clone();
            move |info| {
                if let Ok(mut closes) = closes.lock() {
                    closes.push((info.reason, info.events, info.last_event_id.clone()));
                }
            }
        });
    let service = layer.layer(handing_off(rx));
    let request = Request::get("/")
        .header("accept", "text/event-stream")
        .body(());
    let response = service
        .oneshot(request.unwrap_or_default())
        .await
        .unwrap_or_else(|never| match never {});
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = std::pin::pin!(response.into_body());
    assert!(body.is_event_stream());

    // The layer's preamble, then the events ready at once, coalesced into one frame. The bytes
    // are the source's own: an event that is not even valid to re-parse would pass unchanged.
    for id in 1..=3 {
        let _ = tx.send(encoded(id));
    }
    let _ = tx.send((Bytes::from_static(b": raw\n\n"), None));
    let first = next_text(&mut body).await;
    assert_eq!(
        first,
        "retry: 1234\nid: 1\ndata: x\n\nid: 2\ndata: x\n\nid: 3\ndata: x\n\n: raw\n\n"
    );
    // Idle: the layer's heartbeat.
    assert_eq!(next_text(&mut body).await, ":\n");
    // Shutdown: the shutdown event, then the end, reported with the source's last id.
    let _ = tx.send(encoded(4));
    assert_eq!(next_text(&mut body).await, "id: 4\ndata: x\n\n");
    // What the source has not handed on when the signal comes stays with it (the client gets
    // it again after `Last-Event-ID`).
    let _ = tx.send(encoded(5));
    shutdown.cancel();
    assert_eq!(next_text(&mut body).await, "data: bye\n\n");
    assert!(body.frame().await.is_none());
    let closes = closes.lock().map(|c| c.clone()).unwrap_or_default();
    assert_eq!(closes, [(CloseReason::Shutdown, 6, Some("4".to_owned()))]);
}

#[tokio::test(start_paused = true)]
async fn without_a_layer_the_handed_off_body_is_a_stream_of_its_own() {
    let (tx, rx) = mpsc::unbounded_channel();
    let service = handing_off(rx);
    let response = service
        .oneshot(Request::new(()))
        .await
        .unwrap_or_else(|never| match never {});
    let mut body = std::pin::pin!(response.into_body());
    let _ = tx.send(encoded(7));
    drop(tx);
    // The default settings: the 3 s retry hint, the event, the end.
    let mut text = String::new();
    while let Some(Ok(frame)) = body.frame().await {
        text.push_str(&String::from_utf8_lossy(
            &frame.into_data().unwrap_or_default(),
        ));
    }
    assert_eq!(text, "retry: 3000\nid: 7\ndata: x\n\n");
}

#[tokio::test]
async fn an_inner_service_setting_the_same_headers_is_decoded_again() {
    // Looks like an event stream of this crate's, but holds no slot: it is parsed and encoded
    // again, so a field hidden in it cannot reach the client.
    let inner = service_fn(|_: Request<()>| async {
        let mut response = Response::new(http_body_util::Full::new(Bytes::from_static(
            b"data: a\rid: 9\n\nevent: x\r\n",
        )));
        crate::headers::set_event_stream_headers(response.headers_mut(), false);
        Ok::<_, Infallible>(response)
    });
    let service = SseLayer::new().no_retry().no_heartbeat().layer(inner);
    let request = Request::get("/")
        .header("accept", "text/event-stream")
        .body(());
    let response = service
        .oneshot(request.unwrap_or_default())
        .await
        .unwrap_or_else(|never| match never {});
    let collected: Bytes = match response.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(never) => match never {},
    };
    assert_eq!(&collected[..], b":\ndata: a\nid: 9\n\n");
}

#[tokio::test]
async fn the_framing_is_read_from_the_inner_head_before_it_is_rewritten() {
    // No `Content-Type`: one frame is one message (not an event stream, which the rewritten
    // head would claim, and which would drop these unterminated lines).
    let inner = service_fn(|_: Request<()>| {
        let frames = ["one", "two"]
            .map(|text| Ok::<_, Infallible>(http_body::Frame::data(Bytes::from(text))));
        let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
        std::future::ready(Ok::<_, Infallible>(Response::new(body)))
    });
    let service = SseLayer::new()
        .always()
        .no_retry()
        .no_heartbeat()
        .layer(inner);
    let response = service
        .oneshot(Request::new(()))
        .await
        .unwrap_or_else(|never| match never {});
    let collected: Bytes = match response.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(never) => match never {},
    };
    assert_eq!(&collected[..], b":\ndata: one\n\ndata: two\n\n");
}

#[tokio::test(start_paused = true)]
async fn a_client_that_stalls_just_before_the_maximum_age_is_still_found() {
    // The age limit (8-10 s) comes before the write deadline of the last frame (7 s + 5 s): the
    // timer must still fire at the deadline, since a stalled connection never polls again.
    let closes = Arc::new(Mutex::new(Vec::new()));
    let layer = SseLayer::new()
        .heartbeat(Duration::from_secs(1))
        .max_age(Duration::from_secs(10))
        .write_deadline(Duration::from_secs(5))
        .on_close({
            let closes = closes.clone();
            move |info| {
                closes
                    .lock()
                    .map(|mut c| c.push(info.reason))
                    .unwrap_or_default()
            }
        });
    let inner = service_fn(|_: Request<()>| {
        let never = futures_util::stream::pending::<Result<http_body::Frame<Bytes>, Infallible>>();
        std::future::ready(Ok::<_, Infallible>(Response::new(
            http_body_util::StreamBody::new(never),
        )))
    });
    let response = layer
        .always()
        .layer(inner)
        .oneshot(Request::new(()))
        .await
        .unwrap_or_else(|never| match never {});
    let mut body = std::pin::pin!(response.into_body());
    let started = tokio::time::Instant::now();
    while started.elapsed() < Duration::from_millis(7_500) {
        assert!(!next_text(&mut body).await.is_empty(), "heartbeats");
    }
    // The client stops reading here.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let closes = closes.lock().map(|c| c.clone()).unwrap_or_default();
    assert_eq!(closes, [CloseReason::Stalled]);
}
