//! The conformance fixture server: serves every case of `tests/conformance/cases.json` through
//! `SseLayer`, records what each client sends, and collects the results a browser posts back.
//!
//! ```text
//! cargo run -p tower-sse-fixtures --bin conformance -- --listen 127.0.0.1:0
//! bash scripts/conformance.sh        # builds this, runs the three drivers, prints the table
//! ```
//!
//! Routes (`client` in the query string keeps each driver's connections apart):
//!
//! - `GET /case/{name}?client=C` — the case, through an `SseLayer` configured for it. The first
//!   `connections` requests of a client get the stream (a later one resumes after its
//!   `Last-Event-ID`); every request after that gets a 204, so a client stops.
//! - `GET /requests?client=C` — every request recorded for that client, by case: the raw bytes of
//!   `Last-Event-ID` (hex), all headers, a monotonic timestamp, and when each stream ended.
//! - `GET /` — the browser page (`page.html`); `GET /cases.json` — the case list.
//! - `POST /results?client=C` stores a driver's results; `GET /results?client=C` returns them.

use std::collections::HashMap;
use std::convert::Infallible;
use std::error::Error;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::{Deserialize, Serialize};
use tower::{service_fn, Layer, ServiceExt};
use tower_sse::compression::{Coding, Compression};
use tower_sse::{Event, EventError, LastEventId, Message, SseLayer};

/// The retry hint of every case that does not choose one: short, so reconnects are quick.
const FIXTURE_RETRY: Duration = Duration::from_millis(100);
/// No generated text may be longer than this.
const MAX_GENERATED: usize = 64 << 20;
/// The largest results document a driver may post.
const MAX_RESULTS: usize = 64 << 20;
/// At most this many clients' results are kept.
const MAX_RESULT_SETS: usize = 64;

// ---------------------------------------------------------------------------------------------
// The case file
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct CaseFile {
    cases: Vec<CaseSpec>,
}

/// One case as `cases.json` writes it (fields the drivers read, like `listen`, are ignored here).
#[derive(Deserialize)]
struct CaseSpec {
    name: String,
    /// The inner service's status (default 200).
    #[serde(default = "default_status")]
    status: u16,
    /// The inner service's `Content-Type` (picks the layer's framing).
    #[serde(default)]
    content_type: Option<String>,
    /// The inner body: one frame per item, pauses and hang-ups between them.
    #[serde(default)]
    body: Vec<ChunkSpec>,
    #[serde(default)]
    mapper: MapperSpec,
    #[serde(default)]
    layer: LayerSpec,
    /// How many requests of one client get the stream before the rest get a 204.
    #[serde(default = "default_connections")]
    connections: usize,
}

fn default_status() -> u16 {
    200
}

fn default_connections() -> usize {
    1
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum MapperSpec {
    /// `Message::into_event`: the frame, line or upstream event as it is.
    #[default]
    Default,
    /// Each message is a JSON event spec, built into an `Event` with the builder.
    Spec,
}

#[derive(Deserialize, Default)]
struct LayerSpec {
    /// Milliseconds, `"none"` (`no_retry`) or `"default"` (the crate's default); absent: 100 ms.
    #[serde(default)]
    retry: Option<RetrySpec>,
    #[serde(default)]
    heartbeat_ms: Option<u64>,
    #[serde(default)]
    heartbeat_comment: Option<String>,
    #[serde(default)]
    max_message_size: Option<usize>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RetrySpec {
    Millis(u64),
    Keyword(String),
}

/// One item of an inner body.
#[derive(Deserialize)]
#[serde(untagged)]
enum ChunkSpec {
    /// A frame holding this text's UTF-8.
    Text(String),
    /// A frame holding these bytes.
    Hex { hex: String },
    /// A frame holding generated text.
    Gen { gen: TextSpec },
    /// A frame holding one event spec as compact JSON (for the `spec` mapper).
    Json { json: EventSpec },
    /// `count` frames of event specs, `{n}` in their strings replaced by 0, 1, 2, ...
    Events { events: EventSpec, count: usize },
    /// The inner body fails with this error here.
    Fail { fail: String },
    /// The inner body waits this long before its next frame.
    Pause { pause_ms: u64 },
    /// The stream of this connection ends here; the next connection resumes after it.
    Hangup {
        #[allow(dead_code)]
        hangup: bool,
    },
}

/// Text, written out or generated.
#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum TextSpec {
    Plain(String),
    /// `repeat` written `times` times.
    Repeat {
        repeat: String,
        times: usize,
    },
    /// `numbered` followed by 0, 1, ... `count - 1`, joined by `sep`.
    Numbered {
        numbered: String,
        count: usize,
        #[serde(default)]
        sep: String,
    },
}

/// An event as a case writes it; `data` may be generated.
#[derive(Deserialize, Clone)]
struct EventSpec {
    #[serde(default)]
    event: Option<String>,
    #[serde(default)]
    data: Option<TextSpec>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    retry_ms: Option<u64>,
    #[serde(default)]
    comment: Option<String>,
}

/// An event spec as the inner service sends it in one frame, read back by the `spec` mapper.
#[derive(Serialize, Deserialize)]
struct WireEvent {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    comment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    event: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retry_ms: Option<u64>,
}

impl TextSpec {
    fn expand(&self) -> Result<String, String> {
        match self {
            Self::Plain(text) => Ok(text.clone()),
            Self::Repeat { repeat, times } => {
                let len = repeat.len().saturating_mul(*times);
                if len > MAX_GENERATED {
                    return Err(format!("generated text of {len} bytes is too long"));
                }
                Ok(repeat.repeat(*times))
            }
            Self::Numbered {
                numbered,
                count,
                sep,
            } => {
                let mut text = String::new();
                for n in 0..*count {
                    if n > 0 {
                        text.push_str(sep);
                    }
                    text.push_str(numbered);
                    text.push_str(&n.to_string());
                    if text.len() > MAX_GENERATED {
                        return Err("generated text is too long".into());
                    }
                }
                Ok(text)
            }
        }
    }
}

impl EventSpec {
    /// The wire form, `{n}` in every string replaced by `n` when given.
    fn to_wire(&self, n: Option<usize>) -> Result<WireEvent, String> {
        let fill = |text: &str| match n {
            Some(n) => text.replace("{n}", &n.to_string()),
            None => text.to_owned(),
        };
        let data = match &self.data {
            Some(data) => Some(fill(&data.expand()?)),
            None => None,
        };
        Ok(WireEvent {
            comment: self.comment.as_deref().map(fill),
            event: self.event.as_deref().map(fill),
            data,
            id: self.id.as_deref().map(fill),
            retry_ms: self.retry_ms,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Cases ready to serve
// ---------------------------------------------------------------------------------------------

/// One piece of a case's inner body.
enum Piece {
    /// A body frame; `id` is the id of the event it carries (for resumption).
    Frame {
        bytes: Bytes,
        id: Option<String>,
    },
    Pause(Duration),
    /// The inner body returns an error.
    Fail(String),
    Hangup,
}

struct Case {
    name: String,
    status: StatusCode,
    content_type: Option<HeaderValue>,
    pieces: Vec<Piece>,
    connections: usize,
    layer: SseLayer,
}

impl Case {
    fn from_spec(spec: CaseSpec) -> Result<Self, String> {
        let name = spec.name;
        let fail = |reason: String| format!("case {name:?}: {reason}");
        let status = StatusCode::from_u16(spec.status).map_err(|err| fail(err.to_string()))?;
        let content_type = match spec.content_type {
            Some(value) => {
                Some(HeaderValue::from_str(&value).map_err(|err| fail(err.to_string()))?)
            }
            None => None,
        };
        let mut pieces = Vec::new();
        for chunk in spec.body {
            match chunk {
                ChunkSpec::Text(text) => pieces.push(Piece::Frame {
                    bytes: Bytes::from(text),
                    id: None,
                }),
                ChunkSpec::Hex { hex } => pieces.push(Piece::Frame {
                    bytes: Bytes::from(decode_hex(&hex).map_err(fail)?),
                    id: None,
                }),
                ChunkSpec::Gen { gen } => pieces.push(Piece::Frame {
                    bytes: Bytes::from(gen.expand().map_err(fail)?),
                    id: None,
                }),
                ChunkSpec::Json { json } => {
                    pieces.push(json_frame(json.to_wire(None).map_err(fail)?).map_err(fail)?);
                }
                ChunkSpec::Events { events, count } => {
                    for n in 0..count {
                        let wire = events.to_wire(Some(n)).map_err(fail)?;
                        pieces.push(json_frame(wire).map_err(fail)?);
                    }
                }
                ChunkSpec::Fail { fail } => pieces.push(Piece::Fail(fail)),
                ChunkSpec::Pause { pause_ms } => {
                    pieces.push(Piece::Pause(Duration::from_millis(pause_ms)));
                }
                ChunkSpec::Hangup { .. } => pieces.push(Piece::Hangup),
            }
        }
        let layer = build_layer(&spec.layer, spec.mapper).map_err(fail)?;
        Ok(Self {
            name,
            status,
            content_type,
            pieces,
            connections: spec.connections,
            layer,
        })
    }

    /// Where the stream of a client's `connection` (0-based) starts: after the event whose id the
    /// client sent back, else after the `connection`-th hang-up; hang-ups there are skipped.
    fn start(&self, connection: usize, last_event_id: Option<&LastEventId>) -> usize {
        let mut start = 0;
        if connection > 0 {
            let after_id = last_event_id.and_then(|last| {
                self.pieces.iter().position(
                    |piece| matches!(piece, Piece::Frame { id: Some(id), .. } if id == last.as_str()),
                )
            });
            start = match after_id {
                Some(at) => at + 1,
                None => self
                    .pieces
                    .iter()
                    .enumerate()
                    .filter(|(_, piece)| matches!(piece, Piece::Hangup))
                    .nth(connection - 1)
                    .map_or(self.pieces.len(), |(at, _)| at + 1),
            };
        }
        while matches!(self.pieces.get(start), Some(Piece::Hangup)) {
            start += 1;
        }
        start
    }
}

fn json_frame(wire: WireEvent) -> Result<Piece, String> {
    let bytes = serde_json::to_vec(&wire).map_err(|err| err.to_string())?;
    Ok(Piece::Frame {
        bytes: Bytes::from(bytes),
        id: wire.id,
    })
}

fn decode_hex(hex: &str) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = hex.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    let pairs = digits.chunks_exact(2);
    if !pairs.remainder().is_empty() {
        return Err(format!("odd number of hex digits in {hex:?}"));
    }
    pairs
        .map(|pair| {
            std::str::from_utf8(pair)
                .ok()
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or_else(|| format!("invalid hex in {hex:?}"))
        })
        .collect()
}

/// The layer of one case, configured through the public builder.
fn build_layer(spec: &LayerSpec, mapper: MapperSpec) -> Result<SseLayer, String> {
    let mut layer = SseLayer::new();
    layer = match &spec.retry {
        None => layer.retry(FIXTURE_RETRY),
        Some(RetrySpec::Millis(millis)) => layer.retry(Duration::from_millis(*millis)),
        Some(RetrySpec::Keyword(word)) if word == "none" => layer.no_retry(),
        Some(RetrySpec::Keyword(word)) if word == "default" => layer,
        Some(RetrySpec::Keyword(word)) => return Err(format!("unknown retry {word:?}")),
    };
    if let Some(millis) = spec.heartbeat_ms {
        layer = layer.heartbeat(Duration::from_millis(millis));
    }
    if let Some(comment) = &spec.heartbeat_comment {
        layer = layer.heartbeat_comment(comment.clone());
    }
    if let Some(limit) = spec.max_message_size {
        layer = layer.max_message_size(limit);
    }
    if let MapperSpec::Spec = mapper {
        layer = layer.map_message(spec_event);
    }
    Ok(layer)
}

/// The `spec` mapper: the message is one JSON event spec; the event is built with the builder,
/// so its typed errors (a line break or NUL in an id, ...) end the stream as the layer decides.
fn spec_event(message: Message) -> Result<Event, EventError> {
    let wire: WireEvent =
        serde_json::from_slice(message.data()).map_err(|err| EventError::Json(err.to_string()))?;
    let mut event = Event::default();
    if let Some(comment) = wire.comment {
        event = event.comment(comment);
    }
    if let Some(name) = wire.event {
        event = event.event(name)?;
    }
    if let Some(data) = wire.data {
        event = event.data(data);
    }
    if let Some(id) = wire.id {
        event = event.id(id)?;
    }
    if let Some(millis) = wire.retry_ms {
        event = event.retry(Duration::from_millis(millis));
    }
    Ok(event)
}

// ---------------------------------------------------------------------------------------------
// What the server records
// ---------------------------------------------------------------------------------------------

#[derive(Serialize, Default)]
struct CaseLog {
    requests: Vec<RequestLog>,
    /// When each stream's inner body ended (the layer ends the response right after).
    ends: Vec<EndLog>,
}

#[derive(Serialize)]
struct RequestLog {
    /// Milliseconds since the server started (monotonic clock).
    t_ms: f64,
    /// 0 for a client's first request to the case, 1 for its first reconnect, ...
    connection: usize,
    /// `stream` (the inner service streamed the case) or `no-content` (204, do not reconnect).
    served: &'static str,
    /// The raw bytes of `Last-Event-ID`, in hex, if the request carried the header.
    last_event_id_hex: Option<String>,
    /// The same, decoded as UTF-8 (lossy), for reading.
    last_event_id: Option<String>,
    headers: Vec<(String, String)>,
    /// The response's `Content-Type` and `Content-Encoding`, once it is made.
    content_type: Option<String>,
    content_encoding: Option<String>,
}

#[derive(Serialize)]
struct EndLog {
    connection: usize,
    t_ms: f64,
}

struct App {
    dir: PathBuf,
    /// The one coding streams are compressed with (`--compression`), if any.
    compression: Option<Coding>,
    cases: HashMap<String, Arc<Case>>,
    /// By client, then case.
    logs: Mutex<HashMap<String, HashMap<String, CaseLog>>>,
    results: Mutex<HashMap<String, Bytes>>,
    start: Instant,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl App {
    fn now_ms(&self) -> f64 {
        self.start.elapsed().as_secs_f64() * 1000.0
    }

    /// Records a request and returns its connection number and whether it gets the stream.
    fn record_request(&self, client: &str, case: &Case, headers: &HeaderMap) -> (usize, bool) {
        let mut logs = lock(&self.logs);
        let log = logs
            .entry(client.to_owned())
            .or_default()
            .entry(case.name.clone())
            .or_default();
        let connection = log.requests.len();
        let stream = connection < case.connections;
        let last = headers.get("last-event-id").map(HeaderValue::as_bytes);
        log.requests.push(RequestLog {
            t_ms: self.now_ms(),
            connection,
            served: if stream { "stream" } else { "no-content" },
            last_event_id_hex: last.map(encode_hex),
            last_event_id: last.map(|raw| String::from_utf8_lossy(raw).into_owned()),
            headers: headers
                .iter()
                .map(|(name, value)| {
                    let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                    (name.as_str().to_owned(), value)
                })
                .collect(),
            content_type: None,
            content_encoding: None,
        });
        (connection, stream)
    }

    /// Records the head of the response to a client's request.
    fn record_response(&self, client: &str, case: &str, connection: usize, headers: &HeaderMap) {
        let text = |name| {
            headers
                .get(name)
                .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
        };
        let mut logs = lock(&self.logs);
        let request = logs
            .get_mut(client)
            .and_then(|cases| cases.get_mut(case))
            .and_then(|log| log.requests.get_mut(connection));
        if let Some(request) = request {
            request.content_type = text(header::CONTENT_TYPE);
            request.content_encoding = text(header::CONTENT_ENCODING);
        }
    }

    fn record_end(&self, client: &str, case: &str, connection: usize) {
        let t_ms = self.now_ms();
        let mut logs = lock(&self.logs);
        let log = logs
            .entry(client.to_owned())
            .or_default()
            .entry(case.to_owned())
            .or_default();
        log.ends.push(EndLog { connection, t_ms });
    }
}

fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The `client` query parameter (letters, digits, `-`, `_`; at most 64), or `default`.
fn client_of(uri: &Uri) -> String {
    uri.query()
        .into_iter()
        .flat_map(|query| query.split('&'))
        .find_map(|pair| pair.strip_prefix("client="))
        .filter(|client| {
            !client.is_empty()
                && client.len() <= 64
                && client
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .unwrap_or("default")
        .to_owned()
}

// ---------------------------------------------------------------------------------------------
// Handlers
// ---------------------------------------------------------------------------------------------

/// `GET /case/{name}`: the case's inner service behind the case's `SseLayer`.
async fn serve_case(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    request: Request,
) -> Response {
    let Some(case) = app.cases.get(&name).cloned() else {
        return (StatusCode::NOT_FOUND, "no such case\n").into_response();
    };
    let client = client_of(request.uri());
    let (connection, stream) = app.record_request(&client, &case, request.headers());
    let layer = match app.compression {
        // Every stream compressed with this coding alone, for a client that accepts it.
        Some(coding) => case
            .layer
            .clone()
            .compression(Compression::new().codings([coding])),
        None => case.layer.clone(),
    };
    let (log_app, log_client, log_case) = (app.clone(), client.clone(), case.name.clone());
    let inner = service_fn(move |request: Request| {
        let response = inner_response(&app, &case, &client, connection, stream, &request);
        async move { Ok::<_, Infallible>(response) }
    });
    match layer.layer(inner).oneshot(request).await {
        Ok(response) => {
            log_app.record_response(&log_client, &log_case, connection, response.headers());
            response.map(Body::new)
        }
        Err(never) => match never {},
    }
}

/// The inner service: streams the case's pieces as body frames, or says 204.
fn inner_response(
    app: &Arc<App>,
    case: &Arc<Case>,
    client: &str,
    connection: usize,
    stream: bool,
    request: &Request,
) -> Response {
    if !stream {
        return StatusCode::NO_CONTENT.into_response();
    }
    let start = case.start(connection, request.extensions().get::<LastEventId>());
    let on_end = {
        let app = app.clone();
        let client = client.to_owned();
        let name = case.name.clone();
        move || app.record_end(&client, &name, connection)
    };
    let feed = Feed {
        case: case.clone(),
        next: start,
        on_end: Some(Box::new(on_end)),
    };
    let frames = futures_util::stream::unfold(feed, |mut feed| async move {
        loop {
            let piece = feed.case.pieces.get(feed.next);
            feed.next += 1;
            match piece {
                Some(Piece::Frame { bytes, .. }) => {
                    let bytes = bytes.clone();
                    return Some((Ok(bytes), feed));
                }
                Some(Piece::Fail(reason)) => {
                    let error = std::io::Error::other(reason.clone());
                    feed.next = feed.case.pieces.len();
                    return Some((Err(error), feed));
                }
                Some(Piece::Pause(pause)) => tokio::time::sleep(*pause).await,
                Some(Piece::Hangup) | None => {
                    if let Some(on_end) = feed.on_end.take() {
                        on_end();
                    }
                    return None;
                }
            }
        }
    });
    let mut response = Response::new(Body::from_stream(frames));
    *response.status_mut() = case.status;
    if let Some(content_type) = &case.content_type {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, content_type.clone());
    }
    response
}

/// The inner body's state: the pieces still to send, and what to record at the end.
struct Feed {
    case: Arc<Case>,
    next: usize,
    on_end: Option<Box<dyn FnOnce() + Send>>,
}

async fn page(State(app): State<Arc<App>>) -> Response {
    file(&app, "page.html", "text/html; charset=utf-8").await
}

async fn cases_file(State(app): State<Arc<App>>) -> Response {
    file(&app, "cases.json", "application/json").await
}

async fn file(app: &App, name: &str, content_type: &'static str) -> Response {
    match tokio::fs::read(app.dir.join(name)).await {
        Ok(bytes) => ([(header::CONTENT_TYPE, content_type)], bytes).into_response(),
        Err(err) => (StatusCode::NOT_FOUND, format!("{name}: {err}\n")).into_response(),
    }
}

/// `GET /requests?client=C`: everything recorded for one client, by case.
async fn requests(State(app): State<Arc<App>>, uri: Uri) -> Response {
    let client = client_of(&uri);
    let logs = lock(&app.logs);
    let empty = HashMap::new();
    let body = serde_json::to_vec(logs.get(&client).unwrap_or(&empty));
    drop(logs);
    json_response(body)
}

fn json_response(body: Result<Vec<u8>, serde_json::Error>) -> Response {
    match body {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{err}\n")).into_response(),
    }
}

async fn post_results(State(app): State<Arc<App>>, uri: Uri, body: Bytes) -> Response {
    if serde_json::from_slice::<serde_json::Value>(&body).is_err() {
        return (StatusCode::BAD_REQUEST, "results must be JSON\n").into_response();
    }
    let client = client_of(&uri);
    let mut results = lock(&app.results);
    if results.len() >= MAX_RESULT_SETS && !results.contains_key(&client) {
        return (StatusCode::INSUFFICIENT_STORAGE, "too many result sets\n").into_response();
    }
    results.insert(client, body);
    StatusCode::NO_CONTENT.into_response()
}

async fn get_results(State(app): State<Arc<App>>, uri: Uri) -> Response {
    let results = lock(&app.results).get(&client_of(&uri)).cloned();
    match results {
        Some(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        None => (StatusCode::NOT_FOUND, "no results yet\n").into_response(),
    }
}

// ---------------------------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------------------------

struct Args {
    listen: SocketAddr,
    dir: PathBuf,
    exit_after: Duration,
    compression: Option<Coding>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        dir: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../conformance")),
        exit_after: Duration::from_secs(900),
        compression: None,
    };
    let mut given = std::env::args().skip(1);
    while let Some(flag) = given.next() {
        let value = given
            .next()
            .ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--listen" => {
                args.listen = value
                    .parse()
                    .map_err(|err| format!("--listen {value}: {err}"))?;
            }
            "--dir" => args.dir = PathBuf::from(value),
            "--compression" => {
                let coding = [Coding::Zstd, Coding::Brotli, Coding::Gzip]
                    .into_iter()
                    .find(|coding| coding.as_str() == value)
                    .ok_or_else(|| format!("--compression {value}: zstd, br or gzip"))?;
                args.compression = Some(coding);
            }
            "--exit-after" => {
                let secs: u64 = value
                    .parse()
                    .map_err(|err| format!("--exit-after {value}: {err}"))?;
                args.exit_after = Duration::from_secs(secs);
            }
            _ => {
                return Err(format!(
                    "unknown flag {flag}; usage: conformance [--listen 127.0.0.1:0] \
                     [--dir tests/conformance] [--exit-after SECS] [--compression zstd|br|gzip]"
                ))
            }
        }
    }
    if !args.listen.ip().is_loopback() {
        return Err(format!(
            "--listen {}: only loopback addresses are served",
            args.listen
        ));
    }
    Ok(args)
}

fn load_cases(dir: &std::path::Path) -> Result<HashMap<String, Arc<Case>>, String> {
    let path = dir.join("cases.json");
    let text = std::fs::read(&path).map_err(|err| format!("{}: {err}", path.display()))?;
    let file: CaseFile =
        serde_json::from_slice(&text).map_err(|err| format!("{}: {err}", path.display()))?;
    let mut cases = HashMap::new();
    for spec in file.cases {
        let case = Case::from_spec(spec)?;
        if cases.contains_key(&case.name) {
            return Err(format!("case {:?} is defined twice", case.name));
        }
        cases.insert(case.name.clone(), Arc::new(case));
    }
    Ok(cases)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let args = parse_args()?;
    let cases = load_cases(&args.dir)?;
    let app = Arc::new(App {
        dir: args.dir,
        compression: args.compression,
        cases,
        logs: Mutex::default(),
        results: Mutex::default(),
        start: Instant::now(),
    });
    let router = Router::new()
        .route("/", get(page))
        .route("/cases.json", get(cases_file))
        .route("/case/{name}", get(serve_case))
        .route("/requests", get(requests))
        .route("/results", get(get_results).post(post_results))
        .layer(DefaultBodyLimit::max(MAX_RESULTS))
        .with_state(app);
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    tokio::select! {
        served = axum::serve(listener, router) => served?,
        () = tokio::time::sleep(args.exit_after) => eprintln!("conformance: --exit-after elapsed, exiting"),
    }
    Ok(())
}
