//! gRPC statuses: reading them from headers, their HTTP statuses, and the `error` event.

use http::{HeaderMap, StatusCode};
use percent_encoding::percent_decode;

use crate::{Event, StreamError};

/// The gRPC status codes this crate names.
pub mod code {
    /// Not an error.
    pub const OK: i32 = 0;
    /// The operation was cancelled.
    pub const CANCELLED: i32 = 1;
    /// An unknown error.
    pub const UNKNOWN: i32 = 2;
    /// The client gave an invalid argument.
    pub const INVALID_ARGUMENT: i32 = 3;
    /// The deadline passed.
    pub const DEADLINE_EXCEEDED: i32 = 4;
    /// Something requested was not found.
    pub const NOT_FOUND: i32 = 5;
    /// What the client tried to create exists already.
    pub const ALREADY_EXISTS: i32 = 6;
    /// The caller may not do this.
    pub const PERMISSION_DENIED: i32 = 7;
    /// A resource, such as a quota or the message size, is exhausted.
    pub const RESOURCE_EXHAUSTED: i32 = 8;
    /// The system is not in a state the operation needs.
    pub const FAILED_PRECONDITION: i32 = 9;
    /// The operation was aborted.
    pub const ABORTED: i32 = 10;
    /// The operation went past the valid range.
    pub const OUT_OF_RANGE: i32 = 11;
    /// The operation is not implemented.
    pub const UNIMPLEMENTED: i32 = 12;
    /// An internal error.
    pub const INTERNAL: i32 = 13;
    /// The service is unavailable for now.
    pub const UNAVAILABLE: i32 = 14;
    /// Data was lost.
    pub const DATA_LOSS: i32 = 15;
    /// The caller is not authenticated.
    pub const UNAUTHENTICATED: i32 = 16;
}

/// The HTTP status a failed call answers with when it fails before any message (a
/// "trailers-only" response), so that `EventSource` stops instead of retrying. The mapping is
/// the one of `google.rpc.Code`:
///
/// | gRPC | HTTP |
/// | --- | --- |
/// | `INVALID_ARGUMENT`, `FAILED_PRECONDITION`, `OUT_OF_RANGE` | 400 |
/// | `UNAUTHENTICATED` | 401 |
/// | `PERMISSION_DENIED` | 403 |
/// | `NOT_FOUND` | 404 |
/// | `ALREADY_EXISTS`, `ABORTED` | 409 |
/// | `RESOURCE_EXHAUSTED` | 429 |
/// | `CANCELLED` | 499 |
/// | `UNIMPLEMENTED` | 501 |
/// | `UNAVAILABLE` | 503 |
/// | `DEADLINE_EXCEEDED` | 504 |
/// | `UNKNOWN`, `INTERNAL`, `DATA_LOSS`, any other | 500 |
///
/// ```
/// use http::StatusCode;
/// use tower_sse::grpc::{code, http_status};
///
/// assert_eq!(http_status(code::NOT_FOUND), StatusCode::NOT_FOUND);
/// assert_eq!(http_status(99), StatusCode::INTERNAL_SERVER_ERROR);
/// ```
pub fn http_status(grpc_code: i32) -> StatusCode {
    match grpc_code {
        code::OK => StatusCode::OK,
        code::INVALID_ARGUMENT | code::FAILED_PRECONDITION | code::OUT_OF_RANGE => {
            StatusCode::BAD_REQUEST
        }
        code::UNAUTHENTICATED => StatusCode::UNAUTHORIZED,
        code::PERMISSION_DENIED => StatusCode::FORBIDDEN,
        code::NOT_FOUND => StatusCode::NOT_FOUND,
        code::ALREADY_EXISTS | code::ABORTED => StatusCode::CONFLICT,
        code::RESOURCE_EXHAUSTED => StatusCode::TOO_MANY_REQUESTS,
        code::CANCELLED => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        code::UNIMPLEMENTED => StatusCode::NOT_IMPLEMENTED,
        code::UNAVAILABLE => StatusCode::SERVICE_UNAVAILABLE,
        code::DEADLINE_EXCEEDED => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The status of a call as its headers or trailers carry it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Status {
    pub(crate) code: i32,
    pub(crate) message: String,
}

impl Status {
    /// Reads `grpc-status` (one that does not parse, or is not a defined code, is `UNKNOWN`, as
    /// gRPC clients read it)
    /// and the percent-encoded `grpc-message`. Other headers, `grpc-status-details-bin` among
    /// them, are not read at all, so no malformed value can fail here.
    pub(crate) fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let code = headers.get("grpc-status")?;
        let code = std::str::from_utf8(code.as_bytes())
            .ok()
            .and_then(|code| code.parse().ok())
            .filter(|code| (code::OK..=code::UNAUTHENTICATED).contains(code))
            .unwrap_or(code::UNKNOWN);
        let message = headers
            .get("grpc-message")
            .map(|message| {
                percent_decode(message.as_bytes())
                    .decode_utf8_lossy()
                    .into_owned()
            })
            .unwrap_or_default();
        Some(Self { code, message })
    }

    pub(crate) fn into_result(self) -> Result<(), StreamError> {
        if self.code == code::OK {
            return Ok(());
        }
        Err(CallError::Status {
            code: self.code,
            message: self.message,
        }
        .into())
    }
}

/// How a gRPC stream failed: what [`StreamError::Decode`] holds for it, and what
/// [`error_event`] reads.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallError {
    /// The call ended with a status other than OK in its trailers, or without a status.
    Status {
        /// The gRPC status code.
        code: i32,
        /// The status message, percent-decoded.
        message: String,
    },
    /// A message was compressed; the layer never asks for compression and does not decode it.
    Compressed,
}

impl CallError {
    /// The gRPC failure a stream error holds, if it is one.
    pub fn of(error: &StreamError) -> Option<&Self> {
        match error {
            StreamError::Decode(error) => error.downcast_ref(),
            _ => None,
        }
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Status { code, message } => {
                write!(f, "the gRPC stream ended with status {code}: {message}")
            }
            Self::Compressed => f.write_str("a gRPC message was compressed"),
        }
    }
}

impl std::error::Error for CallError {}

impl From<CallError> for StreamError {
    fn from(error: CallError) -> Self {
        StreamError::Decode(Box::new(error))
    }
}

/// The body of a failed call's answer and of its `error` event: `{"code": .., "message": ..}`.
pub(crate) fn status_json(code: i32, message: &str) -> String {
    serde_json::json!({ "code": code, "message": message }).to_string()
}

/// The default final event of a gRPC event stream: `event: error` whose data is the JSON
/// `{"code": .., "message": ..}`. A status from the trailers keeps its code and message; the
/// layer's own failures get a code and a short message that reveals no internal error text.
///
/// ```
/// use tower_sse::grpc::{error_event, CallError};
///
/// let event = error_event(&CallError::Status { code: 5, message: "no such feed".into() }.into());
/// assert_eq!(event.encode(), "event: error\ndata: {\"code\":5,\"message\":\"no such feed\"}\n\n");
/// ```
pub fn error_event(error: &StreamError) -> Event {
    let (code, message) = match (error, CallError::of(error)) {
        (_, Some(CallError::Status { code, message })) => (*code, message.as_str()),
        (_, Some(CallError::Compressed)) => (code::UNIMPLEMENTED, "compressed message"),
        (StreamError::TooLarge { .. }, _) => (code::RESOURCE_EXHAUSTED, "message too large"),
        (StreamError::Event(_), _) => (code::INTERNAL, "invalid event"),
        _ => (code::UNKNOWN, "stream failed"),
    };
    Event::error().data(status_json(code, message))
}
