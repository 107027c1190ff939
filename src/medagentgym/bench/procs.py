"""What the benchmarks measure about processes (Linux ``/proc``), and how they report.

Process trees, CPU seconds (a process's own, or with the children it has reaped), memory
fields of ``smaps_rollup``, the machine's busy time, and writing a JSON result. Vanished
processes count as nothing: benchmarks sample trees whose members come and go.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

TICK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command name (None if it is gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def descendants(root: int, exclude: int | None = None) -> list[int]:
    """Every process below ``root`` (not ``root``), leaving out ``exclude`` and its subtree."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None and fields[1].isdigit():
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        for c in children.get(todo.pop(), []):
            if c != exclude:
                out.append(c)
                todo.append(c)
    return out


def process_tree(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    return [pid, *descendants(pid)]


def own_cpu_s(pid: int) -> float:
    """CPU seconds of one process's own threads (not its children)."""
    f = _stat_fields(pid)
    return (int(f[11]) + int(f[12])) / TICK if f else 0.0


def cpu_by_pid(pids: list[int]) -> dict[int, float]:
    """CPU seconds of each process, its own and that of the children it has reaped (a child
    that exits is counted in its parent from then on)."""
    out = {}
    for pid in pids:
        f = _stat_fields(pid)
        if f:
            out[pid] = sum(int(x) for x in f[11:15]) / TICK
    return out


def total_cpu_s(pids: list[int]) -> float:
    """The sum of :func:`cpu_by_pid`."""
    return sum(cpu_by_pid(pids).values())


def smaps_kib(pids: list[int], field: str = "Pss") -> int:
    """The sum of one ``smaps_rollup`` field (``Pss``, ``Rss``, ...) over ``pids``, in KiB."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith(field + ":"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def machine_cpu_s() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot (idle and iowait are idle)."""
    v = list(map(int, Path("/proc/stat").read_text().splitlines()[0].split()[1:]))
    return (sum(v) - v[3] - v[4]) / TICK, sum(v) / TICK


def emit(result: Any, out: Path | None) -> None:
    """Print a benchmark's JSON result and, with ``out``, write it there too."""
    text = json.dumps(result, indent=2)
    print(text)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
