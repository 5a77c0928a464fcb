//! `read::EventReader`: the public event-stream reader, against the reference WHATWG parser
//! over generated streams split anywhere, and over a layer's own stream.

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use proptest::prelude::*;
use support::whatwg::{parse, Dispatched};
use tower_sse::read::EventReader;
use tower_sse::StreamError;

/// What the reader gives for `chunks`: each event as the reference parser describes it, the
/// final retry and last event ID, and the error if one ended it.
fn read_all(
    chunks: Vec<Bytes>,
    limit: usize,
) -> (Vec<Dispatched>, Option<u128>, String, Option<StreamError>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime"); // ok: test
    runtime.block_on(async {
        let body = support::chunks(chunks);
        let mut reader = EventReader::with_max_message_size(body, limit);
        let mut events = Vec::new();
        let mut error = None;
        while let Some(next) = reader.next_event().await {
            match next {
                Ok(message) => events.push(Dispatched {
                    kind: message.event_type().to_owned(),
                    data: message.text().into_owned(),
                    last_event_id: reader.last_event_id().to_owned(),
                }),
                Err(failed) => error = Some(failed),
            }
        }
        let retry = reader.retry().map(|retry| retry.as_millis());
        (events, retry, reader.last_event_id().to_owned(), error)
    })
}

/// Lines of an event stream: the fields a client acts on, comments, unknown fields, a BOM,
/// invalid UTF-8, every line break.
fn stream_bytes() -> impl Strategy<Value = Vec<u8>> {
    const PIECES: [&[u8]; 19] = [
        b"data: ",
        b"data:",
        b"data",
        b"event: ",
        b"id: ",
        b"id:",
        b"retry: ",
        b": ",
        b"other: ",
        b"\n",
        b"\r",
        b"\r\n",
        b"\n\n",
        "\u{FEFF}".as_bytes(),
        b"\0",
        b"\xE2\x82",
        b"\xff",
        "é✓".as_bytes(),
        b" ",
    ];
    let piece = prop_oneof![
        19 => prop::sample::select(&PIECES[..]).prop_map(<[u8]>::to_vec),
        1 => "[0-9]{1,6}".prop_map(String::into_bytes),
        1 => "[a-z]{1,4}".prop_map(String::into_bytes),
    ];
    prop::collection::vec(piece, 0..40).prop_map(|pieces| pieces.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(5_000))]

    /// Whatever the bytes and however they are split, the reader dispatches what the reference
    /// parser dispatches, with the same last event ID per event, and ends with the same retry
    /// and last event ID.
    #[test]
    fn the_reader_agrees_with_the_reference_parser(
        bytes in stream_bytes(),
        cut in any::<prop::sample::Index>(),
        second in any::<prop::sample::Index>(),
    ) {
        let expected = parse(&bytes);
        let mut cuts = [cut.index(bytes.len() + 1), second.index(bytes.len() + 1)];
        cuts.sort_unstable();
        let chunks = vec![
            Bytes::copy_from_slice(&bytes[..cuts[0]]),
            Bytes::copy_from_slice(&bytes[cuts[0]..cuts[1]]),
            Bytes::copy_from_slice(&bytes[cuts[1]..]),
        ];
        let (events, retry, last_event_id, error) = read_all(chunks, 1 << 20);
        prop_assert!(error.is_none(), "{error:?}");
        prop_assert_eq!(events, expected.events);
        prop_assert_eq!(retry, expected.retry);
        prop_assert_eq!(last_event_id, expected.last_event_id);
    }
}

#[test]
fn id_only_blocks_and_empty_ids_move_the_last_event_id() {
    let stream = "id: 1\ndata: a\n\ndata: b\n\nid: 7\n\ndata: c\n\nid\ndata: d\n\nid: 9\ndata: cut";
    let (events, _, last, error) = read_all(vec![Bytes::from(stream)], 1 << 20);
    assert!(error.is_none());
    let ids: Vec<(&str, &str)> = events
        .iter()
        .map(|event| (event.data.as_str(), event.last_event_id.as_str()))
        .collect();
    assert_eq!(ids, [("a", "1"), ("b", "1"), ("c", "7"), ("d", "")]);
    // The unfinished last block is dropped, and so is its id.
    assert_eq!(last, "");
}

/// Events complete before a failure come first, then the typed error, then the end.
#[test]
fn a_failing_body_ends_with_a_typed_error_after_the_events_before_it() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime"); // ok: test
    runtime.block_on(async {
        let frames: Vec<Result<http_body::Frame<Bytes>, support::BoxError>> = vec![
            Ok(http_body::Frame::data(Bytes::from(
                "data: a\n\ndata: b\n\n",
            ))),
            Err("connection reset".into()),
        ];
        let reader = EventReader::new(support::from_stream(futures_util::stream::iter(frames)));
        let items: Vec<_> = reader.collect().await;
        assert_eq!(items.len(), 3, "{items:?}");
        assert!(matches!(&items[0], Ok(m) if m.text() == "a"));
        assert!(matches!(&items[1], Ok(m) if m.text() == "b"));
        assert!(matches!(&items[2], Err(StreamError::Body(_))), "{items:?}");
    });
}

/// The reader holds no more than its limit of an unfinished event: a longer one is a typed
/// error, while long comments and unknown fields are skipped however long.
#[test]
fn memory_stays_bounded_by_the_limit() {
    let long = "x".repeat(10_000);
    let skipped = format!(": {long}\nother: {long}\ndata: ok\n\n");
    let pieces: Vec<Bytes> = skipped
        .as_bytes()
        .chunks(100)
        .map(Bytes::copy_from_slice)
        .collect();
    let (events, _, _, error) = read_all(pieces, 64);
    assert!(error.is_none(), "{error:?}");
    assert_eq!(events.len(), 1);
    let too_long = format!("data: ok\n\ndata: {long}\n\n");
    let (events, _, _, error) = read_all(vec![Bytes::from(too_long)], 64);
    assert_eq!(events.len(), 1);
    assert!(
        matches!(error, Some(StreamError::TooLarge { limit: 64 })),
        "{error:?}"
    );
}

/// A stream written by the layer over real TCP reads back as it was sent.
#[tokio::test]
async fn reads_a_layer_stream_over_tcp() {
    use axum::{body::Body, routing::get, Router};
    use tower_sse::{Event, SseLayer};

    async fn events() -> Body {
        let frames = ["one", "two", "three"].map(Ok::<_, std::io::Error>);
        Body::from_stream(futures_util::stream::iter(frames))
    }
    let layer = SseLayer::new()
        .retry(Duration::from_millis(1234))
        .map_message(|message| {
            let text = message.text().into_owned();
            Event::default()
                .event("tick")?
                .id(text.clone())
                .map(|e| e.data(text))
        });
    let app = Router::new().route("/events", get(events)).layer(layer);
    let addr = support::serve_axum(app).await;
    let response = support::get(addr, "/events", &[("accept", "text/event-stream")]).await;
    let mut reader = EventReader::new(response.into_body());
    let mut seen = Vec::new();
    while let Some(message) = reader.next_event().await {
        let message = message.expect("a clean stream"); // ok: test
        seen.push((
            message.event().map(str::to_owned),
            message.text().into_owned(),
        ));
    }
    assert_eq!(
        seen,
        ["one", "two", "three"].map(|text| (Some("tick".to_owned()), text.to_owned()))
    );
    assert_eq!(reader.last_event_id(), "three");
    assert_eq!(reader.retry(), Some(Duration::from_millis(1234)));
}

/// A `retry` line counts the moment it is read, as a client applies it: the layer's retry hint
/// joins the first event's block, and must not wait for that event to be dispatched.
#[tokio::test]
async fn a_retry_counts_as_soon_as_its_line_is_read() {
    let (tx, body) = support::channel();
    let mut reader = EventReader::new(body);
    let send = |text: &'static str| {
        let tx = tx.clone();
        async move {
            tx.send(Ok(Bytes::from_static(text.as_bytes())))
                .await
                .expect("open")
        }
    };
    send("retry: 3000\n").await;
    let waiting = tokio::time::timeout(Duration::from_millis(50), reader.next_event()).await;
    assert!(waiting.is_err(), "no event yet");
    assert_eq!(reader.retry(), Some(Duration::from_millis(3000)));
    send("data: a\n\nretry: 700\n").await;
    let first = reader.next_event().await.expect("an event").expect("clean");
    assert_eq!(first.text(), "a");
    // The retry of the next block is read, but the event before it was handed out first.
    let waiting = tokio::time::timeout(Duration::from_millis(50), reader.next_event()).await;
    assert!(waiting.is_err(), "no second event yet");
    assert_eq!(reader.retry(), Some(Duration::from_millis(700)));
}
