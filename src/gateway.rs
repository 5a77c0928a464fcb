//! [`Upstream`]: forwards requests to one upstream server, so that [`SseLayer`] can serve the
//! upstream's NDJSON or event stream to browsers (a gateway, or reverse proxy).
//!
//! [`SseLayer`]: crate::SseLayer

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, Full};
use percent_encoding::percent_decode;
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower_service::Service;

use crate::error::{BoxError, Chain};

/// How long [`Upstream`] waits for the upstream's response head by default: below the 60 s idle
/// timeouts of nginx and load balancers in front, so the gateway's `504` reaches the client.
pub const DEFAULT_HEAD_TIMEOUT: Duration = Duration::from_secs(30);

/// The pseudonym the gateway gives itself in `Via`.
const VIA: &str = "tower-sse";

/// The headers that describe one connection, never the message: the hop-by-hop headers of
/// RFC 9110 §7.6.1, and the proxy authentication ones, which are meant for the next hop only.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes the hop-by-hop headers: `Connection` and every header it names, `Keep-Alive`,
/// `Proxy-Connection`, `Proxy-Authenticate`, `Proxy-Authorization`, `TE`, `Trailer`,
/// `Transfer-Encoding` and `Upgrade`. [`Upstream`] does it in both directions.
///
/// ```
/// use http::{header, HeaderMap, HeaderValue};
/// use tower_sse::gateway::remove_hop_by_hop_headers;
///
/// let mut headers = HeaderMap::new();
/// headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-session"));
/// headers.insert("x-session", HeaderValue::from_static("abc"));
/// headers.insert("last-event-id", HeaderValue::from_static("42"));
/// remove_hop_by_hop_headers(&mut headers);
/// assert_eq!(headers.len(), 1);
/// assert_eq!(headers["last-event-id"], "42");
/// ```
pub fn remove_hop_by_hop_headers(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&byte| byte == b','))
        .filter_map(|name| HeaderName::from_bytes(name.trim_ascii()).ok())
        .collect();
    for name in named.iter().chain(&HOP_BY_HOP) {
        headers.remove(name);
    }
}

/// Whether a path has a `.` or `..` segment under any reading an upstream is known to apply:
/// as it is, percent-decoded once or twice, with `\` read as `/`, and with `;` parameters
/// dropped from each segment (Tomcat and others read `..;x` as `..`). Any such segment could be
/// resolved against the path before it.
fn has_dot_segment(path: &str) -> bool {
    let once: Vec<u8> = percent_decode(path.as_bytes()).collect();
    let twice: Vec<u8> = percent_decode(&once).collect();
    // Splitting on both separators and cutting each segment at its first `;` only adds
    // readings: a segment that is a dot segment without them still is one with them.
    let dotted = |path: &[u8]| {
        path.split(|&byte| byte == b'/' || byte == b'\\')
            .map(|segment| {
                segment
                    .split(|&byte| byte == b';')
                    .next()
                    .unwrap_or_default()
            })
            .any(|segment| segment == b"." || segment == b"..")
    };
    dotted(path.as_bytes()) || dotted(&once) || dotted(&twice)
}

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

/// The body of an [`Upstream`] response: the upstream's own, or the gateway's short answer when
/// the upstream gave none.
pub type UpstreamBody<B> = Either<B, Full<Bytes>>;

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
    fn forwarded<B>(&self, request: Request<B>) -> Result<Request<B>, StatusCode> {
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
        UpstreamFuture {
            state,
            deadline: self.head_timeout.map(tokio::time::sleep),
        }
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

pin_project! {
    /// The future [`Upstream`] returns: the upstream's response head, or the gateway's answer.
    pub struct UpstreamFuture<C, R>
    where
        C: Service<R>,
    {
        #[pin]
        state: State<C, R>,
        #[pin]
        deadline: Option<Sleep>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<C, R>
    where
        C: Service<R>,
    {
        // Waiting for the client to be ready.
        Waiting { client: C, request: Option<R> },
        // Waiting for the upstream's response head.
        Sent { #[pin] response: C::Future },
        // Answered without the upstream.
        Answered { status: StatusCode },
    }
}

impl<C, ReqBody, ResBody> Future for UpstreamFuture<C, Request<ReqBody>>
where
    C: Service<Request<ReqBody>, Response = Response<ResBody>>,
    C::Error: Into<BoxError>,
{
    type Output = Result<Response<UpstreamBody<ResBody>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        // A head that is ready wins over a deadline that passed in the same instant.
        if let Poll::Ready(response) = poll_upstream(this.state.as_mut(), cx) {
            return Poll::Ready(Ok(response));
        }
        match this.deadline.as_pin_mut().map(|deadline| deadline.poll(cx)) {
            Some(Poll::Ready(())) => {
                tracing::warn!("no response head from the upstream in time: 504");
                Poll::Ready(Ok(answer(StatusCode::GATEWAY_TIMEOUT)))
            }
            _ => Poll::Pending,
        }
    }
}

impl<C: Service<R>, R> fmt::Debug for UpstreamFuture<C, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamFuture").finish_non_exhaustive()
    }
}

fn poll_upstream<C, ReqBody, ResBody>(
    mut state: Pin<&mut State<C, Request<ReqBody>>>,
    cx: &mut Context<'_>,
) -> Poll<Response<UpstreamBody<ResBody>>>
where
    C: Service<Request<ReqBody>, Response = Response<ResBody>>,
    C::Error: Into<BoxError>,
{
    let bad_gateway = |error: C::Error| {
        let error: BoxError = error.into();
        let error = Chain(&*error);
        tracing::warn!(%error, "the upstream request failed: 502");
        answer(StatusCode::BAD_GATEWAY)
    };
    loop {
        match state.as_mut().project() {
            StateProj::Waiting { client, request } => {
                if let Err(error) = ready!(client.poll_ready(cx)) {
                    return Poll::Ready(bad_gateway(error));
                }
                // The request is only missing when this future is polled after it completed.
                let Some(request) = request.take() else {
                    return Poll::Ready(answer(StatusCode::BAD_GATEWAY));
                };
                let response = client.call(request);
                state.set(State::Sent { response });
            }
            StateProj::Sent { response } => {
                return Poll::Ready(match ready!(response.poll(cx)) {
                    Ok(response) => from_upstream(response),
                    Err(error) => bad_gateway(error),
                });
            }
            StateProj::Answered { status } => return Poll::Ready(answer(*status)),
        }
    }
}

/// The upstream's response as the client gets it. An informational status (a `101` above all)
/// answers a request the client never made: the gateway forwards no upgrade, and a client
/// given a bare `101` is left with a dead connection.
fn from_upstream<B>(response: Response<B>) -> Response<UpstreamBody<B>> {
    if response.status().is_informational() {
        let status = response.status().as_u16();
        tracing::warn!(
            status,
            "the upstream answered with an informational status: 502"
        );
        return answer(StatusCode::BAD_GATEWAY);
    }
    let (mut head, body) = response.into_parts();
    remove_hop_by_hop_headers(&mut head.headers);
    Response::from_parts(head, Either::Left(body))
}

/// The gateway's own answer: the status and its reason as plain text (nothing for a `204`).
fn answer<B>(status: StatusCode) -> Response<UpstreamBody<B>> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(uri: &'static str) -> Result<Upstream<()>, InvalidUpstream> {
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
    fn no_path_climbs_out_of_the_prefix() -> Result<(), Box<dyn std::error::Error>> {
        let api = upstream("http://up:9000/api")?;
        for path in [
            "/../admin",
            "/a/%2E%2e/b",
            "/a/./b",
            "/a/.%2e",
            // What a probe sent through verbatim: `;` parameters, encoded and literal `\`,
            // encoded `/`, double encoding.
            "/..;/admin",
            "/..%2f..%2fadmin",
            "/%5c..%5c..%5cadmin",
            "/\\..\\..\\admin",
            "/%252e%252e/admin",
            "/%2e%2e;/admin",
            "/a/..%3bx/b",
            "/a/%2e%2e%5cb",
        ] {
            let refused = api.forwarded(Request::get(path).body(())?);
            assert_eq!(refused.err(), Some(StatusCode::BAD_REQUEST), "{path}");
        }
        // Without a prefix too: the upstream's own root is no place to resolve them either.
        let root = upstream("http://up:9000")?;
        let refused = root.forwarded(Request::get("/..;/admin").body(())?);
        assert_eq!(refused.err(), Some(StatusCode::BAD_REQUEST));
        let connect = Request::connect("up:443").body(())?;
        assert_eq!(
            api.forwarded(connect).err(),
            Some(StatusCode::METHOD_NOT_ALLOWED)
        );
        Ok(())
    }

    #[test]
    fn ordinary_paths_are_forwarded_byte_for_byte() -> Result<(), Box<dyn std::error::Error>> {
        let api = upstream("http://up:9000/api")?;
        for path in [
            "/a/..b/.c",
            "/%2e%2ex/y",
            "/a%20b/%41%2F",
            "/a;b=1/c",
            "/...",
            "/.well-known/x",
            "/a/%25/b?q=..",
            "/a%5cb",
        ] {
            let forwarded = api
                .forwarded(Request::get(path).body(())?)
                .map_err(|status| format!("{path}: {status}"))?;
            assert_eq!(
                forwarded.uri().path_and_query().map(|p| p.as_str()),
                Some(&*format!("/api{path}"))
            );
        }
        Ok(())
    }

    #[test]
    fn the_asterisk_form_is_never_put_under_the_prefix() -> Result<(), Box<dyn std::error::Error>> {
        let api = upstream("http://up:9000/api")?;
        let options = Request::options(Uri::from_static("*")).body(())?;
        assert_eq!(api.forwarded(options).err(), Some(StatusCode::NO_CONTENT));
        let get = Request::get(Uri::from_static("*")).body(())?;
        assert_eq!(api.forwarded(get).err(), Some(StatusCode::BAD_REQUEST));
        let answer = answer::<()>(StatusCode::NO_CONTENT);
        assert!(answer.headers().is_empty());
        Ok(())
    }

    /// Ways an upstream is known to read a path before it resolves dot segments.
    #[derive(Debug, Clone, Copy)]
    enum Reading {
        Decode,
        Backslash,
        DropParams,
    }

    fn read(path: &[u8], reading: Reading) -> Vec<u8> {
        match reading {
            Reading::Decode => percent_decode(path).collect(),
            Reading::Backslash => path
                .iter()
                .map(|&b| if b == b'\\' { b'/' } else { b })
                .collect(),
            Reading::DropParams => {
                let segments: Vec<&[u8]> = path
                    .split(|&b| b == b'/')
                    .map(|s| s.split(|&b| b == b';').next().unwrap_or_default())
                    .collect();
                segments.join(&b'/')
            }
        }
    }

    /// RFC 3986 §5.2.4, on segments: where the path ends up.
    fn resolve(path: &[u8]) -> Vec<u8> {
        let mut out: Vec<&[u8]> = Vec::new();
        for segment in path.split(|&b| b == b'/').skip(1) {
            match segment {
                b"." => {}
                b".." => {
                    out.pop();
                }
                _ => out.push(segment),
            }
        }
        let mut resolved = Vec::new();
        for segment in out {
            resolved.push(b'/');
            resolved.extend_from_slice(segment);
        }
        resolved
    }

    /// Every order of the readings, each used at most as often as upstreams do (decoding twice).
    fn readings() -> Vec<Vec<Reading>> {
        let mut all = vec![Vec::new()];
        let mut frontier = vec![Vec::new()];
        for _ in 0..4 {
            let mut next = Vec::new();
            for seq in &frontier {
                for reading in [Reading::Decode, Reading::Backslash, Reading::DropParams] {
                    let uses = |r: fn(&Reading) -> bool| seq.iter().filter(|x| r(x)).count();
                    let ok = match reading {
                        Reading::Decode => uses(|r| matches!(r, Reading::Decode)) < 2,
                        Reading::Backslash => uses(|r| matches!(r, Reading::Backslash)) < 1,
                        Reading::DropParams => uses(|r| matches!(r, Reading::DropParams)) < 1,
                    };
                    if ok {
                        let mut longer: Vec<Reading> = seq.clone();
                        longer.push(reading);
                        next.push(longer);
                    }
                }
            }
            all.extend(next.iter().cloned());
            frontier = next;
        }
        all
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4000))]

        /// Nothing the gateway forwards resolves outside the prefix, under any order of the
        /// readings, and what it forwards is the request's path byte for byte.
        #[test]
        fn nothing_forwarded_resolves_outside_the_prefix(
            pieces in proptest::collection::vec(proptest::sample::select(vec![
                "/", "\\", ".", "..", "a", "b", ";", ";x=1", "%2e", "%2E", "%252e", "%2f", "%2F",
                "%5c", "%5C", "%3b", "%25", "%", "%2", "%252f", "%255c", "%00", "~", "%41",
            ]), 0..10)
        ) {
            let path = format!("/{}", pieces.concat());
            let api = upstream("http://up:9000/api").map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
            let Ok(request) = Request::get(&path).body(()) else {
                return Ok(()); // not a URI at all: never reaches the gateway
            };
            if let Ok(forwarded) = api.forwarded(request) {
                let sent = forwarded.uri().path().as_bytes().to_vec();
                let expected = format!("/api{path}");
                proptest::prop_assert_eq!(&sent, expected.as_bytes());
                for readings in readings() {
                    let mut read_path = sent.clone();
                    for reading in &readings {
                        read_path = read(&read_path, *reading);
                    }
                    let resolved = resolve(&read_path);
                    proptest::prop_assert!(
                        resolved == b"/api" || resolved.starts_with(b"/api/"),
                        "{path} read by {readings:?} resolves to {}",
                        String::from_utf8_lossy(&resolved)
                    );
                }
            }
        }
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
