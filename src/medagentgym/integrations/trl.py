"""TRL: MedAgentGym episodes for ``GRPOTrainer(environment_factory=...)`` (trl >= 1.16).

TRL makes one environment per rollout, calls its ``reset(**row)`` with the dataset row (the
returned text is appended to the prompt), offers its public methods as tools (their
signatures and docstrings become the tool schemas), and scores the rollout with
``get_reward()``. Here the tools are our actions, run in the env's sandbox, and the reward
is our grader's::

    from trl import GRPOConfig, GRPOTrainer
    from medagentgym.integrations.trl import environment_factory, train_dataset

    trainer = GRPOTrainer(model="Qwen/Qwen3-0.6B", args=GRPOConfig(max_steps=100),
                          train_dataset=train_dataset("treqs", "train", database="synthetic"),
                          environment_factory=environment_factory("treqs", "train",
                                                                  database="synthetic"))
    trainer.train()

The default protocol is ``submit``: the model ends an episode with ``submit`` and is graded
once (no correctness oracle while it works); ``protocol="paper"`` grades every
``validate_code`` that sets ``answer``. The existing ``rollout_func`` path
(:mod:`medagentgym.train.grpo`, ``medagentgym train grpo``) remains for the paper's JSON
actions. Recipe: docs/training.md.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from medagentgym.integrations.tools import ToolEpisode


def _run(coro: Any) -> Any:
    from medagentgym.sandbox import run_sync

    return run_sync(coro)


class MedAgentGymEnvironment:
    """One MedAgentGym env for TRL's tool loop (see the module docstring)."""

    def __init__(self, dataset: str, split: str = "test", **env_kwargs: Any) -> None:
        self._episode = ToolEpisode(dataset, split, **env_kwargs)

    def reset(self, task_id: str | None = None, task_index: int | None = None,
              **row: Any) -> str:
        """Start an episode on the row's task: the instructions and question, as text."""
        system, goal = _run(self._episode.start(task_id=task_id, task_index=task_index))
        return f"{system}\n\nQuestion: {goal}"

    def get_reward(self) -> float:
        """The episode's reward from our grader (0 when nothing was graded)."""
        return float(self._episode.reward)

    # -- tools ---------------------------------------------------------------------------
    def validate_code(self, code: str) -> str:
        """Run Python code in the sandbox and return its output.

        Args:
            code: Python source; set the variable `answer` to the result.

        Returns:
            The output of the run (and, in the paper protocol, whether the answer is right).
        """
        return _run(self._episode.call("validate_code", {"code": code}))

    def request_info(self, info_type: str, keyterm: str = "", data_path: str = "") -> str:
        """Look up column names, column values or a term in the task's data.

        Args:
            info_type: one of "column_names", "column_values", "term".
            keyterm: the table, column or term to look up.
            data_path: the data file or table the question is about (optional).

        Returns:
            What the data holds for the request.
        """
        return _run(self._episode.call("request_info", {"info_type": info_type,
                                                        "keyterm": keyterm,
                                                        "data_path": data_path}))

    def terminal(self, cmd: str) -> str:
        """Run a shell command in the sandbox.

        Args:
            cmd: the command line.

        Returns:
            The command's output and exit status.
        """
        return _run(self._episode.call("terminal", {"cmd": cmd}))

    def submit(self, code: str | None = None, answer: str | None = None) -> str:
        """Submit the final answer; the episode ends and the answer is graded.

        Args:
            code: Python code that sets the variable `answer` (preferred).
            answer: the answer itself, when no code is given.

        Returns:
            A confirmation.
        """
        params = {"code": code} if code else {"answer": answer}
        return _run(self._episode.call("submit", params))

    def _close(self) -> None:
        """Close the env's sandbox (private: TRL offers every public method as a tool)."""
        _run(self._episode.aclose())


def environment_factory(dataset: str, split: str = "train",
                        **env_kwargs: Any) -> Callable[[], MedAgentGymEnvironment]:
    """A zero-argument factory for ``GRPOTrainer(environment_factory=...)``. ``env_kwargs``:
    ``protocol`` ("submit" by default), ``max_turns``, ``sandbox``, the family's options."""
    env_kwargs.setdefault("protocol", "submit")
    return functools.partial(MedAgentGymEnvironment, dataset, split, **env_kwargs)


def train_dataset(dataset: str, split: str = "train", *, limit: int | None = None,
                  **family_options: Any) -> Any:
    """A ``datasets.Dataset`` with one row per task: an empty user turn (``reset`` fills it
    with the task's instructions and question) and the ``task_id``."""
    from datasets import Dataset

    from medagentgym.tasks.registry import load_tasks

    tasks = load_tasks(dataset, split, **family_options)[:limit]
    return Dataset.from_list([{"prompt": [{"role": "user", "content": ""}], "task_id": t.id}
                              for t in tasks])
