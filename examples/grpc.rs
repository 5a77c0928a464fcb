//! A tonic server whose server-streaming RPC browsers subscribe to with `EventSource`, through
//! one added line: `.layer(SseLayer::new().grpc())`. Plain gRPC clients use the same port.
//!
//! ```text
//! cargo run --example grpc --features grpc
//! open http://127.0.0.1:3001                        # a page using EventSource
//! curl -N -H 'Accept: text/event-stream' 'http://127.0.0.1:3001/feed.Ticker/Subscribe?message=CAU'
//! ```
//!
//! `CAU` is the base64url of the protobuf `SubscribeRequest { from: 5 }`. The `feed` protocol is
//! generated in `tests/proto` with a vendored protoc; its messages derive `serde::Serialize`.
//!
//! Client errors are `4xx`: a message that is not base64url `400`, one that is not a
//! `SubscribeRequest` `400`, a subscription with `HEAD` or `OPTIONS` `405`. A `Last-Event-ID`
//! that is not a tick number (or is the last one) starts afresh from the request's `from`.

use std::pin::Pin;
use std::time::Duration;

use axum::response::Html;
use axum::routing::get;
use futures_util::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};
use tower::util::MapResponseLayer;
use tower_sse::{grpc, Event, LastEventId, SseLayer};
use tower_sse_proto::ticker_server::{Ticker, TickerServer};
use tower_sse_proto::{SubscribeRequest, Tick};

struct Feed;

type Ticks = Pin<Box<dyn Stream<Item = Result<Tick, Status>> + Send>>;

#[tonic::async_trait]
impl Ticker for Feed {
    type SubscribeStream = Ticks;

    /// One tick a second from `from`; a reconnecting browser resumes after its last id.
    async fn subscribe(
        &self,
        request: Request<SubscribeRequest>,
    ) -> Result<Response<Ticks>, Status> {
        // The id is the client's: one that is not a number, or has no number after it, starts
        // afresh from the request's `from`, as a first visit would.
        let resume = request
            .extensions()
            .get::<LastEventId>()
            .and_then(|id| id.as_str().parse::<u64>().ok())
            .and_then(|last| last.checked_add(1));
        let from = resume.unwrap_or(request.get_ref().from);
        let ticks = futures_util::stream::iter(from..=u64::MAX).then(|n| async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok(Tick {
                n,
                text: format!("tick {n}"),
            })
        });
        Ok(Response::new(Box::pin(ticks)))
    }

    async fn echo(&self, request: Request<Tick>) -> Result<Response<Tick>, Status> {
        Ok(Response::new(request.into_inner()))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::var("GRPC_ADDR").unwrap_or_else(|_| "127.0.0.1:3001".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let sse = SseLayer::new()
        .heartbeat(Duration::from_secs(15))
        // Ctrl-C ends every open stream, so the server's own drain is quick.
        .graceful_shutdown(shutdown.clone())
        // Each tick as JSON, its number as the event id (so `Last-Event-ID` resumes).
        .map_message(|message| {
            let tick: Tick = grpc::decode(&message)?;
            Event::default()
                .event("tick")?
                .id(tick.n.to_string())?
                .json(&tick)
        })
        .grpc();
    let page = Routes::from(axum::Router::new().route("/", get(|| async { Html(PAGE) })));
    println!("listening on http://{addr}");
    let signal = shutdown.clone().cancelled_owned();
    let server = tonic::transport::Server::builder()
        .accept_http1(true)
        .layer(sse)
        .layer(MapResponseLayer::new(undecodable_is_invalid))
        .add_routes(page)
        .add_service(TickerServer::new(Feed))
        .serve_with_incoming_shutdown(TcpIncoming::from(listener), signal);
    let drained = async {
        let _ = tokio::signal::ctrl_c().await;
        println!("shutting down: ending open streams");
        shutdown.cancel();
        // Whatever a client holds open, exit after a bounded drain.
        tokio::time::sleep(Duration::from_secs(3)).await;
    };
    tokio::select! {
        served = server => served?,
        () = drained => println!("connections still open after 3 s: dropped"),
    }
    Ok(())
}

/// tonic reports a request message it cannot decode as `INTERNAL`, which an event stream client
/// would get as a `500`; the message is the client's, so here it is `INVALID_ARGUMENT` (`400`).
fn undecodable_is_invalid<B>(mut response: http::Response<B>) -> http::Response<B> {
    let headers = response.headers_mut();
    let undecodable = headers.get("grpc-status").is_some_and(|code| code == "13")
        && headers
            .get("grpc-message")
            .is_some_and(|message| message.as_bytes().starts_with(b"failed%20to%20decode"));
    if undecodable {
        headers.insert("grpc-status", http::HeaderValue::from_static("3"));
    }
    response
}

const PAGE: &str = r#"<!doctype html>
<meta charset="utf-8">
<title>tower-sse gRPC demo</title>
<h1>feed.Ticker/Subscribe over EventSource</h1>
<p>State: <b id="state">connecting</b></p>
<ol id="log"></ol>
<script>
// SubscribeRequest { from: 1 }: field 1, varint. Build the protobuf bytes, then base64url.
function varint(n) { const out = []; while (n > 127) { out.push((n & 127) | 128); n >>>= 7; } out.push(n); return out; }
const bytes = [0x08, ...varint(1)];
const message = btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
const source = new EventSource("/feed.Ticker/Subscribe?message=" + message);
const state = document.getElementById("state");
source.onopen = () => state.textContent = "open";
source.onerror = () => state.textContent = source.readyState === 2 ? "closed" : "reconnecting";
source.addEventListener("tick", (event) => {
  const item = document.createElement("li");
  item.textContent = `#${event.lastEventId}: ${JSON.parse(event.data).text}`;
  document.getElementById("log").append(item);
});
</script>
"#;
