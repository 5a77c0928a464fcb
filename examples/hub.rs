//! A live board on a hub: publish a message once, every open page sees it; a page that
//! reconnects (a restart, a network blip, the layer's maximum age) gets exactly what it missed,
//! or a `reset` event when the server's memory of it is gone.
//!
//! ```text
//! cargo run --example hub --features hub                  # 127.0.0.1:3002 (--listen ADDR)
//! open http://127.0.0.1:3002                              # a page per tab; publish from any
//! curl -N -H 'Authorization: Bearer open-sesame' http://127.0.0.1:3002/events/board
//! curl -H 'Authorization: Bearer open-sesame' --data 'hello' 'http://127.0.0.1:3002/publish/board?event=note'
//! ```
//!
//! The HTTP interface:
//! - `GET /events/{topics}`: the subscription, `{topics}` one topic or several separated by
//!   commas (`/events/board,news`), resuming after `Last-Event-ID`;
//! - `POST /publish/{topic}` with the event's data as the body, `?event=NAME` optional: answers
//!   `200` with the id the hub gave it; an invalid topic or event name is a `400`.
//!
//! - `GET /ready`: `200` when the hub can publish and subscribe, `503` while its Redis is
//!   unreachable (for a load balancer's health check).
//!
//! Both need the token (`HUB_TOKEN`, default `open-sesame`) as `Authorization: Bearer`, or as
//! the `hub_token` cookie the page at `/` sets: topic names come from the path, and must be
//! authorised like any resource before the hub is asked.
//!
//! With `--redis URL` (feature `redis`) the hub is on Redis Streams: run several nodes on one
//! Redis, and an event published on any reaches the pages of every one; a page whose node
//! stops reconnects to another (behind a load balancer) and resumes there.
//!
//! ```text
//! cargo run --example hub --features redis -- --listen 127.0.0.1:3003 --redis redis://127.0.0.1:6379
//! ```
//!
//! While Redis is unreachable a publish answers `503` with `Retry-After`, and a subscription
//! answers with an event stream holding only a `retry:` hint: `EventSource` gives up on any
//! other status, and this way it comes back in five seconds.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use tokio_util::sync::CancellationToken;
use tower_sse::hub::{Hub, HubError};
use tower_sse::{Event, LastEventId, SseLayer};

mod serve;

#[derive(Clone)]
struct App {
    hub: Hub,
    token: String,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse()?;
    let token = std::env::var("HUB_TOKEN").unwrap_or_else(|_| "open-sesame".into());
    // The events each topic keeps for clients that come back (on Redis: `MAXLEN ~`).
    let builder = Hub::builder().history(args.history, 1024 * 1024);
    let hub = match &args.redis {
        None => builder.build(),
        Some(url) => on_redis(builder, url)?,
    };
    let shutdown = CancellationToken::new();
    let sse = SseLayer::new()
        .heartbeat(Duration::from_secs(15))
        .retry(Duration::from_secs(1))
        .max_age(Duration::from_secs(3600))
        .graceful_shutdown(shutdown.clone())
        .shutdown_event(Event::default().event("bye")?.data("server restarting"));
    let app = Router::new()
        .route("/", get(page))
        .route("/events/{topics}", get(events))
        .route("/publish/{topic}", post(publish))
        .route("/ready", get(ready))
        .with_state(App { hub, token })
        .layer(sse);

    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    let addr = listener.local_addr()?;
    match &args.redis {
        None => println!("hub board on http://{addr}"),
        Some(url) => println!("hub board on http://{addr}, on Redis at {url}"),
    }
    serve::cancel_on_signal(shutdown.clone());
    serve::serve(listener, app, shutdown, |_| {}).await;
    println!("stopped");
    Ok(())
}

/// The subscription: the topics from the path, once the client is authorised.
async fn events(
    State(app): State<App>,
    Path(topics): Path<String>,
    headers: HeaderMap,
    last: Option<Extension<LastEventId>>,
) -> Response {
    if let Err(refused) = authorise(&app, &headers) {
        return refused.into_response();
    }
    let topics = topics.split(',').filter(|topic| !topic.is_empty());
    match app
        .hub
        .subscribe(topics, last.map(|Extension(id)| id))
        .await
    {
        Ok(subscription) => {
            println!("subscribed: {:?}", subscription.resume());
            subscription.into_http().map(Body::new)
        }
        // The client's `EventSource` would give up on a 503: this stream only tells it when to
        // come back (the layer passes the hint on), and ends.
        Err(HubError::Unavailable(error)) => {
            println!("subscribe refused, Redis unavailable: {error}");
            let retry = "retry: 5000\n";
            ([(header::CONTENT_TYPE, "text/event-stream")], retry).into_response()
        }
        Err(error) => error.into_http().map(Body::from),
    }
}

/// The event name a publish may ask for.
#[derive(serde::Deserialize)]
struct Publish {
    event: Option<String>,
}

/// Publishes the body as the event's data; answers with its id.
async fn publish(
    State(app): State<App>,
    Path(topic): Path<String>,
    Query(query): Query<Publish>,
    headers: HeaderMap,
    body: String,
) -> Result<String, Response> {
    authorise(&app, &headers).map_err(IntoResponse::into_response)?;
    let mut event = Event::default().data(body);
    if let Some(name) = query.event {
        event = event
            .event(name)
            .map_err(|error| (StatusCode::BAD_REQUEST, format!("{error}\n")).into_response())?;
    }
    let id = app
        .hub
        .publish(&topic, event)
        .await
        .map_err(|error| error.into_http().map(Body::from))?;
    Ok(id)
}

/// `200` when the hub can publish and subscribe, else `503` with the reason.
async fn ready(State(app): State<App>) -> Response {
    match app.hub.ready().await {
        Ok(()) => "ready\n".into_response(),
        Err(error) => error.into_http().map(Body::from),
    }
}

/// The hub on the Redis at `url`.
#[cfg(feature = "redis")]
fn on_redis(builder: tower_sse::hub::HubBuilder, url: &str) -> Result<Hub, HubError> {
    builder.redis(tower_sse::hub::Redis::open(url)?)
}

#[cfg(not(feature = "redis"))]
fn on_redis(_: tower_sse::hub::HubBuilder, _: &str) -> Result<Hub, String> {
    Err("--redis needs the `redis` feature: cargo run --example hub --features redis".into())
}

/// The token as a bearer token, or the `hub_token` cookie; `401` otherwise.
fn authorise(app: &App, headers: &HeaderMap) -> Result<(), (StatusCode, &'static str)> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().strip_prefix("hub_token="))
        .next();
    if bearer.or(cookie) == Some(app.token.as_str()) {
        Ok(())
    } else {
        Err((StatusCode::UNAUTHORIZED, "a token is needed\n"))
    }
}

/// The page, with the token's cookie (a real application sets it at login).
async fn page(State(app): State<App>) -> impl IntoResponse {
    let cookie = format!("hub_token={}; Path=/; SameSite=Strict; HttpOnly", app.token);
    ([(header::SET_COOKIE, cookie)], Html(PAGE))
}

/// The command line: `--listen ADDR` (default `127.0.0.1:3002`), `--redis URL`, `--history
/// EVENTS` (per topic, default 1 000).
struct Args {
    listen: String,
    redis: Option<String>,
    history: usize,
}

impl Args {
    fn parse() -> Result<Self, String> {
        const USAGE: &str = "usage: hub [--listen 127.0.0.1:3002] [--redis redis://127.0.0.1:6379] [--history 1000]";
        let mut parsed = Self {
            listen: "127.0.0.1:3002".into(),
            redis: None,
            history: 1000,
        };
        let mut args = std::env::args().skip(1);
        while let Some(flag) = args.next() {
            let value = args.next().ok_or(USAGE)?;
            match flag.as_str() {
                "--listen" => parsed.listen = value,
                "--redis" => parsed.redis = Some(value),
                "--history" => parsed.history = value.parse().map_err(|_| USAGE)?,
                _ => return Err(USAGE.into()),
            }
        }
        Ok(parsed)
    }
}

const PAGE: &str = r#"<!doctype html>
<meta charset="utf-8">
<title>tower-sse hub board</title>
<h1>Board</h1>
<p>Topic <b id="topic"></b>, state <b id="state">connecting</b></p>
<form id="form"><input id="text" autocomplete="off" placeholder="a message"> <button>Publish</button></form>
<ol id="log"></ol>
<script>
  const topic = new URLSearchParams(location.search).get("topic") || "board";
  document.getElementById("topic").textContent = topic;
  const log = document.getElementById("log");
  const state = document.getElementById("state");
  const add = (kind, text, id) => {
    const item = document.createElement("li");
    item.className = kind;
    item.dataset.id = id || "";
    item.textContent = `${kind}: ${text}`;
    log.append(item);
  };
  const source = new EventSource(`/events/${encodeURIComponent(topic)}`);
  source.onopen = () => { state.textContent = "open"; };
  source.onerror = () => { state.textContent = source.readyState === 2 ? "closed" : "reconnecting"; };
  source.onmessage = (event) => add("message", event.data, event.lastEventId);
  source.addEventListener("note", (event) => add("note", event.data, event.lastEventId));
  source.addEventListener("reset", (event) => add("reset", event.data));
  source.addEventListener("bye", (event) => add("bye", event.data));
  document.getElementById("form").onsubmit = async (event) => {
    event.preventDefault();
    const text = document.getElementById("text");
    await fetch(`/publish/${encodeURIComponent(topic)}`, { method: "POST", body: text.value });
    text.value = "";
  };
</script>
"#;
