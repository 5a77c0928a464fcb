//! [`SseLayer`]: the [`Layer`] that wraps a service in an [`SseService`].

use std::sync::Arc;

use tower_layer::Layer;

use crate::config::{builder_methods, Config};
use crate::SseService;

/// A [`Layer`] that serves the inner service's responses as Server-Sent Events.
///
/// See the [crate documentation](crate) for what it does to requests and responses.
///
/// ```
/// use std::time::Duration;
/// use axum::{routing::get, Router};
/// use tower_sse::SseLayer;
///
/// let app: Router = Router::new()
///     .route("/ticks", get(|| async { "one message" }))
///     .layer(SseLayer::new().heartbeat(Duration::from_secs(15)).retry(Duration::from_secs(3)));
/// ```
#[derive(Clone, Default)]
#[must_use = "a layer does nothing until it wraps a service"]
pub struct SseLayer {
    config: Arc<Config>,
}

impl SseLayer {
    /// A layer with the defaults: negotiated by `Accept` (or offered by the response), heartbeat every 15 s, retry hint 3 s,
    /// messages up to 1 MiB, framing from the inner `Content-Type`, a stalled client after a
    /// 30 s write deadline, no maximum age, no shutdown signal.
    #[must_use = "a layer does nothing until it wraps a service"]
    pub fn new() -> Self {
        Self::default()
    }

    /// The configuration, also for layers built on this one (gRPC).
    pub(crate) fn config(&self) -> &Arc<Config> {
        &self.config
    }

    fn config_mut(&mut self) -> &mut Config {
        Arc::make_mut(&mut self.config)
    }

    builder_methods!();
}

impl<S> Layer<S> for SseLayer {
    type Service = SseService<S>;

    fn layer(&self, inner: S) -> SseService<S> {
        SseService::from_config(inner, self.config().clone())
    }
}

impl std::fmt::Debug for SseLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SseLayer")
            .field("config", &self.config)
            .finish()
    }
}
