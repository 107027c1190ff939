"""``LLMAgent``: a chat model acting in the environment with the paper's prompting.

Turn 1 sends the environment's system prompt (task instruction, the allowed actions'
definitions, the JSON answer format) and the task goal as the user turn; every later turn
sends the environment's feedback. The reply is read by :mod:`medagentgym.agents.parser`
(JSON in fences, prose around it, code in triple quotes, native tool calls).

Beyond the paper:

* **context management** — when the conversation would not fit the model's window, older
  observations are shortened first (head and tail kept), then whole early turns are
  dropped; the system prompt and the task are never cut. The window is
  ``AgentSettings.max_context_tokens`` or the model config's ``context_window``; when
  neither is known, the endpoint's "context length exceeded" answer shrinks the budget and
  the request is sent again. Token counts are estimated from characters and calibrated with
  the usage the endpoint reports.
* **loop detection** — the same action sent ``loop_threshold`` times in a row gets a hint
  appended to the next observation (what the model sees; the stored observation is the
  environment's). Repeats and hints are counted in the trajectory metadata.
* **accounting** — every step records the model's full output (reasoning included) and its
  token usage; the episode's totals, the conversation and the counters go to
  ``Trajectory.metadata``.

:class:`LLMDebugger` is the model behind the ``debug`` action (its own model setting); pass
it to the environment as ``debugger=``.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, Field

from medagentgym.agents.base import Agent
from medagentgym.agents.parser import ActionParseError, ParsedAction, parse_reply
from medagentgym.agents.prompts import render
from medagentgym.errors import MedAgentGymError
from medagentgym.llm.client import ChatClient, ChatResponse
from medagentgym.llm.errors import ContextLengthExceeded
from medagentgym.types import Task

_MSG_OVERHEAD = 4  # tokens per message for role and separators (an estimate)


_WINDOW_PATTERNS = (re.compile(r"context length is (\d{3,8})"),
                    re.compile(r"\d+ ?> ?(\d{3,8}) tokens"),
                    re.compile(r"n_ctx\D{0,8}(\d{3,8})"),
                    re.compile(r"context (?:size|window) (?:is |of )?(\d{3,8})"))


def window_from_message(text: str) -> int | None:
    """The context window an endpoint's overflow message states (OpenAI/vLLM "maximum context
    length is N", llama.cpp "(M > N tokens)" / n_ctx), or None."""
    for pat in _WINDOW_PATTERNS:
        m = pat.search(text[:2000])
        if m:
            return int(m.group(1))
    return None


class ContextExhausted(MedAgentGymError):
    """The conversation cannot fit the model's context window even after trimming: the
    episode ends as the agent's failure (not infrastructure), with the setting to change."""


class AgentSettings(BaseModel):
    """How the LLM agent talks to its model (everything but the endpoint)."""

    max_context_tokens: int | None = Field(
        None, description="the model's window; None = the model config's context_window")
    reply_tokens: int = Field(4096, description="room kept for the answer when max_tokens is unset")
    chars_per_token: float = Field(3.5, gt=0, description="first estimate, then calibrated")
    keep_observation_chars: int = Field(1200, ge=100,
                                        description="what an old observation keeps when shortened")
    loop_threshold: int = Field(2, ge=2, description="same action this many times in a row = a loop")
    loop_hint: bool = True
    use_tools: bool = Field(False, description="offer the actions as native tools (function calling)")
    code_fallback: bool = Field(True, description="a bare ```python block counts as validate_code")
    keep_reasoning: bool = Field(False, description="send earlier <think> text back to the model")
    context_retries: int = Field(1, ge=0, description=(
        "shrink-and-resend after a context error before the episode ends as context exhausted"))


TOOL_SCHEMAS: dict[str, dict[str, Any]] = {
    "request_info": {
        "description": "Look up database metadata: column names, a column's values, or a term.",
        "properties": {"data_path": {"type": "string"},
                       "info_type": {"type": "string",
                                     "enum": ["column_names", "column_values", "term"]},
                       "keyterm": {"type": "string"}},
        "required": ["info_type"]},
    "validate_code": {
        "description": "Run Python code; set the variable `answer` to your answer.",
        "properties": {"code": {"type": "string"}}, "required": ["code"]},
    "debug": {
        "description": "Ask a debugging assistant to explain an error and suggest a fix.",
        "properties": {"code": {"type": "string"}, "error_msg": {"type": "string"}},
        "required": ["code", "error_msg"]},
    "terminal": {
        "description": "Run a shell command (e.g. install a package).",
        "properties": {"cmd": {"type": "string"}}, "required": ["cmd"]},
    "submit": {
        "description": "Submit the final answer: code that sets `answer`, or the value.",
        "properties": {"code": {"type": "string"}, "answer": {}}},
}


def tool_definitions(actions: Sequence[str]) -> list[dict[str, Any]]:
    """OpenAI ``tools`` entries for the allowed actions."""
    out = []
    for name in actions:
        schema = TOOL_SCHEMAS.get(name)
        if schema is None:
            continue
        out.append({"type": "function", "function": {
            "name": name, "description": schema["description"],
            "parameters": {"type": "object", "properties": schema["properties"],
                           "required": schema.get("required", [])}}})
    return out


class LLMAgent(Agent):
    """A chat model behind the paper's scaffold. One instance can run episodes one after
    another (``begin`` resets it); the :class:`ChatClient` is shared between agents."""

    name = "llm"

    def __init__(self, client: ChatClient, *, temperature: float | None = None,
                 top_p: float | None = None, max_tokens: int | None = None,
                 seed: int | None = None, settings: AgentSettings | None = None) -> None:
        self.client = client
        self.sampling = {"temperature": temperature, "top_p": top_p, "max_tokens": max_tokens,
                         "seed": seed}
        self.settings = settings or AgentSettings()
        self._reset()

    @property
    def model(self) -> str | None:  # type: ignore[override]
        return self.client.model

    def _reset(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self._started = False
        self._allowed: list[str] = []
        self._keys: list[str] = []
        self._tool_call_id: str | None = None
        self._notes: list[str] = []
        self._step_info: dict[str, Any] | None = None
        self._chars_per_token = self.settings.chars_per_token
        self._budget_cap: int | None = None
        self.counters = {"model_calls": 0, "retries": 0, "parse_failures": 0, "code_fallbacks": 0,
                         "tool_calls": 0, "repeated_actions": 0, "loop_hints": 0,
                         "context_truncations": 0, "context_errors": 0, "truncated_replies": 0}
        self.usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0,
                      "reasoning_tokens": 0}
        self.cost_usd: float | None = None
        self.latency_s = 0.0

    # -- the Agent protocol ---------------------------------------------------------------
    async def begin(self, task: Task, system_prompt: str, goal: str, env: Any) -> None:
        self._reset()
        self.messages = [{"role": "system", "content": system_prompt},
                         {"role": "user", "content": goal}]

    async def act(self, observation: str, info: dict[str, Any]) -> str:
        self._allowed = list(info.get("allowed_actions") or self._allowed)
        if self._started:
            self._add_observation(observation)
        self._started = True
        response = await self._complete()
        return self._take(response)

    def finish(self, observation: str, info: dict[str, Any]) -> None:
        """The episode ended: keep the last observation in the stored conversation."""
        if self._started:
            self._add_observation(observation, notes=False)

    def consume_step_info(self) -> dict[str, Any] | None:
        """What the runner records on the step just taken (model output, usage)."""
        info, self._step_info = self._step_info, None
        return info

    def episode_metadata(self) -> dict[str, Any]:
        """Counters and token totals for ``Trajectory.metadata``; the full conversation under
        ``messages`` (the episode runner moves it to ``Trajectory.messages``)."""
        usage: dict[str, Any] = dict(self.usage)
        if self.cost_usd is not None:
            usage["cost_usd"] = round(self.cost_usd, 8)
        usage["latency_s"] = round(self.latency_s, 4)
        return {"sampling": {k: v for k, v in self.sampling.items() if v is not None},
                "usage": usage, "agent_stats": dict(self.counters),
                "messages": copy.deepcopy(self.messages)}

    # -- conversation ---------------------------------------------------------------------
    def _loop_advice(self) -> str:
        """What to try instead of repeating, fitting the actions the task offers."""
        if "request_info" in self._allowed:
            return ("read the error, look up the names of tables, columns and values with "
                    "request_info, or change the code.")
        if "terminal" in self._allowed:
            return ("read the error, print the inputs your code relies on (or list the files "
                    "with terminal), or change the code.")
        return "read the error, print the inputs your code relies on, or change the code."

    def _add_observation(self, observation: str, *, notes: bool = True) -> None:
        text = observation
        if notes:
            extra = list(self._notes)
            self._notes.clear()
            run = self._repeat_run()
            if self.settings.loop_hint and run >= self.settings.loop_threshold:
                extra.append(render("loop_hint.md", count=run, advice=self._loop_advice()))
                self.counters["loop_hints"] += 1
            if extra:
                text = text.rstrip() + "\n\n" + "\n".join(extra)
        if self._tool_call_id is not None:
            self.messages.append({"role": "tool", "tool_call_id": self._tool_call_id, "content": text})
            self._tool_call_id = None
        else:
            self.messages.append({"role": "user", "content": text})

    def _repeat_run(self) -> int:
        if not self._keys:
            return 0
        run, last = 0, self._keys[-1]
        for key in reversed(self._keys):
            if key != last:
                break
            run += 1
        return run

    def _take(self, response: ChatResponse) -> str:
        """Record the reply and turn it into the action text for the environment."""
        truncated = response.truncated
        if truncated:
            self.counters["truncated_replies"] += 1
        parsed: ParsedAction | None
        try:
            parsed = parse_reply(response.content, response.tool_calls,
                                 code_fallback=self.settings.code_fallback, truncated=truncated)
        except ActionParseError:
            parsed = None
            self.counters["parse_failures"] += 1
            if truncated:
                self._notes.append(render("truncated_reply.md"))
        assistant: dict[str, Any] = {"role": "assistant", "content": response.content}
        if self.settings.keep_reasoning and response.reasoning:
            assistant["content"] = f"<think>\n{response.reasoning}\n</think>\n{response.content}"
        if response.tool_calls:
            self.counters["tool_calls"] += 1
            call = response.tool_calls[0]
            call_id = call.id or f"call_{len(self.messages)}"
            assistant["content"] = response.content or None
            assistant["tool_calls"] = [{"id": call_id, "type": "function",
                                        "function": {"name": call.name, "arguments": call.arguments}}]
            self._tool_call_id = call_id
        self.messages.append(assistant)
        if parsed is not None:
            if parsed.source == "code_block":
                self.counters["code_fallbacks"] += 1
            if self._keys and self._keys[-1] == parsed.key:
                self.counters["repeated_actions"] += 1
            self._keys.append(parsed.key)
            action_text = parsed.text
        else:
            self._keys.append("<unparsed>:" + (response.content or "")[:2000])
            action_text = response.content or ""
            if response.tool_calls:  # let the environment report the bad tool call
                action_text = json.dumps({"name": response.tool_calls[0].name,
                                          "arguments": response.tool_calls[0].arguments})
        self._step_info = {"model_output": _full_output(response),
                           "usage": _step_usage(response)}
        return action_text

    # -- the model call -------------------------------------------------------------------
    async def _complete(self) -> ChatResponse:
        tools = tool_definitions(self._allowed) if self.settings.use_tools else None
        tries = 0
        while True:
            view = self._view()
            try:
                response = await self.client.chat(view, tools=tools, **self.sampling)
            except ContextLengthExceeded as exc:
                self.counters["context_errors"] += 1
                tries += 1
                current = self._estimate(view)
                if tries > self.settings.context_retries or len(view) <= 2:
                    raise ContextExhausted(self._exhausted_message(
                        current, str(exc), whole=len(view) <= 2)) from None
                stated = window_from_message(str(exc))
                reply = self.sampling.get("max_tokens") or self.client.config.max_tokens or 0
                if stated and stated - reply > 256:
                    # the endpoint said how large its window is: fit it (10 % margin)
                    self._budget_cap = min(int(current * 0.9), int((stated - reply) * 0.9))
                else:
                    self._budget_cap = int(current * 0.6)
                continue
            break
        self._calibrate(view, response)
        self.counters["model_calls"] += 1
        self.counters["retries"] += response.attempts - 1
        for key in self.usage:
            self.usage[key] += getattr(response.usage, key)
        if response.cost_usd is not None:
            self.cost_usd = (self.cost_usd or 0.0) + response.cost_usd
        self.latency_s += response.latency_s
        return response

    def _exhausted_message(self, needed: int, endpoint_said: str = "", *,
                           whole: bool = True) -> str:
        window = self.settings.max_context_tokens or self.client.config.context_window
        reply = self.sampling.get("max_tokens") or self.client.config.max_tokens
        said = f" (the endpoint said: {endpoint_said[:200]})" if endpoint_said else ""
        what = ("the system prompt and task need" if whole
                else "the conversation, trimmed, still needs")
        return (f"context exhausted: {what} about {needed:,} tokens "
                f"and do not fit the model's context window"
                + (f" of {window:,} tokens" if window else "")
                + (f" with {reply:,} tokens kept for the reply" if reply else "") + said
                + ". Give the model a larger window (--context-window, or the server's own "
                  "setting such as llama.cpp's -c / vLLM's --max-model-len), a smaller "
                  "--max-tokens, or use --prompt-style compact")

    def _prompt_budget(self) -> int | None:
        window = self.settings.max_context_tokens or self.client.config.context_window
        budget = None
        if window:
            reply = (self.sampling.get("max_tokens") or self.client.config.max_tokens
                     or min(self.settings.reply_tokens, window // 4))
            budget = max(256, window - reply - 32)
        if self._budget_cap is not None:
            budget = min(budget, self._budget_cap) if budget else self._budget_cap
        return budget

    def _tokens(self, message: dict[str, Any]) -> int:
        chars = len(message.get("content") or "")
        for call in message.get("tool_calls") or []:
            chars += len(call["function"]["arguments"]) + len(call["function"]["name"])
        return int(chars / self._chars_per_token) + _MSG_OVERHEAD

    def _estimate(self, messages: Sequence[dict[str, Any]]) -> int:
        return sum(self._tokens(m) for m in messages)

    def _calibrate(self, view: Sequence[dict[str, Any]], response: ChatResponse) -> None:
        prompt = response.usage.prompt_tokens - _MSG_OVERHEAD * len(view)
        chars = sum(len(m.get("content") or "") for m in view)
        if prompt > 50 and chars > 200:
            # 5 % pessimism: overestimating tokens only truncates a little early
            self._chars_per_token = min(8.0, max(1.5, chars / prompt / 1.05))

    def _view(self) -> list[dict[str, Any]]:
        """The messages to send: the whole conversation, shortened to fit the budget. The
        system prompt and the task are never cut: when they alone do not fit, the episode
        ends as the agent's failure (:class:`ContextExhausted`), before any request."""
        budget = self._prompt_budget()
        msgs = [dict(m) for m in self.messages]
        if budget is None:
            return msgs
        fixed = self._estimate(msgs[:2])
        # estimates are rough: only a clear overflow ends the episode before the endpoint says
        if fixed > 1.2 * budget and self._budget_cap is None:
            raise ContextExhausted(self._exhausted_message(fixed))
        sizes = [self._tokens(m) for m in msgs]
        if sum(sizes) <= budget:
            return msgs
        self.counters["context_truncations"] += 1
        keep = self.settings.keep_observation_chars
        observations = [i for i, m in enumerate(msgs) if i >= 2 and m["role"] in ("user", "tool")]
        # 1. shorten older observations, oldest first (never the system prompt or the task)
        for i in observations[:-1]:
            msgs[i]["content"] = _shorten(msgs[i]["content"] or "", keep)
            sizes[i] = self._tokens(msgs[i])
            if sum(sizes) <= budget:
                return msgs
        # 2. shorten older replies (long code), oldest first
        for i in range(2, len(msgs) - 2):
            if msgs[i]["role"] == "assistant" and msgs[i].get("content"):
                msgs[i]["content"] = _shorten(msgs[i]["content"], keep)
                sizes[i] = self._tokens(msgs[i])
                if sum(sizes) <= budget:
                    return msgs
        # 3. drop whole early turns (a reply and its observation), keeping the latest turn
        dropped = 0
        while len(msgs) > 4 and sum(sizes) > budget:
            del msgs[2:4], sizes[2:4]
            dropped += 1
        if dropped:
            goal = dict(msgs[1])
            goal["content"] = (goal["content"] or "") + "\n\n" + render("context_omitted.md",
                                                                        turns=dropped)
            msgs[1], sizes[1] = goal, self._tokens(goal)
        # 4. finally the newest observation itself
        over = sum(sizes) - budget
        if over > 0 and len(msgs) > 2 and msgs[-1]["role"] in ("user", "tool"):
            room = max(keep, len(msgs[-1]["content"] or "") - int(over * self._chars_per_token) - 64)
            msgs[-1]["content"] = _shorten(msgs[-1]["content"] or "", room)
        return msgs


def _shorten(text: str, keep: int) -> str:
    """Head and tail of ``text`` (``keep`` characters in all) around an omission marker."""
    if len(text) <= keep + 80:
        return text
    head = keep * 2 // 3
    tail = keep - head
    omitted = len(text) - head - tail
    return f"{text[:head]}\n[... {omitted} characters omitted ...]\n{text[-tail:] if tail else ''}"


def _full_output(response: ChatResponse) -> str:
    """The model's whole output: reasoning (as <think>), text, tool calls."""
    text = response.raw_content or ""
    if response.reasoning and "<think>" not in text.lower() and "</think>" not in text.lower():
        text = f"<think>\n{response.reasoning}\n</think>\n{text}"
    if response.tool_calls:
        calls = [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in response.tool_calls]
        text = (text + "\n" if text else "") + json.dumps({"tool_calls": calls}, ensure_ascii=False)
    return text


def _step_usage(response: ChatResponse) -> dict[str, int]:
    u = response.usage
    out = {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
           "total_tokens": u.total_tokens, "attempts": response.attempts,
           "latency_ms": int(response.latency_s * 1000)}
    if u.reasoning_tokens:
        out["reasoning_tokens"] = u.reasoning_tokens
    return out


class LLMDebugger:
    """The ``debug`` action's model: explains an error and suggests a fix.

    An async callable ``(code, error_msg) -> str`` for ``AsyncMedAgentEnv(debugger=...)``.
    Use one instance per environment: :meth:`pop_usage` hands the runner the tokens spent
    since the last step, so they land on the step that asked.
    """

    def __init__(self, client: ChatClient, *, temperature: float | None = 0.0,
                 max_tokens: int | None = None, max_input_chars: int = 24_000) -> None:
        self.client = client
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.max_input_chars = max_input_chars
        self._pending: list[ChatResponse] = []

    @property
    def model(self) -> str:
        return self.client.model

    async def __call__(self, code: str, error_msg: str) -> str:
        half = self.max_input_chars // 2
        messages = [
            {"role": "system", "content": render("debugger_system.md")},
            {"role": "user", "content": render("debugger_user.md", code=_shorten(code, half),
                                               error_msg=_shorten(error_msg or "(none given)", half))},
        ]
        response = await self.client.chat(messages, temperature=self.temperature,
                                          max_tokens=self.max_tokens)
        self._pending.append(response)
        return response.content.strip() or "(the debugger gave no answer)"

    def pop_usage(self) -> dict[str, int] | None:
        """Tokens of the debugger calls since the last pop (``debugger_*`` keys), or None."""
        if not self._pending:
            return None
        calls, self._pending = self._pending, []
        return {"debugger_calls": len(calls),
                "debugger_prompt_tokens": sum(r.usage.prompt_tokens for r in calls),
                "debugger_completion_tokens": sum(r.usage.completion_tokens for r in calls),
                "debugger_latency_ms": int(sum(r.latency_s for r in calls) * 1000)}
