"""The environment server: MedAgentGym's reset/step over HTTP (FastAPI).

Each environment created with ``POST /envs`` is one :class:`AsyncMedAgentEnv` living in the
server's event loop, with its own warm sandbox worker. A per-env ``asyncio.Lock`` serialises
its requests, so one client may drive many envs concurrently but never step one env twice at
once. The number of envs is bounded (``429`` when full); envs idle for ``idle_timeout_s`` are
closed by a background task; shutting the server down closes every sandbox.

Capabilities: ``POST /envs`` returns the env's id and a secret; every later call for that env
must send the secret in ``X-Env-Secret`` (compared in constant time). A wrong or missing secret
is answered like an unknown env (``404``), and ``GET /envs`` lists only the envs whose secrets
the caller sends (all of them for ``X-Admin-Token``, when the server has an admin token), plus
the total count.

Options are an allow-list per dataset (:func:`options_model`, derived from the family's typed
options): JSON scalars with types and bounds, never a host path, the sandbox provider or the
dataset's identity (``422`` otherwise).
Task sets are built in a thread pool, one build per (dataset, split, options) key, so a long
build never holds up other keys, other envs or ``/health``; the number of distinct keys is
bounded (``max_task_sets``). Request bodies over ``max_body_bytes`` are refused (``413``)
before they are read in full.

Ground truth stays in this process: task listings carry ids, categories and goals only, and
step ``info`` carries the grade without its host-side ``detail`` (the env strips it).

Status codes: ``404`` unknown dataset, split, env (or wrong secret) or task; ``400`` a
configuration the family rejects; ``409`` step before reset / after the episode ended;
``413`` a body over the limit; ``422`` a malformed body or a disallowed option; ``429`` too
many envs or task sets; ``503`` an infrastructure failure (sandbox, grader) — the env's
sandbox is then replaced and the episode must be reset; ``401`` a missing or wrong token.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import hmac
import json
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from medagentgym.data.databases import DatabaseSource
from medagentgym.env.env import AsyncMedAgentEnv
from medagentgym.errors import ConfigurationError, InfrastructureError
from medagentgym.tasks.registry import DatasetSpec, get_spec, list_datasets, load_tasks
from medagentgym.tasks.registry import options_model as options_for
from medagentgym.types import Task

log = logging.getLogger(__name__)

TOKEN_ENV = "MEDAGENTGYM_SERVER_TOKEN"
ADMIN_TOKEN_ENV = "MEDAGENTGYM_SERVER_ADMIN_TOKEN"
SECRET_HEADER = "X-Env-Secret"
ADMIN_HEADER = "X-Admin-Token"
DEFAULT_MAX_BODY = 1 << 20  # 1 MiB: a code action with room to spare
MAX_ACTION_CHARS = 256 * 1024
MAX_ACTION_DEPTH = 16
MAX_SEED = 2**63 - 1



# ------------------------------------------------------------------------------ models


class EnvOptions(BaseModel):
    """The env's own options, which every dataset takes."""

    model_config = ConfigDict(extra="forbid", strict=True)

    protocol: Literal["paper", "submit"] = "paper"
    max_turns: int = Field(15, ge=1, le=1000)
    code_timeout: float = Field(120.0, gt=0, le=600)
    terminal_timeout: float = Field(60.0, gt=0, le=600)
    show_verdict: bool = True


@functools.cache
def options_model(dataset: str) -> type[EnvOptions]:
    """The options a client may set for ``dataset``: the env's own plus the family's options
    of ``client`` scope the dataset's spec does not fix, with the client bounds, derived from
    the family's options model (:mod:`medagentgym.tasks.family`; one source of truth).
    ``None`` keeps the family's default."""
    spec = get_spec(dataset)
    family_options = options_for(spec.name)
    return family_options.client_model(EnvOptions, fixed=spec.options,
                                       name=f"{family_options.__name__}ForClients")


ENV_OPTION_NAMES = frozenset(EnvOptions.model_fields)


def parse_options(spec: DatasetSpec, raw: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(env options, family options)`` from a client's options; 422 for anything not on
    the dataset's allow-list. Family options left unset are omitted (the family's default)."""
    model = options_model(spec.name)
    try:
        parsed = model.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            name = ".".join(str(p) for p in err["loc"]) or "options"
            if err["type"] == "extra_forbidden":
                problems.append(f"{name}: not an option a client may set")
            else:
                problems.append(f"{name}: {err['msg']}")
        allowed = ", ".join(model.model_fields)
        raise HTTPException(422, f"invalid options for {spec.name}: {'; '.join(problems)} "
                                 f"(allowed: {allowed}; host paths, the sandbox and the "
                                 "dataset's identity are the server's)")
    values = parsed.model_dump()
    env = {k: v for k, v in values.items() if k in ENV_OPTION_NAMES}
    family = {k: v for k, v in values.items() if k not in ENV_OPTION_NAMES and v is not None}
    return env, family


class CreateEnvRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset: str = Field(min_length=1, max_length=200)
    split: str = Field("test", min_length=1, max_length=100)
    options: dict[str, Any] = Field(default_factory=dict, max_length=64)


class CreateEnvResponse(BaseModel):
    env_id: str
    secret: str = Field(description=f"send it as {SECRET_HEADER} on every call for this env")
    dataset: str
    split: str
    num_tasks: int
    options: dict[str, Any]


class ResetRequest(BaseModel):
    """Which task: ``task_id``, or ``task_index`` (0 <= i < num_tasks), or a task drawn with
    the env's generator (re-seeded by ``seed``, as Gymnasium's ``reset(seed=...)``)."""

    model_config = ConfigDict(extra="forbid")

    task_id: str | None = Field(None, max_length=500)
    task_index: int | None = Field(None, ge=0, le=MAX_SEED)
    seed: int | None = Field(None, ge=0, le=MAX_SEED)

    @model_validator(mode="after")
    def _one_choice(self) -> ResetRequest:
        if self.task_id is not None and self.task_index is not None:
            raise ValueError("give task_id or task_index, not both")
        return self


class ResetResponse(BaseModel):
    observation: str
    info: dict[str, Any]


def _depth(value: Any) -> int:
    """Nesting depth of a JSON value (iterative: no recursion on hostile input)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_ACTION_DEPTH:
            break
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return deepest


class StepRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: str | dict[str, Any] = Field(
        description="the paper's JSON action, as text (what a model wrote) or an object")

    @field_validator("action")
    @classmethod
    def _bounded(cls, action: str | dict[str, Any]) -> str | dict[str, Any]:
        if isinstance(action, dict):
            if _depth(action) > MAX_ACTION_DEPTH:
                raise ValueError(f"action nests deeper than {MAX_ACTION_DEPTH} levels")
            size = len(json.dumps(action))
        else:
            size = len(action)
        if size > MAX_ACTION_CHARS:
            raise ValueError(f"action is {size} characters; at most {MAX_ACTION_CHARS}")
        return action


class StepResponse(BaseModel):
    observation: str
    reward: float
    terminated: bool
    truncated: bool
    info: dict[str, Any]


class DatasetInfo(BaseModel):
    name: str
    env_id: str
    description: str
    scenario: str
    splits: list[str]
    in_distribution: bool


class TaskSummary(BaseModel):
    id: str
    category: str
    goal: str


class TaskList(BaseModel):
    dataset: str
    split: str
    total: int
    offset: int
    tasks: list[TaskSummary]


class EnvSummary(BaseModel):
    env_id: str
    dataset: str
    split: str
    task_id: str | None
    idle_s: float
    busy: bool


class EnvListing(BaseModel):
    """``count``: every env on the server; ``envs``: the caller's own (all for the admin)."""

    count: int
    max_envs: int
    envs: list[EnvSummary]


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    version: str
    envs: int
    max_envs: int


# ------------------------------------------------------------------------------- state


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()


@dataclass
class _Slot:
    env_id: str
    secret_digest: bytes
    dataset: str
    split: str
    options: dict[str, Any]
    core: AsyncMedAgentEnv
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    last_used: float = field(default_factory=time.monotonic)
    rng: Any = None

    def touch(self) -> None:
        self.last_used = time.monotonic()

    def owned_by(self, secret: str | None) -> bool:
        """Does ``secret`` open this env? (constant time in the secret)"""
        return secret is not None and hmac.compare_digest(_digest(secret), self.secret_digest)


TaskKey = tuple[str, str, str]


class EnvRegistry:
    """The server's environments, their task lists (shared, host-side) and their lifetimes."""

    def __init__(self, *, max_envs: int, idle_timeout_s: float, sandbox: str | None,
                 max_task_sets: int = 32, sandbox_pool: Any = None) -> None:
        self.max_envs = max_envs
        #: medagentgym.sandbox.pool.SandboxPools: envs share warm workers (issue 17)
        self.sandbox_pool = sandbox_pool
        self.idle_timeout_s = idle_timeout_s
        self.sandbox = sandbox
        self.max_task_sets = max_task_sets
        self.envs: dict[str, _Slot] = {}
        self._reserved = 0
        #: one build per key, shared by every request for it; failed builds are dropped
        self._builds: dict[TaskKey, asyncio.Future[list[Task]]] = {}
        # builds run here, not in the default pool the sandboxes use; one thread per key
        self._executor = ThreadPoolExecutor(max_task_sets, thread_name_prefix="task-build")

    # -- tasks ---------------------------------------------------------------------------
    async def tasks(self, spec: DatasetSpec, split: str,
                    family_options: dict[str, Any]) -> list[Task]:
        """The key's tasks, built once in the build pool; waiting never blocks other keys."""
        if split not in spec.splits:
            raise HTTPException(404, f"dataset {spec.name!r} has no split {split!r}; "
                                     f"splits: {', '.join(spec.splits)}")
        key = (spec.name, split, repr(sorted(family_options.items())))
        build = self._builds.get(key)
        if build is None:
            if len(self._builds) >= self.max_task_sets:
                raise HTTPException(429, f"the server holds its maximum of {self.max_task_sets} "
                                         "task sets (dataset, split, options); use the options "
                                         "of an existing one")
            loop = asyncio.get_running_loop()
            build = loop.run_in_executor(
                self._executor, functools.partial(load_tasks, spec.name, split, **family_options))
            self._builds[key] = build
            build.add_done_callback(functools.partial(self._build_done, key))
        try:
            loaded = await asyncio.shield(build)  # a caller that goes away leaves it running
        except ConfigurationError as exc:
            raise HTTPException(400, str(exc))
        except InfrastructureError as exc:
            raise HTTPException(503, f"building {spec.name}/{split} failed: "
                                     f"{type(exc).__name__}: {exc}")
        if not loaded:
            raise HTTPException(404, f"dataset {spec.name!r} split {split!r} has no tasks")
        return loaded

    def _build_done(self, key: TaskKey, build: asyncio.Future[list[Task]]) -> None:
        failed = build.cancelled() or build.exception() is not None or not build.result()
        if failed and self._builds.get(key) is build:
            del self._builds[key]  # the next request tries again

    # -- envs ----------------------------------------------------------------------------
    def _new_core(self, dataset: str, split: str, options: dict[str, Any],
                  tasks: list[Task]) -> AsyncMedAgentEnv:
        if self.sandbox_pool is not None:
            return AsyncMedAgentEnv(dataset, split, sandbox=self.sandbox, tasks=tasks,
                                    sandbox_pool=self.sandbox_pool, **options)
        return AsyncMedAgentEnv(dataset, split, sandbox=self.sandbox, tasks=tasks, **options)

    async def create(self, req: CreateEnvRequest) -> tuple[_Slot, str]:
        """A new env and its secret (returned once, stored only as a digest)."""
        spec = dataset_spec(req.dataset)
        env_options, family_options = parse_options(spec, req.options)
        if len(self.envs) + self._reserved >= self.max_envs:
            raise HTTPException(429, f"the server holds its maximum of {self.max_envs} "
                                     "environments; DELETE unused ones (or wait for idle ones "
                                     f"to be closed after {self.idle_timeout_s:g} s) and retry")
        self._reserved += 1
        try:
            tasks = await self.tasks(spec, req.split, family_options)
            options = {**env_options, **family_options}
            try:
                core = self._new_core(spec.name, req.split, options, tasks)
            except ConfigurationError as exc:
                raise HTTPException(400, str(exc))
            from gymnasium.utils import seeding

            secret = secrets.token_urlsafe(32)
            slot = _Slot(secrets.token_urlsafe(12), _digest(secret), spec.name, req.split,
                         options, core, rng=seeding.np_random(None)[0])
            self.envs[slot.env_id] = slot
            return slot, secret
        finally:
            self._reserved -= 1

    def gone(self, env_id: str) -> HTTPException:
        return HTTPException(404, f"no environment {env_id!r} for this {SECRET_HEADER} (closed, "
                                  f"expired after {self.idle_timeout_s:g} s idle, never created, "
                                  f"or the {SECRET_HEADER} header is missing or wrong)")

    def get(self, env_id: str, secret: str | None) -> _Slot:
        """The env, if ``secret`` is its own; unknown env and wrong secret look the same."""
        slot = self.envs.get(env_id)
        if slot is None or not slot.owned_by(secret):
            raise self.gone(env_id)
        return slot

    def check_live(self, slot: _Slot) -> None:
        """After waiting for a slot's lock: was it closed meanwhile?"""
        if self.envs.get(slot.env_id) is not slot:
            raise self.gone(slot.env_id)

    def owned(self, secrets_given: list[str]) -> list[_Slot]:
        """The envs one of ``secrets_given`` opens."""
        return [s for s in self.envs.values() if any(s.owned_by(x) for x in secrets_given)]

    async def recreate(self, slot: _Slot) -> None:
        """Replace a slot's env after an infrastructure failure (its episode is lost)."""
        with contextlib.suppress(Exception):
            await slot.core.aclose()
        slot.core = self._new_core(slot.dataset, slot.split, slot.options, slot.core.tasks)

    async def close(self, env_id: str) -> bool:
        slot = self.envs.pop(env_id, None)
        if slot is None:
            return False
        async with slot.lock:  # let a running step finish
            try:
                await slot.core.aclose()
            except Exception:
                log.exception("closing env %s failed", env_id)
        return True

    async def close_all(self) -> None:
        await asyncio.gather(*(self.close(e) for e in list(self.envs)), return_exceptions=True)
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self.sandbox_pool is not None:
            await self.sandbox_pool.close()

    async def reap_idle(self) -> int:
        now = time.monotonic()
        idle = [s.env_id for s in self.envs.values()
                if not s.lock.locked() and now - s.last_used > self.idle_timeout_s]
        for env_id in idle:
            log.info("closing env %s: idle for more than %g s", env_id, self.idle_timeout_s)
            await self.close(env_id)
        return len(idle)

    async def reap_forever(self) -> None:
        interval = max(0.05, min(self.idle_timeout_s / 4, 30.0))
        while True:
            await asyncio.sleep(interval)
            try:
                await self.reap_idle()
            except Exception:
                log.exception("idle reaper failed")


def choose_task(slot: _Slot, req: ResetRequest) -> Task:
    """The task a reset asks for: by id, by index, or drawn with the env's generator
    (re-seeded by ``req.seed``); 404 for an unknown id or an index out of range."""
    tasks = slot.core.tasks
    if req.task_id is not None:
        try:
            return slot.core.get_task(req.task_id)
        except ConfigurationError as exc:
            raise HTTPException(404, str(exc))
    if req.task_index is not None:
        if req.task_index >= len(tasks):
            raise HTTPException(404, f"task_index {req.task_index} out of range: "
                                     f"{slot.dataset}/{slot.split} has {len(tasks)} tasks")
        return tasks[req.task_index]
    if req.seed is not None:
        from gymnasium.utils import seeding

        slot.rng = seeding.np_random(req.seed)[0]
    return tasks[int(slot.rng.integers(len(tasks)))]


def dataset_spec(name: str) -> DatasetSpec:
    try:
        return get_spec(name)
    except ConfigurationError as exc:
        raise HTTPException(404, str(exc))


# ---------------------------------------------------------------------------- middleware

class BodyLimit:
    """ASGI middleware: refuse (413) a request body over ``max_bytes``, by its
    ``Content-Length`` before reading any of it, or by counting a chunked body as it
    arrives; a body within the limit is handed on whole."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = JSONResponse({"detail": f"request body over {self.max_bytes} bytes"},
                                status_code=413, headers={"Connection": "close"})
        await response(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await self._refuse(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the disconnect

        await self.app(scope, replay, send)


class ServerTiming:
    """ASGI middleware: every HTTP response says how long the server took to produce it
    (``Server-Timing: app;dur=<ms>``, from the request reaching the app to the response
    starting), so a client can tell the server's time from the network's and its own."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()

        async def timed(message: Message) -> None:
            if message["type"] == "http.response.start":
                dur = f"app;dur={(time.perf_counter() - t0) * 1e3:.2f}".encode()
                message = {**message, "headers": [*message.get("headers", []),
                                                  (b"server-timing", dur)]}
            await send(message)

        await self.app(scope, receive, timed)


# --------------------------------------------------------------------------------- app


def _auth_dependency(token: str | None) -> Any:
    expected = token.encode() if token else None

    async def check(request: Request) -> None:
        if expected is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
            raise HTTPException(401, "missing or wrong bearer token",
                                headers={"WWW-Authenticate": "Bearer"})

    return check


def _given_secrets(request: Request) -> list[str]:
    """Every ``X-Env-Secret`` value sent (repeated headers or comma-separated)."""
    values = [v.strip() for h in request.headers.getlist(SECRET_HEADER) for v in h.split(",")]
    return [v for v in values if v][:1024]


def create_app(max_envs: int = 64, idle_timeout_s: float = 600.0, *, token: str | None = None,
               sandbox: str | None = "auto", admin_token: str | None = None,
               max_body_bytes: int = DEFAULT_MAX_BODY, max_task_sets: int = 32,
               sandbox_pool: bool = False) -> FastAPI:
    """The environment server's app.

    ``token``: require ``Authorization: Bearer <token>`` on every route but ``/health``
    (default: ``$MEDAGENTGYM_SERVER_TOKEN``; empty = no auth). ``admin_token``: who sends it
    in ``X-Admin-Token`` sees every env in ``GET /envs`` (default:
    ``$MEDAGENTGYM_SERVER_ADMIN_TOKEN``; empty = nobody). ``sandbox``: the provider every env
    uses (clients cannot choose it). ``max_body_bytes``: the largest request body (413
    beyond). ``max_task_sets``: distinct (dataset, split, options) task sets built at most.
    ``sandbox_pool``: envs share one warm bwrap worker per CPU (``medagentgym.sandbox.pool``)
    instead of a sandbox process tree each; an idle env then costs no process.
    """
    if max_envs < 1:
        raise ConfigurationError("max_envs must be at least 1")
    if max_task_sets < 1:
        raise ConfigurationError("max_task_sets must be at least 1")
    if max_body_bytes < 1024:
        raise ConfigurationError("max_body_bytes must be at least 1024")
    if token is None:
        token = os.environ.get(TOKEN_ENV) or None
    if admin_token is None:
        admin_token = os.environ.get(ADMIN_TOKEN_ENV) or None
    admin = admin_token.encode() if admin_token else None
    from medagentgym import __version__

    pools = None
    if sandbox_pool:
        from medagentgym.sandbox.pool import SandboxPools

        pools = SandboxPools()
    registry = EnvRegistry(max_envs=max_envs, idle_timeout_s=idle_timeout_s, sandbox=sandbox,
                           max_task_sets=max_task_sets, sandbox_pool=pools)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        reaper = asyncio.create_task(registry.reap_forever())
        try:
            yield
        finally:
            reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reaper
            await registry.close_all()

    app = FastAPI(title="MedAgentGym environment server", version=__version__,
                  lifespan=lifespan)
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    app.add_middleware(ServerTiming)  # outermost: the body limit's time is the server's too
    app.state.registry = registry
    auth = [Depends(_auth_dependency(token))]
    secret_header = Header(None, alias=SECRET_HEADER, max_length=200,
                           description="the secret POST /envs returned for this env")

    @app.get("/health", response_model=Health)
    async def health() -> Health:
        return Health(version=__version__, envs=len(registry.envs), max_envs=max_envs)

    @app.get("/datasets", response_model=list[DatasetInfo], dependencies=auth)
    async def datasets() -> list[DatasetInfo]:
        out = []
        for name in list_datasets():
            spec = get_spec(name)
            out.append(DatasetInfo(name=spec.name, env_id=spec.env_id,
                                   description=spec.description, scenario=spec.scenario,
                                   splits=list(spec.splits),
                                   in_distribution=spec.in_distribution))
        return out

    @app.get("/datasets/{name}/tasks", response_model=TaskList, dependencies=auth)
    async def dataset_tasks(name: str, split: str = Query("test", max_length=100),
                            limit: int | None = Query(None, ge=0, le=100_000),
                            offset: int = Query(0, ge=0, le=10**9),
                            database: DatabaseSource | None = None) -> TaskList:
        spec = dataset_spec(name)
        raw = {"database": database} if database is not None else {}
        _, family_options = parse_options(spec, raw)
        tasks = await registry.tasks(spec, split, family_options)
        end = None if limit is None else offset + limit
        # ids, categories and goals only: never truth, inputs (host paths) or metadata
        return TaskList(dataset=spec.name, split=split, total=len(tasks), offset=offset,
                        tasks=[TaskSummary(id=t.id, category=t.category, goal=t.goal)
                               for t in tasks[offset:end]])

    @app.get("/envs", response_model=EnvListing, dependencies=auth)
    async def envs(request: Request,
                   admin_given: str | None = Header(None, alias=ADMIN_HEADER, max_length=500)
                   ) -> EnvListing:
        if admin_given is not None:
            if admin is None or not hmac.compare_digest(admin_given.encode(), admin):
                raise HTTPException(401, f"wrong {ADMIN_HEADER}")
            shown = list(registry.envs.values())
        else:
            shown = registry.owned(_given_secrets(request))
        now = time.monotonic()
        return EnvListing(count=len(registry.envs), max_envs=max_envs, envs=[
            EnvSummary(env_id=s.env_id, dataset=s.dataset, split=s.split,
                       task_id=s.core.task.id if s.core.task else None,
                       idle_s=round(now - s.last_used, 3), busy=s.lock.locked())
            for s in shown])

    @app.post("/envs", response_model=CreateEnvResponse, status_code=201, dependencies=auth)
    async def create_env(req: CreateEnvRequest) -> CreateEnvResponse:
        slot, secret = await registry.create(req)
        return CreateEnvResponse(env_id=slot.env_id, secret=secret, dataset=slot.dataset,
                                 split=slot.split, num_tasks=len(slot.core.tasks),
                                 options=slot.options)

    @app.post("/envs/{env_id}/reset", response_model=ResetResponse, dependencies=auth)
    async def reset(env_id: str, req: ResetRequest | None = None,
                    secret: str | None = secret_header) -> ResetResponse:
        req = req or ResetRequest()
        slot = registry.get(env_id, secret)
        async with slot.lock:
            registry.check_live(slot)
            slot.touch()
            task = choose_task(slot, req)
            try:
                obs, info = await slot.core.areset(task)
            except InfrastructureError as exc:
                await registry.recreate(slot)
                raise HTTPException(503, f"{type(exc).__name__}: {exc} (sandbox replaced; "
                                         "reset again)")
            finally:
                slot.touch()
            return ResetResponse(observation=obs, info=info)

    @app.post("/envs/{env_id}/step", response_model=StepResponse, dependencies=auth)
    async def step(env_id: str, req: StepRequest,
                   secret: str | None = secret_header) -> StepResponse:
        slot = registry.get(env_id, secret)
        async with slot.lock:
            registry.check_live(slot)
            slot.touch()
            core = slot.core
            if core.task is None or core.done:
                raise HTTPException(409, "no episode in progress: POST /envs/{env_id}/reset "
                                         "first (the last episode ended or was lost)")
            try:
                obs, reward, terminated, truncated, info = await core.astep(req.action)
            except InfrastructureError as exc:
                await registry.recreate(slot)
                raise HTTPException(503, f"{type(exc).__name__}: {exc} (the episode is lost; "
                                         "sandbox replaced; reset again)")
            except Exception as exc:
                log.exception("step failed on env %s", env_id)
                await registry.recreate(slot)
                raise HTTPException(500, f"internal error {type(exc).__name__}: {exc} "
                                         "(the episode is lost; reset again)")
            finally:
                slot.touch()
            return StepResponse(observation=obs, reward=reward, terminated=terminated,
                                truncated=truncated, info=info)

    # OpenEnv's protocol (/openenv/<dataset>/ws, /reset, /step, /state, /schema, /health):
    # the same registry, allow-list, body limit and token (medagentgym.server.openenv)
    from medagentgym.server.openenv import add_openenv_routes

    add_openenv_routes(app, registry, token=token, max_body_bytes=max_body_bytes, auth=auth)

    @app.delete("/envs/{env_id}", dependencies=auth)
    async def delete_env(env_id: str, secret: str | None = secret_header) -> dict[str, Any]:
        registry.get(env_id, secret)
        if not await registry.close(env_id):
            raise registry.gone(env_id)
        return {"env_id": env_id, "closed": True}

    return app
