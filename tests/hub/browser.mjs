// The hub board (examples/hub.rs) in headless Chromium, as two users would see it: two pages
// subscribe; messages published over HTTP reach both, in order; the server is stopped and
// started again on the same port, and each page shows the gap event (the new process has no
// memory of the old ids), then the new messages. The assertions are on the DOM; a screenshot of
// each page is kept in the output folder.
//
// node browser.mjs --server target/debug/examples/hub --out DIR [--chromium /usr/bin/chromium]

import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const TOKEN = 'browser-test-token';
const STEP_MS = 15_000;

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, arg, i, all) => (arg.startsWith('--') ? [...pairs, [arg.slice(2), all[i + 1]]] : pairs), []),
);
const server = args.server;
const out = args.out;
if (!server || !out) {
  console.error('usage: node browser.mjs --server PATH --out DIR [--chromium PATH]');
  process.exit(2);
}

/** A port free right now on 127.0.0.1. */
async function freePort() {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.on('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

/** Starts the board on `port` and waits until it listens. */
async function start(port) {
  const child = spawn(server, ['--listen', `127.0.0.1:${port}`], {
    env: { ...process.env, HUB_TOKEN: TOKEN },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('the board did not start')), STEP_MS);
    child.stdout.on('data', (chunk) => {
      if (String(chunk).includes('http://')) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.on('exit', (code) => reject(new Error(`the board exited (${code})`)));
  });
  child.stdout.resume();
  return child;
}

/** Stops the board with SIGINT (a graceful shutdown: open streams get the `bye` event). */
async function stop(child) {
  const exited = new Promise((resolve) => child.on('exit', resolve));
  child.kill('SIGINT');
  const timer = setTimeout(() => child.kill('SIGKILL'), STEP_MS);
  await exited;
  clearTimeout(timer);
}

async function publish(port, text) {
  const response = await fetch(`http://127.0.0.1:${port}/publish/board?event=note`, {
    method: 'POST',
    headers: { authorization: `Bearer ${TOKEN}` },
    body: text,
  });
  if (response.status !== 200) throw new Error(`publish answered ${response.status}`);
  return response.text();
}

/** The log of a page: the kind and text of each item, in order. */
async function items(page) {
  return page.$$eval('#log li', (lis) => lis.map((li) => li.textContent));
}

async function waitFor(page, what, predicate) {
  const deadline = Date.now() + STEP_MS;
  for (;;) {
    const seen = await items(page);
    if (predicate(seen)) return seen;
    if (Date.now() > deadline) throw new Error(`${what}: the page shows ${JSON.stringify(seen)}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

const port = await freePort();
let board = await start(port);
const browser = await chromium.launch({
  executablePath: args.chromium ?? '/usr/bin/chromium',
  args: [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-dev-shm-usage',
    '--disable-background-networking',
    '--no-first-run',
    '--disable-component-update',
    '--disable-sync',
  ],
});
let failed = false;
try {
  const context = await browser.newContext();
  const pages = [await context.newPage(), await context.newPage()];
  for (const page of pages) {
    await page.goto(`http://127.0.0.1:${port}/?topic=board`);
    await page.waitForFunction(() => document.getElementById('state').textContent === 'open', null, { timeout: STEP_MS });
  }
  const before = [];
  for (const text of ['one', 'two', 'three']) before.push(await publish(port, text));
  const notes = (texts) => texts.map((text) => `note: ${text}`);
  for (const page of pages) {
    await waitFor(page, 'three notes', (seen) => seen.length >= 3);
    const seen = await items(page);
    if (JSON.stringify(seen) !== JSON.stringify(notes(['one', 'two', 'three']))) throw new Error(`in order: ${JSON.stringify(seen)}`);
  }
  console.log(`published ${before.join(', ')}: both pages show them in order`);

  // A restart: the new process has no memory of the old ids.
  await stop(board);
  board = await start(port);
  for (const page of pages) {
    await waitFor(page, 'the gap after the restart', (seen) => seen.some((item) => item.startsWith('reset:')));
  }
  const after = [];
  for (const text of ['four', 'five']) after.push(await publish(port, text));
  for (const [n, page] of pages.entries()) {
    const seen = await waitFor(page, 'two notes after the gap', (seen) => seen.includes('note: five'));
    const expected = [...notes(['one', 'two', 'three']), 'bye: server restarting', 'reset: {"reason":"unknown"}', ...notes(['four', 'five'])];
    if (JSON.stringify(seen) !== JSON.stringify(expected)) throw new Error(`page ${n}: ${JSON.stringify(seen)}, want ${JSON.stringify(expected)}`);
    await page.screenshot({ path: join(out, `hub-page-${n}.png`) });
  }
  console.log(`restarted; published ${after.join(', ')}: both pages show bye, the reset, then them`);
} catch (error) {
  failed = true;
  console.error(`hub browser test failed: ${error.message}`);
} finally {
  await browser.close().catch(() => {});
  await stop(board).catch(() => {});
}
console.log(failed ? 'FAILED' : 'passed');
process.exit(failed ? 1 : 0);
