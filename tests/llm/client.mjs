// The official npm `openai` SDK streaming a chat completion from --base (through the proxy and
// the gateway), with its own default headers or with `Accept: text/event-stream`
// (--accept event-stream). Prints one JSON line: {ok, text} or {ok: false, error}.
import OpenAI from "openai";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, arg, i, all) => (i % 2 === 0 ? [...pairs, [arg.replace(/^--/, ""), all[i + 1]]] : pairs), []),
);
const client = new OpenAI({ baseURL: `${args.base}/v1`, apiKey: "sk-test", maxRetries: 0, timeout: 20_000 });
const headers = args.accept === "event-stream" ? { Accept: "text/event-stream" } : undefined;
try {
  const stream = await client.chat.completions.create(
    { model: "fake-model", messages: [{ role: "user", content: "hi" }], stream: true },
    { headers },
  );
  let text = "";
  for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? "";
  console.log(JSON.stringify({ ok: true, text }));
} catch (error) {
  console.log(JSON.stringify({ ok: false, error: `${error?.constructor?.name}: ${error?.message}` }));
}
