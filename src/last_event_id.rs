//! [`LastEventId`]: the id a reconnecting client last saw.

use http::HeaderMap;

/// A request extension holding the `Last-Event-ID` header a reconnecting client sent, so the
/// inner service can resume after that event.
///
/// Inserted for requests through the layer that carry a non-empty header holding valid UTF-8.
///
/// ```
/// use axum::Extension;
/// use tower_sse::LastEventId;
///
/// async fn feed(last: Option<Extension<LastEventId>>) -> String {
///     let resume_after: u64 = last.and_then(|Extension(id)| id.as_str().parse().ok()).unwrap_or(0);
///     format!("resuming after {resume_after}")
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LastEventId(String);

impl LastEventId {
    /// The header name clients send.
    pub const HEADER: &'static str = "last-event-id";

    /// An id given another way than the header (a polyfill's `?lastEventId=` query
    /// parameter, a test); `None` when empty, as a client without an id sends none.
    ///
    /// ```
    /// use tower_sse::LastEventId;
    ///
    /// assert_eq!(LastEventId::new("42").map(LastEventId::into_string).as_deref(), Some("42"));
    /// assert_eq!(LastEventId::new(""), None);
    /// ```
    pub fn new(id: impl Into<String>) -> Option<Self> {
        let id = id.into();
        (!id.is_empty()).then_some(Self(id))
    }

    pub(crate) fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let value = headers.get(Self::HEADER)?;
        let id = std::str::from_utf8(value.as_bytes()).ok()?;
        (!id.is_empty()).then(|| Self(id.to_owned()))
    }

    /// The id as the client sent it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Takes the id.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl AsRef<str> for LastEventId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}
