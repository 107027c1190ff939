"""Prompt templates, kept as text files a user can read and override.

Set ``MEDAGENTGYM_PROMPTS`` to a directory holding files of the same names to override any
of them (``system.md``, ``action_<name>.md``, ``protocol_<name>.md``). Templates use
``str.format`` fields; literal braces are doubled.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

_HERE = Path(__file__).parent


@functools.cache
def _read(name: str, override: str | None) -> str:
    if override:
        candidate = Path(override) / name
        if candidate.is_file():
            return candidate.read_text()
    return (_HERE / name).read_text()


def template(name: str) -> str:
    return _read(name, os.environ.get("MEDAGENTGYM_PROMPTS"))


#: prompt styles: the paper's full action descriptions, or a compact variant for small models
STYLES = ("paper", "compact")

#: display names of the modules a family's sandbox preloads
_DISPLAY = {"numpy": "numpy", "pandas": "pandas", "sqlite3": "sqlite3", "scipy": "scipy",
            "statsmodels.api": "statsmodels", "sklearn": "scikit-learn",
            "lifelines": "lifelines", "Bio": "Biopython", "requests": "requests"}

ANSWER_RULE = ("Store your final answer in the variable `answer` (a number, string, list or "
               "table). Printing alone is not an answer.")
NO_ANSWER_RULE = "Your code is checked after every run (see the task); `answer` is not needed."


def libraries(preload: Sequence[str]) -> str:
    """The libraries a prompt names: the preloaded ones a person would recognise."""
    names = [_DISPLAY[m] for m in preload if m in _DISPLAY]
    names = list(dict.fromkeys(names)) or ["the Python standard library"]
    return ", ".join(names[:-1]) + (" and " if len(names) > 1 else "") + names[-1]


def example_turn(code: str) -> str:
    """One worked ``validate_code`` turn around ``code`` (a JSON-escaped string)."""
    action = json.dumps({"action": "validate_code", "params": {"code": code}})
    return template("example.md").format(example=action).rstrip()


def system_prompt(instructions: str, actions: Sequence[str], protocol: str, max_turns: int,
                  described: Mapping[str, str] | None = None, *, style: str = "paper",
                  preload: Sequence[str] = ("numpy", "pandas", "sqlite3"),
                  needs_answer: bool = True, example_code: str | None = None) -> str:
    """``described``: the text of actions a family adds (name -> description); ``style``:
    "paper" (full action descriptions) or "compact" (one line and the JSON form of each);
    ``example_code``: the code of the worked example turn (None: no example)."""
    described = described or {}
    fields = {"libraries": libraries(preload),
              "answer_rule": ANSWER_RULE if needs_answer else NO_ANSWER_RULE}

    def describe(a: str) -> str:
        text = described[a] if a in described else template(f"action_{a}.md").format(**fields)
        lines = [ln for ln in text.rstrip().splitlines() if ln.strip()]
        if style == "compact":
            head = lines[0].split(":", 1)[0] if lines else f"- {a}"
            form = next((ln.strip() for ln in lines if ln.strip().startswith("{")), "")
            return f"{head}: {form}" if form else lines[0] if lines else f"- {a}"
        return "\n".join(lines)

    action_text = "\n".join(describe(a) for a in actions)
    return template("system_compact.md" if style == "compact" else "system.md").format(
        instructions=instructions.strip(),
        actions=action_text,
        protocol=template(f"protocol_{protocol}.md").format().rstrip(),
        max_turns=max_turns,
        example=example_turn(example_code) if example_code else "",
    ).strip() + "\n"
