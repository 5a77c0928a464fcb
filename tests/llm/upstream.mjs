// A fake OpenAI-compatible upstream: `POST /v1/chat/completions` with `"stream": true` answers
// `text/event-stream` whatever the request's Accept, as api.openai.com does: one
// `chat.completion.chunk` per token, a pause of --pause-ms in the middle (a model thinking
// longer than the proxies' idle timeouts allow), the final chunk, then `data: [DONE]`. Each
// chunk carries an `id:` line, as some OpenAI-compatible servers send: after one, the Python
// SDK also dispatches a comment followed by a blank line. A request that accepts gzip gets the
// stream gzipped (flushed after every chunk), as behind FastAPI's or Starlette's GZipMiddleware:
// the gateway must ask for `identity`, or the stream passes it unconverted.
//
//   node upstream.mjs --pause-ms 1500
//
// Prints `listening on http://127.0.0.1:PORT`, then one JSON line per request (its method, path
// Accept and Accept-Encoding headers). Exits on SIGTERM or after --exit-after seconds (default 300).
import http from "node:http";
import zlib from "node:zlib";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, arg, i, all) => (i % 2 === 0 ? [...pairs, [arg.replace(/^--/, ""), all[i + 1]]] : pairs), []),
);
const pauseMs = Number(args["pause-ms"] ?? 1500);
const exitAfter = Number(args["exit-after"] ?? 300);

// The completion's text, token by token; the pause comes after PAUSE_AFTER tokens.
const TOKENS = ["The", " quick", " brown", " fox", " jumps", " over", " the", " lazy", " dog", "."];
const PAUSE_AFTER = 4;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function chunk(n, delta, finish) {
  return JSON.stringify({
    id: "chatcmpl-fake",
    object: "chat.completion.chunk",
    created: 1764806400,
    model: "fake-model",
    choices: [{ index: 0, delta, finish_reason: finish }],
  });
}

async function stream(req, res) {
  const gzip = /\bgzip\b/.test(req.headers["accept-encoding"] ?? "");
  const headers = { "content-type": "text/event-stream", "cache-control": "no-cache" };
  if (gzip) headers["content-encoding"] = "gzip";
  res.writeHead(200, headers);
  let out = res;
  if (gzip) {
    out = zlib.createGzip();
    out.pipe(res);
  }
  let n = 0;
  const send = (data) => {
    n += 1;
    out.write(`id: ${n}\ndata: ${data}\n\n`);
    if (gzip) out.flush();
  };
  send(chunk(n, { role: "assistant", content: "" }, null));
  for (const [i, token] of TOKENS.entries()) {
    if (i === PAUSE_AFTER) await sleep(pauseMs);
    if (res.destroyed) return;
    send(chunk(n, { content: token }, null));
  }
  send(chunk(n, {}, "stop"));
  out.end("data: [DONE]\n\n");
}

const server = http.createServer((req, res) => {
  let body = "";
  req.setEncoding("utf8");
  req.on("data", (part) => {
    body += part;
    if (body.length > 1 << 20) req.destroy();
  });
  req.on("end", () => {
    console.log(JSON.stringify({ method: req.method, path: req.url, accept: req.headers.accept ?? null, encoding: req.headers["accept-encoding"] ?? null }));
    let request = {};
    try {
      request = JSON.parse(body || "{}");
    } catch {
      res.writeHead(400, { "content-type": "application/json" }).end('{"error":{"message":"invalid JSON"}}');
      return;
    }
    if (req.method !== "POST" || req.url !== "/v1/chat/completions" || request.stream !== true) {
      res.writeHead(404, { "content-type": "application/json" }).end('{"error":{"message":"not here"}}');
      return;
    }
    stream(req, res).catch(() => res.destroy());
  });
});
server.listen(0, "127.0.0.1", () => {
  console.log(`listening on http://127.0.0.1:${server.address().port}`);
});
setTimeout(() => process.exit(0), exitAfter * 1000).unref();
process.on("SIGTERM", () => process.exit(0));
