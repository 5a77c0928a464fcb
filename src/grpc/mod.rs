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
//!   bytes in base64url, padded or not), or the raw protobuf body of a `POST`, or the empty
//!   message when neither is given. A `message` that is not base64url is answered `400`, one over
//!   `max_message_size` `413`, before the call. Compression is never advertised.
//! - **Messages.** Each message becomes one event through the mapper; by default its data is the
//!   standard base64 of the protobuf bytes. [`decode`] and [`json_event`] give typed messages.
//! - **Status.** `grpc-status` OK in the trailers ends the stream cleanly. Any other status ends
//!   it with a final `event: error` whose data is `{"code": .., "message": ..}`
//!   ([`error_event`]), then a clean end. A call that fails before any message (a
//!   "trailers-only" response) is answered with an HTTP status ([`http_status`]) and that JSON as
//!   its body, so that `EventSource` stops instead of retrying for ever.
//! - **Lifecycle.** Heartbeats, the retry hint and disconnect detection apply as to any stream;
//!   when the client leaves, the response body is dropped, and tonic drops the RPC's stream.

mod request;
mod status;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::response::Parts;
use http::{header, HeaderMap, HeaderValue, Request, Response};
use pin_project_lite::pin_project;
use tokio_util::sync::DropGuard;
use tower_layer::Layer;
use tower_service::Service;

use crate::decode::Decoder;
use crate::future::{rewrite_headers, StreamRequest};
use crate::layer::Config;
use crate::service::accepts_event_stream;
use crate::{Event, EventError, Message, SseBody, SseService};

pub use request::RequestBody;
pub(crate) use status::Status;
pub use status::{code, error_event, http_status};

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
    M::decode(message.data().clone()).map_err(|error| EventError::Protobuf(error.to_string()))
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

/// The layer [`SseLayer::grpc`](crate::SseLayer::grpc) gives: [`SseLayer`](crate::SseLayer)'s
/// behaviour, for a tonic server. Configure the `SseLayer` before calling `.grpc()`.
#[derive(Clone)]
pub struct GrpcLayer {
    config: Arc<Config>,
}

impl GrpcLayer {
    pub(crate) fn new(mut config: Arc<Config>) -> Self {
        Arc::make_mut(&mut config).grpc = true;
        Self { config }
    }
}

impl<S> Layer<S> for GrpcLayer {
    type Service = GrpcService<S>;

    fn layer(&self, inner: S) -> GrpcService<S> {
        GrpcService {
            inner: SseService::from_config(inner, self.config.clone()),
            config: self.config.clone(),
        }
    }
}

impl std::fmt::Debug for GrpcLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcLayer")
            .field("config", &self.config)
            .finish()
    }
}

/// The service [`GrpcLayer`] wraps around a tonic server: it turns event stream requests into
/// gRPC calls, and their responses into event streams.
#[derive(Clone)]
pub struct GrpcService<S> {
    inner: SseService<S>,
    config: Arc<Config>,
}

impl<S> GrpcService<S> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        self.inner.get_ref()
    }
}

impl<S: std::fmt::Debug> std::fmt::Debug for GrpcService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcService")
            .field("inner", &self.inner)
            .finish()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for GrpcService<S>
where
    S: Service<Request<RequestBody<ReqBody>>, Response = Response<ResBody>>,
{
    type Response = Response<SseBody<ResBody>>;
    type Error = S::Error;
    type Future = GrpcFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let event_stream = self.config.always || accepts_event_stream(request.headers());
        let request = if event_stream {
            match request::into_grpc_call(request, self.config.max_message_size) {
                Ok(request) => request,
                Err(refused) => {
                    let response =
                        answer(refused.status, "text/plain; charset=utf-8", refused.reason);
                    let kind = FutureKind::Answered {
                        response: Some(response),
                    };
                    return GrpcFuture { kind };
                }
            }
        } else {
            request.map(RequestBody::client)
        };
        let future = self.inner.call(request);
        GrpcFuture {
            kind: FutureKind::Called { future },
        }
    }
}

pin_project! {
    /// The future [`GrpcService`] returns.
    pub struct GrpcFuture<F, B> {
        #[pin]
        kind: FutureKind<F, B>,
    }
}

pin_project! {
    #[project = FutureKindProj]
    enum FutureKind<F, B> {
        // The inner call is under way.
        Called { #[pin] future: crate::ResponseFuture<F> },
        // The request was refused before any call.
        Answered { response: Option<Response<SseBody<B>>> },
    }
}

impl<F, B, E> Future for GrpcFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<SseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            FutureKindProj::Called { future } => future.poll(cx),
            FutureKindProj::Answered { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(response)),
                // Polled again after it completed: there is nothing left to give.
                None => Poll::Pending,
            },
        }
    }
}

impl<F, B> std::fmt::Debug for GrpcFuture<F, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcFuture").finish_non_exhaustive()
    }
}

/// Whether a response is gRPC (not gRPC-Web, whose framing differs).
pub(crate) fn is_grpc(headers: &HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).is_some_and(|value| {
        let essence = value
            .as_bytes()
            .split(|&b| b == b';')
            .next()
            .unwrap_or_default();
        let essence = essence.trim_ascii();
        essence.eq_ignore_ascii_case(b"application/grpc")
            || essence.len() > 17 && essence[..17].eq_ignore_ascii_case(b"application/grpc+")
    })
}

/// The gRPC response to an event stream request, as the client gets it.
pub(crate) fn into_event_stream<B>(
    mut head: Parts,
    body: B,
    stream: StreamRequest,
    done: Option<DropGuard>,
) -> Response<SseBody<B>> {
    // A status in the head is a "trailers-only" response: the call ended before any message.
    let trailers_only = Status::from_headers(&head.headers);
    if let Some(status) = &trailers_only {
        if status.code != code::OK {
            let json = status::status_json(status.code, &status.message);
            return answer(http_status(status.code), "application/json", json);
        }
    }
    head.status = http::StatusCode::OK;
    rewrite_headers(&mut head.headers, stream.vary_accept);
    remove_grpc_headers(&mut head.headers);
    let decoder = Decoder::grpc(stream.config.max_message_size, trailers_only.is_some());
    Response::from_parts(head, SseBody::events(body, decoder, stream.config, done))
}

/// The layer's own short answer.
fn answer<B>(
    status: http::StatusCode,
    content_type: &'static str,
    text: impl Into<Bytes>,
) -> Response<SseBody<B>> {
    let mut response = Response::new(SseBody::answer(text.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Removes the `grpc-*` headers, which mean nothing to an event stream client.
fn remove_grpc_headers(headers: &mut HeaderMap) {
    let names: Vec<_> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("grpc-"))
        .cloned()
        .collect();
    for name in names {
        headers.remove(name);
    }
}
