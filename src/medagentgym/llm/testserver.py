"""A local OpenAI-compatible chat server for tests and benchmarks (real HTTP on 127.0.0.1).

It answers ``POST /v1/chat/completions`` (and Azure's
``/openai/deployments/<name>/chat/completions``) with scripted replies, and injects the
faults real endpoints produce: 429 bursts, 5xx errors, slow answers, malformed JSON, a body
cut short, a connection closed without an answer.

>>> with TestServer(delay=0.0) as server:                     # doctest: +SKIP
...     server.push(Reply.rate_limited(), Reply.text('{"action": ...}'))
...     client = ChatClient(LLMConfig(model="m", base_url=server.base_url), api_key="k")

Where replies come from, in order: the queue filled by :meth:`TestServer.push`; else the
``responder`` (a function of the request body, for answers that depend on the conversation);
else a constant default action. Random faults (``fault_rates``) are drawn, with a seeded
generator, before either. Every request is recorded (path, headers, body) for assertions.

Run it standalone for benchmarks: ``python -m medagentgym.llm.testserver --port 8000
--delay 0.2`` (``--help`` lists the options).
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

FAULTS = ("rate_limit", "server_error", "slow", "malformed", "truncated", "close")
DEFAULT_CONTENT = '{"action": "validate_code", "params": {"code": "answer = 1"}}'


@dataclass
class Reply:
    """One scripted answer, or a fault (``fault`` is one of :data:`FAULTS`)."""

    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    reasoning_content: str | None = None
    finish_reason: str | None = None
    delay: float | None = None
    fault: str | None = None
    status: int = 200
    retry_after: float | None = None
    error_message: str = ""
    usage: dict[str, int] | None = None

    @classmethod
    def text(cls, content: str, **kw: Any) -> Reply:
        return cls(content=content, **kw)

    @classmethod
    def action(cls, name: str, **params: Any) -> Reply:
        """A reply holding the paper's JSON action."""
        return cls(content=json.dumps({"action": name, "params": params}))

    @classmethod
    def tool_call(cls, name: str, arguments: dict[str, Any] | str, **kw: Any) -> Reply:
        args = arguments if isinstance(arguments, str) else json.dumps(arguments)
        return cls(content=None, tool_calls=[{"name": name, "arguments": args}], **kw)

    @classmethod
    def rate_limited(cls, retry_after: float | None = 0.0) -> Reply:
        return cls(fault="rate_limit", status=429, retry_after=retry_after,
                   error_message="Rate limit reached, please retry")

    @classmethod
    def server_error(cls, status: int = 500) -> Reply:
        return cls(fault="server_error", status=status, error_message="internal error")

    @classmethod
    def error(cls, status: int, message: str) -> Reply:
        """A non-retryable client error (400, 401, 404…)."""
        return cls(fault="server_error", status=status, error_message=message)

    @classmethod
    def slow(cls, delay: float, content: str = DEFAULT_CONTENT) -> Reply:
        return cls(content=content, delay=delay)

    @classmethod
    def malformed(cls) -> Reply:
        return cls(fault="malformed")

    @classmethod
    def truncated(cls) -> Reply:
        """Headers promise a body that is cut in the middle (connection then closed)."""
        return cls(fault="truncated")

    @classmethod
    def close(cls) -> Reply:
        """Close the connection without answering."""
        return cls(fault="close")


Responder = Callable[[dict[str, Any]], "Reply | str | None"]


@dataclass
class RecordedRequest:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    at: float = field(default_factory=time.monotonic)


def estimate_tokens(text: str) -> int:
    return max(1, len(text) // 4) if text else 0


class TestServer:
    """The server; start with ``with TestServer() as s:`` or :meth:`start`/:meth:`stop`."""

    __test__ = False  # not a pytest test class

    def __init__(self, *, delay: float = 0.0, responder: Responder | None = None,
                 fault_rates: dict[str, float] | None = None, seed: int = 0,
                 host: str = "127.0.0.1", port: int = 0, record: bool = True,
                 context_window: int | None = None) -> None:
        unknown = set(fault_rates or {}) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown faults {sorted(unknown)}; choose from {FAULTS}")
        self.delay = delay
        #: when set: listed as the model's ``max_model_len`` and enforced the way llama.cpp's
        #: server does (HTTP 400 "exceeds the available context size"; tokens ~ chars / 4)
        self.context_window = context_window
        self.responder = responder
        self.fault_rates = dict(fault_rates or {})
        self.slow_delay = 5.0
        self.record = record
        self.requests: list[RecordedRequest] = []
        self.served = 0
        self.faults_injected: dict[str, int] = {}
        self.responder_errors: list[str] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._queue: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._host, self._port = host, port
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> TestServer:
        server = self

        class Handler(_Handler):
            owner = server

        self._httpd = _Server((self._host, self._port), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="mag-testserver",
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> TestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def azure_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- scripting ----------------------------------------------------------------------
    def push(self, *replies: Reply | str) -> None:
        """Queue replies, served to the next requests in order (whoever sends them)."""
        with self._lock:
            for r in replies:
                self._queue.append(Reply.text(r) if isinstance(r, str) else r)

    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    def chat_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.split("?")[0].endswith("/chat/completions")]

    def _next_reply(self, body: dict[str, Any]) -> Reply:
        with self._lock:
            if self.fault_rates:
                roll = self._rng.random()
                acc = 0.0
                for name, rate in self.fault_rates.items():
                    acc += rate
                    if roll < acc:
                        return _fault(name, self.slow_delay)
            if self._queue:
                return self._queue.popleft()
        if self.responder is not None:
            try:
                out = self.responder(body)
            except Exception as exc:  # a broken script answers 500 and is kept for the test
                with self._lock:
                    self.responder_errors.append(f"{type(exc).__name__}: {exc}")
                return Reply.error(500, f"responder failed: {type(exc).__name__}: {exc}")
            if out is not None:
                return Reply.text(out) if isinstance(out, str) else out
        return Reply.text(DEFAULT_CONTENT)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # listen backlog: hundreds of clients may connect at once


def _fault(name: str, slow_delay: float) -> Reply:
    return {
        "rate_limit": lambda: Reply.rate_limited(0.0),
        "server_error": lambda: Reply.server_error(500),
        "slow": lambda: Reply.slow(slow_delay),
        "malformed": Reply.malformed,
        "truncated": Reply.truncated,
        "close": Reply.close,
    }[name]()


class _Handler(BaseHTTPRequestHandler):
    owner: TestServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "mag-testserver/1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _send_json(self, status: int, payload: Any, extra: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path.rstrip("/").endswith("/models"):
            model: dict[str, Any] = {"id": "test-model", "object": "model",
                                     "owned_by": "medagentgym"}
            if self.owner.context_window:
                model["max_model_len"] = self.owner.context_window
            self._send_json(200, {"object": "list", "data": [model]})
        else:
            self._send_json(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self) -> None:
        owner = self.owner
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            self._send_json(400, {"error": {"message": "request body is not JSON"}})
            return
        if not self.path.split("?")[0].endswith("/chat/completions"):
            self._send_json(404, {"error": {"message": f"no route {self.path}"}})
            return
        with owner._lock:
            if owner.record:
                owner.requests.append(RecordedRequest(
                    self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            owner.in_flight += 1
            owner.max_in_flight = max(owner.max_in_flight, owner.in_flight)
        self._counted = True
        try:
            self._answer(body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (e.g. its timeout)
        finally:
            self._finished()

    def _finished(self) -> None:
        """Leave the in-flight count (before the answer is written, so that a client that
        sends its next request the moment it reads this answer is not counted twice)."""
        if getattr(self, "_counted", False):
            self._counted = False
            with self.owner._lock:
                self.owner.in_flight -= 1
                self.owner.served += 1

    def _answer(self, body: dict[str, Any]) -> None:
        owner = self.owner
        if owner.context_window:
            prompt = sum(estimate_tokens(str(m.get("content") or "")) + 4
                         for m in body.get("messages", []) if isinstance(m, dict))
            reply_tokens = int(body.get("max_tokens") or body.get("max_completion_tokens") or 0)
            if prompt + reply_tokens > owner.context_window:
                self._finished()
                self._send_json(400, {"error": {
                    "code": 400, "type": "exceed_context_size_error",
                    "message": (f"the request exceeds the available context size "
                                f"({prompt + reply_tokens} > {owner.context_window} tokens), "
                                "try increasing it")}})
                return
        reply = owner._next_reply(body)
        if reply.fault:
            with owner._lock:
                owner.faults_injected[reply.fault] = owner.faults_injected.get(reply.fault, 0) + 1
        delay = owner.delay if reply.delay is None else reply.delay
        if delay > 0:
            time.sleep(delay)
        self._finished()
        if reply.fault == "close":
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        if reply.fault in ("rate_limit", "server_error"):
            extra = {}
            if reply.retry_after is not None:
                extra["Retry-After"] = f"{reply.retry_after:g}"
            kind = "rate_limit_error" if reply.status == 429 else "server_error"
            self._send_json(reply.status, {"error": {"message": reply.error_message,
                                                     "type": kind, "code": None}}, extra)
            return
        completion = _completion(body, reply)
        data = json.dumps(completion).encode()
        if reply.fault == "malformed":
            data = data[: len(data) // 2] + b"}}]]"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if reply.fault == "truncated":
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(data)


def _completion(body: dict[str, Any], reply: Reply) -> dict[str, Any]:
    prompt_text = "".join(str(m.get("content") or "") for m in body.get("messages", []))
    message: dict[str, Any] = {"role": "assistant", "content": reply.content}
    if reply.reasoning_content is not None:
        message["reasoning_content"] = reply.reasoning_content
    if reply.tool_calls:
        message["tool_calls"] = [
            {"id": f"call_{i}_{random.randrange(1 << 30):x}", "type": "function",
             "function": {"name": tc["name"], "arguments": tc["arguments"]}}
            for i, tc in enumerate(reply.tool_calls)]
    out_text = (reply.content or "") + "".join(tc["arguments"] for tc in reply.tool_calls or [])
    usage = reply.usage or {
        "prompt_tokens": estimate_tokens(prompt_text),
        "completion_tokens": estimate_tokens(out_text) + estimate_tokens(reply.reasoning_content or ""),
    }
    usage.setdefault("total_tokens", usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0))
    finish = reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop")
    return {
        "id": f"chatcmpl-{random.randrange(1 << 40):x}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "test-model"),
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
        "usage": usage,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m medagentgym.llm.testserver",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--content", default=DEFAULT_CONTENT, help="the constant answer")
    for name in FAULTS:
        parser.add_argument(f"--{name.replace('_', '-')}-rate", type=float, default=0.0,
                            help=f"probability of a {name} fault per request")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rates = {n: getattr(args, f"{n}_rate") for n in FAULTS if getattr(args, f"{n}_rate") > 0}
    server = TestServer(delay=args.delay, fault_rates=rates, seed=args.seed, host=args.host,
                        port=args.port, record=False,
                        responder=lambda _body: Reply.text(args.content))
    server.start()
    print(f"serving on http://{args.host}:{server.port}/v1", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
