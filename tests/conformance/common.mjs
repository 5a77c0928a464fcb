// Helpers shared by the drivers and the comparison. No dependencies beyond Node 20.

import { readFile, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const HERE = dirname(fileURLToPath(import.meta.url));

/** `--name value` pairs from the command line. */
export function parseArgs(argv = process.argv.slice(2)) {
  const args = {};
  for (let i = 0; i < argv.length; i += 2) {
    if (!argv[i].startsWith('--') || i + 1 >= argv.length) {
      throw new Error(`bad arguments: ${argv.join(' ')}`);
    }
    args[argv[i].slice(2)] = argv[i + 1];
  }
  return args;
}

export function need(args, name) {
  if (!(name in args)) throw new Error(`missing --${name}`);
  return args[name];
}

export async function readJson(path) {
  return JSON.parse(await readFile(path, 'utf8'));
}

export async function writeJson(path, value) {
  await writeFile(path, JSON.stringify(value));
}

export async function loadCases() {
  return (await readJson(join(HERE, 'cases.json'))).cases;
}

/** A GET returning parsed JSON, bounded by `timeoutMs`; null on 404. */
export async function getJson(url, timeoutMs = 10000) {
  const response = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
  if (response.status === 404) return null;
  if (!response.ok) throw new Error(`GET ${url}: ${response.status}`);
  return response.json();
}

/** Text as cases.json and expected.json write it: a string, or {repeat, times}, or {numbered, count, sep}. */
export function expandText(text) {
  if (typeof text === 'string') return text;
  if (text && typeof text.repeat === 'string') return text.repeat.repeat(text.times);
  if (text && typeof text.numbered === 'string') {
    const parts = new Array(text.count);
    for (let n = 0; n < text.count; n++) parts[n] = `${text.numbered}${n}`;
    return parts.join(text.sep ?? '');
  }
  throw new Error(`cannot expand text ${JSON.stringify(text)}`);
}

/** The expected events of a case, generated text and {repeat_event, count} expanded. */
export function expandEvents(events) {
  const out = [];
  for (const event of events) {
    if (event.repeat_event) {
      const template = event.repeat_event;
      for (let n = 0; n < event.count; n++) {
        const fill = (value) => value.replaceAll('{n}', String(n));
        out.push({
          type: fill(template.type),
          data: fill(expandText(template.data)),
          lastEventId: fill(template.lastEventId),
          conn: template.conn ?? 0,
        });
      }
    } else {
      out.push({
        type: event.type,
        data: expandText(event.data),
        lastEventId: event.lastEventId,
        conn: event.conn ?? 0,
      });
    }
  }
  return out;
}

/** Runs `fn` over `items` with at most `limit` at a time; results in order. */
export async function pool(items, limit, fn) {
  const results = new Array(items.length);
  let next = 0;
  async function worker() {
    while (next < items.length) {
      const index = next++;
      results[index] = await fn(items[index], index);
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

/** A client id unique to this run: letters, digits and dashes, as the server accepts. */
export function clientId(name) {
  return `${name}-${process.pid}-${Date.now().toString(36)}`;
}

/** Reads the version of an installed package. */
export async function packageVersion(name) {
  try {
    return (await readJson(join(HERE, 'node_modules', name, 'package.json'))).version;
  } catch {
    return 'not installed';
  }
}

/**
 * Opens one case with an EventSource implementation and records what a page would see:
 * every event (type, data, lastEventId), opens, connection errors with the readyState, and the
 * final readyState. Done when the client reaches CLOSED, or after the case's timeout.
 * The browser page (page.html) carries a copy of this function.
 */
export function watchCase(EventSourceImpl, url, testCase, now) {
  return new Promise((resolve) => {
    const started = now();
    const rec = { events: [], opens: 0, errors: [], readyState: null, timedOut: false, ms: 0 };
    let source;
    try {
      source = new EventSourceImpl(url);
    } catch (error) {
      rec.exception = String(error);
      resolve(rec);
      return;
    }
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      rec.readyState = source.readyState;
      rec.ms = Math.round(now() - started);
      source.close();
      resolve(rec);
    };
    const timer = setTimeout(() => {
      rec.timedOut = true;
      finish();
    }, testCase.timeout_ms ?? 10000);
    const onEvent = (event) => {
      rec.events.push({ type: event.type, data: event.data, lastEventId: event.lastEventId });
    };
    source.addEventListener('message', onEvent);
    for (const name of testCase.listen ?? []) {
      if (name !== 'message' && name !== 'error') source.addEventListener(name, onEvent);
    }
    source.addEventListener('open', () => {
      rec.opens += 1;
    });
    source.addEventListener('error', (event) => {
      if (typeof event.data === 'string') {
        onEvent(event); // an event named "error" sent by the server
        return;
      }
      rec.errors.push({
        readyState: source.readyState,
        t: Math.round(now() - started),
        message: event.message,
        code: event.code,
      });
      if (source.readyState === 2) finish();
    });
  });
}
