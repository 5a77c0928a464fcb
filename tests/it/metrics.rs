//! Metrics (feature `metrics`): exact values in a recording of the facade after a known
//! sequence of opens, events, closes of every kind, a refusal, and hub activity.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Body;
use axum::extract::MatchedPath;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use futures_util::stream;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use tower::ServiceExt;
use tower_sse::SseLayer;

/// Every metric of the snapshot as `name{label=value,...}` → value.
fn snapshot(recorder: &DebuggingRecorder) -> BTreeMap<String, String> {
    let mut values = BTreeMap::new();
    for (key, _, _, value) in recorder.snapshotter().snapshot().into_vec() {
        let key = key.key();
        let mut labels: Vec<String> = key
            .labels()
            .map(|label| format!("{}={}", label.key(), label.value()))
            .collect();
        labels.sort();
        let value = match value {
            DebugValue::Counter(n) => n.to_string(),
            DebugValue::Gauge(g) => g.to_string(),
            DebugValue::Histogram(h) => format!("{h:?}"),
        };
        values.insert(format!("{}{{{}}}", key.name(), labels.join(",")), value);
    }
    values
}

fn app() -> Router {
    let finite = || async {
        let frames = ["x", "yy", "zzz"].map(Ok::<_, std::io::Error>);
        Body::from_stream(stream::iter(frames))
    };
    let idle = || async { Body::from_stream(stream::pending::<Result<Bytes, std::io::Error>>()) };
    Router::new()
        .route("/a", get(finite))
        .route("/b/{id}", get(idle))
        .route("/s", get(idle))
        .layer(
            SseLayer::new()
                .write_deadline(Duration::from_millis(50))
                .max_streams(3)
                .metrics_label("route", |request| {
                    Some(request.extensions.get::<MatchedPath>()?.as_str().to_owned())
                }),
        )
}

fn request(path: &str) -> http::Request<Body> {
    http::Request::get(path)
        .header("accept", "text/event-stream")
        .body(Body::empty())
        .expect("a request") // ok: test
}

/// The known sequence: a stream that completes (the retry hint and three events), three open
/// at once and a fourth refused, then the /b clients leave and the /s client stalls (never asks
/// again). `while_open` sees the recorder while the three are open.
async fn known_sequence(while_open: impl FnOnce()) {
    let app = app();
    let response = app.clone().oneshot(request("/a")).await.expect("response"); // ok: test
    let body = support::collect(response.into_body()).await;
    assert_eq!(body.len(), 12 + 9 + 10 + 11);
    let mut open = Vec::new();
    for path in ["/b/1", "/b/2", "/s"] {
        let response = app.clone().oneshot(request(path)).await.expect("response"); // ok: test
        let mut body = response.into_body();
        assert!(support::next_data(&mut body).await.is_some());
        open.push(body);
    }
    let refused = app
        .clone()
        .oneshot(request("/b/3"))
        .await
        .expect("response"); // ok: test
    let refused = support::collect(refused.into_body()).await;
    assert!(support::text(&refused).starts_with("retry: 1"));
    while_open();
    let stalled = open.pop();
    drop(open);
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(stalled);
}

/// Runs `test` on a current-thread runtime with `recorder` as this thread's recorder.
fn recorded(recorder: &DebuggingRecorder, test: impl std::future::Future<Output = ()>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime"); // ok: test
    metrics::with_local_recorder(recorder, || runtime.block_on(test));
}

#[test]
fn gauges_follow_open_streams_and_hub_subscribers() {
    let recorder = DebuggingRecorder::new();
    recorded(&recorder, async {
        known_sequence(|| {
            let during = snapshot(&recorder);
            assert_eq!(during["sse_streams_open{route=/b/{id}}"], "2");
            assert_eq!(during["sse_streams_open{route=/s}"], "1");
        })
        .await;
        let hub = tower_sse::hub::Hub::builder().build();
        let subscription = hub.subscribe(["news"], None).await.expect("a subscription"); // ok: test
        for n in 0..2 {
            let event = tower_sse::Event::default().data(format!("{n}"));
            hub.publish("news", event).await.expect("published"); // ok: test
        }
        drop(subscription);
    });
    // The snapshot in the middle reset the gauges (a recorder's snapshot takes the values);
    // since then, the three open streams closed and each took one off its gauge.
    let after = snapshot(&recorder);
    assert_eq!(after["sse_streams_open{route=/b/{id}}"], "-2");
    assert_eq!(after["sse_streams_open{route=/s}"], "-1");
    assert_eq!(after["sse_hub_subscribers{}"], "0");
    assert_eq!(after["sse_hub_publishes_total{}"], "2");
}

/// The known sequence, read in one snapshot at the end: exact values.
#[test]
fn counters_after_opens_events_and_closes() {
    let recorder = DebuggingRecorder::new();
    recorded(&recorder, known_sequence(|| {}));
    let after = snapshot(&recorder);
    let expected: BTreeMap<String, String> = [
        ("sse_streams_open{route=/a}", "0"),
        ("sse_streams_open{route=/b/{id}}", "0"),
        ("sse_streams_open{route=/s}", "0"),
        ("sse_streams_opened_total{route=/a}", "1"),
        ("sse_streams_opened_total{route=/b/{id}}", "2"),
        ("sse_streams_opened_total{route=/s}", "1"),
        ("sse_events_sent_total{route=/a}", "3"),
        ("sse_events_sent_total{route=/b/{id}}", "0"),
        ("sse_events_sent_total{route=/s}", "0"),
        ("sse_bytes_sent_total{route=/a}", "42"),
        ("sse_bytes_sent_total{route=/b/{id}}", "24"),
        ("sse_bytes_sent_total{route=/s}", "12"),
        ("sse_streams_closed_total{reason=completed,route=/a}", "1"),
        (
            "sse_streams_closed_total{reason=client_gone,route=/b/{id}}",
            "2",
        ),
        ("sse_streams_closed_total{reason=stalled,route=/s}", "1"),
        ("sse_stalls_total{route=/s}", "1"),
        ("sse_streams_refused_total{limit=total}", "1"),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_owned(), value.to_owned()))
    .collect();
    assert_eq!(after, expected);
}
