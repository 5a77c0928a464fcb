//! Compressed event streams (feature `compression`) over real TCP: every coding decoded as it
//! arrives by an independent decoder (tower-http's decompression, async-compression's codecs)
//! under the crate's own reader, and by curl; negotiation and the head; what is never
//! compressed.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Empty;
use hyper::body::Incoming;
use tokio_util::sync::CancellationToken;
use tower::{service_fn, Layer, Service, ServiceBuilder, ServiceExt};
use tower_http::decompression::DecompressionLayer;
use tower_sse::compression::{Coding, Compression};
use tower_sse::read::EventReader;
use tower_sse::{Event, SseLayer};

use support::TestBody;

const CODINGS: [Coding; 3] = [Coding::Zstd, Coding::Brotli, Coding::Gzip];

/// Events that exercise the encoder: an id, several lines, an empty data line, non-ASCII.
fn events() -> Vec<Event> {
    let token = |i: usize| format!("{{\"choices\":[{{\"delta\":{{\"content\":\"token {i}\"}}}}]}}");
    let mut events: Vec<Event> = (0..20)
        .map(|i| {
            let event = Event::default().id(i.to_string()).expect("a valid id");
            event.data(token(i))
        })
        .collect();
    events.push(Event::default().data("line one\nline two\n\nafter an empty line"));
    events.push(Event::default().data("héllo, 世界 🚀"));
    events
}

/// The channels that feed a server's streams, one per request.
type Feeds = tokio::sync::mpsc::UnboundedReceiver<
    tokio::sync::mpsc::Sender<Result<Bytes, support::BoxError>>,
>;

/// A server whose streams are fed by the channels handed out on its feeds, behind a layer that
/// compresses with `coding` only.
async fn server(coding: Coding, layer: SseLayer) -> (std::net::SocketAddr, Feeds) {
    fed_server(layer.compression(Compression::new().codings([coding]))).await
}

/// A server whose streams are fed by the channels handed out on its feeds, behind `layer`.
async fn fed_server(layer: SseLayer) -> (std::net::SocketAddr, Feeds) {
    let (feeds_tx, feeds) = tokio::sync::mpsc::unbounded_channel();
    let inner = service_fn(move |_: Request<Incoming>| {
        let (tx, body) = support::channel();
        let _ = feeds_tx.send(tx);
        let mut response = Response::new(body);
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/event-stream"),
        );
        std::future::ready(Ok::<_, Infallible>(response))
    });
    (support::serve(layer.layer(inner)).await, feeds)
}

/// A client that asks for every coding and decodes what it gets, as a browser does; the coding
/// it received (the decoder removes `Content-Encoding`) is kept as `x-received-encoding`.
fn decompressing_client() -> impl Service<
    Request<Empty<Bytes>>,
    Response = Response<tower_http::decompression::DecompressionBody<Incoming>>,
    Error = hyper_util::client::legacy::Error,
> + Clone {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<Bytes>>();
    ServiceBuilder::new()
        .layer(DecompressionLayer::new())
        .map_response(|mut response: Response<Incoming>| {
            if let Some(coding) = response.headers().get("content-encoding").cloned() {
                response.headers_mut().insert("x-received-encoding", coding);
            }
            response
        })
        .service(client)
}

/// Subscribes through the decompressing client, and checks the stream came with `coding`.
async fn subscribe(
    addr: std::net::SocketAddr,
    coding: Coding,
) -> Response<tower_http::decompression::DecompressionBody<Incoming>> {
    let request = Request::get(format!("http://{addr}/events"))
        .header("accept", "text/event-stream")
        .body(Empty::new())
        .unwrap_or_default();
    let response = match decompressing_client().oneshot(request).await {
        Ok(response) => response,
        Err(error) => panic!("{coding}: {error}"),
    };
    assert_eq!(response.headers()["x-received-encoding"], coding.as_str());
    response
}

fn encoded(event: &Event) -> Bytes {
    let mut buf = bytes::BytesMut::new();
    event.encode_into(&mut buf);
    buf.freeze()
}

#[tokio::test]
async fn every_event_is_decoded_the_moment_it_is_sent_with_each_coding() {
    for coding in CODINGS {
        let shutdown = CancellationToken::new();
        let bye = Event::default()
            .event("bye")
            .unwrap_or_default()
            .data("restarting");
        let layer = SseLayer::new()
            .no_heartbeat()
            .graceful_shutdown(shutdown.clone())
            .shutdown_event(bye);
        let (addr, mut feeds) = server(coding, layer).await;
        let response = subscribe(addr, coding).await;
        let vary: Vec<_> = response.headers().get_all("vary").iter().collect();
        assert!(
            vary.iter()
                .any(|v| v.to_str().is_ok_and(|v| v.contains("accept-encoding"))),
            "{coding}: {vary:?}"
        );
        let Some(feed) = feeds.recv().await else {
            panic!("{coding}: the inner service was not called");
        };
        let mut reader = EventReader::new(response.into_body());
        for event in events() {
            let sent = Instant::now();
            assert!(feed.send(Ok(encoded(&event))).await.is_ok());
            // Nothing else is sent until it has arrived: a compressor that waits for more
            // input would hold it forever.
            let received = tokio::time::timeout(Duration::from_secs(5), reader.next_event()).await;
            let elapsed = sent.elapsed();
            let message = match received {
                Ok(Some(Ok(message))) => message,
                other => panic!("{coding}: {other:?}"),
            };
            assert_eq!(
                message.text(),
                event.get_data().unwrap_or_default(),
                "{coding}"
            );
            assert_eq!(message.id(), event.get_id(), "{coding}");
            assert!(
                elapsed < Duration::from_millis(100),
                "{coding}: an event alone took {elapsed:?}"
            );
        }
        assert_eq!(reader.last_event_id(), "19", "{coding}");
        // The shutdown event passes through the compressor too, and the compressed stream
        // ends cleanly (a truncated one is an error for every decoder).
        shutdown.cancel();
        match tokio::time::timeout(Duration::from_secs(5), reader.next_event()).await {
            Ok(Some(Ok(message))) => assert_eq!(&message.data()[..], b"restarting", "{coding}"),
            other => panic!("{coding}: {other:?}"),
        }
        let end = tokio::time::timeout(Duration::from_secs(5), reader.next_event()).await;
        assert!(matches!(end, Ok(None)), "{coding}: {end:?}");
    }
}

#[tokio::test]
async fn heartbeats_and_the_retry_hint_arrive_decodable_on_an_idle_stream() {
    for coding in CODINGS {
        let layer = SseLayer::new().heartbeat(Duration::from_millis(400));
        let (addr, _feeds) = server(coding, layer).await;
        let response = subscribe(addr, coding).await;
        let mut body = response.into_body();
        // Each heartbeat decodes before the next is written: one held back until the next
        // frame would come 400 ms late.
        let start = Instant::now();
        let mut all = Vec::new();
        for beats in 1..=3u64 {
            let seen = support::read_until(&mut body, Duration::from_millis(700), |seen| {
                seen.ends_with(b":\n")
            })
            .await;
            all.extend_from_slice(&seen);
            let elapsed = start.elapsed();
            assert!(
                elapsed < Duration::from_millis(400 * beats + 300),
                "{coding}: heartbeat {beats} decoded after {elapsed:?}"
            );
        }
        assert_eq!(support::text(&all), "retry: 3000\n:\n:\n:\n", "{coding}");
    }
}

#[tokio::test]
async fn isolated_events_decode_with_each_coding_that_can_isolate() {
    for coding in [Coding::Zstd, Coding::Gzip] {
        let compression = Compression::new().codings([coding]).isolate_events();
        let layer = SseLayer::new().no_heartbeat().compression(compression);
        let (addr, mut feeds) = fed_server(layer).await;
        let response = subscribe(addr, coding).await;
        let Some(feed) = feeds.recv().await else {
            panic!("{coding}: the inner service was not called");
        };
        // Several events in one frame, then one at a time, then the end.
        let all: Vec<Bytes> = events().iter().map(encoded).collect();
        assert!(feed.send(Ok(all[..5].concat().into())).await.is_ok());
        for event in &all[5..] {
            assert!(feed.send(Ok(event.clone())).await.is_ok());
        }
        drop(feed);
        let mut reader = EventReader::new(response.into_body());
        let mut received = Vec::new();
        while let Ok(Some(message)) =
            tokio::time::timeout(Duration::from_secs(5), reader.next_event()).await
        {
            match message {
                Ok(message) => received.push(message.text().into_owned()),
                Err(error) => panic!("{coding}: {error}"),
            }
        }
        let expected: Vec<String> = events()
            .iter()
            .map(|event| event.get_data().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(received, expected, "{coding}");
    }
}

/// Sends a GET with these headers to a compressing layer over an inner service that answers
/// `inner`, and returns the head and the raw (undecoded) body.
async fn exchange(
    headers: &[(&str, &str)],
    inner: fn() -> Response<TestBody>,
) -> (http::HeaderMap, Vec<u8>) {
    let service =
        service_fn(move |_: Request<Incoming>| std::future::ready(Ok::<_, Infallible>(inner())));
    let layer = SseLayer::new()
        .no_heartbeat()
        .compression(Compression::new());
    let addr = support::serve(layer.layer(service)).await;
    let response = support::get(addr, "/events", headers).await;
    let head = response.headers().clone();
    let body = tokio::time::timeout(
        Duration::from_secs(5),
        support::collect(response.into_body()),
    )
    .await
    .unwrap_or_default();
    (head, body)
}

fn one_event() -> Response<TestBody> {
    Response::new(support::chunks(["hello"]))
}

#[tokio::test]
async fn a_client_that_does_not_ask_gets_the_stream_uncompressed() {
    for accept_encoding in [
        None,
        Some("identity"),
        Some("gzip;q=0, br;q=0, zstd;q=0"),
        Some("deflate"),
    ] {
        let mut headers = vec![("accept", "text/event-stream")];
        headers.extend(accept_encoding.map(|value| ("accept-encoding", value)));
        let (head, body) = exchange(&headers, one_event).await;
        assert!(
            head.get("content-encoding").is_none(),
            "{accept_encoding:?}"
        );
        assert_eq!(support::text(&body), "retry: 3000\ndata: hello\n\n");
        // The answer depends on the header, so caches must keep the two apart.
        let vary: Vec<_> = head
            .get_all("vary")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        assert!(vary.contains(&"accept-encoding"), "{vary:?}");
    }
    // Preferences: the client's highest quality, then the server's order.
    for (accept_encoding, expected) in [
        ("gzip, deflate, br, zstd", "zstd"),
        ("gzip, br", "br"),
        ("zstd;q=0.5, gzip", "gzip"),
    ] {
        let headers = [
            ("accept", "text/event-stream"),
            ("accept-encoding", accept_encoding),
        ];
        let (head, _) = exchange(&headers, one_event).await;
        assert_eq!(head["content-encoding"], expected, "{accept_encoding}");
    }
}

#[tokio::test]
async fn what_is_not_an_event_stream_or_is_compressed_already_passes_untouched() {
    // The inner service compressed its own event stream: passed as it is.
    let precompressed = || {
        let mut response =
            Response::new(support::chunks([Bytes::from_static(b"\x1f\x8bnot really")]));
        let headers = response.headers_mut();
        headers.insert(
            "content-type",
            http::HeaderValue::from_static("text/event-stream"),
        );
        headers.insert("content-encoding", http::HeaderValue::from_static("gzip"));
        response
    };
    let headers = [
        ("accept", "text/event-stream"),
        ("accept-encoding", "gzip, br, zstd"),
    ];
    let (head, body) = exchange(&headers, precompressed).await;
    assert_eq!(head["content-encoding"], "gzip");
    assert_eq!(body, b"\x1f\x8bnot really");
    // A page the layer does not convert is not the layer's to compress.
    let page = || Response::new(support::chunks(["<html>"]));
    let (head, body) = exchange(&[("accept-encoding", "gzip, br, zstd")], page).await;
    assert!(head.get("content-encoding").is_none());
    assert_eq!(body, b"<html>");
}

#[tokio::test]
async fn curl_compressed_decodes_every_event_with_each_coding() {
    if !support::curl_available() {
        return;
    }
    for coding in CODINGS {
        let (addr, mut feeds) = server(coding, SseLayer::new().no_heartbeat()).await;
        let url = format!("http://{addr}/events");
        let curl = tokio::process::Command::new("curl")
            .args(["-sN", "--compressed", "--max-time", "10"])
            .args(["-H", "accept: text/event-stream"])
            .args(["-w", "\n%header{content-encoding}"])
            .arg(&url)
            .kill_on_drop(true)
            .output();
        let feed = async {
            let Some(feed) = feeds.recv().await else {
                panic!("{coding}: the inner service was not called");
            };
            for event in events() {
                let _ = feed.send(Ok(encoded(&event))).await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            // Dropped: the stream ends, with the compressed stream's end.
        };
        let (output, ()) = tokio::join!(curl, feed);
        let output = match output {
            Ok(output) => output,
            Err(error) => panic!("{coding}: curl: {error}"),
        };
        assert!(output.status.success(), "{coding}: curl failed: {output:?}");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let (stream, encoding) = stdout.rsplit_once('\n').unwrap_or_default();
        assert_eq!(encoding, coding.as_str(), "{coding}");
        let parsed = support::whatwg::parse(stream.as_bytes());
        let expected: Vec<String> = events()
            .iter()
            .map(|event| {
                support::whatwg::parse(&encoded(event)).events[0]
                    .data
                    .clone()
            })
            .collect();
        let received: Vec<String> = parsed
            .events
            .iter()
            .map(|event| event.data.clone())
            .collect();
        assert_eq!(received, expected, "{coding}");
    }
}
