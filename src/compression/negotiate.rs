//! `Accept-Encoding` (RFC 9110 §12.5.3): which of the offered codings a client accepts, and
//! which it prefers.

use http::{header, HeaderMap};

use super::Coding;
use crate::headers::list;

/// The offered coding the client gives the highest quality (ties: the first offered), or none
/// when it accepts none of them, or prefers `identity` (named, with a higher quality) to all of
/// them. A coding the header does not name is acceptable only through `*`; a named coding whose
/// quality is not a number from 0 to 1 is not acceptable.
pub(super) fn choose(headers: &HeaderMap, offered: impl Iterator<Item = Coding>) -> Option<Coding> {
    let mut best: Option<(Coding, u16)> = None;
    for coding in offered {
        let quality = quality_of(headers, |name| names(name, coding));
        if quality > 0 && best.map_or(true, |(_, q)| quality > q) {
            best = Some((coding, quality));
        }
    }
    let (coding, quality) = best?;
    let identity = named_quality(headers, |name| name.eq_ignore_ascii_case("identity"));
    match identity {
        Some(identity) if identity > quality => None,
        _ => Some(coding),
    }
}

/// The quality the header gives the coding `is` names, in thousandths: its own element's, else
/// `*`'s, else 0.
fn quality_of(headers: &HeaderMap, is: impl Fn(&str) -> bool) -> u16 {
    named_quality(headers, is)
        .or_else(|| named_quality(headers, |name| name == "*"))
        .unwrap_or(0)
}

/// The quality of the first element whose name `is` accepts (0 when its quality is malformed),
/// or `None` when no element names it.
fn named_quality(headers: &HeaderMap, is: impl Fn(&str) -> bool) -> Option<u16> {
    list(headers, &header::ACCEPT_ENCODING).find_map(|element| {
        let mut parts = element.split(';');
        let name = parts.next().unwrap_or_default().trim();
        is(name).then(|| quality(parts).unwrap_or(0))
    })
}

/// Whether `name` (any case) is `coding`; `x-gzip` is gzip (RFC 9110 §8.4.1.3).
fn names(name: &str, coding: Coding) -> bool {
    name.eq_ignore_ascii_case(coding.as_str())
        || (coding == Coding::Gzip && name.eq_ignore_ascii_case("x-gzip"))
}

/// The `q` parameter in thousandths (1000 without one), or `None` when it is malformed.
fn quality<'a>(mut params: impl Iterator<Item = &'a str>) -> Option<u16> {
    let Some(q) = params.find_map(|param| {
        let (name, value) = param.split_once('=')?;
        name.trim().eq_ignore_ascii_case("q").then(|| value.trim())
    }) else {
        return Some(1000);
    };
    // `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )`
    let (whole, fraction) = q.split_once('.').unwrap_or((q, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths = fraction
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(3)
        .fold(0u16, |n, digit| n * 10 + u16::from(digit - b'0'));
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const ALL: [Coding; 3] = [Coding::Zstd, Coding::Brotli, Coding::Gzip];

    fn pick(accept_encoding: Option<&str>, offered: &[Coding]) -> Option<Coding> {
        let mut headers = HeaderMap::new();
        if let Some(value) = accept_encoding {
            headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(value).ok()?);
        }
        choose(&headers, offered.iter().copied())
    }

    #[test]
    fn the_servers_order_breaks_ties_and_a_higher_quality_wins() {
        // curl --compressed, Chromium over HTTPS, Node's fetch.
        assert_eq!(
            pick(Some("deflate, gzip, br, zstd"), &ALL),
            Some(Coding::Zstd)
        );
        assert_eq!(pick(Some("gzip, deflate, br"), &ALL), Some(Coding::Brotli));
        assert_eq!(pick(Some("gzip, deflate"), &ALL), Some(Coding::Gzip));
        assert_eq!(
            pick(Some("zstd;q=0.5, br;q=0.8, gzip;q=0.9"), &ALL),
            Some(Coding::Gzip)
        );
        assert_eq!(pick(Some("zstd;q=0.5, gzip"), &ALL), Some(Coding::Gzip));
        assert_eq!(
            pick(Some("gzip, br, zstd"), &[Coding::Gzip, Coding::Zstd]),
            Some(Coding::Gzip)
        );
        assert_eq!(pick(Some("X-GZIP"), &ALL), Some(Coding::Gzip));
        assert_eq!(pick(Some("ZStd ; Q=1.000"), &ALL), Some(Coding::Zstd));
    }

    #[test]
    fn nothing_is_compressed_for_a_client_that_did_not_ask() {
        assert_eq!(pick(None, &ALL), None);
        assert_eq!(pick(Some(""), &ALL), None);
        assert_eq!(pick(Some("identity"), &ALL), None);
        assert_eq!(pick(Some("deflate, compress"), &ALL), None);
        assert_eq!(pick(Some("gzip;q=0, br;q=0.000"), &ALL), None);
        // A wildcard accepts what it does not name, but not what is refused by name.
        assert_eq!(pick(Some("*;q=0.1, zstd;q=0"), &ALL), Some(Coding::Brotli));
        assert_eq!(pick(Some("*"), &ALL), Some(Coding::Zstd));
        assert_eq!(pick(Some("*;q=0"), &ALL), None);
        // A client that prefers identity keeps it.
        assert_eq!(pick(Some("gzip;q=0.1, identity"), &ALL), None);
        assert_eq!(pick(Some("gzip, identity;q=0.5"), &ALL), Some(Coding::Gzip));
        assert_eq!(pick(Some("gzip, identity"), &ALL), Some(Coding::Gzip));
        // A named coding with a malformed quality is not acceptable, `*` or not.
        assert_eq!(pick(Some("gzip;q=2, *"), &[Coding::Gzip]), None);
        // Malformed qualities count for nothing.
        for bad in [
            "gzip;q=2",
            "gzip;q=1.5",
            "gzip;q=0.1234",
            "gzip;q=-1",
            "gzip;q=abc",
            "gzip;q=",
            "gzip;q=.5",
        ] {
            assert_eq!(pick(Some(bad), &ALL), None, "{bad}");
        }
        assert_eq!(pick(Some("gzip;q=0.001"), &ALL), Some(Coding::Gzip));
        assert_eq!(pick(Some("gzip"), &[]), None);
    }
}
