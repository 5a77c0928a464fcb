//! The Mercure hub service over HTTP on 127.0.0.1, behind `SseLayer` in an axum router:
//! routing, authorization at the boundary (private updates live and replayed, forged, `none`,
//! expired and under-granted tokens), reconnection and its response headers, subscription
//! events and the API, and two nodes on one Redis.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use support::whatwg::{self, Dispatched};
use tower_sse::hub::Hub;
use tower_sse::mercure::{MercureHub, TokenKey, Verifier, AUTHORIZATION_DETAIL_TYPE};
use tower_sse::SseLayer;

const KEY: &[u8] = b"!ChangeThisMercureHubJWTSecretKey!";
const HUB: &str = "https://localhost/.well-known/mercure";

fn hub_url() -> url::Url {
    url::Url::parse(HUB).unwrap_or_else(|e| panic!("{e}")) // ok: test
}

/// A Mercure hub over `hub`, served on a fresh port.
async fn serve(hub: Hub, anonymous: bool, subscriptions: bool) -> SocketAddr {
    let verifier = Verifier::new(TokenKey::hmac(KEY), hub_url()).pre_standard(true);
    let mercure = MercureHub::builder(hub, hub_url())
        .publishers(verifier.clone())
        .subscribers(verifier)
        .anonymous(anonymous)
        .subscriptions(subscriptions)
        .build();
    let router = axum::Router::new()
        .nest_service("/.well-known/mercure", mercure)
        .layer(SseLayer::new().heartbeat(Duration::from_secs(30)));
    support::serve_axum(router).await
}

/// A draft token (`at+jwt`) signed with `key`: publish and subscribe grants (exact topics, or
/// `*`), expiring at `exp`.
fn token_with(key: &[u8], publish: &[&str], subscribe: &[&str], exp: u64) -> String {
    let detail = |action: &str, topics: &[&str]| {
        let topics: Vec<Value> = topics.iter().map(|t| json!({ "match": t })).collect();
        json!({ "type": AUTHORIZATION_DETAIL_TYPE, "actions": [action], "topics": topics })
    };
    let mut details = Vec::new();
    if !publish.is_empty() {
        details.push(detail("publish", publish));
    }
    if !subscribe.is_empty() {
        details.push(detail("subscribe", subscribe));
    }
    let claims = json!({
        "aud": HUB,
        "iss": "https://localhost",
        "exp": exp,
        "authorization_details": details,
    });
    let mut header = Header::new(Algorithm::HS256);
    header.typ = Some("at+jwt".into());
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(key))
        .unwrap_or_else(|e| panic!("{e}")) // ok: test
}

fn token(publish: &[&str], subscribe: &[&str]) -> String {
    token_with(KEY, publish, subscribe, 4_102_444_800)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// Publishes `form` with `token` (if any): the status, headers and body.
async fn publish(
    addr: SocketAddr,
    token: Option<&str>,
    form: &[(&str, &str)],
) -> (StatusCode, http::HeaderMap, String) {
    let body: String = form
        .iter()
        .map(|(name, value)| {
            let encode = |text: &str| {
                percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC)
                    .to_string()
            };
            format!("{}={}", encode(name), encode(value))
        })
        .collect::<Vec<_>>()
        .join("&");
    let mut request = Request::post("/.well-known/mercure")
        .header("host", addr.to_string())
        .header("content-type", "application/x-www-form-urlencoded");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let request = request
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|e| panic!("{e}")); // ok: test
    let response = support::send(addr, request).await;
    let (parts, body) = response.into_parts();
    let body = support::collect(body).await;
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

/// Publishes and expects `200` with the id.
async fn published(addr: SocketAddr, form: &[(&str, &str)]) -> String {
    let (status, headers, id) = publish(addr, Some(&token(&["*"], &[])), form).await;
    assert_eq!(status, StatusCode::OK, "{id}");
    assert_eq!(headers["content-type"], "text/plain; charset=utf-8");
    id
}

/// A subscription: the response, opened as `EventSource` would (with `headers`).
async fn subscribe(addr: SocketAddr, query: &str, headers: &[(&str, &str)]) -> Response {
    let mut all = vec![("accept", "text/event-stream")];
    all.extend_from_slice(headers);
    let response = support::get(addr, &format!("/.well-known/mercure?{query}"), &all).await;
    Response {
        status: response.status(),
        headers: response.headers().clone(),
        body: response.into_body(),
        bytes: Vec::new(),
    }
}

struct Response {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Incoming,
    bytes: Vec<u8>,
}

impl Response {
    /// Reads until `count` events were dispatched (or the stream ends, or 5 s pass); the
    /// events.
    async fn events(&mut self, count: usize) -> Vec<Dispatched> {
        self.events_within(count, Duration::from_secs(5)).await
    }

    /// Whether no event arrives within half a second (after what it waits for has reached
    /// other subscribers).
    async fn quiet(&mut self) -> bool {
        let before = whatwg::parse(&self.bytes).events.len();
        self.events_within(before + 1, Duration::from_millis(500))
            .await
            .len()
            == before
    }

    async fn events_within(&mut self, count: usize, limit: Duration) -> Vec<Dispatched> {
        let deadline = tokio::time::Instant::now() + limit;
        while whatwg::parse(&self.bytes).events.len() < count {
            match tokio::time::timeout_at(deadline, self.body.frame()).await {
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        self.bytes.extend_from_slice(&data);
                    }
                }
                _ => break,
            }
        }
        whatwg::parse(&self.bytes).events
    }

    /// Whether the stream ends within `limit`.
    async fn ends_within(&mut self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.body.frame()).await {
                Ok(None) => return true,
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        self.bytes.extend_from_slice(&data);
                    }
                }
                Ok(Some(Err(_))) => return true,
                Err(_) => return false,
            }
        }
    }
}

fn datas(events: &[Dispatched]) -> Vec<&str> {
    events.iter().map(|event| event.data.as_str()).collect()
}

fn encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[tokio::test]
async fn updates_reach_the_subscribers_they_match_and_private_ones_only_those_granted() {
    let addr = serve(Hub::memory(), true, false).await;
    let books = "https://example.com/books/1";
    let granted_token = token(&[], &["https://example.com/books/1"]);
    let granted_auth = format!("Bearer {granted_token}");
    let mut anonymous = subscribe(addr, &format!("match={}", encode(books)), &[]).await;
    let mut pattern = subscribe(
        addr,
        &format!(
            "match_urlpattern={}",
            encode("https://example.com/books/:id")
        ),
        &[("authorization", &granted_auth)],
    )
    .await;
    let mut elsewhere = subscribe(addr, "match=https%3A%2F%2Fexample.com%2Fother", &[]).await;
    let mut other_grant = subscribe(
        addr,
        "match=*",
        &[(
            "authorization",
            &format!("Bearer {}", token(&[], &["https://example.com/other"])),
        )],
    )
    .await;
    assert_eq!(anonymous.status, StatusCode::OK);
    assert_eq!(anonymous.headers["content-type"], "text/event-stream");

    let id = published(
        addr,
        &[
            ("topic", books),
            ("data", "public\n\nline"),
            ("id", "id-[\"1\"]"),
        ],
    )
    .await;
    assert_eq!(id, "id-[\"1\"]", "a publisher's id is kept");
    let private = published(
        addr,
        &[("topic", books), ("data", "private"), ("private", "on")],
    )
    .await;
    assert!(private.starts_with("urn:uuid:"), "{private}");
    // Its alternate topic is what the other grant names: the grant of any topic suffices.
    let alternate = published(
        addr,
        &[
            ("topic", books),
            ("topic", "https://example.com/other"),
            ("data", "both"),
            ("private", ""),
        ],
    )
    .await;
    published(addr, &[("topic", books), ("data", "end")]).await;

    let got = anonymous.events(2).await;
    assert_eq!(datas(&got), ["public\n\nline", "end"]);
    assert_eq!(got[0].last_event_id, "id-[\"1\"]");
    let got = pattern.events(4).await;
    assert_eq!(datas(&got), ["public\n\nline", "private", "both", "end"]);
    assert_eq!(got[2].last_event_id, alternate);
    let got = other_grant.events(3).await;
    assert_eq!(datas(&got), ["public\n\nline", "both", "end"]);
    assert!(elsewhere.quiet().await, "routing: nothing matched");
}

#[tokio::test]
async fn replay_is_authorized_as_live_and_the_cursor_header_says_where_it_starts() {
    let addr = serve(Hub::memory(), true, false).await;
    let topic = "https://example.com/a";
    let first = published(addr, &[("topic", topic), ("data", "one")]).await;
    let secret = published(
        addr,
        &[("topic", topic), ("data", "secret"), ("private", "on")],
    )
    .await;
    published(addr, &[("topic", topic), ("data", "two")]).await;

    // Resuming from a private update's id tells only its readers that it exists.
    let from_secret = format!("match={}&last_event_id={}", encode(topic), encode(&secret));
    let anonymous = subscribe(addr, &from_secret, &[]).await;
    assert_eq!(anonymous.headers["mercure-last-event-id"], "earliest");
    let auth = format!("Bearer {}", token(&[], &[topic]));
    let mut reader = subscribe(addr, &from_secret, &[("authorization", &auth)]).await;
    assert_eq!(reader.headers["mercure-last-event-id"], secret.as_str());
    assert_eq!(datas(&reader.events(1).await), ["two"]);

    // Anonymous, from the first id: the private update is not replayed.
    let query = format!("match={}&last_event_id={}", encode(topic), encode(&first));
    let mut anonymous = subscribe(addr, &query, &[]).await;
    assert_eq!(anonymous.headers["mercure-last-event-id"], first.as_str());
    assert_eq!(datas(&anonymous.events(1).await), ["two"]);
    assert!(anonymous.quiet().await, "no private replay");

    // Granted, from the earliest: all of it.
    let auth = format!("Bearer {}", token(&[], &[topic]));
    let query = format!("match={}&last_event_id=earliest", encode(topic));
    let mut granted = subscribe(addr, &query, &[("authorization", &auth)]).await;
    assert_eq!(granted.headers["mercure-last-event-id"], "earliest");
    assert_eq!(datas(&granted.events(3).await), ["one", "secret", "two"]);

    // The header wins over the parameter; an unknown id starts before everything, told so.
    let query = format!("match={}&last_event_id={}", encode(topic), encode(&first));
    let mut unknown = subscribe(addr, &query, &[("last-event-id", "urn:uuid:unknown")]).await;
    assert_eq!(unknown.headers["mercure-last-event-id"], "earliest");
    let replayed = unknown.events(2).await;
    assert_eq!(
        datas(&replayed),
        ["one", "two"],
        "no gap event: the header tells"
    );

    // No cursor asked: no header, live only.
    let mut live = subscribe(addr, &format!("match={}", encode(topic)), &[]).await;
    assert!(live.headers.get("mercure-last-event-id").is_none());
    published(addr, &[("topic", topic), ("data", "three")]).await;
    assert_eq!(datas(&live.events(1).await), ["three"]);

    // The pre-standard request: `topic=` and `lastEventID`, answered with `Last-Event-ID`.
    let query = format!(
        "topic={}&lastEventID={}",
        encode("https://example.com/{x}"),
        encode(&first)
    );
    let mut old = subscribe(addr, &query, &[]).await;
    assert_eq!(old.headers["last-event-id"], first.as_str());
    assert_eq!(datas(&old.events(2).await), ["two", "three"]);
}

#[tokio::test]
async fn tokens_are_checked_at_the_boundary() {
    let addr = serve(Hub::memory(), false, false).await;
    let topic = "https://example.com/t";
    let form = [("topic", topic), ("data", "x")];

    let (status, headers, _) = publish(addr, None, &form).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers["www-authenticate"], "Bearer");
    // Signed with another key.
    let forged = token_with(
        b"not the hub's key at all, not at all",
        &["*"],
        &[],
        4_102_444_800,
    );
    let (status, headers, _) = publish(addr, Some(&forged), &form).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        headers["www-authenticate"],
        "Bearer error=\"invalid_token\""
    );
    // `alg: none`, with the grants of a real token.
    let real = token(&["*"], &["*"]);
    let payload = real.split('.').nth(1).unwrap_or_default();
    let unsigned = format!("eyJhbGciOiJub25lIiwidHlwIjoiYXQrand0In0.{payload}.");
    let (status, _, _) = publish(addr, Some(&unsigned), &form).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Expired.
    let expired = token_with(KEY, &["*"], &["*"], now() - 60);
    let (status, _, _) = publish(addr, Some(&expired), &form).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Valid, without the grant: 403, nothing published.
    let subscriber_only = token(&[], &["*"]);
    let (status, headers, _) = publish(addr, Some(&subscriber_only), &form).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        headers["www-authenticate"],
        "Bearer error=\"insufficient_scope\""
    );
    let partly = token(&["https://example.com/t"], &[]);
    let two = [
        ("topic", topic),
        ("topic", "https://example.com/u"),
        ("data", "x"),
    ];
    assert_eq!(
        publish(addr, Some(&partly), &two).await.0,
        StatusCode::FORBIDDEN
    );
    // A cookie does not publish (a browser would send it for any page).
    let request = Request::post("/.well-known/mercure")
        .header("host", addr.to_string())
        .header("content-type", "application/x-www-form-urlencoded")
        .header("cookie", format!("__Secure-mercure_access_token={real}"))
        .body(Full::new(Bytes::from("topic=a&data=x")))
        .unwrap_or_else(|e| panic!("{e}")); // ok: test
    assert_eq!(
        support::send(addr, request).await.status(),
        StatusCode::UNAUTHORIZED
    );

    // Subscribing: anonymous refused here, a bad token refused, a cookie accepted.
    let query = format!("match={}&last_event_id=earliest", encode(topic));
    assert_eq!(
        subscribe(addr, &query, &[]).await.status,
        StatusCode::UNAUTHORIZED
    );
    let forged_auth = format!("Bearer {forged}");
    let refused = subscribe(addr, &query, &[("authorization", &forged_auth)]).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    let cookie = format!("__Secure-mercure_access_token={real}");
    let mut by_cookie = subscribe(addr, &query, &[("cookie", &cookie)]).await;
    assert_eq!(by_cookie.status, StatusCode::OK);
    assert!(by_cookie.quiet().await, "nothing was published");
    let malformed = subscribe(addr, &query, &[("authorization", "Bearer")]).await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn bad_requests_are_refused_whole() {
    let addr = serve(Hub::memory(), true, false).await;
    let mut all = subscribe(addr, "match=*&last_event_id=earliest", &[]).await;
    let publisher = token(&["*"], &[]);
    for (form, status) in [
        (vec![("data", "no topic")], StatusCode::BAD_REQUEST),
        (
            vec![("topic", "a"), ("type", "mercure")],
            StatusCode::BAD_REQUEST,
        ),
        (
            vec![("topic", "a"), ("id", "earliest")],
            StatusCode::BAD_REQUEST,
        ),
        (vec![("topic", "a"), ("id", "#1")], StatusCode::BAD_REQUEST),
        (
            vec![("topic", "/.well-known/mercure/x")],
            StatusCode::BAD_REQUEST,
        ),
        (
            vec![("topic", "a"), ("retry", "soon")],
            StatusCode::BAD_REQUEST,
        ),
    ] {
        assert_eq!(
            publish(addr, Some(&publisher), &form).await.0,
            status,
            "{form:?}"
        );
    }
    let large = "x".repeat(1024 * 1024 + 1);
    let (status, _, _) = publish(addr, Some(&publisher), &[("topic", "a"), ("data", &large)]).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    for query in ["match_regexp=a", "other=1", "match_urlpattern=(a%7Cb)"] {
        assert_eq!(
            subscribe(addr, query, &[]).await.status,
            StatusCode::BAD_REQUEST,
            "{query}"
        );
    }
    assert!(all.quiet().await, "nothing was published");
}

#[tokio::test]
async fn a_subscribers_stream_ends_when_its_token_expires() {
    let addr = serve(Hub::memory(), false, false).await;
    let expiring = token_with(KEY, &[], &["*"], now() + 2);
    let auth = format!("Bearer {expiring}");
    let mut stream = subscribe(addr, "match=*", &[("authorization", &auth)]).await;
    assert_eq!(stream.status, StatusCode::OK);
    assert!(!stream.ends_within(Duration::from_millis(500)).await);
    assert!(
        stream.ends_within(Duration::from_secs(4)).await,
        "ended at exp"
    );
}

#[tokio::test]
async fn subscriptions_are_announced_to_those_granted_and_listed() {
    let hub = Hub::memory();
    let addr = serve(hub.clone(), true, true).await;
    // A second node on the same hub: it lists only what its follower read.
    let observer = serve(hub, true, true).await;
    let watcher_auth = format!("Bearer {}", token(&[], &["*"]));
    let mut watcher = subscribe(addr, "match=*", &[("authorization", &watcher_auth)]).await;
    let mut anonymous_watcher = subscribe(addr, "match=*", &[]).await;
    let topic = "https://example.com/books/1";
    let member = subscribe(addr, &format!("match={}", encode(topic)), &[]).await;

    // The watcher's own subscription is announced first, then the anonymous watcher's, then
    // the member's.
    let events = watcher.events(3).await;
    assert_eq!(events.len(), 3, "{events:?}");
    let announced: Value = serde_json::from_str(&events[2].data).unwrap_or_default();
    assert_eq!(events[2].kind, "mercure");
    assert_eq!(announced["type"], "subscription");
    assert_eq!(announced["match_type"], "exact");
    assert_eq!(announced["match"], topic);
    assert_eq!(announced["active"], true);
    let subscriber = announced["subscriber"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(subscriber.starts_with("urn:uuid:"));
    let expected = format!(
        "/.well-known/mercure/subscriptions/exact/{}/{}",
        "https%3A%2F%2Fexample.com%2Fbooks%2F1",
        subscriber.replace(':', "%3A")
    );
    assert_eq!(announced["id"], expected.as_str());

    // The API, granted: the collection and the one subscription, with the cursor.
    let api_of = |addr: SocketAddr, path: String, auth: Option<String>| async move {
        let mut headers = vec![];
        if let Some(auth) = &auth {
            headers.push(("authorization", auth.as_str()));
        }
        let response = support::get(addr, &path, &headers).await;
        let status = response.status();
        let link = response.headers().get("link").cloned();
        let body = support::collect(response.into_body()).await;
        (
            status,
            link,
            serde_json::from_slice::<Value>(&body).unwrap_or_default(),
        )
    };
    let api = |path: String, auth: Option<String>| api_of(addr, path, auth);
    let (status, link, all) = api(
        "/.well-known/mercure/subscriptions".into(),
        Some(watcher_auth.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(all["type"], "subscriptions");
    assert_eq!(all["subscriptions"].as_array().map_or(0, Vec::len), 3);
    let link = link
        .and_then(|link| link.to_str().ok().map(str::to_owned))
        .unwrap_or_default();
    assert!(
        link.contains("rel=\"mercure\"") && link.contains("last-event-id=\"urn:uuid:"),
        "{link}"
    );
    let (status, _, one) = api(expected.clone(), Some(watcher_auth.clone())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["subscriber"], subscriber.as_str());
    let (status, _, _) = api(format!("{expected}x"), Some(watcher_auth.clone())).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = api("/.well-known/mercure/subscriptions".into(), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let narrow = format!("Bearer {}", token(&[], &["https://example.com/books/1"]));
    let (status, _, _) = api("/.well-known/mercure/subscriptions".into(), Some(narrow)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // The member leaves: announced as inactive, no longer listed.
    drop(member);
    let events = watcher.events(4).await;
    assert_eq!(events.len(), 4, "{events:?}");
    let left: Value = serde_json::from_str(&events[3].data).unwrap_or_default();
    assert_eq!(
        (left["subscriber"].as_str(), left["active"].as_bool()),
        (Some(subscriber.as_str()), Some(false))
    );
    let (_, _, all) = api(
        "/.well-known/mercure/subscriptions".into(),
        Some(watcher_auth.clone()),
    )
    .await;
    assert_eq!(all["subscriptions"].as_array().map_or(0, Vec::len), 2);
    // Subscription events are private: the anonymous watcher saw none.
    assert!(anonymous_watcher.quiet().await);

    // A publisher cannot forge subscription events: not by a topic under the subscriptions'
    // path with dot segments (it is not reserved once normalised), whatever its data says.
    let mut own: Value = serde_json::from_str(&events[0].data).unwrap_or_default();
    own["active"] = Value::Bool(false);
    let mut fake = announced.clone();
    fake["id"] = Value::from("/.well-known/mercure/subscriptions/exact/fake/urn%3Afake");
    fake["subscriber"] = Value::from("urn:fake");
    for forged in [own, fake] {
        let data = forged.to_string();
        let id = forged["id"].as_str().unwrap_or_default();
        assert!(
            id.starts_with("/.well-known/mercure/subscriptions/"),
            "{forged}"
        );
        let topic = format!("{id}/../../../../../x");
        published(
            addr,
            &[
                ("topic", topic.as_str()),
                ("data", &data),
                ("private", "on"),
            ],
        )
        .await;
    }
    // The watcher reads both (it is granted `*`); the hub's listing is what it was.
    assert_eq!(watcher.events(6).await.len(), 6);
    let listing = |addr: SocketAddr| {
        let auth = Some(watcher_auth.clone());
        async move {
            let (_, _, all) = api_of(addr, "/.well-known/mercure/subscriptions".into(), auth).await;
            all["subscriptions"].as_array().cloned().unwrap_or_default()
        }
    };
    assert_eq!(Value::from(listing(addr).await), all["subscriptions"]);
    // The observer's follower read the forgeries before a genuine start published after them:
    // once it lists that start, it has passed over the forgeries, and lists what this node does.
    let late = subscribe(addr, "match=https%3A%2F%2Fexample.com%2Flate", &[]).await;
    assert_eq!(late.status, StatusCode::OK);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut observed = listing(observer).await;
    while !observed
        .iter()
        .any(|s| s["match"] == "https://example.com/late")
    {
        assert!(tokio::time::Instant::now() < deadline, "{observed:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
        observed = listing(observer).await;
    }
    let listed = listing(addr).await;
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert_eq!(observed, listed);
}

/// A `redis-server` of the test's own; `None` (the test skipped) where none is installed,
/// unless CI requires it.
#[cfg(feature = "redis")]
fn redis_server() -> Option<support::redis_server::RedisServer> {
    let server = support::redis_server::RedisServer::start();
    if server.is_none() {
        assert!(
            std::env::var_os("TOWER_SSE_REQUIRE_REDIS").is_none(),
            "redis-server is required"
        );
        eprintln!("skipped: no redis-server");
    }
    server
}

/// A hub on `server`.
#[cfg(feature = "redis")]
fn redis_node(server: &support::redis_server::RedisServer) -> Hub {
    let redis = tower_sse::hub::Redis::open(&server.url()).unwrap_or_else(|e| panic!("{e}")); // ok: test
    Hub::builder()
        .redis(redis)
        .unwrap_or_else(|e| panic!("{e}")) // ok: test
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn two_nodes_on_one_redis_deliver_and_resume_across_nodes() {
    let Some(server) = redis_server() else {
        return;
    };
    let node = |_: u8| redis_node(&server);
    let (a, b) = (node(1), node(2));
    for hub in [&a, &b] {
        for _ in 0..100 {
            if hub.ready().await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let (a, b) = (serve(a, true, false).await, serve(b, true, false).await);
    let topic = "https://example.com/n";
    let mut on_b = subscribe(b, &format!("match={}", encode(topic)), &[]).await;
    let first = published(a, &[("topic", topic), ("data", "one")]).await;
    let secret = published(
        a,
        &[("topic", topic), ("data", "secret"), ("private", "on")],
    )
    .await;
    let last = published(a, &[("topic", topic), ("data", "two"), ("id", "urn:two")]).await;
    let got = on_b.events(2).await;
    assert_eq!(datas(&got), ["one", "two"]);
    assert_eq!(got[1].last_event_id, last);

    // Resumed on the other node after an id the first gave: exactly what followed, the
    // private update still withheld from an anonymous subscriber.
    let query = format!("match={}&last_event_id={}", encode(topic), encode(&first));
    let mut resumed = subscribe(b, &query, &[]).await;
    assert_eq!(resumed.headers["mercure-last-event-id"], first.as_str());
    assert_eq!(datas(&resumed.events(1).await), ["two"]);
    let auth = format!("Bearer {}", token(&[], &["*"]));
    let mut granted = subscribe(a, &query, &[("authorization", &auth)]).await;
    assert_eq!(datas(&granted.events(2).await), ["secret", "two"]);
    // A private update's id resumes only its readers, on any node.
    let from_secret = format!("match={}&last_event_id={}", encode(topic), encode(&secret));
    let anonymous = subscribe(b, &from_secret, &[]).await;
    assert_eq!(anonymous.headers["mercure-last-event-id"], "earliest");
    let mut reader = subscribe(b, &from_secret, &[("authorization", &auth)]).await;
    assert_eq!(reader.headers["mercure-last-event-id"], secret.as_str());
    assert_eq!(datas(&reader.events(1).await), ["two"]);
    let earliest = format!("match={}&last_event_id=earliest", encode(topic));
    let mut all = subscribe(b, &earliest, &[]).await;
    assert_eq!(datas(&all.events(2).await), ["one", "two"]);
}

#[tokio::test]
async fn discovery_links_carry_the_cursor_a_client_resumes_from() {
    let url = hub_url();
    let verifier = Verifier::new(TokenKey::hmac(KEY), url.clone());
    let mercure = MercureHub::builder(Hub::memory(), url)
        .publishers(verifier.clone())
        .subscribers(verifier)
        .anonymous(true)
        .build();
    let router = axum::Router::new()
        .route("/books/1", axum::routing::get(|| async { "{}" }))
        .layer(mercure.discovery())
        .nest_service("/.well-known/mercure", mercure)
        .layer(SseLayer::new());
    let addr = support::serve_axum(router).await;
    let link = |response: &hyper::Response<Incoming>| {
        response.headers()["link"]
            .to_str()
            .unwrap_or_default()
            .to_owned()
    };
    let first = support::get(addr, "/books/1", &[]).await;
    assert_eq!(
        link(&first),
        format!("<{HUB}>; rel=\"mercure\"; last-event-id=\"earliest\"")
    );
    let topic = "https://example.com/books/1";
    let before = published(addr, &[("topic", topic), ("data", "before")]).await;
    let page = support::get(addr, "/books/1", &[]).await;
    assert!(
        link(&page).ends_with(&format!("last-event-id=\"{before}\"")),
        "{}",
        link(&page)
    );
    // Published between the page and the subscription: still delivered.
    published(addr, &[("topic", topic), ("data", "meanwhile")]).await;
    let query = format!("match={}&last_event_id={}", encode(topic), encode(&before));
    let mut late = subscribe(addr, &query, &[]).await;
    assert_eq!(datas(&late.events(1).await), ["meanwhile"]);
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn every_node_lists_the_subscriptions_of_all() {
    let Some(server) = redis_server() else {
        return;
    };
    let node = || redis_node(&server);
    let (a, b) = (
        serve(node(), true, true).await,
        serve(node(), true, true).await,
    );
    let auth = format!("Bearer {}", token(&[], &["*"]));
    // How many subscriptions `addr` lists, once it lists `want` (or 5 s pass).
    let listed = |addr: SocketAddr, want: usize| {
        let auth = auth.clone();
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            loop {
                let response = support::get(
                    addr,
                    "/.well-known/mercure/subscriptions",
                    &[("authorization", &auth)],
                )
                .await;
                let body = support::collect(response.into_body()).await;
                let all: Value = serde_json::from_slice(&body).unwrap_or_default();
                let count = all["subscriptions"].as_array().map_or(0, Vec::len);
                if count == want || tokio::time::Instant::now() > deadline {
                    return count;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let on_b = subscribe(b, "match=https%3A%2F%2Fexample.com%2Fx", &[]).await;
    assert_eq!(on_b.status, StatusCode::OK);
    assert_eq!(listed(a, 1).await, 1, "node a lists node b's subscriber");
    assert_eq!(listed(b, 1).await, 1);
    drop(on_b);
    assert_eq!(listed(a, 0).await, 0, "and no longer once it left");
    // A node started later learns what is still active from the history.
    let on_a = subscribe(a, "match=https%3A%2F%2Fexample.com%2Fy", &[]).await;
    let c = serve(node(), true, true).await;
    assert_eq!(
        listed(c, 1).await,
        1,
        "a new node lists the subscriber already there"
    );
    drop(on_a);
    assert_eq!(listed(c, 0).await, 0);
}

/// A hub announcing subscriptions, served without a server, and the response of its one
/// subscriber.
async fn one_announced_subscriber() -> (
    Hub,
    MercureHub,
    http::Response<tower_sse::mercure::MercureBody>,
) {
    use tower::ServiceExt;
    let hub = Hub::memory();
    let mercure = MercureHub::builder(hub.clone(), hub_url())
        .anonymous(true)
        .subscriptions(true)
        .build();
    let request = Request::get("/.well-known/mercure?match=https%3A%2F%2Fexample.com%2Fa")
        .header("accept", "text/event-stream")
        .body(Full::new(Bytes::new()))
        .unwrap_or_else(|e| panic!("{e}")); // ok: test
    let response = mercure
        .clone()
        .oneshot(request)
        .await
        .unwrap_or_else(|never| match never {});
    assert_eq!(response.status(), StatusCode::OK);
    (hub, mercure, response)
}

#[tokio::test(flavor = "current_thread")]
async fn shutdown_waits_until_the_ends_of_subscriptions_are_announced() {
    let (hub, mercure, response) = one_announced_subscriber().await;
    // The start was announced before the response.
    let started = hub.last_id("mercure").await.ok().flatten();
    assert!(started.is_some());
    // A subscription still open is not an end announced: shutdown says so.
    assert!(!mercure.shutdown(Duration::from_millis(50)).await);
    // The stream ends: its end is announced from a task, which shutdown waits for (on this
    // one thread, the task has not run before shutdown yields to it).
    drop(response);
    assert!(mercure.shutdown(Duration::from_secs(5)).await);
    let ended = hub.last_id("mercure").await.ok().flatten();
    assert!(ended.is_some() && ended != started, "{started:?} {ended:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn shutdown_reports_an_end_that_could_not_be_announced() {
    let (hub, mercure, response) = one_announced_subscriber().await;
    // The hub refuses the end's announcement: the other nodes would list it still.
    hub.close();
    drop(response);
    assert!(!mercure.shutdown(Duration::from_secs(5)).await);
}
