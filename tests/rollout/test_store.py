"""TrajectoryStore: append-only JSON lines, torn tails, and what counts as done."""

from __future__ import annotations

import json

from medagentgym.rollout.store import FILENAME, TrajectoryStore
from medagentgym.types import EpisodeError, Grade, StepRecord, Trajectory


def traj(task_id: str, k: int = 0, *, error: str | None = None, success: bool = True) -> Trajectory:
    return Trajectory(
        task_id=task_id, dataset="mimic_iii", category="lab", split="test", sample_index=k,
        agent="oracle", success=success, reward=float(success), terminated=True, turns=1,
        steps=[StepRecord(turn=1, raw_action='{"action": "validate_code"}',
                          action={"action": "validate_code", "code": "answer = 1"},
                          observation="(no output)", reward=float(success),
                          grade=Grade.right("ok") if success else Grade.wrong("no"))],
        error=EpisodeError(source=error, type="X", message="m") if error else None,
        metadata={"note": "ünïcode ✓"},
    )


def test_round_trip(tmp_path):
    store = TrajectoryStore(tmp_path / "run")
    assert store.load() == [] and store.done_keys() == set()
    written = [traj("a"), traj("a", 1), traj("b", success=False)]
    for t in written:
        store.append(t)
    assert store.path == tmp_path / "run" / FILENAME
    assert store.load() == written
    assert len(store.path.read_text(encoding="utf-8").splitlines()) == 3
    assert store.done_keys() == {("a", 0), ("a", 1), ("b", 0)}


def test_torn_last_line_is_ignored_then_repaired(tmp_path):
    store = TrajectoryStore(tmp_path)
    store.append(traj("a"))
    line = traj("b").model_dump_json()
    with open(store.path, "a", encoding="utf-8") as fh:
        fh.write(line[: len(line) // 2])  # a crash mid-write
    assert [t.task_id for t in store.load()] == ["a"]
    assert store.done_keys() == {("a", 0)}
    store.append(traj("c"))
    lines = store.path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2 and all(json.loads(x) for x in lines)
    assert [t.task_id for t in store.load()] == ["a", "c"]


def test_torn_first_line_is_repaired(tmp_path):
    store = TrajectoryStore(tmp_path)
    store.path.write_text('{"task_id": "half', encoding="utf-8")
    assert store.load() == []
    store.append(traj("a"))
    assert [t.task_id for t in store.load()] == ["a"]


def test_done_keys_skip_infrastructure_errors(tmp_path):
    store = TrajectoryStore(tmp_path)
    store.append(traj("ok"))
    store.append(traj("wrong", success=False))
    store.append(traj("agent", error="agent", success=False))
    store.append(traj("sandbox", error="sandbox", success=False))
    store.append(traj("endpoint", error="model_endpoint", success=False))
    store.append(traj("env", error="environment", success=False))
    assert store.done_keys() == {("ok", 0), ("wrong", 0), ("agent", 0)}
    # a later successful retry of the same key counts
    store.append(traj("sandbox"))
    assert ("sandbox", 0) in store.done_keys()


def test_write_run_info(tmp_path):
    store = TrajectoryStore(tmp_path / "new")
    store.write_run_info({"run_id": "r1", "samples": 2})
    assert json.loads((tmp_path / "new" / "run.json").read_text()) == {"run_id": "r1", "samples": 2}


def test_schema_1_records_are_upgraded_on_read():
    from medagentgym.types import Trajectory

    old = {"schema_version": 1, "task_id": "t", "dataset": "d", "category": "c", "split": "test",
           "metadata": {"messages": [{"role": "user", "content": "hi"}], "usage": {"total": 3}}}
    t = Trajectory.model_validate(old)
    assert t.messages == [{"role": "user", "content": "hi"}]
    assert t.metadata == {"usage": {"total": 3}}


def _deep(n: int) -> list:
    root = cur = []
    for _ in range(n):
        cur.append([])
        cur = cur[0]
    return root


def test_unencodable_text_and_values_are_sanitised_not_fatal(tmp_path):
    """Lone surrogates anywhere (observation, model output, action, grade, error message,
    chat, metadata keys and values), objects JSON cannot hold, NaN, huge ints, deep nesting
    and oversized strings: the record is stored, reads back, and counts as done."""
    from medagentgym.rollout.sanitize import MAX_TEXT

    class Opaque:
        def __repr__(self):
            raise RuntimeError("no repr")

    bad = "x\ud800y"
    t = traj("a")
    t.steps = [StepRecord(turn=1, raw_action=bad, action={"action": "submit", "answer": [bad]},
                          observation=f"out {bad}", model_output=bad, reward=float("nan"),
                          grade=Grade.model_construct(correct=False, score=float("nan"), reason=bad,
                                      detail=bad))]
    t.error = EpisodeError(source="agent", type="RuntimeError", message=f"boom {bad}")
    t.messages = [{"role": "assistant", "content": bad}]
    t.metadata = {bad: bad, "obj": Opaque(), "inf": float("inf"), "big": 10**5000,
                  "deep": _deep(5000), "huge": "z" * (MAX_TEXT * 4), (1, 2): "tuple key"}
    store = TrajectoryStore(tmp_path)
    store.append(t)
    store.append(traj("b"))
    got, other = store.load()
    assert other.task_id == "b" and other.error is None
    fixed = "x\ufffdy"
    step = got.steps[0]
    assert (step.raw_action, step.model_output, step.action["answer"]) == (fixed, fixed, [fixed])
    assert step.observation == f"out {fixed}" and step.reward == 0.0
    assert step.grade.reason == fixed and step.grade.score == 0.0 and not step.grade.correct
    assert got.error.message == f"boom {fixed}" and got.messages[0]["content"] == fixed
    meta = got.metadata
    assert meta[fixed] == fixed and meta["obj"] == "<unrepresentable Opaque>"
    assert meta["inf"] is None and meta["big"].startswith("0x")
    assert "nested deeper than" in json.dumps(meta["deep"])
    assert MAX_TEXT <= len(meta["huge"]) < MAX_TEXT + 200
    assert "cut by the trajectory store" in meta["huge"]
    assert meta["(1, 2)"] == "tuple key" and meta["store_truncated"] == 2
    assert store.done_keys() == {("a", 0), ("b", 0)}
    store.path.read_bytes().decode("utf-8")  # strict UTF-8


def test_a_write_failure_for_one_record_does_not_lose_the_others(tmp_path, monkeypatch):
    """A failed write (here: fsync says EIO) is replaced by a minimal infrastructure-error
    record for that (task, sample), which ``--resume`` runs again; later appends go on."""
    import errno
    import os

    real_fsync, calls = os.fsync, []

    def flaky_fsync(fd):
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(errno.EIO, "I/O error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", flaky_fsync)
    store = TrajectoryStore(tmp_path)
    for name in ("a", "b", "c"):
        store.append(traj(name))
    records = store.load()
    assert [t.task_id for t in records if t.error is None] == ["a", "b", "c"]
    (stand_in,) = [t for t in records if t.error is not None]
    assert stand_in.key == ("b", 0) and stand_in.error.type == "StoreError"
    assert stand_in.error.source == "environment" and "I/O error" in stand_in.error.message


def test_a_record_that_cannot_be_serialised_becomes_a_minimal_error_record(tmp_path,
                                                                           monkeypatch):
    import medagentgym.rollout.store as store_mod

    real = store_mod.encode_line

    def encode(t):
        if t.task_id == "b" and t.error is None:
            raise ValueError("cannot encode \ud800 this")
        return real(t)

    monkeypatch.setattr(store_mod, "encode_line", encode)
    store = TrajectoryStore(tmp_path)
    for name in ("a", "b", "c"):
        store.append(traj(name))
    by_id = {t.task_id: t for t in store.load()}
    assert by_id["a"].success and by_id["c"].success
    assert by_id["b"].error.type == "StoreError" and "cannot encode \ufffd this" in \
        by_id["b"].error.message
    assert store.done_keys() == {("a", 0), ("c", 0)}  # resume runs b again


def test_a_store_that_cannot_write_at_all_raises(tmp_path, monkeypatch):
    import os

    import pytest

    def broken(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(OSError, match="No space left"):
        TrajectoryStore(tmp_path).append(traj("a"))


def test_damaged_lines_are_skipped_and_appends_go_on(tmp_path):
    store = TrajectoryStore(tmp_path)
    store.append(traj("a"))
    with open(store.path, "ab") as fh:
        fh.write(b'{"task_id": "\xff\xfe not utf-8"}\n')  # invalid UTF-8
        fh.write(b"[" * 100_000 + b"\n")  # nesting no parser accepts
        fh.write(b"not json at all\n")
    store.append(traj("b"))
    assert [t.task_id for t in store.load()] == ["a", "b"]
    assert store.done_keys() == {("a", 0), ("b", 0)}


def test_clean_text():
    from medagentgym.rollout.sanitize import clean, clean_text

    assert clean_text("ok ✓") == "ok ✓"
    assert clean_text("\ud83d\ude00 \ud800") == "\U0001f600 \ufffd"  # a split pair is joined
    assert clean_text("a" * 100, 10).startswith("aaaaa\n...[90 characters cut")
    assert clean({"k": (1, float("-inf"), b"\xff")}) == {"k": [1, None, "\ufffd"]}
