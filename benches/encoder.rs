//! Encoder: events/s and bytes/s for 64 B, 1 KiB and 64 KiB data, single-line and multi-line,
//! tower-sse `Event` against axum 0.8's `Event`, side by side in each run.
//!
//! Both sides start from an owned `String` made for each event (as a producer's `format!` or
//! `serde_json::to_string` makes it) and end with the event's wire bytes in a buffer:
//! tower-sse builds an `Event` and appends it to one reused output buffer (split off every
//! 64 KiB, as the body does); axum encodes while its `Event` is built (its last byte and the
//! freeze happen in its body, which is not public, so axum's side here does slightly less work).
//!
//! `cargo bench --bench encoder`

mod common;

use std::hint::black_box;
use std::time::Instant;

use axum::response::sse::Event as AxumEvent;
use bytes::BytesMut;
use common::{rate, row, Samples, Unit, RUNS};
use tower_sse::Event;

/// Output split off at this size, as the body does.
const FLUSH_AT: usize = 64 * 1024;
/// Data encoded per case and run.
const BYTES_PER_RUN: usize = 32 * 1024 * 1024;

/// `size` bytes of text; multi-line text has a LF every 32 bytes.
fn text(size: usize, multi_line: bool) -> String {
    (0..size)
        .map(|i| {
            if multi_line && i % 32 == 31 {
                '\n'
            } else {
                'x'
            }
        })
        .collect()
}

fn tower_sse(data: &str, count: usize) -> usize {
    let mut buf = BytesMut::new();
    let mut written = 0;
    for _ in 0..count {
        Event::default().data(data.to_owned()).encode_into(&mut buf);
        if buf.len() >= FLUSH_AT {
            written += buf.len();
            black_box(buf.split().freeze());
        }
    }
    written + buf.len()
}

fn axum(data: &str, count: usize) -> usize {
    for _ in 0..count {
        drop(black_box(AxumEvent::default().data(String::from(data))));
    }
    count
}

fn main() {
    common::header_if_alone();
    for size in [64, 1024, 64 * 1024] {
        for multi_line in [false, true] {
            let data = text(size, multi_line);
            let count = BYTES_PER_RUN / size;
            let (mut ours, mut theirs, mut ratios) =
                (Samples::default(), Samples::default(), Samples::default());
            let (mut ours_bytes, mut theirs_bytes) = (Samples::default(), Samples::default());
            for _ in 0..RUNS {
                let start = Instant::now();
                let written = black_box(tower_sse(&data, count));
                let ours_time = start.elapsed();
                assert!(written >= count * (size + 8), "every event encoded");
                let start = Instant::now();
                black_box(axum(&data, count));
                let theirs_time = start.elapsed();
                ours.push(rate(count, ours_time));
                theirs.push(rate(count, theirs_time));
                ours_bytes.push(rate(count * size, ours_time));
                theirs_bytes.push(rate(count * size, theirs_time));
                ratios.push(theirs_time.as_secs_f64() / ours_time.as_secs_f64());
            }
            let shape = if multi_line { "multi-line" } else { "one line" };
            let case = format!("{} {shape}", common::size_name(size));
            row(
                "encoder events/s",
                &case,
                Unit::MegaPerSec,
                &ours,
                "axum Event",
                &theirs,
                &ratios,
            );
            row(
                "encoder data bytes/s",
                &case,
                Unit::MegaBytesPerSec,
                &ours_bytes,
                "axum Event",
                &theirs_bytes,
                &ratios,
            );
        }
    }
}
