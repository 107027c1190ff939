"""The README's code blocks run (issue 16, part 2).

* every ``medagentgym ...`` line of a shell block parses against the real command line
  (commands, options and required arguments exist; placeholders stand for values);
* the cheap, offline ones among them really run, and succeed;
* every Python block runs, unchanged, in a fresh interpreter.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main

from medagentgym.cli import app

README = Path(__file__).resolve().parents[2] / "README.md"
#: shell commands cheap and offline enough to run for real (first words after `medagentgym`)
RUN_FOR_REAL = {("--help",), ("--version",), ("tasks", "datasets"), ("tasks", "list"),
                ("data", "status"), ("sandbox", "check")}


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.DOTALL)


def shell_commands() -> list[list[str]]:
    """``medagentgym`` command lines of the bash blocks, comments dropped, continuation lines
    joined, ``a | b`` alternatives and ``a && b`` / ``a; b`` sequences split, and
    ``[--optional]`` parts included."""
    out = []
    for block in blocks("bash"):
        text = block.replace("\\\n", " ")
        for line in text.splitlines():
            line = re.split(r"\s+#", line, maxsplit=1)[0].strip()
            if not line.startswith("medagentgym"):
                continue
            for alt in re.split(r" \| | && |; ", line):
                words = shlex.split(alt.replace("[", " ").replace("]", " "))
                if not words or (words[0] != "medagentgym" and "=" in words[0]):
                    continue  # e.g. `VAR=value` in a sequence
                if words[0] != "medagentgym":
                    words.insert(0, "medagentgym")
                out.append(words[1:])
    return out


def parse(args: list[str]):
    """Parse ``args`` as the CLI would, without running the command."""
    cmd, name, ctx = typer.main.get_command(app), "medagentgym", None
    while True:
        ctx = cmd.make_context(name, list(args), parent=ctx)
        if not hasattr(cmd, "commands"):
            return ctx
        rest = [*getattr(ctx, "_protected_args", getattr(ctx, "protected_args", [])), *ctx.args]
        if not rest:
            return ctx
        name, cmd, args = cmd.resolve_command(ctx, rest)


def test_the_readme_has_the_blocks_this_test_reads():
    commands = shell_commands()
    assert len(commands) >= 25 and len(blocks("python")) >= 2
    assert ["rollout", "mimic_iii", "--split", "train", "--model", "MODEL", "--base-url", "URL",
            "--samples", "16", "--concurrency", "64", "--out", "runs/x"] in commands


def test_every_shell_command_of_the_readme_parses():
    problems = []
    for args in shell_commands():
        if "--help" in args or "--version" in args:
            continue  # these print and exit while parsing; they run below
        try:
            parse(args)
        except Exception as exc:  # click's usage errors
            problems.append(f"medagentgym {' '.join(args)}: {exc}")
    assert not problems, "\n".join(problems)


def test_a_stale_command_would_be_caught():
    with pytest.raises(Exception, match="No such option"):
        parse(["run", "eicu", "--out", "x", "--no-such-flag"])
    with pytest.raises(Exception, match="No such command"):
        parse(["evaluate", "runs/x"])


@pytest.mark.slow  # `tasks list mimic_iii` builds the synthetic database on first use
def test_the_cheap_offline_shell_commands_run(mag_home):
    ran = 0
    env = {**os.environ, "MEDAGENTGYM_HOME": str(mag_home), "NO_COLOR": "1"}
    for args in shell_commands():
        if tuple(args[:2]) not in RUN_FOR_REAL and tuple(args[:1]) not in RUN_FOR_REAL:
            continue
        if any(a.isupper() for a in args):  # a placeholder (TASK_ID, URL, ...)
            continue
        proc = subprocess.run([sys.executable, "-c", "from medagentgym.cli import main; main()",
                               *args], capture_output=True, text=True, env=env, timeout=300,
                              check=False)
        assert proc.returncode == 0, (args, proc.stderr[-2000:])
        assert proc.stdout.strip(), args
        ran += 1
    assert ran >= 5


@pytest.mark.slow  # the quick start builds a synthetic MIMIC-III database on first use
@pytest.mark.parametrize("index", range(len(blocks("python"))))
def test_the_python_blocks_run(mag_home, tmp_path, index):
    code = blocks("python")[index]
    env = {**os.environ, "MEDAGENTGYM_HOME": str(mag_home)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_the_datasets_the_quick_start_names_are_registered():
    from medagentgym.tasks.registry import list_datasets

    line = next(x for x in blocks("python")[0].splitlines() if "list_datasets()" in x)
    named = re.findall(r"'(\w+)'", line)
    assert named and set(named) <= set(list_datasets())
