//! In-process body throughput: drain `SseBody` over N ready messages (heartbeat on) against
//! axum's `Sse` + `KeepAlive` over the same messages, side by side in each run. Built with the
//! feature `metrics`, it also runs the same streams with a Prometheus recorder installed
//! against none (the facade's no-op), side by side: the cost of the metrics when on.
//!
//! `cargo bench --bench in_process --features metrics`

mod common;

use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::response::sse::{Event as AxumEvent, KeepAlive, Sse};
use axum::response::IntoResponse;
use bytes::Bytes;
use common::{rate, row, Samples, Unit, RUNS};
use futures_util::StreamExt;
use http::{Request, Response};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use tower::{service_fn, Layer, ServiceExt};
use tower_sse::SseLayer;

/// Bytes of data drained per case and run.
const BYTES_PER_RUN: usize = 16 * 1024 * 1024;

/// Polls the body to its end; returns the bytes it produced.
async fn drain<B>(body: B) -> usize
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Debug,
{
    let mut body = body;
    let mut bytes = 0;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.expect("the body never fails").into_data() {
            bytes += data.len();
        }
    }
    bytes
}

async fn tower_sse(data: Bytes, count: usize) -> (Duration, usize) {
    let inner = service_fn(move |_: Request<()>| {
        let data = data.clone();
        let frames = futures_util::stream::iter(0..count)
            .map(move |_| Ok::<_, Infallible>(Frame::data(data.clone())));
        async move { Ok::<_, Infallible>(Response::new(StreamBody::new(frames))) }
    });
    let start = Instant::now();
    let response = SseLayer::new()
        .always()
        .layer(inner)
        .oneshot(Request::new(()))
        .await
        .expect("infallible");
    let bytes = drain(Box::pin(response.into_body())).await;
    (start.elapsed(), bytes)
}

/// `streams` streams of one event each, opened and drained one after another: the per-stream
/// cost (the metrics resolve their handles when a stream opens).
#[cfg(feature = "metrics")]
async fn short_streams(streams: usize) -> (Duration, usize) {
    let inner = service_fn(|_: Request<()>| async {
        let frames = futures_util::stream::iter([Ok::<_, Infallible>(Frame::data(
            Bytes::from_static(b"x"),
        ))]);
        Ok::<_, Infallible>(Response::new(StreamBody::new(frames)))
    });
    let service = SseLayer::new().always().layer(inner);
    let start = Instant::now();
    let mut bytes = 0;
    for _ in 0..streams {
        let response = service
            .clone()
            .oneshot(Request::new(()))
            .await
            .expect("infallible");
        bytes += drain(Box::pin(response.into_body())).await;
    }
    (start.elapsed(), bytes)
}

/// The same streams with a Prometheus recorder installed (on this thread) and without one.
#[cfg(feature = "metrics")]
fn metrics_rows(runtime: &tokio::runtime::Runtime) {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let data = Bytes::from(vec![b'x'; 64]);
    let count = BYTES_PER_RUN / 64;
    let streams = 20_000;
    type Case<'a> = (&'a str, usize, Box<dyn Fn() -> (Duration, usize) + 'a>);
    let cases: [Case; 2] = [
        (
            "ready 64 B events, one stream",
            count,
            Box::new(|| runtime.block_on(tower_sse(data.clone(), count))),
        ),
        (
            "streams of one event, one after another",
            streams,
            Box::new(|| runtime.block_on(short_streams(streams))),
        ),
    ];
    for (case, n, run) in cases {
        let (mut on, mut off, mut ratios) =
            (Samples::default(), Samples::default(), Samples::default());
        for _ in 0..RUNS {
            let (on_time, _) = metrics::with_local_recorder(&recorder, &run);
            let (off_time, _) = run();
            on.push(rate(n, on_time));
            off.push(rate(n, off_time));
            ratios.push(off_time.as_secs_f64() / on_time.as_secs_f64());
        }
        // Keep what the recorder gathered alive to the end, as a scraper would read it.
        assert!(recorder
            .handle()
            .render()
            .contains("sse_streams_opened_total"));
        row(
            "metrics on (Prometheus recorder)",
            &format!("{n} {case}"),
            Unit::MegaPerSec,
            &on,
            "no recorder",
            &off,
            &ratios,
        );
    }
}

async fn axum(data: Bytes, count: usize) -> (Duration, usize) {
    let text = String::from_utf8(data.to_vec()).expect("ascii");
    let start = Instant::now();
    let events = futures_util::stream::iter(0..count)
        .map(move |_| Ok::<_, Infallible>(AxumEvent::default().data(&text)));
    let body = Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
        .into_body();
    let bytes = drain(body).await;
    (start.elapsed(), bytes)
}

fn main() {
    common::header_if_alone();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for size in [64, 1024] {
        let data = Bytes::from(vec![b'x'; size]);
        let count = BYTES_PER_RUN / size;
        let (mut ours, mut theirs, mut ratios) =
            (Samples::default(), Samples::default(), Samples::default());
        for _ in 0..RUNS {
            let (ours_time, ours_bytes) = runtime.block_on(tower_sse(data.clone(), count));
            let (theirs_time, theirs_bytes) = runtime.block_on(axum(data.clone(), count));
            let wire = count * (size + 8);
            assert!(
                ours_bytes >= wire && theirs_bytes >= wire,
                "every event encoded"
            );
            ours.push(rate(count, ours_time));
            theirs.push(rate(count, theirs_time));
            ratios.push(theirs_time.as_secs_f64() / ours_time.as_secs_f64());
        }
        let case = format!("{count} ready {} events", common::size_name(size));
        row(
            "in-process body",
            &case,
            Unit::MegaPerSec,
            &ours,
            "axum Sse + KeepAlive",
            &theirs,
            &ratios,
        );
    }
    #[cfg(feature = "metrics")]
    metrics_rows(&runtime);
}
