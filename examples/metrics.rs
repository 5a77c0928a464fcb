//! Metrics and limits in production: every stream counted on the `metrics` facade, exported
//! for Prometheus on `/metrics` (`metrics-exporter-prometheus`), labelled with the matched
//! route; at most 1 000 streams open, 4 per client address; reconnections spread out by
//! retry jitter. The serving loop (`serve/mod.rs`) times out request heads and bounds the
//! drain on Ctrl-C.
//!
//! ```text
//! cargo run --example metrics --features axum,metrics -- --listen 127.0.0.1:3004
//! curl -N -H 'Accept: text/event-stream' http://127.0.0.1:3004/ticks
//! curl http://127.0.0.1:3004/metrics
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, MatchedPath, State};
use axum::routing::get;
use axum::Router;
use futures_util::StreamExt;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;
use tower_sse::{Disconnect, Event, SseLayer};

mod serve;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let listen = args
        .iter()
        .position(|arg| arg == "--listen")
        .and_then(|at| args.get(at + 1))
        .map_or("127.0.0.1:3004", String::as_str);
    // The recorder every `metrics` call in the process reports to; `render` is the text the
    // Prometheus scraper reads.
    let prometheus = PrometheusBuilder::new().install_recorder()?;

    let shutdown = CancellationToken::new();
    let sse = SseLayer::new()
        .retry(Duration::from_secs(2))
        .retry_jitter(Duration::from_secs(3))
        .max_streams(1000)
        .max_streams_per_key(4, |request| {
            let peer = request.extensions.get::<ConnectInfo<SocketAddr>>()?;
            Some(peer.0.ip().to_string())
        })
        .on_limit_exceeded(|exceeded| eprintln!("refused: {exceeded:?}"))
        .metrics_label("route", |request| {
            Some(request.extensions.get::<MatchedPath>()?.as_str().to_owned())
        })
        .graceful_shutdown(shutdown.clone())
        .shutdown_event(Event::default().event("bye")?.data("server restarting"));
    let app = Router::new()
        .route("/ticks", get(ticks))
        .with_state(shutdown.clone())
        .layer(sse)
        // Outside the layer: a scrape is not an event stream.
        .route("/metrics", get(move || render(prometheus.clone())));

    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    serve::cancel_on_signal(shutdown.clone());
    serve::serve(listener, app, shutdown, |_| {}).await;
    println!("stopped");
    Ok(())
}

async fn render(prometheus: PrometheusHandle) -> String {
    prometheus.render()
}

/// One event a second until the client leaves or the server shuts down.
async fn ticks(State(shutdown): State<CancellationToken>, disconnect: Disconnect) -> Body {
    let over = async move {
        tokio::select! {
            () = disconnect.into_disconnected() => {}
            () = shutdown.cancelled_owned() => {}
        }
    };
    let ticks = futures_util::stream::iter(1..=u64::MAX)
        .then(|n| async move {
            if n > 1 {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Ok::<_, Infallible>(format!("tick {n}"))
        })
        .take_until(over);
    Body::from_stream(ticks)
}
