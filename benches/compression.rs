//! Compressed streams against identity, side by side in one run:
//!
//! - **wire and CPU**: 20 000 events of three kinds (an OpenAI-style token stream, a JSON
//!   dashboard, 64 B of random text) through `SseLayer` in process, one event per frame (each
//!   flushed on its own, as paced events are): the bytes on the wire and the CPU time per event
//!   of each coding, against the same stream uncompressed. The runs alternate codings.
//! - **idle memory**: 10 000 open streams that each sent one event, served by a child process
//!   (this binary with `--idle-server CODING`), its RSS read from `/proc`: the memory each
//!   compressed stream holds against an uncompressed one.
//!
//! `cargo bench --bench compression --features compression` (the soft `ulimit -n` must exceed the
//! connection count). `TOWER_SSE_COMPRESSION_RUNS` (default 5) sets the runs of the first part,
//! `TOWER_SSE_IDLE_CONNECTIONS` (default 10 000) the streams of the second, and
//! `TOWER_SSE_COMPRESSION_PART` (`wire` or `idle`) runs one part only, and
//! `TOWER_SSE_COMPRESSION_WINDOW_BITS` (10 to 15) measures another window than the default.

mod common;

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{row, Samples, Unit};
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::{service_fn, Layer, ServiceExt};
use tower_sse::compression::{Coding, Compression};
use tower_sse::{Event, SseLayer};

const EVENTS: usize = 20_000;

/// The settings measured: the defaults, or another window.
fn settings() -> Compression {
    let settings = Compression::new();
    match std::env::var("TOWER_SSE_COMPRESSION_WINDOW_BITS") {
        Ok(bits) => settings.window_bits(bits.parse().expect("window bits")),
        Err(_) => settings,
    }
}

/// How the settings are named in the table.
fn settings_name() -> String {
    std::env::var("TOWER_SSE_COMPRESSION_WINDOW_BITS")
        .map_or("default settings".to_owned(), |bits| {
            format!("window bits {bits}")
        })
}
const CODINGS: [Coding; 3] = [Coding::Zstd, Coding::Brotli, Coding::Gzip];

/// A small deterministic generator, so every coding compresses the same events.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
}

const WORDS: [&str; 16] = [
    " the",
    " stream",
    " of",
    " tokens",
    " arrives",
    " one",
    " word",
    " at",
    " a",
    " time",
    ",",
    " and",
    " each",
    " chunk",
    " repeats",
    " envelope",
];

/// The events' data, by workload.
fn workload(name: &str) -> Vec<String> {
    let mut rng = Lcg(42);
    (0..EVENTS)
        .map(|i| match name {
            "openai" => format!(
                "{{\"id\":\"chatcmpl-AbC123xYz\",\"object\":\"chat.completion.chunk\",\"created\":1733390000,\
                 \"model\":\"gpt-4o-mini-2024-07-18\",\"system_fingerprint\":\"fp_0ba0d124f1\",\"choices\":\
                 [{{\"index\":0,\"delta\":{{\"content\":\"{}\"}},\"logprobs\":null,\"finish_reason\":null}}]}}",
                WORDS[rng.next() as usize % WORDS.len()]
            ),
            "dashboard" => format!(
                "{{\"ts\":{},\"host\":\"web-{}\",\"cpu\":{{\"user\":{}.{},\"system\":{}.{}}},\"mem_mb\":{},\
                 \"requests\":{},\"latency_ms\":{{\"p50\":{},\"p99\":{}}},\"status\":\"ok\"}}",
                1_733_390_000_000u64 + i as u64 * 250,
                rng.next() % 8,
                rng.next() % 100,
                rng.next() % 10,
                rng.next() % 30,
                rng.next() % 10,
                2048 + rng.next() % 1024,
                rng.next() % 5000,
                rng.next() % 40,
                40 + rng.next() % 400,
            ),
            _ => {
                // 64 printable characters drawn uniformly: what compression cannot shrink much.
                const ALPHABET: &[u8] =
                    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
                (0..64)
                    .map(|_| ALPHABET[rng.next() as usize % ALPHABET.len()] as char)
                    .collect()
            }
        })
        .collect()
}

pin_project_lite::pin_project! {
    /// An inner body that yields one encoded event per poll and is pending in between (waking
    /// itself), so the layer writes each event as a frame of its own.
    struct Paced {
        events: std::vec::IntoIter<Bytes>,
        ready: bool,
    }
}

impl Body for Paced {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.project();
        if !*this.ready {
            *this.ready = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        *this.ready = false;
        Poll::Ready(this.events.next().map(|event| Ok(Frame::data(event))))
    }
}

/// Sends `events` through a layer compressing with `coding` (or none) and returns the bytes
/// on the wire and the time taken.
async fn stream(events: &[Bytes], coding: Option<Coding>) -> (usize, Duration) {
    let events = events.to_vec();
    let inner = service_fn(move |_: Request<Empty<Bytes>>| {
        let body = Paced {
            events: events.clone().into_iter(),
            ready: false,
        };
        let mut response = Response::new(body);
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/event-stream"),
        );
        std::future::ready(Ok::<_, Infallible>(response))
    });
    let layer = SseLayer::new().no_heartbeat().compression(settings());
    let mut request = Request::get("/").header("accept", "text/event-stream");
    if let Some(coding) = coding {
        request = request.header("accept-encoding", coding.as_str());
    }
    let request = request.body(Empty::new()).expect("request");
    let start = Instant::now();
    let Ok(response) = layer.layer(inner).oneshot(request).await;
    let encoding = response.headers().get("content-encoding").cloned();
    assert_eq!(
        encoding.as_ref().and_then(|value| value.to_str().ok()),
        coding.map(Coding::as_str),
        "the stream is sent with the coding asked for"
    );
    let mut body = std::pin::pin!(response.into_body());
    let mut bytes = 0;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.expect("frame").into_data() {
            bytes += data.len();
        }
    }
    (bytes, start.elapsed())
}

fn wire_part() {
    let runs: usize = std::env::var("TOWER_SSE_COMPRESSION_RUNS")
        .ok()
        .and_then(|runs| runs.parse().ok())
        .unwrap_or(5);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for name in ["openai", "dashboard", "random64"] {
        let events: Vec<Bytes> = workload(name)
            .into_iter()
            .map(|data| {
                let mut buf = bytes::BytesMut::new();
                Event::default().data(data).encode_into(&mut buf);
                buf.freeze()
            })
            .collect();
        let codings: Vec<Option<Coding>> = std::iter::once(None)
            .chain(CODINGS.into_iter().map(Some))
            .collect();
        let mut wire = vec![Samples::default(); codings.len()];
        let mut time = vec![Samples::default(); codings.len()];
        let mut wire_ratio = vec![Samples::default(); codings.len()];
        let mut time_ratio = vec![Samples::default(); codings.len()];
        for _ in 0..runs {
            let results: Vec<(usize, Duration)> = codings
                .iter()
                .map(|coding| runtime.block_on(stream(&events, *coding)))
                .collect();
            let (identity_bytes, identity_time) = results[0];
            for (i, (bytes, elapsed)) in results.iter().enumerate() {
                wire[i].push(*bytes as f64 / EVENTS as f64);
                // Microseconds per event (`Unit::Nanos` shows them as nanoseconds).
                time[i].push(elapsed.as_secs_f64() * 1e6 / EVENTS as f64);
                wire_ratio[i].push(*bytes as f64 / identity_bytes as f64);
                time_ratio[i].push(elapsed.as_secs_f64() / identity_time.as_secs_f64());
            }
        }
        let case = format!("{EVENTS} {name} events, one per frame, {}", settings_name());
        for (i, coding) in codings.iter().enumerate().skip(1) {
            let coding = coding.map_or("identity", Coding::as_str);
            row(
                &format!("wire bytes per event, {coding}"),
                &case,
                Unit::Count,
                &wire[i],
                "identity",
                &wire[0],
                &wire_ratio[i],
            );
            row(
                &format!("CPU time per event, {coding}"),
                &case,
                Unit::Nanos,
                &time[i],
                "identity",
                &time[0],
                &time_ratio[i],
            );
        }
    }
}

/// The child process: serves streams that send one event, then idle (heartbeat 1 s), through a
/// layer that compresses with `coding` for requests that ask.
fn run_idle_server(coding: Option<Coding>) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut layer = SseLayer::new().heartbeat(Duration::from_secs(1));
    if let Some(coding) = coding {
        layer = layer.compression(settings().codings([coding]));
    }
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        println!("{}", listener.local_addr().expect("address"));
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let layer = layer.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let inner = service_fn(|_: Request<hyper::body::Incoming>| {
                        let first = Bytes::from_static(b"data: {\"hello\":\"world\"}\n\n");
                        let never =
                            futures_util::stream::once(std::future::ready(Ok::<_, Infallible>(
                                Frame::data(first),
                            )))
                            .chain(futures_util::stream::pending());
                        let mut response = Response::new(http_body_util::StreamBody::new(never));
                        response.headers_mut().insert(
                            http::header::CONTENT_TYPE,
                            http::HeaderValue::from_static("text/event-stream"),
                        );
                        std::future::ready(Ok::<_, Infallible>(response))
                    });
                    layer.clone().layer(inner).oneshot(request)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
}

use futures_util::StreamExt;

/// Opens one stream asking for `coding`, checks its head, then keeps reading in a task.
async fn open(addr: std::net::SocketAddr, coding: Option<Coding>) -> tokio::task::JoinHandle<()> {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let accept_encoding = coding.map_or(String::new(), |coding| {
        format!("Accept-Encoding: {coding}\r\n")
    });
    let head = format!(
        "GET / HTTP/1.1\r\nHost: idle\r\nAccept: text/event-stream\r\n{accept_encoding}\r\n"
    );
    tcp.write_all(head.as_bytes()).await.expect("request");
    let mut buf = vec![0; 1024];
    let n = tcp.read(&mut buf).await.expect("head");
    let head = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    if let Some(coding) = coding {
        assert!(
            head.contains(&format!("content-encoding: {coding}")),
            "{head}"
        );
    }
    tokio::spawn(async move {
        let mut buf = [0; 256];
        while matches!(tcp.read(&mut buf).await, Ok(n) if n > 0) {}
    })
}

/// The RSS each of `count` streams adds to a fresh server compressing with `coding`.
async fn idle_rss(coding: Option<Coding>, count: usize) -> f64 {
    let name = coding.map_or("identity", Coding::as_str);
    let (mut child, addr) = common::spawn_server(&["--idle-server", name]);
    let warm = open(addr, coding).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = common::status_kib(child.id(), "VmRSS:");
    let mut streams = Vec::with_capacity(count);
    for _ in 0..count {
        streams.push(open(addr, coding).await);
    }
    // The first event and two heartbeats have gone out on every stream.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = common::status_kib(child.id(), "VmRSS:");
    let _ = child.kill();
    let _ = child.wait();
    drop((warm, streams));
    (after - before) * 1024.0 / count as f64
}

fn idle_part() {
    let wanted: usize = std::env::var("TOWER_SSE_IDLE_CONNECTIONS")
        .ok()
        .and_then(|count| count.parse().ok())
        .unwrap_or(10_000);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let identity = runtime.block_on(idle_rss(None, wanted));
    for coding in CODINGS {
        let compressed = runtime.block_on(idle_rss(Some(coding), wanted));
        let mut ours = Samples::default();
        ours.push(compressed);
        let mut theirs = Samples::default();
        theirs.push(identity);
        let mut ratio = Samples::default();
        ratio.push(compressed / identity);
        row(
            &format!("idle RSS per stream, {coding}"),
            &format!(
                "{wanted} streams, one event each, heartbeat 1 s, {}",
                settings_name()
            ),
            Unit::KiB,
            &ours,
            "identity",
            &theirs,
            &ratio,
        );
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() == Some("--idle-server") {
        let name = args.next().unwrap_or_default();
        let coding = CODINGS.into_iter().find(|coding| coding.as_str() == name);
        return run_idle_server(coding);
    }
    common::header_if_alone();
    let part = std::env::var("TOWER_SSE_COMPRESSION_PART").unwrap_or_default();
    if part != "idle" {
        wire_part();
    }
    if part != "wire" {
        idle_part();
    }
}
