//! Idle connections: the server's memory per open, idle event stream, and the CPU its
//! heartbeats cost, at 10 000 connections with a 1 s heartbeat, in two shapes: streams that
//! never sent an event, and streams that each sent one event, then idle.
//!
//! Each server runs in a child process (this binary, started again with `--idle-server NAME`),
//! so its resident memory and CPU time can be read from `/proc` without the clients' share:
//! - **tower-sse**: `SseLayer` (heartbeat 1 s) over a body that never yields a message;
//! - **axum**: `Sse` + `KeepAlive` (1 s) over a stream that never yields an event;
//! - **raw hyper**: a streaming body that yields a comment frame every second from its own
//!   `tokio::time::Interval`.
//!
//! Every server runs hyper's HTTP/1.1 connection on a two-worker tokio runtime. The clients
//! (in this process) keep reading, so heartbeats really are written.
//!
//! `cargo bench --bench idle` (the soft `ulimit -n` must exceed the connection count;
//! `TOWER_SSE_IDLE_CONNECTIONS` sets the count, 10 000 by default; `TOWER_SSE_IDLE_RUNS` the
//! number of runs, 3 by default: each run measures every server in both shapes, and the rows
//! show the median and the spread).

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::response::sse::{Event as AxumEvent, KeepAlive, Sse};
use axum::response::IntoResponse;
use bytes::Bytes;
use common::{row, Samples, Unit};
use futures_util::StreamExt;
use http::{Request, Response};
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::{service_fn, Layer, ServiceExt};
use tower_sse::{SseLayer, DEFAULT_WRITE_DEADLINE};

const HEARTBEAT: Duration = Duration::from_secs(1);
/// How long the CPU time of the idle server is measured: 10 s, or `TOWER_SSE_IDLE_CPU_SECS`
/// (0 skips it, for a run that only wants memory).
fn cpu_window() -> Duration {
    let secs = std::env::var("TOWER_SSE_IDLE_CPU_SECS")
        .ok()
        .and_then(|secs| secs.parse().ok())
        .unwrap_or(10);
    Duration::from_secs(secs)
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type ResponseBody = UnsyncBoxBody<Bytes, BoxError>;

const SERVERS: [(&str, &str); 4] = [
    ("tower-sse", "tower-sse"),
    ("axum", "axum Sse"),
    ("raw", "raw hyper"),
    ("hub", "tower-sse hub subscriber"),
];

/// The servers tower-sse's plain stream is compared with (the hub is compared with it).
const BASELINES: usize = 3;

/// The hub of the `hub` server: its subscribers share one topic (no event), or each has a
/// topic of its own with one event published on it after it subscribed (one event).
fn hub() -> &'static tower_sse::hub::Hub {
    static HUB: std::sync::OnceLock<tower_sse::hub::Hub> = std::sync::OnceLock::new();
    HUB.get_or_init(tower_sse::hub::Hub::memory)
}

/// The layer, built once per server as an application builds it (a layer built per request
/// would give each stream a configuration of its own to hold).
fn layer() -> &'static SseLayer {
    static LAYER: std::sync::OnceLock<SseLayer> = std::sync::OnceLock::new();
    LAYER.get_or_init(|| {
        // TOWER_SSE_BENCH_NO_WATCHDOG=1 measures the layer without its write deadline.
        let watchdog = std::env::var_os("TOWER_SSE_BENCH_NO_WATCHDOG").is_none();
        let deadline = if watchdog {
            DEFAULT_WRITE_DEADLINE
        } else {
            Duration::ZERO
        };
        SseLayer::new()
            .heartbeat(HEARTBEAT)
            .write_deadline(deadline)
            .always()
    })
}

/// The event each stream sends first in the `one event` shape.
const FIRST: &str = "hello";

async fn respond(
    server: &str,
    one_event: bool,
    request: Request<Incoming>,
) -> Response<ResponseBody> {
    let first = one_event.then_some(FIRST);
    match server {
        "tower-sse" => {
            let inner = service_fn(move |_: Request<Incoming>| {
                let first = futures_util::stream::iter(
                    first.map(|text| Ok(Frame::data(Bytes::from(text)))),
                );
                let never = first.chain(futures_util::stream::pending::<
                    Result<Frame<Bytes>, Infallible>,
                >());
                std::future::ready(Ok::<_, Infallible>(Response::new(StreamBody::new(never))))
            });
            let Ok(response) = layer().clone().layer(inner).oneshot(request).await;
            response.map(|body| body.map_err(BoxError::from).boxed_unsync())
        }
        "hub" => {
            static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let topic = if one_event {
                let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                format!("connection {n}")
            } else {
                "idle".to_owned()
            };
            let inner = service_fn(move |_: Request<Incoming>| {
                let topic = topic.clone();
                async move {
                    let subscription = hub().subscribe([topic.as_str()], None).await;
                    let subscription = subscription.expect("a valid topic");
                    if one_event {
                        let event = tower_sse::Event::default().data(FIRST);
                        hub().publish(&topic, event).await.expect("published");
                    }
                    Ok::<_, Infallible>(subscription.into_http())
                }
            });
            let Ok(response) = layer().clone().layer(inner).oneshot(request).await;
            response.map(|body| body.map_err(BoxError::from).boxed_unsync())
        }
        "axum" => {
            let first =
                futures_util::stream::iter(first.map(|text| Ok(AxumEvent::default().data(text))));
            let never =
                first.chain(futures_util::stream::pending::<Result<AxumEvent, Infallible>>());
            Sse::new(never)
                .keep_alive(KeepAlive::new().interval(HEARTBEAT))
                .into_response()
                .map(|body| body.map_err(BoxError::from).boxed_unsync())
        }
        _ => {
            let mut interval = tokio::time::interval(HEARTBEAT);
            let first = futures_util::stream::iter(first.map(|text| {
                Ok::<_, BoxError>(Frame::data(Bytes::from(format!("data: {text}\n\n"))))
            }));
            let beats = first.chain(futures_util::stream::poll_fn(move |cx| {
                interval
                    .poll_tick(cx)
                    .map(|_| Some(Ok::<_, BoxError>(Frame::data(Bytes::from_static(b":\n\n")))))
            }));
            let mut response = Response::new(StreamBody::new(beats).boxed_unsync());
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/event-stream"),
            );
            response
        }
    }
}

/// The child process: serves `server` until killed.
fn run_server(server: &'static str, one_event: bool) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        println!("{}", listener.local_addr().expect("address"));
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| async move {
                    Ok::<_, Infallible>(respond(server, one_event, request).await)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

/// The soft limit on open files of this process.
fn open_files_limit() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| {
            limits
                .lines()
                .find(|line| line.starts_with("Max open files"))
                .and_then(|line| line.split_whitespace().nth(3))
                .and_then(|soft| soft.parse().ok())
        })
        .unwrap_or(1024)
}

struct Measured {
    rss_per_connection: f64,
    cpu_percent: f64,
}

/// Opens `count` idle streams to a freshly started `server` and measures it.
async fn measure(server: &str, one_event: bool, count: usize) -> Measured {
    let shape = if one_event { "one-event" } else { "none" };
    let (mut child, addr) = common::spawn_server(&["--idle-server", server, shape]);
    let pid = child.id();

    // Warm up: one stream, so the runtime and allocator have their steady-state footprint.
    let warm = open(addr, one_event).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = common::status_kib(pid, "VmRSS:");

    let mut streams = Vec::with_capacity(count);
    for _ in 0..count {
        streams.push(open(addr, one_event).await);
    }
    // Every stream answered (its head and first bytes were read in `open`), and heartbeats went
    // out at least twice since.
    tokio::time::sleep(3 * HEARTBEAT).await;
    let after = common::status_kib(pid, "VmRSS:");

    let start_ticks = common::cpu_ticks(pid);
    let start = Instant::now();
    tokio::time::sleep(cpu_window()).await;
    let ticks = common::cpu_ticks(pid) - start_ticks;
    let ticks_per_sec = 100.0; // USER_HZ on Linux.
    let cpu_percent = ticks / ticks_per_sec / start.elapsed().as_secs_f64().max(1e-3) * 100.0;

    let _ = child.kill();
    let _ = child.wait();
    drop((warm, streams));
    Measured {
        rss_per_connection: (after - before) * 1024.0 / count as f64,
        cpu_percent,
    }
}

/// Opens one event stream, reads its head and first bytes (and its first event, when there is
/// one), then keeps reading in a task.
async fn open(addr: SocketAddr, one_event: bool) -> tokio::task::JoinHandle<()> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: idle\r\nAccept: text/event-stream\r\n\r\n")
        .await
        .expect("request");
    let mut buf = vec![0; 1024];
    let mut n = stream.read(&mut buf).await.expect("head");
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "stream opened");
    let event = format!("data: {FIRST}");
    while one_event && !String::from_utf8_lossy(&buf[..n]).contains(&event) {
        let more = stream.read(&mut buf[n..]).await.expect("first event");
        assert!(more > 0 && n + more < buf.len(), "the first event arrives");
        n += more;
    }
    tokio::spawn(async move {
        let mut buf = [0; 256];
        while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
    })
}

fn main() {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() == Some("--idle-server") {
        let server = args.next().unwrap_or_default();
        let server = SERVERS
            .iter()
            .find(|(name, _)| *name == server)
            .map_or("raw", |(name, _)| name);
        let one_event = args.next().as_deref() == Some("one-event");
        return run_server(server, one_event);
    }

    common::header_if_alone();
    let wanted: usize = std::env::var("TOWER_SSE_IDLE_CONNECTIONS")
        .ok()
        .and_then(|count| count.parse().ok())
        .unwrap_or(10_000);
    let runs: usize = std::env::var("TOWER_SSE_IDLE_RUNS")
        .ok()
        .and_then(|runs| runs.parse().ok())
        .unwrap_or(3);
    let limit = open_files_limit();
    let count = wanted.min(limit.saturating_sub(100));
    if count < wanted {
        eprintln!("ulimit -n is {limit}: measuring {count} connections instead of {wanted}");
    }

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for one_event in [false, true] {
        // Per server: the RSS and CPU samples, and the ratios to each baseline within a run.
        let mut rss = vec![Samples::default(); SERVERS.len()];
        let mut cpu = vec![Samples::default(); SERVERS.len()];
        let mut rss_ratio = vec![Samples::default(); SERVERS.len()];
        let mut cpu_ratio = vec![Samples::default(); SERVERS.len()];
        let mut hub_rss_ratio = Samples::default();
        for _ in 0..runs {
            let results: Vec<Measured> = SERVERS
                .iter()
                .map(|(server, _)| runtime.block_on(measure(server, one_event, count)))
                .collect();
            for (i, result) in results.iter().enumerate() {
                rss[i].push(result.rss_per_connection);
                cpu[i].push(result.cpu_percent);
                rss_ratio[i].push(results[0].rss_per_connection / result.rss_per_connection);
                cpu_ratio[i].push(results[0].cpu_percent / result.cpu_percent);
            }
            // The hub's subscriber against the plain stream: hub / plain.
            if let Some(hub) = results.get(BASELINES) {
                hub_rss_ratio.push(hub.rss_per_connection / results[0].rss_per_connection);
            }
        }
        let shape = if one_event {
            "one event each, then idle"
        } else {
            "no event"
        };
        let case = format!("{count} idle streams ({shape}), heartbeat {HEARTBEAT:?}");
        for (i, (_, name)) in SERVERS.iter().enumerate().take(BASELINES).skip(1) {
            row(
                "idle RSS per connection",
                &case,
                Unit::KiB,
                &rss[0],
                name,
                &rss[i],
                &rss_ratio[i],
            );
        }
        row(
            "idle RSS per hub subscriber",
            &case,
            Unit::KiB,
            &rss[BASELINES],
            "tower-sse plain stream",
            &rss[0],
            &hub_rss_ratio,
        );
        for (i, (_, name)) in SERVERS.iter().enumerate().take(BASELINES).skip(1) {
            row(
                "idle heartbeat CPU (% of one core)",
                &case,
                Unit::PercentCore,
                &cpu[0],
                name,
                &cpu[i],
                &cpu_ratio[i],
            );
        }
    }
}
