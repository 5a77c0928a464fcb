//! Shared test helpers: the reference parser, inner bodies, and real servers on 127.0.0.1.
#![allow(dead_code, unreachable_pub)]

pub mod alloc_counter;
pub mod lenient;
pub mod redis_server;
pub mod whatwg;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{self, Stream, StreamExt};
use http::{Request, Response};
use http_body::Frame;
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::Incoming;
use tokio::net::{TcpListener, TcpStream};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type TestBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// An inner body yielding `chunks` as data frames, then ending.
pub fn chunks<I, C>(chunks: I) -> TestBody
where
    I: IntoIterator<Item = C>,
    C: Into<Bytes>,
{
    let frames: Vec<Result<Frame<Bytes>, BoxError>> = chunks
        .into_iter()
        .map(|chunk| Ok(Frame::data(chunk.into())))
        .collect();
    from_stream(stream::iter(frames))
}

/// An inner body from a stream of frames.
pub fn from_stream<S>(frames: S) -> TestBody
where
    S: Stream<Item = Result<Frame<Bytes>, BoxError>> + Send + 'static,
{
    BodyExt::boxed_unsync(StreamBody::new(frames))
}

/// An inner body fed through a channel; it ends when the sender is dropped.
pub fn channel() -> (tokio::sync::mpsc::Sender<Result<Bytes, BoxError>>, TestBody) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Bytes, BoxError>>(1024);
    let frames = stream::poll_fn(move |cx| rx.poll_recv(cx)).map(|item| item.map(Frame::data));
    (tx, from_stream(frames))
}

/// Reads a whole body.
pub async fn collect<B>(body: B) -> Vec<u8>
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    match body.collect().await {
        Ok(collected) => collected.to_bytes().to_vec(),
        Err(error) => panic!("body failed: {error:?}"),
    }
}

/// Serves a tower service over HTTP/1.1 and HTTP/2 on a fresh 127.0.0.1 port.
pub async fn serve<S, B>(service: S) -> SocketAddr
where
    S: tower::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let service = hyper_util::service::TowerToHyperService::new(service.clone());
            tokio::spawn(async move {
                let builder = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                );
                let _ = builder
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    addr
}

/// Serves an axum router on a fresh 127.0.0.1 port.
pub async fn serve_axum(router: axum::Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    addr
}

/// Sends one request over a new HTTP/1.1 connection.
pub async fn send<B>(addr: SocketAddr, request: Request<B>) -> Response<Incoming>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .expect("handshake");
    tokio::spawn(connection);
    sender.send_request(request).await.expect("response")
}

/// Sends one GET over a new HTTP/1.1 connection with the given headers.
pub async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Response<Incoming> {
    let mut request = Request::get(path).header("host", addr.to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    send(addr, request.body(Empty::<Bytes>::new()).expect("request")).await
}

/// Opens an event stream on a raw socket, as a browser tab does, and reads until the text
/// received contains `until`; dropping the socket is then the tab closing.
pub async fn subscribe_raw(addr: SocketAddr, path: &str, until: &str) -> TcpStream {
    subscribe_raw_with(addr, path, &[], until).await.0
}

/// [`subscribe_raw`] with extra request headers; also returns the text received.
pub async fn subscribe_raw_with(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    until: &str,
) -> (TcpStream, String) {
    let mut all = vec![("accept", "text/event-stream")];
    all.extend_from_slice(headers);
    get_raw(addr, path, &all, until).await
}

/// A GET with only `headers` (and `host`) on a raw socket, read until the text received
/// contains `until`: what curl, `fetch` or an SDK that does not ask for an event stream sends.
pub async fn get_raw(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    until: &str,
) -> (TcpStream, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    let extra: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    let head = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\n{extra}\r\n");
    tcp.write_all(head.as_bytes()).await.expect("request");
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains(until) {
        let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
            .await
            .expect("events arrive")
            .expect("read");
        assert!(n > 0, "the server closed early: {seen:?}");
        seen.extend_from_slice(&buf[..n]);
    }
    (tcp, String::from_utf8_lossy(&seen).into_owned())
}

/// A request as `EventSource` sends it (`Accept: text/event-stream`), with an empty body.
pub fn sse_request<B: Default>() -> Request<B> {
    Request::get("/events")
        .header("accept", "text/event-stream")
        .body(B::default())
        .expect("request")
}

/// Fetches `path` as an `EventSource` would (with `extra` headers) and reads the whole
/// response: its status, headers and body.
pub async fn fetch_sse(
    addr: SocketAddr,
    path: &str,
    extra: &[(&str, &str)],
) -> (u16, http::HeaderMap, Vec<u8>) {
    let mut headers = vec![
        ("accept", "text/event-stream"),
        ("cache-control", "no-cache"),
    ];
    headers.extend_from_slice(extra);
    let response = get(addr, path, &headers).await;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = tokio::time::timeout(Duration::from_secs(20), collect(response.into_body()))
        .await
        .expect("the stream ends");
    (status, headers, body)
}

/// The data of the next data frame of `body`, or `None` at its end.
pub async fn next_data<B>(body: &mut B) -> Option<Bytes>
where
    B: http_body::Body + Unpin,
    B::Error: std::fmt::Debug,
{
    loop {
        let frame = match body.frame().await? {
            Ok(frame) => frame,
            Err(error) => panic!("body failed: {error:?}"),
        };
        if let Ok(mut data) = frame.into_data() {
            use bytes::Buf;
            return Some(data.copy_to_bytes(data.remaining()));
        }
    }
}

/// Sends one GET as an `EventSource` would.
pub async fn get_sse(addr: SocketAddr, path: &str) -> Response<Incoming> {
    get(
        addr,
        path,
        &[
            ("accept", "text/event-stream"),
            ("cache-control", "no-cache"),
        ],
    )
    .await
}

/// Reads body frames until `done` says the bytes so far are enough, or `limit` passes.
pub async fn read_until<B>(body: &mut B, limit: Duration, done: impl Fn(&[u8]) -> bool) -> Vec<u8>
where
    B: http_body::Body + Unpin,
    B::Error: std::fmt::Debug,
{
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    while !done(&seen) {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(Ok(frame))) => {
                if let Ok(mut data) = frame.into_data() {
                    use bytes::Buf;
                    seen.extend_from_slice(&data.copy_to_bytes(data.remaining()));
                }
            }
            Ok(Some(Err(error))) => panic!("body failed: {error:?}"),
            Ok(None) | Err(_) => break,
        }
    }
    seen
}

/// The text of bytes that must be UTF-8.
pub fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).expect("the stream is UTF-8")
}

/// Raises this process's open file limit to `needed` (tests with many sockets): to the hard
/// limit, or past it where the process may (as root).
pub fn raise_open_file_limit(needed: u64) {
    let mut limit = rlimit::increase_nofile_limit(u64::MAX).expect("raise RLIMIT_NOFILE");
    if limit < needed && rlimit::setrlimit(rlimit::Resource::NOFILE, needed, needed).is_ok() {
        limit = needed;
    }
    assert!(
        limit >= needed,
        "this test needs {needed} open files; the hard limit is {limit} (raise it with ulimit -Hn)"
    );
}

/// The body of a raw HTTP/1.1 response with a chunked body, and whether it was complete (its
/// last chunk arrived). Panics on a malformed chunk.
pub fn dechunk(response: &[u8]) -> (Vec<u8>, bool) {
    let start = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head")
        + 4;
    let mut rest = &response[start..];
    let mut body = Vec::new();
    loop {
        let Some(line_end) = rest.windows(2).position(|w| w == b"\r\n") else {
            return (body, false);
        };
        let size = std::str::from_utf8(&rest[..line_end]).expect("chunk size");
        let size = usize::from_str_radix(size, 16).expect("hex chunk size");
        rest = &rest[line_end + 2..];
        if size == 0 {
            return (body, rest == b"\r\n");
        }
        if rest.len() < size + 2 {
            return (body, false);
        }
        body.extend_from_slice(&rest[..size]);
        assert_eq!(&rest[size..size + 2], b"\r\n", "chunk end");
        rest = &rest[size + 2..];
    }
}

/// The stream without its heartbeat lines (`:` alone, as the layer writes them: between
/// events, ending no block), and how many there were. A `:` line inside an event (after one of
/// its fields) is not a heartbeat the layer may write: it stays in the text, so comparisons
/// fail. The encoder ends every line with LF.
pub fn without_heartbeats(stream: &[u8]) -> (String, usize) {
    let mut heartbeats = 0;
    let mut kept = String::new();
    // Whether the next line starts a block: the stream's start, after a blank line, or after
    // lines that end no block (the retry hint, heartbeats).
    let mut between_events = true;
    for line in text(stream).split_inclusive('\n') {
        if line == ":\n" && between_events {
            heartbeats += 1;
            continue;
        }
        kept.push_str(line);
        between_events = line == "\n" || line.starts_with("retry: ") && between_events;
    }
    (kept, heartbeats)
}

/// Reads more of a raw response into `seen` until `done` holds; fails if the peer closes first
/// or nothing comes for 5 s (`what` names what was awaited).
pub async fn read_raw_until(
    tcp: &mut TcpStream,
    seen: &mut String,
    what: &str,
    done: impl Fn(&str) -> bool,
) {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 4096];
    while !done(seen) {
        let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("{what}: nothing came in 5 s after {seen:?}"))
            .expect("read");
        assert!(n > 0, "{what}: the peer closed after {seen:?}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}

/// Whether curl can be run. Where the tests must not skip (`TOWER_SSE_REQUIRE_NETNS=1`, as in
/// CI, which installs it) its absence is a failure; elsewhere the caller skips, and says so.
pub fn curl_available() -> bool {
    let found = std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    if !found {
        assert!(
            std::env::var_os("TOWER_SSE_REQUIRE_NETNS").is_none(),
            "curl is required (TOWER_SSE_REQUIRE_NETNS=1)"
        );
        eprintln!("skipped: curl is not installed");
    }
    found
}
