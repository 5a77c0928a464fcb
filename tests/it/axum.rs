//! The layer around a whole axum router, over real HTTP/1.1 and HTTP/2 on 127.0.0.1.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::response::sse::{Event as AxumEvent, KeepAlive, Sse};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use futures_util::StreamExt;
use http::{Request, Response, Version};
use http_body_util::{BodyExt, Empty};
use support::whatwg::parse;
use tokio::time::Instant;
use tower::ServiceBuilder;
use tower_sse::SseLayer;

fn app() -> Router {
    Router::new()
        .route("/", get(|| async { axum::response::Html("<h1>page</h1>") }))
        .route(
            "/ticks",
            get(|| async {
                let ticks = futures_util::stream::iter(1..=3)
                    .map(|n| Ok::<_, Infallible>(format!("tick {n}")));
                Body::from_stream(ticks)
            }),
        )
        .route(
            "/axum-sse",
            get(|| async {
                let events = futures_util::stream::iter(["a", "b\nc"])
                    .map(|data| Ok::<_, Infallible>(AxumEvent::default().event("x").data(data)));
                Sse::new(events).keep_alive(KeepAlive::default())
            }),
        )
        .route(
            "/slow",
            get(|| async {
                let later = futures_util::stream::once(async {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    Ok::<_, Infallible>("late")
                });
                Body::from_stream(later)
            }),
        )
        .layer(SseLayer::new())
}

#[tokio::test]
async fn router_streams_become_events_and_pages_stay_pages() {
    let addr = support::serve_axum(app()).await;

    let response = support::get_sse(addr, "/ticks").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let body = support::collect(response.into_body()).await;
    assert_eq!(
        support::text(&body),
        "retry: 3000\ndata: tick 1\n\ndata: tick 2\n\ndata: tick 3\n\n"
    );

    let page = support::get(addr, "/", &[("accept", "text/html,*/*;q=0.8")]).await;
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    assert_eq!(support::collect(page.into_body()).await, b"<h1>page</h1>");

    let missing = support::get_sse(addr, "/nope").await;
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn an_axum_sse_handler_is_reframed_event_by_event() {
    let addr = support::serve_axum(app()).await;
    let response = support::get_sse(addr, "/axum-sse").await;
    let body = support::collect(response.into_body()).await;
    assert_eq!(
        support::text(&body),
        "retry: 3000\nevent: x\ndata: a\n\nevent: x\ndata: b\ndata: c\n\n"
    );
    let events = parse(&body).events;
    assert_eq!(events[1].data, "b\nc");
}

#[tokio::test]
async fn the_preamble_arrives_before_the_first_message() {
    let addr = support::serve_axum(app()).await;
    let start = Instant::now();
    let mut response = support::get_sse(addr, "/slow").await;
    let first = support::read_until(response.body_mut(), Duration::from_secs(2), |seen| {
        !seen.is_empty()
    })
    .await;
    assert_eq!(support::text(&first), "retry: 3000\n");
    assert!(
        start.elapsed() < Duration::from_millis(250),
        "{:?}",
        start.elapsed()
    );
    let rest = support::read_until(response.body_mut(), Duration::from_secs(2), |seen| {
        seen.ends_with(b"\n\n")
    })
    .await;
    assert_eq!(support::text(&rest), "data: late\n\n");
    assert!(start.elapsed() >= Duration::from_millis(500));
}

#[tokio::test]
async fn http2_responses_carry_no_connection_specific_headers() {
    let inner = tower::service_fn(|_: Request<hyper::body::Incoming>| async {
        let response = Response::builder()
            .header("content-type", "application/x-ndjson")
            .header("connection", "keep-alive")
            .header("keep-alive", "timeout=60")
            .header("transfer-encoding", "chunked")
            .body(support::chunks(["1\n2\n"]))
            .expect("response");
        Ok::<_, Infallible>(response)
    });
    let service = ServiceBuilder::new().layer(SseLayer::new()).service(inner);
    let addr = support::serve(service).await;

    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .expect("h2 handshake");
    tokio::spawn(connection);
    let request = Request::get(format!("http://{addr}/"))
        .header("accept", "text/event-stream")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let response = sender.send_request(request).await.expect("response");
    assert_eq!(response.version(), Version::HTTP_2);
    assert_eq!(response.status(), 200);
    for name in [
        "connection",
        "keep-alive",
        "transfer-encoding",
        "upgrade",
        "te",
    ] {
        assert!(response.headers().get(name).is_none(), "{name} on HTTP/2");
    }
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(
        response.headers()["cache-control"],
        "no-cache, no-transform"
    );
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    assert_eq!(&body[..], b"retry: 3000\ndata: 1\n\ndata: 2\n\n");
}
