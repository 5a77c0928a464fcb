//! The encoder, read back by the reference WHATWG parser, over generated events.

use std::time::Duration;

use proptest::prelude::*;
use support::whatwg::{parse, Dispatched};
use tower_sse::{Event, EventError};

/// Characters that stress the wire format: every line break, NUL, spaces, colons, a BOM, Unicode
/// separators that are not SSE line breaks, and astral characters.
fn tricky_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => prop::sample::select(vec![
            '\r', '\n', '\0', ' ', '\t', ':', '\u{FEFF}', '\u{2028}', '\u{2029}', '\u{85}',
            '\u{1F600}', 'é', 'd', 'a', 't', 'i', 'e', 'v', 'n', 'r', 'y',
        ]),
        1 => any::<char>(),
    ]
}

fn tricky_string(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(tricky_char(), 0..max).prop_map(|chars| chars.into_iter().collect())
}

fn single_line(max: usize) -> impl Strategy<Value = String> {
    tricky_string(max).prop_map(|s| s.replace(['\r', '\n'], ""))
}

/// What a client receives for `data`: every CR, LF and CRLF becomes one LF.
fn as_received(data: &str) -> String {
    data.replace("\r\n", "\n").replace('\r', "\n")
}

/// Cases of the round-trip property: 100 000 in CI; set `TOWER_SSE_ROUND_TRIP_CASES` for a
/// long soak (the README gives the command).
/// `event` with the optional fields set (names and ids already free of line breaks and NUL).
fn with_fields(
    mut event: Event,
    name: &Option<String>,
    id: &Option<String>,
    comment: &Option<String>,
    retry: Option<u64>,
) -> Event {
    if let Some(name) = name {
        event = event
            .event(name.clone())
            .expect("a name without line breaks is valid");
    }
    if let Some(id) = id {
        event = event
            .id(id.clone())
            .expect("an id without line breaks or NUL is valid");
    }
    if let Some(comment) = comment {
        event = event.comment(comment.clone());
    }
    if let Some(retry) = retry {
        event = event.retry(Duration::from_millis(retry));
    }
    event
}

fn round_trip_cases() -> u32 {
    std::env::var("TOWER_SSE_ROUND_TRIP_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(100_000)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(round_trip_cases()))]

    #[test]
    fn any_event_round_trips_through_a_client_parser(
        data in tricky_string(40),
        name in proptest::option::of(single_line(12)),
        id in proptest::option::of(single_line(12).prop_map(|s| s.replace('\0', ""))),
        comment in proptest::option::of(tricky_string(12)),
        retry in proptest::option::of(any::<u64>()),
    ) {
        let event = with_fields(Event::default().data(data.clone()), &name, &id, &comment, retry);
        let wire = event.encode();
        prop_assert!(wire.ends_with("\n\n"));
        let parsed = parse(wire.as_bytes());
        let kind = match name.as_deref() {
            None | Some("") => "message".to_owned(),
            Some(name) => name.to_owned(),
        };
        prop_assert_eq!(parsed.events, vec![Dispatched {
            kind,
            data: as_received(&data),
            last_event_id: id.clone().unwrap_or_default(),
        }]);
        prop_assert_eq!(parsed.last_event_id, id.unwrap_or_default());
        prop_assert_eq!(parsed.retry, retry.map(u128::from));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    #[test]
    fn a_sequence_of_events_arrives_in_order(
        items in prop::collection::vec((tricky_string(16), proptest::option::of(0u32..1000)), 1..8),
    ) {
        let mut wire = String::new();
        let mut expected = Vec::new();
        let mut last_id = String::new();
        for (data, id) in &items {
            let mut event = Event::default().data(data.clone());
            if let Some(id) = id {
                event = event.id(id.to_string()).expect("digits are a valid id");
                last_id = id.to_string();
            }
            wire.push_str(&event.encode());
            expected.push(Dispatched {
                kind: "message".into(),
                data: as_received(data),
                last_event_id: last_id.clone(),
            });
        }
        prop_assert_eq!(parse(wire.as_bytes()).events, expected);
    }

    /// An event without data dispatches nothing (WHATWG), so it ends no block: lenient
    /// parsers that dispatch any block ending in a blank line (the Python `openai` SDK) would
    /// dispatch it with empty data. Its id and retry join the next event, which keeps its own
    /// type: the dropped name never leaks into it.
    #[test]
    fn an_event_without_data_ends_no_block_and_its_fields_join_the_next_event(
        name in proptest::option::of(single_line(8)),
        id in proptest::option::of(single_line(8).prop_map(|s| s.replace('\0', ""))),
        comment in proptest::option::of(tricky_string(12)),
        retry in proptest::option::of(0u64..100_000),
        next in tricky_string(16),
    ) {
        let wire = with_fields(Event::default(), &name, &id, &comment, retry).encode();
        prop_assert!(wire.lines().all(|line| !line.is_empty()), "{:?}", wire);
        let stream = format!("{wire}{}", Event::default().data(next.clone()).encode());
        prop_assert!(support::lenient::spurious_dispatches(stream.as_bytes()).is_empty(), "{:?}", stream);
        let parsed = parse(stream.as_bytes());
        prop_assert_eq!(parsed.events, vec![Dispatched {
            kind: "message".into(),
            data: as_received(&next),
            last_event_id: id.unwrap_or_default(),
        }]);
        prop_assert_eq!(parsed.retry, retry.map(u128::from));
    }

    #[test]
    fn a_comment_never_dispatches_or_sets_a_field(text in tricky_string(40)) {
        let parsed = parse(Event::default().comment(text.clone()).encode().as_bytes());
        prop_assert!(parsed.events.is_empty());
        prop_assert_eq!(parsed.retry, None);
        prop_assert_eq!(parsed.last_event_id, "");
        prop_assert_eq!(parsed.comments.len(), as_received(&text).split('\n').count());
    }

    #[test]
    fn names_and_ids_with_line_breaks_or_nul_are_rejected(
        before in single_line(8),
        after in single_line(8),
        bad in prop::sample::select(vec!["\r", "\n", "\r\n"]),
    ) {
        let value = format!("{before}{bad}{after}");
        prop_assert_eq!(Event::default().event(value.clone()).err(), Some(EventError::LineBreakInEvent));
        prop_assert_eq!(Event::default().id(value).err(), Some(EventError::LineBreakInId));
        let with_nul = format!("{before}\0{after}");
        prop_assert_eq!(Event::default().id(with_nul).err(), Some(EventError::NulInId));
    }

    #[test]
    fn retry_is_read_back_in_milliseconds(millis in 0u64..u64::MAX) {
        let wire = Event::default().retry(Duration::from_millis(millis)).encode();
        prop_assert_eq!(parse(wire.as_bytes()).retry, Some(u128::from(millis)));
    }
}

#[test]
fn data_line_breaks_are_split_into_data_lines() {
    let cases = [
        ("a\rb", "data: a\ndata: b\n\n"),
        ("a\nb", "data: a\ndata: b\n\n"),
        ("a\r\nb", "data: a\ndata: b\n\n"),
        (
            "a\n\rb\r\n\r\n",
            "data: a\ndata: \ndata: b\ndata: \ndata: \n\n",
        ),
        ("trailing\n", "data: trailing\ndata: \n\n"),
        ("\n", "data: \ndata: \n\n"),
        ("", "data: \n\n"),
        ("  leading spaces", "data:   leading spaces\n\n"),
        (
            "data: looks like a field\nid: 1",
            "data: data: looks like a field\ndata: id: 1\n\n",
        ),
    ];
    for (data, wire) in cases {
        assert_eq!(Event::default().data(data).encode(), wire, "data {data:?}");
        assert_eq!(parse(wire.as_bytes()).events[0].data, as_received(data));
    }
}

#[test]
fn empty_data_is_still_an_event() {
    let parsed = parse(Event::default().data("").encode().as_bytes());
    assert_eq!(parsed.events.len(), 1);
    assert_eq!(parsed.events[0].data, "");
}

#[test]
fn an_empty_id_resets_the_last_event_id() {
    let wire = [
        Event::default().id("5").unwrap().data("a").encode(),
        Event::default().id("").unwrap().data("b").encode(),
    ]
    .concat();
    let parsed = parse(wire.as_bytes());
    assert_eq!(parsed.events[0].last_event_id, "5");
    assert_eq!(parsed.events[1].last_event_id, "");
}

#[test]
fn field_order_and_spaces_are_fixed() {
    let event = Event::default()
        .comment("hello")
        .event("update")
        .unwrap()
        .id("42")
        .unwrap()
        .retry(Duration::from_secs(2))
        .data(" x");
    assert_eq!(
        event.encode(),
        ": hello\nevent: update\ndata:  x\nid: 42\nretry: 2000\n\n"
    );
}

#[test]
fn invalid_utf8_data_becomes_replacement_characters() {
    let event = Event::default().data_utf8_lossy(bytes::Bytes::from_static(b"ok \xFF\xFE end"));
    assert_eq!(event.get_data(), Some("ok \u{FFFD}\u{FFFD} end"));
    assert_eq!(
        parse(event.encode().as_bytes()).events[0].data,
        "ok \u{FFFD}\u{FFFD} end"
    );
}

#[cfg(feature = "json")]
#[test]
fn json_data_stays_on_one_line() {
    #[derive(serde::Serialize)]
    struct Tick<'a> {
        n: u32,
        text: &'a str,
    }
    let event = Event::default()
        .json(&Tick {
            n: 1,
            text: "a\nb\r\u{2028}",
        })
        .unwrap();
    assert_eq!(
        event.encode(),
        "data: {\"n\":1,\"text\":\"a\\nb\\r\u{2028}\"}\n\n"
    );
}
