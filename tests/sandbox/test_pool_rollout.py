"""Rollouts on pooled episodes: the oracle still solves every task, many episodes in flight
share a worker per CPU, and the pool is gone when the run ends."""

from __future__ import annotations

import pytest

import medagentgym as mag
from medagentgym.agents import OracleAgent
from medagentgym.rollout.runner import run_tasks
from medagentgym.sandbox import available_providers, run_sync
from medagentgym.sandbox.pool import PooledEpisode, SandboxPools

pytestmark = pytest.mark.skipif(not available_providers()["bwrap"][0],
                                reason="bubblewrap cannot run here")
FAMILY = {"database": "synthetic"}  # see tests/conftest.py


@pytest.fixture(scope="module")
def tasks(mag_home):
    return mag.load_tasks("treqs", "test", **FAMILY)[::100][:6]


def test_oracle_rollouts_on_a_shared_pool(tasks):
    pools = SandboxPools(workers=1)
    seen = []
    try:
        trajs = run_tasks("treqs", tasks, OracleAgent, concurrency=6, env_kwargs=FAMILY,
                          sandbox_pool=pools)
        assert len(trajs) == 6
        for t in trajs:
            assert t.success and t.error is None and t.reward == 1.0, (t.task_id, t.error)
        [pool] = pools.pools  # one input set, one pool, one worker for six envs
        assert len(pool.workers) == 1 and len(pool) == 0  # every episode closed
        seen.append(pool.workers[0].restarts)
    finally:
        run_sync(pools.close())
    assert seen == [0]


def test_run_tasks_owns_its_pool_when_asked(tasks):
    import medagentgym.env.env as env_module

    made = []
    orig = env_module.AsyncMedAgentEnv._prepare_sandbox

    async def spy(self, task):
        await orig(self, task)
        made.append(type(self._sandbox))

    env_module.AsyncMedAgentEnv._prepare_sandbox = spy
    try:
        trajs = run_tasks("treqs", tasks[:2], OracleAgent, concurrency=2, env_kwargs=FAMILY,
                          sandbox_pool=True)
    finally:
        env_module.AsyncMedAgentEnv._prepare_sandbox = orig
    assert all(t.success for t in trajs) and made and set(made) == {PooledEpisode}
