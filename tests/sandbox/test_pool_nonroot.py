"""The pooled-episode suites again as an ordinary user (bwrap in a user namespace, where all
episodes share uid 0 of that namespace and are kept apart by their mount views alone)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from medagentgym.sandbox.bwrap import probe_bwrap
from tests.sandbox import test_nonroot


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to another uid")
def test_pool_suites_as_unprivileged_user(monkeypatch):
    if not probe_bwrap()[0] or not shutil.which("setpriv"):
        pytest.skip("bwrap or setpriv unavailable")
    real_run = subprocess.run

    def run(argv, **kwargs):  # the same run as test_nonroot's, with the pool's test files
        argv = list(argv)
        i = argv.index("tests/sandbox/test_conformance.py")
        argv[i:i + 2] = ["tests/sandbox/test_pool.py", "tests/sandbox/test_pool_suites.py"]
        return real_run(argv, **kwargs)

    monkeypatch.setattr(test_nonroot.subprocess, "run", run)
    base = Path(tempfile.mkdtemp(prefix="mag-nonroot-", dir="/tmp"))
    try:
        test_nonroot._run_as_nobody(test_nonroot._copy_for_nobody(base / "repo"), base)
    finally:
        shutil.rmtree(base, ignore_errors=True)
