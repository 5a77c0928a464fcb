//! [`SseService`]: decides per request whether the response becomes an event stream.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{header, HeaderMap, HeaderValue, Request};
use tokio_util::sync::CancellationToken;
use tower_service::Service;

use crate::future::{ResponseFuture, StreamRequest};
use crate::layer::{builder_methods, Config};
use crate::{Disconnect, LastEventId};

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
        let token = CancellationToken::new();
        request
            .extensions_mut()
            .insert(Disconnect::new(token.clone()));
        if let Some(id) = LastEventId::from_headers(request.headers()) {
            request.extensions_mut().insert(id);
        }
        let always = self.config.always;
        let accepts = accepts_event_stream(request.headers());
        let mut stream = (always || accepts).then(|| StreamRequest {
            config: self.config.clone(),
            vary_accept: !always,
        });
        // Only a subscription is answered without a call: with `always`, other requests still
        // get their own answer (an error passes; a stream ends at once with the shutdown event).
        if let Some(stream) = stream.take_if(|_| accepts && self.shutting_down()) {
            return ResponseFuture::shutting_down(stream);
        }
        if stream.is_some() {
            // Only an identity body can be re-framed: ask the inner service (or upstream) for
            // one, rather than receive a compressed body that would pass through unconverted.
            request.headers_mut().insert(
                header::ACCEPT_ENCODING,
                HeaderValue::from_static("identity"),
            );
        }
        ResponseFuture::new(self.inner.call(request), token.drop_guard(), stream)
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

/// Whether an `Accept` media range names `text/event-stream` with a non-zero quality. Wildcards
/// (`*/*`, `text/*`) do not count: a browser's page navigation sends them, and must not get an
/// event stream.
pub(crate) fn accepts_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|range| {
            let mut parts = range.split(';');
            let essence = parts.next().unwrap_or_default().trim();
            essence.eq_ignore_ascii_case("text/event-stream")
                && parts.all(|param| {
                    let (name, value) = param.split_once('=').unwrap_or((param, ""));
                    !name.trim().eq_ignore_ascii_case("q")
                        || value.trim().parse::<f32>().map_or(true, |q| q > 0.0)
                })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepts(value: &str) -> bool {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT,
            value.parse().unwrap_or(HeaderValue::from_static("")),
        );
        accepts_event_stream(&headers)
    }

    #[test]
    fn accept_names_event_stream_explicitly() {
        assert!(accepts("text/event-stream"));
        assert!(accepts("TEXT/Event-Stream ; q=0.5"));
        assert!(accepts("application/json, text/event-stream;q=1"));
        assert!(!accepts("text/event-stream;q=0"));
        assert!(!accepts("text/event-stream; q=0.0"));
        assert!(!accepts("*/*"));
        assert!(!accepts("text/*"));
        assert!(!accepts("text/html,application/xhtml+xml,*/*;q=0.8"));
        assert!(!accepts("text/event-streams"));
        assert!(!accepts(""));
    }
}
