//! Browsers subscribe to tonic server-streaming RPCs with `EventSource` (feature `grpc`).
//!
//! [`SseLayer::grpc`](crate::SseLayer::grpc) gives a [`GrpcLayer`] to put around a tonic server.
//! An event stream request (`Accept: text/event-stream`) to `/pkg.Service/Method` becomes the
//! gRPC call tonic expects, and each response message becomes one event; plain gRPC clients on
//! the same port pass through untouched.
//!
//! ```
//! use std::time::Duration;
//! use tower_sse::SseLayer;
//!
//! let layer = SseLayer::new().heartbeat(Duration::from_secs(15)).grpc();
//! // tonic::transport::Server::builder().accept_http1(true).layer(layer).add_service(..)
//! # let _ = layer;
//! ```
//!
//! - **Request.** The call's one request message is the `message` query parameter (the protobuf
//!   bytes in base64url, padded or not), or the raw protobuf body of a `POST` (with a
//!   `Content-Length`, else `411`), or the empty message when neither is given. A `message` that
//!   is not base64url is answered `400`, one over `max_message_size` `413`, before the call.
//!   Compression is never advertised.
//! - **Messages.** Each message becomes one event through the mapper; by default its data is the
//!   standard base64 of the protobuf bytes. [`decode`] and [`json_event`] give typed messages.
//! - **Status.** `grpc-status` OK in the trailers ends the stream cleanly. Any other status ends
//!   it with a final `event: error` whose data is `{"code": .., "message": ..}`
//!   ([`error_event`]), then a clean end. A call that fails before any message (a
//!   "trailers-only" response) is answered with an HTTP status ([`http_status`]) and that JSON as
//!   its body, so that `EventSource` stops instead of retrying for ever.
//! - **Lifecycle.** Heartbeats, the retry hint and disconnect detection apply as to any stream;
//!   when the client leaves, the response body is dropped, and tonic drops the RPC's stream.

mod decoder;
mod layer;
mod request;
mod status;

use crate::{Event, EventError, Message, SseLayer};

pub use layer::{GrpcFuture, GrpcLayer, GrpcService};
pub use request::RequestBody;
pub use status::{code, error_event, http_status, CallError};

impl SseLayer {
    /// The layer for a tonic server: event stream requests become calls of the server-streaming
    /// method their path names, and each response message one event (see [`crate::grpc`]).
    /// Configure the layer first; the [`GrpcLayer`](crate::grpc::GrpcLayer) has no builder
    /// methods of its own.
    ///
    /// ```
    /// use tower_sse::SseLayer;
    ///
    /// let layer = SseLayer::new().grpc();
    /// // tonic::transport::Server::builder().accept_http1(true).layer(layer).add_service(..)
    /// # let _ = layer;
    /// ```
    pub fn grpc(self) -> GrpcLayer {
        GrpcLayer::new(self.config().clone())
    }
}

/// The default mapping of a gRPC message: its protobuf bytes in standard base64 as the data.
pub(crate) fn base64_event(message: crate::Message) -> Result<Event, EventError> {
    use base64::Engine;
    let data = base64::engine::general_purpose::STANDARD.encode(message.data());
    Ok(Event::default().data(data))
}

/// Decodes a message of a gRPC stream as the prost type `M`, for a mapper.
///
/// ```
/// use tower_sse::{grpc, Event, SseLayer};
///
/// let layer = SseLayer::new()
///     .map_message(|message| {
///         let value: u64 = grpc::decode::<u64>(&message)?; // any prost message type
///         Event::default().id(value.to_string()).map(|event| event.data("tick"))
///     })
///     .grpc();
/// # let _ = layer;
/// ```
pub fn decode<M: prost::Message + Default>(message: &Message) -> Result<M, EventError> {
    M::decode(message.data().clone()).map_err(|error| EventError::Decode(error.to_string()))
}

/// Decodes a message of a gRPC stream as the prost type `M` and makes it an event whose data is
/// its JSON (give the generated types serde derives, e.g. with `tonic_prost_build`'s
/// `type_attribute(".", "#[derive(serde::Serialize)]")`).
pub fn json_event<M>(message: &Message) -> Result<Event, EventError>
where
    M: prost::Message + Default + serde::Serialize,
{
    Event::default().json(&decode::<M>(message)?)
}
