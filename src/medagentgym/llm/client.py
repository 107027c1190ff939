"""An async chat client for OpenAI-compatible endpoints (OpenAI, Azure, vLLM, SGLang, Ollama…).

It wraps the ``openai`` SDK (imported on first use) with what long sampling runs need:

* retries with exponential backoff and jitter on 429, 5xx, timeouts, dropped connections and
  unreadable responses (``Retry-After`` is honoured); other 4xx fail at once;
* a per-request timeout and a limit on requests in flight per endpoint, shared by every
  client of the same endpoint on the same event loop, and held only while a request is on
  the wire (not while backing off);
* token usage, latency and optional cost per response, and running totals;
* ``<think>…</think>`` reasoning separated from the visible answer.

Failures surface as :class:`~medagentgym.llm.errors.ModelEndpointError` (``source =
"model_endpoint"``), which the episode runner records as an infrastructure error. The API
key is held privately and scrubbed from every error message; it is never logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import weakref
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, Field

from medagentgym.llm.config import LLMConfig, resolve_api_key
from medagentgym.llm.errors import ContextLengthExceeded, ModelEndpointError
from medagentgym.llm.think import split_think

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 409, 425, 429})
_CONTEXT_HINTS = ("context length", "context_length", "maximum context", "too many tokens",
                  "prompt is too long", "input is too long", "context window",
                  # llama.cpp's server ("exceeds the available context size", and its type)
                  "context size", "exceed_context_size")
_NO_KEY = "not-needed"  # local servers ignore the key, but the SDK requires one


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    reasoning_tokens: int = 0
    cached_tokens: int = 0


class ToolCall(BaseModel):
    id: str = ""
    name: str
    arguments: str = Field("", description="the JSON arguments, as the model wrote them")


class ChatResponse(BaseModel):
    """One completion. ``content`` is what the agent acts on (reasoning removed)."""

    content: str = ""
    raw_content: str | None = None
    reasoning: str = ""
    tool_calls: list[ToolCall] = Field(default_factory=list)
    finish_reason: str | None = None
    model: str = ""
    usage: Usage = Field(default_factory=Usage)
    latency_s: float = 0.0
    attempts: int = 1
    cost_usd: float | None = None

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"


class ClientStats(BaseModel):
    """Running totals over a client's life (read them for progress bars and reports)."""

    requests: int = 0
    attempts: int = 0
    retries: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0
    errors: dict[str, int] = Field(default_factory=dict)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


# one semaphore per (event loop, endpoint): the concurrency limit is per endpoint
_LIMITERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Semaphore]] = (
    weakref.WeakKeyDictionary())


def endpoint_limiter(endpoint: str, limit: int) -> asyncio.Semaphore:
    """The shared semaphore of ``endpoint`` on the running loop (created with ``limit``)."""
    loop = asyncio.get_running_loop()
    per_loop = _LIMITERS.setdefault(loop, {})
    sem = per_loop.get(endpoint)
    if sem is None:
        sem = per_loop[endpoint] = asyncio.Semaphore(limit)
    return sem


class _Retryable(Exception):
    def __init__(self, kind: str, message: str, status: int | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.kind, self.status, self.retry_after = kind, status, retry_after


class ChatClient:
    """Chat completions against one endpoint. Create it inside the event loop that uses it."""

    def __init__(self, config: LLMConfig, *, api_key: str | None = None,
                 rng: random.Random | None = None) -> None:
        if not config.model:
            from medagentgym.errors import ConfigurationError

            raise ConfigurationError("no model name: pass --model or set model in the config file")
        self.config = config
        self.__key = api_key if api_key is not None else resolve_api_key(config)
        self._sdk: Any = None
        self._rng = rng or random.Random()
        self.stats = ClientStats()

    def __repr__(self) -> str:
        return f"ChatClient(model={self.config.model!r}, endpoint={self.config.display_endpoint!r})"

    @property
    def model(self) -> str:
        return self.config.model

    # -- SDK ----------------------------------------------------------------------------
    def _client(self) -> Any:
        if self._sdk is None:
            try:
                import openai
            except ImportError:
                from medagentgym.errors import ConfigurationError

                raise ConfigurationError("the model client needs the `openai` package: "
                                         "pip install openai") from None

            cfg = self.config
            common: dict[str, Any] = {"api_key": self.__key or _NO_KEY, "max_retries": 0,
                                      "timeout": cfg.timeout}
            if cfg.provider == "azure":
                if not cfg.base_url:
                    from medagentgym.errors import ConfigurationError

                    raise ConfigurationError("Azure needs base_url (the resource endpoint, "
                                             "or $AZURE_OPENAI_ENDPOINT)")
                self._sdk = openai.AsyncAzureOpenAI(
                    azure_endpoint=cfg.base_url, api_version=cfg.api_version or "2024-10-21",
                    **common)
            else:
                self._sdk = openai.AsyncOpenAI(base_url=cfg.base_url, **common)
        return self._sdk

    async def aclose(self) -> None:
        if self._sdk is not None:
            await self._sdk.close()
            self._sdk = None

    async def __aenter__(self) -> ChatClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- requests -----------------------------------------------------------------------
    async def chat(self, messages: Sequence[dict[str, Any]], *,
                   tools: Sequence[dict[str, Any]] | None = None,
                   tool_choice: Any = None, **sampling: Any) -> ChatResponse:
        """One completion of ``messages``; ``sampling`` overrides the config's fields
        (``temperature``, ``top_p``, ``max_tokens``, ``seed``, ``stop``; ``None`` = unset)."""
        cfg = self.config
        params = cfg.sampling()
        for name, value in sampling.items():
            if value is None:
                continue
            params[cfg.max_tokens_param if name == "max_tokens" else name] = value
        request: dict[str, Any] = {"model": cfg.model, "messages": list(messages), **params}
        if tools:
            request["tools"] = list(tools)
            if tool_choice is not None:
                request["tool_choice"] = tool_choice
        for key, value in cfg.extra_body.items():
            request.setdefault(key, value)

        limiter = endpoint_limiter(cfg.endpoint, cfg.concurrency)
        self.stats.requests += 1
        t_start = time.perf_counter()
        attempt = 0
        while True:
            attempt += 1
            self.stats.attempts += 1
            try:
                async with limiter:
                    t0 = time.perf_counter()
                    completion = await self._send(request)
                    latency = time.perf_counter() - t0
                response = self._read(completion, latency, attempt)
                break
            except _Retryable as exc:
                self.stats.errors[exc.kind] = self.stats.errors.get(exc.kind, 0) + 1
                if attempt > cfg.max_retries:
                    self.stats.failures += 1
                    raise ModelEndpointError(
                        f"model endpoint {cfg.display_endpoint} failed after {attempt} attempts: "
                        f"{self._scrub(str(exc))}", status=exc.status, attempts=attempt,
                        retryable=True) from None
                delay = self._backoff(attempt, exc.retry_after)
                self.stats.retries += 1
                log.warning("model endpoint %s: %s (attempt %d/%d); retrying in %.2f s",
                            cfg.display_endpoint, exc.kind, attempt, cfg.max_retries + 1, delay)
                await asyncio.sleep(delay)
            except ModelEndpointError:
                self.stats.failures += 1
                raise
        self.stats.prompt_tokens += response.usage.prompt_tokens
        self.stats.completion_tokens += response.usage.completion_tokens
        self.stats.latency_s += time.perf_counter() - t_start
        if response.cost_usd:
            self.stats.cost_usd += response.cost_usd
        return response

    async def _send(self, request: dict[str, Any]) -> Any:
        import openai
        from openai.types.chat import ChatCompletion

        client = self._client()
        try:
            # the low-level post skips the SDK's per-request TypedDict transform of the
            # messages (~4 ms of CPU per call with a long conversation); the body is plain JSON
            return await client.post("/chat/completions", cast_to=ChatCompletion, body=request)
        except openai.APITimeoutError as exc:
            raise _Retryable("timeout", f"no answer within {self.config.timeout:g} s") from exc
        except openai.APIConnectionError as exc:
            cause = exc.__cause__ or exc
            raise _Retryable("connection", f"connection failed: {type(cause).__name__}: {cause}") from exc
        except openai.APIStatusError as exc:
            status = exc.status_code
            message = self._scrub(_error_text(exc))
            if status in RETRY_STATUS or status >= 500:
                kind = "rate_limit" if status == 429 else f"http_{status}"
                raise _Retryable(kind, f"HTTP {status}: {message}", status,
                                 _retry_after(exc.response)) from exc
            if status == 400 and any(h in message.lower() for h in _CONTEXT_HINTS):
                raise ContextLengthExceeded(f"HTTP 400: {message}", status=status) from None
            hint = ""
            if status in (401, 403):
                hint = (" — check the API key: set $" + _key_env(self.config)
                        + " or a credentials file ($MEDAGENTGYM_CREDENTIALS)")
            elif status == 404:
                hint = f" — check the model name {self.config.model!r} and base_url"
            raise ModelEndpointError(f"HTTP {status}: {message}{hint}", status=status) from None
        except openai.APIResponseValidationError as exc:
            raise _Retryable("malformed", f"unreadable response: {exc}") from exc
        except ValueError as exc:  # the body was not JSON
            raise _Retryable("malformed", f"unreadable response: {type(exc).__name__}: {exc}") from exc

    def _read(self, completion: Any, latency: float, attempt: int) -> ChatResponse:
        choices = getattr(completion, "choices", None)
        if isinstance(completion, str | bytes) or not choices:
            raise _Retryable("malformed", "response has no choices")
        choice = choices[0]
        message = getattr(choice, "message", None)
        if message is None:
            raise _Retryable("malformed", "response choice has no message")
        raw = getattr(message, "content", None)
        if raw is not None and not isinstance(raw, str):
            raw = json.dumps(raw)
        extra = getattr(message, "model_extra", None) or {}
        side_reasoning = extra.get("reasoning_content") or extra.get("reasoning") or ""
        if self.config.strip_think:
            visible, reasoning = split_think(raw)
        else:
            visible, reasoning = (raw or "").strip(), ""
        if side_reasoning and isinstance(side_reasoning, str):
            reasoning = (side_reasoning.strip() + ("\n\n" + reasoning if reasoning else "")).strip()
        calls = []
        for tc in getattr(message, "tool_calls", None) or []:
            fn = getattr(tc, "function", None)
            if fn is None:
                continue
            args = fn.arguments if isinstance(fn.arguments, str) else json.dumps(fn.arguments)
            calls.append(ToolCall(id=getattr(tc, "id", "") or "", name=fn.name or "", arguments=args or ""))
        usage = _usage(getattr(completion, "usage", None))
        return ChatResponse(
            content=visible, raw_content=raw, reasoning=reasoning, tool_calls=calls,
            finish_reason=getattr(choice, "finish_reason", None),
            model=getattr(completion, "model", "") or self.config.model, usage=usage,
            latency_s=latency, attempts=attempt, cost_usd=self._cost(usage))

    def _cost(self, usage: Usage) -> float | None:
        cfg = self.config
        if cfg.input_cost_per_mtok is None and cfg.output_cost_per_mtok is None:
            return None
        return (usage.prompt_tokens * (cfg.input_cost_per_mtok or 0.0)
                + usage.completion_tokens * (cfg.output_cost_per_mtok or 0.0)) / 1e6

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        cfg = self.config
        ceiling = min(cfg.backoff_max, cfg.backoff_base * 2 ** (attempt - 1))
        delay = ceiling / 2 + self._rng.random() * ceiling / 2  # "equal jitter"
        if retry_after is not None:
            delay = max(delay, min(retry_after, max(cfg.backoff_max, 1.0)))
        return delay

    def _scrub(self, text: str) -> str:
        key = self.__key
        if key and len(key) >= 4:
            text = text.replace(key, "[redacted]")
        return text


def _key_env(cfg: LLMConfig) -> str:
    from medagentgym.llm.config import default_key_env

    return default_key_env(cfg)


def _usage(raw: Any) -> Usage:
    if raw is None:
        return Usage()
    prompt = int(getattr(raw, "prompt_tokens", 0) or 0)
    completion = int(getattr(raw, "completion_tokens", 0) or 0)
    details = getattr(raw, "completion_tokens_details", None)
    cached = getattr(getattr(raw, "prompt_tokens_details", None), "cached_tokens", 0)
    return Usage(prompt_tokens=prompt, completion_tokens=completion,
                 total_tokens=int(getattr(raw, "total_tokens", 0) or prompt + completion),
                 reasoning_tokens=int(getattr(details, "reasoning_tokens", 0) or 0),
                 cached_tokens=int(cached or 0))


def _retry_after(response: Any) -> float | None:
    try:
        value = response.headers.get("retry-after-ms")
        if value is not None:
            return float(value) / 1000
        value = response.headers.get("retry-after")
        return float(value) if value is not None else None
    except (AttributeError, TypeError, ValueError):
        return None


def _error_text(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:500]
        if isinstance(err, str):
            return err[:500]
    return str(getattr(exc, "message", exc))[:500]


# --------------------------------------------------------------------------- preflight

PREFLIGHT_CONNECT_S = 5.0
PREFLIGHT_READ_S = 15.0


def preflight(config: LLMConfig, *, api_key: str | None = None, flag: str = "--base-url",
              connect_timeout: float = PREFLIGHT_CONNECT_S,
              read_timeout: float = PREFLIGHT_READ_S) -> list[str]:
    """One cheap request to the endpoint before a run: a failure that would book every
    episode as an infrastructure error is raised here, at once, with its cause and fix.

    Raises :class:`~medagentgym.errors.ConfigurationError` for what the user fixes: a
    refused connection or unknown host (the URL), no answer within ``connect_timeout``
    (the URL), 401/403 (the key), 404 (the base URL: "did you mean …/v1"; or the model
    name). Returns warnings (printed by the caller) for what may still work: a model that the
    endpoint does not list, a 429/5xx or a slow answer (the run's own retries deal with those).

    It sends ``GET {base_url}/models`` (no tokens spent); a 404 there is checked with a
    one-token chat request before it is called an error, since some servers do not list
    models. Azure endpoints get the one-token chat request only.
    """
    import httpx

    from medagentgym.errors import ConfigurationError

    key = api_key if api_key is not None else resolve_api_key(config)
    base = config.endpoint
    shown = config.display_endpoint
    key_env = _key_env(config)
    timeout = httpx.Timeout(read_timeout, connect=connect_timeout)
    if config.provider == "azure":
        headers = {"api-key": key or _NO_KEY}
        chat_url = (f"{base}/openai/deployments/{config.model}/chat/completions"
                    f"?api-version={config.api_version or '2024-10-21'}")
    else:
        headers = {"Authorization": f"Bearer {key or _NO_KEY}"}
        chat_url = f"{base}/chat/completions"

    def scrub(text: str) -> str:
        return text.replace(key, "[redacted]") if key and len(key) >= 4 else text

    def request(client: Any, method: str, url: str, **kw: Any) -> Any:
        try:
            return client.request(method, url, headers=headers, **kw)
        except httpx.ConnectTimeout:
            raise ConfigurationError(
                f"model endpoint {shown}: no connection within {connect_timeout:g} s; check "
                f"the address and port in {flag} (is the host reachable from here?)") from None
        except httpx.TimeoutException:
            return None  # connected but slow: the run's own timeouts and retries handle it
        except httpx.ConnectError as exc:
            why = scrub(str(exc)) or type(exc).__name__
            what = ("connection refused" if "refused" in why.lower()
                    else "host not found" if any(s in why.lower() for s in
                                                 ("name or service", "nodename", "getaddrinfo",
                                                  "name resolution"))
                    else why)
            raise ConfigurationError(
                f"model endpoint {shown}: {what}; is the server running at that URL? "
                f"check {flag}") from None
        except httpx.HTTPError as exc:
            raise ConfigurationError(
                f"model endpoint {shown}: {type(exc).__name__}: {scrub(str(exc))[:200]}; "
                f"check {flag}") from None

    def auth_error(status: int) -> ConfigurationError:
        how = ("no key was found" if not key else "the key was refused")
        return ConfigurationError(
            f"model endpoint {shown} answered HTTP {status} ({how}): set ${key_env} to a valid "
            f"key (or put it in the credentials file $MEDAGENTGYM_CREDENTIALS)")

    def chat_probe(client: Any) -> Any:
        body = {"model": config.model, "messages": [{"role": "user", "content": "ping"}],
                config.max_tokens_param: 1}
        return request(client, "POST", chat_url, json=body)

    warnings: list[str] = []
    with httpx.Client(timeout=timeout, follow_redirects=True, trust_env=True) as client:
        if config.provider == "azure":
            resp = chat_probe(client)
            if resp is not None and resp.status_code in (401, 403):
                raise auth_error(resp.status_code)
            if resp is not None and resp.status_code == 404:
                raise ConfigurationError(
                    f"model endpoint {shown}: no deployment {config.model!r} (HTTP 404); check "
                    f"--model (the deployment name) and {flag} (the resource endpoint)")
            return warnings
        resp = request(client, "GET", f"{base}/models")
        if resp is None:
            warnings.append(f"model endpoint {shown} was slow to list its models; going on")
            return warnings
        status = resp.status_code
        if status in (401, 403):
            raise auth_error(status)
        if status == 404:
            chat = chat_probe(client)
            if chat is not None and chat.status_code in (401, 403):
                raise auth_error(chat.status_code)
            if chat is None or chat.status_code != 404:
                return warnings  # the server does not list models but answers chat
            if not base.rstrip("/").endswith("/v1"):
                alt = request(client, "GET", f"{base}/v1/models")
                if alt is not None and alt.status_code in (200, 401, 403):
                    raise ConfigurationError(
                        f"model endpoint {shown} answered HTTP 404; did you mean "
                        f"{flag} {shown}/v1 ?")
            message = scrub(_error_text_http(chat))
            hint = (f"did you mean {flag} {shown}/v1 ? " if not base.endswith("/v1") else "")
            raise ConfigurationError(
                f"model endpoint {shown}: HTTP 404 for chat completions ({message}); {hint}"
                f"check {flag} and the model name {config.model!r}")
        if status >= 400:
            warnings.append(f"model endpoint {shown} answered HTTP {status} to a model listing; "
                            "going on (requests are retried)")
            return warnings
        try:
            listed = [str(m.get("id")) for m in resp.json().get("data", [])
                      if isinstance(m, dict)]
        except (ValueError, AttributeError):
            listed = []
        if listed and config.model not in listed:
            warnings.append(f"model {config.model!r} is not among the models {shown} lists "
                            f"({', '.join(listed[:8])}{', …' if len(listed) > 8 else ''}); "
                            "check --model")
    return warnings


#: fields in which servers state a model's context window in their model listing (vLLM,
#: LM Studio/OpenRouter, llama.cpp's ``meta``, this project's local server)
_WINDOW_FIELDS = ("max_model_len", "context_window", "context_length", "max_context_length")


def endpoint_context_window(config: LLMConfig, *, api_key: str | None = None,
                            timeout: float = 10.0) -> int | None:
    """The context window the endpoint states for ``config.model`` in ``GET /models`` (vLLM's
    ``max_model_len``, ``context_length``, llama.cpp's ``meta.n_ctx``/``n_ctx_train``), or
    None when it states none (or cannot be asked)."""
    import httpx

    if config.provider == "azure":
        return None
    key = api_key if api_key is not None else resolve_api_key(config)
    try:
        with httpx.Client(timeout=timeout, trust_env=True) as client:
            resp = client.get(f"{config.endpoint}/models",
                              headers={"Authorization": f"Bearer {key or _NO_KEY}"})
        data = resp.json().get("data", []) if resp.status_code == 200 else []
    except (httpx.HTTPError, ValueError, AttributeError):
        return None
    models = [m for m in data if isinstance(m, dict)] if isinstance(data, list) else []
    mine = [m for m in models if str(m.get("id")) == config.model] or (
        models if len(models) == 1 else [])
    for m in mine:
        meta = m.get("meta") if isinstance(m.get("meta"), dict) else {}
        for value in (*(m.get(f) for f in _WINDOW_FIELDS), meta.get("n_ctx"),
                      meta.get("n_ctx_train")):
            if isinstance(value, int) and not isinstance(value, bool) and 256 <= value <= 10**8:
                return value
    return None


def _error_text_http(resp: Any) -> str:
    try:
        body = resp.json()
    except ValueError:
        return (resp.text or "")[:200]
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:200]
        if isinstance(err, str):
            return err[:200]
    return str(body)[:200]
