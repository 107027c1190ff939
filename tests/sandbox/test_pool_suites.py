"""The whole conformance and adversarial suites, run again on pooled episodes
(:mod:`medagentgym.sandbox.pool`): each test's episode shares its one worker with a
neighbour episode that planted files in its own /tmp and /workspace first."""

from __future__ import annotations

import inspect

import pytest

from medagentgym.sandbox import SandboxLimits, SyncSandbox, available_providers, run_sync
from medagentgym.sandbox.pool import SandboxPool
from tests.sandbox import test_adversarial as _adv
from tests.sandbox import test_conformance as _conf

pytestmark = pytest.mark.skipif(not available_providers()["bwrap"][0],
                                reason="bubblewrap cannot run here")

NEIGHBOUR = "neighbour-secret-5521"


def _reuse(module, fixture_names):
    """The module's tests that take one of ``fixture_names`` (the sandbox under test)."""
    out = {}
    for name, fn in vars(module).items():
        if name.startswith("test_") and callable(fn):
            params = set(inspect.signature(fn).parameters)
            if params & fixture_names:
                out[name] = fn
    return out


globals().update(_reuse(_conf, {"sandbox", "isolating"}))
globals().update(_reuse(_adv, {"sb"}))
test_no_stray_processes_after_suite = _conf.test_no_stray_processes_after_suite
_processes_before_module = _conf._processes_before_module
inputs = _adv.inputs


def _pooled(pool_inputs, limits):
    pool = SandboxPool(pool_inputs, workers=1, limits=limits)
    neighbour = SyncSandbox(pool.episode()).start()
    r = neighbour.execute(f"open('/workspace/n.txt', 'w').write('{NEIGHBOUR}')\n"
                          f"open('/tmp/n.txt', 'w').write('{NEIGHBOUR}')\nanswer = 1")
    assert r.answer == 1, r
    return pool, neighbour


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    """Conformance: an episode of a one-worker pool, a neighbour beside it."""
    data = tmp_path_factory.mktemp("inputs") / "input.txt"
    data.write_text("hello from the host\n")
    limits = SandboxLimits(memory_bytes=2 * 1024**3, max_output_bytes=200_000, nproc=48)
    pool, neighbour = _pooled({"/data/input.txt": data}, limits)
    box = SyncSandbox(pool.episode()).start()
    yield box
    r = box.execute("import os\nanswer = os.listdir('/workspace') + os.listdir('/tmp')")
    assert "n.txt" not in (r.answer or []), r
    # (the neighbour's files did not survive: the suite kills the shared worker twice, and a
    # worker's death takes its episodes' files, as a dedicated sandbox's restart does)
    neighbour.close()
    run_sync(pool.close())


@pytest.fixture(scope="module")
def sb(inputs):
    """Adversarial: the same, with the adversarial suite's tight limits."""
    pool, neighbour = _pooled(inputs[0], _adv.LIMITS)
    box = SyncSandbox(pool.episode()).start()
    yield box
    assert neighbour.read_file("/tmp/n.txt") == NEIGHBOUR.encode()
    run_sync(pool.close())
