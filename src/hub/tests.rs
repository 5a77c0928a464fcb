//! The hub's rules, one test each, on the subscription bodies themselves (and through the layer
//! where the layer's part is the point).

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body::Body;
use http_body_util::BodyExt;
use tower::{service_fn, Layer, ServiceExt};

use super::{GapReason, Hub, HubError, Publish, Resume, Subscribe, Subscription};
use crate::{CloseReason, Event, LastEventId, SseLayer};

/// A subscription's stream, read frame by frame.
struct Reader {
    body: std::pin::Pin<Box<dyn Body<Data = Bytes, Error = Infallible> + Send>>,
    text: String,
    ended: bool,
}

impl Reader {
    fn of(subscription: Subscription) -> Self {
        Self::body(subscription.into_http().into_body())
    }

    fn body(body: impl Body<Data = Bytes, Error = Infallible> + Send + 'static) -> Self {
        Self {
            body: Box::pin(body),
            text: String::new(),
            ended: false,
        }
    }

    /// Reads until the text holds `needle`, the end, or 5 s pass.
    async fn until(&mut self, needle: &str) -> &str {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !self.text.contains(needle) && !self.ended {
            match tokio::time::timeout_at(deadline, self.body.frame()).await {
                Ok(Some(Ok(frame))) => {
                    let data = frame.into_data().unwrap_or_default();
                    self.text.push_str(&String::from_utf8_lossy(&data));
                }
                Ok(None) => self.ended = true,
                Ok(Some(Err(never))) => match never {},
                Err(_) => break,
            }
        }
        &self.text
    }

    /// The ids received so far, in order.
    fn ids(&self) -> Vec<String> {
        self.text
            .lines()
            .filter_map(|line| line.strip_prefix("id: "))
            .map(str::to_owned)
            .collect()
    }
}

/// A layer without retry hints, and the reasons of the closes it reports, in order.
fn recording_closes() -> (SseLayer, Arc<Mutex<Vec<CloseReason>>>) {
    let closes = Arc::new(Mutex::new(Vec::new()));
    let layer = SseLayer::new().no_retry().on_close({
        let closes = closes.clone();
        move |info| {
            closes
                .lock()
                .map(|mut c| c.push(info.reason))
                .unwrap_or_default()
        }
    });
    (layer, closes)
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
        .body(());
    let response = layer
        .layer(inner)
        .oneshot(request.unwrap_or_default())
        .await
        .unwrap_or_else(|e| panic!("{e}")); // ok: test
    Reader::body(response.into_body())
}

fn last(id: &str) -> Option<LastEventId> {
    let mut headers = http::HeaderMap::new();
    headers.insert("last-event-id", http::HeaderValue::from_str(id).ok()?);
    LastEventId::from_headers(&headers)
}

async fn publish(hub: &Hub, topic: &str, data: &str) -> String {
    match hub.publish(topic, Event::default().data(data)).await {
        Ok(id) => id,
        Err(error) => panic!("publish failed: {error}"), // ok: test
    }
}

fn seq(id: &str) -> u64 {
    id.rsplit('-')
        .next()
        .and_then(|seq| seq.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_published_event_reaches_every_subscriber_with_the_id_it_was_given() {
    let hub = Hub::memory();
    let a = hub.subscribe(["t"], None).await;
    let mut a = Reader::of(a.unwrap_or_else(|e| panic!("{e}"))); // ok: test
    let b = hub.subscribe(["t", "t"], None).await;
    let mut b = Reader::of(b.unwrap_or_else(|e| panic!("{e}"))); // ok: test

    // A publisher-set id is replaced.
    let event = Event::default()
        .data("hello")
        .id("mine")
        .unwrap_or_default();
    let id = hub.publish("t", event).await.map_err(|e| e.to_string());
    let id = id.unwrap_or_default();
    assert_eq!(id.len(), 16 + 1 + 1, "{id}");
    let expected = format!("data: hello\nid: {id}\n\n");
    for reader in [&mut a, &mut b] {
        let text = reader.until(&expected).await;
        assert_eq!(text, format!("retry: 3000\n{expected}"));
    }
    let next = publish(&hub, "t", "again").await;
    assert!(seq(&next) > seq(&id));
    assert!(a.until(&next).await.contains("data: again"));
}

#[tokio::test]
async fn a_known_id_resumes_exactly_and_no_id_is_live_only() {
    let hub = Hub::memory();
    let mut ids = Vec::new();
    for n in 0..10 {
        ids.push(publish(&hub, "t", &n.to_string()).await);
    }
    let resumed = hub
        .subscribe(["t"], last(&ids[4]))
        .await
        .unwrap_or_else(|e| panic!("{e}")); // ok: test
    assert_eq!(resumed.resume(), Resume::Resumed { replayed: 5 });
    let fresh = hub
        .subscribe(["t"], None)
        .await
        .unwrap_or_else(|e| panic!("{e}")); // ok: test
    assert_eq!(fresh.resume(), Resume::Fresh);
    let (mut resumed, mut fresh) = (Reader::of(resumed), Reader::of(fresh));
    let live = publish(&hub, "t", "live").await;
    resumed.until(&live).await;
    assert_eq!(
        resumed.ids(),
        [&ids[5..], std::slice::from_ref(&live)].concat()
    );
    fresh.until(&live).await;
    assert_eq!(fresh.ids(), [live]);
}

#[tokio::test]
async fn ids_it_cannot_resume_get_one_gap_event_then_what_is_retained() {
    let hub = Hub::builder().history(3, 1 << 20).build();
    let mut ids = Vec::new();
    for n in 0..6 {
        ids.push(publish(&hub, "t", &n.to_string()).await);
    }
    let other_epoch = format!("0000000000000000-{}", seq(&ids[4]));
    for (id, reason, replayed) in [
        (ids[0].clone(), GapReason::Trimmed, 3),
        (other_epoch, GapReason::Unknown, 3),
        (format!("{}9", ids[5]), GapReason::Unknown, 3),
        ("garbage".to_owned(), GapReason::Malformed, 3),
        ("x".repeat(10_000), GapReason::Malformed, 3),
    ] {
        let subscription = hub
            .subscribe(["t"], last(&id))
            .await
            .unwrap_or_else(|e| panic!("{e}")); // ok: test
        assert_eq!(subscription.resume(), Resume::Gap { reason, replayed });
        let mut reader = Reader::of(subscription);
        let text = reader.until(&ids[5]).await.to_owned();
        let gap = format!(
            "event: reset\ndata: {{\"reason\":\"{}\"}}\n\n",
            reason.as_str()
        );
        assert!(
            text.starts_with(&format!("retry: 3000\n{gap}data: 3\n")),
            "{text}"
        );
        assert_eq!(reader.ids(), &ids[3..]);
    }
    // The id the history still covers is no gap.
    let covered = hub
        .subscribe(["t"], last(&ids[2]))
        .await
        .unwrap_or_else(|e| panic!("{e}")); // ok: test
    assert_eq!(covered.resume(), Resume::Resumed { replayed: 3 });
}

#[tokio::test]
async fn several_topics_merge_in_publish_order_and_resume_with_one_id() {
    let hub = Hub::memory();
    let mut all = Vec::new();
    for n in 0..6 {
        let topic = ["a", "b", "c"][n % 3];
        all.push((topic, publish(&hub, topic, &n.to_string()).await));
    }
    let of = |topics: &[&str], after: usize| -> Vec<String> {
        all.iter()
            .skip(after + 1)
            .filter(|(topic, _)| topics.contains(topic))
            .map(|(_, id)| id.clone())
            .collect()
    };
    let subscription = hub
        .subscribe(["a", "b"], last(&all[1].1))
        .await
        .unwrap_or_else(|e| panic!("{e}")); // ok: test
    let mut reader = Reader::of(subscription);
    let live_c = publish(&hub, "c", "c").await;
    let live_a = publish(&hub, "a", "a").await;
    reader.until(&live_a).await;
    let mut expected = of(&["a", "b"], 1);
    expected.push(live_a);
    assert_eq!(reader.ids(), expected);
    assert!(!reader.text.contains(&live_c));
}

#[tokio::test]
async fn a_subscriber_that_falls_behind_is_ended_after_whole_events_and_catches_up() {
    let hub = Hub::builder().queue(3, 1 << 20).build();
    let (layer, closes) = recording_closes();
    let subscription = hub
        .subscribe(["t"], None)
        .await
        .unwrap_or_else(|e| panic!("{e}")); // ok: test
                                            // Publishing never waits on the slow subscriber: ten publishes while it reads nothing.
    let mut ids = Vec::new();
    for n in 0..10 {
        ids.push(publish(&hub, "t", &n.to_string()).await);
    }
    let mut reader = through(layer, subscription).await;
    let text = reader.until("\u{0}never").await.to_owned();
    assert!(reader.ended, "the stream ends: {text}");
    assert_eq!(reader.ids(), &ids[..3], "whole events, those queued");
    assert_eq!(
        closes.lock().map(|c| c.clone()).unwrap_or_default(),
        [CloseReason::Lagged]
    );
    // Reconnecting with the last id it got, it catches up from history.
    let again = hub
        .subscribe(["t"], last(&ids[2]))
        .await
        .unwrap_or_else(|e| panic!("{e}")); // ok: test
    let mut reader = Reader::of(again);
    reader.until(&ids[9]).await;
    assert_eq!(reader.ids(), &ids[3..]);
}

#[tokio::test]
async fn bad_topics_and_counts_are_typed_errors_that_create_nothing() {
    let hub = Hub::builder().topics_per_subscription(2).build();
    let long = "x".repeat(257);
    for topic in ["", long.as_str(), "a\nb", "tab\there", "nul\0"] {
        let error = hub.subscribe([topic], None).await.err();
        assert!(
            matches!(error, Some(HubError::InvalidTopic(_))),
            "{topic:?}"
        );
        assert_eq!(
            error.map(|e| e.status()),
            Some(http::StatusCode::BAD_REQUEST)
        );
        let published = hub.publish(topic, Event::default().data("x")).await;
        assert!(matches!(published, Err(HubError::InvalidTopic(_))));
    }
    let none: [&str; 0] = [];
    assert!(matches!(
        hub.subscribe(none, None).await,
        Err(HubError::TopicCount { given: 0, .. })
    ));
    assert!(matches!(
        hub.subscribe(["a", "b", "c"], None).await,
        Err(HubError::TopicCount { limit: 2, .. })
    ));
    assert_eq!(hub.engine().topic_count(), 0);
    assert!(hub.subscribe(["a/b", "ünïcode ✓"], None).await.is_ok());
}

#[tokio::test]
async fn topics_without_subscribers_or_history_are_dropped_and_the_count_is_bounded() {
    let hub = Hub::builder().max_topics(10, usize::MAX).build();
    for n in 0..100 {
        drop(hub.subscribe([format!("one-off {n}")], None).await);
    }
    assert_eq!(hub.engine().topic_count(), 0);
    let mut ids = Vec::new();
    for n in 0..100 {
        ids.push(publish(&hub, &format!("kept {n}"), "x").await);
    }
    assert_eq!(hub.engine().topic_count(), 10);
    // The bytes of all histories together are bounded too.
    let small = Hub::builder().max_topics(1_000, 2_000).build();
    for n in 0..100 {
        publish(&small, &format!("t{n}"), &"x".repeat(100)).await;
    }
    let kept = small.engine().topic_count();
    assert!(
        kept > 5 && kept <= 2_000 / 100,
        "{kept} topics of ~130 B kept in 2 000 B"
    );
    // An evicted topic's history is gone, and a client resuming on it is told so.
    let evicted = hub
        .subscribe(["kept 0"], last(&ids[0]))
        .await
        .unwrap_or_else(|e| panic!("{e}")); // ok: test
    assert!(matches!(
        evicted.resume(),
        Resume::Gap {
            reason: GapReason::Trimmed,
            ..
        }
    ));
}

#[tokio::test]
async fn a_closed_hub_refuses_and_ends_its_streams() {
    let hub = Hub::memory();
    let subscribed = hub.subscribe(["t"], None).await;
    let mut reader = Reader::of(subscribed.unwrap_or_else(|e| panic!("{e}"))); // ok: test
    let id = publish(&hub, "t", "last").await;
    hub.close();
    assert!(matches!(
        hub.publish("t", Event::default().data("late")).await,
        Err(HubError::Closed)
    ));
    assert!(matches!(
        hub.subscribe(["t"], None).await,
        Err(HubError::Closed)
    ));
    reader.until("\u{0}never").await;
    assert!(reader.ended);
    assert_eq!(reader.ids(), [id]);
}

/// A small deterministic generator for the interleavings.
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Reads `reader` until the `end` event, or until `leave_after` events (then it "disconnects").
async fn read_events(reader: &mut Reader, leave_after: Option<usize>) -> bool {
    loop {
        if reader.text.contains("data: end\n") {
            return true;
        }
        if leave_after.is_some_and(|n| reader.ids().len() >= n) || reader.ended {
            return false;
        }
        let seen = reader.text.len();
        reader.until("data: end\n").await;
        if reader.text.len() == seen && !reader.ended {
            return false;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_is_exact_while_a_publisher_publishes_at_full_rate_with_and_without_interest() {
    const EVENTS: u64 = 1_000;
    const SUBSCRIBERS: u64 = 2_000;
    let hub = Hub::builder()
        .history(EVENTS as usize + 1, usize::MAX)
        .queue(EVENTS as usize + 1, usize::MAX)
        .build();
    let published: Arc<Mutex<Vec<String>>> = Arc::default();
    let publisher = tokio::spawn({
        let (hub, published) = (hub.clone(), published.clone());
        async move {
            for n in 0..EVENTS {
                // Tagged for the subscribers with an interest in it.
                let event = Event::default().data(n.to_string());
                let id = hub.publish_with("t", event, Publish::new().tag("k")).await;
                let id = id.unwrap_or_else(|e| panic!("{e}")); // ok: test
                if let Ok(mut published) = published.lock() {
                    published.push(id);
                }
                if n % 8 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            let end = Event::default().data("end");
            let end = hub.publish_with("t", end, Publish::new().tag("k")).await;
            end.unwrap_or_else(|e| panic!("{e}")) // ok: test
        }
    });
    // Every other subscriber reads through an interest: from the ring's index, or one by one
    // where the index does not reach back to its position.
    let options = |k: u64, last_id: Option<&str>| {
        let options = Subscribe::new().after(last_id.and_then(last));
        if k % 2 == 1 {
            options.interest(["k"])
        } else {
            options
        }
    };
    let mut subscribers = Vec::new();
    for k in 0..SUBSCRIBERS {
        let (hub, published) = (hub.clone(), published.clone());
        subscribers.push(tokio::spawn(async move {
            let mut rng = k.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            // Start fresh, or after an id published so far (the newest, or an older one).
            let known: Vec<String> = published.lock().map(|p| p.clone()).unwrap_or_default();
            let start = match (xorshift(&mut rng) % 3, known.len()) {
                (_, 0) | (0, _) => None,
                (1, len) => Some(known[len - 1].clone()),
                (_, len) => Some(known[(xorshift(&mut rng) as usize) % len].clone()),
            };
            let mut last_id = start.clone();
            let mut received: Vec<String> = Vec::new();
            // Leave and come back (as EventSource does) up to twice, resuming after the last id.
            for round in 0..3 {
                let subscription = hub
                    .subscribe_with(["t"], options(k, last_id.as_deref()))
                    .await;
                let subscription = subscription.unwrap_or_else(|e| panic!("{e}")); // ok: test
                let mut reader = Reader::of(subscription);
                let leave_after = (round < 2 && xorshift(&mut rng) % 2 == 0)
                    .then(|| (xorshift(&mut rng) % 50) as usize);
                let done = read_events(&mut reader, leave_after).await;
                received.extend(reader.ids());
                last_id = received.last().cloned().or(last_id);
                if done {
                    return (start, received);
                }
            }
            let mut reader = Reader::of(
                hub.subscribe_with(["t"], options(k, last_id.as_deref()))
                    .await
                    .unwrap_or_else(|e| panic!("{e}")), // ok: test
            );
            read_events(&mut reader, None).await;
            received.extend(reader.ids());
            (start, received)
        }));
        if k % 4 == 0 {
            tokio::task::yield_now().await;
        }
    }
    let end = publisher.await.unwrap_or_default();
    let end_seq = seq(&end);
    let mut resumed = 0;
    for subscriber in subscribers {
        let (start, received) = subscriber.await.unwrap_or_else(|e| panic!("{e}")); // ok: test
        let seqs: Vec<u64> = received.iter().map(|id| seq(id)).collect();
        assert_eq!(
            seqs.last(),
            Some(&end_seq),
            "every subscriber reaches the end"
        );
        // One topic, one publisher: the sequence numbers are consecutive, so any loss or
        // duplicate shows as a step other than 1.
        let broken = seqs.windows(2).find(|w| w[1] != w[0] + 1);
        assert_eq!(broken, None, "after {start:?}, a step that is not 1");
        if let Some(start) = start {
            resumed += 1;
            assert_eq!(
                seqs.first(),
                Some(&(seq(&start) + 1)),
                "resumed right after {start}"
            );
        }
    }
    assert!(resumed > SUBSCRIBERS / 3, "{resumed} subscribers resumed");
}

#[tokio::test]
async fn shutdown_ends_hub_streams_and_a_restarted_process_reports_the_gap() {
    let hub = Hub::memory();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let bye = Event::default().event("bye").map(|e| e.data("restarting"));
    let layer = SseLayer::new()
        .no_retry()
        .graceful_shutdown(shutdown.clone())
        .shutdown_event(bye.unwrap_or_default());
    let subscription = hub
        .subscribe(["t"], None)
        .await
        .unwrap_or_else(|e| panic!("{e}")); // ok: test
    let mut reader = through(layer, subscription).await;
    let id = publish(&hub, "t", "before").await;
    reader.until(&id).await;
    shutdown.cancel();
    let text = reader.until("\u{0}never").await.to_owned();
    assert!(reader.ended);
    assert!(text.ends_with("event: bye\ndata: restarting\n\n"), "{text}");
    // The process restarts: its memory, and its epoch, are new. The client's id is told to be
    // unknown, never taken for a position.
    let restarted = Hub::memory();
    let _ = publish(&restarted, "t", "after").await;
    let again = restarted
        .subscribe(["t"], last(&id))
        .await
        .unwrap_or_else(|e| panic!("{e}")); // ok: test
    assert_eq!(
        again.resume(),
        Resume::Gap {
            reason: GapReason::Unknown,
            replayed: 1
        }
    );
    let mut reader = Reader::of(again);
    let text = reader.until("data: after").await;
    assert!(
        text.contains("event: reset\ndata: {\"reason\":\"unknown\"}\n\ndata: after\n"),
        "{text}"
    );
}

/// Publishes `data` on `topic` with the id `id` kept and `tag`.
async fn publish_kept(hub: &Hub, topic: &str, id: &str, data: &str, tag: &'static str) {
    let event = Event::default()
        .id(id)
        .unwrap_or_else(|e| panic!("{e}")) // ok: test
        .data(data);
    let given = hub
        .publish_with(topic, event, Publish::new().keep_id().tag(tag))
        .await
        .unwrap_or_else(|e| panic!("{e}")); // ok: test
    assert_eq!(given, id, "a kept id is the event's id");
}

#[tokio::test]
async fn kept_ids_resume_from_their_first_use_and_filters_pass_over_what_they_refuse() {
    let hub = Hub::memory();
    let mut live = Reader::of(
        hub.subscribe_with(["t"], Subscribe::new().filter(|tag| tag != b"secret"))
            .await
            .unwrap_or_else(|e| panic!("{e}")), // ok: test
    );
    publish_kept(&hub, "t", "urn:a", "one", "").await;
    publish_kept(&hub, "t", "urn:b", "two", "secret").await;
    publish_kept(&hub, "t", "urn:a", "three", "").await; // the id reused
    let plain = publish(&hub, "t", "four").await; // the hub's id when none is kept
    publish_kept(&hub, "t", "urn:c", "five", "secret").await;
    publish_kept(&hub, "t", "urn:d", "six", "").await;
    live.until("data: six").await;
    assert_eq!(live.ids(), ["urn:a", "urn:a", plain.as_str(), "urn:d"]);
    assert!(!live.text.contains("two") && !live.text.contains("five"));
    assert_eq!(
        hub.last_id("t").await.ok().flatten().as_deref(),
        Some("urn:d")
    );
    assert_eq!(hub.last_id("none").await.ok().flatten(), None);

    // After a reused id: from its first use, what came after it, the reuse included.
    let resumed = hub
        .subscribe_with(["t"], Subscribe::new().after(last("urn:a")))
        .await
        .unwrap_or_else(|e| panic!("{e}")); // ok: test
    assert_eq!(resumed.resume(), Resume::Resumed { replayed: 5 });
    let mut resumed = Reader::of(resumed);
    resumed.until("data: six").await;
    assert_eq!(
        resumed.ids(),
        ["urn:b", "urn:a", plain.as_str(), "urn:c", "urn:d"]
    );

    // Everything retained, filtered: the refused events are not counted as replayed.
    let filter = |tag: &[u8]| tag.is_empty();
    let earliest = hub
        .subscribe_with(["t"], Subscribe::new().earliest().filter(filter))
        .await
        .unwrap_or_else(|e| panic!("{e}")); // ok: test
    assert_eq!(earliest.resume(), Resume::Resumed { replayed: 4 });
    let mut earliest = Reader::of(earliest);
    earliest.until("data: six").await;
    assert_eq!(earliest.ids(), ["urn:a", "urn:a", plain.as_str(), "urn:d"]);

    // An id no retained event has: a gap, told or not as the subscription asks.
    for quiet in [false, true] {
        let mut options = Subscribe::new().after(last("urn:gone"));
        if quiet {
            options = options.without_gap_event();
        }
        let gap = hub
            .subscribe_with(["t"], options)
            .await
            .unwrap_or_else(|e| panic!("{e}")); // ok: test
        assert!(matches!(gap.resume(), Resume::Gap { replayed: 6, .. }));
        let mut gap = Reader::of(gap);
        gap.until("data: six").await;
        assert_eq!(gap.text.contains("event: reset"), !quiet);
    }
}

#[tokio::test]
async fn a_filter_that_refuses_a_long_run_still_reaches_what_follows_it() {
    // More refused events than one read takes: the subscriber must read on, not wait.
    let hub = Hub::builder().history(5000, usize::MAX).build();
    let mut reader = Reader::of(
        hub.subscribe_with(["t"], Subscribe::new().filter(|tag| tag == b"mine"))
            .await
            .unwrap_or_else(|e| panic!("{e}")), // ok: test
    );
    for n in 0..3000 {
        publish_kept(&hub, "t", &format!("other-{n}"), "x", "other").await;
    }
    publish_kept(&hub, "t", "last", "mine", "mine").await;
    assert!(reader.until("data: mine").await.contains("id: last"));
    assert_eq!(reader.ids(), ["last"]);
}

#[tokio::test]
async fn a_kept_id_resumes_only_to_whom_its_event_is_readable_and_is_never_a_position() {
    let hub = Hub::memory();
    let plain = publish(&hub, "t", "zero").await;
    // A kept id that looks like one of this hub's positions (past its newest event).
    let lookalike = format!("{}-99999", plain.split('-').next().unwrap_or_default());
    publish_kept(&hub, "t", &lookalike, "one", "").await;
    publish_kept(&hub, "t", "secret-id", "two", "secret").await;
    publish_kept(&hub, "t", "after", "three", "").await;
    // An empty kept id is none: the hub's id, as for an event without one.
    let event = Event::default()
        .id("")
        .unwrap_or_else(|e| panic!("{e}")) // ok: test
        .data("four");
    let given = hub
        .publish_with("t", event, Publish::new().keep_id())
        .await
        .unwrap_or_else(|e| panic!("{e}")); // ok: test
    assert!(!given.is_empty() && seq(&given) > 0, "{given}");

    let public = |tag: &[u8]| tag != b"secret";
    let resume = |id: &str, filtered: bool| {
        let mut options = Subscribe::new().after_kept(last(id));
        if filtered {
            options = options.filter(public);
        }
        let hub = hub.clone();
        async move {
            hub.subscribe_with(["t"], options)
                .await
                .unwrap_or_else(|e| panic!("{e}")) // ok: test
                .resume()
        }
    };
    // The event's own reader resumes after it; one that may not read it is told of a gap,
    // as for an id that was never given.
    assert_eq!(
        resume("secret-id", false).await,
        Resume::Resumed { replayed: 2 }
    );
    assert!(matches!(
        resume("secret-id", true).await,
        Resume::Gap {
            reason: GapReason::Unknown,
            replayed: 4
        }
    ));
    assert!(matches!(
        resume("never-given", true).await,
        Resume::Gap {
            reason: GapReason::Unknown,
            ..
        }
    ));
    // An id the hub gave is a position, never a kept id (as on Redis, which keeps only these).
    assert!(matches!(
        resume(&plain, false).await,
        Resume::Gap {
            reason: GapReason::Unknown,
            ..
        }
    ));
    // Looked up as the kept id it is; read as a position, it would be an unknown one.
    assert_eq!(
        resume(&lookalike, false).await,
        Resume::Resumed { replayed: 3 }
    );
    let as_position = hub
        .subscribe_with(["t"], Subscribe::new().after(last(&lookalike)))
        .await
        .unwrap_or_else(|e| panic!("{e}")); // ok: test
    assert!(matches!(
        as_position.resume(),
        Resume::Gap {
            reason: GapReason::Unknown,
            ..
        }
    ));
}

#[tokio::test]
async fn a_filtered_subscriber_is_not_ended_for_events_it_does_not_receive() {
    // A queue of 4: an unfiltered subscriber this far behind would be ended as lagged.
    let hub = Hub::builder()
        .history(10_000, usize::MAX)
        .queue(4, usize::MAX)
        .build();
    let mut reader = Reader::of(
        hub.subscribe_with(["t"], Subscribe::new().filter(|tag| tag == b"mine"))
            .await
            .unwrap_or_else(|e| panic!("{e}")), // ok: test
    );
    for n in 0..100 {
        publish_kept(&hub, "t", &format!("other-{n}"), "x", "other").await;
    }
    publish_kept(&hub, "t", "mine-1", "mine", "mine").await;
    reader.until("id: mine-1").await;
    publish_kept(&hub, "t", "mine-2", "mine", "mine").await;
    assert!(
        reader.until("id: mine-2").await.contains("id: mine-2"),
        "still open"
    );
    assert!(!reader.ended);
}

/// Counts the wake-ups of the task it is the waker of.
#[derive(Default)]
struct WakeCount(std::sync::atomic::AtomicUsize);

impl std::task::Wake for WakeCount {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl WakeCount {
    fn get(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Polls `body` with `waker` until it is pending; the text of the frames it gave.
fn poll_until_pending(
    body: &mut std::pin::Pin<Box<dyn Body<Data = Bytes, Error = Infallible> + Send>>,
    waker: &std::task::Waker,
) -> String {
    let mut cx = std::task::Context::from_waker(waker);
    let mut text = String::new();
    while let std::task::Poll::Ready(Some(Ok(frame))) = body.as_mut().poll_frame(&mut cx) {
        text.push_str(&String::from_utf8_lossy(
            &frame.into_data().unwrap_or_default(),
        ));
    }
    text
}

#[tokio::test]
async fn an_interested_subscriber_is_woken_only_by_the_events_that_name_its_keys() {
    let hub = Hub::memory();
    let interested = hub
        .subscribe_with(["t"], Subscribe::new().interest(["a", "c"]))
        .await
        .unwrap_or_else(|e| panic!("{e}")); // ok: test
    let everything = hub
        .subscribe(["t"], None)
        .await
        .unwrap_or_else(|e| panic!("{e}")); // ok: test
    let (count, count_all) = (
        Arc::new(WakeCount::default()),
        Arc::new(WakeCount::default()),
    );
    let (waker, waker_all) = (
        std::task::Waker::from(count.clone()),
        std::task::Waker::from(count_all.clone()),
    );
    let mut body: std::pin::Pin<Box<dyn Body<Data = Bytes, Error = Infallible> + Send>> =
        Box::pin(interested.into_http().into_body());
    let mut body_all: std::pin::Pin<Box<dyn Body<Data = Bytes, Error = Infallible> + Send>> =
        Box::pin(everything.into_http().into_body());
    poll_until_pending(&mut body, &waker);
    poll_until_pending(&mut body_all, &waker_all);
    let tagged = |tag: &'static str| Publish::new().tag(tag);
    let publish = |data: &'static str, tag: &'static str| {
        hub.publish_with("t", Event::default().data(data), tagged(tag))
    };
    // Another key, no tag, a key only inside a line: not woken. (A publish wakes at once.)
    publish("other", "b")
        .await
        .unwrap_or_else(|e| panic!("{e}")); // ok: test
    publish("untagged", "")
        .await
        .unwrap_or_else(|e| panic!("{e}")); // ok: test
    publish("inside", "xa\nay")
        .await
        .unwrap_or_else(|e| panic!("{e}")); // ok: test
    assert_eq!(count.get(), 0, "not woken by events it does not want");
    assert_eq!(count_all.get(), 1, "a subscriber without interest is");
    // One of its keys on any line of the tag: woken.
    publish("mine", "x\nc\ny")
        .await
        .unwrap_or_else(|e| panic!("{e}")); // ok: test
    assert_eq!(count.get(), 1);
    let text = poll_until_pending(&mut body, &waker);
    assert!(text.contains("data: mine"), "{text}");
    for other in ["data: other", "data: untagged", "data: inside"] {
        assert!(!text.contains(other), "{text}");
    }
    let text_all = poll_until_pending(&mut body_all, &waker_all);
    assert_eq!(text_all.matches("data: ").count(), 4, "{text_all}");
}

#[tokio::test]
async fn an_interested_subscriber_moves_past_trims_of_others_and_lags_at_its_own() {
    let hub = Hub::builder().history(4, usize::MAX).build();
    let (layer, closes) = recording_closes();
    let subscribe = |topics: &'static [&'static str], options: Subscribe| {
        let (hub, layer) = (hub.clone(), layer.clone());
        async move {
            let subscription = hub
                .subscribe_with(topics.iter().copied(), options)
                .await
                .unwrap_or_else(|e| panic!("{e}")); // ok: test
            through(layer, subscription).await
        }
    };
    let mut interested = subscribe(&["t"], Subscribe::new().interest(["a"])).await;
    let mut two_topics = subscribe(&["t", "u"], Subscribe::new().interest(["a"])).await;
    // A filter alone cannot tell what was trimmed: it ends at the first trim past it.
    let mut filtered = subscribe(&["t"], Subscribe::new().filter(|tag| tag == b"a")).await;
    let publish = |topic: &'static str, data: String, tag: &'static str| {
        let hub = hub.clone();
        async move {
            hub.publish_with(topic, Event::default().data(data), Publish::new().tag(tag))
                .await
                .unwrap_or_else(|e| panic!("{e}")) // ok: test
        }
    };
    publish("t", "a1".into(), "a").await;
    interested.until("data: a1").await;
    two_topics.until("data: a1").await;
    filtered.until("data: a1").await;
    // Ten events for others, more than the history holds, while the three wait.
    for n in 0..10 {
        publish("t", format!("b{n}"), "b").await;
    }
    publish("u", "a2".into(), "a").await;
    publish("t", "a3".into(), "a").await;
    assert!(interested.until("data: a3").await.contains("data: a3"));
    assert!(!interested.ended);
    let text = two_topics.until("data: a3").await;
    assert!(
        text.contains("data: a2\n") && text.contains("data: a3"),
        "{text}"
    );
    assert!(!two_topics.ended);
    filtered.until("\u{0}never").await;
    assert!(filtered.ended, "a filtered subscriber lags at the trim");
    // An event it wants, trimmed before it was read: it lags, and never skips it silently.
    publish("t", "a4".into(), "a").await;
    for n in 10..20 {
        publish("t", format!("b{n}"), "b").await;
    }
    let text = interested.until("\u{0}never").await.to_owned();
    assert!(interested.ended && !text.contains("data: a4"), "{text}");
    let text = two_topics.until("\u{0}never").await.to_owned();
    assert!(two_topics.ended && !text.contains("data: a4"), "{text}");
    assert_eq!(
        closes.lock().map(|c| c.clone()).unwrap_or_default(),
        [CloseReason::Lagged; 3]
    );
}

#[tokio::test]
async fn an_interested_subscriber_resumes_and_reads_long_runs_of_its_own_in_order() {
    let hub = Hub::builder().history(10_000, usize::MAX).build();
    let publish = |data: String, tag: &'static str| {
        let hub = hub.clone();
        async move {
            hub.publish_with("t", Event::default().data(data), Publish::new().tag(tag))
                .await
                .unwrap_or_else(|e| panic!("{e}")) // ok: test
        }
    };
    let first = publish("a0".into(), "a").await;
    publish("b0".into(), "b").await;
    publish("a1".into(), "x\na").await;
    // Resumed from before any subscriber was interested: the ring's index does not reach back
    // there, so the replay reads the events one by one, then follows the index.
    let resumed = hub
        .subscribe_with(["t"], Subscribe::new().after(last(&first)).interest(["a"]))
        .await
        .unwrap_or_else(|e| panic!("{e}")); // ok: test
    let mut resumed = Reader::of(resumed);
    let live = hub
        .subscribe_with(["t"], Subscribe::new().interest(["a", "c"]))
        .await
        .unwrap_or_else(|e| panic!("{e}")); // ok: test
    let mut live = Reader::of(live);
    // More of its own than one frame holds, between everyone else's.
    for n in 2..3000 {
        let tag = if n % 3 == 0 { "b" } else { "a" };
        publish(format!("{tag}{n}"), tag).await;
        if n % 1000 == 0 {
            publish(format!("c{n}"), "c").await;
        }
    }
    publish("end".into(), "a\nc").await;
    let wanted = |text: &str| -> Vec<String> {
        text.lines()
            .filter_map(|line| line.strip_prefix("data: "))
            .map(str::to_owned)
            .collect()
    };
    let mut expected: Vec<String> = vec!["a1".into()];
    expected.extend((2..3000).filter(|n| n % 3 != 0).map(|n| format!("a{n}")));
    expected.push("end".into());
    assert_eq!(wanted(resumed.until("data: end").await), expected);
    let mut expected_live: Vec<String> = Vec::new();
    for n in 2..3000 {
        if n % 3 != 0 {
            expected_live.push(format!("a{n}"));
        }
        if n % 1000 == 0 {
            expected_live.push(format!("c{n}"));
        }
    }
    expected_live.push("end".into());
    assert_eq!(wanted(live.until("data: end").await), expected_live);
    assert!(!resumed.ended && !live.ended);
}
