"""The environment server under hostile clients: env capabilities (secrets), the option
allow-list (no host paths), request body limits, task builds that block nobody, and a bounded
load test on loopback. Every test drives a real uvicorn server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import threading
import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from medagentgym.server import app as server_app  # noqa: E402
from medagentgym.server.app import create_app  # noqa: E402
from medagentgym.server.client import (  # noqa: E402
    AsyncEnvClient,
    EnvClient,
    RemoteConfigurationError,
)
from tests.server.conftest import FAMILY, ServerThread, code  # noqa: E402

ADMIN = "adm1n-" + "x" * 20
LOAD_CLIENTS = 20
LOAD_STEPS = 3


@pytest.fixture(scope="module")
def server(mag_home):
    app = create_app(max_envs=LOAD_CLIENTS + 4, idle_timeout_s=600, token=None,
                     admin_token=ADMIN)
    with ServerThread(app) as srv:
        yield srv


@pytest.fixture
def raw(server):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


def raw_http(port: int, head: bytes, chunks: list[bytes] = (), timeout: float = 10.0) -> bytes:
    """Send ``head`` and ``chunks`` over one socket (stopping when the server closes it) and
    return what the server answered (bounded in time)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head)
        for chunk in chunks:
            try:
                sock.sendall(chunk)
            except OSError:  # the server answered and closed: stop sending
                break
        data = b""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in data and time.monotonic() < deadline:
            try:
                got = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not got:
                break
            data += got
        return data


# ---------------------------------------------------------------------- capabilities


def test_other_clients_cannot_see_or_drive_an_env(server, raw):
    alice, bob = EnvClient(server.url), EnvClient(server.url)
    try:
        env = alice.make("treqs", "test", **FAMILY)
        _, info = env.reset(seed=3)
        mine = bob.make("treqs", "test", **FAMILY)
        assert len(env.secret) >= 40 and env.secret != mine.secret
        assert len(env.env_id) >= 16 and env.secret not in env.env_id

        forged = [{}, {"X-Env-Secret": mine.secret}, {"X-Env-Secret": env.secret[:-1]},
                  {"X-Env-Secret": "A" * len(env.secret)}, {"X-Env-Secret": env.env_id},
                  {"X-Env-Secret": f"{mine.secret}, nope"}]
        for headers in forged:
            base = f"/envs/{env.env_id}"
            step = raw.post(f"{base}/step", json={"action": code("answer = 1")},
                            headers=headers)
            assert step.status_code == 404 and "X-Env-Secret" in step.json()["detail"]
            assert raw.post(f"{base}/reset", json={}, headers=headers).status_code == 404
            assert raw.delete(base, headers=headers).status_code == 404

        listing = raw.get("/envs").json()  # a stranger: the count, nothing else
        assert listing["count"] == len(server.registry.envs) >= 2 and listing["envs"] == []
        assert raw.get("/envs", headers={"X-Env-Secret": "nope"}).json()["envs"] == []
        assert [e["env_id"] for e in bob.list_envs()["envs"]] == [mine.env_id]
        own = alice.list_envs()["envs"]
        assert [e["env_id"] for e in own] == [env.env_id] and own[0]["task_id"] == info["task_id"]
        both = raw.get("/envs", headers={"X-Env-Secret": f"{env.secret}, {mine.secret}"}).json()
        assert {e["env_id"] for e in both["envs"]} == {env.env_id, mine.env_id}

        everything = raw.get("/envs", headers={"X-Admin-Token": ADMIN}).json()["envs"]
        assert {env.env_id, mine.env_id} <= {e["env_id"] for e in everything}
        assert raw.get("/envs", headers={"X-Admin-Token": ADMIN[:-1]}).status_code == 401

        # the owner's episode was neither stepped, reset nor closed by the attempts
        slot = server.registry.envs[env.env_id]
        assert slot.core.turn == 0 and slot.core.task.id == info["task_id"]
        assert env.step(code("answer = [[-1.5]]"))[1] == 0.0
        assert not any(env.secret in line or mine.secret in line
                       for line in raw.get("/openapi.json").text.splitlines())
        env.close()
        mine.close()
        assert env.env_id not in server.registry.envs and mine.env_id not in server.registry.envs
    finally:
        alice.close()
        bob.close()


# --------------------------------------------------------------------------- options


@pytest.mark.parametrize("dataset, options, name", [
    ("treqs", {"home": "{tmp}"}, "home"),
    ("treqs", {"database": "{tmp}/mimic.db"}, "database"),
    ("treqs", {"database": "/etc/shadow"}, "database"),
    ("treqs", {"sandbox": "local"}, "sandbox"),
    ("treqs", {"tasks": []}, "tasks"),
    ("treqs", {"debugger": None}, "debugger"),
    ("treqs", {"db_id": "eicu"}, "db_id"),
    ("treqs", {"mode": "sequence"}, "mode"),
    ("treqs", {"release": "../../../../etc"}, "release"),
    ("treqs", {"patients": 0}, "patients"),
    ("treqs", {"sequence_length": 99}, "sequence_length"),
    ("treqs", {"db_seed": -1}, "db_seed"),
    ("treqs", {"max_turns": "5"}, "max_turns"),
    ("treqs", {"code_timeout": 10**6}, "code_timeout"),
    ("treqs", {"show_verdict": "yes"}, "show_verdict"),
    ("treqs", {"database": {"path": "/etc"}}, "database"),
    ("treqs", {"answer_key": "relabelled"}, "answer_key"),  # another family's option
    ("medcalcbench", {"patients": 10}, "patients"),
    ("medcalcbench", {"home": "/"}, "home"),
    ("npowerai", {"source": "/etc/passwd"}, "source"),
    ("npowerai", {"test_size": 0}, "test_size"),
])
def test_options_outside_the_allow_list_are_422(server, raw, tmp_path, dataset, options, name):
    tmp_path.chmod(0o700)
    options = {k: v.replace("{tmp}", str(tmp_path)) if isinstance(v, str) else v
               for k, v in options.items()}
    before = dict(server.registry.envs)
    resp = raw.post("/envs", json={"dataset": dataset, "split": "test", "options": options})
    assert resp.status_code == 422, resp.text
    detail = resp.json()["detail"]
    assert isinstance(detail, str) and f"{name}:" in detail and "allowed:" in detail
    assert server.registry.envs == before
    assert tmp_path.stat().st_mode & 0o777 == 0o700  # nothing chmod-ed on the host
    assert os.listdir(tmp_path) == []


def test_options_errors_through_the_client_and_listing(server, raw):
    with EnvClient(server.url) as client:
        with pytest.raises(RemoteConfigurationError) as err:
            client.make("treqs", "test", home="/", database="synthetic")
        assert err.value.status_code == 422
        assert "home: not an option a client may set" in err.value.message
    for bad in ("/etc/passwd", "../x", "synthetic/../../x"):
        resp = raw.get("/datasets/treqs/tasks", params={"database": bad, "limit": 1})
        assert resp.status_code == 422
    ok = raw.get("/datasets/treqs/tasks", params={"database": "synthetic", "limit": 1})
    assert ok.status_code == 200


def test_allowed_options_are_used_and_the_server_picks_the_sandbox(server, raw):
    opts = {**FAMILY, "protocol": "submit", "max_turns": 4, "code_timeout": 30,
            "show_verdict": False}
    resp = raw.post("/envs", json={"dataset": "treqs", "options": opts})
    assert resp.status_code == 201, resp.text
    data = resp.json()
    assert data["options"] == {**opts, "terminal_timeout": 60.0}
    core = server.registry.envs[data["env_id"]].core
    assert (core.protocol, core.max_turns, core.code_timeout) == ("submit", 4, 30)
    assert core.sandbox_provider == server.registry.sandbox == "auto"
    assert core.family.database_source == "synthetic" and core.family.home is None
    deleted = raw.delete(f"/envs/{data['env_id']}", headers={"X-Env-Secret": data["secret"]})
    assert deleted.status_code == 200


# ------------------------------------------------------------------------ body limits


def test_a_large_content_length_is_refused_before_the_body_arrives(server):
    head = (b"POST /envs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 41943040\r\n\r\n")
    started = time.monotonic()
    answer = raw_http(server.port, head)  # 40 MB announced, none of it sent
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert time.monotonic() - started < 5


def test_a_chunked_body_is_counted_as_it_arrives(server):
    head = (b"POST /envs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    piece = b"[" * 65536
    chunk = b"%x\r\n" % len(piece) + piece + b"\r\n"
    answer = raw_http(server.port, head, [chunk] * 24)  # 1.5 MiB, never terminated
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]


def test_bodies_and_actions_within_and_over_the_limits(server, raw):
    too_big = raw.post("/envs", content=b" " * ((1 << 20) + 1),
                       headers={"Content-Type": "application/json"})
    assert too_big.status_code == 413
    with EnvClient(server.url) as client, client.make("treqs", "test", **FAMILY) as env:
        env.reset(seed=0)
        big_code = "answer = [[-1.5]]\n" + "#" * 200_000  # a large but legitimate action
        obs, reward, *_ = env.step(code(big_code))
        assert reward == 0.0 and not obs.startswith("Error: action")
        for action in ("x" * (server_app.MAX_ACTION_CHARS + 1), code("#" * (server_app.MAX_ACTION_CHARS + 1))):
            with pytest.raises(RemoteConfigurationError) as err:
                env.step(action)
            assert err.value.status_code == 422 and "characters" in err.value.message
        deep: dict = {"x": 1}
        for _ in range(200):
            deep = {"x": deep}
        with pytest.raises(RemoteConfigurationError) as err:
            env.step({"action": "validate_code", "params": deep})
        assert err.value.status_code == 422 and "deeper" in err.value.message
        nested = raw.post(f"/envs/{env.env_id}/step", content=b'{"action": ' + b"[" * 500_000,
                          headers={"Content-Type": "application/json",
                                   "X-Env-Secret": env.secret})
        assert 400 <= nested.status_code < 500
        assert env.step(code("answer = 1"))[0]  # the env still works


# ---------------------------------------------------------------------- slow builds


def test_a_slow_build_blocks_no_other_key_env_or_health(mag_home, monkeypatch):
    from medagentgym.errors import ConfigurationError
    from medagentgym.tasks.medcalc import MedCalcFamily

    started, release = threading.Event(), threading.Event()
    calls: list[str] = []

    def slow_load(self, split):
        calls.append(split)
        started.set()
        release.wait(60)
        raise ConfigurationError("build stopped by the test")

    app = create_app(max_envs=6, idle_timeout_s=600)
    with ServerThread(app) as srv, httpx.Client(base_url=srv.url, timeout=90) as raw:
        client = EnvClient(srv.url, timeout=10)
        try:
            existing = client.make("treqs", "test", **FAMILY)
            existing.reset(seed=0)
            monkeypatch.setattr(MedCalcFamily, "load_tasks", slow_load)
            slow: dict = {}
            waiters = [threading.Thread(target=lambda i=i: slow.__setitem__(
                i, raw.post("/envs", json={"dataset": "medcalcbench"})), daemon=True)
                for i in range(2)]
            for t in waiters:
                t.start()
            assert started.wait(20), "the slow build did not start"

            with httpx.Client(base_url=srv.url, timeout=5) as quick:  # each must answer fast
                t0 = time.monotonic()
                assert quick.get("/health").status_code == 200
                assert existing.step(code("answer = [[-1.5]]"))[1] == 0.0
                listing = quick.get("/datasets/treqs/tasks", params={**FAMILY, "limit": 1})
                assert listing.status_code == 200
                other = client.make("treqs", "train", **FAMILY)  # another key: built meanwhile
                other.reset(seed=1)
                assert other.step(code("answer = 2"))[0]
                other.close()
                assert time.monotonic() - t0 < 8
            assert not release.is_set() and len(calls) == 1  # one build, both requests wait
        finally:
            release.set()
            for t in waiters:
                t.join(30)
            client.close()
        assert [slow[i].status_code for i in range(2)] == [400, 400]
        assert "build stopped by the test" in slow[0].json()["detail"]
        again = raw.post("/envs", json={"dataset": "medcalcbench"})
        assert again.status_code == 400 and len(calls) == 2  # a failed build is not kept


def test_distinct_task_sets_are_bounded(mag_home):
    app = create_app(max_envs=4, idle_timeout_s=600, max_task_sets=1)
    with ServerThread(app) as srv, httpx.Client(base_url=srv.url, timeout=60) as raw:
        ok = raw.get("/datasets/treqs/tasks", params={**FAMILY, "limit": 1})
        assert ok.status_code == 200
        full = raw.get("/datasets/treqs/tasks", params={"database": "auto", "limit": 1})
        assert full.status_code == 429 and "task sets" in full.json()["detail"]
        assert raw.get("/datasets/treqs/tasks", params={**FAMILY}).status_code == 200


# ------------------------------------------------------------------------ load test


def test_concurrent_clients_on_loopback(server, gold):
    """20 clients, each with its own env, step at once; every step succeeds and every client
    sees only its own episode, files and output."""
    markers = [secrets.token_hex(8) for _ in range(LOAD_CLIENTS)]

    async def one(i: int) -> dict:
        marker = markers[i]
        async with AsyncEnvClient(server.url, timeout=60) as client:
            env = await client.make("treqs", "test", **FAMILY)
            try:
                obs, info = await env.reset(options={"task_index": i % gold["n"]})
                task_id = info["task_id"]
                outs = []
                steps = [f"open('mine.txt', 'w').write('{marker}')\nprint('{marker}')",
                         "import os\nprint(sorted(os.listdir('.')), open('mine.txt').read())",
                         "answer = [[-1.5]]\nprint(open('mine.txt').read())"][:LOAD_STEPS]
                for source in steps:
                    obs, reward, terminated, truncated, info = await env.step(code(source))
                    assert not (terminated or truncated) and reward == 0.0
                    assert info["task_id"] == task_id
                    outs.append(obs)
                listed = await client.list_envs()
                return {"outs": outs, "listed": [e["env_id"] for e in listed["envs"]],
                        "env_id": env.env_id, "task_id": task_id}
            finally:
                await env.close()

    async def main() -> list:
        return await asyncio.wait_for(
            asyncio.gather(*(one(i) for i in range(LOAD_CLIENTS)), return_exceptions=True), 240)

    baseline = len(server.registry.envs)
    results = asyncio.run(main())
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors[:3]
    for i, res in enumerate(results):
        others = [m for j, m in enumerate(markers) if j != i]
        assert res["listed"] == [res["env_id"]]
        for out in res["outs"]:
            assert markers[i] in out, out
            assert not any(m in out for m in others), out
    assert len({r["env_id"] for r in results}) == LOAD_CLIENTS
    assert len(server.registry.envs) == baseline
