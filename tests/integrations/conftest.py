"""Shared fixtures of the adapter tests: an answerable TREQS task (synthetic database) and
its oracle code, computed test-side; a framework that cannot be imported is skipped with the
reason printed (``-ra``), never silently."""

from __future__ import annotations

import importlib
import os

import pytest

FAMILY = {"database": "synthetic"}  # as tests/conftest.py: one shared synthetic build

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("INSPECT_DISPLAY", "none")


def need(module: str, extra: str):
    """The framework's module, or a skip naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except Exception as exc:  # ImportError, or a broken install
        pytest.skip(f"{module} cannot be imported ({type(exc).__name__}: {exc}); "
                    f"`pip install medagentgym[{extra}]` to run this test")


@pytest.fixture(scope="module")
def gold(mag_home):
    """An answerable TREQS task, its oracle code, and a wrong answer's code."""
    from medagentgym.tasks.registry import get_family, load_tasks

    tasks = load_tasks("treqs", "test", **FAMILY)
    task = next(t for t in tasks if t.truth.value and t.truth.extra.get("sql"))
    code = get_family("treqs", **FAMILY).oracle_code(task)
    return {"task": task, "code": code, "index": tasks.index(task), "n": len(tasks)}
