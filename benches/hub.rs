//! Fan-out on loopback HTTP/1.1: one publisher, many subscribers, three servers side by side:
//! - **hub**: `tower_sse::hub::Hub` behind `SseLayer` (history large enough for the run, so a
//!   subscriber ended for lagging resumes from it, as `EventSource` does);
//! - **axum + broadcast**: the common recipe, `tokio::sync::broadcast` (capacity 1 024) and one
//!   receiver per subscriber feeding axum's `Sse`, a lagging receiver skipping what it missed;
//! - **raw + broadcast**: a hyper body per subscriber fed by a broadcast of pre-encoded `Bytes`.
//!
//! Each server runs in a child process (this binary with `--hub-server NAME`), so its CPU time
//! is read from `/proc`; the subscribers are hyper clients in this process. Cases:
//! - **fan-out**: the publisher publishes 64 B events as fast as `publish` (or `send`) returns:
//!   deliveries per second until every subscriber has the last event, the server's CPU seconds,
//!   and the events each subscriber lost;
//! - **latency**: 10 000 subscribers, one event every 10 ms: from the publish to the client's
//!   read returning it (the event carries the wall-clock time it was published at).
//!
//! `cargo bench --bench hub --features hub` (`TOWER_SSE_HUB_RUNS`, default 3; the soft
//! `ulimit -n` must exceed the subscriber count).

mod common;

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::response::sse::{Event as AxumEvent, Sse};
use axum::response::IntoResponse;
use bytes::Bytes;
use common::subscriber::{payload, subscriber};
use common::{rate, row, Samples, Unit};
use futures_util::StreamExt;
use http::{Request, Response};
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::sync::broadcast;
use tower::{service_fn, Layer, ServiceExt};
use tower_sse::hub::Hub;
use tower_sse::{Event, SseLayer};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type ResponseBody = UnsyncBoxBody<Bytes, BoxError>;

const SERVERS: [(&str, &str); 3] = [
    ("hub", "tower-sse hub"),
    ("axum", "axum Sse + broadcast"),
    ("raw", "raw hyper + broadcast"),
];

/// What every server shares: the hub, or the broadcast sender.
struct Shared {
    hub: Hub,
    layer: SseLayer,
    text: broadcast::Sender<Arc<str>>,
    bytes: broadcast::Sender<Bytes>,
}

async fn respond(
    server: &str,
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Response<ResponseBody> {
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or_default().to_owned();
    if path == "/run" {
        let param = |name: &str| {
            query
                .split('&')
                .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
                .and_then(|value| value.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let (count, interval) = (param("count"), Duration::from_micros(param("interval_us")));
        let timed = !interval.is_zero();
        for n in 0..count {
            publish(server, &shared, payload(n, timed)).await;
            // Untimed, the publisher never yields: as fast as `publish` (or `send`) returns.
            if timed {
                tokio::time::sleep(interval).await;
            }
        }
        publish(server, &shared, "end".to_owned()).await;
        return Response::new(Empty::new().map_err(BoxError::from).boxed_unsync());
    }
    match server {
        "hub" => {
            let hub = shared.hub.clone();
            let inner = service_fn(move |request: Request<Incoming>| {
                let hub = hub.clone();
                let last = request
                    .extensions()
                    .get::<tower_sse::LastEventId>()
                    .cloned();
                async move {
                    let subscription = hub.subscribe(["bench"], last).await.expect("a valid topic");
                    Ok::<_, Infallible>(subscription.into_http())
                }
            });
            let Ok(response) = shared.layer.clone().layer(inner).oneshot(request).await;
            response.map(|body| body.map_err(BoxError::from).boxed_unsync())
        }
        "axum" => {
            let events = receiver(shared.text.subscribe())
                .map(|text| Ok::<_, Infallible>(AxumEvent::default().data(&*text)));
            Sse::new(events)
                .into_response()
                .map(|body| body.map_err(BoxError::from).boxed_unsync())
        }
        _ => {
            let frames = receiver(shared.bytes.subscribe())
                .map(|bytes| Ok::<_, BoxError>(Frame::data(bytes)));
            let mut response = Response::new(StreamBody::new(frames).boxed_unsync());
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/event-stream"),
            );
            response
        }
    }
}

/// A broadcast receiver as a stream, skipping what it lagged behind (the common recipe).
fn receiver<T: Clone + Send + 'static>(
    rx: broadcast::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send {
    futures_util::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(value) => return Some((value, rx)),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

async fn publish(server: &str, shared: &Shared, data: String) {
    match server {
        "hub" => {
            shared
                .hub
                .publish("bench", Event::default().data(data))
                .await
                .expect("published");
        }
        "axum" => {
            let _ = shared.text.send(Arc::from(data));
        }
        _ => {
            let _ = shared.bytes.send(Bytes::from(format!("data: {data}\n\n")));
        }
    }
}

/// The child process: serves `server` until killed.
fn run_server(server: &'static str) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let shared = Arc::new(Shared {
            hub: Hub::builder().history(1 << 20, 256 << 20).build(),
            layer: SseLayer::new().heartbeat(Duration::from_secs(15)),
            text: broadcast::channel(1024).0,
            bytes: broadcast::channel(1024).0,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        println!("{}", listener.local_addr().expect("address"));
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let shared = shared.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let shared = shared.clone();
                    async move { Ok::<_, Infallible>(respond(server, shared, request).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

fn cpu_seconds(pid: u32) -> f64 {
    common::cpu_ticks(pid) / 100.0
}

struct Run {
    deliveries_per_sec: f64,
    cpu_seconds: f64,
    lost_per_subscriber: f64,
    latencies_us: Samples,
}

/// One run: a fresh server, `subscribers` clients, `count` events (paced by `interval`).
async fn run(server: &str, subscribers: usize, count: u64, interval: Duration) -> Run {
    let (mut child, addr) = common::spawn_server(&["--hub-server", server]);
    let pid = child.id();
    let ready = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..subscribers)
        .map(|_| tokio::spawn(subscriber(addr, "/events", ready.clone())))
        .collect();
    while ready.load(Ordering::Relaxed) < subscribers as u64 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let cpu_before = cpu_seconds(pid);
    let started = Instant::now();
    let control = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(control))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    let path = format!("/run?count={count}&interval_us={}", interval.as_micros());
    let published = sender.send_request(
        Request::post(path)
            .body(Empty::<Bytes>::new())
            .expect("request"),
    );
    let published = tokio::spawn(published);
    let mut seen = Vec::with_capacity(subscribers);
    for client in clients {
        seen.push(
            tokio::time::timeout(Duration::from_secs(120), client)
                .await
                .expect("the end arrives")
                .expect("client"),
        );
    }
    let elapsed = started.elapsed();
    let _ = published.await;
    let cpu = cpu_seconds(pid) - cpu_before;
    let _ = child.kill();
    let _ = child.wait();
    let delivered: u64 = seen.iter().map(|s| s.events).sum();
    let expected = count * subscribers as u64;
    let mut latencies = Samples::default();
    for s in &seen {
        for &l in &s.latencies_us {
            latencies.push(l);
        }
    }
    Run {
        deliveries_per_sec: rate(delivered as usize, elapsed),
        cpu_seconds: cpu,
        lost_per_subscriber: expected.saturating_sub(delivered) as f64 / subscribers as f64,
        latencies_us: latencies,
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() == Some("--hub-server") {
        let server = args.next().unwrap_or_default();
        let server = SERVERS
            .iter()
            .find(|(name, _)| *name == server)
            .map_or("raw", |(name, _)| name);
        return run_server(server);
    }
    common::header_if_alone();
    let runs: usize = std::env::var("TOWER_SSE_HUB_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    for (subscribers, count) in [(1_000, 2_000), (10_000, 200)] {
        let mut rates = vec![Samples::default(); SERVERS.len()];
        let mut cpu = vec![Samples::default(); SERVERS.len()];
        let mut lost = vec![Samples::default(); SERVERS.len()];
        let mut rate_ratio = vec![Samples::default(); SERVERS.len()];
        for _ in 0..runs {
            let results: Vec<Run> = SERVERS
                .iter()
                .map(|(server, _)| {
                    runtime.block_on(run(server, subscribers, count, Duration::ZERO))
                })
                .collect();
            for (i, result) in results.iter().enumerate() {
                rates[i].push(result.deliveries_per_sec);
                cpu[i].push(result.cpu_seconds);
                lost[i].push(result.lost_per_subscriber);
                rate_ratio[i].push(results[0].deliveries_per_sec / result.deliveries_per_sec);
            }
        }
        let case = format!("{subscribers} subscribers, {count} events of 64 B");
        for (i, (_, name)) in SERVERS.iter().enumerate().skip(1) {
            row(
                "hub fan-out deliveries/s",
                &case,
                Unit::MegaPerSec,
                &rates[0],
                name,
                &rates[i],
                &rate_ratio[i],
            );
        }
        for (i, (_, name)) in SERVERS.iter().enumerate() {
            println!(
                "| hub fan-out | {case}: {name} | server CPU {:.2} s | events lost per subscriber | {:.1} (min {:.1}, max {:.1}) | |",
                cpu[i].median(),
                lost[i].median(),
                lost[i].min(),
                lost[i].max()
            );
        }
    }
    let (subscribers, count) = (10_000, 100);
    let results: Vec<Run> = SERVERS
        .iter()
        .take(2)
        .map(|(server, _)| {
            runtime.block_on(run(server, subscribers, count, Duration::from_millis(10)))
        })
        .collect();
    let case = format!("{subscribers} subscribers, one event every 10 ms");
    for q in [0.5, 0.99] {
        let ours = Samples::from(vec![results[0].latencies_us.quantile(q)]);
        let theirs = Samples::from(vec![results[1].latencies_us.quantile(q)]);
        let ratio = Samples::from(vec![ours.median() / theirs.median()]);
        row(
            &format!("hub latency p{}", (q * 100.0) as u32),
            &case,
            Unit::Micros,
            &ours,
            SERVERS[1].1,
            &theirs,
            &ratio,
        );
    }
}
