// Driver 3: the npm `eventsource-parser` reads the raw bytes of every case's response, whole and
// split at every byte offset (two chunks: [0, k) and [k, n) for every k from 0 to n), and one byte
// at a time. Bytes are decoded with a streaming TextDecoder, as a client does, so a split inside
// a UTF-8 sequence is exercised too. A body over SAMPLE_ABOVE bytes (the 1 MiB and 100k-line
// cases) gets a bounded sample of offsets instead: the first and last 4, one on each side of
// the first and last 8 line breaks, and SAMPLES offsets from a seeded PRNG; no byte-at-a-time.
// The driver keeps the client's last event ID itself (the parser reports each block's own id).
// Writes <out>/parser.json.
//
// node driver-parser.mjs --base http://127.0.0.1:PORT --out DIR

import http from 'node:http';
import { join } from 'node:path';
import { createParser } from 'eventsource-parser';
import { clientId, loadCases, need, packageVersion, parseArgs, pool, writeJson } from './common.mjs';

export const SAMPLE_ABOVE = 8 * 1024;
export const SAMPLES = 48;
const CONCURRENCY = 4;

const args = parseArgs();
const base = need(args, 'base');
const out = need(args, 'out');
const client = clientId('parser');
const cases = await loadCases();

/** One GET as an EventSource sends it; the raw body bytes, bounded by `timeoutMs`. */
function fetchRaw(url, timeoutMs) {
  return new Promise((resolve, reject) => {
    const request = http.get(
      url,
      { headers: { accept: 'text/event-stream', 'cache-control': 'no-cache' } },
      (response) => {
        const chunks = [];
        response.on('data', (chunk) => chunks.push(chunk));
        response.on('end', () =>
          resolve({
            status: response.statusCode,
            contentType: response.headers['content-type'] ?? null,
            body: Buffer.concat(chunks),
          }),
        );
        response.on('error', reject);
      },
    );
    request.setTimeout(timeoutMs, () => request.destroy(new Error(`timed out after ${timeoutMs} ms`)));
    request.on('error', reject);
  });
}

/** Parses `chunks` (Buffers) as one stream: events with the client's last event ID, retries, comments. */
function parseChunks(chunks) {
  const decoder = new TextDecoder();
  const events = [];
  const retries = [];
  let comments = 0;
  let lastEventId = '';
  const parser = createParser({
    onEvent(event) {
      if (event.id !== undefined) lastEventId = event.id;
      events.push({ type: event.event || 'message', data: event.data, lastEventId });
    },
    onRetry(millis) {
      retries.push(millis);
    },
    onComment() {
      comments += 1;
    },
    onError() {}, // unknown fields and invalid retry values are ignored, as the spec says
  });
  for (const chunk of chunks) {
    const text = decoder.decode(chunk, { stream: true });
    if (text) parser.feed(text);
  }
  const rest = decoder.decode();
  if (rest) parser.feed(rest);
  return { events, retries, comments };
}

function mulberry32(seed) {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The split offsets for a body of `body.length` bytes. */
function offsets(body) {
  const n = body.length;
  if (n <= SAMPLE_ABOVE) return Array.from({ length: n + 1 }, (_, k) => k);
  const picked = new Set([0, 1, 2, 3, n - 3, n - 2, n - 1, n]);
  const breaks = [];
  for (let at = body.indexOf(10); at !== -1 && breaks.length < 8; at = body.indexOf(10, at + 1)) breaks.push(at);
  for (let at = body.lastIndexOf(10), count = 0; at > 0 && count < 8; at = body.lastIndexOf(10, at - 1), count++) breaks.push(at);
  for (const at of breaks) for (const k of [at, at + 1]) picked.add(k);
  const random = mulberry32(n);
  while (picked.size < 16 + 32 + SAMPLES) picked.add(Math.floor(random() * (n + 1)));
  return [...picked].filter((k) => k >= 0 && k <= n).sort((a, b) => a - b);
}

function analyse(body) {
  const whole = parseChunks([body]);
  const reference = JSON.stringify(whole);
  const mismatches = [];
  let tried = 0;
  for (const k of offsets(body)) {
    tried += 1;
    const split = parseChunks([body.subarray(0, k), body.subarray(k)]);
    if (JSON.stringify(split) !== reference && mismatches.length < 5) {
      mismatches.push({ offset: k, events: split.events.length, wholeEvents: whole.events.length });
    }
  }
  let byteByByte = false;
  if (body.length <= SAMPLE_ABOVE) {
    byteByByte = true;
    const bytes = Array.from({ length: body.length }, (_, k) => body.subarray(k, k + 1));
    const split = parseChunks(bytes);
    if (JSON.stringify(split) !== reference) {
      mismatches.push({ offset: 'every byte', events: split.events.length, wholeEvents: whole.events.length });
    }
  }
  return { ...whole, splits: { tried, byteByByte, sampled: body.length > SAMPLE_ABOVE, mismatches } };
}

// Fetch every body first, then parse: the parsing is synchronous and, on a loaded machine, takes
// seconds for the big cases; done while other requests are in flight, it would starve the event
// loop and trip their idle timeouts although the server had answered.
const fetched = {};
await pool(cases, CONCURRENCY, async (testCase) => {
  const url = `${base}/case/${encodeURIComponent(testCase.name)}?client=${client}`;
  try {
    fetched[testCase.name] = { response: await fetchRaw(url, testCase.timeout_ms ?? 10000) };
  } catch (error) {
    fetched[testCase.name] = { exception: String(error) };
  }
});

const results = {};
for (const testCase of cases) {
  const { response, exception } = fetched[testCase.name];
  results[testCase.name] = exception
    ? { exception }
    : {
        status: response.status,
        contentType: response.contentType,
        bytes: response.body.length,
        ...analyse(response.body),
      };
}

await writeJson(join(out, 'parser.json'), {
  client,
  version: `eventsource-parser ${await packageVersion('eventsource-parser')} on Node ${process.version}`,
  error: null,
  cases: results,
});
console.log(`driver-parser: ${Object.keys(results).length} cases`);
