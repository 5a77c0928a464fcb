//! What the hub stores with each update for subscribers to decide by (its
//! [tag](crate::hub::Publish::tag)): whether it is private, and its topics. Written once per
//! publish; each subscriber reads it for every update, on replay and live.
//!
//! The tag is one byte (`p` private, `-` public, `s` a subscription event the hub itself
//! published, private too) and a tab, then the topics, each on a line of its own (topics hold
//! no control character, so none holds a line feed, and none is the first line). Only the hub
//! writes `s`: whatever topic a publisher names, its update is never taken for a subscription
//! event. The topics' lines are what a subscriber's [interest](crate::hub::Subscribe::interest)
//! names: a subscriber of exact topics is woken only by their updates.

use bytes::{BufMut, Bytes, BytesMut};

use super::subscribe::SubscribeQuery;
use super::token::Grants;

const PRIVATE: u8 = b'p';
const PUBLIC: u8 = b'-';
const SUBSCRIPTION: u8 = b's';
/// Ends the kind's line: a control character, so that no topic is that line.
const KIND_END: &[u8] = b"\t\n";

/// The kind and the topics' lines of a tag.
fn split(tag: &[u8]) -> Option<(u8, &[u8])> {
    let (&kind, rest) = tag.split_first()?;
    Some((kind, rest.strip_prefix(KIND_END)?))
}

/// The tag of an update on `topics`.
pub(super) fn encode<'a>(private: bool, topics: impl IntoIterator<Item = &'a str>) -> Bytes {
    tagged(if private { PRIVATE } else { PUBLIC }, topics)
}

/// The tag of the hub's own subscription event on `topic` (a private update).
pub(super) fn subscription_event(topic: &str) -> Bytes {
    tagged(SUBSCRIPTION, [topic])
}

fn tagged<'a>(kind: u8, topics: impl IntoIterator<Item = &'a str>) -> Bytes {
    let mut tag = BytesMut::with_capacity(64);
    tag.put_u8(kind);
    tag.put_slice(KIND_END);
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
    let Some((visibility, topics)) = split(tag) else {
        return false;
    };
    let topics = topics
        .split(|&b| b == b'\n')
        .filter(|topic| !topic.is_empty())
        .filter_map(|topic| std::str::from_utf8(topic).ok());
    match visibility {
        PUBLIC => query.matches_any(topics),
        PRIVATE | SUBSCRIPTION => {
            query.matches_any(topics.clone()) && topics.into_iter().any(|t| grants.may_subscribe(t))
        }
        _ => false,
    }
}

/// Whether the update tagged `tag` is one of the hub's own subscription events (never a
/// publisher's update, whatever its topics).
pub(super) fn is_subscription_event(tag: &[u8]) -> bool {
    tag.first() == Some(&SUBSCRIPTION)
}

/// The topics of a tag.
#[cfg(test)]
pub(super) fn topics(tag: &[u8]) -> Vec<String> {
    split(tag)
        .map_or(&[][..], |(_, topics)| topics)
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
        // The topics are the tag's lines that an interest names; the kind's line is none.
        assert_eq!(&public[..2], b"-\t");
        let lines: Vec<&[u8]> = public.split(|&b| b == b'\n').collect();
        assert!(lines.contains(&&b"https://example.com/a"[..]));
        assert!(!lines.contains(&&b"-"[..]));
        // Only the hub's own subscription events are taken for one, whatever the topic.
        let forged = encode(true, ["/.well-known/mercure/subscriptions/../../x"]);
        assert!(!is_subscription_event(&forged));
        assert!(!is_subscription_event(b""));
        let own = subscription_event("/.well-known/mercure/subscriptions/a/b");
        assert!(is_subscription_event(&own));
        // It is private: a grant on its topic is needed.
        assert!(!admits(&own, &query("match=*"), &anonymous));
    }
}
