"""Context windows (issue 18): the window comes from the endpoint when it states one; a
context overflow (llama.cpp's and OpenAI's forms) is trimmed once, never retried as a
transient fault; a task that cannot fit ends the episode at once as the agent's failure
("context exhausted", naming the setting), with a clear line from the CLI."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from typer.testing import CliRunner

from medagentgym.agents.llm_agent import ContextExhausted, LLMAgent
from medagentgym.llm import ChatClient, LLMConfig
from medagentgym.llm.client import endpoint_context_window
from medagentgym.llm.testserver import Reply, TestServer

INFO = {"allowed_actions": ["validate_code"]}
pytestmark = pytest.mark.filterwarnings("ignore:.*local. sandbox provider:RuntimeWarning")


def test_the_window_is_read_from_the_endpoint():
    with TestServer(context_window=4096) as server:
        cfg = LLMConfig(model="test-model", base_url=server.base_url)
        assert endpoint_context_window(cfg, api_key="k") == 4096
    with TestServer() as server:  # states none
        assert endpoint_context_window(LLMConfig(model="test-model",
                                                 base_url=server.base_url), api_key="k") is None
    assert endpoint_context_window(LLMConfig(model="m", base_url="http://127.0.0.1:9/v1"),
                                   api_key="k", timeout=2) is None


async def _turns(server, system: str, goal: str, observations: list[str], **cfg_kw):
    cfg = LLMConfig(model="test-model", base_url=server.base_url, backoff_base=0.005,
                    **cfg_kw)
    async with ChatClient(cfg, api_key="k") as client:
        agent = LLMAgent(client)
        await agent.begin(None, system, goal, None)
        out = [await agent.act(goal, INFO)]
        for obs in observations:
            out.append(await agent.act(obs, INFO))
        return agent, out


def test_a_task_larger_than_the_window_ends_at_once_as_the_agents_failure():
    with TestServer(context_window=512) as server:
        server.push(Reply.action("validate_code", code="print(1)"))
        t0 = time.perf_counter()
        with pytest.raises(ContextExhausted, match=r"context exhausted.*--context-window"):
            asyncio.run(_turns(server, "S" * 8000, "goal", [], context_window=512,
                               max_tokens=64))
        assert time.perf_counter() - t0 < 5
        assert len(server.chat_requests()) <= 2  # no retries as if it were transient


def test_an_overflow_the_estimate_missed_is_trimmed_once_then_exhausted():
    # the window is unknown to the client: the endpoint's llama.cpp-style 400 is the signal
    with TestServer(context_window=600) as server:
        server.responder = lambda body: Reply.action("validate_code", code="print(1)")
        agent, actions = asyncio.run(_turns(server, "sys", "goal", ["x" * 3000],
                                            max_tokens=32))
        assert len(actions) == 2  # trimmed (the old observation shortened) and answered
        assert agent.episode_metadata()["agent_stats"]["context_errors"] == 1
        n = len(server.chat_requests())
        with pytest.raises(ContextExhausted):
            asyncio.run(_turns(server, "s" * 4000, "goal", [], max_tokens=32))
        assert len(server.chat_requests()) - n <= 2


def test_rollout_with_a_too_small_window_fails_fast_with_one_clear_line(tmp_path):
    from medagentgym.cli import app

    with TestServer(context_window=256) as server:
        server.responder = lambda body: Reply.action("validate_code", code="answer = 1")
        t0 = time.perf_counter()
        res = CliRunner().invoke(app, [
            "rollout", "npowerai", "--model", "test-model", "--base-url", server.base_url,
            "--out", str(tmp_path / "run"), "--limit", "2", "--concurrency", "2",
            "--sandbox", "local", "--no-debugger", "--quiet"])
        elapsed = time.perf_counter() - t0
    assert res.exit_code == 1, res.output
    assert "context exhausted" in res.output and "--context-window" in res.output
    assert elapsed < 60
    rows = [json.loads(line) for line in (tmp_path / "run" / "trajectories.jsonl")
            .read_text().splitlines()]
    assert len(rows) == 2 and all(r["error"]["source"] == "agent" for r in rows)
    assert all(r["error"]["type"] == "ContextExhausted" for r in rows)
