//! The layer in front of a streaming upstream: `SseLayer` around `Upstream` around a hyper-util
//! `Client`, served by a real hyper server, with upstreams written here on raw TCP (so they can
//! split, stall, die and reset exactly where a test says).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::Uri;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::{sleep, timeout, Instant};
use tower::Layer;
use tower_sse::gateway::Upstream;
use tower_sse::{Framing, SseLayer};

const HEARTBEAT: Duration = Duration::from_millis(40);

/// One request to a raw upstream: its head as received, the body bytes read with it, and the
/// socket to answer on.
struct Conn {
    head: String,
    body: Vec<u8>,
    tcp: TcpStream,
}

impl Conn {
    /// The request path, from the request line.
    fn path(&self) -> &str {
        self.head.split(' ').nth(1).unwrap_or_default()
    }

    /// Reads the request body, `len` bytes long (bounded by the test's own requests).
    async fn read_body(&mut self, len: usize) -> std::io::Result<Vec<u8>> {
        let mut buf = [0u8; 1024];
        while self.body.len() < len {
            let n = self.tcp.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            self.body.extend_from_slice(&buf[..n]);
        }
        Ok(std::mem::take(&mut self.body))
    }

    /// Writes a response head with a chunked body. `connection: close` keeps every request on
    /// a connection of its own (and is a hop-by-hop header the gateway must drop).
    async fn respond(&mut self, status: &str, headers: &[(&str, &str)]) -> std::io::Result<()> {
        let mut head = format!("HTTP/1.1 {status}\r\n");
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("transfer-encoding: chunked\r\nconnection: close\r\n\r\n");
        self.tcp.write_all(head.as_bytes()).await
    }

    /// Writes one chunk of the body.
    async fn chunk(&mut self, data: &[u8]) -> std::io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        self.tcp
            .write_all(format!("{:x}\r\n", data.len()).as_bytes())
            .await?;
        self.tcp.write_all(data).await?;
        self.tcp.write_all(b"\r\n").await
    }

    /// Ends the body cleanly.
    async fn end(&mut self) -> std::io::Result<()> {
        self.tcp.write_all(b"0\r\n\r\n").await
    }

    /// Waits until the gateway closes the connection (or `limit` passes), as the upstream sees
    /// it: a read that returns end-of-file or fails.
    async fn closed_by_peer(&mut self, limit: Duration) -> bool {
        let mut byte = [0u8; 1];
        matches!(
            timeout(limit, self.tcp.read(&mut byte)).await,
            Ok(Ok(0) | Err(_))
        )
    }
}

/// Serves raw HTTP/1.1 on a fresh 127.0.0.1 port, running `script` for every request.
async fn upstream<F, Fut>(script: F) -> SocketAddr
where
    F: Fn(Conn) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let script = Arc::new(script);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let script = script.clone();
            tokio::spawn(async move {
                if let Some(conn) = read_head(tcp).await {
                    script(conn).await;
                }
            });
        }
    });
    addr
}

/// Reads a request head (at most 64 KiB), keeping any body bytes that came with it.
async fn read_head(mut tcp: TcpStream) -> Option<Conn> {
    let mut received = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            let body = received.split_off(end + 4);
            let head = String::from_utf8(received).ok()?;
            return Some(Conn { head, body, tcp });
        }
        let n = tcp.read(&mut buf).await.ok()?;
        if n == 0 || received.len() > 64 * 1024 {
            return None;
        }
        received.extend_from_slice(&buf[..n]);
    }
}

/// The gateway: `layer` around `Upstream` around a hyper-util client, served on 127.0.0.1.
async fn gateway(upstream: SocketAddr, layer: SseLayer, head_timeout: Duration) -> SocketAddr {
    let client = Client::builder(TokioExecutor::new()).build_http::<Incoming>();
    let uri: Uri = format!("http://{upstream}").parse().expect("upstream uri");
    let upstream = Upstream::new(client, uri)
        .expect("a valid upstream")
        .head_timeout(head_timeout);
    support::serve(layer.layer(upstream)).await
}

fn layer() -> SseLayer {
    SseLayer::new().heartbeat(HEARTBEAT)
}

#[tokio::test]
async fn slow_ndjson_becomes_one_event_per_line_with_heartbeats_in_the_silences() {
    let upstream = upstream(|mut conn| async move {
        let _ = async {
            conn.respond("200 OK", &[("content-type", "application/x-ndjson")])
                .await?;
            for piece in [&b"{\"n\":1}\n{\"n\""[..], b":2}\r", b"\n", b"{\"n\":3}"] {
                conn.chunk(piece).await?;
                sleep(HEARTBEAT * 4).await;
            }
            conn.chunk(b"\n{\"n\":4}").await?;
            conn.end().await
        }
        .await;
    })
    .await;
    let gateway = gateway(upstream, layer(), Duration::from_secs(5)).await;
    let (status, headers, body) = support::fetch_sse(gateway, "/ndjson", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/event-stream");
    assert!(headers.get("connection").is_none());
    let (events, heartbeats) = support::without_heartbeats(&body);
    assert_eq!(
        events,
        "retry: 3000\ndata: {\"n\":1}\n\ndata: {\"n\":2}\n\ndata: {\"n\":3}\n\ndata: {\"n\":4}\n\n"
    );
    // Four silences of four intervals each: a client sees the connection alive in every one
    // (a loaded machine may fire the timers late, so at least one each is asked for).
    assert!(heartbeats >= 4, "{heartbeats} heartbeats in {body:?}");
}

/// An upstream event stream using CR, LF and CRLF, comments, an id-only block and a retry.
const SSE: &[u8] = b"retry: 250\r\n\r\n: upstream comment\revent: greet\rdata: hello\rdata: world\r\rid: 7\nevent: tick\ndata: one\n\nid: 8\r\n\r\ndata: caf\xC3\xA9 \xF0\x9F\x98\x80\r\n\r\n";

/// What the gateway makes of [`SSE`], written by hand.
const SSE_REFRAMED: &str = "retry: 3000\nretry: 250\nevent: greet\ndata: hello\ndata: world\n\nevent: tick\ndata: one\nid: 7\n\nid: 8\ndata: café 😀\n\n";

/// Serves [`SSE`] cut in two at the offset in the path (`/split/17`), or one byte per chunk
/// (`/bytes`) with a long pause in the middle of an event.
async fn splitting_upstream() -> SocketAddr {
    upstream(|mut conn| async move {
        let path = conn.path().to_owned();
        let _ = async {
            conn.respond("200 OK", &[("content-type", "text/event-stream")])
                .await?;
            if let Some(cut) = path.strip_prefix("/split/") {
                let cut: usize = cut.parse().unwrap_or(0);
                conn.chunk(&SSE[..cut]).await?;
                conn.chunk(&SSE[cut..]).await?;
            } else {
                for (at, byte) in SSE.iter().enumerate() {
                    if at == SSE.len() / 2 {
                        sleep(HEARTBEAT * 5).await;
                    }
                    conn.chunk(std::slice::from_ref(byte)).await?;
                }
            }
            conn.end().await
        }
        .await;
    })
    .await
}

#[tokio::test]
async fn upstream_event_stream_split_at_every_byte_offset_is_reframed_the_same() {
    let upstream = splitting_upstream().await;
    let gateway = gateway(upstream, layer(), Duration::from_secs(5)).await;
    for cut in 0..=SSE.len() {
        let (status, _, body) = support::fetch_sse(gateway, &format!("/split/{cut}"), &[]).await;
        assert_eq!(status, 200);
        assert_eq!(
            support::without_heartbeats(&body).0,
            SSE_REFRAMED,
            "cut at {cut}"
        );
    }
    // A client parses the same events, ids and retry from the gateway as from the upstream.
    let upstream_seen = support::whatwg::parse(SSE);
    let gateway_seen = support::whatwg::parse(SSE_REFRAMED.as_bytes());
    assert_eq!(gateway_seen.events, upstream_seen.events);
    assert_eq!(gateway_seen.last_event_id, "8");
}

#[tokio::test]
async fn upstream_event_stream_byte_by_byte_gets_heartbeats_only_between_events() {
    let upstream = splitting_upstream().await;
    let gateway = gateway(upstream, layer(), Duration::from_secs(5)).await;
    let (_, _, body) = support::fetch_sse(gateway, "/bytes", &[]).await;
    let (events, heartbeats) = support::without_heartbeats(&body);
    assert_eq!(events, SSE_REFRAMED);
    assert!(heartbeats >= 2, "{heartbeats} heartbeats in {body:?}");
}

#[tokio::test]
async fn hostile_upstream_fields_reach_the_client_as_the_upstream_sent_them() {
    // A lone CR ends a line, so `event: injected` is the upstream's own field; a NUL in an id,
    // a BOM mid-stream, a bad retry and an unknown field are ignored by clients, and must be
    // here too; data may hold anything but line breaks.
    const HOSTILE: &[u8] = b"data: x\revent: injected\rid: a\0b\n\n\xEF\xBB\xBFdata: bom mid-stream\n\nretry: 1e3\nevil: field\ndata: \0nul and : colon\n\nid\n\n";
    let upstream = upstream(|mut conn| async move {
        let _ = async {
            conn.respond("200 OK", &[("content-type", "text/event-stream")])
                .await?;
            conn.chunk(HOSTILE).await?;
            conn.end().await
        }
        .await;
    })
    .await;
    let gateway = gateway(upstream, layer(), Duration::from_secs(5)).await;
    let (_, _, body) = support::fetch_sse(gateway, "/hostile", &[]).await;
    let (events, _) = support::without_heartbeats(&body);
    assert_eq!(
        events,
        "retry: 3000\nevent: injected\ndata: x\n\ndata: \0nul and : colon\n\nid: \n"
    );
    let upstream_seen = support::whatwg::parse(HOSTILE);
    let gateway_seen = support::whatwg::parse(events.as_bytes());
    assert_eq!(gateway_seen.events, upstream_seen.events);
    assert_eq!(gateway_seen.last_event_id, upstream_seen.last_event_id);
}

/// Sends one complete event and half of another, then `finish`es the connection its way.
async fn dying_upstream(finish: &'static str) -> SocketAddr {
    upstream(move |mut conn| async move {
        let _ = async {
            conn.respond("200 OK", &[("content-type", "text/event-stream")])
                .await?;
            conn.chunk(b"id: 1\ndata: whole\n\nid: 2\ndata: hal")
                .await?;
            sleep(Duration::from_millis(20)).await;
            match finish {
                // The body ends properly, mid-event: clients drop the unfinished event.
                "end" => conn.end().await,
                // The connection is closed with the chunked body unfinished.
                "close" => conn.tcp.shutdown().await,
                // The connection is reset (RST).
                _ => conn.tcp.set_zero_linger(),
            }
        }
        .await;
    })
    .await
}

#[tokio::test]
async fn upstream_dying_mid_event_ends_with_an_error_event() {
    for finish in ["close", "reset"] {
        let gateway = gateway(
            dying_upstream(finish).await,
            layer(),
            Duration::from_secs(5),
        )
        .await;
        let (status, _, body) = support::fetch_sse(gateway, "/dies", &[]).await;
        assert_eq!(status, 200);
        assert_eq!(
            support::without_heartbeats(&body).0,
            "retry: 3000\ndata: whole\nid: 1\n\nevent: error\ndata: stream failed\n\n",
            "upstream {finish}"
        );
    }
    let gateway = gateway(dying_upstream("end").await, layer(), Duration::from_secs(5)).await;
    let (_, _, body) = support::fetch_sse(gateway, "/ends", &[]).await;
    assert_eq!(
        support::without_heartbeats(&body).0,
        "retry: 3000\ndata: whole\nid: 1\n\n"
    );
}

#[tokio::test]
async fn a_64_mib_line_ends_the_stream_with_an_error_and_memory_stays_bounded() {
    const LINE: usize = 64 * 1024 * 1024;
    let (sent_tx, mut sent_rx) = mpsc::unbounded_channel();
    let upstream = upstream(move |mut conn| {
        let sent_tx = sent_tx.clone();
        async move {
            let piece = vec![b'x'; 64 * 1024];
            let mut sent = 0;
            let _ = async {
                conn.respond("200 OK", &[("content-type", "application/x-ndjson")])
                    .await?;
                conn.chunk(b"{\"first\":true}\n").await?;
                while sent < LINE {
                    conn.chunk(&piece).await?;
                    sent += piece.len();
                }
                conn.chunk(b"\n{\"after\":true}\n").await?;
                conn.end().await
            }
            .await;
            let _ = sent_tx.send(sent);
        }
    })
    .await;
    let gateway = gateway(upstream, layer(), Duration::from_secs(5)).await;
    let _alone = support::alloc_counter::alone().await;
    let before = support::alloc_counter::reset_peak();
    let (_, _, body) = support::fetch_sse(gateway, "/huge", &[]).await;
    let held = support::alloc_counter::peak().saturating_sub(before);
    assert_eq!(
        support::without_heartbeats(&body).0,
        "retry: 3000\ndata: {\"first\":true}\n\nevent: error\ndata: message too large\n\n"
    );
    // The gateway stopped reading and closed the upstream connection: the upstream could not
    // send the whole line.
    let sent = timeout(Duration::from_secs(10), sent_rx.recv())
        .await
        .expect("the upstream stops")
        .unwrap_or(LINE);
    assert!(sent < LINE / 4, "the upstream sent {sent} bytes");
    // The default limit is 1 MiB: the process never held much more than that (other tests of
    // this file run alongside and are counted too).
    assert!(held < 8 * 1024 * 1024, "peak heap grew by {held} bytes");
    println!("64 MiB line: upstream got {sent} bytes out, peak heap growth {held} bytes");
}

#[tokio::test]
async fn upstream_500_passes_through_untouched() {
    let upstream = upstream(|mut conn| async move {
        let _ = async {
            conn.respond(
                "500 Internal Server Error",
                &[
                    ("content-type", "text/plain"),
                    ("keep-alive", "timeout=5"),
                    ("connection", "x-upstream-hop"),
                    ("x-upstream-hop", "internal"),
                    ("x-request-id", "r-1"),
                ],
            )
            .await?;
            conn.chunk(b"upstream broke\n").await?;
            conn.end().await
        }
        .await;
    })
    .await;
    let gateway = gateway(upstream, layer(), Duration::from_secs(5)).await;
    let (status, headers, body) = support::fetch_sse(gateway, "/fails", &[]).await;
    assert_eq!(status, 500);
    assert_eq!(headers["content-type"], "text/plain");
    // Hop-by-hop headers, those `Connection` names among them, stop at the gateway.
    assert!(headers.get("keep-alive").is_none());
    assert!(headers.get("x-upstream-hop").is_none());
    assert!(headers.get("connection").is_none());
    assert_eq!(headers["x-request-id"], "r-1");
    assert_eq!(body, b"upstream broke\n");
}

#[tokio::test]
async fn an_upstream_that_refuses_is_a_502() {
    // A port that was just free: nothing listens on it.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let refused = listener.local_addr().expect("local addr");
    drop(listener);
    let gateway = gateway(refused, layer(), Duration::from_secs(5)).await;
    let (status, headers, body) = support::fetch_sse(gateway, "/anything", &[]).await;
    assert_eq!(status, 502);
    assert_eq!(headers["content-type"], "text/plain; charset=utf-8");
    assert_eq!(body, b"502 Bad Gateway\n");
}

#[tokio::test]
async fn an_upstream_that_sends_no_head_in_time_is_a_504_and_is_hung_up_on() {
    let (closed_tx, mut closed_rx) = mpsc::unbounded_channel();
    let upstream = upstream(move |mut conn| {
        let closed_tx = closed_tx.clone();
        async move {
            // Never answers; reports whether the gateway hung up.
            let _ = closed_tx.send(conn.closed_by_peer(Duration::from_secs(5)).await);
        }
    })
    .await;
    let gateway = gateway(upstream, layer(), Duration::from_millis(300)).await;
    let started = Instant::now();
    let (status, _, body) = support::fetch_sse(gateway, "/slow", &[]).await;
    let waited = started.elapsed();
    assert_eq!(status, 504);
    assert_eq!(body, b"504 Gateway Timeout\n");
    assert!(
        waited >= Duration::from_millis(300),
        "answered after {waited:?}"
    );
    assert!(waited < Duration::from_secs(3), "answered after {waited:?}");
    assert_eq!(closed_rx.recv().await, Some(true));
}

#[tokio::test]
async fn request_headers_are_forwarded_as_a_proxy_must() {
    let (head_tx, mut head_rx) = mpsc::unbounded_channel();
    let upstream = upstream(move |mut conn| {
        let head_tx = head_tx.clone();
        async move {
            let _ = head_tx.send(conn.head.clone());
            let _ = async {
                conn.respond("200 OK", &[("content-type", "text/event-stream")])
                    .await?;
                conn.end().await
            }
            .await;
        }
    })
    .await;
    let gateway = gateway(upstream, layer(), Duration::from_secs(5)).await;
    let (status, _, _) = support::fetch_sse(
        gateway,
        "/feed/a?since=3&x=%20",
        &[
            ("last-event-id", "41"),
            ("accept-encoding", "gzip, br"),
            ("connection", "x-hop"),
            ("x-hop", "secret"),
            ("te", "trailers"),
            ("authorization", "Bearer token"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    let head = head_rx.recv().await.expect("the upstream got a request");
    let lines: Vec<&str> = head.split("\r\n").collect();
    assert_eq!(lines[0], "GET /feed/a?since=3&x=%20 HTTP/1.1");
    let has = |line: &str| lines.iter().any(|l| l.eq_ignore_ascii_case(line));
    assert!(has(&format!("host: {upstream}")), "{head}");
    assert!(has("last-event-id: 41"), "{head}");
    assert!(has("accept: text/event-stream"), "{head}");
    assert!(has("via: 1.1 tower-sse"), "{head}");
    assert!(has("authorization: Bearer token"), "{head}");
    // The layer asks for an identity body: a compressed one could not be re-framed.
    assert!(has("accept-encoding: identity"), "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(!lower.contains("x-hop"), "{head}");
    assert!(!lower.contains("\r\nte:"), "{head}");
}

#[tokio::test]
async fn framing_override_beats_a_dishonest_content_type() {
    let upstream = upstream(|mut conn| async move {
        let _ = async {
            conn.respond("200 OK", &[("content-type", "text/plain")])
                .await?;
            conn.chunk(b"{\"a\":1}\n{\"a\"").await?;
            conn.chunk(b":2}\n").await?;
            conn.end().await
        }
        .await;
    })
    .await;
    let gateway = gateway(
        upstream,
        layer().framing(Framing::Lines),
        Duration::from_secs(5),
    )
    .await;
    let (_, _, body) = support::fetch_sse(gateway, "/lines", &[]).await;
    assert_eq!(
        support::without_heartbeats(&body).0,
        "retry: 3000\ndata: {\"a\":1}\n\ndata: {\"a\":2}\n\n"
    );
}

#[tokio::test]
async fn a_client_that_leaves_closes_the_upstream_connection() {
    let (closed_tx, mut closed_rx) = mpsc::unbounded_channel();
    let upstream = upstream(move |mut conn| {
        let closed_tx = closed_tx.clone();
        async move {
            let _ = conn
                .respond("200 OK", &[("content-type", "application/x-ndjson")])
                .await;
            // One line every 20 ms until the gateway hangs up (bounded: 10 s).
            for n in 0..500 {
                let closed = conn.closed_by_peer(Duration::from_millis(20)).await;
                if closed
                    || conn
                        .chunk(format!("{{\"n\":{n}}}\n").as_bytes())
                        .await
                        .is_err()
                {
                    let _ = closed_tx.send(Instant::now());
                    return;
                }
            }
        }
    })
    .await;
    let gateway = gateway(upstream, layer(), Duration::from_secs(5)).await;

    // A raw client: it reads a few events, then its socket is closed, as a tab is.
    let client = support::subscribe_raw(gateway, "/watch", "{\"n\":2}").await;
    drop(client);
    let left = Instant::now();
    let closed = timeout(Duration::from_secs(5), closed_rx.recv())
        .await
        .expect("the upstream connection closes")
        .expect("the upstream reports");
    let after = closed.saturating_duration_since(left);
    assert!(
        after < Duration::from_secs(1),
        "closed {after:?} after the client left"
    );
    println!("the upstream saw its connection closed {after:?} after the client left");
}

#[tokio::test]
async fn non_event_stream_requests_pass_through_the_gateway() {
    let upstream = upstream(|mut conn| async move {
        let _ = async {
            conn.respond("200 OK", &[("content-type", "application/json")])
                .await?;
            conn.chunk(b"{\"plain\":true}").await?;
            conn.end().await
        }
        .await;
    })
    .await;
    let gateway = gateway(upstream, layer(), Duration::from_secs(5)).await;
    let response = support::get(gateway, "/api", &[("accept", "application/json")]).await;
    assert_eq!(response.headers()["content-type"], "application/json");
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    assert_eq!(&body[..], b"{\"plain\":true}");
}

#[tokio::test]
async fn a_post_with_a_body_reaches_the_upstream_under_its_path_prefix() {
    // LLM APIs stream the answer to a POST: the body must reach the upstream whole.
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel();
    let upstream = upstream(move |mut conn| {
        let seen_tx = seen_tx.clone();
        async move {
            let length = conn
                .head
                .lines()
                .find_map(|line| {
                    line.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(str::to_owned)
                })
                .and_then(|length| length.trim().parse().ok())
                .unwrap_or(0);
            let body = conn.read_body(length).await.unwrap_or_default();
            let _ = seen_tx.send((conn.head.clone(), body));
            let _ = async {
                conn.respond("200 OK", &[("content-type", "application/x-ndjson")])
                    .await?;
                conn.chunk(b"{\"token\":\"Hel\"}\n{\"token\":\"lo\"}\n")
                    .await?;
                conn.end().await
            }
            .await;
        }
    })
    .await;
    let client = Client::builder(TokioExecutor::new()).build_http::<Incoming>();
    let uri: Uri = format!("http://{upstream}/v1/")
        .parse()
        .expect("upstream uri");
    let service = layer().layer(Upstream::new(client, uri).expect("a valid upstream"));
    let gateway = support::serve(service).await;

    let request = http::Request::post("/chat?stream=1")
        .header("host", "gateway")
        .header("accept", "text/event-stream")
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            b"{\"prompt\":\"hi\"}",
        )))
        .expect("request");
    let response = support::send(gateway, request).await;
    let body = support::collect(response.into_body()).await;
    assert_eq!(
        support::without_heartbeats(&body).0,
        "retry: 3000\ndata: {\"token\":\"Hel\"}\n\ndata: {\"token\":\"lo\"}\n\n"
    );
    let (head, sent) = seen_rx.recv().await.expect("the upstream got the request");
    assert!(
        head.starts_with("POST /v1/chat?stream=1 HTTP/1.1\r\n"),
        "{head}"
    );
    assert_eq!(sent, b"{\"prompt\":\"hi\"}");

    // A path that would climb out of the prefix never reaches the upstream.
    let (status, _, _) = support::fetch_sse(gateway, "/../admin", &[]).await;
    assert_eq!(status, 400);
}
