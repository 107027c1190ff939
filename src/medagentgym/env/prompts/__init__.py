"""Prompt templates, kept as text files a user can read and override.

Set ``MEDAGENTGYM_PROMPTS`` to a directory holding files of the same names to override any
of them (``system.md``, ``action_<name>.md``, ``protocol_<name>.md``). Templates use
``str.format`` fields; literal braces are doubled.
"""

from __future__ import annotations

import functools
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


def system_prompt(instructions: str, actions: Sequence[str], protocol: str, max_turns: int,
                  described: Mapping[str, str] | None = None) -> str:
    """``described``: the text of actions a family adds (name -> description)."""
    described = described or {}
    action_text = "\n".join(
        described[a].rstrip() if a in described else template(f"action_{a}.md").format().rstrip()
        for a in actions)
    return template("system.md").format(
        instructions=instructions.strip(),
        actions=action_text,
        protocol=template(f"protocol_{protocol}.md").format().rstrip(),
        max_turns=max_turns,
    ).strip() + "\n"
