//! The configuration [`SseLayer`](crate::SseLayer) and [`SseService`](crate::SseService)
//! share, and the builder methods that set it on both.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio_util::sync::CancellationToken;

use crate::close::OnClose;
use crate::jitter::spread;
use crate::limit::Limits;
use crate::{Event, EventError, Framing, Message, StreamError};

/// The default interval between heartbeat comments on an idle stream.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(15);
/// The default reconnection delay sent to clients in the stream's first bytes.
pub const DEFAULT_RETRY: Duration = Duration::from_secs(3);
/// The default limit on one message; past it the stream ends with an `error` event.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 1024 * 1024;
/// The default time a connection may leave a written frame untaken before its client counts as
/// stalled.
pub const DEFAULT_WRITE_DEADLINE: Duration = Duration::from_secs(30);

pub(crate) type MapMessage = Arc<dyn Fn(Message) -> Result<Event, EventError> + Send + Sync>;
pub(crate) type MapError = Arc<dyn Fn(&StreamError) -> Option<Event> + Send + Sync>;

/// Everything the layer, the service and each stream's body read; shared behind an `Arc`.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) heartbeat: Option<Duration>,
    pub(crate) heartbeat_comment: String,
    pub(crate) retry: Option<Duration>,
    pub(crate) always: bool,
    pub(crate) max_message_size: usize,
    pub(crate) framing: Option<Framing>,
    pub(crate) map_message: Option<MapMessage>,
    pub(crate) map_error: Option<MapError>,
    pub(crate) on_disconnect: Option<OnClose>,
    pub(crate) on_close: Option<OnClose>,
    pub(crate) shutdown: Option<CancellationToken>,
    /// The encoded event sent last when the shutdown signal ends a stream (may be empty).
    pub(crate) shutdown_event: Bytes,
    /// Its id, if it has one.
    pub(crate) shutdown_event_id: Option<Bytes>,
    /// The shutdown event when it carries a `retry` (with its id), re-encoded per stream with
    /// the retry jitter.
    pub(crate) shutdown_template: Option<Event>,
    /// The most a stream's retry hints add to the configured delay, drawn per stream.
    pub(crate) retry_jitter: Option<Duration>,
    pub(crate) limits: Limits,
    /// The label key of the streams' metrics, and how to take its value from a request.
    #[cfg(feature = "metrics")]
    pub(crate) metrics_label: Option<(&'static str, crate::metrics::LabelFn)>,
    pub(crate) max_age: Option<Duration>,
    pub(crate) write_deadline: Option<Duration>,
    /// How streams are compressed for clients that ask.
    #[cfg(feature = "compression")]
    pub(crate) compression: Option<crate::compression::Compression>,
    /// The heartbeat comment, encoded once.
    pub(crate) heartbeat_bytes: Bytes,
    /// The first bytes of every stream: the retry hint, or the heartbeat comment.
    pub(crate) preamble: Bytes,
}

impl Default for Config {
    fn default() -> Self {
        let mut config = Self {
            heartbeat: Some(DEFAULT_HEARTBEAT),
            heartbeat_comment: String::new(),
            retry: Some(DEFAULT_RETRY),
            always: false,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            framing: None,
            map_message: None,
            map_error: None,
            on_disconnect: None,
            on_close: None,
            shutdown: None,
            shutdown_event: Bytes::new(),
            shutdown_event_id: None,
            shutdown_template: None,
            retry_jitter: None,
            limits: Limits::default(),
            #[cfg(feature = "metrics")]
            metrics_label: None,
            max_age: None,
            write_deadline: Some(DEFAULT_WRITE_DEADLINE),
            #[cfg(feature = "compression")]
            compression: None,
            heartbeat_bytes: Bytes::new(),
            preamble: Bytes::new(),
        };
        config.encode_fixed_events();
        config
    }
}

impl Config {
    /// The default settings, shared: what a handed-over stream served without a layer uses.
    pub(crate) fn shared_default() -> Arc<Self> {
        static DEFAULT: std::sync::OnceLock<Arc<Config>> = std::sync::OnceLock::new();
        DEFAULT.get_or_init(Arc::default).clone()
    }

    /// Encodes the events every stream sends the same, through the one encoder.
    pub(crate) fn encode_fixed_events(&mut self) {
        self.heartbeat_bytes = encode(&Event::default().comment(self.heartbeat_comment.clone()));
        self.preamble = match self.retry {
            Some(retry) => encode(&Event::default().retry(retry)),
            None => self.heartbeat_bytes.clone(),
        };
    }

    /// The first bytes of one stream: the shared preamble, or with retry jitter a retry hint of
    /// its own.
    pub(crate) fn stream_preamble(&self) -> Bytes {
        match (self.retry, self.retry_jitter) {
            (Some(retry), Some(extra)) => encode(&Event::default().retry(spread(retry, extra))),
            _ => self.preamble.clone(),
        }
    }

    /// The shutdown event of one stream: the shared one, or with retry jitter one whose `retry`
    /// is spread per stream.
    pub(crate) fn stream_shutdown_event(&self) -> Bytes {
        let template = self.shutdown_template.as_ref().zip(self.retry_jitter);
        match template.and_then(|(event, extra)| Some((event, event.get_retry()?, extra))) {
            Some((event, retry, extra)) => encode(&event.clone().retry(spread(retry, extra))),
            None => self.shutdown_event.clone(),
        }
    }

    pub(crate) fn map(&self, message: Message) -> Result<Event, EventError> {
        match &self.map_message {
            Some(map) => map(message),
            None => Ok(message.into_event()),
        }
    }

    pub(crate) fn error_event(&self, error: &StreamError) -> Option<Event> {
        match &self.map_error {
            Some(map) => map(error),
            None => Some(error.to_event()),
        }
    }
}

fn encode(event: &Event) -> Bytes {
    let mut buf = BytesMut::new();
    event.encode_into(&mut buf);
    buf.freeze()
}

/// The builder methods, the same on [`SseLayer`] and [`SseService`].
macro_rules! builder_methods {
    () => {
        /// Sends a heartbeat comment after each `interval` without output (default 15 s), so
        /// proxies and clients keep an idle stream open. Every write resets the interval.
        /// `Duration::ZERO` turns heartbeats off.
        #[must_use = "a builder method returns the configured value"]
        pub fn heartbeat(mut self, interval: ::std::time::Duration) -> Self {
            self.config_mut().heartbeat = (!interval.is_zero()).then_some(interval);
            self
        }

        /// The event streams open now under this layer's stream limits (every service made from
        /// it counts; `0` when neither [`max_streams`](Self::max_streams) nor
        /// [`max_streams_per_key`](Self::max_streams_per_key) is set: streams are only counted
        /// for a limit). For a readiness check, or to shed load before the limit.
        pub fn open_streams(&self) -> usize {
            self.config.limits.open()
        }

        /// Sends no heartbeats.
        #[must_use = "a builder method returns the configured value"]
        pub fn no_heartbeat(mut self) -> Self {
            self.config_mut().heartbeat = None;
            self
        }

        /// The text of the heartbeat comment (default empty: a `:` line). It is written as a
        /// line of its own, with no blank line after it, so it joins the next event's block.
        #[must_use = "a builder method returns the configured value"]
        pub fn heartbeat_comment(mut self, text: impl Into<String>) -> Self {
            let config = self.config_mut();
            config.heartbeat_comment = text.into();
            config.encode_fixed_events();
            self
        }

        /// The reconnection delay sent as `retry:` in the stream's first bytes (default 3 s).
        #[must_use = "a builder method returns the configured value"]
        pub fn retry(mut self, delay: ::std::time::Duration) -> Self {
            let config = self.config_mut();
            config.retry = Some(delay);
            config.encode_fixed_events();
            self
        }

        /// Sends no retry hint; the stream then opens with a comment.
        #[must_use = "a builder method returns the configured value"]
        pub fn no_retry(mut self) -> Self {
            let config = self.config_mut();
            config.retry = None;
            config.encode_fixed_events();
            self
        }

        /// Converts every 2xx response, not only those to requests whose `Accept` names
        /// `text/event-stream`.
        #[must_use = "a builder method returns the configured value"]
        pub fn always(mut self) -> Self {
            self.config_mut().always = true;
            self
        }

        /// The largest message, in bytes, a decoder accepts (default 1 MiB). A longer one ends
        /// the stream with an `error` event. No decoder holds more than this of an unfinished
        /// message (plus a few bytes of field name); comment lines are dropped as they come.
        #[must_use = "a builder method returns the configured value"]
        pub fn max_message_size(mut self, limit: usize) -> Self {
            self.config_mut().max_message_size = limit;
            self
        }

        /// Cuts the inner body with `framing` whatever its `Content-Type` says.
        #[must_use = "a builder method returns the configured value"]
        pub fn framing(mut self, framing: $crate::Framing) -> Self {
            self.config_mut().framing = Some(framing);
            self
        }

        /// Maps each message to its event (default: [`Message::into_event`]). An error ends the
        /// stream with an `error` event, as [`map_error`](Self::map_error) decides.
        ///
        /// For an inner event stream, a mapper should keep the message's `id` and `retry`
        /// (start from `message.clone().into_event()`): what it leaves out, clients never see.
        ///
        /// [`Message::into_event`]: crate::Message::into_event
        #[must_use = "a builder method returns the configured value"]
        pub fn map_message<F>(mut self, map: F) -> Self
        where
            F: Fn($crate::Message) -> Result<$crate::Event, $crate::EventError>
                + Send
                + Sync
                + 'static,
        {
            self.config_mut().map_message = Some(::std::sync::Arc::new(map));
            self
        }

        /// Chooses the final event sent when the stream fails (default:
        /// [`StreamError::to_event`]); `None` ends the stream without one.
        ///
        /// [`StreamError::to_event`]: crate::StreamError::to_event
        #[must_use = "a builder method returns the configured value"]
        pub fn map_error<F>(mut self, map: F) -> Self
        where
            F: Fn(&$crate::StreamError) -> Option<$crate::Event> + Send + Sync + 'static,
        {
            self.config_mut().map_error = Some(::std::sync::Arc::new(map));
            self
        }

        /// Called once for every stream the client ended: it went away
        /// ([`ClientGone`](crate::CloseReason::ClientGone)) or stopped reading
        /// ([`Stalled`](crate::CloseReason::Stalled)).
        #[must_use = "a builder method returns the configured value"]
        pub fn on_disconnect<F>(mut self, callback: F) -> Self
        where
            F: Fn(&$crate::CloseInfo) + Send + Sync + 'static,
        {
            self.config_mut().on_disconnect = Some(::std::sync::Arc::new(callback));
            self
        }

        /// Called once for every event stream that closes, whatever the
        /// [reason](crate::CloseReason) (a stream whose body the connection never read, as for
        /// `HEAD`, is not reported). Runs before [`on_disconnect`](Self::on_disconnect).
        ///
        /// Both callbacks run where the close is found (the connection's task, or a task on the
        /// runtime for a stall): keep them quick, and do not panic in them.
        #[must_use = "a builder method returns the configured value"]
        pub fn on_close<F>(mut self, callback: F) -> Self
        where
            F: Fn(&$crate::CloseInfo) + Send + Sync + 'static,
        {
            self.config_mut().on_close = Some(::std::sync::Arc::new(callback));
            self
        }

        /// Ends every open stream when `signal` is cancelled: what is already encoded is sent,
        /// then the [`shutdown_event`](Self::shutdown_event) if any, then the end. Requests
        /// whose `Accept` names `text/event-stream` that arrive after it get that answer at once
        /// (a `200` with the retry hint, the shutdown event, and the end), without reaching the
        /// inner service, so clients retry later rather than give up (`EventSource` gives up
        /// for good on any other status). Other requests are served as usual; a stream their
        /// response offers (`text/event-stream`, a hub subscription) ends at once with the
        /// shutdown event. Cancel it when the server's own graceful shutdown starts (or
        /// before, to drain): open streams no longer hold the server up.
        ///
        /// ```
        /// use std::time::Duration;
        /// use tokio_util::sync::CancellationToken;
        /// use tower_sse::{Event, SseLayer};
        ///
        /// let shutdown = CancellationToken::new();
        /// let bye = Event::default().event("shutdown")?.data("restarting");
        /// let layer = SseLayer::new()
        ///     .graceful_shutdown(shutdown.clone())
        ///     .shutdown_event(bye.retry(Duration::from_secs(5)));
        /// // axum::serve(listener, app.layer(layer))
        /// //     .with_graceful_shutdown(shutdown.cancelled_owned())
        /// # let _ = layer;
        /// # Ok::<(), tower_sse::EventError>(())
        /// ```
        #[must_use = "a builder method returns the configured value"]
        pub fn graceful_shutdown(mut self, signal: ::tokio_util::sync::CancellationToken) -> Self {
            self.config_mut().shutdown = Some(signal);
            self
        }

        /// The event sent last on every stream the shutdown signal ends (default: none). Give
        /// it a `retry` to spread reconnections out, or to point them past a restart.
        #[must_use = "a builder method returns the configured value"]
        pub fn shutdown_event(mut self, mut event: $crate::Event) -> Self {
            let mut buf = ::bytes::BytesMut::new();
            event.encode_into(&mut buf);
            let config = self.config_mut();
            config.shutdown_event = buf.freeze();
            config.shutdown_template = event.get_retry().is_some().then(|| event.clone());
            config.shutdown_event_id = event.take_id();
            self
        }

        /// Spreads reconnections out: each stream's retry hint (and the `retry` of the
        /// [`shutdown_event`](Self::shutdown_event), if it has one) adds its own delay drawn
        /// uniformly from zero to `extra` to the configured one (default: none). With
        /// `.retry(Duration::from_secs(1)).retry_jitter(Duration::from_secs(4))`, the clients
        /// of a node that shuts down come back over 1–5 s instead of all after 1 s.
        /// `Duration::ZERO` turns it off.
        #[must_use = "a builder method returns the configured value"]
        pub fn retry_jitter(mut self, extra: ::std::time::Duration) -> Self {
            self.config_mut().retry_jitter = (!extra.is_zero()).then_some(extra);
            self
        }

        /// Allows at most `max` event streams open at once through this layer (every service
        /// it makes, and their clones, share the count). A request over it that asked for an
        /// event stream never reaches the inner service: it gets the
        /// [`over_limit`](Self::over_limit) answer (a stream a response offers to a request
        /// that did not ask is counted, and refused, when that response comes). A stream's place
        /// is given back when it closes, whatever the reason (its client left or stalled, the
        /// shutdown signal, a panic in the inner service).
        ///
        /// ```
        /// use tower_sse::SseLayer;
        ///
        /// let layer = SseLayer::new()
        ///     .max_streams(10_000)
        ///     // Per client address, with axum's `ConnectInfo`:
        ///     .max_streams_per_key(8, |request| {
        ///         let info = request.extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()?;
        ///         Some(info.0.ip().to_string())
        ///     });
        /// # let _ = layer;
        /// ```
        #[must_use = "a builder method returns the configured value"]
        pub fn max_streams(mut self, max: usize) -> Self {
            let limits = &mut self.config_mut().limits;
            limits.max_streams = Some(max);
            limits.reset_counts();
            self
        }

        /// Allows at most `max` event streams open at once per key, the key taken from each
        /// request by `key` (a user id, a client address; `None`: the request has no per-key
        /// limit). Keys are held only while they have open streams. `key` runs for every
        /// request: any response may turn out to be an event stream, and the request is gone
        /// by then.
        #[must_use = "a builder method returns the configured value"]
        pub fn max_streams_per_key<F>(mut self, max: usize, key: F) -> Self
        where
            F: Fn(&::http::request::Parts) -> Option<String> + Send + Sync + 'static,
        {
            let limits = &mut self.config_mut().limits;
            limits.per_key = Some((max, ::std::sync::Arc::new(key)));
            limits.reset_counts();
            self
        }

        /// What a request over a stream limit gets (default
        /// [`Refusal::RetryLater`](crate::Refusal::RetryLater) with
        /// [`DEFAULT_REFUSAL_RETRY`](crate::DEFAULT_REFUSAL_RETRY)).
        #[must_use = "a builder method returns the configured value"]
        pub fn over_limit(mut self, refusal: $crate::Refusal) -> Self {
            self.config_mut().limits.refusal = refusal;
            self
        }

        /// Labels every stream's metrics (feature `metrics`) with `key` and the value `value`
        /// takes from its request (`None`: the stream has no such label), so an operator can
        /// tell streams apart. The number of distinct values is the number of time series:
        /// take a route, never a user id. With axum, the matched route:
        ///
        /// ```
        /// use axum::extract::MatchedPath;
        /// use tower_sse::SseLayer;
        ///
        /// let layer = SseLayer::new().metrics_label("route", |request| {
        ///     Some(request.extensions.get::<MatchedPath>()?.as_str().to_owned())
        /// });
        /// # let _ = layer;
        /// ```
        ///
        /// (`MatchedPath` is set when the layer is added with `Router::layer`, inside the
        /// routing.) `value` runs for every request, as a per-key limit's `key` does.
        #[cfg(feature = "metrics")]
        #[must_use = "a builder method returns the configured value"]
        pub fn metrics_label<F>(mut self, key: &'static str, value: F) -> Self
        where
            F: Fn(&::http::request::Parts) -> Option<String> + Send + Sync + 'static,
        {
            self.config_mut().metrics_label = Some((key, ::std::sync::Arc::new(value)));
            self
        }

        /// Called for every request refused for a stream limit, before its answer is sent.
        #[must_use = "a builder method returns the configured value"]
        pub fn on_limit_exceeded<F>(mut self, callback: F) -> Self
        where
            F: Fn(&$crate::LimitExceeded) + Send + Sync + 'static,
        {
            self.config_mut().limits.on_exceeded = Some(::std::sync::Arc::new(callback));
            self
        }

        /// Ends each stream after a random 80–100 % of `age` (default: never), always after a
        /// complete event. Clients reconnect with `Last-Event-ID`, to whichever node the load
        /// balancer picks: long-lived streams no longer pin load to old nodes. The jitter keeps
        /// streams opened together from reconnecting together. `Duration::ZERO` turns it off.
        #[must_use = "a builder method returns the configured value"]
        pub fn max_age(mut self, age: ::std::time::Duration) -> Self {
            self.config_mut().max_age = (!age.is_zero()).then_some(age);
            self
        }

        /// How long a frame handed to the connection may wait before the connection asks for
        /// the next one (it does not while its write queue is full: the client stopped reading,
        /// reads too slowly to drain the queue in time, or its packets are lost) before the
        /// client counts as stalled (default 30 s): the [`Disconnect`](crate::Disconnect) handle resolves, so
        /// the producer stops, and the close is reported as
        /// [`Stalled`](crate::CloseReason::Stalled). The body ends if the connection asks for
        /// more again. `Duration::ZERO` turns the watch off. It needs a tokio runtime where the
        /// response is made; see the README's "Lifecycle" section for what completes it at the
        /// TCP level.
        #[must_use = "a builder method returns the configured value"]
        pub fn write_deadline(mut self, deadline: ::std::time::Duration) -> Self {
            // A timer cannot be set closer than a millisecond.
            let deadline =
                (!deadline.is_zero()).then(|| deadline.max(::std::time::Duration::from_millis(1)));
            self.config_mut().write_deadline = deadline;
            self
        }

        /// Compresses event streams for clients whose `Accept-Encoding` allows it (feature
        /// `compression`; default: never), flushing after every frame, so no event waits. A
        /// response the inner service compressed itself still passes untouched. Off by
        /// default: read the README's "Compression" section for when a shared context is safe.
        ///
        /// ```
        /// use tower_sse::compression::Compression;
        /// use tower_sse::SseLayer;
        ///
        /// let layer = SseLayer::new().compression(Compression::new().zstd_level(1));
        /// # let _ = layer;
        /// ```
        #[cfg(feature = "compression")]
        #[must_use = "a builder method returns the configured value"]
        pub fn compression(mut self, compression: $crate::compression::Compression) -> Self {
            let enabled = !compression.codings.is_empty();
            self.config_mut().compression = enabled.then_some(compression);
            self
        }
    };
}
pub(crate) use builder_methods;

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut debug = f.debug_struct("Config");
        debug
            .field("heartbeat", &self.heartbeat)
            .field("heartbeat_comment", &self.heartbeat_comment)
            .field("retry", &self.retry)
            .field("always", &self.always)
            .field("max_message_size", &self.max_message_size)
            .field("framing", &self.framing)
            .field("map_message", &self.map_message.is_some())
            .field("map_error", &self.map_error.is_some())
            .field("on_disconnect", &self.on_disconnect.is_some())
            .field("on_close", &self.on_close.is_some())
            .field("graceful_shutdown", &self.shutdown.is_some())
            .field("shutdown_event", &!self.shutdown_event.is_empty())
            .field("retry_jitter", &self.retry_jitter)
            .field("limits", &self.limits)
            .field("max_age", &self.max_age)
            .field("write_deadline", &self.write_deadline);
        #[cfg(feature = "compression")]
        debug.field("compression", &self.compression);
        debug.finish_non_exhaustive()
    }
}
