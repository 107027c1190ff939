"""Progress for long commands, always on stderr (stdout carries only results).

On a terminal: a rich progress bar. Elsewhere (a log file, CI, ``2> log``): one plain-text
line every ``interval`` seconds (``$MEDAGENTGYM_PROGRESS_INTERVAL``, default 30) and a last
one at the end, so a run that is piped or redirected is never silent.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import typer

DEFAULT_INTERVAL = 30.0


def _interval() -> float:
    try:
        return max(0.0, float(os.environ.get("MEDAGENTGYM_PROGRESS_INTERVAL", DEFAULT_INTERVAL)))
    except ValueError:
        return DEFAULT_INTERVAL


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class Progress:
    """``with Progress(label, total) as p: p.update(done, stats)``."""

    def __init__(self, label: str, total: int, *, quiet: bool = False,
                 interval: float | None = None) -> None:
        self.label, self.total, self.quiet = label, total, quiet
        self.interval = _interval() if interval is None else interval
        self.done = 0
        self.stats = ""
        self._t0 = time.monotonic()
        self._last_line = self._t0
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> Progress:
        if self.quiet:
            return self
        if sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as Bar

            self._bar = Bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[stats]}"), TimeElapsedColumn(),
                            TimeRemainingColumn(), console=Console(stderr=True),
                            transient=False, refresh_per_second=4)
            self._bar.__enter__()
            self._task = self._bar.add_task(self.label, total=self.total, stats="")
        else:
            typer.echo(f"{self.label}: {self.total} episodes to run", err=True)
        return self

    def update(self, done: int | None = None, stats: str | None = None) -> None:
        if done is not None:
            self.done = done
        if stats is not None:
            self.stats = stats
        if self.quiet:
            return
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done, stats=self.stats)
            return
        now = time.monotonic()
        if self.interval and now - self._last_line >= self.interval:
            self._last_line = now
            self._line()

    def _line(self) -> None:
        typer.echo(f"{self.label}: {self.done}/{self.total} done  {self.stats}  "
                   f"[{_clock(time.monotonic() - self._t0)}]".rstrip(), err=True)

    def __exit__(self, *exc: object) -> None:
        if self.quiet:
            return
        if self._bar is not None:
            self._bar.__exit__(*exc)
        elif exc[0] is None:
            self._line()
