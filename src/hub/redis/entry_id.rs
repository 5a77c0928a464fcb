//! Stream entry ids (`{ms}-{seq}`), and the ids a subscription's events carry: the entry id for
//! one topic, the entry ids of every topic joined by commas (in sorted topic order) for
//! several ([`Positions`](super::positions::Positions)). Reading them back from
//! `Last-Event-ID` never panics, whatever the text.

use std::fmt;

/// A Redis stream entry id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub(super) struct EntryId {
    ms: u64,
    seq: u64,
}

/// The longest entry id: two 20-digit numbers and a dash.
const MAX_LEN: usize = 41;

impl EntryId {
    /// `0-0`: before every entry.
    pub(super) const ZERO: Self = Self { ms: 0, seq: 0 };

    /// The largest id: nothing can follow it, so Redis would refuse to read after it.
    pub(super) const MAX: Self = Self {
        ms: u64::MAX,
        seq: u64::MAX,
    };

    /// Reads `{ms}-{seq}`, both plain decimal numbers; anything else is `None`.
    pub(super) fn parse(text: &[u8]) -> Option<Self> {
        if text.len() > MAX_LEN {
            return None;
        }
        let dash = memchr::memchr(b'-', text)?;
        let number = |digits: &[u8]| -> Option<u64> {
            if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                return None;
            }
            std::str::from_utf8(digits).ok()?.parse().ok()
        };
        Some(Self {
            ms: number(&text[..dash])?,
            seq: number(&text[dash + 1..])?,
        })
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// Where a `Last-Event-ID` places a subscription of `topics` topics: one entry id per topic, or
/// `None` when it is not an id of such a subscription.
pub(super) fn parse_positions(id: &str, topics: usize) -> Option<Vec<EntryId>> {
    // Longer than `topics` ids and their commas: not ours (and never split, however long).
    if id.len() > topics * (MAX_LEN + 1) {
        return None;
    }
    let positions: Option<Vec<EntryId>> = id
        .split(',')
        .map(|part| EntryId::parse(part.as_bytes()))
        .collect();
    positions.filter(|positions| positions.len() == topics)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_ids_and_positions_round_trip_and_nothing_else_parses() {
        let id = EntryId::parse(b"1733140000000-7").unwrap(); // ok: test
        assert_eq!(id.to_string(), "1733140000000-7");
        assert!(EntryId::ZERO < id && id < EntryId::MAX);
        assert_eq!(
            EntryId::parse(EntryId::MAX.to_string().as_bytes()),
            Some(EntryId::MAX)
        );
        assert!(EntryId::parse(b"1-2") < EntryId::parse(b"1-10"));
        assert!(EntryId::parse(b"2-0") > EntryId::parse(b"1-10"));
        for bad in [
            &b""[..],
            b"1",
            b"-1",
            b"1-",
            b"1--2",
            b"1-2-3",
            b"+1-2",
            b"1-+2",
            b"a-1",
            b"18446744073709551616-0",
            b"0123456789abcdef-1",
            "1-\u{0661}".as_bytes(),
        ] {
            assert_eq!(EntryId::parse(bad), None, "{bad:?}");
        }

        let positions = vec![id, EntryId::ZERO, EntryId::MAX];
        let text: Vec<String> = positions.iter().map(ToString::to_string).collect();
        let text = text.join(",");
        assert_eq!(text, format!("1733140000000-7,0-0,{}", EntryId::MAX));
        assert_eq!(parse_positions(&text, 3), Some(positions));
        assert_eq!(parse_positions(&text, 2), None);
        let one = EntryId::parse(b"1-1").unwrap(); // ok: test
        assert_eq!(parse_positions("1-1", 1), Some(vec![one]));
        for bad in ["", ",", "1-1,", ",1-1", "1-1,,1-1", "1-1;2-2"] {
            assert_eq!(parse_positions(bad, 2), None, "{bad:?}");
        }
        assert_eq!(parse_positions(&"1-1,".repeat(100_000), 16), None);
    }
}
