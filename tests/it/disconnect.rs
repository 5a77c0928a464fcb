//! A client that leaves, over real TCP: `on_disconnect`, the `Disconnect` handle, the inner body.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::{body::Body, routing::get, Extension, Router};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tower_sse::{CloseInfo, CloseReason, Disconnect, Event, SseLayer};

/// Sets a flag when dropped: proves the inner body (and its producer) went away.
struct DropFlag(tokio::sync::mpsc::UnboundedSender<Instant>);
impl Drop for DropFlag {
    fn drop(&mut self) {
        let _ = self.0.send(Instant::now());
    }
}

#[tokio::test]
async fn client_close_is_noticed_within_100ms_and_reported_once() {
    let (closed_tx, mut closed_rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, CloseInfo)>();
    let (handle_tx, mut handle_rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let (dropped_tx, mut dropped_rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();

    // Sends events 4, 5, 6 right away (resuming after the client's Last-Event-ID 3), then idles.
    let handler = move |Extension(disconnect): Extension<Disconnect>,
                        Extension(last): Extension<tower_sse::LastEventId>| {
        let handle_tx = handle_tx.clone();
        tokio::spawn(async move {
            disconnect.disconnected().await;
            let _ = handle_tx.send(Instant::now());
        });
        let first: u32 = last.as_str().parse().unwrap_or(0) + 1;
        let flag = DropFlag(dropped_tx.clone());
        let lines = futures_util::stream::iter(first..first + 3)
            .map(|n| Ok::<_, std::io::Error>(format!("{n}\n")))
            .chain(futures_util::stream::pending())
            .map(move |line| {
                let _keep = &flag;
                line
            });
        async move {
            (
                [("content-type", "application/x-ndjson")],
                Body::from_stream(lines),
            )
        }
    };
    let layer = SseLayer::new()
        .map_message(|message| Ok(Event::default().id(message.text())?.data(message.text())))
        .on_disconnect(move |info| {
            let _ = closed_tx.send((Instant::now(), info.clone()));
        });
    let app = Router::new().route("/events", get(handler)).layer(layer);
    let addr = support::serve_axum(app).await;

    let until = "data: 6\nid: 6\n\n";
    let (tcp, seen) =
        support::subscribe_raw_with(addr, "/events", &[("last-event-id", "3")], until).await;
    assert!(seen.starts_with("HTTP/1.1 200 OK\r\n"), "{seen}");
    assert!(
        seen.contains("data: 4\nid: 4\n\ndata: 5\nid: 5\n\n"),
        "{seen}"
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    let closed_at = Instant::now();
    drop(tcp);

    let limit = Duration::from_millis(100);
    let (at, info) = tokio::time::timeout(Duration::from_secs(2), closed_rx.recv())
        .await
        .expect("on_disconnect fired")
        .expect("sender alive");
    assert!(at - closed_at < limit, "noticed after {:?}", at - closed_at);
    assert_eq!(info.reason, CloseReason::ClientGone);
    assert_eq!(info.events, 3);
    assert_eq!(info.last_event_id.as_deref(), Some("6"));
    assert_eq!(
        info.bytes,
        ("retry: 3000\n".len() + 3 * "data: 4\nid: 4\n\n".len()) as u64
    );
    assert!(info.duration >= Duration::from_millis(50));

    let handle_at = handle_rx.recv().await.expect("handle resolved");
    assert!(
        handle_at - closed_at < limit,
        "handle after {:?}",
        handle_at - closed_at
    );
    let dropped_at = dropped_rx.recv().await.expect("inner dropped");
    assert!(
        dropped_at - closed_at < limit,
        "inner dropped after {:?}",
        dropped_at - closed_at
    );

    // Exactly once.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(closed_rx.try_recv().is_err());
}

#[tokio::test]
async fn a_stream_that_ends_is_not_a_disconnect() {
    let count = Arc::new(Mutex::new(0u32));
    let seen = count.clone();
    let app = Router::new()
        .route("/done", get(|| async { "only message" }))
        .layer(SseLayer::new().on_disconnect(move |_| *seen.lock().expect("lock") += 1));
    let addr = support::serve_axum(app).await;
    let response = support::get_sse(addr, "/done").await;
    let body = support::collect(response.into_body()).await;
    assert_eq!(support::text(&body), "retry: 3000\ndata: only message\n\n");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(*count.lock().expect("lock"), 0);
}

#[tokio::test]
async fn a_head_request_is_not_a_disconnect() {
    let count = Arc::new(Mutex::new(0u32));
    let seen = count.clone();
    let app = Router::new()
        .route(
            "/events",
            get(|| async {
                Body::from_stream(futures_util::stream::pending::<Result<String, Infallible>>())
            }),
        )
        .layer(SseLayer::new().on_disconnect(move |_| *seen.lock().expect("lock") += 1));
    let addr = support::serve_axum(app).await;
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    let request =
        format!("HEAD /events HTTP/1.1\r\nhost: {addr}\r\naccept: text/event-stream\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.expect("write");
    let mut head = vec![0u8; 1024];
    let n = tcp.read(&mut head).await.expect("read");
    assert!(String::from_utf8_lossy(&head[..n]).contains("content-type: text/event-stream"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(*count.lock().expect("lock"), 0);
}
