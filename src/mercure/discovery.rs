//! Discovery: the `Link: <hub>; rel="mercure"` header that points an application's clients at
//! its hub, with the cursor a subscriber passes back so that nothing published between the
//! resource and its subscription is missed.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::header::{HeaderValue, LINK};
use http::{Request, Response};

use super::MercureHub;

/// The discovery header for an application's resources: `Link: <hub>; rel="mercure"`, with the
/// resource's last event id when there is one (a subscriber passes it back as `last_event_id`).
/// `None` when `hub` or the id cannot be written in a header.
///
/// ```
/// let link = tower_sse::mercure::discovery_link("https://example.com/.well-known/mercure", Some("urn:uuid:1"));
/// assert_eq!(
///     link.as_ref().and_then(|value| value.to_str().ok()),
///     Some(r#"<https://example.com/.well-known/mercure>; rel="mercure"; last-event-id="urn:uuid:1""#)
/// );
/// ```
pub fn discovery_link(hub: &str, last_event_id: Option<&str>) -> Option<HeaderValue> {
    if hub.contains(['<', '>']) {
        return None;
    }
    let mut link = format!("<{hub}>; rel=\"mercure\"");
    if let Some(id) = last_event_id {
        let escaped = id.replace('\\', "\\\\").replace('"', "\\\"");
        link.push_str(&format!("; last-event-id=\"{escaped}\""));
    }
    HeaderValue::from_str(&link).ok()
}

/// Adds the hub's discovery `Link` to every response of the service it wraps, with the hub's
/// cursor (`last-event-id`, `earliest` before any update) read before the service is called:
/// what is published while the resource is made is still delivered to a client that
/// subscribes with it. On Redis, reading the cursor is a round trip per request; if it fails,
/// the link goes without it. Made by [`MercureHub::discovery`].
///
/// ```
/// use axum::{routing::get, Router};
/// use tower_sse::hub::Hub;
/// use tower_sse::mercure::MercureHub;
///
/// let url = url::Url::parse("https://example.com/.well-known/mercure")?;
/// let mercure = MercureHub::builder(Hub::memory(), url).build();
/// let app: Router = Router::new()
///     .route("/books/1", get(|| async { "{\"title\":\"Dune\"}" }))
///     .layer(mercure.discovery());
/// # let _ = app;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct DiscoveryLayer {
    hub: MercureHub,
}

impl DiscoveryLayer {
    pub(super) fn new(hub: MercureHub) -> Self {
        Self { hub }
    }
}

impl<S> tower_layer::Layer<S> for DiscoveryLayer {
    type Service = Discovery<S>;

    fn layer(&self, inner: S) -> Discovery<S> {
        Discovery {
            inner,
            hub: self.hub.clone(),
        }
    }
}

/// The service of [`DiscoveryLayer`].
#[derive(Clone, Debug)]
pub struct Discovery<S> {
    inner: S,
    hub: MercureHub,
}

impl<S, B, R> tower_service::Service<Request<B>> for Discovery<S>
where
    S: tower_service::Service<Request<B>, Response = Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<R>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // The service made ready is the one called; a clone takes its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let hub = self.hub.clone();
        Box::pin(async move {
            let cursor = match hub.last_event_id().await {
                Ok(cursor) => Some(cursor.unwrap_or_else(|| "earliest".to_owned())),
                Err(error) => {
                    tracing::debug!(%error, "mercure discovery: the cursor could not be read");
                    None
                }
            };
            let mut response = inner.call(request).await?;
            if let Some(link) = discovery_link(hub.url().as_str(), cursor.as_deref()) {
                response.headers_mut().append(LINK, link);
            }
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_refuse_what_a_header_cannot_hold_and_escape_the_cursor() {
        assert_eq!(discovery_link("https://x/<", None), None);
        assert_eq!(
            discovery_link("/.well-known/mercure", Some("a\"b"))
                .as_ref()
                .and_then(|v| v.to_str().ok()),
            Some(r#"</.well-known/mercure>; rel="mercure"; last-event-id="a\"b""#)
        );
        assert_eq!(discovery_link("/hub", Some("a\nb")), None);
    }
}
