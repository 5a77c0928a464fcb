//! What the hub stores with each update for subscribers to decide by (its
//! [tag](crate::hub::Publish::tag)): whether it is private, and its topics. Written once per
//! publish; each subscriber reads it for every update, on replay and live.
//!
//! The tag is one byte (`p` private, `-` public), then the topics, each ended by a line feed
//! (topics hold no control character, so none holds one).

use bytes::{BufMut, Bytes, BytesMut};

use super::subscribe::SubscribeQuery;
use super::token::Grants;

const PRIVATE: u8 = b'p';
const PUBLIC: u8 = b'-';

/// The tag of an update on `topics`.
pub(super) fn encode<'a>(private: bool, topics: impl IntoIterator<Item = &'a str>) -> Bytes {
    let mut tag = BytesMut::with_capacity(64);
    tag.put_u8(if private { PRIVATE } else { PUBLIC });
    for topic in topics {
        tag.put_slice(topic.as_bytes());
        tag.put_u8(b'\n');
    }
    tag.freeze()
}

/// Whether a subscriber routed by `query` and authorized by `grants` receives the update
/// tagged `tag`: one of its topics matches one of the subscription's matchers and, when it is
/// private, one of its topics is granted. What is not a Mercure tag (an event another client of
/// the hub published) is not sent.
pub(super) fn admits(tag: &[u8], query: &SubscribeQuery, grants: &Grants) -> bool {
    let Some((&visibility, topics)) = tag.split_first() else {
        return false;
    };
    let topics = topics
        .split(|&b| b == b'\n')
        .filter(|topic| !topic.is_empty())
        .filter_map(|topic| std::str::from_utf8(topic).ok());
    match visibility {
        PUBLIC => query.matches_any(topics),
        PRIVATE => {
            query.matches_any(topics.clone()) && topics.into_iter().any(|t| grants.may_subscribe(t))
        }
        _ => false,
    }
}

/// Whether one of the topics of the update tagged `tag` is under `prefix` (a subscription
/// event's).
pub(super) fn names_under(tag: &[u8], prefix: &str) -> bool {
    tag.get(1..)
        .unwrap_or_default()
        .split(|&b| b == b'\n')
        .any(|topic| topic.starts_with(prefix.as_bytes()))
}

/// The topics of a tag.
#[cfg(test)]
pub(super) fn topics(tag: &[u8]) -> Vec<String> {
    tag.get(1..)
        .unwrap_or_default()
        .split(|&b| b == b'\n')
        .filter(|topic| !topic.is_empty())
        .map(|topic| String::from_utf8_lossy(topic).into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use http::HeaderMap;

    use super::*;
    use crate::mercure::test_url;

    fn query(query: &str) -> SubscribeQuery {
        let hub = test_url("https://example.com/.well-known/mercure");
        match SubscribeQuery::parse(Some(query), &HeaderMap::new(), &hub) {
            Ok(query) => query,
            Err(e) => panic!("{query}: {e}"), // ok: test
        }
    }

    #[test]
    fn public_updates_follow_routing_and_private_ones_need_a_grant_too() {
        let public = encode(false, ["https://example.com/a", "https://example.com/b"]);
        let private = encode(true, ["https://example.com/a", "https://example.com/b"]);
        assert_eq!(
            topics(&public),
            ["https://example.com/a", "https://example.com/b"]
        );
        let anonymous = Grants::none();
        assert!(admits(
            &public,
            &query("match=https://example.com/b"),
            &anonymous
        ));
        assert!(!admits(
            &public,
            &query("match=https://example.com/c"),
            &anonymous
        ));
        assert!(!admits(&private, &query("match=*"), &anonymous));
        // Untagged or foreign events are not sent.
        assert!(!admits(b"", &query("match=*"), &anonymous));
        assert!(!admits(
            b"xhttps://example.com/a\n",
            &query("match=*"),
            &anonymous
        ));
        assert!(names_under(&private, "https://example.com/"));
        assert!(!names_under(
            &private,
            "/.well-known/mercure/subscriptions/"
        ));
        assert!(!names_under(b"", "/"));
    }
}
