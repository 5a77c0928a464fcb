//! [`SubscribeQuery`]: a subscribe request's matchers and cursor, in either generation.

use http::HeaderMap;
use url::Url;

use super::form_pairs;
use super::matcher::{has_control, MatchType, Matcher};
use crate::LastEventId;

/// The most matchers one subscribe request may carry (past it: `400`).
pub const MAX_MATCHERS: usize = 100;

/// A subscribe request refused: `400`, with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryError(pub String);

impl std::fmt::Display for QueryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for QueryError {}

/// A subscribe request's routing matchers and where it resumes, from its query string (and its
/// `Last-Event-ID` header). Both generations at once: the draft's `match`, `match_exact` and
/// `match_urlpattern`, and the pre-standard `topic`; the draft's `last_event_id` and the
/// pre-standard `lastEventID`, the header winning over both.
///
/// ```
/// use http::HeaderMap;
/// use tower_sse::mercure::SubscribeQuery;
///
/// let hub = url::Url::parse("https://example.com/.well-known/mercure")?;
/// let query = "match=https%3A%2F%2Fexample.com%2Fbooks%2F1&match_urlpattern=%2Fusers%2F%3Aid&last_event_id=earliest";
/// let subscribe = SubscribeQuery::parse(Some(query), &HeaderMap::new(), &hub)?;
/// assert!(subscribe.matches_any(["https://example.com/users/7"]));
/// assert_eq!(subscribe.last_event_id().map(|id| id.as_str()), Some("earliest"));
/// assert!(subscribe.cursor_requested());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct SubscribeQuery {
    matchers: Vec<Matcher>,
    last_event_id: Option<LastEventId>,
    cursor_requested: bool,
    pre_standard: bool,
}

impl SubscribeQuery {
    /// Reads `query` (the request's query string, if any) and `headers` for a hub at `hub`.
    pub fn parse(query: Option<&str>, headers: &HeaderMap, hub: &Url) -> Result<Self, QueryError> {
        let bad = |why: String| QueryError(why);
        let mut matchers = Vec::new();
        let (mut draft_cursor, mut pre_cursor) = (None, None);
        let mut pre_standard = false;
        for pair in query
            .unwrap_or_default()
            .split('&')
            .filter(|pair| !pair.is_empty())
        {
            let (name, value) = form_pairs::pair(pair.as_bytes())
                .ok_or_else(|| bad("the query is not UTF-8".into()))?;
            let kind = match name.as_str() {
                "match" | "match_exact" => MatchType::Exact,
                "match_urlpattern" => MatchType::UrlPattern,
                "topic" => {
                    pre_standard = true;
                    MatchType::Selector
                }
                "last_event_id" => {
                    draft_cursor.get_or_insert(value);
                    continue;
                }
                "lastEventID" => {
                    pre_standard = true;
                    pre_cursor.get_or_insert(value);
                    continue;
                }
                // The draft reserves every `match…` name for matcher types: one this hub does
                // not know must not be skipped silently.
                other
                    if other
                        .get(..5)
                        .is_some_and(|p| p.eq_ignore_ascii_case("match")) =>
                {
                    return Err(bad(format!("unknown topic matcher parameter {other:?}")));
                }
                _ => continue,
            };
            if matchers.len() == MAX_MATCHERS {
                return Err(bad(format!("at most {MAX_MATCHERS} topic matchers")));
            }
            let matcher = Matcher::new(kind, &value, hub)
                .map_err(|error| bad(format!("{name}={value:?}: {error}")))?;
            matchers.push(matcher);
        }
        if matchers.is_empty() {
            return Err(bad(
                "a topic matcher (match, match_urlpattern or topic) is required".into(),
            ));
        }
        let header = headers.get(LastEventId::HEADER);
        let cursor_requested = header.is_some() || draft_cursor.is_some() || pre_cursor.is_some();
        let last_event_id = LastEventId::from_headers(headers)
            .or_else(|| draft_cursor.and_then(LastEventId::new))
            .or_else(|| pre_cursor.and_then(LastEventId::new));
        if last_event_id
            .as_ref()
            .is_some_and(|id| has_control(id.as_str()))
        {
            return Err(bad("the last event id holds a control character".into()));
        }
        Ok(Self {
            matchers,
            last_event_id,
            cursor_requested,
            pre_standard,
        })
    }

    /// The routing matchers, one per parameter, in order.
    pub fn matchers(&self) -> &[Matcher] {
        &self.matchers
    }

    /// The topics the subscription names, when each of its matchers names one topic
    /// ([`Matcher::exact_topic`]): it receives only updates on them.
    pub fn exact_topics(&self) -> Option<Vec<&str>> {
        self.matchers.iter().map(Matcher::exact_topic).collect()
    }

    /// Whether any matcher names any of `topics` (an update's canonical and alternate topics).
    pub fn matches_any<'a>(&self, topics: impl IntoIterator<Item = &'a str> + Clone) -> bool {
        self.matchers.iter().any(|matcher| {
            topics
                .clone()
                .into_iter()
                .any(|topic| matcher.matches(topic))
        })
    }

    /// Where the subscriber resumes: after this id, or from the start of history for
    /// `earliest`. `None`: live updates only.
    pub fn last_event_id(&self) -> Option<&LastEventId> {
        self.last_event_id.as_ref()
    }

    /// Whether the request used a pre-standard parameter (`topic`, `lastEventID`): its client
    /// speaks the first generation (its response's cursor header is `Last-Event-ID`).
    pub fn is_pre_standard(&self) -> bool {
        self.pre_standard
    }

    /// Whether the request sent a cursor (the header or a parameter, even empty): its response
    /// then says where it resumed (`Mercure-Last-Event-ID`).
    pub fn cursor_requested(&self) -> bool {
        self.cursor_requested
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn hub() -> Url {
        super::super::test_url("https://example.com/.well-known/mercure")
    }

    fn parse(query: &str, header: Option<&str>) -> Result<SubscribeQuery, QueryError> {
        let mut headers = HeaderMap::new();
        if let Some(value) = header.and_then(|value| HeaderValue::from_str(value).ok()) {
            headers.insert("last-event-id", value);
        }
        SubscribeQuery::parse(Some(query), &headers, &hub())
    }

    #[test]
    fn matchers_of_both_generations_route_updates() {
        // What the draft's conformance suite sends.
        let subscribe = parse("match=foo&match=3fa8", None).unwrap_or_else(|e| panic!("{e}")); // ok: test
        assert!(subscribe.matches_any(["3fa8"]));
        assert!(!subscribe.matches_any(["another-name"]));
        let pattern = parse(
            "match_urlpattern=https%3A%2F%2Fexample.net%2Ffoo%2F%3Arandom",
            None,
        )
        .unwrap_or_else(|e| panic!("{e}")); // ok: test
        assert!(pattern.matches_any(["https://example.net/foo/3fa8"]));
        assert!(!pattern.matches_any(["https://example.net/bar/3fa8"]));
        // An update matches through any of its topics.
        assert!(pattern.matches_any(["other", "https://example.net/foo/x"]));
        // The pre-standard suite's selectors, and `*`.
        let old = parse("topic=https%3A%2F%2Fexample.net%2Ffoo%2F%7Brandom%7D", None)
            .unwrap_or_else(|e| panic!("{e}")); // ok: test
        assert!(old.matches_any(["https://example.net/foo/3fa8"]));
        let all = parse("topic=*", None).unwrap_or_else(|e| panic!("{e}")); // ok: test
        assert!(all.matches_any(["anything"]));
        assert!(!parse("match=a&other=ignored", None)
            .map(|s| s.cursor_requested())
            .unwrap_or(true));
        assert!(old.is_pre_standard() && !pattern.is_pre_standard());
        // A parameter name that is not ASCII is not a matcher name, and no panic.
        assert!(parse("match=a&matc%C3%A9=b", None).is_ok_and(|s| s.matchers().len() == 1));
    }

    #[test]
    fn the_header_wins_over_both_cursor_parameters() {
        let id = |query: &str, header: Option<&str>| {
            parse(query, header)
                .ok()
                .and_then(|s| s.last_event_id().map(|id| id.as_str().to_owned()))
        };
        assert_eq!(id("match=a&last_event_id=q", Some("h")), Some("h".into()));
        assert_eq!(
            id("match=a&last_event_id=q&lastEventID=p", None),
            Some("q".into())
        );
        assert_eq!(id("match=a&lastEventID=p", None), Some("p".into()));
        assert_eq!(
            id("match=a&last_event_id=earliest", None),
            Some("earliest".into())
        );
        // An empty header falls through to the parameter; an empty cursor still asks.
        assert_eq!(id("match=a&last_event_id=q", Some("")), Some("q".into()));
        let empty = parse("match=a&last_event_id=", None).unwrap_or_else(|e| panic!("{e}")); // ok: test
        assert!(empty.cursor_requested() && empty.last_event_id().is_none());
    }

    #[test]
    fn bad_queries_are_refused() {
        for query in [
            "",
            "last_event_id=1",
            "matchfoo=a",
            "Match=a",
            "match_URLPattern=a",
            "match_regex=a.*",
            "match_=a",
            "match=a%0Ab",
            "match_urlpattern=https%3A%2F%2Fx%2F(",
            "match=%FF",
            "match=a&last_event_id=a%00b",
        ] {
            assert!(parse(query, None).is_err(), "{query}");
        }
        let many = vec!["match=a"; MAX_MATCHERS + 1].join("&");
        assert!(parse(&many, None).is_err());
        assert!(parse(&vec!["match=a"; MAX_MATCHERS].join("&"), None).is_ok());
    }
}
