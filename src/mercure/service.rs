//! [`MercureHub`]: the Mercure protocol over a [`Hub`], as a Tower service: publish, subscribe,
//! authorization, private updates, reconnection, subscription events and the subscriptions API.
//!
//! Every update goes to one topic of the hub (`mercure` by default), with a
//! [tag](crate::hub::Publish::tag) of its own topics and privacy; each subscriber reads that
//! topic through a filter of its matchers and grants, on replay and live alike. Ids are the
//! publishers' (or a random `urn:uuid:` the service gives), kept by the hub: a client resumes
//! after any of them, on any node of a hub on Redis.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use serde_json::{json, Value};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::task_tracker::TaskTrackerToken;
use tokio_util::task::TaskTracker;
use url::Url;

use super::presence::{self, Registry, Subscription as Presence};
use super::stream::SubscriberStream;
use super::subscribe::SubscribeQuery;
use super::token::{presented_token, Grants, TokenError, Verifier, COOKIE, PRE_STANDARD_COOKIE};
use super::update::{Update, UpdateLimits};
use super::{form_pairs, tag};
use crate::hub::{Hub, HubError, Publish, Resume, Subscribe};
use crate::{BoxError, Event, SseBody};

/// The body of every response of a [`MercureHub`]: an event stream for a subscription (served
/// by [`SseLayer`](crate::SseLayer) when the service is behind it), else a short text or JSON
/// document.
pub type MercureBody = SseBody<Full<Bytes>>;

/// The draft's response header that tells a resuming subscriber where its stream starts.
const MERCURE_LAST_EVENT_ID: HeaderName = HeaderName::from_static("mercure-last-event-id");

/// The cursor of a subscriber that starts from nothing: before the first event.
const EARLIEST: &str = "earliest";

/// A Mercure hub: a Tower service to mount at the hub's path (`/.well-known/mercure`, and the
/// paths under it for the subscriptions API), behind [`SseLayer`](crate::SseLayer) for the
/// streams' heartbeats, shutdown and limits. Cloning is cheap.
///
/// ```
/// use axum::Router;
/// use tower_sse::hub::Hub;
/// use tower_sse::mercure::{MercureHub, TokenKey, Verifier};
/// use tower_sse::SseLayer;
///
/// let url = url::Url::parse("https://example.com/.well-known/mercure")?;
/// let key = TokenKey::hmac(b"!ChangeThisMercureHubJWTSecretKey!");
/// let mercure = MercureHub::builder(Hub::memory(), url.clone())
///     .publishers(Verifier::new(key.clone(), url.clone()))
///     .subscribers(Verifier::new(key, url))
///     .anonymous(true)
///     .build();
/// let app: Router = Router::new()
///     .nest_service("/.well-known/mercure", mercure)
///     .layer(SseLayer::new());
/// # let _ = app;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct MercureHub {
    inner: Arc<Inner>,
}

struct Inner {
    hub: Hub,
    url: Url,
    /// The hub's path, without a trailing slash.
    path: String,
    topic: String,
    publishers: Option<Verifier>,
    subscribers: Option<Verifier>,
    anonymous: bool,
    subscriptions: bool,
    limits: UpdateLimits,
    cookies: Vec<String>,
    /// Every node's active subscriptions, as this node knows them.
    registry: Arc<Registry>,
    /// Stops the task that follows the subscription events, when the service is dropped.
    following: CancellationToken,
    /// This node's live announcements and the tasks announcing their ends (a stream being
    /// dropped cannot wait), so that [`MercureHub::shutdown`] can.
    ending: TaskTracker,
    /// Whether the end of a subscription could not be announced (Redis was away): the other
    /// nodes still list it.
    unannounced: AtomicBool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.following.cancel();
    }
}

/// Builds a [`MercureHub`] ([`MercureHub::builder`]).
#[must_use = "a builder does nothing until built"]
pub struct MercureHubBuilder {
    inner: Inner,
}

impl MercureHub {
    /// A hub at `url` (its public URL: relative topics and patterns resolve against it, its
    /// path is reserved), over `hub`. By default nobody may publish or subscribe: give it
    /// [`publishers`](MercureHubBuilder::publishers) and
    /// [`subscribers`](MercureHubBuilder::subscribers), or allow
    /// [`anonymous`](MercureHubBuilder::anonymous) subscribers.
    pub fn builder(hub: Hub, url: Url) -> MercureHubBuilder {
        let path = url.path().trim_end_matches('/').to_owned();
        MercureHubBuilder {
            inner: Inner {
                hub,
                url,
                path,
                topic: "mercure".into(),
                publishers: None,
                subscribers: None,
                anonymous: false,
                subscriptions: false,
                limits: UpdateLimits::default(),
                cookies: vec![COOKIE.into(), PRE_STANDARD_COOKIE.into()],
                registry: Arc::default(),
                following: CancellationToken::new(),
                ending: TaskTracker::new(),
                unannounced: AtomicBool::new(false),
            },
        }
    }

    /// Ends this node's part before the process exits, once its streams have ended (after the
    /// server stopped): stops following the other nodes' subscription events, and waits, at
    /// most `within`, until the end of each of its subscriptions has been announced (their
    /// streams' ends announce them from a task, which a runtime shutting down would drop: the
    /// other nodes would list them forever). True when every subscription has ended and each
    /// end was announced in time; false when a subscription is still open after `within` (its
    /// stream was not dropped), or an announcement failed (the hub was unavailable): the other
    /// nodes may still list those.
    ///
    /// ```no_run
    /// # async fn stop(mercure: tower_sse::mercure::MercureHub) {
    /// // After the server's connections have closed:
    /// if !mercure.shutdown(std::time::Duration::from_secs(5)).await {
    ///     eprintln!("some subscriptions' ends were not announced");
    /// }
    /// # }
    /// ```
    pub async fn shutdown(&self, within: Duration) -> bool {
        let inner = &self.inner;
        inner.following.cancel();
        inner.ending.close();
        let ended = tokio::time::timeout(within, inner.ending.wait())
            .await
            .is_ok();
        ended && !inner.unannounced.load(Ordering::Relaxed)
    }

    /// The hub's public URL.
    pub fn url(&self) -> &Url {
        &self.inner.url
    }

    /// The id of the newest update the hub retains, if any: the cursor an application hands to
    /// its clients with a resource (they subscribe with it as `last_event_id`, and miss nothing
    /// published since). On Redis, a round trip. It may be a private update's id, shown to
    /// anyone: give private updates opaque ids (the random `urn:uuid:` the hub gives when the
    /// publisher does not), as the protocol recommends.
    pub async fn last_event_id(&self) -> Result<Option<String>, HubError> {
        self.inner.hub.last_id(&self.inner.topic).await
    }

    /// A layer that adds the hub's discovery `Link` header, with the cursor, to every response
    /// of an application's routes.
    pub fn discovery(&self) -> super::DiscoveryLayer {
        super::DiscoveryLayer::new(self.clone())
    }
}

impl MercureHubBuilder {
    /// How publishers' tokens are verified. Without it, every publish is refused (`401`):
    /// publishing always needs a token, presented in the `Authorization` header (a cookie,
    /// which a browser sends by itself to any page's request, is not accepted for publishing).
    pub fn publishers(mut self, verifier: Verifier) -> Self {
        self.inner.publishers = Some(verifier);
        self
    }

    /// How subscribers' tokens are verified (`Authorization: Bearer`, else the cookie
    /// `__Secure-mercure_access_token` or `mercureAuthorization`, else, for a pre-standard
    /// request, the `authorization` query parameter).
    pub fn subscribers(mut self, verifier: Verifier) -> Self {
        self.inner.subscribers = Some(verifier);
        self
    }

    /// Whether subscribers without a token are served (default no): they receive public
    /// updates only. A token that is presented must be valid all the same.
    pub fn anonymous(mut self, allow: bool) -> Self {
        self.inner.anonymous = allow;
        self
    }

    /// Whether subscriptions are announced (default no): a private update of type `mercure`
    /// (pre-standard: a message) on `{hub}/subscriptions/...` when each starts and ends, for
    /// the subscribers granted those topics, and the subscriptions API under the hub's path.
    /// The API lists every node's subscriptions: each node follows the announcements of all
    /// (a task, when built within a Tokio runtime; else only its own). Call
    /// [`MercureHub::shutdown`] before the process exits, so that the ends of its
    /// subscriptions are announced: a subscription of a node that died without announcing its
    /// end stays listed. A node started later learns of the subscriptions already active from
    /// the hub topic's history: one whose start has left it (the hub's
    /// [history bounds](crate::hub::HubBuilder::history), which a flood of updates reaches
    /// sooner) is not listed there.
    pub fn subscriptions(mut self, enable: bool) -> Self {
        self.inner.subscriptions = enable;
        self
    }

    /// The hub topic every update is published to (default `mercure`): give each Mercure hub
    /// sharing a [`Hub`] its own. Never serve it through [`Hub::subscribe`] elsewhere: a plain
    /// subscription reads every update, private ones included (only this service filters them).
    pub fn hub_topic(mut self, topic: impl Into<String>) -> Self {
        self.inner.topic = topic.into();
        self
    }

    /// The limits of a publish request (past them, `413`).
    pub fn limits(mut self, limits: UpdateLimits) -> Self {
        self.inner.limits = limits;
        self
    }

    /// Another cookie a subscriber's token may come in (after the two the protocol names).
    pub fn cookie(mut self, name: impl Into<String>) -> Self {
        self.inner.cookies.push(name.into());
        self
    }

    /// The hub.
    pub fn build(self) -> MercureHub {
        let inner = self.inner;
        if inner.subscriptions {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    runtime.spawn(super::follower::follow(
                        inner.hub.clone(),
                        inner.topic.clone(),
                        format!("{}/subscriptions/", inner.path),
                        inner.registry.clone(),
                        inner.following.clone(),
                    ));
                }
                Err(_) => tracing::warn!(
                    "mercure: built outside a Tokio runtime, the subscriptions API lists this node's subscriptions only"
                ),
            }
        }
        MercureHub {
            inner: Arc::new(inner),
        }
    }
}

impl std::fmt::Debug for MercureHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MercureHub")
            .field("url", &self.inner.url.as_str())
            .field("topic", &self.inner.topic)
            .field("anonymous", &self.inner.anonymous)
            .field("subscriptions", &self.inner.subscriptions)
            .finish_non_exhaustive()
    }
}

impl<B> tower_service::Service<Request<B>> for MercureHub
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<MercureBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<MercureBody>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let inner = self.inner.clone();
        Box::pin(async move { Ok(inner.answer(request).await) })
    }
}

impl Inner {
    /// Routes a request by its path under the hub's (whole, or with the hub's path already
    /// taken off by a router that nests the service) and its method.
    async fn answer<B>(self: Arc<Self>, request: Request<B>) -> Response<MercureBody>
    where
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let (parts, body) = request.into_parts();
        let path = parts.uri.path();
        let rest = path.strip_prefix(self.path.as_str()).unwrap_or(path);
        match rest {
            "" | "/" if parts.method == Method::GET => self.subscribe(&parts).await,
            "" | "/" if parts.method == Method::POST => self.publish(&parts, body).await,
            "" | "/" => not_allowed("GET, POST"),
            api if self.subscriptions
                && (api == "/subscriptions" || api.starts_with("/subscriptions/")) =>
            {
                if parts.method != Method::GET {
                    return not_allowed("GET");
                }
                self.subscriptions_api(&parts, api).await
            }
            _ => text(StatusCode::NOT_FOUND, "not found"),
        }
    }

    /// A publish: the token, the form, the grants, then one publish to the hub.
    async fn publish<B>(&self, parts: &Parts, body: B) -> Response<MercureBody>
    where
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        // Publishing takes its token from the header alone: no cookie, no CSRF.
        let grants = match presented_token(&parts.headers, &[]) {
            Err(error) => return self.refuse(error),
            Ok(None) => return self.refuse(TokenError::Missing),
            Ok(Some(token)) => match &self.publishers {
                None => return self.refuse(TokenError::Invalid("no publisher is trusted".into())),
                Some(verifier) => match verifier.verify(&token) {
                    Ok(grants) => grants,
                    Err(error) => return self.refuse(error),
                },
            },
        };
        if let Some(kind) = parts.headers.get(header::CONTENT_TYPE) {
            let form = kind
                .to_str()
                .ok()
                .and_then(|kind| kind.split(';').next())
                .is_some_and(|kind| {
                    kind.trim()
                        .eq_ignore_ascii_case("application/x-www-form-urlencoded")
                });
            if !form {
                return text(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "a publish is an application/x-www-form-urlencoded form",
                );
            }
        }
        let body = match Limited::new(body, self.max_form()).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(error) if error.downcast_ref::<LengthLimitError>().is_some() => {
                return text(StatusCode::PAYLOAD_TOO_LARGE, "the form is too large");
            }
            Err(error) => {
                tracing::debug!(%error, "mercure: a publish body failed");
                return text(StatusCode::BAD_REQUEST, "the form could not be read");
            }
        };
        let update = match Update::from_form(&body, &self.url, self.limits) {
            Ok(update) => update,
            Err(error) => return text(error.status(), &error.to_string()),
        };
        if !update
            .topics()
            .iter()
            .all(|topic| grants.may_publish(topic))
        {
            return self.refuse(TokenError::InsufficientScope);
        }
        let id = update.id().map_or_else(new_id, str::to_owned);
        let event = match update.event(&id) {
            Ok(event) => event,
            Err(error) => return text(StatusCode::BAD_REQUEST, &error.to_string()),
        };
        let topics = update.topics().iter().map(String::as_str);
        let options = Publish::new()
            .keep_id()
            .tag(tag::encode(update.is_private(), topics));
        match self.hub.publish_with(&self.topic, event, options).await {
            Ok(id) => text(StatusCode::OK, &id),
            Err(error) => hub_error(error),
        }
    }

    /// The most bytes a publish form may take: its limits, every byte percent-encoded.
    fn max_form(&self) -> usize {
        let limits = self.limits;
        let fields = limits.topics.saturating_add(4);
        limits
            .data_len
            .saturating_add(fields.saturating_mul(limits.field_len))
            .saturating_mul(3)
            .saturating_add(4096)
    }

    /// A subscribe: the matchers, the token, then the hub's subscription through the filter
    /// of both, from the client's cursor.
    async fn subscribe(self: &Arc<Self>, request: &Parts) -> Response<MercureBody> {
        let query = match SubscribeQuery::parse(request.uri.query(), &request.headers, &self.url) {
            Ok(query) => Arc::new(query),
            Err(error) => return text(StatusCode::BAD_REQUEST, &error.to_string()),
        };
        let grants = match self.subscriber_grants(request, &query) {
            Ok(grants) => Arc::new(grants),
            Err(error) => return self.refuse(error),
        };
        let last = query.last_event_id().cloned();
        let earliest = last.as_ref().is_some_and(|id| id.as_str() == EARLIEST);
        // Every id of the hub's updates is a kept one: a client's is never its own position.
        let options = if earliest {
            Subscribe::new().earliest()
        } else {
            Subscribe::new().after_kept(last.clone())
        };
        let filter = (query.clone(), grants.clone());
        let mut options = options
            .without_gap_event()
            .filter(move |tag| tag::admits(tag, &filter.0, &filter.1));
        // A subscriber of exact topics is woken only by their updates, not by every update of
        // the hub (whose topics it would pass over, one by one).
        if let Some(topics) = query.exact_topics() {
            let keys: Vec<Bytes> = topics
                .into_iter()
                .map(|topic| Bytes::copy_from_slice(topic.as_bytes()))
                .collect();
            options = options.interest(keys);
        }
        let subscription = match self.hub.subscribe_with([&self.topic], options).await {
            Ok(subscription) => subscription,
            Err(error) => return hub_error(error),
        };
        // Where the stream starts: after the client's id when it was found (and names an
        // update this subscriber may read), else before everything the hub has.
        let cursor = match (subscription.resume(), &last) {
            (Resume::Resumed { .. }, Some(id)) if !earliest => id.as_str().to_owned(),
            _ => EARLIEST.to_owned(),
        };
        let announcement = if self.subscriptions {
            Some(self.announce(&query, &grants).await)
        } else {
            None
        };
        let stream = SubscriberStream::new(subscription, grants.expires_at(), announcement);
        let mut response = crate::source::boxed_response::<Full<Bytes>>(Box::pin(stream));
        if query.cursor_requested() {
            let name = if query.is_pre_standard() {
                header::HeaderName::from_static("last-event-id")
            } else {
                MERCURE_LAST_EVENT_ID
            };
            if let Ok(value) = HeaderValue::from_str(&cursor) {
                response.headers_mut().insert(name, value);
            }
        }
        response
    }

    /// The grants of a subscriber's token, or none for an anonymous subscriber if allowed.
    fn subscriber_grants(
        &self,
        request: &Parts,
        query: &SubscribeQuery,
    ) -> Result<Grants, TokenError> {
        let cookies: Vec<&str> = self.cookies.iter().map(String::as_str).collect();
        let mut token = presented_token(&request.headers, &cookies)?;
        if token.is_none() && query.is_pre_standard() {
            // The pre-standard hub also took the token from the query.
            token = request
                .uri
                .query()
                .unwrap_or_default()
                .split('&')
                .filter_map(|pair| form_pairs::pair(pair.as_bytes()))
                .find(|(name, _)| name == "authorization")
                .map(|(_, value)| value)
                .filter(|value| !value.is_empty());
        }
        match (token, &self.subscribers) {
            (None, _) if self.anonymous => Ok(Grants::none()),
            (None, _) => Err(TokenError::Missing),
            (Some(_), None) => Err(TokenError::Invalid("no subscriber is trusted".into())),
            (Some(token), Some(verifier)) => verifier.verify(&token),
        }
    }

    /// Announces a subscriber's subscriptions as started (they are listed from now on); the
    /// announcement, once dropped (with the subscriber's stream, or with this request if it is
    /// given up first), announces them as ended.
    async fn announce(self: &Arc<Self>, query: &SubscribeQuery, grants: &Grants) -> Announcement {
        let subscriber = new_id();
        let mut announcement = Announcement {
            hub: self.clone(),
            subscriptions: Vec::with_capacity(query.matchers().len()),
            _live: self.ending.token(),
        };
        for matcher in query.matchers() {
            let payload = grants.payload_for(matcher.as_str()).cloned();
            let subscription = Presence::new(&self.path, &subscriber, matcher, payload);
            self.registry.add(&subscription);
            announcement.subscriptions.push(subscription.clone());
            // A start that was not announced is only missing from the other nodes' lists
            // until its end; the subscription is served all the same.
            self.publish_presence(&subscription).await;
        }
        announcement
    }

    /// Publishes a subscription's event, as a private update on its topic; whether it was. A
    /// failure is logged: the subscription itself stands.
    async fn publish_presence(&self, subscription: &Presence) -> bool {
        let data = subscription.document(true).to_string();
        let mut event = match Event::default().id(new_id()) {
            Ok(event) => event.data(data),
            Err(_) => return false,
        };
        if let Some(kind) = subscription.event_type() {
            match event.event(kind) {
                Ok(typed) => event = typed,
                Err(_) => return false,
            }
        }
        let options = Publish::new()
            .keep_id()
            .tag(tag::subscription_event(&subscription.topic));
        match self.hub.publish_with(&self.topic, event, options).await {
            Ok(_) => true,
            Err(error) => {
                tracing::warn!(%error, topic = %subscription.topic, "mercure: a subscription event was not published");
                false
            }
        }
    }

    /// The subscriptions API: the request's path, read as a topic, must be granted.
    async fn subscriptions_api(&self, request: &Parts, rest: &str) -> Response<MercureBody> {
        let path = format!("{}{rest}", self.path);
        let cookies: Vec<&str> = self.cookies.iter().map(String::as_str).collect();
        let grants = match (
            presented_token(&request.headers, &cookies),
            &self.subscribers,
        ) {
            (Err(error), _) => return self.refuse(error),
            (Ok(None), _) => return self.refuse(TokenError::Missing),
            (Ok(Some(_)), None) => {
                return self.refuse(TokenError::Invalid("no subscriber is trusted".into()))
            }
            (Ok(Some(token)), Some(verifier)) => match verifier.verify(&token) {
                Ok(grants) => grants,
                Err(error) => return self.refuse(error),
            },
        };
        if !grants.may_subscribe(&path) {
            return self.refuse(TokenError::InsufficientScope);
        }
        let last = match self.hub.last_id(&self.topic).await {
            Ok(last) => last.unwrap_or_else(|| EARLIEST.to_owned()),
            Err(error) => return hub_error(error),
        };
        let segments: Vec<String> = rest
            .trim_start_matches("/subscriptions")
            .split('/')
            .filter(|segment| !segment.is_empty())
            .map(|segment| {
                let decoded = percent_encoding::percent_decode_str(segment).decode_utf8_lossy();
                presence::segment(&decoded)
            })
            .collect();
        let draft = matches!(
            segments.first().map(String::as_str),
            None | Some("exact" | "urlpattern")
        );
        let prefix = format!("{}/subscriptions/", self.path);
        let (document, found) = match (draft, segments.len()) {
            (true, 0) | (true, 2) | (false, 1) => {
                let mut prefix = prefix;
                for segment in &segments {
                    prefix.push_str(segment);
                    prefix.push('/');
                }
                let listed = self.registry.list(&prefix);
                (collection(&path, draft, &listed, &last), true)
            }
            (true, 3) | (false, 2) => {
                let topic = format!("{prefix}{}", segments.join("/"));
                match self
                    .registry
                    .list(&topic)
                    .into_iter()
                    .find(|s| s.topic == topic)
                {
                    Some(subscription) => {
                        let mut document = subscription.document(true);
                        if !draft {
                            document["lastEventID"] = Value::from(last.as_str());
                        }
                        (document, true)
                    }
                    None => (Value::Null, false),
                }
            }
            _ => (Value::Null, false),
        };
        if !found {
            return text(StatusCode::NOT_FOUND, "no such subscription");
        }
        let mut response = Response::new(SseBody::untouched(
            Full::new(Bytes::from(document.to_string())),
            None,
        ));
        let kind = if draft {
            "application/json"
        } else {
            "application/ld+json"
        };
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("must-revalidate"),
        );
        let link = super::discovery_link(self.url.as_str(), Some(&last)).and_then(|link| {
            let typed = format!(
                "{}; type=\"mercure\"; content-type=\"application/json\"",
                link.to_str().ok()?
            );
            HeaderValue::from_str(&typed).ok()
        });
        if let Some(link) = link {
            headers.insert(header::LINK, link);
        }
        response
    }

    /// A refusal for `error`, with its RFC 6750 challenge.
    fn refuse(&self, error: TokenError) -> Response<MercureBody> {
        tracing::debug!(%error, "mercure: refused");
        let message = match &error {
            // Why a token is invalid is for the logs, not the client.
            TokenError::Invalid(_) => "invalid access token".to_owned(),
            other => other.to_string(),
        };
        let mut response = text(error.status(), &message);
        if let Some(challenge) = error.challenge(None) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, challenge);
        }
        response
    }
}

/// A subscriber's subscriptions, announced: listed while it lives, announced as ended when it
/// is dropped.
struct Announcement {
    hub: Arc<Inner>,
    subscriptions: Vec<Presence>,
    /// Counted by the hub's `ending` tracker while the subscriptions live, so that a shutdown
    /// waits for their ends (and their announcements' tasks) too.
    _live: TaskTrackerToken,
}

impl Drop for Announcement {
    fn drop(&mut self) {
        for subscription in &self.subscriptions {
            self.hub.registry.remove(subscription);
        }
        let mut ended = std::mem::take(&mut self.subscriptions);
        if ended.is_empty() {
            return;
        }
        // Told from a task: a stream being dropped cannot wait. Without a runtime (the process
        // is ending), the subscribers of these events are gone too.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        // The task is tracked before this token is released: the tracker never looks idle
        // between the two.
        let hub = self.hub.clone();
        self.hub.ending.spawn_on(
            async move {
                for subscription in &mut ended {
                    subscription.active = false;
                    if !hub.publish_presence(subscription).await {
                        hub.unannounced.store(true, Ordering::Relaxed);
                    }
                }
            },
            &runtime,
        );
    }
}

/// A collection of subscription documents.
fn collection(id: &str, draft: bool, subscriptions: &[Presence], last: &str) -> Value {
    let documents: Vec<Value> = subscriptions
        .iter()
        .filter(|subscription| subscription.is_pre_standard() != draft)
        .map(|subscription| subscription.document(false))
        .collect();
    if draft {
        json!({ "id": id, "type": "subscriptions", "subscriptions": documents })
    } else {
        json!({
            "@context": "https://mercure.rocks/",
            "id": id,
            "type": "Subscriptions",
            "lastEventID": last,
            "subscriptions": documents,
        })
    }
}

/// A new random id: `urn:uuid:` and a version 4 UUID (opaque: it tells nothing of when or in
/// which order, as the protocol recommends for private updates).
fn new_id() -> String {
    format!("urn:uuid:{}", uuid::Uuid::new_v4())
}

/// A plain-text response.
fn text(status: StatusCode, body: &str) -> Response<MercureBody> {
    let mut response = Response::new(SseBody::untouched(
        Full::new(Bytes::from(body.to_owned())),
        None,
    ));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// `405`, with the methods allowed.
fn not_allowed(allow: &'static str) -> Response<MercureBody> {
    let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

/// The hub's refusal, with its status (and `Retry-After` when unavailable).
fn hub_error(error: HubError) -> Response<MercureBody> {
    let response = error.into_http();
    let (parts, body) = response.into_parts();
    Response::from_parts(
        parts,
        SseBody::untouched(Full::new(Bytes::from(body)), None),
    )
}
