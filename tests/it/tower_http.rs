//! Composition with tower-http middleware.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::routing::get;
use axum::Router;
use futures_util::StreamExt;
use tower_http::compression::CompressionLayer;
use tower_sse::SseLayer;

fn app() -> Router {
    Router::new()
        .route(
            "/events",
            get(|| async {
                let words = futures_util::stream::iter(["alpha", "beta"])
                    .map(|word| Ok::<_, Infallible>(word.repeat(20)));
                Body::from_stream(words)
            }),
        )
        .route(
            "/page",
            get(|| async { "a page long enough to be worth compressing ".repeat(10) }),
        )
        // On a Router the last layer added is the outermost: compression wraps the SSE layer.
        .layer(SseLayer::new())
        .layer(CompressionLayer::new())
}

#[tokio::test]
async fn compression_outside_leaves_event_streams_uncompressed() {
    let addr = support::serve_axum(app()).await;
    let response = support::get(
        addr,
        "/events",
        &[("accept", "text/event-stream"), ("accept-encoding", "gzip")],
    )
    .await;
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert!(response.headers().get("content-encoding").is_none());
    let body = support::collect(response.into_body()).await;
    let events = support::whatwg::parse(&body).events;
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].data, "beta".repeat(20));

    // Other routes of the same router are still compressed.
    let page = support::get(addr, "/page", &[("accept-encoding", "gzip")]).await;
    assert_eq!(page.headers()["content-encoding"], "gzip");
}

#[tokio::test]
async fn compression_inside_is_asked_for_identity() {
    // Compression inside the SSE layer: the layer asks the inner service for an identity body
    // (`Accept-Encoding: identity`), so the stream is still converted.
    let app = Router::new()
        .route("/events", get(|| async { "x".repeat(1000) }))
        .layer(
            CompressionLayer::new()
                .compress_when(|_, _, _: &http::HeaderMap, _: &http::Extensions| true),
        )
        .layer(SseLayer::new().heartbeat(Duration::from_secs(1)));
    let addr = support::serve_axum(app).await;
    let response = support::get(
        addr,
        "/events",
        &[("accept", "text/event-stream"), ("accept-encoding", "gzip")],
    )
    .await;
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert!(response.headers().get("content-encoding").is_none());
    let body = support::collect(response.into_body()).await;
    assert_eq!(
        support::whatwg::parse(&body).events[0].data,
        "x".repeat(1000)
    );
}

#[tokio::test]
async fn compressed_inner_bodies_pass_untouched() {
    // An inner body compressed whatever the request asked for cannot be re-framed: it passes
    // through as it is rather than being corrupted.
    let app = Router::new()
        .route(
            "/page",
            get(|| async { ([("content-encoding", "gzip")], vec![0x1f_u8, 0x8b, 8, 0]) }),
        )
        .layer(SseLayer::new().heartbeat(Duration::from_secs(1)));
    let addr = support::serve_axum(app).await;
    let response = support::get(
        addr,
        "/page",
        &[("accept", "text/event-stream"), ("accept-encoding", "gzip")],
    )
    .await;
    assert_eq!(response.headers()["content-encoding"], "gzip");
    assert_ne!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(
        support::collect(response.into_body()).await,
        [0x1f, 0x8b, 8, 0]
    );
}
