//! The rolling-restart proof of the Redis engine (`scripts/rolling-restart.sh` runs it, release
//! build, in CI): a real `redis-server`, three nodes (`examples/hub.rs --redis`, each its own
//! process and port), a fleet of subscribers spread over the nodes that reconnect to another
//! node when their stream ends (honouring `retry:`, sending `Last-Event-ID`), a few real
//! `EventSource` clients (npm `eventsource`) behind a round-robin TCP balancer, and a publisher
//! publishing at a steady rate to several topics through any node.
//!
//! Each node in turn is stopped gracefully (SIGTERM: the shutdown event, then the streams end)
//! and started again; then one is killed (no shutdown event) and started again. At the end
//! every subscriber must have received every event published after it first subscribed, in
//! order, exactly once: the ground truth is each stream as Redis holds it (`XRANGE`). One topic,
//! `tiny`, is published with `MAXLEN ~ 5` on purpose, and some of its subscribers stay away
//! until its history is trimmed past them: they must get the gap event, and nothing but the
//! trimmed events may be missing.
//!
//! ```text
//! bash scripts/rolling-restart.sh                     # 1 000 subscribers, as CI runs it
//! ROLLING_SUBSCRIBERS=5000 ROLLING_RATE=50 bash scripts/rolling-restart.sh
//! ```

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use support::redis_server::RedisServer;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::time::{sleep, timeout, Instant};
use tokio_util::sync::CancellationToken;
use tower_sse::hub::{Hub, Redis};
use tower_sse::read::EventReader;
use tower_sse::Event;

type Error = Box<dyn std::error::Error + Send + Sync>;

const TOKEN: &str = "rolling-restart";
/// The topics published through the nodes.
const TOPICS: [&str; 4] = ["t0", "t1", "t2", "t3"];
/// The topic published with `MAXLEN ~ 5`, and how many of its subscribers stay away until
/// its history is gone.
const TINY: &str = "tiny";
const SLEEPY: usize = 10;
/// What a sleepy subscriber waits for before it comes back: this many `tiny` events (the
/// stream keeps at most about 105 with `MAXLEN ~ 5`).
const SLEEPY_EVENTS: u64 = 300;
/// How many npm `eventsource` clients.
const EVENTSOURCES: usize = 6;

fn knob(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

/// One node: the hub example on its own port.
struct Node {
    port: u16,
    child: Option<Child>,
}

impl Node {
    async fn start(&mut self, binary: &PathBuf, redis: &str) -> Result<(), Error> {
        let child = Command::new(binary)
            .args([
                "--listen",
                &format!("127.0.0.1:{}", self.port),
                "--redis",
                redis,
            ])
            // Longer than the run: every event stays in Redis, so `XRANGE` is the ground truth.
            .args(["--history", "1000000"])
            .env("HUB_TOKEN", TOKEN)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((200, _)) = request(self.port, "GET", "/ready", None, Bytes::new()).await {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("node on {} did not get ready", self.port).into());
            }
            sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, as an orchestrator stops a node, and the wait for it to exit.
    async fn stop(&mut self) -> Result<(), Error> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if let Some(pid) = child.id() {
            Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await?;
        }
        if timeout(Duration::from_secs(15), child.wait())
            .await
            .is_err()
        {
            child.kill().await?;
            return Err(format!("node on {} did not stop within 15 s", self.port).into());
        }
        Ok(())
    }

    /// SIGKILL: no shutdown event, connections reset.
    async fn kill(&mut self) -> Result<(), Error> {
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
        }
        Ok(())
    }
}

/// One HTTP/1.1 request on a connection of its own; the status and the body.
async fn request(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Bytes,
) -> Result<(u16, Bytes), Error> {
    let response = send(port, method, path, token, None, body).await?;
    let status = response.status().as_u16();
    let body = timeout(Duration::from_secs(10), response.into_body().collect())
        .await??
        .to_bytes();
    Ok((status, body))
}

async fn send(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    last_event_id: Option<&str>,
    body: Bytes,
) -> Result<http::Response<Incoming>, Error> {
    let tcp = timeout(
        Duration::from_secs(5),
        TcpStream::connect(("127.0.0.1", port)),
    )
    .await??;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(tcp)).await?;
    tokio::spawn(connection);
    let mut builder = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", format!("127.0.0.1:{port}"));
    if path.starts_with("/events/") {
        builder = builder.header("accept", "text/event-stream");
    }
    if let Some(token) = token {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    if let Some(id) = last_event_id {
        builder = builder.header("last-event-id", id);
    }
    let response = timeout(
        Duration::from_secs(10),
        sender.send_request(builder.body(Full::new(body))?),
    )
    .await??;
    Ok(response)
}

/// What one subscriber received, in order.
#[derive(Default)]
struct Record {
    topics: Vec<String>,
    /// When its first subscription was answered (ms since the epoch).
    subscribed_ms: Option<u64>,
    received: Vec<Received>,
    reconnects: usize,
    /// It stays away until `tiny`'s history is trimmed (it must see a gap).
    sleepy: bool,
    npm: bool,
}

enum Received {
    Event {
        data: String,
        id: String,
    },
    Gap,
    /// A subscription answered by the node on `port`, after `last` (for the report of a loss).
    Subscribed {
        port: u16,
        last: String,
    },
}

type Shared = Arc<Mutex<Record>>;

fn lock(record: &Shared) -> std::sync::MutexGuard<'_, Record> {
    record
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A subscriber of the fleet: subscribes on `first` node, and after its stream ends (or the
/// node is gone) waits the stream's retry hint and subscribes on the next node, with its last
/// event id.
async fn subscriber(
    ports: Arc<Vec<u16>>,
    first: usize,
    record: Shared,
    tiny_published: Arc<AtomicU64>,
    stop: CancellationToken,
) {
    let (path, sleepy) = {
        let record = lock(&record);
        (
            format!("/events/{}", record.topics.join(",")),
            record.sleepy,
        )
    };
    let mut node = first;
    let mut last_id = String::new();
    let mut retry = Duration::from_secs(1);
    while !stop.is_cancelled() {
        let port = ports[node % ports.len()];
        let last = (!last_id.is_empty()).then_some(last_id.as_str());
        let response = send(port, "GET", &path, Some(TOKEN), last, Bytes::new()).await;
        if let Ok(response) = response.as_ref() {
            if response.status() == 200 {
                let mut record = lock(&record);
                record.subscribed_ms.get_or_insert_with(now_ms);
                let last = last_id.clone();
                record.received.push(Received::Subscribed { port, last });
            }
        }
        match response {
            Ok(response) if response.status() == 200 => {
                let mut reader = EventReader::new(response.into_body());
                loop {
                    let next = tokio::select! {
                        next = reader.next_event() => next,
                        () = stop.cancelled() => return,
                    };
                    let Some(Ok(message)) = next else { break };
                    let mut record = lock(&record);
                    match message.event_type() {
                        "message" => record.received.push(Received::Event {
                            data: message.text().into_owned(),
                            id: reader.last_event_id().to_owned(),
                        }),
                        "reset" => record.received.push(Received::Gap),
                        _ => {}
                    }
                }
                last_id = reader.last_event_id().to_owned();
                retry = reader.retry().unwrap_or(retry).min(Duration::from_secs(10));
            }
            // Refused, or the node is stopping: another node, after the retry delay.
            _ => {}
        }
        lock(&record).reconnects += 1;
        node += 1;
        if sleepy {
            let until = tiny_published.load(Ordering::Relaxed) + SLEEPY_EVENTS;
            while tiny_published.load(Ordering::Relaxed) < until && !stop.is_cancelled() {
                sleep(Duration::from_millis(20)).await;
            }
        }
        tokio::select! {
            () = sleep(retry) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// A round-robin TCP balancer on `listener` over the nodes that accept a connection.
async fn balance(listener: TcpListener, ports: Arc<Vec<u16>>, stop: CancellationToken) {
    let next = AtomicUsize::new(0);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.cancelled() => return,
        };
        let Ok((mut client, _)) = accepted else {
            continue;
        };
        let start = next.fetch_add(1, Ordering::Relaxed);
        let ports = ports.clone();
        tokio::spawn(async move {
            for n in 0..ports.len() {
                let port = ports[(start + n) % ports.len()];
                if let Ok(mut upstream) = TcpStream::connect(("127.0.0.1", port)).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    return;
                }
            }
        });
    }
}

/// The npm `eventsource` clients, through the balancer: their records, filled from the
/// script's lines.
async fn eventsources(script: PathBuf, base: String, records: Vec<Shared>) -> Result<Child, Error> {
    let topics: Vec<String> = records.iter().map(|r| lock(r).topics.join(",")).collect();
    let mut child = Command::new("node")
        .arg(script)
        .arg(base)
        .arg(TOKEN)
        .args(&topics)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let Ok(line) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            let client = line["c"].as_u64().unwrap_or(u64::MAX) as usize;
            let Some(record) = records.get(client) else {
                continue;
            };
            let mut record = lock(record);
            let text = |field: &str| line[field].as_str().unwrap_or_default().to_owned();
            match line["kind"].as_str() {
                Some("open") if record.subscribed_ms.is_none() => {
                    record.subscribed_ms = Some(now_ms());
                }
                Some("open") => record.reconnects += 1,
                Some("message") => record.received.push(Received::Event {
                    data: text("data"),
                    id: text("id"),
                }),
                Some("reset") => record.received.push(Received::Gap),
                _ => {}
            }
        }
    });
    Ok(child)
}

/// What was published: per topic, entry id and data.
type Published = Vec<(String, String, String)>;

/// Publishes `{topic} {n}` on the topics in turn, `rate` per topic per second, through the
/// nodes in turn (another node when one refuses), until `stop`: the publishes acknowledged,
/// and how many no node took.
async fn publisher(
    ports: Arc<Vec<u16>>,
    rate: usize,
    stop: CancellationToken,
) -> (Published, usize) {
    let mut tick = tokio::time::interval(Duration::from_secs(1) / (rate * TOPICS.len()) as u32);
    let mut failed = 0;
    let mut published = Vec::new();
    for n in 0.. {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => break,
        }
        let topic = TOPICS[n % TOPICS.len()];
        let data = Bytes::from(format!("{topic} {}", n / TOPICS.len()));
        let path = format!("/publish/{topic}");
        let mut done = false;
        for attempt in 0..ports.len() * 2 {
            let port = ports[(n + attempt) % ports.len()];
            match request(port, "POST", &path, Some(TOKEN), data.clone()).await {
                Ok((200, id)) => {
                    let id = String::from_utf8_lossy(&id).trim().to_owned();
                    published.push((topic.to_owned(), id, String::from_utf8_lossy(&data).into()));
                    done = true;
                    break;
                }
                // Refused before it was sent (the node is down), or a 503: not published.
                Ok(_) => {}
                Err(error) if is_refused(&*error) => {}
                // It may have been published before the node went away: Redis says.
                Err(_) => {
                    done = true;
                    break;
                }
            }
        }
        failed += usize::from(!done);
    }
    (published, failed)
}

fn is_refused(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(error) = source {
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::ConnectionRefused;
        }
        source = error.source();
    }
    false
}

/// Each topic's events in order: data → position, and the list of (entry id, data).
struct Truth {
    order: HashMap<String, Vec<(String, String)>>,
    position: HashMap<String, (String, usize)>,
}

/// The ground truth: each stream as Redis holds it (`XRANGE`: it has what was published even
/// when the node went away before it answered), with every acknowledged publish (what a
/// `MAXLEN` trimmed, only the publisher still knows).
async fn truth(server: &RedisServer, acknowledged: &Published) -> Result<Truth, Error> {
    let client = redis::Client::open(server.url())?;
    let mut connection = client.get_multiplexed_async_connection().await?;
    let mut by_topic: HashMap<String, HashMap<String, String>> = HashMap::new();
    for topic in TOPICS.iter().chain([&TINY]) {
        let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
            .arg(format!("sse:{{0}}{topic}"))
            .arg("-")
            .arg("+")
            .query_async(&mut connection)
            .await?;
        let stream = by_topic.entry(topic.to_string()).or_default();
        for (id, fields) in entries {
            let body = fields
                .iter()
                .find(|(name, _)| name == "e")
                .map(|(_, body)| body.as_str())
                .unwrap_or_default();
            let data = body
                .lines()
                .filter_map(|line| line.strip_prefix("data: "))
                .collect::<Vec<_>>()
                .join("\n");
            stream.insert(id, data);
        }
    }
    for (topic, id, data) in acknowledged {
        let stream = by_topic.entry(topic.clone()).or_default();
        stream.insert(id.clone(), data.clone());
    }
    let mut order = HashMap::new();
    let mut position = HashMap::new();
    for (topic, stream) in by_topic {
        let mut list: Vec<(String, String)> = stream.into_iter().collect();
        list.sort_by_key(|(id, _)| entry(id));
        for (at, (_, data)) in list.iter().enumerate() {
            position.insert(data.clone(), (topic.clone(), at));
        }
        order.insert(topic, list);
    }
    Ok(Truth { order, position })
}

/// An entry id as numbers, for ordering.
fn entry(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

/// The entry id's milliseconds.
fn ms(id: &str) -> u64 {
    entry(id).0
}

#[derive(Default, Debug)]
struct Counts {
    expected: usize,
    delivered: usize,
    lost: usize,
    duplicated: usize,
    unknown: usize,
    wrong_id: usize,
    gaps: usize,
    skipped_at_gaps: usize,
    reconnects: usize,
    sleepy_without_gap: usize,
    gaps_off_tiny: usize,
}

/// Checks one subscriber against the truth, topic by topic.
fn check(record: &Record, truth: &Truth, counts: &mut Counts) {
    counts.reconnects += record.reconnects;
    let gaps = record
        .received
        .iter()
        .filter(|r| matches!(r, Received::Gap))
        .count();
    counts.gaps += gaps;
    if record.sleepy && gaps == 0 {
        counts.sleepy_without_gap += 1;
    }
    if gaps > 0 && !record.topics.iter().any(|topic| topic == TINY) {
        counts.gaps_off_tiny += 1;
    }
    let Some(subscribed) = record.subscribed_ms else {
        return;
    };
    for topic in &record.topics {
        let list = &truth.order[topic.as_str()];
        // What the subscriber got of this topic: positions, with a gap event between.
        let mut got: Vec<(usize, bool)> = Vec::new();
        let mut gap_before = false;
        // Where each position was received (for the report of a loss).
        let mut received_at: Vec<usize> = Vec::new();
        for (index, received) in record.received.iter().enumerate() {
            match received {
                Received::Subscribed { .. } => {}
                Received::Gap => gap_before = true,
                Received::Event { data, id } => {
                    let Some((of, at)) = truth.position.get(data) else {
                        counts.unknown += 1;
                        continue;
                    };
                    if of != topic {
                        continue;
                    }
                    counts.delivered += 1;
                    if record.topics.len() == 1 && list[*at].0 != *id {
                        counts.wrong_id += 1;
                    }
                    got.push((*at, std::mem::take(&mut gap_before)));
                    received_at.push(index);
                }
            }
        }
        // Expected: from the first event it got, or the first published after it subscribed
        // if that is earlier, to the end.
        let after_subscribe = list
            .iter()
            .position(|(id, _)| ms(id) > subscribed)
            .unwrap_or(list.len());
        let start = got
            .first()
            .map_or(after_subscribe, |&(at, _)| at.min(after_subscribe));
        counts.expected += list.len() - start;
        let mut next = start;
        for (n, &(at, gap)) in got.iter().enumerate() {
            if at < next {
                counts.duplicated += 1;
                continue;
            }
            if gap {
                counts.skipped_at_gaps += at - next;
            } else {
                counts.lost += at - next;
                if at > next {
                    report_loss(record, topic, list, (next, at), received_at.get(n).copied());
                }
            }
            next = at + 1;
        }
        counts.lost += list.len() - next.min(list.len());
    }
}

/// Prints what a subscriber received around a loss of `topic`'s events `missing` (the first
/// few losses of a run).
fn report_loss(
    record: &Record,
    topic: &str,
    list: &[(String, String)],
    missing: (usize, usize),
    received_at: Option<usize>,
) {
    static REPORTED: AtomicU64 = AtomicU64::new(0);
    if REPORTED.fetch_add(1, Ordering::Relaxed) >= 5 {
        return;
    }
    let (from, to) = missing;
    eprintln!(
        "lost: {topic} events {from}..{to} ({:?} .. {:?}) of a subscriber of {:?}; it received:",
        list[from],
        list[to - 1],
        record.topics
    );
    let at = received_at.unwrap_or(record.received.len());
    for received in &record.received[at.saturating_sub(8)..(at + 3).min(record.received.len())] {
        match received {
            Received::Event { data, id } => eprintln!("  {data} (id {id})"),
            Received::Gap => eprintln!("  (gap)"),
            Received::Subscribed { port, last } => {
                eprintln!("  (subscribed on {port} after {last:?})")
            }
        }
    }
}

/// How many subscribers lack the last event of one of their topics.
fn behind(records: &[Shared], truth: &Truth) -> usize {
    records
        .iter()
        .filter(|record| {
            let record = lock(record);
            record.topics.iter().any(|topic| {
                let Some((_, last)) = truth.order[topic.as_str()].last() else {
                    return false;
                };
                !record
                    .received
                    .iter()
                    .any(|r| matches!(r, Received::Event { data, .. } if data == last))
            })
        })
        .count()
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let (Some(hub_binary), Some(script)) = (args.next(), args.next()) else {
        return Err("usage: rolling-restart HUB_BINARY EVENTSOURCE_SCRIPT".into());
    };
    let hub_binary = PathBuf::from(hub_binary);
    let subscribers = knob("ROLLING_SUBSCRIBERS", 1000);
    let rate = knob("ROLLING_RATE", 25).max(1);
    let _ = rlimit::increase_nofile_limit(u64::MAX);

    let server = RedisServer::start().ok_or("redis-server is not installed")?;
    let redis_url = server.url();
    let mut nodes = Vec::new();
    for _ in 0..3 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        drop(listener);
        let mut node = Node { port, child: None };
        node.start(&hub_binary, &redis_url).await?;
        nodes.push(node);
    }
    let ports = Arc::new(nodes.iter().map(|node| node.port).collect::<Vec<_>>());
    println!("redis on {redis_url}, nodes on {ports:?}");

    let stop = CancellationToken::new();
    let balancer = TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", balancer.local_addr()?);
    tokio::spawn(balance(balancer, ports.clone(), stop.clone()));

    // The fleet: most on one topic, every tenth on two (compound ids), some on `tiny`.
    let tiny_published = Arc::new(AtomicU64::new(0));
    let mut records = Vec::new();
    let mut tasks = Vec::new();
    for k in 0..subscribers {
        let topics = match k % 10 {
            0 => vec!["t0".to_owned(), "t1".to_owned()],
            9 => vec![TINY.to_owned()],
            _ => vec![TOPICS[k % TOPICS.len()].to_owned()],
        };
        let sleepy = k % 10 == 9 && k / 10 < SLEEPY;
        let record: Shared = Arc::new(Mutex::new(Record {
            topics,
            sleepy,
            ..Record::default()
        }));
        records.push(record.clone());
        tasks.push(tokio::spawn(subscriber(
            ports.clone(),
            k,
            record,
            tiny_published.clone(),
            stop.clone(),
        )));
    }
    let npm: Vec<Shared> = (0..EVENTSOURCES)
        .map(|k| {
            let topics = if k == 0 {
                vec![TINY.to_owned()]
            } else {
                vec![TOPICS[k % TOPICS.len()].to_owned()]
            };
            Arc::new(Mutex::new(Record {
                topics,
                npm: true,
                ..Record::default()
            }))
        })
        .collect();
    let mut node_clients = eventsources(PathBuf::from(script), base, npm.clone()).await?;
    records.extend(npm);

    // Everyone subscribed before the publishing starts matters not: they are checked from
    // when they subscribed. Give the fleet a moment, then publish throughout.
    let deadline = Instant::now() + Duration::from_secs(30);
    while records.iter().any(|r| lock(r).subscribed_ms.is_none()) && Instant::now() < deadline {
        sleep(Duration::from_millis(100)).await;
    }
    let publishing = CancellationToken::new();
    let publisher_task = tokio::spawn(publisher(ports.clone(), rate, publishing.clone()));
    let tiny_task = tokio::spawn({
        let (url, counter, publishing) = (
            redis_url.clone(),
            tiny_published.clone(),
            publishing.clone(),
        );
        async move {
            let hub = Hub::builder()
                .history(5, usize::MAX)
                .redis(Redis::open(&url)?)?;
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            let mut published = Vec::new();
            for n in 0.. {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = publishing.cancelled() => break,
                }
                let data = format!("{TINY} {n}");
                let id = hub
                    .publish(TINY, Event::default().data(data.clone()))
                    .await?;
                published.push((TINY.to_owned(), id, data));
                counter.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, Error>(published)
        }
    });
    sleep(Duration::from_secs(3)).await;

    let started = Instant::now();
    for index in 0..nodes.len() {
        println!("stopping node {} gracefully", ports[index]);
        nodes[index].stop().await?;
        sleep(Duration::from_secs(2)).await;
        nodes[index].start(&hub_binary, &redis_url).await?;
        sleep(Duration::from_secs(3)).await;
    }
    println!("killing node {}", ports[1]);
    nodes[1].kill().await?;
    sleep(Duration::from_secs(2)).await;
    nodes[1].start(&hub_binary, &redis_url).await?;
    sleep(Duration::from_secs(4)).await;
    publishing.cancel();
    let (mut acknowledged, unpublished) = publisher_task.await?;
    let tiny_published = tiny_task.await??;
    let tiny_count = tiny_published.len();
    acknowledged.extend(tiny_published);
    println!("restarts done in {:.1} s", started.elapsed().as_secs_f64());

    let truth = truth(&server, &acknowledged).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while behind(&records, &truth) > 0 && Instant::now() < deadline {
        sleep(Duration::from_millis(200)).await;
    }
    stop.cancel();
    drop(node_clients.stdin.take());
    let _ = timeout(Duration::from_secs(5), node_clients.wait()).await;
    for task in tasks {
        let _ = task.await;
    }
    for node in &mut nodes {
        node.stop().await?;
    }

    let published: usize = truth.order.values().map(Vec::len).sum();
    let mut counts = Counts::default();
    let mut npm_delivered = 0;
    let mut seen: HashSet<usize> = HashSet::new();
    for (k, record) in records.iter().enumerate() {
        let record = lock(record);
        let (before, lost_before) = (counts.delivered, counts.lost);
        check(&record, &truth, &mut counts);
        if record.npm {
            npm_delivered += counts.delivered - before;
        }
        if counts.lost > lost_before {
            seen.insert(k);
        }
    }
    println!(
        "published {published} (of which {TINY}: {tiny_count}, {unpublished} refused by every \
         node), subscribers {} ({EVENTSOURCES} npm eventsource, {SLEEPY} away until trimmed)",
        records.len(),
    );
    println!(
        "delivered {} (npm eventsource: {npm_delivered}), expected {}, lost {}, duplicated {}, \
         reconnects {}, gaps {} ({} events trimmed at them), unknown {}, wrong ids {}",
        counts.delivered,
        counts.expected,
        counts.lost,
        counts.duplicated,
        counts.reconnects,
        counts.gaps,
        counts.skipped_at_gaps,
        counts.unknown,
        counts.wrong_id,
    );
    let mut failures = Vec::new();
    if counts.lost > 0 {
        failures.push(format!("{} lost (subscribers {:?})", counts.lost, seen));
    }
    if counts.duplicated > 0 {
        failures.push(format!("{} duplicated", counts.duplicated));
    }
    if counts.unknown + counts.wrong_id > 0 {
        failures.push("events that Redis does not hold, or with another id".into());
    }
    if counts.sleepy_without_gap > 0 {
        failures.push(format!(
            "{} subscribers away past the trim saw no gap event",
            counts.sleepy_without_gap
        ));
    }
    if counts.gaps_off_tiny > 0 {
        failures.push(format!(
            "{} gaps on topics that were not trimmed",
            counts.gaps_off_tiny
        ));
    }
    if counts.reconnects < records.len() {
        failures.push(format!("only {} reconnects", counts.reconnects));
    }
    if npm_delivered == 0 {
        failures.push("the npm eventsource clients received nothing".into());
    }
    if failures.is_empty() {
        println!("rolling restart: ok");
        Ok(())
    } else {
        Err(failures.join("; ").into())
    }
}
