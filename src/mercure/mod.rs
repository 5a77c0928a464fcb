//! The Mercure protocol's building blocks (feature `mercure`): topic matchers and access
//! tokens, as both generations of the protocol define them (the IETF draft,
//! `draft-dunglas-mercure-08`, and the pre-standard one the installed base speaks).
//!
//! - [`Matcher`]: which topics a subscription's routing parameter (`match`, `match_urlpattern`,
//!   the pre-standard `topic`) or a token's grant names: exact, WHATWG URL Pattern, RFC 6570
//!   URI template, or `*`; relative patterns and topics against the hub's URL.
//! - [`Verifier`]: verifies a request's access token with the hub's key (the draft's RFC 9068
//!   rules: `typ` `at+jwt`, `iss`, `aud`, `exp`, `nbf`; or the pre-standard `mercure` claim)
//!   and reads its [`Grants`] (which topics it may publish to, and whose private updates it may
//!   receive), all or nothing; [`presented_token`] finds the token (the `Authorization` header,
//!   else a cookie) and [`TokenError`] gives each refusal its RFC 6750 answer.
//! - [`SubscribeQuery`]: a subscribe request's matchers (either generation's parameters) and
//!   cursor (`Last-Event-ID`, `last_event_id`, `lastEventID`); [`discovery_link`] and [`DiscoveryLayer`] the `Link`
//!   header that points an application's clients at the hub.
//! - [`Update`]: a publish request's form, checked (topics, the hub's reserved namespace, ids,
//!   types, retry, limits) before anything is published, and the event subscribers receive.
//!
//! [`MercureHub`] speaks the protocol over a [`Hub`](crate::hub::Hub) with these: a Tower
//! service to mount at the hub's path.

mod discovery;
mod follower;
mod form_pairs;
mod matcher;
mod presence;
mod service;
mod stream;
mod subscribe;
mod tag;
mod token;
mod update;

pub use discovery::{discovery_link, Discovery, DiscoveryLayer};
pub use matcher::{MatchType, Matcher, MatcherError, MAX_PATTERN_LEN};
pub use service::{MercureBody, MercureHub, MercureHubBuilder};
pub use subscribe::{QueryError, SubscribeQuery, MAX_MATCHERS};
pub use token::{
    presented_token, Grants, TokenError, TokenKey, Verifier, AUTHORIZATION_DETAIL_TYPE, COOKIE,
    PRE_STANDARD_COOKIE,
};
pub use update::{Update, UpdateError, UpdateLimits};

/// A URL the tests write themselves.
#[cfg(test)]
fn test_url(url: &str) -> url::Url {
    match url::Url::parse(url) {
        Ok(url) => url,
        Err(e) => panic!("{url}: {e}"), // ok: test
    }
}
