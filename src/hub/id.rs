//! The ids a hub gives its events: `{epoch}-{seq}`, and reading them back from `Last-Event-ID`.
//!
//! The epoch is 16 lowercase hex digits drawn at random when the hub is made, so an id from an
//! earlier process or another hub is recognised as unknown, never mistaken for a position. The
//! sequence counts every event the hub published, over all its topics, from 1: ids are
//! strictly increasing per topic, and one id places a client in every topic of a subscription
//! at once (events of several topics are merged in that order).

/// The longest `Last-Event-ID` read as an id: 16 hex digits, a dash, 20 decimal digits.
const MAX_LEN: usize = 37;

/// Where a `Last-Event-ID` places a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Position {
    /// After this sequence number, in this hub.
    After(u64),
    /// An id of another hub or an earlier process.
    OtherEpoch,
    /// Not an id a hub makes.
    Malformed,
}

/// A random epoch, different in every process and for every hub.
pub(super) fn new_epoch() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    // `RandomState` is seeded from the operating system's randomness per process, and stepped
    // per instance; the time keeps two processes started from one seed apart all the same.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    hasher.write_u128(now);
    hasher.finish()
}

/// The id of the event numbered `seq` in the hub of `epoch`.
pub(super) fn format(epoch: u64, seq: u64) -> String {
    format!("{epoch:016x}-{seq}")
}

/// Reads a client's `Last-Event-ID` against the hub of `epoch`. Any text of any length is
/// read without a panic; only what this format makes is a position.
pub(super) fn parse(epoch: u64, id: &str) -> Position {
    if id.len() > MAX_LEN {
        return Position::Malformed;
    }
    let Some((their_epoch, seq)) = id.split_once('-') else {
        return Position::Malformed;
    };
    let hex = |text: &str| {
        text.len() == 16 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    let decimal = |text: &str| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    if !hex(their_epoch) || !decimal(seq) {
        return Position::Malformed;
    }
    let (Ok(their_epoch), Ok(seq)) = (u64::from_str_radix(their_epoch, 16), seq.parse::<u64>())
    else {
        return Position::Malformed;
    };
    if their_epoch == epoch {
        Position::After(seq)
    } else {
        Position::OtherEpoch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_anything_else_is_not_a_position() {
        let epoch = 0x0123_4567_89ab_cdef;
        assert_eq!(format(epoch, 42), "0123456789abcdef-42");
        assert_eq!(parse(epoch, &format(epoch, 42)), Position::After(42));
        assert_eq!(
            parse(epoch, &format(epoch, u64::MAX)),
            Position::After(u64::MAX)
        );
        assert_eq!(parse(epoch, &format(7, 42)), Position::OtherEpoch);
        for bad in [
            "",
            "42",
            "-",
            "0123456789abcdef-",
            "0123456789ABCDEF-1",
            "0123456789abcdef-+1",
            "0123456789abcdef--1",
            "0123456789abcdef-18446744073709551616",
            "123456789abcdef-1",
            "0123456789abcdef-1-2",
            "0123456789abcdef-１",
            "é",
        ] {
            assert_eq!(parse(epoch, bad), Position::Malformed, "{bad:?}");
        }
        assert_eq!(parse(epoch, &"9".repeat(100_000)), Position::Malformed);
        assert_ne!(new_epoch(), new_epoch());
    }
}
