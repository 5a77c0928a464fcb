//! Subscription events and documents (the protocol's "active subscriptions"): who is
//! subscribed to what, told to the subscribers granted it as private updates when a
//! subscription starts and ends, and listed by the subscriptions API.
//!
//! Each generation has its own shape: the draft's topic is
//! `{hub}/subscriptions/{match_type}/{match}/{subscriber}` and its document plain JSON with
//! `type` `subscription`, sent as `event: mercure`; the pre-standard topic is
//! `{hub}/subscriptions/{topic}/{subscriber}` and its document JSON-LD with `type`
//! `Subscription`, sent as a plain message. Each variable is percent-encoded once, whole.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::{json, Value};

use super::matcher::{MatchType, Matcher};

/// Everything but the unreserved characters (RFC 3986) is encoded.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The JSON-LD context of pre-standard documents.
const CONTEXT: &str = "https://mercure.rocks/";

/// One subscription: one matcher of one subscriber's request.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Subscription {
    /// The event topic, which is also the document's `id`.
    pub(super) topic: String,
    pub(super) subscriber: String,
    pub(super) match_type: MatchType,
    pub(super) pattern: String,
    pub(super) payload: Option<Value>,
    pub(super) active: bool,
}

/// A path segment: `text` percent-encoded once, whole.
pub(super) fn segment(text: &str) -> String {
    utf8_percent_encode(text, COMPONENT).to_string()
}

impl Subscription {
    /// The subscription of `subscriber` by `matcher`, under the hub's path `hub_path`.
    pub(super) fn new(
        hub_path: &str,
        subscriber: &str,
        matcher: &Matcher,
        payload: Option<Value>,
    ) -> Self {
        let hub_path = hub_path.trim_end_matches('/');
        let topic = match matcher.match_type() {
            MatchType::Selector => format!(
                "{hub_path}/subscriptions/{}/{}",
                segment(matcher.as_str()),
                segment(subscriber)
            ),
            kind => format!(
                "{hub_path}/subscriptions/{}/{}/{}",
                kind.as_str(),
                segment(matcher.as_str()),
                segment(subscriber)
            ),
        };
        Self {
            topic,
            subscriber: subscriber.to_owned(),
            match_type: matcher.match_type(),
            pattern: matcher.as_str().to_owned(),
            payload,
            active: true,
        }
    }

    /// The subscription a document (an event's data) describes, of either generation.
    pub(super) fn from_document(document: &Value) -> Option<Self> {
        let text = |name: &str| {
            document
                .get(name)
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let (match_type, pattern) = match document.get("type").and_then(Value::as_str)? {
            "subscription" => {
                let kind = match document.get("match_type").and_then(Value::as_str)? {
                    "exact" => MatchType::Exact,
                    "urlpattern" => MatchType::UrlPattern,
                    _ => return None,
                };
                (kind, text("match")?)
            }
            "Subscription" => (MatchType::Selector, text("topic")?),
            _ => return None,
        };
        Some(Self {
            topic: text("id")?,
            subscriber: text("subscriber")?,
            match_type,
            pattern,
            payload: document.get("payload").cloned(),
            active: document.get("active").and_then(Value::as_bool)?,
        })
    }

    /// Whether it is of the pre-standard generation.
    pub(super) fn is_pre_standard(&self) -> bool {
        self.match_type == MatchType::Selector
    }

    /// Its document, in its generation's shape (`context`: with the pre-standard `@context`,
    /// as an event's is; inside a collection it is left out).
    pub(super) fn document(&self, context: bool) -> Value {
        let mut document = if self.is_pre_standard() {
            let mut document = json!({
                "id": self.topic,
                "type": "Subscription",
                "topic": self.pattern,
                "subscriber": self.subscriber,
                "active": self.active,
            });
            if context {
                document["@context"] = Value::from(CONTEXT);
            }
            document
        } else {
            json!({
                "id": self.topic,
                "type": "subscription",
                "match_type": self.match_type.as_str(),
                "match": self.pattern,
                "subscriber": self.subscriber,
                "active": self.active,
            })
        };
        if let Some(payload) = &self.payload {
            document["payload"] = payload.clone();
        }
        document
    }

    /// The event type of its events: the draft's reserved `mercure`, or none (a message).
    pub(super) fn event_type(&self) -> Option<&'static str> {
        (!self.is_pre_standard()).then_some("mercure")
    }
}

/// The subscriptions active on this node, by topic (so, by subscriber and matcher).
#[derive(Debug, Default)]
pub(super) struct Registry {
    active: Mutex<BTreeMap<String, Subscription>>,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Subscription>> {
        // Nothing panics while holding the lock; the map stays consistent in any case.
        self.active
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(super) fn add(&self, subscription: &Subscription) {
        self.lock()
            .insert(subscription.topic.clone(), subscription.clone());
    }

    pub(super) fn remove(&self, subscription: &Subscription) {
        self.lock().remove(&subscription.topic);
    }

    /// The active subscriptions whose topic starts with `prefix`, in topic order.
    pub(super) fn list(&self, prefix: &str) -> Vec<Subscription> {
        self.lock()
            .range(prefix.to_owned()..)
            .take_while(|(topic, _)| topic.starts_with(prefix))
            .map(|(_, subscription)| subscription.clone())
            .collect()
    }

    /// How many subscriptions are active.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mercure::test_url;

    #[test]
    fn topics_encode_each_variable_once_and_documents_follow_their_generation() {
        let hub = test_url("https://example.com/.well-known/mercure");
        let pattern = Matcher::new(MatchType::UrlPattern, "https://example.com/:id", &hub);
        let Ok(pattern) = pattern else {
            panic!("a pattern"); // ok: test
        };
        let draft = Subscription::new("/.well-known/mercure", "urn:uuid:1", &pattern, None);
        assert_eq!(
            draft.topic,
            "/.well-known/mercure/subscriptions/urlpattern/https%3A%2F%2Fexample.com%2F%3Aid/urn%3Auuid%3A1"
        );
        let document = draft.document(true);
        assert_eq!(document["type"], "subscription");
        assert_eq!(document["match_type"], "urlpattern");
        assert!(document.get("@context").is_none());
        assert_eq!(draft.event_type(), Some("mercure"));

        let Ok(selector) = Matcher::new(MatchType::Selector, "https://example.com/{id}", &hub)
        else {
            panic!("a selector"); // ok: test
        };
        let old = Subscription::new(
            "/.well-known/mercure/",
            "urn:uuid:1",
            &selector,
            Some(json!({"user": 7})),
        );
        assert_eq!(
            old.topic,
            "/.well-known/mercure/subscriptions/https%3A%2F%2Fexample.com%2F%7Bid%7D/urn%3Auuid%3A1"
        );
        let document = old.document(true);
        assert_eq!(document["@context"], CONTEXT);
        assert_eq!(document["type"], "Subscription");
        assert_eq!(document["topic"], "https://example.com/{id}");
        assert_eq!(segment("a%b c/é"), "a%25b%20c%2F%C3%A9");
        assert_eq!(document["payload"]["user"], 7);
        assert!(old.document(false).get("@context").is_none());
        assert_eq!(old.event_type(), None);

        // A document read back is the subscription it was written from.
        assert_eq!(
            Subscription::from_document(&draft.document(true)),
            Some(draft.clone())
        );
        assert_eq!(
            Subscription::from_document(&old.document(true)),
            Some(old.clone())
        );
        assert_eq!(
            Subscription::from_document(&json!({"type": "subscription"})),
            None
        );
        assert_eq!(Subscription::from_document(&json!([1])), None);

        let registry = Registry::default();
        registry.add(&draft);
        registry.add(&old);
        let prefix = "/.well-known/mercure/subscriptions/urlpattern/";
        assert_eq!(registry.list(prefix), std::slice::from_ref(&draft));
        assert_eq!(
            registry.list("/.well-known/mercure/subscriptions/").len(),
            2
        );
        registry.remove(&draft);
        assert_eq!(registry.len(), 1);
    }
}
