"""The environment server over real HTTP: uvicorn in a thread on a free loopback port, driven
by :class:`EnvClient` (and raw httpx for malformed requests)."""

from __future__ import annotations

import asyncio
import time

import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from medagentgym.server.app import create_app  # noqa: E402
from medagentgym.server.client import (  # noqa: E402
    AsyncEnvClient,
    AuthenticationError,
    EnvClient,
    RemoteConfigurationError,
    ServerFullError,
)
from tests.server.conftest import (  # noqa: E402
    FAMILY,
    ServerThread,
    code,
    sandbox_pid,
    session_processes,
    wait_gone,
)


@pytest.fixture(scope="module")
def server(mag_home):
    with ServerThread(create_app(max_envs=3, idle_timeout_s=600)) as srv:
        yield srv


@pytest.fixture(scope="module")
def seen():
    """Every response body the recording client received."""
    return []


@pytest.fixture(scope="module")
def client(server, seen):
    c = EnvClient(server.url)

    def record(resp: httpx.Response) -> None:
        resp.read()
        seen.append(resp.text)

    c._http.event_hooks["response"].append(record)
    yield c
    c.close()


# -------------------------------------------------------------------------------- tests


def test_health_and_datasets(client):
    assert client.health()["status"] == "ok"
    names = [d["name"] for d in client.list_datasets()]
    assert "treqs" in names and "mimic_iii" in names


def test_task_listing_has_no_truth(client, gold):
    listing = client.list_tasks("treqs", "test", limit=3, offset=1, **FAMILY)
    assert listing["total"] == gold["n"] and listing["offset"] == 1
    assert len(listing["tasks"]) == 3
    for t in listing["tasks"]:
        assert set(t) == {"id", "category", "goal"}


def test_oracle_solves_and_wrong_answer_fails(client, gold, seen):
    task = gold["task"]
    with client.make("treqs", "test", **FAMILY) as env:
        assert env.num_tasks == gold["n"]
        obs, info = env.reset(task_id=task.id)
        assert obs == task.goal
        assert info["task_id"] == task.id and "validate_code" in info["system_prompt"]

        obs, reward, terminated, truncated, info = env.step(code("answer = [[-12345.678]]"))
        assert (reward, terminated, truncated) == (0.0, False, False)
        assert info["grade"]["correct"] is False and "detail" not in info["grade"]

        import json

        obs, reward, terminated, truncated, info = env.step(json.dumps(code(gold["code"])))
        assert (reward, terminated, truncated) == (1.0, True, False)
        assert info["success"] is True and info["grade"]["correct"] is True

        with pytest.raises(RemoteConfigurationError) as err:  # episode over
            env.step(code("answer = 1"))
        assert err.value.status_code == 409
    assert seen and not any(gold["sql"] in body or "sql_rows" in body for body in seen)


def test_malformed_action_is_an_observation(client):
    with client.make("treqs", "test", **FAMILY) as env:
        with pytest.raises(RemoteConfigurationError) as err:  # no episode yet
            env.step("answer = 1")
        assert err.value.status_code == 409
        env.reset(seed=0)
        obs, reward, terminated, _, info = env.step("this is not an action")
        assert obs.startswith("Error:") and info["parse_error"]
        assert (reward, terminated) == (0.0, False)
        obs, *_ = env.step({"action": "validate_code", "params": {}})
        assert obs.startswith("Error:")


def test_seeded_reset_is_reproducible(client):
    with client.make("treqs", "test", **FAMILY) as env:
        a = env.reset(seed=7)[1]["task_id"]
        b = env.reset(seed=7)[1]["task_id"]
        c = env.reset(options={"task_index": 2})[1]["task_id"]
    assert a == b and c


def test_not_found_and_malformed(client, server):
    with pytest.raises(RemoteConfigurationError) as err:
        client.make("no_such_dataset")
    assert err.value.status_code == 404 and "unknown dataset" in err.value.message
    with pytest.raises(RemoteConfigurationError) as err:
        client.make("treqs", "nosplit", **FAMILY)
    assert err.value.status_code == 404
    with pytest.raises(RemoteConfigurationError) as err:
        client.list_tasks("no_such_dataset")
    assert err.value.status_code == 404
    with client.make("treqs", "test", **FAMILY) as env:
        with pytest.raises(RemoteConfigurationError) as err:
            env.reset(task_id="treqs/test/nope")
        assert err.value.status_code == 404 and "no task" in err.value.message
        with pytest.raises(RemoteConfigurationError) as err:
            env.reset(options={"task_index": 10**6})
        assert err.value.status_code == 404
    raw = httpx.Client(base_url=server.url)
    try:
        assert raw.post("/envs", json={"datasett": "treqs"}).status_code == 422
        assert raw.post("/envs", json={"dataset": "treqs",
                                       "options": {"sandbox": "local"}}).status_code == 422
        assert raw.post("/envs", json={"dataset": "treqs",
                                       "options": {"max_turns": 0}}).status_code == 422
        assert raw.post("/envs/abc/step", json={"action": 3}).status_code == 422
        assert raw.post("/envs/abc/step", json={"action": "x"}).status_code == 404
        assert raw.delete("/envs/abc").status_code == 404
    finally:
        raw.close()


def test_too_many_envs(client, server):
    made = []
    try:
        with pytest.raises(ServerFullError) as err:
            for _ in range(server.registry.max_envs + 1):
                made.append(client.make("treqs", "test", **FAMILY))
        assert err.value.status_code == 429 and "maximum of 3" in err.value.message
        assert len(made) == 3  # earlier tests closed theirs
    finally:
        for env in made:
            env.close()
    client.make("treqs", "test", **FAMILY).close()  # room again


def test_delete_closes_the_sandbox(client, server):
    env = client.make("treqs", "test", **FAMILY)
    env.reset(seed=1)
    env.step(code("import os\nprint(os.getpid())"))
    pid = sandbox_pid(server, env.env_id)
    assert session_processes(pid)
    env.close()
    assert env.env_id not in server.registry.envs
    assert wait_gone(pid) == []
    with pytest.raises(RemoteConfigurationError) as err:
        env.step(code("answer = 1"))
    assert err.value.status_code == 404


def test_async_client(server, gold):
    async def main() -> tuple[float, bool]:
        async with AsyncEnvClient(server.url) as ac:
            env = await ac.make("treqs", "test", **FAMILY)
            try:
                await env.reset(task_id=gold["task"].id)
                _, reward, terminated, _, _ = await env.step(code(gold["code"]))
            finally:
                await env.close()
            return reward, terminated

    assert asyncio.run(main()) == (1.0, True)


def test_token_idle_reaper_and_shutdown(mag_home, monkeypatch):
    monkeypatch.delenv("MEDAGENTGYM_SERVER_TOKEN", raising=False)
    app = create_app(max_envs=4, idle_timeout_s=0.5, token="s3cret")
    srv = ServerThread(app)
    with srv:
        raw = httpx.Client(base_url=srv.url)
        try:
            assert raw.get("/health").status_code == 200
            assert raw.get("/datasets").status_code == 401
            assert raw.get("/datasets", headers={"Authorization": "Bearer nope"}).status_code == 401
            assert raw.post("/envs", json={"dataset": "treqs"}).status_code == 401
        finally:
            raw.close()
        with pytest.raises(AuthenticationError):
            EnvClient(srv.url).list_datasets()
        client = EnvClient(srv.url, token="s3cret")
        assert client.list_datasets()

        idle = client.make("treqs", "test", **FAMILY)
        idle.reset(seed=0)
        idle_pid = sandbox_pid(srv, idle.env_id)
        deadline = time.monotonic() + 10
        while idle.env_id in srv.registry.envs and time.monotonic() < deadline:
            time.sleep(0.1)
        assert idle.env_id not in srv.registry.envs  # reaped after 0.5 s idle
        assert wait_gone(idle_pid) == []

        srv.registry.idle_timeout_s = 600  # keep the next one alive until shutdown
        kept = client.make("treqs", "test", **FAMILY)
        kept.reset(seed=0)
        kept_pid = sandbox_pid(srv, kept.env_id)
        client.close()
    assert not srv.thread.is_alive()
    assert srv.registry.envs == {}
    assert wait_gone(kept_pid) == []


def test_no_gold_in_any_response(client, seen, gold):
    client.list_tasks("treqs", "test", **FAMILY)
    with client.make("treqs", "test", **FAMILY) as env:
        env.reset(task_id=gold["task"].id)
        env.step(code("answer = None"))
        env.step(code(gold["code"]))
    assert len(seen) >= 6
    for body in seen:
        assert gold["sql"] not in body
        assert "sql_rows" not in body


def test_infrastructure_failure_is_503_and_env_recovers(client, server, gold):
    from medagentgym.errors import GraderError, SandboxError
    from medagentgym.server.client import RemoteInfrastructureError

    with client.make("treqs", "test", **FAMILY) as env:
        env.reset(task_id=gold["task"].id)
        core = server.registry.envs[env.env_id].core
        old_pid = sandbox_pid(server, env.env_id)

        async def broken(*a, **k):
            raise GraderError("grader exploded")

        core._grade = broken
        with pytest.raises(RemoteInfrastructureError) as err:
            env.step(code(gold["code"]))
        assert err.value.status_code == 503 and "grader exploded" in err.value.message
        assert wait_gone(old_pid) == []  # the old sandbox was closed, a fresh env took over
        with pytest.raises(RemoteConfigurationError) as err:
            env.step(code("answer = 1"))
        assert err.value.status_code == 409  # the episode is lost: reset again
        env.reset(task_id=gold["task"].id)
        assert env.step(code(gold["code"]))[1] == 1.0

        async def fail_start(*a, **k):
            raise SandboxError("no sandbox today")

        slot = server.registry.envs[env.env_id]
        slot.core._prepare_sandbox = fail_start
        with pytest.raises(RemoteInfrastructureError) as err:
            env.reset(seed=0)
        assert err.value.status_code == 503 and "no sandbox today" in err.value.message
        obs, _ = env.reset(task_id=gold["task"].id)  # recreated: usable again
        assert obs == gold["task"].goal


def test_reset_without_body(server, client):
    env = client.make("treqs", "test", **FAMILY)
    try:
        raw = httpx.post(f"{server.url}/envs/{env.env_id}/reset",
                         headers={"X-Env-Secret": env.secret})
        assert raw.status_code == 200 and raw.json()["info"]["task_id"]
    finally:
        env.close()


def test_every_response_says_the_servers_own_time(server):
    """Server-Timing: the server's time from request in to response out (a 404 too)."""
    for path in ("/health", "/datasets", "/envs/nope"):
        r = httpx.get(server.url + path)
        head = r.headers.get("server-timing", "")
        assert head.startswith("app;dur="), (path, dict(r.headers))
        assert 0.0 <= float(head.split("dur=")[1]) < 60_000
