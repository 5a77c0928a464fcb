// Driver 2: Node with the npm `eventsource` package, a real client (reconnects, Last-Event-ID),
// opens every case and records what a page would see. Writes <out>/node.json.
//
// node driver-node.mjs --base http://127.0.0.1:PORT --out DIR [--accept-encoding CODING]
//
// Node 20's fetch asks for `gzip, deflate`; `--accept-encoding br` makes it ask for br instead
// (it decodes gzip, deflate and br; zstd only from Node 23.8).

import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { EventSource } from 'eventsource';
import { clientId, loadCases, need, packageVersion, parseArgs, pool, watchCase, writeJson } from './common.mjs';

const CONCURRENCY = 6;

const args = parseArgs();
const base = need(args, 'base');
const out = need(args, 'out');
const client = clientId('node');
const cases = await loadCases();

// The same client, asking for another content coding (fetch decodes the response).
const acceptEncoding = args['accept-encoding'];
const Source = acceptEncoding === undefined
  ? EventSource
  : class extends EventSource {
      constructor(url) {
        super(url, {
          // eventsource passes its headers as a plain object; an async wrapper keeps fetch's
          // errors (a header value that is not a ByteString) as rejections, as without it.
          fetch: async (input, init) =>
            fetch(input, { ...init, headers: { ...init?.headers, 'accept-encoding': acceptEncoding } }),
        });
      }
    };

const results = {};
await pool(cases, CONCURRENCY, async (testCase) => {
  const url = `${base}/case/${encodeURIComponent(testCase.name)}?client=${client}`;
  results[testCase.name] = await watchCase(Source, url, testCase, () => performance.now());
});

await writeJson(join(out, 'node.json'), {
  client,
  version: `eventsource ${await packageVersion('eventsource')} on Node ${process.version}`,
  error: null,
  cases: results,
});
console.log(`driver-node: ${Object.keys(results).length} cases`);
