//! The hub on Redis Streams, against a real `redis-server` (its own instance on a free port in
//! a temporary directory, with an append-only file): delivery across nodes, the exact seam
//! between replay and live, gaps, a Redis restart, a Redis that is not there at first, a node
//! that goes away, a subscriber far behind, and the connections a node holds.
//!
//! Without `redis-server` each test is skipped with a message, unless
//! `TOWER_SSE_REQUIRE_REDIS=1` (as in CI) makes that a failure.

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body::Body;
use http_body_util::BodyExt;
use support::redis_server::RedisServer;
use support::whatwg::{self, Dispatched};
use tokio::time::Instant;
use tower::{service_fn, Layer, ServiceExt};
use tower_sse::hub::{GapReason, Hub, HubError, Publish, Redis, Resume, Subscribe, Subscription};
use tower_sse::{Event, LastEventId, SseLayer};

/// A hub on `server`.
fn hub_on(server: &RedisServer, history: usize) -> Hub {
    let redis = Redis::open(&server.url()).unwrap_or_else(|e| panic!("{e}")); // ok: test
    Hub::builder()
        .history(history, usize::MAX)
        .queue(100_000, usize::MAX)
        .redis(redis)
        .unwrap_or_else(|e| panic!("{e}")) // ok: test
}

/// A subscription's stream, read frame by frame, and parsed as whole events arrive (each
/// stretch of whole events on its own: an event without an id line is given the one before,
/// as a client keeps it).
struct Reader {
    body: Pin<Box<dyn Body<Data = Bytes, Error = Infallible> + Send>>,
    bytes: Vec<u8>,
    parsed_to: usize,
    events: Vec<Dispatched>,
    comments: usize,
    ended: bool,
}

impl Reader {
    fn of(subscription: Subscription) -> Self {
        Self::body(subscription.into_http().into_body())
    }

    fn body(body: impl Body<Data = Bytes, Error = Infallible> + Send + 'static) -> Self {
        Self {
            body: Box::pin(body),
            bytes: Vec::new(),
            parsed_to: 0,
            events: Vec::new(),
            comments: 0,
            ended: false,
        }
    }

    fn ids(&self) -> Vec<String> {
        self.events
            .iter()
            .filter(|event| event.kind == "message")
            .map(|event| event.last_event_id.clone())
            .collect()
    }

    fn data(&self) -> Vec<String> {
        self.events.iter().map(|event| event.data.clone()).collect()
    }

    fn parse_new(&mut self) {
        // Heartbeats are comment lines between events, ending no block: counted wherever the
        // blocks parsed so far end.
        self.comments = self
            .bytes
            .split(|byte| *byte == b'\n')
            .filter(|line| line.starts_with(b":"))
            .count();
        let Some(end) = self.bytes[self.parsed_to..]
            .windows(2)
            .rposition(|pair| pair == b"\n\n")
            .map(|at| self.parsed_to + at + 2)
        else {
            return;
        };
        let parsed = whatwg::parse(&self.bytes[self.parsed_to..end]);
        self.parsed_to = end;
        for mut event in parsed.events {
            if event.last_event_id.is_empty() {
                if let Some(before) = self.events.last() {
                    event.last_event_id = before.last_event_id.clone();
                }
            }
            self.events.push(event);
        }
    }

    /// Reads until `done` holds, the end, or `within` passes.
    async fn until(&mut self, within: Duration, done: impl Fn(&Self) -> bool) -> &mut Self {
        let deadline = Instant::now() + within;
        while !done(self) && !self.ended {
            match tokio::time::timeout_at(deadline, self.body.frame()).await {
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        self.bytes.extend_from_slice(&data);
                        self.parse_new();
                    }
                }
                Ok(None) => self.ended = true,
                Ok(Some(Err(never))) => match never {},
                Err(_) => break,
            }
        }
        self
    }

    /// Reads until `count` events have come (or 10 s pass).
    async fn events_until(&mut self, count: usize) -> &mut Self {
        self.until(Duration::from_secs(10), |reader| {
            reader.events.len() >= count
        })
        .await
    }
}

fn last(id: &str) -> Option<LastEventId> {
    LastEventId::new(id)
}

async fn publish(hub: &Hub, topic: &str, data: &str) -> String {
    match hub.publish(topic, Event::default().data(data)).await {
        Ok(id) => id,
        Err(error) => panic!("publish failed: {error}"), // ok: test
    }
}

async fn subscribe(hub: &Hub, topics: &[&str], last_id: Option<&str>) -> Subscription {
    let subscription = hub.subscribe(topics, last_id.and_then(last)).await;
    subscription.unwrap_or_else(|e| panic!("subscribe: {e}")) // ok: test
}

/// `subscription` served through `layer`, as a handler behind it returns it.
async fn through(layer: SseLayer, subscription: Subscription) -> Reader {
    let mut slot = Some(subscription);
    let inner = service_fn(move |_: Request<()>| {
        let response = slot.take().map(Subscription::into_http);
        std::future::ready(response.ok_or_else(|| "called once".to_owned()))
    });
    let request = Request::get("/")
        .header("accept", "text/event-stream")
        .body(())
        .unwrap_or_default();
    let response = layer.layer(inner).oneshot(request).await;
    Reader::body(response.unwrap_or_else(|e| panic!("{e}")).into_body()) // ok: test
}

/// A connection of the test's own, to look at what Redis holds.
async fn inspect(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(server.url()).unwrap_or_else(|e| panic!("{e}")); // ok: test
    client
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("{e}")) // ok: test
}

/// How many clients Redis has, besides the one asking.
async fn clients(connection: &mut redis::aio::MultiplexedConnection) -> usize {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(connection)
        .await
        .unwrap_or_default();
    list.lines().count().saturating_sub(1)
}

async fn wait_ready(hub: &Hub) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while let Err(error) = hub.ready().await {
        assert!(Instant::now() < deadline, "not ready: {error}"); // ok: test
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn events_published_on_one_node_reach_every_node_and_resume_on_any() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let (a, b) = (hub_on(&server, 1000), hub_on(&server, 1000));
    let mut on_a = Reader::of(subscribe(&a, &["t"], None).await);
    let mut on_b = Reader::of(subscribe(&b, &["t"], None).await);
    let mut both = Reader::of(subscribe(&b, &["t", "u"], None).await);
    let mut published = Vec::new();
    // Apart by more than a millisecond: across topics, the order is that of the entry ids,
    // and two topics' events of the same millisecond may come in either order.
    for n in 0..3 {
        published.push(("t", publish(&a, "t", &format!("t{n}")).await));
        tokio::time::sleep(Duration::from_millis(3)).await;
        published.push(("u", publish(&b, "u", &format!("u{n}")).await));
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let t_ids: Vec<String> = published
        .iter()
        .filter(|(topic, _)| *topic == "t")
        .map(|(_, id)| id.clone())
        .collect();
    assert_eq!(on_a.events_until(3).await.ids(), t_ids);
    assert_eq!(on_b.events_until(3).await.ids(), t_ids);
    assert_eq!(on_a.data(), ["t0", "t1", "t2"]);

    // Several topics: merged in publish order, each id naming both positions.
    both.events_until(6).await;
    assert_eq!(both.data(), ["t0", "u0", "t1", "u1", "t2", "u2"]);
    let ids = both.ids();
    let expected_third = format!("{},{}", published[2].1, published[1].1);
    assert_eq!(
        ids[2], expected_third,
        "t's and u's positions, in topic order"
    );

    // The third id resumes on the other node with exactly what followed it.
    let resumed = subscribe(&a, &["u", "t"], Some(&ids[2])).await;
    assert_eq!(resumed.resume(), Resume::Resumed { replayed: 3 });
    let mut resumed = Reader::of(resumed);
    assert_eq!(resumed.events_until(3).await.data(), ["u1", "t2", "u2"]);
    assert_eq!(resumed.ids(), ids[3..]);

    // A node goes away while publishing goes on: its clients come back on the other node
    // after their last id, and lose nothing.
    let left = on_a.ids().last().cloned();
    a.close();
    assert!(on_a.until(Duration::from_secs(5), |_| false).await.ended);
    assert!(matches!(
        a.publish("t", Event::default().data("late")).await,
        Err(HubError::Closed)
    ));
    let later = publish(&b, "t", "t3").await;
    let mut moved = Reader::of(subscribe(&b, &["t"], left.as_deref()).await);
    assert_eq!(moved.events_until(1).await.ids(), [later]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_is_exact_across_nodes_while_a_publisher_publishes_at_full_rate() {
    const EVENTS: usize = 1_000;
    const SUBSCRIBERS: u64 = 200;
    let Some(server) = RedisServer::start() else {
        return;
    };
    let (a, b) = (hub_on(&server, EVENTS + 10), hub_on(&server, EVENTS + 10));
    let published: Arc<Mutex<Vec<String>>> = Arc::default();
    let publisher = tokio::spawn({
        let (a, published) = (a.clone(), published.clone());
        async move {
            for n in 0..EVENTS {
                let id = publish(&a, "t", &n.to_string()).await;
                if let Ok(mut published) = published.lock() {
                    published.push(id);
                }
            }
            let end = publish(&a, "t", "end").await;
            if let Ok(mut published) = published.lock() {
                published.push(end);
            }
        }
    });
    let mut subscribers = Vec::new();
    for k in 0..SUBSCRIBERS {
        // Subscribers arrive over the first half of the publishing.
        let due = k as usize * EVENTS / 2 / SUBSCRIBERS as usize;
        while published.lock().map_or(0, |p| p.len()) < due {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let (hub, published) = (if k % 2 == 0 { &a } else { &b }.clone(), published.clone());
        let other = if k % 2 == 0 { &b } else { &a }.clone();
        subscribers.push(tokio::spawn(async move {
            let mut rng = k.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            let known: Vec<String> = published.lock().map(|p| p.clone()).unwrap_or_default();
            let start = match (xorshift(&mut rng) % 3, known.len()) {
                (_, 0) | (0, _) => None,
                (1, len) => Some(known[len - 1].clone()),
                (_, len) => Some(known[(xorshift(&mut rng) as usize) % len].clone()),
            };
            let mut last_id = start.clone();
            let mut received: Vec<String> = Vec::new();
            // Leave and come back (on the other node) up to twice, after the last id.
            for round in 0..3 {
                let node = if round % 2 == 0 { &hub } else { &other };
                let mut reader = Reader::of(subscribe(node, &["t"], last_id.as_deref()).await);
                let leave_after = (round < 2 && xorshift(&mut rng) % 2 == 0)
                    .then(|| (xorshift(&mut rng) % 50) as usize);
                reader
                    .until(Duration::from_secs(30), |reader| {
                        let events = &reader.events;
                        events.last().is_some_and(|event| event.data == "end")
                            || leave_after.is_some_and(|n| events.len() >= n)
                    })
                    .await;
                received.extend(reader.ids());
                last_id = received.last().cloned().or(last_id);
                if reader
                    .events
                    .last()
                    .is_some_and(|event| event.data == "end")
                {
                    break;
                }
            }
            (start, received)
        }));
    }
    publisher.await.unwrap_or_else(|e| panic!("{e}")); // ok: test
    let published = published.lock().map(|p| p.clone()).unwrap_or_default();
    let index: HashMap<&str, usize> = published
        .iter()
        .enumerate()
        .map(|(n, id)| (id.as_str(), n))
        .collect();
    let mut resumed = 0;
    for subscriber in subscribers {
        let (start, received) = subscriber.await.unwrap_or_else(|e| panic!("{e}")); // ok: test
        let at: Vec<usize> = received
            .iter()
            .map(|id| index.get(id.as_str()).copied().unwrap_or(usize::MAX))
            .collect();
        assert_eq!(
            at.last(),
            Some(&EVENTS),
            "after {start:?}, the end is reached"
        );
        let broken = at.windows(2).find(|w| w[1] != w[0] + 1);
        assert_eq!(broken, None, "after {start:?}, an event lost or twice");
        if let Some(start) = start {
            resumed += 1;
            let first = index.get(start.as_str()).map(|n| n + 1);
            assert_eq!(at.first().copied(), first, "resumed right after {start}");
        }
    }
    assert!(resumed > SUBSCRIBERS / 3, "{resumed} subscribers resumed");
}

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[tokio::test]
async fn ids_it_cannot_resume_get_one_gap_event_then_what_is_retained() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    // `MAXLEN ~ 5` trims whole nodes of the stream (100 entries each, by default).
    let hub = hub_on(&server, 5);
    let mut ids = Vec::new();
    for n in 0..350 {
        ids.push(publish(&hub, "t", &n.to_string()).await);
    }
    let mut connection = inspect(&server).await;
    let kept: usize = redis::cmd("XLEN")
        .arg("sse:{0}t")
        .query_async(&mut connection)
        .await
        .unwrap_or_default();
    assert!((5..350).contains(&kept), "{kept} entries kept");
    let newest_kept = ids.len() - kept;

    let cases = [
        (ids[0].clone(), GapReason::Trimmed, kept),
        ("99999999999999-0".to_owned(), GapReason::Unknown, kept),
        ("not an id".to_owned(), GapReason::Malformed, kept),
        (format!("{0},{0}", ids[349]), GapReason::Malformed, kept),
        (
            "18446744073709551615-18446744073709551615".to_owned(),
            GapReason::Unknown,
            kept,
        ),
    ];
    for (id, reason, replayed) in cases {
        let subscription = subscribe(&hub, &["t"], Some(&id)).await;
        assert_eq!(
            subscription.resume(),
            Resume::Gap { reason, replayed },
            "after {id:?}"
        );
        let mut reader = Reader::of(subscription);
        let events = &reader.events_until(replayed + 1).await.events;
        assert_eq!(events[0].kind, "reset", "after {id:?}");
        assert_eq!(
            events[0].data,
            format!("{{\"reason\":\"{}\"}}", reason.as_str())
        );
        assert_eq!(
            reader.ids(),
            ids[newest_kept..],
            "after {id:?}: what is retained"
        );
    }
    // Within the history, no gap.
    let subscription = subscribe(&hub, &["t"], Some(&ids[348])).await;
    assert_eq!(subscription.resume(), Resume::Resumed { replayed: 1 });
    // A topic no one published to ("empty", first in topic order): resumed from `0-0`
    // without a gap.
    let subscription = subscribe(&hub, &["t", "empty"], Some(&format!("0-0,{}", ids[349]))).await;
    assert_eq!(subscription.resume(), Resume::Resumed { replayed: 0 });
}

#[tokio::test]
async fn a_subscriber_far_behind_catches_up_from_history_in_pages() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let hub = hub_on(&server, 10_000);
    let mut ids = Vec::new();
    for n in 0..2_500 {
        ids.push(publish(&hub, "t", &n.to_string()).await);
    }
    let subscription = subscribe(&hub, &["t"], Some(&ids[0])).await;
    assert_eq!(subscription.resume(), Resume::Resumed { replayed: 2_499 });
    let mut reader = Reader::of(subscription);
    let later = publish(&hub, "t", "live").await;
    reader.events_until(2_500).await;
    assert_eq!(reader.ids()[..2_499], ids[1..]);
    assert_eq!(reader.ids().last(), Some(&later));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_sends_its_whole_replay_before_a_hot_topic_can_end_it_as_lagged() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    // A queue far shorter than the replay, and a publisher at full rate on the same topic.
    let node = |server: &RedisServer| {
        let redis = Redis::open(&server.url()).unwrap_or_else(|e| panic!("{e}")); // ok: test
        let hub = Hub::builder()
            .history(10_000, usize::MAX)
            .queue(50, usize::MAX);
        hub.redis(redis).unwrap_or_else(|e| panic!("{e}")) // ok: test
    };
    let (a, b) = (node(&server), node(&server));
    let mut ids = Vec::new();
    for n in 0..3_000 {
        ids.push(publish(&b, "t", &n.to_string()).await);
    }
    let hot = tokio::spawn({
        let b = b.clone();
        async move {
            for n in 0..3_000 {
                publish(&b, "t", &format!("hot {n}")).await;
            }
        }
    });
    // The publisher under way.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let subscription = subscribe(&a, &["t"], Some(&ids[0])).await;
    let Resume::Resumed { replayed } = subscription.resume() else {
        panic!("not resumed: {:?}", subscription.resume()); // ok: test
    };
    assert!(replayed >= 2_999, "{replayed} replayed");
    let mut reader = Reader::of(subscription);
    reader.events_until(2_999).await;
    assert_eq!(
        reader.ids().get(..2_999),
        Some(&ids[1..]),
        "the replay, whole and first (the stream ended: {})",
        reader.ended
    );
    hot.await.unwrap_or_else(|e| panic!("{e}")); // ok: test
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_joining_a_new_topic_together_miss_nothing_after_their_first_event() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let (a, b) = (hub_on(&server, 10_000), hub_on(&server, 10_000));
    wait_ready(&a).await;
    wait_ready(&b).await;
    for round in 0..4 {
        // A topic new on node `a`, published to at full rate through node `b` while twenty
        // subscribers join it on `a` at once (their first reads of its newest id interleave
        // with the reader handing its entries on).
        let topic = format!("fresh {round}");
        let publisher = tokio::spawn({
            let (b, topic) = (b.clone(), topic.clone());
            async move {
                let mut ids = Vec::new();
                for n in 0..1_000 {
                    ids.push(publish(&b, &topic, &n.to_string()).await);
                }
                ids.push(publish(&b, &topic, "end").await);
                ids
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let joins = (0..20).map(|_| hub_subscribe(&a, &topic));
        let subscriptions = futures_util::future::join_all(joins).await;
        let readers = subscriptions.into_iter().map(|subscription| async move {
            let mut reader = Reader::of(subscription);
            reader
                .until(Duration::from_secs(30), |reader| {
                    reader.data().last().is_some_and(|data| data == "end")
                })
                .await;
            reader.ids()
        });
        let received = futures_util::future::join_all(readers).await;
        let published = publisher.await.unwrap_or_else(|e| panic!("{e}")); // ok: test
        for (k, ids) in received.iter().enumerate() {
            let first = ids
                .first()
                .and_then(|id| published.iter().position(|p| p == id));
            let first = first.unwrap_or_else(|| panic!("round {round}, subscriber {k}: nothing")); // ok: test
            assert_eq!(
                ids[..],
                published[first..],
                "round {round}, subscriber {k}: an event lost or twice"
            );
        }
    }
}

async fn hub_subscribe(hub: &Hub, topic: &str) -> Subscription {
    subscribe(hub, &[topic], None).await
}

/// Adds an entry to topic `t` as something else than a hub would; its id.
async fn raw(connection: &mut redis::aio::MultiplexedConnection, fields: &str) -> String {
    let mut cmd = redis::cmd("XADD");
    cmd.arg("sse:{0}t").arg("*").arg("e").arg(fields);
    let id: String = cmd
        .query_async(connection)
        .await
        .unwrap_or_else(|e| panic!("{e}")); // ok: test
    id
}

#[tokio::test]
async fn entries_written_beside_the_hubs_arrive_in_their_place() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let hub = hub_on(&server, 1000);
    wait_ready(&hub).await;
    let mut connection = inspect(&server).await;
    let mut reader = Reader::of(subscribe(&hub, &["t"], None).await);
    let mut ids = vec![publish(&hub, "t", "hub 1").await];
    // Between two of a hub's: found by the entry after it.
    ids.push(raw(&mut connection, "data: beside 1\n").await);
    ids.push(publish(&hub, "t", "hub 2").await);
    // With nothing after it: found by the reader's sweep.
    ids.push(raw(&mut connection, "data: beside 2\n").await);
    reader.events_until(4).await;
    assert_eq!(reader.data(), ["hub 1", "beside 1", "hub 2", "beside 2"]);
    assert_eq!(reader.ids(), ids);
}

/// The id of the hub reader's connection (the one whose last command was `XREAD`).
async fn reader_client(connection: &mut redis::aio::MultiplexedConnection) -> Option<String> {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(connection)
        .await
        .unwrap_or_default();
    let line = list.lines().find(|line| line.contains("cmd=xread"))?;
    let id = line
        .split(' ')
        .find_map(|field| field.strip_prefix("id="))?;
    Some(id.to_owned())
}

/// Adds `count` events to topic `t` in one transaction, each trimming it to exactly `kept`,
/// after killing the hub reader's connection if `away`; their ids.
async fn burst(
    connection: &mut redis::aio::MultiplexedConnection,
    away: bool,
    count: usize,
    kept: usize,
) -> Vec<String> {
    let mut burst = redis::pipe();
    burst.atomic();
    if away {
        let id = reader_client(connection).await;
        let id = id.unwrap_or_else(|| panic!("no reader connection")); // ok: test
        burst.cmd("CLIENT").arg("KILL").arg("ID").arg(id).ignore();
    }
    for n in 0..count {
        burst
            .cmd("XADD")
            .arg("sse:{0}t")
            .arg("MAXLEN")
            .arg(kept)
            .arg("*")
            .arg("e")
            .arg(format!("data: burst {n}\n"));
    }
    burst
        .query_async(connection)
        .await
        .unwrap_or_else(|e| panic!("{e}")) // ok: test
}

#[tokio::test]
async fn a_reader_behind_a_trim_ends_its_subscribers_as_lagged_and_their_resume_reports_the_gap() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let hub = hub_on(&server, 5);
    let mut connection = inspect(&server).await;
    // First, the trim comes within one read (the reader's next reply holds only what it
    // left); then while the reader is away (its connection killed in the same transaction),
    // trimmed shorter than this node's history (another node's setting, or an operator's
    // XTRIM), so that only the check after reconnecting can see it.
    for (away, kept) in [(false, 5), (true, 2)] {
        let mut reader = Reader::of(subscribe(&hub, &["t"], None).await);
        // A filtered subscriber (woken only for what its filter takes) ends the same way.
        let filtered = hub.subscribe_with(["t"], Subscribe::new().filter(|_| true));
        let mut filtered = Reader::of(filtered.await.unwrap_or_else(|e| panic!("{e}"))); // ok: test

        // A subscriber with an interest (woken only for the events that name its keys) too:
        // what was gone at the source may have named them.
        let interested = hub.subscribe_with(["t"], Subscribe::new().interest(["x"]));
        let mut interested = Reader::of(interested.await.unwrap_or_else(|e| panic!("{e}"))); // ok: test
        let before = publish(&hub, "t", "before").await;
        for reader in [&mut reader, &mut filtered] {
            assert_eq!(
                reader.events_until(1).await.ids(),
                std::slice::from_ref(&before)
            );
        }
        let ids = burst(&mut connection, away, 50, kept).await;
        interested.until(Duration::from_secs(10), |_| false).await;
        assert!(
            interested.ended && interested.events.is_empty(),
            "away {away}"
        );
        for reader in [&mut reader, &mut filtered] {
            reader.until(Duration::from_secs(10), |_| false).await;
            assert!(reader.ended, "away {away}: the stream goes on past a trim");
            assert_eq!(
                reader.data(),
                ["before"],
                "away {away}: what the trim left was handed on as if nothing were missing"
            );
        }
        let resumed = subscribe(&hub, &["t"], Some(&before)).await;
        assert_eq!(
            resumed.resume(),
            Resume::Gap {
                reason: GapReason::Trimmed,
                replayed: kept
            },
            "away {away}"
        );
        let mut resumed = Reader::of(resumed);
        resumed.events_until(kept + 1).await;
        assert_eq!(resumed.ids(), ids[50 - kept..], "away {away}");
    }
}

#[tokio::test]
async fn a_resume_that_joins_a_topic_whose_cursor_was_trimmed_returns_at_once_with_the_gap() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let hub = hub_on(&server, 1000);
    let mut connection = inspect(&server).await;
    // The subscribe must run while the reader is away (killed, reconnecting after 100 ms):
    // the topic is live with its old cursor, whose entry a trim took, and a whole page of
    // entries after it waits in Redis. It counts when the reader is still away after it.
    for attempt in 0.. {
        assert!(
            attempt < 5,
            "the reader was never away for a whole subscribe"
        ); // ok: test
        wait_ready(&hub).await;
        let mut live = Reader::of(subscribe(&hub, &["t"], None).await);
        let old = publish(&hub, "t", "old").await;
        publish(&hub, "t", "cursor").await;
        assert_eq!(live.events_until(2).await.data(), ["old", "cursor"]);
        let ids = burst(&mut connection, true, 1000, 1000).await;
        let resumed =
            tokio::time::timeout(Duration::from_secs(10), hub.subscribe(["t"], last(&old))).await;
        let resumed = resumed.unwrap_or_else(|_| panic!("the resume never returned")); // ok: test
        let resumed = resumed.unwrap_or_else(|e| panic!("{e}")); // ok: test
        if hub.ready().await.is_ok() {
            continue;
        }
        // Nothing up to the cursor is left: the gap, and the live queue has the rest.
        assert_eq!(
            resumed.resume(),
            Resume::Gap {
                reason: GapReason::Trimmed,
                replayed: 0
            }
        );
        // Back, the reader finds its cursor trimmed: both streams end as lagged.
        let mut resumed = Reader::of(resumed);
        for reader in [&mut live, &mut resumed] {
            reader.until(Duration::from_secs(10), |_| false).await;
            assert!(reader.ended, "a stream went on past the trim of its cursor");
        }
        assert_eq!(resumed.data(), [r#"{"reason":"trimmed"}"#]);
        let again = subscribe(&hub, &["t"], Some(&old)).await;
        assert_eq!(
            again.resume(),
            Resume::Gap {
                reason: GapReason::Trimmed,
                replayed: 1000
            }
        );
        let mut again = Reader::of(again);
        assert_eq!(again.events_until(1001).await.ids(), ids);
        break;
    }
}

#[tokio::test]
async fn a_replay_holds_at_most_the_history_bytes_then_reports_the_gap() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let bytes = 1000;
    let redis = Redis::open(&server.url()).unwrap_or_else(|e| panic!("{e}")); // ok: test
    let hub = Hub::builder().history(1000, bytes).redis(redis);
    let hub = hub.unwrap_or_else(|e| panic!("{e}")); // ok: test
    let mut ids = Vec::new();
    for n in 0..50 {
        ids.push(publish(&hub, "t", &format!("{n:0>90}")).await);
    }
    // Each event as sent: its data line, its id line, the blank line.
    let size = |id: &String| "data: \n".len() + 90 + "id: \n".len() + id.len() + 1;
    let mut fit = 0;
    let mut total = 0;
    for id in ids.iter().rev() {
        total += size(id);
        if total > bytes {
            break;
        }
        fit += 1;
    }
    assert!((2..20).contains(&fit), "{fit} events fit");
    let cases = [
        (
            0,
            Resume::Gap {
                reason: GapReason::Trimmed,
                replayed: fit,
            },
        ),
        (
            ids.len() - fit - 2,
            Resume::Gap {
                reason: GapReason::Trimmed,
                replayed: fit,
            },
        ),
        (ids.len() - fit - 1, Resume::Resumed { replayed: fit }),
    ];
    for (after, expected) in cases {
        let subscription = subscribe(&hub, &["t"], Some(&ids[after])).await;
        assert_eq!(subscription.resume(), expected, "after {after}");
        let mut reader = Reader::of(subscription);
        let gap = usize::from(matches!(expected, Resume::Gap { .. }));
        let got = reader.events_until(gap + fit).await.ids();
        assert_eq!(got, ids[ids.len() - fit..], "after {after}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_loses_nothing_and_repeats_nothing() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let (a, b) = (hub_on(&server, 1000), hub_on(&server, 1000));
    let layer = SseLayer::new().heartbeat(Duration::from_millis(200));
    let mut readers = Vec::new();
    for hub in [&a, &b] {
        readers.push(through(layer.clone(), subscribe(hub, &["t"], None).await).await);
        readers.push(through(layer.clone(), subscribe(hub, &["t", "u"], None).await).await);
    }
    let mut published = Vec::new();
    for n in 0..20 {
        published.push(publish(&a, "t", &format!("before {n}")).await);
    }
    for reader in &mut readers {
        reader.events_until(20).await;
    }

    server.stop();
    // While Redis is down: a publish fails with a typed error, and streams stay open.
    let refused = a.publish("t", Event::default().data("lost?")).await;
    assert!(
        matches!(refused, Err(HubError::Unavailable(_))),
        "{refused:?}"
    );
    assert!(matches!(a.ready().await, Err(HubError::Unavailable(_))));
    assert!(matches!(
        a.subscribe(["elsewhere"], None).await,
        Err(HubError::Unavailable(_))
    ));
    for reader in &mut readers {
        let heartbeats = reader.comments;
        reader
            .until(Duration::from_secs(2), |reader| {
                reader.comments > heartbeats
            })
            .await;
        assert!(!reader.ended, "a stream ended while Redis was down");
        assert!(reader.comments > heartbeats, "no heartbeat");
    }

    // A topic live on the node needs no Redis to subscribe to (a resume does).
    let mut late = through(layer.clone(), subscribe(&a, &["t"], None).await).await;
    let resume = a.subscribe(["t"], last(&published[19])).await;
    assert!(
        matches!(resume, Err(HubError::Unavailable(_))),
        "{resume:?}"
    );

    server.start_again();
    // Written as soon as Redis answers, before the readers are back (they reconnect with
    // backoff, from their cursors).
    let mut connection = inspect(&server).await;
    for n in 0..5 {
        let id: String = redis::cmd("XADD")
            .arg("sse:{0}t")
            .arg("*")
            .arg("e")
            .arg(format!("data: raw {n}\n"))
            .query_async(&mut connection)
            .await
            .unwrap_or_else(|e| panic!("{e}")); // ok: test
        published.push(id);
    }
    wait_ready(&a).await;
    wait_ready(&b).await;
    for n in 0..20 {
        // The reader reconnects with backoff; publishing goes on meanwhile.
        let hub = if n % 2 == 0 { &a } else { &b };
        published.push(publish(hub, "t", &format!("after {n}")).await);
    }
    assert_eq!(late.events_until(25).await.ids(), published[20..]);
    for reader in &mut readers {
        let ids = reader.events_until(45).await.ids();
        assert_eq!(ids.len(), 45, "{:?}", reader.data());
        let ids: Vec<String> = ids
            .iter()
            .map(|id| id.split(',').next().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(
            ids, published,
            "every event once, in order, across the restart"
        );
    }
}

#[tokio::test]
async fn a_hub_started_before_redis_reports_it_then_connects() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    // The server stands for Redis at its port later; first, nothing listens there.
    server.stop();
    let hub = hub_on(&server, 1000);
    assert!(matches!(hub.ready().await, Err(HubError::Unavailable(_))));
    let error = hub.publish("t", Event::default().data("x")).await.err();
    assert!(matches!(error, Some(HubError::Unavailable(_))), "{error:?}");
    let error = hub.subscribe(["t"], None).await.err();
    assert!(
        matches!(&error, Some(HubError::Unavailable(_))),
        "{error:?}"
    );
    assert_eq!(
        error.map(|e| e.status()),
        Some(http::StatusCode::SERVICE_UNAVAILABLE)
    );

    server.start_again();
    wait_ready(&hub).await;
    let mut reader = Reader::of(subscribe(&hub, &["t"], None).await);
    let id = publish(&hub, "t", "x").await;
    assert_eq!(reader.events_until(1).await.ids(), [id]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_holds_two_connections_for_ten_thousand_subscribers_on_a_hundred_topics() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let mut connection = inspect(&server).await;
    let hub = hub_on(&server, 1000);
    wait_ready(&hub).await;
    let mut bodies = Vec::new();
    for n in 0..10_000 {
        let topic = format!("topic {}", n % 100);
        bodies.push(Reader::of(subscribe(&hub, &[&topic], None).await));
    }
    let held = clients(&mut connection).await;
    let mut ids = HashMap::new();
    for n in 0..100 {
        let topic = format!("topic {n}");
        ids.insert(n, publish(&hub, &topic, &topic).await);
    }
    for (n, reader) in bodies.iter_mut().enumerate() {
        let got = reader.events_until(1).await.ids();
        assert_eq!(got, [ids[&(n % 100)].clone()], "subscriber {n}");
    }
    assert_eq!(held, 2, "one reader and one command connection");
    eprintln!("connections per node: {held} (10 000 subscribers, 100 topics)");

    // Leaving and closing lets them go.
    drop(bodies);
    hub.close();
    let deadline = Instant::now() + Duration::from_secs(10);
    while clients(&mut connection).await > 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        clients(&mut connection).await <= 1,
        "the reader's connection is released"
    );
}

#[tokio::test]
async fn an_interested_subscriber_on_another_node_passes_trims_of_others_and_lags_at_its_own() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    // Each node's rings hold 5 events.
    let (a, b) = (hub_on(&server, 5), hub_on(&server, 5));
    wait_ready(&a).await;
    wait_ready(&b).await;
    let interested = b.subscribe_with(["t"], Subscribe::new().interest(["x"]));
    let mut interested = Reader::of(interested.await.unwrap_or_else(|e| panic!("{e}"))); // ok: test
    let tagged = |data: String, tag: &'static str| {
        let a = a.clone();
        async move {
            a.publish_with("t", Event::default().data(data), Publish::new().tag(tag))
                .await
                .unwrap_or_else(|e| panic!("{e}")) // ok: test
        }
    };
    tagged("x1".into(), "x").await;
    assert_eq!(interested.events_until(1).await.data(), ["x1"]);
    // Twenty for others, more than the ring holds, while it waits: passed over.
    for n in 0..20 {
        tagged(format!("y{n}"), "y").await;
    }
    tagged("x2".into(), "x").await;
    assert_eq!(interested.events_until(2).await.data(), ["x1", "x2"]);
    assert!(!interested.ended);
    // One of its own trimmed from the ring before it was read: it lags.
    tagged("x3".into(), "x").await;
    for n in 20..40 {
        tagged(format!("y{n}"), "y").await;
    }
    // The last one is in b's ring once a subscriber of everything there has it.
    let mut all = Reader::of(subscribe(&b, &["t"], None).await);
    tagged("y-last".into(), "y").await;
    all.events_until(1).await;
    interested.until(Duration::from_secs(10), |_| false).await;
    assert!(interested.ended, "it lags");
    assert_eq!(
        interested.data(),
        ["x1", "x2"],
        "and skips nothing silently"
    );
}
