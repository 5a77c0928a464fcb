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

use std::pin::Pin;
use std::time::Duration;

use axum::response::Html;
use axum::routing::get;
use futures_util::{Stream, StreamExt};
use tonic::service::Routes;
use tonic::{Request, Response, Status};
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
        let resume = request
            .extensions()
            .get::<LastEventId>()
            .map(|id| id.as_str().parse::<u64>());
        let from = match resume {
            Some(Ok(last)) => last + 1,
            Some(Err(_)) => return Err(Status::invalid_argument("Last-Event-ID is not a number")),
            None => request.get_ref().from,
        };
        let ticks = futures_util::stream::iter(from..).then(|n| async move {
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
    let addr = std::env::var("GRPC_ADDR")
        .unwrap_or_else(|_| "127.0.0.1:3001".into())
        .parse()?;
    let sse = SseLayer::new()
        .heartbeat(Duration::from_secs(15))
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
    tonic::transport::Server::builder()
        .accept_http1(true)
        .layer(sse)
        .add_routes(page)
        .add_service(TickerServer::new(Feed))
        .serve(addr)
        .await?;
    Ok(())
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
