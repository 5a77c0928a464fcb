//! A gateway: serves an upstream's NDJSON or event stream to browsers as compliant, heart-beaten
//! events. Requests that do not ask for an event stream are proxied untouched.
//!
//! ```text
//! cargo run --example demo &                   # an upstream on 127.0.0.1:3000
//! cargo run --example gateway -- --listen 127.0.0.1:8080 --upstream http://127.0.0.1:3000
//! curl -N -H 'Accept: text/event-stream' http://127.0.0.1:8080/ticks
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use http::Uri;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_sse::gateway::Upstream;
use tower_sse::SseLayer;

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let (listen, upstream) = args()?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Incoming>();
    let gateway = ServiceBuilder::new()
        .layer(
            SseLayer::new()
                // Below every idle timeout on the way: nginx and ALB 60 s, Heroku 55 s.
                .heartbeat(Duration::from_secs(15))
                .on_disconnect(|info| {
                    println!(
                        "client left after {:.1?}: {} events",
                        info.duration, info.events
                    );
                }),
        )
        // Below Heroku's 30 s to the first byte: the stream's first byte follows the head.
        .service(Upstream::new(client, upstream.clone())?.head_timeout(Duration::from_secs(25)));

    let listener = TcpListener::bind(listen).await?;
    println!("gateway on http://{listen}, forwarding to {upstream}");
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            // Out of file descriptors, say: wait, and keep serving the open streams.
            Err(error) => {
                eprintln!("accept failed: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let service = TowerToHyperService::new(gateway.clone());
        tokio::spawn(async move {
            // A client that leaves mid-stream ends its connection with an error: not worth a line.
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

/// `--listen ADDR --upstream URI`.
fn args() -> Result<(SocketAddr, Uri), Error> {
    let mut listen = None;
    let mut upstream = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--listen" => listen = Some(value.parse()?),
            "--upstream" => upstream = Some(value.parse()?),
            _ => return Err(format!("unknown flag {flag}").into()),
        }
    }
    let usage = "usage: gateway --listen 127.0.0.1:8080 --upstream http://127.0.0.1:9000";
    Ok((listen.ok_or(usage)?, upstream.ok_or(usage)?))
}
