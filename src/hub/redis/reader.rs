//! A shard's reader: one task per shard on each node, with a connection of its own, that
//! appends to the rings of the topics live here what Redis holds after their tails.
//!
//! - **The log.** Every publish is repeated in its shard's log stream; the reader blocks on
//!   that one key (`XREAD` after its cursor), whatever the number of live topics, and appends
//!   the entries of the topics live here. Its cost follows the shard's traffic, not the number
//!   of idle live topics.
//! - **Entries the log does not have.** A log entry names the topic's entry before it: when
//!   that is past the topic's tail, something else wrote to the topic's stream in between, and
//!   the reader reads the stream from its tail first. Once a second (and on each connect) a
//!   sweep (`XREAD` without blocking over every live topic) finds topics written to by nothing
//!   but others; their streams are read the same way.
//! - **Trims.** A topic whose stream was trimmed past its tail cannot be read on exactly: its
//!   subscribers end as lagged and come back with their last id (a gap event tells what is
//!   gone). A log trimmed past the reader's cursor (it was away or behind for longer than the
//!   log keeps) is caught up from every live topic's stream.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::commands::{unavailable, Commands};
use super::entry_id::EntryId;
use super::item::{self, bytes_of, Logged};
use super::live::{Live, LiveTopics, Node};
use crate::hub::HubError;

/// The most entries one read of the log takes.
const READ_COUNT: usize = 1000;
/// How many entries a shard's log keeps, at least: a reader further behind than this catches
/// up from the topics' streams.
pub(super) const LOG_KEEP: usize = 2000;
/// How many entries one read of a topic's stream takes.
pub(super) const PAGE: usize = 1000;
/// How often the live topics are swept for entries written without a hub.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// The first and the longest wait before reconnecting.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

/// One shard of a node: its live topics and its log.
pub(super) struct Shard {
    pub(super) live: LiveTopics,
    pub(super) node: Arc<Node>,
    /// The log's key.
    pub(super) log: String,
    /// Whether the reader is connected and caught up (for readiness).
    connected: AtomicBool,
}

impl Shard {
    pub(super) fn new(node: Arc<Node>, log: String) -> Self {
        Self {
            live: LiveTopics::default(),
            node,
            log,
            connected: AtomicBool::new(false),
        }
    }

    /// Whether the reader is connected, so live entries flow.
    pub(super) fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }
}

/// Reads `shard` from `client` until `cancel`, reconnecting after failures.
pub(super) async fn run(
    shard: Arc<Shard>,
    client: redis::Client,
    commands: Commands,
    timeout: Duration,
    cancel: CancellationToken,
) {
    let mut reader = Reader {
        shard,
        commands,
        cursor: None,
    };
    let mut backoff = BACKOFF.0;
    while !cancel.is_cancelled() {
        let result = reader.read(&client, timeout, &cancel, &mut backoff).await;
        reader.shard.connected.store(false, Ordering::Relaxed);
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

struct Reader {
    shard: Arc<Shard>,
    commands: Commands,
    /// The last log entry read.
    cursor: Option<EntryId>,
}

impl Reader {
    /// Connects, catches up, then reads until cancelled (`Ok`) or until the connection fails.
    async fn read(
        &mut self,
        client: &redis::Client,
        timeout: Duration,
        cancel: &CancellationToken,
        backoff: &mut Duration,
    ) -> Result<(), HubError> {
        let block = SWEEP_EVERY;
        // A read blocks up to `block`: the connection's response timeout is raised above it.
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(block + timeout));
        let mut connection = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(unavailable)?;
        // Where to read the log from: on from the cursor, unless the log no longer holds what
        // follows it (trimmed past it, or Redis lost it), or this is the first connect.
        let log = self.history(&self.shard.log, self.cursor.unwrap_or(EntryId::ZERO), 1);
        let log = log.await?;
        match self.cursor {
            Some(cursor) if cursor <= log.last_generated && !log.passed(cursor) => {
                // The log has what the hubs wrote while it was away; a sweep finds the rest.
                self.sweep(&mut connection).await?;
            }
            _ => {
                // What was written before the cursor's new place comes from each topic.
                self.cursor = Some(log.last_generated);
                self.catch_up_all().await?;
            }
        }
        self.shard.connected.store(true, Ordering::Relaxed);
        let mut sweep_at = Instant::now() + SWEEP_EVERY;
        loop {
            let wait = sweep_at
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1));
            let cursor = self.cursor.unwrap_or(EntryId::ZERO);
            let mut cmd = redis::cmd("XREAD");
            cmd.arg("COUNT")
                .arg(READ_COUNT)
                .arg("BLOCK")
                .arg(wait.as_millis() as u64)
                .arg("STREAMS")
                .arg(&self.shard.log)
                .arg(cursor.to_string());
            let reply = tokio::select! {
                reply = cmd.query_async::<Value>(&mut connection) => reply.map_err(unavailable)?,
                () = cancel.cancelled() => return Ok(()),
            };
            self.on_log(&reply, cursor).await?;
            if Instant::now() >= sweep_at {
                self.sweep(&mut connection).await?;
                sweep_at = Instant::now() + SWEEP_EVERY;
            }
            *backoff = BACKOFF.0;
        }
    }

    async fn history(
        &self,
        key: &str,
        after: EntryId,
        count: usize,
    ) -> Result<super::commands::History, HubError> {
        // The topic only names the entries read, which a state check does not use.
        let name: Arc<str> = Arc::from(key);
        self.commands.history(&name, key, after, count).await
    }

    /// Hands on what a read of the log after `cursor` returned; how many entries it returned.
    async fn on_log(&mut self, reply: &Value, cursor: EntryId) -> Result<usize, HubError> {
        let Some(entries) = log_entries(reply, &self.shard.log) else {
            return Ok(0);
        };
        let returned = match entries {
            Value::Array(list) => list.len(),
            _ => 0,
        };
        let live = &self.shard.live;
        let (last, logged) = item::parse_log(entries, |topic| live.get_named(topic));
        let Some(last) = last else {
            if returned > 0 {
                // Entries without a readable id: reading again at once would spin.
                return Err(HubError::Unavailable(
                    "a log read without a readable entry".into(),
                ));
            }
            return Ok(0);
        };
        if returned >= READ_COUNT {
            // It may be behind a trim of the log: then the topics' streams have what it missed.
            let log = self.history(&self.shard.log, cursor, 1).await?;
            if log.passed(cursor) {
                tracing::warn!("hub reader: the log was trimmed past the reader; catching up from each live topic");
                self.catch_up_all().await?;
                self.cursor = Some(last);
                return Ok(returned);
            }
        }
        self.hand_on(logged).await?;
        self.cursor = Some(last);
        Ok(returned)
    }

    /// Appends the logged entries in log order; a topic whose stream holds entries the log
    /// does not (before a logged one) is read from its stream first.
    async fn hand_on(&self, logged: Vec<Logged<Arc<Live>>>) -> Result<(), HubError> {
        let mut batch = Vec::with_capacity(logged.len());
        // Each topic's tail once the batch is appended.
        let mut tails: HashMap<Arc<str>, EntryId> = HashMap::new();
        for entry in logged {
            let name = entry.parsed.topic().clone();
            let tail = tails.get(&name).copied().or_else(|| entry.live.tail_id());
            if tail.is_some_and(|tail| entry.previous > tail) {
                // The topic's entries between its tail and this one came without the log.
                self.shard.node.deliver(std::mem::take(&mut batch));
                tails.clear();
                self.catch_up(&name, &entry.live).await?;
            }
            tails.insert(name, entry.parsed.id());
            batch.push((entry.live, entry.parsed));
        }
        self.shard.node.deliver(batch);
        Ok(())
    }

    /// Appends what `live`'s stream holds after its tail, in pages; a stream trimmed past the
    /// tail ends the topic's subscribers as lagged.
    async fn catch_up(&self, name: &Arc<str>, live: &Arc<Live>) -> Result<(), HubError> {
        let Some(mut after) = live.tail_id() else {
            // Made live just now, its first subscriber still reading the stream's newest id:
            // that id, read now, is where the ring starts for every subscriber (one that
            // resumes replays up to it), so nothing between the two is missed when the log's
            // cursor was moved past it (on connecting, or behind a trim of the log).
            live.settle(self.commands.newest(&live.key).await?);
            return Ok(());
        };
        loop {
            let page = self.commands.history(name, &live.key, after, PAGE).await?;
            if page.passed(after) {
                tracing::warn!(topic = %name, %after, "hub reader: the stream was trimmed past what it handed on; its subscribers are ended as lagged");
                self.shard.node.cut(live, page.last_generated);
                return Ok(());
            }
            let Some(last) = page.entries.last().map(|parsed| parsed.id()) else {
                return Ok(());
            };
            let full = page.returned >= PAGE;
            let batch = page
                .entries
                .into_iter()
                .map(|parsed| (live.clone(), parsed))
                .collect();
            self.shard.node.deliver(batch);
            if !full || last <= after {
                return Ok(());
            }
            after = last;
        }
    }

    /// Catches up every live topic.
    async fn catch_up_all(&self) -> Result<(), HubError> {
        for (name, live) in self.shard.live.all() {
            self.catch_up(&name, &live).await?;
        }
        Ok(())
    }

    /// Finds the live topics whose streams hold entries the log does not (written without a
    /// hub), and catches them up: one read that does not block over every live topic, then the
    /// log up to now, after which a topic whose first entry past its tail is still not handed
    /// on has one the log never had. (A hub's entry that the first read saw is in the log read
    /// after it: were it caught up from its stream instead, a short history trimmed meanwhile
    /// would end its subscribers for nothing.)
    async fn sweep(&mut self, connection: &mut MultiplexedConnection) -> Result<(), HubError> {
        let topics: Vec<(Arc<str>, Arc<Live>, EntryId)> = self
            .shard
            .live
            .all()
            .into_iter()
            .filter_map(|(name, live)| {
                let tail = live.tail_id()?;
                Some((name, live, tail))
            })
            .collect();
        if topics.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT").arg(1).arg("STREAMS");
        for (_, live, _) in &topics {
            cmd.arg(&live.key);
        }
        for (_, _, tail) in &topics {
            cmd.arg(tail.to_string());
        }
        let reply: Value = cmd.query_async(connection).await.map_err(unavailable)?;
        let mut firsts: HashMap<&[u8], EntryId> = HashMap::new();
        for (key, entries) in stream_replies(&reply) {
            let first = match entries {
                Value::Array(entries) => entries.first(),
                _ => None,
            };
            let id = first.and_then(|entry| match entry {
                Value::Array(parts) => parts.first().and_then(bytes_of).and_then(EntryId::parse),
                _ => None,
            });
            if let Some(id) = id {
                firsts.insert(key, id);
            }
        }
        if firsts.is_empty() {
            return Ok(());
        }
        // The log up to now (without blocking); if more waits than one read takes, the next
        // sweep looks again.
        let cursor = self.cursor.unwrap_or(EntryId::ZERO);
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(READ_COUNT)
            .arg("STREAMS")
            .arg(&self.shard.log)
            .arg(cursor.to_string());
        let log: Value = cmd.query_async(connection).await.map_err(unavailable)?;
        if self.on_log(&log, cursor).await? >= READ_COUNT {
            return Ok(());
        }
        for (name, live, _) in &topics {
            let Some(first) = firsts.get(live.key.as_bytes()) else {
                continue;
            };
            if live.tail_id().is_some_and(|tail| tail < *first) {
                self.catch_up(name, live).await?;
            }
        }
        Ok(())
    }
}

/// The entries of `log` in an `XREAD` reply (nil when the read timed out).
fn log_entries<'a>(reply: &'a Value, log: &str) -> Option<&'a Value> {
    stream_replies(reply)
        .into_iter()
        .find(|(key, _)| *key == log.as_bytes())
        .map(|(_, entries)| entries)
}

/// An `XREAD` reply's streams: per key (a list of pairs in RESP2, a map in RESP3), its
/// entries; none when the read timed out.
fn stream_replies(reply: &Value) -> Vec<(&[u8], &Value)> {
    let mut streams = Vec::new();
    match reply {
        Value::Nil => {}
        Value::Array(pairs) => {
            for pair in pairs {
                match pair {
                    Value::Array(pair) if pair.len() == 2 => {
                        if let Some(key) = bytes_of(&pair[0]) {
                            streams.push((key, &pair[1]));
                        }
                    }
                    _ => tracing::warn!("hub reader: an unreadable stream in a reply: skipped"),
                }
            }
        }
        Value::Map(pairs) => {
            for (key, entries) in pairs {
                if let Some(key) = bytes_of(key) {
                    streams.push((key, entries));
                }
            }
        }
        _ => tracing::warn!("hub reader: an unreadable reply: skipped"),
    }
    streams
}
