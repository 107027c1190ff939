"""The public entry points: ``list_datasets``, ``load_tasks``, ``make``."""

from __future__ import annotations

from typing import Any

from medagentgym.tasks.registry import get_spec, list_datasets, load_tasks

__all__ = ["list_datasets", "load_tasks", "make", "register_gymnasium_envs"]


def make(dataset: str, split: str = "test", **kwargs: Any) -> Any:
    """A :class:`medagentgym.env.MedAgentEnv` for ``dataset``/``split``.

    Keyword arguments: ``protocol`` ("paper" | "submit"), ``max_turns`` (15), ``sandbox``
    (provider), ``debugger``, ``tasks`` (a subset), ``code_timeout``, and the dataset's
    family options (its typed ``Options``), e.g. ``database`` ("auto" | "synthetic" |
    "imported" | "official") or ``patients`` for the datasets that run on a database.
    """
    from medagentgym.env.env import MedAgentEnv

    get_spec(dataset)  # clear error for unknown names before anything heavy
    return MedAgentEnv(dataset, split, **kwargs)


def register_gymnasium_envs() -> None:
    """Register ``medagentgym/<name>-v<version>`` ids with Gymnasium (idempotent)."""
    import gymnasium

    for name in list_datasets():
        spec = get_spec(name)
        if spec.env_id not in gymnasium.registry:
            gymnasium.register(id=spec.env_id, entry_point="medagentgym.env.env:MedAgentEnv",
                               kwargs={"dataset": name}, disable_env_checker=True)
