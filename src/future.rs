//! [`ResponseFuture`]: rewrites the inner response's head and picks the body's source: a
//! stream handed over by this crate, or the inner body through the decoder of its framing.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::{header, HeaderMap, Response, StatusCode};
use pin_project_lite::pin_project;

use crate::config::Config;
use crate::decode::Decoder;
use crate::disconnect::DisconnectGuard;
use crate::engine::{Admission, Handoff, HandoffSlot};
use crate::headers::{
    add_vary_accept, is_event_stream, is_grpc, is_identity_encoded, set_event_stream_headers,
};
use crate::metrics::StreamLabel;
use crate::{Framing, SseBody};

/// What a request carries to its response, for the response to become an event stream.
pub(crate) struct StreamRequest {
    pub(crate) config: Arc<Config>,
    /// Whether the choice depended on `Accept` (so caches must vary on it).
    pub(crate) vary_accept: bool,
    pub(crate) entry: Entry,
    /// The coding the request accepts, if the layer compresses and it accepts one.
    #[cfg(feature = "compression")]
    pub(crate) coding: Option<crate::compression::Coding>,
}

/// How a stream is let in.
pub(crate) enum Entry {
    /// The request asked for an event stream (or the layer converts every response): any
    /// convertible response becomes one, admitted with this (its place under the limits, taken
    /// at the request, and its metrics label).
    Admitted(Admission),
    /// The request did not ask: only a response that already is an event stream (or hands one
    /// over) becomes one, and takes its place under the limits then, with the per-key limit's
    /// `key` taken from the request.
    Offered {
        key: Option<String>,
        label: StreamLabel,
    },
}

impl Entry {
    fn is_admitted(&self) -> bool {
        matches!(self, Self::Admitted(_))
    }

    /// The stream's admission, or the refusal to send instead of a stream offered over a
    /// limit.
    pub(crate) fn admit(
        self,
        config: &Config,
        vary_accept: bool,
    ) -> Result<Admission, Box<Response<Bytes>>> {
        match self {
            Self::Admitted(admission) => Ok(admission),
            Self::Offered { key, label } => Ok(Admission {
                permit: config.limits.admit(key, vary_accept, false)?,
                label,
            }),
        }
    }
}

pin_project! {
    /// The future [`SseService`](crate::SseService) returns: the inner response, its head
    /// rewritten and its body wrapped in an [`SseBody`].
    #[must_use = "futures do nothing unless polled"]
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
            done: Option<DisconnectGuard>,
            // Taken when the response comes.
            stream: Option<StreamRequest>,
        },
        // Answered without a call (after the shutdown signal, or over a stream limit).
        Answered {
            response: Option<Response<Bytes>>,
        },
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (state, asked) = match &self.state {
            State::Called { stream, .. } => (
                "called",
                stream.as_ref().is_some_and(|s| s.entry.is_admitted()),
            ),
            State::Answered { .. } => ("answered", true),
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .field("event_stream_requested", &asked)
            .finish()
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: F, done: DisconnectGuard, stream: StreamRequest) -> Self {
        let state = State::Called {
            inner,
            done: Some(done),
            stream: Some(stream),
        };
        Self { state }
    }

    /// A future ready with `response`, the layer's own answer.
    pub(crate) fn answered(response: Response<Bytes>) -> Self {
        let response = Some(response);
        Self {
            state: State::Answered { response },
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
                    Some(stream) => into_event_stream(response, stream, done),
                    // Polled again after it completed: nothing is left to make a stream of.
                    None => untouched(response, done),
                }))
            }
            StateProj::Answered { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(response.map(SseBody::fixed))),
                // Polled again after it completed: there is nothing left to give.
                None => Poll::Pending,
            },
        }
    }
}

/// The response to a request that did not ask for an event stream. It is returned as it is, but
/// had the request asked, it would have been converted: caches must keep the two apart.
fn untouched<B>(mut response: Response<B>, done: Option<DisconnectGuard>) -> Response<SseBody<B>> {
    if is_convertible(response.status(), response.headers()) {
        add_vary_accept(response.headers_mut());
    }
    response.map(|body| SseBody::untouched(body, done))
}

/// The response as the client gets it: an event stream when the request asked for one and the
/// response is convertible, or when the response already is one; otherwise untouched.
fn into_event_stream<B>(
    response: Response<B>,
    stream: StreamRequest,
    done: Option<DisconnectGuard>,
) -> Response<SseBody<B>> {
    let (mut head, body) = response.into_parts();
    if !is_convertible(head.status, &head.headers) {
        return Response::from_parts(head, SseBody::untouched(body, done));
    }
    // One of this crate's own streams: served from its source, not decoded again.
    let handed_over = head
        .extensions
        .remove::<HandoffSlot>()
        .and_then(|slot| slot.take());
    let StreamRequest {
        config,
        vary_accept,
        entry,
        #[cfg(feature = "compression")]
        coding,
    } = stream;
    let admitted = entry.is_admitted();
    if !admitted && handed_over.is_none() && !is_event_stream(&head.headers) {
        return untouched(Response::from_parts(head, body), done);
    }
    let admission = match entry.admit(&config, vary_accept) {
        Ok(admission) => admission,
        // The response's body (a subscription, an upstream stream) is dropped unread.
        Err(refusal) => return (*refusal).map(SseBody::fixed),
    };
    // A stream the response offered is one already, whatever framing the layer forces on
    // responses to requests that asked.
    let forced = config.framing.filter(|_| admitted);
    let framing = forced
        .unwrap_or_else(|| Framing::from_content_type(head.headers.get(header::CONTENT_TYPE)));
    // Clients accept exactly 200 for an event stream.
    head.status = StatusCode::OK;
    set_event_stream_headers(&mut head.headers, vary_accept);
    #[cfg(feature = "compression")]
    let compressor = config
        .compression
        .as_ref()
        .and_then(|compression| compression.start(coding, &mut head.headers));
    let body = match handed_over {
        Some(source) => SseBody::handoff(Handoff::Taken(source), config, done, admission),
        None => {
            let decoder = Decoder::new(framing, config.max_message_size, config.retry);
            SseBody::events(body, decoder, config, done, admission)
        }
    };
    #[cfg(feature = "compression")]
    let body = body.compressed(compressor);
    Response::from_parts(head, body)
}

/// A 2xx with content and no content coding becomes an event stream; anything else (an error a
/// client must see, a 204 telling it not to reconnect, a partial or compressed body) passes
/// untouched. So does gRPC, whose framing only `GrpcLayer` (feature `grpc`) decodes.
fn is_convertible(status: StatusCode, headers: &HeaderMap) -> bool {
    status.is_success()
        && !matches!(
            status,
            StatusCode::NO_CONTENT | StatusCode::RESET_CONTENT | StatusCode::PARTIAL_CONTENT
        )
        && is_identity_encoded(headers)
        && !is_grpc(headers)
}
