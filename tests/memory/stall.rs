//! A client that stops reading, over real TCP, with a producer as fast as it can be: the stall
//! is found within the write deadline, the producer stops, memory stays bounded, and the client
//! gets a clean end if it reads again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::{body::Body, routing::get, Extension, Router};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tower_sse::{CloseInfo, CloseReason, Disconnect, SseLayer};

use support::whatwg;

const EVENT_SIZE: usize = 1024;

/// Events of 1 KiB numbered from 0, always ready, until the `Disconnect` handle resolves.
async fn firehose(
    Extension(disconnect): Extension<Disconnect>,
    Extension(produced): Extension<Arc<AtomicU64>>,
) -> Body {
    let events = futures_util::stream::iter(0u64..)
        .take_while(move |_| std::future::ready(!disconnect.is_disconnected()))
        .map(move |n| {
            produced.fetch_add(1, Ordering::Relaxed);
            Ok::<_, std::io::Error>(format!("{n:0>width$}", width = EVENT_SIZE))
        });
    Body::from_stream(events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_found_stalled_within_the_deadline() {
    let deadline = Duration::from_millis(500);
    let produced = Arc::new(AtomicU64::new(0));
    let (closed_tx, mut closed_rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, CloseInfo)>();
    let layer = SseLayer::new()
        .write_deadline(deadline)
        .on_disconnect(move |info| {
            let _ = closed_tx.send((Instant::now(), info.clone()));
        });
    let app = Router::new()
        .route("/events", get(firehose))
        .layer(Extension(produced.clone()))
        .layer(layer);
    let addr = support::serve_axum(app).await;

    let _alone = support::alloc_counter::alone().await;
    let before = support::alloc_counter::reset_peak();
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    let head = format!("GET /events HTTP/1.1\r\nhost: {addr}\r\naccept: text/event-stream\r\nconnection: close\r\n\r\n");
    tcp.write_all(head.as_bytes()).await.expect("request");
    let mut received = vec![0u8; 64 * 1024];
    let n = tcp.read(&mut received).await.expect("read");
    received.truncate(n);
    // The client stops reading now; the producer fills every buffer on the way.
    let stopped = Instant::now();

    let (found, info) = tokio::time::timeout(deadline * 10, closed_rx.recv())
        .await
        .expect("found in time")
        .expect("reported");
    let detection = found - stopped;
    let produced_then = produced.load(Ordering::Relaxed);
    println!(
        "stalled client found {detection:?} after it stopped reading (deadline {deadline:?}); \
         {produced_then} events produced; {} bytes handed on",
        info.bytes
    );
    assert_eq!(info.reason, CloseReason::Stalled);
    assert!(detection >= deadline, "{detection:?}");
    assert!(
        detection < deadline + Duration::from_secs(1),
        "{detection:?}"
    );

    // The producer stopped, and what the connection holds is bounded by the buffers on the way,
    // not by the producer's speed.
    tokio::time::sleep(deadline).await;
    let held = support::alloc_counter::peak().saturating_sub(before);
    assert_eq!(
        produced.load(Ordering::Relaxed),
        produced_then,
        "producer stopped"
    );
    println!("peak heap growth while stalled: {held} bytes");
    assert!(held < 4 << 20, "{held} bytes held");
    assert!(
        produced_then < 64 * 1024,
        "{produced_then} events: backpressure held"
    );

    // The client reads again: everything handed on arrives, whole, then a clean end.
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut rest))
        .await
        .expect("the end arrives")
        .expect("read");
    received.extend_from_slice(&rest);
    let (body, complete) = support::dechunk(&received);
    assert!(complete, "the chunked body was finished");
    assert!(body.ends_with(b"\n\n"));
    let parsed = whatwg::parse(&body);
    assert!(!parsed.events.is_empty());
    for (n, event) in parsed.events.iter().enumerate() {
        assert_eq!(event.data, format!("{n:0>width$}", width = EVENT_SIZE));
    }
    assert!(closed_rx.try_recv().is_err(), "reported once");
}
