//! axum extractors (feature `axum`): [`Disconnect`] and [`LastEventId`] as handler arguments.
//!
//! ```
//! use axum::{body::Body, routing::get, Router};
//! use tower_sse::{Disconnect, LastEventId, SseLayer};
//!
//! async fn ticks(disconnect: Disconnect, last: Option<LastEventId>) -> Body {
//!     let from = last.and_then(|id| id.as_str().parse::<u64>().ok()).unwrap_or(0);
//!     # let _ = (disconnect, from);
//!     Body::empty()
//! }
//!
//! let app: Router = Router::new().route("/ticks", get(ticks)).layer(SseLayer::new());
//! ```

use std::fmt;

use axum_core::extract::{FromRequestParts, OptionalFromRequestParts};
use axum_core::response::{IntoResponse, Response};
use http::request::Parts;
use http::StatusCode;

use crate::{Disconnect, LastEventId};

/// Why [`Disconnect`] or [`LastEventId`] could not be extracted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SseRejection {
    /// The request did not come through [`SseLayer`](crate::SseLayer), which inserts both: a
    /// `500`, since the application is wired wrong.
    MissingLayer,
    /// `LastEventId` was required, and the request carried no `Last-Event-ID` (take an
    /// `Option<LastEventId>` to accept first visits): a `400`.
    NoLastEventId,
}

impl fmt::Display for SseRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::MissingLayer => {
                "tower-sse: this handler takes Disconnect or LastEventId, but the request did not \
                 come through SseLayer (add `.layer(SseLayer::new())` in front of it)"
            }
            Self::NoLastEventId => "the request carries no Last-Event-ID",
        })
    }
}

impl std::error::Error for SseRejection {}

impl IntoResponse for SseRejection {
    fn into_response(self) -> Response {
        let status = match self {
            Self::MissingLayer => StatusCode::INTERNAL_SERVER_ERROR,
            Self::NoLastEventId => StatusCode::BAD_REQUEST,
        };
        (status, format!("{self}\n")).into_response()
    }
}

/// Whether the request came through the layer (which gives every request a `Disconnect`).
fn through_layer(parts: &Parts) -> Result<(), SseRejection> {
    match parts.extensions.get::<Disconnect>() {
        Some(_) => Ok(()),
        None => Err(SseRejection::MissingLayer),
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Disconnect {
    type Rejection = SseRejection;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Disconnect>()
            .cloned()
            .ok_or(SseRejection::MissingLayer)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for LastEventId {
    type Rejection = SseRejection;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        through_layer(parts)?;
        parts
            .extensions
            .get::<LastEventId>()
            .cloned()
            .ok_or(SseRejection::NoLastEventId)
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for LastEventId {
    type Rejection = SseRejection;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Self>, Self::Rejection> {
        through_layer(parts)?;
        Ok(parts.extensions.get::<LastEventId>().cloned())
    }
}
