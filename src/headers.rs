//! The header rules every part of the crate shares: media-type essences, comma-separated lists,
//! negotiation, hop-by-hop removal, and the head of an event stream response.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// The media type of the event stream.
pub(crate) const EVENT_STREAM: &str = "text/event-stream";

/// The headers that describe one connection, never the message: the hop-by-hop headers of
/// RFC 9110 §7.6.1, and the proxy authentication ones, which are meant for the next hop only.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// The elements of every `name` field: comma-separated, trimmed, empty ones skipped (RFC 9110
/// §5.6.1). Fields that are not visible ASCII are skipped whole.
pub(crate) fn list<'a>(headers: &'a HeaderMap, name: &HeaderName) -> impl Iterator<Item = &'a str> {
    list_separated(headers, name, ',')
}

/// [`list`] with another separator (`;` between a `Cookie` header's pairs).
pub(crate) fn list_separated<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
    separator: char,
) -> impl Iterator<Item = &'a str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(move |value| value.split(separator))
        .map(str::trim)
        .filter(|element| !element.is_empty())
}

/// The essence of a media type (`type/subtype`, before any parameter), trimmed; not lowercased.
pub(crate) fn essence(media_type: &str) -> &str {
    media_type.split(';').next().unwrap_or_default().trim()
}

/// The essence of the `Content-Type`, if there is one that is text.
pub(crate) fn content_type(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(essence(value))
}

/// Whether a response is an event stream already (`text/event-stream`, any parameters).
pub(crate) fn is_event_stream(headers: &HeaderMap) -> bool {
    content_type(headers).is_some_and(|essence| essence.eq_ignore_ascii_case(EVENT_STREAM))
}

/// Whether a response is gRPC (`application/grpc` or `application/grpc+<codec>`; gRPC-Web's
/// framing differs, and is not).
pub(crate) fn is_grpc(headers: &HeaderMap) -> bool {
    content_type(headers).is_some_and(|essence| {
        let prefix = "application/grpc";
        essence.len() >= prefix.len()
            && essence[..prefix.len()].eq_ignore_ascii_case(prefix)
            && matches!(essence.as_bytes().get(prefix.len()), None | Some(b'+'))
    })
}

/// Whether an `Accept` media range names `text/event-stream` with a non-zero quality. Wildcards
/// (`*/*`, `text/*`) do not count: a browser's page navigation sends them, and must not get an
/// event stream.
pub(crate) fn accepts_event_stream(headers: &HeaderMap) -> bool {
    list(headers, &header::ACCEPT).any(|range| {
        let mut parts = range.split(';');
        essence(parts.next().unwrap_or_default()).eq_ignore_ascii_case(EVENT_STREAM)
            && parts.all(|param| {
                let (name, value) = param.split_once('=').unwrap_or((param, ""));
                !name.trim().eq_ignore_ascii_case("q")
                    || value.trim().parse::<f32>().map_or(true, |q| q > 0.0)
            })
    })
}

/// Removes the hop-by-hop headers: `Connection` and every header it names, `Keep-Alive`,
/// `Proxy-Connection`, `Proxy-Authenticate`, `Proxy-Authorization`, `TE`, `Trailer`,
/// `Transfer-Encoding` and `Upgrade`. The layer does it to every event stream response, and
/// the gateway's `Upstream` in both directions.
///
/// ```
/// use http::{header, HeaderMap, HeaderValue};
/// use tower_sse::remove_hop_by_hop_headers;
///
/// let mut headers = HeaderMap::new();
/// headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-session"));
/// headers.insert("x-session", HeaderValue::from_static("abc"));
/// headers.insert("last-event-id", HeaderValue::from_static("42"));
/// remove_hop_by_hop_headers(&mut headers);
/// assert_eq!(headers.len(), 1);
/// assert_eq!(headers["last-event-id"], "42");
/// ```
pub fn remove_hop_by_hop_headers(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = list(headers, &header::CONNECTION)
        .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
        .collect();
    for name in named.iter().chain(&HOP_BY_HOP) {
        headers.remove(name);
    }
}

/// Makes `headers` the head of an event stream: the body is new, so the inner representation's
/// length, ranges, validators and digests no longer hold, and connection-specific headers are
/// never written (they break HTTP/2 and HTTP/3 streams).
pub(crate) fn set_event_stream_headers(headers: &mut HeaderMap, vary_accept: bool) {
    remove_hop_by_hop_headers(headers);
    for name in [
        header::CONTENT_LENGTH,
        header::CONTENT_RANGE,
        header::ACCEPT_RANGES,
        header::ETAG,
        header::LAST_MODIFIED,
        header::CONTENT_ENCODING,
    ] {
        headers.remove(name);
    }
    for name in ["content-md5", "digest", "content-digest", "repr-digest"] {
        headers.remove(name);
    }
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(EVENT_STREAM));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-transform"),
    );
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    if vary_accept {
        add_vary_accept(headers);
    }
}

/// Adds `Vary: Accept` unless the response already varies on it (or on everything).
pub(crate) fn add_vary_accept(headers: &mut HeaderMap) {
    add_vary(headers, "accept");
}

/// Adds `name` (a request header's name, lowercase) to `Vary` unless the response already
/// varies on it (or on everything).
pub(crate) fn add_vary(headers: &mut HeaderMap, name: &'static str) {
    let varies = list(headers, &header::VARY)
        .any(|listed| listed == "*" || listed.eq_ignore_ascii_case(name));
    if !varies {
        headers.append(header::VARY, HeaderValue::from_static(name));
    }
}

/// Whether every `Content-Encoding` is `identity` (or there is none): only such a body can be
/// cut into messages.
pub(crate) fn is_identity_encoded(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .all(|coding| {
            coding
                .as_bytes()
                .trim_ascii()
                .eq_ignore_ascii_case(b"identity")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(name: HeaderName, value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(name, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn accept_names_event_stream_explicitly() {
        let accepts = |value| accepts_event_stream(&with(header::ACCEPT, value));
        assert!(accepts("text/event-stream"));
        assert!(accepts("TEXT/Event-Stream ; q=0.5"));
        assert!(accepts("application/json, text/event-stream;q=1"));
        assert!(!accepts("text/event-stream;q=0"));
        assert!(!accepts("text/event-stream; q=0.0"));
        assert!(!accepts("*/*"));
        assert!(!accepts("text/*"));
        assert!(!accepts("text/html,application/xhtml+xml,*/*;q=0.8"));
        assert!(!accepts("text/event-streams"));
        assert!(!accepts(""));
    }

    #[test]
    fn grpc_responses_are_told_from_grpc_web() {
        let grpc = |value| is_grpc(&with(header::CONTENT_TYPE, value));
        assert!(grpc("application/grpc"));
        assert!(grpc("Application/GRPC+proto"));
        assert!(grpc("application/grpc; charset=utf-8"));
        assert!(grpc(" application/grpc+json ;x=1"));
        assert!(!grpc("application/grpc-web"));
        assert!(!grpc("application/grpc-web-text+proto"));
        assert!(!grpc("application/grpcx"));
        assert!(!grpc("application/json"));
    }

    #[test]
    fn lists_are_split_trimmed_and_skip_empty_elements() {
        let mut headers = with(header::VARY, " origin ,, Accept-Encoding ");
        headers.append(header::VARY, HeaderValue::from_static(","));
        headers.append(header::VARY, HeaderValue::from_static("cookie"));
        let elements: Vec<&str> = list(&headers, &header::VARY).collect();
        assert_eq!(elements, ["origin", "Accept-Encoding", "cookie"]);
        add_vary_accept(&mut headers);
        assert!(list(&headers, &header::VARY).any(|name| name == "accept"));
        let mut star = with(header::VARY, "*");
        add_vary_accept(&mut star);
        assert_eq!(star.get_all(header::VARY).iter().count(), 1);
    }
}
