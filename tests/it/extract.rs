//! `Disconnect` and `LastEventId` as axum handler arguments (feature `axum`), over real HTTP/1.1:
//! behind the layer they are the request's; without it, a clear `500` that names the layer.
#![cfg(feature = "axum")]

use axum::routing::get;
use axum::Router;
use http_body_util::BodyExt;
use tower_sse::{Disconnect, LastEventId, SseLayer};

/// What the handler saw: whether its stream is over yet, and the id it resumes after.
async fn seen(disconnect: Disconnect, last: Option<LastEventId>) -> String {
    let last = last.map_or_else(|| "none".to_owned(), LastEventId::into_string);
    format!("over={} last={last}", disconnect.is_disconnected())
}

async fn required(last: LastEventId) -> String {
    last.into_string()
}

fn routes() -> Router {
    Router::new()
        .route("/seen", get(seen))
        .route("/required", get(required))
}

async fn get_text(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let response = support::get(addr, path, headers).await;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.map(|b| b.to_bytes());
    (
        status,
        String::from_utf8_lossy(&body.unwrap_or_default()).into_owned(),
    )
}

#[tokio::test]
async fn behind_the_layer_handlers_take_them_directly() {
    let addr = support::serve_axum(routes().layer(SseLayer::new())).await;
    assert_eq!(
        get_text(addr, "/seen", &[]).await,
        (200, "over=false last=none".into())
    );
    let resumed = get_text(addr, "/seen", &[("last-event-id", "41")]).await;
    assert_eq!(resumed, (200, "over=false last=41".into()));
    assert_eq!(
        get_text(addr, "/required", &[("last-event-id", "7")]).await,
        (200, "7".into())
    );
    let (status, text) = get_text(addr, "/required", &[]).await;
    assert_eq!(status, 400, "{text}");
}

#[tokio::test]
async fn without_the_layer_extracting_them_is_a_500_that_names_it() {
    let addr = support::serve_axum(routes()).await;
    for path in ["/seen", "/required"] {
        let (status, text) = get_text(addr, path, &[("last-event-id", "41")]).await;
        assert_eq!(status, 500, "{path}");
        assert!(text.contains("SseLayer"), "{path}: {text}");
    }
}
