"""The Ray backend on a real local cluster: two raylets started with ``ray start --head`` and
``ray start --address`` on this machine (own temp dirs, one CPU slot each, free ports), a run
through it against the scripted model server, and the loss of the second node mid-run
(``kill -9`` of every process of that node): the run completes with every (task, sample)
stored once — the lost pairs re-run on the surviving node, or, with no retries left, stored
as ``WorkerLost`` and completed by a resumed run."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'medagentgym[ray]')")

import medagentgym as mag  # noqa: E402
from medagentgym.llm import LLMConfig  # noqa: E402
from medagentgym.llm.testserver import TestServer  # noqa: E402
from medagentgym.rollout.ray_backend import LLMAgents, run_tasks_ray_async  # noqa: E402
from medagentgym.rollout.store import TrajectoryStore, latest_by_key  # noqa: E402
from tests.rollout.test_ray_backend import FAMILY, SECRET, oracle_responder  # noqa: E402

pytestmark = pytest.mark.slow

RAY = str(Path(sys.executable).with_name("ray"))
# the GCS notices a dead raylet within ~2 s instead of ~15 s
FAST_HEALTH = '{"health_check_period_ms":500,"health_check_timeout_ms":1000,"health_check_failure_threshold":4}'


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _procs() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, session id) of every live process."""
    out = {}
    for d in Path("/proc").glob("[0-9]*"):
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            out[int(d.name)] = (int(fields[1]), int(fields[3]))
    return out


class Node:
    """One ``ray start`` node: its processes are those of its session and their descendants
    (Ray workers start sessions of their own)."""

    def __init__(self, name: str, root: Path, args: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.temp = root / name
        ports = _free_ports(2)
        cmd = [RAY, "start", *args, "--num-cpus", "1", "--temp-dir", str(self.temp),
               "--dashboard-agent-listen-port", str(ports[0]),
               "--metrics-export-port", str(ports[1]), "--disable-usage-stats"]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)
        self.sid = proc.pid
        out, _ = proc.communicate(timeout=120)
        if proc.returncode != 0:
            self.kill()
            raise RuntimeError(f"`ray start` of {name} failed:\n{out[-3000:]}")

    def pids(self) -> set[int]:
        procs = _procs()
        found = {pid for pid, (_, sid) in procs.items() if sid == self.sid}
        grew = True
        while grew:
            more = {pid for pid, (ppid, _) in procs.items() if ppid in found} - found
            found |= more
            grew = bool(more)
        return found

    def runs_episodes(self) -> bool:
        """Whether a worker of this node has sandboxes (it leased pairs and runs them)."""
        for pid in self.pids():
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].endswith(b"bwrap"):
                    return True
        return False

    def kill(self) -> None:
        """``kill -9`` of every process of this node (twice: stragglers forked meanwhile)."""
        for _ in range(2):
            for pid in self.pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.2)


class Cluster:
    def __init__(self, env: dict[str, str]) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="magray-", dir="/tmp"))  # socket paths stay short
        self.env = env
        self.nodes: list[Node] = []
        self.port = _free_ports(1)[0]
        self.address = f"127.0.0.1:{self.port}"

    def start_head(self) -> None:
        dash = _free_ports(1)[0]
        self.nodes.append(Node("head", self.root, [
            "--head", "--port", str(self.port), "--node-ip-address", "127.0.0.1",
            "--include-dashboard", "false", "--dashboard-port", str(dash),
            "--system-config", FAST_HEALTH], self.env))

    def add_node(self) -> Node:
        node = Node(f"node{len(self.nodes)}", self.root,
                    ["--address", self.address, "--node-ip-address", "127.0.0.1"], self.env)
        self.nodes.append(node)
        return node

    def teardown(self) -> None:
        for node in reversed(self.nodes):
            node.kill()
        shutil.rmtree(self.root, ignore_errors=True)


def _driver(argv: str) -> None:
    """The driver, run in its own process (``python -c``): Ray reads its token settings when
    it is imported, so a driver joins a token-protected cluster from a fresh process, as the
    CLI would. Runs the 4 tasks x 3 samples and writes the stats and the nodes it saw."""
    import json

    args = json.loads(argv)
    tasks = mag.load_tasks("treqs", "test", **FAMILY)[::100][:4]
    ray.init(address=args["address"], include_dashboard=False, log_to_driver=False)
    nodes = {n["NodeID"]: n["RayletSocketName"] for n in ray.nodes() if n["Alive"]}
    stats: dict = {}
    agents = LLMAgents.resolve(LLMConfig(model="scripted", base_url=args["base_url"]))
    asyncio.run(run_tasks_ray_async(
        "treqs", tasks, agents, env_kwargs=FAMILY, samples=3, concurrency=4,
        store=TrajectoryStore(args["out"]), resume=args["resume"], stats=stats,
        sandbox_pool=True, run_id="cluster", shard_retries=args["retries"]))
    Path(args["stats"]).write_text(json.dumps({"stats": stats, "nodes": nodes}))
    ray.shutdown()


@pytest.fixture(scope="module")
def cluster(mag_home):
    """Head + one worker node. Torn down (every process of every node killed, temp dirs
    removed) even when a test fails."""
    # a token of our own: `ray start --head` turns token auth on when ~/.ray/auth_token
    # exists, and a joining node (and the driver) must then present the same token
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
            "RAY_USAGE_STATS_ENABLED": "0"}
    env = {**os.environ, **auth, "MEDAGENTGYM_HOME": str(mag_home)}
    env.pop("OPENAI_API_KEY", None)  # the workers get the key from the driver only
    c = Cluster(env)
    try:
        c.start_head()
        c.add_node()
        yield c
    finally:
        c.teardown()
    assert not any(n.pids() for n in c.nodes)


@pytest.fixture(scope="module")
def tasks(cluster):
    return mag.load_tasks("treqs", "test", **FAMILY)[::100][:4]


def _lines(store: TrajectoryStore) -> int:
    return store.path.read_text().count("\n") if store.path.exists() else 0


def _drive(cluster: Cluster, tasks, out: Path, *, retries: int, victim: Node | None = None,
           after: int = 0, resume: bool = False) -> dict:
    """Run the driver against the scripted model server; kill ``victim`` once ``after``
    episodes are stored and it runs some itself. Returns what the driver wrote (stats,
    nodes)."""
    import json

    store = TrajectoryStore(out)
    stats_path = out.parent / f"{out.name}-stats-{int(resume)}.json"
    with TestServer(delay=0.4, responder=oracle_responder(tasks)) as server:
        argv = json.dumps({"address": cluster.address, "base_url": server.base_url,
                           "out": str(out), "resume": resume, "retries": retries,
                           "stats": str(stats_path)})
        env = {**cluster.env, "OPENAI_API_KEY": SECRET}
        proc = subprocess.Popen(
            [sys.executable, "-c", f"from tests.rollout.test_ray_cluster import _driver; "
                                   f"_driver({argv!r})"],
            cwd=Path(__file__).resolve().parents[2], env=env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)
        try:
            if victim is not None:
                deadline = time.monotonic() + 180
                while _lines(store) < after or not victim.runs_episodes():
                    assert proc.poll() is None, f"the run ended early: {proc.communicate()[0][-3000:]}"
                    assert time.monotonic() < deadline, "the run made no progress"
                    time.sleep(0.05)
                victim.kill()
            output, _ = proc.communicate(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 0, output[-4000:]
        assert server.responder_errors == []
    if victim is not None:
        assert not victim.pids()
    return json.loads(stats_path.read_text())


def test_losing_a_node_mid_run_reruns_its_pairs_on_the_survivor(cluster, tasks, tmp_path):
    """Pooled workers, one per node; the second node is killed while its worker runs
    episodes: what it held goes back to the queue and the head's worker runs it."""
    victim = cluster.nodes[-1]
    out = tmp_path / "run"
    seen = _drive(cluster, tasks, out, retries=1, victim=victim, after=2)
    stats, nodes = seen["stats"], seen["nodes"]
    assert len(nodes) == 2  # the run started on two nodes
    store = TrajectoryStore(out)
    expected = {(t.id, k) for t in tasks for k in range(3)}
    keys = Counter(t.key for t in store.load())
    assert set(keys) == expected and set(keys.values()) == {1}, keys
    assert all(t.success and t.error is None for t in store.load()), [
        t.error for t in store.load() if t.error]
    assert stats["lost"] == 0
    # pooled: one worker per node, both ran pairs; only the survivor (on the head) reported
    assert len(stats["served"]) == 2 and all(v > 0 for v in stats["served"].values()), stats
    [survivor] = stats["workers"]
    assert str(cluster.nodes[0].temp) in nodes[survivor["node"]]
    assert survivor["sandbox_pool"] is True and survivor["pools"] == [1]  # 1 CPU slot: 1 warm worker
    victim_served = stats["served"][next(w for w in stats["served"] if w != survivor["worker"])]
    assert survivor["episodes"] >= 12 - victim_served + 1  # it re-ran what the victim held
    assert SECRET not in store.path.read_text()


def test_with_no_retries_lost_pairs_are_worker_lost_and_resume_completes_them(
        cluster, tasks, tmp_path):
    """Without retries the lost node's pairs are stored as WorkerLost (each key still once);
    a resumed run (what ``--resume`` does) runs exactly those again."""
    victim = cluster.add_node()
    out = tmp_path / "run"
    stats = _drive(cluster, tasks, out, retries=0, victim=victim, after=1)["stats"]
    store = TrajectoryStore(out)
    expected = {(t.id, k) for t in tasks for k in range(3)}
    keys = Counter(t.key for t in store.load())
    assert set(keys) == expected and set(keys.values()) == {1}, keys  # each once, lost or not
    lost = {t.key for t in store.load() if t.error is not None}
    assert lost and stats["lost"] == len(lost), stats
    assert all(t.error.source == "environment" and t.error.type == "WorkerLost"
               for t in store.load() if t.error is not None)
    assert store.done_keys() == expected - lost  # what --resume runs again

    # resume: only the lost pairs run (on the surviving node), each once more
    again = _drive(cluster, tasks, out, retries=0, resume=True)["stats"]
    assert again["lost"] == 0 and sum(w["episodes"] for w in again["workers"]) == len(lost)
    final = latest_by_key(store)
    assert {t.key for t in final} == expected and all(t.success for t in final)
    assert len(store.load()) == 12 + len(lost)
