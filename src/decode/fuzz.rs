//! Every decoder under generated input cut at arbitrary points: no panic, memory bounded by the
//! message limit (not the input), and the same items and error as decoding it in one piece.

use bytes::Bytes;
use proptest::prelude::*;

use super::{Decode, Decoder, Item};
use crate::Framing;

/// What decoding produced: every item (as its debug text, so ids, events and data all count),
/// and the error that stopped it, if any.
#[derive(Debug, PartialEq)]
pub(crate) struct Outcome {
    items: Vec<String>,
    error: Option<String>,
}

/// Decodes `input` cut at `cuts` (sorted, within the input), checking after every chunk that the
/// decoder holds no more than `bound` bytes.
fn decode(framing: Framing, max: usize, input: &[u8], cuts: &[usize], bound: usize) -> Outcome {
    decode_with(Decoder::new(framing, max, None), max, input, cuts, bound)
}

/// [`decode`] with a given decoder (the message limit `max` only shows in failures).
pub(crate) fn decode_with(
    mut decoder: impl Decode,
    max: usize,
    input: &[u8],
    cuts: &[usize],
    bound: usize,
) -> Outcome {
    let mut items = Vec::new();
    let mut emit = |item: Item| {
        items.push(format!("{item:?}"));
        Ok(())
    };
    let mut start = 0;
    let mut result = Ok(());
    for &cut in cuts.iter().chain([&input.len()]) {
        result = decoder.decode(Bytes::copy_from_slice(&input[start..cut]), &mut emit);
        let held = decoder.held();
        assert!(
            held <= bound,
            "{held} bytes held, bound {bound} (limit {max})"
        );
        start = cut;
        if result.is_err() {
            break;
        }
    }
    if result.is_ok() {
        result = decoder.finish(&mut emit);
    }
    Outcome {
        items,
        error: result.err().map(|error| error.to_string()),
    }
}

/// What a buffer holding at most `len` bytes may have allocated: it doubles as it grows, and
/// keeps a little spare room after the bytes it handed on.
pub(crate) fn grown(len: usize) -> usize {
    2 * len + 128
}

/// Message limits: tiny ones make the limit paths common.
pub(crate) fn limits() -> impl Strategy<Value = usize> {
    prop_oneof![1usize..8, 8usize..64, Just(1024)]
}

/// An input and the points to cut it at.
pub(crate) fn with_cuts(input: Vec<u8>) -> impl Strategy<Value = (Vec<u8>, Vec<usize>)> {
    let len = input.len();
    proptest::collection::vec(0..=len, 0..12).prop_map(move |mut cuts| {
        cuts.sort_unstable();
        (input.clone(), cuts)
    })
}

/// Pieces of text that exercise a line decoder: line breaks of every kind, JSON-ish text,
/// multi-byte characters, invalid UTF-8, and lines far over the small limits.
fn line_pieces() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        "[a-z{}\":0-9 ]{0,12}".prop_map(String::into_bytes),
        Just(b"\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\r".to_vec()),
        "[é✓😀\u{feff}]{1,3}".prop_map(String::into_bytes),
        Just(vec![0xff, 0xc3]),
        (40usize..400).prop_map(|n| vec![b'x'; n]),
    ]
}

/// Pieces of an event stream: every field (valid and not), comments, a BOM, long lines of each
/// kind, and every line ending.
fn event_stream_pieces() -> impl Strategy<Value = Vec<u8>> {
    let field = prop_oneof![
        Just("data"),
        Just("data:"),
        Just("data: "),
        Just("id: "),
        Just("id:"),
        Just("event: "),
        Just("retry: "),
        Just(":"),
        Just("padding: "),
        Just("\u{feff}"),
    ];
    prop_oneof![
        field.prop_map(|f| f.as_bytes().to_vec()),
        "[a-z0-9 :\u{0}é]{0,10}".prop_map(String::into_bytes),
        Just(b"\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\r".to_vec()),
        Just(b"\n\n".to_vec()),
        (30usize..300).prop_map(|n| vec![b'y'; n]),
    ]
}

fn join(pieces: Vec<Vec<u8>>) -> Vec<u8> {
    pieces.concat()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn lines(
        max in limits(),
        (input, cuts) in proptest::collection::vec(line_pieces(), 0..40)
            .prop_map(join)
            .prop_flat_map(with_cuts),
    ) {
        // An unfinished line, and its trailing CR, at most.
        let bound = grown(max + 1);
        let whole = decode(Framing::Lines, max, &input, &[], usize::MAX);
        prop_assert_eq!(decode(Framing::Lines, max, &input, &cuts, bound), whole);
    }

    #[test]
    fn event_stream(
        max in limits(),
        (input, cuts) in proptest::collection::vec(event_stream_pieces(), 0..60)
            .prop_map(join)
            .prop_flat_map(with_cuts),
    ) {
        // The data gathered and the unfinished line together stay within the limit plus room
        // for a field name; each has a buffer.
        let bound = 2 * grown(max + super::event_stream::FIELD_NAME_ROOM);
        let whole = decode(Framing::EventStream, max, &input, &[], usize::MAX);
        prop_assert_eq!(decode(Framing::EventStream, max, &input, &cuts, bound), whole);
    }

    #[test]
    fn frames_are_messages_as_they_come(
        max in limits(),
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..20),
    ) {
        let mut decoder = Decoder::new(Framing::Frames, max, None);
        let mut sent = Vec::new();
        for chunk in &chunks {
            let mut emit = |item: Item| {
                if let Item::Message(message) = item {
                    sent.push(message.data().to_vec());
                }
                Ok(())
            };
            let result = decoder.decode(Bytes::copy_from_slice(chunk), &mut emit);
            prop_assert_eq!(result.is_err(), chunk.len() > max);
            if result.is_err() {
                break;
            }
            prop_assert_eq!(decoder.held(), 0);
        }
        let expected: Vec<Vec<u8>> = chunks
            .iter()
            .take_while(|chunk| chunk.len() <= max)
            .filter(|chunk| !chunk.is_empty())
            .cloned()
            .collect();
        prop_assert_eq!(sent, expected);
    }
}
