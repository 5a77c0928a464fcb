//! The `application/x-www-form-urlencoded` pairs of a publish body or a subscribe query, decoded
//! strictly: a name or value that is not UTF-8 refuses the request instead of becoming U+FFFD.

/// One `name=value` pair of a form (`+` is a space, then percent-decoding), or `None` when
/// either is not UTF-8 once decoded.
pub(super) fn pair(pair: &[u8]) -> Option<(String, String)> {
    let (name, value) = match pair.iter().position(|&b| b == b'=') {
        Some(at) => (&pair[..at], &pair[at + 1..]),
        None => (pair, &b""[..]),
    };
    let decode = |part: &[u8]| {
        let spaced: Vec<u8> = part
            .iter()
            .map(|&b| if b == b'+' { b' ' } else { b })
            .collect();
        let bytes: Vec<u8> = percent_encoding::percent_decode(&spaced).collect();
        String::from_utf8(bytes).ok()
    };
    Some((decode(name)?, decode(value)?))
}
