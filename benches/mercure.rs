//! The Mercure protocol's cost: `mercure::MercureHub` against the hub's own HTTP interface (as
//! `examples/hub.rs` serves it), both on the embedded hub behind `SseLayer`, on loopback
//! HTTP/1.1, publishes over HTTP one request per event:
//! - **mercure**: `GET /.well-known/mercure?match=TOPIC` (anonymous), `POST` of a form with a
//!   JWT verified on every publish; every update goes to the one hub topic the service uses,
//!   and each subscriber (an exact matcher: an interest in its topic) is woken by the updates on
//!   its topic and reads them from the ring's index, through its filter;
//! - **hub**: `GET /events/TOPIC`, `POST /publish/TOPIC` with a bearer token compared as a
//!   string; one hub topic per topic.
//!
//! Each server runs in a child process (this binary with `--mercure-server NAME`), so its CPU
//! time is read from `/proc`; subscribers and publishers are hyper clients in this process.
//! Cases: **fan-out** (10 000 subscribers of one topic, 500 events of 64 B as fast as the server
//! answers), **many topics** (1 000 topics × 10 subscribers, 4 publishers × 1 000 events: one
//! hub topic for all against a hub topic each), **paced** (10 000 subscribers, an event
//! every 10 ms: publish→read latency).
//!
//! `cargo bench --bench mercure --features mercure,axum` (`TOWER_SSE_MERCURE_RUNS`, default 3;
//! `TOWER_SSE_MERCURE_CASES`, a comma list of `fan-out`, `many`, `paced`, default all; the soft
//! `ulimit -n` must exceed the subscriber count).

mod common;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use bytes::Bytes;
use common::subscriber::{payload, subscriber, subscriber_with};
use common::{rate, row, Samples, Unit};
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tower_sse::hub::Hub;
use tower_sse::mercure::{MercureHub, TokenKey, Verifier, AUTHORIZATION_DETAIL_TYPE};
use tower_sse::{Event, LastEventId, SseLayer};

const SERVERS: [(&str, &str); 2] = [("mercure", "Mercure"), ("hub", "hub HTTP interface")];
const KEY: &[u8] = b"!ChangeThisMercureHubJWTSecretKey!";
const HUB_URL: &str = "https://localhost/.well-known/mercure";
const HUB_TOKEN: &str = "bench-token";

/// A publisher's token: publish on every topic.
fn publisher_token() -> String {
    let claims = serde_json::json!({
        "aud": HUB_URL,
        "iss": "https://localhost",
        "exp": 4_102_444_800u64,
        "authorization_details": [{
            "type": AUTHORIZATION_DETAIL_TYPE,
            "actions": ["publish"],
            "topics": [{ "match": "*" }],
        }],
    });
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.typ = Some("at+jwt".into());
    jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(KEY),
    )
    .expect("token")
}

/// The hub interface's subscription.
async fn events(
    State(hub): State<Hub>,
    Path(topic): Path<String>,
    headers: HeaderMap,
    last: Option<Extension<LastEventId>>,
) -> Response {
    if !authorised(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    match hub.subscribe([topic], last.map(|Extension(id)| id)).await {
        Ok(subscription) => subscription.into_http().map(axum::body::Body::new),
        Err(error) => error.into_http().map(axum::body::Body::from),
    }
}

/// The hub interface's publish.
async fn publish(
    State(hub): State<Hub>,
    Path(topic): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    if !authorised(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    match hub.publish(&topic, Event::default().data(body)).await {
        Ok(id) => id.into_response(),
        Err(error) => error.into_http().map(axum::body::Body::from),
    }
}

fn authorised(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        == Some(HUB_TOKEN)
}

/// The child process: serves `server` until killed.
fn run_server(server: &str) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let hub = Hub::builder().history(1 << 20, 256 << 20).build();
        let layer = SseLayer::new().heartbeat(Duration::from_secs(15));
        let router = if server == "mercure" {
            let url = url::Url::parse(HUB_URL).expect("url");
            let verifier = Verifier::new(TokenKey::hmac(KEY), url.clone());
            let mercure = MercureHub::builder(hub, url)
                .publishers(verifier.clone())
                .subscribers(verifier)
                .anonymous(true)
                .build();
            Router::new()
                .nest_service("/.well-known/mercure", mercure)
                .layer(layer)
        } else {
            Router::new()
                .route("/events/{topic}", get(events))
                .route("/publish/{topic}", post(publish))
                .with_state(hub)
                .layer(layer)
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        println!("{}", listener.local_addr().expect("address"));
        let _ = axum::serve(listener, router).await;
    });
}

/// One run's shape, as in `benches/hub.rs`.
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
    cpu_per_delivery_us: f64,
    lost_per_subscriber: f64,
    latencies_us: Samples,
}

/// A publisher's connection to `addr`.
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

/// Publishes `data` on `topic` to `server`, and waits for the `200`.
async fn publish_over_http(
    server: &str,
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    token: &str,
    topic: &str,
    data: String,
) {
    sender.ready().await.expect("ready");
    let request = if server == "mercure" {
        Request::post("/.well-known/mercure")
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(format!("topic={topic}&data={data}"))))
    } else {
        Request::post(format!("/publish/{topic}"))
            .header("authorization", format!("Bearer {HUB_TOKEN}"))
            .body(Full::new(Bytes::from(data)))
    };
    let response = sender
        .send_request(request.expect("request"))
        .await
        .expect("published");
    assert!(response.status().is_success(), "{}", response.status());
    let _ = response.into_body().collect().await;
}

/// One run: a fresh server, its subscribers, then the publishers, until every subscriber has
/// its topic's `end` event.
async fn run(server: &'static str, shape: Shape) -> Run {
    let (mut child, addr) = common::spawn_server(&["--mercure-server", server]);
    let pid = child.id();
    let token = Arc::new(publisher_token());
    let ready = Arc::new(AtomicU64::new(0));
    let subscribers = shape.topics * shape.per_topic;
    let clients: Vec<_> = (0..subscribers)
        .map(|k| {
            let topic = k % shape.topics;
            let path = if server == "mercure" {
                format!("/.well-known/mercure?match=t{topic}")
            } else {
                format!("/events/t{topic}")
            };
            let ready = ready.clone();
            tokio::spawn(async move {
                if server == "mercure" {
                    subscriber(addr, &path, ready).await
                } else {
                    let auth = format!("Bearer {HUB_TOKEN}");
                    subscriber_with(addr, &path, &[("authorization", &auth)], ready).await
                }
            })
        })
        .collect();
    common::wait_ready(&ready, subscribers as u64).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let cpu_before = common::cpu_ticks(pid) / 100.0;
    let started = Instant::now();
    let publishers: Vec<_> = (0..shape.publishers)
        .map(|p| {
            let token = token.clone();
            tokio::spawn(async move {
                let mut sender = connect(addr).await;
                for e in 0..shape.events {
                    let topic = format!("t{}", (p + shape.publishers * e) % shape.topics);
                    let data = payload(e as u64, true);
                    publish_over_http(server, &mut sender, &token, &topic, data).await;
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
        let topic = format!("t{topic}");
        publish_over_http(server, &mut sender, &token, &topic, "end".into()).await;
    }
    let mut seen = Vec::with_capacity(subscribers);
    for client in clients {
        seen.push(
            tokio::time::timeout(Duration::from_secs(300), client)
                .await
                .expect("the end arrives")
                .expect("client"),
        );
    }
    let elapsed = started.elapsed();
    let cpu = common::cpu_ticks(pid) / 100.0 - cpu_before;
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
        cpu_per_delivery_us: cpu * 1e6 / delivered.max(1) as f64,
        lost_per_subscriber: expected.saturating_sub(delivered) as f64 / subscribers as f64,
        latencies_us: latencies,
    }
}

/// Runs both servers `runs` times on `shape`, side by side, and prints the rows.
fn compare(runtime: &tokio::runtime::Runtime, runs: usize, case: &str, shape: Shape) {
    let n = SERVERS.len();
    let mut rates = vec![Samples::default(); n];
    let mut per_delivery = vec![Samples::default(); n];
    let mut lost = vec![Samples::default(); n];
    let (mut p50, mut p99) = (vec![Samples::default(); n], vec![Samples::default(); n]);
    let mut ratios: Vec<Vec<Samples>> = vec![vec![Samples::default(); 4]; n];
    for _ in 0..runs {
        let results: Vec<Run> = SERVERS
            .iter()
            .map(|(server, _)| runtime.block_on(run(server, shape)))
            .collect();
        let ours = &results[0];
        for (i, result) in results.iter().enumerate() {
            rates[i].push(result.deliveries_per_sec);
            per_delivery[i].push(result.cpu_per_delivery_us);
            lost[i].push(result.lost_per_subscriber);
            p50[i].push(result.latencies_us.quantile(0.5));
            p99[i].push(result.latencies_us.quantile(0.99));
            ratios[i][0].push(ours.deliveries_per_sec / result.deliveries_per_sec);
            ratios[i][1].push(ours.cpu_per_delivery_us / result.cpu_per_delivery_us);
            ratios[i][2].push(ours.latencies_us.quantile(0.5) / result.latencies_us.quantile(0.5));
            ratios[i][3]
                .push(ours.latencies_us.quantile(0.99) / result.latencies_us.quantile(0.99));
        }
    }
    let name = SERVERS[1].1;
    if shape.interval.is_zero() {
        row(
            "mercure deliveries/s",
            case,
            Unit::MegaPerSec,
            &rates[0],
            name,
            &rates[1],
            &ratios[1][0],
        );
        row(
            "mercure server CPU per delivery",
            case,
            Unit::Nanos,
            &per_delivery[0],
            name,
            &per_delivery[1],
            &ratios[1][1],
        );
    }
    row(
        "mercure publish→read p50",
        case,
        Unit::Micros,
        &p50[0],
        name,
        &p50[1],
        &ratios[1][2],
    );
    row(
        "mercure publish→read p99",
        case,
        Unit::Micros,
        &p99[0],
        name,
        &p99[1],
        &ratios[1][3],
    );
    for (i, (_, name)) in SERVERS.iter().enumerate() {
        println!(
            "| mercure | {case}: {name} | events lost per subscriber | {:.1} (min {:.1}, max {:.1}) | | |",
            lost[i].median(),
            lost[i].min(),
            lost[i].max()
        );
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() == Some("--mercure-server") {
        let server = args.next().unwrap_or_default();
        return run_server(&server);
    }
    common::header_if_alone();
    let runs: usize = std::env::var("TOWER_SSE_MERCURE_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let cases = std::env::var("TOWER_SSE_MERCURE_CASES").unwrap_or_default();
    let runs_case = |case: &str| cases.is_empty() || cases.split(',').any(|c| c.trim() == case);
    let fan_out = Shape {
        topics: 1,
        per_topic: 10_000,
        publishers: 1,
        events: 500,
        interval: Duration::ZERO,
    };
    if runs_case("fan-out") {
        compare(
            &runtime,
            runs,
            "10 000 subscribers × 500 events of 64 B",
            fan_out,
        );
    }
    let many = Shape {
        topics: 1_000,
        per_topic: 10,
        publishers: 4,
        events: 1_000,
        interval: Duration::ZERO,
    };
    if runs_case("many") {
        compare(
            &runtime,
            runs,
            "1 000 topics × 10 subscribers, 4 publishers × 1 000 events",
            many,
        );
    }
    let paced = Shape {
        events: 100,
        interval: Duration::from_millis(10),
        ..fan_out
    };
    if runs_case("paced") {
        compare(
            &runtime,
            runs.min(1),
            "10 000 subscribers, an event every 10 ms",
            paced,
        );
    }
}
