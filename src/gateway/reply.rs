//! The responses the gateway hands back: the upstream's own, made fit to forward, or the
//! gateway's short answer when the upstream gave none.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::{Either, Full};

use crate::headers::remove_hop_by_hop_headers;

/// The body of an [`Upstream`](super::Upstream) response: the upstream's own, or the gateway's
/// short answer when the upstream gave none.
pub type UpstreamBody<B> = Either<B, Full<Bytes>>;

/// The upstream's response as the client gets it. An informational status (a `101` above all)
/// answers a request the client never made: the gateway forwards no upgrade, and a client
/// given a bare `101` is left with a dead connection.
pub(super) fn from_upstream<B>(response: Response<B>) -> Response<UpstreamBody<B>> {
    if response.status().is_informational() {
        let status = response.status().as_u16();
        tracing::warn!(
            status,
            "the upstream answered with an informational status: 502"
        );
        return status_reply(StatusCode::BAD_GATEWAY);
    }
    let (mut head, body) = response.into_parts();
    remove_hop_by_hop_headers(&mut head.headers);
    Response::from_parts(head, Either::Left(body))
}

/// The gateway's own answer: the status and its reason as plain text (nothing for a `204`).
pub(super) fn status_reply<B>(status: StatusCode) -> Response<UpstreamBody<B>> {
    if status == StatusCode::NO_CONTENT {
        let mut response = Response::new(Either::Right(Full::default()));
        *response.status_mut() = status;
        return response;
    }
    let text = format!(
        "{} {}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or_default()
    );
    let mut response = Response::new(Either::Right(Full::new(Bytes::from(text))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
