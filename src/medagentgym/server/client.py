"""Clients of the environment server (``medagentgym serve``), over ``httpx``.

:class:`EnvClient` is synchronous; :class:`AsyncEnvClient` is the same for asyncio trainers.
``make`` returns a remote env whose ``reset`` / ``step`` / ``close`` mirror Gymnasium's::

    client = EnvClient("http://127.0.0.1:8000", token=None)
    env = client.make("treqs", "test", database="synthetic", protocol="submit")
    obs, info = env.reset(seed=0)                # or task_id=..., or options={"task_index": 3}
    obs, reward, terminated, truncated, info = env.step(model_reply)
    env.close()

Each env is a capability: the server returns its id with a secret, which the remote env sends
(``X-Env-Secret``) on each of its calls; other clients cannot see or drive it.
``client.list_envs()`` lists the envs this client holds open.

Server errors raise :class:`EnvServerError` subclasses: :class:`RemoteConfigurationError`
(400/404/409/413/422, also a :class:`ConfigurationError`), :class:`ServerFullError` (429) and
:class:`RemoteInfrastructureError` (5xx, also an :class:`InfrastructureError`; reset again).
"""

from __future__ import annotations

import os
from typing import Any

import httpx

from medagentgym.errors import ConfigurationError, InfrastructureError, MedAgentGymError

TOKEN_ENV = "MEDAGENTGYM_SERVER_TOKEN"
SECRET_HEADER = "X-Env-Secret"
DEFAULT_TIMEOUT = 600.0  # a step may run agent code for up to the env's code_timeout


class EnvServerError(MedAgentGymError):
    """The server answered with an error status."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(f"HTTP {status_code}: {message}")
        self.status_code = status_code
        self.message = message


class RemoteConfigurationError(EnvServerError, ConfigurationError):
    """Unknown dataset / task / env, bad options or a malformed request (4xx)."""


class AuthenticationError(EnvServerError):
    """401: the server wants a (different) bearer token."""


class ServerFullError(EnvServerError):
    """429: the server holds its maximum number of envs."""


class RemoteInfrastructureError(EnvServerError, InfrastructureError):
    """5xx: sandbox or grader failure on the server; the episode is lost, reset again."""


def _raise_for(resp: httpx.Response) -> Any:
    if resp.status_code < 400:
        return resp.json()
    try:
        detail = resp.json().get("detail", resp.text)
    except ValueError:
        detail = resp.text
    if not isinstance(detail, str):  # 422: pydantic's list of errors
        detail = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}"
                           if isinstance(e, dict) else str(e) for e in detail)
    code = resp.status_code
    cls: type[EnvServerError]
    if code == 401:
        cls = AuthenticationError
    elif code == 429:
        cls = ServerFullError
    elif code >= 500:
        cls = RemoteInfrastructureError
    else:
        cls = RemoteConfigurationError
    raise cls(code, detail)


def _headers(token: str | None) -> dict[str, str]:
    token = token if token is not None else os.environ.get(TOKEN_ENV) or None
    return {"Authorization": f"Bearer {token}"} if token else {}


def _create_body(dataset: str, split: str, options: dict[str, Any]) -> dict[str, Any]:
    return {"dataset": dataset, "split": split, "options": options}


def _reset_body(task_id: str | None, seed: int | None,
                options: dict[str, Any] | None) -> dict[str, Any]:
    body: dict[str, Any] = dict(options or {})  # Gymnasium style: options={"task_id": ...}
    if task_id is not None:
        body["task_id"] = task_id
    if seed is not None:
        body["seed"] = seed
    return body


def _secret_headers(secrets: list[str]) -> dict[str, str]:
    return {SECRET_HEADER: ", ".join(secrets)} if secrets else {}


def _step_result(data: dict[str, Any]) -> tuple[str, float, bool, bool, dict[str, Any]]:
    return (data["observation"], float(data["reward"]), bool(data["terminated"]),
            bool(data["truncated"]), data["info"])


# ------------------------------------------------------------------------------- sync


class EnvClient:
    """A synchronous client of one environment server."""

    def __init__(self, base_url: str, token: str | None = None, *,
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, headers=_headers(token),
                                  timeout=timeout)
        self._secrets: dict[str, str] = {}  # env_id -> secret, of the envs open here

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        return _raise_for(self._http.request(method, path, **kwargs))

    def health(self) -> dict[str, Any]:
        return self._call("GET", "/health")

    def list_datasets(self) -> list[dict[str, Any]]:
        return self._call("GET", "/datasets")

    def list_tasks(self, dataset: str, split: str = "test", *, limit: int | None = None,
                   offset: int = 0, database: str | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"split": split, "offset": offset}
        if limit is not None:
            params["limit"] = limit
        if database is not None:
            params["database"] = database
        return self._call("GET", f"/datasets/{dataset}/tasks", params=params)

    def make(self, dataset: str, split: str = "test", **options: Any) -> RemoteEnv:
        """Create an env on the server (``options``: protocol, max_turns, database, ...)."""
        data = self._call("POST", "/envs", json=_create_body(dataset, split, options))
        self._secrets[data["env_id"]] = data["secret"]
        return RemoteEnv(self, data)

    def list_envs(self) -> dict[str, Any]:
        """``{count, max_envs, envs}``: the server's env count and this client's open envs."""
        return self._call("GET", "/envs", headers=_secret_headers(list(self._secrets.values())))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> EnvClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RemoteEnv:
    """One env on the server, with Gymnasium's ``reset`` / ``step`` / ``close``."""

    def __init__(self, client: EnvClient, created: dict[str, Any]) -> None:
        self.client = client
        self.env_id: str = created["env_id"]
        self.dataset: str = created["dataset"]
        self.split: str = created["split"]
        self.num_tasks: int = created["num_tasks"]
        self.system_prompt = ""
        self.closed = False
        self.secret: str = created["secret"]  # the env's capability: keep it private
        self._auth = {SECRET_HEADER: self.secret}

    def reset(self, task_id: str | None = None, seed: int | None = None, *,
              options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        data = self.client._call("POST", f"/envs/{self.env_id}/reset",
                                 json=_reset_body(task_id, seed, options), headers=self._auth)
        self.system_prompt = data["info"].get("system_prompt", "")
        return data["observation"], data["info"]

    def step(self, action: str | dict[str, Any]) -> tuple[str, float, bool, bool, dict[str, Any]]:
        return _step_result(self.client._call("POST", f"/envs/{self.env_id}/step",
                                              json={"action": action}, headers=self._auth))

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.client._secrets.pop(self.env_id, None)
        try:
            self.client._call("DELETE", f"/envs/{self.env_id}", headers=self._auth)
        except RemoteConfigurationError:  # already gone (expired): nothing to close
            pass

    def __enter__(self) -> RemoteEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------------------ async


class AsyncEnvClient:
    """The asyncio twin of :class:`EnvClient`."""

    def __init__(self, base_url: str, token: str | None = None, *,
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.AsyncClient(base_url=self.base_url, headers=_headers(token),
                                       timeout=timeout)
        self._secrets: dict[str, str] = {}

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        return _raise_for(await self._http.request(method, path, **kwargs))

    async def health(self) -> dict[str, Any]:
        return await self._call("GET", "/health")

    async def list_datasets(self) -> list[dict[str, Any]]:
        return await self._call("GET", "/datasets")

    async def make(self, dataset: str, split: str = "test", **options: Any) -> AsyncRemoteEnv:
        data = await self._call("POST", "/envs", json=_create_body(dataset, split, options))
        self._secrets[data["env_id"]] = data["secret"]
        return AsyncRemoteEnv(self, data)

    async def list_envs(self) -> dict[str, Any]:
        """``{count, max_envs, envs}``: the server's env count and this client's open envs."""
        return await self._call("GET", "/envs",
                                headers=_secret_headers(list(self._secrets.values())))

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncEnvClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class AsyncRemoteEnv:
    """One env on the server: ``await reset(...)``, ``await step(...)``, ``await close()``."""

    def __init__(self, client: AsyncEnvClient, created: dict[str, Any]) -> None:
        self.client = client
        self.env_id: str = created["env_id"]
        self.dataset: str = created["dataset"]
        self.split: str = created["split"]
        self.num_tasks: int = created["num_tasks"]
        self.system_prompt = ""
        self.closed = False
        self.secret: str = created["secret"]  # the env's capability: keep it private
        self._auth = {SECRET_HEADER: self.secret}

    async def reset(self, task_id: str | None = None, seed: int | None = None, *,
                    options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        data = await self.client._call("POST", f"/envs/{self.env_id}/reset",
                                       json=_reset_body(task_id, seed, options),
                                       headers=self._auth)
        self.system_prompt = data["info"].get("system_prompt", "")
        return data["observation"], data["info"]

    async def step(self, action: str | dict[str, Any]) -> tuple[str, float, bool, bool,
                                                                dict[str, Any]]:
        return _step_result(await self.client._call("POST", f"/envs/{self.env_id}/step",
                                                    json={"action": action},
                                                    headers=self._auth))

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.client._secrets.pop(self.env_id, None)
        try:
            await self.client._call("DELETE", f"/envs/{self.env_id}", headers=self._auth)
        except RemoteConfigurationError:
            pass
