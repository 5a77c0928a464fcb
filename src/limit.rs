//! Stream limits: how many event streams may be open through one layer, in all and per key,
//! and what a request over a limit gets instead of reaching the inner service.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::request::Parts;
use http::{header, HeaderValue, Response, StatusCode};

use crate::headers::set_event_stream_headers;
use crate::jitter::spread;
use crate::Event;

pub(crate) type KeyFn = Arc<dyn Fn(&Parts) -> Option<String> + Send + Sync>;
pub(crate) type OnLimit = Arc<dyn Fn(&LimitExceeded) + Send + Sync>;

/// The default delay [`Refusal::RetryLater`] starts from.
pub const DEFAULT_REFUSAL_RETRY: Duration = Duration::from_secs(10);

/// What a request over a stream limit gets (see
/// [`SseLayer::max_streams`](crate::SseLayer::max_streams)). A request that asked for an event
/// stream never reaches the inner service; a stream a response offers to one that did not ask
/// is refused when that response comes (its body is dropped unread).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// A `200` event stream holding only a retry hint spread uniformly over `after` to twice
    /// `after`, then the end: `EventSource` comes back later instead of giving up (it gives up
    /// for good on any other status), and refused clients do not all return together. The
    /// default, with [`DEFAULT_REFUSAL_RETRY`]. A request that did not ask for an event
    /// stream (not `EventSource`: curl, `fetch`, an SDK, which would read that stream as an
    /// empty answer) gets `429 Too Many Requests` with the same delay as `Retry-After`.
    RetryLater(Duration),
    /// This status (such as `429 Too Many Requests` or `503 Service Unavailable`) with a
    /// `Retry-After` header in whole seconds (rounded up) and a short plain-text body: for
    /// clients that should stop, or that read `Retry-After` themselves.
    Status {
        /// The response status.
        status: StatusCode,
        /// The `Retry-After` delay.
        retry_after: Duration,
    },
}

impl Default for Refusal {
    fn default() -> Self {
        Self::RetryLater(DEFAULT_REFUSAL_RETRY)
    }
}

/// Which limit a refused request hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StreamLimit {
    /// [`max_streams`](crate::SseLayer::max_streams): all the streams through the layer.
    Total,
    /// [`max_streams_per_key`](crate::SseLayer::max_streams_per_key): the streams of one key.
    PerKey,
}

impl StreamLimit {
    /// The limit's name, as the `limit` label of the metrics: `total` or `per_key`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Total => "total",
            Self::PerKey => "per_key",
        }
    }
}

/// A request refused for a stream limit, as the
/// [`on_limit_exceeded`](crate::SseLayer::on_limit_exceeded) callback sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LimitExceeded {
    /// The limit it hit.
    pub limit: StreamLimit,
    /// That limit's value.
    pub max: usize,
    /// The request's key, for the per-key limit.
    pub key: Option<String>,
}

/// The limits of one layer, and the counts every service made from it shares.
#[derive(Clone, Default)]
pub(crate) struct Limits {
    pub(crate) max_streams: Option<usize>,
    pub(crate) per_key: Option<(usize, KeyFn)>,
    pub(crate) refusal: Refusal,
    pub(crate) on_exceeded: Option<OnLimit>,
    counts: Arc<Counts>,
}

#[derive(Default)]
struct Counts {
    total: AtomicUsize,
    keys: Mutex<HashMap<String, usize>>,
}

impl Counts {
    fn lock_keys(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        // Nothing panics while holding the lock; the map is plain counts in any case.
        self.keys
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One open stream's place under the limits, given back when dropped.
pub(crate) struct Permit {
    counts: Arc<Counts>,
    key: Option<String>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            let mut keys = self.counts.lock_keys();
            if let Some(count) = keys.get_mut(&key) {
                *count -= 1;
                if *count == 0 {
                    keys.remove(&key);
                }
            }
        }
        self.counts.total.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Limits {
    /// Whether any limit is set (without one, streams take no permit).
    pub(crate) fn is_set(&self) -> bool {
        self.max_streams.is_some() || self.per_key.is_some()
    }

    /// The streams holding a place now.
    pub(crate) fn open(&self) -> usize {
        self.counts.total.load(Ordering::Acquire)
    }

    /// Fresh counts: a layer given its own limits does not share the counts of the layer it
    /// was cloned from.
    pub(crate) fn reset_counts(&mut self) {
        self.counts = Arc::default();
    }

    /// The per-key limit's key of the request `parts`, if that limit is set and the request
    /// has one. Taken when the request comes, even if its stream is only admitted when the
    /// response shows it is one.
    pub(crate) fn key_of(&self, parts: &Parts) -> Option<String> {
        self.per_key.as_ref().and_then(|(_, key_of)| key_of(parts))
    }

    /// A place for one more stream (of the request with `key`), or the answer to send instead:
    /// the refusal, reported to the callback, the metrics and the log. No place is taken when
    /// no limit is set. `asked`: the request asked for an event stream (the refusal of one that
    /// did not is never the retry-only stream, which only `EventSource` reads as "come back").
    pub(crate) fn admit(
        &self,
        key: Option<String>,
        vary_accept: bool,
        asked: bool,
    ) -> Result<Option<Permit>, Box<Response<Bytes>>> {
        if !self.is_set() {
            return Ok(None);
        }
        match self.acquire(key) {
            Ok(permit) => Ok(Some(permit)),
            Err(exceeded) => {
                tracing::debug!(
                    limit = exceeded.limit.as_str(),
                    max = exceeded.max,
                    key = exceeded.key.as_deref(),
                    "event stream refused: over the stream limit"
                );
                if let Some(on_exceeded) = &self.on_exceeded {
                    on_exceeded(&exceeded);
                }
                crate::metrics::refused(exceeded.limit);
                Err(Box::new(self.refuse(vary_accept, asked)))
            }
        }
    }

    /// A place for one more stream of the request with `key`, or the limit it would exceed.
    fn acquire(&self, key: Option<String>) -> Result<Permit, LimitExceeded> {
        let max = self.max_streams.unwrap_or(usize::MAX);
        let counts = &self.counts;
        counts
            .total
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < max).then_some(open + 1)
            })
            .map_err(|_| LimitExceeded {
                limit: StreamLimit::Total,
                max,
                key: None,
            })?;
        // Holds the total place from here: dropped on a refusal below, it gives it back.
        let mut permit = Permit {
            counts: counts.clone(),
            key: None,
        };
        if let Some((max, _)) = &self.per_key {
            if let Some(key) = key {
                let mut keys = counts.lock_keys();
                let count = keys.entry(key.clone()).or_insert(0);
                if *count >= *max {
                    if *count == 0 {
                        keys.remove(&key);
                    }
                    return Err(LimitExceeded {
                        limit: StreamLimit::PerKey,
                        max: *max,
                        key: Some(key),
                    });
                }
                *count += 1;
                permit.key = Some(key);
            }
        }
        Ok(permit)
    }

    /// The answer to a refused request: for one that did not ask for an event stream (curl,
    /// `fetch`, an SDK), a [`RetryLater`](Refusal::RetryLater) is a `429` with `Retry-After`,
    /// since such a client would read an empty `200` stream as a complete answer.
    fn refuse(&self, vary_accept: bool, asked: bool) -> Response<Bytes> {
        match &self.refusal {
            Refusal::RetryLater(after) if !asked => status_refusal(
                StatusCode::TOO_MANY_REQUESTS,
                spread(*after, *after),
                vary_accept,
            ),
            Refusal::RetryLater(after) => {
                let mut text = BytesMut::new();
                Event::default()
                    .retry(spread(*after, *after))
                    .encode_into(&mut text);
                let mut response = Response::new(text.freeze());
                set_event_stream_headers(response.headers_mut(), vary_accept);
                response
            }
            Refusal::Status {
                status,
                retry_after,
            } => status_refusal(*status, *retry_after, false),
        }
    }
}

/// A refusal as `status` with `Retry-After` in whole seconds (rounded up) and a short text.
fn status_refusal(status: StatusCode, retry_after: Duration, vary_accept: bool) -> Response<Bytes> {
    let mut response = Response::new(Bytes::from_static(b"too many event streams\n"));
    *response.status_mut() = status;
    let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
    let headers = response.headers_mut();
    headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if vary_accept {
        crate::headers::add_vary_accept(headers);
    }
    response
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits")
            .field("max_streams", &self.max_streams)
            .field(
                "max_streams_per_key",
                &self.per_key.as_ref().map(|(max, _)| max),
            )
            .field("refusal", &self.refusal)
            .field("open", &self.counts.total.load(Ordering::Relaxed))
            .finish()
    }
}
