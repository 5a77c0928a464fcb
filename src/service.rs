//! [`SseService`]: decides per request whether the response becomes an event stream.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{header, HeaderValue, Request};
use tokio_util::sync::CancellationToken;
use tower_service::Service;

use crate::config::{builder_methods, Config};
use crate::disconnect::DisconnectGuard;
use crate::engine::Admission;
use crate::future::{Entry, ResponseFuture, StreamRequest};
use crate::headers::{accepts_event_stream, set_event_stream_headers};
use crate::metrics::StreamLabel;
use crate::{Disconnect, LastEventId};

/// What [`SseService::begin`] decided for a request.
pub(crate) enum Begun {
    /// Call the inner service; `stream` says what its response may become.
    Call {
        done: DisconnectGuard,
        stream: StreamRequest,
    },
    /// Answered without a call: a subscription after the shutdown signal, or a stream over a
    /// limit.
    Answered(http::Response<bytes::Bytes>),
}

/// The service [`SseLayer`](crate::SseLayer) wraps around an inner service.
///
/// Every request gets the [`Disconnect`] extension (and [`LastEventId`] when it carries the
/// header), so handlers behind the layer can always extract them. The 2xx response to an event
/// stream request (its `Accept` names `text/event-stream`, or any request with
/// [`always`](Self::always)) is turned into an event stream. So is a response that already is
/// one (`text/event-stream`, or a hub subscription), whatever the request's `Accept`: curl,
/// `fetch`, htmx and LLM SDKs do not all ask, and their streams get the same heartbeats,
/// limits and shutdown. Other responses pass untouched. An event stream request reaches the
/// inner service with `Accept-Encoding: identity`, since only an uncompressed body can be cut
/// into messages.
#[derive(Clone)]
pub struct SseService<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S> SseService<S> {
    /// Wraps `inner` with the defaults of [`SseLayer::new`](crate::SseLayer::new).
    pub fn new(inner: S) -> Self {
        Self::from_config(inner, Arc::default())
    }

    pub(crate) fn from_config(inner: S, config: Arc<Config>) -> Self {
        Self { inner, config }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Takes the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }

    fn config_mut(&mut self) -> &mut Config {
        Arc::make_mut(&mut self.config)
    }

    fn shutting_down(&self) -> bool {
        self.config
            .shutdown
            .as_ref()
            .is_some_and(CancellationToken::is_cancelled)
    }

    builder_methods!();
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for SseService<S>
where
    S: Service<Request<ReqBody>, Response = http::Response<ResBody>>,
{
    type Response = http::Response<crate::SseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let accepts = accepts_event_stream(request.headers());
        let (mut parts, body) = request.into_parts();
        match self.begin(&mut parts, self.config.always || accepts, accepts) {
            Begun::Call { done, stream } => {
                let request = Request::from_parts(parts, body);
                ResponseFuture::new(self.inner.call(request), done, stream)
            }
            Begun::Answered(response) => ResponseFuture::answered(response),
        }
    }
}

impl<S> SseService<S> {
    /// Gives the request its `Disconnect` and `LastEventId` extensions, and decides: `convert`
    /// when any convertible response is to become an event stream (otherwise only one that
    /// already is becomes one, and takes its place under the limits then), `subscription` when
    /// the request asked for one (only those are answered without a call after the shutdown
    /// signal: other requests still get their own answer, and a stream made of it ends at once
    /// with the shutdown event). A stream request over a limit is answered without a call.
    pub(crate) fn begin(
        &self,
        request: &mut http::request::Parts,
        convert: bool,
        subscription: bool,
    ) -> Begun {
        let config = &self.config;
        let vary_accept = !config.always;
        if convert && subscription && self.shutting_down() {
            tracing::debug!("event stream refused: shutting down");
            return Begun::Answered(shutting_down(config, vary_accept));
        }
        // Taken from every request (when a per-key limit or a metrics label is set): any
        // response may turn out to be an event stream, and the request is gone by then.
        let key = config.limits.key_of(request);
        let label = StreamLabel::of(config, request);
        let entry = if convert {
            match config.limits.admit(key, vary_accept, true) {
                Ok(permit) => Entry::Admitted(Admission { permit, label }),
                Err(refusal) => return Begun::Answered(*refusal),
            }
        } else {
            Entry::Offered { key, label }
        };
        let disconnect = Disconnect::new();
        request.extensions.insert(disconnect.clone());
        if let Some(id) = LastEventId::from_headers(&request.headers) {
            request.extensions.insert(id);
        }
        // The client's own codings, read before the inner service is asked for identity.
        #[cfg(feature = "compression")]
        let coding = config
            .compression
            .as_ref()
            .and_then(|compression| compression.negotiate(&request.headers));
        if convert {
            // Only an identity body can be re-framed: ask the inner service (or upstream) for
            // one, rather than receive a compressed body that would pass through unconverted.
            request.headers.insert(
                header::ACCEPT_ENCODING,
                HeaderValue::from_static("identity"),
            );
        }
        let stream = StreamRequest {
            config: config.clone(),
            vary_accept,
            entry,
            #[cfg(feature = "compression")]
            coding,
        };
        Begun::Call {
            done: disconnect.guard(),
            stream,
        }
    }
}

/// The answer to an event stream request after the shutdown signal: the retry hint, the
/// shutdown event, and the end. A `200`, since `EventSource` gives up for good on any other
/// status, where a stream that ends makes it reconnect after the retry delay.
fn shutting_down(config: &Config, vary_accept: bool) -> http::Response<bytes::Bytes> {
    let preamble = config.stream_preamble();
    let shutdown_event = config.stream_shutdown_event();
    let mut text = bytes::BytesMut::with_capacity(preamble.len() + shutdown_event.len());
    text.extend_from_slice(&preamble);
    text.extend_from_slice(&shutdown_event);
    let mut response = http::Response::new(text.freeze());
    set_event_stream_headers(response.headers_mut(), vary_accept);
    response
}

impl<S: std::fmt::Debug> std::fmt::Debug for SseService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SseService")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .finish()
    }
}
