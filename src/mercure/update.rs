//! [`Update`]: a publish request's form, read and checked before anything is published.

use std::time::Duration;

use url::Url;

use super::form_pairs;
use super::matcher::has_control;
use crate::{Event, EventError};

/// The limits of one publish request; past them it is refused with `413`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpdateLimits {
    /// The most `topic` fields (default 100).
    pub topics: usize,
    /// The longest topic, id or type, in bytes (default 4 096).
    pub field_len: usize,
    /// The longest `data`, in bytes (default 1 MiB).
    pub data_len: usize,
}

impl Default for UpdateLimits {
    fn default() -> Self {
        Self {
            topics: 100,
            field_len: 4096,
            data_len: 1024 * 1024,
        }
    }
}

/// Why a publish request's form is refused; nothing is published.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum UpdateError {
    /// Bad input: `400`, with the reason.
    BadRequest(String),
    /// Over a limit: `413`, with the reason.
    TooLarge(String),
}

impl UpdateError {
    /// The status to answer with.
    pub fn status(&self) -> http::StatusCode {
        match self {
            Self::BadRequest(_) => http::StatusCode::BAD_REQUEST,
            Self::TooLarge(_) => http::StatusCode::PAYLOAD_TOO_LARGE,
        }
    }
}

impl std::fmt::Display for UpdateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::BadRequest(why) | Self::TooLarge(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for UpdateError {}

/// A publish request's update: its topics (the first canonical, the others alternates), data,
/// and the optional id, type, retry and private mark.
///
/// ```
/// use tower_sse::mercure::{Update, UpdateLimits};
///
/// let hub = url::Url::parse("https://example.com/.well-known/mercure")?;
/// let form = b"topic=https%3A%2F%2Fexample.com%2Fbooks%2F1&data=%7B%22title%22%3A%22Dune%22%7D&private=on";
/// let update = Update::from_form(form, &hub, UpdateLimits::default())?;
/// assert_eq!(update.topics(), ["https://example.com/books/1"]);
/// assert!(update.is_private());
/// let event = update.event("urn:uuid:0196")?;
/// assert_eq!(event.encode(), "data: {\"title\":\"Dune\"}\nid: urn:uuid:0196\n\n");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    topics: Vec<String>,
    data: String,
    private: bool,
    id: Option<String>,
    event_type: Option<String>,
    retry: Option<Duration>,
}

impl Update {
    /// Reads an `application/x-www-form-urlencoded` body. Unknown fields are ignored; the rules
    /// are the draft's (which refuse what the pre-standard hub also refused, and more): a topic
    /// that is `*` or in the hub's own namespace, an id `earliest` or starting with `#`, the
    /// type `mercure`, a retry that is not digits, control or format characters anywhere but
    /// in `data`.
    pub fn from_form(body: &[u8], hub: &Url, limits: UpdateLimits) -> Result<Self, UpdateError> {
        let bad = |why: &str| UpdateError::BadRequest(why.to_owned());
        let large = |why: String| UpdateError::TooLarge(why);
        let mut update = Self {
            topics: Vec::new(),
            data: String::new(),
            private: false,
            id: None,
            event_type: None,
            retry: None,
        };
        let mut data: Option<String> = None;
        for pair in body.split(|&b| b == b'&').filter(|pair| !pair.is_empty()) {
            let (name, value) =
                form_pairs::pair(pair).ok_or_else(|| bad("the form is not UTF-8"))?;
            match name.as_ref() {
                "topic" => {
                    if update.topics.len() == limits.topics {
                        return Err(large(format!("at most {} topics", limits.topics)));
                    }
                    update.topics.push(value);
                }
                "data" => {
                    if value.len() > limits.data_len {
                        return Err(large(format!("data is at most {} bytes", limits.data_len)));
                    }
                    data = Some(value);
                }
                // Its presence makes the update private, whatever its value.
                "private" => update.private = true,
                "id" => update.id = Some(value).filter(|id| !id.is_empty()),
                "type" => update.event_type = Some(value).filter(|t| !t.is_empty()),
                "retry" => {
                    let valid = !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit());
                    let millis = value
                        .parse::<u64>()
                        .ok()
                        .filter(|_| valid)
                        .ok_or_else(|| bad("retry is a number of milliseconds"))?;
                    update.retry = (millis > 0).then(|| Duration::from_millis(millis));
                }
                _ => {}
            }
        }
        update.data = data.unwrap_or_default();
        if update.topics.is_empty() {
            return Err(bad("a topic is required"));
        }
        for topic in &update.topics {
            if topic.len() > limits.field_len {
                return Err(large(format!(
                    "a topic is at most {} bytes",
                    limits.field_len
                )));
            }
            if topic.is_empty() || has_control(topic) {
                return Err(bad("a topic is text without control characters"));
            }
            if topic == "*" {
                return Err(bad("* is not a topic"));
            }
            if is_reserved(topic, hub) {
                return Err(bad("topics under the hub's own path are the hub's"));
            }
        }
        if let Some(id) = &update.id {
            if id.len() > limits.field_len {
                return Err(large(format!(
                    "an id is at most {} bytes",
                    limits.field_len
                )));
            }
            if id == "earliest" || id.starts_with('#') || has_control(id) {
                return Err(bad(
                    "an id is neither earliest nor #..., without control characters",
                ));
            }
        }
        if let Some(event_type) = &update.event_type {
            if event_type.len() > limits.field_len {
                return Err(large(format!(
                    "a type is at most {} bytes",
                    limits.field_len
                )));
            }
            if event_type == "mercure" || has_control(event_type) {
                return Err(bad("a type is not mercure, and has no control characters"));
            }
        }
        Ok(update)
    }

    /// Its topics: the canonical one first.
    pub fn topics(&self) -> &[String] {
        &self.topics
    }

    /// Its data (empty when the form had none).
    pub fn data(&self) -> &str {
        &self.data
    }

    /// Whether it is private: only subscribers whose token grants one of its topics get it.
    pub fn is_private(&self) -> bool {
        self.private
    }

    /// The id its publisher gave it, if any.
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// Its event type, if any.
    pub fn event_type(&self) -> Option<&str> {
        self.event_type.as_deref()
    }

    /// Its reconnection delay, if any.
    pub fn retry(&self) -> Option<Duration> {
        self.retry
    }

    /// The event subscribers receive, with `id` (its own, or one the hub gave it): one `data`
    /// line per line of its data (an empty line stays a `data` line), its type as `event`.
    pub fn event(&self, id: &str) -> Result<Event, EventError> {
        let mut event = Event::default().id(id)?.data(self.data.clone());
        if let Some(event_type) = &self.event_type {
            event = event.event(event_type.clone())?;
        }
        if let Some(retry) = self.retry {
            event = event.retry(retry);
        }
        Ok(event)
    }
}

/// Whether `topic` names the hub's own namespace (its path, or under it), wherever its scheme
/// and host point: resolved against the hub's URL, dot segments removed, unreserved characters
/// percent-decoded. A topic that is not a URL reference is not reserved.
pub(crate) fn is_reserved(topic: &str, hub: &Url) -> bool {
    let Ok(url) = hub.join(topic) else {
        return false;
    };
    let path = decode_unreserved(url.path());
    let hub_path = decode_unreserved(hub.path());
    path == hub_path
        || path
            .strip_prefix(hub_path.as_str())
            .is_some_and(|rest| rest.starts_with('/'))
}

/// `path` with the percent-encoded unreserved characters (`A-Z a-z 0-9 - . _ ~`) decoded, and
/// every other escape kept as it is (in upper case).
fn decode_unreserved(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| path.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) => {
                out.push(char::from(byte));
                i += 3;
            }
            Some(byte) => {
                out.push_str(&format!("%{byte:02X}"));
                i += 3;
            }
            None => {
                // Not an escape: copied as the character it starts.
                let c = path[i..].chars().next().unwrap_or('\u{FFFD}');
                out.push(c);
                i += c.len_utf8();
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub() -> Url {
        super::super::test_url("https://example.com/.well-known/mercure")
    }

    fn read(form: &str) -> Result<Update, UpdateError> {
        Update::from_form(form.as_bytes(), &hub(), UpdateLimits::default())
    }

    #[test]
    fn a_form_becomes_an_update_and_its_event() {
        // What the draft's conformance suite posts.
        let form = "topic=https%3A%2F%2Fexample.net%2Ffoo%2Fab&id=id-%5B%22ab%22%5D\
                    &data=data+for%0A%0A++++++++URI&private=on&unknown=ignored";
        let update = read(form).unwrap_or_else(|e| panic!("{e}")); // ok: test
        assert_eq!(update.topics(), ["https://example.net/foo/ab"]);
        assert_eq!(update.id(), Some("id-[\"ab\"]"));
        assert_eq!(update.data(), "data for\n\n        URI");
        assert!(update.is_private());
        let event = update
            .event("id-[\"ab\"]")
            .unwrap_or_else(|e| panic!("{e}")); // ok: test
        assert_eq!(
            event.encode(),
            "data: data for\ndata: \ndata:         URI\nid: id-[\"ab\"]\n\n"
        );
        // Alternates, a type, a retry; no data is empty data; an empty id is none.
        let update =
            read("topic=a&topic=b&type=update&retry=2500&id=").unwrap_or_else(|e| panic!("{e}")); // ok: test
        assert_eq!(update.topics(), ["a", "b"]);
        assert_eq!(update.event_type(), Some("update"));
        assert_eq!(update.retry(), Some(Duration::from_millis(2500)));
        assert_eq!(update.id(), None);
        assert!(!update.is_private());
        assert_eq!(
            update.event("h1").map(|e| e.encode()).unwrap_or_default(),
            "event: update\ndata: \nid: h1\nretry: 2500\n\n"
        );
        assert_eq!(read("topic=a&retry=0").map(|u| u.retry()), Ok(None));
        // `private` with any value, even empty.
        assert_eq!(read("topic=a&private=").map(|u| u.is_private()), Ok(true));
        // A publisher's own U+FFFD is data like any other.
        assert_eq!(
            read("topic=a&data=%EF%BF%BD").map(|u| u.data().to_owned()),
            Ok("\u{FFFD}".into())
        );
    }

    #[test]
    fn bad_forms_are_refused_and_nothing_is_published() {
        for (form, why) in [
            ("", "no topic"),
            ("data=x", "no topic"),
            ("topic=", "empty topic"),
            ("topic=a%0Ab", "a line break in a topic"),
            ("topic=a%E2%80%8Bb", "a zero-width space in a topic"),
            ("topic=*", "the wildcard as a topic"),
            (
                "topic=%2F.well-known%2Fmercure%2Fsubscriptions%2Fx",
                "the hub's namespace",
            ),
            (
                "topic=https%3A%2F%2Fevil.example%2F.well-known%2Fmercure",
                "the hub's path elsewhere",
            ),
            (
                "topic=%2Fa%2F..%2F.well-known%2F%6Dercure%2Fx",
                "dot segments and escapes",
            ),
            ("topic=a&id=earliest", "the reserved id"),
            ("topic=a&id=%23frag", "a fragment id"),
            ("topic=a&id=a%00b", "NUL in an id"),
            ("topic=a&type=mercure", "the reserved type"),
            ("topic=a&type=a%0Db", "CR in a type"),
            ("topic=a&retry=-1", "a negative retry"),
            ("topic=a&retry=1.5", "a fractional retry"),
            ("topic=a&retry=", "an empty retry"),
            (
                "topic=a&retry=99999999999999999999999",
                "an overflowing retry",
            ),
            ("topic=a&data=%FF", "data that is not UTF-8"),
        ] {
            assert!(
                matches!(read(form), Err(UpdateError::BadRequest(_))),
                "{why}: {form} gave {:?}",
                read(form)
            );
        }
        // Not reserved: other paths, and what is not a URL reference.
        for topic in [
            "%2F.well-known%2Fmercurex",
            "%2F.well-known",
            "urn%3Aa%3Ab",
            "plain",
        ] {
            assert!(read(&format!("topic={topic}")).is_ok(), "{topic}");
        }
        // A hub at the root reserves only its own path and what is under it.
        let root = super::super::test_url("https://hub.example/");
        let at_root = |topic: &str| is_reserved(topic, &root);
        assert!(!at_root("https://example.com/books/1") && !at_root("plain"));
        assert!(
            at_root("/")
                && at_root("https://other.example//x")
                && at_root("https://other.example/")
        );
        let limits = UpdateLimits {
            topics: 2,
            field_len: 8,
            data_len: 4,
        };
        let hub = hub();
        for form in [
            "topic=a&topic=b&topic=c",
            "topic=123456789",
            "topic=a&data=12345",
            "topic=a&id=123456789",
            "topic=a&type=123456789",
        ] {
            let refused = Update::from_form(form.as_bytes(), &hub, limits);
            assert!(matches!(refused, Err(UpdateError::TooLarge(_))), "{form}");
            assert_eq!(refused.err().map(|e| e.status().as_u16()), Some(413));
        }
    }
}
