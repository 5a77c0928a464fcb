//! No block that only a client's bug would dispatch: parsers in the field (the Python `openai`
//! SDK first) dispatch any block that ends in a blank line, data or not, and then fail on the
//! empty data. Every byte the layer writes itself (the retry hint, heartbeats, the shutdown and
//! error events, a refusal, the answer after the shutdown signal, an inner stream's id-only and
//! retry-only blocks, the hub's gap event) is checked against a model of such a parser
//! (`support::lenient`), and against the WHATWG reference parser, which must see the same
//! events and fields as before.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use support::lenient::spurious_dispatches;
use support::{chunks, collect, text, whatwg, TestBody};
use tokio_util::sync::CancellationToken;
use tower::{service_fn, Layer, ServiceExt};
use tower_sse::{Event, Refusal, SseLayer};

/// The whole event stream `layer` makes of `body` (served with `content_type`), read to its end.
async fn stream_of(layer: SseLayer, content_type: &'static str, body: TestBody) -> Vec<u8> {
    let mut body = Some(body);
    let inner = service_fn(move |_: Request<()>| {
        let body = body.take().unwrap_or_else(|| chunks(Vec::<Bytes>::new()));
        let response = Response::builder()
            .header("content-type", content_type)
            .body(body);
        async move { Ok::<_, Infallible>(response.expect("response")) }
    });
    let response = layer
        .layer(inner)
        .oneshot(support::sse_request())
        .await
        .expect("infallible");
    tokio::time::timeout(Duration::from_secs(10), collect(response.into_body()))
        .await
        .expect("the stream ends")
}

/// Asserts that a lenient parser dispatches nothing a WHATWG client would not.
fn assert_no_spurious_block(bytes: &[u8]) {
    let spurious = spurious_dispatches(bytes);
    assert!(
        spurious.is_empty(),
        "blocks without data end in a blank line: {spurious:?} in {:?}",
        text(bytes)
    );
}

/// An inner body that sends `first`, pauses `pause`, then sends `second` and ends.
fn paused(first: &'static str, pause: Duration, second: &'static str) -> TestBody {
    let (tx, body) = support::channel();
    tokio::spawn(async move {
        let _ = tx.send(Ok(Bytes::from_static(first.as_bytes()))).await;
        tokio::time::sleep(pause).await;
        let _ = tx.send(Ok(Bytes::from_static(second.as_bytes()))).await;
    });
    body
}

#[tokio::test]
async fn the_retry_hint_and_heartbeats_end_no_block() {
    let layer = SseLayer::new()
        .retry(Duration::from_millis(3000))
        .heartbeat(Duration::from_millis(40));
    let body = paused(
        "data: {\"n\":1}\nid: 1\n\n",
        Duration::from_millis(300),
        "data: {\"n\":2}\nid: 2\n\n",
    );
    let bytes = stream_of(layer, "text/event-stream", body).await;
    assert!(
        text(&bytes).starts_with("retry: 3000\n"),
        "the hint goes first: {:?}",
        text(&bytes)
    );
    assert_no_spurious_block(&bytes);
    let parsed = whatwg::parse(&bytes);
    assert_eq!(parsed.retry, Some(3000));
    assert!(
        parsed.comments.len() >= 3,
        "heartbeats during the pause: {:?}",
        text(&bytes)
    );
    let data: Vec<_> = parsed.events.iter().map(|e| e.data.as_str()).collect();
    assert_eq!(data, ["{\"n\":1}", "{\"n\":2}"]);
    assert_eq!(parsed.last_event_id, "2");

    // Without a retry hint the stream opens with a comment, which ends no block either.
    let layer = SseLayer::new()
        .no_retry()
        .heartbeat_comment("keep-alive")
        .heartbeat(Duration::from_millis(40));
    let body = paused(
        "data: a\nid: 1\n\n",
        Duration::from_millis(200),
        "data: b\n\n",
    );
    let bytes = stream_of(layer, "text/event-stream", body).await;
    assert!(
        text(&bytes).starts_with(": keep-alive\n"),
        "{:?}",
        text(&bytes)
    );
    assert_no_spurious_block(&bytes);
    assert_eq!(whatwg::parse(&bytes).events.len(), 2);
}

#[tokio::test]
async fn an_inner_streams_retry_and_id_only_blocks_join_the_next_event() {
    // An upstream that sets a retry and an id in blocks of their own, then sends an event.
    let body = chunks([
        "retry: 500\n\n",
        "id: 7\n\n",
        ": upstream comment\n\n",
        "data: a\n\n",
        "retry: 900\n\n",
    ]);
    let bytes = stream_of(SseLayer::new(), "text/event-stream", body).await;
    assert_no_spurious_block(&bytes);
    let parsed = whatwg::parse(&bytes);
    assert_eq!(parsed.events.len(), 1);
    assert_eq!(parsed.events[0].data, "a");
    assert_eq!(parsed.events[0].last_event_id, "7", "{:?}", text(&bytes));
    assert_eq!(parsed.retry, Some(900), "the last retry still applies");
}

#[tokio::test]
async fn shutdown_and_error_events_and_the_answer_after_the_signal_end_no_empty_block() {
    for shutdown_event in [
        Event::default().retry(Duration::from_secs(5)),
        Event::default()
            .event("bye")
            .map(|event| event.data("restarting"))
            .expect("a valid name"),
    ] {
        let signal = CancellationToken::new();
        let layer = SseLayer::new()
            .graceful_shutdown(signal.clone())
            .shutdown_event(shutdown_event.clone());
        let (tx, body) = support::channel();
        let cancel = signal.clone();
        tokio::spawn(async move {
            let _ = tx.send(Ok(Bytes::from_static(b"data: x\nid: 1\n\n"))).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            cancel.cancel();
            tokio::time::sleep(Duration::from_secs(5)).await;
            drop(tx);
        });
        let bytes = stream_of(layer.clone(), "text/event-stream", body).await;
        assert_no_spurious_block(&bytes);
        let parsed = whatwg::parse(&bytes);
        if shutdown_event.get_data().is_some() {
            assert_eq!(parsed.events.len(), 2, "{:?}", text(&bytes));
            assert_eq!(parsed.events[1].kind, "bye");
        } else {
            assert_eq!(parsed.events.len(), 1, "{:?}", text(&bytes));
            assert_eq!(parsed.retry, Some(5000), "{:?}", text(&bytes));
        }

        // A request after the signal is answered at once, with the same bytes rules.
        let bytes = stream_of(layer, "text/event-stream", chunks(["data: never\n\n"])).await;
        assert_no_spurious_block(&bytes);
        assert!(!text(&bytes).contains("never"));
    }

    // An inner failure ends with the error event, which has data.
    let failing = support::from_stream(futures_util::stream::iter([
        Ok(http_body::Frame::data(Bytes::from_static(
            b"data: x\nid: 1\n\n",
        ))),
        Err::<http_body::Frame<Bytes>, support::BoxError>("upstream reset".into()),
    ]));
    let bytes = stream_of(SseLayer::new(), "text/event-stream", failing).await;
    assert_no_spurious_block(&bytes);
    let parsed = whatwg::parse(&bytes);
    assert_eq!(parsed.events.last().map(|e| e.kind.as_str()), Some("error"));

    // A mapper that makes data-less events: nothing of theirs ends a block.
    let layer = SseLayer::new().map_message(|message| {
        Event::default()
            .event("named")?
            .id(message.text().into_owned())
    });
    let bytes = stream_of(layer, "application/x-ndjson", chunks(["1\n2\n"])).await;
    assert_no_spurious_block(&bytes);
    let parsed = whatwg::parse(&bytes);
    assert!(parsed.events.is_empty(), "{:?}", text(&bytes));
}

#[tokio::test]
async fn a_refusal_holds_only_a_retry_hint() {
    let layer = SseLayer::new()
        .max_streams(0)
        .over_limit(Refusal::RetryLater(Duration::from_secs(10)));
    let bytes = stream_of(layer, "text/event-stream", chunks(["data: x\n\n"])).await;
    assert_no_spurious_block(&bytes);
    let parsed = whatwg::parse(&bytes);
    assert!(parsed.events.is_empty());
    let retry = parsed.retry.expect("a retry hint");
    assert!((10_000..=20_000).contains(&retry), "{retry}");
}

#[cfg(feature = "hub")]
#[tokio::test]
async fn the_hubs_gap_event_and_replay_end_no_empty_block() {
    use tower_sse::hub::Hub;
    use tower_sse::LastEventId;

    let hub = Hub::memory();
    for n in 0..3 {
        hub.publish("t", Event::default().data(format!("{n}")))
            .await
            .expect("published");
    }
    let subscription = hub
        .subscribe(["t"], Some(LastEventId::new("not-a-hub-id").expect("id")))
        .await
        .expect("subscribed");
    let mut slot = Some(subscription);
    let inner = service_fn(move |_: Request<()>| {
        let response = slot.take().expect("one call").into_http();
        async move { Ok::<_, Infallible>(response) }
    });
    let response = SseLayer::new()
        .layer(inner)
        .oneshot(support::sse_request())
        .await
        .expect("infallible");
    let mut body = Box::pin(response.into_body());
    let bytes = support::read_until(&mut body, Duration::from_secs(5), |seen| {
        whatwg::parse(seen).events.len() >= 4
    })
    .await;
    assert_no_spurious_block(&bytes);
    let parsed = whatwg::parse(&bytes);
    let kinds: Vec<_> = parsed.events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["reset", "message", "message", "message"]);
    // Publishing an event without data is refused: no client would dispatch it.
    assert!(matches!(
        hub.publish("t", Event::default()).await,
        Err(tower_sse::hub::HubError::NoData)
    ));
}

/// What the close report says matches what a client has: an id written without data (an inner
/// stream's id-only block, a shutdown event without data) only counts once an event carries it.
#[tokio::test]
async fn an_id_without_data_counts_only_when_an_event_carries_it() {
    use std::sync::{Arc, Mutex};

    let reports = Arc::new(Mutex::new(Vec::new()));
    let recorded = reports.clone();
    let layer = SseLayer::new().on_close(move |info| {
        let last = info.last_event_id.clone();
        recorded.lock().expect("lock").push((info.events, last));
    });
    let body = chunks([
        "data: a\nid: 1\n\n",
        "id: 2\n\n",
        "data: b\n\n",
        "id: 3\n\n",
    ]);
    let bytes = stream_of(layer, "text/event-stream", body).await;
    let parsed = whatwg::parse(&bytes);
    assert_eq!(parsed.events.len(), 2);
    assert_eq!(parsed.last_event_id, "2", "{:?}", text(&bytes));
    for _ in 0..100 {
        if !reports.lock().expect("lock").is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        *reports.lock().expect("lock"),
        [(2, Some("2".to_owned()))],
        "two events; the client's last id is 2, not the trailing 3"
    );
}
