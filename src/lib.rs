//! Server-Sent Events for any [Tower](https://docs.rs/tower) HTTP service.
//!
//! [`SseLayer`] turns the response stream of an inner service — an axum handler's
//! `Body::from_stream`, an NDJSON stream, an upstream's own event stream — into a compliant
//! `text/event-stream` response: the right headers, a retry hint as the first bytes, heartbeat
//! comments while idle, one event per message, and a signal when the client leaves.
//!
//! # Quick start
//!
//! ```
//! use std::time::Duration;
//! use axum::{body::Body, routing::get, Router};
//! use futures_util::stream;
//! use tower_sse::SseLayer;
//!
//! async fn ticks() -> Body {
//!     // Each body frame becomes one event.
//!     let frames = ["one", "two", "three"].map(|text| Ok::<_, std::io::Error>(text));
//!     Body::from_stream(stream::iter(frames))
//! }
//!
//! let app: Router = Router::new()
//!     .route("/ticks", get(ticks))
//!     .layer(SseLayer::new().heartbeat(Duration::from_secs(15)).retry(Duration::from_secs(3)));
//! // A browser's `new EventSource("/ticks")` now receives:
//! //   retry: 3000
//! //   data: one
//! //
//! //   data: two
//! //   ...
//! ```
//!
//! # What the layer does
//!
//! - **Negotiation.** The request or the response decides. The response to a request whose
//!   `Accept` names `text/event-stream` (as `EventSource` sends) is converted, so the layer can
//!   wrap a whole router; [`SseLayer::always`] converts every request. A response that already
//!   is an event stream (`text/event-stream`, or a hub subscription) goes through the layer
//!   whatever the request's `Accept` (curl, `fetch`, htmx and LLM SDKs do not all ask), with
//!   the same heartbeats, limits, shutdown and callbacks. Every request gets the
//!   [`Disconnect`] and [`LastEventId`] extensions, so handlers can always extract them. An
//!   event stream request reaches the inner service with `Accept-Encoding: identity`, since
//!   only an uncompressed body can be re-framed.
//! - **Pass-through.** A response that is not a 2xx, a 204, 205 or 206, a gRPC response, or one
//!   with a `Content-Encoding` other than `identity`, is returned untouched. A 2xx answer that
//!   is not an event stream, to a request that did not ask for one, only gains `Vary: Accept`.
//!   Put tower-http's
//!   `CompressionLayer` *outside* this layer: its default predicate does not compress
//!   `text/event-stream`, and a compressed inner body would not be converted.
//! - **Headers.** `Content-Type: text/event-stream`, `Cache-Control: no-cache, no-transform`,
//!   `X-Accel-Buffering: no` and `Vary: Accept` (when negotiated) are set; the status becomes
//!   200; `Content-Length`, validators and every connection-specific header are removed.
//! - **Framing.** The inner `Content-Type` picks how the body is cut into messages
//!   ([`Framing`]): NDJSON lines, an inner event stream (parsed and encoded again), or one
//!   message per body frame. Each [`Message`] is mapped to an [`Event`] by
//!   [`SseLayer::map_message`].
//! - **Lifecycle.** The stream opens with a retry hint (or a comment), sends a heartbeat comment
//!   after each idle interval (neither followed by a blank line, which lenient parsers such as
//!   the Python `openai` SDK would dispatch as an empty event), coalesces events that are already ready into one write, ends
//!   after a complete event, turns an inner error into a final `error` event, and reports a
//!   client that left through [`Disconnect`] and [`SseLayer::on_disconnect`].
//!
//! In front of an upstream that streams NDJSON or SSE, wrap an HTTP client in
//! `gateway::Upstream` (feature `gateway`) and put the layer around it: a gateway in a few
//! lines. With the feature `grpc`, `SseLayer::grpc` serves tonic's server-streaming RPCs to
//! `EventSource`.
//!
//! # Features
//!
//! | Feature | What it adds |
//! | --- | --- |
//! | `json` | `Event::json`: a value serialized as the event's data |
//! | `grpc` | `grpc::GrpcLayer`: browsers subscribe to tonic server-streaming RPCs (implies `json`) |
//! | `gateway` | `gateway::Upstream`: a reverse proxy service to put the layer around |
//! | `hub` | `hub::Hub`: topics, publish once to every subscriber, exact resume after `Last-Event-ID` |
//! | `axum` | `Disconnect` and `LastEventId` as axum extractors (`Option<LastEventId>` too), and `IntoResponse` for the hub's `Subscription` and `HubError` |
//! | `metrics` | stream, event, byte, close, refusal and hub metrics on the `metrics` facade (below) |
//! | `compression` | `SseLayer::compression`: zstd, br or gzip for clients that ask, flushed after every frame (`compression::Compression`) |
//! | `mercure` | the Mercure protocol's building blocks: topic matchers and access tokens (`mercure::Matcher`, `mercure::Verifier`); needs Rust 1.88 |
//! | `full` | all of the above |
//!
//! Without a feature: stream limits ([`SseLayer::max_streams`]), retry jitter
//! ([`SseLayer::retry_jitter`]), [`read::EventReader`], and [`source`]: event sources of your
//! own (a channel, a change feed) served through the layer like any other stream.
//!
//! A tokio runtime with the time driver must drive the response bodies (heartbeats use
//! `tokio::time`).
//!
//! # Metrics
//!
//! With the feature `metrics`, streams report to the [`metrics`](https://docs.rs/metrics)
//! facade (any exporter):
//!
//! | Name | Type | Labels | What it counts |
//! | --- | --- | --- | --- |
//! | `sse_streams_open` | gauge | label | event streams open now |
//! | `sse_streams_opened_total` | counter | label | event streams opened (the connection started reading) |
//! | `sse_streams_closed_total` | counter | label, `reason` | streams closed, by [`CloseReason::as_str`] |
//! | `sse_stalls_total` | counter | label | streams closed because their client stalled |
//! | `sse_events_sent_total` | counter | label | events handed to connections |
//! | `sse_bytes_sent_total` | counter | label | bytes handed to connections, heartbeats included |
//! | `sse_streams_refused_total` | counter | `limit` | requests refused by a stream limit ([`StreamLimit::as_str`]) |
//! | `sse_hub_subscribers` | gauge | | hub subscriptions live now |
//! | `sse_hub_publishes_total` | counter | | events published to a hub |
//!
//! "label" is the optional label `SseLayer::metrics_label` takes from each request (a route,
//! say); its number of distinct values is the number of time series.
//!
//! # Invalid UTF-8
//!
//! The wire format is UTF-8 only. Invalid sequences in a message become U+FFFD (the replacement
//! character), exactly what a client's decoder would turn them into.

// Lints are declared once, in Cargo.toml's `[lints]`.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod body;
mod close;
mod config;
mod decode;
mod disconnect;
mod engine;
mod error;
mod event;
#[cfg(feature = "axum")]
mod extract;
mod future;
mod headers;
mod jitter;
mod last_event_id;
mod layer;
mod limit;
mod message;
mod metrics;
mod service;

#[cfg(feature = "compression")]
pub mod compression;
#[cfg(feature = "gateway")]
pub mod gateway;
#[cfg(feature = "grpc")]
pub mod grpc;
#[cfg(feature = "hub")]
pub mod hub;
#[cfg(feature = "mercure")]
pub mod mercure;
pub mod read;
pub mod source;

pub use body::SseBody;
pub use close::{CloseInfo, CloseReason};
pub use config::{
    DEFAULT_HEARTBEAT, DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_RETRY, DEFAULT_WRITE_DEADLINE,
};
pub use decode::Framing;
pub use disconnect::Disconnect;
pub use error::{BoxError, StreamError};
pub use event::{Event, EventError};
#[cfg(feature = "axum")]
pub use extract::SseRejection;
pub use future::ResponseFuture;
pub use headers::remove_hop_by_hop_headers;
pub use last_event_id::LastEventId;
pub use layer::SseLayer;
pub use limit::{LimitExceeded, Refusal, StreamLimit, DEFAULT_REFUSAL_RETRY};
pub use message::Message;
pub use service::SseService;
