//! Many concurrent streams on loopback, events flowing, then half the clients vanish at once:
//! every `on_disconnect` fires exactly once, the other half receive every event in order, and
//! the process's RSS stays bounded.
//!
//! 1 000 streams by default (as CI runs it); the full size is
//! `TOWER_SSE_LOAD_STREAMS=10000 cargo test --release --test load -- --nocapture`.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::{body::Body, routing::get, Extension, Router};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{broadcast, watch, Semaphore};
use tokio::time::Instant;
use tower_sse::{CloseReason, Framing, SseLayer};

use support::whatwg;

const TICKS_BEFORE: u64 = 10;
const TICKS_AFTER: u64 = 10;

/// The tick that ends every stream.
const END: u64 = u64::MAX;

/// Streams every tick of the hub as an event with id `<client>:<tick>` (an inner event stream),
/// so a close report names its client; ends at [`END`].
async fn ticks(uri: http::Uri, Extension(hub): Extension<broadcast::Sender<u64>>) -> Body {
    let client = uri
        .query()
        .and_then(|q| q.strip_prefix("client="))
        .unwrap_or("?")
        .to_owned();
    let events = futures_util::stream::unfold(hub.subscribe(), move |mut rx| {
        let client = client.clone();
        async move {
            let tick = rx.recv().await.ok().filter(|tick| *tick != END)?;
            let event = format!("id: {client}:{tick}\ndata: {tick}\n\n");
            Some((Ok::<_, std::io::Error>(event), rx))
        }
    });
    Body::from_stream(events)
}

/// The resident set size of this process, in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("resident pages");
    pages * 4096
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_the_clients_vanish_at_once() {
    let streams: usize = std::env::var("TOWER_SSE_LOAD_STREAMS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000);
    support::raise_open_file_limit(2 * streams as u64 + 100);

    // Reports keyed by client: (reason, count).
    let disconnects: Arc<Mutex<HashMap<usize, u32>>> = Arc::default();
    let closes: Arc<Mutex<Vec<CloseReason>>> = Arc::default();
    let client_of = |info: &tower_sse::CloseInfo| -> usize {
        let id = info.last_event_id.as_deref().expect("an id was sent");
        id.split(':')
            .next()
            .and_then(|c| c.parse().ok())
            .expect("client:tick")
    };
    let (on_disconnect, on_close) = (disconnects.clone(), closes.clone());
    let layer = SseLayer::new()
        .heartbeat(Duration::from_millis(500))
        .framing(Framing::EventStream)
        .on_disconnect(move |info| {
            *on_disconnect
                .lock()
                .expect("lock")
                .entry(client_of(info))
                .or_default() += 1;
        })
        .on_close(move |info| on_close.lock().expect("lock").push(info.reason));
    let (hub, _) = broadcast::channel::<u64>(64);
    let app = Router::new()
        .route("/events", get(ticks))
        .layer(Extension(hub.clone()))
        .layer(layer);
    let addr = support::serve_axum(app).await;

    let rss_before = rss();
    let started = Instant::now();
    // Each client reads until its end; a vanishing client drops its socket when told.
    let (vanish_tx, vanish_rx) = watch::channel(false);
    let connecting = Arc::new(Semaphore::new(200));
    let mut clients = Vec::with_capacity(streams);
    for client in 0..streams {
        let connecting = connecting.clone();
        let mut vanish = vanish_rx.clone();
        let vanishes = client % 2 == 1;
        clients.push(tokio::spawn(async move {
            let permit = connecting.acquire_owned().await.expect("semaphore");
            let mut tcp = TcpStream::connect(addr).await.expect("connect");
            let head = format!(
                "GET /events?client={client} HTTP/1.1\r\nhost: {addr}\r\n\
                 accept: text/event-stream\r\nconnection: close\r\n\r\n"
            );
            tcp.write_all(head.as_bytes()).await.expect("request");
            drop(permit);
            let mut received = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                tokio::select! {
                    read = tcp.read(&mut buf) => match read.expect("read") {
                        0 => return Some(received),
                        n => received.extend_from_slice(&buf[..n]),
                    },
                    _ = vanish.wait_for(|now| *now), if vanishes => return None,
                }
            }
        }));
    }
    while hub.receiver_count() < streams {
        assert!(started.elapsed() < Duration::from_secs(120), "streams open");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let opened_in = started.elapsed();
    let rss_open = rss();

    for tick in 1..=TICKS_BEFORE {
        hub.send(tick).expect("subscribers");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let vanished_at = Instant::now();
    vanish_tx.send(true).expect("clients");
    let half = streams / 2;
    // Every vanished client is reported once, by its last id.
    while disconnects.lock().expect("lock").len() < half {
        assert!(
            vanished_at.elapsed() < Duration::from_secs(30),
            "reports: {}",
            disconnects.lock().expect("lock").len()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let reported_in = vanished_at.elapsed();
    for tick in TICKS_BEFORE + 1..=TICKS_BEFORE + TICKS_AFTER {
        hub.send(tick).expect("subscribers");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rss_after = rss();
    hub.send(END).expect("subscribers");

    let mut kept = 0;
    for client in clients {
        let received = tokio::time::timeout(Duration::from_secs(60), client)
            .await
            .expect("client ends")
            .expect("client task");
        let Some(received) = received else { continue };
        kept += 1;
        let (body, complete) = support::dechunk(&received);
        assert!(complete, "a finished chunked body");
        let ticks: Vec<String> = whatwg::parse(&body)
            .events
            .into_iter()
            .map(|event| event.data)
            .collect();
        let expected: Vec<String> = (1..=TICKS_BEFORE + TICKS_AFTER)
            .map(|t| t.to_string())
            .collect();
        assert_eq!(ticks, expected, "every event, in order");
    }
    let total = started.elapsed();
    // Late duplicates would show up here.
    tokio::time::sleep(Duration::from_millis(200)).await;

    assert_eq!(kept, streams - half);
    let disconnects = disconnects.lock().expect("lock").clone();
    assert_eq!(disconnects.len(), half);
    assert!(disconnects
        .iter()
        .all(|(client, n)| client % 2 == 1 && *n == 1));
    let closes = closes.lock().expect("lock").clone();
    let count = |reason| closes.iter().filter(|r| **r == reason).count();
    assert_eq!(closes.len(), streams);
    assert_eq!(count(CloseReason::ClientGone), half);
    assert_eq!(count(CloseReason::Completed), streams - half);

    let mib = |bytes: u64| bytes as f64 / (1 << 20) as f64;
    let per_stream = rss_open.saturating_sub(rss_before) / streams as u64;
    println!(
        "{streams} streams (clients in the same process): opened in {opened_in:?}; \
         {half} vanished, all reported once in {reported_in:?}; {kept} received all {} events; \
         RSS {:.1} MiB before, {:.1} MiB open ({per_stream} B per stream, both ends), \
         {:.1} MiB after the vanishing; {total:?} in all",
        TICKS_BEFORE + TICKS_AFTER,
        mib(rss_before),
        mib(rss_open),
        mib(rss_after),
    );
    // Both ends of a stream (client and server socket, tasks, buffers) fit in 64 KiB, and the
    // vanishing frees rather than grows.
    assert!(per_stream < 64 * 1024, "{per_stream} B per stream");
    assert!(
        rss_after <= rss_open + (8 << 20),
        "RSS grew after the vanishing"
    );
}
