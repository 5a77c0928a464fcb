// Driver 1: headless Chromium runs page.html, which opens an EventSource on every case and posts
// what it saw to the fixture server. This script starts Chromium with a fresh profile, waits for
// the results (bounded), stops Chromium's whole process group, and writes <out>/chromium.json.
//
// node driver-chromium.mjs --base http://127.0.0.1:PORT --out DIR [--chromium /usr/bin/chromium]

import { spawn } from 'node:child_process';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { clientId, getJson, need, parseArgs, writeJson } from './common.mjs';

const RESULTS_TIMEOUT_MS = 240_000;

const args = parseArgs();
const base = need(args, 'base');
const out = need(args, 'out');
const chromium = args.chromium ?? 'chromium';
const client = clientId('chromium');

const profile = await mkdtemp(join(tmpdir(), 'tower-sse-chromium-'));
const log = await open(join(out, 'chromium.log'), 'w');
const child = spawn(
  chromium,
  [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-dev-shm-usage',
    '--disable-background-networking',
    '--no-first-run',
    '--disable-component-update',
    '--disable-sync',
    `--user-data-dir=${profile}`,
    `${base}/?client=${client}`,
  ],
  { detached: true, stdio: ['ignore', log.fd, log.fd] },
);
let exited = false;
const exit = new Promise((resolve) => {
  child.on('exit', () => {
    exited = true;
    resolve();
  });
  child.on('error', (error) => {
    console.error(`driver-chromium: cannot start ${chromium}: ${error.message}`);
    exited = true;
    resolve();
  });
});

/** Stops the process group this script started (Chromium forks helpers into it). */
async function stop() {
  for (const [signal, waitMs] of [['SIGTERM', 5000], ['SIGKILL', 5000]]) {
    if (exited) break;
    try {
      process.kill(-child.pid, signal);
    } catch {
      break; // the group is gone
    }
    await Promise.race([exit, new Promise((resolve) => setTimeout(resolve, waitMs))]);
  }
  // Helpers may outlive the main process for a moment: make sure the group is gone.
  try {
    process.kill(-child.pid, 'SIGKILL');
  } catch {
    // already gone
  }
}

// Stopped from outside (the script's `timeout`, Ctrl-C): take Chromium down first.
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    stop()
      .then(() => rm(profile, { recursive: true, force: true, maxRetries: 3 }))
      .finally(() => process.exit(1));
  });
}

let results = null;
let failure = null;
const deadline = Date.now() + RESULTS_TIMEOUT_MS;
try {
  while (Date.now() < deadline && !exited) {
    results = await getJson(`${base}/results?client=${client}`).catch(() => null);
    if (results) break;
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  if (!results) {
    failure = exited
      ? `chromium exited before posting results (see ${join(out, 'chromium.log')})`
      : `no results from chromium within ${RESULTS_TIMEOUT_MS / 1000} s`;
  }
} finally {
  await stop();
  await log.close();
  await rm(profile, { recursive: true, force: true, maxRetries: 3 });
}

await writeJson(join(out, 'chromium.json'), {
  client,
  version: results?.userAgent ?? 'unknown',
  error: failure ?? results?.error ?? null,
  cases: results?.cases ?? {},
});
console.log(`driver-chromium: ${Object.keys(results?.cases ?? {}).length} cases${failure ? `, ${failure}` : ''}`);
