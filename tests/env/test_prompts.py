"""System prompts a small model can follow (issue 18): a worked example turn with real code
that parses as an action, the libraries the family's sandbox preloads, the answer rule only
where an answer is graded, a compact variant, and a loop hint fitting the task's actions."""

from __future__ import annotations

import json

import pytest

from medagentgym.agents.parser import parse_reply
from medagentgym.env.prompts import example_turn, libraries, system_prompt
from medagentgym.errors import ConfigurationError


def _example_action(prompt: str) -> dict:
    line = next(ln for ln in prompt.splitlines() if ln.startswith('{"action": "validate_code"'))
    return json.loads(line)


@pytest.mark.parametrize("style", ["paper", "compact"])
def test_the_worked_example_is_real_code_and_parses(style):
    code = "import pandas as pd\nprint(pd.__version__)\nanswer = 2"
    prompt = system_prompt("Do the task.", ["validate_code", "debug", "terminal"], "paper", 15,
                           style=style, example_code=code)
    action = _example_action(prompt)
    assert action["params"]["code"] == code
    compile(action["params"]["code"], "<example>", "exec")
    parsed = parse_reply(json.dumps(action))
    assert parsed.name == "validate_code"
    assert "Do the task." in prompt and "15" in prompt


def test_libraries_follow_the_preload_and_the_answer_rule_follows_the_family():
    science = ("numpy", "pandas", "sqlite3", "scipy", "statsmodels.api", "sklearn",
               "lifelines", "Bio")
    assert libraries(science) == ("numpy, pandas, sqlite3, scipy, statsmodels, scikit-learn, "
                                  "lifelines and Biopython")
    p = system_prompt("x", ["validate_code"], "paper", 5, preload=science)
    assert "statsmodels" in p and "`answer`" in p
    p = system_prompt("x", ["validate_code"], "paper", 5, preload=("numpy",),
                      needs_answer=False)
    assert "numpy are ready" in p and "Store your final answer" not in p


def test_compact_is_shorter_and_keeps_every_action_form():
    acts = ["request_info", "validate_code", "debug", "terminal", "submit"]
    full = system_prompt("x", acts, "submit", 15)
    compact = system_prompt("x", acts, "submit", 15, style="compact")
    assert len(compact) < 0.8 * len(full)
    for a in acts:
        assert f'"action": "{a}"' in compact


def test_example_turn_escapes_quotes_and_newlines():
    text = example_turn('print("a")\nanswer = 1')
    assert json.loads(text.splitlines()[-1])["params"]["code"] == 'print("a")\nanswer = 1'


def test_env_prompt_style_is_checked():
    from medagentgym.env.env import AsyncMedAgentEnv

    with pytest.raises(ConfigurationError, match="prompt style"):
        AsyncMedAgentEnv("npowerai", "test", prompt_style="tiny", sandbox=None)
