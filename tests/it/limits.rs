//! Stream limits over real TCP: `max_streams` at its boundary under concurrency, every way a
//! stream closes giving its place back, `max_streams_per_key` with a status refusal, and the
//! hints of retry jitter.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::Uri;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use futures_util::stream;
use tokio_util::sync::CancellationToken;
use tower_sse::{CloseReason, LimitExceeded, Refusal, SseLayer, StreamLimit};

/// An inner service whose stream is chosen by the query: `idle` sends nothing, `flood` sends
/// 64 KiB frames without end, `panic` panics once `trigger` is cancelled. Counts its calls.
fn app(calls: Arc<AtomicUsize>, trigger: CancellationToken) -> Router {
    Router::new().route(
        "/events",
        get(move |uri: Uri| {
            calls.fetch_add(1, Ordering::SeqCst);
            let trigger = trigger.clone();
            async move {
                match uri.query() {
                    Some("flood") => Body::from_stream(stream::repeat_with(|| {
                        Ok::<_, std::io::Error>(Bytes::from(vec![b'x'; 64 * 1024]))
                    })),
                    Some("panic") => Body::from_stream(stream::once(async move {
                        trigger.cancelled().await;
                        panic!("the inner service panics"); // ok: test
                        #[allow(unreachable_code)]
                        Ok::<_, std::io::Error>(Bytes::new())
                    })),
                    _ => Body::from_stream(stream::pending::<Result<Bytes, std::io::Error>>()),
                }
            }
        }),
    )
}

/// Waits until `check` holds, for at most 10 s.
async fn until(what: &str, check: impl Fn() -> bool) {
    for _ in 0..1000 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}"); // ok: test
}

/// Opens `count` streams at once on `path`; each returns its socket and what it read up to
/// the first retry hint.
async fn open(
    addr: std::net::SocketAddr,
    path: &str,
    count: usize,
) -> Vec<(tokio::net::TcpStream, String)> {
    let opens = (0..count).map(|_| support::subscribe_raw_with(addr, path, &[], "retry: "));
    let mut opened = futures_util::future::join_all(opens).await;
    // Read to the end of the hint's line.
    for (tcp, seen) in &mut opened {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 256];
        while !seen
            .split("retry: ")
            .nth(1)
            .is_some_and(|hint| hint.contains('\n'))
        {
            let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
                .await
                .expect("the hint arrives") // ok: test
                .expect("read"); // ok: test
            assert!(n > 0);
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }
    opened
}

/// The retry hint a response opened with, in milliseconds.
fn hint(seen: &str) -> u64 {
    let after = seen.split("retry: ").nth(1).unwrap_or_default();
    after
        .lines()
        .next()
        .unwrap_or_default()
        .parse()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_streams_admits_exactly_n_and_every_close_gives_the_place_back() {
    const N: usize = 6;
    let calls = Arc::new(AtomicUsize::new(0));
    let trigger = CancellationToken::new();
    let shutdown = CancellationToken::new();
    let closes = Arc::new(Mutex::new(Vec::new()));
    let refused = Arc::new(Mutex::new(Vec::<LimitExceeded>::new()));
    let layer = SseLayer::new()
        .retry(Duration::from_millis(100))
        .write_deadline(Duration::from_millis(300))
        .graceful_shutdown(shutdown.clone())
        .max_streams(N)
        .on_close({
            let closes = closes.clone();
            move |info| {
                closes
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(info.reason)
            }
        })
        .on_limit_exceeded({
            let refused = refused.clone();
            move |exceeded| {
                refused
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(exceeded.clone())
            }
        });
    let probe = layer.clone();
    let addr = support::serve_axum(app(calls.clone(), trigger.clone()).layer(layer)).await;

    // N + 1 at once: exactly N reach the service, one is told to come back later.
    let opened = open(addr, "/events?idle", N + 1).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        N,
        "exactly N reach the service"
    );
    assert_eq!(probe.open_streams(), N);
    let hints: Vec<u64> = opened.iter().map(|(_, seen)| hint(seen)).collect();
    let over: Vec<&u64> = hints.iter().filter(|h| **h >= 10_000).collect();
    assert_eq!(over.len(), 1, "one refused, with a long hint: {hints:?}");
    assert!(*over[0] <= 20_000, "{hints:?}");
    {
        let refused = refused.lock().unwrap_or_else(|e| e.into_inner());
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].limit, StreamLimit::Total);
        assert_eq!(refused[0].max, N);
    }
    drop(opened);
    until("the clients' streams closed", || probe.open_streams() == 0).await;

    // Close N streams every other way: the idle clients leave, the flooded ones stall (they
    // never read), the inner service panics.
    let mut opens = Vec::new();
    for path in [
        "/events?idle",
        "/events?idle",
        "/events?flood",
        "/events?flood",
        "/events?panic",
        "/events?panic",
    ] {
        opens.push(open(addr, path, 1));
    }
    let opened: Vec<_> = futures_util::future::join_all(opens).await;
    assert_eq!(probe.open_streams(), N);
    let mut sockets: Vec<_> = opened.into_iter().flatten().map(|(tcp, _)| tcp).collect();
    let stalled = sockets.split_off(2);
    drop(sockets);
    trigger.cancel();
    until("every stream closed", || probe.open_streams() == 0).await;
    let reasons = closes.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let count = |reason| reasons.iter().filter(|r| **r == reason).count();
    // N that left at first, 2 more that left, and 2 whose inner service panicked.
    assert_eq!(count(CloseReason::ClientGone), N + 4, "{reasons:?}");
    assert_eq!(count(CloseReason::Stalled), 2, "{reasons:?}");
    drop(stalled);

    // Back to 0: N + 1 at once again gives exactly N more.
    let again = open(addr, "/events?idle", N + 1).await;
    assert_eq!(calls.load(Ordering::SeqCst), 3 * N);
    assert_eq!(probe.open_streams(), N);
    // The shutdown signal ends them: the places come back too.
    shutdown.cancel();
    until("shutdown closes", || probe.open_streams() == 0).await;
    let reasons = closes.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert_eq!(
        reasons
            .iter()
            .filter(|r| **r == CloseReason::Shutdown)
            .count(),
        N
    );
    drop(again);
}

#[tokio::test]
async fn per_key_limit_refuses_with_a_status_and_retry_after() {
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = SseLayer::new()
        .max_streams_per_key(2, |request| {
            let user = request.headers.get("x-user")?;
            Some(user.to_str().ok()?.to_owned())
        })
        .over_limit(Refusal::Status {
            status: http::StatusCode::TOO_MANY_REQUESTS,
            retry_after: Duration::from_millis(6500),
        });
    let probe = layer.clone();
    let addr = support::serve_axum(app(calls.clone(), CancellationToken::new()).layer(layer)).await;
    let alice = [("x-user", "alice")];
    let first = support::subscribe_raw_with(addr, "/events?idle", &alice, "retry: ").await;
    let second = support::subscribe_raw_with(addr, "/events?idle", &alice, "retry: ").await;
    let third = support::get(
        addr,
        "/events?idle",
        &[("accept", "text/event-stream"), ("x-user", "alice")],
    )
    .await;
    assert_eq!(third.status(), 429);
    assert_eq!(third.headers()["retry-after"], "7");
    // Another key, and no key, are not held to alice's limit.
    let bob = support::subscribe_raw_with(addr, "/events?idle", &[("x-user", "bob")], "retry: ");
    let anonymous = support::subscribe_raw_with(addr, "/events?idle", &[], "retry: ");
    let (bob, anonymous) = tokio::join!(bob, anonymous);
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    assert_eq!(probe.open_streams(), 4);
    // One of alice's leaves: she may open one again.
    drop(first);
    until("alice's place back", || probe.open_streams() == 3).await;
    let again = support::subscribe_raw_with(addr, "/events?idle", &alice, "retry: ").await;
    assert_eq!(calls.load(Ordering::SeqCst), 5);
    drop((second, bob, anonymous, again));
}

/// Retry jitter: 1 000 streams' hints spread over the configured range, and the shutdown
/// event's retry too.
#[tokio::test]
async fn retry_jitter_spreads_the_hints_of_a_thousand_streams() {
    use tower::ServiceExt;
    let shutdown = CancellationToken::new();
    let layer = SseLayer::new()
        .retry(Duration::from_millis(1000))
        .retry_jitter(Duration::from_millis(2000))
        .graceful_shutdown(shutdown.clone())
        .shutdown_event(
            tower_sse::Event::default()
                .data("bye")
                .retry(Duration::from_millis(5000)),
        );
    let app = app(Arc::default(), CancellationToken::new()).layer(layer);
    let mut first = Vec::new();
    let mut bodies = Vec::new();
    for _ in 0..1000 {
        let response = app
            .clone()
            .oneshot(support::sse_request::<Body>())
            .await
            .expect("a response"); // ok: test
        let mut body = response.into_body();
        let frame = support::next_data(&mut body).await.unwrap_or_default();
        first.push(hint(support::text(&frame)));
        bodies.push(body);
    }
    let spread = |hints: &[u64], base: u64| {
        assert!(
            hints.iter().all(|h| (base..=base + 2000).contains(h)),
            "{hints:?}"
        );
        let mut buckets = [0u32; 10];
        for h in hints {
            buckets[(((h - base) / 200) as usize).min(9)] += 1;
        }
        assert!(buckets.iter().all(|n| *n >= 50), "{buckets:?}");
    };
    spread(&first, 1000);
    shutdown.cancel();
    let mut last = Vec::new();
    for body in &mut bodies {
        let frame = support::next_data(body).await.unwrap_or_default();
        last.push(hint(support::text(&frame)));
    }
    spread(&last, 5000);
}

/// The reconnect spread after a graceful shutdown, over real TCP, with a fleet that honours
/// `retry:` (read with `read::EventReader`): with jitter the fleet comes back over the jitter's
/// range, without it all at once. Prints both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_jitter_spreads_reconnects_after_a_graceful_shutdown() {
    let without = reconnect_spread(None).await;
    let with = reconnect_spread(Some(Duration::from_millis(2000))).await;
    println!(
        "reconnect spread of 200 clients after a graceful shutdown (p5..p95, min..max): \
         without jitter {:?}..{:?} ({:?}..{:?}), with 2 s jitter {:?}..{:?} ({:?}..{:?})",
        without[0], without[1], without[2], without[3], with[0], with[1], with[2], with[3]
    );
    let width = |s: &[Duration; 4]| s[1] - s[0];
    assert!(width(&with) >= Duration::from_millis(1500), "{with:?}");
    assert!(with[3] - with[2] <= Duration::from_millis(2300), "{with:?}");
    assert!(
        width(&without) * 4 < width(&with),
        "{without:?} vs {with:?}"
    );
}

/// When 200 clients reconnect after the shutdown signal, from it: p5, p95, min, max.
async fn reconnect_spread(jitter: Option<Duration>) -> [Duration; 4] {
    use tower_sse::read::EventReader;
    const CLIENTS: usize = 200;
    let shutdown = CancellationToken::new();
    let mut layer = SseLayer::new()
        .retry(Duration::from_millis(200))
        .graceful_shutdown(shutdown.clone());
    if let Some(jitter) = jitter {
        layer = layer.retry_jitter(jitter);
    }
    let calls = Arc::new(AtomicUsize::new(0));
    let addr = support::serve_axum(app(calls.clone(), CancellationToken::new()).layer(layer)).await;
    let headers = [("accept", "text/event-stream")];
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..CLIENTS {
        clients.spawn(async move {
            let response = support::get(addr, "/events?idle", &headers).await;
            let mut reader = EventReader::new(response.into_body());
            // Reads to the end (the shutdown), then waits the delay the stream asked for and
            // reconnects, as `EventSource` does.
            while let Some(Ok(_)) = reader.next_event().await {}
            let delay = reader.retry().unwrap_or(tower_sse::DEFAULT_RETRY);
            tokio::time::sleep(delay).await;
            let at = tokio::time::Instant::now();
            let again = support::get(addr, "/events?idle", &headers).await;
            assert_eq!(again.status(), 200);
            at
        });
    }
    until("every client is streaming", || {
        calls.load(Ordering::SeqCst) == CLIENTS
    })
    .await;
    let signalled = tokio::time::Instant::now();
    shutdown.cancel();
    let mut after: Vec<Duration> = Vec::new();
    while let Some(done) = clients.join_next().await {
        after.push(done.expect("a client").duration_since(signalled)); // ok: test
    }
    after.sort();
    [
        after[CLIENTS / 20],
        after[CLIENTS * 19 / 20],
        after[0],
        after[CLIENTS - 1],
    ]
}

/// A client cannot evade `max_streams` by leaving out `Accept: text/event-stream`: a plain GET
/// answered with a hub subscription takes a place too, and the one over the limit is refused.
#[cfg(all(feature = "hub", feature = "axum"))]
#[tokio::test]
async fn the_stream_limit_holds_for_plain_gets_of_a_subscription() {
    use tower_sse::hub::Hub;

    let hub = Hub::memory();
    let refused = Arc::new(AtomicUsize::new(0));
    let counted = refused.clone();
    let app = Router::new()
        .route(
            "/events",
            get(move || {
                let hub = hub.clone();
                async move { hub.subscribe(["t"], None).await }
            }),
        )
        .layer(
            SseLayer::new()
                .retry(Duration::from_millis(1500))
                .max_streams(2)
                .on_limit_exceeded(move |_| {
                    counted.fetch_add(1, Ordering::SeqCst);
                }),
        );
    let addr = support::serve_axum(app).await;
    let plain = [("accept", "*/*")];
    let (first, _) = support::get_raw(addr, "/events", &plain, "retry: 1500\n").await;
    let (_second, _) = support::get_raw(addr, "/events", &plain, "retry: 1500\n").await;
    // The third is refused. A client that did not ask for an event stream is not
    // `EventSource`, and would read the refusal's retry-only stream as an empty answer: it gets
    // `429` with the same spread delay in `Retry-After` (10–20 s).
    let (mut third, mut seen) = support::get_raw(addr, "/events", &plain, "\r\n\r\n").await;
    support::read_raw_until(&mut third, &mut seen, "the refusal", |s| {
        s.contains("too many event streams\n")
    })
    .await;
    assert!(seen.starts_with("HTTP/1.1 429"), "{seen}");
    let retry_after: u64 = seen
        .lines()
        .find_map(|line| line.strip_prefix("retry-after: "))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0);
    assert!((10..=20).contains(&retry_after), "{seen}");
    assert_eq!(refused.load(Ordering::SeqCst), 1);
    // A place given back is taken again.
    drop(first);
    let mut admitted = false;
    for _ in 0..100 {
        let (_tcp, seen) = support::get_raw(addr, "/events", &plain, "retry: ").await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        if hint(&seen) == 1500 {
            admitted = true;
            break;
        }
    }
    assert!(admitted, "the closed stream's place is given back");
}
