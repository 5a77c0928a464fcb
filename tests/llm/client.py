"""The official Python `openai` SDK streaming a chat completion from --base (through the proxy
and the gateway), with its own default headers or with `Accept: text/event-stream`
(--accept event-stream). Prints one JSON line: {ok, text} or {ok: false, error}."""

import argparse
import json

from openai import OpenAI

parser = argparse.ArgumentParser()
parser.add_argument("--base", required=True)
parser.add_argument("--accept", choices=["default", "event-stream"], default="default")
args = parser.parse_args()

client = OpenAI(base_url=f"{args.base}/v1", api_key="sk-test", max_retries=0, timeout=20)
headers = {"Accept": "text/event-stream"} if args.accept == "event-stream" else None
try:
    stream = client.chat.completions.create(
        model="fake-model",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        extra_headers=headers,
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    print(json.dumps({"ok": True, "text": text}))
except Exception as error:  # the suite reports any failure as the client saw it
    print(json.dumps({"ok": False, "error": f"{type(error).__name__}: {error}"}))
