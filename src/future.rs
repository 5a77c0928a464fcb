//! [`ResponseFuture`]: rewrites the inner response's head and picks the body's framing.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::BytesMut;
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use pin_project_lite::pin_project;
use tokio_util::sync::DropGuard;

use crate::decode::Decoder;
use crate::gateway::remove_hop_by_hop_headers;
use crate::layer::Config;
use crate::{Framing, SseBody};

/// What an event stream request carries to its response.
pub(crate) struct StreamRequest {
    pub(crate) config: Arc<Config>,
    /// Whether the choice depended on `Accept` (so caches must vary on it).
    pub(crate) vary_accept: bool,
}

pin_project! {
    /// The future [`SseService`](crate::SseService) returns: the inner response, its head
    /// rewritten and its body wrapped in an [`SseBody`].
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Called {
            #[pin]
            inner: F,
            // Cancels the request's `Disconnect` handle when dropped; moves into the body.
            done: Option<DropGuard>,
            // Set when the request asked for an event stream.
            stream: Option<StreamRequest>,
        },
        // An event stream request after the shutdown signal: answered without a call.
        ShuttingDown {
            stream: Option<StreamRequest>,
        },
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (state, event_stream) = match &self.state {
            State::Called { stream, .. } => ("called", stream.is_some()),
            State::ShuttingDown { .. } => ("shutting down", true),
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .field("event_stream", &event_stream)
            .finish()
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: F, done: DropGuard, stream: Option<StreamRequest>) -> Self {
        let state = State::Called {
            inner,
            done: Some(done),
            stream,
        };
        Self { state }
    }

    pub(crate) fn shutting_down(stream: StreamRequest) -> Self {
        let stream = Some(stream);
        Self {
            state: State::ShuttingDown { stream },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<SseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Called {
                inner,
                done,
                stream,
            } => {
                let response = ready!(inner.poll(cx))?;
                let done = done.take();
                Poll::Ready(Ok(match stream.take() {
                    None => untouched(response, done),
                    Some(stream) => into_event_stream(response, stream, done),
                }))
            }
            StateProj::ShuttingDown { stream } => match stream.take() {
                Some(stream) => Poll::Ready(Ok(shutting_down(stream))),
                // Polled again after it completed: there is nothing left to give.
                None => Poll::Pending,
            },
        }
    }
}

/// The answer to an event stream request after the shutdown signal: the retry hint, the
/// shutdown event, and the end. A `200`, since `EventSource` gives up for good on any other
/// status, where a stream that ends makes it reconnect after the retry delay.
fn shutting_down<B>(stream: StreamRequest) -> Response<SseBody<B>> {
    tracing::debug!("event stream refused: shutting down");
    let config = &stream.config;
    let mut text = BytesMut::with_capacity(config.preamble.len() + config.shutdown_event.len());
    text.extend_from_slice(&config.preamble);
    text.extend_from_slice(&config.shutdown_event);
    let mut response = Response::new(SseBody::answer(text.freeze()));
    rewrite_headers(response.headers_mut(), stream.vary_accept);
    response
}

/// The response to a request that did not ask for an event stream. It is returned as it is, but
/// had the request asked, it would have been converted: caches must keep the two apart.
fn untouched<B>(mut response: Response<B>, done: Option<DropGuard>) -> Response<SseBody<B>> {
    if is_convertible(response.status(), response.headers()) {
        add_vary_accept(response.headers_mut());
    }
    response.map(|body| SseBody::untouched(body, done))
}

fn into_event_stream<B>(
    response: Response<B>,
    stream: StreamRequest,
    done: Option<DropGuard>,
) -> Response<SseBody<B>> {
    let (mut head, body) = response.into_parts();
    #[cfg(feature = "grpc")]
    if stream.config.grpc && head.status.is_success() && crate::grpc::is_grpc(&head.headers) {
        return crate::grpc::into_event_stream(head, body, stream, done);
    }
    if !is_convertible(head.status, &head.headers) {
        return Response::from_parts(head, SseBody::untouched(body, done));
    }
    let framing = stream
        .config
        .framing
        .unwrap_or_else(|| Framing::from_content_type(head.headers.get(header::CONTENT_TYPE)));
    // Clients accept exactly 200 for an event stream.
    head.status = StatusCode::OK;
    rewrite_headers(&mut head.headers, stream.vary_accept);
    let decoder = Decoder::new(framing, stream.config.max_message_size, stream.config.retry);
    let body = SseBody::events(body, decoder, stream.config, done);
    Response::from_parts(head, body)
}

/// A 2xx with content and no content coding becomes an event stream; anything else (an error a
/// client must see, a 204 telling it not to reconnect, a partial or compressed body) passes
/// untouched. So does gRPC, whose framing this layer does not decode.
fn is_convertible(status: StatusCode, headers: &HeaderMap) -> bool {
    let identity = headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .all(|coding| {
            let coding = coding.as_bytes().trim_ascii();
            coding.eq_ignore_ascii_case(b"identity")
        });
    let grpc = headers.get(header::CONTENT_TYPE).is_some_and(|value| {
        let value = value.as_bytes();
        value.len() >= 16 && value[..16].eq_ignore_ascii_case(b"application/grpc")
    });
    status.is_success()
        && !matches!(
            status,
            StatusCode::NO_CONTENT | StatusCode::RESET_CONTENT | StatusCode::PARTIAL_CONTENT
        )
        && identity
        && !grpc
}

pub(crate) fn rewrite_headers(headers: &mut HeaderMap, vary_accept: bool) {
    // The body is new: the inner representation's length, ranges and validators no longer hold.
    // Connection-specific headers are never written (they break HTTP/2 and HTTP/3 streams).
    remove_hop_by_hop_headers(headers);
    for name in [
        header::CONTENT_LENGTH,
        header::CONTENT_RANGE,
        header::ACCEPT_RANGES,
        header::ETAG,
        header::LAST_MODIFIED,
        header::CONTENT_ENCODING,
    ] {
        headers.remove(name);
    }
    for name in ["content-md5", "digest", "content-digest", "repr-digest"] {
        headers.remove(name);
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-transform"),
    );
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    if vary_accept {
        add_vary_accept(headers);
    }
}

fn add_vary_accept(headers: &mut HeaderMap) {
    if !varies_on_accept(headers) {
        headers.append(header::VARY, HeaderValue::from_static("accept"));
    }
}

fn varies_on_accept(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::VARY)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .any(|name| name == "*" || name.eq_ignore_ascii_case("accept"))
}
