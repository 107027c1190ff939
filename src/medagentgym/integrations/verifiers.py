"""verifiers (v1 API, ``verifiers==0.4.0``): every registered dataset as a taskset.

The taskset id is ``medagentgym-verifiers`` (the top-level module that re-exports this one);
``vf-eval`` loads it like any taskset plugin::

    vf-eval medagentgym-verifiers --env.taskset.dataset treqs \\
        --env.taskset.options '{"database": "synthetic"}' --select.limit 20 \\
        -m gpt-4o --client.base-url https://api.openai.com/v1 \\
        --client.api-key-var OPENAI_API_KEY --no-push

What it exports (verifiers resolves each through ``__all__``):

* :class:`MedAgentGymTaskset` — ``load()`` yields one :class:`MedAgentGymTask` per task of
  ``dataset``/``split`` (the task id and the question; the gold answer stays on the host).
* :class:`MedAgentGymEnv` — the engine of an episode, the way verifiers' own OpenEnv taskset
  works: it opens a real :class:`~medagentgym.env.env.AsyncMedAgentEnv` on the task (our
  sandbox, our grader), gives the model the task's system prompt and question, runs each
  reply as the paper's JSON action and answers with the environment's observation, until
  the episode ends; the sum of the env's rewards is recorded as ``medagentgym_reward``.
* :class:`MedAgentGymHarness` — verifiers' tool-less chat harness (the model only writes
  actions; every line of its code runs in our sandbox, never on the host).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from typing import Any, Literal

import verifiers.v1 as vf
from pydantic import Field
from verifiers.v1.harnesses.null import NullHarness

REWARD = "medagentgym_reward"


class MedAgentGymConfig(vf.TasksetConfig):
    dataset: str = "treqs"
    """A registered MedAgentGym dataset (`medagentgym tasks list`)."""
    split: str = "test"
    options: dict[str, Any] = Field(default_factory=dict)
    """The family's options, e.g. {"database": "synthetic"}."""
    protocol: Literal["paper", "submit"] = "submit"
    """`submit`: graded once at submit; `paper`: every validate_code that sets answer."""
    max_turns: int = Field(15, ge=1, le=1000)
    provider: str | None = None
    """Our sandbox provider (None: the default, bwrap)."""
    task_ids: list[str] = Field(default_factory=list)
    """Only these tasks (default: all of the split)."""


class MedAgentGymData(vf.TaskData):
    dataset: str
    split: str
    task_id: str
    options: dict[str, Any]
    protocol: str
    max_turns: int
    provider: str | None = None


class MedAgentGymTask(vf.Task[MedAgentGymData]):
    pass


@functools.cache
def _tasks(dataset: str, split: str, options_json: str) -> list[Any]:
    from medagentgym.tasks.registry import load_tasks

    return load_tasks(dataset, split, **json.loads(options_json))


class MedAgentGymTaskset(vf.Taskset[MedAgentGymTask, MedAgentGymConfig]):
    def load(self) -> Iterator[MedAgentGymTask]:
        from medagentgym.tasks.registry import get_spec

        cfg = self.config
        spec = get_spec(cfg.dataset)
        tasks = _tasks(spec.name, cfg.split, json.dumps(cfg.options, sort_keys=True))
        if cfg.task_ids:
            wanted = set(cfg.task_ids)
            tasks = [t for t in tasks if t.id in wanted]
        for t in tasks:
            yield MedAgentGymTask(
                MedAgentGymData(id=t.id, name=t.id, prompt=None, dataset=spec.name,
                                split=cfg.split, task_id=t.id, options=dict(cfg.options),
                                protocol=cfg.protocol, max_turns=cfg.max_turns,
                                provider=cfg.provider),
                cfg.task)


class MedAgentGymEnvConfig(vf.EnvConfig):
    #: a chat-only harness (our sandbox runs the code), so the local subprocess runtime
    player: vf.AgentConfig = vf.AgentConfig(runtime=vf.SubprocessConfig())


class MedAgentGymEnv(vf.Env[MedAgentGymEnvConfig]):
    async def run(self, task: Any, agents: Any) -> None:
        from medagentgym.env.env import AsyncMedAgentEnv

        data = task.data
        tasks = _tasks(data.dataset, data.split, json.dumps(data.options, sort_keys=True))
        env = AsyncMedAgentEnv(data.dataset, data.split, protocol=data.protocol,
                               max_turns=data.max_turns, sandbox=data.provider or "auto",
                               tasks=tasks, **data.options)
        total = 0.0
        try:
            goal, _info = await env.areset(env.get_task(data.task_id))
            async with agents.player.interaction(task) as interaction:
                segment = await interaction.turn(f"{env.system_prompt}\n{goal}")
                while not segment.terminated:
                    _obs, reward, terminated, truncated, _ = await env.astep(
                        segment.last_reply)
                    total += reward
                    if terminated or truncated:
                        break
                    segment = await interaction.turn(_obs)
            interaction.trace.record_reward(REWARD, total)
        finally:
            await env.aclose()


class MedAgentGymHarness(NullHarness):
    """A chat harness: the model's replies are our actions, run in our sandbox."""


__all__ = ["MedAgentGymConfig", "MedAgentGymData", "MedAgentGymEnv", "MedAgentGymEnvConfig",
           "MedAgentGymHarness", "MedAgentGymTask", "MedAgentGymTaskset"]
