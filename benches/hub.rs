//! Fan-out on loopback HTTP/1.1: many subscribers, publishes over HTTP (`POST /publish`, one
//! request per event, as an application's publishers reach a hub), three servers side by side:
//! - **hub**: `tower_sse::hub::Hub` behind `SseLayer` (history large enough for the run, so a
//!   subscriber ended for lagging resumes from it, as `EventSource` does);
//! - **axum + broadcast**: the common recipe, a `tokio::sync::broadcast` (capacity 1 024) per
//!   topic and one receiver per subscriber feeding axum's `Sse`, a lagging receiver skipping
//!   what it missed;
//! - **raw + broadcast**: a hyper body per subscriber fed by a broadcast of pre-encoded `Bytes`.
//!
//! Each server runs in a child process (this binary with `--hub-server NAME`), so its CPU time
//! is read from `/proc`; the subscribers and the publishers are hyper clients in this process.
//! Every event carries the wall-clock time it was published at. Cases:
//! - **fan-out**: 10 000 subscribers of one topic, 500 events of 64 B published one after the
//!   other as fast as the server answers: the server's CPU time per delivery, deliveries per
//!   second, the events each subscriber lost, and publish→read latency;
//! - **many topics**: 1 000 topics × 10 subscribers, 4 publishers at once spreading 20 000
//!   events over the topics: the same figures (the topics contend or not);
//! - **paced**: 10 000 subscribers, one event every 10 ms: publish→read latency.
//!
//! `cargo bench --bench hub --features hub` (`TOWER_SSE_HUB_RUNS`, default 3; the soft
//! `ulimit -n` must exceed the subscriber count).

mod common;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
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
use http_body_util::{BodyExt, Empty, Full, StreamBody};
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

/// What every server shares: the hub, or a broadcast sender per topic.
struct Shared {
    hub: Hub,
    layer: SseLayer,
    text: Mutex<HashMap<String, broadcast::Sender<Arc<str>>>>,
    bytes: Mutex<HashMap<String, broadcast::Sender<Bytes>>>,
}

impl Shared {
    /// The topic's broadcast sender, made on first use (the recipe's map of channels).
    fn sender<T: Clone>(
        map: &Mutex<HashMap<String, broadcast::Sender<T>>>,
        topic: &str,
    ) -> broadcast::Sender<T> {
        let mut map = map.lock().expect("lock");
        map.entry(topic.to_owned())
            .or_insert_with(|| broadcast::channel(1024).0)
            .clone()
    }
}

/// The query parameter `name`.
fn param<'a>(query: &'a str, name: &str) -> &'a str {
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
        .unwrap_or("bench")
}

async fn respond(
    server: &str,
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Response<ResponseBody> {
    let path = request.uri().path().to_owned();
    let topic = param(request.uri().query().unwrap_or_default(), "topic").to_owned();
    if path == "/publish" {
        let body = request
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let data = String::from_utf8_lossy(&body).into_owned();
        publish(server, &shared, &topic, data).await;
        return Response::new(Empty::new().map_err(BoxError::from).boxed_unsync());
    }
    match server {
        "hub" => {
            let hub = shared.hub.clone();
            let inner = service_fn(move |request: Request<Incoming>| {
                let hub = hub.clone();
                let topic = topic.clone();
                let last = request
                    .extensions()
                    .get::<tower_sse::LastEventId>()
                    .cloned();
                async move {
                    let subscription = hub.subscribe([topic], last).await.expect("a valid topic");
                    Ok::<_, Infallible>(subscription.into_http())
                }
            });
            let Ok(response) = shared.layer.clone().layer(inner).oneshot(request).await;
            response.map(|body| body.map_err(BoxError::from).boxed_unsync())
        }
        "axum" => {
            let rx = Shared::sender(&shared.text, &topic).subscribe();
            let events =
                receiver(rx).map(|text| Ok::<_, Infallible>(AxumEvent::default().data(&*text)));
            Sse::new(events)
                .into_response()
                .map(|body| body.map_err(BoxError::from).boxed_unsync())
        }
        _ => {
            let rx = Shared::sender(&shared.bytes, &topic).subscribe();
            let frames = receiver(rx).map(|bytes| Ok::<_, BoxError>(Frame::data(bytes)));
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

async fn publish(server: &str, shared: &Shared, topic: &str, data: String) {
    match server {
        "hub" => {
            shared
                .hub
                .publish(topic, Event::default().data(data))
                .await
                .expect("published");
        }
        "axum" => {
            let _ = Shared::sender(&shared.text, topic).send(Arc::from(data));
        }
        _ => {
            let event = Bytes::from(format!("data: {data}\n\n"));
            let _ = Shared::sender(&shared.bytes, topic).send(event);
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
            text: Mutex::default(),
            bytes: Mutex::default(),
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

/// One run's shape: `topics` topics of `per_topic` subscribers each; `publishers` publishers
/// at once, each publishing `events` events (spread over the topics in turn), every `interval`
/// (zero: as fast as the server answers).
#[derive(Clone, Copy)]
struct Shape {
    topics: usize,
    per_topic: usize,
    publishers: usize,
    events: usize,
    interval: Duration,
}

struct Run {
    deliveries_per_sec: f64,
    cpu_seconds: f64,
    cpu_per_delivery_us: f64,
    lost_per_subscriber: f64,
    latencies_us: Samples,
}

/// A client's connection to `addr`, for publishing.
async fn connect(
    addr: std::net::SocketAddr,
) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    sender
}

/// Publishes `data` on `topic` over `sender`, and waits for the answer.
async fn publish_over_http(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    topic: &str,
    data: String,
) {
    sender.ready().await.expect("ready");
    let request = Request::post(format!("/publish?topic={topic}"))
        .body(Full::new(Bytes::from(data)))
        .expect("request");
    let response = sender.send_request(request).await.expect("published");
    let _ = response.into_body().collect().await;
}

/// One run: a fresh server, its subscribers, then the publishers, until every subscriber has
/// its topic's `end` event.
async fn run(server: &str, shape: Shape) -> Run {
    let (mut child, addr) = common::spawn_server(&["--hub-server", server]);
    let pid = child.id();
    let ready = Arc::new(AtomicU64::new(0));
    let subscribers = shape.topics * shape.per_topic;
    let clients: Vec<_> = (0..subscribers)
        .map(|k| {
            let path = format!("/events?topic=t{}", k % shape.topics);
            let ready = ready.clone();
            tokio::spawn(async move { subscriber(addr, &path, ready).await })
        })
        .collect();
    common::wait_ready(&ready, subscribers as u64).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let cpu_before = cpu_seconds(pid);
    let started = Instant::now();
    let publishers: Vec<_> = (0..shape.publishers)
        .map(|p| {
            tokio::spawn(async move {
                let mut sender = connect(addr).await;
                for e in 0..shape.events {
                    let topic = format!("t{}", (p + shape.publishers * e) % shape.topics);
                    publish_over_http(&mut sender, &topic, payload(e as u64, true)).await;
                    if !shape.interval.is_zero() {
                        tokio::time::sleep(shape.interval).await;
                    }
                }
            })
        })
        .collect();
    for publisher in publishers {
        publisher.await.expect("publisher");
    }
    let mut sender = connect(addr).await;
    for topic in 0..shape.topics {
        publish_over_http(&mut sender, &format!("t{topic}"), "end".to_owned()).await;
    }
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
    let cpu = cpu_seconds(pid) - cpu_before;
    let _ = child.kill();
    let _ = child.wait();
    let delivered: u64 = seen.iter().map(|s| s.events).sum();
    let expected = (shape.publishers * shape.events * shape.per_topic) as u64;
    let mut latencies = Samples::default();
    for s in &seen {
        for &l in &s.latencies_us {
            latencies.push(l);
        }
    }
    Run {
        deliveries_per_sec: rate(delivered as usize, elapsed),
        cpu_seconds: cpu,
        cpu_per_delivery_us: cpu * 1e6 / delivered.max(1) as f64,
        lost_per_subscriber: expected.saturating_sub(delivered) as f64 / subscribers as f64,
        latencies_us: latencies,
    }
}

/// Runs every server `runs` times on `shape`, side by side, and prints the rows.
fn compare(runtime: &tokio::runtime::Runtime, runs: usize, case: &str, shape: Shape) {
    let n = SERVERS.len();
    let (mut rates, mut cpu, mut per_delivery, mut lost) = (
        vec![Samples::default(); n],
        vec![Samples::default(); n],
        vec![Samples::default(); n],
        vec![Samples::default(); n],
    );
    let (mut p50, mut p99) = (vec![Samples::default(); n], vec![Samples::default(); n]);
    let (mut rate_ratio, mut cpu_ratio) =
        (vec![Samples::default(); n], vec![Samples::default(); n]);
    let (mut p50_ratio, mut p99_ratio) = (vec![Samples::default(); n], vec![Samples::default(); n]);
    for _ in 0..runs {
        let results: Vec<Run> = SERVERS
            .iter()
            .map(|(server, _)| runtime.block_on(run(server, shape)))
            .collect();
        let ours = &results[0];
        for (i, result) in results.iter().enumerate() {
            rates[i].push(result.deliveries_per_sec);
            cpu[i].push(result.cpu_seconds);
            per_delivery[i].push(result.cpu_per_delivery_us);
            lost[i].push(result.lost_per_subscriber);
            p50[i].push(result.latencies_us.quantile(0.5));
            p99[i].push(result.latencies_us.quantile(0.99));
            rate_ratio[i].push(ours.deliveries_per_sec / result.deliveries_per_sec);
            cpu_ratio[i].push(ours.cpu_per_delivery_us / result.cpu_per_delivery_us);
            p50_ratio[i].push(ours.latencies_us.quantile(0.5) / result.latencies_us.quantile(0.5));
            p99_ratio[i]
                .push(ours.latencies_us.quantile(0.99) / result.latencies_us.quantile(0.99));
        }
    }
    for (i, (_, name)) in SERVERS.iter().enumerate().skip(1) {
        if shape.interval.is_zero() {
            row(
                "hub deliveries/s",
                case,
                Unit::MegaPerSec,
                &rates[0],
                name,
                &rates[i],
                &rate_ratio[i],
            );
            row(
                "hub server CPU per delivery",
                case,
                Unit::Nanos,
                &per_delivery[0],
                name,
                &per_delivery[i],
                &cpu_ratio[i],
            );
        }
        row(
            "hub publish→read p50",
            case,
            Unit::Micros,
            &p50[0],
            name,
            &p50[i],
            &p50_ratio[i],
        );
        row(
            "hub publish→read p99",
            case,
            Unit::Micros,
            &p99[0],
            name,
            &p99[i],
            &p99_ratio[i],
        );
    }
    for (i, (_, name)) in SERVERS.iter().enumerate() {
        println!(
            "| hub | {case}: {name} | server CPU {:.2} s | events lost per subscriber | {:.1} (min {:.1}, max {:.1}) | |",
            cpu[i].median(),
            lost[i].median(),
            lost[i].min(),
            lost[i].max()
        );
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
    let fan_out = Shape {
        topics: 1,
        per_topic: 10_000,
        publishers: 1,
        events: 500,
        interval: Duration::ZERO,
    };
    compare(
        &runtime,
        runs,
        "10 000 subscribers × 500 events of 64 B, HTTP publishes",
        fan_out,
    );
    let many = Shape {
        topics: 1_000,
        per_topic: 10,
        publishers: 4,
        events: 5_000,
        interval: Duration::ZERO,
    };
    compare(
        &runtime,
        runs,
        "1 000 topics × 10 subscribers, 4 publishers × 5 000 events",
        many,
    );
    let paced = Shape {
        events: 100,
        interval: Duration::from_millis(10),
        ..fan_out
    };
    compare(
        &runtime,
        runs.min(1),
        "10 000 subscribers, an event every 10 ms",
        paced,
    );
}
