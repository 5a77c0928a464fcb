//! The hub (feature `hub`): publish an event once, and every subscriber of its topic receives
//! it; a client that reconnects with `Last-Event-ID` receives exactly what it missed, or is told
//! plainly that history is gone.
//!
//! ```
//! use axum::{extract::{Path, State}, routing::get, Extension, Router};
//! use tower_sse::hub::{Hub, HubError, Subscription};
//! use tower_sse::{Event, LastEventId, SseLayer};
//!
//! async fn events(
//!     State(hub): State<Hub>,
//!     Path(topic): Path<String>,
//!     last: Option<Extension<LastEventId>>,
//! ) -> Result<Subscription, HubError> {
//!     // Authorise `topic` here, as any resource named by a path.
//!     hub.subscribe([topic], last.map(|Extension(id)| id)).await
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let hub = Hub::memory();
//! let app: Router = Router::new()
//!     .route("/events/{topic}", get(events))
//!     .with_state(hub.clone())
//!     .layer(SseLayer::new());
//! let id = hub.publish("orders/42", Event::default().event("status")?.data("shipped")).await?;
//! # let _ = (app, id);
//! # Ok(())
//! # }
//! ```
//!
//! On Redis (feature `redis`, `HubBuilder::redis`) the same rules hold across every node on
//! one Redis, with ids and history of Redis Streams: see `hub::Redis`.
//!
//! | Rule | What the hub does |
//! | --- | --- |
//! | Ids | every event gets `{epoch}-{seq}`: a random 16-hex-digit epoch per hub, and a sequence over all its topics, so ids grow strictly per topic and one id places a client in every topic of a subscription; an id the event had is replaced, unless published with [`Publish::keep_id`] |
//! | Resume | after a known id, every retained event after it, then live ones: no gap and no duplicate between the two, whatever publishers do meanwhile |
//! | Gap | an id older than the history, of another epoch (an earlier process, another hub) or malformed: one gap event first (`event: reset`, `data: {"reason":"trimmed"}`, `"unknown"` or `"malformed"`; see [`HubBuilder::gap_event`]), then what is retained after it, then live |
//! | History | per topic, the last 1 000 events and 1 MiB (configurable); a topic with neither subscribers nor history is dropped, and past 100 000 topics or 256 MiB of history in all, the topics without subscribers published to longest ago are evicted |
//! | Slow subscribers | each reads its topics' rings (the history) with a cursor of its own; one more than 1 024 events or 1 MiB behind (its queue) is sent that many and ended after whole events ([`CloseReason::Lagged`](crate::CloseReason::Lagged)), as is one whose next event left the history; it catches up from history when it reconnects; `publish` never waits on a subscriber |
//! | Topics apart | a publish holds only its topic's lock, to number and append the event (encoded before, subscribers woken after): topics never wait on each other |
//! | Several topics | up to 16 per subscription, merged in publish order, resumed with one id |
//! | Tags and filters | [`Publish::tag`] stores bytes with an event, never sent; [`Subscribe::filter`] sends a subscription only the events whose tags it accepts, on replay and live; [`Subscribe::interest`] only those whose tags name one of its keys, and a publish wakes only the subscriptions it concerns |
//! | Shutdown | the layer's shutdown event ends hub streams; give it no `id`, or the client's hub id is replaced and its next subscribe starts with a gap |
//! | Encode once | an event is encoded once into shared bytes; each subscriber's stream hands them on (copied only when coalesced with others) |
//! | Bad input | a topic name is 1 to 256 bytes without control characters, else [`HubError::InvalidTopic`] (a `400`); an event without data, which no client would dispatch, is [`HubError::NoData`]; a `Last-Event-ID` of any content or length is read without a panic |
//! | Any `Accept` | behind [`SseLayer`](crate::SseLayer), a subscription is served with the layer's settings and limits whatever the request's `Accept` (curl, `fetch` and htmx do not ask for `text/event-stream`) |

mod id;
mod memory;
#[cfg(feature = "redis")]
mod redis;
mod subscriber;
mod subscription;
mod topic;

use std::sync::Arc;

use bytes::Bytes;

use crate::{Event, EventError, LastEventId};

#[cfg(feature = "redis")]
pub use self::redis::Redis;
pub use subscription::{Resume, Subscription};

use memory::Memory;

/// Why a subscription could not resume exactly where its client was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GapReason {
    /// The client's id is older than the history the hub still keeps.
    Trimmed,
    /// The id is of another epoch: an earlier process, or another hub.
    Unknown,
    /// The id is not one a hub makes.
    Malformed,
}

impl GapReason {
    /// A short name: `trimmed`, `unknown`, `malformed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Trimmed => "trimmed",
            Self::Unknown => "unknown",
            Self::Malformed => "malformed",
        }
    }
}

/// Why the hub refused a publish or a subscribe.
#[derive(Debug)]
#[non_exhaustive]
pub enum HubError {
    /// A topic name is empty, longer than the limit, or holds a control character.
    InvalidTopic(String),
    /// A subscription names no topic, or more than the limit.
    TopicCount {
        /// How many it named.
        given: usize,
        /// The most allowed.
        limit: usize,
    },
    /// The event could not be given its id.
    Event(EventError),
    /// The event has no data: a client dispatches no event without data, so a hub event
    /// always has some (empty data, `Event::data("")`, is still an event).
    NoData,
    /// The hub was closed.
    Closed,
    /// The hub's store cannot be reached now (Redis is down or unreachable, or did not answer
    /// in time): a subscription was not made. A publish that fails so was not published when
    /// the connection was refused, but one that timed out or lost its connection may have been
    /// (Redis applied it, its answer was lost): a retried publish may then appear twice.
    Unavailable(Box<dyn std::error::Error + Send + Sync>),
    /// The hub's engine was configured wrongly (a Redis URL or key prefix, or no Tokio runtime
    /// to run in).
    Config(String),
}

impl HubError {
    /// The HTTP status that answers it: `400` for the client's mistakes, `503` for a closed or
    /// unavailable hub, `500` otherwise.
    pub fn status(&self) -> http::StatusCode {
        match self {
            Self::InvalidTopic(_) | Self::TopicCount { .. } => http::StatusCode::BAD_REQUEST,
            Self::Closed | Self::Unavailable(_) => http::StatusCode::SERVICE_UNAVAILABLE,
            Self::Event(_) | Self::NoData | Self::Config(_) => {
                http::StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    /// The error as a plain-text response with its [status](Self::status); an unavailable
    /// hub's says `Retry-After: 5`.
    ///
    /// `EventSource` gives up for good on any status but `200`: a subscribe handler that wants
    /// browsers to come back after an outage answers [`HubError::Unavailable`] with an event
    /// stream holding only a `retry:` hint instead (as `examples/hub.rs` does).
    pub fn into_http(self) -> http::Response<String> {
        let mut response = http::Response::new(format!("{self}\n"));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if matches!(self, Self::Unavailable(_)) {
            headers.insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from_static("5"),
            );
        }
        response
    }
}

impl std::fmt::Display for HubError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::InvalidTopic(why) => write!(f, "invalid topic: {why}"),
            Self::TopicCount { given, limit } => {
                write!(f, "a subscription names 1 to {limit} topics, not {given}")
            }
            Self::Event(error) => write!(f, "the event could not be given its id: {error}"),
            Self::NoData => f.write_str("a hub event needs data: clients dispatch none without"),
            Self::Closed => f.write_str("the hub is closed"),
            Self::Unavailable(error) => write!(f, "the hub's store is unavailable: {error}"),
            Self::Config(why) => write!(f, "the hub is misconfigured: {why}"),
        }
    }
}

impl std::error::Error for HubError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Event(error) => Some(error),
            Self::Unavailable(error) => Some(&**error),
            _ => None,
        }
    }
}

impl From<HubError> for http::Response<String> {
    fn from(error: HubError) -> Self {
        error.into_http()
    }
}

/// The event that tells a client its history is gone.
type GapEvent = Arc<dyn Fn(GapReason) -> Option<Event> + Send + Sync>;

/// The hub's bounds and its gap event.
#[derive(Clone)]
pub(crate) struct HubConfig {
    history_events: usize,
    history_bytes: usize,
    max_topics: usize,
    max_history_bytes: usize,
    queue_events: usize,
    queue_bytes: usize,
    topics_per_subscription: usize,
    topic_len: usize,
    gap_event: GapEvent,
}

impl HubConfig {
    /// The bounds of each topic's ring: its history (at least the newest event is kept,
    /// whatever its size, so that every subscriber can read it).
    fn ring_bounds(&self) -> topic::RingBounds {
        topic::RingBounds {
            events: self.history_events.max(1),
            bytes: self.history_bytes,
        }
    }

    fn queue_bounds(&self) -> subscriber::Bounds {
        subscriber::Bounds {
            events: self.queue_events,
            bytes: self.queue_bytes,
        }
    }
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            history_events: 1000,
            history_bytes: 1024 * 1024,
            max_topics: 100_000,
            max_history_bytes: 256 * 1024 * 1024,
            queue_events: 1024,
            queue_bytes: 1024 * 1024,
            topics_per_subscription: 16,
            topic_len: 256,
            gap_event: Arc::new(|reason| {
                let data = format!("{{\"reason\":\"{}\"}}", reason.as_str());
                Some(Event::default().event("reset").ok()?.data(data))
            }),
        }
    }
}

/// Builds a [`Hub`] with bounds of its own ([`Hub::builder`]).
#[derive(Clone, Default)]
#[must_use = "a builder does nothing until built"]
pub struct HubBuilder {
    config: HubConfig,
}

impl HubBuilder {
    /// The events each topic keeps for clients that reconnect: at most `events`, and at most
    /// `bytes` of them encoded (default 1 000 and 1 MiB; the newest event is always kept,
    /// whatever its size). In memory this is also how far a subscriber may fall behind on a
    /// topic: the history is the ring every subscriber reads from, and one whose next event was
    /// trimmed from it is ended ([`CloseReason::Lagged`](crate::CloseReason::Lagged)). On
    /// Redis, each stream is trimmed to about `events`, `bytes` bounds what one replay holds per
    /// topic, and both bound the ring each node keeps of a topic live on it (what its
    /// subscribers there read, so also how far one may fall behind; memory per live topic).
    pub fn history(mut self, events: usize, bytes: usize) -> Self {
        self.config.history_events = events;
        self.config.history_bytes = bytes;
        self
    }

    /// How many topics the hub keeps, and how many bytes of history all of them together
    /// (default 100 000 and 256 MiB): past either, the topics without subscribers published to
    /// longest ago are dropped with their history (a client resuming on one is told of a gap).
    /// Topics with subscribers are kept, each within its own [`history`](Self::history).
    pub fn max_topics(mut self, topics: usize, history_bytes: usize) -> Self {
        self.config.max_topics = topics.max(1);
        self.config.max_history_bytes = history_bytes;
        self
    }

    /// How far each subscriber may fall behind: at most `events` not yet taken by its
    /// connection, and `bytes` of them encoded (default 1 024 and 1 MiB). One further behind
    /// is sent that many, then ended ([`CloseReason::Lagged`](crate::CloseReason::Lagged)); so
    /// is one whose next event left the topic's [`history`](Self::history).
    pub fn queue(mut self, events: usize, bytes: usize) -> Self {
        self.config.queue_events = events.max(1);
        self.config.queue_bytes = bytes;
        self
    }

    /// The most topics one subscription may name (default 16).
    pub fn topics_per_subscription(mut self, topics: usize) -> Self {
        self.config.topics_per_subscription = topics.max(1);
        self
    }

    /// The longest topic name, in bytes (default 256).
    pub fn topic_len(mut self, bytes: usize) -> Self {
        self.config.topic_len = bytes.max(1);
        self
    }

    /// The event sent first to a client whose position cannot be resumed (default
    /// `event: reset` with `data: {"reason":"trimmed"}`, `"unknown"` or `"malformed"`); `None`
    /// sends none. Give it no id: the client keeps its last one until the events that follow.
    pub fn gap_event<F>(mut self, gap: F) -> Self
    where
        F: Fn(GapReason) -> Option<Event> + Send + Sync + 'static,
    {
        self.config.gap_event = Arc::new(gap);
        self
    }

    /// The hub, with its engine in this process's memory.
    pub fn build(self) -> Hub {
        Hub {
            engine: Backend::Memory(Arc::new(Memory::new(self.config))),
        }
    }

    /// The hub, with its engine on Redis Streams (feature `redis`): every hub on the same
    /// Redis and key prefix shares topics, ids and history, so a client resumes on any node.
    /// See [`Redis`] for the keys and the connections.
    ///
    /// It connects in the background, and again after a failure, with backoff: building never
    /// waits for Redis (see [`Hub::ready`]). It must be called within a Tokio runtime (its
    /// readers are tasks), else [`HubError::Config`].
    #[cfg(feature = "redis")]
    pub fn redis(self, redis: Redis) -> Result<Hub, HubError> {
        Ok(Hub {
            engine: Backend::Redis(redis.start(self.config)?),
        })
    }
}

/// How an event is published ([`Hub::publish_with`]).
#[derive(Debug, Clone, Default)]
#[must_use = "options do nothing until given to `Hub::publish_with`"]
pub struct Publish {
    keep_id: bool,
    tag: Bytes,
}

impl Publish {
    /// The defaults of [`Hub::publish`]: the hub gives the event its id, no tag.
    pub fn new() -> Self {
        Self::default()
    }

    /// The event keeps the id it has (an event without one, or with an empty one, gets the
    /// hub's, as by default):
    /// for a protocol whose publishers choose their ids (Mercure). A client resumes after such
    /// an id as after the hub's: from the oldest retained event that has it (ids should be
    /// unique; what came after its first use is sent), or with [`Subscribe::after_kept`],
    /// which never takes it for the hub's own position. An id that no retained event has is
    /// a gap. In a subscription of several topics on Redis, events carry the subscription's
    /// own positions instead.
    pub fn keep_id(mut self) -> Self {
        self.keep_id = true;
        self
    }

    /// Bytes stored with the event, never sent: what the filters of subscriptions
    /// ([`Subscribe::filter`]) decide by (say, who may read it). Empty by default.
    pub fn tag(mut self, tag: impl Into<Bytes>) -> Self {
        self.tag = tag.into();
        self
    }
}

/// Where a subscription starts.
#[derive(Debug, Clone, Default)]
enum Start {
    /// Live events from now on.
    #[default]
    Live,
    /// After the client's `Last-Event-ID`.
    After(LastEventId),
    /// After the event a publisher kept the client's `Last-Event-ID` for.
    AfterKept(LastEventId),
    /// Every retained event, without a gap event.
    Earliest,
}

/// How a subscription is made ([`Hub::subscribe_with`]).
#[derive(Clone, Default)]
#[must_use = "options do nothing until given to `Hub::subscribe_with`"]
pub struct Subscribe {
    start: Start,
    filter: Option<subscriber::Filter>,
    interest: Option<Arc<[Bytes]>>,
    no_gap_event: bool,
}

impl Subscribe {
    /// Live events from now on, every event sent, the hub's gap event when one is due.
    pub fn new() -> Self {
        Self::default()
    }

    /// Resumes after the client's `Last-Event-ID` (as [`Hub::subscribe`]); `None` is live.
    pub fn after(mut self, last_event_id: Option<LastEventId>) -> Self {
        self.start = last_event_id.map_or(Start::Live, Start::After);
        self
    }

    /// Resumes after the event whose publisher kept the client's `Last-Event-ID` as its id
    /// ([`Publish::keep_id`]): from the oldest retained event with it, and only if the
    /// [filter](Self::filter) lets that event through; else, as for an id the hub cannot
    /// resume, a gap ([`GapReason::Unknown`]) and what is retained. The id is never read as
    /// the hub's own position (a kept id may look like one). For one topic: in a subscription
    /// of several topics on Redis, events carry the subscription's own positions instead.
    /// `None` is live.
    pub fn after_kept(mut self, last_event_id: Option<LastEventId>) -> Self {
        self.start = last_event_id.map_or(Start::Live, Start::AfterKept);
        self
    }

    /// Starts with every event the topics retain, then live ones; no gap event, since
    /// nothing more was asked for.
    pub fn earliest(mut self) -> Self {
        self.start = Start::Earliest;
        self
    }

    /// Sends only the events whose [tags](Publish::tag) `filter` accepts (an untagged event's
    /// tag is empty), on replay and live. The others are passed over as if sent: the
    /// subscriber's position moves past them. A filtered subscription is bounded by the
    /// history alone (it ends as lagged once its next event left it), not by the
    /// [queue](HubBuilder::queue): how many of the events behind it are its own is not known
    /// until it reads them. The filter runs under the topic's lock, once or more per event
    /// and subscriber: keep it quick, and never call the hub from it.
    pub fn filter<F>(mut self, filter: F) -> Self
    where
        F: Fn(&[u8]) -> bool + Send + Sync + 'static,
    {
        self.filter = Some(Arc::new(filter));
        self
    }

    /// Sends only the events whose [tag](Publish::tag) names one of `keys` (one of the tag's
    /// lines, split at line feeds, is a key), on replay and live, and with the
    /// [filter](Self::filter)'s consent if there is one; a publish wakes the subscription only
    /// for those. Where many subscribers of one topic each want a few of its events (a
    /// resource each), a publish then costs only the subscribers it concerns, not all of them:
    /// each ring indexes the events that name a key someone is interested in, and a
    /// subscription of one topic reads its own from there (events retained from before anyone
    /// was interested in its keys, on a resume, and subscriptions of several topics are read
    /// one by one). The other events are passed over: the subscription ends as lagged when an
    /// event naming one of its keys left the history before it was sent (whether or not its
    /// filter would have taken it), or when the engine lost its events at the source (a Redis
    /// trim while its reader was away), never because of anyone else's. A key that is empty or
    /// holds a line feed names nothing.
    ///
    /// ```
    /// # async fn run() -> Result<(), tower_sse::hub::HubError> {
    /// use tower_sse::hub::{Hub, Publish, Subscribe};
    /// use tower_sse::Event;
    ///
    /// let hub = Hub::memory();
    /// let books = hub
    ///     .subscribe_with(["changes"], Subscribe::new().interest(["book/1", "book/2"]))
    ///     .await?;
    /// let tagged = |key: &'static str| Publish::new().tag(key);
    /// hub.publish_with("changes", Event::default().data("b1"), tagged("book/1")).await?;
    /// hub.publish_with("changes", Event::default().data("a9"), tagged("author/9")).await?;
    /// // `books` receives the first event only, and is not woken by the second.
    /// # drop(books);
    /// # Ok(())
    /// # }
    /// ```
    pub fn interest<I, K>(mut self, keys: I) -> Self
    where
        I: IntoIterator<Item = K>,
        K: Into<Bytes>,
    {
        // A key that is empty or holds a line feed is never a line of a tag.
        let keys = keys
            .into_iter()
            .map(Into::into)
            .filter(|key: &Bytes| !key.is_empty() && !key.contains(&b'\n'));
        self.interest = Some(keys.collect());
        self
    }

    /// Which events the subscription sends: its filter, narrowed to its interest.
    fn selection(&self) -> subscriber::Selection {
        let filter = match (&self.interest, &self.filter) {
            (None, filter) => filter.clone(),
            (Some(keys), filter) => {
                let (keys, filter) = (keys.clone(), filter.clone());
                let narrowed: subscriber::Filter = Arc::new(move |tag: &[u8]| {
                    topic::names_any(tag, &keys)
                        && filter.as_ref().map_or(true, |filter| filter(tag))
                });
                Some(narrowed)
            }
        };
        subscriber::Selection {
            filter,
            interest: self.interest.clone(),
        }
    }

    /// Sends no gap event when the position cannot be resumed (the [`Resume`] still says so):
    /// for a protocol that tells its clients otherwise (Mercure's `Last-Event-ID` response
    /// header).
    pub fn without_gap_event(mut self) -> Self {
        self.no_gap_event = true;
        self
    }

    /// The event that tells of `gap`, if any is to be sent (without an id: the client keeps
    /// its last one until the events that follow).
    fn gap_event(&self, config: &HubConfig, gap: Option<GapReason>) -> Option<Event> {
        if self.no_gap_event {
            return None;
        }
        let mut event = gap.and_then(|reason| (config.gap_event)(reason))?;
        let _replaced = event.take_id();
        Some(event)
    }
}

impl std::fmt::Debug for Subscribe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscribe")
            .field("start", &self.start)
            .field("filter", &self.filter.is_some())
            .field("interest", &self.interest)
            .field("no_gap_event", &self.no_gap_event)
            .finish()
    }
}

/// Topics, their history, and their subscribers. Cloning is cheap: clones share one hub.
///
/// See the [module documentation](self) for the rules it keeps.
#[derive(Clone)]
pub struct Hub {
    engine: Backend,
}

/// Where the hub keeps its topics.
#[derive(Clone)]
enum Backend {
    Memory(Arc<Memory>),
    #[cfg(feature = "redis")]
    Redis(Arc<redis::RedisBackend>),
}

impl Backend {
    fn config(&self) -> &HubConfig {
        match self {
            Self::Memory(memory) => &memory.config,
            #[cfg(feature = "redis")]
            Self::Redis(redis) => redis.config(),
        }
    }
}

impl Hub {
    /// A hub in this process's memory, with the default bounds.
    #[must_use]
    pub fn memory() -> Self {
        HubBuilder::default().build()
    }

    /// A builder for a hub with bounds of its own.
    pub fn builder() -> HubBuilder {
        HubBuilder::default()
    }

    /// Publishes `event` on `topic`, and returns the id it was given (an id the event had is
    /// replaced). Every subscriber of the topic receives it; none can make this wait or fail.
    /// An event without data is refused ([`HubError::NoData`]): no client would dispatch it.
    /// On Redis it fails with [`HubError::Unavailable`] while Redis cannot be reached: an
    /// event is never dropped silently.
    pub async fn publish(&self, topic: &str, event: Event) -> Result<String, HubError> {
        self.publish_with(topic, event, Publish::new()).await
    }

    /// [`publish`](Self::publish) with options: the event's own id kept, a tag for
    /// subscribers' filters.
    ///
    /// ```
    /// use tower_sse::hub::{Hub, Publish};
    /// use tower_sse::Event;
    ///
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let hub = Hub::memory();
    /// let event = Event::default().id("urn:uuid:1")?.data("shipped");
    /// let id = hub
    ///     .publish_with("orders", event, Publish::new().keep_id().tag("private"))
    ///     .await?;
    /// assert_eq!(id, "urn:uuid:1");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn publish_with(
        &self,
        topic: &str,
        event: Event,
        options: Publish,
    ) -> Result<String, HubError> {
        self.validate(topic)?;
        if event.get_data().is_none() {
            return Err(HubError::NoData);
        }
        let id = match &self.engine {
            Backend::Memory(memory) => memory.publish(topic, event, options)?,
            #[cfg(feature = "redis")]
            Backend::Redis(redis) => redis.publish(topic, event, options).await?,
        };
        crate::metrics::hub_published();
        Ok(id)
    }

    /// The id of the newest event `topic` retains, if any: where a client that subscribes
    /// now with it as its `Last-Event-ID` starts (an application hands it to its pages, so
    /// that what is published between the page and its subscription is not missed). On Redis,
    /// a round trip.
    pub async fn last_id(&self, topic: &str) -> Result<Option<String>, HubError> {
        self.validate(topic)?;
        match &self.engine {
            Backend::Memory(memory) => memory.last_id(topic),
            #[cfg(feature = "redis")]
            Backend::Redis(redis) => redis.last_id(topic).await,
        }
    }

    /// Whether the hub can publish and subscribe now (a readiness check): for the embedded
    /// engine, unless it was closed; on Redis, whether Redis answers and the node's readers are
    /// connected, else [`HubError::Unavailable`].
    pub async fn ready(&self) -> Result<(), HubError> {
        match &self.engine {
            Backend::Memory(memory) => memory.ready(),
            #[cfg(feature = "redis")]
            Backend::Redis(redis) => redis.ready().await,
        }
    }

    /// Subscribes to `topics` (duplicates count once), resuming after `last_event_id`: the
    /// retained events after it, then live ones; or, when the id cannot be resumed, a gap event
    /// first. Without an id, live events only. Which topics a client may subscribe to is the
    /// application's decision: check it before calling this.
    ///
    /// On Redis this reads the history to replay (a round trip per topic and page of 1 000),
    /// and fails with [`HubError::Unavailable`] while Redis cannot be reached (unless every
    /// topic is already read on this node and no `Last-Event-ID` asks for history).
    pub async fn subscribe<I, T>(
        &self,
        topics: I,
        last_event_id: Option<LastEventId>,
    ) -> Result<Subscription, HubError>
    where
        I: IntoIterator<Item = T>,
        T: AsRef<str>,
    {
        self.subscribe_with(topics, Subscribe::new().after(last_event_id))
            .await
    }

    /// [`subscribe`](Self::subscribe) with options: where to start (live, after an id, or the
    /// earliest event retained), a filter over the events' tags, whether to send the gap
    /// event.
    ///
    /// ```
    /// use tower_sse::hub::{Hub, Publish, Subscribe};
    /// use tower_sse::Event;
    ///
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let hub = Hub::memory();
    /// hub.publish_with("news", Event::default().data("for all"), Publish::new()).await?;
    /// hub.publish_with("news", Event::default().data("staff"), Publish::new().tag("staff"))
    ///     .await?;
    /// // Everything retained, without the events tagged `staff`.
    /// let subscription = hub
    ///     .subscribe_with(["news"], Subscribe::new().earliest().filter(|tag| tag != b"staff"))
    ///     .await?;
    /// # let _ = subscription;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn subscribe_with<I, T>(
        &self,
        topics: I,
        options: Subscribe,
    ) -> Result<Subscription, HubError>
    where
        I: IntoIterator<Item = T>,
        T: AsRef<str>,
    {
        let config = self.engine.config();
        let mut names: Vec<Arc<str>> = Vec::new();
        for topic in topics {
            let topic = topic.as_ref();
            self.validate(topic)?;
            names.push(Arc::from(topic));
        }
        names.sort_unstable();
        names.dedup();
        if names.is_empty() || names.len() > config.topics_per_subscription {
            return Err(HubError::TopicCount {
                given: names.len(),
                limit: config.topics_per_subscription,
            });
        }
        let (source, resume) = match &self.engine {
            Backend::Memory(memory) => memory.subscribe(names.clone(), &options)?,
            #[cfg(feature = "redis")]
            Backend::Redis(redis) => redis.subscribe(names.clone(), &options).await?,
        };
        tracing::debug!(topics = names.len(), ?resume, "hub subscription");
        Ok(Subscription::new(source, names, resume))
    }

    /// Closes the hub: publishes and subscribes fail with [`HubError::Closed`], and open
    /// subscriptions end after what is queued for them. This is for the end of the process:
    /// a client that reconnects then gets a `503` and gives up. For a restart, let the layer's
    /// [shutdown](crate::SseLayer::graceful_shutdown) end the streams instead (clients come back
    /// to the new process, and are told of the gap).
    pub fn close(&self) {
        match &self.engine {
            Backend::Memory(memory) => memory.close(),
            #[cfg(feature = "redis")]
            Backend::Redis(redis) => redis.close(),
        }
    }

    /// The embedded engine, for tests that look inside it.
    #[cfg(test)]
    fn engine(&self) -> &Memory {
        match &self.engine {
            Backend::Memory(memory) => memory,
            #[cfg(feature = "redis")]
            Backend::Redis(_) => panic!("the embedded engine's tests use an embedded hub"), // ok: test
        }
    }

    fn validate(&self, topic: &str) -> Result<(), HubError> {
        let limit = self.engine.config().topic_len;
        if topic.is_empty() || topic.len() > limit {
            return Err(HubError::InvalidTopic(format!(
                "a topic name is 1 to {limit} bytes, not {}",
                topic.len()
            )));
        }
        if topic.chars().any(char::is_control) {
            return Err(HubError::InvalidTopic(
                "a topic name holds no control character".into(),
            ));
        }
        Ok(())
    }
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").finish_non_exhaustive()
    }
}

#[cfg(feature = "axum")]
mod axum_impls {
    use axum_core::response::{IntoResponse, Response};

    use super::{HubError, Subscription};

    impl IntoResponse for Subscription {
        fn into_response(self) -> Response {
            self.into_http().map(axum_core::body::Body::new)
        }
    }

    impl IntoResponse for HubError {
        fn into_response(self) -> Response {
            self.into_http().map(axum_core::body::Body::from)
        }
    }
}

#[cfg(test)]
mod tests;
