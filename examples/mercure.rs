//! A standalone Mercure hub: publishers `POST` updates with a JWT, browsers subscribe with
//! `EventSource` to the topics they match, private updates reach only the subscribers whose
//! token grants them, and a client that reconnects gets what it missed.
//!
//! ```text
//! export MERCURE_PUBLISHER_JWT_KEY='!ChangeThisMercureHubJWTSecretKey!'
//! export MERCURE_SUBSCRIBER_JWT_KEY='!ChangeThisMercureHubJWTSecretKey!'
//! cargo run --example mercure --features mercure,axum -- --anonymous   # 127.0.0.1:3004
//! open http://127.0.0.1:3004                         # a page subscribed to one topic
//! curl -N 'http://127.0.0.1:3004/.well-known/mercure?match=https://example.com/books/1'
//! curl -H "Authorization: Bearer $TOKEN" -d topic=https://example.com/books/1 -d data=hello \
//!   http://127.0.0.1:3004/.well-known/mercure
//! ```
//!
//! Options:
//! - `--listen ADDR` (default `127.0.0.1:3004`);
//! - `--public-url URL`: the hub's URL as clients and tokens name it (default
//!   `http://{listen}/.well-known/mercure`): a draft token's `aud` must name it and its `iss`
//!   be its origin (`--issuer` to trust another);
//! - `--anonymous`: subscribers without a token get the public updates;
//! - `--subscriptions`: subscription events and the subscriptions API;
//! - `--cors-origin ORIGIN` (repeatable): browsers on these origins may subscribe and publish
//!   with credentials;
//! - `--redis URL` (feature `redis`): the hub on Redis Streams; run several nodes on one Redis,
//!   an update published on any reaches subscribers on all, a client resumes on any;
//! - `--history EVENTS`: the updates kept for clients that reconnect (default 10 000).
//!
//! Keys: `MERCURE_PUBLISHER_JWT_KEY` and `MERCURE_SUBSCRIBER_JWT_KEY` (Mercure's own names),
//! with `MERCURE_PUBLISHER_JWT_ALG` / `MERCURE_SUBSCRIBER_JWT_ALG` (`HS256` by default; `RS256`
//! or `ES256` take a PEM public key). Tokens of both generations of the protocol are accepted:
//! the draft's (`typ: at+jwt`, `authorization_details`) and the pre-standard `mercure` claim.

use std::time::Duration;

use axum::http::{header, HeaderName, HeaderValue, Method};
use axum::response::Html;
use axum::routing::get;
use axum::Router;
use tokio_util::sync::CancellationToken;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_sse::hub::{Hub, HubBuilder};
use tower_sse::mercure::{MercureHub, TokenKey, Verifier};
use tower_sse::SseLayer;

mod serve;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse()?;
    let url = match &args.public_url {
        Some(url) => url::Url::parse(url)?,
        None => url::Url::parse(&format!("http://{}/.well-known/mercure", args.listen))?,
    };
    let verifier = |role: &str| -> Result<Verifier, String> {
        let key = std::env::var(format!("MERCURE_{role}_JWT_KEY"))
            .map_err(|_| format!("set MERCURE_{role}_JWT_KEY (the key that verifies tokens)"))?;
        let alg = std::env::var(format!("MERCURE_{role}_JWT_ALG")).unwrap_or_default();
        let key = match alg.as_str() {
            "" | "HS256" => TokenKey::hmac(key.as_bytes()),
            "RS256" => TokenKey::rsa_pem(key.as_bytes()).map_err(|e| e.to_string())?,
            "ES256" => TokenKey::ec_pem(key.as_bytes()).map_err(|e| e.to_string())?,
            other => {
                return Err(format!(
                    "MERCURE_{role}_JWT_ALG: {other:?} is not supported"
                ))
            }
        };
        let mut verifier = Verifier::new(key, url.clone()).pre_standard(true);
        if let Some(issuer) = &args.issuer {
            verifier = verifier.issuer(issuer.clone());
        }
        Ok(verifier)
    };
    let publishers = verifier("PUBLISHER")?;
    let subscribers = verifier("SUBSCRIBER")?;
    let builder = Hub::builder().history(args.history, 16 * 1024 * 1024);
    let hub = match &args.redis {
        None => builder.build(),
        Some(redis) => on_redis(builder, redis)?,
    };
    let mercure = MercureHub::builder(hub, url.clone())
        .publishers(publishers)
        .subscribers(subscribers)
        .anonymous(args.anonymous)
        .subscriptions(args.subscriptions)
        .build();

    let shutdown = CancellationToken::new();
    let sse = SseLayer::new()
        .heartbeat(Duration::from_secs(15))
        .max_age(Duration::from_secs(3600))
        .graceful_shutdown(shutdown.clone());
    let app = Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .nest_service("/.well-known/mercure", mercure.clone())
        .layer(sse)
        .layer(cors(&args.cors_origins)?);

    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    println!("mercure hub on http://{}, as {url}", listener.local_addr()?);
    serve::cancel_on_signal(shutdown.clone());
    serve::serve(listener, app, shutdown, |_| {}).await;
    // The streams have ended: their ends are announced to the other nodes before exiting.
    if !mercure.shutdown(Duration::from_secs(5)).await {
        eprintln!("the ends of some subscriptions were not announced in time");
    }
    println!("stopped");
    Ok(())
}

/// Cross-origin access for `origins` (none by default), with credentials (cookies): explicit
/// origins only, as the protocol requires; the headers a subscriber reads are exposed.
fn cors(origins: &[String]) -> Result<CorsLayer, Box<dyn std::error::Error>> {
    let origins = origins
        .iter()
        .map(|origin| HeaderValue::from_str(origin))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_credentials(true)
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::CACHE_CONTROL,
            HeaderName::from_static("last-event-id"),
        ])
        .expose_headers([
            header::LINK,
            HeaderName::from_static("mercure-last-event-id"),
            HeaderName::from_static("last-event-id"),
        ]))
}

/// The hub on the Redis at `url`.
#[cfg(feature = "redis")]
fn on_redis(builder: HubBuilder, url: &str) -> Result<Hub, tower_sse::hub::HubError> {
    builder.redis(tower_sse::hub::Redis::open(url)?.key_prefix("mercure:"))
}

#[cfg(not(feature = "redis"))]
fn on_redis(_: HubBuilder, _: &str) -> Result<Hub, String> {
    Err("--redis needs the `redis` feature: cargo run --example mercure --features mercure,axum,redis".into())
}

/// The command line.
struct Args {
    listen: String,
    public_url: Option<String>,
    issuer: Option<String>,
    anonymous: bool,
    subscriptions: bool,
    cors_origins: Vec<String>,
    redis: Option<String>,
    history: usize,
}

impl Args {
    fn parse() -> Result<Self, String> {
        const USAGE: &str = "usage: mercure [--listen 127.0.0.1:3004] [--public-url URL] [--issuer ISS] [--anonymous] [--subscriptions] [--cors-origin ORIGIN]... [--redis URL] [--history 10000]";
        let mut parsed = Self {
            listen: "127.0.0.1:3004".into(),
            public_url: None,
            issuer: None,
            anonymous: false,
            subscriptions: false,
            cors_origins: Vec::new(),
            redis: None,
            history: 10_000,
        };
        let mut args = std::env::args().skip(1);
        while let Some(flag) = args.next() {
            match flag.as_str() {
                "--anonymous" => parsed.anonymous = true,
                "--subscriptions" => parsed.subscriptions = true,
                _ => {
                    let value = args.next().ok_or(USAGE)?;
                    match flag.as_str() {
                        "--listen" => parsed.listen = value,
                        "--public-url" => parsed.public_url = Some(value),
                        "--issuer" => parsed.issuer = Some(value),
                        "--cors-origin" => parsed.cors_origins.push(value),
                        "--redis" => parsed.redis = Some(value),
                        "--history" => parsed.history = value.parse().map_err(|_| USAGE)?,
                        _ => return Err(USAGE.into()),
                    }
                }
            }
        }
        Ok(parsed)
    }
}

const PAGE: &str = r#"<!doctype html>
<meta charset="utf-8">
<title>tower-sse Mercure hub</title>
<h1>Mercure hub</h1>
<p>Subscribed to <b id="topic"></b> (<code>?topic=</code> to change), state <b id="state">connecting</b></p>
<ol id="log"></ol>
<script>
  const topic = new URLSearchParams(location.search).get("topic") || "https://example.com/books/1";
  document.getElementById("topic").textContent = topic;
  const state = document.getElementById("state");
  const url = new URL("/.well-known/mercure", location.origin);
  url.searchParams.append("match", topic);
  const source = new EventSource(url, { withCredentials: true });
  source.onopen = () => { state.textContent = "open"; };
  source.onerror = () => { state.textContent = source.readyState === 2 ? "closed" : "reconnecting"; };
  source.onmessage = (event) => {
    const item = document.createElement("li");
    item.textContent = `${event.lastEventId}: ${event.data}`;
    document.getElementById("log").append(item);
  };
</script>
"#;
