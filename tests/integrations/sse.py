"""A streaming face for the scripted model (:class:`medagentgym.llm.testserver.TestServer`):
clients that ask for ``"stream": true`` (verifiers' interception relay does) get the test
server's answer as OpenAI chat-completion SSE chunks, ending with ``data: [DONE]``."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx


def _chunks(completion: dict[str, Any], usage: bool) -> list[dict[str, Any]]:
    choice = completion["choices"][0]
    message = choice["message"]
    delta: dict[str, Any] = {"role": "assistant", "content": message.get("content")}
    if message.get("tool_calls"):
        delta["tool_calls"] = [{**tc, "index": i} for i, tc in enumerate(message["tool_calls"])]
    base = {k: completion[k] for k in ("id", "created", "model")}
    base["object"] = "chat.completion.chunk"
    out = [{**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]},
           {**base, "choices": [{"index": 0, "delta": {},
                                 "finish_reason": choice["finish_reason"]}]}]
    if usage:
        out.append({**base, "choices": [], "usage": completion.get("usage")})
    return out


class SSEFront:
    """``base_url`` forwards to ``backend`` (a started TestServer), streaming when asked."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        front = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                resp = httpx.get(front.backend.base_url.rsplit("/v1", 1)[0] + self.path)
                self._send(resp.status_code, resp.content, "application/json")

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = json.loads(raw or b"{}")
                stream = bool(body.pop("stream", False))
                usage = bool((body.pop("stream_options", None) or {}).get("include_usage"))
                url = front.backend.base_url.rsplit("/v1", 1)[0] + self.path
                resp = httpx.post(url, json=body, timeout=60)
                if not stream or resp.status_code != 200:
                    self._send(resp.status_code, resp.content, "application/json")
                    return
                events = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n"
                                  for c in _chunks(resp.json(), usage))
                self._send(200, events + b"data: [DONE]\n\n", "text/event-stream")

            def _send(self, status: int, data: bytes, kind: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> SSEFront:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
