//! An axum app whose plain streaming handler becomes an event stream through `SseLayer`, with
//! the lifecycle settings a production server wants: Ctrl-C (or SIGTERM) ends open streams with
//! a final event and the server exits within seconds whatever its clients do, streams end after
//! about an hour so load rebalances, half-open peers are found within heartbeat + write
//! deadline, a client that sends half a request head is closed after 10 s, and clients that
//! accept zstd, br or gzip get their stream compressed, each frame flushed as it is written.
//! `serve/mod.rs` has the serving loop (hyper-util, with a head timeout and a bounded drain).
//!
//! ```text
//! cargo run --example demo --features axum,compression
//! open http://127.0.0.1:3000                       # a page using EventSource
//! curl -N -H 'Accept: text/event-stream' http://127.0.0.1:3000/ticks
//! curl -N --compressed -H 'Accept: text/event-stream' http://127.0.0.1:3000/ticks
//! ```

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::Router;
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;
use tower_sse::compression::Compression;
use tower_sse::{Disconnect, Event, LastEventId, SseLayer};

mod serve;

const WRITE_DEADLINE: Duration = Duration::from_secs(30);

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::var("DEMO_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let shutdown = CancellationToken::new();
    let sse = SseLayer::new()
        .heartbeat(Duration::from_secs(15))
        .retry(Duration::from_secs(3))
        // Each NDJSON line is a tick number: name the event and use the number as its id, so a
        // reconnecting browser resumes where it left off.
        .map_message(|message| {
            let n = message.text();
            Ok(Event::default()
                .event("tick")?
                .id(n.clone())?
                .data(format!("tick {n}")))
        })
        .write_deadline(WRITE_DEADLINE)
        .max_age(Duration::from_secs(3600))
        .graceful_shutdown(shutdown.clone())
        .shutdown_event(Event::default().event("bye")?.data("server restarting"))
        // zstd, br or gzip for clients that ask (browsers do): the ticks carry no secret, so one
        // context per stream is safe (see the README's "Compression").
        .compression(Compression::new())
        .on_close(|info| {
            println!(
                "stream closed ({:?}) after {:.1?}: {} events, {} bytes, last id {:?}",
                info.reason, info.duration, info.events, info.bytes, info.last_event_id
            );
        });
    let app = Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/ticks", get(ticks))
        .with_state(shutdown.clone())
        .layer(sse);

    let listener = tokio::net::TcpListener::bind(&addr).await?;
    let addr = listener.local_addr()?;
    println!("listening on http://{addr}");
    println!("try: curl -N -H 'Accept: text/event-stream' http://{addr}/ticks");
    println!(
        "or compressed: curl -N --compressed -H 'Accept: text/event-stream' http://{addr}/ticks"
    );
    serve::cancel_on_signal(shutdown.clone());
    // Unacknowledged bytes (heartbeats, at least) abort a connection after the write deadline:
    // a peer that vanished without a FIN or RST is found within heartbeat + deadline.
    let configure = |tcp: &tokio::net::TcpStream| {
        let socket = socket2::SockRef::from(tcp);
        if let Err(error) = socket.set_tcp_user_timeout(Some(WRITE_DEADLINE)) {
            eprintln!("TCP_USER_TIMEOUT not set: {error}");
        }
    };
    serve::serve(listener, app, shutdown, configure).await;
    println!("stopped");
    Ok(())
}

/// A plain streaming handler: one NDJSON line a second, resuming after `Last-Event-ID`, stopping
/// when the client goes away or the server shuts down (a plain `GET` without
/// `Accept: text/event-stream` gets these lines untouched, and must not hold the shutdown up).
async fn ticks(
    State(shutdown): State<CancellationToken>,
    disconnect: Disconnect,
    last: Option<LastEventId>,
) -> impl IntoResponse {
    // The id is the client's: a number past the last tick, or not a number, starts afresh.
    let first = last
        .and_then(|id| id.as_str().parse::<u64>().ok())
        .and_then(|n| n.checked_add(1))
        .unwrap_or(1);
    let over = async move {
        tokio::select! {
            () = disconnect.into_disconnected() => {}
            () = shutdown.cancelled_owned() => {}
        }
    };
    let ticks = futures_util::stream::iter(first..=u64::MAX)
        .then(move |n| async move {
            if n != first {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Ok::<_, Infallible>(format!("{n}\n"))
        })
        .take_until(over);
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(ticks),
    )
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
