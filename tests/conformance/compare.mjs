// Compares what each client saw (<out>/{chromium,node,parser,reader}.json) and what the fixture server
// recorded (GET /requests?client=...) with expected.json, prints the table case x client, and
// ends with the line "N passed, N failed". A failure listed in known-issues.json for that client,
// case and check is a documented exception: shown as "known", counted apart, never dropped; an
// exception that no longer happens is a failure, so the list stays true.
//
// node compare.mjs --base http://127.0.0.1:PORT --out DIR [--clients a,b] [--coding CODING]
//
// `--clients` compares only those clients; `--coding` (a run against `server --compression`)
// also requires every event stream response a client got to have that `Content-Encoding`.

import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { HERE, expandEvents, getJson, loadCases, need, parseArgs, readJson } from './common.mjs';

const ALL_CLIENTS = ['chromium', 'node', 'parser', 'reader'];
const REAL_CLIENTS = new Set(['chromium', 'node']);

const args = parseArgs();
const CLIENTS = args.clients ? args.clients.split(',') : ALL_CLIENTS;
const coding = args.coding ?? null;
const base = need(args, 'base');
const out = need(args, 'out');
const cases = await loadCases();
const expected = (await readJson(join(HERE, 'expected.json'))).cases;
const known = (await readJson(join(HERE, 'known-issues.json'))).issues;

const runs = {};
for (const client of CLIENTS) {
  const path = join(out, `${client}.json`);
  runs[client] = existsSync(path)
    ? await readJson(path)
    : { client: null, error: `${path} is missing (the driver did not finish)`, cases: {} };
  runs[client].log = runs[client].client
    ? ((await getJson(`${base}/requests?client=${runs[client].client}`)) ?? {})
    : {};
}

function hex(text) {
  return Buffer.from(text, 'utf8').toString('hex');
}

function show(value, limit = 60) {
  const text = JSON.stringify(value);
  return text.length > limit ? `${text.slice(0, limit)}… (${value.length} chars)` : text;
}

function firstDifference(a, b) {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return n;
}

/** Compares event lists; failures are tagged "events" (type/data/count) or "lastEventId". */
function compareEvents(got, want, fail) {
  if (got.length !== want.length) {
    const at = firstDifference(
      got.map((e) => `${e.type}\u0000${e.data}`),
      want.map((e) => `${e.type}\u0000${e.data}`),
    );
    fail('events', `got ${got.length} events, want ${want.length}; first difference at event ${at}: ` +
      `got ${show(got[at] ?? null)}, want ${show(want[at] ?? null)}`);
    return;
  }
  for (let i = 0; i < want.length; i++) {
    const g = got[i];
    const w = want[i];
    if (g.type !== w.type) {
      fail('events', `event ${i}: type ${show(g.type)}, want ${show(w.type)}`);
      return;
    }
    if (g.data !== w.data) {
      const at = firstDifference(g.data ?? '', w.data);
      fail('events', `event ${i}: data differs at char ${at} (got ${show(g.data)}, want ${show(w.data)})`);
      return;
    }
  }
  for (let i = 0; i < want.length; i++) {
    if (got[i].lastEventId !== want[i].lastEventId) {
      fail('lastEventId', `event ${i} (${show(want[i].data)}): lastEventId ${show(got[i].lastEventId)}, want ${show(want[i].lastEventId)}`);
    }
  }
}

function checkRealClient(name, want, rec, log, fail) {
  if (rec.exception) fail('client', `EventSource threw: ${rec.exception}`);
  if (rec.timedOut) {
    const messages = [...new Set(rec.errors.map((e) => e.message).filter(Boolean))];
    fail('closed', `still not CLOSED after ${rec.ms} ms (readyState ${rec.readyState}; ${rec.errors.length} error events` +
      `${messages.length ? `: ${messages.map((m) => JSON.stringify(m)).join(', ')}` : ''})`);
  }
  else if (rec.readyState !== 2) fail('closed', `readyState ${rec.readyState}, want 2 (CLOSED)`);
  compareEvents(rec.events, expandEvents(want.events), fail);

  const requests = log?.requests ?? [];
  if (requests.length !== want.requests.length) {
    fail('requests', `server saw ${requests.length} requests, want ${want.requests.length} ` +
      `(Last-Event-ID: ${JSON.stringify(requests.map((r) => r.last_event_id))})`);
  }
  const n = Math.min(requests.length, want.requests.length);
  for (let i = 0; i < n; i++) {
    const gotHex = requests[i].last_event_id_hex;
    const wantHex = want.requests[i] === null ? null : hex(want.requests[i]);
    if (gotHex !== wantHex) {
      fail('last-event-id-header', `request ${i}: Last-Event-ID bytes ${gotHex ?? '(none)'}, want ${wantHex ?? '(none)'}` +
        (want.requests[i] === null ? '' : ` (${JSON.stringify(want.requests[i])} in UTF-8)`));
    }
  }
  const wantOpens = (want.status ?? 200) === 200 ? want.requests.length - 1 : 0;
  if (rec.opens !== wantOpens) fail('opens', `${rec.opens} open events, want ${wantOpens}`);

  if (want.gap_ms) {
    const { after, min, max } = want.gap_ms;
    const end = (log?.ends ?? []).find((e) => e.connection === after);
    const next = requests[after + 1];
    if (!end || !next) {
      fail('gap', `no stream end or no reconnect to measure the gap after connection ${after}`);
    } else {
      const gap = Math.round(next.t_ms - end.t_ms);
      if (gap < min || gap > max) fail('gap', `reconnect gap ${gap} ms, want ${min}..${max} ms`);
    }
  }
}

// The byte-level readers: `eventsource-parser` (parser) and the crate's own `read::EventReader`
// (reader), which reports no comment lines, only what it dispatches.
function checkParser(client, want, rec, fail) {
  if (rec.exception) {
    fail('client', rec.exception);
    return;
  }
  if (rec.error) fail('client', `the reader failed: ${rec.error}`);
  const status = want.status ?? 200;
  if (rec.status !== status) fail('status', `status ${rec.status}, want ${status}`);
  if (status === 200 && !/^text\/event-stream(;|$)/i.test(rec.contentType ?? '')) {
    fail('content-type', `content-type ${rec.contentType}`);
  }
  compareEvents(rec.events, expandEvents(want.events).filter((e) => e.conn === 0), fail);
  for (const m of rec.splits?.mismatches ?? []) {
    fail('splits', `split at ${m.offset}: ${m.events} events, whole body ${m.wholeEvents} (or retries/comments differ)`);
  }
  if (want.retry && JSON.stringify(rec.retries) !== JSON.stringify(want.retry)) {
    fail('retry', `retry values ${JSON.stringify(rec.retries)}, want ${JSON.stringify(want.retry)}`);
  }
  if (client === 'parser' && want.comments_min !== undefined && rec.comments < want.comments_min) {
    fail('comments', `${rec.comments} comment lines, want at least ${want.comments_min}`);
  }
}

// Every event stream the server sent this client was compressed with `coding`, and the client
// got at least one stream (a case that answers only 204 or 500 has none to check).
function checkCoding(log, fail) {
  for (const request of log?.requests ?? []) {
    if (!/^text\/event-stream/i.test(request.content_type ?? '')) continue;
    if (request.content_encoding !== coding) {
      fail('coding', `connection ${request.connection}: content-encoding ${request.content_encoding ?? '(none)'}, want ${coding}`);
    }
  }
}

const rows = [];
const details = [];
let passed = 0;
let failed = 0;
let exceptions = 0;

for (const testCase of cases) {
  const want = expected[testCase.name];
  const row = { name: testCase.name, cells: {} };
  for (const client of CLIENTS) {
    const failures = [];
    const fail = (check, detail) => failures.push({ check, detail });
    const run = runs[client];
    const rec = run.cases[testCase.name];
    if (!want) fail('expected', 'no entry in expected.json');
    else if (!rec) fail('client', `no result${run.error ? ` (${run.error})` : ''}`);
    else if (REAL_CLIENTS.has(client)) checkRealClient(testCase.name, want, rec, run.log[testCase.name], fail);
    else checkParser(client, want, rec, fail);
    if (coding && rec) checkCoding(run.log[testCase.name], fail);

    // Documented exceptions for this client and case; each must still happen (a failure among
    // its checks), and together they must cover every failure.
    const issues = known.filter((k) => k.client === client && k.cases.includes(testCase.name));
    const stale = issues.filter((k) => !failures.some((f) => k.checks.includes(f.check)));
    const coveredBy = (f) => issues.filter((k) => k.checks.includes(f.check)).map((k) => k.id);
    let cell;
    if (failures.length === 0 && issues.length === 0) {
      cell = 'pass';
      passed += 1;
    } else if (stale.length > 0) {
      cell = 'FAIL';
      failed += 1;
      for (const k of stale) {
        details.push(`FAIL ${testCase.name} × ${client}: documented exception ${k.id} no longer happens; update known-issues.json`);
      }
      for (const f of failures) details.push(`FAIL ${testCase.name} × ${client} ${f.check}: ${f.detail}`);
    } else if (failures.every((f) => coveredBy(f).length > 0)) {
      cell = `known:${issues.map((k) => k.id).join('+')}`;
      exceptions += 1;
      for (const f of failures) details.push(`known ${testCase.name} × ${client} [${coveredBy(f).join('+')}] ${f.check}: ${f.detail}`);
    } else {
      cell = 'FAIL';
      failed += 1;
      for (const f of failures) details.push(`FAIL ${testCase.name} × ${client} ${f.check}: ${f.detail}`);
    }
    row.cells[client] = cell;
  }
  rows.push(row);
}

const width = Math.max(...rows.map((r) => r.name.length), 4) + 2;
const column = Math.max(10, ...rows.flatMap((r) => CLIENTS.map((c) => r.cells[c].length + 2)));
console.log();
for (const client of CLIENTS) console.log(`${client.padEnd(9)} ${runs[client].version ?? '?'}${runs[client].error ? `  (error: ${runs[client].error})` : ''}`);
console.log();
console.log('case'.padEnd(width) + CLIENTS.map((c) => c.padEnd(column)).join('').trimEnd());
console.log('-'.repeat(width + column * CLIENTS.length - 2));
for (const row of rows) {
  console.log(row.name.padEnd(width) + CLIENTS.map((c) => row.cells[c].padEnd(column)).join('').trimEnd());
}
console.log();
for (const line of details) console.log(line);
if (details.length) console.log();
console.log(`${exceptions} documented client exceptions (known:<id>, see tests/conformance/README.md), not counted below`);
const streams = CLIENTS.reduce((n, client) => n + Object.values(runs[client].log ?? {})
  .flatMap((log) => log.requests ?? [])
  .filter((r) => /^text\/event-stream/i.test(r.content_type ?? '') && r.content_encoding === coding).length, 0);
if (coding) console.log(`${streams} event streams sent with content-encoding ${coding}`);
if (coding && streams === 0) {
  console.log(`FAIL no event stream was sent with content-encoding ${coding}`);
  failed += 1;
}
console.log(`${passed} passed, ${failed} failed`);
process.exitCode = failed === 0 ? 0 : 1;
