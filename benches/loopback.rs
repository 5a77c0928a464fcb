//! Loopback HTTP/1.1: one hyper server and one client reading as fast as it can, on 127.0.0.1.
//!
//! Four servers send the same events, side by side in each run:
//! - **tower-sse**: `SseLayer` over an inner body of one frame per message;
//! - **axum**: `Sse` + `KeepAlive` over a stream of `Event`s;
//! - **raw frames**: the pre-encoded events, one body frame each (what a naive server does);
//! - **raw batched**: the same bytes in 64 KiB frames (the practical limit of this stack).
//!
//! Cases: a burst of ready events (64 B and 1 KiB), a paced stream (a producer task that hands
//! over one event at a time), and the latency of a lone event on an idle stream (producer to
//! client socket). The server runs on its own thread (a current-thread runtime); the client is a
//! blocking socket on the bench's thread.
//!
//! `cargo bench --bench loopback`

mod common;

use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::response::sse::{Event as AxumEvent, KeepAlive, Sse};
use axum::response::IntoResponse;
use bytes::Bytes;
use common::{rate, row, Samples, Unit, RUNS};
use futures_util::{Stream, StreamExt};
use http::{Request, Response};
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tower::{service_fn, Layer, ServiceExt};
use tower_sse::SseLayer;

/// The servers compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Server {
    TowerSse,
    Axum,
    RawFrames,
    RawBatched,
}

impl Server {
    const ALL: [Server; 4] = [
        Server::TowerSse,
        Server::Axum,
        Server::RawFrames,
        Server::RawBatched,
    ];

    fn name(self) -> &'static str {
        match self {
            Server::TowerSse => "tower-sse",
            Server::Axum => "axum Sse",
            Server::RawFrames => "raw hyper, frame per event",
            Server::RawBatched => "raw hyper, 64 KiB frames",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|server| server.path() == name)
    }

    fn path(self) -> &'static str {
        match self {
            Server::TowerSse => "tower-sse",
            Server::Axum => "axum",
            Server::RawFrames => "raw-frames",
            Server::RawBatched => "raw-batched",
        }
    }
}

/// How the events are produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// All ready at once.
    Burst,
    /// A producer task hands over one event, then yields.
    Paced,
    /// One event every few milliseconds on an otherwise idle stream; send times are recorded.
    Idle,
}

impl Source {
    fn parse(name: &str) -> Option<Self> {
        match name {
            "burst" => Some(Source::Burst),
            "paced" => Some(Source::Paced),
            "idle" => Some(Source::Idle),
            _ => None,
        }
    }
}

/// The gap between events of the latency case.
const IDLE_GAP: Duration = Duration::from_millis(2);

/// The data of event `seq`: its number, padded to `size` bytes.
fn data(seq: usize, size: usize) -> String {
    let mut text = format!("{seq:010}");
    text.extend(std::iter::repeat('x').take(size.saturating_sub(text.len())));
    text
}

/// Events as `seq`-numbered strings, from the source the request asked for.
type Texts = Pin<Box<dyn Stream<Item = String> + Send>>;

/// When each event of the latency case was handed to the server, by sequence number.
type SendTimes = Arc<Mutex<Vec<Option<Instant>>>>;

fn texts(source: Source, size: usize, count: usize, sent: SendTimes) -> Texts {
    match source {
        Source::Burst => {
            Box::pin(futures_util::stream::iter(0..count).map(move |seq| data(seq, size)))
        }
        Source::Paced | Source::Idle => {
            let (tx, mut rx) = mpsc::channel(1024);
            tokio::spawn(async move {
                for seq in 0..count {
                    if source == Source::Idle {
                        tokio::time::sleep(IDLE_GAP).await;
                        if let Ok(mut sent) = sent.lock() {
                            sent[seq] = Some(Instant::now());
                        }
                    }
                    if tx.send(data(seq, size)).await.is_err() {
                        return;
                    }
                    tokio::task::yield_now().await;
                }
            });
            Box::pin(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)))
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type ResponseBody = UnsyncBoxBody<Bytes, BoxError>;

/// The frame size of the raw batched server.
const BATCH: usize = 64 * 1024;

async fn respond(request: Request<Incoming>, sent: SendTimes) -> Response<ResponseBody> {
    // `/{server}/{source}/{size}/{count}`
    let parts: Vec<&str> = request.uri().path().split('/').skip(1).collect();
    let parsed = match parts[..] {
        [server, source, size, count] => Server::parse(server)
            .zip(Source::parse(source))
            .zip(size.parse::<usize>().ok().zip(count.parse::<usize>().ok())),
        _ => None,
    };
    let Some(((server, source), (size, count))) = parsed else {
        let mut response = Response::new(ResponseBody::default());
        *response.status_mut() = http::StatusCode::NOT_FOUND;
        return response;
    };
    let texts = move || texts(source, size, count, sent.clone());
    match server {
        Server::TowerSse => {
            let inner = service_fn(move |_: Request<Incoming>| {
                let frames =
                    texts().map(|text| Ok::<_, Infallible>(Frame::data(Bytes::from(text))));
                std::future::ready(Ok::<_, Infallible>(Response::new(StreamBody::new(frames))))
            });
            let Ok(response) = SseLayer::new().layer(inner).oneshot(request).await;
            response.map(|body| body.map_err(BoxError::from).boxed_unsync())
        }
        Server::Axum => {
            let events = texts().map(|text| Ok::<_, Infallible>(AxumEvent::default().data(text)));
            let response = Sse::new(events)
                .keep_alive(KeepAlive::default())
                .into_response();
            response.map(|body| body.map_err(BoxError::from).boxed_unsync())
        }
        Server::RawFrames => {
            let frames = texts().map(|text| {
                Ok::<_, BoxError>(Frame::data(Bytes::from(format!("data: {text}\n\n"))))
            });
            Response::new(StreamBody::new(frames).boxed_unsync())
        }
        Server::RawBatched => {
            // What is ready is encoded together, up to one 64 KiB frame.
            let per_frame = (BATCH / (size + "data: \n\n".len())).max(1);
            let frames = texts().ready_chunks(per_frame).map(|texts| {
                let mut encoded = Vec::with_capacity(BATCH);
                for text in texts {
                    encoded.extend_from_slice(b"data: ");
                    encoded.extend_from_slice(text.as_bytes());
                    encoded.extend_from_slice(b"\n\n");
                }
                Ok::<_, BoxError>(Frame::data(Bytes::from(encoded)))
            });
            Response::new(StreamBody::new(frames).boxed_unsync())
        }
    }
}

/// Starts the server on its own thread; returns its address and the latency case's send times.
fn start_server() -> (SocketAddr, SendTimes) {
    let sent: SendTimes = Arc::default();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let server_sent = sent.clone();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            addr_tx
                .send(listener.local_addr().expect("addr"))
                .expect("send addr");
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let sent = server_sent.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let sent = sent.clone();
                        async move { Ok::<_, Infallible>(respond(request, sent).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
    });
    (addr_rx.recv().expect("server address"), sent)
}

/// Sends the request and reads the response to its end (the server closes the connection).
/// Calls `on_read` with every chunk read and the time it arrived.
fn fetch(addr: SocketAddr, path: &str, mut on_read: impl FnMut(&[u8], Instant)) -> usize {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).expect("request");
    let mut buf = vec![0; 256 * 1024];
    let mut total = 0;
    loop {
        let n = stream.read(&mut buf).expect("read");
        if n == 0 {
            return total;
        }
        on_read(&buf[..n], Instant::now());
        total += n;
    }
}

/// Events/s and wire MB/s of one server for one case.
fn throughput(
    addr: SocketAddr,
    server: Server,
    source: Source,
    size: usize,
    count: usize,
) -> (f64, f64) {
    let path = format!(
        "/{}/{}/{size}/{count}",
        server.path(),
        match source {
            Source::Burst => "burst",
            Source::Paced => "paced",
            Source::Idle => "idle",
        }
    );
    let start = Instant::now();
    let bytes = fetch(addr, &path, |_, _| {});
    let elapsed = start.elapsed();
    assert!(
        bytes >= count * (size + 8),
        "{server:?} sent every event ({bytes} bytes)"
    );
    (rate(count, elapsed), rate(bytes, elapsed))
}

/// Producer-to-socket latencies (µs) of the events of an idle stream.
fn latencies(addr: SocketAddr, sent: &SendTimes, server: Server, count: usize) -> Vec<f64> {
    *sent.lock().expect("lock") = vec![None; count];
    let mut arrived = vec![None; count];
    let mut carry: Vec<u8> = Vec::new();
    let path = format!("/{}/idle/64/{count}", server.path());
    fetch(addr, &path, |chunk, at| {
        carry.extend_from_slice(chunk);
        // Every complete `data: ` line names its event's sequence number in its first 10 bytes.
        while let Some(start) = memchr::memmem::find(&carry, b"data: ") {
            let Some(end) = memchr::memchr(b'\n', &carry[start..]) else {
                break;
            };
            let line = &carry[start + 6..start + end];
            if let Some(seq) = std::str::from_utf8(&line[..10.min(line.len())])
                .ok()
                .and_then(|digits| digits.parse::<usize>().ok())
            {
                if seq < count {
                    arrived[seq] = Some(at);
                }
            }
            carry.drain(..start + end);
        }
    });
    let sent = sent.lock().expect("lock");
    sent.iter()
        .zip(&arrived)
        .filter_map(|(sent, arrived)| {
            Some(
                arrived
                    .as_ref()?
                    .saturating_duration_since((*sent)?)
                    .as_secs_f64()
                    * 1e6,
            )
        })
        .collect()
}

fn main() {
    common::header_if_alone();
    let (addr, sent) = start_server();

    // Throughput: each run measures every server once, in turn, so the ratios within a run
    // compare the same machine state.
    let cases = [
        (Source::Burst, 64, 400_000),
        (Source::Burst, 1024, 40_000),
        (Source::Paced, 64, 40_000),
    ];
    for (source, size, count) in cases {
        let mut events: Vec<Samples> = vec![Samples::default(); Server::ALL.len()];
        let mut bytes: Vec<Samples> = vec![Samples::default(); Server::ALL.len()];
        let mut ratios: Vec<Samples> = vec![Samples::default(); Server::ALL.len()];
        for _ in 0..RUNS {
            let measured: Vec<(f64, f64)> = Server::ALL
                .iter()
                .map(|&server| throughput(addr, server, source, size, count))
                .collect();
            for (i, (rate, bytes_rate)) in measured.iter().enumerate() {
                events[i].push(*rate);
                bytes[i].push(*bytes_rate);
                ratios[i].push(measured[0].0 / rate);
            }
        }
        let case = format!(
            "{} {} events",
            if source == Source::Burst {
                "burst of"
            } else {
                "paced"
            },
            common::size_name(size)
        );
        for (i, server) in Server::ALL.iter().enumerate().skip(1) {
            row(
                "loopback events/s",
                &case,
                Unit::MegaPerSec,
                &events[0],
                server.name(),
                &events[i],
                &ratios[i],
            );
        }
        row(
            "loopback wire MB/s",
            &case,
            Unit::MegaBytesPerSec,
            &bytes[0],
            Server::RawBatched.name(),
            &bytes[3],
            &ratios[3],
        );
    }

    // Latency of a lone event: p50 and p99 over all events of all runs, per server.
    let count = 500;
    let servers = [Server::TowerSse, Server::Axum, Server::RawFrames];
    let mut all: Vec<Samples> = vec![Samples::default(); servers.len()];
    let (mut p50_ratios, mut p99_ratios) = (Samples::default(), Samples::default());
    for _ in 0..RUNS {
        let runs: Vec<Samples> = servers
            .iter()
            .map(|&server| {
                let mut samples = Samples::default();
                for value in latencies(addr, &sent, server, count) {
                    samples.push(value);
                }
                assert!(
                    samples.quantile(1.0).is_finite(),
                    "{server:?}: every event arrived"
                );
                samples
            })
            .collect();
        p50_ratios.push(runs[0].quantile(0.5) / runs[1].quantile(0.5));
        p99_ratios.push(runs[0].quantile(0.99) / runs[1].quantile(0.99));
        for (i, run) in runs.iter().enumerate() {
            all[i].extend(run);
        }
    }
    for (q, name, ratios) in [(0.5, "p50", &p50_ratios), (0.99, "p99", &p99_ratios)] {
        let ours = Samples::from(vec![all[0].quantile(q)]);
        let theirs = Samples::from(vec![all[1].quantile(q)]);
        let case = format!("{name} latency, lone 64 B event every {IDLE_GAP:?}");
        row(
            "loopback latency",
            &case,
            Unit::Micros,
            &ours,
            Server::Axum.name(),
            &theirs,
            ratios,
        );
        let raw = Samples::from(vec![all[2].quantile(q)]);
        let raw_ratio = Samples::from(vec![all[0].quantile(q) / all[2].quantile(q)]);
        row(
            "loopback latency",
            &case,
            Unit::Micros,
            &ours,
            Server::RawFrames.name(),
            &raw,
            &raw_ratio,
        );
    }
}
