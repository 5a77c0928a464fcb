//! An axum app whose plain streaming handler becomes an event stream through `SseLayer`.
//!
//! ```text
//! cargo run --example demo
//! open http://127.0.0.1:3000                       # a page using EventSource
//! curl -N -H 'Accept: text/event-stream' http://127.0.0.1:3000/ticks
//! ```

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::{Extension, Router};
use futures_util::StreamExt;
use tower_sse::{Disconnect, Event, LastEventId, SseLayer};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::var("DEMO_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let sse = SseLayer::new()
        .heartbeat(Duration::from_secs(15))
        .retry(Duration::from_secs(3))
        // Each body frame is a tick number: name the event and use the number as its id, so a
        // reconnecting browser resumes where it left off.
        .map_message(|message| {
            let n = message.text();
            Ok(Event::default()
                .event("tick")?
                .id(n.clone())?
                .data(format!("tick {n}")))
        })
        .on_disconnect(|info| {
            println!(
                "client left after {:.1?}: {} events, {} bytes, last id {:?}",
                info.duration, info.events, info.bytes, info.last_event_id
            );
        });
    let app = Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/ticks", get(ticks))
        .layer(sse);

    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{addr}");
    println!("try: curl -N -H 'Accept: text/event-stream' http://{addr}/ticks");
    axum::serve(listener, app).await
}

/// A plain streaming handler: one frame per second, resuming after `Last-Event-ID`, stopping
/// when the client goes away.
async fn ticks(
    Extension(disconnect): Extension<Disconnect>,
    last: Option<Extension<LastEventId>>,
) -> impl IntoResponse {
    let first = last
        .and_then(|Extension(id)| id.as_str().parse::<u64>().ok())
        .map_or(1, |n| n + 1);
    let ticks = futures_util::stream::unfold(first, move |n| async move {
        if n != first {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        Some((Ok::<_, Infallible>(n.to_string()), n + 1))
    })
    .take_until(disconnect.into_disconnected());
    Body::from_stream(ticks)
}

const PAGE: &str = r#"<!doctype html>
<meta charset="utf-8">
<title>tower-sse demo</title>
<h1>tower-sse demo</h1>
<p>State: <b id="state">connecting</b></p>
<ol id="log"></ol>
<script>
  const log = document.getElementById("log");
  const state = document.getElementById("state");
  const source = new EventSource("/ticks");
  source.onopen = () => { state.textContent = "open"; };
  source.onerror = () => { state.textContent = "reconnecting"; };
  source.addEventListener("tick", (event) => {
    const item = document.createElement("li");
    item.textContent = `${event.data} (lastEventId ${event.lastEventId})`;
    log.prepend(item);
  });
</script>
"#;
