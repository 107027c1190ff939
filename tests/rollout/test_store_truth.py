"""The store's part of issue 16: the run-directory lock, the settings check of ``--resume``,
one line for a full disk, and a count of corrupt lines."""

from __future__ import annotations

import errno
import subprocess
import sys

import pytest

from medagentgym.errors import ConfigurationError, InfrastructureError
from medagentgym.rollout.store import (
    StoreWriteError,
    TrajectoryStore,
    refuse_mismatch,
    settings_mismatch,
)
from medagentgym.types import Trajectory


def _traj(i: int) -> Trajectory:
    return Trajectory(task_id=f"t{i}", dataset="treqs", category="c", split="test",
                      sample_index=0, success=True)


def test_a_second_writer_is_refused_and_the_lock_dies_with_its_holder(tmp_path):
    store = TrajectoryStore(tmp_path / "run")
    with store.locked("rollout"):
        with pytest.raises(ConfigurationError, match="in use by another run") as info, \
                TrajectoryStore(tmp_path / "run").locked():
            pass
        assert "--resume" in str(info.value) and "another --out" in str(info.value)
        # another process is refused too
        code = ("from medagentgym.rollout.store import TrajectoryStore as S\n"
                f"with S({str(tmp_path / 'run')!r}).locked(): print('got it')")
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=60, check=False)
        assert proc.returncode != 0 and "in use by another" in proc.stderr
    with TrajectoryStore(tmp_path / "run").locked():  # released on exit
        pass
    # a holder killed with SIGKILL leaves no stale lock
    code = ("import os, time\nfrom medagentgym.rollout.store import TrajectoryStore as S\n"
            f"s = S({str(tmp_path / 'run')!r})\nwith s.locked():\n    print('held', flush=True)\n"
            "    time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(ConfigurationError, match=f"pid {holder.pid}"), \
            TrajectoryStore(tmp_path / "run").locked():
        pass
    holder.kill()
    holder.wait(timeout=10)
    with TrajectoryStore(tmp_path / "run").locked():
        pass


def test_settings_mismatch_names_each_difference():
    old = {"dataset": "treqs", "temperature_schedule": "0,0.6",
           "model": {"model": "a", "top_p": None, "stop": None}}
    same = {"dataset": "treqs", "temperature_schedule": "0,0.6",
            "model": {"model": "a", "top_p": None, "stop": None}, "extra": 1}
    keys = ("dataset", "temperature_schedule", "model.model", "model.top_p", "seed")
    assert settings_mismatch(old, same, keys) == []  # 'seed' was not recorded: not compared
    new = {"dataset": "treqs", "temperature_schedule": "0.9", "model": {"model": "b", "top_p": 0.5}}
    diff = settings_mismatch(old, new, keys)
    assert diff == ["temperature_schedule '0,0.6' -> '0.9'", "model.model 'a' -> 'b'",
                    "model.top_p None -> 0.5"]
    with pytest.raises(ConfigurationError) as info:
        refuse_mismatch(tmp := __import__("pathlib").Path("runs/x"), diff)
    msg = str(info.value)
    assert str(tmp) in msg and "'a' -> 'b'" in msg and "another --out" in msg
    assert "\n" not in msg
    refuse_mismatch(tmp, [])  # nothing differs: no refusal


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_a_full_disk_is_one_line_with_the_way_out(tmp_path, monkeypatch, code):
    store = TrajectoryStore(tmp_path / "run")
    store.append(_traj(0))

    def full(*args):
        raise OSError(code, "No space left on device")

    monkeypatch.setattr("medagentgym.rollout.store.os.fsync", full)
    with pytest.raises(StoreWriteError) as info:
        store.append(_traj(1))
    msg = str(info.value)
    assert isinstance(info.value, InfrastructureError) and isinstance(info.value, OSError)
    assert "free space, then run the same command with --resume" in msg and "\n" not in msg
    monkeypatch.setattr("medagentgym.rollout.store.os.replace", full)
    with pytest.raises(StoreWriteError, match="free space"):
        store.write_run_info({"run_id": "x"})
    assert not (tmp_path / "run" / "run.json.tmp").exists()
    monkeypatch.undo()
    # what was stored is intact (the record whose fsync failed may or may not be on disk)
    assert [t.task_id for t in store.load()][:1] == ["t0"] and store.corrupt_lines == 0


def test_other_write_failures_fall_back_then_say_what_to_fix(tmp_path, monkeypatch):
    store = TrajectoryStore(tmp_path / "run")

    def denied(fd):
        raise OSError(errno.EACCES, "Permission denied")

    monkeypatch.setattr("medagentgym.rollout.store.os.fsync", denied)
    with pytest.raises(StoreWriteError, match=r"Permission denied.*--resume"):
        store.append(_traj(0))


def test_corrupt_lines_are_counted(tmp_path):
    store = TrajectoryStore(tmp_path / "run")
    for i in range(3):
        store.append(_traj(i))
    with open(store.path, "ab") as fh:
        fh.write(b"not json\n\n{\"task_id\": 1}\n\xff\xfe\n{\"torn")
    assert len(store.load()) == 3
    assert store.corrupt_lines == 3  # the blank line is not counted, nor the torn last line
    assert TrajectoryStore(tmp_path / "run").count_corrupt() == 3
