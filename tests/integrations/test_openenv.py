"""OpenEnv's own client (``openenv.core.GenericEnvClient``) drives our environment server
unchanged: a real uvicorn server on loopback, real WebSocket sessions, real sandboxes."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.integrations.conftest import FAMILY, need
from tests.server.conftest import ServerThread

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")


@pytest.fixture(scope="module")
def openenv_core():
    need("websockets", "openenv")
    return need("openenv.core", "openenv")


@pytest.fixture(scope="module")
def server(mag_home):
    from medagentgym.server.app import create_app

    with ServerThread(create_app(max_envs=3, idle_timeout_s=600, max_body_bytes=64 * 1024,
                                 token="tok-123")) as srv:
        yield srv


def _code(source: str) -> dict:
    return {"text": json.dumps({"action": "validate_code", "params": {"code": source}})}


AUTH = {"Authorization": "Bearer tok-123"}


def test_generic_client_runs_an_episode(server, openenv_core, gold):
    url = f"{server.url}/openenv/treqs"
    with openenv_core.GenericEnvClient(base_url=url, headers=AUTH).sync() as env:
        r = env.reset(task_index=gold["index"], options=FAMILY, episode_id="ep-1")
        assert r.observation["text"] == gold["task"].goal and not r.done
        assert "validate_code" in r.observation["system_prompt"]
        wrong = env.step(_code("answer = -12345"))
        assert wrong.reward == 0.0 and not wrong.done
        assert "not correct" in wrong.observation["text"]
        right = env.step(_code(gold["code"]))
        assert right.reward == 1.0 and right.done
        assert right.observation["info"]["success"] is True
        state = env.state()
        assert state["episode_id"] == "ep-1" and state["step_count"] == 2
        assert state["task_id"] == gold["task"].id and state["done"] is True
        # the structured form of an action works as well, after a new reset
        env.reset(task_index=gold["index"], options=FAMILY)
        r = env.step({"action": "validate_code", "params": {"code": gold["code"]}})
        assert r.reward == 1.0 and r.done
    assert not server.registry.envs  # the session's env closed with the socket


def test_concurrent_sessions_are_isolated(server, openenv_core, gold):
    url = f"{server.url}/openenv/treqs"

    async def one(code: str) -> float:
        async with openenv_core.GenericEnvClient(base_url=url, headers=AUTH) as env:
            await env.reset(task_index=gold["index"], options=FAMILY)
            r = await env.step(_code(code))
            return r.reward

    async def main() -> list[float]:
        return await asyncio.gather(one(gold["code"]), one("answer = -1"), one(gold["code"]))

    assert asyncio.run(main()) == [1.0, 0.0, 1.0]
    assert not server.registry.envs


def test_protocol_errors_are_frames_not_crashes(server, openenv_core, gold):
    url = f"{server.url}/openenv/treqs"
    with openenv_core.GenericEnvClient(base_url=url, headers=AUTH).sync() as env:
        with pytest.raises(RuntimeError, match="reset first"):
            env.step(_code("answer = 1"))
        with pytest.raises(RuntimeError, match="not an option a client may set"):
            env.reset(options={"home": "/etc"})
        with pytest.raises(RuntimeError, match="Extra inputs"):
            env.reset(task_index=0, options=FAMILY, surprise=1)
        env.reset(task_index=gold["index"], options=FAMILY)
        with pytest.raises(RuntimeError, match="bogus: Extra inputs"):
            env.step({"bogus": 1})
        with pytest.raises(RuntimeError, match='needs "text"'):
            env.step({})
        r = env.step({"text": "no json here"})  # the agent's mistake: an observation
        assert r.reward == 0.0 and "JSON" in r.observation["text"]
        with pytest.raises(RuntimeError):  # a frame over the body limit ends the session
            env.step({"text": "x" * 70_000})
    assert not server.registry.envs


def test_unknown_dataset_and_token(server, openenv_core):
    with pytest.raises(RuntimeError, match=r"unknown dataset|no dataset"), \
            openenv_core.GenericEnvClient(base_url=f"{server.url}/openenv/nope",
                                          headers=AUTH).sync() as env:
        env.reset()
    with pytest.raises(ConnectionError), \
            openenv_core.GenericEnvClient(base_url=f"{server.url}/openenv/treqs",
                                          headers={"Authorization": "Bearer wrong"}).sync() as env:
        env.reset()


def test_http_routes(server, gold):
    base = f"{server.url}/openenv/treqs"
    assert httpx.get(f"{base}/health").json() == {"status": "healthy"}
    schema = httpx.get(f"{base}/schema", headers=AUTH).json()
    assert {"action", "observation", "state"} <= set(schema)
    assert "text" in schema["action"]["properties"]
    assert httpx.get(f"{base}/schema").status_code == 401
    r = httpx.post(f"{base}/reset", headers=AUTH, timeout=120,
                   json={"task_index": gold["index"], "options": FAMILY})
    assert r.status_code == 200 and r.json()["observation"]["text"] == gold["task"].goal
    assert httpx.post(f"{base}/step", headers=AUTH, json={}).status_code == 409
    assert not server.registry.envs


def test_hostile_frames_get_error_frames_and_the_server_survives(server, openenv_core):
    need("websockets", "openenv")
    from websockets.sync.client import connect

    url = server.url.replace("http://", "ws://") + "/openenv/treqs/ws"
    with connect(url, additional_headers=AUTH) as ws:
        for frame, code in [("not json", "INVALID_JSON"),
                            ("[" * 5000 + "]" * 5000, "INVALID_JSON"),
                            ('"a string"', "INVALID_JSON"),
                            ('{"type": "step", "data": [1]}', "VALIDATION_ERROR"),
                            ('{"type": "launch_missiles"}', "UNKNOWN_TYPE"),
                            ('{"type": "reset", "data": {"seed": -1}}', "VALIDATION_ERROR"),
                            ('{"type": "reset", "data": {"split": "nope"}}',
                             "VALIDATION_ERROR")]:
            ws.send(frame)
            reply = json.loads(ws.recv(timeout=120))
            assert reply["type"] == "error" and reply["data"]["code"] == code, (frame[:40],
                                                                                reply)
        ws.send(json.dumps({"type": "state"}))
        assert json.loads(ws.recv(timeout=30))["data"]["step_count"] == 0
    assert httpx.get(f"{server.url}/health").status_code == 200
    assert not server.registry.envs
