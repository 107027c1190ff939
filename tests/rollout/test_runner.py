"""run_tasks: concurrent episodes, resume, and the error boundary around a failing agent."""

from __future__ import annotations

import asyncio
import json

import pytest

import medagentgym as mag
from medagentgym.agents import OracleAgent
from medagentgym.rollout.runner import run_tasks, summarize
from medagentgym.rollout.store import TrajectoryStore

FAMILY = {"database": "synthetic"}  # see tests/conftest.py


@pytest.fixture(scope="module")
def tasks(mag_home):
    all_tasks = mag.load_tasks("treqs", "test", **FAMILY)
    return all_tasks[::100][:6]


def test_oracle_runs_every_pair_and_resume_skips_them(tasks, tmp_path):
    assert len(tasks) == 6
    store = TrajectoryStore(tmp_path)
    done = []
    trajs = run_tasks("treqs", tasks, OracleAgent, samples=2, concurrency=2, store=store,
                      run_id="r1", on_done=done.append, env_kwargs=FAMILY)
    assert len(trajs) == 12 and len(done) == 12
    assert sorted(t.key for t in trajs) == sorted((t.id, k) for t in tasks for k in range(2))
    for t in trajs:
        assert t.success and t.error is None and t.reward == 1.0, t.task_id
        assert t.terminated and t.turns == 1 and t.run_id == "r1" and t.agent == "oracle"
        assert t.system_prompt and t.steps[0].grade.correct
    stored = store.load()
    assert sorted(t.key for t in stored) == sorted(t.key for t in trajs)
    summary = summarize(stored)["treqs"]
    assert summary["episodes"] == 12 and summary["success_rate"] == 1.0

    again = run_tasks("treqs", tasks, OracleAgent, samples=2, concurrency=2, store=store,
                      resume=True, env_kwargs=FAMILY)
    assert again == [] and len(store.load()) == 12
    # a third sample is new work
    more = run_tasks("treqs", tasks[:1], OracleAgent, samples=3, store=store, resume=True,
                     env_kwargs=FAMILY)
    assert [t.key for t in more] == [(tasks[0].id, 2)]


def test_failing_episodes_are_recorded_and_the_rest_go_on(tasks, tmp_path):
    """An exception in the agent's code is the agent's failure (graded, stored as done); one
    inside the environment (here: the debugger) is an infrastructure error that resume
    retries. Either way the other episodes still run and succeed."""
    crash, broken = tasks[2].id, tasks[4].id

    class Flaky(OracleAgent):
        name = "flaky"

        async def act(self, observation, info):
            if self._task.id == crash:
                raise RuntimeError("agent exploded")
            if self._task.id == broken and info["turn"] == 0:
                return {"action": "debug", "params": {"code": "1/0", "error_msg": "x"}}
            return await super().act(observation, info)

    def debugger(source: str, error: str) -> str:
        raise RuntimeError("debugger exploded")

    store = TrajectoryStore(tmp_path)
    trajs = run_tasks("treqs", tasks, Flaky, concurrency=2, store=store,
                      env_kwargs={**FAMILY, "debugger": debugger})
    assert len(trajs) == 6
    by_id = {t.task_id: t for t in trajs}
    agent_failure, env_failure = by_id.pop(crash), by_id.pop(broken)
    assert agent_failure.error.source == "agent" and agent_failure.error.type == "RuntimeError"
    assert "agent exploded" in agent_failure.error.message and not agent_failure.success
    assert env_failure.error.source == "environment" and not env_failure.success
    assert "debugger exploded" in env_failure.error.message
    assert all(t.success and t.error is None for t in by_id.values())
    summary = summarize(trajs)["treqs"]
    assert summary["infra_errors"] == 1 and summary["success"] == 4
    # resume re-runs only the infrastructure failure
    assert (crash, 0) in store.done_keys() and (broken, 0) not in store.done_keys()
    retried = run_tasks("treqs", tasks, OracleAgent, store=store, resume=True, env_kwargs=FAMILY)
    assert [t.key for t in retried] == [(broken, 0)] and retried[0].success


# ------------------------------------------------------------------ one episode never stops a run


def _recurse(n: int = 0) -> int:
    return _recurse(n + 1) + 1  # a real RecursionError, as from cleaning a 3,000-deep tree


def brittle_env_class(bad: str, made: list, close: str = "raises"):
    """An env whose sandbox cleanup breaks when it meets task ``bad`` (once): that reset
    raises RecursionError, and from then on so do its resets and its close (or the close
    hangs), so the env can only be discarded."""
    from medagentgym.env.env import AsyncMedAgentEnv

    tripped: list[bool] = []

    class BrittleEnv(AsyncMedAgentEnv):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.broken = False
            made.append(self)

        async def areset(self, task):
            if task.id == bad and not tripped:
                tripped.append(True)
                self.broken = True
            if self.broken:
                _recurse()
            return await super().areset(task)

        async def aclose(self):
            if self.broken:
                if close == "hangs":
                    await asyncio.sleep(3600)
                _recurse()
            await super().aclose()

    return BrittleEnv


def _close_all(envs) -> None:
    from medagentgym.env.env import AsyncMedAgentEnv
    from medagentgym.sandbox import run_sync

    for env in envs:
        run_sync(AsyncMedAgentEnv.aclose(env))  # the real sandboxes of discarded envs too


def test_recursion_error_in_reset_and_close_is_recorded_and_the_env_replaced(
        tasks, tmp_path, monkeypatch):
    import medagentgym.rollout.runner as runner

    bad, made = tasks[1].id, []
    monkeypatch.setattr(runner, "AsyncMedAgentEnv", brittle_env_class(bad, made))
    store = TrajectoryStore(tmp_path)
    try:
        trajs = run_tasks("treqs", tasks, OracleAgent, concurrency=2, store=store,
                          env_kwargs=FAMILY)
    finally:
        _close_all(made)
    assert len(trajs) == 6 and len(made) == 3  # two workers, one env replaced
    by_id = {t.task_id: t for t in trajs}
    failed = by_id.pop(bad)
    assert failed.error.source == "environment" and failed.error.type == "RecursionError"
    assert "RecursionError" in failed.metadata["env_discarded"] and not failed.success
    assert all(t.success and t.error is None for t in by_id.values())
    assert sorted(t.key for t in store.load()) == sorted(t.key for t in trajs)
    assert (bad, 0) not in store.done_keys()
    made.clear()
    try:
        again = run_tasks("treqs", tasks, OracleAgent, store=store, resume=True,
                          env_kwargs=FAMILY)
    finally:
        _close_all(made)
    assert [t.key for t in again] == [(bad, 0)] and again[0].success


@pytest.mark.parametrize("close", ["raises", "hangs"])
def test_a_retry_runs_on_a_fresh_env_when_the_close_fails(tasks, monkeypatch, close):
    import medagentgym.rollout.runner as runner

    bad, made = tasks[0].id, []
    monkeypatch.setattr(runner, "AsyncMedAgentEnv", brittle_env_class(bad, made, close))
    monkeypatch.setattr(runner, "CLOSE_TIMEOUT", 0.5, raising=False)
    try:
        trajs = run_tasks("treqs", tasks[:3], OracleAgent, concurrency=1, infra_retries=1,
                          retry_delay=0.001, env_kwargs=FAMILY)
    finally:
        _close_all(made)
    assert len(made) == 2 and all(t.success and t.error is None for t in trajs)
    (retried,) = [t for t in trajs if t.task_id == bad]
    assert [f["type"] for f in retried.metadata["infra_failures"]] == ["RecursionError"]


def test_an_agent_factory_that_raises_fails_only_its_episode(tasks):
    def factory(k: int) -> OracleAgent:
        if k == 1:
            raise ValueError("no agent for sample 1")
        return OracleAgent()

    trajs = run_tasks("treqs", tasks[:2], factory, samples=2, concurrency=2, env_kwargs=FAMILY)
    assert len(trajs) == 4
    for t in trajs:
        if t.sample_index == 1:
            assert t.error.source == "environment" and t.error.type == "ValueError"
            assert "no agent for sample 1" in t.error.message
        else:
            assert t.success and t.error is None


def test_unstorable_text_and_values_are_sanitised_and_resume_does_not_crash(tasks, tmp_path):
    """A lone surrogate in an exception message and in an observation, and metadata that JSON
    cannot hold, made the store fail, which aborted the run (and ``--resume`` again)."""
    crash, hinted, odd = tasks[0].id, tasks[1].id, tasks[2].id

    class Odd(OracleAgent):
        name = "odd"

        async def act(self, observation, info):
            if self._task.id == crash:
                raise RuntimeError("bad byte \ud800 in the agent's output")
            if self._task.id == hinted and info["turn"] == 0:
                return {"action": "debug", "params": {"code": "1/0", "error_msg": "x"}}
            return await super().act(observation, info)

        def episode_metadata(self):
            if self._task is not None and self._task.id == odd:
                return {"blob": object(), "nan": float("nan"), "bits": {1, 2},
                        "\udcff key": b"\xff raw"}
            return {}

    def debugger(source: str, error: str) -> str:
        return "try this \ud83d\ude00 and \udc80"

    store = TrajectoryStore(tmp_path)
    kwargs = {"concurrency": 2, "store": store, "env_kwargs": {**FAMILY, "debugger": debugger}}
    trajs = run_tasks("treqs", tasks, Odd, **kwargs)
    assert len(trajs) == 6
    stored = {t.task_id: t for t in store.load()}
    assert set(stored) == {t.id for t in tasks}
    failed = stored[crash]
    assert failed.error.source == "agent" and "bad byte \ufffd in" in failed.error.message
    obs = stored[hinted].steps[0].observation
    assert obs == "try this \U0001f600 and \ufffd" and stored[hinted].success
    meta = stored[odd].metadata
    assert meta["blob"].startswith("<object object") and meta["nan"] is None
    assert meta["bits"] == [1, 2] and meta["\ufffd key"] == "\ufffd raw" and stored[odd].success
    assert all(t.error is None for k, t in stored.items() if k != crash)
    # the stored file is plain UTF-8 JSON lines, and resume finds nothing left to run
    lines = store.path.read_bytes().decode("utf-8").splitlines()
    assert len(lines) == 6 and all(json.loads(x) for x in lines)
    assert run_tasks("treqs", tasks, Odd, resume=True, **kwargs) == []


def test_a_ray_shard_streams_every_episode_sanitised(tasks):
    """The Ray worker's body, without Ray: a surrogate in one episode's error used to fail the
    whole shard (its sink serialised the raw trajectory)."""
    from medagentgym.rollout.ray_backend import StaticAgents, run_shard
    from medagentgym.types import Trajectory

    loud = tasks[0].id

    class Loud(OracleAgent):
        async def act(self, observation, info):
            if self._task.id == loud:
                raise RuntimeError("lone \udfff surrogate")
            return await super().act(observation, info)

    keys = [(t.id, 0) for t in tasks[:3]]
    items = list(run_shard("treqs", "test", tasks[:3], keys, StaticAgents(Loud), "r1",
                           {"env_kwargs": FAMILY}))
    assert [kind for kind, _ in items] == ["traj"] * 3 + ["stats"]
    trajs = {t.task_id: t for t in (Trajectory.model_validate_json(p) for _, p in items[:3])}
    assert trajs[loud].error.message.startswith("lone \ufffd surrogate")
    assert all(t.success for k, t in trajs.items() if k != loud)


def test_cancellation_still_stops_the_run_and_stores_nothing(tasks, tmp_path, monkeypatch):
    """The boundaries catch what episodes raise, not cancellation (Ctrl-C): it propagates,
    the sandboxes are closed and no partial episode is stored."""
    import medagentgym.rollout.runner as runner
    from medagentgym.rollout.runner import run_tasks_async

    made: list = []
    monkeypatch.setattr(runner, "AsyncMedAgentEnv", brittle_env_class("none", made))

    async def main() -> None:
        started = asyncio.Event()

        class Stuck(OracleAgent):
            async def act(self, observation, info):
                started.set()
                await asyncio.sleep(3600)

        store = TrajectoryStore(tmp_path)
        run = asyncio.ensure_future(run_tasks_async("treqs", tasks[:2], Stuck, concurrency=2,
                                                    store=store, env_kwargs=FAMILY))
        await asyncio.wait_for(started.wait(), 60)
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run
        assert store.load() == []

    asyncio.run(main())
    assert len(made) == 2 and all(env._sandbox is None for env in made)
