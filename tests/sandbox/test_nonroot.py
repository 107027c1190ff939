"""The containment suite again, from an ordinary (non-root) user: bwrap in a user namespace.

CI runs as root; this test re-runs the conformance and adversarial suites as uid 65534. The
checkout may live anywhere (a 0700 ``mktemp -d`` clone, root's home): the tests and the package
source are copied to a world-readable temp dir, and where the interpreter lives under a
directory that user cannot enter (pyenv under /root, a venv inside a 0700 checkout), an outer
privileged bubblewrap gives the run a view in which only the interpreter's directories are
reachable there — nothing on the host changes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from medagentgym.sandbox.bwrap import find_bwrap, probe_bwrap

REPO = Path(__file__).resolve().parents[2]
NOBODY = 65534


def _blocked_ancestor(path: str) -> str | None:
    """The highest ancestor of ``path`` that 'others' cannot traverse, if any."""
    for parent in reversed(Path(path).parents):
        try:
            if not os.stat(parent).st_mode & 0o001:
                return str(parent)
        except OSError:
            return str(parent)
    return None


def _copy_for_nobody(dest: Path) -> Path:
    """What the inner run needs, readable by anyone: the package source, the sandbox tests."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "src", dest / "src", ignore=ignore)
    (dest / "tests").mkdir()
    for name in ("__init__.py", "conftest.py"):
        shutil.copy(REPO / "tests" / name, dest / "tests" / name)
    shutil.copytree(REPO / "tests" / "sandbox", dest / "tests" / "sandbox", ignore=ignore)
    shutil.copy(REPO / "pyproject.toml", dest / "pyproject.toml")
    for root, dirs, files in os.walk(dest):
        for d in dirs:
            os.chmod(os.path.join(root, d), 0o755)
        for f in files:
            os.chmod(os.path.join(root, f), 0o644)
    os.chmod(dest, 0o755)
    return dest


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to another uid")
def test_sandbox_suites_as_unprivileged_user(tmp_path_factory):
    if not probe_bwrap()[0] or not shutil.which("setpriv"):
        pytest.skip("bwrap or setpriv unavailable")
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="mag-nonroot-", dir="/tmp"))
    try:
        _run_as_nobody(_copy_for_nobody(base / "repo"), base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _run_as_nobody(repo: Path, base: Path) -> None:
    home = base / "home"
    home.mkdir()
    os.chown(home, NOBODY, NOBODY)
    os.chmod(base, 0o755)
    argv = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
            "env", f"HOME={home}", "MEDAGENTGYM_SANDBOX=bwrap", f"PYTHONPATH={repo / 'src'}",
            "PYTHONDONTWRITEBYTECODE=1",
            sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
            "tests/sandbox/test_conformance.py", "tests/sandbox/test_adversarial.py",
            "-k", "not local"]
    prefixes = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix)}
    blocked = {b for p in prefixes if (b := _blocked_ancestor(p))}
    if blocked:
        outer = [find_bwrap(), "--dev-bind", "/", "/"]
        for b in sorted(blocked, key=len):
            if any(b.startswith(o + "/") for o in blocked):
                continue  # already covered by an outer one
            outer += ["--perms", "0755", "--tmpfs", b]
            for p in sorted(prefixes):
                if p.startswith(b + "/"):
                    for mid in reversed(Path(p).parents):
                        if str(mid).startswith(b + "/"):
                            outer += ["--perms", "0755", "--dir", str(mid)]
                    outer += ["--ro-bind", p, p]
        argv = [*outer, "--", *argv]
    proc = subprocess.run(argv, cwd=repo, capture_output=True, text=True, timeout=600,
                          check=False)
    tail = (proc.stdout + proc.stderr)[-3000:]
    assert proc.returncode == 0, tail
    assert " passed" in proc.stdout and " failed" not in proc.stdout, tail
