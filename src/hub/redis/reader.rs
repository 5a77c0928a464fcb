//! A shard's live topics and its reader: one task and one connection per shard, reading every
//! live topic of the shard with one blocking `XREAD`, and queueing each entry for the topic's
//! subscribers on this node.
//!
//! Each live topic has a cursor, the last entry the reader handed on; a subscriber registered
//! under the shard's lock receives every entry after the cursor it found, and nothing is handed
//! on twice. When the set of topics changes, the blocked read is ended (`CLIENT UNBLOCK`) and
//! issued again for the new set; after a failure the reader reconnects with backoff and reads
//! on from its cursors, so an outage loses nothing that Redis kept. What Redis no longer keeps
//! (a stream trimmed past a cursor while the reader was away or behind) ends the topic's
//! subscribers as lagged: they reconnect, and their resume reports the gap.
//!
//! Ending a blocked read takes `CLIENT ID` and `CLIENT UNBLOCK` (ACL category `@admin`); where
//! they are refused, a read is issued again only when it returns, so a topic newly live waits
//! up to the block time (5 s) for its first live entries (none is lost: its cursor holds).

use std::collections::HashMap;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use redis::Value;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::commands::{unavailable, Commands};
use super::entry_id::EntryId;
use super::item::{self, bytes_of, Item, Parsed};
use crate::hub::queue::Queue;
use crate::hub::HubError;

/// How long one `XREAD` blocks when nothing comes.
const BLOCK: Duration = Duration::from_secs(5);
/// The most entries one read takes per topic.
const READ_COUNT: usize = 1000;
/// The first and the longest wait before reconnecting.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));
/// How often the reader asks again to end its blocked read, until it ends; and for how long
/// (past it, a proxy in between is taken to hide the read's connection: the read runs out).
const UNBLOCK_EVERY: Duration = Duration::from_millis(5);
const UNBLOCK_FOR: Duration = Duration::from_millis(250);

/// The live topics of one shard on this node.
pub(super) struct Shard {
    state: Mutex<State>,
    /// Signalled when the set of live topics changes.
    changed: Notify,
    /// Whether the reader is connected (for readiness).
    connected: AtomicBool,
    /// How many entries of one topic in one read mean the reader may have fallen behind a
    /// trim: a trim past the cursor leaves only entries after it, and `MAXLEN ~` keeps at
    /// least the history, so such a read returns at least this many (the history, or a whole
    /// read).
    behind_at: usize,
}

struct State {
    closed: bool,
    topics: HashMap<Arc<str>, Live>,
}

/// A topic with subscribers on this node.
struct Live {
    key: String,
    /// The last entry handed on.
    cursor: EntryId,
    subscribers: HashMap<u64, Arc<Queue<Item>>>,
}

/// What a read covers: each live topic, its key and its cursor.
type Snapshot = Vec<(Arc<str>, String, EntryId)>;

impl Shard {
    /// The live topics of a shard whose streams are trimmed to about `history` entries.
    pub(super) fn new(history: usize) -> Self {
        Self {
            behind_at: history.clamp(1, READ_COUNT),
            state: Mutex::new(State {
                closed: false,
                topics: HashMap::new(),
            }),
            changed: Notify::new(),
            connected: AtomicBool::new(false),
        }
    }

    /// Whether the reader is connected, so live entries flow.
    pub(super) fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; the state stays consistent in any case.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers `queue` on `topic`: it receives every entry after the returned cursor. A topic
    /// not yet live needs `newest`, its stream's newest id read from Redis; without it, `None`
    /// asks the caller to read it and come back.
    pub(super) fn join(
        &self,
        topic: &Arc<str>,
        key: &str,
        newest: Option<EntryId>,
        queue: &Arc<Queue<Item>>,
    ) -> Result<Option<EntryId>, HubError> {
        let mut state = self.lock();
        if state.closed {
            return Err(HubError::Closed);
        }
        if let Some(live) = state.topics.get_mut(topic) {
            live.subscribers.insert(queue.id, queue.clone());
            return Ok(Some(live.cursor));
        }
        let Some(cursor) = newest else {
            return Ok(None);
        };
        let live = Live {
            key: key.to_owned(),
            cursor,
            subscribers: HashMap::from([(queue.id, queue.clone())]),
        };
        state.topics.insert(topic.clone(), live);
        drop(state);
        self.changed.notify_one();
        Ok(Some(cursor))
    }

    /// Whether `topic` is live here (its cursor is known without asking Redis).
    pub(super) fn is_live(&self, topic: &str) -> bool {
        self.lock().topics.contains_key(topic)
    }

    /// Removes the queue numbered `queue` from `topic`; a topic left without subscribers is no
    /// longer read.
    pub(super) fn leave(&self, topic: &str, queue: u64) {
        let mut state = self.lock();
        let Some(live) = state.topics.get_mut(topic) else {
            return;
        };
        live.subscribers.remove(&queue);
        if live.subscribers.is_empty() {
            state.topics.remove(topic);
            drop(state);
            self.changed.notify_one();
        }
    }

    /// Ends every subscriber's queue (after what is queued) and stops reading.
    pub(super) fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        for (_, live) in state.topics.drain() {
            for queue in live.subscribers.values() {
                queue.close();
            }
        }
    }

    fn snapshot(&self) -> Snapshot {
        self.lock()
            .topics
            .iter()
            .map(|(topic, live)| (topic.clone(), live.key.clone(), live.cursor))
            .collect()
    }

    /// Hands on what a read returned, in entry id order over all topics: each entry after its
    /// topic's cursor, to every subscriber whose queue takes it (a lagged one is dropped, and a
    /// topic left without subscribers is no longer read).
    fn deliver(&self, mut read: Vec<Parsed>) {
        read.sort_by_key(Parsed::id);
        let mut state = self.lock();
        for parsed in read {
            let Some(live) = state.topics.get_mut(parsed.topic()) else {
                continue;
            };
            let id = parsed.id();
            if id <= live.cursor {
                continue;
            }
            live.cursor = id;
            if let Parsed::Item(item) = &parsed {
                live.subscribers.retain(|_, queue| queue.push(item));
                if live.subscribers.is_empty() {
                    state.topics.remove(parsed.topic());
                }
            }
        }
    }

    /// Ends `topic`'s subscribers as lagged, if its cursor is still `cursor`: what follows it
    /// is gone from Redis. The topic is read again once someone subscribes.
    fn lag(&self, topic: &str, cursor: EntryId) {
        let mut state = self.lock();
        if state
            .topics
            .get(topic)
            .is_some_and(|live| live.cursor == cursor)
        {
            if let Some(live) = state.topics.remove(topic) {
                tracing::warn!(%topic, %cursor, "hub reader: the stream was trimmed past what it handed on; its subscribers are ended as lagged");
                for queue in live.subscribers.values() {
                    queue.lag();
                }
            }
        }
    }
}

/// Reads `shard`'s live topics from `client` until `cancel`, reconnecting after failures.
pub(super) async fn run(
    shard: Arc<Shard>,
    client: redis::Client,
    commands: Commands,
    timeout: Duration,
    cancel: CancellationToken,
) {
    let mut backoff = BACKOFF.0;
    while !cancel.is_cancelled() {
        let read = read(&shard, &client, &commands, timeout, &cancel, &mut backoff);
        let result = read.await;
        shard.connected.store(false, Ordering::Relaxed);
        let Err(error) = result else {
            return;
        };
        tracing::warn!(%error, retry_in = ?backoff, "hub reader: Redis failed; reconnecting");
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = cancel.cancelled() => return,
        }
        backoff = (backoff * 2).min(BACKOFF.1);
    }
}

/// Connects, then reads until cancelled (`Ok`) or until the connection fails.
async fn read(
    shard: &Shard,
    client: &redis::Client,
    commands: &Commands,
    timeout: Duration,
    cancel: &CancellationToken,
    backoff: &mut Duration,
) -> Result<(), HubError> {
    // A read blocks for `BLOCK`: the connection's response timeout is raised above it.
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(BLOCK + timeout));
    let mut connection = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(unavailable)?;
    // Without it (an ACL that refuses it), the reader cannot end its own blocked read.
    let id = match redis::cmd("CLIENT")
        .arg("ID")
        .query_async::<i64>(&mut connection)
        .await
    {
        Ok(id) => Some(id),
        Err(error) if matches!(error.kind(), redis::ErrorKind::Server(_)) => {
            tracing::warn!(%error, "hub reader: CLIENT ID refused; topic changes wait for the blocked read");
            None
        }
        Err(error) => return Err(unavailable(error)),
    };
    // The reader may have been away: what a trim took meanwhile is gone for its subscribers.
    end_trimmed(shard, commands, shard.snapshot()).await?;
    shard.connected.store(true, Ordering::Relaxed);
    let mut unblocking = id;
    loop {
        let snapshot = shard.snapshot();
        if snapshot.is_empty() {
            tokio::select! {
                () = shard.changed.notified() => continue,
                () = cancel.cancelled() => return Ok(()),
            }
        }
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(READ_COUNT)
            .arg("BLOCK")
            .arg(BLOCK.as_millis() as u64)
            .arg("STREAMS");
        for (_, key, _) in &snapshot {
            cmd.arg(key);
        }
        for (_, _, cursor) in &snapshot {
            cmd.arg(cursor.to_string());
        }
        let mut reading = pin!(cmd.query_async::<Value>(&mut connection));
        let reply = tokio::select! {
            reply = &mut reading => reply,
            () = shard.changed.notified() => {
                // The set changed: end the blocked read (it returns what it has, or nothing).
                match unblocking {
                    Some(id) => {
                        let (reply, able) = unblock(commands, id, reading.as_mut()).await;
                        if !able {
                            unblocking = None;
                        }
                        reply
                    }
                    None => reading.await,
                }
            }
            () = cancel.cancelled() => return Ok(()),
        };
        let reply = reply.map_err(unavailable)?;
        let read = parse_read(&snapshot, &reply);
        // A reply that is not nil holds entries: one without a readable entry is not one this
        // reader understands, and reading again at once would spin.
        if read.is_empty() && !matches!(reply, Value::Nil) {
            return Err(HubError::Unavailable(
                "an XREAD reply without a readable entry".into(),
            ));
        }
        // A topic that returned as many entries as a trim keeps may be behind one.
        let mut counts: HashMap<&Arc<str>, usize> = HashMap::new();
        for parsed in &read {
            *counts.entry(parsed.topic()).or_default() += 1;
        }
        let full: Snapshot = snapshot
            .iter()
            .filter(|(topic, _, _)| counts.get(topic).is_some_and(|&n| n >= shard.behind_at))
            .cloned()
            .collect();
        // Before anything is handed on: a topic ended here skips what the trim left.
        if !full.is_empty() {
            end_trimmed(shard, commands, full).await?;
        }
        shard.deliver(read);
        *backoff = BACKOFF.0;
    }
}

/// Asks Redis to end the read of the connection numbered `id`, until `reading` returns; its
/// reply, and whether unblocking works here (refused by an ACL, or never effective within
/// [`UNBLOCK_FOR`] behind a proxy, it is not tried again on this connection).
async fn unblock<F>(
    commands: &Commands,
    id: i64,
    mut reading: std::pin::Pin<&mut F>,
) -> (F::Output, bool)
where
    F: std::future::Future,
{
    let until = tokio::time::Instant::now() + UNBLOCK_FOR;
    loop {
        match commands.unblock(id).await {
            Ok(true) => return (reading.await, true),
            Ok(false) if tokio::time::Instant::now() < until => {}
            Ok(false) | Err(_) => {
                tracing::warn!("hub reader: CLIENT UNBLOCK has no effect here; topic changes wait for the blocked read");
                return (reading.await, false);
            }
        }
        tokio::select! {
            reply = &mut reading => return (reply, true),
            () = tokio::time::sleep(UNBLOCK_EVERY) => {}
        }
    }
}

/// Ends the subscribers of each topic of `topics` whose stream was trimmed past its cursor.
/// A trim does not record which entries it removed (Redis 7 keeps `max-deleted-entry-id` for
/// `XDEL` only): a cursor older than the oldest entry of a trimmed stream counts as passed.
async fn end_trimmed(shard: &Shard, commands: &Commands, topics: Snapshot) -> Result<(), HubError> {
    for (topic, key, cursor) in topics {
        let page = commands.history(&topic, &key, cursor, 1).await?;
        let passed = page
            .first
            .map_or(cursor < page.last_generated, |first| cursor < first);
        if page.trimmed && passed {
            shard.lag(&topic, cursor);
        }
    }
    Ok(())
}

/// Reads an `XREAD` reply: per key (a list of pairs in RESP2, a map in RESP3), its entries;
/// nil when the read timed out or was ended.
fn parse_read(snapshot: &Snapshot, reply: &Value) -> Vec<Parsed> {
    let topics: HashMap<&[u8], &Arc<str>> = snapshot
        .iter()
        .map(|(topic, key, _)| (key.as_bytes(), topic))
        .collect();
    let mut read = Vec::new();
    let mut streams = |key: &Value, entries: &Value| {
        let Some(topic) = bytes_of(key).and_then(|key| topics.get(key)) else {
            tracing::warn!("hub reader: a reply for a key not read: skipped");
            return;
        };
        read.extend(item::parse_entries(topic, entries));
    };
    match reply {
        Value::Nil => {}
        Value::Array(pairs) => {
            for pair in pairs {
                match pair {
                    Value::Array(pair) if pair.len() == 2 => streams(&pair[0], &pair[1]),
                    _ => tracing::warn!("hub reader: an unreadable stream in a reply: skipped"),
                }
            }
        }
        Value::Map(pairs) => {
            for (key, entries) in pairs {
                streams(key, entries);
            }
        }
        _ => tracing::warn!("hub reader: an unreadable reply: skipped"),
    }
    read
}
