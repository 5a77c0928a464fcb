//! Graceful shutdown over real TCP: `axum::serve(..).with_graceful_shutdown(..)` returns with
//! open event streams when the layer shares its signal, and does not without it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::{body::Body, routing::get, Extension, Router};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower_sse::{CloseReason, Event, SseLayer};

use support::whatwg;

/// A router whose `/events` streams every tick of `hub` as one event.
fn ticks(hub: broadcast::Sender<u64>) -> Router {
    let handler = |Extension(hub): Extension<broadcast::Sender<u64>>| async move {
        let ticks = futures_util::stream::unfold(hub.subscribe(), |mut rx| async move {
            let n = rx.recv().await.ok()?;
            Some((Ok::<_, std::io::Error>(format!("tick {n}")), rx))
        });
        Body::from_stream(ticks)
    };
    Router::new()
        .route("/events", get(handler))
        .layer(Extension(hub))
}

/// Starts `axum::serve` with graceful shutdown on `signal`, returning its address and task.
async fn serve(
    app: Router,
    signal: CancellationToken,
) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(signal.cancelled_owned())
            .await
            .expect("serve");
    });
    (addr, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_returns_within_a_second_of_the_signal_with_1000_open_streams() {
    const STREAMS: usize = 1000;
    support::raise_open_file_limit(2 * STREAMS as u64 + 100);
    let shutdown = CancellationToken::new();
    let (hub, _) = broadcast::channel(64);
    let closes = Arc::new(AtomicUsize::new(0));
    let counted = closes.clone();
    let bye = Event::default()
        .event("shutdown")
        .expect("name")
        .data("restarting")
        .retry(Duration::from_secs(5));
    let layer = SseLayer::new()
        .graceful_shutdown(shutdown.clone())
        .shutdown_event(bye)
        .on_close(move |info| {
            assert_eq!(info.reason, CloseReason::Shutdown);
            counted.fetch_add(1, Ordering::Relaxed);
        });
    let (addr, server) = serve(ticks(hub.clone()).layer(layer), shutdown.clone()).await;

    let mut clients = Vec::new();
    let opening = Arc::new(tokio::sync::Semaphore::new(100));
    for _ in 0..STREAMS {
        let opening = opening.clone();
        clients.push(tokio::spawn(async move {
            let permit = opening.acquire_owned().await.expect("semaphore");
            let response = support::get_sse(addr, "/events").await;
            drop(permit);
            assert_eq!(response.status(), 200);
            // A torn connection or an unfinished chunked body fails here.
            support::collect(response.into_body()).await
        }));
    }
    let opened = Instant::now();
    while hub.receiver_count() < STREAMS {
        assert!(opened.elapsed() < Duration::from_secs(30), "streams open");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for n in 1..=3 {
        hub.send(n).expect("subscribers");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    let signalled = Instant::now();
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("serve returns")
        .expect("server task");
    let took = signalled.elapsed();
    println!("serve returned {took:?} after the signal, {STREAMS} streams open");
    assert!(took < Duration::from_secs(1), "{took:?}");

    for client in clients {
        let body = client.await.expect("client");
        let parsed = whatwg::parse(&body);
        let data: Vec<&str> = parsed.events.iter().map(|e| e.data.as_str()).collect();
        assert_eq!(data, ["tick 1", "tick 2", "tick 3", "restarting"]);
        assert_eq!(parsed.events[3].kind, "shutdown");
        assert_eq!(parsed.retry, Some(5000));
        assert!(body.ends_with(b"retry: 5000\n\n"));
    }
    assert_eq!(closes.load(Ordering::Relaxed), STREAMS);
}

/// The hang the signal prevents: hyper waits for every response to end, and an event stream
/// never does. Shown with 10 streams and a 2 s wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_signal_open_streams_hold_serve_up() {
    let shutdown = CancellationToken::new();
    let (hub, _) = broadcast::channel(64);
    let app = ticks(hub.clone()).layer(SseLayer::new());
    let (addr, server) = serve(app, shutdown.clone()).await;
    let mut clients = Vec::new();
    for _ in 0..10 {
        clients.push(support::subscribe_raw(addr, "/events", "retry: 3000").await);
    }
    shutdown.cancel();
    let server = tokio::time::timeout(Duration::from_secs(2), server).await;
    assert!(server.is_err(), "serve still waits for the open streams");
}
