"""The Ray backend on a local Ray instance (2 CPU slots): workers' episodes merged into one
store, work stealing (a slow worker takes fewer pairs), pooled sandboxes per worker, no lost
or duplicated episode when a worker dies, resume, and the CLI's ``--backend ray``. A real
two-node cluster (and the loss of a node) is in ``test_ray_cluster.py``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections import Counter
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

import medagentgym as mag  # noqa: E402
from medagentgym.agents import OracleAgent  # noqa: E402
from medagentgym.llm.testserver import Reply, TestServer  # noqa: E402
from medagentgym.rollout.ray_backend import (  # noqa: E402
    LLMAgents,
    Secret,
    StaticAgents,
    ray_session,
    run_tasks_ray_async,
)
from medagentgym.rollout.store import (  # noqa: E402
    TrajectoryStore,
    latest_by_key,
)

FAMILY = {"database": "synthetic"}  # see tests/conftest.py
SECRET = "sk-ray-planted-secret-5d2e"


def oracle_responder(tasks):
    """A test-server responder that answers each task's goal with its stage-0 oracle code
    (one ``validate_code`` turn solves it)."""
    from medagentgym.tasks import registry

    family = registry.get_family("treqs", **FAMILY)
    oracle = {t.goal: family.oracle_code(t, stage=0) for t in tasks}

    def respond(body):
        return Reply.action("validate_code", code=oracle[body["messages"][1]["content"]])
    return respond


def _ray_children() -> list[str]:
    """Command lines of this process's children that belong to Ray."""
    me = str(os.getpid())
    out = []
    for d in Path("/proc").glob("[0-9]*"):
        try:
            stat = (d / "stat").read_text().rsplit(")", 1)[1].split()
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if stat[1] == me and stat[0] != "Z" and "ray" in cmd:
            out.append(cmd)
    return out


def _sandboxes_of(home: Path) -> list[str]:
    """bwrap processes (of any parent) that mount data from ``home``."""
    found = []
    for d in Path("/proc").glob("[0-9]*"):
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "bwrap" in cmd.split(" ", 1)[0] and f"{home}/" in cmd:
            found.append(f"{d.name}: {cmd[:100]}")
    return found


def _wait_for_lines(path: Path, n: int, proc, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().count("\n") >= n:
            return
        if proc.poll() is not None:
            raise AssertionError(f"rollout exited early: {proc.communicate()}")
        time.sleep(0.05)
    raise AssertionError("rollout made no progress")


def test_kill_9_of_a_ray_rollout_then_resume_gives_one_record_per_pair(mag_home, tmp_path):
    """Runs first in this module, before this process starts Ray of its own: the CLI (a
    subprocess) starts a local Ray instance, is killed with SIGKILL mid-run, and a resumed
    run completes every (task, sample) exactly once; the killed run's sandboxes go away."""
    import subprocess
    import sys

    first = mag.load_tasks("treqs", "test", **FAMILY)[:4]  # what --limit 4 selects
    respond = oracle_responder(first)
    out = tmp_path / "run"
    env = {**os.environ, "MEDAGENTGYM_HOME": str(mag_home), "OPENAI_API_KEY": SECRET,
           "MEDAGENTGYM_CONFIG": str(tmp_path / "none.toml")}
    store = TrajectoryStore(out)
    with TestServer(delay=0.3, responder=respond) as server:
        args = [sys.executable, "-m", "medagentgym.cli.rollout", "-d", "treqs", "--limit", "4",
                "--samples", "3", "--database", "synthetic", "--model", "scripted",
                "--base-url", server.base_url, "--out", str(out), "--backend", "ray",
                "--ray-workers", "2", "--concurrency", "2", "--quiet"]
        proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        _wait_for_lines(store.path, 2, proc)
        proc.kill()
        proc.wait(timeout=10)
        assert len(store.load()) < 12
        done = subprocess.run([*args, "--resume", "--json"], env=env, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
    keys = Counter(t.key for t in store.load())
    assert set(keys) == {(t.id, k) for t in first for k in range(3)} and set(keys.values()) == {1}
    assert all(t.success for t in store.load())
    assert json.loads(done.stdout)["stored_pairs"] == 12
    assert SECRET not in store.path.read_text() + (out / "run.json").read_text()
    deadline = time.monotonic() + 20
    while _sandboxes_of(mag_home) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _sandboxes_of(mag_home) == []


@pytest.fixture(scope="module")
def local_ray(mag_home):
    """One local Ray instance for the module (started after $MEDAGENTGYM_HOME is set, so the
    workers inherit it), shut down at the end — and checked to be gone."""
    if ray.is_initialized():
        pytest.skip("Ray is already initialized in this process")
    with ray_session(num_cpus=2):
        yield ray
    assert not ray.is_initialized()
    deadline = time.monotonic() + 10
    while _ray_children() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _ray_children() == []


@pytest.fixture(scope="module")
def tasks(local_ray):
    return mag.load_tasks("treqs", "test", **FAMILY)[::100][:4]


def _run(tasks, agents, **kw):
    return asyncio.run(run_tasks_ray_async("treqs", tasks, agents, env_kwargs=FAMILY, **kw))


def test_shards_merge_into_one_store_and_resume_skips_them(tasks, tmp_path):
    store = TrajectoryStore(tmp_path)
    stats: dict = {}
    done = []
    trajs = _run(tasks, OracleAgent, samples=3, concurrency=4, store=store, run_id="r",
                 on_done=done.append, stats=stats)
    expected = {(t.id, k) for t in tasks for k in range(3)}
    assert len(trajs) == len(done) == 12 and {t.key for t in trajs} == expected
    assert all(t.success and t.error is None and t.run_id == "r" for t in trajs)
    stored = Counter(t.key for t in store.load())
    assert set(stored) == expected and set(stored.values()) == {1}
    assert len({w["pid"] for w in stats["workers"]}) == 2 and stats["lost"] == 0  # two workers

    assert _run(tasks, OracleAgent, samples=3, store=store, resume=True) == []
    more = _run(tasks, StaticAgents(OracleAgent), samples=4, store=store, resume=True)
    assert sorted(t.key for t in more) == sorted((t.id, 3) for t in tasks)
    assert len(store.load()) == 16


def test_work_stealing_gives_a_slow_worker_fewer_pairs(tasks, tmp_path):
    """Two workers of one slot each; the first to start an episode is made slow. Static
    shards would give each 6 of the 12 pairs; pulling from the queue, the slow one holds only
    what it runs, and the fast one takes the rest. Every key is stored once."""
    marker = str(tmp_path / "slow.pid")

    class Lagging(OracleAgent):
        async def begin(self, task, system_prompt, goal, env):
            with contextlib.suppress(FileExistsError):
                fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                os.write(fd, str(os.getpid()).encode())
                os.close(fd)
            if Path(marker).read_text() == str(os.getpid()):
                await asyncio.sleep(2.5)
            await super().begin(task, system_prompt, goal, env)

    store = TrajectoryStore(tmp_path / "run")
    stats: dict = {}
    trajs = _run(tasks, Lagging, samples=3, concurrency=2, store=store, stats=stats)
    keys = Counter(t.key for t in store.load())
    assert set(keys) == {(t.id, k) for t in tasks for k in range(3)} and set(keys.values()) == {1}
    assert len(trajs) == 12 and all(t.success for t in trajs) and stats["lost"] == 0
    slow = int(Path(marker).read_text())
    by_pid = {w["pid"]: w["episodes"] for w in stats["workers"]}
    assert len(by_pid) == 2 and sum(by_pid.values()) == 12, stats["workers"]
    assert by_pid[slow] <= 4 < 8 <= 12 - by_pid[slow], by_pid  # static shards: 6 and 6
    assert sorted(stats["served"].values()) == sorted(by_pid.values())


def test_the_work_queue_leases_waits_and_takes_back_what_a_lost_worker_held():
    """The driver's queue without Ray: leases of at most n, a waiting lease while pairs are
    out, a released worker's pairs going to the waiting one (once: retries=1), and the end
    only when every leased pair is done."""
    from medagentgym.rollout.ray_backend import WorkQueue

    async def main():
        q = WorkQueue(retries=1)
        await q.put([0, 1, 2, 3])
        assert await q.lease("a", 3) == [0, 1, 2] and await q.lease("b", 5) == [3]
        stale = asyncio.ensure_future(q.lease("a", 2))  # sent by "a" just before it died
        await asyncio.sleep(0.01)
        waiting = asyncio.ensure_future(q.lease("b", 2))
        await asyncio.sleep(0.05)
        assert not waiting.done()  # nothing queued, but "a" still holds pairs
        await q.done("a", [0])
        assert await q.release("a", [0, 2]) == (1, [])  # 1 back; 2 was stored by the driver
        assert await asyncio.wait_for(waiting, 1) == [1]
        assert await asyncio.wait_for(stale, 1) is None  # a released worker gets nothing more
        assert await q.release("b", []) == (1, [1])  # 3 back (first loss), 1 out of retries
        assert await q.lease("c", 4) == [3]
        last = asyncio.ensure_future(q.lease("c", 1))
        await asyncio.sleep(0.05)
        assert not last.done()  # its own pair is still out: it may come back
        await q.done("c", [3])
        assert await asyncio.wait_for(last, 1) is None
        assert q.stats() == {"a": 3, "b": 2, "c": 1}

    asyncio.run(main())


def test_pooled_workers_serve_every_episode_from_one_pool(tasks, tmp_path):
    """``sandbox_pool=True``: one worker per node (one node here) whose episodes share one
    pooled sandbox set; where bwrap does not work, the worker says why it did not pool."""
    from medagentgym.sandbox import _probe_bwrap

    stats: dict = {}
    store = TrajectoryStore(tmp_path)
    trajs = _run(tasks, OracleAgent, samples=2, concurrency=4, store=store, stats=stats,
                 sandbox_pool=True)
    assert len(trajs) == 8 and all(t.success for t in trajs)
    assert set(Counter(t.key for t in store.load()).values()) == {1}
    [worker] = stats["workers"]  # one node: one worker, not one per CPU slot
    assert worker["episodes"] == 8
    if _probe_bwrap()[0]:
        assert worker["sandbox_pool"] is True and "pool_refused" not in worker
        assert worker["pools"] == [2]  # one pool (one input set), a warm worker per CPU slot
    else:
        assert worker["sandbox_pool"] is False and worker["pool_refused"]


def test_a_dying_worker_loses_and_duplicates_no_episode(tasks, tmp_path):
    """A worker killed mid-run (os._exit, as an OOM kill would): the pairs it held go back to
    the queue and the other worker (or a fresh one) runs them; without retries they are
    stored as infrastructure errors, which resume runs again."""
    victim = (tasks[1].id, 1)

    def crashing(marker: str):
        class Crasher(OracleAgent):
            async def begin(self, task, system_prompt, goal, env):
                await super().begin(task, system_prompt, goal, env)
                if (task.id, self.k) == victim and not os.path.exists(marker):
                    Path(marker).write_text("x")
                    os._exit(1)

        def factory(k: int) -> OracleAgent:
            agent = Crasher()
            agent.k = k
            return agent
        return factory

    expected = {(t.id, k) for t in tasks for k in range(2)}
    store = TrajectoryStore(tmp_path / "a")
    stats: dict = {}
    trajs = _run(tasks, crashing(str(tmp_path / "a.marker")), samples=2, concurrency=2,
                 store=store, shard_retries=1, stats=stats)
    keys = Counter(t.key for t in store.load())
    assert set(keys) == expected and set(keys.values()) == {1}, keys
    assert all(t.success for t in trajs) and stats["lost"] == 0
    assert (tmp_path / "a.marker").exists()  # the worker did die

    store = TrajectoryStore(tmp_path / "b")
    stats = {}
    trajs = _run(tasks, crashing(str(tmp_path / "b.marker")), samples=2, concurrency=2,
                 store=store, shard_retries=0, stats=stats)
    lost = [t for t in trajs if t.error is not None]
    assert victim in {t.key for t in lost} and stats["lost"] == len(lost)
    assert all(t.error.source == "environment" and t.error.type == "WorkerLost" for t in lost)
    assert {t.key for t in trajs} == expected  # every pair accounted for, once
    assert store.done_keys() == expected - {t.key for t in lost}
    again = _run(tasks, OracleAgent, samples=2, store=store, resume=True)
    assert {t.key for t in again} == {t.key for t in lost}
    final = latest_by_key(store)
    assert len(final) == len(expected) and all(t.success for t in final)


def test_cli_backend_ray_against_the_test_server(tasks, tmp_path, monkeypatch):
    """``medagentgym rollout --backend ray``: the key is read by the driver and reaches the
    endpoint from the workers (whose environment never had it), but not the store, run.json
    or the sandbox."""
    from medagentgym.cli.rollout import main
    from medagentgym.tasks import registry

    first = mag.load_tasks("treqs", "test", **FAMILY)[:3]  # what --limit 3 selects
    family = registry.get_family("treqs", **FAMILY)
    oracle = {t.goal: family.oracle_code(t, stage=0) for t in first}
    spy = "import os\nprint(sorted(os.environ.items()))\nanswer = 'x'\n"

    def respond(body):
        msgs = body["messages"]
        if len(msgs) == 2:  # first turn: look at the sandbox's environment
            return Reply.action("validate_code", code=spy)
        return Reply.action("validate_code", code=oracle[msgs[1]["content"]])

    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("MEDAGENTGYM_CONFIG", str(tmp_path / "none.toml"))
    out = tmp_path / "run"
    with TestServer(responder=respond) as server:
        args = ["-d", "treqs", "--limit", "3", "--samples", "2", "--database", "synthetic",
                "--model", "scripted", "--base-url", server.base_url, "--out", str(out),
                "--backend", "ray", "--ray-workers", "2", "--concurrency", "4", "--quiet"]
        with pytest.raises(SystemExit) as exit_info:
            main(args)
        assert exit_info.value.code in (0, None)
        auth = {r.headers.get("authorization") for r in server.chat_requests()}
        assert server.responder_errors == []
    assert auth == {f"Bearer {SECRET}"}
    store = TrajectoryStore(out)
    records = store.load()
    keys = Counter(t.key for t in records)
    assert set(keys) == {(t.id, k) for t in first for k in range(2)} and set(keys.values()) == {1}
    assert all(t.success and t.turns == 2 and t.model == "scripted" for t in records)
    assert all("PATH" in t.steps[0].observation for t in records)  # the spy ran
    info = json.loads((out / "run.json").read_text())
    assert info["backend"] == "ray"
    assert SECRET not in store.path.read_text() + (out / "run.json").read_text()

    # resume: nothing left to do, nothing appended
    with TestServer(responder=respond) as server, pytest.raises(SystemExit):
        main([*args, "--resume"])
    assert len(store.load()) == 6


def test_secret_does_not_show_itself():
    s = Secret(SECRET)
    assert SECRET not in repr(s) + str(s) and s.reveal() == SECRET
    from medagentgym.llm import LLMConfig

    plan = LLMAgents(model=LLMConfig(model="m", concurrency=64), api_key=s)
    assert SECRET not in repr(plan)
    assert plan.for_workers(3).model.concurrency == 22
