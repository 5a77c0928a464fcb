//! In-process body throughput: drain `SseBody` over N ready 64-byte messages (heartbeat on)
//! against axum's `Sse` + `KeepAlive` over the same messages, side by side in one run.
//!
//! `cargo bench --bench in_process` prints events/s for both and the ratio (median of 7 runs,
//! with min–max), so the comparison holds on a noisy machine.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::response::sse::{Event as AxumEvent, KeepAlive, Sse};
use axum::response::IntoResponse;
use bytes::Bytes;
use futures_util::StreamExt;
use http::{Request, Response};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use tower::{service_fn, Layer, ServiceExt};
use tower_sse::SseLayer;

const EVENTS: usize = 200_000;
const RUNS: usize = 7;

fn payload() -> Bytes {
    Bytes::from(vec![b'x'; 64])
}

async fn drain<B>(body: B) -> usize
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Debug,
{
    let mut body = body;
    let mut bytes = 0;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.expect("body").into_data() {
            bytes += data.len();
        }
    }
    bytes
}

async fn tower_sse_run() -> (Duration, usize) {
    let data = payload();
    let inner = service_fn(move |_: Request<()>| {
        let data = data.clone();
        let frames = futures_util::stream::iter(0..EVENTS)
            .map(move |_| Ok::<_, Infallible>(Frame::data(data.clone())));
        async move { Ok::<_, Infallible>(Response::new(StreamBody::new(frames))) }
    });
    let start = Instant::now();
    let response = SseLayer::new()
        .always()
        .layer(inner)
        .oneshot(Request::new(()))
        .await
        .expect("ok");
    let bytes = drain(Box::pin(response.into_body())).await;
    (start.elapsed(), bytes)
}

async fn axum_run() -> (Duration, usize) {
    let text = String::from_utf8(payload().to_vec()).expect("ascii");
    let start = Instant::now();
    let events = futures_util::stream::iter(0..EVENTS)
        .map(move |_| Ok::<_, Infallible>(AxumEvent::default().data(text.clone())));
    let body = Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
        .into_body();
    let bytes = drain(body).await;
    (start.elapsed(), bytes)
}

fn median(mut values: Vec<f64>) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    (
        values[values.len() / 2],
        values[0],
        values[values.len() - 1],
    )
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let (mut ours, mut theirs, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..RUNS {
        // Alternate within each run so both see the same machine state.
        let (ours_time, ours_bytes) = runtime.block_on(tower_sse_run());
        let (axum_time, axum_bytes) = runtime.block_on(axum_run());
        assert!(
            ours_bytes >= EVENTS * 72 && axum_bytes >= EVENTS * 72,
            "all events encoded"
        );
        let ours_rate = EVENTS as f64 / ours_time.as_secs_f64();
        let axum_rate = EVENTS as f64 / axum_time.as_secs_f64();
        ours.push(ours_rate);
        theirs.push(axum_rate);
        ratios.push(ours_rate / axum_rate);
    }
    let row = |name: &str, (m, lo, hi): (f64, f64, f64)| {
        println!(
            "{name:<28} {:>10.2} M/s  ({:.2}–{:.2})",
            m / 1e6,
            lo / 1e6,
            hi / 1e6
        );
    };
    println!("in-process, {EVENTS} ready 64 B events, heartbeat on, median of {RUNS}");
    row("tower-sse SseBody", median(ours));
    row("axum Sse + KeepAlive", median(theirs));
    let (m, lo, hi) = median(ratios);
    println!(
        "{:<28} {m:>10.2}×      ({lo:.2}–{hi:.2})",
        "ratio tower-sse / axum"
    );
}
