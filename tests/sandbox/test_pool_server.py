"""The environment server on pooled episodes (``create_app(sandbox_pool=True)``), small and
bounded: many sessions, no process per session, steps that run code, idle sessions expire and
free their episode state. (The full load test: benchmarks/server_load.py.)"""

from __future__ import annotations

import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from medagentgym.sandbox import available_providers  # noqa: E402
from medagentgym.server.app import create_app  # noqa: E402
from tests.server.conftest import FAMILY, ServerThread, code  # noqa: E402

pytestmark = pytest.mark.skipif(not available_providers()["bwrap"][0],
                                reason="bubblewrap cannot run here")
SESSIONS = 6


def _worker_processes(pools) -> int:
    from tests.sandbox.test_pool import _tree

    return sum(len(_tree(w._proc.pid)) for p in pools.pools for w in p.workers
               if w._proc is not None)


def test_many_sessions_share_the_workers_and_idle_ones_expire(mag_home):
    # the default is unchanged: a dedicated sandbox per env
    assert create_app(token=None).state.registry.sandbox_pool is None
    app = create_app(max_envs=SESSIONS + 2, idle_timeout_s=4, token=None, sandbox_pool=True)
    with ServerThread(app) as srv, httpx.Client(base_url=srv.url, timeout=300) as http:
        envs = []
        for i in range(SESSIONS):
            env = http.post("/envs", json={"dataset": "treqs", "options": FAMILY}).json()
            h = {"X-Env-Secret": env["secret"]}
            assert http.post(f"/envs/{env['env_id']}/reset", json={"seed": i},
                             headers=h).status_code == 200
            r = http.post(f"/envs/{env['env_id']}/step", headers=h,
                          json={"action": code(f"open('mine.txt', 'w').write('{i}')\n"
                                               "answer = open('mine.txt').read()")})
            assert r.status_code == 200, r.text
            assert "Traceback" not in r.json()["observation"]
            envs.append((env["env_id"], h))
        pools = srv.registry.sandbox_pool
        [pool] = pools.pools
        assert len(pool) == SESSIONS
        # one worker tree per CPU, whatever the number of sessions
        assert _worker_processes(pools) <= 6 * len(pool.workers)
        # each session still sees only its own file
        eid, h = envs[3]
        r = http.post(f"/envs/{eid}/step", headers=h,
                      json={"action": code("import os\nprint(sorted(os.listdir('.')))")})
        assert "mine.txt" in r.json()["observation"]
        deadline = time.monotonic() + 30
        while http.get("/envs").json()["count"] and time.monotonic() < deadline:
            time.sleep(0.5)
        assert http.get("/envs").json()["count"] == 0
        assert len(pool) == 0  # every expired session's episode was closed
