//! The request side: an `EventSource` request becomes the gRPC call tonic expects.

use std::fmt;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{header, HeaderValue, Method, Request, StatusCode};
use http_body::{Body, Frame, SizeHint};
use percent_encoding::percent_decode_str;
use pin_project_lite::pin_project;

use crate::error::BoxError;

/// base64url, with or without padding.
const BASE64URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

pin_project! {
    /// The request body [`GrpcService`](super::GrpcService) hands the inner service: the
    /// client's own for a plain gRPC call, or, for an event stream request, the one request
    /// message as a gRPC frame.
    pub struct RequestBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        // A plain gRPC call's body, untouched.
        Client { #[pin] body: B },
        // The message from the query, framed; taken when sent.
        Framed { frame: Option<Bytes> },
        // A POST body read whole (up to `max` bytes), then sent framed.
        Collect { #[pin] body: B, message: BytesMut, max: usize, sent: bool },
    }
}

impl<B> RequestBody<B> {
    pub(super) fn client(body: B) -> Self {
        Self {
            kind: Kind::Client { body },
        }
    }

    fn framed(message: &[u8]) -> Self {
        Self {
            kind: Kind::Framed {
                frame: Some(frame(message)),
            },
        }
    }

    fn collect(body: B, max: usize) -> Self {
        Self {
            kind: Kind::Collect {
                body,
                message: BytesMut::new(),
                max,
                sent: false,
            },
        }
    }
}

/// One length-prefixed, uncompressed gRPC message.
fn frame(message: &[u8]) -> Bytes {
    let mut frame = BytesMut::with_capacity(5 + message.len());
    frame.put_u8(0);
    // The length was checked against `max_message_size`, itself a `usize`; a message too long
    // for the prefix was refused before.
    frame.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
    frame.put_slice(message);
    frame.freeze()
}

impl<B> Body for RequestBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().kind.project() {
            KindProj::Client { body } => body.poll_frame(cx).map(|frame| {
                frame.map(|frame| {
                    frame
                        .map(|frame| {
                            frame.map_data(|mut data| data.copy_to_bytes(data.remaining()))
                        })
                        .map_err(Into::into)
                })
            }),
            KindProj::Framed { frame } => {
                Poll::Ready(frame.take().map(|frame| Ok(Frame::data(frame))))
            }
            KindProj::Collect {
                mut body,
                message,
                max,
                sent,
            } => loop {
                if *sent {
                    return Poll::Ready(None);
                }
                match ready!(body.as_mut().poll_frame(cx)) {
                    Some(Ok(frame)) => {
                        if let Ok(mut data) = frame.into_data() {
                            if message.len() + data.remaining() > *max {
                                return Poll::Ready(Some(Err(
                                    RequestTooLarge { limit: *max }.into()
                                )));
                            }
                            message.put(&mut data);
                        }
                    }
                    Some(Err(error)) => return Poll::Ready(Some(Err(error.into()))),
                    None => {
                        *sent = true;
                        let frame = frame(message);
                        *message = BytesMut::new();
                        return Poll::Ready(Some(Ok(Frame::data(frame))));
                    }
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Client { body } => body.is_end_stream(),
            Kind::Framed { frame } => frame.is_none(),
            Kind::Collect { sent, .. } => *sent,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Client { body } => body.size_hint(),
            Kind::Framed { frame } => {
                SizeHint::with_exact(frame.as_ref().map_or(0, |f| f.len() as u64))
            }
            Kind::Collect { .. } => SizeHint::default(),
        }
    }
}

impl<B> fmt::Debug for RequestBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Client { .. } => "client",
            Kind::Framed { .. } => "framed",
            Kind::Collect { .. } => "collect",
        };
        f.debug_struct("RequestBody").field("kind", &kind).finish()
    }
}

/// A POST body longer than its `Content-Length` allowed (the server's HTTP layer normally stops
/// it first).
#[derive(Debug)]
struct RequestTooLarge {
    limit: usize,
}

impl fmt::Display for RequestTooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the request message exceeds {} bytes", self.limit)
    }
}

impl std::error::Error for RequestTooLarge {}

/// Why an event stream request cannot become a gRPC call: answered with `status` and `reason`.
#[derive(Debug)]
pub(super) struct Refused {
    pub(super) status: StatusCode,
    pub(super) reason: String,
}

/// Turns an event stream request into a call of the server-streaming method its path names:
/// `POST`, `content-type: application/grpc`, `te: trailers`, and one request message taken from
/// the `message` query parameter (base64url), from a `POST` body (raw protobuf), or empty.
pub(super) fn into_grpc_call<B>(
    request: Request<B>,
    max: usize,
) -> Result<Request<RequestBody<B>>, Refused> {
    // The length prefix holds a `u32`.
    let max = max.min(u32::MAX as usize);
    let (mut parts, body) = request.into_parts();
    let body = if parts.method == Method::POST {
        let announced = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|length| length.to_str().ok()?.parse::<u64>().ok());
        // The length is known before the call, so a body too long is refused here, not by a
        // failing call. `fetch` always sends it for a bytes body.
        let Some(announced) = announced else {
            return Err(Refused {
                status: StatusCode::LENGTH_REQUIRED,
                reason: "a POST subscription needs a Content-Length".into(),
            });
        };
        if announced > max as u64 {
            return Err(too_large(max));
        }
        RequestBody::collect(body, max)
    } else {
        let message = query_message(parts.uri.query())?;
        if message.len() > max {
            return Err(too_large(max));
        }
        RequestBody::framed(&message)
    };
    parts.method = Method::POST;
    for name in [
        header::CONTENT_LENGTH,
        header::CONTENT_ENCODING,
        header::TRANSFER_ENCODING,
    ] {
        parts.headers.remove(name);
    }
    // Compression is never advertised: the layer does not decode compressed messages.
    for name in ["grpc-encoding", "grpc-accept-encoding", "grpc-timeout"] {
        parts.headers.remove(name);
    }
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    parts
        .headers
        .insert(header::TE, HeaderValue::from_static("trailers"));
    Ok(Request::from_parts(parts, body))
}

/// The `message` query parameter, decoded: percent-decoding, then base64url with or without
/// padding. No parameter is the empty message.
fn query_message(query: Option<&str>) -> Result<Vec<u8>, Refused> {
    let Some(value) = query
        .unwrap_or_default()
        .split('&')
        .find_map(|pair| pair.strip_prefix("message="))
    else {
        return Ok(Vec::new());
    };
    let text: Vec<u8> = percent_decode_str(value).collect();
    BASE64URL.decode(text).map_err(|error| Refused {
        status: StatusCode::BAD_REQUEST,
        reason: format!("the `message` query parameter is not base64url ({error})"),
    })
}

fn too_large(max: usize) -> Refused {
    Refused {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        reason: format!("the request message exceeds {max} bytes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_is_base64url_with_or_without_padding() {
        let decoded = |query| query_message(Some(query)).map_err(|refused| refused.status);
        assert_eq!(decoded("message=CAE"), Ok(vec![8, 1]));
        assert_eq!(decoded("a=1&message=CAE%3D&b=2"), Ok(vec![8, 1]));
        assert_eq!(decoded("message=CAE="), Ok(vec![8, 1]));
        assert_eq!(decoded("message=-_8"), Ok(vec![0xfb, 0xff]));
        assert_eq!(decoded("other=1"), Ok(vec![]));
        assert_eq!(decoded("message="), Ok(vec![]));
        assert_eq!(decoded("message=+/8"), Err(StatusCode::BAD_REQUEST));
        assert_eq!(decoded("message=%ZZ"), Err(StatusCode::BAD_REQUEST));
        assert_eq!(decoded("message=C"), Err(StatusCode::BAD_REQUEST));
    }

    #[test]
    fn an_event_stream_request_becomes_the_call_tonic_expects() -> Result<(), http::Error> {
        let request = Request::get("/feed.Ticker/Subscribe?message=CAU")
            .header("accept", "text/event-stream")
            .header("last-event-id", "4")
            .header("content-length", "0")
            .header("grpc-accept-encoding", "gzip")
            .header("grpc-encoding", "gzip")
            .body(http_body_util::Empty::<Bytes>::new())?;
        let Ok(call) = into_grpc_call(request, 16) else {
            panic!("the request is valid"); // ok: test
        };
        assert_eq!(call.method(), Method::POST);
        assert_eq!(call.uri(), "/feed.Ticker/Subscribe?message=CAU");
        let headers = call.headers();
        assert_eq!(headers["content-type"], "application/grpc");
        assert_eq!(headers["te"], "trailers");
        assert_eq!(headers["last-event-id"], "4");
        for absent in ["content-length", "grpc-accept-encoding", "grpc-encoding"] {
            assert!(headers.get(absent).is_none(), "{absent}");
        }
        assert_eq!(call.body().size_hint().exact(), Some(7));

        let announced = Request::post("/feed.Ticker/Subscribe")
            .header("content-length", "17")
            .body(http_body_util::Empty::<Bytes>::new())?;
        let refused = into_grpc_call(announced, 16)
            .err()
            .map(|refused| refused.status);
        assert_eq!(refused, Some(StatusCode::PAYLOAD_TOO_LARGE));
        Ok(())
    }

    #[test]
    fn a_frame_is_prefixed_with_flag_and_length() {
        assert_eq!(&frame(&[8, 1])[..], [0, 0, 0, 0, 2, 8, 1]);
        assert_eq!(&frame(&[])[..], [0, 0, 0, 0, 0]);
    }
}
