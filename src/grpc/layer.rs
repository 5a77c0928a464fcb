//! [`GrpcLayer`] and [`GrpcService`]: event stream requests become gRPC calls, and their
//! responses sources of events ([`Decoded`] with the gRPC decoder), which the core's layer
//! serves like any other handed-over source (see [`crate::source`]).
//!
//! The service is an [`SseService`] around [`Calls`]: the `SseService` gives every request
//! what `SseLayer` gives it (its place under the limits, `Disconnect`, `Last-Event-ID`, the
//! answer after the shutdown signal), and `Calls` turns a subscription into a call and the
//! call's response into a stream.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body;
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::decoder::GrpcDecoder;
use super::request::{self, RequestBody};
use super::status::{self, http_status, CallError};
use crate::config::Config;
use crate::engine::Decoded;
use crate::error::BoxError;
use crate::future::ResponseFuture;
use crate::headers::{
    accepts_event_stream, content_type, is_grpc, remove_hop_by_hop_headers,
    set_event_stream_headers,
};
use crate::{SseBody, SseService};

/// The layer [`SseLayer::grpc`](crate::SseLayer::grpc) gives: [`SseLayer`](crate::SseLayer)'s
/// behaviour, for a tonic server. Configure the `SseLayer` before calling `.grpc()`;
/// [`always`](crate::SseLayer::always) does not apply, since plain gRPC calls must pass.
///
/// A request becomes a gRPC call when it asks for `text/event-stream`, is a `GET` or `POST`, has
/// a path of the form `/package.Service/Method`, and is not already gRPC; one with another
/// method (`HEAD`, `OPTIONS`, ...) is answered `405 Method Not Allowed` with `Allow: GET, POST`.
/// Other requests (plain gRPC calls, an axum route added with tonic's `add_routes`) are served
/// as by `SseLayer`. Unless the layer has its own, the mapper gives each message's protobuf
/// bytes in base64, and the final event after a failure is [`error_event`](super::error_event).
#[derive(Clone)]
#[must_use]
pub struct GrpcLayer {
    config: Arc<Config>,
}

impl GrpcLayer {
    pub(crate) fn new(mut config: Arc<Config>) -> Self {
        let config_mut = Arc::make_mut(&mut config);
        // Negotiation by `Accept` only: converting every request would re-frame plain gRPC calls.
        config_mut.always = false;
        if config_mut.map_message.is_none() {
            config_mut.map_message = Some(Arc::new(super::base64_event));
        }
        if config_mut.map_error.is_none() {
            config_mut.map_error = Some(Arc::new(|error| Some(super::error_event(error))));
        }
        Self { config }
    }
}

impl<S> Layer<S> for GrpcLayer {
    type Service = GrpcService<S>;

    fn layer(&self, inner: S) -> GrpcService<S> {
        let calls = Calls {
            inner,
            max: self.config.max_message_size,
        };
        GrpcService {
            inner: SseService::from_config(calls, self.config.clone()),
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
    inner: SseService<Calls<S>>,
}

impl<S> GrpcService<S> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner.get_ref().inner
    }
}

impl<S: std::fmt::Debug> std::fmt::Debug for GrpcService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcService")
            .field("inner", self.get_ref())
            .finish()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for GrpcService<S>
where
    S: Service<Request<RequestBody<ReqBody>>, Response = Response<ResBody>>,
    ResBody: Body + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    /// A subscription's stream is served from its source; every other response's body passes
    /// through both layers of [`SseBody`] untouched.
    type Response = Response<SseBody<SseBody<ResBody>>>;
    type Error = S::Error;
    type Future = GrpcFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let kind = match subscription(&request) {
            // `HEAD`, `OPTIONS` and the rest cannot carry a call: the client's error, not a
            // failed call, answered before it takes a place under the limits.
            Subscription::WrongMethod => {
                let mut response = reply(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "text/plain; charset=utf-8",
                    "an event stream subscription is a GET or a POST\n",
                );
                response
                    .headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("GET, POST"));
                FutureKind::Answered {
                    response: Some(response),
                }
            }
            Subscription::Call | Subscription::None => FutureKind::Served {
                future: self.inner.call(request),
            },
        };
        GrpcFuture { kind }
    }
}

/// The inner service as the core's layer sees it: a subscription becomes a call, whose response
/// becomes a handed-over source; anything else is called as it is.
#[derive(Clone)]
struct Calls<S> {
    inner: S,
    /// The largest message, as the layer was configured.
    max: usize,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Calls<S>
where
    S: Service<Request<RequestBody<ReqBody>>, Response = Response<ResBody>>,
    ResBody: Body + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<SseBody<ResBody>>;
    type Error = S::Error;
    type Future = CallFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        if subscription(&request) != Subscription::Call {
            return CallFuture::Plain {
                future: self.inner.call(request.map(RequestBody::client)),
            };
        }
        match request::into_grpc_call(request, self.max) {
            Err(refused) => CallFuture::Answered {
                response: Some(reply(
                    refused.status,
                    "text/plain; charset=utf-8",
                    refused.reason,
                )),
            },
            Ok(call) => CallFuture::Call {
                future: self.inner.call(call),
                max: self.max,
            },
        }
    }
}

pin_project! {
    /// The future of [`Calls`].
    #[project = CallFutureProj]
    enum CallFuture<F, B> {
        // A subscription become a call.
        Call { #[pin] future: F, max: usize },
        // Not a subscription: called as it is.
        Plain { #[pin] future: F },
        // A subscription refused before any call.
        Answered { response: Option<Response<SseBody<B>>> },
    }
}

impl<F, B, E> Future for CallFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Output = Result<Response<SseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            CallFutureProj::Call { future, max } => {
                let response = ready!(future.poll(cx))?;
                Poll::Ready(Ok(into_event_stream(response, *max)))
            }
            CallFutureProj::Plain { future } => {
                let response = ready!(future.poll(cx))?;
                Poll::Ready(Ok(response.map(|body| SseBody::untouched(body, None))))
            }
            CallFutureProj::Answered { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(response)),
                // Polled again after it completed: there is nothing left to give.
                None => Poll::Pending,
            },
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
    // gRPC or gRPC-Web already: a client of its own.
    let grpc_already = content_type(request.headers())
        .is_some_and(|essence| essence.to_ascii_lowercase().starts_with("application/grpc"));
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
    #[must_use = "futures do nothing unless polled"]
    pub struct GrpcFuture<F, B> {
        #[pin]
        kind: FutureKind<F, B>,
    }
}

pin_project! {
    #[project = FutureKindProj]
    enum FutureKind<F, B> {
        // Through the core's layer (a subscription becomes a call there).
        Served { #[pin] future: ResponseFuture<CallFuture<F, B>> },
        // The request was refused before the layer.
        Answered { response: Option<Response<SseBody<SseBody<B>>>> },
    }
}

impl<F, B, E> Future for GrpcFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Output = Result<Response<SseBody<SseBody<B>>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            FutureKindProj::Served { future } => future.poll(cx),
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

/// The response to a call, as the core's layer gets it: a source of the messages as events
/// (handed over, so the layer serves it with its own settings and limits), or the status of a
/// call that failed before any message as an HTTP status. A response that is not gRPC (a `404`
/// from a router, say) passes untouched.
fn into_event_stream<B>(response: Response<B>, max: usize) -> Response<SseBody<B>>
where
    B: Body + Send + 'static,
    B::Error: Into<BoxError>,
{
    let (mut head, body) = response.into_parts();
    if !head.status.is_success() || !is_grpc(&head.headers) {
        return Response::from_parts(head, SseBody::untouched(body, None));
    }
    let mut decoder = GrpcDecoder::new(max);
    // A status in the head is a "trailers-only" response: the call ended before any message.
    let trailers_only = decoder.trailers(&head.headers).err();
    if let Some(CallError::Status { code, message }) =
        trailers_only.as_ref().and_then(CallError::of)
    {
        let json = status::status_json(*code, message);
        let mut response = reply(http_status(*code), "application/json", json);
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
    // The call's head (its metadata) with the handed-over source's: an event stream.
    let (handoff, body_of_handoff) =
        crate::source::boxed_response(Box::pin(Decoded::new(body, decoder))).into_parts();
    head.status = StatusCode::OK;
    remove_grpc_headers(&mut head.headers);
    head.headers.remove(header::CONTENT_LENGTH);
    set_event_stream_headers(&mut head.headers, false);
    head.extensions.extend(handoff.extensions);
    Response::from_parts(head, body_of_handoff)
}

/// The layer's own short answer to an event stream request: not to be cached, and apart from
/// the answer to the same URL without `Accept: text/event-stream`.
fn reply<B>(
    status: http::StatusCode,
    content_type: &'static str,
    text: impl Into<Bytes>,
) -> Response<SseBody<B>> {
    let mut response = Response::new(SseBody::fixed(text.into()));
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
}
