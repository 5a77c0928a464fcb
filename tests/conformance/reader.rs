//! Driver 4: the crate's own public reader (`tower_sse::read::EventReader`) reads the raw bytes
//! of every case's response, as `driver-parser.mjs` does with `eventsource-parser`, and writes
//! `<out>/reader.json` in the same shape, for `compare.mjs` to hold against `expected.json` like
//! every other client.
//!
//! The recorded events and retry values come from a run fed one byte at a time, so that every
//! block the reader dispatches (retry-only blocks too) is observed. The body is then read again
//! whole and split in two at every offset (a bounded sample of offsets above 8 KiB): each run
//! must give the same events, final retry and final last event ID.
//!
//! With `--accept-encoding CODING` (zstd, br or gzip) it asks for that coding and decodes the
//! whole compressed body (by its `Content-Encoding`) before reading it.
//!
//! cargo run -p tower-sse-fixtures --bin conformance-reader -- --base http://127.0.0.1:PORT --out DIR

use std::collections::BTreeMap;
use std::error::Error;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use tower_sse::read::EventReader;

const SAMPLE_ABOVE: usize = 8 * 1024;
const SAMPLES: usize = 48;
const CONCURRENCY: usize = 4;

#[derive(Serialize, Clone, PartialEq, Debug)]
struct Seen {
    #[serde(rename = "type")]
    kind: String,
    data: String,
    #[serde(rename = "lastEventId")]
    last_event_id: String,
}

/// What one read of a body gave.
#[derive(Clone, PartialEq, Debug, Default)]
struct Read {
    events: Vec<Seen>,
    /// Every value `retry()` took, in order (observed at the granularity of the chunks).
    retries: Vec<u128>,
    last_event_id: String,
    error: Option<String>,
}

/// A body handing out `chunks` one at a time, each only once `released` allows it.
struct Gated {
    chunks: Vec<Bytes>,
    next: usize,
    released: Arc<AtomicUsize>,
}

impl Body for Gated {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.next >= self.chunks.len() {
            return Poll::Ready(None);
        }
        if self.next >= self.released.load(Ordering::Relaxed) {
            return Poll::Pending;
        }
        self.next += 1;
        Poll::Ready(Some(Ok(Frame::data(self.chunks[self.next - 1].clone()))))
    }
}

/// Reads `chunks` with the reader, releasing one chunk at a time and looking at the reader's
/// state after each, so that every retry it takes is seen.
fn read(chunks: Vec<Bytes>) -> Read {
    let released = Arc::new(AtomicUsize::new(0));
    let count = chunks.len();
    let body = Gated {
        chunks,
        next: 0,
        released: released.clone(),
    };
    let mut reader = EventReader::new(body);
    let mut out = Read::default();
    let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
    let note_retry = |reader: &EventReader<Gated>, out: &mut Read| {
        if let Some(retry) = reader.retry().map(|retry| retry.as_millis()) {
            if out.retries.last() != Some(&retry) {
                out.retries.push(retry);
            }
        }
    };
    for step in 0..=count {
        released.store(step, Ordering::Relaxed);
        loop {
            match Pin::new(&mut reader).poll_next_event(&mut cx) {
                Poll::Pending => break,
                Poll::Ready(None) => break,
                Poll::Ready(Some(Ok(message))) => {
                    note_retry(&reader, &mut out);
                    out.events.push(Seen {
                        kind: message.event_type().to_owned(),
                        data: message.text().into_owned(),
                        last_event_id: reader.last_event_id().to_owned(),
                    });
                }
                Poll::Ready(Some(Err(error))) => out.error = Some(error.to_string()),
            }
        }
        note_retry(&reader, &mut out);
    }
    out.last_event_id = reader.last_event_id().to_owned();
    out
}

/// The split offsets `driver-parser.mjs` uses: all of them up to 8 KiB, a bounded sample above.
fn offsets(body: &[u8]) -> Vec<usize> {
    let n = body.len();
    if n <= SAMPLE_ABOVE {
        return (0..=n).collect();
    }
    let mut picked = std::collections::BTreeSet::new();
    picked.extend([0, 1, 2, 3, n - 3, n - 2, n - 1, n]);
    let breaks: Vec<usize> = body
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n' || **b == b'\r')
        .map(|(at, _)| at)
        .collect();
    for &at in breaks.iter().take(8).chain(breaks.iter().rev().take(8)) {
        picked.extend([at, at + 1]);
    }
    let mut seed = n as u64 | 1;
    while picked.len() < 16 + 32 + SAMPLES {
        // xorshift64: a fixed sequence per body length.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        picked.insert((seed % (n as u64 + 1)) as usize);
    }
    picked.into_iter().filter(|&k| k <= n).collect()
}

#[derive(Serialize)]
struct Mismatch {
    offset: String,
    events: usize,
    #[serde(rename = "wholeEvents")]
    whole_events: usize,
}

fn analyse(body: &Bytes) -> serde_json::Value {
    let fine: Vec<Bytes> = (0..body.len()).map(|k| body.slice(k..k + 1)).collect();
    let reference = read(fine);
    let same = |run: &Read| {
        run.events == reference.events
            && run.retries.last() == reference.retries.last()
            && run.last_event_id == reference.last_event_id
            && run.error == reference.error
    };
    let mut mismatches = Vec::new();
    let whole = read(vec![body.clone()]);
    if !same(&whole) {
        mismatches.push(Mismatch {
            offset: "whole".into(),
            events: whole.events.len(),
            whole_events: reference.events.len(),
        });
    }
    let splits = offsets(body);
    for &k in &splits {
        let run = read(vec![body.slice(..k), body.slice(k..)]);
        if !same(&run) && mismatches.len() < 5 {
            mismatches.push(Mismatch {
                offset: k.to_string(),
                events: run.events.len(),
                whole_events: reference.events.len(),
            });
        }
    }
    serde_json::json!({
        "events": reference.events,
        "retries": reference.retries,
        "error": reference.error,
        "splits": { "tried": splits.len() + 1, "byteByByte": true, "mismatches": mismatches },
    })
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>;

async fn fetch(
    client: &HttpClient,
    url: &str,
    timeout: Duration,
    accept_encoding: Option<&str>,
) -> Result<(u16, Option<String>, Bytes), Box<dyn Error + Send + Sync>> {
    let mut request = http::Request::get(url)
        .header("accept", "text/event-stream")
        .header("cache-control", "no-cache");
    if let Some(coding) = accept_encoding {
        request = request.header("accept-encoding", coding);
    }
    let request = request.body(Empty::new())?;
    let read = async {
        let response = client.request(request).await?;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let coding = response
            .headers()
            .get(http::header::CONTENT_ENCODING)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let body = response.into_body().collect().await?.to_bytes();
        let body = decode(coding.as_deref(), body)?;
        Ok::<_, Box<dyn Error + Send + Sync>>((status, content_type, body))
    };
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| format!("timed out after {} ms", timeout.as_millis()))?
}

/// The body decoded from its content coding; a truncated compressed stream is an error.
fn decode(coding: Option<&str>, body: Bytes) -> Result<Bytes, Box<dyn Error + Send + Sync>> {
    use std::io::Read;
    let mut decoded = Vec::new();
    match coding {
        None => return Ok(body),
        Some("gzip") => {
            flate2::read::GzDecoder::new(&body[..]).read_to_end(&mut decoded)?;
        }
        Some("br") => {
            brotli::Decompressor::new(&body[..], 4096).read_to_end(&mut decoded)?;
        }
        Some("zstd") => decoded = zstd::stream::decode_all(&body[..])?,
        Some(other) => return Err(format!("unexpected content-encoding {other}").into()),
    }
    Ok(Bytes::from(decoded))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error + Send + Sync>> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|at| args.get(at + 1))
            .cloned()
            .ok_or_else(|| format!("{name} is required"))
    };
    let base = arg("--base")?;
    let accept_encoding: Option<Arc<str>> = arg("--accept-encoding").ok().map(Arc::from);
    let out = std::path::PathBuf::from(arg("--out")?);
    let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../conformance");
    let cases: serde_json::Value =
        serde_json::from_slice(&std::fs::read(here.join("cases.json"))?)?;
    let cases: Vec<(String, u64)> = cases["cases"]
        .as_array()
        .ok_or("cases.json has no cases")?
        .iter()
        .filter_map(|case| {
            let name = case["name"].as_str()?.to_owned();
            Some((name, case["timeout_ms"].as_u64().unwrap_or(10_000)))
        })
        .collect();
    let client_id = format!("reader-{}", std::process::id());
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();

    let semaphore = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
    let mut tasks = tokio::task::JoinSet::new();
    for (name, timeout_ms) in cases {
        let url = format!("{base}/case/{name}?client={client_id}");
        let (client, semaphore) = (client.clone(), semaphore.clone());
        let accept_encoding = accept_encoding.clone();
        tasks.spawn(async move {
            let _permit = semaphore.acquire_owned().await;
            let result = match fetch(
                &client,
                &url,
                Duration::from_millis(timeout_ms),
                accept_encoding.as_deref(),
            )
            .await
            {
                Ok((status, content_type, body)) => {
                    let analysed = tokio::task::spawn_blocking(move || {
                        let mut value = analyse(&body);
                        value["bytes"] = body.len().into();
                        value
                    })
                    .await;
                    match analysed {
                        Ok(mut value) => {
                            value["status"] = status.into();
                            value["contentType"] = content_type.into();
                            value
                        }
                        Err(error) => serde_json::json!({ "exception": error.to_string() }),
                    }
                }
                Err(error) => serde_json::json!({ "exception": error.to_string() }),
            };
            (name, result)
        });
    }
    let mut results = BTreeMap::new();
    while let Some(done) = tasks.join_next().await {
        let (name, result) = done?;
        results.insert(name, result);
    }
    let count = results.len();
    let record = serde_json::json!({
        "client": client_id,
        "version": format!("tower-sse {} read::EventReader", env!("CARGO_PKG_VERSION")),
        "error": null,
        "cases": results,
    });
    std::fs::write(out.join("reader.json"), serde_json::to_vec_pretty(&record)?)?;
    println!("driver-reader: {count} cases");
    Ok(())
}
