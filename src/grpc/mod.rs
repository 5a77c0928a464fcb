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

mod request;
mod status;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::response::Parts;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response};
use pin_project_lite::pin_project;
use tokio_util::sync::DropGuard;
use tower_layer::Layer;
use tower_service::Service;

use crate::decode::Decoder;
use crate::future::{rewrite_headers, StreamRequest};
use crate::gateway::remove_hop_by_hop_headers;
use crate::layer::Config;
use crate::service::accepts_event_stream;
use crate::{Event, EventError, Framing, Message, SseBody, SseService, StreamError};

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
/// behaviour, for a tonic server. Configure the `SseLayer` before calling `.grpc()`;
/// [`always`](crate::SseLayer::always) does not apply, since plain gRPC calls must pass.
///
/// A request becomes a gRPC call when it asks for `text/event-stream`, is a `GET` or `POST`, has
/// a path of the form `/package.Service/Method`, and is not already gRPC; one with another
/// method (`HEAD`, `OPTIONS`, ...) is answered `405 Method Not Allowed` with `Allow: GET, POST`.
/// Other event stream requests (say, an axum route added with tonic's `add_routes`) are served
/// as by `SseLayer`.
#[derive(Clone)]
pub struct GrpcLayer {
    config: Arc<Config>,
}

impl GrpcLayer {
    pub(crate) fn new(mut config: Arc<Config>) -> Self {
        let config_mut = Arc::make_mut(&mut config);
        config_mut.grpc = true;
        // Negotiation by `Accept` only: converting every request would re-frame plain gRPC calls.
        config_mut.always = false;
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
        let subscription = subscription(&request);
        if subscription == Subscription::WrongMethod {
            // `HEAD`, `OPTIONS` and the rest cannot carry a call: the client's error, not a
            // failed call.
            let mut response = answer(
                http::StatusCode::METHOD_NOT_ALLOWED,
                "text/plain; charset=utf-8",
                "an event stream subscription is a GET or a POST\n",
            );
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, POST"));
            let kind = FutureKind::Answered {
                response: Some(response),
            };
            return GrpcFuture { kind };
        }
        let request = if subscription == Subscription::Call {
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

/// What an event stream request to a gRPC method is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Subscription {
    /// A `GET` or `POST`: it becomes a call.
    Call,
    /// Another method: refused with `405`.
    WrongMethod,
    /// Not an event stream request to a method path, or already gRPC: passed on as it is.
    None,
}

/// Whether a request is an event stream subscription to a gRPC method.
fn subscription<B>(request: &Request<B>) -> Subscription {
    let mut segments = request.uri().path().split('/');
    let rpc_path = segments.next() == Some("")
        && segments.next().is_some_and(|service| !service.is_empty())
        && segments.next().is_some_and(|method| !method.is_empty())
        && segments.next().is_none();
    let grpc_already = request
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/grpc"));
    if !rpc_path || grpc_already || !accepts_event_stream(request.headers()) {
        Subscription::None
    } else if matches!(*request.method(), Method::GET | Method::POST) {
        Subscription::Call
    } else {
        Subscription::WrongMethod
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
    let mut decoder = Decoder::new(Framing::Grpc, stream.config.max_message_size, None);
    // A status in the head is a "trailers-only" response: the call ended before any message.
    if let Err(StreamError::Status { code, message }) = decoder.trailers(&head.headers) {
        let json = status::status_json(code, &message);
        let mut response = answer(http_status(code), "application/json", json);
        // The call's own metadata (`www-authenticate` on a 401, say) stays.
        remove_grpc_headers(&mut head.headers);
        remove_hop_by_hop_headers(&mut head.headers);
        for name in [header::CONTENT_TYPE, header::CONTENT_LENGTH] {
            head.headers.remove(name);
        }
        let headers = std::mem::take(response.headers_mut());
        head.headers.extend(headers);
        *response.headers_mut() = head.headers;
        return response;
    }
    head.status = http::StatusCode::OK;
    rewrite_headers(&mut head.headers, stream.vary_accept);
    remove_grpc_headers(&mut head.headers);
    Response::from_parts(head, SseBody::events(body, decoder, stream.config, done))
}

/// The layer's own short answer to an event stream request: not to be cached, and apart from
/// the answer to the same URL without `Accept: text/event-stream`.
fn answer<B>(
    status: http::StatusCode,
    content_type: &'static str,
    text: impl Into<Bytes>,
) -> Response<SseBody<B>> {
    let mut response = Response::new(SseBody::answer(text.into()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::VARY, HeaderValue::from_static("accept"));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn call(method: Method, path: &str, content_type: Option<&str>) -> bool {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("accept", "text/event-stream");
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        request
            .body(())
            .is_ok_and(|request| subscription(&request) == Subscription::Call)
    }

    #[test]
    fn only_subscriptions_to_a_method_become_calls() {
        assert!(call(Method::GET, "/feed.Ticker/Subscribe", None));
        assert!(call(Method::POST, "/feed.Ticker/Subscribe?x=1", None));
        for method in [Method::PUT, Method::HEAD, Method::OPTIONS] {
            assert!(!call(method.clone(), "/feed.Ticker/Subscribe", None));
            let request = Request::builder()
                .method(method)
                .uri("/feed.Ticker/Subscribe")
                .header("accept", "text/event-stream")
                .body(());
            assert!(request.is_ok_and(|r| subscription(&r) == Subscription::WrongMethod));
        }
        assert!(!call(Method::GET, "/", None));
        assert!(!call(Method::GET, "/events", None));
        assert!(!call(Method::GET, "/a/b/c", None));
        assert!(!call(Method::GET, "/feed.Ticker/", None));
        assert!(!call(
            Method::POST,
            "/feed.Ticker/Subscribe",
            Some("application/grpc")
        ));
        let plain = Request::get("/feed.Ticker/Subscribe").body(());
        assert!(plain.is_ok_and(|request| subscription(&request) == Subscription::None));
    }

    #[test]
    fn grpc_responses_are_told_from_grpc_web() {
        let grpc = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(value));
            is_grpc(&headers)
        };
        assert!(grpc("application/grpc"));
        assert!(grpc("Application/GRPC+proto"));
        assert!(grpc("application/grpc; charset=utf-8"));
        assert!(!grpc("application/grpc-web"));
        assert!(!grpc("application/grpc-web-text+proto"));
        assert!(!grpc("application/json"));
    }
}
