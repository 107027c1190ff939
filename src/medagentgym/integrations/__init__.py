"""Adapters to other projects' interfaces, each an optional extra (docs/integrations.md).

* :mod:`~medagentgym.integrations.verifiers` — ``load_environment(dataset)``: a verifiers
  ``ToolEnv`` whose tools are our actions and whose reward is our grader (``vf-eval``).
* :mod:`~medagentgym.integrations.openenv` — OpenEnv clients for the server's
  ``/openenv/<dataset>`` endpoints (the protocol itself lives in
  :mod:`medagentgym.server.openenv`).
* :mod:`~medagentgym.integrations.inspect_ai` — ``inspect eval medagentgym/<dataset>``: a
  ``Task`` per dataset with our scorer, and the ``medagentgym`` sandbox environment.
* :mod:`~medagentgym.integrations.trl` — ``environment_factory`` for TRL's ``GRPOTrainer``.
* :mod:`~medagentgym.integrations.tools` — the framework-free core they share: one episode
  at a time, our actions as tool calls, the reward from our grader.

Nothing here is imported by ``import medagentgym``; each module imports its framework only
when used.
"""
