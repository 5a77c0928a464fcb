//! The life of a stream, in process and on a paused clock: the shutdown signal, the maximum age,
//! the write deadline, close reasons and the `tracing` events. (Over real TCP: `shutdown.rs`,
//! `stall.rs`, `load.rs`, `half_open.rs`.)

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Empty;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::{Layer, ServiceExt};
use tower_sse::{CloseInfo, CloseReason, Disconnect, Event, Framing, SseBody, SseLayer};

use support::{channel, text, whatwg, TestBody};

/// Every close reported to a callback, in order.
#[derive(Clone, Default)]
struct Closes(Arc<Mutex<Vec<CloseInfo>>>);

impl Closes {
    fn recorder(&self) -> impl Fn(&CloseInfo) + Send + Sync + 'static {
        let closes = self.0.clone();
        move |info| closes.lock().expect("lock").push(info.clone())
    }

    fn reasons(&self) -> Vec<CloseReason> {
        self.0
            .lock()
            .expect("lock")
            .iter()
            .map(|i| i.reason)
            .collect()
    }

    fn all(&self) -> Vec<CloseInfo> {
        self.0.lock().expect("lock").clone()
    }
}

/// What the inner service saw: how often it was called, and each request's `Disconnect`.
#[derive(Clone, Default)]
struct Calls(Arc<Mutex<Vec<Disconnect>>>);

impl Calls {
    fn count(&self) -> usize {
        self.0.lock().expect("lock").len()
    }

    fn disconnect(&self, n: usize) -> Disconnect {
        self.0.lock().expect("lock")[n].clone()
    }
}

/// Serves `body` through `layer` to one event stream request.
async fn open(layer: SseLayer, body: TestBody, calls: &Calls) -> Response<SseBody<TestBody>> {
    open_request(layer, body, calls, support::sse_request()).await
}

async fn open_request(
    layer: SseLayer,
    body: TestBody,
    calls: &Calls,
    request: Request<Empty<Bytes>>,
) -> Response<SseBody<TestBody>> {
    let calls = calls.clone();
    let body = Mutex::new(Some(body));
    let inner = tower::service_fn(move |request: Request<Empty<Bytes>>| {
        if let Some(disconnect) = request.extensions().get::<Disconnect>() {
            calls.0.lock().expect("lock").push(disconnect.clone());
        }
        let body = body.lock().expect("lock").take().expect("one call");
        async move { Ok::<_, Infallible>(Response::new(body)) }
    });
    layer
        .layer(inner)
        .oneshot(request)
        .await
        .expect("infallible")
}

/// A response body, pinned to be read in place.
type Body = std::pin::Pin<Box<SseBody<TestBody>>>;

fn body_of(response: Response<SseBody<TestBody>>) -> Body {
    Box::pin(response.into_body())
}

/// Reads the body to its end, returning everything and when the end came.
async fn read_to_end(body: &mut Body) -> (String, Instant) {
    let mut all = Vec::new();
    while let Some(data) = support::next_data(body).await {
        all.extend_from_slice(&data);
    }
    (String::from_utf8(all).expect("UTF-8"), Instant::now())
}

fn shutdown_event() -> Event {
    Event::default()
        .event("shutdown")
        .expect("event name")
        .id("bye")
        .expect("id")
        .data("restarting")
        .retry(Duration::from_secs(7))
}

#[tokio::test(start_paused = true)]
async fn the_shutdown_signal_ends_a_stream_after_whole_events_and_the_final_event() {
    let shutdown = CancellationToken::new();
    let closes = Closes::default();
    let calls = Calls::default();
    let layer = SseLayer::new()
        .framing(Framing::Lines)
        .graceful_shutdown(shutdown.clone())
        .shutdown_event(shutdown_event())
        .on_close(closes.recorder());
    let (tx, inner) = channel();
    let mut body = body_of(open(layer, inner, &calls).await);

    tx.send(Ok(Bytes::from("{\"n\":1}\n{\"n\":2}\n{\"n\":")))
        .await
        .expect("send");
    let mut seen = String::new();
    while !seen.contains("{\"n\":2}") {
        seen.push_str(text(&support::next_data(&mut body).await.expect("events")));
    }
    shutdown.cancel();
    let (rest, _) = read_to_end(&mut body).await;
    seen.push_str(&rest);

    // The half-sent third message is not sent; the end comes right after the final event.
    assert_eq!(
        seen,
        "retry: 3000\ndata: {\"n\":1}\n\ndata: {\"n\":2}\n\n\
         event: shutdown\ndata: restarting\nid: bye\nretry: 7000\n\n"
    );
    assert!(http_body::Body::is_end_stream(&*body));
    drop(body);
    assert!(calls.disconnect(0).is_disconnected());
    let closes = closes.all();
    assert_eq!(closes.len(), 1);
    assert_eq!(closes[0].reason, CloseReason::Shutdown);
    assert_eq!(closes[0].events, 3);
    assert_eq!(closes[0].last_event_id.as_deref(), Some("bye"));
    // The inner body (and its producer) was dropped with the stream.
    assert!(tx.is_closed());
}

#[tokio::test(start_paused = true)]
async fn the_shutdown_signal_wakes_an_idle_stream() {
    let shutdown = CancellationToken::new();
    let layer = SseLayer::new()
        .graceful_shutdown(shutdown.clone())
        .no_heartbeat();
    let (_tx, inner) = channel();
    let mut body = body_of(open(layer, inner, &Calls::default()).await);
    assert_eq!(
        support::next_data(&mut body).await.as_deref(),
        Some(&b"retry: 3000\n"[..])
    );

    let cancel = shutdown.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(60)).await;
        cancel.cancel();
    });
    let start = Instant::now();
    // No shutdown event configured: the stream just ends.
    assert_eq!(support::next_data(&mut body).await, None);
    assert_eq!(start.elapsed(), Duration::from_secs(60));
}

#[tokio::test(start_paused = true)]
async fn requests_after_the_signal_get_the_final_event_without_reaching_the_inner_service() {
    let shutdown = CancellationToken::new();
    let closes = Closes::default();
    let calls = Calls::default();
    let layer = SseLayer::new()
        .graceful_shutdown(shutdown.clone())
        .shutdown_event(shutdown_event())
        .on_close(closes.recorder());
    shutdown.cancel();

    let response = open(layer.clone(), support::chunks(["never read"]), &calls).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(
        response.headers()["cache-control"],
        "no-cache, no-transform"
    );
    assert_eq!(response.headers()["vary"], "accept");
    let (all, _) = read_to_end(&mut body_of(response)).await;
    assert_eq!(
        all,
        "retry: 3000\nevent: shutdown\ndata: restarting\nid: bye\nretry: 7000\n\n"
    );
    assert_eq!(calls.count(), 0, "the inner service was not called");
    assert!(closes.all().is_empty(), "no stream was opened");

    // Requests that do not ask for an event stream are still served.
    let plain = || Request::get("/page").body(Empty::new()).expect("request");
    let response = open_request(layer.clone(), support::chunks(["page"]), &calls, plain()).await;
    assert_eq!(calls.count(), 1);
    assert_eq!(support::collect(response.into_body()).await, b"page");

    // With `always`, too: the response is converted, and ends at once with the shutdown event.
    let response = open_request(layer.always(), support::chunks(["page"]), &calls, plain()).await;
    assert_eq!(calls.count(), 2);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let (all, _) = read_to_end(&mut body_of(response)).await;
    assert!(all.ends_with("event: shutdown\ndata: restarting\nid: bye\nretry: 7000\n\n"));
    assert!(!all.contains("page"), "{all:?}");
}

#[tokio::test(start_paused = true)]
async fn a_body_dropped_after_its_last_event_keeps_its_close_reason() {
    let shutdown = CancellationToken::new();
    let closes = Closes::default();
    let disconnects = Closes::default();
    let layer = SseLayer::new()
        .graceful_shutdown(shutdown.clone())
        .shutdown_event(shutdown_event())
        .on_close(closes.recorder())
        .on_disconnect(disconnects.recorder());
    let (_tx, inner) = channel();
    let mut body = body_of(open(layer, inner, &Calls::default()).await);
    support::next_data(&mut body).await.expect("the retry hint");
    shutdown.cancel();
    let last = support::next_data(&mut body)
        .await
        .expect("the shutdown event");
    assert!(text(&last).starts_with("event: shutdown\n"));
    // The connection drops the body before asking for its end.
    drop(body);
    assert_eq!(closes.reasons(), [CloseReason::Shutdown]);
    assert!(disconnects.all().is_empty());
}

/// Sends NDJSON messages cut in three pieces each, 2 ms apart, forever.
fn slow_cut_messages() -> (TestBody, tokio::task::JoinHandle<()>) {
    let (tx, inner) = channel();
    let producer = tokio::spawn(async move {
        for n in 0u64.. {
            for piece in ["{\"n\":".to_owned(), n.to_string(), "}\n".to_owned()] {
                if tx.send(Ok(Bytes::from(piece))).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    });
    (inner, producer)
}

#[tokio::test(start_paused = true)]
async fn max_age_ends_streams_within_the_jitter_window_after_a_whole_event() {
    let age = Duration::from_secs(10);
    let closes = Closes::default();
    let layer = SseLayer::new()
        .framing(Framing::Lines)
        .max_age(age)
        .on_close(closes.recorder());
    let mut streams = Vec::new();
    for _ in 0..40 {
        let layer = layer.clone();
        streams.push(tokio::spawn(async move {
            let (inner, producer) = slow_cut_messages();
            let opened = Instant::now();
            let mut body = body_of(open(layer, inner, &Calls::default()).await);
            let (all, ended) = read_to_end(&mut body).await;
            producer.abort();
            (all, ended - opened)
        }));
    }
    let mut lifetimes = Vec::new();
    for stream in streams {
        let (all, lifetime) = stream.await.expect("stream task");
        // Timers have millisecond resolution.
        assert!(
            lifetime >= age * 8 / 10 && lifetime <= age + Duration::from_millis(1),
            "{lifetime:?}"
        );
        lifetimes.push(lifetime);
        // Never mid-event: the reference parser reads every message whole and in order.
        assert!(all.ends_with("\n\n"), "{:?}", &all[all.len() - 20..]);
        let parsed = whatwg::parse(all.as_bytes());
        assert!(parsed.events.len() > 1000);
        for (n, event) in parsed.events.iter().enumerate() {
            assert_eq!(event.data, format!("{{\"n\":{n}}}"));
        }
    }
    lifetimes.sort();
    lifetimes.dedup();
    assert!(
        lifetimes.len() > 30,
        "jitter spreads the ends: {lifetimes:?}"
    );
    assert_eq!(closes.reasons(), vec![CloseReason::MaxAge; 40]);
}

#[tokio::test(start_paused = true)]
async fn max_age_ends_an_idle_stream_without_heartbeats() {
    let age = Duration::from_secs(100);
    let closes = Closes::default();
    let layer = SseLayer::new()
        .no_heartbeat()
        .max_age(age)
        .on_close(closes.recorder());
    let (_tx, inner) = channel();
    let opened = Instant::now();
    let mut body = body_of(open(layer, inner, &Calls::default()).await);
    let (all, ended) = read_to_end(&mut body).await;
    assert_eq!(all, "retry: 3000\n");
    let lifetime = ended - opened;
    assert!(lifetime >= age * 8 / 10 && lifetime <= age, "{lifetime:?}");
    assert_eq!(closes.reasons(), [CloseReason::MaxAge]);
}

#[tokio::test(start_paused = true)]
async fn heartbeats_continue_until_the_max_age() {
    let layer = SseLayer::new()
        .heartbeat(Duration::from_secs(1))
        .max_age(Duration::from_secs(10));
    let (_tx, inner) = channel();
    let opened = Instant::now();
    let mut body = body_of(open(layer, inner, &Calls::default()).await);
    let (all, ended) = read_to_end(&mut body).await;
    let heartbeats = all.matches(":\n").count() as u64;
    // One a second, from the first second to the end.
    assert_eq!(heartbeats, (ended - opened).as_secs(), "{all:?}");
    assert!(heartbeats >= 8);
}

#[tokio::test(start_paused = true)]
async fn a_connection_that_stops_asking_is_stalled_after_the_write_deadline() {
    let closes = Closes::default();
    let disconnects = Closes::default();
    let calls = Calls::default();
    let layer = SseLayer::new()
        .write_deadline(Duration::from_secs(5))
        .on_close(closes.recorder())
        .on_disconnect(disconnects.recorder());
    let (tx, inner) = channel();
    let mut body = body_of(open(layer, inner, &calls).await);
    tx.send(Ok(Bytes::from("a"))).await.expect("send");
    // One frame handed on (the retry hint and the first event), then the connection stops
    // asking, as it does when it cannot write.
    let first = support::next_data(&mut body).await.expect("a frame");
    assert_eq!(text(&first), "retry: 3000\ndata: a\n\n");
    let handed_on = Instant::now();

    let disconnect = calls.disconnect(0);
    tokio::time::sleep(Duration::from_millis(4999)).await;
    assert!(closes.all().is_empty());
    assert!(!disconnect.is_disconnected());
    disconnect.disconnected().await;
    assert_eq!(handed_on.elapsed(), Duration::from_secs(5));

    let closes = closes.all();
    assert_eq!(closes.len(), 1);
    assert_eq!(closes[0].reason, CloseReason::Stalled);
    assert_eq!(closes[0].events, 1);
    assert_eq!(closes[0].bytes, first.len() as u64);
    assert_eq!(disconnects.reasons(), [CloseReason::Stalled]);

    // The connection asks again: the stream ends at once, and nothing more is reported.
    tx.send(Ok(Bytes::from("b"))).await.expect("send");
    assert_eq!(support::next_data(&mut body).await, None);
    drop(body);
    assert_eq!(closes.len(), 1);
    assert_eq!(disconnects.reasons(), [CloseReason::Stalled]);
}

#[tokio::test(start_paused = true)]
async fn a_connection_that_keeps_asking_is_never_stalled() {
    let closes = Closes::default();
    let layer = SseLayer::new()
        .heartbeat(Duration::from_millis(300))
        .write_deadline(Duration::from_millis(100))
        .max_age(Duration::from_secs(300))
        .on_close(closes.recorder());
    let (tx, inner) = channel();
    tokio::spawn(async move {
        // Events now and then, with long silences: heartbeats fill them.
        for n in 0u64.. {
            tokio::time::sleep(Duration::from_millis(2000 + n % 10 * 37)).await;
            if tx.send(Ok(Bytes::from(format!("{n}")))).await.is_err() {
                return;
            }
        }
    });
    let mut body = body_of(open(layer, inner, &Calls::default()).await);
    let (all, _) = read_to_end(&mut body).await;
    assert_eq!(closes.reasons(), [CloseReason::MaxAge]);
    assert!(all.matches(":\n").count() > 500);
    assert!(all.contains("data: 99\n\n"));
}

#[tokio::test(start_paused = true)]
async fn every_stream_reports_one_close_with_its_reason() {
    let closes = Closes::default();
    let disconnects = Closes::default();
    let layer = SseLayer::new()
        .on_close(closes.recorder())
        .on_disconnect(disconnects.recorder());
    let calls = Calls::default();

    // Completed: the inner body ended.
    let body = support::chunks(["a", "b"]);
    let (all, _) = read_to_end(&mut body_of(open(layer.clone(), body, &calls).await)).await;
    assert_eq!(all, "retry: 3000\ndata: a\n\ndata: b\n\n");

    // Inner error: the stream ends with an error event.
    let (tx, inner) = channel();
    tx.send(Ok(Bytes::from("x"))).await.expect("send");
    tx.send(Err("upstream broke".into())).await.expect("send");
    let (all, _) = read_to_end(&mut body_of(open(layer.clone(), inner, &calls).await)).await;
    assert!(
        all.ends_with("event: error\ndata: stream failed\n\n"),
        "{all:?}"
    );

    // Client gone: the body dropped after the connection read from it.
    let (_tx, inner) = channel();
    let mut body = body_of(open(layer.clone(), inner, &calls).await);
    support::next_data(&mut body).await.expect("the retry hint");
    drop(body);

    // Never read (a HEAD response): nothing to report.
    let (_tx, inner) = channel();
    drop(open(layer.clone(), inner, &calls).await);

    assert_eq!(
        closes.reasons(),
        [
            CloseReason::Completed,
            CloseReason::InnerError,
            CloseReason::ClientGone
        ]
    );
    let all = closes.all();
    assert_eq!((all[0].events, all[1].events), (2, 2));
    assert_eq!(disconnects.reasons(), [CloseReason::ClientGone]);
    assert!((0..4).all(|n| calls.disconnect(n).is_disconnected()));
}

mod tracing_events {
    use super::*;
    use std::fmt::Write;
    use tracing::field::Field;
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Metadata, Subscriber};

    /// Records every event as `LEVEL message key=value ...`.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<String>>>);

    impl Subscriber for Capture {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &Attributes<'_>) -> Id {
            Id::from_u64(1)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, event: &tracing::Event<'_>) {
            let mut line = event.metadata().level().to_string();
            event.record(&mut |field: &Field, value: &dyn std::fmt::Debug| {
                let _ = write!(line, " {}={value:?}", field.name());
            });
            self.0.lock().expect("lock").push(line);
        }
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }

    // A current-thread runtime: the scoped subscriber sees the watchdog task too.
    #[tokio::test(start_paused = true)]
    async fn open_and_close_are_traced_with_their_details() {
        let capture = Capture::default();
        let _guard = tracing::subscriber::set_default(capture.clone());
        let layer = SseLayer::new().write_deadline(Duration::from_secs(1));

        let body = support::chunks(["a"]);
        let mut body = body_of(open(layer.clone(), body, &Calls::default()).await);
        read_to_end(&mut body).await;

        let (tx, inner) = channel();
        tx.send(Ok(Bytes::from("x"))).await.expect("send");
        tx.send(Err("upstream broke".into())).await.expect("send");
        read_to_end(&mut body_of(
            open(layer.clone(), inner, &Calls::default()).await,
        ))
        .await;

        let (_tx, inner) = channel();
        let mut stalled = body_of(open(layer, inner, &Calls::default()).await);
        support::next_data(&mut stalled)
            .await
            .expect("the retry hint");
        tokio::time::sleep(Duration::from_secs(2)).await;

        let lines = capture.0.lock().expect("lock").clone();
        let expected = [
            "DEBUG message=event stream opened",
            "DEBUG message=event stream closed reason=Completed duration=0ns events=1 bytes=21 last_event_id=\"\"",
            "DEBUG message=event stream opened",
            "WARN message=event stream failed error=the inner body failed: upstream broke",
            "DEBUG message=event stream closed reason=InnerError duration=0ns events=2 bytes=55 last_event_id=\"\"",
            "DEBUG message=event stream opened",
            "INFO message=event stream closed reason=Stalled duration=1s events=0 bytes=12 last_event_id=\"\"",
        ];
        assert_eq!(lines, expected);
    }
}
