"""Our actions as tool calls, framework-free: what the adapters share.

:class:`ToolEpisode` runs one episode at a time of one dataset split in a real
:class:`~medagentgym.env.env.AsyncMedAgentEnv` (its sandbox, its grader): ``start`` picks the
task and returns the prompt; ``call(name, arguments)`` runs one action and returns the
environment's text; ``reward`` is the episode's reward so far (the sum of the env's step
rewards: the grader's score, 1 for a solved binary task). After the episode ends, further
calls answer that it is over and change nothing.

Tool calls come from a model: ``arguments`` may be anything; a call the env cannot read is
the agent's mistake (an error text, no reward), never an exception.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

#: the paper's actions offered as tools (a family's own actions are added per task)
TOOL_NAMES = ("validate_code", "request_info", "terminal", "debug", "submit")
OVER = "The episode is over: no further actions are run."

TOOL_PROMPT = (
    "You are an expert biomedical data scientist who solves problems by writing and running "
    "Python code with the tools you are given.\n\n{instructions}\n\n{protocol}\n"
    "You have at most {max_turns} tool calls."
)
PROTOCOL_TEXT = {
    "paper": ("Each validate_code run whose code sets `answer` is checked; the task ends as "
              "soon as the answer is correct."),
    "submit": ("validate_code only runs your code; it does not tell you whether the answer is "
               "right. When you are confident, call submit once (with the code that sets "
               "`answer`, or the answer itself): the task ends and your answer is graded."),
}


def tool_schemas(names: tuple[str, ...] | list[str] = TOOL_NAMES) -> list[dict[str, Any]]:
    """OpenAI-style ``tools`` entries for our actions (the agents' own schemas)."""
    from medagentgym.agents.llm_agent import tool_definitions

    return tool_definitions(list(names))


class ToolEpisode:
    """One episode at a time; see the module docstring. ``env_kwargs`` are
    :class:`AsyncMedAgentEnv`'s (``protocol``, ``max_turns``, ``sandbox``, ``tasks``, the
    family's options)."""

    def __init__(self, dataset: str, split: str = "test", *, protocol: str = "submit",
                 max_turns: int = 15, **env_kwargs: Any) -> None:
        from medagentgym.env.env import AsyncMedAgentEnv

        self.env = AsyncMedAgentEnv(dataset, split, protocol=protocol, max_turns=max_turns,
                                    **env_kwargs)
        self.reward = 0.0
        self.done = True
        self.info: dict[str, Any] = {}
        self.calls = 0

    @property
    def tasks(self) -> list[Any]:
        return self.env.tasks

    def pick(self, task_id: str | None = None, task_index: int | None = None) -> Any:
        if task_id is not None:
            return self.env.get_task(str(task_id))
        return self.env.tasks[int(task_index or 0) % len(self.env.tasks)]

    async def start(self, task_id: str | None = None,
                    task_index: int | None = None) -> tuple[str, str]:
        """Reset on a task: ``(system prompt for tool use, the question)``."""
        task = self.pick(task_id, task_index)
        goal, self.info = await self.env.areset(task)
        self.reward, self.done, self.calls = 0.0, False, 0
        return self.system_prompt(), goal

    def system_prompt(self) -> str:
        env = self.env
        assert env.task is not None
        return TOOL_PROMPT.format(instructions=env.family.instructions(env.task).strip(),
                                  protocol=PROTOCOL_TEXT[env.protocol],
                                  max_turns=env.max_turns)

    @property
    def allowed(self) -> list[str]:
        return list(self.env.allowed_actions) if self.env.task is not None else []

    async def call(self, name: str, arguments: Any) -> str:
        """Run one tool call; the environment's answer as text."""
        if self.done:
            return OVER
        if isinstance(arguments, str):
            from medagentgym.env.actions import loads_bounded

            try:
                arguments = loads_bounded(arguments) if arguments.strip() else {}
            except ValueError:
                return "Error: the tool arguments are not a JSON object."
        if not isinstance(arguments, Mapping):
            return "Error: the tool arguments must be an object."
        self.calls += 1
        obs, reward, terminated, truncated, info = await self.env.astep(
            {"action": str(name)[:100], "params": dict(arguments)})
        self.reward += reward
        self.done = terminated or truncated
        self.info = info
        if truncated and not terminated:
            obs += f"\n\n[{OVER} (turn limit)]"
        return obs

    async def aclose(self) -> None:
        await self.env.aclose()


def as_json(value: Any) -> str:
    return json.dumps(value, default=str)
