//! A gateway: serves an upstream's NDJSON or event stream to browsers as compliant, heart-beaten
//! events. Requests that do not ask for an event stream are proxied untouched. Ctrl-C (or
//! SIGTERM) ends open streams and exits within seconds; a client that sends half a request head
//! is closed after 10 s (`serve/mod.rs`).
//!
//! ```text
//! cargo run --example demo --features axum,compression &    # an upstream on 127.0.0.1:3000
//! cargo run --example gateway --features gateway -- --listen 127.0.0.1:8080 --upstream http://127.0.0.1:3000
//! curl -N -H 'Accept: text/event-stream' http://127.0.0.1:8080/ticks
//! ```
//!
//! An upstream's event stream is served through the layer whatever the client's `Accept`: the
//! official OpenAI SDKs ask for `application/json` on a streaming request, and still get
//! heartbeats through a long model pause. `--heartbeat-ms` sets their interval (default 15 000).

use std::net::SocketAddr;
use std::time::Duration;

use http::{header, HeaderValue, Request, Uri};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;
use tower_sse::gateway::Upstream;
use tower_sse::SseLayer;

mod serve;

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let Args {
        listen,
        upstream,
        heartbeat,
    } = Args::parse()?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Incoming>();
    let shutdown = CancellationToken::new();
    let gateway = ServiceBuilder::new()
        .layer(
            SseLayer::new()
                .graceful_shutdown(shutdown.clone())
                // Below every idle timeout on the way: nginx and ALB 60 s, Heroku 55 s.
                .heartbeat(heartbeat)
                .on_disconnect(|info| {
                    println!(
                        "client left after {:.1?}: {} events",
                        info.duration, info.events
                    );
                }),
        )
        // Uncompressed bodies from the upstream: an event stream it compressed could not be
        // re-framed, and would pass without heartbeats. Requests that ask for an event stream
        // already say so; this covers those that do not (the OpenAI SDKs send `gzip, deflate`).
        .map_request(|mut request: Request<Incoming>| {
            let identity = HeaderValue::from_static("identity");
            request
                .headers_mut()
                .insert(header::ACCEPT_ENCODING, identity);
            request
        })
        // Below Heroku's 30 s to the first byte: the stream's first byte follows the head.
        .service(Upstream::new(client, upstream.clone())?.head_timeout(Duration::from_secs(25)));

    let listener = TcpListener::bind(listen).await?;
    let listen = listener.local_addr()?;
    println!("gateway on http://{listen}, forwarding to {upstream}");
    serve::cancel_on_signal(shutdown.clone());
    serve::serve(listener, gateway, shutdown, |_| {}).await;
    println!("stopped");
    Ok(())
}

/// The command line: `--listen ADDR --upstream URI [--heartbeat-ms MS]`.
struct Args {
    listen: SocketAddr,
    upstream: Uri,
    heartbeat: Duration,
}

impl Args {
    fn parse() -> Result<Self, Error> {
        let mut listen = None;
        let mut upstream = None;
        let mut heartbeat = Duration::from_secs(15);
        let mut args = std::env::args().skip(1);
        while let Some(flag) = args.next() {
            let value = args.next().ok_or(format!("{flag} needs a value"))?;
            match flag.as_str() {
                "--listen" => listen = Some(value.parse()?),
                "--upstream" => upstream = Some(value.parse()?),
                "--heartbeat-ms" => heartbeat = Duration::from_millis(value.parse()?),
                _ => return Err(format!("unknown flag {flag}").into()),
            }
        }
        let usage = "usage: gateway --listen 127.0.0.1:8080 --upstream http://127.0.0.1:9000 [--heartbeat-ms 15000]";
        Ok(Self {
            listen: listen.ok_or(usage)?,
            upstream: upstream.ok_or(usage)?,
            heartbeat,
        })
    }
}
