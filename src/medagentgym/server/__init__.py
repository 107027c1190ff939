"""An HTTP environment server, so that RL trainers in other processes or on other machines
can roll out against MedAgentGym, and a small client for it.

Server (needs the ``server`` extra: ``pip install 'medagentgym[server]'``)::

    medagentgym serve --port 8000 --token "$MEDAGENTGYM_SERVER_TOKEN"

Client (needs only ``httpx``)::

    from medagentgym.server.client import EnvClient
    env = EnvClient("http://127.0.0.1:8000").make("treqs", "test", database="synthetic")
    obs, info = env.reset(task_id=...)
    obs, reward, terminated, truncated, info = env.step(reply_text)
    env.close()

Each env is a capability of the client that created it (a secret the client sends for you);
options are an allow-list (no host paths, no sandbox choice); see docs/training.md.

This module imports nothing heavy; import :mod:`medagentgym.server.app` (FastAPI) or
:mod:`medagentgym.server.client` (httpx) explicitly.
"""

from __future__ import annotations
