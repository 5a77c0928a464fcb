// A TCP proxy that closes a connection once its server side has sent nothing for --idle-ms, as
// nginx's proxy_read_timeout (60 s), an AWS ALB's idle timeout (60 s) or Cloudflare's (100 s)
// do, at a scale a test can wait for.
//
//   node idle-proxy.mjs --target 127.0.0.1:8080 --idle-ms 1000
//
// Prints `listening on http://127.0.0.1:PORT`, then one JSON line per connection it cut for
// idleness. Exits on SIGTERM or after --exit-after seconds (default 300).
import net from "node:net";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, arg, i, all) => (i % 2 === 0 ? [...pairs, [arg.replace(/^--/, ""), all[i + 1]]] : pairs), []),
);
const [host, port] = String(args.target ?? "").split(":");
const idleMs = Number(args["idle-ms"] ?? 1000);
const exitAfter = Number(args["exit-after"] ?? 300);
if (!host || !port) {
  console.error("usage: idle-proxy.mjs --target HOST:PORT [--idle-ms 1000]");
  process.exit(2);
}

const server = net.createServer((client) => {
  const upstream = net.connect(Number(port), host);
  let timer;
  const cut = () => {
    console.log(JSON.stringify({ cut: "idle", idle_ms: idleMs }));
    client.destroy();
    upstream.destroy();
  };
  const arm = () => {
    clearTimeout(timer);
    timer = setTimeout(cut, idleMs);
  };
  upstream.on("connect", arm);
  upstream.on("data", arm);
  client.pipe(upstream);
  upstream.pipe(client);
  const close = () => {
    clearTimeout(timer);
    client.destroy();
    upstream.destroy();
  };
  client.on("close", close);
  upstream.on("close", close);
  client.on("error", close);
  upstream.on("error", close);
});
server.listen(0, "127.0.0.1", () => {
  console.log(`listening on http://127.0.0.1:${server.address().port}`);
});
setTimeout(() => process.exit(0), exitAfter * 1000).unref();
process.on("SIGTERM", () => process.exit(0));
