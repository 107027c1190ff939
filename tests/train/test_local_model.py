"""``--model local:PATH`` (issue 18): a transformers checkpoint served on a loopback
OpenAI-compatible endpoint for the run, then stopped — tried with a tiny model built here.
The endpoint states its window, refuses an overflowing request at once with OpenAI's
``context_length_exceeded``, and a whole rollout runs against it with nothing else started:
episodes stored, parse failures counted, no infrastructure error."""

from __future__ import annotations

import json

import httpx
import pytest
from typer.testing import CliRunner

from medagentgym.errors import ConfigurationError
from medagentgym.llm import local

pytestmark = pytest.mark.filterwarnings("ignore:.*local. sandbox provider:RuntimeWarning")


def test_model_paths_resolve_or_say_what_is_wrong(tmp_path, tiny_model_dir):
    m = local.resolve(f"local:{tiny_model_dir}")
    assert m.gguf_file is None and m.directory == tiny_model_dir
    (tmp_path / "x.gguf").write_bytes(b"GGUF")
    g = local.resolve(f"local:{tmp_path / 'x.gguf'}")
    assert g.gguf_file == "x.gguf" and local.resolve(f"local:{tmp_path}").gguf_file == "x.gguf"
    (tmp_path / "notes.txt").write_text("x")
    for bad, why in [("local:", "needs a path"), (f"local:{tmp_path / 'nope'}", "not found"),
                     (f"local:{tmp_path / 'notes.txt'}", "not a .gguf")]:
        with pytest.raises(ConfigurationError, match=why):
            local.resolve(bad)


def test_the_endpoint_serves_chat_and_refuses_overflow(tiny_model_dir):
    with local.local_endpoint(f"local:{tiny_model_dir}", context_window=512,
                              threads=1) as url:
        models = httpx.get(f"{url}/models").json()["data"]
        assert models[0]["id"] == local.served_name(f"local:{tiny_model_dir}")
        assert models[0]["max_model_len"] == 512
        r = httpx.post(f"{url}/chat/completions", timeout=120, json={
            "model": models[0]["id"], "max_tokens": 8, "temperature": 0, "seed": 1,
            "messages": [{"role": "user", "content": "answer import pandas"}]})
        body = r.json()
        assert r.status_code == 200 and body["usage"]["completion_tokens"] <= 8
        assert isinstance(body["choices"][0]["message"]["content"], str)
        r = httpx.post(f"{url}/chat/completions", timeout=60, json={
            "max_tokens": 8, "messages": [{"role": "user", "content": "answer " * 2000}]})
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "context_length_exceeded"
        port = int(url.split(":")[2].split("/")[0])
    with pytest.raises(httpx.ConnectError):  # stopped at the end
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)


def test_rollout_with_a_local_model_and_nothing_else_started(tiny_model_dir, tmp_path):
    from medagentgym.cli import app

    out = tmp_path / "run"
    res = CliRunner().invoke(app, [
        "rollout", "npowerai", "--model", f"local:{tiny_model_dir}", "--out", str(out),
        "--limit", "1", "--max-turns", "2", "--max-tokens", "16", "--context-window", "4096",
        "--sandbox", "local", "--no-debugger", "--quiet", "--json"])
    assert res.exit_code == 0, res.output
    rows = [json.loads(x) for x in (out / "trajectories.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["error"] is None, rows[0].get("error")
    stats = rows[0]["metadata"]["agent_stats"]
    assert stats["model_calls"] == 2 and stats["parse_failures"] >= 1  # a random model
    info = json.loads((out / "run.json").read_text())
    assert info["model"]["model"] == f"local:{tiny_model_dir}"  # the spec, not the port
