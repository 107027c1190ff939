"""OpenEnv's protocol on the environment server, one endpoint set per dataset.

OpenEnv's ``EnvClient`` (``openenv`` on PyPI; ``GenericEnvClient`` or any typed subclass)
opens a WebSocket at ``<base_url>/ws`` and sends ``{"type": "reset" | "step" | "state" |
"close", "data": {...}}``; each answer is ``{"type": "observation" | "state" | "error",
"data": {...}}``. Here ``base_url`` is ``http://HOST:PORT/openenv/<dataset>``, so
``GenericEnvClient(base_url=".../openenv/treqs")`` drives a TREQS env unchanged::

    from openenv.core import GenericEnvClient
    with GenericEnvClient(base_url="http://127.0.0.1:8000/openenv/treqs").sync() as env:
        r = env.reset(seed=0, options={"database": "synthetic"})
        r = env.step({"text": '{"action": "validate_code", "params": {"code": "answer = 1"}}'})
        r.reward, r.done, r.observation["text"]

Each WebSocket is one session: its env is created (through the server's registry, so
``max_envs``, the option allow-list and idle expiry apply) at the first ``reset`` and closed
when the socket closes. The connection itself is the capability (no other client can drive
that env, the same guarantee as the per-env secret of the REST routes). A ``reset``'s
``data``: ``seed``, ``episode_id`` (OpenEnv's), ``task_id`` or ``task_index``, ``split``
and ``options`` (the dataset's client options, as ``POST /envs`` takes); anything else is
refused. A ``step``'s ``data``: ``{"text": <model reply>}`` or the paper's action object
``{"action": ..., "params": {...}}`` (bounded as ``POST /envs/{id}/step``). Frames over the
server's ``max_body_bytes`` are refused and the socket closed.

HTTP routes beside it: ``GET /openenv/<dataset>/health``, ``/schema``, ``/metadata``,
``/state``; ``POST /reset`` (a one-off episode start: the env is closed again) and ``POST
/step``, which answers ``409``: an episode lives in a WebSocket session.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import secrets
from typing import Any

from fastapi import FastAPI, HTTPException, WebSocket, WebSocketDisconnect
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from medagentgym.errors import ConfigurationError, InfrastructureError

log = logging.getLogger(__name__)

PREFIX = "/openenv"
#: WebSocket close code for a policy violation (bad token, frame too large)
POLICY_VIOLATION = 1008


class OpenEnvAction(BaseModel):
    """A step: the model's reply as text, or the paper's action as an object."""

    model_config = ConfigDict(extra="forbid")

    text: str | None = Field(None, description="what the model wrote (a JSON action inside)")
    action: str | None = Field(None, max_length=100, description="action name")
    params: dict[str, Any] | None = Field(None, description="the action's parameters")
    metadata: dict[str, Any] = Field(default_factory=dict, max_length=32,
                                     description="OpenEnv's action metadata (ignored)")


class OpenEnvObservation(BaseModel):
    text: str = Field(description="what the environment answers (the goal after reset)")
    system_prompt: str | None = Field(None, description="the task's system prompt (reset)")
    info: dict[str, Any] = Field(default_factory=dict)
    done: bool = False
    reward: float | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class OpenEnvState(BaseModel):
    episode_id: str | None = None
    step_count: int = 0
    dataset: str | None = None
    split: str | None = None
    task_id: str | None = None
    done: bool = True


class OpenEnvReset(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    episode_id: str | None = Field(None, max_length=200)
    task_id: str | None = Field(None, max_length=500)
    task_index: int | None = Field(None, ge=0, le=2**63 - 1)
    split: str = Field("test", min_length=1, max_length=100)
    options: dict[str, Any] = Field(default_factory=dict, max_length=64)


def _payload(obs: str, reward: float | None, done: bool, info: dict[str, Any],
             system_prompt: str | None = None) -> dict[str, Any]:
    """OpenEnv's wire format: the observation's fields, reward and done beside them."""
    observation = {"text": obs, "system_prompt": system_prompt, "info": info, "metadata": {}}
    return {"observation": observation, "reward": reward, "done": done, "metadata": {}}


def _error(message: str, code: str, **extra: Any) -> str:
    return json.dumps({"type": "error", "data": {"message": message, "code": code, **extra}})


def _problems(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'data'}: {e['msg']}"
                     for e in exc.errors(include_url=False))


class _Session:
    """One WebSocket's env (a registry slot), created at the first reset."""

    def __init__(self, registry: Any, dataset: str) -> None:
        self.registry = registry
        self.dataset = dataset
        self.slot: Any = None
        self.key: tuple[str, str] | None = None
        self.episode_id: str | None = None

    async def reset(self, req: OpenEnvReset) -> dict[str, Any]:
        from medagentgym.server.app import CreateEnvRequest, ResetRequest, choose_task

        key = (req.split, json.dumps(req.options, sort_keys=True, default=str))
        if self.slot is not None and (key != self.key or self.slot.env_id not in
                                      self.registry.envs):
            await self.close()
        if self.slot is None:
            create = CreateEnvRequest(dataset=self.dataset, split=req.split,
                                      options=req.options)
            self.slot, _secret = await self.registry.create(create)
            self.key = key
        slot = self.slot
        async with slot.lock:
            self.registry.check_live(slot)
            slot.touch()
            pick = ResetRequest(task_id=req.task_id, task_index=req.task_index, seed=req.seed)
            task = choose_task(slot, pick)
            try:
                obs, info = await slot.core.areset(task)
            except InfrastructureError as exc:
                await self.registry.recreate(slot)
                raise HTTPException(503, f"{type(exc).__name__}: {exc} (sandbox replaced; "
                                         "reset again)")
            finally:
                slot.touch()
        self.episode_id = req.episode_id or secrets.token_hex(8)
        system_prompt = info.pop("system_prompt", None)
        return _payload(obs, None, False, info, system_prompt)

    async def step(self, action: OpenEnvAction) -> dict[str, Any]:
        from medagentgym.server.app import StepRequest

        if action.text is not None:
            if action.action is not None or action.params is not None:
                raise HTTPException(422, "give text or action/params, not both")
            raw: str | dict[str, Any] = action.text
        elif action.action is not None:
            raw = {"action": action.action, "params": action.params or {}}
        else:
            raise HTTPException(422, 'a step needs "text" (the model\'s reply) or "action" '
                                     'with "params"')
        try:
            raw = StepRequest(action=raw).action
        except ValidationError as exc:
            raise HTTPException(422, _problems(exc))
        slot = self.slot
        if slot is None:
            raise HTTPException(409, "no episode in progress: reset first")
        async with slot.lock:
            self.registry.check_live(slot)
            slot.touch()
            core = slot.core
            if core.task is None or core.done:
                raise HTTPException(409, "no episode in progress: reset first (the last "
                                         "episode ended or was lost)")
            try:
                obs, reward, terminated, truncated, info = await core.astep(raw)
            except InfrastructureError as exc:
                await self.registry.recreate(slot)
                raise HTTPException(503, f"{type(exc).__name__}: {exc} (the episode is lost; "
                                         "sandbox replaced; reset again)")
            finally:
                slot.touch()
        info = {**info, "terminated": terminated, "truncated": truncated}
        return _payload(obs, reward, terminated or truncated, info)

    def state(self) -> dict[str, Any]:
        slot = self.slot
        if slot is None or slot.env_id not in self.registry.envs:
            return OpenEnvState(dataset=self.dataset).model_dump()
        core = slot.core
        return OpenEnvState(episode_id=self.episode_id, step_count=core.turn,
                            dataset=slot.dataset, split=slot.split,
                            task_id=core.task.id if core.task else None,
                            done=core.done).model_dump()

    async def close(self) -> None:
        slot, self.slot = self.slot, None
        if slot is not None:
            await self.registry.close(slot.env_id)


_HTTP_CODES = {400: "VALIDATION_ERROR", 404: "VALIDATION_ERROR", 409: "EXECUTION_ERROR",
               422: "VALIDATION_ERROR", 429: "CAPACITY_REACHED", 503: "EXECUTION_ERROR"}


def add_openenv_routes(app: FastAPI, registry: Any, *, token: str | None,
                       max_body_bytes: int, auth: list[Any]) -> None:
    """Mount OpenEnv's routes under ``/openenv/<dataset>`` (see the module docstring)."""
    from medagentgym import __version__
    from medagentgym.server.app import dataset_spec

    expected = token.encode() if token else None

    @app.get(PREFIX + "/{dataset}/health")
    async def oe_health(dataset: str) -> dict[str, Any]:
        dataset_spec(dataset)
        return {"status": "healthy"}

    @app.get(PREFIX + "/{dataset}/schema", dependencies=auth)
    async def oe_schema(dataset: str) -> dict[str, Any]:
        dataset_spec(dataset)
        return {"action": OpenEnvAction.model_json_schema(),
                "observation": OpenEnvObservation.model_json_schema(),
                "reset_observation": OpenEnvObservation.model_json_schema(),
                "state": OpenEnvState.model_json_schema()}

    @app.get(PREFIX + "/{dataset}/metadata", dependencies=auth)
    async def oe_metadata(dataset: str) -> dict[str, Any]:
        spec = dataset_spec(dataset)
        return {"name": f"medagentgym/{spec.name}", "description": spec.description,
                "version": __version__, "author": "MedAgentGym developers",
                "documentation_url": None, "readme_content": None}

    @app.get(PREFIX + "/{dataset}/state", dependencies=auth)
    async def oe_state(dataset: str) -> dict[str, Any]:
        dataset_spec(dataset)
        return OpenEnvState(dataset=dataset).model_dump()  # HTTP has no session

    @app.post(PREFIX + "/{dataset}/reset", dependencies=auth)
    async def oe_reset(dataset: str, req: OpenEnvReset | None = None) -> dict[str, Any]:
        dataset_spec(dataset)
        session = _Session(registry, dataset)
        try:
            return await session.reset(req or OpenEnvReset())
        finally:
            await session.close()

    @app.post(PREFIX + "/{dataset}/step", dependencies=auth)
    async def oe_step(dataset: str) -> dict[str, Any]:
        raise HTTPException(409, f"an episode lives in a WebSocket session: connect to "
                                 f"{PREFIX}/{dataset}/ws (OpenEnv's EnvClient does) and send "
                                 "reset, then step")

    @app.websocket(PREFIX + "/{dataset}/ws")
    async def oe_ws(websocket: WebSocket, dataset: str) -> None:
        if expected is not None:
            header = websocket.headers.get("authorization", "")
            scheme, _, given = header.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(),
                                                                     expected):
                await websocket.close(POLICY_VIOLATION, "missing or wrong bearer token")
                return
        await websocket.accept()
        try:
            dataset_spec(dataset)
        except HTTPException as exc:
            await websocket.send_text(_error(str(exc.detail), "FACTORY_ERROR"))
            await websocket.close()
            return
        session = _Session(registry, dataset)
        try:
            while True:
                raw = await websocket.receive_text()
                if len(raw) > max_body_bytes:
                    await websocket.send_text(_error(
                        f"message over {max_body_bytes} bytes", "VALIDATION_ERROR"))
                    await websocket.close(POLICY_VIOLATION)
                    return
                reply = await _answer(session, raw)
                if reply is None:  # close
                    break
                await websocket.send_text(reply)
        except WebSocketDisconnect:
            pass
        finally:
            with contextlib.suppress(Exception):
                await session.close()
            with contextlib.suppress(Exception):
                await websocket.close()


async def _answer(session: _Session, raw: str) -> str | None:
    """The reply frame to one client frame (``None``: the client closed the session)."""
    from medagentgym.env.actions import loads_bounded

    try:
        message = loads_bounded(raw)
    except ValueError as exc:
        return _error(f"Invalid JSON: {exc}", "INVALID_JSON")
    if not isinstance(message, dict):
        return _error("a message is a JSON object with type and data", "INVALID_JSON")
    kind, data = message.get("type"), message.get("data", {})
    if not isinstance(data, dict):
        return _error('"data" must be an object', "VALIDATION_ERROR")
    try:
        if kind == "reset":
            out = await session.reset(OpenEnvReset.model_validate(data))
            return json.dumps({"type": "observation", "data": out})
        if kind == "step":
            out = await session.step(OpenEnvAction.model_validate(data))
            return json.dumps({"type": "observation", "data": out})
        if kind == "state":
            return json.dumps({"type": "state", "data": session.state()})
        if kind == "close":
            return None
        return _error(f"Unknown message type: {str(kind)[:100]}", "UNKNOWN_TYPE")
    except ValidationError as exc:
        return _error(f"Invalid message: {_problems(exc)}", "VALIDATION_ERROR")
    except HTTPException as exc:
        return _error(str(exc.detail), _HTTP_CODES.get(exc.status_code, "EXECUTION_ERROR"),
                      status=exc.status_code)
    except ConfigurationError as exc:
        return _error(str(exc), "VALIDATION_ERROR", status=400)
    except Exception as exc:  # a bug on our side: the session survives, the client is told
        log.exception("OpenEnv %s failed", kind)
        await session.close()
        return _error(f"internal error {type(exc).__name__}: {exc} (the episode is lost; "
                      "reset again)", "EXECUTION_ERROR", status=500)
