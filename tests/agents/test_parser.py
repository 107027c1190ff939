"""The action parser reads what models actually write."""

from __future__ import annotations

import json
import time

import pytest

from medagentgym.agents.parser import ActionParseError, parse_reply
from medagentgym.env.actions import MAX_JSON_DEPTH, json_depth, parse_action
from medagentgym.errors import AgentError
from medagentgym.llm.client import ToolCall

CODE = "import re\nanswer = re.findall(r'\\d+', \"a1 b22\")"

CASES = {
    "strict": json.dumps({"action": "validate_code", "params": {"code": CODE}}),
    "fenced with prose": "I'll run it.\n```json\n" + json.dumps(
        {"action": "validate_code", "params": {"code": CODE}}, indent=2) + "\n```\nLet's see.",
    "raw newlines in the string": '{"action": "validate_code", "params": {"code": "'
                                  + CODE.replace('"', '\\"') + '"}}',
    "triple quotes": 'Running:\n{"action": "validate_code", "params": {"code": """\n' + CODE
                     + '\n"""}}',
    "python dict": "{'action': 'validate_code', 'params': {'code': " + repr(CODE) + "}}",
    "flat": json.dumps({"action": "validate_code", "code": CODE}),
    "keyed by name": json.dumps({"validate_code": {"code": CODE}}),
    "tool-shaped json": json.dumps({"name": "validate_code", "arguments": json.dumps({"code": CODE})}),
    "trailing comma": '{"action": "validate_code", "params": {"code": ' + json.dumps(CODE) + ",},}",
    "invalid escape": '{"action": "validate_code", "params": {"code": "import re\\nanswer = '
                      're.findall(r\'\\d+\', \\"a1 b22\\")"}}',
    "bare python block": "Let me query.\n```python\n" + CODE + "\n```",
}


@pytest.mark.parametrize("name", list(CASES))
def test_formats(name):
    p = parse_reply(CASES[name])
    assert p.name == "validate_code"
    assert p.params["code"].strip() == CODE
    # the canonical text is accepted by the environment's strict parser
    assert parse_action(p.text).code.strip() == CODE


def test_braces_and_quotes_inside_code_do_not_confuse_it():
    code = 'd = {"a": "}"}\nanswer = f"{d[\'a\']}"'
    text = "Here {not an action}: " + json.dumps({"action": "validate_code", "params": {"code": code}})
    assert parse_reply(text).params["code"] == code


def test_first_action_wins_and_other_actions_parse():
    text = ('{"action": "request_info", "params": {"data_path": "/data/x.db", "info_type": '
            '"column_names", "keyterm": ""}}\nthen {"action": "validate_code", "params": {"code": "1"}}')
    p = parse_reply(text)
    assert p.name == "request_info" and p.params["info_type"] == "column_names"


def test_native_tool_calls():
    p = parse_reply(None, [ToolCall(id="c1", name="debug", arguments='{"code": "x", "error_msg": "e"}')])
    assert (p.name, p.params, p.tool_call_id, p.source) == ("debug", {"code": "x", "error_msg": "e"},
                                                           "c1", "tool_call")
    generic = {"id": "c2", "function": {"name": "act", "arguments": json.dumps(
        {"action": "terminal", "params": {"cmd": "ls"}})}}
    assert parse_reply("", [generic]).action == {"action": "terminal", "params": {"cmd": "ls"}}
    with pytest.raises(ActionParseError, match="not valid JSON"):
        parse_reply(None, [ToolCall(name="validate_code", arguments='{"code": ')])


def test_failures_explain_the_format():
    with pytest.raises(ActionParseError, match="JSON action"):
        parse_reply("I think the answer is 42.")
    with pytest.raises(ActionParseError, match="empty"):
        parse_reply("   ")
    with pytest.raises(ActionParseError, match="cut off"):
        parse_reply('{"action": "validate_code", "params": {"code": "answer = [1, 2', truncated=True)
    with pytest.raises(ActionParseError):
        parse_reply("```python\nanswer = 1\n```", code_fallback=False)


def test_loop_key_ignores_formatting():
    a = parse_reply('{"action": "validate_code", "params": {"code": "answer = 1\\n"}}')
    b = parse_reply("```json\n{'action': 'validate_code', 'params': {'code': 'answer = 1  '}}\n```")
    c = parse_reply('{"action": "validate_code", "params": {"code": "answer = 2"}}')
    assert a.key == b.key != c.key


# --------------------------------------------------------------------------- hostile replies

N = 100_000
HOSTILE_REPLIES = {
    "deep list": "[" * N + "]" * N,
    "deep object": '{"a":' * N + "1" + "}" * N,
    "deep unclosed object": '{"a":' * N,
    "deep answer": '{"action": "submit", "params": {"answer": ' + "[" * N + "]" * N + "}}",
    "deep tool-shaped": '{"name": "submit", "arguments": "' + "[" * N + '"}',
    "deep python literal": "{'a': true, 'b': " + "[" * 5000 + "]" * 5000 + "}",
    "deep parentheses": "(" * N + ")" * N,
    "unary minus chain": "-" * N + "1",
    "python set": "{'action': 'submit', 'params': {'answer': {1, 2}}}",
    "python bytes": "{'action': 'submit', 'params': {'answer': b'\\xff'}}",
    "unhashable key": "{'action': 'submit', 'params': {[]: 1}}",
    "huge": "x" * 2_000_000,
    "many unclosed braces": "{" * N,
    "many fences": "```{" * N,
    "many fences, no newline": "```" * N,
    "many apostrophes": "{'" * N,
    "many quotes": '{"a":"}' * N,
    "quote brackets": '["]", ' * N,
    "many triple quotes": "'''\"\"\"" * N,
    "5000-digit int": '{"action": "submit", "params": {"answer": ' + "1" * 5000 + "}}",
    "nul bytes": "\x00" * N,
    "many dict literals": "```python\n" + "x = {'a': 1}\n" * 50_000 + "```",
}


@pytest.mark.parametrize("name", list(HOSTILE_REPLIES))
def test_hostile_replies_raise_only_parse_errors(name):
    """Deep, huge or pathological replies: an ActionParseError (or an action), never another
    exception, and in linear time."""
    text = HOSTILE_REPLIES[name]
    for parse in (parse_reply, parse_action,
                  lambda t: parse_reply(None, [ToolCall(name="submit", arguments=t)])):
        t0 = time.perf_counter()
        try:
            parse(text)
        except AgentError as exc:
            assert len(str(exc)) < 1000
        assert time.perf_counter() - t0 < 5, f"{name} took {time.perf_counter() - t0:.1f} s"


def test_deep_json_is_refused_with_a_reason():
    with pytest.raises(AgentError, match="nests JSON more than 100 levels"):
        parse_action('{"action": "submit", "params": {"answer": ' + "[" * 101 + "]" * 101 + "}}")
    ok = parse_action('{"action": "submit", "params": {"answer": ' + "[" * 97 + "]" * 97 + "}}")
    assert ok.action == "submit"
    assert parse_reply('{"action": "submit", "params": {"answer": [[1]]}}').params == {
        "answer": [[1]]}


def test_python_literals_that_are_not_json_are_not_actions():
    with pytest.raises(ActionParseError):
        parse_reply("{'action': 'submit', 'params': {'answer': {1, 2}}}")


@pytest.mark.parametrize(("text", "depth"), [
    ("[]", 1), ("[[1], {}]", 2), ('{"a": "[[[[[["}', 1), ('"[[["', 0), ('["\\"[[", []]', 2),
    ("[[[", 3), ('{"a": [{"b": []}]}', 4), ("[1] [[[[", 1),
])
def test_json_depth(text, depth):
    assert json_depth(text) == depth


def test_json_depth_stops_past_the_limit():
    assert json_depth("[" * 10**6) == MAX_JSON_DEPTH + 1
