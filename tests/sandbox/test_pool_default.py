"""Pooled sandboxes as the default of `rollout` and `serve`: who gets a pool, who falls back to
a dedicated sandbox (services, too many input sets), and the CLI's choice and refusals."""

from __future__ import annotations

import asyncio

import pytest
from typer.testing import CliRunner

import medagentgym as mag
from medagentgym.cli.rollout import _use_pool
from medagentgym.errors import ConfigurationError
from medagentgym.sandbox import available_providers, run_sync
from medagentgym.sandbox.pool import PooledEpisode, SandboxPools

BWRAP = available_providers()["bwrap"][0]
needs_bwrap = pytest.mark.skipif(not BWRAP, reason="bubblewrap cannot run here")


def test_pools_give_none_when_every_pool_is_busy_and_evict_idle_ones(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("a")
    b.write_text("b")
    pools = SandboxPools(workers=1, max_pools=1)

    async def go():
        first = pools.try_episode({"/data/x": a})
        assert isinstance(first, PooledEpisode)
        # handed out but not started yet: its pool is in use all the same
        assert pools.try_episode({"/data/x": b}) is None
        with pytest.raises(ConfigurationError, match="max_pools"):
            pools.episode({"/data/x": b})
        again = pools.try_episode({"/data/x": a})  # same input set: same pool
        assert again is not None and again.pool is first.pool
        await again.close()
        assert pools.try_episode({"/data/x": b}) is None  # `first` is still open
        await first.close()  # every episode of the first set closed (never started)
        other = pools.try_episode({"/data/x": b})
        assert other is not None and other.pool is not first.pool
        await asyncio.sleep(0)  # the idle pool's close runs in the background
        assert len(pools.pools) == 1 and first.pool._closed  # the idle pool was closed
        await pools.close()

    asyncio.run(go())


class _FullPools:
    """A pool set that never has room (every pool busy with other input sets)."""

    def __init__(self):
        self.asked = 0

    def try_episode(self, inputs, *, preload="core"):
        self.asked += 1
        return None


def test_env_falls_back_to_its_own_sandbox_when_the_pools_are_full(mag_home):
    provider = "bwrap" if BWRAP else "local"
    pools = _FullPools()
    env = mag.make("treqs", "test", sandbox=provider, sandbox_pool=pools,
                   database="synthetic")
    try:
        env.reset(seed=0)
        assert pools.asked == 1
        sandbox = env.unwrapped.core._sandbox
        assert sandbox is not None and not isinstance(sandbox, PooledEpisode)
        obs, *_ = env.step('{"action": "validate_code", "params": {"code": "print(2 + 2 + 38)"}}')
        assert "42" in obs
    finally:
        env.close()


@needs_bwrap
def test_env_takes_a_pooled_episode_when_there_is_room(mag_home):
    pools = SandboxPools(workers=1)
    env = mag.make("treqs", "test", sandbox="bwrap", sandbox_pool=pools,
                   database="synthetic")
    try:
        env.reset(seed=0)
        obs, *_ = env.step('{"action": "validate_code", "params": {"code": "print(6 * 7)"}}')
        assert "42" in obs
        [pool] = pools.pools
        assert len(pool) == 1
    finally:
        env.close()
        run_sync(pools.close())


def test_rollout_pool_choice():
    assert _use_pool({"sandbox": "local", "sandbox_pool": None}) is False
    assert _use_pool({"sandbox": "bwrap", "sandbox_pool": False}) is False
    with pytest.raises(ConfigurationError, match="--no-sandbox-pool"):
        _use_pool({"sandbox": "local", "sandbox_pool": True})
    if BWRAP:
        assert _use_pool({"sandbox": "bwrap", "sandbox_pool": None}) is True
        assert _use_pool({"sandbox": "bwrap", "sandbox_pool": True}) is True


def _serve_args(monkeypatch, *argv):
    """What `medagentgym serve ARGV` would start (uvicorn is not run)."""
    import uvicorn

    import medagentgym.server.app as app_module
    from medagentgym.cli import app as cli_app

    seen = {}

    def fake_create_app(**kwargs):
        seen.update(kwargs)
        return object()

    monkeypatch.setattr(app_module, "create_app", fake_create_app)
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: None)
    result = CliRunner().invoke(cli_app, ["serve", *argv])
    return result, seen


def test_serve_pools_by_default_with_bwrap_and_not_with_local(monkeypatch):
    result, seen = _serve_args(monkeypatch, "--sandbox", "local")
    assert result.exit_code == 0, result.output
    assert seen["sandbox_pool"] is False and seen["max_envs"] == 64
    result, seen = _serve_args(monkeypatch, "--sandbox", "local", "--sandbox-pool")
    assert result.exit_code != 0
    assert "--no-sandbox-pool" in (result.output + str(result.exception))
    if BWRAP:
        result, seen = _serve_args(monkeypatch, "--sandbox", "bwrap")
        assert result.exit_code == 0, result.output
        assert seen["sandbox_pool"] is True and seen["max_envs"] == 1024
        result, seen = _serve_args(monkeypatch, "--sandbox", "bwrap", "--no-sandbox-pool",
                                   "--max-envs", "10")
        assert seen["sandbox_pool"] is False and seen["max_envs"] == 10



def test_ray_worker_stats_say_who_pooled():
    from medagentgym.cli.rollout import _merge_worker_stats

    merged = _merge_worker_stats({"lost": 1, "workers": [
        {"sandbox_pool": True, "episodes": 5, "pools": [2], "model": {"requests": 3}},
        {"sandbox_pool": False, "episodes": 2, "pool_refused": "bubblewrap cannot run here",
         "model": {"requests": 4}}]})
    assert merged["workers"] == 2 and merged["lost_episodes"] == 1
    assert merged["pooled_workers"] == 1 and merged["episodes_per_worker"] == [5, 2]
    assert merged["pool_refused"] == ["bubblewrap cannot run here"]
    assert merged["model"]["requests"] == 7
