//! The gateway (feature `gateway`): [`Upstream`] forwards requests to one upstream server, so that [`SseLayer`] can serve the
//! upstream's NDJSON or event stream to browsers (a gateway, or reverse proxy).
//!
//! [`SseLayer`]: crate::SseLayer

mod future;
mod path;
mod reply;
mod upstream;

pub use crate::headers::remove_hop_by_hop_headers;
pub use future::UpstreamFuture;
pub use reply::UpstreamBody;
pub use upstream::{InvalidUpstream, Upstream, DEFAULT_HEAD_TIMEOUT};
