//! [`Upstream`]: the request as the upstream gets it, and the response as the client does.

use std::convert::Infallible;
use std::fmt;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use tower_service::Service;

use super::future::{State, UpstreamFuture};
use super::path::has_dot_segment;
use super::reply::UpstreamBody;
use crate::error::BoxError;
use crate::headers::remove_hop_by_hop_headers;

/// How long [`Upstream`] waits for the upstream's response head by default: below the 60 s idle
/// timeouts of nginx and load balancers in front, so the gateway's `504` reaches the client.
pub const DEFAULT_HEAD_TIMEOUT: Duration = Duration::from_secs(30);

/// The pseudonym the gateway gives itself in `Via`.
const VIA: &str = "tower-sse";

/// Joins the `Cookie` fields an HTTP/2 client sends one per cookie into the one field HTTP/1.1
/// allows (RFC 9113 §8.2.3).
fn join_cookies(headers: &mut HeaderMap) {
    let mut cookies = headers.get_all(header::COOKIE).iter();
    if cookies.next().is_none() || cookies.next().is_none() {
        return;
    }
    let joined: Vec<&[u8]> = headers
        .get_all(header::COOKIE)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    if let Ok(joined) = HeaderValue::from_bytes(&joined.join(&b"; "[..])) {
        headers.insert(header::COOKIE, joined);
    }
}

/// A Tower service that forwards every request to one upstream server through an HTTP client
/// service, such as hyper-util's `Client`. Wrapped in [`SseLayer`](crate::SseLayer), it serves
/// the upstream's streams to browsers as compliant, heart-beaten events.
///
/// Each request is rewritten as a reverse proxy must:
///
/// - the URI takes the upstream's scheme and authority, and the request's path and query are
///   appended to the upstream's path (`http://up:9000/api` and `/chat?x=1` give
///   `http://up:9000/api/chat?x=1`), byte for byte; a path holding a `.` or `..` segment under
///   any reading an upstream is known to apply (percent-decoded once or twice, `\` read as `/`,
///   `;` parameters dropped, so `/..;/`, `/..%2f`, `/%5c..` and `/%252e%252e/` all count) is
///   refused with `400`, so no request can climb out of the prefix; the asterisk form is refused
///   too, but `OPTIONS *` is answered `204` by the gateway itself;
/// - hop-by-hop headers are removed ([`remove_hop_by_hop_headers`]), `Host` becomes the
///   upstream's authority, the `Cookie` fields an HTTP/2 client splits are joined again, and
///   `Via` names the gateway; end-to-end headers (`Accept`, `Last-Event-ID`, `Authorization`,
///   cookies, and any `X-Forwarded-*` the client sent) pass as they are;
/// - the version becomes HTTP/1.1 whatever the browser spoke (hyper-util's `build_http` client
///   speaks HTTP/1.1 to the upstream unless it is built `http2_only`).
///
/// The upstream's response passes with its hop-by-hop headers removed. When no response head
/// comes, the gateway answers itself, with a status an `EventSource` does not retry:
/// `502 Bad Gateway` when the client fails (connection refused or reset, a broken head), and
/// `504 Gateway Timeout` after the [head timeout](Self::head_timeout); the client's error is not
/// shown to the peer, but logged (a `tracing` warning, with its sources). An upstream that
/// answers with an informational status (`101 Switching Protocols` above all) gets the client a
/// `502` too. `CONNECT` is refused (`405`): the gateway forwards requests, not tunnels, and
/// forwards no `Upgrade`.
/// Once the head has come, the body is the upstream's: under [`SseLayer`](crate::SseLayer), an
/// upstream that fails mid-stream ends the event stream with an `error` event, and a client that
/// leaves drops the upstream request (an HTTP/1.1 upstream connection is closed).
///
/// `Upstream` adds no `Forwarded` or `X-Forwarded-*` headers: it does not know the peer's
/// address. Add them, and remove the ones a client may forge, in a layer of your own where the
/// server knows the peer.
///
/// ```
/// use std::time::Duration;
/// use hyper_util::client::legacy::Client;
/// use hyper_util::rt::TokioExecutor;
/// use tower::ServiceBuilder;
/// use tower_sse::gateway::Upstream;
/// use tower_sse::SseLayer;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let client = Client::builder(TokioExecutor::new()).build_http::<hyper::body::Incoming>();
/// let gateway = ServiceBuilder::new()
///     .layer(SseLayer::new().always().heartbeat(Duration::from_secs(20)))
///     .service(Upstream::new(client, "http://127.0.0.1:9000".parse()?)?);
/// # let _ = gateway;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Upstream<C> {
    client: C,
    scheme: Scheme,
    authority: Authority,
    /// The upstream URI's path without its trailing `/`, put before every request's path.
    prefix: String,
    head_timeout: Option<Duration>,
}

impl<C> Upstream<C> {
    /// Forwards to `upstream` (`http` or `https`, an authority and an optional path, no query)
    /// through `client`; an `https` upstream needs a client with a TLS connector. The head
    /// timeout is [`DEFAULT_HEAD_TIMEOUT`].
    pub fn new(client: C, upstream: Uri) -> Result<Self, InvalidUpstream> {
        let parts = upstream.into_parts();
        let (Some(scheme), Some(authority)) = (parts.scheme, parts.authority) else {
            return Err(InvalidUpstream("it needs a scheme and an authority"));
        };
        if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
            return Err(InvalidUpstream("its scheme must be http or https"));
        }
        if authority.as_str().contains('@') {
            return Err(InvalidUpstream("it must not hold credentials"));
        }
        let path = parts
            .path_and_query
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        if path.query().is_some() {
            return Err(InvalidUpstream("it must not have a query"));
        }
        Ok(Self {
            client,
            scheme,
            authority,
            prefix: path.path().trim_end_matches('/').to_owned(),
            head_timeout: Some(DEFAULT_HEAD_TIMEOUT),
        })
    }

    /// How long to wait for the upstream's response head before answering
    /// `504 Gateway Timeout` (default 30 s). It runs from the call, and covers waiting for the
    /// client to be ready, connecting, and sending the request body. Keep it below the idle
    /// timeout of any proxy in front. `Duration::ZERO` waits for ever. The body, once it flows,
    /// has no deadline: heartbeats keep the client's connection open while the upstream is
    /// silent.
    pub fn head_timeout(mut self, timeout: Duration) -> Self {
        self.head_timeout = (!timeout.is_zero()).then_some(timeout);
        self
    }

    /// The client.
    pub fn get_ref(&self) -> &C {
        &self.client
    }

    /// The request as the upstream gets it, or the status that refuses it.
    pub(super) fn forwarded<B>(&self, request: Request<B>) -> Result<Request<B>, StatusCode> {
        let (mut parts, body) = request.into_parts();
        if parts.method == Method::CONNECT {
            return Err(StatusCode::METHOD_NOT_ALLOWED);
        }
        // The asterisk form names the server, not a resource: it cannot be put under a prefix.
        if parts.uri.path() == "*" {
            return Err(if parts.method == Method::OPTIONS {
                StatusCode::NO_CONTENT
            } else {
                StatusCode::BAD_REQUEST
            });
        }
        if has_dot_segment(parts.uri.path()) {
            return Err(StatusCode::BAD_REQUEST);
        }
        let path = parts.uri.path_and_query().map_or("/", PathAndQuery::as_str);
        // Only a path too long for a URI once the prefix is put before it can fail here.
        let path = PathAndQuery::try_from(format!("{}{path}", self.prefix))
            .map_err(|_| StatusCode::URI_TOO_LONG)?;
        parts.uri = Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path)
            .build()
            .map_err(|_| StatusCode::URI_TOO_LONG)?;
        let headers = &mut parts.headers;
        remove_hop_by_hop_headers(headers);
        join_cookies(headers);
        let host = HeaderValue::from_str(self.authority.as_str());
        headers.insert(header::HOST, host.map_err(|_| StatusCode::BAD_GATEWAY)?);
        let via = match parts.version {
            Version::HTTP_10 => "1.0",
            Version::HTTP_2 => "2",
            Version::HTTP_3 => "3",
            _ => "1.1",
        };
        let via = HeaderValue::from_str(&format!("{via} {VIA}"));
        headers.append(header::VIA, via.map_err(|_| StatusCode::BAD_GATEWAY)?);
        parts.version = Version::HTTP_11;
        Ok(Request::from_parts(parts, body))
    }
}

impl<C, ReqBody, ResBody> Service<Request<ReqBody>> for Upstream<C>
where
    C: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    C::Error: Into<BoxError>,
{
    type Response = Response<UpstreamBody<ResBody>>;
    type Error = Infallible;
    type Future = UpstreamFuture<C, Request<ReqBody>>;

    /// Always ready: the client's readiness is awaited in the response future, so that a client
    /// that fails to get ready is a `502` too.
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let state = match self.forwarded(request) {
            Ok(request) => State::Waiting {
                client: self.client.clone(),
                request: Some(request),
            },
            Err(status) => State::Answered { status },
        };
        UpstreamFuture::new(state, self.head_timeout.map(tokio::time::sleep))
    }
}

impl<C> fmt::Debug for Upstream<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream")
            .field("scheme", &self.scheme)
            .field("authority", &self.authority)
            .field("prefix", &self.prefix)
            .field("head_timeout", &self.head_timeout)
            .finish_non_exhaustive()
    }
}

/// The upstream URI given to [`Upstream::new`] cannot be forwarded to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidUpstream(&'static str);

impl fmt::Display for InvalidUpstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid upstream URI: {}", self.0)
    }
}

impl std::error::Error for InvalidUpstream {}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(in crate::gateway) fn upstream(uri: &'static str) -> Result<Upstream<()>, InvalidUpstream> {
        Upstream::new((), Uri::from_static(uri))
    }

    #[test]
    fn the_upstream_uri_needs_a_scheme_and_an_authority_and_no_query() {
        assert!(upstream("http://127.0.0.1:9000").is_ok());
        assert!(upstream("/only/a/path").is_err());
        assert!(upstream("http://127.0.0.1:9000/?x=1").is_err());
        assert!(upstream("ftp://127.0.0.1:9000").is_err());
        assert!(upstream("http://user:secret@127.0.0.1:9000").is_err());
    }

    #[test]
    fn paths_are_appended_to_the_upstream_path() -> Result<(), Box<dyn std::error::Error>> {
        for (base, path, expected) in [
            ("http://up:9000", "/chat?x=1", "http://up:9000/chat?x=1"),
            ("http://up:9000/", "/", "http://up:9000/"),
            (
                "http://up:9000/api/",
                "/chat?x=1",
                "http://up:9000/api/chat?x=1",
            ),
            ("https://up/api", "/a/b", "https://up/api/a/b"),
        ] {
            let request = Request::get(path).version(Version::HTTP_2).body(())?;
            let forwarded = upstream(base)?
                .forwarded(request)
                .map_err(|s| s.to_string())?;
            assert_eq!(forwarded.uri(), expected);
            assert_eq!(forwarded.version(), Version::HTTP_11);
            assert_eq!(forwarded.headers()["via"], "2 tower-sse");
        }
        Ok(())
    }

    #[test]
    fn split_cookies_are_joined() -> Result<(), Box<dyn std::error::Error>> {
        let request = Request::get("/")
            .header("cookie", "a=1")
            .header("cookie", "b=2")
            .body(())?;
        let forwarded = upstream("http://up")?
            .forwarded(request)
            .map_err(|s| s.to_string())?;
        let cookies: Vec<_> = forwarded.headers().get_all("cookie").iter().collect();
        assert_eq!(cookies, ["a=1; b=2"]);
        Ok(())
    }

    #[test]
    fn hop_by_hop_headers_and_host_are_not_forwarded() -> Result<(), Box<dyn std::error::Error>> {
        let request = Request::get("/events")
            .header("host", "gateway.example")
            .header("connection", "keep-alive, X-Trace , upgrade")
            .header("connection", "x-other")
            .header("x-trace", "1")
            .header("x-other", "2")
            .header("keep-alive", "timeout=5")
            .header("proxy-authorization", "Basic Zm9vOmJhcg==")
            .header("te", "trailers")
            .header("upgrade", "websocket")
            .header("accept", "text/event-stream")
            .header("last-event-id", "41")
            .header("authorization", "Bearer t")
            .body(())?;
        let forwarded = upstream("http://up:9000")?
            .forwarded(request)
            .map_err(|s| s.to_string())?;
        let mut names: Vec<&str> = forwarded
            .headers()
            .keys()
            .map(|name| name.as_str())
            .collect();
        names.sort_unstable();
        assert_eq!(
            names,
            ["accept", "authorization", "host", "last-event-id", "via"]
        );
        assert_eq!(forwarded.headers()["host"], "up:9000");
        assert_eq!(forwarded.headers()["last-event-id"], "41");
        Ok(())
    }
}
