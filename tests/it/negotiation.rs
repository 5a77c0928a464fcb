//! Which requests become event streams, which responses pass untouched, and the headers written.

use std::convert::Infallible;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use support::{chunks, collect, text, TestBody};
use tower::{service_fn, Layer, ServiceExt};
use tower_sse::{Disconnect, LastEventId, SseLayer};

/// An inner service answering `status` with `headers` and the body "hello", and reporting what
/// extensions it saw in the `x-seen` header.
async fn call(
    layer: SseLayer,
    request: Request<()>,
    status: StatusCode,
    headers: &[(&'static str, &'static str)],
) -> (http::response::Parts, Bytes) {
    let headers: Vec<_> = headers.to_vec();
    let inner = service_fn(move |request: Request<()>| {
        let mut response = Response::builder().status(status);
        for (name, value) in &headers {
            response = response.header(*name, *value);
        }
        let seen = format!(
            "disconnect={} last-event-id={:?}",
            request.extensions().get::<Disconnect>().is_some(),
            request
                .extensions()
                .get::<LastEventId>()
                .map(LastEventId::as_str),
        );
        let response = response
            .header("x-seen", seen)
            .body(chunks(["hello"]))
            .expect("response");
        async move { Ok::<_, Infallible>(response) }
    });
    let response = layer
        .layer(inner)
        .oneshot(request)
        .await
        .expect("infallible");
    let (parts, body) = response.into_parts();
    (parts, Bytes::from(collect(body).await))
}

fn plain_request() -> Request<()> {
    Request::get("/")
        .header("accept", "text/html,*/*;q=0.8")
        .body(())
        .expect("request")
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Vec<&'a str> {
    headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().expect("ascii"))
        .collect()
}

#[tokio::test]
async fn negotiated_request_gets_an_event_stream_with_the_right_headers() {
    let (parts, body) = call(
        SseLayer::new(),
        support::sse_request(),
        StatusCode::OK,
        &[
            ("content-type", "text/plain"),
            ("content-length", "5"),
            ("etag", "\"abc\""),
            ("last-modified", "Sun, 22 Nov 2026 00:00:00 GMT"),
            ("content-digest", "sha-256=:abc=:"),
            ("cache-control", "public, max-age=60"),
            ("connection", "keep-alive"),
            ("keep-alive", "timeout=5"),
            ("vary", "Origin"),
            ("x-custom", "kept"),
        ],
    )
    .await;
    assert_eq!(parts.status, StatusCode::OK);
    let h = &parts.headers;
    assert_eq!(header(h, "content-type"), ["text/event-stream"]);
    assert_eq!(header(h, "cache-control"), ["no-cache, no-transform"]);
    assert_eq!(header(h, "x-accel-buffering"), ["no"]);
    assert_eq!(header(h, "vary"), ["Origin", "accept"]);
    assert_eq!(header(h, "x-custom"), ["kept"]);
    for gone in [
        "content-length",
        "etag",
        "last-modified",
        "content-digest",
        "connection",
        "keep-alive",
        "transfer-encoding",
    ] {
        assert!(h.get(gone).is_none(), "{gone} must be removed");
    }
    assert_eq!(header(h, "x-seen"), ["disconnect=true last-event-id=None"]);
    assert_eq!(text(&body), "retry: 3000\ndata: hello\n\n");
}

#[tokio::test]
async fn other_requests_pass_untouched() {
    let (parts, body) = call(
        SseLayer::new(),
        plain_request(),
        StatusCode::OK,
        &[("content-type", "text/plain"), ("content-length", "5")],
    )
    .await;
    assert_eq!(header(&parts.headers, "content-type"), ["text/plain"]);
    assert_eq!(header(&parts.headers, "content-length"), ["5"]);
    // Had the request asked for an event stream, this response would have been one.
    assert_eq!(header(&parts.headers, "vary"), ["accept"]);
    assert_eq!(
        header(&parts.headers, "x-seen"),
        // Handlers can extract the handle whatever the request asked for.
        ["disconnect=true last-event-id=None"]
    );
    assert_eq!(&body[..], b"hello");
}

#[tokio::test]
async fn responses_that_would_pass_anyway_get_no_vary() {
    let (parts, _) = call(SseLayer::new(), plain_request(), StatusCode::NOT_FOUND, &[]).await;
    assert!(parts.headers.get("vary").is_none());
}

#[tokio::test]
async fn always_converts_without_accept_and_without_vary() {
    let (parts, body) = call(
        SseLayer::new().always(),
        plain_request(),
        StatusCode::OK,
        &[],
    )
    .await;
    assert_eq!(
        header(&parts.headers, "content-type"),
        ["text/event-stream"]
    );
    assert!(parts.headers.get("vary").is_none());
    assert_eq!(text(&body), "retry: 3000\ndata: hello\n\n");
}

#[tokio::test]
async fn vary_is_not_repeated() {
    let (parts, _) = call(
        SseLayer::new(),
        support::sse_request(),
        StatusCode::OK,
        &[("vary", "accept-encoding, Accept")],
    )
    .await;
    assert_eq!(header(&parts.headers, "vary"), ["accept-encoding, Accept"]);
}

#[tokio::test]
async fn errors_no_content_and_compressed_bodies_pass_untouched() {
    let cases: [(StatusCode, &[(&str, &str)]); 7] = [
        (
            StatusCode::PARTIAL_CONTENT,
            &[("content-range", "bytes 0-4/10")],
        ),
        (
            StatusCode::OK,
            &[("content-type", "application/grpc+proto")],
        ),
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            &[("content-type", "text/plain")],
        ),
        (StatusCode::NOT_FOUND, &[]),
        (StatusCode::NO_CONTENT, &[]),
        (StatusCode::FOUND, &[("location", "/elsewhere")]),
        (
            StatusCode::OK,
            &[
                ("content-encoding", "gzip"),
                ("content-type", "text/event-stream"),
            ],
        ),
    ];
    for (status, headers) in cases {
        let (parts, body) = call(SseLayer::new(), support::sse_request(), status, headers).await;
        assert_eq!(parts.status, status);
        for (name, value) in headers {
            assert_eq!(header(&parts.headers, name), [*value]);
        }
        assert!(parts.headers.get("cache-control").is_none());
        assert_eq!(&body[..], b"hello", "{status}");
    }
}

#[tokio::test]
async fn identity_coding_and_other_2xx_are_converted_to_200() {
    let (parts, body) = call(
        SseLayer::new().no_retry(),
        support::sse_request(),
        StatusCode::CREATED,
        &[("content-encoding", "identity")],
    )
    .await;
    assert_eq!(parts.status, StatusCode::OK);
    assert!(parts.headers.get("content-encoding").is_none());
    assert_eq!(text(&body), ":\ndata: hello\n\n");
}

#[tokio::test]
async fn last_event_id_reaches_the_inner_service() {
    let request = Request::get("/")
        .header("accept", "text/event-stream")
        .header("last-event-id", "caf\u{e9}-42".as_bytes())
        .body(())
        .expect("request");
    let (parts, _) = call(SseLayer::new(), request, StatusCode::OK, &[]).await;
    assert_eq!(
        parts.headers.get("x-seen").map(|v| v.as_bytes()),
        Some("disconnect=true last-event-id=Some(\"caf\u{e9}-42\")".as_bytes())
    );
    // Invalid UTF-8 or an empty header is not an id.
    for bad in [&b"\xFFbad"[..], b""] {
        let request = Request::get("/")
            .header("accept", "text/event-stream")
            .header(
                "last-event-id",
                http::HeaderValue::from_bytes(bad).expect("value"),
            )
            .body(())
            .expect("request");
        let (parts, _) = call(SseLayer::new(), request, StatusCode::OK, &[]).await;
        assert_eq!(
            header(&parts.headers, "x-seen"),
            ["disconnect=true last-event-id=None"]
        );
    }
}

#[tokio::test]
async fn builder_methods_work_on_the_service_too() {
    let inner = service_fn(|_request: Request<()>| async {
        Ok::<_, Infallible>(Response::new(chunks(["x"])))
    });
    let service = tower_sse::SseService::new(inner)
        .always()
        .retry(std::time::Duration::from_millis(250));
    let response = service.oneshot(Request::new(())).await.expect("infallible");
    assert!(response.body().is_event_stream());
    assert_eq!(
        text(&collect(response.into_body()).await),
        "retry: 250\ndata: x\n\n"
    );
}

#[tokio::test]
async fn disconnect_resolves_when_the_body_is_dropped() {
    let (tx, body) = support::channel();
    let (seen_tx, seen_rx) = tokio::sync::oneshot::channel::<Disconnect>();
    let mut parts = Some((body, seen_tx));
    let inner = service_fn(move |request: Request<()>| {
        let (body, seen_tx) = parts.take().expect("one call");
        let disconnect = request
            .extensions()
            .get::<Disconnect>()
            .cloned()
            .expect("extension");
        let _ = seen_tx.send(disconnect);
        async move { Ok::<_, Infallible>(Response::<TestBody>::new(body)) }
    });
    let response = SseLayer::new()
        .layer(inner)
        .oneshot(support::sse_request())
        .await
        .expect("infallible");
    let disconnect = seen_rx.await.expect("handle");
    assert!(!disconnect.is_disconnected());
    drop(response);
    tokio::time::timeout(std::time::Duration::from_secs(1), disconnect.disconnected())
        .await
        .expect("resolved on drop");
    assert!(tx.is_closed(), "the inner body was dropped");
}

/// The response decides too: clients that do not say `Accept: text/event-stream` (curl,
/// `fetch`, htmx, the OpenAI SDKs' `Accept: application/json`) still get an event stream from a
/// handler that streams one; it goes through the layer's engine and settings.
#[tokio::test]
async fn an_event_stream_answer_to_a_plain_request_goes_through_the_layer() {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    let closes = Arc::new(Mutex::new(Vec::new()));
    let recorded = closes.clone();
    let layer = SseLayer::new()
        .retry(Duration::from_millis(1234))
        .heartbeat(Duration::from_millis(40))
        .on_close(move |info| recorded.lock().expect("lock").push(info.reason));
    let (tx, body) = support::channel();
    tokio::spawn(async move {
        let _ = tx.send(Ok(Bytes::from_static(b"data: a\n\n"))).await;
        tokio::time::sleep(Duration::from_millis(250)).await;
        let _ = tx.send(Ok(Bytes::from_static(b"data: b\n\n"))).await;
    });
    let mut body = Some(body);
    let inner = service_fn(move |request: Request<()>| {
        assert!(request.extensions().get::<Disconnect>().is_some());
        let body = body.take().expect("one call");
        let response = Response::builder()
            .header("content-type", "text/event-stream; charset=utf-8")
            .header("content-length", "18")
            .body(body)
            .expect("response");
        async move { Ok::<_, Infallible>(response) }
    });
    let request = Request::get("/v1/chat/completions")
        .header("accept", "application/json")
        .body(())
        .expect("request");
    let response = layer
        .layer(inner)
        .oneshot(request)
        .await
        .expect("infallible");
    assert!(response.body().is_event_stream());
    let (parts, body) = response.into_parts();
    assert_eq!(
        header(&parts.headers, "cache-control"),
        ["no-cache, no-transform"]
    );
    assert!(parts.headers.get("content-length").is_none());
    let bytes = tokio::time::timeout(Duration::from_secs(5), collect(body))
        .await
        .expect("the stream ends");
    let received = text(&bytes);
    assert!(received.starts_with("retry: 1234\n"), "{received:?}");
    assert!(
        received.matches(":\n").count() >= 2,
        "heartbeats: {received:?}"
    );
    let data: Vec<_> = support::whatwg::parse(&bytes)
        .events
        .into_iter()
        .map(|event| event.data)
        .collect();
    assert_eq!(data, ["a", "b"]);
    assert_eq!(
        *closes.lock().expect("lock"),
        [tower_sse::CloseReason::Completed]
    );
}

/// A hub subscription fetched without `Accept: text/event-stream` gets the layer's retry hint,
/// its shutdown event, and its `on_close`, as an `EventSource` would.
#[cfg(all(feature = "hub", feature = "axum"))]
#[tokio::test]
async fn a_plain_get_of_a_subscription_is_served_with_the_layers_settings() {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use axum::routing::get;
    use tokio_util::sync::CancellationToken;
    use tower_sse::hub::Hub;
    use tower_sse::{CloseReason, Event};

    let hub = Hub::memory();
    let shutdown = CancellationToken::new();
    let closes = Arc::new(Mutex::new(Vec::new()));
    let recorded = closes.clone();
    let subscriptions = hub.clone();
    let app = axum::Router::new()
        .route(
            "/events",
            get(move || {
                let hub = subscriptions.clone();
                async move { hub.subscribe(["board"], None).await }
            }),
        )
        .layer(
            SseLayer::new()
                .retry(Duration::from_millis(1234))
                .graceful_shutdown(shutdown.clone())
                .shutdown_event(Event::default().event("bye").expect("name").data("later"))
                .on_close(move |info| recorded.lock().expect("lock").push(info.reason)),
        );
    let addr = support::serve_axum(app).await;
    let (mut tcp, mut seen) =
        support::get_raw(addr, "/events", &[("accept", "*/*")], "retry: 1234\n").await;
    hub.publish("board", Event::default().data("hello"))
        .await
        .expect("published");
    support::read_raw_until(&mut tcp, &mut seen, "the event", |s| {
        s.contains("data: hello\n")
    })
    .await;
    shutdown.cancel();
    support::read_raw_until(&mut tcp, &mut seen, "the end on the signal", |s| {
        s.ends_with("0\r\n\r\n")
    })
    .await;
    assert!(seen.contains("event: bye\ndata: later\n\n"), "{seen}");
    for _ in 0..100 {
        if !closes.lock().expect("lock").is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(*closes.lock().expect("lock"), [CloseReason::Shutdown]);
}

/// What the response decides, at its edges: a compressed or non-2xx event stream to a plain
/// request passes untouched (no re-framing is possible, or the client must see the status); a
/// forced framing is for responses to requests that asked, not for a stream a response offers;
/// an offered stream varies on `Accept` like any other.
#[tokio::test]
async fn an_offered_stream_is_converted_only_when_it_can_be() {
    let plain = || {
        Request::get("/")
            .header("accept", "*/*")
            .body(())
            .expect("request")
    };
    let sse = &[("content-type", "text/event-stream")];
    let (parts, body) = call(
        SseLayer::new(),
        plain(),
        StatusCode::OK,
        &[
            ("content-type", "text/event-stream"),
            ("content-encoding", "gzip"),
        ],
    )
    .await;
    assert_eq!(header(&parts.headers, "content-encoding"), ["gzip"]);
    assert_eq!(&body[..], b"hello", "a compressed stream passes untouched");
    let (parts, body) = call(
        SseLayer::new(),
        plain(),
        StatusCode::SERVICE_UNAVAILABLE,
        sse,
    )
    .await;
    assert_eq!(parts.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(&body[..], b"hello");
    // The inner body "hello" is not an event stream block: re-framed as one, it is nothing;
    // cut as lines (the forced framing), it would become an event.
    let (parts, body) = call(
        SseLayer::new().framing(tower_sse::Framing::Lines),
        plain(),
        StatusCode::OK,
        sse,
    )
    .await;
    assert_eq!(text(&body), "retry: 3000\n", "re-framed as an event stream");
    assert_eq!(header(&parts.headers, "vary"), ["accept"]);
}

/// After the shutdown signal, a plain request still reaches the inner service (it may not be a
/// stream); a stream its response offers ends at once, with the shutdown event.
#[tokio::test]
async fn an_offered_stream_after_the_shutdown_signal_ends_at_once() {
    let signal = tokio_util::sync::CancellationToken::new();
    signal.cancel();
    let layer = SseLayer::new().graceful_shutdown(signal).shutdown_event(
        tower_sse::Event::default()
            .event("bye")
            .expect("name")
            .data("later"),
    );
    let plain = Request::get("/")
        .header("accept", "application/json")
        .body(())
        .expect("request");
    let (parts, body) = call(
        layer,
        plain,
        StatusCode::OK,
        &[("content-type", "text/event-stream")],
    )
    .await;
    assert_eq!(
        header(&parts.headers, "content-type"),
        ["text/event-stream"]
    );
    assert_eq!(text(&body), "retry: 3000\nevent: bye\ndata: later\n\n");
}
