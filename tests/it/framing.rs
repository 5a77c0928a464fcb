//! Framings: how the inner body is cut into messages, under arbitrary chunking.

use std::convert::Infallible;

use bytes::Bytes;
use http::{Request, Response};
use proptest::prelude::*;
use support::whatwg::{parse, Dispatched};
use support::{chunks, collect, text, TestBody};
use tower::{service_fn, Layer, ServiceExt};
use tower_sse::{Event, Framing, SseLayer, StreamError};

/// A layer that adds nothing around the events, so outputs compare exactly.
fn bare() -> SseLayer {
    SseLayer::new()
        .always()
        .no_retry()
        .no_heartbeat()
        .heartbeat_comment("open")
}

const OPEN: &str = ": open\n";

/// Serves `parts` as the inner body with `content_type` through `layer`, and reads the stream.
async fn run(layer: SseLayer, content_type: &str, parts: Vec<Bytes>) -> String {
    let content_type = content_type.to_owned();
    let inner = service_fn(move |_request: Request<()>| {
        let response = Response::builder()
            .header("content-type", content_type.clone())
            .body(chunks(parts.clone()))
            .expect("response");
        async move { Ok::<_, Infallible>(response) }
    });
    let response = layer
        .layer(inner)
        .oneshot(Request::new(()))
        .await
        .expect("infallible");
    let bytes = collect(response.into_body()).await;
    text(&bytes)
        .strip_prefix(OPEN)
        .expect("opening comment")
        .to_owned()
}

/// `input` split at every cut point.
fn split_at(input: &[u8], cuts: &[usize]) -> Vec<Bytes> {
    let mut parts = Vec::new();
    let mut start = 0;
    for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
        parts.push(Bytes::copy_from_slice(&input[start..cut]));
        start = cut;
    }
    parts
}

/// Splits `input` into three chunks at every pair of byte offsets and checks the output is always
/// `whole`.
async fn assert_same_at_every_split(content_type: &str, input: &[u8], whole: &str) {
    for a in 0..=input.len() {
        for b in a..=input.len() {
            let out = run(bare(), content_type, split_at(input, &[a, b])).await;
            assert_eq!(out, whole, "cut at {a} and {b}");
        }
    }
}

/// What a client would see of a stream: its events, last event id and retry (not comments).
fn seen(stream: &[u8]) -> support::whatwg::Parsed {
    support::whatwg::Parsed {
        comments: Vec::new(),
        ..parse(stream)
    }
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime")
        .block_on(future)
}

#[tokio::test]
async fn one_frame_is_one_message() {
    let out = run(
        bare(),
        "text/plain",
        vec!["a".into(), "".into(), "b\nc".into()],
    )
    .await;
    assert_eq!(out, "data: a\n\ndata: b\ndata: c\n\n");
}

#[tokio::test]
async fn ndjson_lines_are_messages_across_frames() {
    let out = run(
        bare(),
        "application/x-ndjson",
        vec!["{\"a\":1}\r\n{\"b\"".into(), ":2}\n\n\n{\"c\":3}".into()],
    )
    .await;
    assert_eq!(
        out,
        "data: {\"a\":1}\n\ndata: {\"b\":2}\n\ndata: {\"c\":3}\n\n"
    );
}

#[tokio::test]
async fn every_json_lines_content_type_is_recognised() {
    for content_type in [
        "application/x-ndjson",
        "application/jsonl",
        "application/json-lines; charset=utf-8",
        "Application/X-NDJSON",
    ] {
        let out = run(bare(), content_type, vec!["1\n2\n".into()]).await;
        assert_eq!(out, "data: 1\n\ndata: 2\n\n", "{content_type}");
    }
}

#[tokio::test]
async fn ndjson_split_at_every_byte_offset_gives_the_same_events() {
    let input = b"{\"n\":1}\n{\"n\":2}\r\n\r\n{\"text\":\"caf\xC3\xA9\"}\n{\"n\":4}";
    let whole = run(
        bare(),
        "application/x-ndjson",
        vec![Bytes::from_static(input)],
    )
    .await;
    assert_eq!(
        whole,
        "data: {\"n\":1}\n\ndata: {\"n\":2}\n\ndata: {\"text\":\"caf\u{e9}\"}\n\ndata: {\"n\":4}\n\n"
    );
    assert_same_at_every_split("application/x-ndjson", input, &whole).await;
}

#[tokio::test]
async fn inner_event_stream_is_reframed_event_by_event() {
    let input = "\u{FEFF}: upstream comment\nretry: 100\nevent: update\nid: 1\ndata: a\r\ndata:b\r\n\r\ndata: second\n\nid: 2\n\nevent: lonely\n\ndata: unfinished";
    let out = run(bare(), "text/event-stream", vec![Bytes::from(input)]).await;
    assert_eq!(
        out,
        "event: update\ndata: a\ndata: b\nid: 1\nretry: 100\n\ndata: second\n\nid: 2\n"
    );
    // What a client sees is the same either way (comments aside), but for the last id: an
    // id-only block is written without the blank line that lenient parsers would dispatch as
    // an empty event, so it takes effect with the next event, and here none comes.
    let (ours, upstream) = (seen(out.as_bytes()), seen(input.as_bytes()));
    assert_eq!((ours.events, ours.retry), (upstream.events, upstream.retry));
    assert_eq!(parse(input.as_bytes()).last_event_id, "2");
    assert_eq!(parse(out.as_bytes()).last_event_id, "1");
}

#[tokio::test]
async fn inner_event_stream_split_at_every_byte_offset_gives_the_same_events() {
    let input =
        b"\xEF\xBB\xBFdata: one\r\rid: 7\revent: x\r\ndata: two\r\n\r\ndata:\n\n:c\r\nretry: 5\n\n";
    let whole = run(bare(), "text/event-stream", vec![Bytes::from_static(input)]).await;
    assert_eq!(seen(whole.as_bytes()), seen(input));
    assert_same_at_every_split("text/event-stream", input, &whole).await;
}

#[tokio::test]
async fn hostile_upstream_fields_cannot_become_other_fields() {
    // A lone CR ends a line for clients: the upstream's own "event" line stays an event name,
    // and a NUL id is ignored as a client would ignore it.
    let input = "data: x\revent: injected\rid: a\0b\n\n\u{FEFF}data: bom mid-stream\n\ndata: y\n\n";
    let out = run(bare(), "text/event-stream", vec![Bytes::from(input)]).await;
    assert_eq!(out, "event: injected\ndata: x\n\ndata: y\n\n");
    assert_eq!(seen(out.as_bytes()), seen(input.as_bytes()));
}

#[tokio::test]
async fn framing_override_beats_the_content_type() {
    let out = run(
        bare().framing(Framing::Lines),
        "application/octet-stream",
        vec!["a\nb".into()],
    )
    .await;
    assert_eq!(out, "data: a\n\ndata: b\n\n");
}

#[tokio::test]
async fn oversized_message_ends_the_stream_with_an_error_event() {
    let error = "event: error\ndata: message too large\n\n";
    // A line that never ends: the decoder stops at the limit instead of buffering it.
    let endless: Vec<Bytes> = std::iter::repeat_n(Bytes::from(vec![b'x'; 1024]), 64).collect();
    let out = run(
        bare().max_message_size(4096),
        "application/x-ndjson",
        endless,
    )
    .await;
    assert_eq!(out, error);
    // The message before the long one is still delivered.
    let out = run(
        bare().max_message_size(4),
        "application/x-ndjson",
        vec!["1234\n12345\n6\n".into()],
    )
    .await;
    assert_eq!(out, format!("data: 1234\n\n{error}"));
    let out = run(
        bare().max_message_size(4),
        "text/plain",
        vec!["1234".into(), "12345".into()],
    )
    .await;
    assert_eq!(out, format!("data: 1234\n\n{error}"));
    let out = run(
        bare().max_message_size(8),
        "text/event-stream",
        vec!["data: 1234\n\ndata: 1234\ndata: 5678\n\n".into()],
    )
    .await;
    assert_eq!(out, format!("data: 1234\n\n{error}"));
}

#[tokio::test]
async fn the_limit_counts_the_message_not_its_framing() {
    let limit = 8;
    let exact = "data: 1234\ndata: 567\n\n"; // "1234\n567": 8 bytes
    let over = "data: 1234\ndata: 5678\n\n";
    for (content_type, fits, too_long) in [
        ("text/event-stream", exact.to_owned(), over.to_owned()),
        (
            "application/x-ndjson",
            "12345678\r\n".to_owned(),
            "123456789\n".to_owned(),
        ),
        ("text/plain", "12345678".to_owned(), "123456789".to_owned()),
    ] {
        for input in [&fits, &too_long] {
            let whole = run(
                bare().max_message_size(limit),
                content_type,
                vec![input.clone().into()],
            )
            .await;
            let expect_error = input == &too_long;
            assert_eq!(
                whole.contains("event: error"),
                expect_error,
                "{content_type} {input:?}"
            );
            // The same wherever the input is split (frames are messages: nothing to split).
            let cuts = if content_type == "text/plain" {
                0
            } else {
                input.len() + 1
            };
            for cut in 0..cuts {
                let split = split_at(input.as_bytes(), &[cut]);
                let out = run(bare().max_message_size(limit), content_type, split).await;
                assert_eq!(out, whole, "{content_type} {input:?} cut at {cut}");
            }
        }
    }
}

#[tokio::test]
async fn long_comments_from_upstream_are_dropped_not_buffered() {
    let mut parts = vec![Bytes::from(":"), Bytes::from(vec![b'p'; 1 << 20])];
    parts.extend([
        Bytes::from(vec![b'p'; 1 << 20]),
        Bytes::from("\r"),
        Bytes::from("\ndata: x\n\n"),
    ]);
    let out = run(bare().max_message_size(16), "text/event-stream", parts).await;
    assert_eq!(out, "data: x\n\n");
}

#[tokio::test]
async fn invalid_utf8_becomes_replacement_characters() {
    let out = run(
        bare(),
        "text/plain",
        vec![Bytes::from_static(b"caf\xE9 \xF0\x9F\x98")],
    )
    .await;
    assert_eq!(out, "data: caf\u{FFFD} \u{FFFD}\n\n");
}

#[tokio::test]
async fn mapper_sets_name_and_id_per_message() {
    let layer = bare().map_message(|message| {
        let n = message.text().len();
        Event::default()
            .event("len")?
            .id(n.to_string())
            .map(|e| e.data(message.text()))
    });
    let out = run(layer, "application/x-ndjson", vec!["ab\nabc\n".into()]).await;
    assert_eq!(
        out,
        "event: len\ndata: ab\nid: 2\n\nevent: len\ndata: abc\nid: 3\n\n"
    );
}

#[tokio::test]
async fn mapper_error_and_custom_error_event() {
    let layer = bare()
        .map_message(|message| Event::default().id(message.text().into_owned()))
        .map_error(|error| match error {
            StreamError::Event(reason) => {
                Some(Event::default().event("bad").ok()?.data(reason.to_string()))
            }
            _ => None,
        });
    let out = run(
        layer,
        "application/x-ndjson",
        vec!["ok\nnul\0id\nnext\n".into()],
    )
    .await;
    assert_eq!(
        out,
        "id: ok\nevent: bad\ndata: event id contains a NUL character\n\n"
    );
}

#[tokio::test]
async fn inner_body_error_becomes_a_final_error_event() {
    let frames: Vec<Result<http_body::Frame<Bytes>, support::BoxError>> = vec![
        Ok(http_body::Frame::data(Bytes::from("before"))),
        Err("boom: internal detail".into()),
        Ok(http_body::Frame::data(Bytes::from("after"))),
    ];
    let body: TestBody = support::from_stream(futures_util::stream::iter(frames));
    let mut body = Some(body);
    let inner = service_fn(move |_request: Request<()>| {
        let body = body.take().expect("one call");
        async move { Ok::<_, Infallible>(Response::new(body)) }
    });
    let response = bare()
        .layer(inner)
        .oneshot(Request::new(()))
        .await
        .expect("infallible");
    let out = collect(response.into_body()).await;
    assert_eq!(
        text(&out),
        format!("{OPEN}data: before\n\nevent: error\ndata: stream failed\n\n")
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    /// Whatever an upstream event stream holds and however it is chunked, a client reading our
    /// re-framed stream sees exactly what it would have seen reading the upstream directly: the
    /// same events with the same ids, the same retry. The one difference: an id set by a
    /// block without data after the last event is not committed (it would take a blank line
    /// that lenient parsers dispatch as an empty event), so the stream's last id may still be
    /// the last event's. No block without data ends in a blank line, and the stream never
    /// ends inside an event.
    #[test]
    fn reframing_any_event_stream_is_invisible_to_clients(
        input in prop::collection::vec(
            prop_oneof![
                3 => prop::sample::select(vec![
                    "data", "data:", "data: ", "event:", "id:", "id: 1", "retry:", "retry: 10",
                    ":", " ", "x", "\r", "\n", "\r\n", "\0", "\u{FEFF}", "é", "\u{2028}",
                ]).prop_map(|s| s.as_bytes().to_vec()),
                1 => prop::collection::vec(any::<u8>(), 0..4),
            ],
            0..60,
        ).prop_map(|parts| parts.concat()),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..5),
    ) {
        let mut cuts: Vec<usize> = cuts.iter().map(|index| index.index(input.len() + 1)).collect();
        cuts.sort_unstable();
        let out = block_on(run(bare(), "text/event-stream", split_at(&input, &cuts)));
        let ours = parse(out.as_bytes());
        let upstream = parse(&input);
        prop_assert_eq!(&ours.events, &upstream.events);
        let last_event = upstream.events.last().map_or("", |event| event.last_event_id.as_str());
        prop_assert!(
            ours.last_event_id == upstream.last_event_id || ours.last_event_id == last_event,
            "last id {:?}, upstream {:?}", ours.last_event_id, upstream.last_event_id
        );
        prop_assert_eq!(ours.retry, upstream.retry);
        prop_assert!(support::lenient::spurious_dispatches(out.as_bytes()).is_empty(), "{:?}", out);
        let unfinished = out.rsplit("\n\n").next().unwrap_or_default();
        prop_assert!(!unfinished.lines().any(|line| line.starts_with("data")), "{:?}", out);
    }

    /// NDJSON: one event per non-empty line, however it is chunked.
    #[test]
    fn lines_are_messages_under_any_chunking(
        lines in prop::collection::vec("[a-z{}:\" \r\u{e9}]{0,12}", 0..10),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..5),
    ) {
        let input = lines.join("\n");
        let mut cuts: Vec<usize> = cuts.iter().map(|index| index.index(input.len() + 1)).collect();
        cuts.sort_unstable();
        let out = block_on(run(bare(), "application/x-ndjson", split_at(input.as_bytes(), &cuts)));
        let expected: Vec<Dispatched> = lines
            .iter()
            .map(|line| line.strip_suffix('\r').unwrap_or(line))
            .filter(|line| !line.is_empty())
            .map(|line| Dispatched {
                kind: "message".into(),
                data: line.replace('\r', "\n"),
                last_event_id: String::new(),
            })
            .collect();
        prop_assert_eq!(parse(out.as_bytes()).events, expected);
    }
}
