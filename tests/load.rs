//! Many concurrent streams on loopback, events flowing, then half the clients vanish at once:
//! every `on_disconnect` fires exactly once, the other half receive every event in order, and
//! the server's RSS stays bounded.
//!
//! The clients run in a second process (this test binary again, running [`client_fleet`]), so
//! each side has its own open file limit and the server's RSS is its own. 1 000 streams by
//! default (as CI runs it); the full size is
//! `TOWER_SSE_LOAD_STREAMS=10000 cargo test --release --test load -- --nocapture`.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::{body::Body, routing::get, Extension, Router};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::Command;
use tokio::sync::{broadcast, watch, Semaphore};
use tokio::time::Instant;
use tower_sse::{CloseInfo, CloseReason, Framing, SseLayer};

use support::whatwg;

const TICKS_BEFORE: u64 = 10;
const TICKS_AFTER: u64 = 10;
/// The tick that ends every stream.
const END: u64 = u64::MAX;

fn streams() -> usize {
    std::env::var("TOWER_SSE_LOAD_STREAMS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000)
}

/// Streams every tick of the hub as an event with id `<client>:<tick>` (an inner event stream),
/// so a close report names its client; ends at [`END`].
async fn ticks(uri: http::Uri, Extension(hub): Extension<broadcast::Sender<u64>>) -> Body {
    let client = uri.query().and_then(|q| q.strip_prefix("client="));
    let client = client.unwrap_or("?").to_owned();
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

fn client_of(info: &CloseInfo) -> usize {
    let id = info.last_event_id.as_deref().expect("an id was sent");
    let client = id.split(':').next().and_then(|c| c.parse().ok());
    client.expect("id is client:tick")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_the_clients_vanish_at_once() {
    let streams = streams();
    let half = streams / 2;
    support::raise_open_file_limit(streams as u64 + 100);

    let disconnects: Arc<Mutex<HashMap<usize, u32>>> = Arc::default();
    let closes: Arc<Mutex<Vec<CloseReason>>> = Arc::default();
    let (on_disconnect, on_close) = (disconnects.clone(), closes.clone());
    let layer = SseLayer::new()
        .heartbeat(Duration::from_millis(500))
        .framing(Framing::EventStream)
        .on_disconnect(move |info| {
            let mut disconnects = on_disconnect.lock().expect("lock");
            *disconnects.entry(client_of(info)).or_default() += 1;
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
    let mut fleet = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "client_fleet", "--ignored", "--nocapture"])
        .env("TOWER_SSE_LOAD_ADDR", addr.to_string())
        .env("TOWER_SSE_LOAD_STREAMS", streams.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the client fleet");
    let mut orders = fleet.stdin.take().expect("stdin");
    let mut reports = BufReader::new(fleet.stdout.take().expect("stdout")).lines();
    let mut expect_report = async |prefix: &str| -> String {
        loop {
            let line = tokio::time::timeout(Duration::from_secs(120), reports.next_line())
                .await
                .expect("the fleet reports in time")
                .expect("read the fleet")
                .unwrap_or_else(|| panic!("the fleet ended before `{prefix}`"));
            if let Some(report) = line.strip_prefix(prefix) {
                return report.to_owned();
            }
        }
    };

    expect_report("fleet: open").await;
    while hub.receiver_count() < streams {
        assert!(started.elapsed() < Duration::from_secs(120), "streams open");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let opened_in = started.elapsed();
    let rss_open = rss();
    for tick in 1..=TICKS_BEFORE {
        hub.send(tick).expect("subscribers");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let vanished_at = Instant::now();
    orders
        .write_all(b"vanish\n")
        .await
        .expect("order the fleet");
    expect_report("fleet: vanished").await;
    while disconnects.lock().expect("lock").len() < half {
        let reported = disconnects.lock().expect("lock").len();
        assert!(
            vanished_at.elapsed() < Duration::from_secs(30),
            "{reported} reports"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let reported_in = vanished_at.elapsed();
    for tick in TICKS_BEFORE + 1..=TICKS_BEFORE + TICKS_AFTER {
        hub.send(tick).expect("subscribers");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rss_after = rss();
    hub.send(END).expect("subscribers");
    let kept: usize = expect_report("fleet: done, kept ")
        .await
        .parse()
        .expect("a count");
    let status = fleet.wait().await.expect("the fleet exits");
    assert!(status.success(), "the fleet failed: {status}");
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
        "{streams} streams: opened in {opened_in:?}; {half} clients vanished, each reported once \
         within {reported_in:?}; {kept} received all {} events in order; server RSS \
         {:.1} MiB before, {:.1} MiB open ({per_stream} B per stream), {:.1} MiB after the \
         vanishing; {total:?} in all",
        TICKS_BEFORE + TICKS_AFTER,
        mib(rss_before),
        mib(rss_open),
        mib(rss_after),
    );
    assert!(per_stream < 32 * 1024, "{per_stream} B per stream");
    assert!(
        rss_after <= rss_open + (8 << 20),
        "RSS grew after the vanishing"
    );
}

/// The clients of [`half_the_clients_vanish_at_once`], in their own process. Reports on stdout
/// and takes the order to vanish on stdin; every odd client vanishes, every even one checks it
/// received every tick in order and a finished body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by half_the_clients_vanish_at_once, in its own process"]
async fn client_fleet() {
    let addr: std::net::SocketAddr = std::env::var("TOWER_SSE_LOAD_ADDR")
        .expect("run by half_the_clients_vanish_at_once")
        .parse()
        .expect("an address");
    let streams = streams();
    support::raise_open_file_limit(streams as u64 + 100);

    let (vanish_tx, vanish_rx) = watch::channel(false);
    let (open_tx, mut open_rx) = tokio::sync::mpsc::channel::<()>(streams.max(1));
    let connecting = Arc::new(Semaphore::new(200));
    let mut clients = Vec::with_capacity(streams);
    for client in 0..streams {
        let (connecting, open_tx) = (connecting.clone(), open_tx.clone());
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
            let mut received = Vec::new();
            let mut buf = [0u8; 4096];
            let mut open = Some((permit, open_tx));
            loop {
                tokio::select! {
                    read = tcp.read(&mut buf) => match read.expect("read") {
                        0 => return Some(received),
                        n => received.extend_from_slice(&buf[..n]),
                    },
                    _ = vanish.wait_for(|now| *now), if vanishes => return None,
                }
                if open.is_some() && received.windows(4).any(|w| w == b"\r\n\r\n") {
                    let (_permit, open_tx) = open.take().expect("once");
                    let _ = open_tx.send(()).await;
                }
            }
        }));
    }
    drop(open_tx);
    for _ in 0..streams {
        open_rx.recv().await.expect("every client opens");
    }
    println!("fleet: open");

    let mut orders = BufReader::new(tokio::io::stdin()).lines();
    while orders.next_line().await.expect("orders").as_deref() != Some("vanish") {}
    vanish_tx.send(true).expect("clients");
    println!("fleet: vanished");

    let mut kept = 0;
    let expected: Vec<String> = (1..=TICKS_BEFORE + TICKS_AFTER)
        .map(|tick| tick.to_string())
        .collect();
    for client in clients {
        let Some(received) = client.await.expect("client task") else {
            continue;
        };
        let (body, complete) = support::dechunk(&received);
        assert!(complete, "a finished chunked body");
        let ticks: Vec<String> = whatwg::parse(&body)
            .events
            .into_iter()
            .map(|event| event.data)
            .collect();
        assert_eq!(ticks, expected, "every event, in order");
        kept += 1;
    }
    println!("fleet: done, kept {kept}");
}
