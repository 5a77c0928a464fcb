// Real EventSource clients for the rolling-restart test (tests/rolling/orchestrator.rs): each opens
// `{base}/events/{topic}` through the test's load balancer, reconnects by itself (honouring
// `retry:` and sending `Last-Event-ID`, as the npm `eventsource` package does), and prints one
// JSON line per thing that happens: {"c", "kind": "open" | "message" | "reset" | "bye" |
// "error", "id", "data"}. It exits when its standard input closes.
//
//   node eventsource.mjs BASE TOKEN TOPIC...   (one client per topic given)
import { EventSource } from "eventsource";

const [base, token, ...topics] = process.argv.slice(2);
const print = (c, kind, event) =>
  process.stdout.write(
    JSON.stringify({ c, kind, id: event?.lastEventId ?? "", data: event?.data ?? "" }) + "\n",
  );
const sources = topics.map((topic, c) => {
  const source = new EventSource(`${base}/events/${encodeURIComponent(topic)}`, {
    fetch: (url, init) =>
      fetch(url, { ...init, headers: { ...init.headers, Authorization: `Bearer ${token}` } }),
  });
  source.onopen = () => print(c, "open");
  source.onerror = () => print(c, "error");
  source.onmessage = (event) => print(c, "message", event);
  source.addEventListener("reset", (event) => print(c, "reset", event));
  source.addEventListener("bye", (event) => print(c, "bye", event));
  return source;
});
process.stdin.resume();
process.stdin.on("end", () => {
  for (const source of sources) source.close();
  process.exit(0);
});
