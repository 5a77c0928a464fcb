//! [`Commands`]: the engine's requests to Redis that answer at once (publish, history, the
//! newest id, readiness), on one multiplexed connection that reconnects by itself, each
//! bounded by the command timeout. Any failure is [`HubError::Unavailable`].

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Value;

use super::entry_id::EntryId;
use super::item::{self, bytes_of, Parsed};
use super::reader::PAGE;
use crate::hub::HubError;

/// Reads, in one step, what a replay needs to know of a stream besides its entries after an
/// id: the newest id it ever gave, how many entries it was ever given and holds now, and its
/// oldest entry's id. (Redis before 7.0 does not count the entries given: `-1`, and the stream
/// counts as trimmed.)
const HISTORY: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'0-0', 0, 0, '', {}}
end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local last, added, length, first = '0-0', -1, 0, ''
for i = 1, #info, 2 do
  local name, value = info[i], info[i + 1]
  if name == 'last-generated-id' then last = value
  elseif name == 'entries-added' then added = value
  elseif name == 'length' then length = value
  elseif name == 'first-entry' and value then first = value[1]
  end
end
local entries = redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+', 'COUNT', ARGV[2])
return {last, added, length, first, entries}
";

/// Appends an event to a topic's stream (`KEYS[1]`, trimmed to about `ARGV[1]` entries) and
/// repeats it in its shard's log (`KEYS[2]`, about `ARGV[3]` entries) with the topic (`ARGV[4]`),
/// the new entry's id and the id of the entry before it, so that a reader learns of the
/// topic's entries it did not see in the log; the new entry's id. (Both keys carry the shard's
/// hash tag: one cluster slot.)
///
/// The event's kept id (`ARGV[5]`) and tag (`ARGV[6]`) are stored as fields `k` and `g` when
/// they are not empty.
const PUBLISH: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local before = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local previous = '0-0'
if before[1] then previous = before[1][1] end
local fields = {'e', ARGV[2]}
if ARGV[5] ~= '' then fields[#fields + 1] = 'k'; fields[#fields + 1] = ARGV[5] end
if ARGV[6] ~= '' then fields[#fields + 1] = 'g'; fields[#fields + 1] = ARGV[6] end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', unpack(fields))
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 't', ARGV[4], 'i', id, 'p', previous, unpack(fields))
return id
";

/// Looks through up to `ARGV[3]` entries of a stream (`KEYS[1]`) from `ARGV[2]` (`-`, or
/// `(` and the last entry looked at) for the first whose kept id (field `k`) is `ARGV[1]`: its
/// id and tag (field `g`), or empty strings; and the id of the last entry looked at (empty
/// when there was none). Paged from the engine, so that no call holds Redis for long.
const FIND_KEPT: &str = r"
local entries = redis.call('XRANGE', KEYS[1], ARGV[2], '+', 'COUNT', ARGV[3])
local last = ''
for _, entry in ipairs(entries) do
  last = entry[1]
  local fields, kept, tag = entry[2], nil, ''
  for i = 1, #fields, 2 do
    if fields[i] == 'k' then kept = fields[i + 1] elseif fields[i] == 'g' then tag = fields[i + 1] end
  end
  if kept == ARGV[1] then return {entry[1], tag, last} end
end
return {'', '', last}
";

/// A stream's state and a page of its entries after an id.
pub(super) struct History {
    /// The newest id the stream ever gave (`0-0` for a stream that does not exist).
    pub(super) last_generated: EntryId,
    /// Whether entries were ever removed from it (trimmed), or may have been (Redis 6).
    pub(super) trimmed: bool,
    /// Its oldest entry, if it holds any.
    pub(super) first: Option<EntryId>,
    /// The entries after the id asked for, at most the count asked for.
    pub(super) entries: Vec<Parsed>,
    /// How many entries Redis returned (readable or not): fewer than asked means the end.
    pub(super) returned: usize,
}

impl History {
    /// Whether a trim may have taken entries after `after`: the stream was trimmed, and its
    /// oldest entry (or, empty, its newest id) is past `after`. A trim does not record what it
    /// removed (Redis 7 keeps `max-deleted-entry-id` for `XDEL` only), so this is the most
    /// that can be told.
    pub(super) fn passed(&self, after: EntryId) -> bool {
        self.trimmed
            && self
                .first
                .map_or(after < self.last_generated, |first| after < first)
    }
}

/// The engine's command connection.
#[derive(Clone)]
pub(super) struct Commands {
    manager: ConnectionManager,
    timeout: Duration,
    history: Arc<redis::Script>,
    publish: Arc<redis::Script>,
    find_kept: Arc<redis::Script>,
}

impl Commands {
    /// Commands to `client`, connected on first use and again after a failure.
    pub(super) fn new(client: redis::Client, timeout: Duration) -> Result<Self, HubError> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(timeout);
        let manager =
            ConnectionManager::new_lazy_with_config(client, config).map_err(unavailable)?;
        Ok(Self {
            manager,
            timeout,
            history: Arc::new(redis::Script::new(HISTORY)),
            publish: Arc::new(redis::Script::new(PUBLISH)),
            find_kept: Arc::new(redis::Script::new(FIND_KEPT)),
        })
    }

    /// Runs `call` on the connection within the timeout. The manager reconnects after a
    /// failure, but hands the first command after it the failed attempt's error: a command
    /// that cannot have run (the connection was refused) is sent once more, and so is any
    /// command that only reads (`reads`) after any connection failure. A publish is never sent
    /// twice once it may have reached Redis: that would publish it twice.
    async fn attempt<T, F, R>(&self, reads: bool, call: F) -> Result<T, HubError>
    where
        F: Fn(ConnectionManager) -> R,
        R: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut again = true;
        loop {
            match tokio::time::timeout_at(deadline, call(self.manager.clone())).await {
                Ok(Ok(reply)) => return Ok(reply),
                Ok(Err(error))
                    if std::mem::take(&mut again)
                        && (error.is_connection_refusal()
                            || (reads && error.is_connection_dropped())) => {}
                Ok(Err(error)) => return Err(unavailable(error)),
                Err(elapsed) => return Err(unavailable(elapsed)),
            }
        }
    }

    /// Sends `cmd`, which only reads, within the timeout.
    async fn query(&self, cmd: &redis::Cmd) -> Result<Value, HubError> {
        self.attempt(true, |mut manager| async move {
            cmd.query_async::<Value>(&mut manager).await
        })
        .await
    }

    /// Appends `body` (with its kept id and tag, if not empty) to `topic`'s stream at `key`,
    /// trimmed to about `keep` entries, and to the shard's `log`, trimmed to about `log_keep`;
    /// its entry id.
    pub(super) async fn publish(
        &self,
        (topic, key): (&str, &str),
        (log, log_keep): (&str, usize),
        keep: usize,
        (body, kept_id, tag): (&[u8], &str, &[u8]),
    ) -> Result<EntryId, HubError> {
        let mut invocation = self.publish.key(key);
        // Redis takes signed 64-bit counts.
        invocation
            .key(log)
            .arg(keep.min(i64::MAX as usize))
            .arg(body)
            .arg(log_keep.min(i64::MAX as usize))
            .arg(topic)
            .arg(kept_id)
            .arg(tag);
        let invocation = &invocation;
        let reply = self
            .attempt(false, |mut manager| async move {
                invocation.invoke_async::<Value>(&mut manager).await
            })
            .await?;
        bytes_of(&reply)
            .and_then(EntryId::parse)
            .ok_or_else(|| unexpected("the publish script", &reply))
    }

    /// The entry id and tag of the oldest of the first `within` entries at `key` kept with
    /// the publisher's `id`, looked for a page at a time.
    pub(super) async fn find_kept(
        &self,
        key: &str,
        id: &str,
        within: usize,
    ) -> Result<Option<(EntryId, Bytes)>, HubError> {
        let mut from = "-".to_owned();
        let mut looked = 0;
        while looked < within {
            let mut invocation = self.find_kept.key(key);
            invocation.arg(id).arg(&from).arg(PAGE);
            let invocation = &invocation;
            let reply = self
                .attempt(true, |mut manager| async move {
                    invocation.invoke_async::<Value>(&mut manager).await
                })
                .await?;
            let malformed = || unexpected("the kept id script", &reply);
            let Value::Array(parts) = &reply else {
                return Err(malformed());
            };
            let [found, tag, last] = parts.as_slice() else {
                return Err(malformed());
            };
            let (Some(found), Some(tag), Some(last)) =
                (bytes_of(found), bytes_of(tag), bytes_of(last))
            else {
                return Err(malformed());
            };
            if let Some(found) = EntryId::parse(found) {
                return Ok(Some((found, Bytes::copy_from_slice(tag))));
            }
            let Some(last) = EntryId::parse(last) else {
                // Nothing more to look at.
                return Ok(None);
            };
            from = format!("({last}");
            looked += PAGE;
        }
        Ok(None)
    }

    /// The newest entry of `topic`'s stream at `key`, if any.
    pub(super) async fn newest_entry(
        &self,
        topic: &Arc<str>,
        key: &str,
    ) -> Result<Option<Parsed>, HubError> {
        let mut cmd = redis::cmd("XREVRANGE");
        cmd.arg(key).arg("+").arg("-").arg("COUNT").arg(1);
        let reply = self.query(&cmd).await?;
        Ok(item::parse_entries(topic, &reply).into_iter().next())
    }

    /// The id of the newest entry at `key`, `0-0` when there is none.
    pub(super) async fn newest(&self, key: &str) -> Result<EntryId, HubError> {
        let mut cmd = redis::cmd("XREVRANGE");
        cmd.arg(key).arg("+").arg("-").arg("COUNT").arg(1);
        let reply = self.query(&cmd).await?;
        let Value::Array(entries) = &reply else {
            return Err(unexpected("XREVRANGE", &reply));
        };
        let Some(entry) = entries.first() else {
            return Ok(EntryId::ZERO);
        };
        match entry {
            Value::Array(parts) => parts
                .first()
                .and_then(bytes_of)
                .and_then(EntryId::parse)
                .ok_or_else(|| unexpected("XREVRANGE", &reply)),
            _ => Err(unexpected("XREVRANGE", &reply)),
        }
    }

    /// The stream at `key` and up to `count` of its entries after `after`, read at one instant.
    pub(super) async fn history(
        &self,
        topic: &Arc<str>,
        key: &str,
        after: EntryId,
        count: usize,
    ) -> Result<History, HubError> {
        let mut invocation = self.history.key(key);
        invocation.arg(after.to_string()).arg(count);
        let invocation = &invocation;
        let reply = self
            .attempt(true, |mut manager| async move {
                invocation.invoke_async::<Value>(&mut manager).await
            })
            .await?;
        let malformed = || unexpected("the history script", &reply);
        let Value::Array(parts) = &reply else {
            return Err(malformed());
        };
        let [last, added, length, first, entries] = parts.as_slice() else {
            return Err(malformed());
        };
        let id = |value: &Value| bytes_of(value).and_then(EntryId::parse);
        let number = |value: &Value| match value {
            Value::Int(n) => Some(*n),
            other => std::str::from_utf8(bytes_of(other)?).ok()?.parse().ok(),
        };
        let (Some(last_generated), Some(added), Some(length)) =
            (id(last), number(added), number(length))
        else {
            return Err(malformed());
        };
        let returned = match entries {
            Value::Array(list) => list.len(),
            _ => return Err(malformed()),
        };
        Ok(History {
            last_generated,
            trimmed: added < 0 || added > length,
            first: id(first),
            entries: item::parse_entries(topic, entries),
            returned,
        })
    }

    /// Whether Redis answers.
    pub(super) async fn ping(&self) -> Result<(), HubError> {
        self.query(&redis::cmd("PING")).await.map(drop)
    }
}

/// Redis could not be reached, or did not answer in time.
pub(super) fn unavailable(error: impl std::error::Error + Send + Sync + 'static) -> HubError {
    HubError::Unavailable(Box::new(error))
}

/// Redis answered something this engine does not expect: treated as unavailable.
fn unexpected(command: &str, reply: &Value) -> HubError {
    let mut shown = format!("{reply:?}");
    if let Some((cut, _)) = shown.char_indices().nth(200) {
        shown.truncate(cut);
        shown.push('…');
    }
    HubError::Unavailable(format!("unexpected reply to {command}: {shown}").into())
}
