//! [`SseService`]: decides per request whether the response becomes an event stream.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{header, HeaderValue, Request};
use tokio_util::sync::CancellationToken;
use tower_service::Service;

use crate::config::{builder_methods, Config};
use crate::disconnect::DisconnectGuard;
use crate::future::{ResponseFuture, StreamRequest};
use crate::headers::accepts_event_stream;
use crate::{Disconnect, LastEventId};

/// What [`SseService::begin`] decided for a request.
pub(crate) enum Begun {
    /// Call the inner service; `stream` is set when the response becomes an event stream.
    Call {
        done: DisconnectGuard,
        stream: Option<StreamRequest>,
    },
    /// A subscription after the shutdown signal: answered without a call.
    ShuttingDown(StreamRequest),
}

/// The service [`SseLayer`](crate::SseLayer) wraps around an inner service.
///
/// Every request gets the [`Disconnect`] extension (and [`LastEventId`] when it carries the
/// header), so handlers behind the layer can always extract them. The 2xx response to an event
/// stream request (its `Accept` names `text/event-stream`, or any request with
/// [`always`](Self::always)) is turned into an event stream; other responses pass untouched.
/// An event stream request reaches the inner service with `Accept-Encoding: identity`, since
/// only an uncompressed body can be cut into messages.
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

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let accepts = accepts_event_stream(request.headers());
        match self.begin(&mut request, self.config.always || accepts, accepts) {
            Begun::Call { done, stream } => {
                ResponseFuture::new(self.inner.call(request), done, stream)
            }
            Begun::ShuttingDown(stream) => ResponseFuture::shutting_down(stream),
        }
    }
}

impl<S> SseService<S> {
    /// Gives the request its `Disconnect` and `LastEventId` extensions, and decides: `convert`
    /// when the response is to become an event stream, `subscription` when the request asked
    /// for one (only those are answered without a call after the shutdown signal: with
    /// `always`, other requests still get their own answer, and a converted stream ends at once
    /// with the shutdown event).
    pub(crate) fn begin<B>(
        &self,
        request: &mut Request<B>,
        convert: bool,
        subscription: bool,
    ) -> Begun {
        let disconnect = Disconnect::new();
        request.extensions_mut().insert(disconnect.clone());
        if let Some(id) = LastEventId::from_headers(request.headers()) {
            request.extensions_mut().insert(id);
        }
        let stream = convert.then(|| StreamRequest {
            config: self.config.clone(),
            vary_accept: !self.config.always,
        });
        match stream {
            Some(stream) if subscription && self.shutting_down() => Begun::ShuttingDown(stream),
            stream => {
                if stream.is_some() {
                    // Only an identity body can be re-framed: ask the inner service (or
                    // upstream) for one, rather than receive a compressed body that would pass
                    // through unconverted.
                    request.headers_mut().insert(
                        header::ACCEPT_ENCODING,
                        HeaderValue::from_static("identity"),
                    );
                }
                Begun::Call {
                    done: disconnect.guard(),
                    stream,
                }
            }
        }
    }

    /// The configuration, for layers built on this one (gRPC).
    #[allow(dead_code)]
    pub(crate) fn config(&self) -> &Arc<Config> {
        &self.config
    }
}

impl<S: std::fmt::Debug> std::fmt::Debug for SseService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SseService")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .finish()
    }
}
