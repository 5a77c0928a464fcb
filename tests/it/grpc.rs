//! Wrapping tonic: a real tonic server on 127.0.0.1 with `GrpcLayer`, read by an SSE client over
//! HTTP/1.1 and by plain tonic clients over HTTP/2.
#![cfg(feature = "grpc")]

use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http::Request;
use http_body_util::{BodyExt, Full};
use prost::Message as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::{sleep, timeout, Instant};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Code, Status};
use tower_sse::grpc::{self, GrpcLayer};
use tower_sse::{Event, LastEventId, SseLayer};
use tower_sse_proto::ticker_client::TickerClient;
use tower_sse_proto::ticker_server::{Ticker, TickerServer};
use tower_sse_proto::{SubscribeRequest, Tick};

/// Tells the test when an RPC's response stream is dropped.
struct DropSignal(mpsc::UnboundedSender<Instant>);

impl Drop for DropSignal {
    fn drop(&mut self) {
        let _ = self.0.send(Instant::now());
    }
}

/// The `Ticker` service the tests call.
#[derive(Clone)]
struct Feed {
    dropped: mpsc::UnboundedSender<Instant>,
}

type TickStream = Pin<Box<dyn Stream<Item = Result<Tick, Status>> + Send>>;

#[tonic::async_trait]
impl Ticker for Feed {
    type SubscribeStream = TickStream;

    async fn subscribe(
        &self,
        request: tonic::Request<SubscribeRequest>,
    ) -> Result<tonic::Response<TickStream>, Status> {
        // A reconnecting EventSource resumes after the last id it saw.
        let resume = request
            .extensions()
            .get::<LastEventId>()
            .and_then(|id| id.as_str().parse::<u64>().ok());
        let request = request.into_inner();
        if request.fail_code != 0 {
            return Err(Status::new(
                Code::from(request.fail_code),
                "refused: the feed is closed",
            ));
        }
        let from = resume.map_or(request.from, |last| last + 1);
        let guard = DropSignal(self.dropped.clone());
        let ticks = futures_util::stream::unfold(0u32, move |sent| async move {
            let endless = request.count == 0;
            if !endless && sent > request.count {
                return None;
            }
            if !endless && sent == request.count {
                return (request.end_code != 0).then(|| {
                    let status = Status::new(Code::from(request.end_code), "feed ended: bye ✓");
                    (Err(status), sent + 1)
                });
            }
            sleep(Duration::from_millis(u64::from(request.interval_ms))).await;
            let n = from + u64::from(sent);
            let text = format!("tick {n}") + &"x".repeat(request.padding as usize);
            Some((Ok(Tick { n, text }), sent + 1))
        });
        // The guard lives as long as the stream.
        let ticks = ticks.map(move |tick| {
            let _ = &guard;
            tick
        });
        Ok(tonic::Response::new(Box::pin(ticks)))
    }

    async fn echo(&self, request: tonic::Request<Tick>) -> Result<tonic::Response<Tick>, Status> {
        Ok(tonic::Response::new(request.into_inner()))
    }
}

/// A tonic server on a fresh port, with `layer` (or without any), HTTP/1.1 accepted.
async fn serve(layer: Option<GrpcLayer>) -> (SocketAddr, mpsc::UnboundedReceiver<Instant>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let (dropped, drops) = mpsc::unbounded_channel();
    let service = TickerServer::new(Feed { dropped });
    let incoming = TcpListenerStream::new(listener);
    match layer {
        Some(layer) => {
            let server = tonic::transport::Server::builder()
                .accept_http1(true)
                .layer(layer)
                .add_service(service)
                .serve_with_incoming(incoming);
            tokio::spawn(server);
        }
        None => {
            let server = tonic::transport::Server::builder()
                .accept_http1(true)
                .add_service(service)
                .serve_with_incoming(incoming);
            tokio::spawn(server);
        }
    }
    (addr, drops)
}

fn layer() -> SseLayer {
    SseLayer::new().heartbeat(Duration::from_millis(50))
}

/// The path of a `Subscribe` call carrying `request` in the query, as a browser would build it.
fn subscribe_path(request: &SubscribeRequest) -> String {
    let message = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(request.encode_to_vec());
    format!("/feed.Ticker/Subscribe?message={message}")
}

/// The event stream without heartbeats.
fn events(stream: &[u8]) -> String {
    support::without_heartbeats(stream).0
}

/// Fetches `path` as an `EventSource` would: the status, the content type and the body.
async fn fetch(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, String, Vec<u8>) {
    let (status, headers, body) = support::fetch_sse(addr, path, headers).await;
    let content_type = headers
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (status, content_type, body)
}

fn base64(tick: &Tick) -> String {
    base64::engine::general_purpose::STANDARD.encode(tick.encode_to_vec())
}

fn tick(n: u64) -> Tick {
    Tick {
        n,
        text: format!("tick {n}"),
    }
}

#[tokio::test]
async fn n_messages_become_n_events_in_order_with_base64_data() {
    let (addr, _) = serve(Some(layer().grpc())).await;
    let request = SubscribeRequest {
        from: 1,
        count: 5,
        ..Default::default()
    };
    let (status, content_type, body) = fetch(addr, &subscribe_path(&request), &[]).await;
    assert_eq!(status, 200);
    assert_eq!(content_type, "text/event-stream");
    let expected: String = std::iter::once("retry: 3000\n".to_owned())
        .chain((1..=5).map(|n| format!("data: {}\n\n", base64(&tick(n)))))
        .collect();
    assert_eq!(events(&body), expected);
}

#[tokio::test]
async fn json_mapper_sets_ids_and_last_event_id_resumes() {
    let layer = layer()
        .map_message(|message| {
            let tick: Tick = grpc::decode(&message)?;
            Event::default()
                .event("tick")?
                .id(tick.n.to_string())?
                .json(&tick)
        })
        .grpc();
    let (addr, _) = serve(Some(layer)).await;
    let request = SubscribeRequest {
        from: 1,
        count: 3,
        ..Default::default()
    };
    let (_, _, body) = fetch(addr, &subscribe_path(&request), &[("last-event-id", "41")]).await;
    assert_eq!(
        events(&body),
        "retry: 3000\n\
         event: tick\ndata: {\"n\":42,\"text\":\"tick 42\"}\nid: 42\n\n\
         event: tick\ndata: {\"n\":43,\"text\":\"tick 43\"}\nid: 43\n\n\
         event: tick\ndata: {\"n\":44,\"text\":\"tick 44\"}\nid: 44\n\n"
    );
    let parsed = support::whatwg::parse(&body);
    assert_eq!(parsed.last_event_id, "44");

    // `json_event` is the same in one call.
    let layer = layer_json();
    let (addr, _) = serve(Some(layer)).await;
    let (_, _, body) = fetch(addr, &subscribe_path(&request), &[]).await;
    assert_eq!(
        support::whatwg::parse(&body).events[0].data,
        "{\"n\":1,\"text\":\"tick 1\"}"
    );
}

fn layer_json() -> GrpcLayer {
    layer()
        .map_message(|message| grpc::json_event::<Tick>(&message))
        .grpc()
}

#[tokio::test]
async fn packed_and_large_messages_all_arrive() {
    // Ready messages are packed into one body frame by tonic; large ones fill frames of their
    // own. Every one is one event.
    let (addr, _) = serve(Some(layer_json())).await;
    for (count, padding) in [(200, 0), (6, 100_000)] {
        let request = SubscribeRequest {
            from: 1,
            count,
            padding,
            ..Default::default()
        };
        let (_, _, body) = fetch(addr, &subscribe_path(&request), &[]).await;
        let parsed = support::whatwg::parse(&body);
        assert_eq!(parsed.events.len(), count as usize);
        for (n, event) in (1..).zip(&parsed.events) {
            let text = format!("tick {n}") + &"x".repeat(padding as usize);
            assert_eq!(event.data, format!("{{\"n\":{n},\"text\":\"{text}\"}}"));
        }
    }
}

#[tokio::test]
async fn a_status_in_the_trailers_is_a_final_error_event() {
    let (addr, _) = serve(Some(layer_json())).await;
    let request = SubscribeRequest {
        from: 1,
        count: 2,
        end_code: Code::NotFound as i32,
        ..Default::default()
    };
    let (status, _, body) = fetch(addr, &subscribe_path(&request), &[]).await;
    assert_eq!(status, 200);
    assert_eq!(
        events(&body),
        "retry: 3000\n\
         data: {\"n\":1,\"text\":\"tick 1\"}\n\n\
         data: {\"n\":2,\"text\":\"tick 2\"}\n\n\
         event: error\ndata: {\"code\":5,\"message\":\"feed ended: bye ✓\"}\n\n"
    );
}

#[tokio::test]
async fn a_trailers_only_failure_is_an_http_status() {
    let (addr, _) = serve(Some(layer_json())).await;
    for (code, http) in [
        (Code::NotFound, 404),
        (Code::Unauthenticated, 401),
        (Code::PermissionDenied, 403),
        (Code::InvalidArgument, 400),
        (Code::Unavailable, 503),
        (Code::Internal, 500),
        (Code::DataLoss, 500),
    ] {
        let request = SubscribeRequest {
            fail_code: code as i32,
            ..Default::default()
        };
        let response = support::get_sse(addr, &subscribe_path(&request)).await;
        let status = response.status().as_u16();
        let header = |name| {
            response.headers()[name]
                .to_str()
                .unwrap_or_default()
                .to_owned()
        };
        let (content_type, cache_control) = (header("content-type"), header("cache-control"));
        assert_eq!(header("vary"), "accept");
        let body = support::collect(response.into_body()).await;
        assert_eq!(status, http, "{code:?}");
        assert_eq!(content_type, "application/json");
        assert_eq!(cache_control, "no-store");
        let expected = format!(
            "{{\"code\":{},\"message\":\"refused: the feed is closed\"}}",
            code as i32
        );
        assert_eq!(support::text(&body), expected);
    }
}

#[tokio::test]
async fn a_message_that_is_not_base64url_is_a_400_and_a_long_one_a_413() {
    let (addr, _) = serve(Some(layer_json())).await;
    let (status, content_type, body) =
        fetch(addr, "/feed.Ticker/Subscribe?message=a+b/c", &[]).await;
    assert_eq!(status, 400);
    assert_eq!(content_type, "text/plain; charset=utf-8");
    assert!(support::text(&body).starts_with("the `message` query parameter is not base64url"));

    let (addr, _) = serve(Some(layer().max_message_size(8).grpc())).await;
    let long = SubscribeRequest {
        from: u64::MAX,
        count: u32::MAX,
        ..Default::default()
    };
    let (status, _, body) = fetch(addr, &subscribe_path(&long), &[]).await;
    assert_eq!(status, 413);
    assert_eq!(support::text(&body), "the request message exceeds 8 bytes");
}

#[tokio::test]
async fn no_message_is_the_empty_request_and_a_post_body_is_the_message() {
    let (addr, _) = serve(Some(layer_json())).await;
    // The empty request: count 0 is endless, so read the first ticks only.
    let mut response = support::get_sse(addr, "/feed.Ticker/Subscribe").await;
    let seen = support::read_until(response.body_mut(), Duration::from_secs(5), |seen| {
        support::text(seen).contains("tick 2")
    })
    .await;
    assert!(support::text(&seen).contains("data: {\"n\":0,\"text\":\"tick 0\"}\n\n"));
    drop(response);

    // A fetch-based client posts the raw protobuf bytes.
    let request = SubscribeRequest {
        from: 7,
        count: 1,
        ..Default::default()
    };
    let body = post(addr, "/feed.Ticker/Subscribe", request.encode_to_vec()).await;
    assert_eq!(
        events(&body),
        "retry: 3000\ndata: {\"n\":7,\"text\":\"tick 7\"}\n\n"
    );
}

#[tokio::test]
async fn a_post_needs_a_length_within_the_limit() {
    let (addr, _) = serve(Some(layer().max_message_size(8).grpc())).await;
    let answer = |request: &'static str| async move {
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.write_all(request.as_bytes()).await.expect("request");
        let mut response = Vec::new();
        let _ = timeout(Duration::from_secs(5), tcp.read_to_end(&mut response)).await;
        String::from_utf8_lossy(&response).into_owned()
    };
    let chunked = answer(
        "POST /feed.Ticker/Subscribe HTTP/1.1\r\nhost: x\r\naccept: text/event-stream\r\n\
         transfer-encoding: chunked\r\nconnection: close\r\n\r\n2\r\n\x08\x01\r\n0\r\n\r\n",
    )
    .await;
    assert!(chunked.starts_with("HTTP/1.1 411 "), "{chunked}");
    assert!(
        chunked.ends_with("a POST subscription needs a Content-Length"),
        "{chunked}"
    );
    let long = answer(
        "POST /feed.Ticker/Subscribe HTTP/1.1\r\nhost: x\r\naccept: text/event-stream\r\n\
         content-length: 9\r\nconnection: close\r\n\r\n123456789",
    )
    .await;
    assert!(long.starts_with("HTTP/1.1 413 "), "{long}");
    assert!(
        long.ends_with("the request message exceeds 8 bytes"),
        "{long}"
    );
}

async fn post(addr: SocketAddr, path: &str, body: Vec<u8>) -> Vec<u8> {
    let request = Request::post(path)
        .header("host", addr.to_string())
        .header("accept", "text/event-stream")
        .header("content-type", "application/octet-stream")
        .body(Full::new(Bytes::from(body)))
        .expect("request");
    let response = support::send(addr, request).await;
    assert_eq!(response.status(), 200);
    timeout(
        Duration::from_secs(10),
        support::collect(response.into_body()),
    )
    .await
    .expect("the stream ends")
}

#[tokio::test]
async fn heartbeats_flow_while_the_rpc_is_silent() {
    let (addr, _) = serve(Some(layer_json())).await;
    let request = SubscribeRequest {
        from: 1,
        count: 1,
        interval_ms: 400,
        ..Default::default()
    };
    let (_, _, body) = fetch(addr, &subscribe_path(&request), &[]).await;
    let heartbeats = support::without_heartbeats(&body).1;
    assert!(heartbeats >= 3, "{heartbeats} heartbeats in {body:?}");
    assert!(events(&body).ends_with("data: {\"n\":1,\"text\":\"tick 1\"}\n\n"));
}

#[tokio::test]
async fn the_rpc_stream_is_dropped_within_100_ms_of_the_client_leaving() {
    let (addr, mut drops) = serve(Some(layer_json())).await;
    let request = SubscribeRequest {
        from: 1,
        count: 0,
        interval_ms: 10,
        ..Default::default()
    };
    let client = support::subscribe_raw(addr, &subscribe_path(&request), "tick 3").await;
    drop(client);
    let left = Instant::now();
    let dropped = timeout(Duration::from_secs(2), drops.recv())
        .await
        .expect("the RPC stream is dropped")
        .expect("a drop signal");
    let after = dropped.saturating_duration_since(left);
    assert!(
        after < Duration::from_millis(100),
        "dropped {after:?} after the client left"
    );
    println!("the RPC stream was dropped {after:?} after the client left");
}

/// What a plain tonic client gets from a server: the echo, and the stream's ticks and status.
async fn plain_client_results(addr: SocketAddr) -> (Tick, Vec<Tick>, Code, String) {
    let mut client = TickerClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    let echo = client.echo(tick(9)).await.expect("echo").into_inner();
    let request = SubscribeRequest {
        from: 3,
        count: 4,
        end_code: Code::Aborted as i32,
        padding: 10,
        ..Default::default()
    };
    let mut stream = client
        .subscribe(request)
        .await
        .expect("subscribe")
        .into_inner();
    let mut ticks = Vec::new();
    loop {
        match stream.message().await {
            Ok(Some(tick)) => ticks.push(tick),
            Ok(None) => return (echo, ticks, Code::Ok, String::new()),
            Err(status) => return (echo, ticks, status.code(), status.message().to_owned()),
        }
    }
}

#[tokio::test]
async fn plain_tonic_clients_get_the_same_results_through_the_layer() {
    // `always` too: it must not turn plain gRPC calls into event streams.
    let layer = layer()
        .always()
        .map_message(|message| grpc::json_event::<Tick>(&message))
        .grpc();
    let (with_layer, _) = serve(Some(layer)).await;
    let (without, _) = serve(None).await;
    let through = plain_client_results(with_layer).await;
    let direct = plain_client_results(without).await;
    assert_eq!(through, direct);
    assert_eq!(through.1.len(), 4);
    assert_eq!(through.2, Code::Aborted);
    // The wire bytes of each message are the same too.
    let bytes = |ticks: &[Tick]| ticks.iter().map(|t| t.encode_to_vec()).collect::<Vec<_>>();
    assert_eq!(bytes(&through.1), bytes(&direct.1));
}

#[tokio::test]
async fn split_frames_and_garbled_status_details_from_any_inner_service() {
    // Not tonic: an inner service whose body cuts messages anywhere and ends with trailers
    // holding a malformed `grpc-status-details-bin`.
    use http_body::Frame;
    use tower::{service_fn, Layer, ServiceExt};

    let mut wire = Vec::new();
    for n in 1..=3 {
        let message = tick(n).encode_to_vec();
        wire.push(0);
        wire.extend_from_slice(&(message.len() as u32).to_be_bytes());
        wire.extend_from_slice(&message);
    }
    let service = service_fn(move |_request: Request<grpc::RequestBody<Full<Bytes>>>| {
        let wire = wire.clone();
        async move {
            let mut frames: Vec<Result<Frame<Bytes>, support::BoxError>> = wire
                .chunks(3)
                .map(|chunk| Ok(Frame::data(Bytes::copy_from_slice(chunk))))
                .collect();
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", http::HeaderValue::from_static("10"));
            trailers.insert("grpc-message", http::HeaderValue::from_static("%FF%ZZ"));
            trailers.insert(
                "grpc-status-details-bin",
                http::HeaderValue::from_static("%%%not-base64"),
            );
            frames.push(Ok(Frame::trailers(trailers)));
            let body = support::from_stream(futures_util::stream::iter(frames));
            Ok::<_, std::convert::Infallible>(
                http::Response::builder()
                    .header("content-type", "application/grpc")
                    .body(body)
                    .expect("response"),
            )
        }
    });
    let service = layer_json().layer(service);
    let request = Request::get("/feed.Ticker/Subscribe")
        .header("accept", "text/event-stream")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let response = service.oneshot(request).await.expect("infallible");
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    assert_eq!(
        events(&body),
        "retry: 3000\n\
         data: {\"n\":1,\"text\":\"tick 1\"}\n\n\
         data: {\"n\":2,\"text\":\"tick 2\"}\n\n\
         data: {\"n\":3,\"text\":\"tick 3\"}\n\n\
         event: error\ndata: {\"code\":10,\"message\":\"\u{FFFD}%ZZ\"}\n\n"
    );
}
