//! A hub subscriber over loopback HTTP/1.1, shared by the hub benches: it counts the events it
//! reads and, for timed ones, the latency from the wall-clock time they carry.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

/// A 64 B event's data (`p` and a number, padded), or the publish time (`t` and nanoseconds).
pub fn payload(n: u64, timed: bool) -> String {
    if timed {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        // 64 B, as the untimed events.
        format!("t{now:0>63}")
    } else {
        format!("p{n:0>47}")
    }
}

/// How long a subscriber waits for its response's head, and how many times it tries.
const HEAD_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);
const ATTEMPTS: usize = 10;

/// What one subscriber saw.
#[derive(Default)]
pub struct Seen {
    pub events: u64,
    pub latencies_us: Vec<f64>,
}

/// Subscribes, reads until the `end` event; on an early end (the hub ends a lagging stream),
/// reconnects with `Last-Event-ID`, as `EventSource` does.
pub async fn subscriber(addr: SocketAddr, path: &str, ready: Arc<AtomicU64>) -> Seen {
    subscriber_with(addr, path, &[], ready).await
}

/// [`subscriber`] with `headers` on each request (a token, say).
#[allow(dead_code)] // not every bench sends headers
pub async fn subscriber_with(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    ready: Arc<AtomicU64>,
) -> Seen {
    let mut seen = Seen::default();
    let mut last_id: Option<String> = None;
    let mut first = true;
    let mut attempts = 0;
    loop {
        // Bounded: at 10 000 connects at once a few can be dropped by a full accept queue and
        // never answered; such a subscriber tries again, a bounded number of times.
        let answered = tokio::time::timeout(HEAD_WITHIN, async {
            let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
            let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                .await
                .ok()?;
            tokio::spawn(connection);
            let mut request = Request::get(path).header("accept", "text/event-stream");
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            if let Some(id) = &last_id {
                request = request.header("last-event-id", id.as_str());
            }
            let request = request.body(Empty::<Bytes>::new()).ok()?;
            sender.send_request(request).await.ok()
        })
        .await;
        let Ok(Some(response)) = answered else {
            attempts += 1;
            assert!(
                attempts < ATTEMPTS,
                "{path}: no answer after {ATTEMPTS} attempts"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            continue;
        };
        let mut body = response.into_body();
        let mut carry = Vec::new();
        if std::mem::take(&mut first) {
            // Counted once its head is in: every subscriber is subscribed before the run.
            ready.fetch_add(1, Ordering::Relaxed);
        }
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame.map(|frame| frame.into_data().unwrap_or_default()) else {
                break;
            };
            carry.extend_from_slice(&data);
            let mut start = 0;
            while let Some(at) = memchr::memchr(b'\n', &carry[start..]) {
                let line = &carry[start..start + at];
                start += at + 1;
                if let Some(value) = line.strip_prefix(b"data: ") {
                    match value.first() {
                        Some(b'p') => seen.events += 1,
                        Some(b't') => {
                            seen.events += 1;
                            let sent: u128 = std::str::from_utf8(&value[1..])
                                .ok()
                                .and_then(|v| v.parse().ok())
                                .unwrap_or(0);
                            let now = SystemTime::now()
                                .duration_since(UNIX_EPOCH)
                                .map_or(0, |d| d.as_nanos());
                            seen.latencies_us
                                .push(now.saturating_sub(sent) as f64 / 1e3);
                        }
                        _ if value == b"end" => return seen,
                        _ => {}
                    }
                } else if let Some(id) = line.strip_prefix(b"id: ") {
                    last_id = Some(String::from_utf8_lossy(id).into_owned());
                }
            }
            carry.drain(..start);
        }
    }
}
