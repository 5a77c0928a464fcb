//! A live board on a hub: publish a message once, every open page sees it; a page that
//! reconnects (a restart, a network blip, the layer's maximum age) gets exactly what it missed,
//! or a `reset` event when the server's memory of it is gone.
//!
//! ```text
//! cargo run --example hub --features hub,axum            # 127.0.0.1:3002 (--listen ADDR)
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
//! Both need the token (`HUB_TOKEN`, default `open-sesame`) as `Authorization: Bearer`, or as
//! the `hub_token` cookie the page at `/` sets: topic names come from the path, and must be
//! authorised like any resource before the hub is asked.

use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio_util::sync::CancellationToken;
use tower_sse::hub::{Hub, Subscription};
use tower_sse::{Event, LastEventId, SseLayer};

mod serve;

#[derive(Clone)]
struct App {
    hub: Hub,
    token: String,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listen = listen_arg()?;
    let token = std::env::var("HUB_TOKEN").unwrap_or_else(|_| "open-sesame".into());
    let hub = Hub::memory();
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
        .with_state(App { hub, token })
        .layer(sse);

    let listener = tokio::net::TcpListener::bind(&listen).await?;
    let addr = listener.local_addr()?;
    println!("hub board on http://{addr}");
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
    last: Option<LastEventId>,
) -> Result<Subscription, Response> {
    authorise(&app, &headers).map_err(IntoResponse::into_response)?;
    let topics = topics.split(',').filter(|topic| !topic.is_empty());
    let subscription = app
        .hub
        .subscribe(topics, last)
        .map_err(IntoResponse::into_response)?;
    println!("subscribed: {:?}", subscription.resume());
    Ok(subscription)
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
        .map_err(IntoResponse::into_response)?;
    Ok(id)
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

/// `--listen ADDR`, default `127.0.0.1:3002`.
fn listen_arg() -> Result<String, String> {
    let mut args = std::env::args().skip(1);
    match (args.next().as_deref(), args.next()) {
        (None, _) => Ok("127.0.0.1:3002".into()),
        (Some("--listen"), Some(addr)) => Ok(addr),
        _ => Err("usage: hub [--listen 127.0.0.1:3002]".into()),
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
