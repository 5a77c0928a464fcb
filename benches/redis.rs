//! The price of scale-out: the hub on Redis Streams against the embedded hub, side by side in
//! one run, on a real `redis-server` this bench starts on a free port (Debian's 7.0 here).
//!
//! - **latency**: one event every 10 ms, 300 of them, from the publish to a subscriber's read
//!   returning it (the event carries the wall-clock time it was published at). Embedded: one
//!   node, 1 000 subscribers. Redis: two nodes on one Redis, 1 000 subscribers on each, the
//!   events published on the first: the second node's subscribers are across nodes; and one
//!   Redis node with 1 000 subscribers, the embedded run's load, for the engine's own cost. Each node
//!   is a child process serving loopback HTTP/1.1 behind `SseLayer`; the subscribers are hyper
//!   clients in this process.
//! - **publish rate**: how many publishes one node completes per second into Redis with no
//!   subscriber, awaiting each in turn (one round trip each) and with 64 in flight at once
//!   (the multiplexed connection pipelines them: commands are written back to back, replies
//!   read in order); beside them the embedded hub's sequential rate, and `redis-benchmark`
//!   sending the same `XADD` on one connection (what Redis itself allows here).
//!
//! - **idle live topics**: the live read's cost against the number of topics a node reads while
//!   only a few have traffic: 10 busy topics (one drained subscriber each) beside 10 or 10 000
//!   idle ones (a held subscription each), 2 000 events published one after another on the
//!   busy topics, every 1 ms: Redis's CPU and this node's CPU per event (read from `/proc`).
//!
//! `cargo bench --bench redis --features redis` (`TOWER_SSE_REDIS_RUNS`, default 3).

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::subscriber::{payload, subscriber};
use common::{rate, row, Samples, Unit};
use http::{Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use support::redis_server::RedisServer;
use tower::{service_fn, Layer, ServiceExt};
use tower_sse::hub::{Hub, Redis};
use tower_sse::{Event, SseLayer};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const SUBSCRIBERS: usize = 1_000;
const EVENTS: u64 = 300;
const INTERVAL: Duration = Duration::from_millis(10);

/// The hub of a node: embedded, or on the Redis at the URL.
fn hub(redis: Option<&str>) -> Hub {
    let builder = Hub::builder().history(100_000, 256 << 20);
    match redis {
        None => builder.build(),
        Some(url) => builder
            .redis(Redis::open(url).expect("a Redis URL"))
            .expect("the Redis engine"),
    }
}

async fn respond(
    hub: Hub,
    layer: SseLayer,
    request: Request<Incoming>,
) -> Response<UnsyncBoxBody<Bytes, BoxError>> {
    if request.uri().path() == "/run" {
        for _ in 0..EVENTS {
            let event = Event::default().data(payload(0, true));
            hub.publish("bench", event).await.expect("published");
            tokio::time::sleep(INTERVAL).await;
        }
        let end = Event::default().data("end");
        hub.publish("bench", end).await.expect("published");
        return Response::new(Empty::new().map_err(BoxError::from).boxed_unsync());
    }
    let inner = service_fn(move |request: Request<Incoming>| {
        let hub = hub.clone();
        let last = request
            .extensions()
            .get::<tower_sse::LastEventId>()
            .cloned();
        async move {
            let subscription = hub.subscribe(["bench"], last).await.expect("subscribed");
            Ok::<_, Infallible>(subscription.into_http())
        }
    });
    let Ok(response) = layer.layer(inner).oneshot(request).await;
    response.map(|body| body.map_err(BoxError::from).boxed_unsync())
}

/// Waits until `hub` is ready (its readers connected), for at most 10 s.
async fn ready(hub: &Hub) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Err(error) = hub.ready().await {
        assert!(Instant::now() < deadline, "not ready: {error}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The child process: a node serving its hub until killed.
fn run_node(redis: Option<String>) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let hub = hub(redis.as_deref());
        ready(&hub).await;
        let layer = SseLayer::new().heartbeat(Duration::from_secs(15));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        println!("{}", listener.local_addr().expect("address"));
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (hub, layer) = (hub.clone(), layer.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let (hub, layer) = (hub.clone(), layer.clone());
                    async move { Ok::<_, Infallible>(respond(hub, layer, request).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

/// Subscribes `count` clients to the node at `addr`; their tasks, once all are subscribed.
async fn subscribe(
    addr: SocketAddr,
    count: usize,
) -> Vec<tokio::task::JoinHandle<common::subscriber::Seen>> {
    let ready = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..count)
        .map(|_| tokio::spawn(subscriber(addr, "/events", ready.clone())))
        .collect();
    common::wait_ready(&ready, count as u64).await;
    clients
}

/// Publishes the run's events on the node at `addr`.
async fn start_run(addr: SocketAddr) -> tokio::task::JoinHandle<()> {
    let control = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(control))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    tokio::spawn(async move {
        let request = Request::post("/run")
            .body(Empty::<Bytes>::new())
            .expect("request");
        let _ = sender.send_request(request).await;
    })
}

/// The latencies the clients saw, once they all have the end.
async fn latencies(clients: Vec<tokio::task::JoinHandle<common::subscriber::Seen>>) -> Samples {
    let mut samples = Samples::default();
    for client in clients {
        let seen = tokio::time::timeout(Duration::from_secs(60), client)
            .await
            .expect("the end arrives")
            .expect("client");
        assert_eq!(seen.events, EVENTS, "every event arrives");
        for &latency in &seen.latencies_us {
            samples.push(latency);
        }
    }
    samples
}

/// One embedded run with `subscribers`: its latencies.
async fn embedded_run(subscribers: usize) -> Samples {
    let (mut node, addr) = common::spawn_server(&["--node"]);
    let clients = subscribe(addr, subscribers).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let run = start_run(addr).await;
    let samples = latencies(clients).await;
    let _ = run.await;
    let _ = node.kill();
    let _ = node.wait();
    samples
}

/// One Redis run on a single node (the engine's cost alone, at the embedded run's load).
async fn redis_single_run(url: &str) -> Samples {
    let (mut node, addr) = common::spawn_server(&["--node", url]);
    let clients = subscribe(addr, SUBSCRIBERS).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let run = start_run(addr).await;
    let samples = latencies(clients).await;
    let _ = run.await;
    let _ = node.kill();
    let _ = node.wait();
    samples
}

/// One Redis run on two nodes: the latencies on the publishing node, and on the other.
async fn redis_run(url: &str) -> (Samples, Samples) {
    let (mut first, a) = common::spawn_server(&["--node", url]);
    let (mut second, b) = common::spawn_server(&["--node", url]);
    let same = subscribe(a, SUBSCRIBERS).await;
    let across = subscribe(b, SUBSCRIBERS).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let run = start_run(a).await;
    let (same, across) = (latencies(same).await, latencies(across).await);
    let _ = run.await;
    for node in [&mut first, &mut second] {
        let _ = node.kill();
        let _ = node.wait();
    }
    (same, across)
}

/// Publishes per second from this process: `in_flight` publishes at a time, `count` in all.
async fn publish_rate(hub: &Hub, count: usize, in_flight: usize) -> f64 {
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..in_flight)
        .map(|_| {
            let (hub, next) = (hub.clone(), next.clone());
            tokio::spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < count as u64 {
                    let event = Event::default().data(payload(0, false));
                    hub.publish("rate", event).await.expect("published");
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.expect("worker");
    }
    rate(count, started.elapsed())
}

/// `redis-benchmark`'s rate for the same `XADD` on one connection, `pipeline` at a time: what
/// the protocol and this Redis allow, without this crate.
fn redis_benchmark(port: u16, count: usize, pipeline: usize) -> f64 {
    let body = format!("data: {}", payload(0, false));
    let output = std::process::Command::new("redis-benchmark")
        .args(["-p", &port.to_string(), "-n", &count.to_string(), "-c", "1"])
        .args(["-P", &pipeline.to_string(), "-q"])
        .args(["XADD", "bare", "MAXLEN", "~", "100000", "*", "e", &body])
        .output()
        .expect("redis-benchmark (Debian's redis-tools) runs");
    let text = String::from_utf8_lossy(&output.stdout);
    let last = text.rsplit('\r').next().unwrap_or_default();
    last.split(": ")
        .last()
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|rate| rate.parse().ok())
        .expect("a rate in redis-benchmark's output")
}

fn main() {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() == Some("--node") {
        return run_node(args.next());
    }
    common::header_if_alone();
    let runs: usize = std::env::var("TOWER_SSE_REDIS_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let server = RedisServer::start().expect("redis-server is installed");
    let url = server.url();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");

    // `TOWER_SSE_REDIS_CASE=live` runs only the idle-live-topics case.
    if std::env::var("TOWER_SSE_REDIS_CASE").as_deref() == Ok("live") {
        return live_rows(&runtime, &server, runs);
    }
    // Latency: embedded and Redis alternating, each run's quantiles kept for the ratios. The
    // two-node runs serve 2 000 subscribers on this machine: their baseline is the embedded hub
    // with 2 000 on its one node (the same load), so the ratio is the price of the hop.
    let (mut embedded, mut embedded_double, mut single, mut same, mut across) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        embedded.push(runtime.block_on(embedded_run(SUBSCRIBERS)));
        single.push(runtime.block_on(redis_single_run(&url)));
        embedded_double.push(runtime.block_on(embedded_run(2 * SUBSCRIBERS)));
        let (on_a, on_b) = runtime.block_on(redis_run(&url));
        same.push(on_a);
        across.push(on_b);
    }
    let case = "one 64 B event every 10 ms";
    for q in [0.5, 0.99] {
        let per_run = |runs: &[Samples]| {
            Samples::from(runs.iter().map(|s| s.quantile(q)).collect::<Vec<_>>())
        };
        let cases = [
            (
                "one node, 1 000 subscribers",
                &single,
                "embedded, 1 000 subscribers",
                &embedded,
            ),
            (
                "two nodes × 1 000, publishing node",
                &same,
                "embedded, 2 000 subscribers",
                &embedded_double,
            ),
            (
                "two nodes × 1 000, other node",
                &across,
                "embedded, 2 000 subscribers",
                &embedded_double,
            ),
        ];
        for (name, redis, baseline, embedded) in cases {
            let ratios: Vec<f64> = (0..runs)
                .map(|i| redis[i].quantile(q) / embedded[i].quantile(q))
                .collect();
            row(
                &format!("hub latency p{} on Redis", (q * 100.0) as u32),
                &format!("{name}, {case}"),
                Unit::Micros,
                &per_run(redis),
                baseline,
                &per_run(embedded),
                &Samples::from(ratios),
            );
        }
    }

    // Publish rate, no subscribers.
    let count = 20_000;
    let (mut sequential, mut pipelined, mut memory) = (Vec::new(), Vec::new(), Vec::new());
    runtime.block_on(async {
        let redis_hub = hub(Some(&url));
        ready(&redis_hub).await;
        let memory_hub = hub(None);
        for _ in 0..runs {
            sequential.push(publish_rate(&redis_hub, count, 1).await);
            pipelined.push(publish_rate(&redis_hub, count, 64).await);
            memory.push(publish_rate(&memory_hub, count * 10, 1).await);
        }
    });
    let bare: Vec<f64> = (0..runs)
        .map(|_| redis_benchmark(server.port, count, 1))
        .collect();
    let bare_pipelined: Vec<f64> = (0..runs)
        .map(|_| redis_benchmark(server.port, count, 64))
        .collect();
    let ratios = |ours: &[f64], theirs: &[f64]| {
        Samples::from(
            ours.iter()
                .zip(theirs)
                .map(|(o, t)| o / t)
                .collect::<Vec<_>>(),
        )
    };
    let case = format!("{count} 64 B events, no subscriber");
    let rows = [
        ("one at a time", &sequential, "embedded hub", &memory),
        (
            "one at a time",
            &sequential,
            "redis-benchmark XADD, 1 client",
            &bare,
        ),
        (
            "64 in flight (pipelined)",
            &pipelined,
            "embedded hub",
            &memory,
        ),
        (
            "64 in flight (pipelined)",
            &pipelined,
            "redis-benchmark XADD, -P 64",
            &bare_pipelined,
        ),
    ];
    for (how, ours, baseline, theirs) in rows {
        row(
            &format!("hub publishes/s on Redis, {how}"),
            &case,
            Unit::KiloPerSec,
            &Samples::from(ours.clone()),
            baseline,
            &Samples::from(theirs.clone()),
            &ratios(ours, theirs),
        );
    }
    live_rows(&runtime, &server, runs);
    drop(server);
}

/// The live read's cost against idle live topics: its rows.
fn live_rows(runtime: &tokio::runtime::Runtime, server: &RedisServer, runs: usize) {
    let url = server.url();
    let redis_pid = server.pid().expect("redis-server runs");
    let (mut few, mut many) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        few.push(runtime.block_on(live_read_cost(&url, redis_pid, 10)));
        many.push(runtime.block_on(live_read_cost(&url, redis_pid, 10_000)));
    }
    let case = format!("{LIVE_EVENTS} events on 10 busy topics, 1 ms apart");
    for (what, pick) in [
        ("Redis CPU per event", 0usize),
        ("node CPU per event", 1usize),
    ] {
        let ours: Vec<f64> = many
            .iter()
            .map(|run: &(f64, f64)| [run.0, run.1][pick])
            .collect();
        let theirs: Vec<f64> = few
            .iter()
            .map(|run: &(f64, f64)| [run.0, run.1][pick])
            .collect();
        row(
            &format!("hub on Redis, {what}"),
            &format!("{case}, 10 000 idle live topics"),
            Unit::Micros,
            &Samples::from(ours.clone()),
            "10 idle live topics",
            &Samples::from(theirs.clone()),
            &Samples::from(
                ours.iter()
                    .zip(&theirs)
                    .map(|(o, t)| o / t)
                    .collect::<Vec<_>>(),
            ),
        );
    }
}

/// Events of the idle-live-topics case.
const LIVE_EVENTS: usize = 2_000;

/// Redis's and this process's CPU time per event, in microseconds, while `LIVE_EVENTS` events
/// are published on 10 busy topics, 1 ms apart, with `idle` more topics live on the node.
async fn live_read_cost(url: &str, redis_pid: u32, idle: usize) -> (f64, f64) {
    let hub = hub(Some(url));
    ready(&hub).await;
    let prefix = format!("live{idle}-{}", std::process::id());
    let mut held = Vec::with_capacity(idle);
    for k in 0..idle {
        held.push(
            hub.subscribe([format!("{prefix}-idle-{k}")], None)
                .await
                .expect("subscribed"),
        );
    }
    let delivered = Arc::new(AtomicU64::new(0));
    let mut drains = Vec::new();
    for t in 0..10 {
        let subscription = hub
            .subscribe([format!("{prefix}-busy-{t}")], None)
            .await
            .expect("subscribed");
        let delivered = delivered.clone();
        drains.push(tokio::spawn(async move {
            let mut body = Box::pin(subscription.into_http().into_body());
            while let Some(Ok(frame)) = body.frame().await {
                if let Ok(data) = frame.into_data() {
                    let events = memchr::memmem::find_iter(&data, b"\n\n").count();
                    delivered.fetch_add(events as u64, Ordering::Relaxed);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let me = std::process::id();
    let (redis_before, node_before) = (common::cpu_ticks(redis_pid), common::cpu_ticks(me));
    for n in 0..LIVE_EVENTS {
        let topic = format!("{prefix}-busy-{}", n % 10);
        hub.publish(&topic, Event::default().data(payload(n as u64, false)))
            .await
            .expect("published");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while delivered.load(Ordering::Relaxed) < LIVE_EVENTS as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Ticks are 10 ms: per event, in microseconds.
    let per_event = |ticks: f64| ticks * 10_000.0 / LIVE_EVENTS as f64;
    let cost = (
        per_event(common::cpu_ticks(redis_pid) - redis_before),
        per_event(common::cpu_ticks(me) - node_before),
    );
    hub.close();
    drop(held);
    for drain in drains {
        drain.abort();
    }
    cost
}
