//! The engine on Redis Streams (feature `redis`): every node's hub shares topics, ids and
//! history through one Redis, so an event published on any node reaches every subscriber on
//! every node, and a client resumes on any node.
//!
//! - **Keys.** Each topic is one stream, at `{prefix}{{{shard}}}{topic}` (default prefix
//!   `sse:`, one shard: `sse:{0}orders/42`). The topic is written as it is: the prefix and the
//!   shard tag before it are fixed, so no topic names another key, and the hub never reads or
//!   writes a key outside its prefix. The shard is a stable hash of the topic, in braces: a
//!   Redis Cluster hash tag, so all of a shard's streams live on one cluster node.
//! - **Publish** is one script: `XADD ... MAXLEN ~ {history} * e {event}` (the event, encoded
//!   once without its id, trimmed to about the hub's history: at least that many entries are
//!   kept), and the same event repeated in the shard's log (`{prefix}{{{shard}}}`, about 2 000
//!   entries) with its topic and the id of the topic's entry before it. The stream entry id is
//!   the event's id. Every node must be given the same history.
//! - **Live.** Each node runs one reader per shard, one connection each, blocked on the shard's
//!   log alone, whatever the number of topics; it appends each entry of a topic live on the node
//!   to that topic's ring (its id line added once), which every subscriber of the topic on the
//!   node reads as in memory. Entries written to a topic's stream by something else than a hub
//!   are found by the entry after them, or within a second (see `reader`).
//! - **Replay** reads `XRANGE` after the client's id, up to the point where the subscriber's
//!   ring cursor starts, so the seam is exact; it is sent whole before the ring (a subscriber
//!   never ends as lagged before its replay). It holds at most the history's bytes per topic,
//!   like the embedded history: a client further behind is told of a gap, then gets the newest
//!   events that fit. Across several topics, events are merged by entry id within the replay
//!   and in the order this node's readers handed them on after it: each topic's order is exact,
//!   and the order across topics follows Redis's clock, to the millisecond (two topics' events
//!   of the same millisecond may come in either order).
//! - **Connections** per node: one per shard for its reader, one for every other command,
//!   whatever the number of subscribers and topics.

mod commands;
mod entry_id;
mod item;
mod live;
mod positions;
mod reader;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use atomic_waker::AtomicWaker;
use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use self::commands::Commands;
use self::entry_id::{parse_positions, EntryId};
use self::item::{Item, Parsed};
use self::live::Node;
use self::positions::Positions;
use self::reader::{Shard, LOG_KEEP, PAGE};
use super::subscriber::{accepts, Feed, Filter, Joined, Stamp, Subscriber};
use super::topic::Entry;
use super::{GapReason, HubConfig, HubError, Publish, Resume, Start, Subscribe};
use crate::engine::BoxSource;
use crate::Event;

/// Where and how a [`Hub`](super::Hub) keeps its topics on Redis: the options of
/// [`HubBuilder::redis`](super::HubBuilder::redis).
///
/// ```no_run
/// # async fn run() -> Result<(), tower_sse::hub::HubError> {
/// use tower_sse::hub::{Hub, Redis};
///
/// let hub = Hub::builder()
///     .history(10_000, usize::MAX)
///     .redis(Redis::open("redis://127.0.0.1:6379")?.key_prefix("app:events:"))?;
/// hub.ready().await?; // Redis answers
/// # Ok(())
/// # }
/// ```
///
/// Of the hub's bounds, the history counts events (`MAXLEN ~`; the byte bound and
/// [`max_topics`](super::HubBuilder::max_topics) are Redis's to keep, with its own memory
/// limits), and the queue, topic and subscription bounds apply on each node as they do in
/// memory.
///
/// It needs Redis 7.0 or later (6.2 works, but cannot say whether a stream was trimmed, so a
/// client resuming before a stream's oldest entry always gets a gap event). Its user needs the
/// stream commands, `EVALSHA`/`EVAL` and `PING`.
///
/// **Redis Cluster.** The keys carry a hash tag per shard, so a cluster deployment would give
/// each shard's reader a connection to the node that holds its slot; a shard's topics and its
/// log share the slot, so the publish script never crosses slots. This engine connects to one Redis primary; only that is tested.
#[derive(Debug, Clone)]
pub struct Redis {
    client: redis::Client,
    prefix: String,
    shards: u32,
    timeout: Duration,
}

impl Redis {
    /// The Redis at `url` (`redis://[user:password@]host:port[/db]`, `rediss://` needs the
    /// `redis` crate's TLS features). Nothing connects until the hub is built.
    pub fn open(url: &str) -> Result<Self, HubError> {
        let client = redis::Client::open(url)
            .map_err(|error| HubError::Config(format!("the Redis URL: {error}")))?;
        Ok(Self {
            client,
            prefix: "sse:".into(),
            shards: 1,
            timeout: Duration::from_secs(2),
        })
    }

    /// The prefix of every key the hub uses (default `sse:`): hubs that share it share topics.
    /// It may not hold `{` or `}` (the shard's hash tag follows it).
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How many shards the topics are spread over (default 1): each has its hash tag, and a
    /// reader and a connection on every node. Every node sharing the prefix must use the same
    /// number. More than one lets a Redis Cluster spread the topics.
    pub fn shards(mut self, shards: u32) -> Self {
        self.shards = shards.max(1);
        self
    }

    /// How long a command may take before it fails with [`HubError::Unavailable`], and a
    /// connection attempt (default 2 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Starts the engine: its readers connect in the background, with backoff.
    pub(super) fn start(self, config: HubConfig) -> Result<Arc<RedisBackend>, HubError> {
        if self.prefix.contains(['{', '}']) {
            return Err(HubError::Config(format!(
                "a key prefix holds no `{{` or `}}`: {:?}",
                self.prefix
            )));
        }
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|error| HubError::Config(format!("the Redis engine needs Tokio: {error}")))?;
        let commands = Commands::new(self.client.clone(), self.timeout)?;
        let cancel = CancellationToken::new();
        let node = Arc::new(Node::new(config.ring_bounds()));
        let shards: Vec<Arc<Shard>> = (0..self.shards)
            .map(|index| {
                let log = format!("{}{{{index}}}", self.prefix);
                Arc::new(Shard::new(node.clone(), log))
            })
            .collect();
        for shard in &shards {
            runtime.spawn(reader::run(
                shard.clone(),
                self.client.clone(),
                commands.clone(),
                self.timeout,
                cancel.clone(),
            ));
        }
        Ok(Arc::new(RedisBackend {
            config,
            prefix: self.prefix,
            node,
            shards,
            commands,
            next_subscriber: AtomicU64::new(0),
            cancel,
        }))
    }
}

/// The running engine.
pub(crate) struct RedisBackend {
    config: HubConfig,
    prefix: String,
    node: Arc<Node>,
    shards: Vec<Arc<Shard>>,
    commands: Commands,
    /// Numbers the subscribers.
    next_subscriber: AtomicU64,
    /// Stops the readers.
    cancel: CancellationToken,
}

impl RedisBackend {
    pub(super) fn config(&self) -> &HubConfig {
        &self.config
    }

    /// The shard of `topic`: FNV-1a of its bytes, the same on every node and every build.
    fn shard_index(&self, topic: &str) -> usize {
        let hash = topic.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        });
        (hash % self.shards.len() as u64) as usize
    }

    fn shard(&self, topic: &str) -> &Shard {
        &self.shards[self.shard_index(topic)]
    }

    /// The stream of `topic`.
    fn key(&self, topic: &str) -> String {
        format!("{}{{{}}}{}", self.prefix, self.shard_index(topic), topic)
    }

    fn check_open(&self) -> Result<(), HubError> {
        if self.node.is_closed() || self.cancel.is_cancelled() {
            return Err(HubError::Closed);
        }
        Ok(())
    }

    /// Appends `event` to `topic`'s stream; its id.
    pub(super) async fn publish(
        &self,
        topic: &str,
        mut event: Event,
        options: Publish,
    ) -> Result<String, HubError> {
        self.check_open()?;
        let replaced = event.take_id();
        let kept = replaced.filter(|id| options.keep_id && !id.is_empty());
        let kept = kept
            .as_deref()
            .map(crate::event::as_str)
            .unwrap_or_default();
        let body = item::body_of(&event);
        let shard = self.shard(topic);
        let id = self
            .commands
            .publish(
                (topic, &self.key(topic)),
                (&shard.log, LOG_KEEP),
                self.config.history_events,
                (&body, kept, &options.tag),
            )
            .await?;
        if kept.is_empty() {
            Ok(id.to_string())
        } else {
            Ok(kept.to_owned())
        }
    }

    /// The id of the newest event `topic`'s stream holds.
    pub(super) async fn last_id(&self, topic: &str) -> Result<Option<String>, HubError> {
        self.check_open()?;
        let name: Arc<str> = Arc::from(topic);
        let newest = self.commands.newest_entry(&name, &self.key(topic)).await?;
        Ok(match newest {
            Some(Parsed::Item(item)) => Some(crate::event::as_str(&item.wire_id).to_owned()),
            // Written by something else: its entry id is a position all the same.
            Some(Parsed::Foreign(_, id)) => Some(id.to_string()),
            None => None,
        })
    }

    /// Whether Redis answers, and every reader is connected (live entries flow).
    pub(super) async fn ready(&self) -> Result<(), HubError> {
        self.check_open()?;
        self.commands.ping().await?;
        if !self.shards.iter().all(|shard| shard.is_connected()) {
            return Err(HubError::Unavailable(
                "the hub's reader is not connected to Redis yet".into(),
            ));
        }
        Ok(())
    }

    /// Subscribes to `topics` (validated, sorted, without duplicates) after `last_event_id`.
    pub(super) async fn subscribe(
        self: &Arc<Self>,
        topics: Vec<Arc<str>>,
        options: &Subscribe,
    ) -> Result<(BoxSource, Resume), HubError> {
        self.check_open()?;
        let id = self.next_subscriber.fetch_add(1, Ordering::Relaxed);
        let waiter = Arc::new(AtomicWaker::new());
        let selection = options.selection();
        // Left again if anything below fails.
        let mut joining = Joining {
            backend: self,
            topics: Vec::with_capacity(topics.len()),
            id,
            interest: selection.interest.clone(),
        };
        // Per topic, the entry id its ring cursor starts after: the replay reaches that far.
        let mut seams = Vec::with_capacity(topics.len());
        for name in &topics {
            let shard = self.shard(name);
            let live = shard.live.enter(
                &self.node,
                (name, &self.key(name)),
                id,
                waiter.clone(),
                selection.interest.as_deref(),
            )?;
            joining.topics.push(Joined {
                name: name.clone(),
                topic: live.topic.clone(),
                cursor: 0,
            });
            let (cursor, seam) = match live.position() {
                Some(position) => position,
                // Made live just now: everything after the stream's newest id, read after
                // that, is appended from now on.
                None => live.settle(self.commands.newest(&live.key).await?),
            };
            if let Some(joined) = joining.topics.last_mut() {
                joined.cursor = cursor;
            }
            seams.push(seam);
        }
        let requested = match &options.start {
            Start::Live => None,
            // Everything retained: positions nobody gave, so a trim is no gap.
            Start::Earliest => Some(Requested::Earliest),
            Start::After(id) => Some(
                self.positions_of(&topics, id.as_str(), &selection.filter)
                    .await?,
            ),
            Start::AfterKept(id) => Some(
                self.kept_position(&topics, id.as_str(), &selection.filter)
                    .await?,
            ),
        };
        let requested_any = requested.is_some();
        let (positions, gap, replay) = match requested {
            None => (seams.clone(), None, Vec::new()),
            Some(requested) => {
                let (starts, checked, gap) = match requested {
                    Requested::At(starts) => (starts, true, None),
                    Requested::Earliest => (vec![EntryId::ZERO; topics.len()], false, None),
                    Requested::Gap(reason) => {
                        (vec![EntryId::ZERO; topics.len()], false, Some(reason))
                    }
                };
                let mut gap = gap;
                let mut replay = Vec::new();
                let mut positions = Vec::with_capacity(topics.len());
                for (index, ((topic, start), seam)) in
                    topics.iter().zip(starts).zip(&seams).enumerate()
                {
                    let history = self.history(topic, start, checked, *seam).await?;
                    gap = gap.or(history.gap);
                    positions.push(history.from);
                    replay.extend(history.items.into_iter().map(|item| (index, item)));
                }
                // Merged over topics in id order (each topic's own order is kept).
                replay.sort_by_key(|(_, item)| item.id);
                (positions, gap, replay)
            }
        };
        let replay: VecDeque<(usize, Entry)> = replay
            .into_iter()
            .map(|(index, item)| (index, item.into_entry(0)))
            .filter(|(_, entry)| accepts(&selection.filter, entry))
            .collect();
        let resume = Resume::of(gap, requested_any, replay.len());
        let gap = options.gap_event(&self.config, gap);
        // One topic's events carry their entry ids, and need no positions unless the client is
        // ahead of where its ring starts (this node's reader has not handed on its last id
        // yet); several topics' carry every position.
        let ahead = positions.iter().zip(&seams).any(|(from, seam)| from > seam);
        let stamp = (topics.len() > 1 || ahead)
            .then(|| Box::new(Positions::new(&positions)) as Box<dyn Stamp>);
        let joined = std::mem::take(&mut joining.topics);
        let feed: Arc<dyn Feed> = self.clone();
        let bounds = self.config.queue_bounds();
        // Everything in the rings after the cursors is live: counted against the bounds.
        let source = Subscriber::new(feed, joined, (id, waiter), 0, gap, bounds, selection)
            .with_replay(replay, stamp);
        Ok((Box::pin(source), resume))
    }

    /// Where the client's `id` places it in each of `topics`' streams: the entry ids the hub
    /// gives, one per topic; for a single topic, else, the entry of an id its publisher kept
    /// (see [`kept_position`](Self::kept_position)); a malformed id when it is neither.
    async fn positions_of(
        &self,
        topics: &[Arc<str>],
        id: &str,
        filter: &Option<Filter>,
    ) -> Result<Requested, HubError> {
        if let Some(positions) = parse_positions(id, topics.len()) {
            return Ok(Requested::At(positions));
        }
        Ok(match self.kept_position(topics, id, filter).await? {
            Requested::Gap(_) => Requested::Gap(GapReason::Malformed),
            found => found,
        })
    }

    /// The entry of a single topic's stream its publisher kept `id` for (the oldest, within the
    /// history and a page more, as `MAXLEN ~` keeps a little more), if the subscription's filter
    /// lets that event through (a subscriber learns nothing of an event it may not read: not
    /// even that its id is retained); else a gap.
    async fn kept_position(
        &self,
        topics: &[Arc<str>],
        id: &str,
        filter: &Option<Filter>,
    ) -> Result<Requested, HubError> {
        let [topic] = topics else {
            return Ok(Requested::Gap(GapReason::Unknown));
        };
        let within = self.config.history_events.saturating_add(PAGE);
        let found = self
            .commands
            .find_kept(&self.key(topic), id, within)
            .await?;
        Ok(match found {
            Some((entry, tag)) if filter.as_ref().map_or(true, |filter| filter(&tag)) => {
                Requested::At(vec![entry])
            }
            _ => Requested::Gap(GapReason::Unknown),
        })
    }

    /// What `topic` replays after `start`: its retained entries after it, or, when `start` is
    /// not a position in its stream (`checked` says it came from the client), a gap and what
    /// the stream retains; up to `cursor`, where the subscriber's ring cursor takes over (so a
    /// replay is bounded, however fast others publish).
    async fn history(
        &self,
        topic: &Arc<str>,
        start: EntryId,
        checked: bool,
        cursor: EntryId,
    ) -> Result<Replay, HubError> {
        let key = self.key(topic);
        let mut gap = None;
        let mut after = start;
        // Past the largest id nothing can come, and Redis refuses to read after it.
        if checked && start == EntryId::MAX {
            gap = Some(GapReason::Unknown);
            after = EntryId::ZERO;
        }
        let mut from = after;
        let mut items = VecDeque::new();
        let mut bytes = 0;
        let mut first_page = true;
        loop {
            let page = self.commands.history(topic, &key, after, PAGE).await?;
            if first_page && checked && gap.is_none() && after > page.last_generated {
                // An id this stream never gave: another Redis, or one that lost its data.
                gap = Some(GapReason::Unknown);
                after = EntryId::ZERO;
                from = after;
                first_page = false;
                continue;
            }
            // Entries were trimmed, and the oldest kept is past the position: some of what
            // came after it may be gone. A trim does not record what it removed (Redis 7 keeps
            // `max-deleted-entry-id` for `XDEL` only), so the client is told.
            let behind = page
                .first
                .map_or(after < page.last_generated, |first| after < first);
            if page.trimmed && behind && (checked || !first_page) && gap.is_none() {
                gap = Some(GapReason::Trimmed);
            }
            first_page = false;
            let mut reached = page.returned < PAGE;
            let before = after;
            for parsed in page.entries {
                if parsed.id() > cursor {
                    // The ring has the rest (the cursor's own entry may be gone).
                    reached = true;
                    break;
                }
                after = after.max(parsed.id());
                if let Parsed::Item(item) = parsed {
                    bytes += item.weight();
                    items.push_back(item);
                }
                // Like the embedded history, a replay holds at most the history's bytes: the
                // newest that fit, after a gap (unless all that is retained was asked for).
                while bytes > self.config.history_bytes {
                    let Some(dropped) = items.pop_front() else {
                        break;
                    };
                    bytes -= dropped.weight();
                    if checked {
                        gap = gap.or(Some(GapReason::Trimmed));
                    }
                }
            }
            // A page that took it no further (entries without readable ids) would come again.
            if reached || after >= cursor || after == before {
                break;
            }
        }
        Ok(Replay { from, gap, items })
    }

    /// Refuses further publishes and subscribes, ends open subscriptions after what is queued,
    /// and stops the readers.
    pub(super) fn close(&self) {
        self.node.close();
        self.cancel.cancel();
        for shard in &self.shards {
            shard.live.close();
        }
    }
}

impl Feed for RedisBackend {
    fn settled(&self) -> u64 {
        self.node.settled()
    }

    fn is_closed(&self) -> bool {
        self.node.is_closed()
    }

    fn leave(&self, topics: &[Joined], id: u64, interest: Option<&[Bytes]>) {
        for joined in topics {
            self.shard(&joined.name)
                .live
                .leave(&joined.name, &joined.topic, id, interest);
        }
    }
}

/// The topics a subscribe has joined so far: left if it fails before its subscriber takes
/// them.
struct Joining<'a> {
    backend: &'a RedisBackend,
    topics: Vec<Joined>,
    id: u64,
    interest: Option<Arc<[Bytes]>>,
}

impl Drop for Joining<'_> {
    fn drop(&mut self) {
        self.backend
            .leave(&self.topics, self.id, self.interest.as_deref());
    }
}

impl Drop for RedisBackend {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Where a subscription asked to start.
enum Requested {
    /// After these positions, one per topic.
    At(Vec<EntryId>),
    /// From the oldest retained.
    Earliest,
    /// Not a position: a gap, then what is retained.
    Gap(GapReason),
}

/// What one topic replays.
struct Replay {
    /// The position it starts from (what the subscriber already has).
    from: EntryId,
    gap: Option<GapReason>,
    items: VecDeque<Item>,
}
